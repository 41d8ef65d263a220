//! The model's state on a backend: what a detector's weights, running statistics, gradients and optimizer
//! buffers are between steps, and what a checkpoint saves and loads (model/checkpoint.rs).

use crate::backend::optim::decay_mask;
use crate::backend::Backend;
use crate::error::Result;
use crate::model::detector::Detector;
use crate::model::peak::{Join, PeakTest};
use crate::tensor::{Layout, Tensor};

/// The model's state on a backend: parameters, running statistics, gradients, the optimizer's two buffers
/// (AdamW's moments, or SGD's momentum and an unused one).
pub struct ModelState {
    pub params: Tensor,
    pub state: Tensor,
    pub grads: Tensor,
    pub(crate) m: Tensor,
    pub(crate) v: Tensor,
    /// 1 where weight decay applies, 0 on normalization parameters and biases.
    pub(crate) mask: Tensor,
    /// Per-bin statistics of the training set's spectra, for log-std magnitudes.
    pub freq_stats: Option<Tensor>,
    /// The spectral peak test, fitted on the training reals (none without two of them), and its join to the
    /// detector's logit, standardized over the validation reals at this epoch (none before the first
    /// validation, or when the logits do not vary).
    pub peak: Option<PeakTest>,
    pub join: Option<Join>,
}

impl ModelState {
    pub fn new(be: &dyn Backend, det: &Detector, seed: u64) -> Result<Self> {
        let n = det.params.total();
        let t = |v: Vec<f32>| be.upload(&Tensor::from_vec(&[v.len()], Layout::Plain, v)?);
        Ok(ModelState {
            params: t(det.init_params(seed))?,
            state: t(det.init_state())?,
            grads: t(vec![0.0; n])?,
            m: t(vec![0.0; n])?,
            v: t(vec![0.0; n])?,
            mask: be.upload(&Tensor::from_vec(&[n], Layout::Plain, decay_mask(&det.params))?)?,
            freq_stats: None,
            peak: None,
            join: None,
        })
    }
}
