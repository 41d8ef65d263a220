//! Training: the loop, the run folder and its log, metrics, diagnostics, figures, sanity, spectrum, ablation,
//! holdout and its spectral baseline and peak test.

pub mod ablate;
pub mod baseline;
pub mod config;
pub mod diagnostics;
pub mod epoch;
pub mod figures;
pub mod holdout;
pub mod inference;
pub mod metrics;
pub mod rundir;
pub mod runlog;
pub mod sanity;
pub mod spectrum;
pub mod trainer;
