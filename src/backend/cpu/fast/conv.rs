//! The fast f32 convolution of the CPU backend, checked against the reference (../conv.rs) in tests/ops/conv.rs.
//! Regular and grouped convolutions are matrix products per image and group (matrixmultiply's sgemm): a 1x1
//! convolution at stride 1 multiplies the input as it lies, the others go through im2col. Depthwise
//! convolutions (one input channel per group) run per plane on a zero-padded copy split into stride phases, each
//! tap one contiguous pass (`Wide`), or, on small planes of many channels, with the channels innermost
//! (`channels_last`). Every reduction has a fixed order: results do not depend on the number of threads.

use super::{min_items, sgemm, zeroed};
use crate::backend::conv::{Conv2d, ConvDims};
use rayon::prelude::*;
use std::cell::RefCell;
use std::mem::MaybeUninit;

/// Images per partial filter gradient: the batch is summed in chunks of this size, then the chunks in order.
const DW_CHUNK: usize = 4;

thread_local! {
    /// Each rayon thread's im2col buffer, kept between calls (no allocation per image).
    static COL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The input of a tap (ky or kx) at output position o, or None in the padding.
fn tap(o: usize, k: usize, c: &Conv2d, size: usize) -> Option<usize> {
    (o * c.stride + k).checked_sub(c.pad()).filter(|&i| i < size)
}

/// The output positions o whose tap k lands inside [0, size): a range, since the input position grows with o.
fn valid(k: usize, c: &Conv2d, size: usize, out: usize) -> std::ops::Range<usize> {
    let p = c.pad();
    let lo = if k >= p { 0 } else { (p - k).div_ceil(c.stride) };
    let hi = if size + p > k { ((size + p - k - 1) / c.stride + 1).min(out) } else { 0 };
    let lo = lo.min(out);
    lo..hi.max(lo)
}

fn is_plain(c: &Conv2d) -> bool {
    c.k == 1 && c.stride == 1
}

fn is_depthwise(c: &Conv2d) -> bool {
    c.groups == c.cin && c.groups == c.cout
}

/// Whether a 1x1 convolution (stride 1, one group) runs as one product for the whole batch: on planes of under 16
/// values the products per image are a few columns wide (4 on the tiny model's 2 x 2 planes), where
/// matrixmultiply's packing of the weights, once per product, costs more than the product (measured at batch 32:
/// 48 to 288 channels over 2 x 2, 195 us image by image against 41 us batched forward, 125 against 102 backward).
/// From 4 x 4 on, the gathering costs more than it saves, backward.
fn is_batched_pointwise(c: &Conv2d, d: ConvDims) -> bool {
    is_plain(c) && c.groups == 1 && d.h * d.w < 16
}

/// Output rows (channels) per task of a batched product: the rows split between the threads, each task's
/// product as wide as the batch.
const ROWS: usize = 16;

/// The planes of a [n, ch, hw] tensor side by side: [ch, n hw].
fn side_by_side(t: &[f32], n: usize, ch: usize, hw: usize) -> Vec<f32> {
    let mut out = vec![0f32; t.len()];
    out.par_chunks_mut(n * hw).enumerate().for_each(|(c, row)| {
        for (i, dst) in row.chunks_exact_mut(hw).enumerate() {
            dst.copy_from_slice(&t[(i * ch + c) * hw..][..hw]);
        }
    });
    out
}

/// The inverse of `side_by_side`: t [n, ch, hw] (every value written) from planes [ch, n hw].
fn back_in_place(planes: &[f32], n: usize, ch: usize, hw: usize, t: &mut [MaybeUninit<f32>]) {
    t.par_chunks_mut(ch * hw).enumerate().for_each(|(i, img)| {
        for (c, dst) in img.chunks_exact_mut(hw).enumerate() {
            dst.iter_mut().zip(&planes[c * n * hw + i * hw..][..hw]).for_each(|(o, &v)| {
                o.write(v);
            });
        }
    });
}

/// A batched 1x1 convolution: Y = W X with the images side by side, rows in parallel.
fn pointwise_forward(x: &[f32], w: &[f32], c: &Conv2d, d: ConvDims, y: &mut [MaybeUninit<f32>]) {
    let (hw, cols) = (d.h * d.w, d.n * d.h * d.w);
    let xs = side_by_side(x, d.n, c.cin, hw);
    let mut prod = vec![0f32; c.cout * cols];
    prod.par_chunks_mut(ROWS * cols).zip(w.par_chunks(ROWS * c.cin)).for_each(|(p, wr)| {
        sgemm((p.len() / cols, c.cin, cols), wr, (c.cin, 1), &xs, (cols, 1), 0.0, (p, cols));
    });
    back_in_place(&prod, d.n, c.cout, hw, y);
}

/// The backward of `pointwise_forward`: dX = W^T dY and dW = dY X^T with the images side by side, rows in
/// parallel (each value's sum has one order, whatever the threads).
fn pointwise_backward(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    c: &Conv2d,
    d: ConvDims,
    dx: &mut [MaybeUninit<f32>],
    dw: &mut [f32],
) {
    let (hw, cols) = (d.h * d.w, d.n * d.h * d.w);
    let (xs, gs) = (side_by_side(x, d.n, c.cin, hw), side_by_side(dy, d.n, c.cout, hw));
    let mut dxs = vec![0f32; c.cin * cols];
    dxs.par_chunks_mut(ROWS * cols).enumerate().for_each(|(b, p)| {
        sgemm((p.len() / cols, c.cout, cols), &w[b * ROWS..], (1, c.cin), &gs, (cols, 1), 0.0, (p, cols));
    });
    back_in_place(&dxs, d.n, c.cin, hw, dx);
    dw.par_chunks_mut(ROWS * c.cin).zip(gs.par_chunks(ROWS * cols)).for_each(|(dwr, g)| {
        sgemm((dwr.len() / c.cin, cols, c.cin), g, (cols, 1), &xs, (1, cols), 0.0, (dwr, c.cin));
    });
}

/// Whether a depthwise convolution runs with the channels innermost: on small planes (16 x 16 and less) of 32
/// channels or more, a pass over the channels is long enough to vectorize and beats the planes' own loops several
/// times (measured on the tiny model: 5x5 over 192 channels of 4 x 4, 0.26 ms against 1.0 forward); on larger
/// planes the transposes cost more than they save.
fn channels_last(c: &Conv2d, d: ConvDims) -> bool {
    c.cin >= 32 && d.h * d.w <= 256
}

/// col [cin_g * k * k, oh * ow] of one image's group input xg [cin_g, h, w].
fn im2col(xg: &[f32], cin_g: usize, c: &Conv2d, d: ConvDims, col: &mut [f32]) {
    let ohw = d.oh * d.ow;
    for ci in 0..cin_g {
        let xc = &xg[ci * d.h * d.w..][..d.h * d.w];
        for ky in 0..c.k {
            for kx in 0..c.k {
                let row = &mut col[((ci * c.k + ky) * c.k + kx) * ohw..][..ohw];
                let xs = valid(kx, c, d.w, d.ow);
                for oy in 0..d.oh {
                    let r = &mut row[oy * d.ow..][..d.ow];
                    let Some(iy) = tap(oy, ky, c, d.h) else {
                        r.fill(0.0);
                        continue;
                    };
                    r[..xs.start].fill(0.0);
                    r[xs.end..].fill(0.0);
                    let base = iy * d.w + xs.start * c.stride + kx - c.pad();
                    for (j, v) in r[xs.clone()].iter_mut().enumerate() {
                        *v = xc[base + j * c.stride];
                    }
                }
            }
        }
    }
}

/// Adds col [cin_g * k * k, oh * ow] back into dxg [cin_g, h, w] (the adjoint of im2col).
fn col2im(col: &[f32], cin_g: usize, c: &Conv2d, d: ConvDims, dxg: &mut [f32]) {
    let ohw = d.oh * d.ow;
    for ci in 0..cin_g {
        let dxc = &mut dxg[ci * d.h * d.w..][..d.h * d.w];
        for ky in 0..c.k {
            for kx in 0..c.k {
                let row = &col[((ci * c.k + ky) * c.k + kx) * ohw..][..ohw];
                let xs = valid(kx, c, d.w, d.ow);
                for oy in 0..d.oh {
                    let Some(iy) = tap(oy, ky, c, d.h) else { continue };
                    let base = iy * d.w + xs.start * c.stride + kx - c.pad();
                    for (j, v) in row[oy * d.ow..][xs.clone()].iter().enumerate() {
                        dxc[base + j * c.stride] += v;
                    }
                }
            }
        }
    }
}

/// Runs f with this thread's im2col buffer of at least `len` values.
fn with_col<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    COL.with(|b| {
        let mut b = b.borrow_mut();
        if b.len() < len {
            b.resize(len, 0.0);
        }
        f(&mut b[..len])
    })
}

