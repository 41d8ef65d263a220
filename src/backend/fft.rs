//! The frequency features' contract, shared by both backends: a batched 2-D DFT over H and W of each image
//! (per channel, or of its luma), turned into magnitude planes and phase planes.
//!
//! F is the unnormalized DFT, `F[ky][kx] = sum_{y,x} img[y][x] e^{-2 pi i (ky y / H + kx x / W)}` (numpy's and
//! PyTorch's default). Magnitude modes:
//! - `raw`: |F|. Kept on purpose: its values span many orders of magnitude (the DC term of a 224 x 224 image
//!   is about 25,000, the quietest bins under 1e-3), which is what stalls the training of what follows.
//! - `log`: (ln(|F| / sqrt(HW) + eps) - LOG_CENTER) / LOG_SCALE. Dividing by sqrt(HW) (the "ortho"
//!   normalization) makes the range independent of the image size; the fixed affine maps it to about unit range.
//! - `log-std`: the `log` value standardized per frequency bin, (v - mean) / std, with mean and std gathered over
//!   the training set (Frank et al. 2020) by `FftStats` (Welford, in f64), and saved with the model.
//!
//! Phase modes: angle / pi in [-1, 1], or the pair (cos, sin) of the angle ((1, 0) where |F| = 0).
//! Layouts: `half`, the H x (W/2 + 1) half spectrum of a real input (as torch.fft.rfft2, no redundancy), and
//! `shifted`, the full H x W spectrum with the zero frequency moved to the centre (numpy's fftshift: bin
//! (ky, kx) lands at ((ky + H/2) mod H, (kx + W/2) mod W)). The model uses `half` by default: the full spectrum
//! of a real image repeats each value twice (`F[-k] = conj F[k]`), so `half` carries the same information in
//! half the memory traffic, and it is what the PyTorch peer computes, so the bench compares like with like.
//! `shifted` is for looking at spectra (`dfgpu spectrum`).
//! Output planes per image: the S magnitude planes first (S = C, or 1 with `grayscale`), then the phase planes
//! (S angle planes, or S cos planes then S sin planes), as the PyTorch peer's torch.cat([log|F|, angle]).
//! Grayscale uses the BT.601 luma 0.299 R + 0.587 G + 0.114 B.
//! Forward only: the FFT sees the raw images, which need no gradient.
//!
//! The ring profile (`fft_profile`) reads the features back: per image and magnitude plane, the mean over each
//! ring of bins whose frequency radius rounds to r = 0, 1, ..., R - 1 (Durall et al. 2020's azimuthal average).
//! A convolution over the spectrum sees a few neighbouring bins and not where they are; the profile says how the
//! energy falls with frequency, the trace of a generator's upsampling that a linear model reads off it.

use crate::backend::Backend;
use crate::error::{Choice, Error, Result};
use crate::tensor::{DType, Layout, Slice, Tensor};

pub const LOG_EPS: f32 = 1e-6;
pub const LOG_CENTER: f32 = -3.0;
pub const LOG_SCALE: f32 = 3.0;
/// Smallest standard deviation log-std divides by: a bin that never varies in the training set is centred,
/// not blown up.
pub const STD_FLOOR: f32 = 1e-3;
/// Sizes from MIN_SIZE to MAX_SIZE, any factors; 2, 3, 5 and 7 take the fast path, the rest Bluestein's.
pub const MIN_SIZE: usize = 16;
pub const MAX_SIZE: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpectrumLayout {
    Half,
    Shifted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Magnitude {
    Raw,
    Log,
    LogStd,
}

impl Choice for Magnitude {
    const NAMES: &'static [(&'static str, Self)] =
        &[("raw", Magnitude::Raw), ("log", Magnitude::Log), ("log-std", Magnitude::LogStd)];
}

impl Choice for SpectrumLayout {
    const NAMES: &'static [(&'static str, Self)] =
        &[("half", SpectrumLayout::Half), ("shifted", SpectrumLayout::Shifted)];
}

