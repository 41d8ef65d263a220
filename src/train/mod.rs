//! Training: the loop, optimizer, schedule, metrics, diagnostics and checkpoints.

pub mod ablate;
pub mod checkpoint;
pub mod diagnostics;
pub mod figures;
pub mod holdout;
pub mod metrics;
pub mod rundir;
pub mod runlog;
pub mod sanity;
pub mod spectrum;
pub mod trainer;
