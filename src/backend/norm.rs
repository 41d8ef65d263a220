//! Batch normalization's contract: per channel of an NCHW tensor, over N, H and W. Training uses the batch's
//! statistics and updates the running ones as PyTorch does (momentum 0.1: running = 0.9 running + 0.1 batch,
//! with the unbiased variance); inference uses the running statistics. eps and momentum as timm's
//! efficientnet_bN (1e-5, 0.1).

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

/// [n, c, hw] of a checked input.
pub fn check(x: &Tensor, gamma: &Slice, beta: &Slice, bn: &BatchNorm) -> Result<[usize; 3]> {
    let s = x.shape();
    if x.layout() != Layout::Nchw || s[1] != bn.c {
        shape_err!("batch norm input: expected NCHW with {} channels, got {:?} {s:?}", bn.c, x.layout());
    }
    if gamma.len() != bn.c || beta.len() != bn.c {
        shape_err!("batch norm: {} scales and {} shifts for {} channels", gamma.len(), beta.len(), bn.c);
    }
    Ok([s[0], s[1], s[2] * s[3]])
}

/// `check`, plus what training needs: more than one value per channel to take statistics of.
pub fn check_train(x: &Tensor, gamma: &Slice, beta: &Slice, bn: &BatchNorm) -> Result<[usize; 3]> {
    let d = check(x, gamma, beta, bn)?;
    if d[0] * d[2] < 2 {
        shape_err!("batch norm in training needs more than one value per channel, got shape {:?}", x.shape());
    }
    Ok(d)
}