pub fn forward(x: &[f32], w: &[f32], c: &Conv2d, d: ConvDims, y: &mut [MaybeUninit<f32>]) {
    let (hw, ohw) = (d.h * d.w, d.oh * d.ow);
    if is_depthwise(c) {
        return if channels_last(c, d) {
            depthwise_forward_cl(x, w, c, d, y)
        } else {
            depthwise_forward(x, w, c, d, y)
        };
    }
    if is_batched_pointwise(c, d) {
        return pointwise_forward(x, w, c, d, y);
    }
    let (cin_g, cout_g) = (c.cin / c.groups, c.cout / c.groups);
    let kk = cin_g * c.k * c.k;
    y.par_chunks_mut(c.cout * ohw).enumerate().for_each(|(n, yn)| {
        for g in 0..c.groups {
            let xg = &x[(n * c.cin + g * cin_g) * hw..][..cin_g * hw];
            let wg = &w[g * cout_g * kk..][..cout_g * kk];
            let yg = &mut yn[g * cout_g * ohw..][..cout_g * ohw];
            if is_plain(c) {
                sgemm((cout_g, kk, ohw), wg, (kk, 1), xg, (ohw, 1), 0.0, (yg, ohw));
            } else {
                with_col(kk * ohw, |col| {
                    im2col(xg, cin_g, c, d, col);
                    sgemm((cout_g, kk, ohw), wg, (kk, 1), col, (ohw, 1), 0.0, (yg, ohw));
                });
            }
        }
    });
}

