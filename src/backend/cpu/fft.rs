//! Reference for kernels/fft.cu: the 2-D DFT of each image plane in f64 (mixed-radix Stockham for sizes whose
//! prime factors are 2, 3, 5 and 7; Bluestein's chirp-z for the rest), the magnitude and phase planes of every
//! mode and layout (backend/fft.rs), the per-bin Welford statistics, and the ring profile. Rayon over the images.

use crate::backend::cpu::real::Real;
use crate::backend::cpu::CpuBackend;
use crate::backend::fft::{
    FftConfig, FftDims, Magnitude, Phase, ProfileDims, SpectrumLayout, LOG_CENTER, LOG_EPS, LOG_SCALE,
};
use crate::error::Result;
use crate::tensor::{Element, Layout, Slice, Tensor};
use rayon::prelude::*;
use std::f64::consts::PI;
use std::ops::{Add, Mul, Sub};

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct C64 {
    pub re: f64,
    pub im: f64,
}

impl C64 {
    pub fn new(re: f64, im: f64) -> Self {
        C64 { re, im }
    }
    /// e^{i theta}
    pub fn cis(theta: f64) -> Self {
        C64 { re: theta.cos(), im: theta.sin() }
    }
    pub fn conj(self) -> Self {
        C64 { re: self.re, im: -self.im }
    }
    pub fn abs(self) -> f64 {
        self.re.hypot(self.im)
    }
    pub fn scale(self, s: f64) -> Self {
        C64 { re: self.re * s, im: self.im * s }
    }
}

impl Add for C64 {
    type Output = C64;
    fn add(self, o: C64) -> C64 {
        C64 { re: self.re + o.re, im: self.im + o.im }
    }
}
impl Sub for C64 {
    type Output = C64;
    fn sub(self, o: C64) -> C64 {
        C64 { re: self.re - o.re, im: self.im - o.im }
    }
}
impl Mul for C64 {
    type Output = C64;
    fn mul(self, o: C64) -> C64 {
        C64 { re: self.re * o.re - self.im * o.im, im: self.re * o.im + self.im * o.re }
    }
}

/// The prime factors of n if all are 2, 3, 5 or 7 (the fast path), else None.
pub fn smooth_factors(mut n: usize) -> Option<Vec<usize>> {
    let mut f = Vec::new();
    for p in [2, 3, 5, 7] {
        while n.is_multiple_of(p) {
            f.push(p);
            n /= p;
        }
    }
    (n == 1).then_some(f)
}

/// The smallest 2^a 3^b 5^c 7^d >= n: the size of Bluestein's convolution.
pub fn next_smooth(n: usize) -> usize {
    (n..).find(|&m| smooth_factors(m).is_some()).unwrap()
}

/// Bluestein's tables for size n: the chirp e^{-i pi j^2 / n} (n values) and the DFT of the convolution kernel
/// (m = next_smooth(2n - 1) values). The GPU plan uploads these same tables.
pub fn bluestein_tables(n: usize) -> (Vec<C64>, Vec<C64>) {
    let m = next_smooth(2 * n - 1);
    // j^2 mod 2n keeps the angle small, so that it stays exact for large j.
    let chirp: Vec<C64> =
        (0..n).map(|j| C64::cis(-PI * ((j as u64 * j as u64) % (2 * n as u64)) as f64 / n as f64)).collect();
    let mut kernel = vec![C64::default(); m];
    kernel[0] = chirp[0].conj();
    for j in 1..n {
        kernel[j] = chirp[j].conj();
        kernel[m - j] = chirp[j].conj();
    }
    Fft1d::new(m).forward(&mut kernel);
    (chirp, kernel)
}

enum Plan {
    /// Stockham passes, one per prime factor; twiddles e^{-2 pi i j / n}.
    Radix { factors: Vec<usize>, twiddles: Vec<C64> },
    /// x -> chirp * IFFT_m(FFT_m(chirp * x) * kernel_fft), with chirp_j = e^{-i pi j^2 / n}.
    Bluestein { chirp: Vec<C64>, kernel_fft: Vec<C64>, inner: Box<Fft1d> },
}

/// A 1-D forward DFT of one size, planned once: `X[k] = sum_j x[j] e^{-2 pi i j k / n}`.
pub struct Fft1d {
    n: usize,
    plan: Plan,
}

impl Fft1d {
    pub fn new(n: usize) -> Self {
        assert!(n >= 1, "FFT of size 0");
        let plan = match smooth_factors(n) {
            Some(factors) => {
                Plan::Radix { factors, twiddles: (0..n).map(|j| C64::cis(-2.0 * PI * j as f64 / n as f64)).collect() }
            }
            None => {
                let (chirp, kernel_fft) = bluestein_tables(n);
                let inner = Box::new(Fft1d::new(kernel_fft.len()));
                Plan::Bluestein { chirp, kernel_fft, inner }
            }
        };
        Fft1d { n, plan }
    }

