//! `cargo bench --bench head`: one step of the fusion head, forward + focal loss + backward, for B in {128, 256},
//! Ds = 1280, Dq = 256, H = 256 (LayerNorm, SiLU, dropout 0.3, training mode). GPU, CUDA events, median of 50
//! after 10 warm-up steps, timed in the same run:
//!   dfgpu: the fused kernels around cuBLAS products;
//!   baseline: the same cuBLAS products with one simple kernel per step (benches/head_baseline.cu, `bl_*`,
//!   compiled at run time with NVRTC), as a framework without fusion runs it, all buffers allocated beforehand.
//! The bench first checks that both give the same logits, loss and gradients. CPU: the reference's step time.

mod common;

use common::timing::{median_ms, with_gpu};
use cudarc::driver::{CudaModule, CudaSlice, LaunchConfig, PushKernelArg};
use dfgpu::backend::cpu::CpuBackend;
use dfgpu::backend::cuda::CudaBackend;
use dfgpu::backend::head::{HeadConfig, HeadInputs, Mode};
use dfgpu::backend::loss::LossConfig;
use dfgpu::backend::Slots;
use dfgpu::rng::Rng;
use dfgpu::tensor::Slice;
use dfgpu::{Backend, Layout, Result, Tensor};
use std::sync::Arc;
use std::time::Instant;

const SEED: u64 = 42;

struct Inputs {
    cfg: HeadConfig,
    p: Tensor,
    s: Tensor,
    q: Tensor,
    y: Tensor,
}

fn inputs(b: usize) -> Inputs {
    let cfg = HeadConfig::new(1280, 256, 256);
    let mut rng = Rng::new(1);
    let mut p = cfg.init(2);
    p.iter_mut().for_each(|v| *v += 0.05 * rng.normal() as f32);
    let s: Vec<f32> = (0..b * cfg.ds).map(|_| rng.normal() as f32).collect();
    let q: Vec<f32> = (0..b * cfg.dq).map(|_| 10.0 * rng.normal() as f32).collect();
    let y: Vec<f32> = (0..b).map(|_| (rng.uniform() < 5.0 / 6.0) as u8 as f32).collect();
    let plain = |shape: &[usize], v: Vec<f32>| Tensor::from_vec(shape, Layout::Plain, v).unwrap();
    Inputs { p: plain(&[p.len()], p), s: plain(&[b, cfg.ds], s), q: plain(&[b, cfg.dq], q), y: plain(&[b], y), cfg }
}

/// dfgpu's step, parameter gradients into `grads`: returns (logits, mean loss stats, dS, dQ).
fn fused_step(be: &dyn Backend, x: &Inputs, grads: &mut Tensor) -> Result<[Tensor; 4]> {
    let mode = Mode::Train { seed: SEED };
    let n = x.p.numel();
    let p = Slice { buf: &x.p, range: 0..n };
    let h = HeadInputs { cfg: &x.cfg, params: p, s: &x.s, q: &x.q };
    let f = be.head_forward(&h, mode)?;
    let l = be.loss(&LossConfig::focal(), &f.logits, &x.y, 0.5)?;
    let all = 0..n;
    let g = be.head_backward(&h, &f.saved, &l.dlogits, Slots { buf: grads, at: [all] })?;
    Ok([f.logits, l.stats, g.ds, g.dq])
}

fn zeros(be: &dyn Backend, n: usize) -> Result<Tensor> {
    be.upload(&Tensor::from_vec(&[n], Layout::Plain, vec![0f32; n])?)
}

/// The unfused baseline's kernels and buffers.
struct Baseline {
    kernels: Arc<CudaModule>,
    bufs: std::collections::HashMap<&'static str, CudaSlice<f32>>,
}

/// benches/head_baseline.cu, compiled for this GPU; it includes kernels/head.cu, which includes common.cuh.
fn baseline_kernels(be: &CudaBackend) -> Result<Arc<CudaModule>> {
    let headers =
        [("head.cu", include_str!("../kernels/head.cu")), ("common.cuh", include_str!("../kernels/common.cuh"))];
    common::nvrtc::load(be.stream().context(), "head_baseline.cu", include_str!("head_baseline.cu"), &headers)
}

