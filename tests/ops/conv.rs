//! Convolution: the reference against a direct formula, f64 gradient checks, GPU (cuDNN) against CPU.

use crate::common::*;
use dfgpu::backend::{Conv2d, ConvBackward, Slots};
use dfgpu::rng::Rng;
use dfgpu::tensor::Slice;
use dfgpu::{Backend, Layout, Tensor};

/// Regular, strided, depthwise, grouped, pointwise, and a 5x5 depthwise as EfficientNet's.
const CONVS: [(usize, usize, usize, usize, usize); 6] =
    [(3, 4, 3, 1, 1), (3, 5, 3, 2, 1), (4, 4, 3, 1, 4), (4, 6, 5, 2, 2), (6, 3, 1, 1, 1), (6, 6, 5, 1, 6)];

/// The weights sit at an offset inside a larger buffer, as in a model's flat parameters.
const OFFSET: usize = 5;

fn weights(c: &Conv2d, rng: &mut Rng) -> Vec<f64> {
    let mut v = vec![0.0; OFFSET];
    v.extend(normals(rng, c.weight_len(), 0.5));
    v
}

/// y[n][co][oy][ox] = sum w[co][ci][ky][kx] x[n][g cin_g + ci][oy s + ky - p][ox s + kx - p], zero outside.
fn direct(x: &[f64], w: &[f64], c: &Conv2d, [n, h, wd]: [usize; 3]) -> Vec<f64> {
    let (oh, ow, p) = (c.out_size(h), c.out_size(wd), c.pad() as isize);
    let (cin_g, cout_g) = (c.cin / c.groups, c.cout / c.groups);
    let mut y = Vec::new();
    for i in 0..n {
        for co in 0..c.cout {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = 0.0;
                    for ci in 0..cin_g {
                        for ky in 0..c.k {
                            for kx in 0..c.k {
                                let (iy, ix) = ((oy * c.stride + ky) as isize - p, (ox * c.stride + kx) as isize - p);
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let chan = (co / cout_g) * cin_g + ci;
                                acc += w[OFFSET + ((co * cin_g + ci) * c.k + ky) * c.k + kx]
                                    * x[((i * c.cin + chan) * h + iy as usize) * wd + ix as usize];
                            }
                        }
                    }
                    y.push(acc);
                }
            }
        }
    }
    y
}

#[test]
fn reference_matches_the_direct_formula() {
    let be = cpu();
    let mut rng = Rng::new(1);
    for (cin, cout, k, s, g) in CONVS {
        let c = Conv2d::new(cin, cout, k, s, g);
        let (n, h, w) = (2, 7, 6);
        let x = normals(&mut rng, n * cin * h * w, 1.0);
        let wv = weights(&c, &mut rng);
        let wt = t64(&[wv.len()], Layout::Plain, wv.clone());
        let y = be
            .conv2d(&t64(&[n, cin, h, w], Layout::Nchw, x.clone()), &Slice { buf: &wt, range: OFFSET..wv.len() }, &c)
            .unwrap();
        assert_eq!(y.shape(), &[n, cout, c.out_size(h), c.out_size(w)]);
        let want = direct(&x, &wv, &c, [n, h, w]);
        for (a, b) in y.host::<f64>().unwrap().iter().zip(&want) {
            assert!((a - b).abs() < 1e-12, "{c:?}: {a} vs {b}");
        }
    }
}

#[test]
fn gradients_match_central_differences_in_f64() {
    let be = cpu();
    let mut rng = Rng::new(2);
    for (cin, cout, k, s, g) in CONVS {
        let c = Conv2d::new(cin, cout, k, s, g);
        let (n, h, w) = (2, 7, 6);
        let x = normals(&mut rng, n * cin * h * w, 1.0);
        let wv = weights(&c, &mut rng);
        let range = OFFSET..wv.len();
        let run = |x: &[f64], wv: &[f64]| {
            let wt = t64(&[wv.len()], Layout::Plain, wv.to_vec());
            be.conv2d(&t64(&[n, cin, h, w], Layout::Nchw, x.to_vec()), &Slice { buf: &wt, range: range.clone() }, &c)
                .unwrap()
        };
        let y = run(&x, &wv);
        let cy = normals(&mut rng, y.numel(), 1.0);
        let wt = t64(&[wv.len()], Layout::Plain, wv.clone());
        let mut grads = t64(&[wv.len()], Layout::Plain, vec![f64::NAN; wv.len()]);
        let (xt, dyt) = (t64(&[n, cin, h, w], Layout::Nchw, x.clone()), t64(y.shape(), Layout::Nchw, cy.clone()));
        let a = ConvBackward { x: &xt, w: Slice { buf: &wt, range: range.clone() }, dy: &dyt, c: &c };
        let dx = be.conv2d_backward(&a, Slots { buf: &mut grads, at: [range.clone()] }).unwrap();
        let tag = format!("{c:?}");
        check_grads(&format!("{tag} dx"), dx.host().unwrap(), &x, 0..x.len(), |xx| dot(&run(xx, &wv), &cy));
        check_grads(&format!("{tag} dw"), grads.host().unwrap(), &wv, range.clone(), |ww| dot(&run(&x, ww), &cy));
    }
}

