//! Batch norm: training statistics and running updates against hand-computed values, f64 gradient checks,
//! GPU against CPU.

use crate::common::*;
use dfgpu::backend::BatchNorm;
use dfgpu::rng::Rng;
use dfgpu::tensor::Slice;
use dfgpu::{Backend, Layout, Tensor};

/// gamma at 0..c, beta at c..2c of one parameter buffer; running mean at 0..c, var at c..2c of the state.
fn params(c: usize, rng: &mut Rng) -> Vec<f64> {
    let mut p: Vec<f64> = (0..c).map(|_| 1.0 + 0.3 * rng.normal()).collect();
    p.extend(normals(rng, c, 0.5));
    p
}

#[test]
fn training_normalizes_and_updates_running_statistics_as_pytorch() {
    let be = cpu();
    // One channel, values 1..=4: mean 2.5, biased var 1.25, unbiased 5/3.
    let x = t64(&[2, 1, 1, 2], Layout::Nchw, vec![1.0, 2.0, 3.0, 4.0]);
    let p = t64(&[2], Layout::Plain, vec![2.0, 0.5]);
    let mut state = t64(&[2], Layout::Plain, vec![0.0, 1.0]);
    let bn = BatchNorm::new(1);
    let (y, saved) = be
        .batch_norm_train(
            &x,
            &Slice { buf: &p, range: 0..1 },
            &Slice { buf: &p, range: 1..2 },
            &bn,
            &mut state,
            [0..1, 1..2],
        )
        .unwrap();
    let is = 1.0 / (1.25f64 + 1e-5).sqrt();
    for (i, &v) in y.host::<f64>().unwrap().iter().enumerate() {
        assert!((v - ((i as f64 + 1.0 - 2.5) * is * 2.0 + 0.5)).abs() < 1e-12);
    }
    assert!((saved.mean.host::<f64>().unwrap()[0] - 2.5).abs() < 1e-15);
    let s = state.host::<f64>().unwrap();
    // momentum is an f32 (0.1 to 1e-8): the comparison allows for it.
    assert!((s[0] - 0.25).abs() < 1e-8 && (s[1] - (0.9 + 0.1 * 5.0 / 3.0)).abs() < 1e-8, "{s:?}");
    // Inference with those running statistics.
    let y = be
        .batch_norm_eval(
            &x,
            &Slice { buf: &p, range: 0..1 },
            &Slice { buf: &p, range: 1..2 },
            &bn,
            &Slice { buf: &state, range: 0..1 },
            &Slice { buf: &state, range: 1..2 },
        )
        .unwrap();
    let want = (1.0 - s[0]) / (s[1] + 1e-5).sqrt() * 2.0 + 0.5;
    assert!((y.host::<f64>().unwrap()[0] - want).abs() < 1e-12);
}

#[test]
fn training_gradients_match_central_differences_in_f64() {
    let be = cpu();
    let mut rng = Rng::new(1);
    let (n, c, h, w) = (3, 4, 3, 5);
    let x = normals(&mut rng, n * c * h * w, 2.0);
    let p = params(c, &mut rng);
    let bn = BatchNorm::new(c);
    let run = |x: &[f64], p: &[f64]| {
        let pt = t64(&[2 * c], Layout::Plain, p.to_vec());
        let mut st = t64(&[2 * c], Layout::Plain, vec![0.0; 2 * c]);
        let (g, b) = (Slice { buf: &pt, range: 0..c }, Slice { buf: &pt, range: c..2 * c });
        be.batch_norm_train(&t64(&[n, c, h, w], Layout::Nchw, x.to_vec()), &g, &b, &bn, &mut st, [0..c, c..2 * c])
            .unwrap()
    };
    let (y, saved) = run(&x, &p);
    let cy = normals(&mut rng, y.numel(), 1.0);
    let pt = t64(&[2 * c], Layout::Plain, p.clone());
    let mut grads = t64(&[2 * c], Layout::Plain, vec![f64::NAN; 2 * c]);
    let dx = be
        .batch_norm_backward(
            &t64(&[n, c, h, w], Layout::Nchw, x.clone()),
            &Slice { buf: &pt, range: 0..c },
            &saved,
            &t64(y.shape(), Layout::Nchw, cy.clone()),
            &mut grads,
            0..c,
            c..2 * c,
        )
        .unwrap();
    check_grads("bn dx", dx.host().unwrap(), &x, 0..x.len(), |xx| dot(&run(xx, &p).0, &cy));
    check_grads("bn dgamma, dbeta", grads.host().unwrap(), &p, 0..2 * c, |pp| dot(&run(&x, pp).0, &cy));
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn gpu_matches_cpu() {
    let (gpu, cpu) = (gpu(), cpu());
    let mut rng = Rng::new(2);
    for (n, c, h, w) in [(2, 3, 5, 4), (8, 32, 28, 28), (1, 16, 7, 7)] {
        let x = Tensor::from_vec(&[n, c, h, w], Layout::Nchw, to_f32(&normals(&mut rng, n * c * h * w, 3.0))).unwrap();
        let p = Tensor::from_vec(&[2 * c], Layout::Plain, to_f32(&params(c, &mut rng))).unwrap();
        let st0 = Tensor::from_vec(&[2 * c], Layout::Plain, [vec![0.1f32; c], vec![0.9f32; c]].concat()).unwrap();
        let dy = Tensor::from_vec(&[n, c, h, w], Layout::Nchw, to_f32(&normals(&mut rng, n * c * h * w, 1.0))).unwrap();
        let bn = BatchNorm::new(c);
        let mut results = Vec::new();
        for be in [&cpu as &dyn Backend, &gpu] {
            let (x, p, dy) = (be.upload(&x).unwrap(), be.upload(&p).unwrap(), be.upload(&dy).unwrap());
            let mut st = be.upload(&st0).unwrap();
            let (g, b) = (Slice { buf: &p, range: 0..c }, Slice { buf: &p, range: c..2 * c });
            let (y, saved) = be.batch_norm_train(&x, &g, &b, &bn, &mut st, [0..c, c..2 * c]).unwrap();
            let mut grads = be.upload(&Tensor::from_vec(&[2 * c], Layout::Plain, vec![0f32; 2 * c]).unwrap()).unwrap();
            let dx = be.batch_norm_backward(&x, &g, &saved, &dy, &mut grads, 0..c, c..2 * c).unwrap();
            let ye = be
                .batch_norm_eval(
                    &x,
                    &g,
                    &b,
                    &bn,
                    &Slice { buf: &st, range: 0..c },
                    &Slice { buf: &st, range: c..2 * c },
                )
                .unwrap();
            results.push([y, dx, grads, st, ye].map(|t| be.download(&t).unwrap().host::<f32>().unwrap().to_vec()));
        }
        let tag = format!("{n}x{c}x{h}x{w}");
        for (name, (got, want)) in
            ["y", "dx", "dgamma dbeta", "running", "eval y"].iter().zip(results[1].iter().zip(&results[0]))
        {
            let want: Vec<f64> = want.iter().map(|&v| v as f64).collect();
            assert_close(&format!("{tag} {name}"), got, &want, 1e-4, 1e-5);
        }
    }
}