macro_rules! launch {
    ($be:expr, $kernels:expr, $name:literal, $cfg:expr $(, $arg:expr)*) => {{
        let f = $kernels.load_function($name)?;
        let mut l = $be.stream().launch_builder(&f);
        $( l.arg($arg); )*
        // SAFETY: each call below passes the arguments of the kernel's signature, sized by `Baseline::new`.
        unsafe { l.launch($cfg) }?;
    }};
}

impl Baseline {
    fn new(be: &CudaBackend, kernels: Arc<CudaModule>, cfg: &HeadConfig, b: usize) -> Result<Self> {
        let (ds, dq, d, h) = (cfg.ds, cfg.dq, cfg.d(), cfg.hidden);
        let sizes = [
            ("ys", b * ds),
            ("yq", b * dq),
            ("mean_s", b),
            ("rstd_s", b),
            ("mean_q", b),
            ("rstd_q", b),
            ("z", b * d),
            ("h", b * h),
            ("a", b * h),
            ("ad", b * h),
            ("mask", b * h),
            ("logits", b),
            ("loss", b),
            ("loss_mean", 1),
            ("dl", b),
            ("gp", cfg.layout().total()),
            ("dad", b * h),
            ("da", b * h),
            ("dh", b * h),
            ("dz", b * d),
            ("dys", b * ds),
            ("dyq", b * dq),
            ("ds", b * ds),
            ("dq", b * dq),
        ];
        let mut bufs = std::collections::HashMap::new();
        for (name, n) in sizes {
            bufs.insert(name, be.stream().alloc_zeros::<f32>(n)?);
        }
        Ok(Baseline { kernels, bufs })
    }

