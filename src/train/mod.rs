//! Training: the loop, optimizer, schedule, metrics, diagnostics and checkpoints.

pub mod metrics;
pub mod trainer;
