//! Batch norm: training statistics and running updates against hand-computed values, f64 gradient checks,
//! GPU against CPU.

use crate::common::*;
use dfgpu::backend::{BatchNorm, BnBackward, BnParams, BnRunning, Slots};
use dfgpu::rng::Rng;
use dfgpu::tensor::Slice;
use dfgpu::{Backend, Layout, Tensor};

/// gamma at 0..c, beta at c..2c of one parameter buffer; running mean at 0..c, var at c..2c of the state.
fn params(c: usize, rng: &mut Rng) -> Vec<f64> {
    let mut p: Vec<f64> = (0..c).map(|_| 1.0 + 0.3 * rng.normal()).collect();
    p.extend(normals(rng, c, 0.5));
    p
}

#[test]
fn training_normalizes_and_updates_running_statistics_as_pytorch() {
    let be = cpu();
    // One channel, values 1..=4: mean 2.5, biased var 1.25, unbiased 5/3.
    let x = t64(&[2, 1, 1, 2], Layout::Nchw, vec![1.0, 2.0, 3.0, 4.0]);
    let p = t64(&[2], Layout::Plain, vec![2.0, 0.5]);
    let mut state = t64(&[2], Layout::Plain, vec![0.0, 1.0]);
    let bn = BatchNorm::new(1);
    let bp = BnParams { gamma: Slice { buf: &p, range: 0..1 }, beta: Slice { buf: &p, range: 1..2 }, bn: &bn };
    let (y, saved) = be.batch_norm_train(&x, &bp, Slots { buf: &mut state, at: [0..1, 1..2] }).unwrap();
    let is = 1.0 / (1.25f64 + 1e-5).sqrt();
    for (i, &v) in y.host::<f64>().unwrap().iter().enumerate() {
        assert!((v - ((i as f64 + 1.0 - 2.5) * is * 2.0 + 0.5)).abs() < 1e-12);
    }
    assert!((saved.mean.host::<f64>().unwrap()[0] - 2.5).abs() < 1e-15);
    let s = state.host::<f64>().unwrap();
    // momentum is an f32 (0.1 to 1e-8): the comparison allows for it.
    assert!((s[0] - 0.25).abs() < 1e-8 && (s[1] - (0.9 + 0.1 * 5.0 / 3.0)).abs() < 1e-8, "{s:?}");
    // Inference with those running statistics.
    let r = BnRunning { mean: Slice { buf: &state, range: 0..1 }, var: Slice { buf: &state, range: 1..2 } };
    let y = be.batch_norm_eval(&x, &bp, &r).unwrap();
    let want = (1.0 - s[0]) / (s[1] + 1e-5).sqrt() * 2.0 + 0.5;
    assert!((y.host::<f64>().unwrap()[0] - want).abs() < 1e-12);
}

#[test]
fn training_gradients_match_central_differences_in_f64() {
    let be = cpu();
    let mut rng = Rng::new(1);
    let (n, c, h, w) = (3, 4, 3, 5);
    let x = normals(&mut rng, n * c * h * w, 2.0);
    let p = params(c, &mut rng);
    let bn = BatchNorm::new(c);
    let run = |x: &[f64], p: &[f64]| {
        let pt = t64(&[2 * c], Layout::Plain, p.to_vec());
        let mut st = t64(&[2 * c], Layout::Plain, vec![0.0; 2 * c]);
        let bp =
            BnParams { gamma: Slice { buf: &pt, range: 0..c }, beta: Slice { buf: &pt, range: c..2 * c }, bn: &bn };
        let running = Slots { buf: &mut st, at: [0..c, c..2 * c] };
        be.batch_norm_train(&t64(&[n, c, h, w], Layout::Nchw, x.to_vec()), &bp, running).unwrap()
    };
    let (y, saved) = run(&x, &p);
    let cy = normals(&mut rng, y.numel(), 1.0);
    let pt = t64(&[2 * c], Layout::Plain, p.clone());
    let mut grads = t64(&[2 * c], Layout::Plain, vec![f64::NAN; 2 * c]);
    let (xt, dyt) = (t64(&[n, c, h, w], Layout::Nchw, x.clone()), t64(y.shape(), Layout::Nchw, cy.clone()));
    let a = BnBackward { x: &xt, gamma: Slice { buf: &pt, range: 0..c }, saved: &saved, dy: &dyt };
    let dx = be.batch_norm_backward(&a, Slots { buf: &mut grads, at: [0..c, c..2 * c] }).unwrap();
    check_grads("bn dx", dx.host().unwrap(), &x, 0..x.len(), |xx| dot(&run(xx, &p).0, &cy));
    check_grads("bn dgamma, dbeta", grads.host().unwrap(), &p, 0..2 * c, |pp| dot(&run(&x, pp).0, &cy));
}