    pub fn len(&self) -> usize {
        self.n
    }
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Whether this size takes the fast (2, 3, 5, 7) path.
    pub fn is_smooth(&self) -> bool {
        matches!(self.plan, Plan::Radix { .. })
    }

    /// In place: x (length n) becomes its DFT.
    pub fn forward(&self, x: &mut [C64]) {
        assert_eq!(x.len(), self.n, "FFT of size {} given {} values", self.n, x.len());
        match &self.plan {
            Plan::Radix { factors, twiddles } => stockham(x, factors, twiddles),
            Plan::Bluestein { chirp, kernel_fft, inner } => {
                let m = kernel_fft.len();
                let mut a = vec![C64::default(); m];
                for j in 0..self.n {
                    a[j] = x[j] * chirp[j];
                }
                inner.forward(&mut a);
                // Inverse through the forward transform: IFFT(z) = conj(FFT(conj z)) / m.
                for (v, k) in a.iter_mut().zip(kernel_fft) {
                    *v = (*v * *k).conj();
                }
                inner.forward(&mut a);
                for k in 0..self.n {
                    x[k] = a[k].conj().scale(1.0 / m as f64) * chirp[k];
                }
            }
        }
    }
}

/// Stockham autosort (Govindaraju et al. 2008): one pass per radix r, reading x[j + q n/r] and writing the
/// r-point DFT to y[(j / ns) ns r + j mod ns + p ns]; the output comes out in natural order.
fn stockham(x: &mut [C64], factors: &[usize], tw: &[C64]) {
    let n = x.len();
    let mut y = vec![C64::default(); n];
    let mut v = [C64::default(); 7];
    let mut ns = 1;
    for &r in factors {
        let stride = n / r;
        let tw_step = n / (ns * r); // e^{-2 pi i k / (ns r)} = tw[k * tw_step]
        for j in 0..stride {
            let k = j % ns;
            for (q, vq) in v[..r].iter_mut().enumerate() {
                *vq = x[j + q * stride] * tw[(q * k * tw_step) % n];
            }
            let base = (j / ns) * ns * r + k;
            for p in 0..r {
                let mut acc = C64::default();
                for (q, vq) in v[..r].iter().enumerate() {
                    acc = acc + *vq * tw[(p * q * stride) % n];
                }
                y[base + p * ns] = acc;
            }
        }
        x.copy_from_slice(&y);
        ns *= r;
    }
}

/// The full H x W DFT of a real plane (row transforms, then column transforms).
pub fn dft2(plane: &[f64], h: usize, w: usize, rows: &Fft1d, cols: &Fft1d) -> Vec<C64> {
    let mut f: Vec<C64> = plane.iter().map(|&v| C64::new(v, 0.0)).collect();
    f.chunks_mut(w).for_each(|row| rows.forward(row));
    let mut col = vec![C64::default(); h];
    for kx in 0..w {
        for y in 0..h {
            col[y] = f[y * w + kx];
        }
        cols.forward(&mut col);
        for y in 0..h {
            f[y * w + kx] = col[y];
        }
    }
    f
}

/// The images the FFT features take: f32 NCHW in [0, 1], or u8 NHWC (divided by 255).
pub enum FftImages<'a> {
    F32Nchw(&'a [f32]),
    U8Nhwc(&'a [u8]),
}

impl FftImages<'_> {
    /// Spectrum `s` of image `i` as an H x W plane in f64: a channel, or the luma with grayscale.
    pub(super) fn plane(&self, d: &FftDims, grayscale: bool, i: usize, s: usize) -> Vec<f64> {
        let hw = d.h * d.w;
        let channel = |c: usize| -> Vec<f64> {
            match self {
                FftImages::F32Nchw(v) => v[(i * d.c + c) * hw..][..hw].iter().map(|&x| x as f64).collect(),
                FftImages::U8Nhwc(v) => {
                    v[i * hw * d.c..][..hw * d.c].chunks_exact(d.c).map(|p| p[c] as f64 / 255.0).collect()
                }
            }
        };
        if !grayscale {
            return channel(s);
        }
        let (r, g, b) = (channel(0), channel(1), channel(2));
        (0..hw).map(|p| 0.299 * r[p] + 0.587 * g[p] + 0.114 * b[p]).collect()
    }
}

/// The `log` value of a magnitude: (ln(|F| / sqrt(HW) + eps) - LOG_CENTER) / LOG_SCALE.
pub fn log_magnitude(mag: f64, h: usize, w: usize) -> f64 {
    ((mag / ((h * w) as f64).sqrt() + LOG_EPS as f64).ln() - LOG_CENTER as f64) / LOG_SCALE as f64
}

