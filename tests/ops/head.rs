//! The fusion head: f64 gradient checks of the CPU reference in every mode, behaviour of the switches and
//! masks, and GPU against CPU.

use crate::common::*;
use dfgpu::backend::cpu::head::{backward, forward, BackwardIn, BackwardOut, ForwardOut};
use dfgpu::backend::head::{Branches, HeadConfig, HeadInputs, Mode};
use dfgpu::backend::layers::Act;
use dfgpu::backend::Slots;
use dfgpu::rng::counter_uniform;
use dfgpu::rng::Rng;
use dfgpu::tensor::Slice;
use dfgpu::{Backend, Layout, Tensor};

/// Where the head's parameters start inside the test's larger buffers.
const OFFSET: usize = 4;

fn small(layer_norm: bool, act: Act, gated: bool, branches: Branches, dropout: f32, branch_dropout: f32) -> HeadConfig {
    HeadConfig { layer_norm, act, gated, branches, dropout, branch_dropout, ..HeadConfig::new(5, 3, 4) }
}

/// Every mode: with LayerNorm or without, SiLU/ReLU, gated, branch switches, dropout, branch dropout.
fn modes() -> Vec<(HeadConfig, Mode)> {
    let train = Mode::Train { seed: 17 };
    vec![
        (small(true, Act::Silu, false, Branches::Both, 0.0, 0.0), Mode::Eval),
        (small(false, Act::Silu, false, Branches::Both, 0.0, 0.0), Mode::Eval),
        (small(true, Act::Relu, false, Branches::Both, 0.0, 0.0), Mode::Eval),
        (small(true, Act::Silu, true, Branches::Both, 0.0, 0.0), Mode::Eval),
        (small(false, Act::Relu, true, Branches::Both, 0.0, 0.0), Mode::Eval),
        (small(true, Act::Silu, false, Branches::Spatial, 0.0, 0.0), Mode::Eval),
        (small(true, Act::Silu, true, Branches::Freq, 0.0, 0.0), Mode::Eval),
        (small(true, Act::Silu, false, Branches::Both, 0.4, 0.0), train),
        (small(true, Act::Relu, true, Branches::Both, 0.3, 0.6), train),
    ]
}

/// Random parameters (not the init: LayerNorm scales away from 1 and a gate away from 0 exercise more).
fn random_params(cfg: &HeadConfig, rng: &mut Rng) -> Vec<f64> {
    (0..cfg.layout().total()).map(|_| rng.normal() * 0.5).collect()
}

/// Spatial features around 1 with std 3, frequency features around 50 with std 1000: far apart on purpose.
fn random_inputs(cfg: &HeadConfig, b: usize, rng: &mut Rng) -> (Vec<f64>, Vec<f64>) {
    let s = (0..b * cfg.ds).map(|_| 1.0 + 3.0 * rng.normal()).collect();
    let q = (0..b * cfg.dq).map(|_| 50.0 + 1000.0 * rng.normal()).collect();
    (s, q)
}

struct Fwd {
    logits: Vec<f64>,
    z: Vec<f64>,
    h: Vec<f64>,
    gate: Vec<f64>,
}

fn fwd(cfg: &HeadConfig, p: &[f64], s: &[f64], q: &[f64], mode: Mode) -> Fwd {
    let b = s.len() / cfg.ds;
    let mut f = Fwd {
        logits: vec![f64::NAN; b],
        z: vec![f64::NAN; b * cfg.d()],
        h: vec![f64::NAN; b * cfg.hidden],
        gate: vec![f64::NAN; b],
    };
    let mut stats = vec![f64::NAN; b * 4];
    let out = ForwardOut { logits: &mut f.logits, z: &mut f.z, h: &mut f.h, stats: &mut stats, gate: &mut f.gate };
    forward(cfg, p, s, q, mode, out);
    f
}

/// J = sum_b c_b logit_b, whose gradient is backward(dlogits = c).
fn objective(cfg: &HeadConfig, p: &[f64], s: &[f64], q: &[f64], mode: Mode, c: &[f64]) -> f64 {
    fwd(cfg, p, s, q, mode).logits.iter().zip(c).map(|(l, c)| l * c).sum()
}

