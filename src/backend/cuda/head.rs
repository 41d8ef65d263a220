//! Launchers for kernels/head.cu: fused kernels around two cuBLAS products in forward, two in backward.

use super::{kernels, CudaBackend};
use crate::backend::head::{Branches, HeadConfig, HeadForward, HeadGrads, HeadInputs, HeadSaved, Mode};
use crate::backend::Slots;
use crate::error::Result;
use crate::tensor::{Layout, Tensor};
use cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};

/// Matches `struct HeadArgs` in kernels/head.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct HeadArgs {
    ds: i32,
    dq: i32,
    hidden: i32,
    norm: i32,
    act: i32,
    gated: i32,
    branches: i32,
    train: i32,
    dropout: f32,
    branch_dropout: f32,
    seed: u64,
    /// gamma_s, beta_s, gamma_q, beta_q, gate w, gate b, W1, b1, w2, b2; -1 where absent.
    offsets: [i64; 10],
}
// SAFETY: plain old data with the kernel parameter's C layout (8 i32, 2 f32, u64, 10 i64: no padding).
unsafe impl DeviceRepr for HeadArgs {}

const NAMES: [&str; 10] = [
    "norm_s.weight",
    "norm_s.bias",
    "norm_q.weight",
    "norm_q.bias",
    "gate.weight",
    "gate.bias",
    "fc1.weight",
    "fc1.bias",
    "fc2.weight",
    "fc2.bias",
];

fn args(cfg: &HeadConfig, mode: Mode) -> HeadArgs {
    let l = cfg.layout();
    let (train, seed) = match mode {
        Mode::Eval => (0, 0),
        Mode::Train { seed } => (1, seed),
    };
    HeadArgs {
        ds: cfg.ds as i32,
        dq: cfg.dq as i32,
        hidden: cfg.hidden as i32,
        norm: cfg.layer_norm as i32,
        act: cfg.act.code(),
        gated: cfg.gated as i32,
        branches: match cfg.branches {
            Branches::Both => 0,
            Branches::Spatial => 1,
            Branches::Freq => 2,
        },
        train,
        dropout: cfg.dropout,
        branch_dropout: cfg.branch_dropout,
        seed,
        offsets: NAMES.map(|n| l.find(n).map_or(-1, |e| e.offset as i64)),
    }
}

fn per_sample(b: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: (b as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 }
}

fn per_column(n: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: (n.div_ceil(128) as u32, 1, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 }
}

/// The forward of checked inputs (`b` is the batch).
pub fn forward(be: &CudaBackend, x: &HeadInputs, mode: Mode, b: usize) -> Result<HeadForward> {
    let HeadInputs { cfg, params, s, q } = x;
    let (d, hid) = (cfg.d(), cfg.hidden);
    let a = args(cfg, mode);
    let p = &params.device::<f32>()?;
    let (mut z, mut h, mut stats) = (be.output::<f32>(b * d)?, be.output::<f32>(b * hid)?, be.output::<f32>(b * 4)?);
    let (mut gate, mut logits) = (be.output::<f32>(b)?, be.output::<f32>(b)?);
    let b32 = b as i32;
    let stream = be.stream();

    let f = be.function(kernels::head::HEAD_FWD_INPUT)?;
    let mut l = stream.launch_builder(&f);
    l.arg(p)
        .arg(s.device::<f32>()?)
        .arg(q.device::<f32>()?)
        .arg(&b32)
        .arg(&a)
        .arg(&mut z)
        .arg(&mut stats)
        .arg(&mut gate);
    // SAFETY: arguments match the kernel; `check` validated every shape the kernel indexes.
    unsafe { l.launch(per_sample(b)) }?;

    let w1 = cfg.layout().get("fc1.weight")?.range();
    be.blas()?.gemm((false, true), (b, hid, d), &z, &p.slice(w1), 0.0, &mut h)?;

    let f = be.function(kernels::head::HEAD_FWD_OUTPUT)?;
    let mut l = stream.launch_builder(&f);
    l.arg(p).arg(&b32).arg(&a).arg(&mut h).arg(&mut logits);
    // SAFETY: as above.
    unsafe { l.launch(per_sample(b)) }?;

    let plain = |shape: &[usize], v| Tensor::from_device(shape, Layout::Plain, v);
    Ok(HeadForward {
        logits: plain(&[b], logits)?,
        saved: HeadSaved {
            mode,
            z: plain(&[b, d], z)?,
            h: plain(&[b, hid], h)?,
            stats: plain(&[b, 4], stats)?,
            gate: plain(&[b], gate)?,
        },
    })
}

