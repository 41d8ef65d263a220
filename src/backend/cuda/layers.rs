//! Launchers for kernels/layers.cu, and the linear layer's products on cuBLAS.

use super::{kernels, CudaBackend};
use crate::backend::layers::Act;
use crate::backend::Slots;
use crate::error::Result;
use crate::tensor::{Layout, Slice, Tensor};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use std::ops::Range;

fn per_row(rows: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 }
}

pub fn act(be: &CudaBackend, x: &Tensor, a: Act) -> Result<Tensor> {
    let (n, k) = (x.numel() as i64, Act::code(a));
    let mut y = be.output::<f32>(x.numel())?;
    let f = be.function(kernels::layers::ACT_FORWARD)?;
    let mut l = be.stream().launch_builder(&f);
    l.arg(x.device::<f32>()?).arg(&mut y).arg(&n).arg(&k);
    // SAFETY: arguments match the kernel; y has x's length.
    unsafe { l.launch(be.grid_stride(x.numel(), 256)) }?;
    Tensor::from_device(x.shape(), x.layout(), y)
}

pub fn act_backward(be: &CudaBackend, x: &Tensor, dy: &Tensor, a: Act) -> Result<Tensor> {
    let (n, k) = (x.numel() as i64, Act::code(a));
    let mut dx = be.output::<f32>(x.numel())?;
    let f = be.function(kernels::layers::ACT_BACKWARD)?;
    let mut l = be.stream().launch_builder(&f);
    l.arg(x.device::<f32>()?).arg(dy.device::<f32>()?).arg(&mut dx).arg(&n).arg(&k);
    // SAFETY: as above.
    unsafe { l.launch(be.grid_stride(x.numel(), 256)) }?;
    Tensor::from_device(x.shape(), x.layout(), dx)
}

pub fn avg_pool(be: &CudaBackend, x: &Tensor, [n, c, hw]: [usize; 3]) -> Result<Tensor> {
    let mut y = be.output::<f32>(n * c)?;
    let hw32 = hw as i32;
    let f = be.function(kernels::layers::AVG_POOL)?;
    let mut l = be.stream().launch_builder(&f);
    l.arg(x.device::<f32>()?).arg(&mut y).arg(&hw32);
    // SAFETY: one block per (n, c) row of hw values.
    unsafe { l.launch(per_row(n * c)) }?;
    Tensor::from_device(&[n, c], Layout::Plain, y)
}

pub fn avg_pool_backward(be: &CudaBackend, dy: &Tensor, shape: [usize; 4]) -> Result<Tensor> {
    let total = shape.iter().product::<usize>();
    let (t64, hw) = (total as i64, (shape[2] * shape[3]) as i32);
    let mut dx = be.output::<f32>(total)?;
    let f = be.function(kernels::layers::AVG_POOL_BACKWARD)?;
    let mut l = be.stream().launch_builder(&f);
    l.arg(dy.device::<f32>()?).arg(&mut dx).arg(&t64).arg(&hw);
    // SAFETY: dx holds the whole input shape; dy one value per (n, c).
    unsafe { l.launch(be.grid_stride(total, 256)) }?;
    Tensor::from_device(&shape, Layout::Nchw, dx)
}

/// y = x * s[i / per].
fn scale_groups(be: &CudaBackend, x: &Tensor, s: &CudaSlice<f32>, per: usize) -> Result<Tensor> {
    let (total, per64) = (x.numel() as i64, per as i64);
    let mut y = be.output::<f32>(x.numel())?;
    let f = be.function(kernels::layers::SCALE_GROUPS)?;
    let mut l = be.stream().launch_builder(&f);
    l.arg(x.device::<f32>()?).arg(s).arg(&mut y).arg(&total).arg(&per64);
    // SAFETY: s holds numel / per values (checked by the callers).
    unsafe { l.launch(be.grid_stride(x.numel(), 256)) }?;
    Tensor::from_device(x.shape(), x.layout(), y)
}

pub fn channel_scale(be: &CudaBackend, x: &Tensor, s: &Tensor, hw: usize) -> Result<Tensor> {
    scale_groups(be, x, s.device::<f32>()?, hw)
}

pub fn channel_scale_backward(
    be: &CudaBackend,
    x: &Tensor,
    s: &Tensor,
    dy: &Tensor,
    [n, c, hw]: [usize; 3],
) -> Result<(Tensor, Tensor)> {
    let dx = scale_groups(be, dy, s.device::<f32>()?, hw)?;
    let mut ds = be.output::<f32>(n * c)?;
    let hw32 = hw as i32;
    let f = be.function(kernels::layers::CHANNEL_SCALE_DS)?;
    let mut l = be.stream().launch_builder(&f);
    l.arg(x.device::<f32>()?).arg(dy.device::<f32>()?).arg(&mut ds).arg(&hw32);
    // SAFETY: one block per (n, c) row of hw values.
    unsafe { l.launch(per_row(n * c)) }?;
    Ok((dx, Tensor::from_device(&[n, c], Layout::Plain, ds)?))
}

