//! Launchers for kernels/norm.cu.

use super::{kernels, CudaBackend};
use crate::backend::layers::same;
use crate::backend::norm::{check, check_train, BatchNorm, BnSaved};
use crate::error::Result;
use crate::tensor::{Layout, Slice, Tensor};
use cudarc::driver::{LaunchConfig, PushKernelArg};
use std::ops::Range;

fn per_channel(c: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: (c as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 }
}

/// `bn_apply` with `scale_src` holding invstd (from_var 0) or variances (1).
#[allow(clippy::too_many_arguments)]
fn apply(
    be: &CudaBackend,
    x: &Tensor,
    gamma: &Slice,
    beta: &Slice,
    mean: &Slice,
    scale_src: &Slice,
    from_var: bool,
    eps: f32,
) -> Result<Tensor> {
    let s = x.shape();
    let (total, c, hw) = (x.numel() as i64, s[1] as i32, (s[2] * s[3]) as i32);
    let mut y = be.output::<f32>(x.numel())?;
    let (g, b, m, v) =
        (gamma.device::<f32>()?, beta.device::<f32>()?, mean.device::<f32>()?, scale_src.device::<f32>()?);
    let fv = from_var as i32;
    let f = be.function(kernels::norm::BN_APPLY)?;
    let mut l = be.stream().launch_builder(&f);
    l.arg(x.device::<f32>()?)
        .arg(&g)
        .arg(&b)
        .arg(&m)
        .arg(&v)
        .arg(&fv)
        .arg(&eps)
        .arg(&total)
        .arg(&c)
        .arg(&hw)
        .arg(&mut y);
    // SAFETY: arguments match the kernel; each per-channel slice holds C values (checked by the caller).
    unsafe { l.launch(be.grid_stride(x.numel(), 256)) }?;
    Tensor::from_device(s, Layout::Nchw, y)
}

pub fn train(
    be: &CudaBackend,
    x: &Tensor,
    gamma: &Slice,
    beta: &Slice,
    bn: &BatchNorm,
    state: &mut Tensor,
    running: [Range<usize>; 2],
) -> Result<(Tensor, BnSaved)> {
    let [n, c, hw] = check_train(x, gamma, beta, bn)?;
    if running.iter().any(|r| r.len() != c || r.end > state.numel()) {
        shape_err!("batch norm running statistics at {running:?} of a {}-value state for {c} channels", state.numel());
    }
    let (mut mean, mut invstd) = (be.output::<f32>(c)?, be.output::<f32>(c)?);
    let (n32, c32, hw32) = (n as i32, c as i32, hw as i32);
    let (o_m, o_v) = (running[0].start as i64, running[1].start as i64);
    let f = be.function(kernels::norm::BN_STATS)?;
    let mut l = be.stream().launch_builder(&f);
    l.arg(x.device::<f32>()?).arg(&n32).arg(&c32).arg(&hw32).arg(&bn.eps).arg(&bn.momentum);
    l.arg(&mut mean).arg(&mut invstd).arg(state.device_mut::<f32>()?).arg(&o_m).arg(&o_v);
    // SAFETY: arguments match the kernel; the running slots lie inside `state` (checked above).
    unsafe { l.launch(per_channel(c)) }?;
    let saved = BnSaved {
        mean: Tensor::from_device(&[c], Layout::Plain, mean)?,
        invstd: Tensor::from_device(&[c], Layout::Plain, invstd)?,
    };
    let (m, s) = (Slice { buf: &saved.mean, range: 0..c }, Slice { buf: &saved.invstd, range: 0..c });
    let y = apply(be, x, gamma, beta, &m, &s, false, bn.eps)?;
    Ok((y, saved))
}

pub fn eval(
    be: &CudaBackend,
    x: &Tensor,
    gamma: &Slice,
    beta: &Slice,
    bn: &BatchNorm,
    rmean: &Slice,
    rvar: &Slice,
) -> Result<Tensor> {
    check(x, gamma, beta, bn)?;
    if rmean.len() != bn.c || rvar.len() != bn.c {
        shape_err!("batch norm: {} running means and {} variances for {} channels", rmean.len(), rvar.len(), bn.c);
    }
    apply(be, x, gamma, beta, rmean, rvar, true, bn.eps)
}

#[allow(clippy::too_many_arguments)]
pub fn backward(
    be: &CudaBackend,
    x: &Tensor,
    gamma: &Slice,
    saved: &BnSaved,
    dy: &Tensor,
    grads: &mut Tensor,
    dgamma: Range<usize>,
    dbeta: Range<usize>,
) -> Result<Tensor> {
    let c = gamma.len();
    let [n, _, hw] = check(x, gamma, gamma, &BatchNorm::new(c))?;
    same(x, dy, "batch norm backward")?;
    if dgamma.len() != c || dbeta.len() != c || dgamma.end.max(dbeta.end) > grads.numel() {
        shape_err!("batch norm gradient slots {dgamma:?}, {dbeta:?} for {c} channels");
    }
    let (n32, c32, hw32) = (n as i32, c as i32, hw as i32);
    let (o_g, o_b) = (dgamma.start as i64, dbeta.start as i64);
    let (mean, invstd) = (saved.mean.device::<f32>()?, saved.invstd.device::<f32>()?);
    let f = be.function(kernels::norm::BN_BACKWARD_REDUCE)?;
    let mut l = be.stream().launch_builder(&f);
    l.arg(x.device::<f32>()?).arg(dy.device::<f32>()?).arg(mean).arg(invstd).arg(&n32).arg(&c32).arg(&hw32);
    l.arg(grads.device_mut::<f32>()?).arg(&o_g).arg(&o_b);
    // SAFETY: arguments match the kernel; the gradient slots were checked.
    unsafe { l.launch(per_channel(c)) }?;

    let mut dx = be.output::<f32>(x.numel())?;
    let g = gamma.device::<f32>()?;
    let f = be.function(kernels::norm::BN_BACKWARD_DX)?;
    let mut l = be.stream().launch_builder(&f);
    l.arg(x.device::<f32>()?).arg(dy.device::<f32>()?).arg(&g).arg(mean).arg(invstd).arg(grads.device::<f32>()?);
    l.arg(&o_g).arg(&o_b).arg(&n32).arg(&c32).arg(&hw32).arg(&mut dx);
    // SAFETY: as above.
    unsafe { l.launch(be.grid_stride(x.numel(), 256)) }?;
    Tensor::from_device(x.shape(), Layout::Nchw, dx)
}
