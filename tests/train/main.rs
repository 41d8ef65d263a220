//! Training-system tests without a model: metrics, data, synthetic set. One module per part.

mod checkpoint;
mod data;
mod diagnostics;
mod figures;
mod holdout;
mod input;
mod metrics;
mod pipeline;
mod self_fake;
mod spectrum;
