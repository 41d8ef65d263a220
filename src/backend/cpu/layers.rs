//! Reference for kernels/layers.cu (backend/layers.rs), generic over the float type.

use super::real::Real;
use crate::backend::layers::Act;
use rayon::prelude::*;

pub fn act<F: Real>(kind: Act, x: F) -> F {
    match kind {
        Act::Silu => x * x.sigmoid(),
        Act::Relu => x.max(F::ZERO),
        Act::Sigmoid => x.sigmoid(),
    }
}

/// d act / dx at x. `sigmoid(-x)` stands for `1 - s`, which cancels for x above about 5 (2.8% off at x = 10).
pub fn act_grad<F: Real>(kind: Act, x: F) -> F {
    match kind {
        Act::Silu => x.sigmoid() * (F::ONE + x * (-x).sigmoid()),
        Act::Relu => {
            if x > F::ZERO {
                F::ONE
            } else {
                F::ZERO
            }
        }
        Act::Sigmoid => x.sigmoid() * (-x).sigmoid(),
    }
}

/// Mean over H x W of each (n, c).
pub fn avg_pool<F: Real>(x: &[F], hw: usize, y: &mut [F]) {
    let inv = F::ONE / F::of(hw as f64);
    y.par_iter_mut().zip(x.par_chunks(hw)).for_each(|(o, xc)| *o = xc.iter().copied().sum::<F>() * inv);
}

pub fn avg_pool_backward<F: Real>(dy: &[F], hw: usize, dx: &mut [F]) {
    let inv = F::ONE / F::of(hw as f64);
    dx.par_chunks_mut(hw).zip(dy.par_iter()).for_each(|(d, &g)| d.fill(g * inv));
}

/// y[n, c, :] = x[n, c, :] * s[n, c].
pub fn channel_scale<F: Real>(x: &[F], s: &[F], hw: usize, y: &mut [F]) {
    y.par_chunks_mut(hw).zip(x.par_chunks(hw)).zip(s.par_iter()).for_each(|((o, xc), &k)| {
        o.iter_mut().zip(xc).for_each(|(o, &v)| *o = v * k);
    });
}

pub fn channel_scale_backward<F: Real>(x: &[F], s: &[F], dy: &[F], hw: usize, dx: &mut [F], ds: &mut [F]) {
    dx.par_chunks_mut(hw).zip(dy.par_chunks(hw)).zip(s.par_iter()).for_each(|((o, g), &k)| {
        o.iter_mut().zip(g).for_each(|(o, &g)| *o = g * k);
    });
    ds.par_iter_mut().enumerate().for_each(|(nc, d)| {
        *d = x[nc * hw..][..hw].iter().zip(&dy[nc * hw..][..hw]).map(|(&a, &b)| a * b).sum();
    });
}

/// y = x w^T + b, x [n, k], w [m, k].
pub fn linear<F: Real>(x: &[F], w: &[F], b: &[F], k: usize, m: usize, y: &mut [F]) {
    y.par_chunks_mut(m).zip(x.par_chunks(k)).for_each(|(yr, xr)| {
        for (j, o) in yr.iter_mut().enumerate() {
            *o = w[j * k..][..k].iter().zip(xr).map(|(&a, &b)| a * b).sum::<F>() + b[j];
        }
    });
}

/// dx = dy w, dw = dy^T x, db = sum over rows of dy (dw and db overwritten); x [n, k], w [m, k].
pub fn linear_backward<F: Real>(
    x: &[F],
    w: &[F],
    dy: &[F],
    (n, k, m): (usize, usize, usize),
    dx: &mut [F],
    dw: &mut [F],
    db: &mut [F],
) {
    dx.par_chunks_mut(k).zip(dy.par_chunks(m)).for_each(|(dxr, g)| {
        for (c, o) in dxr.iter_mut().enumerate() {
            *o = (0..m).map(|j| g[j] * w[j * k + c]).sum();
        }
    });
    dw.par_chunks_mut(k).zip(db.par_iter_mut()).enumerate().for_each(|(j, (dwr, dbj))| {
        dwr.fill(F::ZERO);
        *dbj = F::ZERO;
        for i in 0..n {
            let g = dy[i * m + j];
            *dbj += g;
            dwr.iter_mut().zip(&x[i * k..][..k]).for_each(|(o, &v)| *o += g * v);
        }
    });
}

use super::CpuBackend;
use crate::backend::Slots;
use crate::error::Result;
use crate::tensor::{Element, Layout, Slice, Tensor};
use std::mem::MaybeUninit;
use std::ops::Range;

