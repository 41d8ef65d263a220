//! Losses: closed forms, extreme logits, f64 gradient checks, class weights, confusion counts, GPU vs CPU.

use crate::common::*;
use dfgpu::backend::cpu::loss::{loss, sample};
use dfgpu::backend::loss::{threshold_logit, ClassWeighting, Confusion, LossConfig, LossKind, LossOutput};
use dfgpu::rng::Rng;
use dfgpu::{Backend, Layout, Tensor};

const LN2: f64 = std::f64::consts::LN_2;

fn configs() -> Vec<LossConfig> {
    let focal = LossConfig::focal();
    vec![
        LossConfig::bce([1.0, 1.0]),
        LossConfig::bce([1.0, 0.2]),
        LossConfig { smoothing: 0.1, ..LossConfig::bce([0.7, 1.3]) },
        focal,
        LossConfig { kind: LossKind::Focal { alpha: 0.6, gamma: 0.0 }, ..focal },
        LossConfig { kind: LossKind::Focal { alpha: 0.25, gamma: 3.5 }, weights: [2.0, 0.5], smoothing: 0.05 },
    ]
}

#[test]
fn closed_forms_at_p_one_half() {
    let bce = LossConfig::bce([1.0, 1.0]);
    let focal = LossConfig::focal();
    // p = 1/2: BCE = ln 2 for either label, gradient p - y.
    assert_eq!(sample(&bce, 0.0f64, 1.0), (LN2, -0.5));
    assert_eq!(sample(&bce, 0.0f64, 0.0), (LN2, 0.5));
    // Focal: alpha_t (1/2)^2 ln 2; gradient alpha (1/2)^2 (2 * 1/2 * ln(1/2) - 1/2) for label 1.
    let (l, g) = sample(&focal, 0.0f64, 1.0);
    assert!((l - 0.25 * 0.25 * LN2).abs() < 1e-15 && (g - 0.0625 * (-LN2 - 0.5)).abs() < 1e-15, "{l} {g}");
    let (l, g) = sample(&focal, 0.0f64, 0.0);
    assert!((l - 0.75 * 0.25 * LN2).abs() < 1e-15 && (g - 0.75 * 0.25 * (0.5 + LN2)).abs() < 1e-15, "{l} {g}");
    // Class weights scale each class; smoothing 0.25 mixes the two labels 0.875 / 0.125.
    assert_eq!(sample(&LossConfig::bce([1.0, 3.0]), 0.0f64, 1.0).0, 3.0 * LN2);
    let s = LossConfig { smoothing: 0.25, ..LossConfig::bce([1.0, 3.0]) };
    assert!((sample(&s, 0.0f64, 1.0).0 - (0.875 * 3.0 + 0.125) * LN2).abs() < 1e-15);
}

#[test]
fn extreme_logits_are_finite_and_at_their_limits() {
    for cfg in configs() {
        for x in [-1e4f64, -100.0, -30.0, 30.0, 100.0, 1e4] {
            for y in [0.0f64, 1.0] {
                let (l64, g64) = sample(&cfg, x, y);
                let (l32, g32) = sample(&cfg, x as f32, y as f32);
                assert!(
                    l64.is_finite() && g64.is_finite() && l32.is_finite() && g32.is_finite(),
                    "{cfg:?} x={x} y={y}"
                );
                assert!(l64 >= 0.0 && l32 >= 0.0);
            }
        }
    }
    // BCE on a confidently wrong logit: loss = |x|, gradient -1 (label 1) or +1 (label 0).
    let bce = LossConfig::bce([1.0, 1.0]);
    assert_eq!(sample(&bce, -100.0f64, 1.0), (100.0, -1.0));
    assert_eq!(sample(&bce, 100.0f32, 0.0), (100.0, 1.0));
    let (l, g) = sample(&bce, 100.0f64, 1.0);
    assert!(l < 1e-43 && l > 0.0 && g.abs() < 1e-43, "{l} {g}");
}

/// Central differences in f64: relative error at most 1e-6.
#[test]
fn gradient_matches_central_differences_in_f64() {
    let mut rng = Rng::new(4);
    for cfg in configs() {
        for _ in 0..200 {
            let x = rng.normal() * 6.0;
            let y = rng.below(2) as f64;
            let h = 1e-5;
            let num = (sample(&cfg, x + h, y).0 - sample(&cfg, x - h, y).0) / (2.0 * h);
            let ana = sample(&cfg, x, y).1;
            assert!(
                (num - ana).abs() <= 1e-6 * num.abs().max(ana.abs()) + 1e-10,
                "{cfg:?} x={x} y={y}: {num} vs {ana}"
            );
        }
    }
}

#[test]
fn batch_mean_gradient_scale_and_confusion() {
    let cfg = LossConfig::focal();
    let logits = [-2.0f64, 0.5, 3.0, -0.1];
    let labels = [0.0, 0.0, 1.0, 1.0];
    let mut d = [f64::NAN; 4];
    let (mean, c) = loss(&cfg, &logits, &labels, threshold_logit(0.5), &mut d);
    let want: f64 = logits.iter().zip(&labels).map(|(&x, &y)| sample(&cfg, x, y).0).sum::<f64>() / 4.0;
    assert!((mean - want).abs() < 1e-15);
    for i in 0..4 {
        assert_eq!(d[i], sample(&cfg, logits[i], labels[i]).1 / 4.0);
    }
    assert_eq!(c, Confusion { tp: 1, fp: 1, tn: 1, fn_: 1 });
    // At P(fake) >= 0.9 only the logit 3.0 (p = 0.953) is called fake.
    let (_, c) = loss(&cfg, &logits, &labels, threshold_logit(0.9), &mut d);
    assert_eq!(c, Confusion { tp: 1, fp: 0, tn: 2, fn_: 1 });
    assert_eq!(threshold_logit(0.5), 0.0);
}

