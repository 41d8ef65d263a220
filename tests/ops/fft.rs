//! Frequency features: the reference FFT against a naive f64 DFT and rustfft, every mode and layout against
//! its formula, Welford statistics against a two-pass f64 mean and variance, GPU against CPU. On noise and on
//! natural-like images (smooth, 1/f), whose bins far below DC are where an f32 FFT loses the most of them.

use crate::common::*;
use dfgpu::backend::cpu::fft::{Fft1d, C64};
use dfgpu::backend::fft::{
    rings, FftConfig, FftDims, FftStats, Magnitude, Phase, SpectrumLayout, LOG_CENTER, LOG_EPS, LOG_SCALE,
};
use dfgpu::rng::Rng;
use dfgpu::tensor::Slice;
use dfgpu::{Backend, Layout, Tensor};
use rustfft::num_complex::Complex64;
use std::f64::consts::PI;

/// The sizes: fast-path sizes, Bluestein sizes (299 = 13 x 23, 380 = 4 x 5 x 19), non-square.
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
        let noise: Vec<f64> = (0..h * w).map(|_| rng.uniform_f64()).collect();
        let (smooth, one_over_f) = (natural_plane(&mut rng, h, w, true), natural_plane(&mut rng, h, w, false));
        for (kind, plane) in [("noise", noise), ("smooth", smooth), ("1/f", one_over_f)] {
            let got = dfgpu::backend::cpu::fft::dft2(&plane, h, w, &Fft1d::new(w), &Fft1d::new(h));
            // Relative to the largest bin (DC), which is what an FFT's rounding scales with: the bins of smooth
            // images, down to 1e-9 of DC and under, are held to what they can be.
            let e = rel_err(&got, &rustfft_2d(&plane, h, w));
            assert!(e < 1e-5, "{h}x{w} {kind}: relative error {e:e}");
            assert!(e < 1e-12, "{h}x{w} {kind}: relative error {e:e} (f64 should do far better than the 1e-5 asked)");
        }
    }
    assert!(!Fft1d::new(299).is_smooth() && !Fft1d::new(380).is_smooth() && Fft1d::new(448).is_smooth());
}

fn random_images(rng: &mut Rng, n: usize, c: usize, h: usize, w: usize) -> (Tensor, Vec<u8>) {
    let px = random_u8(rng, n * h * w * c);
    (Tensor::from_vec(&[n, h, w, c], Layout::Nhwc, px.clone()).unwrap(), px)
}

/// A natural-like plane of h x w values in [0.1, 0.9]. `smooth`: a lighting gradient and a few Gaussian blobs,
/// whose spectrum falls fast from DC (at 380 x 380, 90% of the bins lie under 1e-5 of it and half under 1e-6:
/// the bins where an f32 FFT is least accurate relative to their own size); otherwise a 1/f amplitude spectrum
/// with random phases, as photos have.
fn natural_plane(rng: &mut Rng, h: usize, w: usize, smooth: bool) -> Vec<f64> {
    let mut v = vec![0f64; h * w];
    if smooth {
        let (gy, gx) = (rng.normal(), rng.normal());
        let blobs: Vec<[f64; 4]> = (0..4)
            .map(|_| {
                let s = (0.05 + 0.25 * rng.uniform_f64()) * h.min(w) as f64;
                [rng.uniform_f64() * h as f64, rng.uniform_f64() * w as f64, s, rng.normal()]
            })
            .collect();
        for y in 0..h {
            for x in 0..w {
                let (fy, fx) = (y as f64, x as f64);
                v[y * w + x] = gy * fy / h as f64
                    + gx * fx / w as f64
                    + blobs
                        .iter()
                        .map(|&[cy, cx, s, a]| a * (-((fy - cy).powi(2) + (fx - cx).powi(2)) / (2.0 * s * s)).exp())
                        .sum::<f64>();
            }
        }
    } else {
        // F[ky, kx] = cis(random) / |k| (k in cycles per pixel, folded to +-1/2), then the real part of the
        // inverse transform.
        let fold = |k: usize, n: usize| k.min(n - k) as f64 / n as f64;
        let mut f: Vec<Complex64> = (0..h * w)
            .map(|i| {
                let r = fold(i / w, h).hypot(fold(i % w, w));
                if r == 0.0 {
                    Complex64::default()
                } else {
                    Complex64::from_polar(1.0 / r, 2.0 * PI * rng.uniform_f64())
                }
            })
            .collect();
        let mut planner = rustfft::FftPlanner::<f64>::new();
        let (fr, fc) = (planner.plan_fft_inverse(w), planner.plan_fft_inverse(h));
        f.chunks_mut(w).for_each(|r| fr.process(r));
        let mut col = vec![Complex64::default(); h];
        for x in 0..w {
            (0..h).for_each(|y| col[y] = f[y * w + x]);
            fc.process(&mut col);
            (0..h).for_each(|y| f[y * w + x] = col[y]);
        }
        v.iter_mut().zip(&f).for_each(|(o, c)| *o = c.re);
    }
    // Into [0.1, 0.9]: no clamping, which would add edges.
    let (lo, hi) = v.iter().fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    v.iter_mut().for_each(|x| *x = 0.1 + 0.8 * (*x - lo) / (hi - lo).max(1e-30));
    v
}

