//! Frequency features: the reference FFT against a naive f64 DFT and rustfft, every mode and layout against
//! its formula, Welford statistics against a two-pass f64 mean and variance, GPU against CPU.

use crate::common::*;
use dfgpu::backend::cpu::fft::{Fft1d, C64};
use dfgpu::backend::fft::{FftConfig, FreqStats, Magnitude, Phase, SpectrumLayout, LOG_CENTER, LOG_EPS, LOG_SCALE};
use dfgpu::rng::Rng;
use dfgpu::{Backend, Layout, Tensor};
use rustfft::num_complex::Complex64;
use std::f64::consts::PI;

/// The sizes the issue lists: fast-path sizes, Bluestein sizes (299 = 13 x 23, 380 = 4 x 5 x 19), non-square.
const SIZES: [(usize, usize); 11] = [
    (16, 16),
    (224, 224),
    (256, 256),
    (384, 384),
    (448, 448),
    (512, 512),
    (299, 299),
    (380, 380),
    (224, 160),
    (17, 31),
    (1021, 16),
];

fn naive_dft(x: &[C64]) -> Vec<C64> {
    let n = x.len();
    (0..n)
        .map(|k| {
            x.iter()
                .enumerate()
                .fold(C64::default(), |acc, (j, &v)| acc + v * C64::cis(-2.0 * PI * ((j * k) % n) as f64 / n as f64))
        })
        .collect()
}

/// max |a - b| / max |b|
fn rel_err(a: &[C64], b: &[C64]) -> f64 {
    let scale = b.iter().map(|v| v.abs()).fold(0.0, f64::max);
    a.iter().zip(b).map(|(x, y)| (*x - *y).abs()).fold(0.0, f64::max) / scale
}

fn random_complex(rng: &mut Rng, n: usize) -> Vec<C64> {
    (0..n).map(|_| C64::new(rng.normal(), rng.normal())).collect()
}

#[test]
fn fft_1d_matches_naive_dft() {
    let mut rng = Rng::new(1);
    let sizes = (1..=64).chain([97, 101, 127, 243, 360, 343, 1000]);
    for n in sizes {
        let x = random_complex(&mut rng, n);
        let mut y = x.clone();
        Fft1d::new(n).forward(&mut y);
        let e = rel_err(&y, &naive_dft(&x));
        assert!(e < 1e-12, "n={n}: relative error {e:e}");
    }
}

/// The full 2-D spectrum of a real plane by rustfft (rows, then columns).
fn rustfft_2d(plane: &[f64], h: usize, w: usize) -> Vec<C64> {
    let mut planner = rustfft::FftPlanner::<f64>::new();
    let (fr, fc) = (planner.plan_fft_forward(w), planner.plan_fft_forward(h));
    let mut f: Vec<Complex64> = plane.iter().map(|&v| Complex64::new(v, 0.0)).collect();
    f.chunks_mut(w).for_each(|r| fr.process(r));
    let mut col = vec![Complex64::default(); h];
    for x in 0..w {
        (0..h).for_each(|y| col[y] = f[y * w + x]);
        fc.process(&mut col);
        (0..h).for_each(|y| f[y * w + x] = col[y]);
    }
    f.iter().map(|c| C64::new(c.re, c.im)).collect()
}

#[test]
fn fft_2d_matches_rustfft_on_every_listed_size() {
    let mut rng = Rng::new(2);
    for (h, w) in SIZES {
        let plane: Vec<f64> = (0..h * w).map(|_| rng.uniform_f64()).collect();
        let got = dfgpu::backend::cpu::fft::dft2(&plane, h, w, &Fft1d::new(w), &Fft1d::new(h));
        let e = rel_err(&got, &rustfft_2d(&plane, h, w));
        assert!(e < 1e-5, "{h}x{w}: relative error {e:e}");
        assert!(e < 1e-12, "{h}x{w}: relative error {e:e} (f64 should do far better than the 1e-5 asked)");
    }
    assert!(!Fft1d::new(299).is_smooth() && !Fft1d::new(380).is_smooth() && Fft1d::new(448).is_smooth());
}