#[test]
fn gradients_match_central_differences_in_f64_in_every_mode() {
    let mut rng = Rng::new(21);
    let b = 3;
    for (cfg, mode) in modes() {
        let p = random_params(&cfg, &mut rng);
        let (s, q) = random_inputs(&cfg, b, &mut rng);
        let c: Vec<f64> = (0..b).map(|_| rng.normal()).collect();
        let saved = fwd(&cfg, &p, &s, &q, mode);
        let (mut gp, mut ds, mut dq) = (vec![f64::NAN; p.len()], vec![f64::NAN; s.len()], vec![f64::NAN; q.len()]);
        let out = BackwardOut { params: &mut gp, ds: &mut ds, dq: &mut dq };
        let input = BackwardIn { mode, z: &saved.z, h: &saved.h, gate: &saved.gate, dlogits: &c };
        backward(&cfg, &p, &s, &q, input, out);
        let tag = format!("{cfg:?} {mode:?}");
        for e in cfg.layout().entries() {
            let what = format!("{tag}: {} (flat index)", e.name);
            check_grads(&what, &gp, &p, e.range(), |pp| objective(&cfg, pp, &s, &q, mode, &c));
        }
        check_grads(&format!("{tag}: dS"), &ds, &s, 0..s.len(), |ss| objective(&cfg, &p, ss, &q, mode, &c));
        check_grads(&format!("{tag}: dQ"), &dq, &q, 0..q.len(), |qq| objective(&cfg, &p, &s, qq, mode, &c));
    }
}

#[test]
fn head_and_loss_together_match_central_differences() {
    use dfgpu::backend::cpu::loss::loss;
    use dfgpu::backend::loss::LossConfig;
    let mut rng = Rng::new(5);
    let (cfg, mode) = (small(true, Act::Silu, true, Branches::Both, 0.3, 0.3), Mode::Train { seed: 3 });
    let b = 6;
    let p = random_params(&cfg, &mut rng);
    let (s, q) = random_inputs(&cfg, b, &mut rng);
    let labels: Vec<f64> = (0..b).map(|i| (i % 3 != 0) as u8 as f64).collect();
    let lc = LossConfig { smoothing: 0.1, weights: [2.0, 0.4], ..LossConfig::focal() };
    let total = |p: &[f64]| loss(&lc, &fwd(&cfg, p, &s, &q, mode).logits, &labels, 0.0, &mut vec![0.0; b]).0;
    let saved = fwd(&cfg, &p, &s, &q, mode);
    let mut dl = vec![0.0; b];
    loss(&lc, &saved.logits, &labels, 0.0, &mut dl);
    let (mut gp, mut ds, mut dq) = (vec![0.0; p.len()], vec![0.0; s.len()], vec![0.0; q.len()]);
    let input = BackwardIn { mode, z: &saved.z, h: &saved.h, gate: &saved.gate, dlogits: &dl };
    backward(&cfg, &p, &s, &q, input, BackwardOut { params: &mut gp, ds: &mut ds, dq: &mut dq });
    check_grads("head + loss params", &gp, &p, cfg.layout().entries().iter().flat_map(|e| e.range()), total);
}

#[test]
fn layer_norm_keeps_either_branch_from_swamping_the_other() {
    // With LayerNorm, scaling and shifting a branch's raw features changes nothing downstream.
    let mut rng = Rng::new(6);
    let cfg = small(true, Act::Silu, false, Branches::Both, 0.0, 0.0);
    let p = random_params(&cfg, &mut rng);
    let (s, q) = random_inputs(&cfg, 4, &mut rng);
    let q_big: Vec<f64> = q.iter().map(|v| 1e6 * v + 3e6).collect();
    let (a, b) = (fwd(&cfg, &p, &s, &q, Mode::Eval).logits, fwd(&cfg, &p, &s, &q_big, Mode::Eval).logits);
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-6 * x.abs().max(1.0), "{x} vs {y}");
    }
    // Without it, the same change moves the logits.
    let cfg = small(false, Act::Silu, false, Branches::Both, 0.0, 0.0);
    let p = random_params(&cfg, &mut rng);
    let (a, b) = (fwd(&cfg, &p, &s, &q, Mode::Eval).logits, fwd(&cfg, &p, &s, &q_big, Mode::Eval).logits);
    assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() > 1.0));
}

