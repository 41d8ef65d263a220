//! The optimizer's contract, shared by both backends. Parameters, gradients and the two moment buffers are one
//! flat f32 buffer each (a model's `ParamLayout`), so that each step is two launches whatever the model:
//! 1. `param_norms`: per parameter tensor, the sum of squares of its gradient and of its values (the gradient
//!    report of the diagnostics), the total gradient norm, and the clipping factor
//!    min(1, max_norm / total_norm) (1 without clipping), all left on the device;
//! 2. `adamw_step`: AdamW as PyTorch's torch.optim.AdamW computes it, on gradients scaled by that factor:
//!
//! ```text
//! p -= lr * wd * p            (decoupled weight decay; tensors marked no_decay skip it)
//! m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//! p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
//! ```

use crate::error::{Error, Result};
use crate::model::params::ParamLayout;
use crate::tensor::{DType, Layout, Tensor};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamW {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl Default for AdamW {
    /// PyTorch's defaults, except weight decay 0.05 (PyTorch's 0.01 is for language models' longer runs).
    fn default() -> Self {
        AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.05 }
    }
}

/// One step's scalars: the learning rate from the schedule and the step number t (1 on the first step).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepArgs {
    pub lr: f32,
    pub t: u64,
}

/// The layout of the norms tensor: per tensor i, `[2i]` = sum of squared gradients, `[2i + 1]` = sum of squared
/// values; then the total gradient norm, then the clipping factor.
pub fn norms_len(layout: &ParamLayout) -> usize {
    2 * layout.entries().len() + 2
}

/// Reads the norms back: per tensor (gradient norm, value norm), the total gradient norm, the clip factor.
pub struct Norms {
    pub per_tensor: Vec<(f64, f64)>,
    pub total: f64,
    pub clip: f64,
}

impl Norms {
    pub fn read(t: &Tensor, be: &dyn crate::Backend, layout: &ParamLayout) -> Result<Norms> {
        let host = be.download(t)?;
        let v = host.host::<f32>()?;
        let n = layout.entries().len();
        if v.len() != norms_len(layout) {
            shape_err!("norms: {} values for {n} tensors", v.len());
        }
        Ok(Norms {
            per_tensor: (0..n).map(|i| ((v[2 * i] as f64).sqrt(), (v[2 * i + 1] as f64).sqrt())).collect(),
            total: v[2 * n] as f64,
            clip: v[2 * n + 1] as f64,
        })
    }
}

/// Per-element weight-decay flags (1 decays, 0 does not) for a layout: normalization parameters and biases
/// are not decayed. Padding between tensors is 0.
pub fn decay_mask(layout: &ParamLayout) -> Vec<u8> {
    let mut m = vec![0u8; layout.total()];
    for e in layout.entries().iter().filter(|e| !e.no_decay) {
        m[e.range()].fill(1);
    }
    m
}

/// Boundary checks for both ops.
pub fn check(layout: &ParamLayout, params: &Tensor, grads: &Tensor) -> Result<()> {
    for (what, t) in [("parameters", params), ("gradients", grads)] {
        t.expect(what, DType::F32, Layout::Plain, 1)?;
        if t.numel() != layout.total() {
            shape_err!("{what}: {} values, the layout has {}", t.numel(), layout.total());
        }
    }
    Ok(())
}

pub fn check_step(
    layout: &ParamLayout,
    m: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    norms: &Tensor,
    opt: &AdamW,
    s: StepArgs,
) -> Result<()> {
    for (what, t, dt) in
        [("first moments", m, DType::F32), ("second moments", v, DType::F32), ("decay mask", mask, DType::U8)]
    {
        t.expect(what, dt, Layout::Plain, 1)?;
        if t.numel() != layout.total() {
            shape_err!("{what}: {} values, the layout has {}", t.numel(), layout.total());
        }
    }
    norms.expect("norms", DType::F32, Layout::Plain, 1)?;
    if norms.numel() != norms_len(layout) {
        shape_err!("norms: {} values for {} tensors", norms.numel(), layout.entries().len());
    }
    if s.t == 0 || !(s.lr >= 0.0 && s.lr.is_finite()) {
        return Err(Error::Invalid(format!(
            "optimizer step {} with learning rate {}: need t >= 1, lr >= 0",
            s.t, s.lr
        )));
    }
    if !(0.0..1.0).contains(&opt.beta1) || !(0.0..1.0).contains(&opt.beta2) || opt.eps <= 0.0 || opt.weight_decay < 0.0
    {
        return Err(Error::Invalid(format!("AdamW settings out of range: {opt:?}")));
    }
    Ok(())
}

/// Linear warm-up from 0 to `peak` over `warmup` steps, then cosine decay to `floor` at step `total`.
pub fn lr_at(step: u64, warmup: u64, total: u64, peak: f32, floor: f32) -> f32 {
    if step < warmup {
        return peak * (step + 1) as f32 / warmup as f32;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).min(1.0);
    floor + (peak - floor) * (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())) as f32
}
