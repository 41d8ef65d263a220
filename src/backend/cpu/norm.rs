//! Reference batch normalization (backend/norm.rs): two-pass statistics per channel, in the float type.

use super::real::Real;
use rayon::prelude::*;

/// Training: y from the batch statistics; writes mean and invstd per channel, and updates the running
/// statistics (unbiased variance) with `momentum`.
pub fn forward_train<F: Real>(
    x: &[F],
    gamma: &[F],
    beta: &[F],
    [n, c, hw]: [usize; 3],
    (eps, momentum): (F, F),
    y: &mut [F],
    [mean, invstd, running_mean, running_var]: [&mut [F]; 4],
) {
    let count = F::of((n * hw) as f64);
    for ch in 0..c {
        let vals = || (0..n).flat_map(move |i| x[(i * c + ch) * hw..][..hw].iter().copied());
        let m = vals().sum::<F>() / count;
        let var = vals().map(|v| (v - m) * (v - m)).sum::<F>() / count;
        mean[ch] = m;
        invstd[ch] = F::ONE / (var + eps).sqrt();
        running_mean[ch] = (F::ONE - momentum) * running_mean[ch] + momentum * m;
        running_var[ch] = (F::ONE - momentum) * running_var[ch] + momentum * var * count / (count - F::ONE);
    }
    apply(x, gamma, beta, [n, c, hw], mean, invstd, y);
}

/// y = (x - mean) invstd gamma + beta per channel.
pub fn apply<F: Real>(x: &[F], gamma: &[F], beta: &[F], [_, c, hw]: [usize; 3], mean: &[F], invstd: &[F], y: &mut [F]) {
    y.par_chunks_mut(hw).zip(x.par_chunks(hw)).enumerate().for_each(|(nc, (yc, xc))| {
        let ch = nc % c;
        let (s, t) = (invstd[ch] * gamma[ch], beta[ch] - mean[ch] * invstd[ch] * gamma[ch]);
        yc.iter_mut().zip(xc).for_each(|(o, &v)| *o = v * s + t);
    });
}

/// Training-mode backward from the batch's (mean, invstd): dx, and (d gamma, d beta) (overwritten).
pub fn backward<F: Real>(
    x: &[F],
    gamma: &[F],
    (mean, invstd): (&[F], &[F]),
    dy: &[F],
    [n, c, hw]: [usize; 3],
    dx: &mut [F],
    (dgamma, dbeta): (&mut [F], &mut [F]),
) {
    let count = F::of((n * hw) as f64);
    for ch in 0..c {
        let (mut sdy, mut sdy_xh) = (F::ZERO, F::ZERO);
        for i in 0..n {
            let o = (i * c + ch) * hw;
            for k in 0..hw {
                sdy += dy[o + k];
                sdy_xh += dy[o + k] * (x[o + k] - mean[ch]) * invstd[ch];
            }
        }
        dgamma[ch] = sdy_xh;
        dbeta[ch] = sdy;
        let scale = gamma[ch] * invstd[ch];
        for i in 0..n {
            let o = (i * c + ch) * hw;
            for k in 0..hw {
                let xh = (x[o + k] - mean[ch]) * invstd[ch];
                dx[o + k] = scale * (dy[o + k] - sdy / count - xh * sdy_xh / count);
            }
        }
    }
}

use super::{two_of, CpuBackend};
use crate::backend::norm::{BnBackward, BnParams, BnRunning, BnSaved};
use crate::backend::Slots;
use crate::error::Result;
use crate::tensor::{Element, Layout, Tensor};
use std::mem::MaybeUninit;

/// Training on checked arguments (`d` from `check_train`).
pub(super) fn run_train<F: Real + Element>(
    be: &CpuBackend,
    x: &Tensor,
    p: &BnParams,
    running: Slots<2>,
    d: [usize; 3],
) -> Result<(Tensor, BnSaved)> {
    run_train_with(be, x, p, running, d, |x, g, b, d, eps_mom, y, stats| {
        forward_train::<F>(x, g, b, d, eps_mom, be.filled(y), stats)
    })
}

