//! `cargo bench --bench step`: one training step of the two-branch detector as `dfgpu train` runs it (upload of
//! the u8 batch, preprocessing, both branches, head, focal loss, backward, norms with clipping, AdamW), f32,
//! EfficientNet-B0 at 224, batch 128 (DFGPU_STEP_BATCH to change it). GPU: CUDA events, median of 10 after 3
//! warm-up steps, images/s and the device memory pool's high-water mark.
//!
//! The PyTorch peer (shared/anchors/torch_two_branch.py) is timed in the same run, on the same card, when
//! DFGPU_TORCH_ANCHOR names it (`gpu-pack/run.sh --torch` does): its lines are printed and the ratios against its
//! f32 B0 step. CPU: the tiny configuration's step at 64, for reference.

use dfgpu::backend::cpu::CpuBackend;
use dfgpu::backend::cuda::timing::{median_ms, peak_bytes, reset_peak, with_gpu};
use dfgpu::backend::optim::StepArgs;
use dfgpu::json::{self, Json};
use dfgpu::model::detector::{Detector, DetectorConfig};
use dfgpu::rng::Rng;
use dfgpu::train::trainer::{step, ModelState, TrainConfig};
use dfgpu::{Backend, Layout, Result, Tensor};
use std::time::Instant;

fn batch(n: usize, size: usize) -> (Tensor, Tensor) {
    let mut rng = Rng::new(1);
    let px: Vec<u8> = (0..n * size * size * 3).map(|_| rng.below(256) as u8).collect();
    let y: Vec<f32> = (0..n).map(|_| (rng.uniform() < 5.0 / 6.0) as u8 as f32).collect();
    (
        Tensor::from_vec(&[n, size, size, 3], Layout::Nhwc, px).unwrap(),
        Tensor::from_vec(&[n], Layout::Plain, y).unwrap(),
    )
}

/// A step runner: the detector, its state, a batch, the training settings, the step counter.
struct Runner {
    det: Detector,
    ms: ModelState,
    x: Tensor,
    y: Tensor,
    cfg: TrainConfig,
    t: u64,
}

impl Runner {
    fn new(be: &dyn Backend, backbone: &str, n: usize) -> Result<Runner> {
        let det = Detector::new(DetectorConfig::new(backbone)?)?;
        let cfg = TrainConfig::new(det.cfg.clone());
        let ms = ModelState::new(be, &det, 0)?;
        let (x, y) = batch(n, det.cfg.size);
        Ok(Runner { det, ms, x, y, cfg, t: 0 })
    }

    fn step(&mut self, be: &dyn Backend) -> Result<()> {
        self.t += 1;
        let args = StepArgs { lr: 1e-3, t: self.t };
        step(be, &self.det, &mut self.ms, &self.x, &self.y, &self.cfg.loss, &self.cfg, args, false).map(drop)
    }
}

/// The peer's JSON lines, printed, and its f32 and bf16 B0 steps: (images/s, peak GiB).
fn torch_peer(path: &str) -> Vec<(bool, f64, f64)> {
    let out = match std::process::Command::new("python3").arg(path).output() {
        Ok(o) => o,
        Err(e) => {
            println!("step torch: could not run python3 {path}: {e}");
            return vec![];
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut steps = Vec::new();
    for line in text.lines() {
        println!("step torch: {line}");
        let Ok(j) = json::parse(line) else { continue };
        let num = |k: &str| match j.get(k) {
            Some(Json::Num(v)) => Some(*v),
            _ => None,
        };
        let is = |k: &str, v: &str| j.get(k).and_then(Json::as_str) == Some(v);
        if is("what", "train_step") && is("backbone", "efficientnet_b0") && j.get("compiled") != Some(&Json::Bool(true))
        {
            if let (Some(ips), Some(gib)) = (num("imgs_per_s"), num("peak_GiB")) {
                steps.push((j.get("amp") == Some(&Json::Bool(true)), ips, gib));
            }
        }
    }
    if !out.status.success() {
        println!("step torch: exited with {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim_end());
    }
    steps
}

fn main() {
    let cpu = CpuBackend::new(Default::default());
    let mut r = Runner::new(&cpu, "tiny", 32).expect("the tiny detector builds");
    r.step(&cpu).expect("a CPU step");
    let t0 = Instant::now();
    for _ in 0..3 {
        r.step(&cpu).expect("a CPU step");
    }
    let s = t0.elapsed().as_secs_f64() / 3.0;
    println!("step cpu: tiny at 64, batch 32: {:.1} ms per step, {:.0} images/s ({})", 1e3 * s, 32.0 / s, cpu.name());

    let n: usize = std::env::var("DFGPU_STEP_BATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(128);
    with_gpu("step", |gpu| {
        let mut r = Runner::new(gpu, "b0", n)?;
        r.step(gpu)?; // the first step picks the cuDNN algorithms and fills the caches
        gpu.synchronize()?;
        reset_peak(gpu.stream())?;
        let ms = median_ms(gpu.stream(), 3, 10, || r.step(gpu))?;
        let peak = peak_bytes(gpu.stream())?.map(|b| b as f64 / (1u64 << 30) as f64);
        let ips = n as f64 / ms * 1e3;
        let peak_text = peak.map_or("unknown (no memory pools)".into(), |g| format!("{g:.2} GiB"));
        println!(
            "step gpu: b0 at 224, batch {n}, f32: {ms:.1} ms per step, {ips:.0} images/s, peak memory {peak_text}"
        );
        match std::env::var("DFGPU_TORCH_ANCHOR") {
            Ok(path) => {
                for (amp, t_ips, t_gib) in torch_peer(&path) {
                    let what = if amp { "bf16 + channels_last" } else { "f32" };
                    let mem = peak.map_or(String::new(), |g| format!(", memory {:.2}x", g / t_gib));
                    println!(
                        "step gpu: against PyTorch {what} ({t_ips:.0} images/s, {t_gib:.2} GiB): speed {:.2}x{mem}",
                        ips / t_ips
                    );
                }
            }
            Err(_) => println!("step gpu: set DFGPU_TORCH_ANCHOR to the PyTorch peer to time it in this run"),
        }
        Ok(())
    });
}
