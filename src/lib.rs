//! dfgpu: train and run two-branch (EfficientNet + FFT) deepfake image detectors on NVIDIA GPUs, with
//! hand-written CUDA kernels, each checked against a CPU reference in this crate.

#[macro_use]
pub mod error;
pub mod backend;
pub mod data;
pub mod files;
pub mod info;
pub mod memory;
pub mod model;
pub mod params;
pub mod plot;
pub mod rng;
pub mod stats;
pub mod tensor;
pub mod train;

/// Bytes in a GiB: every memory figure dfgpu prints is in GiB.
pub const GIB: f64 = (1u64 << 30) as f64;

pub use backend::{select, Backend, BackendOptions, DeviceSpec};
pub use error::{Error, Result};
pub use tensor::{DType, Layout, Tensor};
