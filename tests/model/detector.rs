use crate::common::*;
use dfgpu::backend::head::Branches;
use dfgpu::backend::head::Mode;
use dfgpu::backend::ChannelNorm;
use dfgpu::model::detector::{Detector, DetectorConfig};
use dfgpu::model::layers::{Bwd, Fwd};
use dfgpu::rng::Rng;
use dfgpu::{Backend, Layout, Tensor};
use std::sync::Arc;

/// (logits, parameter gradients) of one training step's forward and backward with dlogits = c.
/// The initial state, with the ring profile's statistics (if any) as if gathered: means about the profile's
/// values, standard deviations 0.5 to 2, so that a mean and a deviation mixed up, or read from the wrong place,
/// change the result.
fn state(det: &Detector) -> Vec<f32> {
    let mut s = det.init_state();
    if let Some(r) = det.freq.profile_stats() {
        let mut rng = Rng::new(12);
        let k = r.len() / 2;
        s[r.start..r.start + k].iter_mut().for_each(|m| *m = -1.0 + 0.5 * rng.uniform());
        s[r.start + k..r.end].iter_mut().for_each(|d| *d = 0.5 + 1.5 * rng.uniform());
    }
    s
}

fn step(be: &dyn Backend, det: &Detector, images: &Tensor, c: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let p = be.upload(&Tensor::from_vec(&[det.params.total()], Layout::Plain, det.init_params(3)).unwrap()).unwrap();
    let mut st = be.upload(&Tensor::from_vec(&[det.state.total()], Layout::Plain, state(det)).unwrap()).unwrap();
    let mut g = be
        .upload(&Tensor::from_vec(&[det.params.total()], Layout::Plain, vec![0f32; det.params.total()]).unwrap())
        .unwrap();
    let pre = be.preprocess(&be.upload(images).unwrap(), &ChannelNorm::imagenet(), true).unwrap();
    let mut f = Fwd { be, params: &p, state: &mut st, mode: Mode::Train { seed: 11 } };
    let (logits, cache) = det.forward(&mut f, Arc::new(pre.normalized), pre.raw.as_ref().unwrap(), None).unwrap();
    let dl = be.upload(&Tensor::from_vec(&[c.len()], Layout::Plain, c.to_vec()).unwrap()).unwrap();
    det.backward(&mut Bwd { be, params: &p, grads: &mut g }, cache, &dl).unwrap();
    let host = |t: &Tensor| be.download(t).unwrap().host::<f32>().unwrap().to_vec();
    (host(&logits), host(&g))
}

fn images(n: usize, size: usize, seed: u64) -> Tensor {
    let mut rng = Rng::new(seed);
    Tensor::from_vec(&[n, size, size, 3], Layout::Nhwc, random_u8(&mut rng, n * size * size * 3)).unwrap()
}

#[test]
fn every_part_of_the_tiny_detector_gets_a_gradient() {
    let det = Detector::new(DetectorConfig { size: 64, ..DetectorConfig::new("tiny").unwrap() }).unwrap();
    let (logits, g) = step(&cpu(), &det, &images(4, 64, 1), &[0.5, -0.25, 0.1, 1.0]);
    assert_eq!(logits.len(), 4);
    assert!(logits.iter().chain(&g).all(|v| v.is_finite()));
    for part in ["spatial.conv_stem", "spatial.blocks.3.", "freq.stages.0", "head.fc1"] {
        let norm: f32 = det
            .params
            .entries()
            .iter()
            .filter(|e| e.name.starts_with(part))
            .flat_map(|e| g[e.range()].to_vec())
            .map(|v| v * v)
            .sum();
        assert!(norm > 0.0, "{part} got no gradient");
    }
}

#[test]
fn a_switched_off_branch_is_neither_run_nor_trained() {
    let mut cfg = DetectorConfig { size: 64, ..DetectorConfig::new("tiny").unwrap() };
    cfg.head.branches = Branches::Spatial;
    let det = Detector::new(cfg).unwrap();
    let (_, g) = step(&cpu(), &det, &images(2, 64, 2), &[1.0, -1.0]);
    for e in det.params.entries().iter().filter(|e| e.name.starts_with("freq.")) {
        assert!(g[e.range()].iter().all(|&v| v == 0.0), "{}", e.name);
    }
}