#[test]
fn branch_switches_ignore_the_other_branch() {
    let mut rng = Rng::new(7);
    for (branches, change_s) in [(Branches::Spatial, false), (Branches::Freq, true)] {
        let cfg = small(true, Act::Silu, true, branches, 0.0, 0.0);
        let p = random_params(&cfg, &mut rng);
        let (s, q) = random_inputs(&cfg, 3, &mut rng);
        let (s2, q2) = if change_s {
            (s.iter().map(|v| v * 7.0 - 2.0 + rng.normal()).collect(), q.clone())
        } else {
            (s.clone(), q.iter().map(|v| v * -3.0).collect())
        };
        assert_eq!(
            fwd(&cfg, &p, &s, &q, Mode::Eval).logits,
            fwd(&cfg, &p, &s2, &q2, Mode::Eval).logits,
            "{branches:?}"
        );
    }
}

#[test]
fn an_initial_gate_is_the_ungated_head() {
    let mut rng = Rng::new(8);
    let gated = HeadConfig { gated: true, ..HeadConfig::new(5, 3, 4) };
    let plain = HeadConfig::new(5, 3, 4);
    let p_gated: Vec<f64> = gated.init(9).iter().map(|&v| v as f64).collect();
    let mut p_plain = vec![0.0; plain.layout().total()];
    for e in plain.layout().entries() {
        let src = gated.layout().get(&e.name).unwrap().range();
        p_plain[e.range()].copy_from_slice(&p_gated[src]);
    }
    let (s, q) = random_inputs(&plain, 3, &mut rng);
    let a = fwd(&gated, &p_gated, &s, &q, Mode::Eval);
    assert!(a.gate.iter().all(|&g| g == 0.5));
    assert_eq!(a.logits, fwd(&plain, &p_plain, &s, &q, Mode::Eval).logits);
}

#[test]
fn dropout_masks_have_their_rates_and_follow_the_seed() {
    let cfg = HeadConfig { dropout: 0.3, branch_dropout: 0.4, ..HeadConfig::new(5, 3, 4) };
    let (mode, n) = (Mode::Train { seed: 99 }, 200_000);
    let dropped = (0..n).filter(|&i| cfg.keep(mode, i / 100, i % 100) == 0.0).count() as f64 / n as f64;
    assert!((dropped - 0.3).abs() < 0.005, "{dropped}");
    assert!(cfg.keep(mode, 0, 0) == 0.0 || cfg.keep(mode, 0, 0) == 1.0 / 0.7);
    let scales: Vec<(f32, f32)> = (0..n).map(|b| cfg.branch_scales(mode, b)).collect();
    let lost = scales.iter().filter(|s| **s != (1.0, 1.0)).count() as f64 / n as f64;
    let lost_s = scales.iter().filter(|s| **s == (0.0, 2.0)).count() as f64 / n as f64;
    assert!((lost - 0.4).abs() < 0.005 && (lost_s - 0.2).abs() < 0.005, "{lost} {lost_s}");
    assert_eq!(cfg.keep(Mode::Eval, 0, 0), 1.0);
    assert_eq!(cfg.branch_scales(Mode::Eval, 0), (1.0, 1.0));
    // The hash is a function of its arguments alone, and each argument matters.
    let u = counter_uniform(1, 2, 3, 4);
    assert_eq!(u, counter_uniform(1, 2, 3, 4));
    assert!([
        counter_uniform(0, 2, 3, 4),
        counter_uniform(1, 0, 3, 4),
        counter_uniform(1, 2, 0, 4),
        counter_uniform(1, 2, 3, 0)
    ]
    .iter()
    .all(|&v| v != u));
}