fn random_images(rng: &mut Rng, n: usize, c: usize, h: usize, w: usize) -> (Tensor, Vec<u8>) {
    let px = random_u8(rng, n * h * w * c);
    (Tensor::from_vec(&[n, h, w, c], Layout::Nhwc, px.clone()).unwrap(), px)
}

/// Where bin k lands after numpy's fftshift (np.roll by n // 2): fftshift([0, 1, 2, 3, 4]) = [3, 4, 0, 1, 2].
fn roll(k: usize, n: usize) -> usize {
    (k + n / 2) % n
}

/// Every mode, layout and phase against the formulas, written out independently of the reference.
#[test]
fn every_mode_matches_its_formula() {
    let be = cpu();
    let mut rng = Rng::new(3);
    for (h, w) in [(16, 20), (17, 19)] {
        let (images, px) = random_images(&mut rng, 2, 3, h, w);
        let chan = |i: usize, c: usize| -> Vec<f64> {
            (0..h * w).map(|p| px[(i * h * w + p) * 3 + c] as f64 / 255.0).collect()
        };
        for layout in [SpectrumLayout::Half, SpectrumLayout::Shifted] {
            for magnitude in [Magnitude::Raw, Magnitude::Log] {
                for phase in [Phase::Angle, Phase::CosSin] {
                    for grayscale in [false, true] {
                        let cfg = FftConfig { layout, magnitude, phase, grayscale };
                        let out = be.fft_features(&images, &cfg, None).unwrap();
                        let s = if grayscale { 1 } else { 3 };
                        let (oh, ow) = if layout == SpectrumLayout::Half { (h, w / 2 + 1) } else { (h, w) };
                        let planes = s + if phase == Phase::Angle { s } else { 2 * s };
                        assert_eq!(out.shape(), &[2, planes, oh, ow], "{cfg:?}");
                        let got = out.host::<f32>().unwrap();
                        let mut want = vec![f64::NAN; got.len()];
                        for i in 0..2 {
                            for sp in 0..s {
                                let plane: Vec<f64> = if grayscale {
                                    let (r, g, b) = (chan(i, 0), chan(i, 1), chan(i, 2));
                                    (0..h * w).map(|p| 0.299 * r[p] + 0.587 * g[p] + 0.114 * b[p]).collect()
                                } else {
                                    chan(i, sp)
                                };
                                let f = rustfft_2d(&plane, h, w);
                                let at = |pl: usize, y: usize, x: usize| ((i * planes + pl) * oh + y) * ow + x;
                                for ky in 0..h {
                                    for kx in 0..ow {
                                        let v = f[ky * w + kx];
                                        let (y, x) = if layout == SpectrumLayout::Half {
                                            (ky, kx)
                                        } else {
                                            (roll(ky, h), roll(kx, w))
                                        };
                                        let mag = (v.re * v.re + v.im * v.im).sqrt();
                                        want[at(sp, y, x)] = match magnitude {
                                            Magnitude::Raw => mag,
                                            _ => {
                                                ((mag / ((h * w) as f64).sqrt() + LOG_EPS as f64).ln()
                                                    - LOG_CENTER as f64)
                                                    / LOG_SCALE as f64
                                            }
                                        };
                                        match phase {
                                            Phase::Angle => want[at(s + sp, y, x)] = v.im.atan2(v.re) / PI,
                                            Phase::CosSin => {
                                                want[at(s + sp, y, x)] = v.re / mag;
                                                want[at(2 * s + sp, y, x)] = v.im / mag;
                                            }
                                        }
                                    }
                                }
                            }
                        }
                        // Phase of bins that are real in exact arithmetic (DC, Nyquist) is +-1 by the sign of a
                        // rounding error: compare angles modulo 2.
                        let mut g = got.to_vec();
                        if phase == Phase::Angle {
                            for (gv, wv) in g.iter_mut().zip(&want) {
                                if (*gv as f64 - wv).abs() > 1.0 {
                                    *gv -= 2.0 * gv.signum();
                                }
                            }
                        }
                        assert_close(&format!("{h}x{w} {cfg:?}"), &g, &want, 2e-6, 2e-6);
                    }
                }
            }
        }
    }
}

