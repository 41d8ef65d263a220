//! The small layers: activations, pooling, channel and sample scaling, add, linear, columns side by side and
//! back. Formulas, f64 gradient checks, GPU against CPU.

use crate::common::*;
use dfgpu::backend::{Act, Slots};
use dfgpu::rng::Rng;
use dfgpu::tensor::Slice;
use dfgpu::{Backend, Layout, Tensor};

const KINDS: [Act; 3] = [Act::Silu, Act::Relu, Act::Sigmoid];

#[test]
fn activations_match_formulas_and_gradients() {
    let be = cpu();
    let mut rng = Rng::new(1);
    let x = normals(&mut rng, 2 * 3 * 4 * 5, 3.0);
    let shape = [2, 3, 4, 5];
    for kind in KINDS {
        let y = be.act(&t64(&shape, Layout::Nchw, x.clone()), kind).unwrap();
        for (&v, &o) in x.iter().zip(y.host::<f64>().unwrap()) {
            let s = 1.0 / (1.0 + (-v).exp());
            let want = match kind {
                Act::Silu => v * s,
                Act::Relu => v.max(0.0),
                Act::Sigmoid => s,
            };
            assert!((o - want).abs() < 1e-15 * want.abs().max(1.0), "{kind:?}({v}) = {o}, want {want}");
        }
        let c = normals(&mut rng, x.len(), 1.0);
        let dx = be
            .act_backward(&t64(&shape, Layout::Nchw, x.clone()), &t64(&shape, Layout::Nchw, c.clone()), kind)
            .unwrap();
        let run = |xx: &[f64]| dot(&be.act(&t64(&shape, Layout::Nchw, xx.to_vec()), kind).unwrap(), &c);
        check_grads(&format!("{kind:?}"), dx.host().unwrap(), &x, 0..x.len(), run);
    }
}

#[test]
fn pooling_and_scaling_gradients() {
    let be = cpu();
    let mut rng = Rng::new(2);
    let shape = [2, 3, 4, 5];
    let x = normals(&mut rng, 120, 1.0);
    let xt = || t64(&shape, Layout::Nchw, x.clone());
    // Average pooling: the mean of each plane.
    let pooled = be.avg_pool(&xt()).unwrap();
    assert_eq!(pooled.shape(), &[2, 3]);
    assert!((pooled.host::<f64>().unwrap()[4] - x[80..100].iter().sum::<f64>() / 20.0).abs() < 1e-15);
    let c = normals(&mut rng, 6, 1.0);
    let dx = be.avg_pool_backward(&t64(&[2, 3], Layout::Plain, c.clone()), shape).unwrap();
    check_grads("avg pool", dx.host().unwrap(), &x, 0..120, |xx| {
        dot(&be.avg_pool(&t64(&shape, Layout::Nchw, xx.to_vec())).unwrap(), &c)
    });

    // Channel scale: d/dx and d/ds.
    let s = normals(&mut rng, 6, 1.0);
    let cy = normals(&mut rng, 120, 1.0);
    let run = |xx: &[f64], ss: &[f64]| {
        dot(
            &be.channel_scale(&t64(&shape, Layout::Nchw, xx.to_vec()), &t64(&[2, 3], Layout::Plain, ss.to_vec()))
                .unwrap(),
            &cy,
        )
    };
    let (dx, ds) = be
        .channel_scale_backward(&xt(), &t64(&[2, 3], Layout::Plain, s.clone()), &t64(&shape, Layout::Nchw, cy.clone()))
        .unwrap();
    check_grads("channel scale dx", dx.host().unwrap(), &x, 0..120, |xx| run(xx, &s));
    check_grads("channel scale ds", ds.host().unwrap(), &s, 0..6, |ss| run(&x, ss));

    // Add and per-sample scale.
    let sum = be.add(&xt(), &xt()).unwrap();
    assert!(sum.host::<f64>().unwrap().iter().zip(&x).all(|(a, b)| *a == 2.0 * b));
    let dropped = be.sample_scale(&xt(), &[0.0, 1.25]).unwrap();
    let d = dropped.host::<f64>().unwrap();
    assert!(d[..60].iter().all(|&v| v == 0.0) && d[60..].iter().zip(&x[60..]).all(|(a, b)| *a == 1.25 * b));
    let e = be.add(&xt(), &t64(&[2, 3], Layout::Plain, s.clone())).unwrap_err().to_string();
    assert!(e.contains("add:"), "{e}");
}

