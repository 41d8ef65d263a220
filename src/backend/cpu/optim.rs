//! Reference for kernels/optim.cu: per-tensor norms (f64 accumulation) and the AdamW and SGD steps, in PyTorch's
//! order of operations, so that the two backends and PyTorch agree to rounding.

use crate::backend::optim::{AdamW, Sgd, StepArgs};
use crate::params::ParamLayout;
use rayon::prelude::*;

/// Writes per tensor the sums of squares of gradient and values, then the total gradient norm and the clipping
/// factor min(1, max_norm / (total + 1e-6)) (PyTorch's clip_grad_norm_), or 1 without `max_norm`.
pub fn param_norms(layout: &ParamLayout, p: &[f32], g: &[f32], max_norm: Option<f32>, out: &mut [f32]) {
    norms_pass(layout, g, p, 0.0, max_norm, out)
}

/// Per tensor, the sums of squares of one optimizer step (after - before) and of the weights before it.
pub fn step_norms(layout: &ParamLayout, before: &[f32], after: &[f32], out: &mut [f32]) {
    norms_pass(layout, after, before, 1.0, None, out)
}

/// Per tensor, the sums of (a - sub b)^2 and of b^2 (the difference rounded to f32, as the kernel does), then
/// the total of the first and the clip factor.
fn norms_pass(layout: &ParamLayout, a: &[f32], b: &[f32], sub: f32, max_norm: Option<f32>, out: &mut [f32]) {
    let sq = |v: &mut dyn Iterator<Item = f32>| v.map(|x| x as f64 * x as f64).sum::<f64>();
    // Each tensor's sums in parallel (their order within a tensor is fixed), the total in tensor order.
    let sums: Vec<(f64, f64)> = layout
        .entries()
        .par_iter()
        .map(|e| {
            let (ar, br) = (&a[e.range()], &b[e.range()]);
            (sq(&mut ar.iter().zip(br).map(|(&x, &y)| x - sub * y)), sq(&mut br.iter().copied()))
        })
        .collect();
    let mut total = 0.0;
    for (i, &(gs, ps)) in sums.iter().enumerate() {
        total += gs;
        out[2 * i] = gs as f32;
        out[2 * i + 1] = ps as f32;
    }
    let n = layout.entries().len();
    let total = total.sqrt();
    out[2 * n] = total as f32;
    out[2 * n + 1] = max_norm.map_or(1.0, |m| (m as f64 / (total + 1e-6)).min(1.0) as f32);
}

/// AdamW with the step's constants `k`.
pub fn adamw(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], mask: &[u8], k: &AdamWStep) {
    p.par_iter_mut().zip(m.par_iter_mut()).zip(v.par_iter_mut()).enumerate().for_each(|(i, ((p, m), v))| {
        k.update(p, m, v, g[i], mask[i]);
    });
}

/// One AdamW step's constants, and its update of one parameter (shared with the fast path, fast/optim.rs).
pub struct AdamWStep {
    opt: AdamW,
    clip: f32,
    step_size: f32,
    decay: f32,
    bc2_sqrt: f32,
}

impl AdamWStep {
    pub fn new(opt: &AdamW, clip: f32, s: StepArgs) -> Self {
        let (bc1, bc2_sqrt) = bias_corrections(opt, s.t);
        AdamWStep { opt: *opt, clip, step_size: s.lr / bc1, decay: 1.0 - s.lr * opt.weight_decay, bc2_sqrt }
    }

    /// Parameter p with moments m and v, gradient g; decayed unless `mask` is 0.
    #[inline(always)]
    pub(super) fn update(&self, p: &mut f32, m: &mut f32, v: &mut f32, g: f32, mask: u8) {
        let (opt, gi) = (&self.opt, g * self.clip);
        if mask != 0 {
            *p *= self.decay;
        }
        *m = opt.beta1 * *m + (1.0 - opt.beta1) * gi;
        *v = opt.beta2 * *v + (1.0 - opt.beta2) * gi * gi;
        let denom = v.sqrt() / self.bc2_sqrt + opt.eps;
        *p -= self.step_size * *m / denom;
    }
}

/// SGD with momentum; `m` holds the momentum.
pub fn sgd(p: &mut [f32], g: &[f32], m: &mut [f32], mask: &[u8], clip: f32, opt: &Sgd, s: StepArgs) {
    p.par_iter_mut().zip(m.par_iter_mut()).enumerate().for_each(|(i, (p, m))| {
        let mut gi = g[i] * clip;
        if mask[i] != 0 {
            gi += opt.weight_decay * *p;
        }
        *m = opt.momentum * *m + gi;
        *p -= s.lr * *m;
    });
}

/// (1 - b1^t, sqrt(1 - b2^t)), computed in f64 and rounded once, as both backends use them.
pub fn bias_corrections(opt: &AdamW, t: u64) -> (f32, f32) {
    let t = t as i32;
    ((1.0 - (opt.beta1 as f64).powi(t)) as f32, (1.0 - (opt.beta2 as f64).powi(t)).sqrt() as f32)
}
