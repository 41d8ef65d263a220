//! Preprocessing: u8 NHWC to f32 NCHW, normalized and raw.

use crate::common::*;
use dfgpu::backend::ChannelNorm;
use dfgpu::rng::Rng;
use dfgpu::{Backend, DType, Layout, Tensor};

fn norm_for(c: usize, rng: &mut Rng) -> ChannelNorm {
    if c == 3 {
        return ChannelNorm::imagenet();
    }
    ChannelNorm { mean: (0..c).map(|_| rng.uniform()).collect(), std: (0..c).map(|_| 0.1 + rng.uniform()).collect() }
}

/// (x / 255 - mean) / std and x / 255, in f64, NCHW, indexed independently of the implementation.
fn reference(px: &[u8], [n, h, w, c]: [usize; 4], norm: &ChannelNorm) -> (Vec<f64>, Vec<f64>) {
    let mut out = vec![f64::NAN; px.len()];
    let mut raw = vec![f64::NAN; px.len()];
    for i in 0..n {
        for y in 0..h {
            for x in 0..w {
                for k in 0..c {
                    let v = px[((i * h + y) * w + x) * c + k] as f64 / 255.0;
                    let o = ((i * c + k) * h + y) * w + x;
                    raw[o] = v;
                    out[o] = (v - norm.mean[k] as f64) / norm.std[k] as f64;
                }
            }
        }
    }
    (out, raw)
}

const SHAPES: [[usize; 4]; 6] =
    [[1, 1, 1, 1], [3, 5, 7, 3], [2, 8, 8, 3], [1, 13, 9, 1], [2, 6, 10, 4], [4, 31, 17, 2]];

#[test]
fn cpu_matches_f64_formula() {
    let be = cpu();
    let mut rng = Rng::new(1);
    for shape in SHAPES {
        let px = random_u8(&mut rng, shape.iter().product());
        let norm = norm_for(shape[3], &mut rng);
        let images = Tensor::from_vec(&shape, Layout::Nhwc, px.clone()).unwrap();
        let p = be.preprocess(&images, &norm, true).unwrap();
        let [n, h, w, c] = shape;
        assert_eq!(p.normalized.shape(), &[n, c, h, w]);
        assert_eq!((p.normalized.dtype(), p.normalized.layout()), (DType::F32, Layout::Nchw));
        let (want, want_raw) = reference(&px, shape, &norm);
        // f32 output of an f64 formula: a few ulps (the constants are rounded to f32 once).
        assert_close(&format!("norm {shape:?}"), p.normalized.host::<f32>().unwrap(), &want, 1e-6, 1e-6);
        assert_close(&format!("raw {shape:?}"), p.raw.unwrap().host::<f32>().unwrap(), &want_raw, 1e-7, 0.0);
    }
}

#[test]
fn raw_is_optional() {
    let mut rng = Rng::new(2);
    let images = Tensor::from_vec(&[1, 4, 4, 3], Layout::Nhwc, random_u8(&mut rng, 48)).unwrap();
    let p = cpu().preprocess(&images, &ChannelNorm::imagenet(), false).unwrap();
    assert!(p.raw.is_none());
}

#[test]
fn bad_inputs_are_errors_that_say_what() {
    let be = cpu();
    let imagenet = ChannelNorm::imagenet();
    let f32_images = Tensor::from_vec(&[1, 2, 2, 3], Layout::Nhwc, vec![0.5f32; 12]).unwrap();
    let nchw = Tensor::from_vec(&[1, 3, 2, 2], Layout::Nchw, vec![0u8; 12]).unwrap();
    let five = Tensor::from_vec(&[1, 2, 2, 5], Layout::Nhwc, vec![0u8; 20]).unwrap();
    let empty = Tensor::from_vec(&[0, 2, 2, 3], Layout::Nhwc, vec![0u8; 0]).unwrap();
    let ok = Tensor::from_vec(&[1, 2, 2, 3], Layout::Nhwc, vec![0u8; 12]).unwrap();
    let zero_std = ChannelNorm { mean: vec![0.0; 3], std: vec![1.0, 0.0, 1.0] };
    let cases: [(&Tensor, &ChannelNorm, &str); 6] = [
        (&f32_images, &imagenet, "expected a rank-4 U8 Nhwc tensor, got rank-4 F32"),
        (&nchw, &imagenet, "got rank-4 U8 Nchw"),
        (&five, &imagenet, "5 channels"),
        (&empty, &imagenet, "empty batch"),
        (&ok, &ChannelNorm { mean: vec![0.5], std: vec![0.5] }, "1 means and 1 stds for 3-channel images"),
        (&ok, &zero_std, "std 0 must be finite and positive"),
    ];
    for (images, norm, msg) in cases {
        let e = be.preprocess(images, norm, true).unwrap_err().to_string();
        assert!(e.contains(msg), "expected '{msg}' in '{e}'");
    }
}