#[test]
#[ignore = "needs a CUDA device: a GPU, or the emulator (scripts/emu.sh)"]
fn gpu_matches_cpu() {
    let (gpu, cpu) = (gpu(), cpu());
    let mut rng = Rng::new(2);
    for (n, c, h, w) in [(2, 3, 5, 4), (8, 32, 28, 28), (1, 16, 7, 7)] {
        let x = Tensor::from_vec(&[n, c, h, w], Layout::Nchw, to_f32(&normals(&mut rng, n * c * h * w, 3.0))).unwrap();
        let p = Tensor::from_vec(&[2 * c], Layout::Plain, to_f32(&params(c, &mut rng))).unwrap();
        let st0 = Tensor::from_vec(&[2 * c], Layout::Plain, [vec![0.1f32; c], vec![0.9f32; c]].concat()).unwrap();
        let dy = Tensor::from_vec(&[n, c, h, w], Layout::Nchw, to_f32(&normals(&mut rng, n * c * h * w, 1.0))).unwrap();
        let bn = BatchNorm::new(c);
        let run = |be: &dyn Backend| -> Vec<Vec<f32>> {
            let (x, p, dy) = (be.upload(&x).unwrap(), be.upload(&p).unwrap(), be.upload(&dy).unwrap());
            let mut st = be.upload(&st0).unwrap();
            let bp =
                BnParams { gamma: Slice { buf: &p, range: 0..c }, beta: Slice { buf: &p, range: c..2 * c }, bn: &bn };
            let (y, saved) = be.batch_norm_train(&x, &bp, Slots { buf: &mut st, at: [0..c, c..2 * c] }).unwrap();
            let mut grads = be.upload(&Tensor::from_vec(&[2 * c], Layout::Plain, vec![0f32; 2 * c]).unwrap()).unwrap();
            let a = BnBackward { x: &x, gamma: bp.gamma.clone(), saved: &saved, dy: &dy };
            let dx = be.batch_norm_backward(&a, Slots { buf: &mut grads, at: [0..c, c..2 * c] }).unwrap();
            let r = BnRunning { mean: Slice { buf: &st, range: 0..c }, var: Slice { buf: &st, range: c..2 * c } };
            let ye = be.batch_norm_eval(&x, &bp, &r).unwrap();
            [y, dx, grads, st, ye].iter().map(|t| be.download(t).unwrap().host::<f32>().unwrap().to_vec()).collect()
        };
        let tag = format!("{n}x{c}x{h}x{w}");
        let (want, got) = (run(&cpu), race_checked(&format!("batch norm {tag}"), || run(&gpu)));
        for (name, (got, want)) in ["y", "dx", "dgamma dbeta", "running", "eval y"].iter().zip(got.iter().zip(&want)) {
            let want: Vec<f64> = want.iter().map(|&v| v as f64).collect();
            assert_close(&format!("{tag} {name}"), got, &want, 1e-4, 1e-5);
        }
    }
}

/// Batch norm on `be` in f32 or f64 from the same values: training forward, backward, then inference with the
/// updated running statistics, as f64 values: [y, mean, invstd, running mean and var, dx, dgamma and dbeta,
/// inference y]. The gradient buffer starts as NaN (an unwritten slot fails).
fn bn_pass(be: &dyn Backend, shape: [usize; 4], x: &[f64], p: &[f64], dy: &[f64], f32s: bool) -> Vec<Vec<f64>> {
    let t = |shape: &[usize], layout, v: &[f64]| host_in(f32s, shape, layout, v);
    let c = shape[1];
    let (xt, pt, dyt) = (t(&shape, Layout::Nchw, x), t(&[2 * c], Layout::Plain, p), t(&shape, Layout::Nchw, dy));
    let mut st = t(&[2 * c], Layout::Plain, &[vec![0.1; c], vec![0.9; c]].concat());
    let bn = BatchNorm::new(c);
    let bp = BnParams { gamma: Slice { buf: &pt, range: 0..c }, beta: Slice { buf: &pt, range: c..2 * c }, bn: &bn };
    let (y, saved) = be.batch_norm_train(&xt, &bp, Slots { buf: &mut st, at: [0..c, c..2 * c] }).unwrap();
    let mut grads = t(&[2 * c], Layout::Plain, &vec![f64::NAN; 2 * c]);
    let a = BnBackward { x: &xt, gamma: bp.gamma.clone(), saved: &saved, dy: &dyt };
    let dx = be.batch_norm_backward(&a, Slots { buf: &mut grads, at: [0..c, c..2 * c] }).unwrap();
    let r = BnRunning { mean: Slice { buf: &st, range: 0..c }, var: Slice { buf: &st, range: c..2 * c } };
    let ye = be.batch_norm_eval(&xt, &bp, &r).unwrap();
    [&y, &saved.mean, &saved.invstd, &st, &dx, &grads, &ye].iter().map(|t| values(f32s, t)).collect()
}