#[test]
fn a_mismatched_input_is_an_error() {
    let c = Conv2d::new(3, 4, 3, 1, 1);
    let wt = Tensor::from_vec(&[c.weight_len()], Layout::Plain, vec![0f32; c.weight_len()]).unwrap();
    let x = Tensor::from_vec(&[1, 2, 5, 5], Layout::Nchw, vec![0f32; 50]).unwrap();
    let e = cpu().conv2d(&x, &Slice { buf: &wt, range: 0..c.weight_len() }, &c).unwrap_err().to_string();
    assert!(e.contains("expected NCHW with 3 channels"), "{e}");
}

#[test]
#[ignore = "needs a CUDA device: a GPU, or the emulator (scripts/emu.sh)"]
fn gpu_matches_cpu() {
    let (gpu, cpu) = (gpu(), cpu());
    let mut rng = Rng::new(3);
    let big = [(32, 32, 3, 1, 32), (16, 96, 1, 1, 1), (96, 96, 5, 2, 96), (3, 32, 3, 2, 1)];
    for (cin, cout, k, s, g) in CONVS.into_iter().chain(big) {
        let c = Conv2d::new(cin, cout, k, s, g);
        let (n, h, w) = if cin >= 16 { (4, 28, 28) } else { (3, 9, 8) };
        let x =
            Tensor::from_vec(&[n, cin, h, w], Layout::Nchw, to_f32(&normals(&mut rng, n * cin * h * w, 1.0))).unwrap();
        let wv = to_f32(&weights(&c, &mut rng));
        let wt = Tensor::from_vec(&[wv.len()], Layout::Plain, wv.clone()).unwrap();
        let range = OFFSET..wv.len();
        let y = cpu.conv2d(&x, &Slice { buf: &wt, range: range.clone() }, &c).unwrap();
        let dy = Tensor::from_vec(y.shape(), Layout::Nchw, to_f32(&normals(&mut rng, y.numel(), 1.0))).unwrap();
        let mut gc = Tensor::from_vec(&[wv.len()], Layout::Plain, vec![0f32; wv.len()]).unwrap();
        let a = ConvBackward { x: &x, w: Slice { buf: &wt, range: range.clone() }, dy: &dy, c: &c };
        let dxc = cpu.conv2d_backward(&a, Slots { buf: &mut gc, at: [range.clone()] }).unwrap();

        let tag = format!("{c:?}");
        let got = race_checked(&format!("conv {tag}"), || {
            let (xg, wg, dyg) = (gpu.upload(&x).unwrap(), gpu.upload(&wt).unwrap(), gpu.upload(&dy).unwrap());
            let mut gg = gpu.upload(&gc).unwrap();
            let yg = gpu.conv2d(&xg, &Slice { buf: &wg, range: range.clone() }, &c).unwrap();
            let a = ConvBackward { x: &xg, w: Slice { buf: &wg, range: range.clone() }, dy: &dyg, c: &c };
            let dxg = gpu.conv2d_backward(&a, Slots { buf: &mut gg, at: [range.clone()] }).unwrap();
            [yg, dxg, gg].iter().map(|t| gpu.download(t).unwrap().host::<f32>().unwrap().to_vec()).collect::<Vec<_>>()
        });
        let f64s = |t: &Tensor| t.host::<f32>().unwrap().iter().map(|&v| v as f64).collect::<Vec<f64>>();
        assert_close(&format!("{tag} y"), &got[0], &f64s(&y), 1e-4, 1e-5);
        assert_close(&format!("{tag} dx"), &got[1], &f64s(&dxc), 1e-4, 1e-5);
        assert_close(&format!("{tag} dw"), &got[2][range.clone()], &f64s(&gc)[range.clone()], 1e-4, 1e-4);
    }
}

