//! Launcher for kernels/preprocess.cu.

use super::{kernels, CudaBackend};
use crate::backend::preprocess::{ChannelNorm, Dims, Preprocessed};
use crate::error::Result;
use crate::tensor::{Layout, Tensor};
use cudarc::driver::{DeviceRepr, PushKernelArg};

/// Matches `struct Chan4` in kernels/common.cuh.
#[repr(C)]
#[derive(Clone, Copy)]
struct Chan4([f32; 4]);
// SAFETY: plain old data with the C layout of the kernel's parameter.
unsafe impl DeviceRepr for Chan4 {}

/// Checked images (`d` from `check`) to f32 NCHW.
pub fn preprocess(
    be: &CudaBackend,
    images: &Tensor,
    norm: &ChannelNorm,
    want_raw: bool,
    d: Dims,
) -> Result<Preprocessed> {
    let input = images.device::<u8>()?;
    let (scale, bias) = norm.scale_bias();
    let (scale, bias) = (Chan4(scale), Chan4(bias));
    let (n_img, hw) = (d.n as i64, (d.h * d.w) as i64);
    let len = d.n * d.c * d.h * d.w;
    let mut out = be.output::<f32>(len)?;
    let mut raw = want_raw.then(|| be.output::<f32>(len)).transpose()?;
    let null = 0u64; // a null `raw` pointer: the kernel then writes `norm` only

    // The 4-pixel path needs 12-byte groups that start on a 4-byte boundary: C = 3 and H*W divisible by 4.
    let vec4 = d.c == 3 && hw % 4 == 0;
    let (f, cfg) = if vec4 {
        (be.function(kernels::preprocess::PREPROCESS_U8_HWC3_X4)?, be.grid_stride(d.n * (d.h * d.w) / 4, 256))
    } else {
        (be.function(kernels::preprocess::PREPROCESS_U8_HWC)?, be.grid_stride(d.n * d.h * d.w, 256))
    };
    let c = d.c as i32;
    let stream = be.stream();
    let mut b = stream.launch_builder(&f);
    b.arg(input).arg(&mut out);
    match raw.as_mut() {
        Some(r) => b.arg(r),
        None => b.arg(&null),
    };
    b.arg(&n_img).arg(&hw);
    if !vec4 {
        b.arg(&c);
    }
    b.arg(&scale).arg(&bias);
    // SAFETY: the arguments match the kernel's signature in order and type; `check` validated the shapes, so
    // every index the kernel forms lies inside `input` (n*h*w*c bytes) and the outputs (as many floats each).
    unsafe { b.launch(cfg) }?;
    let shape = d.nchw();
    Ok(Preprocessed {
        normalized: Tensor::from_device(&shape, Layout::Nchw, out)?,
        raw: raw.map(|r| Tensor::from_device(&shape, Layout::Nchw, r)).transpose()?,
    })
}