/// The fast f32 batch norm against the reference in f64 on the same values: random, natural-like, and
/// natural-like 50 above zero (a mean 100 times the spread, where the statistics' rounding matters), at the
/// stem's size (32 x 8 x 32 x 32), an odd one and the smallest. Each value is compared to the sum of its terms'
/// magnitudes (x - mean counting as |x| + |mean|, where the f32 mean's rounding enters): the fast path's sums are
/// 16-lane f32 sums within a plane (64 terms a lane at most here: 8 u, u = 6e-8), added up in f64, then a
/// handful of roundings: 2e-6 of that scale is a margin of 4 or more.
#[test]
fn fast_batch_norm_matches_the_reference() {
    let (fast, reference) = (fast_cpu(), cpu());
    let mut rng = Rng::new(3);
    for shape in [[32, 8, 32, 32], [4, 5, 7, 9], [2, 3, 1, 1]] {
        let [n, c, h, w] = shape;
        let (len, count) = (n * c * h * w, (n * h * w) as f64);
        for kind in ["random", "natural", "offset"] {
            let x = f32_exact(match kind {
                "random" => normals(&mut rng, len, 2.0),
                "natural" => smooth_planes(&mut rng, n * c, h, w),
                _ => smooth_planes(&mut rng, n * c, h, w).iter().map(|v| v + 50.0).collect(),
            });
            let (p, dy) = (f32_exact(params(c, &mut rng)), f32_exact(normals(&mut rng, len, 1.0)));
            let got = bn_pass(&fast, shape, &x, &p, &dy, true);
            let want = bn_pass(&reference, shape, &x, &p, &dy, false);
            let (mean, invstd, state) = (&want[1], &want[2], &want[3]);
            let ch = |i: usize| (i / (h * w)) % c;
            // |x - mean| invstd's scale, and the channel sums of |dy| and |dy| that times.
            let xs: Vec<f64> = (0..len).map(|i| (x[i].abs() + mean[ch(i)].abs()) * invstd[ch(i)]).collect();
            let (mut sdy, mut sdyx, mut sx) = (vec![0.0; c], vec![0.0; c], vec![0.0; c]);
            for i in 0..len {
                sdy[ch(i)] += dy[i].abs();
                sdyx[ch(i)] += dy[i].abs() * xs[i];
                sx[ch(i)] += x[i].abs();
            }
            let eval_is: Vec<f64> = (0..c).map(|k| 1.0 / (state[c + k] + 1e-5).sqrt()).collect();
            let scales = [
                (0..len).map(|i| xs[i] * p[ch(i)].abs() + p[c + ch(i)].abs()).collect(),
                sx.iter().map(|s| s / count).collect(),
                invstd.clone(),
                [sx.iter().map(|s| 0.9 * 0.1 + 0.1 * s / count).collect(), state[c..].to_vec()].concat(),
                (0..len)
                    .map(|i| {
                        let k = ch(i);
                        (p[k] * invstd[k]).abs() * (dy[i].abs() + sdy[k] / count + xs[i] * sdyx[k] / count)
                    })
                    .collect(),
                [sdyx.clone(), sdy.clone()].concat(),
                (0..len)
                    .map(|i| (x[i].abs() + state[ch(i)].abs()) * eval_is[ch(i)] * p[ch(i)].abs() + p[c + ch(i)].abs())
                    .collect::<Vec<f64>>(),
            ];
            for (i, what) in ["y", "mean", "invstd", "running", "dx", "dgamma dbeta", "inference y"].iter().enumerate()
            {
                assert_scaled(&format!("{shape:?} {kind} {what}"), &got[i], &want[i], &scales[i], 2e-6);
            }
        }
    }
}
