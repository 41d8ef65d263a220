//! The preprocessing op's contract, shared by both backends: arguments, their checks, and the constants
//! the kernels use.

use crate::error::{Error, Result};
use crate::tensor::{DType, Layout, Tensor};

/// Per-channel mean and std of pixel values scaled to [0, 1].
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelNorm {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl ChannelNorm {
    /// The ImageNet statistics that timm's EfficientNet weights expect.
    pub fn imagenet() -> Self {
        ChannelNorm { mean: vec![0.485, 0.456, 0.406], std: vec![0.229, 0.224, 0.225] }
    }

    /// `scale[c] = 1 / (255 std[c])`, `bias[c] = -mean[c] / std[c]`: normalized = x * scale + bias for a u8 x.
    /// Both backends use these same f32 constants (one fused multiply-add per element).
    pub fn scale_bias(&self) -> ([f32; 4], [f32; 4]) {
        let mut scale = [0f32; 4];
        let mut bias = [0f32; 4];
        for (c, (m, s)) in self.mean.iter().zip(&self.std).enumerate() {
            scale[c] = (1.0 / (255.0 * *s as f64)) as f32;
            bias[c] = (-(*m as f64) / *s as f64) as f32;
        }
        (scale, bias)
    }
}

/// The outputs: `normalized` for the spatial branch, `raw` (x / 255) for the frequency branch.
#[derive(Debug)]
pub struct Preprocessed {
    pub normalized: Tensor,
    pub raw: Option<Tensor>,
}

/// Image batch dimensions, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

impl Dims {
    pub fn nchw(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }
}

/// The boundary checks: a u8 NHWC batch with 1 to 4 channels, and a mean/std per channel, std > 0.
pub fn check(images: &Tensor, norm: &ChannelNorm) -> Result<Dims> {
    images.expect("preprocess images", DType::U8, Layout::Nhwc, 4)?;
    let s = images.shape();
    let d = Dims { n: s[0], h: s[1], w: s[2], c: s[3] };
    if d.n == 0 || d.h == 0 || d.w == 0 {
        shape_err!("preprocess images: empty batch or image (shape {s:?})");
    }
    if !(1..=4).contains(&d.c) {
        shape_err!("preprocess images: {} channels (shape {s:?}); 1 to 4 are supported", d.c);
    }
    if norm.mean.len() != d.c || norm.std.len() != d.c {
        return Err(Error::Invalid(format!(
            "channel normalization has {} means and {} stds for {}-channel images",
            norm.mean.len(),
            norm.std.len(),
            d.c
        )));
    }
    if let Some(s) = norm.std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        return Err(Error::Invalid(format!("channel normalization: std {s} must be finite and positive")));
    }
    if let Some(m) = norm.mean.iter().find(|m| !m.is_finite()) {
        return Err(Error::Invalid(format!("channel normalization: mean {m} must be finite")));
    }
    Ok(d)
}
