//! Launchers for kernels/optim.cu.

use super::{kernels, CudaBackend};
use crate::backend::cpu::optim::bias_corrections;
use crate::backend::optim::{norms_len, Optimizer, StepArgs, StepBuffers};
use crate::error::Result;
use crate::params::ParamLayout;
use crate::tensor::{Layout, Tensor};
use cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};

/// Elements per block in the first stage (NORM_CHUNK in kernels/optim.cu).
const NORM_CHUNK: usize = 4096;

/// Matches `struct AdamArgs` in kernels/optim.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct AdamArgs {
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    bc1: f32,
    bc2_sqrt: f32,
    clip_index: i32,
}
// SAFETY: plain old data with the kernel parameter's C layout.
unsafe impl DeviceRepr for AdamArgs {}

/// Matches `struct SgdArgs` in kernels/optim.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct SgdArgs {
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    clip_index: i32,
}
// SAFETY: plain old data with the kernel parameter's C layout.
unsafe impl DeviceRepr for SgdArgs {}

pub fn param_norms(
    be: &CudaBackend,
    layout: &ParamLayout,
    params: &Tensor,
    grads: &Tensor,
    max_norm: Option<f32>,
) -> Result<Tensor> {
    norms_pass(be, layout, grads, params, 0.0, max_norm)
}

pub fn step_norms(be: &CudaBackend, layout: &ParamLayout, before: &Tensor, after: &Tensor) -> Result<Tensor> {
    norms_pass(be, layout, after, before, 1.0, None)
}

/// Per tensor, the sums of (a - sub b)^2 and of b^2, then the total and the clip factor (kernels/optim.cu).
fn norms_pass(
    be: &CudaBackend,
    layout: &ParamLayout,
    a: &Tensor,
    b: &Tensor,
    sub: f32,
    max_norm: Option<f32>,
) -> Result<Tensor> {
    let entries = layout.entries();
    let offsets: Vec<i64> = entries.iter().map(|e| e.offset as i64).collect();
    let lens: Vec<i64> = entries.iter().map(|e| e.len() as i64).collect();
    let mut block_start = vec![0i32];
    for e in entries {
        block_start.push(block_start.last().unwrap() + e.len().div_ceil(NORM_CHUNK).max(1) as i32);
    }
    let blocks = *block_start.last().unwrap() as usize;
    let stream = be.stream();
    let (off_d, len_d, start_d) =
        (stream.clone_htod(&offsets)?, stream.clone_htod(&lens)?, stream.clone_htod(&block_start)?);
    let mut partial = be.output::<f32>(2 * blocks)?;
    let mut out = be.output::<f32>(norms_len(layout))?;
    let nseg = entries.len() as i32;

    let f = be.function(kernels::optim::PARAM_NORMS_PARTIAL)?;
    let mut l = stream.launch_builder(&f);
    l.arg(a.device::<f32>()?)
        .arg(b.device::<f32>()?)
        .arg(&sub)
        .arg(&off_d)
        .arg(&len_d)
        .arg(&start_d)
        .arg(&nseg)
        .arg(&mut partial);
    let cfg = LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: arguments match the kernel; every segment lies inside the checked buffers.
    unsafe { l.launch(cfg) }?;

    let f = be.function(kernels::optim::PARAM_NORMS_FINISH)?;
    let mut l = stream.launch_builder(&f);
    let max = max_norm.unwrap_or(0.0);
    l.arg(&partial).arg(&start_d).arg(&nseg).arg(&max).arg(&mut out);
    let cfg = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (1024, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: as above; `out` holds 2 nseg + 2 values.
    unsafe { l.launch(cfg) }?;
    Tensor::from_device(&[norms_len(layout)], Layout::Plain, out)
}

/// One step on checked buffers (`check_step`).
pub fn optimizer_step(
    be: &CudaBackend,
    layout: &ParamLayout,
    b: StepBuffers,
    opt: &Optimizer,
    s: StepArgs,
) -> Result<()> {
    let StepBuffers { params, grads, m, v, decay_mask: mask, norms } = b;
    let clip_index = (norms_len(layout) - 1) as i32;
    let n = layout.total();
    let n64 = n as i64;
    let (adam, sgd);
    let f =
        be.function(if let Optimizer::AdamW(_) = opt { kernels::optim::ADAMW_STEP } else { kernels::optim::SGD_STEP })?;
    let mut l = be.stream().launch_builder(&f);
    l.arg(params.device_mut::<f32>()?).arg(grads.device::<f32>()?).arg(m.device_mut::<f32>()?);
    match opt {
        Optimizer::AdamW(o) => {
            let (bc1, bc2_sqrt) = bias_corrections(o, s.t);
            adam = AdamArgs {
                lr: s.lr,
                beta1: o.beta1,
                beta2: o.beta2,
                eps: o.eps,
                weight_decay: o.weight_decay,
                bc1,
                bc2_sqrt,
                clip_index,
            };
            l.arg(v.device_mut::<f32>()?).arg(mask.device::<u8>()?).arg(norms.device::<f32>()?).arg(&n64).arg(&adam);
        }
        Optimizer::Sgd(o) => {
            sgd = SgdArgs { lr: s.lr, momentum: o.momentum, weight_decay: o.weight_decay, clip_index };
            l.arg(mask.device::<u8>()?).arg(norms.device::<f32>()?).arg(&n64).arg(&sgd);
        }
    }
    // SAFETY: arguments match the kernel (adamw_step or sgd_step); every buffer holds the layout's `n` values
    // (checked).
    unsafe { l.launch(be.grid_stride(n, 256)) }?;
    Ok(())
}
