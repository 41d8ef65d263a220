//! The backbone's small layers, shared contract: activations (SiLU, ReLU, sigmoid), global average pooling,
//! per-channel scaling (squeeze-and-excitation), per-sample scaling (drop-connect), the residual add, the
//! fully connected layer with bias (the SE's reduce and expand), and columns side by side and back (the frequency
//! branch's features and profile).

use crate::backend::Slots;
use crate::error::{Choice, Result};
use crate::tensor::{Layout, Slice, Tensor};
use std::ops::Range;

/// An activation: of the backbone's layers, the SE gate (sigmoid) and the fusion head's hidden layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    Silu,
    Relu,
    Sigmoid,
}

impl Choice for Act {
    const NAMES: &'static [(&'static str, Self)] =
        &[("silu", Act::Silu), ("relu", Act::Relu), ("sigmoid", Act::Sigmoid)];
}

impl Act {
    /// Its code in the kernels (kernels/common.cuh's act and act_grad).
    pub fn code(self) -> i32 {
        match self {
            Act::Silu => 0,
            Act::Relu => 1,
            Act::Sigmoid => 2,
        }
    }
}

/// [n, c, hw] of an NCHW tensor.
pub fn nchw(x: &Tensor, what: &str) -> Result<[usize; 3]> {
    let s = x.shape();
    if x.layout() != Layout::Nchw {
        shape_err!("{what}: expected an NCHW tensor, got {:?} {s:?}", x.layout());
    }
    Ok([s[0], s[1], s[2] * s[3]])
}

/// Checks that `b` has `a`'s shape, dtype and layout.
pub fn same(a: &Tensor, b: &Tensor, what: &str) -> Result<()> {
    if a.shape() != b.shape() || a.dtype() != b.dtype() || a.layout() != b.layout() {
        shape_err!(
            "{what}: {:?} {:?} {:?} and {:?} {:?} {:?} differ",
            a.shape(),
            a.dtype(),
            a.layout(),
            b.shape(),
            b.dtype(),
            b.layout()
        );
    }
    Ok(())
}

/// Checks a per-channel scale [n, c] against an NCHW tensor.
pub fn check_channel_scale(x: &Tensor, s: &Tensor) -> Result<[usize; 3]> {
    let d = nchw(x, "channel scale input")?;
    if s.shape() != [d[0], d[1]] || s.dtype() != x.dtype() {
        shape_err!("channel scale: {:?} scales for input {:?} (need [N, C])", s.shape(), x.shape());
    }
    Ok(d)
}

/// Checks a per-channel scale's backward: `check_channel_scale`, and dy of x's shape.
pub fn check_channel_scale_backward(x: &Tensor, s: &Tensor, dy: &Tensor) -> Result<[usize; 3]> {
    let d = check_channel_scale(x, s)?;
    same(x, dy, "channel scale backward")?;
    Ok(d)
}

/// Checks an average pool's backward: dy [n, c] for an input of `shape` (NCHW).
pub fn check_avg_pool_backward(dy: &Tensor, shape: [usize; 4]) -> Result<()> {
    if dy.shape() != [shape[0], shape[1]] {
        shape_err!("average pool backward: dy {:?} for input {shape:?}", dy.shape());
    }
    Ok(())
}

/// Checks one scale per sample of x.
pub fn check_sample_scale(x: &Tensor, scales: &[f32]) -> Result<()> {
    let n = x.shape()[0];
    if scales.len() != n {
        shape_err!("sample scale: {} factors for a batch of {n}", scales.len());
    }
    Ok(())
}

/// Checks a linear layer: `x [n, k]`, `w [m, k]`, `b [m]`; returns (n, k, m).
pub fn check_linear(x: &Tensor, w: &Slice, b: &Slice, m: usize) -> Result<(usize, usize, usize)> {
    let s = x.shape();
    if s.len() != 2 || w.len() != m * s[1] || b.len() != m {
        shape_err!("linear: input {s:?}, {} weights and {} biases for {m} outputs", w.len(), b.len());
    }
    Ok((s[0], s[1], m))
}

/// Checks a linear layer's backward: x [n, k], w [m, k], dy [n, m], gradient slots of m k and m values;
/// returns (n, k, m).
pub fn check_linear_backward(x: &Tensor, w: &Slice, dy: &Tensor, grads: &Slots<2>) -> Result<(usize, usize, usize)> {
    let s = x.shape();
    let (n, k) = (s[0], if s.len() == 2 { s[1] } else { 0 });
    let m = w.len() / k.max(1);
    if s.len() != 2 || dy.shape() != [n, m] || w.len() != m * k {
        shape_err!("linear backward: dy {:?} for input {s:?} and {} weights", dy.shape(), w.len());
    }
    grads.check("linear backward gradients", [m * k, m])?;
    Ok((n, k, m))
}

/// [n, c] of a plain matrix.
fn matrix(x: &Tensor, what: &str) -> Result<[usize; 2]> {
    match *x.shape() {
        [n, c] if x.layout() == Layout::Plain => Ok([n, c]),
        _ => shape_err!("{what}: expected an [N, C] matrix, got {:?} {:?}", x.layout(), x.shape()),
    }
}

/// Checks two matrices of as many rows and one dtype; returns (rows, a's columns, b's).
pub fn check_concat_columns(a: &Tensor, b: &Tensor) -> Result<[usize; 3]> {
    let ([n, p], [m, q]) = (matrix(a, "concat columns")?, matrix(b, "concat columns")?);
    if n != m || a.dtype() != b.dtype() {
        shape_err!("concat columns: {:?} {:?} and {:?} {:?}", a.shape(), a.dtype(), b.shape(), b.dtype());
    }
    Ok([n, p, q])
}

/// Checks that `cols` are columns of `x`; returns its rows and columns.
pub fn check_columns(x: &Tensor, cols: &Range<usize>) -> Result<[usize; 2]> {
    let [n, c] = matrix(x, "columns")?;
    if cols.start > cols.end || cols.end > c {
        shape_err!("columns {cols:?} of a matrix of {c} columns");
    }
    Ok([n, c])
}
