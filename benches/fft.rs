//! `cargo bench --bench fft`: the frequency features (`log` magnitude, angle / pi, half spectrum) of f32 batches
//! of 256 x 3 x 224 x 224 and 256 x 3 x 256 x 256.
//! GPU, timed with CUDA events in the same run (median of 50 after 10 warm-up runs):
//!   (a) dfgpu's fused kernels, (b) cuFFT R2C + dfgpu's features kernel, (c) a device-to-device copy of the
//!   minimum bytes (read the input once, write the output once): the memory roofline.
//! Prints images/s, GB/s of the minimum bytes, a / b, and a's share of the copy's bandwidth. Then what
//! `--freq-profile` adds: the luma spectrum and its ring profile, their time against the fused features', and the
//! profile's against a copy of the magnitude plane it reads.
//! PyTorch's figure for the same work (rfft2 + log1p(abs) + angle) comes from shared/anchors/torch_two_branch.py,
//! run in the same session on the same card (gpu-pack/run.sh --torch).
//! CPU: images/s of the reference, features and profile.

mod common;

use common::timing::{copy_ms, median_ms, with_gpu};
use dfgpu::backend::cpu::CpuBackend;
use dfgpu::backend::cuda::{fft::CufftPipeline, CudaBackend};
use dfgpu::backend::fft::{check, FftConfig, LUMA_SPECTRUM};
use dfgpu::rng::Rng;
use dfgpu::{Backend, Layout, Tensor};
use std::time::Instant;

fn images(n: usize, size: usize, seed: u64) -> Tensor {
    let mut rng = Rng::new(seed);
    let v: Vec<f32> = (0..n * 3 * size * size).map(|_| rng.uniform()).collect();
    Tensor::from_vec(&[n, 3, size, size], Layout::Nchw, v).unwrap()
}

fn gpu_bench(gpu: &CudaBackend) -> dfgpu::Result<()> {
    let cfg = FftConfig::default();
    for size in [224usize, 256] {
        let n = 256;
        let host = images(n, size, 1);
        let x = gpu.upload(&host)?;
        let d = check(&host, &cfg, None)?;
        let bytes = (host.numel() * 4 + d.out_shape().iter().product::<usize>() * 4) as f64;
        let fused = median_ms(gpu.stream(), 10, 50, || gpu.fft_features(&x, &cfg, None).map(drop))?;
        let mut pipe = CufftPipeline::new(gpu, d)?;
        let cufft = median_ms(gpu.stream(), 10, 50, || pipe.run(gpu, &x, &cfg, None).map(drop))?;
        let copy = copy_ms(gpu.stream(), bytes)?;
        let gbs = |ms: f64| bytes / ms / 1e6;
        println!(
            "  {n}x3x{size}x{size}: fused {fused:.4} ms ({:.0} images/s, {:.0} GB/s); cuFFT R2C + features {cufft:.4} ms \
             ({:.0} images/s); fused / cuFFT speed-up {:.2}x; copy of the same bytes {copy:.4} ms ({:.0} GB/s): fused \
             at {:.0}% of it",
            n as f64 / fused * 1e3,
            gbs(fused),
            n as f64 / cufft * 1e3,
            cufft / fused,
            gbs(copy),
            100.0 * copy / fused
        );
        let spectrum = median_ms(gpu.stream(), 10, 50, || gpu.fft_features(&x, &LUMA_SPECTRUM, None).map(drop))?;
        let luma = gpu.fft_features(&x, &LUMA_SPECTRUM, None)?;
        let profile = median_ms(gpu.stream(), 10, 50, || gpu.fft_profile(&luma, &LUMA_SPECTRUM, None).map(drop))?;
        let copy = copy_ms(gpu.stream(), (n * size * size * 4) as f64)?;
        println!(
            "    --freq-profile: luma spectrum {spectrum:.4} ms + ring profile {profile:.4} ms, {:.1}% of the fused \
             features' time; copy of the magnitude plane the profile reads {copy:.4} ms: the profile at {:.0}% of it",
            100.0 * (spectrum + profile) / fused,
            100.0 * copy / profile
        );
    }
    Ok(())
}

fn main() {
    with_gpu("fft", gpu_bench);
    let cpu = CpuBackend::new(Default::default());
    let x = images(8, 224, 2);
    let cfg = FftConfig::default();
    cpu.fft_features(&x, &cfg, None).unwrap();
    let t = Instant::now();
    let reps = 3;
    for _ in 0..reps {
        cpu.fft_features(&x, &cfg, None).unwrap();
    }
    let s = t.elapsed().as_secs_f64() / reps as f64;
    println!("fft {}: 8x3x224x224: {:.1} ms, {:.0} images/s", cpu.name(), s * 1e3, 8.0 / s);
    let t = Instant::now();
    for _ in 0..reps {
        cpu.fft_features(&x, &LUMA_SPECTRUM, None).unwrap();
    }
    let l = t.elapsed().as_secs_f64() / reps as f64;
    let luma = cpu.fft_features(&x, &LUMA_SPECTRUM, None).unwrap();
    let t = Instant::now();
    for _ in 0..reps {
        cpu.fft_profile(&luma, &LUMA_SPECTRUM, None).unwrap();
    }
    let p = t.elapsed().as_secs_f64() / reps as f64;
    println!(
        "  --freq-profile: luma spectrum {:.2} ms + ring profile {:.2} ms, {:.1}% of the features' time",
        l * 1e3,
        p * 1e3,
        100.0 * (l + p) / s
    );
}