#[test]
#[ignore = "needs a CUDA device: a GPU, or the emulator (scripts/emu.sh)"]
fn gpu_matches_cpu_bitwise() {
    let (gpu, cpu) = (gpu(), cpu());
    let mut rng = Rng::new(3);
    // The CPU shapes (generic kernel, odd sizes), plus the 4-pixel path at a model's input size, and an odd
    // size with 3 channels that must take the generic path.
    let shapes = SHAPES.iter().copied().chain([[2, 224, 224, 3], [3, 223, 223, 3], [1, 380, 380, 3]]);
    for shape in shapes {
        let px = random_u8(&mut rng, shape.iter().product());
        let norm = norm_for(shape[3], &mut rng);
        let host = Tensor::from_vec(&shape, Layout::Nhwc, px).unwrap();
        for want_raw in [true, false] {
            let want = cpu.preprocess(&host, &norm, want_raw).unwrap();
            let got = race_checked(&format!("preprocess {shape:?} raw={want_raw}"), || {
                let got = gpu.preprocess(&gpu.upload(&host).unwrap(), &norm, want_raw).unwrap();
                let down = |t: &Tensor| gpu.download(t).unwrap().host::<f32>().unwrap().to_vec();
                [Some(&got.normalized), got.raw.as_ref()].into_iter().flatten().map(down).collect::<Vec<_>>()
            });
            // Same f32 constants and one fused multiply-add on both sides: equal to the last bit.
            assert_bitwise(&format!("norm {shape:?}"), &got[0], want.normalized.host().unwrap());
            assert_eq!(got.len() == 2, want_raw);
            if let (Some(g), Some(w)) = (got.get(1), want.raw) {
                assert_bitwise(&format!("raw {shape:?}"), g, w.host().unwrap());
            }
        }
    }
}

#[test]
#[ignore = "needs a CUDA device: a GPU, or the emulator (scripts/emu.sh)"]
fn gpu_rejects_a_host_tensor() {
    // Launches no kernel (the argument check fails first): nothing to race-check.
    let images = Tensor::from_vec(&[1, 2, 2, 3], Layout::Nhwc, vec![0u8; 12]).unwrap();
    let e = gpu().preprocess(&images, &ChannelNorm::imagenet(), true).unwrap_err().to_string();
    assert!(e.contains("expected a tensor on the GPU, got a host tensor"), "{e}");
}

/// The fast path runs the reference's loop compiled for wider vectors (mul_add is exact on every path): the same
/// bits.
#[test]
fn fast_preprocessing_is_the_reference_bit_for_bit() {
    let (fast, reference) = (fast_cpu(), cpu());
    let mut rng = Rng::new(3);
    for shape in SHAPES.into_iter().chain([[32, 64, 64, 3]]) {
        let norm = norm_for(shape[3], &mut rng);
        let images = Tensor::from_vec(&shape, Layout::Nhwc, random_u8(&mut rng, shape.iter().product())).unwrap();
        let (got, want) =
            (fast.preprocess(&images, &norm, true).unwrap(), reference.preprocess(&images, &norm, true).unwrap());
        assert_bitwise(&format!("norm {shape:?}"), got.normalized.host().unwrap(), want.normalized.host().unwrap());
        assert_bitwise(&format!("raw {shape:?}"), got.raw.unwrap().host().unwrap(), want.raw.unwrap().host().unwrap());
    }
}