/// dx (every value written) and dw (overwritten) from dy.
pub fn backward(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    c: &Conv2d,
    d: ConvDims,
    dx: &mut [MaybeUninit<f32>],
    dw: &mut [f32],
) {
    if is_depthwise(c) {
        return match channels_last(c, d) {
            true => depthwise_backward_cl(x, w, dy, c, d, dx, dw),
            false => depthwise_backward(x, w, dy, c, d, dx, dw),
        };
    }
    if is_batched_pointwise(c, d) {
        return pointwise_backward(x, w, dy, c, d, dx, dw);
    }
    let (hw, ohw) = (d.h * d.w, d.oh * d.ow);
    let (cin_g, cout_g) = (c.cin / c.groups, c.cout / c.groups);
    let kk = cin_g * c.k * c.k;
    // dx: per image and group, W^T dY, then back through im2col's adjoint.
    dx.par_chunks_mut(c.cin * hw).enumerate().for_each(|(n, dxn)| {
        for g in 0..c.groups {
            let wg = &w[g * cout_g * kk..][..cout_g * kk];
            let dyg = &dy[(n * c.cout + g * cout_g) * ohw..][..cout_g * ohw];
            let dxg = &mut dxn[g * cin_g * hw..][..cin_g * hw];
            if is_plain(c) {
                sgemm((kk, cout_g, ohw), wg, (1, kk), dyg, (ohw, 1), 0.0, (dxg, ohw));
            } else {
                with_col(kk * ohw, |col| {
                    sgemm((kk, cout_g, ohw), wg, (1, kk), dyg, (ohw, 1), 0.0, (col, ohw));
                    col2im(col, cin_g, c, d, zeroed(dxg));
                });
            }
        }
    });
    // dw: dY col^T summed over the images of each chunk, then over the chunks in order.
    let partials: Vec<Vec<f32>> = (0..d.n.div_ceil(DW_CHUNK))
        .into_par_iter()
        .map(|chunk| {
            let mut acc = vec![0f32; w.len()];
            for n in chunk * DW_CHUNK..((chunk + 1) * DW_CHUNK).min(d.n) {
                for g in 0..c.groups {
                    let xg = &x[(n * c.cin + g * cin_g) * hw..][..cin_g * hw];
                    let dyg = &dy[(n * c.cout + g * cout_g) * ohw..][..cout_g * ohw];
                    let accg = &mut acc[g * cout_g * kk..][..cout_g * kk];
                    if is_plain(c) {
                        sgemm((cout_g, ohw, kk), dyg, (ohw, 1), xg, (1, ohw), 1.0, (accg, kk));
                    } else {
                        with_col(kk * ohw, |col| {
                            im2col(xg, cin_g, c, d, col);
                            sgemm((cout_g, ohw, kk), dyg, (ohw, 1), col, (1, ohw), 1.0, (accg, kk));
                        });
                    }
                }
            }
            acc
        })
        .collect();
    sum_in_order(&partials, dw);
}

