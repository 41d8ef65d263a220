//! Reference for kernels/preprocess.cu: u8 NHWC to f32 NCHW, normalized and raw, one image per rayon task.
//! Uses the kernel's formula (one fused multiply-add with the same f32 constants), so the two agree exactly.

use crate::backend::preprocess::Dims;
use crate::backend::ChannelNorm;
use rayon::prelude::*;

pub fn preprocess(images: &[u8], d: Dims, norm: &ChannelNorm, out: &mut [f32], raw: Option<&mut [f32]>) {
    preprocess_with(images, d, norm, out, raw, image);
}

/// `preprocess` with each image converted by `image`: this file's, or the fast path's (the same loop compiled for
/// the CPU's widest vectors, fast/preprocess.rs).
pub(super) fn preprocess_with(
    images: &[u8],
    d: Dims,
    norm: &ChannelNorm,
    out: &mut [f32],
    raw: Option<&mut [f32]>,
    image: impl Fn(&[u8], usize, (&[f32; 4], &[f32; 4]), &mut [f32], Option<&mut [f32]>) + Sync,
) {
    let (scale, bias) = norm.scale_bias();
    let hw = d.h * d.w;
    let img_len = hw * d.c;
    let mut raw_per_image: Vec<Option<&mut [f32]>> = match raw {
        Some(r) => r.chunks_mut(img_len).map(Some).collect(),
        None => (0..d.n).map(|_| None).collect(),
    };
    images
        .par_chunks(img_len)
        .zip(out.par_chunks_mut(img_len))
        .zip(raw_per_image.par_iter_mut())
        .for_each(|((src, dst), raw)| image(src, d.c, (&scale, &bias), dst, raw.as_deref_mut()));
}

/// One image: src (HWC) to dst and raw (CHW). Always inlined, so that the fast path compiles it anew.
#[inline(always)]
pub(super) fn image(
    src: &[u8],
    channels: usize,
    (scale, bias): (&[f32; 4], &[f32; 4]),
    dst: &mut [f32],
    mut raw: Option<&mut [f32]>,
) {
    let hw = src.len() / channels;
    for (p, px) in src.chunks_exact(channels).enumerate() {
        for (c, &x) in px.iter().enumerate() {
            let (x, o) = (x as f32, c * hw + p);
            dst[o] = x.mul_add(scale[c], bias[c]);
            if let Some(r) = raw.as_deref_mut() {
                r[o] = x * (1.0 / 255.0);
            }
        }
    }
}
