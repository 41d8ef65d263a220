//! Reference batch normalization (backend/norm.rs): two-pass statistics per channel, in the float type.

use super::real::Real;
use rayon::prelude::*;

/// Training: y from the batch statistics; writes mean and invstd per channel, and updates the running
/// statistics (unbiased variance) with `momentum`.
#[allow(clippy::too_many_arguments)]
pub fn forward_train<F: Real>(
    x: &[F],
    gamma: &[F],
    beta: &[F],
    [n, c, hw]: [usize; 3],
    eps: F,
    momentum: F,
    y: &mut [F],
    mean: &mut [F],
    invstd: &mut [F],
    running_mean: &mut [F],
    running_var: &mut [F],
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

/// Training-mode backward: dx, and d gamma, d beta (overwritten).
#[allow(clippy::too_many_arguments)]
pub fn backward<F: Real>(
    x: &[F],
    gamma: &[F],
    mean: &[F],
    invstd: &[F],
    dy: &[F],
    [n, c, hw]: [usize; 3],
    dx: &mut [F],
    dgamma: &mut [F],
    dbeta: &mut [F],
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
use crate::backend::norm::{check, check_train, BatchNorm, BnSaved};
use crate::error::Result;
use crate::tensor::{Element, Layout, Slice, Tensor};
use std::mem::MaybeUninit;
use std::ops::Range;

pub(super) fn run_train<F: Real + Element>(
    be: &CpuBackend,
    x: &Tensor,
    gamma: &Slice,
    beta: &Slice,
    bn: &BatchNorm,
    state: &mut Tensor,
    running: [Range<usize>; 2],
) -> Result<(Tensor, BnSaved)> {
    run_train_with(be, x, gamma, beta, bn, state, running, |x, g, b, d, eps, mom, y, mean, invstd, rm, rv| {
        forward_train::<F>(x, g, b, d, eps, mom, be.filled(y), mean, invstd, rm, rv)
    })
}

/// Training through `forward_train`, with the reference's arguments and y (every value written) as uninitialized
/// values: a fast path (fast/norm.rs), or the reference.
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
pub(super) fn run_train_with<F: Real + Element>(
    be: &CpuBackend,
    x: &Tensor,
    gamma: &Slice,
    beta: &Slice,
    bn: &BatchNorm,
    state: &mut Tensor,
    running: [Range<usize>; 2],
    forward_train: impl FnOnce(
        &[F],
        &[F],
        &[F],
        [usize; 3],
        F,
        F,
        &mut [MaybeUninit<F>],
        &mut [F],
        &mut [F],
        &mut [F],
        &mut [F],
    ),
) -> Result<(Tensor, BnSaved)> {
    let d = check_train(x, gamma, beta, bn)?;
    let (mut mean, mut invstd) = (be.output::<F>(bn.c), be.output::<F>(bn.c));
    let [rm, rv] = running;
    let (rmean, rvar) = two_of::<F>(state, rm, rv, bn.c)?;
    let (eps, mom) = (F::of(bn.eps as f64), F::of(bn.momentum as f64));
    let (xs, g, b) = (x.host::<F>()?, gamma.host()?, beta.host()?);
    // SAFETY: `forward_train` writes every value of y (its contract; the poisoned tests check it).
    let y = unsafe {
        be.output_with(x.numel(), |y| forward_train(xs, g, b, d, eps, mom, y, &mut mean, &mut invstd, rmean, rvar))
    };
    let saved = BnSaved {
        mean: Tensor::from_vec(&[bn.c], Layout::Plain, mean)?,
        invstd: Tensor::from_vec(&[bn.c], Layout::Plain, invstd)?,
    };
    Ok((Tensor::from_vec(x.shape(), Layout::Nchw, y)?, saved))
}

pub(super) fn run_eval<F: Real + Element>(
    be: &CpuBackend,
    x: &Tensor,
    gamma: &Slice,
    beta: &Slice,
    bn: &BatchNorm,
    running_mean: &Slice,
    running_var: &Slice,
) -> Result<Tensor> {
    run_eval_with(be, x, gamma, beta, bn, running_mean, running_var, |x, g, b, d, m, is, y| {
        apply::<F>(x, g, b, d, m, is, be.filled(y))
    })
}

/// Inference through `apply`, with the reference's arguments and y (every value written) as uninitialized
/// values: a fast path (fast/norm.rs), or the reference.
#[allow(clippy::too_many_arguments)]
pub(super) fn run_eval_with<F: Real + Element>(
    be: &CpuBackend,
    x: &Tensor,
    gamma: &Slice,
    beta: &Slice,
    bn: &BatchNorm,
    running_mean: &Slice,
    running_var: &Slice,
    apply: impl FnOnce(&[F], &[F], &[F], [usize; 3], &[F], &[F], &mut [MaybeUninit<F>]),
) -> Result<Tensor> {
    let d = check(x, gamma, beta, bn)?;
    let eps = F::of(bn.eps as f64);
    let invstd: Vec<F> = running_var.host::<F>()?.iter().map(|&v| F::ONE / (v + eps).sqrt()).collect();
    let (xs, g, b, m) = (x.host::<F>()?, gamma.host()?, beta.host()?, running_mean.host()?);
    // SAFETY: `apply` writes every value of y (its contract; the poisoned tests check it).
    let y = unsafe { be.output_with(x.numel(), |y| apply(xs, g, b, d, m, &invstd, y)) };
    Tensor::from_vec(x.shape(), Layout::Nchw, y)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn run_backward<F: Real + Element>(
    be: &CpuBackend,
    x: &Tensor,
    gamma: &Slice,
    saved: &BnSaved,
    dy: &Tensor,
    grads: &mut Tensor,
    dgamma: Range<usize>,
    dbeta: Range<usize>,
) -> Result<Tensor> {
    run_backward_with(be, x, gamma, saved, dy, grads, dgamma, dbeta, |x, g, m, is, dy, d, dx, dg, db| {
        backward::<F>(x, g, m, is, dy, d, be.filled(dx), dg, db)
    })
}

/// The backward through `backward`, with the reference's arguments and dx (every value written) as
/// uninitialized values: a fast path (fast/norm.rs), or the reference.
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
pub(super) fn run_backward_with<F: Element>(
    be: &CpuBackend,
    x: &Tensor,
    gamma: &Slice,
    saved: &BnSaved,
    dy: &Tensor,
    grads: &mut Tensor,
    dgamma: Range<usize>,
    dbeta: Range<usize>,
    backward: impl FnOnce(&[F], &[F], &[F], &[F], &[F], [usize; 3], &mut [MaybeUninit<F>], &mut [F], &mut [F]),
) -> Result<Tensor> {
    let c = gamma.len();
    let d = check(x, gamma, gamma, &BatchNorm::new(c))?;
    crate::backend::layers::same(x, dy, "batch norm backward")?;
    let (dg, db) = two_of::<F>(grads, dgamma, dbeta, c)?;
    let (xs, g, m, is, dys) = (x.host::<F>()?, gamma.host()?, saved.mean.host()?, saved.invstd.host()?, dy.host()?);
    // SAFETY: `backward` writes every value of dx (its contract; the poisoned tests check it).
    let dx = unsafe { be.output_with(x.numel(), |dx| backward(xs, g, m, is, dys, d, dx, dg, db)) };
    Tensor::from_vec(x.shape(), Layout::Nchw, dx)
}