#[test]
fn columns_go_side_by_side_and_back() {
    let be = cpu();
    let mut rng = Rng::new(5);
    let (n, p, q) = (3, 4, 7);
    let (a, b) = (normals(&mut rng, n * p, 1.0), normals(&mut rng, n * q, 1.0));
    let (at, bt) = (t64(&[n, p], Layout::Plain, a.clone()), t64(&[n, q], Layout::Plain, b.clone()));
    let ab = be.concat_columns(&at, &bt).unwrap();
    assert_eq!(ab.shape(), [n, p + q]);
    let v = ab.host::<f64>().unwrap();
    for r in 0..n {
        assert_eq!(&v[r * (p + q)..][..p], &a[r * p..][..p], "row {r}: a's columns first");
        assert_eq!(&v[r * (p + q) + p..][..q], &b[r * q..][..q], "row {r}: then b's");
    }
    // The backward of the concatenation: each part's columns back, as they were.
    assert_eq!(be.columns(&ab, 0..p).unwrap().host::<f64>().unwrap(), &a[..]);
    assert_eq!(be.columns(&ab, p..p + q).unwrap().host::<f64>().unwrap(), &b[..]);
    let mid = be.columns(&ab, 2..6).unwrap();
    assert_eq!(mid.shape(), [n, 4]);
    assert!((0..n).all(|r| mid.host::<f64>().unwrap()[r * 4..][..4] == v[r * (p + q) + 2..][..4]));
    let e = be.concat_columns(&at, &t64(&[n + 1, q], Layout::Plain, vec![0.0; (n + 1) * q])).unwrap_err();
    assert!(e.to_string().contains("concat columns"), "{e}");
    let e = be.columns(&ab, 5..p + q + 1).unwrap_err().to_string();
    assert!(e.contains("columns 5..12 of a matrix of 11 columns"), "{e}");
}

#[test]
fn linear_gradients() {
    let be = cpu();
    let mut rng = Rng::new(3);
    let (n, k, m) = (3, 5, 4);
    let x = normals(&mut rng, n * k, 1.0);
    // Weights at 2.., bias right after, in one buffer.
    let mut p = vec![0.0; 2];
    p.extend(normals(&mut rng, m * k + m, 1.0));
    let (rw, rb) = (2..2 + m * k, 2 + m * k..2 + m * k + m);
    let run = |xx: &[f64], pp: &[f64]| {
        let pt = t64(&[pp.len()], Layout::Plain, pp.to_vec());
        be.linear(
            &t64(&[n, k], Layout::Plain, xx.to_vec()),
            &Slice { buf: &pt, range: rw.clone() },
            &Slice { buf: &pt, range: rb.clone() },
            m,
        )
        .unwrap()
    };
    let y = run(&x, &p);
    let want0: f64 = (0..k).map(|c| p[2 + c] * x[c]).sum::<f64>() + p[rb.start];
    assert!((y.host::<f64>().unwrap()[0] - want0).abs() < 1e-14);
    let cy = normals(&mut rng, n * m, 1.0);
    let pt = t64(&[p.len()], Layout::Plain, p.clone());
    let mut grads = t64(&[p.len()], Layout::Plain, vec![f64::NAN; p.len()]);
    let (xt, dyt) = (t64(&[n, k], Layout::Plain, x.clone()), t64(&[n, m], Layout::Plain, cy.clone()));
    let slots = Slots { buf: &mut grads, at: [rw.clone(), rb.clone()] };
    let dx = be.linear_backward(&xt, &Slice { buf: &pt, range: rw.clone() }, &dyt, slots).unwrap();
    check_grads("linear dx", dx.host().unwrap(), &x, 0..x.len(), |xx| dot(&run(xx, &p), &cy));
    check_grads("linear dw db", grads.host().unwrap(), &p, 2..p.len(), |pp| dot(&run(&x, pp), &cy));
}