impl Choice for Phase {
    const NAMES: &'static [(&'static str, Self)] = &[("angle", Phase::Angle), ("cos-sin", Phase::CosSin)];
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Angle,
    CosSin,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FftConfig {
    pub layout: SpectrumLayout,
    pub magnitude: Magnitude,
    pub phase: Phase,
    pub grayscale: bool,
}

impl Default for FftConfig {
    /// Half spectrum, log magnitude, angle / pi, per channel.
    fn default() -> Self {
        FftConfig { layout: SpectrumLayout::Half, magnitude: Magnitude::Log, phase: Phase::Angle, grayscale: false }
    }
}

/// The luma's full spectrum with the zero frequency at the centre, log magnitudes: what `dfgpu spectrum` shows, and
/// what the ring profile of `--freq-profile` and of the spectral baseline is taken over (Durall et al. 2020).
pub const LUMA_SPECTRUM: FftConfig =
    FftConfig { layout: SpectrumLayout::Shifted, magnitude: Magnitude::Log, phase: Phase::Angle, grayscale: true };

/// The sizes an op works with, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FftDims {
    pub n: usize,
    /// Input channels.
    pub c: usize,
    pub h: usize,
    pub w: usize,
    /// Spectra per image: c, or 1 with grayscale.
    pub s: usize,
    pub out_h: usize,
    pub out_w: usize,
    /// Output planes per image: s magnitude planes, then s (angle) or 2s (cos, sin) phase planes.
    pub planes: usize,
}

impl FftDims {
    pub fn new(cfg: &FftConfig, n: usize, c: usize, h: usize, w: usize) -> Self {
        let s = if cfg.grayscale { 1 } else { c };
        let (out_h, out_w) = match cfg.layout {
            SpectrumLayout::Half => (h, w / 2 + 1),
            SpectrumLayout::Shifted => (h, w),
        };
        let phase_planes = match cfg.phase {
            Phase::Angle => s,
            Phase::CosSin => 2 * s,
        };
        FftDims { n, c, h, w, s, out_h, out_w, planes: s + phase_planes }
    }

    /// The bins that are real for a real image (the spectrum equals its own conjugate there): (0, 0), and
    /// (H/2, 0), (0, W/2), (H/2, W/2) for even sizes. Both backends set their imaginary part to zero before the
    /// features: on the negative real axis the angle jumps between -pi and pi with the sign of a rounding error.
    pub fn is_real_bin(&self, ky: usize, kx: usize) -> bool {
        (ky == 0 || 2 * ky == self.h) && (kx == 0 || 2 * kx == self.w)
    }

    pub fn out_shape(&self) -> [usize; 4] {
        [self.n, self.planes, self.out_h, self.out_w]
    }
    /// Values in one plane.
    pub fn plane_len(&self) -> usize {
        self.out_h * self.out_w
    }
    /// The shape of the per-bin statistics: the magnitude planes of one image.
    pub fn stats_len(&self) -> usize {
        self.s * self.plane_len()
    }
}

/// Checks the images (f32 NCHW in [0, 1], or u8 NHWC straight from the decoder), the sizes and the statistics
/// (needed by log-std only: a [2, S, out_h, out_w] f32 tensor of means and standard deviations).
pub fn check(images: &Tensor, cfg: &FftConfig, stats: Option<&Tensor>) -> Result<FftDims> {
    let s = images.shape();
    let (n, c, h, w) = match (images.dtype(), images.layout()) {
        (DType::F32, Layout::Nchw) => (s[0], s[1], s[2], s[3]),
        (DType::U8, Layout::Nhwc) => (s[0], s[3], s[1], s[2]),
        (dt, l) => shape_err!("fft images: expected f32 NCHW or u8 NHWC, got {dt:?} {l:?} with shape {s:?}"),
    };
    if n == 0 || c == 0 {
        shape_err!("fft images: empty batch (shape {s:?})");
    }
    for (what, v) in [("height", h), ("width", w)] {
        if !(MIN_SIZE..=MAX_SIZE).contains(&v) {
            shape_err!("fft images: {what} {v} is outside {MIN_SIZE} to {MAX_SIZE} (shape {s:?})");
        }
    }
    if cfg.grayscale && c != 3 {
        shape_err!("fft grayscale needs 3-channel images, got {c} (shape {s:?})");
    }
    let d = FftDims::new(cfg, n, c, h, w);
    match (cfg.magnitude, stats) {
        (Magnitude::LogStd, None) => {
            return Err(Error::Invalid(
                "log-std magnitudes need the training set's per-bin statistics: gather them first (FftStats)".into(),
            ))
        }
        (Magnitude::LogStd, Some(t)) => {
            t.expect("fft statistics", DType::F32, Layout::Plain, 4)?;
            if t.shape() != [2, d.s, d.out_h, d.out_w] {
                shape_err!(
                    "fft statistics of shape {:?} for spectra of shape [2, {}, {}, {}]: gathered for another size \
                     or layout",
                    t.shape(),
                    d.s,
                    d.out_h,
                    d.out_w
                );
            }
        }
        _ => {}
    }
    Ok(d)
}