/// y = act(x), element-wise.
pub fn act_forward<F: Real>(kind: Act, x: &[F], y: &mut [F]) {
    y.par_iter_mut().zip(x.par_iter()).for_each(|(o, &v)| *o = act(kind, v));
}

/// dx = dy act'(x), element-wise.
pub fn act_backward<F: Real>(kind: Act, x: &[F], dy: &[F], dx: &mut [F]) {
    dx.par_iter_mut().zip(x.par_iter()).zip(dy.par_iter()).for_each(|((o, &v), &g)| *o = g * act_grad(kind, v));
}

pub(super) fn run_act<F: Real + Element>(be: &CpuBackend, x: &Tensor, kind: Act) -> Result<Tensor> {
    run_act_with(be, x, kind, |kind, x, y| act_forward::<F>(kind, x, be.filled(y)))
}

/// The activation through `forward`, which writes every value of y: a fast path (fast/layers.rs), or the
/// reference.
pub(super) fn run_act_with<F: Element>(
    be: &CpuBackend,
    x: &Tensor,
    kind: Act,
    forward: impl FnOnce(Act, &[F], &mut [MaybeUninit<F>]),
) -> Result<Tensor> {
    let xs = x.host::<F>()?;
    // SAFETY: `forward` writes every value of y (the contract of the activations; the poisoned tests check it).
    let y = unsafe { be.output_with(x.numel(), |y| forward(kind, xs, y)) };
    Tensor::from_vec(x.shape(), x.layout(), y)
}

pub(super) fn run_act_backward<F: Real + Element>(
    be: &CpuBackend,
    x: &Tensor,
    dy: &Tensor,
    kind: Act,
) -> Result<Tensor> {
    run_act_backward_with(be, x, dy, kind, |kind, x, dy, dx| act_backward::<F>(kind, x, dy, be.filled(dx)))
}

/// The activation's backward through `backward`: (x, dy) to dx, every value written.
pub(super) fn run_act_backward_with<F: Element>(
    be: &CpuBackend,
    x: &Tensor,
    dy: &Tensor,
    kind: Act,
    backward: impl FnOnce(Act, &[F], &[F], &mut [MaybeUninit<F>]),
) -> Result<Tensor> {
    let (xs, dys) = (x.host::<F>()?, dy.host::<F>()?);
    // SAFETY: `backward` writes every value of dx (the contract of the activations; the poisoned tests check it).
    let dx = unsafe { be.output_with(x.numel(), |dx| backward(kind, xs, dys, dx)) };
    Tensor::from_vec(x.shape(), x.layout(), dx)
}

pub(super) fn run_avg_pool<F: Real + Element>(be: &CpuBackend, x: &Tensor, [n, c, hw]: [usize; 3]) -> Result<Tensor> {
    let mut y = be.output::<F>(n * c);
    avg_pool(x.host::<F>()?, hw, &mut y);
    Tensor::from_vec(&[n, c], Layout::Plain, y)
}

pub(super) fn run_avg_pool_backward<F: Real + Element>(
    be: &CpuBackend,
    dy: &Tensor,
    shape: [usize; 4],
) -> Result<Tensor> {
    let mut dx = be.output::<F>(shape.iter().product());
    avg_pool_backward(dy.host::<F>()?, shape[2] * shape[3], &mut dx);
    Tensor::from_vec(&shape, Layout::Nchw, dx)
}

pub(super) fn run_channel_scale<F: Real + Element>(
    be: &CpuBackend,
    x: &Tensor,
    s: &Tensor,
    hw: usize,
) -> Result<Tensor> {
    let mut y = be.output::<F>(x.numel());
    channel_scale(x.host::<F>()?, s.host()?, hw, &mut y);
    Tensor::from_vec(x.shape(), Layout::Nchw, y)
}

pub(super) fn run_channel_scale_backward<F: Real + Element>(
    be: &CpuBackend,
    x: &Tensor,
    s: &Tensor,
    dy: &Tensor,
    hw: usize,
) -> Result<(Tensor, Tensor)> {
    let (mut dx, mut ds) = (be.output::<F>(x.numel()), be.output::<F>(s.numel()));
    channel_scale_backward(x.host::<F>()?, s.host()?, dy.host()?, hw, &mut dx, &mut ds);
    Ok((Tensor::from_vec(x.shape(), Layout::Nchw, dx)?, Tensor::from_vec(s.shape(), Layout::Plain, ds)?))
}

pub(super) fn run_add<F: Real + Element>(be: &CpuBackend, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let mut y = be.output::<F>(a.numel());
    y.par_iter_mut().zip(a.host::<F>()?.par_iter()).zip(b.host::<F>()?.par_iter()).for_each(|((o, &u), &v)| *o = u + v);
    Tensor::from_vec(a.shape(), a.layout(), y)
}

