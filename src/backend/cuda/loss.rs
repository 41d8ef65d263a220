//! Launcher for kernels/loss.cu.

use super::{kernels, CudaBackend};
use crate::backend::loss::{threshold_logit, LossConfig, LossKind, LossOutput};
use crate::error::Result;
use crate::tensor::{Layout, Tensor};
use cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};

/// Matches `struct LossArgs` in kernels/loss.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct LossArgs {
    focal: i32,
    alpha: f32,
    gamma: f32,
    w0: f32,
    w1: f32,
    smoothing: f32,
    threshold_logit: f32,
}
// SAFETY: plain old data with the kernel parameter's C layout.
unsafe impl DeviceRepr for LossArgs {}

/// The loss of checked arguments (`n` logits, from `check`).
pub fn loss(
    be: &CudaBackend,
    cfg: &LossConfig,
    logits: &Tensor,
    labels: &Tensor,
    threshold: f32,
    n: usize,
) -> Result<LossOutput> {
    let (focal, alpha, gamma) = match cfg.kind {
        LossKind::Bce => (0, 0.0, 0.0),
        LossKind::Focal { alpha, gamma } => (1, alpha, gamma),
    };
    let args = LossArgs {
        focal,
        alpha,
        gamma,
        w0: cfg.weights[0],
        w1: cfg.weights[1],
        smoothing: cfg.smoothing,
        threshold_logit: threshold_logit(threshold),
    };
    let mut dlogits = be.output::<f32>(n)?;
    let mut stats = be.output::<f32>(5)?;
    let f = be.function(kernels::loss::LOSS_FWD_BWD)?;
    let threads = n.next_multiple_of(32).min(1024) as u32;
    // One block: the reduction order is fixed, so the loss is the same on every run.
    let cfg_launch = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 };
    let n32 = n as i32;
    let mut b = be.stream().launch_builder(&f);
    b.arg(logits.device::<f32>()?).arg(labels.device::<f32>()?).arg(&n32).arg(&args).arg(&mut dlogits).arg(&mut stats);
    // SAFETY: arguments match the kernel's signature; `check` made logits and labels n long, as are the outputs.
    unsafe { b.launch(cfg_launch) }?;
    Ok(LossOutput {
        dlogits: Tensor::from_device(&[n], Layout::Plain, dlogits)?,
        stats: Tensor::from_device(&[5], Layout::Plain, stats)?,
    })
}