/// n natural-like images of c planes (alternately smooth and 1/f, starting with smooth), as u8 NHWC (rounded:
/// the rounding adds a white floor at about 2e-3 / sqrt(hw) of DC) with its pixels, and as f32 NCHW (not
/// rounded: the smooth images' spectra fall to the f32 rounding of the pixels).
fn natural_images(rng: &mut Rng, n: usize, c: usize, h: usize, w: usize) -> (Tensor, Vec<u8>, Tensor) {
    let planes: Vec<Vec<f64>> = (0..n * c).map(|p| natural_plane(rng, h, w, (p / c).is_multiple_of(2))).collect();
    let mut px = vec![0u8; n * h * w * c];
    for i in 0..n {
        for ch in 0..c {
            for (p, &v) in planes[i * c + ch].iter().enumerate() {
                px[(i * h * w + p) * c + ch] = (v * 255.0).round() as u8;
            }
        }
    }
    let nchw: Vec<f32> = planes.iter().flatten().map(|&v| v as f32).collect();
    (
        Tensor::from_vec(&[n, h, w, c], Layout::Nhwc, px.clone()).unwrap(),
        px,
        Tensor::from_vec(&[n, c, h, w], Layout::Nchw, nchw).unwrap(),
    )
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
    for (h, w, natural) in [(16, 20, false), (17, 19, false), (16, 20, true), (17, 19, true)] {
        let (images, px) = if natural {
            let (images, px, _) = natural_images(&mut rng, 2, 3, h, w);
            (images, px)
        } else {
            random_images(&mut rng, 2, 3, h, w)
        };
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
                        assert_close(&format!("{h}x{w} natural={natural} {cfg:?}"), &g, &want, 2e-6, 2e-6);
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

/// Welford + Chan over three batches on `be`: ([the log features of each batch, the finished statistics],
/// [the running mean, m2]).
fn gather_welford(be: &dyn Backend) -> (Vec<Vec<f32>>, Vec<Vec<f64>>) {
    let mut rng = Rng::new(6);
    let (c, h, w) = (3, 20, 16);
    let cfg = FftConfig::default();
    let mut stats = FftStats::new(be, cfg, c, h, w).unwrap();
    let mut out = Vec::new();
    for n in [3, 1, 5] {
        let (images, _) = random_images(&mut rng, n, c, h, w);
        let images = be.upload(&images).unwrap();
        be.fft_stats_update(&images, &mut stats).unwrap();
        let f = be.download(&be.fft_features(&images, &cfg, None).unwrap()).unwrap();
        out.push(f.host::<f32>().unwrap().to_vec());
    }
    assert_eq!(stats.count, 9);
    let fin = stats.finish(be).unwrap();
    assert_eq!(fin.shape(), &[2, c, h, w / 2 + 1]);
    out.push(fin.host::<f32>().unwrap().to_vec());
    let down = |t: &Tensor| be.download(t).unwrap().host::<f64>().unwrap().to_vec();
    (out, vec![down(&stats.mean), down(&stats.m2)])
}

/// The statistics gathered against a two-pass f64 mean and variance of every log value.
fn check_welford((f32s, f64s): (Vec<Vec<f32>>, Vec<Vec<f64>>)) {
    let (c, h, w) = (3, 20, 16);
    let bins = c * h * (w / 2 + 1);
    let per_image = 2 * bins; // magnitude and phase planes
    let all: Vec<&[f32]> = f32s[..3].iter().flat_map(|f| f.chunks(per_image)).collect();
    assert_eq!(all.len(), 9);
    let (mean, m2) = (&f64s[0], &f64s[1]);
    for b in 0..bins {
        let xs: Vec<f64> = all.iter().map(|img| img[b] as f64).collect();
        let m = xs.iter().sum::<f64>() / 9.0;
        let var = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / 9.0;
        assert!((mean[b] - m).abs() <= 1e-12 * m.abs().max(1.0), "bin {b}: mean {} vs {m}", mean[b]);
        assert!((m2[b] / 9.0 - var).abs() <= 1e-10 * var.max(1e-12), "bin {b}: var {} vs {var}", m2[b] / 9.0);
    }
    let f = &f32s[3];
    assert!((f[bins] as f64 - (m2[0] / 9.0).sqrt().max(1e-3)).abs() < 1e-6);
}

#[test]
fn welford_statistics_match_two_pass_f64() {
    check_welford(gather_welford(&cpu()));
}

#[test]
#[ignore = "needs a CUDA device: a GPU, or the emulator (scripts/emu.sh)"]
fn gpu_welford_statistics_match_two_pass_f64() {
    let gpu = gpu();
    check_welford(race_checked("welford", || gather_welford(&gpu)));
}

/// How far an f32 FFT's bin may be from the exact one, relative to the largest |F| of its plane (DC, for
/// images). An FFT's rounding errors scale with the largest bin, not with the bin itself: each of its log2(hw)
/// passes adds about one f32 rounding (6e-8) of it, 1.1e-6 at 512 x 512 at worst, and Bluestein's sizes go
/// through three transforms of twice the length. 1e-5 covers that with margin; the emulated device stays under
/// 2.3e-7 on every size and input here. A tolerance relative to each bin cannot work: the bins of a smooth image
/// 1e-5 below DC and under carry errors of 1e-3 of themselves and more.
const FFT_REL: f64 = 1e-5;

/// Absolute error of evaluating one log or phase value in f32 from a given |F|: a few ulps of fast-math logf,
/// atan2f, sqrtf and divisions, on values under 8 in size (ulp 4.8e-7 at most). The emulated device stays
/// under 5.2e-7.
const FEATURE_ROUND: f64 = 1e-5;

/// The error allowed in the magnitude feature of a bin of exact magnitude `mag` when the bin itself may be off
/// by `delta` (FFT_REL of the plane's largest): raw magnitudes `delta`; log magnitudes
/// (ln(|F| / sqrt(hw) + eps) - c) / s as far as the log moves over |F| +- delta, that is about
/// delta / (|F| + eps sqrt(hw)) / s, capped by eps for bins lost in the error; plus FEATURE_ROUND.
fn magnitude_tol(magnitude: Magnitude, mag: f64, delta: f64, hw: usize) -> f64 {
    if magnitude == Magnitude::Raw {
        return delta;
    }
    let (m, d, eps) = (mag / (hw as f64).sqrt(), delta / (hw as f64).sqrt(), LOG_EPS as f64);
    FEATURE_ROUND + ((m + d + eps) / ((m - d).max(0.0) + eps)).ln() / LOG_SCALE as f64
}

/// The error allowed in a phase feature of a bin of exact magnitude `mag > delta`: F may turn by asin(delta /
/// |F|), which moves angle / pi by that over pi and cos, sin by at most that; plus FEATURE_ROUND.
fn phase_tol(phase: Phase, mag: f64, delta: f64) -> f64 {
    let turn = (delta / mag).min(1.0).asin();
    FEATURE_ROUND + if phase == Phase::Angle { turn / PI } else { turn }
}

/// The magnitude planes (the first `s` of each image's `planes`) of features from a raw-magnitude configuration.
fn magnitude_planes(features: &[f32], planes: usize, s: usize, plane_len: usize) -> Vec<f32> {
    features.chunks(planes * plane_len).flat_map(|img| img[..s * plane_len].to_vec()).collect()
}

/// Compares GPU features against a reference (the CPU's, or cuFFT's with `fft_rel` doubled for two f32 FFTs):
/// each bin within what an error of `fft_rel` of its plane's largest |F| allows (magnitude_tol, phase_tol),
/// phases of bins whose |F| is within that error skipped. `mags` holds the reference's raw magnitudes
/// ([n, S, out_h, out_w]); log-std values are compared before their standardization (times the bin's std,
/// `stats` being [2, S, out_h, out_w]; the standardization's own rounding is far under FEATURE_ROUND): with
/// statistics from one image every std is floored at 1e-3, which turns the log's f32 rounding (1e-7) into
/// errors of 1e-4, and those of small bins into more.
#[allow(clippy::too_many_arguments)]
fn compare_features(
    tag: &str,
    cfg: &FftConfig,
    (h, w): (usize, usize),
    shape: [usize; 4],
    got: &[f32],
    want: &[f32],
    mags: &[f32],
    stats: Option<&[f32]>,
    fft_rel: f64,
) {
    let [n, planes, oh, ow] = shape;
    let s = if cfg.phase == Phase::Angle { planes / 2 } else { planes / 3 };
    let pl = oh * ow;
    assert_eq!((got.len(), want.len(), mags.len()), (n * planes * pl, n * planes * pl, n * s * pl), "{tag}");
    for i in 0..n {
        let (g, wt) = (&got[i * planes * pl..][..planes * pl], &want[i * planes * pl..][..planes * pl]);
        let m = &mags[i * s * pl..][..s * pl];
        // The error each magnitude plane's bins may carry.
        let delta: Vec<f64> = m.chunks(pl).map(|p| fft_rel * p.iter().fold(0f32, |a, &b| a.max(b)) as f64).collect();
        for b in 0..s * pl {
            let (gv, wv, mag) = (g[b] as f64, wt[b] as f64, m[b] as f64);
            let std = stats.map_or(1.0, |st| st[s * pl + b] as f64);
            let tol = magnitude_tol(cfg.magnitude, mag, delta[b / pl], h * w);
            let err = (gv - wv).abs() * std;
            assert!(
                err <= tol,
                "{tag} image {i} magnitude bin {b}: {gv} vs {wv} (error {err:e} > {tol:e}; |F| = {mag:e}, plane's \
                 largest {:e})",
                delta[b / pl] / fft_rel
            );
        }
        for b in s * pl..planes * pl {
            let (mag, delta) = (m[b % (s * pl)] as f64, delta[(b % (s * pl)) / pl]);
            let (gv, wv) = (g[b] as f64, wt[b] as f64);
            if mag <= delta {
                // Any phase will do, but an element the kernel forgot (NaN) still fails.
                assert!(!gv.is_nan() || wv.is_nan(), "{tag} image {i} phase bin {b}: NaN");
                continue;
            }
            let mut d = (gv - wv).abs();
            if cfg.phase == Phase::Angle {
                d = d.min(2.0 - d); // angle / pi wraps at +-1
            }
            let tol = phase_tol(cfg.phase, mag, delta);
            assert!(
                d <= tol,
                "{tag} image {i} phase bin {b}: {gv} vs {wv} (error {d:e} > {tol:e}; |F| = {mag:e}, plane's \
                 largest {:e})",
                delta / fft_rel
            );
        }
    }
}

/// The image sets of the GPU tests at one size, each kind of input with each element type and batch size once:
/// one image of noise (u8) and one natural-like (f32, unrounded), then three natural-like images (rounded to
/// u8) and three of noise (as f32).
fn test_images(rng: &mut Rng, h: usize, w: usize) -> Vec<(String, Tensor)> {
    let noise_f32 = |rng: &mut Rng, n| {
        let (u8_images, _) = random_images(rng, n, 3, h, w);
        cpu().preprocess(&u8_images, &dfgpu::backend::ChannelNorm::imagenet(), true).unwrap().raw.unwrap()
    };
    let sets = [
        ("noise", random_images(rng, 1, 3, h, w).0),
        ("natural", natural_images(rng, 1, 3, h, w).2),
        ("natural", natural_images(rng, 3, 3, h, w).0),
        ("noise", noise_f32(rng, 3)),
    ];
    sets.into_iter().map(|(kind, t)| (format!("{h}x{w} n={} {kind} {:?}", t.shape()[0], t.dtype()), t)).collect()
}

/// The configurations the GPU is checked in, grouped by what their statistics depend on (layout, grayscale).
fn test_configs() -> Vec<Vec<FftConfig>> {
    let mut groups = Vec::new();
    for layout in [SpectrumLayout::Half, SpectrumLayout::Shifted] {
        for (grayscale, phases) in [(false, &[Phase::Angle, Phase::CosSin][..]), (true, &[Phase::Angle][..])] {
            let mut g = Vec::new();
            for magnitude in [Magnitude::Raw, Magnitude::Log, Magnitude::LogStd] {
                for &phase in phases {
                    g.push(FftConfig { layout, magnitude, phase, grayscale });
                }
            }
            groups.push(g);
        }
    }
    groups
}

/// GPU against CPU on `sizes`: every image set, configuration and magnitude mode, log-std with the statistics
/// the GPU gathered from the images themselves (so one image gives stds at the floor).
fn check_gpu_against_cpu(sizes: &[(usize, usize)], seed: u64) {
    let (gpu, cpu) = (gpu(), cpu());
    let mut rng = Rng::new(seed);
    let groups = test_configs();
    for &(h, w) in sizes {
        for (tag, images) in test_images(&mut rng, h, w) {
            // Per group: the statistics the GPU gathered (log-std uses them on both sides), then the features of
            // each configuration.
            let got = race_checked(&tag, || {
                let dev = gpu.upload(&images).unwrap();
                let mut out = Vec::new();
                for group in &groups {
                    let mut stats = FftStats::new(&gpu, group[0], 3, h, w).unwrap();
                    gpu.fft_stats_update(&dev, &mut stats).unwrap();
                    let st = stats.finish(&gpu).unwrap();
                    let st_dev = gpu.upload(&st).unwrap();
                    out.push(st.host::<f32>().unwrap().to_vec());
                    for cfg in group {
                        let stats = (cfg.magnitude == Magnitude::LogStd).then_some(&st_dev);
                        let f = gpu.download(&gpu.fft_features(&dev, cfg, stats).unwrap()).unwrap();
                        out.push(f.host::<f32>().unwrap().to_vec());
                    }
                }
                out
            });
            let mut got = got.into_iter();
            for group in &groups {
                let st_host = got.next().unwrap();
                let d = dfgpu::backend::fft::check(&images, &group[0], None).unwrap();
                let st = Tensor::from_vec(&[2, d.s, d.out_h, d.out_w], Layout::Plain, st_host.clone()).unwrap();
                let mut mags = Vec::new();
                for cfg in group {
                    let log_std = cfg.magnitude == Magnitude::LogStd;
                    let want = cpu.fft_features(&images, cfg, log_std.then_some(&st)).unwrap();
                    let shape: [usize; 4] = want.shape().try_into().unwrap();
                    if mags.is_empty() {
                        assert_eq!(cfg.magnitude, Magnitude::Raw, "each group starts with raw magnitudes");
                        mags = magnitude_planes(want.host().unwrap(), shape[1], d.s, d.plane_len());
                    }
                    compare_features(
                        &format!("{tag} {cfg:?}"),
                        cfg,
                        (h, w),
                        shape,
                        &got.next().unwrap(),
                        want.host().unwrap(),
                        &mags,
                        log_std.then_some(&st_host[..]),
                        FFT_REL,
                    );
                }
            }
        }
    }
}

// Two tests, so that the emulator, which runs a kernel on one core, can use two: the fast path's square sizes,
// and the sizes that take Bluestein's algorithm or are not square.
#[test]
#[ignore = "needs a CUDA device: a GPU, or the emulator (scripts/emu.sh)"]
fn gpu_matches_cpu_on_fast_path_sizes_in_every_mode() {
    // On the emulated device, the sizes that reach every radix and the extremes of lines per block: 16 (radix 4,
    // 16 lines), 224 (2 and 7, 9 lines), 384 (3, 5 lines), 512 (five passes, 4 lines). 256 (radix 4 only, 8
    // lines) and 448 (4 and 7, 4 lines) add no path there and took over a third of the test's 800 s under the
    // sanitizers, the longest of CI. A GPU takes them all.
    let emulated = [(16, 16), (224, 224), (384, 384), (512, 512)];
    let sizes = if dfgpu::backend::cuda::emu::is_emulated() { &emulated[..] } else { &SIZES[..6] };
    check_gpu_against_cpu(sizes, 7);
}

#[test]
#[ignore = "needs a CUDA device: a GPU, or the emulator (scripts/emu.sh)"]
fn gpu_matches_cpu_on_bluestein_and_non_square_sizes_in_every_mode() {
    // On the emulated device 380 (Bluestein through a 768-point transform of radices 4, 2 and 3) is left out:
    // 299 takes Bluestein through 600 points (radix 5 too), 17 x 31 in both directions, 1021 x 16 a long line.
    let emulated = [(299, 299), (224, 160), (17, 31), (1021, 16)];
    let sizes = if dfgpu::backend::cuda::emu::is_emulated() { &emulated[..] } else { &SIZES[6..] };
    check_gpu_against_cpu(sizes, 9);
}

#[test]
#[ignore = "needs a CUDA device: a GPU, or the emulator (scripts/emu.sh)"]
fn gpu_fused_kernels_match_cufft() {
    use dfgpu::backend::cuda::fft::CufftPipeline;
    let gpu = gpu();
    let mut rng = Rng::new(8);
    // On the emulated device cuFFT is the emulator's own transform, and the gpu_matches_cpu tests already hold
    // the fused kernels to the f64 reference on every size: there the cross-check takes one size of each kind
    // (the smallest, the model's, Bluestein's in both directions, a long Bluestein line), a GPU takes them all.
    // The whole list under the sanitizers was a third of CI's time.
    let emulated: &[(usize, usize)] = &[(16, 16), (224, 224), (17, 31), (1021, 16)];
    let sizes = if dfgpu::backend::cuda::emu::is_emulated() { emulated } else { &SIZES[..] };
    for &(h, w) in sizes {
        let (u8_images, _) = random_images(&mut rng, 2, 3, h, w);
        let noise = cpu().preprocess(&u8_images, &dfgpu::backend::ChannelNorm::imagenet(), true).unwrap().raw.unwrap();
        let (_, _, natural) = natural_images(&mut rng, 2, 3, h, w);
        for (kind, images) in [("noise", noise), ("natural", natural)] {
            let d = dfgpu::backend::fft::check(&images, &FftConfig::default(), None).unwrap();
            let mut cfgs = Vec::new();
            for layout in [SpectrumLayout::Half, SpectrumLayout::Shifted] {
                for magnitude in [Magnitude::Raw, Magnitude::Log] {
                    for phase in [Phase::Angle, Phase::CosSin] {
                        cfgs.push(FftConfig { layout, magnitude, phase, grayscale: false });
                    }
                }
            }
            // Per configuration: cuFFT's features, the fused kernels', cuFFT's raw magnitudes.
            let out = race_checked(&format!("{h}x{w} {kind} vs cuFFT"), || {
                let dev = gpu.upload(&images).unwrap();
                let mut pipe = CufftPipeline::new(&gpu, d).unwrap();
                let mut out = Vec::new();
                for cfg in &cfgs {
                    let raw_cfg = FftConfig { magnitude: Magnitude::Raw, ..*cfg };
                    for t in [
                        pipe.run(&gpu, &dev, cfg, None).unwrap(),
                        gpu.fft_features(&dev, cfg, None).unwrap(),
                        pipe.run(&gpu, &dev, &raw_cfg, None).unwrap(),
                    ] {
                        out.push(gpu.download(&t).unwrap().host::<f32>().unwrap().to_vec());
                    }
                }
                out
            });
            for (cfg, o) in cfgs.iter().zip(out.chunks(3)) {
                let (oh, ow) = if cfg.layout == SpectrumLayout::Half { (h, w / 2 + 1) } else { (h, w) };
                let planes = if cfg.phase == Phase::Angle { 6 } else { 9 };
                let mags = magnitude_planes(&o[2], planes, 3, oh * ow);
                let tag = format!("{h}x{w} {kind} {cfg:?} vs cuFFT");
                // Both sides are f32 FFTs: twice the error of one.
                compare_features(&tag, cfg, (h, w), [2, planes, oh, ow], &o[1], &o[0], &mags, None, 2.0 * FFT_REL);
            }
        }
    }
}

/// The fast CPU path (rustfft, f64 like the reference) against the reference on every mode and layout, on noise
/// and natural-like images, at the model's size, a non-square and an odd size (17 x 31: Bluestein in the
/// reference). Both sides transform in f64; the fast path then rounds each bin to f32 and takes its magnitude,
/// log and angle in f32 (the reference in f64), so a magnitude is off by a couple of f32 roundings of itself: 2
/// ulps of the plane's largest |F| (2.4e-7) as `fft_rel` covers it, and the logs and angles are a few ulps off,
/// inside FEATURE_ROUND.
#[test]
fn fast_features_match_the_reference() {
    let (fast, reference) = (fast_cpu(), cpu());
    let mut rng = Rng::new(9);
    for (h, w) in [(64, 64), (16, 16), (17, 31), (48, 80)] {
        for (tag, images) in test_images(&mut rng, h, w) {
            for group in test_configs() {
                let mut stats = FftStats::new(&reference, group[0], 3, h, w).unwrap();
                reference.fft_stats_update(&images, &mut stats).unwrap();
                let st = stats.finish(&reference).unwrap();
                let mut mags = Vec::new();
                for cfg in &group {
                    let st = (cfg.magnitude == Magnitude::LogStd).then_some(&st);
                    let want = reference.fft_features(&images, cfg, st).unwrap();
                    let got = fast.fft_features(&images, cfg, st).unwrap();
                    let shape: [usize; 4] = want.shape().try_into().unwrap();
                    assert_eq!(got.shape(), shape, "{tag} {cfg:?}");
                    if mags.is_empty() {
                        mags = magnitude_planes(want.host().unwrap(), shape[1], shape[1] / 2, shape[2] * shape[3]);
                    }
                    let st = st.map(|t| t.host::<f32>().unwrap());
                    let (got, want) = (got.host().unwrap(), want.host().unwrap());
                    compare_features(&format!("{tag} {cfg:?} fast"), cfg, (h, w), shape, got, want, &mags, st, 2.4e-7);
                }
            }
        }
    }
}

/// Features of `n` random `size` x `size` RGB images as `cfg` lays them out, with values in [-4, 4]: the profile
/// only reads the planes.
fn random_features(rng: &mut Rng, cfg: &FftConfig, n: usize, size: usize) -> Tensor {
    let d = FftDims::new(cfg, n, 3, size, size);
    let v: Vec<f32> = (0..n * d.planes * d.plane_len()).map(|_| 8.0 * rng.uniform() - 4.0).collect();
    Tensor::from_vec(&[n, d.planes, d.out_h, d.out_w], Layout::Nchw, v).unwrap()
}

/// Standardizing statistics for a profile of `k` values: means in [-4, 4], standard deviations in [0.1, 2].
fn random_profile_stats(rng: &mut Rng, k: usize) -> Tensor {
    let mut v: Vec<f32> = (0..k).map(|_| 8.0 * rng.uniform() - 4.0).collect();
    v.extend((0..k).map(|_| 0.1 + 1.9 * rng.uniform()));
    Tensor::from_vec(&[2 * k], Layout::Plain, v).unwrap()
}

fn whole(t: &Tensor) -> Slice<'_> {
    Slice { buf: t, range: 0..t.numel() }
}

/// The configurations the profile is checked on: both layouts, per channel and luma.
fn profile_configs() -> Vec<FftConfig> {
    let layouts = [SpectrumLayout::Half, SpectrumLayout::Shifted];
    layouts
        .into_iter()
        .flat_map(|layout| [false, true].map(|grayscale| FftConfig { layout, grayscale, ..FftConfig::default() }))
        .collect()
}

#[test]
fn profile_is_the_mean_of_each_ring() {
    let mut rng = Rng::new(21);
    for size in [16, 17, 24, 31, 64] {
        for cfg in profile_configs() {
            let feats = random_features(&mut rng, &cfg, 2, size);
            let got = cpu().fft_profile(&feats, &cfg, None).unwrap();
            let (s, r) = (if cfg.grayscale { 1 } else { 3 }, rings(size));
            assert_eq!(got.shape(), [2, s * r], "{size} {cfg:?}");
            let stats = random_profile_stats(&mut rng, s * r);
            let standardized = cpu().fft_profile(&feats, &cfg, Some(&whole(&stats))).unwrap();
            let [_, planes, oh, ow] = [feats.shape()[0], feats.shape()[1], feats.shape()[2], feats.shape()[3]];
            let v = feats.host::<f32>().unwrap();
            let (got, standardized) = (got.host::<f32>().unwrap(), standardized.host::<f32>().unwrap());
            let st = stats.host::<f32>().unwrap();
            for img in 0..2 {
                for p in 0..s {
                    // The definition in f64: the signed frequency of each bin, its radius rounded.
                    let (mut sum, mut count) = (vec![0f64; r], vec![0usize; r]);
                    for ky in 0..oh {
                        for kx in 0..ow {
                            let (fy, fx) = match cfg.layout {
                                SpectrumLayout::Half => {
                                    (if 2 * ky < size { ky as f64 } else { ky as f64 - size as f64 }, kx as f64)
                                }
                                SpectrumLayout::Shifted => {
                                    ((ky as f64) - (size / 2) as f64, (kx as f64) - (size / 2) as f64)
                                }
                            };
                            let ring = fy.hypot(fx).round() as usize;
                            sum[ring] += v[((img * planes + p) * oh + ky) * ow + kx] as f64;
                            count[ring] += 1;
                        }
                    }
                    assert!(count.iter().all(|&c| c > 0), "{size} {cfg:?}: an empty ring in {count:?}");
                    for k in 0..r {
                        let (want, j) = (sum[k] / count[k] as f64, p * r + k);
                        let g = got[img * s * r + j] as f64;
                        approx::assert_abs_diff_eq!(g, want, epsilon = 1e-6 * (1.0 + want.abs()));
                        let want = (want - st[j] as f64) / st[s * r + j] as f64;
                        let g = standardized[img * s * r + j] as f64;
                        approx::assert_abs_diff_eq!(g, want, epsilon = 1e-5 * (1.0 + want.abs()));
                    }
                }
            }
        }
    }
}

#[test]
fn the_ring_order_lists_every_bin_once_ring_by_ring() {
    let mut rng = Rng::new(24);
    for size in [16, 17] {
        for cfg in profile_configs() {
            let feats = random_features(&mut rng, &cfg, 1, size);
            let d = dfgpu::backend::fft::check_profile(&feats, &cfg, None).unwrap();
            let (order, starts) = d.ring_order();
            let ring = d.ring_per_bin();
            assert_eq!((starts[0], starts[d.rings] as usize, starts.len()), (0, ring.len(), d.rings + 1));
            let mut seen = order.clone();
            seen.sort_unstable();
            assert!(seen.iter().enumerate().all(|(i, &b)| b as usize == i), "every bin once");
            for r in 0..d.rings {
                let bins = &order[starts[r] as usize..starts[r + 1] as usize];
                assert!(!bins.is_empty() && bins.iter().all(|&b| ring[b as usize] == r), "ring {r}");
                assert!(bins.windows(2).all(|w| w[0] < w[1]), "ring {r} in row-major order");
            }
        }
    }
}

#[test]
fn profile_refuses_features_of_another_configuration() {
    let mut rng = Rng::new(22);
    let half = FftConfig::default();
    let feats = random_features(&mut rng, &half, 1, 32);
    let shifted = FftConfig { layout: SpectrumLayout::Shifted, ..half };
    let e = cpu().fft_profile(&feats, &shifted, None).unwrap_err().to_string();
    assert!(e.contains("fft profile") && e.contains("[1, 6, 32, 17]"), "{e}");
    let flat = Tensor::from_vec(&[2, 8], Layout::Plain, vec![0f32; 16]).unwrap();
    assert!(cpu().fft_profile(&flat, &half, None).is_err());
    // Statistics for another size: one ring short.
    let stats = random_profile_stats(&mut rng, 3 * (rings(32) - 1));
    let e = cpu().fft_profile(&feats, &half, Some(&whole(&stats))).unwrap_err().to_string();
    assert!(e.contains("statistics") && e.contains(&format!("{} ", 3 * rings(32))), "{e}");
}

#[test]
#[ignore = "needs a CUDA device: a GPU, or the emulator (scripts/emu.sh)"]
fn gpu_profile_matches_cpu_bit_for_bit() {
    let gpu = gpu();
    let mut rng = Rng::new(23);
    for size in [16, 17, 32] {
        for cfg in profile_configs() {
            let feats = random_features(&mut rng, &cfg, 3, size);
            let s = if cfg.grayscale { 1 } else { 3 };
            let stats = random_profile_stats(&mut rng, s * rings(size));
            for stats in [None, Some(&stats)] {
                let want = cpu().fft_profile(&feats, &cfg, stats.map(whole).as_ref()).unwrap();
                let what = format!("profile {size} {cfg:?}, standardized: {}", stats.is_some());
                let got = race_checked(&what, || {
                    let on_gpu = stats.map(|t| gpu.upload(t).unwrap());
                    let st = on_gpu.as_ref().map(whole);
                    let t = gpu.fft_profile(&gpu.upload(&feats).unwrap(), &cfg, st.as_ref()).unwrap();
                    assert_eq!(t.shape(), want.shape());
                    gpu.download(&t).unwrap().host::<f32>().unwrap().to_vec()
                });
                // Each ring summed in the same order in f32, then one division (and a subtraction and a division
                // with statistics): the same bits.
                assert_bitwise(&what, &got, want.host().unwrap());
            }
        }
    }
}
