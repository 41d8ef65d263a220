//! Model definitions, written once against the Backend trait.

pub mod detector;
pub mod efficientnet;
pub mod freq;
pub mod layers;
pub mod params;
pub mod timm;