#[test]
fn backend_rejects_mismatched_shapes() {
    let cfg = HeadConfig::new(5, 3, 4);
    let p = Tensor::from_vec(&[cfg.layout().total()], Layout::Plain, cfg.init(0)).unwrap();
    let s = Tensor::from_vec(&[2, 5], Layout::Plain, vec![0.0f32; 10]).unwrap();
    let q = Tensor::from_vec(&[3, 3], Layout::Plain, vec![0.0f32; 9]).unwrap();
    let all = Slice { buf: &p, range: 0..p.numel() };
    let e =
        cpu().head_forward(&HeadInputs { cfg: &cfg, params: all, s: &s, q: &q }, Mode::Eval).unwrap_err().to_string();
    assert!(e.contains("spatial [2, 5] and frequency [3, 3]"), "{e}");
    let short = Slice { buf: &p, range: 0..7 };
    let e =
        cpu().head_forward(&HeadInputs { cfg: &cfg, params: short, s: &s, q: &s }, Mode::Eval).unwrap_err().to_string();
    assert!(e.contains("head params: 7 values"), "{e}");
}

#[test]
#[ignore = "needs a CUDA device: a GPU, or the emulator (scripts/emu.sh)"]
fn gpu_matches_cpu_forward_and_every_gradient() {
    let (gpu, cpu) = (gpu(), cpu());
    let mut rng = Rng::new(30);
    let big = |gated, act, branch_dropout| HeadConfig { gated, act, branch_dropout, ..HeadConfig::new(1280, 256, 256) };
    let cases: Vec<(HeadConfig, Mode)> = modes()
        .into_iter()
        .chain([
            (big(false, Act::Silu, 0.0), Mode::Train { seed: 5 }),
            (big(true, Act::Relu, 0.5), Mode::Train { seed: 6 }),
            (big(true, Act::Silu, 0.0), Mode::Eval),
        ])
        .collect();
    let to_f32 = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<f32>>();
    for (cfg, mode) in cases {
        for b in [1usize, 3, 128, 257] {
            let tag = format!("B={b} {cfg:?} {mode:?}");
            // The head's parameters and gradients sit at an offset inside larger buffers, as in the detector.
            let n = cfg.layout().total();
            let at = OFFSET..OFFSET + n;
            let mut pv = vec![0f32; OFFSET];
            pv.extend(to_f32(random_params(&cfg, &mut rng)));
            let p = Tensor::from_vec(&[pv.len()], Layout::Plain, pv).unwrap();
            let g0 = Tensor::from_vec(&[OFFSET + n], Layout::Plain, vec![7f32; OFFSET + n]).unwrap();
            let (s, q) = random_inputs(&cfg, b, &mut rng);
            let s = Tensor::from_vec(&[b, cfg.ds], Layout::Plain, to_f32(s)).unwrap();
            let q = Tensor::from_vec(&[b, cfg.dq], Layout::Plain, to_f32(q)).unwrap();
            let dl = Tensor::from_vec(&[b], Layout::Plain, to_f32((0..b).map(|_| rng.normal()).collect())).unwrap();
            let ps = Slice { buf: &p, range: at.clone() };
            let mut want_gp = Tensor::from_vec(&[OFFSET + n], Layout::Plain, vec![7f32; OFFSET + n]).unwrap();
            let x = HeadInputs { cfg: &cfg, params: ps, s: &s, q: &q };
            let want = cpu.head_forward(&x, mode).unwrap();
            let want_g =
                cpu.head_backward(&x, &want.saved, &dl, Slots { buf: &mut want_gp, at: [at.clone()] }).unwrap();
            let got = race_checked(&tag, || {
                let (pg, sg, qg, dlg) = (
                    gpu.upload(&p).unwrap(),
                    gpu.upload(&s).unwrap(),
                    gpu.upload(&q).unwrap(),
                    gpu.upload(&dl).unwrap(),
                );
                let x = HeadInputs { cfg: &cfg, params: Slice { buf: &pg, range: at.clone() }, s: &sg, q: &qg };
                let mut got_gp = gpu.upload(&g0).unwrap();
                let got = gpu.head_forward(&x, mode).unwrap();
                let got_g =
                    gpu.head_backward(&x, &got.saved, &dlg, Slots { buf: &mut got_gp, at: [at.clone()] }).unwrap();
                [&got.logits, &got.saved.z, &got.saved.h, &got.saved.gate, &got_gp, &got_g.ds, &got_g.dq]
                    .map(|t| gpu.download(t).unwrap().host::<f32>().unwrap().to_vec())
                    .to_vec()
            });
            assert!(got[4][..OFFSET].iter().all(|&v| v == 7.0), "{tag}: wrote outside its slot");
            let want = [&want.logits, &want.saved.z, &want.saved.h, &want.saved.gate, &want_gp, &want_g.ds, &want_g.dq];
            let names = ["logits", "z", "h", "gate", "d params", "dS", "dQ"];
            for ((name, g), w) in names.iter().zip(&got).zip(want) {
                let w: Vec<f64> = w.host::<f32>().unwrap().iter().map(|&v| v as f64).collect();
                // f32 with different summation orders: relative 1e-4, and an absolute floor for sums that cancel
                // to near zero, scaled by the largest value of the tensor.
                let floor = 1e-5 * w.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                assert_close(&format!("{tag}: {name}"), g, &w, 1e-4, floor);
            }
        }
    }
}

