//! Launchers for kernels/norm.cu.

use super::{kernels, CudaBackend};
use crate::backend::norm::{BnBackward, BnParams, BnRunning, BnSaved};
use crate::backend::Slots;
use crate::error::Result;
use crate::tensor::{Layout, Slice, Tensor};
use cudarc::driver::{LaunchConfig, PushKernelArg};

fn per_channel(c: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: (c as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 }
}

/// `bn_apply` with `stats.var` holding invstd (from_var 0) or variances (1).
fn apply(be: &CudaBackend, x: &Tensor, p: &BnParams, stats: &BnRunning, from_var: bool) -> Result<Tensor> {
    let (gamma, beta, mean, scale_src, eps) = (&p.gamma, &p.beta, &stats.mean, &stats.var, p.bn.eps);
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

/// Training on checked arguments (`check_train`).
pub fn train(
    be: &CudaBackend,
    x: &Tensor,
    p: &BnParams,
    running: Slots<2>,
    [n, c, hw]: [usize; 3],
) -> Result<(Tensor, BnSaved)> {
    let (bn, Slots { buf: state, at: running }) = (p.bn, running);
    let (mut mean, mut invstd) = (be.output::<f32>(c)?, be.output::<f32>(c)?);
    let (n32, c32, hw32) = (n as i32, c as i32, hw as i32);
    let (o_m, o_v) = (running[0].start as i64, running[1].start as i64);
    let f = be.function(kernels::norm::BN_STATS)?;
    let mut l = be.stream().launch_builder(&f);
    l.arg(x.device::<f32>()?).arg(&n32).arg(&c32).arg(&hw32).arg(&bn.eps).arg(&bn.momentum);
    l.arg(&mut mean).arg(&mut invstd).arg(state.device_mut::<f32>()?).arg(&o_m).arg(&o_v);
    // SAFETY: arguments match the kernel; the running slots lie inside `state` (checked by the caller).
    unsafe { l.launch(per_channel(c)) }?;
    let saved = BnSaved {
        mean: Tensor::from_device(&[c], Layout::Plain, mean)?,
        invstd: Tensor::from_device(&[c], Layout::Plain, invstd)?,
    };
    let (m, s) = (Slice { buf: &saved.mean, range: 0..c }, Slice { buf: &saved.invstd, range: 0..c });
    let y = apply(be, x, p, &BnRunning { mean: m, var: s }, false)?;
    Ok((y, saved))
}

/// Inference on checked arguments (`check_eval`).
pub fn eval(be: &CudaBackend, x: &Tensor, p: &BnParams, r: &BnRunning) -> Result<Tensor> {
    apply(be, x, p, r, true)
}

/// The backward on checked arguments (`check_backward`).
pub fn backward(be: &CudaBackend, a: &BnBackward, grads: Slots<2>, [n, c, hw]: [usize; 3]) -> Result<Tensor> {
    let (BnBackward { x, gamma, saved, dy }, Slots { buf: grads, at: [dgamma, dbeta] }) = (a, grads);
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
