//! Optimizer: AdamW and SGD against PyTorch's formulas in f64, per-tensor norms and clipping, the schedule, GPU vs CPU.

use crate::common::*;
use dfgpu::backend::optim::{decay_mask, lr_at, norms_len, AdamW, Norms, Optimizer, Sgd, StepArgs, StepBuffers};
use dfgpu::params::ParamLayout;
use dfgpu::rng::Rng;
use dfgpu::{Backend, Layout, Tensor};

fn layout() -> ParamLayout {
    let mut l = ParamLayout::default();
    l.push("conv.weight", &[7, 3, 3, 3], false);
    l.push("bn.weight", &[7], true);
    l.push("bn.bias", &[7], true);
    l.push("fc.weight", &[3, 3500], false); // more than one 4096-element chunk
    l.push("fc.bias", &[3], true);
    l
}

fn plain<T: dfgpu::tensor::Element>(v: Vec<T>) -> Tensor {
    Tensor::from_vec(&[v.len()], Layout::Plain, v).unwrap()
}

/// Values in the tensors, and garbage in the alignment padding, which no op may read.
fn random_buffer(l: &ParamLayout, rng: &mut Rng, scale: f64) -> Vec<f32> {
    let mut v = vec![1e30f32; l.total()];
    for e in l.entries() {
        v[e.range()].iter_mut().for_each(|x| *x = (scale * rng.normal()) as f32);
    }
    v
}

/// PyTorch's AdamW (torch/optim/adamw.py, single-tensor path) in f64, with gradients scaled by `clip`.
#[allow(clippy::too_many_arguments)]
fn adamw_f64(
    p: &mut [f64],
    g: &[f64],
    m: &mut [f64],
    v: &mut [f64],
    decay: &[u8],
    clip: f64,
    o: &AdamW,
    lr: f64,
    t: i32,
) {
    let (b1, b2, eps, wd) = (o.beta1 as f64, o.beta2 as f64, o.eps as f64, o.weight_decay as f64);
    for i in 0..p.len() {
        let gi = g[i] * clip;
        if decay[i] == 1 {
            p[i] *= 1.0 - lr * wd;
        }
        m[i] = b1 * m[i] + (1.0 - b1) * gi;
        v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
        let denom = (v[i] / (1.0 - b2.powi(t))).sqrt() + eps;
        p[i] -= lr / (1.0 - b1.powi(t)) * m[i] / denom;
    }
}

#[test]
fn adamw_matches_pytorchs_formula_over_several_steps() {
    let be = cpu();
    let l = layout();
    let mut rng = Rng::new(1);
    let opt = AdamW::default();
    let mask_v = decay_mask(&l);
    let mask = plain(mask_v.clone());
    let mut p = plain(random_buffer(&l, &mut rng, 1.0));
    let (mut m, mut v) = (plain(vec![0f32; l.total()]), plain(vec![0f32; l.total()]));
    let mut p64: Vec<f64> = p.host::<f32>().unwrap().iter().map(|&x| x as f64).collect();
    let (mut m64, mut v64) = (vec![0.0; l.total()], vec![0.0; l.total()]);
    for t in 1..=5u64 {
        let g = plain(random_buffer(&l, &mut rng, 0.1));
        let norms = be.param_norms(&l, &p, &g, Some(1.0)).unwrap();
        let clip = Norms::read(&norms, &be, &l).unwrap().clip;
        let lr = lr_at(t - 1, 2, 5, 1e-2, 1e-4);
        be.optimizer_step(
            &l,
            StepBuffers { params: &mut p, grads: &g, m: &mut m, v: &mut v, decay_mask: &mask, norms: &norms },
            &Optimizer::AdamW(opt),
            StepArgs { lr, t },
        )
        .unwrap();
        let g64: Vec<f64> = g.host::<f32>().unwrap().iter().map(|&x| x as f64).collect();
        adamw_f64(&mut p64, &g64, &mut m64, &mut v64, &mask_v, clip, &opt, lr as f64, t as i32);
    }
    let got = p.host::<f32>().unwrap();
    for e in l.entries() {
        assert_close(&e.name, &got[e.range()], &p64[e.range()], 1e-5, 1e-7);
    }
}

