//! Training-system tests without a model: metrics, data, synthetic set. One module per part.

mod data;
mod metrics;