/// Training through `forward_train`, with the reference's arguments and y (every value written) as uninitialized
/// values: a fast path (fast/norm.rs), or the reference.
pub(super) fn run_train_with<F: Real + Element>(
    be: &CpuBackend,
    x: &Tensor,
    p: &BnParams,
    running: Slots<2>,
    d: [usize; 3],
    forward_train: impl FnOnce(&[F], &[F], &[F], [usize; 3], (F, F), &mut [MaybeUninit<F>], [&mut [F]; 4]),
) -> Result<(Tensor, BnSaved)> {
    let bn = p.bn;
    let (mut mean, mut invstd) = (be.output::<F>(bn.c), be.output::<F>(bn.c));
    let (rmean, rvar) = two_of::<F>(running)?;
    let eps_mom = (F::of(bn.eps as f64), F::of(bn.momentum as f64));
    let (xs, g, b) = (x.host::<F>()?, p.gamma.host()?, p.beta.host()?);
    let stats = [&mut mean[..], &mut invstd[..], rmean, rvar];
    // SAFETY: `forward_train` writes every value of y (its contract; the poisoned tests check it).
    let y = unsafe { be.output_with(x.numel(), |y| forward_train(xs, g, b, d, eps_mom, y, stats)) };
    let saved = BnSaved {
        mean: Tensor::from_vec(&[bn.c], Layout::Plain, mean)?,
        invstd: Tensor::from_vec(&[bn.c], Layout::Plain, invstd)?,
    };
    Ok((Tensor::from_vec(x.shape(), Layout::Nchw, y)?, saved))
}

/// Inference on checked arguments (`d` from `check_eval`).
pub(super) fn run_eval<F: Real + Element>(
    be: &CpuBackend,
    x: &Tensor,
    p: &BnParams,
    r: &BnRunning,
    d: [usize; 3],
) -> Result<Tensor> {
    run_eval_with(be, x, p, r, d, |x, g, b, d, m, is, y| apply::<F>(x, g, b, d, m, is, be.filled(y)))
}

/// Inference through `apply`, with the reference's arguments and y (every value written) as uninitialized
/// values: a fast path (fast/norm.rs), or the reference.
pub(super) fn run_eval_with<F: Real + Element>(
    be: &CpuBackend,
    x: &Tensor,
    p: &BnParams,
    r: &BnRunning,
    d: [usize; 3],
    apply: impl FnOnce(&[F], &[F], &[F], [usize; 3], &[F], &[F], &mut [MaybeUninit<F>]),
) -> Result<Tensor> {
    let eps = F::of(p.bn.eps as f64);
    let invstd: Vec<F> = r.var.host::<F>()?.iter().map(|&v| F::ONE / (v + eps).sqrt()).collect();
    let (xs, g, b, m) = (x.host::<F>()?, p.gamma.host()?, p.beta.host()?, r.mean.host()?);
    // SAFETY: `apply` writes every value of y (its contract; the poisoned tests check it).
    let y = unsafe { be.output_with(x.numel(), |y| apply(xs, g, b, d, m, &invstd, y)) };
    Tensor::from_vec(x.shape(), Layout::Nchw, y)
}

/// The backward on checked arguments (`d` from `check_backward`).
pub(super) fn run_backward<F: Real + Element>(
    be: &CpuBackend,
    a: &BnBackward,
    grads: Slots<2>,
    d: [usize; 3],
) -> Result<Tensor> {
    run_backward_with(be, a, grads, d, |x, g, stats, dy, d, dx, dparams| {
        backward::<F>(x, g, stats, dy, d, be.filled(dx), dparams)
    })
}

/// The backward through `backward`, with the reference's arguments and dx (every value written) as
/// uninitialized values: a fast path (fast/norm.rs), or the reference.
pub(super) fn run_backward_with<F: Element>(
    be: &CpuBackend,
    a: &BnBackward,
    grads: Slots<2>,
    d: [usize; 3],
    backward: impl FnOnce(&[F], &[F], (&[F], &[F]), &[F], [usize; 3], &mut [MaybeUninit<F>], (&mut [F], &mut [F])),
) -> Result<Tensor> {
    let dparams = two_of::<F>(grads)?;
    let (x, dy, saved) = (a.x, a.dy, a.saved);
    let stats = (saved.mean.host()?, saved.invstd.host()?);
    let (xs, g, dys) = (x.host::<F>()?, a.gamma.host()?, dy.host()?);
    // SAFETY: `backward` writes every value of dx (its contract; the poisoned tests check it).
    let dx = unsafe { be.output_with(x.numel(), |dx| backward(xs, g, stats, dys, d, dx, dparams)) };
    Tensor::from_vec(x.shape(), Layout::Nchw, dx)
}