    fn step(&mut self, be: &CudaBackend, x: &Inputs) -> Result<()> {
        let cfg = &x.cfg;
        let (b, ds, dq, d, hid) = (x.s.shape()[0], cfg.ds as i32, cfg.dq as i32, cfg.d() as i32, cfg.hidden as i32);
        let (b32, bh) = (b as i32, (b * cfg.hidden) as i64);
        let l = cfg.layout();
        let p = x.p.device::<f32>()?;
        let at = |n: &str| p.slice(l.get(n).unwrap().range());
        let (gamma_s, beta_s, gamma_q, beta_q) =
            (at("norm_s.weight"), at("norm_s.bias"), at("norm_q.weight"), at("norm_q.bias"));
        let (w1, b1, w2, b2) = (at("fc1.weight"), at("fc1.bias"), at("fc2.weight"), at("fc2.bias"));
        let (s, q, y) = (x.s.device::<f32>()?, x.q.device::<f32>()?, x.y.device::<f32>()?);
        let rows = LaunchConfig { grid_dim: (b as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        let ew = |n: usize| be.grid_stride(n, 256);
        let mut t = |n: &'static str| self.bufs.remove(n).unwrap();
        let (mut ys, mut yq, mut ms, mut rs, mut mq, mut rq) =
            (t("ys"), t("yq"), t("mean_s"), t("rstd_s"), t("mean_q"), t("rstd_q"));
        let (mut z, mut h, mut a, mut ad, mut mask) = (t("z"), t("h"), t("a"), t("ad"), t("mask"));
        let (mut logits, mut loss, mut loss_mean, mut dl, mut gp) =
            (t("logits"), t("loss"), t("loss_mean"), t("dl"), t("gp"));
        let (mut dad, mut da, mut dh, mut dz) = (t("dad"), t("da"), t("dh"), t("dz"));
        let (mut dys, mut dyq, mut dsv, mut dqv) = (t("dys"), t("dyq"), t("ds"), t("dq"));
        let blas = be.blas()?;
        let k = &self.kernels;
        let (zero, one, gather, p_drop, alpha, gamma) = (0i32, 1i32, 1i32, cfg.dropout, 0.25f32, 2.0f32);

        // Forward.
        launch!(be, k, "bl_layernorm", rows, s, &gamma_s, &beta_s, &ds, &mut ys, &mut ms, &mut rs);
        launch!(be, k, "bl_layernorm", rows, q, &gamma_q, &beta_q, &dq, &mut yq, &mut mq, &mut rq);
        launch!(be, k, "bl_copy_cols", ew(b * cfg.ds), &ys, &ds, &mut z, &d, &b32, &ds, &zero, &zero);
        launch!(be, k, "bl_copy_cols", ew(b * cfg.dq), &yq, &dq, &mut z, &d, &b32, &dq, &ds, &zero);
        blas.gemm((false, true), (b, cfg.hidden, cfg.d()), &z, &w1, 0.0, &mut h)?;
        launch!(be, k, "bl_bias_add", ew(b * cfg.hidden), &mut h, &b1, &b32, &hid);
        launch!(be, k, "bl_silu", ew(b * cfg.hidden), &h, &mut a, &bh);
        launch!(be, k, "bl_dropout", ew(b * cfg.hidden), &a, &mut ad, &mut mask, &b32, &hid, &p_drop, &SEED);
        blas.gemm((false, false), (b, 1, cfg.hidden), &ad, &w2, 0.0, &mut logits)?;
        launch!(be, k, "bl_bias_add", ew(b), &mut logits, &b2, &b32, &one);
        launch!(be, k, "bl_focal", ew(b), &logits, y, &mut loss, &b32, &alpha, &gamma);
        let inv_b = 1.0f32 / b as f32;
        launch!(be, k, "bl_colsum", ew(1), &loss, &b32, &one, &inv_b, &mut loss_mean);
        launch!(be, k, "bl_focal_bwd", ew(b), &logits, y, &mut dl, &b32, &alpha, &gamma);

        // Backward.
        let offset = |n: &str| l.get(n).unwrap().range();
        blas.gemm((true, false), (cfg.hidden, 1, b), &ad, &dl, 0.0, &mut gp.slice_mut(offset("fc2.weight")))?;
        let mut g_b2 = gp.slice_mut(offset("fc2.bias"));
        launch!(be, k, "bl_colsum", ew(1), &dl, &b32, &one, &1.0f32, &mut g_b2);
        blas.gemm((false, false), (b, cfg.hidden, 1), &dl, &w2, 0.0, &mut dad)?;
        launch!(be, k, "bl_mul", ew(b * cfg.hidden), &dad, &mask, &mut da, &bh);
        launch!(be, k, "bl_silu_bwd", ew(b * cfg.hidden), &da, &h, &mut dh, &bh);
        let mut g_b1 = gp.slice_mut(offset("fc1.bias"));
        launch!(be, k, "bl_colsum", ew(cfg.hidden), &dh, &b32, &hid, &1.0f32, &mut g_b1);
        blas.gemm((true, false), (cfg.hidden, cfg.d(), b), &dh, &z, 0.0, &mut gp.slice_mut(offset("fc1.weight")))?;
        blas.gemm((false, false), (b, cfg.d(), cfg.hidden), &dh, &w1, 0.0, &mut dz)?;
        launch!(be, k, "bl_copy_cols", ew(b * cfg.ds), &dz, &d, &mut dys, &ds, &b32, &ds, &zero, &gather);
        launch!(be, k, "bl_copy_cols", ew(b * cfg.dq), &dz, &d, &mut dyq, &dq, &b32, &dq, &ds, &gather);
        launch!(be, k, "bl_layernorm_bwd", rows, &dys, s, &gamma_s, &ms, &rs, &ds, &mut dsv);
        launch!(be, k, "bl_layernorm_bwd", rows, &dyq, q, &gamma_q, &mq, &rq, &dq, &mut dqv);
        let (g_s, b_s) = (offset("norm_s.weight"), offset("norm_s.bias"));
        let (g_q, b_q) = (offset("norm_q.weight"), offset("norm_q.bias"));
        // gamma comes before beta in the layout: split there to hold both gradients at once.
        for (x, dy, m, r, cols, (g, bt)) in [(s, &dys, &ms, &rs, &ds, (g_s, b_s)), (q, &dyq, &mq, &rq, &dq, (g_q, b_q))]
        {
            let (mut lo, mut hi) = gp.split_at_mut(bt.start);
            let (mut dg, mut db) = (lo.slice_mut(g), hi.slice_mut(0..bt.len()));
            launch!(be, k, "bl_layernorm_params", ew(bt.len()), dy, x, m, r, &b32, cols, &mut dg, &mut db);
        }
        for (name, buf) in [
            ("ys", ys),
            ("yq", yq),
            ("mean_s", ms),
            ("rstd_s", rs),
            ("mean_q", mq),
            ("rstd_q", rq),
            ("z", z),
            ("h", h),
            ("a", a),
            ("ad", ad),
            ("mask", mask),
            ("logits", logits),
            ("loss", loss),
            ("loss_mean", loss_mean),
            ("dl", dl),
            ("gp", gp),
            ("dad", dad),
            ("da", da),
            ("dh", dh),
            ("dz", dz),
            ("dys", dys),
            ("dyq", dyq),
            ("ds", dsv),
            ("dq", dqv),
        ] {
            self.bufs.insert(name, buf);
        }
        Ok(())
    }

    /// (logits, mean loss, parameter grads, dS, dQ) on the host.
    fn results(&self, be: &CudaBackend) -> Result<[Vec<f32>; 5]> {
        let get = |n: &str| be.stream().clone_dtoh(&self.bufs[n]).map_err(dfgpu::Error::from);
        Ok([get("logits")?, get("loss_mean")?, get("gp")?, get("ds")?, get("dq")?])
    }
}

fn max_rel_diff(a: &[f32], b: &[f32]) -> f64 {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30) as f64;
    a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64).fold(0.0, f64::max) / scale
}