/// PyTorch's SGD (torch/optim/sgd.py, dampening 0, not Nesterov) in f64, with gradients scaled by `clip`;
/// `buf` is None before the first step, as PyTorch's momentum buffer.
fn sgd_f64(p: &mut [f64], g: &[f64], buf: &mut Option<Vec<f64>>, decay: &[u8], clip: f64, o: &Sgd, lr: f64) {
    let d: Vec<f64> =
        (0..p.len()).map(|i| g[i] * clip + if decay[i] == 1 { o.weight_decay as f64 * p[i] } else { 0.0 }).collect();
    let b = match buf.take() {
        None => d,
        Some(b) => b.iter().zip(&d).map(|(b, d)| o.momentum as f64 * b + d).collect(),
    };
    p.iter_mut().zip(&b).for_each(|(p, b)| *p -= lr * b);
    *buf = Some(b);
}

#[test]
fn sgd_matches_pytorchs_formula_over_several_steps() {
    let be = cpu();
    let l = layout();
    let mut rng = Rng::new(3);
    let opt = Sgd { momentum: 0.9, weight_decay: 0.01 };
    let mask_v = decay_mask(&l);
    let mask = plain(mask_v.clone());
    let mut p = plain(random_buffer(&l, &mut rng, 1.0));
    let (mut m, mut v) = (plain(vec![0f32; l.total()]), plain(vec![0f32; l.total()]));
    let mut p64: Vec<f64> = p.host::<f32>().unwrap().iter().map(|&x| x as f64).collect();
    let mut buf = None;
    for t in 1..=5u64 {
        let g = plain(random_buffer(&l, &mut rng, 0.1));
        let norms = be.param_norms(&l, &p, &g, Some(1.0)).unwrap();
        let clip = Norms::read(&norms, &be, &l).unwrap().clip;
        let lr = lr_at(t - 1, 2, 5, 0.1, 1e-3);
        be.optimizer_step(
            &l,
            StepBuffers { params: &mut p, grads: &g, m: &mut m, v: &mut v, decay_mask: &mask, norms: &norms },
            &Optimizer::Sgd(opt),
            StepArgs { lr, t },
        )
        .unwrap();
        let g64: Vec<f64> = g.host::<f32>().unwrap().iter().map(|&x| x as f64).collect();
        sgd_f64(&mut p64, &g64, &mut buf, &mask_v, clip, &opt, lr as f64);
    }
    let got = p.host::<f32>().unwrap();
    for e in l.entries() {
        assert_close(&e.name, &got[e.range()], &p64[e.range()], 1e-5, 1e-7);
    }
    assert!(v.host::<f32>().unwrap().iter().all(|&x| x == 0.0), "SGD leaves the second buffer alone");
}

#[test]
fn the_first_adam_step_moves_each_weight_by_the_learning_rate() {
    let be = cpu();
    let l = layout();
    let mut rng = Rng::new(2);
    let opt = AdamW { weight_decay: 0.0, ..AdamW::default() };
    let p0 = random_buffer(&l, &mut rng, 1.0);
    let mut p = plain(p0.clone());
    let g = plain(random_buffer(&l, &mut rng, 1.0));
    let (mut m, mut v) = (plain(vec![0f32; l.total()]), plain(vec![0f32; l.total()]));
    let norms = be.param_norms(&l, &p, &g, None).unwrap();
    let (mask, opt) = (plain(decay_mask(&l)), Optimizer::AdamW(opt));
    be.optimizer_step(
        &l,
        StepBuffers { params: &mut p, grads: &g, m: &mut m, v: &mut v, decay_mask: &mask, norms: &norms },
        &opt,
        StepArgs { lr: 0.01, t: 1 },
    )
    .unwrap();
    let (p1, g) = (p.host::<f32>().unwrap(), g.host::<f32>().unwrap());
    for i in l.entries().iter().flat_map(|e| e.range()) {
        let step = p0[i] - p1[i];
        assert!(
            (step.abs() - 0.01).abs() < 1e-5 && step.signum() == g[i].signum(),
            "{i}: {step} for gradient {}",
            g[i]
        );
    }
}