#[test]
fn class_weights() {
    assert_eq!(ClassWeighting::Auto.weights([1000, 5000]).unwrap(), [1.0, 0.2]);
    assert_eq!(ClassWeighting::PosWeight(0.5).weights([1, 1]).unwrap(), [1.0, 0.5]);
    let w = ClassWeighting::Effective { beta: 0.999 }.weights([100, 500]).unwrap();
    let eff = |n: f64| (1.0 - 0.999) / (1.0 - 0.999f64.powf(n));
    assert!(((w[0] + w[1]) as f64 - 2.0).abs() < 1e-6);
    assert!(((w[0] / w[1]) as f64 - eff(100.0) / eff(500.0)).abs() < 1e-5, "{w:?}");
    assert!(w[0] > w[1], "the rarer class gets the larger weight: {w:?}");
    let e = ClassWeighting::Auto.weights([0, 10]).unwrap_err().to_string();
    assert!(e.contains("need both classes"), "{e}");
    let e = LossConfig { smoothing: 1.0, ..LossConfig::focal() }.validate().unwrap_err().to_string();
    assert!(e.contains("label smoothing 1"), "{e}");
}

#[test]
fn backend_reports_mean_loss_and_counts() {
    let be = cpu();
    let logits = Tensor::from_vec(&[4], Layout::Plain, vec![-2.0f32, 0.5, 3.0, -0.1]).unwrap();
    let labels = Tensor::from_vec(&[4], Layout::Plain, vec![0.0f32, 0.0, 1.0, 1.0]).unwrap();
    let out = be.loss(&LossConfig::bce([1.0, 1.0]), &logits, &labels, 0.5).unwrap();
    let st = out.read(&be).unwrap();
    // -ln(1 - p) for the reals, -ln p for the fakes, in f64.
    let want = [(-2.0f64, 0.0), (0.5, 0.0), (3.0, 1.0), (-0.1, 1.0)]
        .iter()
        .map(|&(x, y)| {
            let p = 1.0 / (1.0 + (-x).exp());
            -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
        })
        .sum::<f64>()
        / 4.0;
    assert!((st.loss - want).abs() < 1e-6 * want, "{} vs {want}", st.loss);
    assert_eq!(st.confusion, Confusion { tp: 1, fp: 1, tn: 1, fn_: 1 });
}

#[test]
fn backend_checks_shapes() {
    let be = cpu();
    let logits = Tensor::from_vec(&[3], Layout::Plain, vec![0.0f32; 3]).unwrap();
    let labels = Tensor::from_vec(&[2], Layout::Plain, vec![0.0f32; 2]).unwrap();
    let e = be.loss(&LossConfig::focal(), &logits, &labels, 0.5).unwrap_err().to_string();
    assert!(e.contains("3 logits and 2 labels"), "{e}");
}

#[test]
#[ignore = "needs a CUDA device: a GPU, or the emulator (scripts/emu.sh)"]
fn gpu_matches_cpu() {
    let (gpu, cpu) = (gpu(), cpu());
    let mut rng = Rng::new(8);
    for n in [1usize, 7, 128, 1000, 3001] {
        let mut x: Vec<f32> = (0..n).map(|_| (rng.normal() * 4.0) as f32).collect();
        x[0] = if n > 1 { 100.0 } else { -100.0 };
        let y: Vec<f32> = (0..n).map(|_| (rng.uniform() < 0.8) as u8 as f32).collect();
        let (xt, yt) =
            (Tensor::from_vec(&[n], Layout::Plain, x).unwrap(), Tensor::from_vec(&[n], Layout::Plain, y).unwrap());
        let (xg, yg) = (gpu.upload(&xt).unwrap(), gpu.upload(&yt).unwrap());
        for cfg in configs() {
            for t in [0.5, 0.3] {
                let want = cpu.loss(&cfg, &xt, &yt, t).unwrap();
                let got = race_checked(&format!("loss n={n} {cfg:?} t={t}"), || {
                    let out = gpu.loss(&cfg, &xg, &yg, t).unwrap();
                    let down = |t: &Tensor| gpu.download(t).unwrap().host::<f32>().unwrap().to_vec();
                    vec![down(&out.dlogits), down(&out.stats)]
                });
                let host = |v: &Vec<f32>| Tensor::from_vec(&[v.len()], Layout::Plain, v.clone()).unwrap();
                let got = LossOutput { dlogits: host(&got[0]), stats: host(&got[1]) };
                let (ws, gs) = (want.read(&cpu).unwrap(), got.read(&cpu).unwrap());
                assert!(
                    (gs.loss - ws.loss).abs() <= 1e-4 * ws.loss.abs() + 1e-7,
                    "n={n} {cfg:?}: {} vs {}",
                    gs.loss,
                    ws.loss
                );
                assert_eq!(gs.confusion, ws.confusion, "n={n} {cfg:?} t={t}");
                let w: Vec<f64> = want.dlogits.host::<f32>().unwrap().iter().map(|&v| v as f64).collect();
                assert_close(&format!("dlogits n={n} {cfg:?}"), got.dlogits.host().unwrap(), &w, 1e-4, 1e-9);
            }
        }
    }
}