/// out = the sum of the partials, added in their order.
fn sum_in_order(partials: &[Vec<f32>], out: &mut [f32]) {
    out.fill(0.0);
    for p in partials {
        for (o, v) in out.iter_mut().zip(p) {
            *o += v;
        }
    }
}

/// A depthwise plane on its zero-padded input, split into stride x stride phases (phase (py, px) holds the padded
/// values at rows py, py + s, ... and columns px, px + s, ...), so that every tap reads its phase at stride 1.
/// Outputs are computed on a "wide" grid of oh rows of wq (the phases' row length) values, output (oy, ox) at
/// j = oy wq + ox: each tap is then one contiguous pass over the whole grid, free of bounds per row, where small
/// planes (4 x 4, 2 x 2 in the tiny model) would otherwise be all overhead. The values at ox >= ow are
/// discarded (and dy is zero there in backward).
struct Wide {
    stride: usize,
    /// The phases' row length: the padded width over the stride, rounded up.
    wq: usize,
    /// Values in the wide grid.
    len: usize,
    /// Values per phase: as far as the last tap of the grid's last value reads.
    phase_len: usize,
}

impl Wide {
    fn new(c: &Conv2d, d: ConvDims) -> Self {
        let (s, reach) = (c.stride, (c.k - 1) / c.stride);
        let wq = (d.w + 2 * c.pad()).div_ceil(s);
        let len = d.oh * wq;
        Wide { stride: s, wq, len, phase_len: len + reach * (wq + 1) }
    }

    /// Values in all phases.
    fn padded(&self) -> usize {
        self.stride * self.stride * self.phase_len
    }

    /// Calls f(y, x0, at) for each run of a plane's row that lands in one phase row: input row y, columns x0,
    /// x0 + s, ... < w, stored from index `at` of the phases on.
    fn runs(&self, c: &Conv2d, d: ConvDims, mut f: impl FnMut(usize, usize, usize)) {
        let (s, p) = (self.stride, c.pad());
        for y in 0..d.h {
            for px in 0..s {
                let x0 = (px + s - p % s) % s; // the first x with (x + p) mod s = px
                if x0 < d.w {
                    let phase = ((y + p) % s) * s + px;
                    f(y, x0, phase * self.phase_len + (y + p) / s * self.wq + (x0 + p) / s);
                }
            }
        }
    }

    /// The phases (overwritten) of the plane xc [h, w], zero in the padding.
    fn pad(&self, xc: &[f32], c: &Conv2d, d: ConvDims, phases: &mut [f32]) {
        phases.fill(0.0);
        self.runs(c, d, |y, x0, at| {
            let row = xc[y * d.w..][..d.w][x0..].iter().step_by(self.stride);
            phases[at..].iter_mut().zip(row).for_each(|(o, &v)| *o = v);
        });
    }

    /// The plane [h, w] (overwritten) from its phases, the padding cut off.
    fn unpad(&self, phases: &[f32], c: &Conv2d, d: ConvDims, plane: &mut [MaybeUninit<f32>]) {
        self.runs(c, d, |y, x0, at| {
            let row = plane[y * d.w..][..d.w][x0..].iter_mut().step_by(self.stride);
            row.zip(&phases[at..]).for_each(|(o, &v)| {
                o.write(v);
            });
        });
    }

    /// g (wide, overwritten) from the output plane [oh, ow], zero at ox >= ow.
    fn widen(&self, plane: &[f32], d: ConvDims, g: &mut [f32]) {
        for (wide, row) in g.chunks_exact_mut(self.wq).zip(plane.chunks_exact(d.ow)) {
            wide[..d.ow].copy_from_slice(row);
            wide[d.ow..].fill(0.0);
        }
    }