#[test]
fn norms_per_tensor_total_and_clip_ignore_padding() {
    let be = cpu();
    let l = layout();
    let mut rng = Rng::new(3);
    let (p, g) = (random_buffer(&l, &mut rng, 1.0), random_buffer(&l, &mut rng, 2.0));
    let (pt, gt) = (plain(p.clone()), plain(g.clone()));
    let sq = |v: &[f32]| v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>();
    let total: f64 = l.entries().iter().map(|e| sq(&g[e.range()])).sum::<f64>().sqrt();
    for (max, clip) in [(None, 1.0), (Some(1e9), 1.0), (Some(1.0), 1.0 / (total + 1e-6))] {
        let n = Norms::read(&be.param_norms(&l, &pt, &gt, max).unwrap(), &be, &l).unwrap();
        for (e, (gn, pn)) in l.entries().iter().zip(&n.per_tensor) {
            assert!((gn - sq(&g[e.range()]).sqrt()).abs() < 1e-5 * gn, "{}", e.name);
            assert!((pn - sq(&p[e.range()]).sqrt()).abs() < 1e-5 * pn, "{}", e.name);
        }
        assert!(
            (n.total - total).abs() < 1e-5 * total && (n.clip - clip).abs() < 1e-6 * clip,
            "{max:?}: {} {}",
            n.total,
            n.clip
        );
    }
    assert_eq!(norms_len(&l), 12);
}

#[test]
fn decay_mask_skips_norms_biases_and_padding() {
    let l = layout();
    let m = decay_mask(&l);
    for e in l.entries() {
        assert!(m[e.range()].iter().all(|&x| x == !e.no_decay as u8), "{}", e.name);
    }
    assert_eq!(m.iter().filter(|&&x| x == 1).count(), 7 * 27 + 3 * 3500);
}

#[test]
fn schedule_warms_up_linearly_then_decays_as_a_cosine() {
    assert_eq!(lr_at(0, 4, 100, 1.0, 0.0), 0.25);
    assert_eq!(lr_at(3, 4, 100, 1.0, 0.0), 1.0);
    assert_eq!(lr_at(4, 4, 100, 1.0, 0.1), 1.0);
    assert!((lr_at(52, 4, 100, 1.0, 0.0) - 0.5).abs() < 1e-6);
    assert!((lr_at(100, 4, 100, 1.0, 0.1) - 0.1).abs() < 1e-6);
    assert!((lr_at(500, 4, 100, 1.0, 0.1) - 0.1).abs() < 1e-6, "past the end it stays at the floor");
}

#[test]
fn bad_optimizer_arguments_are_errors() {
    let be = cpu();
    let l = layout();
    let (mut p, g) = (plain(vec![0f32; l.total()]), plain(vec![0f32; l.total()]));
    let (mut m, mut v) = (plain(vec![0f32; l.total()]), plain(vec![0f32; 5]));
    let norms = be.param_norms(&l, &p, &g, None).unwrap();
    let mask = plain(decay_mask(&l));
    let adam = Optimizer::default();
    let e = be.optimizer_step(
        &l,
        StepBuffers { params: &mut p, grads: &g, m: &mut m, v: &mut v, decay_mask: &mask, norms: &norms },
        &adam,
        StepArgs { lr: 0.1, t: 1 },
    );
    assert!(e.unwrap_err().to_string().contains("second moments: 5 values"));
    let mut v = plain(vec![0f32; l.total()]);
    let e = be.optimizer_step(
        &l,
        StepBuffers { params: &mut p, grads: &g, m: &mut m, v: &mut v, decay_mask: &mask, norms: &norms },
        &adam,
        StepArgs { lr: 0.1, t: 0 },
    );
    assert!(e.unwrap_err().to_string().contains("need t >= 1"));
    let sgd = Optimizer::Sgd(Sgd { momentum: 1.0, weight_decay: 0.0 });
    let e = be.optimizer_step(
        &l,
        StepBuffers { params: &mut p, grads: &g, m: &mut m, v: &mut v, decay_mask: &mask, norms: &norms },
        &sgd,
        StepArgs { lr: 0.1, t: 1 },
    );
    assert!(e.unwrap_err().to_string().contains("optimizer settings out of range"));
}