#[test]
#[ignore = "needs a CUDA device: a GPU, or the emulator (scripts/emu.sh)"]
fn gpu_matches_cpu() {
    let (gpu, cpu) = (gpu(), cpu());
    let mut rng = Rng::new(4);
    let shape = [4, 24, 14, 14];
    let numel: usize = shape.iter().product();
    let t = |v: Vec<f64>, s: &[usize], l| Tensor::from_vec(s, l, to_f32(&v)).unwrap();
    let x = t(normals(&mut rng, numel, 2.0), &shape, Layout::Nchw);
    let dy = t(normals(&mut rng, numel, 1.0), &shape, Layout::Nchw);
    let s = t(normals(&mut rng, 96, 1.0), &[4, 24], Layout::Plain);
    let pooled_dy = t(normals(&mut rng, 96, 1.0), &[4, 24], Layout::Plain);
    let (k, m) = (24, 6);
    let p = t(normals(&mut rng, m * k + m, 0.5), &[m * k + m], Layout::Plain);
    let lin_dy = t(normals(&mut rng, 4 * m, 1.0), &[4, m], Layout::Plain);
    let run = |be: &dyn Backend| -> Vec<Vec<f32>> {
        let up = |x: &Tensor| be.upload(x).unwrap();
        let (x, dy, s, pdy, p, ldy) = (up(&x), up(&dy), up(&s), up(&pooled_dy), up(&p), up(&lin_dy));
        let mut out: Vec<Tensor> = Vec::new();
        for kind in KINDS {
            out.push(be.act(&x, kind).unwrap());
            out.push(be.act_backward(&x, &dy, kind).unwrap());
        }
        let pooled = be.avg_pool(&x).unwrap();
        out.push(be.avg_pool_backward(&pdy, shape).unwrap());
        let (dx, ds) = be.channel_scale_backward(&x, &s, &dy).unwrap();
        out.extend([pooled, be.channel_scale(&x, &s).unwrap(), dx, ds, be.add(&x, &dy).unwrap()]);
        out.push(be.sample_scale(&x, &[1.0, 0.0, 1.25, 0.5]).unwrap());
        let (w, b) = (Slice { buf: &p, range: 0..m * k }, Slice { buf: &p, range: m * k..m * k + m });
        out.push(be.linear(&pooled_x(be, &x), &w, &b, m).unwrap());
        let mut grads =
            be.upload(&Tensor::from_vec(&[m * k + m], Layout::Plain, vec![0f32; m * k + m]).unwrap()).unwrap();
        let slots = Slots { buf: &mut grads, at: [0..m * k, m * k..m * k + m] };
        out.push(be.linear_backward(&pooled_x(be, &x), &w, &ldy, slots).unwrap());
        out.push(grads);
        let both = be.concat_columns(&s, &pdy).unwrap();
        out.push(be.columns(&both, 5..40).unwrap());
        out.push(both);
        out.iter().map(|t| be.download(t).unwrap().host::<f32>().unwrap().to_vec()).collect()
    };
    let (want, got) = (run(&cpu), race_checked("layers", || run(&gpu)));
    // Output 10 is channel_scale_backward's ds: each a sum over 196 products x dy that cancel (|ds| about 0.4
    // against sum |x dy| about 300), summed in different orders on the two sides. f32 rounding of such a sum is
    // a few 1e-8 of sum |x dy|, so it gets a floor of 1e-7 of that sum (about 3e-5) instead of 1e-6.
    let (xh, dyh) = (x.host::<f32>().unwrap(), dy.host::<f32>().unwrap());
    let hw = shape[2] * shape[3];
    let ds_floor = (0..shape[0] * shape[1])
        .map(|nc| (nc * hw..(nc + 1) * hw).map(|i| (xh[i] * dyh[i]).abs() as f64).sum::<f64>())
        .fold(0.0, f64::max)
        * 1e-7;
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let w: Vec<f64> = w.iter().map(|&v| v as f64).collect();
        assert_close(&format!("output {i}"), g, &w, 1e-5, if i == 10 { ds_floor } else { 1e-6 });
    }
    // Copies: the same bits.
    let n = want.len();
    assert_bitwise("columns", &got[n - 2], &want[n - 2]);
    assert_bitwise("concat columns", &got[n - 1], &want[n - 1]);
}

/// The pooled features, the linear layer's natural input.
fn pooled_x(be: &dyn Backend, x: &Tensor) -> Tensor {
    be.avg_pool(x).unwrap()
}

