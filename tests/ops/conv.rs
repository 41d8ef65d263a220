//! Convolution: the reference against a direct formula, f64 gradient checks, GPU (cuDNN) against CPU.

use crate::common::*;
use dfgpu::backend::Conv2d;
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
        let dx = be
            .conv2d_backward(
                &t64(&[n, cin, h, w], Layout::Nchw, x.clone()),
                &Slice { buf: &wt, range: range.clone() },
                &t64(y.shape(), Layout::Nchw, cy.clone()),
                &c,
                &mut grads,
                range.clone(),
            )
            .unwrap();
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
#[ignore = "needs a CUDA GPU"]
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
        let dxc = cpu
            .conv2d_backward(&x, &Slice { buf: &wt, range: range.clone() }, &dy, &c, &mut gc, range.clone())
            .unwrap();

        let (xg, wg, dyg) = (gpu.upload(&x).unwrap(), gpu.upload(&wt).unwrap(), gpu.upload(&dy).unwrap());
        let mut gg = gpu.upload(&gc).unwrap();
        let yg = gpu.conv2d(&xg, &Slice { buf: &wg, range: range.clone() }, &c).unwrap();
        let dxg = gpu
            .conv2d_backward(&xg, &Slice { buf: &wg, range: range.clone() }, &dyg, &c, &mut gg, range.clone())
            .unwrap();
        let f64s = |t: &Tensor| t.host::<f32>().unwrap().iter().map(|&v| v as f64).collect::<Vec<f64>>();
        let tag = format!("{c:?}");
        assert_close(&format!("{tag} y"), gpu.download(&yg).unwrap().host().unwrap(), &f64s(&y), 1e-4, 1e-5);
        assert_close(&format!("{tag} dx"), gpu.download(&dxg).unwrap().host().unwrap(), &f64s(&dxc), 1e-4, 1e-5);
        let gw = gpu.download(&gg).unwrap();
        assert_close(
            &format!("{tag} dw"),
            &gw.host::<f32>().unwrap()[range.clone()],
            &f64s(&gc)[range.clone()],
            1e-4,
            1e-4,
        );
    }
}
