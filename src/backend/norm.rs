//! Batch normalization's contract: per channel of an NCHW tensor, over N, H and W. Training uses the batch's
//! statistics and updates the running ones as PyTorch does (momentum 0.1: running = 0.9 running + 0.1 batch,
//! with the unbiased variance); inference uses the running statistics. eps and momentum as timm's
//! efficientnet_bN (1e-5, 0.1).

use crate::backend::Slots;
use crate::error::Result;
use crate::tensor::{Layout, Slice, Tensor};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNorm {
    pub c: usize,
    pub eps: f32,
    pub momentum: f32,
}

impl BatchNorm {
    pub fn new(c: usize) -> Self {
        BatchNorm { c, eps: 1e-5, momentum: 0.1 }
    }
}

/// What training-mode backward needs: the batch mean and 1 / sqrt(var + eps) per channel.
#[derive(Debug)]
pub struct BnSaved {
    pub mean: Tensor,
    pub invstd: Tensor,
}

/// A batch norm's learned scale and shift (C values each), and its settings.
#[derive(Debug)]
pub struct BnParams<'a> {
    pub gamma: Slice<'a>,
    pub beta: Slice<'a>,
    pub bn: &'a BatchNorm,
}

/// The running statistics that inference normalizes with (C values each).
#[derive(Debug)]
pub struct BnRunning<'a> {
    pub mean: Slice<'a>,
    pub var: Slice<'a>,
}

/// [n, c, hw] of a checked input.
pub fn check(x: &Tensor, p: &BnParams) -> Result<[usize; 3]> {
    let (s, c) = (x.shape(), p.bn.c);
    if x.layout() != Layout::Nchw || s[1] != c {
        shape_err!("batch norm input: expected NCHW with {c} channels, got {:?} {s:?}", x.layout());
    }
    if p.gamma.len() != c || p.beta.len() != c {
        shape_err!("batch norm: {} scales and {} shifts for {c} channels", p.gamma.len(), p.beta.len());
    }
    Ok([s[0], s[1], s[2] * s[3]])
}

/// `check`, plus what training needs: more than one value per channel to take statistics of, and the running
/// statistics' two slots.
pub fn check_train(x: &Tensor, p: &BnParams, running: &Slots<2>) -> Result<[usize; 3]> {
    let d = check(x, p)?;
    if d[0] * d[2] < 2 {
        shape_err!("batch norm in training needs more than one value per channel, got shape {:?}", x.shape());
    }
    running.check("batch norm running statistics", [p.bn.c; 2])?;
    Ok(d)
}

/// `check`, plus the running statistics.
pub fn check_eval(x: &Tensor, p: &BnParams, r: &BnRunning) -> Result<[usize; 3]> {
    let d = check(x, p)?;
    if r.mean.len() != p.bn.c || r.var.len() != p.bn.c {
        shape_err!("batch norm: {} running means and {} variances for {} channels", r.mean.len(), r.var.len(), p.bn.c);
    }
    Ok(d)
}

/// The training-mode backward's inputs: the forward's input and scales, what it saved, and the gradient of its
/// output.
#[derive(Debug)]
pub struct BnBackward<'a> {
    pub x: &'a Tensor,
    pub gamma: Slice<'a>,
    pub saved: &'a BnSaved,
    pub dy: &'a Tensor,
}

/// Training-mode backward: x and dy alike, C scales (C from gamma), the two gradient slots.
pub fn check_backward(a: &BnBackward, grads: &Slots<2>) -> Result<[usize; 3]> {
    let (c, gamma) = (a.gamma.len(), &a.gamma);
    let d = check(a.x, &BnParams { gamma: gamma.clone(), beta: gamma.clone(), bn: &BatchNorm::new(c) })?;
    crate::backend::layers::same(a.x, a.dy, "batch norm backward")?;
    grads.check("batch norm gradients", [c; 2])?;
    Ok(d)
}
