//! Reference 2-D convolution (grouped, depthwise included), forward and backward, by direct summation: rayon
//! over images and output channels. Generic over the float type for f64 gradient checks.

use super::real::Real;
use crate::backend::conv::{Conv2d, ConvDims};
use rayon::prelude::*;

/// For each output position, the input positions a kernel tap reads (None in the zero padding).
fn tap(o: usize, k: usize, c: &Conv2d, size: usize) -> Option<usize> {
    (o * c.stride + k).checked_sub(c.pad()).filter(|&i| i < size)
}

pub fn forward<F: Real>(x: &[F], w: &[F], c: &Conv2d, d: ConvDims, y: &mut [F]) {
    let (cin_g, cout_g) = (c.cin / c.groups, c.cout / c.groups);
    let (hw, ohw) = (d.h * d.w, d.oh * d.ow);
    y.par_chunks_mut(ohw).enumerate().for_each(|(nc, out)| {
        let (n, co) = (nc / c.cout, nc % c.cout);
        let g = co / cout_g;
        out.fill(F::ZERO);
        for ci in 0..cin_g {
            let xc = &x[(n * c.cin + g * cin_g + ci) * hw..][..hw];
            for ky in 0..c.k {
                for kx in 0..c.k {
                    let wv = w[((co * cin_g + ci) * c.k + ky) * c.k + kx];
                    for oy in 0..d.oh {
                        let Some(iy) = tap(oy, ky, c, d.h) else { continue };
                        for ox in 0..d.ow {
                            if let Some(ix) = tap(ox, kx, c, d.w) {
                                out[oy * d.ow + ox] += wv * xc[iy * d.w + ix];
                            }
                        }
                    }
                }
            }
        }
    });
}

/// dx (overwritten) and dw (overwritten) from dy.
pub fn backward<F: Real>(x: &[F], w: &[F], dy: &[F], c: &Conv2d, d: ConvDims, dx: &mut [F], dw: &mut [F]) {
    let (cin_g, cout_g) = (c.cin / c.groups, c.cout / c.groups);
    let (hw, ohw) = (d.h * d.w, d.oh * d.ow);
    // dx: each input channel of each image gathers from the output channels of its group.
    dx.par_chunks_mut(hw).enumerate().for_each(|(nc, dxc)| {
        let (n, ci_abs) = (nc / c.cin, nc % c.cin);
        let (g, ci) = (ci_abs / cin_g, ci_abs % cin_g);
        dxc.fill(F::ZERO);
        for co in g * cout_g..(g + 1) * cout_g {
            let dyc = &dy[(n * c.cout + co) * ohw..][..ohw];
            for ky in 0..c.k {
                for kx in 0..c.k {
                    let wv = w[((co * cin_g + ci) * c.k + ky) * c.k + kx];
                    for oy in 0..d.oh {
                        let Some(iy) = tap(oy, ky, c, d.h) else { continue };
                        for ox in 0..d.ow {
                            if let Some(ix) = tap(ox, kx, c, d.w) {
                                dxc[iy * d.w + ix] += wv * dyc[oy * d.ow + ox];
                            }
                        }
                    }
                }
            }
        }
    });
    // dw: each output channel's weights sum over the batch.
    dw.par_chunks_mut(cin_g * c.k * c.k).enumerate().for_each(|(co, dwc)| {
        let g = co / cout_g;
        dwc.fill(F::ZERO);
        for n in 0..d.n {
            let dyc = &dy[(n * c.cout + co) * ohw..][..ohw];
            for ci in 0..cin_g {
                let xc = &x[(n * c.cin + g * cin_g + ci) * hw..][..hw];
                for ky in 0..c.k {
                    for kx in 0..c.k {
                        let mut acc = F::ZERO;
                        for oy in 0..d.oh {
                            let Some(iy) = tap(oy, ky, c, d.h) else { continue };
                            for ox in 0..d.ow {
                                if let Some(ix) = tap(ox, kx, c, d.w) {
                                    acc += dyc[oy * d.ow + ox] * xc[iy * d.w + ix];
                                }
                            }
                        }
                        dwc[(ci * c.k + ky) * c.k + kx] += acc;
                    }
                }
            }
        }
    });
}

use super::{out_of, CpuBackend};
use crate::backend::conv::check;
use crate::error::Result;
use crate::tensor::{Element, Layout, Slice, Tensor};

/// The forward of one float type: the reference, or a fast path with the same contract (fast/conv.rs).
pub(super) type Forward<F> = fn(&[F], &[F], &Conv2d, ConvDims, &mut [F]);
/// The backward of one float type: (x, w, dy) to dx and dw, both overwritten.
pub(super) type Backward<F> = fn(&[F], &[F], &[F], &Conv2d, ConvDims, &mut [F], &mut [F]);

pub(super) fn run_forward<F: Real + Element>(be: &CpuBackend, x: &Tensor, w: &Slice, c: &Conv2d) -> Result<Tensor> {
    run_forward_with(be, x, w, c, forward::<F>)
}

pub(super) fn run_forward_with<F: Element>(
    be: &CpuBackend,
    x: &Tensor,
    w: &Slice,
    c: &Conv2d,
    forward: Forward<F>,
) -> Result<Tensor> {
    let d = check(x, w, c)?;
    let mut y = be.output::<F>(d.n * c.cout * d.oh * d.ow);
    forward(x.host::<F>()?, w.host::<F>()?, c, d, &mut y);
    Tensor::from_vec(&[d.n, c.cout, d.oh, d.ow], Layout::Nchw, y)
}

pub(super) fn run_backward<F: Real + Element>(
    be: &CpuBackend,
    x: &Tensor,
    w: &Slice,
    dy: &Tensor,
    c: &Conv2d,
    grads: &mut Tensor,
    dw: std::ops::Range<usize>,
) -> Result<Tensor> {
    run_backward_with(be, x, w, dy, c, grads, dw, backward::<F>)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn run_backward_with<F: Element>(
    be: &CpuBackend,
    x: &Tensor,
    w: &Slice,
    dy: &Tensor,
    c: &Conv2d,
    grads: &mut Tensor,
    dw: std::ops::Range<usize>,
    backward: Backward<F>,
) -> Result<Tensor> {
    let d = check(x, w, c)?;
    if dy.shape() != [d.n, c.cout, d.oh, d.ow] {
        shape_err!("conv backward: dy {:?}, output is {:?}", dy.shape(), [d.n, c.cout, d.oh, d.ow]);
    }
    let mut dx = be.output::<F>(x.numel());
    backward(x.host::<F>()?, w.host::<F>()?, dy.host::<F>()?, c, d, &mut dx, out_of::<F>(grads, dw, c.weight_len())?);
    Tensor::from_vec(x.shape(), Layout::Nchw, dx)
}
