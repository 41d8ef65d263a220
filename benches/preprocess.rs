//! `cargo bench --bench preprocess`: u8 NHWC to normalized + raw f32 NCHW, batch 256 x 224 x 224 x 3.
//! GPU: milliseconds, images/s and GB/s of the kernel against a device-to-device copy of the same number of
//! bytes timed in the same run (the memory roofline). CPU: images/s of the reference.

mod common;

use common::timing::{copy_ms, median_ms, with_gpu};
use dfgpu::backend::cpu::CpuBackend;
use dfgpu::backend::ChannelNorm;
use dfgpu::rng::Rng;
use dfgpu::{Backend, Layout, Tensor};
use std::time::Instant;

fn main() {
    let (n, h, w, c) = (256usize, 224usize, 224usize, 3usize);
    let mut rng = Rng::new(5);
    let px: Vec<u8> = (0..n * h * w * c).map(|_| rng.below(256) as u8).collect();
    let images = Tensor::from_vec(&[n, h, w, c], Layout::Nhwc, px).unwrap();
    let norm = ChannelNorm::imagenet();
    // Bytes that must move: read u8 once, write two f32 planes.
    let bytes = (n * h * w * c * (1 + 4 + 4)) as f64;

    with_gpu("preprocess", |gpu| {
        let dev_images = gpu.upload(&images)?;
        let ms = median_ms(gpu.stream(), 10, 50, || gpu.preprocess(&dev_images, &norm, true).map(drop))?;
        let copy = copy_ms(gpu.stream(), bytes)?;
        println!(
            "  batch {n}x{h}x{w}x{c}: {ms:.4} ms, {:.0} images/s, {:.0} GB/s; d2d copy of the same bytes {copy:.4} ms \
             ({:.0} GB/s); kernel at {:.0}% of the copy's bandwidth",
            n as f64 / ms * 1e3,
            bytes / ms / 1e6,
            bytes / copy / 1e6,
            100.0 * copy / ms
        );
        Ok(())
    });

    let cpu = CpuBackend::new(Default::default());
    let small_n = 32;
    let px_small = Tensor::from_vec(
        &[small_n, h, w, c],
        Layout::Nhwc,
        images.host::<u8>().unwrap()[..small_n * h * w * c].to_vec(),
    )
    .unwrap();
    cpu.preprocess(&px_small, &norm, true).unwrap();
    let reps = 5;
    let t = Instant::now();
    for _ in 0..reps {
        cpu.preprocess(&px_small, &norm, true).unwrap();
    }
    let s = t.elapsed().as_secs_f64() / reps as f64;
    println!("preprocess {}: batch {small_n}: {:.1} ms, {:.0} images/s", cpu.name(), s * 1e3, small_n as f64 / s);
}
