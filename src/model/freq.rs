//! The frequency branch: the FFT features of the raw images (backend/fft.rs), then a few stride-2
//! conv - batch norm - ReLU stages and global average pooling, as the PyTorch peer's FreqBranch. Its batch norms
//! can be switched off, to reproduce the failure of a branch fed raw magnitudes without normalization.
//!
//! With `profile` (`--freq-profile`), the ring profile of the luma spectrum (`fft_profile`: the mean log
//! magnitude per frequency ring), standardized by the training set's mean and standard deviation of each ring, is
//! put beside the pooled features: the head reads it as it reads them. The convolutions see a few neighbouring
//! bins and not where they are; the profile says how the energy falls with frequency, what the spectral baseline
//! of `dfgpu holdout` reads. Its statistics are gathered once before training (`profile_stats`), as log-std's, not
//! per batch: they are the same in training and inference, and need no gradient.

use crate::backend::fft::{check, rings, FftConfig, FftDims, LUMA_SPECTRUM};
use crate::backend::{Act, Backend, Conv2d};
use crate::error::{Error, Result};
use crate::model::layers::{Builder, Bwd, ConvBnAct, ConvBnActCache, Fwd};
use crate::tensor::{DType, Slice, Tensor};
use std::ops::Range;
use std::sync::Arc;

/// The ring profile of raw images (square, f32 NCHW in [0, 1] or u8 NHWC) over their luma's spectrum
/// (`LUMA_SPECTRUM`: the spectral baseline's feature), whatever the branch's own FFT settings: [N, rings].
/// Standardized by `stats` if given; in `dtype` (f64 for the CPU backend's gradient checks). Taken per colour
/// channel on the branch's half spectrum (which weighs the columns kx = 0 and W/2 twice), it scored lower held out
/// (docs/generalization-study.md).
pub fn ring_profile(be: &dyn Backend, raw: &Tensor, stats: Option<&Slice>, dtype: DType) -> Result<Tensor> {
    let mut feats = be.fft_features(raw, &LUMA_SPECTRUM, None)?;
    if dtype == DType::F64 {
        feats = feats.to_f64()?;
    }
    be.fft_profile(&feats, &LUMA_SPECTRUM, stats)
}

#[derive(Clone, Debug, PartialEq)]
pub struct FreqConfig {
    pub fft: FftConfig,
    /// Output channels of each stage (stride 2, 3x3).
    pub widths: Vec<usize>,
    /// Batch norm after each convolution (on by default).
    pub batch_norm: bool,
    /// The ring profile beside the convolutions (off by default).
    pub profile: bool,
}

impl Default for FreqConfig {
    fn default() -> Self {
        FreqConfig { fft: FftConfig::default(), widths: vec![32, 64, 128], batch_norm: true, profile: false }
    }
}

pub struct FreqBranch {
    pub cfg: FreqConfig,
    /// The image side the profile's rings were counted for.
    size: usize,
    stages: Vec<ConvBnAct>,
    /// With a profile: where its statistics are in the model's state (R means, then R standard deviations).
    profile: Option<Range<usize>>,
    /// The pooled features', then the profile's.
    pub features: usize,
}

pub struct FreqCache {
    stages: Vec<ConvBnActCache>,
    last_shape: [usize; 4],
}

impl FreqBranch {
    /// For 3-channel `size` x `size` images; parameters under `prefix` (e.g. "freq.").
    pub fn new(b: &mut Builder, cfg: FreqConfig, size: usize, prefix: &str) -> Self {
        let mut cin = FftDims::new(&cfg.fft, 1, 3, 16, 16).planes;
        let mut stages = Vec::new();
        for (i, &w) in cfg.widths.iter().enumerate() {
            let bn = format!("{prefix}stages.{i}.bn");
            let bn = cfg.batch_norm.then_some(bn.as_str());
            stages.push(ConvBnAct::new(
                b,
                &format!("{prefix}stages.{i}.conv"),
                bn,
                Conv2d::new(cin, w, 3, 2, 1),
                Some(Act::Relu),
            ));
            cin = w;
        }
        let k = rings(size);
        let profile = cfg.profile.then(|| b.state(&format!("{prefix}profile.stats"), 2 * k));
        let features = cin + if cfg.profile { k } else { 0 };
        FreqBranch { features, cfg, size, stages, profile }
    }

    /// Where the profile's statistics are in the model's state (R means, then R standard deviations): gathered
    /// over the training set before training (train/trainer.rs `fit_freq_stats`). None without a profile.
    pub fn profile_stats(&self) -> Option<Range<usize>> {
        self.profile.clone()
    }

    /// Per image of `size` x `size`: the values a training forward keeps for the backward (the FFT features, then
    /// each stage's outputs).
    pub fn kept(&self, size: usize) -> usize {
        let d = FftDims::new(&self.cfg.fft, 1, 3, size, size);
        let (mut total, mut hw) = (d.planes * d.out_h * d.out_w, (d.out_h, d.out_w));
        for s in &self.stages {
            let (k, h, w) = s.kept(hw.0, hw.1);
            total += k;
            hw = (h, w);
        }
        total
    }

    /// Raw images (f32 NCHW in [0, 1], or u8 NHWC) to [N, features]. `stats` for log-std magnitudes.
    pub fn forward(&self, f: &mut Fwd, raw: &Tensor, stats: Option<&Tensor>) -> Result<(Tensor, FreqCache)> {
        let mut feats = f.be.fft_features(raw, &self.cfg.fft, stats)?;
        if f.params.dtype() == DType::F64 {
            feats = feats.to_f64()?; // the FFT is f32 only; the CPU backend's f64 gradient checks take it widened
        }
        let profile = match &self.profile {
            Some(at) => {
                let d = check(raw, &self.cfg.fft, stats)?;
                if (d.h, d.w) != (self.size, self.size) {
                    return Err(Error::Invalid(format!(
                        "--freq-profile: the model counts its rings for {s} x {s} images, these are {} x {}",
                        d.h,
                        d.w,
                        s = self.size
                    )));
                }
                let stats = Slice { buf: &*f.state, range: at.clone() };
                Some(ring_profile(f.be, raw, Some(&stats), f.params.dtype())?)
            }
            None => None,
        };
        let mut h = Arc::new(feats);
        let mut caches = Vec::with_capacity(self.stages.len());
        for s in &self.stages {
            let (o, c) = s.forward(f, h)?;
            h = o;
            caches.push(c);
        }
        let s = h.shape();
        let last_shape = [s[0], s[1], s[2], s[3]];
        let pooled = f.be.avg_pool(&h)?;
        let out = match profile {
            Some(p) => f.be.concat_columns(&pooled, &p)?,
            None => pooled,
        };
        Ok((out, FreqCache { stages: caches, last_shape }))
    }

    pub fn backward(&self, b: &mut Bwd, c: FreqCache, dfeat: &Tensor) -> Result<()> {
        // The profile's columns are computed from the images: they need no gradient.
        let pooled;
        let dpooled = match self.profile {
            Some(_) => {
                pooled = b.be.columns(dfeat, 0..c.last_shape[1])?;
                &pooled
            }
            None => dfeat,
        };
        let mut dh = b.be.avg_pool_backward(dpooled, c.last_shape)?;
        for (s, cache) in self.stages.iter().zip(c.stages).rev() {
            dh = s.backward(b, cache, &dh)?;
        }
        Ok(())
    }
}