/// The fast head (its hidden layer as sgemm, the rest the reference's) against the reference in f64 on the same
/// values, in every mode and at the detector's size (1280 + 256 inputs), batches of 1, 3 and 32. The values are
/// f32 sums of up to 1,536 products around LayerNorms, whose backward cancels: about sqrt(1536) roundings (u =
/// 6e-8) of the magnitudes summed, 2.4e-6, and 4e-6 of a tensor's largest value measured (dS, input 1280);
/// relative 2e-5 of each value, with a floor of 2e-5 of the tensor's largest for sums that cancel to near zero,
/// is a margin of 5.
#[test]
fn fast_head_matches_the_reference() {
    let (fast, reference) = (fast_cpu(), cpu());
    let mut rng = Rng::new(31);
    let big = |gated, act| HeadConfig { gated, act, ..HeadConfig::new(1280, 256, 256) };
    let cases = modes()
        .into_iter()
        .chain([(big(false, Act::Silu), Mode::Train { seed: 5 }), (big(true, Act::Relu), Mode::Eval)]);
    for (cfg, mode) in cases {
        for b in [1usize, 3, 32] {
            let tag = format!("B={b} {cfg:?} {mode:?}");
            let n = cfg.layout().total();
            let at = OFFSET..OFFSET + n;
            let p = f32_exact([vec![0.0; OFFSET], random_params(&cfg, &mut rng)].concat());
            let (s, q) = random_inputs(&cfg, b, &mut rng);
            let (s, q, dl) = (f32_exact(s), f32_exact(q), f32_exact((0..b).map(|_| rng.normal()).collect()));
            // [logits, z, h, gate, d params, dS, dQ] of one backend, in f32 or f64, as f64 values.
            let pass = |be: &dyn Backend, f32s: bool| -> Vec<Vec<f64>> {
                let t = |shape: &[usize], v: &[f64]| host_in(f32s, shape, Layout::Plain, v);
                let (pt, st, qt, dlt) = (t(&[p.len()], &p), t(&[b, cfg.ds], &s), t(&[b, cfg.dq], &q), t(&[b], &dl));
                let x = HeadInputs { cfg: &cfg, params: Slice { buf: &pt, range: at.clone() }, s: &st, q: &qt };
                let mut gp = t(&[OFFSET + n], &vec![7.0; OFFSET + n]);
                let f = be.head_forward(&x, mode).unwrap();
                let g = be.head_backward(&x, &f.saved, &dlt, Slots { buf: &mut gp, at: [at.clone()] }).unwrap();
                [&f.logits, &f.saved.z, &f.saved.h, &f.saved.gate, &gp, &g.ds, &g.dq].map(|t| values(f32s, t)).to_vec()
            };
            let (got, want) = (pass(&fast, true), pass(&reference, false));
            assert!(got[4][..OFFSET].iter().all(|&v| v == 7.0), "{tag}: wrote outside its slot");
            for (name, (g, w)) in ["logits", "z", "h", "gate", "d params", "dS", "dQ"].iter().zip(got.iter().zip(&want))
            {
                let floor = 2e-5 * w.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                assert_close(&format!("{tag}: {name}"), &to_f32(g), w, 2e-5, floor);
            }
        }
    }
}
