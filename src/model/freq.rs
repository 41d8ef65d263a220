//! The frequency branch: the FFT features of the raw images (backend/fft.rs), then a few stride-2
//! conv - batch norm - ReLU stages and global average pooling, as the PyTorch peer's FreqBranch. Its batch norms
//! can be switched off, to reproduce the failure of a branch fed raw magnitudes without normalization.
//!
//! With `profile` (`--freq-profile`), the ring profile of the magnitudes (`fft_profile`: the mean log magnitude
//! per frequency ring) goes through batch norm and a linear map to the branch's width (starting at zero) and is
//! added to the pooled features. The convolutions see a few neighbouring bins and not where they are; the
//! profile says how the energy falls with frequency, what the spectral baseline of `dfgpu holdout` reads.

use crate::backend::fft::{check, rings, FftConfig, FftDims};
use crate::backend::{Act, Conv2d};
use crate::error::{Error, Result};
use crate::model::layers::{Builder, Bwd, ConvBnAct, ConvBnActCache, Fwd, NormLinear, NormLinearCache};
use crate::tensor::{DType, Tensor};
use std::sync::Arc;

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
    profile: Option<NormLinear>,
    pub features: usize,
}

pub struct FreqCache {
    stages: Vec<ConvBnActCache>,
    profile: Option<NormLinearCache>,
    last_shape: [usize; 4],
}

impl FreqBranch {
    /// For 3-channel `size` x `size` images; parameters under `prefix` (e.g. "freq.").
    pub fn new(b: &mut Builder, cfg: FreqConfig, size: usize, prefix: &str) -> Self {
        let planes = FftDims::new(&cfg.fft, 1, 3, 16, 16);
        let mut cin = planes.planes;
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
        let profile_len = planes.s * rings(size);
        let profile = cfg.profile.then(|| NormLinear::new(b, &format!("{prefix}profile"), profile_len, cin));
        FreqBranch { features: cin, cfg, size, stages, profile }
    }

    /// Per image of `size` x `size`: the values a training forward keeps for the backward (the FFT features, the
    /// profile's, then each stage's outputs).
    pub fn kept(&self, size: usize) -> usize {
        let d = FftDims::new(&self.cfg.fft, 1, 3, size, size);
        let profile = self.profile.as_ref().map_or(0, NormLinear::kept);
        let (mut total, mut hw) = (d.planes * d.out_h * d.out_w + profile, (d.out_h, d.out_w));
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
            Some(p) => {
                let d = check(raw, &self.cfg.fft, stats)?;
                if (d.h, d.w) != (self.size, self.size) {
                    return Err(Error::Invalid(format!(
                        "--freq-profile: the model counts its rings for {s} x {s} images, these are {} x {}",
                        d.h,
                        d.w,
                        s = self.size
                    )));
                }
                Some(p.forward(f, f.be.fft_profile(&feats, &self.cfg.fft)?)?)
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
        let (out, profile) = match profile {
            Some((p, cache)) => (f.be.add(&pooled, &p)?, cache),
            None => (pooled, None),
        };
        Ok((out, FreqCache { stages: caches, profile, last_shape }))
    }

    pub fn backward(&self, b: &mut Bwd, c: FreqCache, dfeat: &Tensor) -> Result<()> {
        match (&self.profile, c.profile) {
            (Some(p), Some(cache)) => p.backward(b, cache, dfeat)?,
            (Some(_), None) => return Err(Error::Invalid("backward after an inference forward".into())),
            (None, _) => {}
        }
        let mut dh = b.be.avg_pool_backward(dfeat, c.last_shape)?;
        for (s, cache) in self.stages.iter().zip(c.stages).rev() {
            dh = s.backward(b, cache, &dh)?;
        }
        Ok(())
    }
}
