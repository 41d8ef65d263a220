//! The fast f32 activations of the CPU backend, checked against the reference (../layers.rs) in
//! tests/ops/layers.rs. SiLU and its gradient were most of the step's element-wise time, and libm's expf most
//! of theirs: here one exponential per element, by a polynomial that vectorizes, and large chunks per rayon task.

use super::{simd, GRAIN};
use crate::backend::layers::Activation;
use rayon::prelude::*;

/// e^a for a <= 0 (Cephes' expf: a = n ln 2 + r with |r| <= ln 2 / 2, e^r by a degree-7 polynomial, 2^n put into
/// the exponent bits): within 2 ulps, branch-free so that loops over it vectorize. Below -87.3 the result
/// would leave f32's normal range: it is 0 there. NaN stays NaN.
#[inline(always)]
fn exp_nonpositive(a: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // Adding and subtracting 1.5 x 2^23 rounds to an integer, which then sits in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let b = if a < -87.3 { -87.3 } else { a };
    let t = b * LOG2E + ROUND;
    let n = t - ROUND;
    let r = b - n * 0.693_359_375 + n * 2.121_944_4e-4;
    let p = ((((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5)
        * r
        + 1.0)
        * r
        + 1.0;
    // 2^n: n + 127 into the exponent field (t's low bits hold n + 0x40_0000, which the shift drops).
    let scale = f32::from_bits(t.to_bits().wrapping_add(127u32.wrapping_sub(0x4B40_0000)) << 23);
    if a < -87.3 {
        0.0
    } else {
        p * scale
    }
}

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

/// out = f(a), in chunks of GRAIN per rayon task.
fn map(a: &[f32], out: &mut [f32], f: impl Fn(f32) -> f32 + Sync) {
    out.par_chunks_mut(GRAIN).zip(a.par_chunks(GRAIN)).for_each(|(o, a)| {
        simd(|| o.iter_mut().zip(a).for_each(|(o, &a)| *o = f(a)));
    });
}

/// out = f(a, b), in chunks of GRAIN per rayon task.
fn map2(a: &[f32], b: &[f32], out: &mut [f32], f: impl Fn(f32, f32) -> f32 + Sync) {
    out.par_chunks_mut(GRAIN).zip(a.par_chunks(GRAIN)).zip(b.par_chunks(GRAIN)).for_each(|((o, a), b)| {
        simd(|| o.iter_mut().zip(a).zip(b).for_each(|((o, &a), &b)| *o = f(a, b)));
    });
}

/// Same contract as the reference's `act_forward`.
pub fn act_forward(kind: Activation, x: &[f32], y: &mut [f32]) {
    match kind {
        Activation::Silu => map(x, y, |v| v * sigmoids(v).0),
        Activation::Relu => map(x, y, |v| v.max(0.0)),
        Activation::Sigmoid => map(x, y, |v| sigmoids(v).0),
    }
}

/// Same contract as the reference's `act_backward`.
pub fn act_backward(kind: Activation, x: &[f32], dy: &[f32], dx: &mut [f32]) {
    match kind {
        Activation::Silu => map2(x, dy, dx, |v, g| {
            let (s, sn) = sigmoids(v);
            g * s * (1.0 + v * sn)
        }),
        Activation::Relu => map2(x, dy, dx, |v, g| if v > 0.0 { g } else { 0.0 }),
        Activation::Sigmoid => map2(x, dy, dx, |v, g| {
            let (s, sn) = sigmoids(v);
            g * s * sn
        }),
    }
}