/// `a` and `b` ([n, p] and [n, q]) side by side.
pub(super) fn run_concat_columns<F: Element>(
    be: &CpuBackend,
    a: &Tensor,
    b: &Tensor,
    [n, p, q]: [usize; 3],
) -> Result<Tensor> {
    let mut y = be.output::<F>(n * (p + q));
    let (a, b) = (a.host::<F>()?, b.host::<F>()?);
    y.par_chunks_mut(p + q).enumerate().for_each(|(r, row)| {
        row[..p].copy_from_slice(&a[r * p..][..p]);
        row[p..].copy_from_slice(&b[r * q..][..q]);
    });
    Tensor::from_vec(&[n, p + q], Layout::Plain, y)
}

/// Columns `cols` of `x` ([n, c]).
pub(super) fn run_columns<F: Element>(
    be: &CpuBackend,
    x: &Tensor,
    cols: Range<usize>,
    [n, c]: [usize; 2],
) -> Result<Tensor> {
    let w = cols.len();
    let mut y = be.output::<F>(n * w);
    let x = x.host::<F>()?;
    y.par_chunks_mut(w.max(1)).enumerate().for_each(|(r, row)| row.copy_from_slice(&x[r * c + cols.start..][..w]));
    Tensor::from_vec(&[n, w], Layout::Plain, y)
}

pub(super) fn run_sample_scale<F: Real + Element>(be: &CpuBackend, x: &Tensor, scales: &[f32]) -> Result<Tensor> {
    let per = x.numel() / scales.len().max(1);
    let mut y = be.output::<F>(x.numel());
    y.par_chunks_mut(per).zip(x.host::<F>()?.par_chunks(per)).zip(scales.par_iter()).for_each(|((o, v), &k)| {
        o.iter_mut().zip(v).for_each(|(o, &v)| *o = v * F::of(k as f64));
    });
    Tensor::from_vec(x.shape(), x.layout(), y)
}

pub(super) fn run_linear<F: Real + Element>(
    be: &CpuBackend,
    x: &Tensor,
    w: &Slice,
    b: &Slice,
    d: (usize, usize, usize),
) -> Result<Tensor> {
    run_linear_with(be, x, w, b, d, linear::<F>)
}

/// The layer through `linear` (this file's, or the fast path's, with its contract).
pub(super) fn run_linear_with<F: Element>(
    be: &CpuBackend,
    x: &Tensor,
    w: &Slice,
    b: &Slice,
    (n, k, m): (usize, usize, usize),
    linear: impl FnOnce(&[F], &[F], &[F], usize, usize, &mut [F]),
) -> Result<Tensor> {
    let mut y = be.output::<F>(n * m);
    linear(x.host::<F>()?, w.host()?, b.host()?, k, m, &mut y);
    Tensor::from_vec(&[n, m], Layout::Plain, y)
}

/// The layer's backward on checked arguments (`d` = (n, k, m) from `check_linear_backward`).
pub(super) fn run_linear_backward<F: Real + Element>(
    be: &CpuBackend,
    x: &Tensor,
    w: &Slice,
    dy: &Tensor,
    grads: Slots<2>,
    d: (usize, usize, usize),
) -> Result<Tensor> {
    run_linear_backward_with(be, x, w, dy, grads, d, linear_backward::<F>)
}

/// The layer's backward through `backward` (this file's `linear_backward`, or the fast path's).
pub(super) fn run_linear_backward_with<F: Real + Element>(
    be: &CpuBackend,
    x: &Tensor,
    w: &Slice,
    dy: &Tensor,
    grads: Slots<2>,
    (n, k, m): (usize, usize, usize),
    backward: impl FnOnce(&[F], &[F], &[F], (usize, usize, usize), &mut [F], &mut [F], &mut [F]),
) -> Result<Tensor> {
    let mut dx = be.output::<F>(n * k);
    // dw and db are different lengths: take them one after the other.
    let (mut gw, mut gb) = (vec![F::ZERO; m * k], vec![F::ZERO; m]);
    backward(x.host::<F>()?, w.host()?, dy.host()?, (n, k, m), &mut dx, &mut gw, &mut gb);
    let Slots { buf, at: [dw, db] } = grads;
    let g = buf.host_mut::<F>()?;
    g[dw].copy_from_slice(&gw);
    g[db].copy_from_slice(&gb);
    Tensor::from_vec(&[n, k], Layout::Plain, dx)
}