/// The fast f32 activations against the reference in f64 on the same values: random (spread 3), natural-like,
/// and every 1/8 from -100 to 100 with the signed zeros. The fast sigmoid is a handful of f32 roundings of the
/// exact one (e^-|x| within 2 ulps, a division, a product): relative 1e-6 of each value is a margin of 2 or more
/// on that; below x = -87.3, e^-|x| leaves f32's normal range and flushes to 0, hence an absolute 1e-30 (the
/// values lost are under 1e-36). The gradients multiply dy by 1 + x sigmoid(-x), which cancels
/// near SiLU's minimum (x = -1.28) and is then off by a few ulps of 1: an absolute 1e-6 times |dy| (at most 4
/// here) on top. ReLU is exact.
#[test]
fn fast_activations_match_the_reference() {
    let (fast, reference) = (fast_cpu(), cpu());
    let mut rng = Rng::new(5);
    let grid: Vec<f64> = (-800..=800).map(|i| i as f64 / 8.0).chain([0.0, -0.0]).collect();
    for (kind_of_input, x) in [
        ("random", normals(&mut rng, 4 * 6 * 9 * 11, 3.0)),
        ("natural", smooth_planes(&mut rng, 4 * 6, 9, 11)),
        ("grid", grid),
    ] {
        let x = to_f32(&x).iter().map(|&v| v as f64).collect::<Vec<f64>>();
        let dy: Vec<f64> =
            to_f32(&normals(&mut rng, x.len(), 1.0)).iter().map(|&v| (v as f64).clamp(-4.0, 4.0)).collect();
        let shape = [1, 1, 1, x.len()];
        for kind in KINDS {
            let tag = format!("{kind:?} {kind_of_input}");
            let x32 = Tensor::from_vec(&shape, Layout::Nchw, to_f32(&x)).unwrap();
            let dy32 = Tensor::from_vec(&shape, Layout::Nchw, to_f32(&dy)).unwrap();
            let (x64, dy64) = (t64(&shape, Layout::Nchw, x.clone()), t64(&shape, Layout::Nchw, dy.clone()));
            let y = fast.act(&x32, kind).unwrap();
            assert_close(
                &format!("{tag} y"),
                y.host().unwrap(),
                reference.act(&x64, kind).unwrap().host().unwrap(),
                1e-6,
                1e-30,
            );
            let dx = fast.act_backward(&x32, &dy32, kind).unwrap();
            let want = reference.act_backward(&x64, &dy64, kind).unwrap();
            assert_close(&format!("{tag} dx"), dx.host().unwrap(), want.host().unwrap(), 1e-6, 1e-6 * 4.0);
        }
    }
}

/// The fast linear layer (one sgemm each way) against the reference in f64 on the same values, at the shapes of
/// the SE blocks (batch 32, 48 to 288 inputs), a single row and odd sizes. Each value is held to 1e-5 of the sum of
/// its terms' magnitudes (the layer on |inputs|): an f32 sum of K products is off by about sqrt(K) roundings (u =
/// 6e-8) of that, K at most 288 here (the weight gradient sums over 32 rows): sqrt(K) u = 1e-6, a margin of 10.
#[test]
fn fast_linear_matches_the_reference() {
    let (fast, reference) = (fast_cpu(), cpu());
    let mut rng = Rng::new(6);
    for (n, k, m) in [(32, 48, 12), (32, 288, 72), (1, 7, 3), (5, 13, 9)] {
        let (x, w, b, dy) = (
            f32_exact(normals(&mut rng, n * k, 1.0)),
            f32_exact(normals(&mut rng, m * k, 0.5)),
            f32_exact(normals(&mut rng, m, 0.5)),
            f32_exact(normals(&mut rng, n * m, 1.0)),
        );
        // [y, dx, dw and db] of one backend, in f32 or f64, as f64 values. Weights and biases in one buffer, their
        // gradients in a NaN-filled one: a slot left unwritten fails.
        let pass = |be: &dyn Backend, x: &[f64], w: &[f64], b: &[f64], dy: &[f64], f32s: bool| -> Vec<Vec<f64>> {
            let t = |shape: &[usize], v: &[f64]| host_in(f32s, shape, Layout::Plain, v);
            let (xt, pt, dyt) = (t(&[n, k], x), t(&[m * k + m], &[w, b].concat()), t(&[n, m], dy));
            let (ws, bs) = (Slice { buf: &pt, range: 0..m * k }, Slice { buf: &pt, range: m * k..m * k + m });
            let y = be.linear(&xt, &ws, &bs, m).unwrap();
            let mut grads = t(&[m * k + m], &vec![f64::NAN; m * k + m]);
            let dx = be
                .linear_backward(&xt, &ws, &dyt, Slots { buf: &mut grads, at: [0..m * k, m * k..m * k + m] })
                .unwrap();
            vec![values(f32s, &y), values(f32s, &dx), values(f32s, &grads)]
        };
        let abs = |v: &[f64]| v.iter().map(|a| a.abs()).collect::<Vec<f64>>();
        let got = pass(&fast, &x, &w, &b, &dy, true);
        let want = pass(&reference, &x, &w, &b, &dy, false);
        let scale = pass(&reference, &abs(&x), &abs(&w), &abs(&b), &abs(&dy), false);
        for (i, what) in ["y", "dx", "dw db"].iter().enumerate() {
            assert_scaled(&format!("linear {n}x{k}->{m} {what}"), &got[i], &want[i], &scale[i], 1e-5);
        }
    }
}