#[test]
fn u8_input_is_f32_input_divided_by_255() {
    let be = cpu();
    let mut rng = Rng::new(4);
    let (u8_images, px) = random_images(&mut rng, 3, 3, 24, 18);
    let mut nchw = vec![0f32; px.len()];
    for i in 0..3 {
        for c in 0..3 {
            for p in 0..24 * 18 {
                nchw[(i * 3 + c) * 24 * 18 + p] = px[(i * 24 * 18 + p) * 3 + c] as f32 / 255.0;
            }
        }
    }
    let f32_images = Tensor::from_vec(&[3, 3, 24, 18], Layout::Nchw, nchw).unwrap();
    let cfg = FftConfig::default();
    let a = be.fft_features(&u8_images, &cfg, None).unwrap();
    let b = be.fft_features(&f32_images, &cfg, None).unwrap();
    let want: Vec<f64> = b.host::<f32>().unwrap().iter().map(|&v| v as f64).collect();
    assert_close("u8 vs f32", a.host().unwrap(), &want, 1e-6, 1e-6);
}

/// Log-std: (log value - mean) / std per bin, with the statistics given.
#[test]
fn log_std_standardizes_each_bin() {
    let be = cpu();
    let mut rng = Rng::new(5);
    let (images, _) = random_images(&mut rng, 2, 3, 16, 16);
    let log = be.fft_features(&images, &FftConfig::default(), None).unwrap();
    let bins = 3 * 16 * 9;
    let mut st: Vec<f32> = (0..bins).map(|_| rng.normal() as f32).collect();
    st.extend((0..bins).map(|_| 0.5 + rng.uniform()));
    let stats = Tensor::from_vec(&[2, 3, 16, 9], Layout::Plain, st.clone()).unwrap();
    let cfg = FftConfig { magnitude: Magnitude::LogStd, ..FftConfig::default() };
    let out = be.fft_features(&images, &cfg, Some(&stats)).unwrap();
    let (l, o) = (log.host::<f32>().unwrap(), out.host::<f32>().unwrap());
    for i in 0..2 {
        let base = i * 6 * 16 * 9;
        for b in 0..bins {
            let want = (l[base + b] as f64 - st[b] as f64) / st[bins + b] as f64;
            assert!((o[base + b] as f64 - want).abs() < 1e-5 * want.abs().max(1.0), "bin {b}");
        }
        assert_eq!(o[base + bins..base + 2 * bins], l[base + bins..base + 2 * bins], "phase planes are untouched");
    }
    let e = be.fft_features(&images, &cfg, None).unwrap_err().to_string();
    assert!(e.contains("log-std magnitudes need the training set's per-bin statistics"), "{e}");
    let wrong = Tensor::from_vec(&[2, 3, 16, 16], Layout::Plain, vec![1f32; 2 * 3 * 256]).unwrap();
    let e = be.fft_features(&images, &cfg, Some(&wrong)).unwrap_err().to_string();
    assert!(e.contains("gathered for another size or layout"), "{e}");
}

#[test]
fn bad_sizes_are_errors() {
    let be = cpu();
    let cases: [(&[usize], &str); 3] = [
        (&[1, 15, 32, 3], "height 15 is outside 16 to 1024"),
        (&[1, 32, 1025, 3], "width 1025 is outside 16 to 1024"),
        (&[1, 32, 32, 1], "grayscale needs 3-channel images"),
    ];
    for (shape, msg) in cases {
        let t = Tensor::from_vec(shape, Layout::Nhwc, vec![0u8; shape.iter().product()]).unwrap();
        let cfg = FftConfig { grayscale: true, ..FftConfig::default() };
        let e = be.fft_features(&t, &cfg, None).unwrap_err().to_string();
        assert!(e.contains(msg), "{shape:?}: {e}");
    }
}