/// The fast path's cases: the model's shapes (stem, frequency stages, 1x1 expand and project, depthwise 3x3 and
/// 5x5 at stride 1 and 2, on planes and, from 32 channels, channels innermost), a strided 1x1 (through im2col),
/// grouped ones, and a channel multiplier (groups = cin < cout: not the depthwise loops).
const FAST_CONVS: [(usize, usize, usize, usize, usize); 17] = [
    (3, 8, 3, 2, 1),
    (6, 16, 3, 2, 1),
    (5, 7, 3, 1, 1),
    (8, 24, 1, 1, 1),
    (24, 8, 1, 1, 1),
    (6, 6, 1, 2, 1),
    (12, 12, 3, 1, 12),
    (12, 12, 3, 2, 12),
    (12, 12, 5, 1, 12),
    (12, 12, 5, 2, 12),
    (32, 32, 3, 1, 32),
    (32, 32, 3, 2, 32),
    (40, 40, 5, 1, 40),
    (40, 40, 5, 2, 40),
    (8, 12, 3, 1, 4),
    (4, 6, 5, 2, 2),
    (6, 12, 3, 1, 6),
];

/// y, dx and dw of one convolution on `be`, in f32 or f64, as f64 values. The weights and their gradient slot sit
/// at OFFSET of their buffers; the gradient buffer starts as NaN, and what lies outside the slot must stay NaN.
fn conv_pass(
    be: &dyn Backend,
    c: &Conv2d,
    shape: [usize; 4],
    x: &[f64],
    w: &[f64],
    dy: &[f64],
    f32s: bool,
) -> [Vec<f64>; 3] {
    let t = |shape: &[usize], layout, v: &[f64]| host_in(f32s, shape, layout, v);
    let [n, _, h, wd] = shape;
    let (xt, wt) = (t(&shape, Layout::Nchw, x), t(&[w.len()], Layout::Plain, w));
    let ws = Slice { buf: &wt, range: OFFSET..w.len() };
    let y = be.conv2d(&xt, &ws, c).unwrap();
    let dyt = t(&[n, c.cout, c.out_size(h), c.out_size(wd)], Layout::Nchw, dy);
    let mut grads = t(&[w.len()], Layout::Plain, &vec![f64::NAN; w.len()]);
    let a = ConvBackward { x: &xt, w: ws, dy: &dyt, c };
    let slot = OFFSET..w.len();
    let dx = be.conv2d_backward(&a, Slots { buf: &mut grads, at: [slot] }).unwrap();
    let g = values(f32s, &grads);
    assert!(g[..OFFSET].iter().all(|v| v.is_nan()), "{c:?}: wrote outside its gradient slot");
    [values(f32s, &y), values(f32s, &dx), g[OFFSET..].to_vec()]
}

/// The fast f32 convolution (forward, dx, dw) against the reference in f64 on the same values, on random and
/// natural-like inputs (smooth, positive planes: sums without cancellation), at an odd size and one smaller than
/// the 5x5 kernels. An f32 sum of K products is off by about sqrt(K) roundings (u = 6e-8) of the sum of their
/// magnitudes, K u at worst; K is at most 429 here (the weight gradient's sum over 3 x 13 x 11 outputs), whose
/// sqrt(K) u is 1.2e-6: 1e-5 of the scale leaves a margin of 8.
#[test]
fn fast_convolution_matches_the_reference() {
    let (fast, reference) = (fast_cpu(), cpu());
    let mut rng = Rng::new(4);
    for (cin, cout, k, s, g) in FAST_CONVS {
        let c = Conv2d::new(cin, cout, k, s, g);
        for (n, h, w) in [(3, 13, 11), (2, 2, 3)] {
            let shape = [n, cin, h, w];
            let ylen = n * cout * c.out_size(h) * c.out_size(w);
            for natural in [false, true] {
                // Values that f32 holds exactly, so that both sides see the same inputs.
                let x = f32_exact(match natural {
                    true => smooth_planes(&mut rng, n * cin, h, w),
                    false => normals(&mut rng, n * cin * h * w, 1.0),
                });
                let wv = f32_exact(weights(&c, &mut rng));
                let dy = f32_exact(match natural {
                    true => smooth_planes(&mut rng, n * cout, c.out_size(h), c.out_size(w)),
                    false => normals(&mut rng, ylen, 1.0),
                });
                let abs = |v: &[f64]| v.iter().map(|a| a.abs()).collect::<Vec<f64>>();
                let got = conv_pass(&fast, &c, shape, &x, &wv, &dy, true);
                let want = conv_pass(&reference, &c, shape, &x, &wv, &dy, false);
                let scale = conv_pass(&reference, &c, shape, &abs(&x), &abs(&wv), &abs(&dy), false);
                for (i, what) in ["y", "dx", "dw"].iter().enumerate() {
                    let tag = format!("{c:?} {shape:?} natural={natural} {what}");
                    assert_scaled(&tag, &got[i], &want[i], &scale[i], 1e-5);
                }
            }
        }
    }
}