    /// The range of the phases that tap t = ky k + kx reads for the wide grid.
    fn tap(&self, t: usize, c: &Conv2d) -> std::ops::Range<usize> {
        let (s, ky, kx) = (self.stride, t / c.k, t % c.k);
        let start = ((ky % s) * s + kx % s) * self.phase_len + ky / s * self.wq + kx / s;
        start..start + self.len
    }
}

/// Splits this thread's scratch buffer into parts of the given lengths.
fn with_parts<const K: usize, R>(lens: [usize; K], f: impl FnOnce([&mut [f32]; K]) -> R) -> R {
    with_col(lens.iter().sum(), |mut rest| {
        f(lens.map(|len| {
            let (part, tail) = std::mem::take(&mut rest).split_at_mut(len);
            rest = tail;
            part
        }))
    })
}

fn depthwise_forward(x: &[f32], w: &[f32], c: &Conv2d, d: ConvDims, y: &mut [MaybeUninit<f32>]) {
    let (hw, kk, g) = (d.h * d.w, c.k * c.k, Wide::new(c, d));
    y.par_chunks_mut(d.oh * d.ow).enumerate().with_min_len(min_items(hw)).for_each(|(nc, out)| {
        let wc = &w[(nc % c.cout) * kk..][..kk];
        with_parts([g.padded(), g.len], |[xp, wide]| {
            g.pad(&x[nc * hw..][..hw], c, d, xp);
            wide.fill(0.0);
            for (t, &wv) in wc.iter().enumerate() {
                wide.iter_mut().zip(&xp[g.tap(t, c)]).for_each(|(o, &v)| *o += wv * v);
            }
            for (row, wide) in out.chunks_exact_mut(d.ow).zip(wide.chunks_exact(g.wq)) {
                row.iter_mut().zip(wide).for_each(|(o, &v)| {
                    o.write(v);
                });
            }
        });
    });
}

fn depthwise_backward(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    c: &Conv2d,
    d: ConvDims,
    dx: &mut [MaybeUninit<f32>],
    dw: &mut [f32],
) {
    let (hw, ohw, kk, g) = (d.h * d.w, d.oh * d.ow, c.k * c.k, Wide::new(c, d));
    // dx: each tap's adjoint adds w dy into the phases; then the padding is cut off.
    dx.par_chunks_mut(hw).enumerate().with_min_len(min_items(hw)).for_each(|(nc, dxc)| {
        let wc = &w[(nc % c.cin) * kk..][..kk];
        with_parts([g.padded(), g.len], |[dxp, gw]| {
            g.widen(&dy[nc * ohw..][..ohw], d, gw);
            dxp.fill(0.0);
            for (t, &wv) in wc.iter().enumerate() {
                dxp[g.tap(t, c)].iter_mut().zip(gw.iter()).for_each(|(o, &v)| *o += wv * v);
            }
            g.unpad(dxp, c, d, dxc);
        });
    });
    // dw: each channel's taps are dot products of dy with what they read, summed over the batch in image order.
    dw.par_chunks_mut(kk).enumerate().with_min_len(min_items(d.n * hw)).for_each(|(ch, dwc)| {
        dwc.fill(0.0);
        with_parts([g.padded(), g.len], |[xp, gw]| {
            for n in 0..d.n {
                let plane = n * c.cin + ch;
                g.pad(&x[plane * hw..][..hw], c, d, xp);
                g.widen(&dy[plane * ohw..][..ohw], d, gw);
                for (t, acc) in dwc.iter_mut().enumerate() {
                    *acc += dot(gw, &xp[g.tap(t, c)]);
                }
            }
        });
    });
}

/// put(c rows + r, v) for each value v at (r, c) of src [rows, cols]: the transpose into [cols, rows], in 16 x 16
/// tiles (which stay in cache).
fn transpose(src: &[f32], rows: usize, cols: usize, mut put: impl FnMut(usize, f32)) {
    const T: usize = 16;
    for r0 in (0..rows).step_by(T) {
        for c0 in (0..cols).step_by(T) {
            for r in r0..(r0 + T).min(rows) {
                for col in c0..(c0 + T).min(cols) {
                    put(col * rows + r, src[r * cols + col]);
                }
            }
        }
    }
}