/// Welford + Chan over three batches against a two-pass f64 mean and variance of every log value.
fn check_welford(be: &dyn Backend) {
    let mut rng = Rng::new(6);
    let (c, h, w) = (3, 20, 16);
    let cfg = FftConfig::default();
    let mut stats = FreqStats::new(be, cfg, c, h, w).unwrap();
    let mut all: Vec<Vec<f32>> = Vec::new();
    for n in [3, 1, 5] {
        let (images, _) = random_images(&mut rng, n, c, h, w);
        let images = be.upload(&images).unwrap();
        be.fft_stats_update(&images, &mut stats).unwrap();
        let f = be.download(&be.fft_features(&images, &cfg, None).unwrap()).unwrap();
        let per_image = f.numel() / n;
        all.extend(f.host::<f32>().unwrap().chunks(per_image).map(|v| v.to_vec()));
    }
    assert_eq!(stats.count, 9);
    let bins = c * h * (w / 2 + 1);
    let mean = be.download(&stats.mean).unwrap();
    let m2 = be.download(&stats.m2).unwrap();
    let (mean, m2) = (mean.host::<f64>().unwrap(), m2.host::<f64>().unwrap());
    for b in 0..bins {
        let xs: Vec<f64> = all.iter().map(|img| img[b] as f64).collect();
        let m = xs.iter().sum::<f64>() / 9.0;
        let var = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / 9.0;
        assert!((mean[b] - m).abs() <= 1e-12 * m.abs().max(1.0), "bin {b}: mean {} vs {m}", mean[b]);
        assert!((m2[b] / 9.0 - var).abs() <= 1e-10 * var.max(1e-12), "bin {b}: var {} vs {var}", m2[b] / 9.0);
    }
    let fin = stats.finish(be).unwrap();
    assert_eq!(fin.shape(), &[2, c, h, w / 2 + 1]);
    let f = fin.host::<f32>().unwrap();
    assert!((f[bins] as f64 - (m2[0] / 9.0).sqrt().max(1e-3)).abs() < 1e-6);
}