/// Running per-bin statistics of the `log` magnitudes over a data set (Welford's update, merged batch by batch
/// with Chan's formula, in f64). `mean` and `m2` live on the backend that gathers them.
#[derive(Debug)]
pub struct FftStats {
    pub cfg: FftConfig,
    /// [S, out_h, out_w] of the spectra these were gathered for.
    pub shape: [usize; 3],
    pub count: u64,
    pub mean: Tensor,
    pub m2: Tensor,
}

impl FftStats {
    /// Empty statistics on backend `be` for images of `channels` x `h` x `w`. They are gathered over `log`
    /// magnitudes whatever `cfg.magnitude` says: log-std standardizes exactly those.
    pub fn new(be: &dyn Backend, cfg: FftConfig, channels: usize, h: usize, w: usize) -> Result<Self> {
        let cfg = FftConfig { magnitude: Magnitude::Log, ..cfg };
        let d = FftDims::new(&cfg, 1, channels, h, w);
        let zeros = || be.upload(&Tensor::from_vec(&[d.stats_len()], Layout::Plain, vec![0f64; d.stats_len()])?);
        Ok(FftStats { cfg, shape: [d.s, d.out_h, d.out_w], count: 0, mean: zeros()?, m2: zeros()? })
    }

    /// Per-bin mean and std (population, floored at STD_FLOOR) as the [2, S, out_h, out_w] f32 tensor that
    /// log-std takes. The result is on the host; upload it to the backend that uses it.
    pub fn finish(&self, be: &dyn Backend) -> Result<Tensor> {
        if self.count == 0 {
            return Err(Error::Invalid("frequency statistics of no images".into()));
        }
        let (mean, m2) = (be.download(&self.mean)?, be.download(&self.m2)?);
        let (mean, m2) = (mean.host::<f64>()?, m2.host::<f64>()?);
        let n = self.count as f64;
        let mut out: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
        out.extend(m2.iter().map(|&v| ((v / n).sqrt() as f32).max(STD_FLOOR)));
        let [s, h, w] = self.shape;
        Tensor::from_vec(&[2, s, h, w], Layout::Plain, out)
    }
}

/// The ring of the signed frequency (fy, fx): round(sqrt(fy^2 + fx^2)), in integers (the square root of an
/// integer is never halfway between two), so that the profile and `spectrum` agree on every bin.
pub fn ring_of(fy: i64, fx: i64) -> usize {
    let n4 = 4 * (fy * fy + fx * fx);
    let mut k = ((fy * fy + fx * fx) as f64).sqrt() as i64;
    while (2 * k + 1) * (2 * k + 1) < n4 {
        k += 1;
    }
    while k > 0 && (2 * k - 1) * (2 * k - 1) > n4 {
        k -= 1;
    }
    k as usize
}

