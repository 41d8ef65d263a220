//! `cargo bench --bench step`: one training step of the two-branch detector as `dfgpu train` runs it (upload of
//! the u8 batch, preprocessing, both branches, head, focal loss, backward, norms with clipping, AdamW), f32,
//! EfficientNet-B0 at 224, batch 128 (DFGPU_STEP_BATCH to change it). GPU: CUDA events, median of 10 after 3
//! warm-up steps, images/s and the device memory pool's high-water mark.
//!
//! The PyTorch peer (shared/anchors/torch_two_branch.py) is timed in the same run, on the same card, when
//! DFGPU_TORCH_ANCHOR names it (`gpu-pack/run.sh --torch` does): its lines are printed and the ratios against its
//! f32 B0 step.
//!
//! CPU: the tiny configuration at 64, batch 32: the training step and inference (preprocessing and the forward in
//! inference mode, as `dfgpu predict` runs it after decoding), the median of 15 after 3 warm-ups as the peer times
//! its own. When DFGPU_TORCH_CPU_ANCHOR names a python that has torch and timm, the CPU peer
//! (shared/anchors/torch_cpu_tiny.py, the same model) runs in the same run on as many threads as rayon's pool,
//! and the ratios are printed (above 1: dfgpu is faster).

mod common;

use common::timing::{median_ms, peak_bytes, reset_peak, with_gpu};
use dfgpu::backend::cpu::CpuBackend;
use dfgpu::backend::optim::StepArgs;
use dfgpu::model::detector::{Detector, DetectorConfig};
use dfgpu::model::state::ModelState;
use dfgpu::rng::Rng;
use dfgpu::train::config::TrainConfig;
use dfgpu::train::inference::infer;
use dfgpu::train::trainer::step;
use dfgpu::{Backend, Layout, Result, Tensor};
use serde_json::Value as Json;
use std::process::Command;
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

/// Runs a PyTorch peer, prints its lines (and how it failed, if it did) and returns those that are JSON.
fn peer_lines(what: &str, mut cmd: Command) -> Vec<Json> {
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) => {
            println!("{what} torch: could not run {cmd:?}: {e}");
            return vec![];
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let lines =
        text.lines().inspect(|line| println!("{what} torch: {line}")).filter_map(|l| serde_json::from_str(l).ok());
    let lines = lines.collect();
    if !out.status.success() {
        println!("{what} torch: exited with {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim_end());
    }
    lines
}

fn num(j: &Json, k: &str) -> Option<f64> {
    j.get(k)?.as_f64()
}

fn is(j: &Json, k: &str, v: &str) -> bool {
    j.get(k).and_then(Json::as_str) == Some(v)
}

/// The GPU peer's f32 and bf16 B0 steps: (bf16, images/s, peak GiB).
fn torch_peer(path: &str) -> Vec<(bool, f64, f64)> {
    let mut cmd = Command::new("python3");
    cmd.arg(path);
    peer_lines("step", cmd)
        .iter()
        .filter(|j| is(j, "what", "train_step") && is(j, "backbone", "efficientnet_b0"))
        .filter(|j| j.get("compiled") != Some(&Json::Bool(true)))
        .filter_map(|j| Some((j.get("amp") == Some(&Json::Bool(true)), num(j, "imgs_per_s")?, num(j, "peak_GiB")?)))
        .collect()
}

/// The CPU peer's images/s for "train_step_cpu" and "infer_cpu", run by `python` on `threads` threads.
fn torch_cpu_peer(python: &str, threads: usize) -> (Option<f64>, Option<f64>) {
    let mut cmd = Command::new(python);
    cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/anchors/torch_cpu_tiny.py"));
    cmd.env("OMP_NUM_THREADS", threads.to_string());
    let lines = peer_lines("cpu", cmd);
    let ips = |what: &str| lines.iter().find(|j| is(j, "what", what)).and_then(|j| num(j, "imgs_per_s"));
    (ips("train_step_cpu"), ips("infer_cpu"))
}

/// The median of `iters` timed calls of f after `warmup` untimed ones, in seconds.
fn median_s(warmup: usize, iters: usize, mut f: impl FnMut()) -> f64 {
    (0..warmup).for_each(|_| f());
    let mut t: Vec<f64> = (0..iters)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[iters / 2]
}

fn cpu_bench() {
    let cpu = CpuBackend::new(Default::default());
    let n = 32;
    let mut r = Runner::new(&cpu, "tiny", n).expect("the tiny detector builds");
    let what = format!("tiny at 64, batch {n} ({})", cpu.name());
    let s = median_s(3, 15, || r.step(&cpu).expect("a CPU step"));
    let step_ips = n as f64 / s;
    println!("step cpu: {what}: {:.1} ms per step, {step_ips:.0} images/s", 1e3 * s);
    let s = median_s(3, 15, || drop(infer(&cpu, &r.det, &mut r.ms, &r.x).expect("a CPU inference")));
    let infer_ips = n as f64 / s;
    println!("infer cpu: {what}: {:.1} ms per batch, {infer_ips:.0} images/s", 1e3 * s);
    match std::env::var("DFGPU_TORCH_CPU_ANCHOR") {
        Ok(python) => {
            let (t_step, t_infer) = torch_cpu_peer(&python, rayon::current_num_threads());
            for (what, ours, theirs) in [("step", step_ips, t_step), ("infer", infer_ips, t_infer)] {
                match theirs {
                    Some(t) => println!("{what} cpu: against PyTorch ({t:.0} images/s): speed {:.2}x", ours / t),
                    None => println!("{what} cpu: the PyTorch peer gave no figure"),
                }
            }
        }
        Err(_) => {
            println!("cpu: set DFGPU_TORCH_CPU_ANCHOR to a python with torch and timm to time the peer in this run")
        }
    }
}

fn main() {
    cpu_bench();

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
