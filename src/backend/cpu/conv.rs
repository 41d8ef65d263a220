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

use super::CpuBackend;
use crate::backend::conv::ConvBackward;
use crate::backend::Slots;
use crate::error::Result;
use crate::tensor::{Element, Layout, Slice, Tensor};
use std::mem::MaybeUninit;

/// The forward on checked arguments (`d` from `check`).
pub(super) fn run_forward<F: Real + Element>(
    be: &CpuBackend,
    x: &Tensor,
    w: &Slice,
    c: &Conv2d,
    d: ConvDims,
) -> Result<Tensor> {
    run_forward_with(be, x, w, c, d, |x, w, c, d, y| forward::<F>(x, w, c, d, be.filled(y)))
}

/// The forward through `forward`, which writes every value of y: a fast path (fast/conv.rs), or the reference.
pub(super) fn run_forward_with<F: Element>(
    be: &CpuBackend,
    x: &Tensor,
    w: &Slice,
    c: &Conv2d,
    d: ConvDims,
    forward: impl FnOnce(&[F], &[F], &Conv2d, ConvDims, &mut [MaybeUninit<F>]),
) -> Result<Tensor> {
    let (x, w) = (x.host::<F>()?, w.host::<F>()?);
    // SAFETY: `forward` writes every value of y (the contract of the forwards; the poisoned tests check it).
    let y = unsafe { be.output_with(d.n * c.cout * d.oh * d.ow, |y| forward(x, w, c, d, y)) };
    Tensor::from_vec(&[d.n, c.cout, d.oh, d.ow], Layout::Nchw, y)
}

/// The backward on checked arguments (`d` from `check_backward`).
pub(super) fn run_backward<F: Real + Element>(
    be: &CpuBackend,
    a: &ConvBackward,
    dw: Slots<1>,
    d: ConvDims,
) -> Result<Tensor> {
    run_backward_with(be, a, dw, d, |x, w, dy, c, d, dx, dw| backward::<F>(x, w, dy, c, d, be.filled(dx), dw))
}

/// The backward through `backward`: (x, w, dy) to dx, every value written, and dw, overwritten.
pub(super) fn run_backward_with<F: Element>(
    be: &CpuBackend,
    a: &ConvBackward,
    dw: Slots<1>,
    d: ConvDims,
    backward: impl FnOnce(&[F], &[F], &[F], &Conv2d, ConvDims, &mut [MaybeUninit<F>], &mut [F]),
) -> Result<Tensor> {
    let Slots { buf, at: [dw] } = dw;
    let (xs, ws, dys, dw) = (a.x.host::<F>()?, a.w.host::<F>()?, a.dy.host::<F>()?, &mut buf.host_mut::<F>()?[dw]);
    // SAFETY: `backward` writes every value of dx (the contract of the backwards; the poisoned tests check it).
    let dx = unsafe { be.output_with(a.x.numel(), |dx| backward(xs, ws, dys, a.c, d, dx, dw)) };
    Tensor::from_vec(a.x.shape(), Layout::Nchw, dx)
}