#[test]
fn step_norms_measure_the_step_against_the_weights_before_it() {
    let be = cpu();
    let l = layout();
    let mut rng = Rng::new(5);
    let (before, delta) = (random_buffer(&l, &mut rng, 1.0), random_buffer(&l, &mut rng, 1e-3));
    let after: Vec<f32> = before.iter().zip(&delta).map(|(b, d)| b + d).collect();
    let n = Norms::read(&be.step_norms(&l, &plain(before.clone()), &plain(after.clone())).unwrap(), &be, &l).unwrap();
    let sq = |v: &mut dyn Iterator<Item = f64>| v.map(|x| x * x).sum::<f64>().sqrt();
    for (e, (step, w)) in l.entries().iter().zip(&n.per_tensor) {
        let want_step = sq(&mut e.range().map(|i| after[i] as f64 - before[i] as f64));
        let want_w = sq(&mut e.range().map(|i| before[i] as f64));
        // The difference is rounded to f32 first (as on the device): 1e-3 steps on unit weights keep ~1e-4.
        assert!((step - want_step).abs() <= 1e-4 * want_step, "{}: {step} vs {want_step}", e.name);
        assert!((w - want_w).abs() <= 1e-6 * want_w, "{}", e.name);
    }
}

#[test]
#[ignore = "needs a CUDA device: a GPU, or the emulator (scripts/emu.sh)"]
fn gpu_step_norms_match_cpu() {
    let (gpu, cpu) = (gpu(), cpu());
    let l = layout();
    let mut rng = Rng::new(6);
    let (before, after) = (plain(random_buffer(&l, &mut rng, 1.0)), plain(random_buffer(&l, &mut rng, 1.0)));
    let a = Norms::read(&cpu.step_norms(&l, &before, &after).unwrap(), &cpu, &l).unwrap();
    let b = race_checked("step norms", || {
        let (bg, ag) = (gpu.upload(&before).unwrap(), gpu.upload(&after).unwrap());
        let copy = gpu.duplicate(&bg).unwrap();
        gpu.download(&gpu.step_norms(&l, &copy, &ag).unwrap()).unwrap().host::<f32>().unwrap().to_vec()
    });
    let b = Norms::read(&plain(b), &cpu, &l).unwrap();
    for (x, y) in a.per_tensor.iter().zip(&b.per_tensor) {
        assert!((x.0 - y.0).abs() <= 1e-5 * x.0 && (x.1 - y.1).abs() <= 1e-5 * x.1, "{x:?} {y:?}");
    }
}

