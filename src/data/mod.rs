//! Data: folder and CSV datasets, decoding, augmentation, sampling, and the built-in synthetic set.

pub mod augment;
pub mod folder;
pub mod input;
pub mod loaded;
pub mod open;
pub mod pack;
pub mod self_fake;
pub mod synth;