/// Writes the feature planes of every image into `out` (N x planes x out_h x out_w). `stats` (2 x S x out_h x
/// out_w: means, then stds) is needed by log-std.
pub fn features(px: &FftImages, d: &FftDims, cfg: &FftConfig, stats: Option<&[f32]>, out: &mut [f32]) {
    let (rows, cols) = (Fft1d::new(d.w), Fft1d::new(d.h));
    let plane = d.plane_len();
    out.par_chunks_mut(d.planes * plane).enumerate().for_each(|(i, img)| {
        for s in 0..d.s {
            let f = dft2(&px.plane(d, cfg.grayscale, i, s), d.h, d.w, &rows, &cols);
            for oy in 0..d.out_h {
                for ox in 0..d.out_w {
                    let (ky, kx) = spectrum_bin(d, cfg.layout, oy, ox);
                    let v = f[ky * d.w + kx];
                    let im = if d.is_real_bin(ky, kx) { 0.0 } else { v.im };
                    let o = oy * d.out_w + ox;
                    let mag = v.re.hypot(im);
                    img[s * plane + o] = match cfg.magnitude {
                        Magnitude::Raw => mag,
                        Magnitude::Log => log_magnitude(mag, d.h, d.w),
                        Magnitude::LogStd => {
                            let st = stats.expect("log-std without statistics (the op's check lets none through)");
                            let bin = s * plane + o;
                            (log_magnitude(mag, d.h, d.w) - st[bin] as f64) / st[d.stats_len() + bin] as f64
                        }
                    } as f32;
                    let ph = (d.s + s) * plane + o;
                    match cfg.phase {
                        Phase::Angle => img[ph] = (im.atan2(v.re) / PI) as f32,
                        Phase::CosSin => {
                            let (c, sn) = if mag > 0.0 { (v.re / mag, im / mag) } else { (1.0, 0.0) };
                            img[ph] = c as f32;
                            img[ph + d.s * plane] = sn as f32;
                        }
                    }
                }
            }
        }
    });
}

/// The bin (ky, kx) of the full H x W DFT that output (oy, ox) of a plane holds in `layout`.
pub(super) fn spectrum_bin(d: &FftDims, layout: SpectrumLayout, oy: usize, ox: usize) -> (usize, usize) {
    match layout {
        SpectrumLayout::Half => (oy, ox),
        SpectrumLayout::Shifted => ((oy + d.h - d.h / 2) % d.h, (ox + d.w - d.w / 2) % d.w),
    }
}

/// Merges one batch into running per-bin statistics: Welford over the batch for each bin, then Chan's formula
/// into (count, mean, m2). `feats` are features with `log` magnitudes; bins are the first `d.stats_len()`
/// values of each image.
pub fn stats_update(feats: &[f32], d: &FftDims, count: u64, mean: &mut [f64], m2: &mut [f64]) {
    let per_image = d.planes * d.plane_len();
    let (na, nb) = (count as f64, d.n as f64);
    mean.par_iter_mut().zip(m2.par_iter_mut()).enumerate().for_each(|(bin, (mean, m2))| {
        let (mut bm, mut bm2) = (0.0f64, 0.0f64);
        for i in 0..d.n {
            let x = feats[i * per_image + bin] as f64;
            let delta = x - bm;
            bm += delta / (i + 1) as f64;
            bm2 += delta * (x - bm);
        }
        let delta = bm - *mean;
        *mean += delta * nb / (na + nb);
        *m2 += bm2 + delta * delta * na * nb / (na + nb);
    });
}

/// `profile` as an op: a new [N, S * R] tensor.
pub(super) fn run_profile<F: Real + Element>(
    be: &CpuBackend,
    feats: &Tensor,
    d: &ProfileDims,
    stats: Option<&Slice>,
) -> Result<Tensor> {
    let mut out = be.output::<F>(d.out_shape().iter().product());
    let stats = stats.map(|s| s.host::<F>()).transpose()?;
    profile(feats.host::<F>()?, d, stats, &mut out);
    Tensor::from_vec(&d.out_shape(), Layout::Plain, out)
}

/// The ring profile of checked features: each ring's bins summed in row-major order, in F (the kernel's order and
/// precision, so that f32 gives the kernel's bits), divided by their count, then standardized by `stats` (S R
/// means, then S R standard deviations) if given.
pub fn profile<F: Real>(feats: &[F], d: &ProfileDims, stats: Option<&[F]>, out: &mut [F]) {
    let ring = d.ring_per_bin();
    let mut count = vec![0usize; d.rings];
    ring.iter().for_each(|&r| count[r] += 1);
    let plane = d.out_h * d.out_w;
    let k = d.s * d.rings;
    out.par_chunks_mut(k).enumerate().for_each(|(img, o)| {
        for (p, rings) in o.chunks_mut(d.rings).enumerate() {
            let v = &feats[(img * d.planes + p) * plane..][..plane];
            rings.fill(F::ZERO);
            for (&x, &r) in v.iter().zip(&ring) {
                rings[r] += x;
            }
            for (m, &c) in rings.iter_mut().zip(&count) {
                *m = if c == 0 { F::ZERO } else { *m / F::of(c as f64) };
            }
        }
        if let Some(st) = stats {
            for (j, m) in o.iter_mut().enumerate() {
                *m = (*m - st[j]) / st[k + j];
            }
        }
    });
}
