//! 2-D convolution's contract, shared by both backends: NCHW input, weights [Cout, Cin / groups, K, K], square
//! kernel, stride and symmetric zero padding (PyTorch's and timm's efficientnet_bN: padding
//! ((stride - 1) + (K - 1)) / 2), no bias (a batch norm follows every convolution of the model). Depthwise is
//! groups = Cin = Cout.

use crate::backend::Slots;
use crate::error::Result;
use crate::tensor::{Layout, Slice, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2d {
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub groups: usize,
}

impl Conv2d {
    pub fn new(cin: usize, cout: usize, k: usize, stride: usize, groups: usize) -> Self {
        Conv2d { cin, cout, k, stride, groups }
    }
    pub fn pad(&self) -> usize {
        ((self.stride - 1) + (self.k - 1)) / 2
    }
    pub fn out_size(&self, h: usize) -> usize {
        (h + 2 * self.pad() - self.k) / self.stride + 1
    }
    pub fn weight_shape(&self) -> [usize; 4] {
        [self.cout, self.cin / self.groups, self.k, self.k]
    }
    pub fn weight_len(&self) -> usize {
        self.weight_shape().iter().product()
    }
}

/// Checked sizes: input [n, cin, h, w], output [n, cout, oh, ow].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvDims {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
}

pub fn check(x: &Tensor, w: &Slice, c: &Conv2d) -> Result<ConvDims> {
    let s = x.shape();
    if x.layout() != Layout::Nchw || s.len() != 4 || s[1] != c.cin {
        shape_err!("conv input: expected NCHW with {} channels, got {:?} {:?}", c.cin, x.layout(), s);
    }
    if c.groups == 0 || !c.cin.is_multiple_of(c.groups) || !c.cout.is_multiple_of(c.groups) || c.k == 0 || c.stride == 0
    {
        return Err(crate::Error::Invalid(format!(
            "conv {c:?}: channels must divide by groups, kernel and stride be positive"
        )));
    }
    if w.len() != c.weight_len() || w.buf.dtype() != x.dtype() {
        shape_err!(
            "conv weights: {} {:?} values, {c:?} needs {} {:?}",
            w.len(),
            w.buf.dtype(),
            c.weight_len(),
            x.dtype()
        );
    }
    if s[2] + 2 * c.pad() < c.k || s[3] + 2 * c.pad() < c.k {
        shape_err!("conv input {:?} is smaller than the {}x{} kernel", s, c.k, c.k);
    }
    Ok(ConvDims { n: s[0], h: s[2], w: s[3], oh: c.out_size(s[2]), ow: c.out_size(s[3]) })
}

/// The backward's inputs: the forward's input and weights, and the gradient of its output.
#[derive(Debug)]
pub struct ConvBackward<'a> {
    pub x: &'a Tensor,
    pub w: Slice<'a>,
    pub dy: &'a Tensor,
    pub c: &'a Conv2d,
}

/// `check`, plus the backward's: dy of the output's shape, and the weight gradient's slot.
pub fn check_backward(a: &ConvBackward, dw: &Slots<1>) -> Result<ConvDims> {
    let (c, dy) = (a.c, a.dy);
    let d = check(a.x, &a.w, c)?;
    if dy.shape() != [d.n, c.cout, d.oh, d.ow] || dy.dtype() != a.x.dtype() {
        shape_err!("conv backward: dy {:?} {:?}, output is {:?}", dy.shape(), dy.dtype(), [d.n, c.cout, d.oh, d.ow]);
    }
    dw.check("conv weight gradient", [c.weight_len()])?;
    Ok(d)
}
