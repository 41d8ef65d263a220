//! Model definitions, written once against the Backend trait; the model's state and its checkpoint files.

pub mod checkpoint;
pub mod detector;
pub mod efficientnet;
pub mod freq;
pub mod layers;
pub mod peak;
pub mod state;
pub mod timm;