pub fn add(be: &CudaBackend, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let n = a.numel() as i64;
    let mut y = be.output::<f32>(a.numel())?;
    let f = be.function(kernels::layers::ADD)?;
    let mut l = be.stream().launch_builder(&f);
    l.arg(a.device::<f32>()?).arg(b.device::<f32>()?).arg(&mut y).arg(&n);
    // SAFETY: a, b and y have the same length.
    unsafe { l.launch(be.grid_stride(a.numel(), 256)) }?;
    Tensor::from_device(a.shape(), a.layout(), y)
}

/// Copies `width` columns of each of `rows` rows: dst[r][dst_at + j] = src[r][src_at + j].
fn copy_columns(
    be: &CudaBackend,
    (src, src_cols, src_at): (&Tensor, usize, usize),
    (dst, dst_cols, dst_at): (&mut CudaSlice<f32>, usize, usize),
    rows: usize,
    width: usize,
) -> Result<()> {
    let f = be.function(kernels::layers::COPY_COLUMNS)?;
    let [src_cols, src_at, dst_cols, dst_at, width] = [src_cols, src_at, dst_cols, dst_at, width].map(|v| v as i32);
    let total = (rows * width as usize) as i64;
    let mut l = be.stream().launch_builder(&f);
    l.arg(src.device::<f32>()?).arg(&src_cols).arg(&src_at).arg(dst).arg(&dst_cols).arg(&dst_at);
    l.arg(&width).arg(&total);
    // SAFETY: the callers checked that the columns lie inside both matrices of `rows` rows.
    unsafe { l.launch(be.grid_stride(total as usize, 256)) }?;
    Ok(())
}

pub fn concat_columns(be: &CudaBackend, a: &Tensor, b: &Tensor, [n, p, q]: [usize; 3]) -> Result<Tensor> {
    let mut y = be.output::<f32>(n * (p + q))?;
    copy_columns(be, (a, p, 0), (&mut y, p + q, 0), n, p)?;
    copy_columns(be, (b, q, 0), (&mut y, p + q, p), n, q)?;
    Tensor::from_device(&[n, p + q], Layout::Plain, y)
}

pub fn columns(be: &CudaBackend, x: &Tensor, cols: Range<usize>, [n, c]: [usize; 2]) -> Result<Tensor> {
    let mut y = be.output::<f32>(n * cols.len())?;
    copy_columns(be, (x, c, cols.start), (&mut y, cols.len(), 0), n, cols.len())?;
    Tensor::from_device(&[n, cols.len()], Layout::Plain, y)
}

pub fn sample_scale(be: &CudaBackend, x: &Tensor, scales: &[f32]) -> Result<Tensor> {
    let s = be.stream().clone_htod(scales)?;
    scale_groups(be, x, &s, x.numel() / scales.len().max(1))
}

pub fn linear(be: &CudaBackend, x: &Tensor, w: &Slice, b: &Slice, (n, k, m): (usize, usize, usize)) -> Result<Tensor> {
    let mut y = be.output::<f32>(n * m)?;
    let wv = w.device::<f32>()?;
    be.blas()?.gemm((false, true), (n, m, k), x.device::<f32>()?, &wv, 0.0, &mut y)?;
    let bv = b.device::<f32>()?;
    let (total, cols) = ((n * m) as i64, m as i32);
    let f = be.function(kernels::layers::BIAS_ROWS)?;
    let mut l = be.stream().launch_builder(&f);
    l.arg(&mut y).arg(&bv).arg(&total).arg(&cols);
    // SAFETY: y is n x m, b holds m values.
    unsafe { l.launch(be.grid_stride(n * m, 256)) }?;
    Tensor::from_device(&[n, m], Layout::Plain, y)
}

/// The layer's backward on checked arguments (`check_linear_backward`).
pub fn linear_backward(
    be: &CudaBackend,
    x: &Tensor,
    w: &Slice,
    dy: &Tensor,
    grads: Slots<2>,
    (n, k, m): (usize, usize, usize),
) -> Result<Tensor> {
    let Slots { buf: grads, at: [dw, db] } = grads;
    let blas = be.blas()?;
    let (xd, dyd) = (x.device::<f32>()?, dy.device::<f32>()?);
    let wv = w.device::<f32>()?;
    let mut dx = be.output::<f32>(n * k)?;
    blas.gemm((false, false), (n, k, m), dyd, &wv, 0.0, &mut dx)?;
    let g = grads.device_mut::<f32>()?;
    blas.gemm((true, false), (m, k, n), dyd, xd, 0.0, &mut g.slice_mut(dw))?;
    let (rows, cols) = (n as i32, m as i32);
    let f = be.function(kernels::layers::COL_SUM)?;
    let mut gb = g.slice_mut(db);
    let mut l = be.stream().launch_builder(&f);
    l.arg(dyd).arg(&rows).arg(&cols).arg(&mut gb);
    // SAFETY: dy is n x m; the slot holds m values.
    unsafe { l.launch(be.grid_stride(m, 256)) }?;
    Tensor::from_device(&[n, k], Layout::Plain, dx)
}