/// Calls f(o, i, t) for each output position o, input position i and tap t of a plane where the tap reads inside
/// the input, output rows first.
fn for_taps(c: &Conv2d, d: ConvDims, mut f: impl FnMut(usize, usize, usize)) {
    for oy in 0..d.oh {
        for ky in 0..c.k {
            let Some(iy) = tap(oy, ky, c, d.h) else { continue };
            for ox in 0..d.ow {
                for kx in 0..c.k {
                    if let Some(ix) = tap(ox, kx, c, d.w) {
                        f(oy * d.ow + ox, iy * d.w + ix, ky * c.k + kx);
                    }
                }
            }
        }
    }
}

/// a += w b, element-wise.
#[inline(always)]
fn axpy(a: &mut [f32], w: &[f32], b: &[f32]) {
    a.iter_mut().zip(w.iter().zip(b)).for_each(|(a, (&w, &b))| *a += w * b);
}

/// Depthwise convolution with the channels innermost: each image transposed to [h w, c], each tap of each output
/// position one pass over the channels (which vectorizes). For many channels on small planes, where a plane's
/// own loops are too short.
fn depthwise_forward_cl(x: &[f32], w: &[f32], c: &Conv2d, d: ConvDims, y: &mut [MaybeUninit<f32>]) {
    let (ch, hw, ohw, kk) = (c.cin, d.h * d.w, d.oh * d.ow, c.k * c.k);
    let mut wt = vec![0f32; kk * ch];
    transpose(w, ch, kk, |i, v| wt[i] = v);
    y.par_chunks_mut(ch * ohw).enumerate().with_min_len(min_items(ch * hw)).for_each(|(n, yn)| {
        with_parts([hw * ch, ohw * ch], |[xt, yt]| {
            transpose(&x[n * ch * hw..][..ch * hw], ch, hw, |i, v| xt[i] = v);
            yt.fill(0.0);
            for_taps(c, d, |o, i, t| axpy(&mut yt[o * ch..][..ch], &wt[t * ch..][..ch], &xt[i * ch..][..ch]));
            transpose(yt, ohw, ch, |i, v| _ = yn[i].write(v));
        });
    });
}

/// The backward of `depthwise_forward_cl`: dx per image; dw summed over the images of each chunk, then over the
/// chunks in order.
fn depthwise_backward_cl(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    c: &Conv2d,
    d: ConvDims,
    dx: &mut [MaybeUninit<f32>],
    dw: &mut [f32],
) {
    let (ch, hw, ohw, kk) = (c.cin, d.h * d.w, d.oh * d.ow, c.k * c.k);
    let mut wt = vec![0f32; kk * ch];
    transpose(w, ch, kk, |i, v| wt[i] = v);
    let partials: Vec<Vec<f32>> = dx
        .par_chunks_mut(DW_CHUNK * ch * hw)
        .enumerate()
        .map(|(chunk, dxs)| {
            let mut acc = vec![0f32; kk * ch];
            for (i, dxn) in dxs.chunks_exact_mut(ch * hw).enumerate() {
                let n = chunk * DW_CHUNK + i;
                with_parts([hw * ch, ohw * ch, hw * ch], |[xt, gt, dxt]| {
                    transpose(&x[n * ch * hw..][..ch * hw], ch, hw, |i, v| xt[i] = v);
                    transpose(&dy[n * ch * ohw..][..ch * ohw], ch, ohw, |i, v| gt[i] = v);
                    dxt.fill(0.0);
                    for_taps(c, d, |o, i, t| {
                        let g = &gt[o * ch..][..ch];
                        axpy(&mut dxt[i * ch..][..ch], &wt[t * ch..][..ch], g);
                        axpy(&mut acc[t * ch..][..ch], g, &xt[i * ch..][..ch]);
                    });
                    transpose(dxt, hw, ch, |i, v| _ = dxn[i].write(v));
                });
            }
            acc
        })
        .collect();
    sum_in_order(&partials, &mut wt);
    transpose(&wt, kk, ch, |i, v| dw[i] = v);
}

/// The dot product of two slices of one length: 16 running sums (which vectorize), added in a fixed order.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let rest: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(&x, &y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        acc.iter_mut().zip(x.iter().zip(y)).for_each(|(s, (&x, &y))| *s += x * y);
    }
    acc.iter().sum::<f32>() + rest
}