#[test]
#[ignore = "needs a CUDA device: a GPU, or the emulator (scripts/emu.sh)"]
fn gpu_matches_cpu() {
    let (gpu, cpu) = (gpu(), cpu());
    let l = layout();
    let mask = plain(decay_mask(&l));
    let sgd = Sgd { weight_decay: 0.01, ..Sgd::default() };
    for (seed, opt) in [(4, Optimizer::AdamW(AdamW::default())), (7, Optimizer::Sgd(sgd))] {
        let mut rng = Rng::new(seed);
        let p0 = plain(random_buffer(&l, &mut rng, 1.0));
        let grads: Vec<Tensor> = (0..3).map(|_| plain(random_buffer(&l, &mut rng, 0.5))).collect();
        // Three steps from p0 on `be`: the parameters after them, and the norms of each step.
        let run = |be: &dyn Backend| -> Vec<Vec<f32>> {
            let mask = be.upload(&mask).unwrap();
            let zeros = || be.upload(&plain(vec![0f32; l.total()])).unwrap();
            let (mut p, mut m, mut v) = (be.upload(&p0).unwrap(), zeros(), zeros());
            let mut out = Vec::new();
            for (t, g) in (1..=3u64).zip(&grads) {
                let g = be.upload(g).unwrap();
                let norms = be.param_norms(&l, &p, &g, Some(2.0)).unwrap();
                be.optimizer_step(
                    &l,
                    StepBuffers { params: &mut p, grads: &g, m: &mut m, v: &mut v, decay_mask: &mask, norms: &norms },
                    &opt,
                    StepArgs { lr: 1e-3, t },
                )
                .unwrap();
                out.push(be.download(&norms).unwrap().host::<f32>().unwrap().to_vec());
            }
            out.push(be.download(&p).unwrap().host::<f32>().unwrap().to_vec());
            out
        };
        let (want, got) = (run(&cpu), race_checked(&format!("{} steps", opt.name()), || run(&gpu)));
        for t in 0..3 {
            let (a, b) = (
                Norms::read(&plain(want[t].clone()), &cpu, &l).unwrap(),
                Norms::read(&plain(got[t].clone()), &cpu, &l).unwrap(),
            );
            assert!((a.total - b.total).abs() < 1e-5 * a.total && (a.clip - b.clip).abs() < 1e-5 * a.clip);
            for (x, y) in a.per_tensor.iter().zip(&b.per_tensor) {
                assert!((x.0 - y.0).abs() <= 1e-5 * x.0 && (x.1 - y.1).abs() <= 1e-5 * x.1, "{x:?} {y:?}");
            }
        }
        let want: Vec<f64> = want[3].iter().map(|&x| x as f64).collect();
        for e in l.entries() {
            let what = format!("{} {}", opt.name(), e.name);
            assert_close(&what, &got[3][e.range()], &want[e.range()], 1e-5, 1e-7);
        }
    }
}

/// The fast AdamW step runs the reference's update in vector-wide chunks: the same bits over several steps, with
/// clipping, on a layout of a few tensors and on one large enough to span several chunks.
#[test]
fn fast_adamw_is_the_reference_bit_for_bit() {
    let (fast, reference) = (fast_cpu(), cpu());
    let mut rng = Rng::new(9);
    let mut big = ParamLayout::default();
    big.push("w", &[70_001], false);
    big.push("b", &[3], true);
    for l in [layout(), big] {
        let mask = plain(decay_mask(&l));
        let p0 = random_buffer(&l, &mut rng, 1.0);
        let mut states: Vec<[Tensor; 3]> =
            (0..2).map(|_| [plain(p0.clone()), plain(vec![0f32; l.total()]), plain(vec![0f32; l.total()])]).collect();
        for t in 1..=3u64 {
            let g = plain(random_buffer(&l, &mut rng, 0.1));
            for (be, [p, m, v]) in [&fast, &reference].into_iter().zip(states.iter_mut()) {
                let norms = be.param_norms(&l, p, &g, Some(1.0)).unwrap();
                let opt = Optimizer::AdamW(AdamW::default());
                be.optimizer_step(
                    &l,
                    StepBuffers { params: p, grads: &g, m, v, decay_mask: &mask, norms: &norms },
                    &opt,
                    StepArgs { lr: 1e-2, t },
                )
                .unwrap();
            }
        }
        let [got, want] = [&states[0], &states[1]];
        for (what, (g, w)) in ["params", "m", "v"].iter().zip(got.iter().zip(want)) {
            assert_bitwise(what, g.host().unwrap(), w.host().unwrap());
        }
    }
}