/// The backward of checked arguments (`b` is the batch).
pub fn backward(
    be: &CudaBackend,
    x: &HeadInputs,
    saved: &HeadSaved,
    dlogits: &Tensor,
    grads: Slots<1>,
    b: usize,
) -> Result<HeadGrads> {
    let (cfg, params) = (x.cfg, &x.params);
    let (d, hid) = (cfg.d(), cfg.hidden);
    let a = args(cfg, saved.mode);
    let p = &params.device::<f32>()?;
    let (s, q) = (x.s.device::<f32>()?, x.q.device::<f32>()?);
    let (z, h, stats, gate) =
        (saved.z.device::<f32>()?, saved.h.device::<f32>()?, saved.stats.device::<f32>()?, saved.gate.device::<f32>()?);
    let stream = be.stream();
    // Zeroed, not poisoned: the alignment padding between parameters is no kernel's to write.
    let Slots { buf, at: [at] } = grads;
    let mut gp = buf.device_mut::<f32>()?.slice_mut(at);
    stream.memset_zeros(&mut gp)?;
    let (mut dh, mut dz, mut dpre) = (be.output::<f32>(b * hid)?, be.output::<f32>(b * d)?, be.output::<f32>(b)?);
    let (mut ds, mut dq) = (be.output::<f32>(b * cfg.ds)?, be.output::<f32>(b * cfg.dq)?);
    let b32 = b as i32;

    let f = be.function(kernels::head::HEAD_BWD_OUTPUT)?;
    let mut l = stream.launch_builder(&f);
    l.arg(p).arg(h).arg(dlogits.device::<f32>()?).arg(&b32).arg(&a).arg(&mut dh).arg(&mut gp);
    // SAFETY: arguments match the kernel; shapes were checked by the caller (`check_backward`).
    unsafe { l.launch(per_column(hid)) }?;

    let w1 = cfg.layout().get("fc1.weight")?.range();
    let blas = be.blas()?;
    blas.gemm((true, false), (hid, d, b), &dh, z, 0.0, &mut gp.slice_mut(w1.clone()))?;
    blas.gemm((false, false), (b, d, hid), &dh, &p.slice(w1), 0.0, &mut dz)?;

    let f = be.function(kernels::head::HEAD_BWD_INPUT)?;
    let mut l = stream.launch_builder(&f);
    l.arg(p).arg(s).arg(q).arg(stats).arg(gate).arg(&b32).arg(&a).arg(&mut dz).arg(&mut dpre).arg(&mut ds).arg(&mut dq);
    // SAFETY: as above.
    unsafe { l.launch(per_sample(b)) }?;

    let f = be.function(kernels::head::HEAD_BWD_PARAMS)?;
    let mut l = stream.launch_builder(&f);
    l.arg(p).arg(s).arg(q).arg(stats).arg(&dz).arg(&dpre).arg(&b32).arg(&a).arg(&mut gp);
    // SAFETY: as above.
    unsafe { l.launch(per_column(d)) }?;

    Ok(HeadGrads {
        ds: Tensor::from_device(&[b, cfg.ds], Layout::Plain, ds)?,
        dq: Tensor::from_device(&[b, cfg.dq], Layout::Plain, dq)?,
    })
}
