//! Reference for kernels/preprocess.cu: u8 NHWC to f32 NCHW, normalized and raw, one image per rayon task.
//! Uses the kernel's formula (one fused multiply-add with the same f32 constants), so the two agree exactly.

use crate::backend::preprocess::Dims;
use crate::backend::ChannelNorm;
use rayon::prelude::*;

pub fn preprocess(images: &[u8], d: Dims, norm: &ChannelNorm, out: &mut [f32], raw: Option<&mut [f32]>) {
    let (scale, bias) = norm.scale_bias();
    let hw = d.h * d.w;
    let img_len = hw * d.c;
    let mut raw_per_image: Vec<Option<&mut [f32]>> = match raw {
        Some(r) => r.chunks_mut(img_len).map(Some).collect(),
        None => (0..d.n).map(|_| None).collect(),
    };
    images.par_chunks(img_len).zip(out.par_chunks_mut(img_len)).zip(raw_per_image.par_iter_mut()).for_each(
        |((src, dst), raw)| {
            for (p, px) in src.chunks_exact(d.c).enumerate() {
                for (c, &x) in px.iter().enumerate() {
                    let (x, o) = (x as f32, c * hw + p);
                    dst[o] = x.mul_add(scale[c], bias[c]);
                    if let Some(r) = raw.as_deref_mut() {
                        r[o] = x * (1.0 / 255.0);
                    }
                }
            }
        },
    );
}
