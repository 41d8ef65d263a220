//! Data: folder and CSV datasets, decoding, augmentation, sampling, and the built-in synthetic set.

pub mod folder;
pub mod synth;
