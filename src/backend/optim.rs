//! The optimizer's contract, shared by both backends. Parameters, gradients and the two moment buffers are one
//! flat f32 buffer each (a model's `ParamLayout`), so that each step is two launches whatever the model:
//! 1. `param_norms`: per parameter tensor, the sum of squares of its gradient and of its values (the gradient
//!    report of the diagnostics), the total gradient norm, and the clipping factor
//!    min(1, max_norm / total_norm) (1 without clipping), all left on the device;
//! 2. `optimizer_step`: AdamW as PyTorch's torch.optim.AdamW computes it, or SGD with momentum as
//!    torch.optim.SGD does (dampening 0, not Nesterov), on gradients scaled by that factor:
//!
//! ```text
//! AdamW: p -= lr * wd * p            (decoupled weight decay; tensors marked no_decay skip it)
//!        m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//!        p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
//! SGD:   g += wd * p                 (L2 decay, coupled; no_decay tensors skip it)
//!        m = mu m + g                (m starts at 0, so the first step is m = g, as in PyTorch)
//!        p -= lr * m
//! ```
//!
//! SGD is here to reproduce failures, not as a recommendation: its steps grow with the gradient, so with the
//! input's scale (raw FFT magnitudes), where AdamW's steps stay about lr whatever the scale.

use crate::error::{Error, Result};
use crate::params::ParamLayout;
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

/// SGD with momentum, as torch.optim.SGD (dampening 0, no Nesterov), with coupled L2 weight decay.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sgd {
    pub momentum: f32,
    pub weight_decay: f32,
}

impl Default for Sgd {
    /// The usual momentum 0.9 and weight decay 5e-4 of SGD-trained image models.
    fn default() -> Self {
        Sgd { momentum: 0.9, weight_decay: 5e-4 }
    }
}

/// The update rule. Both keep their state in two buffers of the parameters' layout: AdamW's moments m and v,
/// or SGD's momentum in m (v unused).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Optimizer {
    AdamW(AdamW),
    Sgd(Sgd),
}

impl Default for Optimizer {
    fn default() -> Self {
        Optimizer::AdamW(AdamW::default())
    }
}

impl Optimizer {
    pub fn name(&self) -> &'static str {
        match self {
            Optimizer::AdamW(_) => "adamw",
            Optimizer::Sgd(_) => "sgd",
        }
    }

    /// "adamw (weight decay 0.05)", "sgd (momentum 0.9, weight decay 0.0005)": for logs and messages.
    pub fn describe(&self) -> String {
        match self {
            Optimizer::AdamW(a) => format!("adamw (weight decay {})", a.weight_decay),
            Optimizer::Sgd(s) => format!("sgd (momentum {}, weight decay {})", s.momentum, s.weight_decay),
        }
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

/// The flat buffers of one optimizer step, each in the parameters' layout but the norms (from `param_norms`):
/// params, m and v are updated in place (v unused by SGD).
#[derive(Debug)]
pub struct StepBuffers<'a> {
    pub params: &'a mut Tensor,
    pub grads: &'a Tensor,
    pub m: &'a mut Tensor,
    pub v: &'a mut Tensor,
    /// u8, 1 where a parameter decays (`decay_mask`).
    pub decay_mask: &'a Tensor,
    pub norms: &'a Tensor,
}

/// Boundary checks for `optimizer_step`.
pub fn check_step(layout: &ParamLayout, b: &StepBuffers, opt: &Optimizer, s: StepArgs) -> Result<()> {
    check(layout, b.params, b.grads)?;
    for (what, t, dt) in [
        ("first moments", &*b.m, DType::F32),
        ("second moments", &*b.v, DType::F32),
        ("decay mask", b.decay_mask, DType::U8),
    ] {
        t.expect(what, dt, Layout::Plain, 1)?;
        if t.numel() != layout.total() {
            shape_err!("{what}: {} values, the layout has {}", t.numel(), layout.total());
        }
    }
    b.norms.expect("norms", DType::F32, Layout::Plain, 1)?;
    if b.norms.numel() != norms_len(layout) {
        shape_err!("norms: {} values for {} tensors", b.norms.numel(), layout.entries().len());
    }
    if s.t == 0 || !(s.lr >= 0.0 && s.lr.is_finite()) {
        return Err(Error::Invalid(format!(
            "optimizer step {} with learning rate {}: need t >= 1, lr >= 0",
            s.t, s.lr
        )));
    }
    let ok = match opt {
        Optimizer::AdamW(a) => {
            (0.0..1.0).contains(&a.beta1) && (0.0..1.0).contains(&a.beta2) && a.eps > 0.0 && a.weight_decay >= 0.0
        }
        Optimizer::Sgd(s) => (0.0..1.0).contains(&s.momentum) && s.weight_decay >= 0.0,
    };
    if !ok {
        return Err(Error::Invalid(format!(
            "optimizer settings out of range: {} (momentum and betas in [0, 1), eps above 0, decay at least 0)",
            opt.describe()
        )));
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