/// The signed frequency of bin (ky, kx) of an out_h x out_w spectrum in `layout`: numpy's fftfreq order for
/// `half` (kx is never negative there), centred for `shifted`.
pub fn bin_frequency(layout: SpectrumLayout, out_h: usize, out_w: usize, ky: usize, kx: usize) -> (i64, i64) {
    let (ky, kx, h, w) = (ky as i64, kx as i64, out_h as i64, out_w as i64);
    match layout {
        SpectrumLayout::Half => (if ky < (h + 1) / 2 { ky } else { ky - h }, kx),
        SpectrumLayout::Shifted => (ky - h / 2, kx - w / 2),
    }
}

/// The rings of a `size` x `size` image's profile, in either layout: up to the corner frequency (size/2, size/2).
pub fn rings(size: usize) -> usize {
    ring_of(size as i64 / 2, size as i64 / 2) + 1
}

/// The sizes of a ring profile, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProfileDims {
    pub n: usize,
    /// Planes per image in the features, of which the first `s` are magnitudes.
    pub planes: usize,
    pub s: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub rings: usize,
    pub layout: SpectrumLayout,
}

impl ProfileDims {
    /// [n, s * rings]: per image, each magnitude plane's rings.
    pub fn out_shape(&self) -> [usize; 2] {
        [self.n, self.s * self.rings]
    }
    /// Each bin's ring, row by row.
    pub fn ring_per_bin(&self) -> Vec<usize> {
        let (h, w) = (self.out_h, self.out_w);
        (0..h * w).map(|i| bin_frequency(self.layout, h, w, i / w, i % w)).map(|(fy, fx)| ring_of(fy, fx)).collect()
    }

    /// The bins ring by ring, row-major within each (the order in which both backends add a ring up), and where
    /// each ring starts in that list (rings + 1 values, the last the number of bins).
    pub fn ring_order(&self) -> (Vec<u32>, Vec<u32>) {
        let ring = self.ring_per_bin();
        let mut starts = vec![0u32; self.rings + 1];
        ring.iter().for_each(|&r| starts[r + 1] += 1);
        for r in 0..self.rings {
            starts[r + 1] += starts[r];
        }
        let (mut next, mut order) = (starts.clone(), vec![0u32; ring.len()]);
        for (bin, &r) in ring.iter().enumerate() {
            order[next[r] as usize] = bin as u32;
            next[r] += 1;
        }
        (order, starts)
    }
}

/// Checks features that `fft_features` made with `cfg` from square images (NCHW, f32, or f64 on the CPU), and
/// the standardizing statistics if any (2 S R values).
pub fn check_profile(feats: &Tensor, cfg: &FftConfig, stats: Option<&Slice>) -> Result<ProfileDims> {
    let s = feats.shape();
    if feats.layout() != Layout::Nchw || s.len() != 4 || s[0] == 0 {
        shape_err!("fft profile: expected NCHW features, got {:?} {s:?}", feats.layout());
    }
    let (n, planes, out_h, out_w) = (s[0], s[1], s[2], s[3]);
    let size = out_h;
    let want = FftDims::new(cfg, n, 3, size, size);
    if (want.planes, want.out_h, want.out_w) != (planes, out_h, out_w) {
        shape_err!(
            "fft profile: features {s:?} are not those of square RGB images with {cfg:?} (expected [{n}, {}, \
             {}, {}])",
            want.planes,
            want.out_h,
            want.out_w
        );
    }
    let d = ProfileDims { n, planes, s: want.s, out_h, out_w, rings: rings(size), layout: cfg.layout };
    if let Some(st) = stats {
        if st.len() != 2 * d.s * d.rings || st.buf.dtype() != feats.dtype() {
            shape_err!(
                "fft profile: {} {:?} statistics for {} {:?} rings (a mean and a std each)",
                st.len(),
                st.buf.dtype(),
                d.s * d.rings,
                feats.dtype()
            );
        }
    }
    Ok(d)
}

/// Checks that `stats` were started for these dims.
pub fn check_stats(stats: &FftStats, d: &FftDims) -> Result<()> {
    let want = [d.s, d.out_h, d.out_w];
    if stats.shape != want {
        shape_err!("fft statistics for spectra {:?}, but these images give {want:?}", stats.shape);
    }
    Ok(())
}
