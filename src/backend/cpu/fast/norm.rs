//! The fast f32 batch normalization of the CPU backend, checked against the reference (../norm.rs) in
//! tests/ops/norm.rs. The reference walks the channels one after the other with one running sum each; here the
//! channels' statistics run in parallel, each plane summed in 16 lanes (which vectorize) and the planes added
//! in f64, so the sums are also more accurate; then one pass over the planes writes the output. Still two passes
//! for the variance (mean first): a channel's planes stay in cache between them at the model's sizes, and a
//! shifted one-pass formula would lose digits to cancellation.

use super::min_items;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// The sum of f(v) over v: 16 running sums that LLVM turns into vector adds, added up in a fixed order.
#[inline(always)]
fn lane_sum(v: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = v.chunks_exact(16);
    let rest: f32 = chunks.remainder().iter().map(|&a| f(a)).sum();
    for c in chunks {
        acc.iter_mut().zip(c).for_each(|(s, &a)| *s += f(a));
    }
    acc.iter().sum::<f32>() + rest
}

/// The sums of a and of f(a, b) over the pairs of two slices, 16 lanes each.
#[inline(always)]
fn lane_sums(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> (f32, f32) {
    let (mut sa, mut sf) = ([0f32; 16], [0f32; 16]);
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let rest = ca.remainder().iter().zip(cb.remainder()).fold((0f32, 0f32), |(s, t), (&x, &y)| (s + x, t + f(x, y)));
    for (x, y) in ca.zip(cb) {
        for ((s, t), (&x, &y)) in sa.iter_mut().zip(sf.iter_mut()).zip(x.iter().zip(y)) {
            *s += x;
            *t += f(x, y);
        }
    }
    (sa.iter().sum::<f32>() + rest.0, sf.iter().sum::<f32>() + rest.1)
}

/// Channel ch's planes of an [n, c, hw] tensor.
fn planes(x: &[f32], [n, c, hw]: [usize; 3], ch: usize) -> impl Iterator<Item = &[f32]> {
    (0..n).map(move |i| &x[(i * c + ch) * hw..][..hw])
}

/// Same contract as the reference's `forward_train`.
pub fn forward_train(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    d: [usize; 3],
    (eps, momentum): (f32, f32),
    y: &mut [MaybeUninit<f32>],
    [mean, invstd, running_mean, running_var]: [&mut [f32]; 4],
) {
    let count = (d[0] * d[2]) as f64;
    let stats: Vec<(f32, f64)> = (0..d[1])
        .into_par_iter()
        .with_min_len(min_items(d[0] * d[2]))
        .map(|ch| {
            let m = (planes(x, d, ch).map(|p| lane_sum(p, |v| v) as f64).sum::<f64>() / count) as f32;
            let var = planes(x, d, ch).map(|p| lane_sum(p, |v| (v - m) * (v - m)) as f64).sum::<f64>() / count;
            (m, var)
        })
        .collect();
    for (ch, &(m, var)) in stats.iter().enumerate() {
        mean[ch] = m;
        invstd[ch] = (1.0 / (var + eps as f64).sqrt()) as f32;
        running_mean[ch] = (1.0 - momentum) * running_mean[ch] + momentum * m;
        running_var[ch] = (1.0 - momentum) * running_var[ch] + momentum * (var * count / (count - 1.0)) as f32;
    }
    apply(x, gamma, beta, d, mean, invstd, y);
}

/// Same contract as the reference's `apply`: y = x s + t with each channel's s and t, computed once.
pub fn apply(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    [_, c, hw]: [usize; 3],
    mean: &[f32],
    invstd: &[f32],
    y: &mut [MaybeUninit<f32>],
) {
    let st: Vec<(f32, f32)> =
        (0..c).map(|ch| (invstd[ch] * gamma[ch], beta[ch] - mean[ch] * invstd[ch] * gamma[ch])).collect();
    y.par_chunks_mut(hw).zip(x.par_chunks(hw)).enumerate().with_min_len(min_items(hw)).for_each(|(nc, (yc, xc))| {
        let (s, t) = st[nc % c];
        yc.iter_mut().zip(xc).for_each(|(o, &v)| {
            o.write(v * s + t);
        });
    });
}

/// Same contract as the reference's `backward`.
pub fn backward(
    x: &[f32],
    gamma: &[f32],
    (mean, invstd): (&[f32], &[f32]),
    dy: &[f32],
    d: [usize; 3],
    dx: &mut [MaybeUninit<f32>],
    (dgamma, dbeta): (&mut [f32], &mut [f32]),
) {
    let [_, c, hw] = d;
    // Per channel: sum dy and sum dy (x - mean), then dx = gamma invstd (dy - mean(dy) - xhat mean(dy xhat)) as
    // dy a + (x - mean) b + c with the channel's a, b and c.
    let sums: Vec<(f64, f64)> = (0..c)
        .into_par_iter()
        .with_min_len(min_items(d[0] * hw))
        .map(|ch| {
            planes(dy, d, ch).zip(planes(x, d, ch)).fold((0.0, 0.0), |(s, t), (g, v)| {
                let (a, b) = lane_sums(g, v, |g, v| g * (v - mean[ch]));
                (s + a as f64, t + b as f64)
            })
        })
        .collect();
    let count = (d[0] * hw) as f64;
    let mut coef = Vec::with_capacity(c);
    for (ch, &(sdy, sdy_xc)) in sums.iter().enumerate() {
        let (is, scale) = (invstd[ch] as f64, (gamma[ch] * invstd[ch]) as f64);
        dgamma[ch] = (sdy_xc * is) as f32;
        dbeta[ch] = sdy as f32;
        coef.push((scale as f32, (-scale * is * is * sdy_xc / count) as f32, (-scale * sdy / count) as f32));
    }
    let planes = dx.par_chunks_mut(hw).zip(dy.par_chunks(hw)).zip(x.par_chunks(hw));
    planes.enumerate().with_min_len(min_items(hw)).for_each(|(nc, ((o, g), v))| {
        let ch = nc % c;
        let ((a, b, k), m) = (coef[ch], mean[ch]);
        o.iter_mut().zip(g).zip(v).for_each(|((o, &g), &v)| {
            o.write(a * g + b * (v - m) + k);
        });
    });
}