#[test]
fn welford_statistics_match_two_pass_f64() {
    check_welford(&cpu());
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_welford_statistics_match_two_pass_f64() {
    check_welford(&gpu());
}

/// Compares GPU features against the CPU reference: magnitudes relatively (log values with a floor of 1 for
/// values near zero; raw values against the image's largest), phases as angles, skipping bins whose magnitude
/// is under 1e-6 of the image's largest and allowing the error that f32 rounding of F puts on small bins.
fn compare_features(tag: &str, cfg: &FftConfig, shape: [usize; 4], got: &[f32], want: &[f32], raw_mag: &[f32]) {
    let [n, planes, oh, ow] = shape;
    let s = if cfg.phase == Phase::Angle { planes / 2 } else { planes / 3 };
    let pl = oh * ow;
    for i in 0..n {
        let img = |v: &[f32]| v[i * planes * pl..(i + 1) * planes * pl].to_vec();
        let (g, w, m) = (img(got), img(want), img(raw_mag));
        let max_mag = m[..s * pl].iter().fold(0f32, |a, &b| a.max(b)) as f64;
        for b in 0..s * pl {
            let (gv, wv) = (g[b] as f64, w[b] as f64);
            let tol = if cfg.magnitude == Magnitude::Raw { 1e-5 * max_mag } else { 1e-4 * wv.abs().max(1.0) };
            assert!((gv - wv).abs() <= tol, "{tag} image {i} magnitude bin {b}: {gv} vs {wv}");
        }
        for b in s * pl..planes * pl {
            let mag = m[b % (s * pl)] as f64;
            if mag < 1e-6 * max_mag {
                continue;
            }
            let (gv, wv) = (g[b] as f64, w[b] as f64);
            let mut d = (gv - wv).abs();
            if cfg.phase == Phase::Angle {
                d = d.min(2.0 - d); // angle / pi wraps at +-1
            }
            let tol = 1e-4 + 1e-6 * max_mag / mag;
            assert!(d <= tol, "{tag} image {i} phase bin {b}: {gv} vs {wv} (|F| = {mag}, max {max_mag})");
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_matches_cpu_on_every_size_mode_and_input() {
    let (gpu, cpu) = (gpu(), cpu());
    let mut rng = Rng::new(7);
    for (h, w) in SIZES {
        for n in [1usize, 3] {
            let (u8_images, _) = random_images(&mut rng, n, 3, h, w);
            let f32_images =
                cpu.preprocess(&u8_images, &dfgpu::backend::ChannelNorm::imagenet(), true).unwrap().raw.unwrap();
            for images in [&u8_images, &f32_images] {
                let dev = gpu.upload(images).unwrap();
                let mut stats = FreqStats::new(&gpu, FftConfig::default(), 3, h, w).unwrap();
                gpu.fft_stats_update(&dev, &mut stats).unwrap();
                let st = stats.finish(&gpu).unwrap();
                let st_dev = gpu.upload(&st).unwrap();
                for layout in [SpectrumLayout::Half, SpectrumLayout::Shifted] {
                    for magnitude in [Magnitude::Raw, Magnitude::Log, Magnitude::LogStd] {
                        for (phase, grayscale) in [(Phase::Angle, false), (Phase::CosSin, false), (Phase::Angle, true)]
                        {
                            let cfg = FftConfig { layout, magnitude, phase, grayscale };
                            let tag = format!("{h}x{w} n={n} {:?} {cfg:?}", images.dtype());
                            let stats_for = |be: &dyn Backend| {
                                if magnitude == Magnitude::LogStd {
                                    Some(if be.is_cuda() { &st_dev } else { &st })
                                } else {
                                    None
                                }
                            };
                            let want = cpu.fft_features(images, &cfg, stats_for(&cpu)).unwrap();
                            let got = gpu.download(&gpu.fft_features(&dev, &cfg, stats_for(&gpu)).unwrap()).unwrap();
                            let raw = cpu
                                .fft_features(images, &FftConfig { magnitude: Magnitude::Raw, ..cfg }, None)
                                .unwrap();
                            let shape: [usize; 4] = want.shape().try_into().unwrap();
                            compare_features(
                                &tag,
                                &cfg,
                                shape,
                                got.host().unwrap(),
                                want.host().unwrap(),
                                raw.host().unwrap(),
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_fused_kernels_match_cufft() {
    use dfgpu::backend::cuda::fft::CufftPipeline;
    let gpu = gpu();
    let mut rng = Rng::new(8);
    for (h, w) in SIZES {
        let (u8_images, _) = random_images(&mut rng, 2, 3, h, w);
        let images = cpu().preprocess(&u8_images, &dfgpu::backend::ChannelNorm::imagenet(), true).unwrap().raw.unwrap();
        let dev = gpu.upload(&images).unwrap();
        let d = dfgpu::backend::fft::check(&images, &FftConfig::default(), None).unwrap();
        let mut pipe = CufftPipeline::new(&gpu, d).unwrap();
        for layout in [SpectrumLayout::Half, SpectrumLayout::Shifted] {
            for magnitude in [Magnitude::Raw, Magnitude::Log] {
                for phase in [Phase::Angle, Phase::CosSin] {
                    let cfg = FftConfig { layout, magnitude, phase, grayscale: false };
                    let want = gpu.download(&pipe.run(&gpu, &dev, &cfg, None).unwrap()).unwrap();
                    let got = gpu.download(&gpu.fft_features(&dev, &cfg, None).unwrap()).unwrap();
                    let raw_cfg = FftConfig { magnitude: Magnitude::Raw, ..cfg };
                    let raw = gpu.download(&pipe.run(&gpu, &dev, &raw_cfg, None).unwrap()).unwrap();
                    let shape: [usize; 4] = want.shape().try_into().unwrap();
                    let tag = format!("{h}x{w} {cfg:?} vs cuFFT");
                    compare_features(&tag, &cfg, shape, got.host().unwrap(), want.host().unwrap(), raw.host().unwrap());
                }
            }
        }
    }
}
