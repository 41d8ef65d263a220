//! Model definitions, written once against the Backend trait.

pub mod efficientnet;
pub mod layers;
pub mod params;
