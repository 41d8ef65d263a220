//! The fast f32 activations of the CPU backend, checked against the reference (../layers.rs) in
//! tests/ops/layers.rs. SiLU and its gradient were most of the step's element-wise time, and libm's expf most
//! of theirs: here one exponential per element, by a polynomial that vectorizes (math.rs), compiled for the
//! CPU's widest vectors, and large chunks per rayon task.

use super::math::exp_nonpositive;
use super::{sgemm, widest, GRAIN};
use crate::backend::layers::Act;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// (sigmoid(x), sigmoid(-x)) from one exponential of -|x| (no overflow, no 1 - s cancellation).
#[inline(always)]
fn sigmoids(x: f32) -> (f32, f32) {
    let t = exp_nonpositive(-x.abs());
    let p = 1.0 / (1.0 + t);
    let q = t * p;
    if x >= 0.0 {
        (p, q)
    } else {
        (q, p)
    }
}

/// out = f(a), every value written, in chunks of GRAIN per rayon task.
fn map(a: &[f32], out: &mut [MaybeUninit<f32>], f: impl Fn(f32) -> f32 + Sync) {
    out.par_chunks_mut(GRAIN).zip(a.par_chunks(GRAIN)).for_each(|(o, a)| map_chunk(a, o, &f));
}

widest! {
    fn map_chunk(a: &[f32], out: &mut [MaybeUninit<f32>], f: &impl Fn(f32) -> f32) {
        out.iter_mut().zip(a).for_each(|(o, &a)| {
            o.write(f(a));
        })
    }
}

/// out = f(a, b), every value written, in chunks of GRAIN per rayon task.
fn map2(a: &[f32], b: &[f32], out: &mut [MaybeUninit<f32>], f: impl Fn(f32, f32) -> f32 + Sync) {
    out.par_chunks_mut(GRAIN)
        .zip(a.par_chunks(GRAIN))
        .zip(b.par_chunks(GRAIN))
        .for_each(|((o, a), b)| map2_chunk(a, b, o, &f));
}

widest! {
    fn map2_chunk(a: &[f32], b: &[f32], out: &mut [MaybeUninit<f32>], f: &impl Fn(f32, f32) -> f32) {
        out.iter_mut().zip(a).zip(b).for_each(|((o, &a), &b)| {
            o.write(f(a, b));
        })
    }
}

/// Same contract as the reference's `act_forward`.
pub fn act_forward(kind: Act, x: &[f32], y: &mut [MaybeUninit<f32>]) {
    match kind {
        Act::Silu => map(x, y, |v| v * sigmoids(v).0),
        Act::Relu => map(x, y, |v| v.max(0.0)),
        Act::Sigmoid => map(x, y, |v| sigmoids(v).0),
    }
}

/// Same contract as the reference's `act_backward`.
pub fn act_backward(kind: Act, x: &[f32], dy: &[f32], dx: &mut [MaybeUninit<f32>]) {
    match kind {
        Act::Silu => map2(x, dy, dx, |v, g| {
            let (s, sn) = sigmoids(v);
            g * s * (1.0 + v * sn)
        }),
        Act::Relu => map2(x, dy, dx, |v, g| if v > 0.0 { g } else { 0.0 }),
        Act::Sigmoid => map2(x, dy, dx, |v, g| {
            let (s, sn) = sigmoids(v);
            g * s * sn
        }),
    }
}

/// Same contract as the reference's `linear`: y = x w^T + b, x [n, k], w [m, k]. The reference's dot products
/// are sequential sums, which do not vectorize; here one matrix product.
pub fn linear(x: &[f32], w: &[f32], b: &[f32], k: usize, m: usize, y: &mut [f32]) {
    sgemm((x.len() / k, k, m), x, (k, 1), w, (1, k), 0.0, (y, m));
    y.chunks_exact_mut(m).for_each(|row| row.iter_mut().zip(b).for_each(|(v, &b)| *v += b));
}

/// Same contract as the reference's `linear_backward`: dx = dy w, dw = dy^T x, db = the sum of dy's rows.
pub fn linear_backward(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    (n, k, m): (usize, usize, usize),
    dx: &mut [f32],
    dw: &mut [f32],
    db: &mut [f32],
) {
    sgemm((n, m, k), dy, (m, 1), w, (k, 1), 0.0, (dx, k));
    sgemm((m, n, k), dy, (1, m), x, (k, 1), 0.0, (dw, k));
    db.fill(0.0);
    dy.chunks_exact(m).for_each(|row| db.iter_mut().zip(row).for_each(|(s, &v)| *s += v));
}