#[test]
fn the_frequency_branch_can_run_without_batch_norm() {
    let mut cfg = DetectorConfig { size: 64, ..DetectorConfig::new("tiny").unwrap() };
    cfg.freq.batch_norm = false;
    let det = Detector::new(cfg).unwrap();
    assert!(det.params.entries().iter().all(|e| !e.name.starts_with("freq.stages.0.bn")));
    let (logits, _) = step(&cpu(), &det, &images(2, 64, 3), &[1.0, 1.0]);
    assert!(logits.iter().all(|v| v.is_finite()));
}

#[test]
#[ignore = "needs a CUDA device: a GPU, or the emulator (scripts/emu.sh)"]
fn gpu_matches_cpu_for_the_whole_tiny_detector() {
    let mut cfg = DetectorConfig { size: 64, ..DetectorConfig::new("tiny").unwrap() };
    cfg.freq.profile = true;
    let det = Detector::new(cfg).unwrap();
    let x = images(8, 64, 4);
    let c: Vec<f32> = (0..8).map(|i| (i as f32 - 3.5) / 4.0).collect();
    let (lc, gc) = step(&cpu(), &det, &x, &c);
    let gpu = gpu();
    let (lg, gg) = race_checked("tiny detector step", || step(&gpu, &det, &x, &c));
    let f64s = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
    assert_close("logits", &lg, &f64s(&lc), 1e-3, 1e-5);
    // Some gradients are exactly zero in exact arithmetic (the bias of a batch norm whose output feeds another
    // batch norm in training mode: a per-channel shift cancels), and both sides hold only rounding noise there:
    // the floor is 1e-3 of the tensor's largest gradient, and never under 1e-6 of the model's (f32 rounding of a
    // sum whose terms reach that size).
    let model_max = f64s(&gc).iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for e in det.params.entries() {
        let w = f64s(&gc[e.range()]);
        let floor = (1e-3 * w.iter().fold(0.0f64, |m, v| m.max(v.abs()))).max(1e-6 * model_max);
        assert_close(&e.name, &gg[e.range()], &w, 1e-3, floor);
    }
}

/// The whole detector (both branches, the frequency branch's ring profile, per-branch LayerNorm, gated head with
/// dropout and branch dropout, masks fixed by the step's seed) against central differences in f64, on the CPU backend's f64 mode: every
/// parameter tensor, one coordinate each. The frequency branch's ReLUs make the objective piecewise smooth;
/// the inputs are seeded, so a coordinate whose difference crosses a kink would fail the same way every run.
#[test]
fn whole_detector_gradients_match_central_differences_in_f64() {
    let be = cpu();
    let mut cfg = DetectorConfig { size: 64, ..DetectorConfig::new("tiny").unwrap() };
    (cfg.freq.widths, cfg.freq.profile) = (vec![8, 16], true);
    (cfg.head.hidden, cfg.head.gated, cfg.head.branch_dropout) = (16, true, 0.25);
    let det = Detector::new(cfg).unwrap();
    let mut rng = Rng::new(8);
    let p: Vec<f64> = det.init_params(3).iter().map(|&v| v as f64 + 0.05 * rng.normal()).collect();
    let x = images(2, 64, 5);
    let pre = be.preprocess(&x, &ChannelNorm::imagenet(), false).unwrap();
    let norm = Arc::new(pre.normalized.to_f64().unwrap());
    let state0: Vec<f64> = state(&det).iter().map(|&v| v as f64).collect();
    let run = |p: &[f64]| {
        let pt = t64(&[p.len()], Layout::Plain, p.to_vec());
        let mut st = t64(&[state0.len()], Layout::Plain, state0.clone());
        let mut f = Fwd { be: &be, params: &pt, state: &mut st, mode: Mode::Train { seed: 21 } };
        det.forward(&mut f, norm.clone(), &x, None).unwrap()
    };
    let (logits, cache) = run(&p);
    assert_eq!(logits.dtype(), dfgpu::DType::F64);
    let c = [0.7, -1.3];
    let pt = t64(&[p.len()], Layout::Plain, p.clone());
    let mut grads = t64(&[p.len()], Layout::Plain, vec![0.0; p.len()]);
    det.backward(&mut Bwd { be: &be, params: &pt, grads: &mut grads }, cache, &t64(&[2], Layout::Plain, c.to_vec()))
        .unwrap();
    let g = grads.host::<f64>().unwrap();
    let picks: Vec<usize> = det.params.entries().iter().map(|e| e.offset + e.len() / 2).collect();
    check_grads("detector", g, &p, picks, |pp| dot(&run(pp).0, &c));
}