fn gpu_bench(gpu: &CudaBackend) -> Result<()> {
    println!("  Ds 1280, Dq 256, H 256, LayerNorm, SiLU, dropout 0.3, focal loss");
    let kernels = baseline_kernels(gpu)?;
    for b in [128usize, 256] {
        let host = inputs(b);
        let x = Inputs {
            cfg: host.cfg.clone(),
            p: gpu.upload(&host.p)?,
            s: gpu.upload(&host.s)?,
            q: gpu.upload(&host.q)?,
            y: gpu.upload(&host.y)?,
        };
        let mut base = Baseline::new(gpu, kernels.clone(), &x.cfg, b)?;
        base.step(gpu, &x)?;
        let mut grads = zeros(gpu, x.p.numel())?;
        let [logits, loss, ds, dq] = fused_step(gpu, &x, &mut grads)?;
        let fused = [logits, loss, grads, ds, dq];
        let want = base.results(gpu)?;
        let names = ["logits", "loss", "param grads", "dS", "dQ"];
        let mut agree = Vec::new();
        for ((name, t), w) in names.iter().zip(&fused).zip(&want) {
            let got = gpu.download(t)?;
            let g = got.host::<f32>()?;
            agree.push(format!("{name} {:.1e}", max_rel_diff(&g[..w.len()], w)));
        }
        let mut grads = zeros(gpu, x.p.numel())?;
        let us_fused = 1e3 * median_ms(gpu.stream(), 10, 50, || fused_step(gpu, &x, &mut grads).map(drop))?;
        let us_base = 1e3 * median_ms(gpu.stream(), 10, 50, || base.step(gpu, &x))?;
        println!(
            "  B={b}: dfgpu {us_fused:.1} us/step, baseline {us_base:.1} us/step, speed-up {:.2}x (largest difference, \
             relative to each tensor's largest value: {})",
            us_base / us_fused,
            agree.join(", ")
        );
    }
    Ok(())
}

fn main() {
    with_gpu("head", gpu_bench);
    let cpu = CpuBackend::new(Default::default());
    let x = inputs(128);
    let mut grads = zeros(&cpu, x.p.numel()).unwrap();
    fused_step(&cpu, &x, &mut grads).unwrap();
    let t = Instant::now();
    let reps = 5;
    for _ in 0..reps {
        fused_step(&cpu, &x, &mut grads).unwrap();
    }
    println!("head {}: B=128 step {:.2} ms", cpu.name(), t.elapsed().as_secs_f64() * 1e3 / reps as f64);
}
