use crate::common::*;
use dfgpu::backend::head::Mode;
use dfgpu::model::efficientnet::{EfficientNet, EfficientNetConfig, MbConv};
use dfgpu::model::layers::{Builder, Bwd, Fwd};
use dfgpu::rng::Rng;
use dfgpu::{Layout, Tensor};
use std::sync::Arc;

fn count(b: &Builder) -> usize {
    b.params.entries().iter().map(|e| e.len()).sum()
}

#[test]
fn b0_has_timms_parameters_names_and_shapes() {
    let mut b = Builder::default();
    let net = EfficientNet::new(&mut b, EfficientNetConfig::named("b0").unwrap(), "");
    // timm's efficientnet_b0 has 5,288,548 parameters, of which the 1000-class classifier holds 1,281,000.
    assert_eq!(count(&b), 5_288_548 - 1_281_000);
    assert_eq!(net.features, 1280);
    let shape = |n: &str| b.params.get(n).unwrap().shape.clone();
    assert_eq!(shape("conv_stem.weight"), [32, 3, 3, 3]);
    assert_eq!(shape("blocks.0.0.se.conv_reduce.weight"), [8, 32, 1, 1]);
    assert_eq!(shape("blocks.0.0.conv_pw.weight"), [16, 32, 1, 1]);
    assert_eq!(shape("blocks.1.0.conv_pw.weight"), [96, 16, 1, 1]);
    assert_eq!(shape("blocks.1.0.se.conv_reduce.weight"), [4, 96, 1, 1]);
    assert_eq!(shape("blocks.2.1.conv_dw.weight"), [240, 1, 5, 5]);
    assert_eq!(shape("blocks.6.0.conv_pwl.weight"), [320, 1152, 1, 1]);
    assert_eq!(shape("conv_head.weight"), [1280, 320, 1, 1]);
    assert!(b.state.get("blocks.5.3.bn3.running_var").is_ok());
    assert!(b.params.get("blocks.5.4.bn1.weight").is_err(), "stage 6 of B0 has 4 blocks");
}

#[test]
fn compound_scaling_rounds_as_timm() {
    let b4 = EfficientNetConfig::named("b4").unwrap();
    assert_eq!((b4.channels(32), b4.channels(1280), b4.repeats(4), b4.resolution), (48, 1792, 8, 380));
    let tiny = EfficientNetConfig::named("tiny").unwrap();
    assert_eq!((tiny.channels(32), tiny.channels(16), tiny.channels(1280), tiny.repeats(4)), (8, 8, 320, 2));
    let e = EfficientNetConfig::named("b9").unwrap_err().to_string();
    assert!(e.contains("unknown EfficientNet 'b9'"), "{e}");
}

/// A whole inverted-residual block with SE, a residual and drop-connect, in training mode: every parameter's
/// gradient and the input's against central differences in f64.
#[test]
fn an_mbconv_block_with_se_and_residual_matches_central_differences() {
    let be = cpu();
    let mut rng = Rng::new(1);
    let mut b = Builder::default();
    let blk = MbConv::new(&mut b, "blk", 4, 4, 3, 3, 1, 0.5, 0);
    let (n, c, h, w) = (3, 4, 5, 5);
    let x = normals(&mut rng, n * c * h * w, 1.0);
    let mut p = normals(&mut rng, b.params.total(), 0.4);
    for e in b.params.entries().iter().filter(|e| e.name.contains("bn") && e.name.ends_with("weight")) {
        p[e.range()].iter_mut().for_each(|v| *v += 1.0);
    }
    let seed = 7; // drop-connect drops some samples of the batch: the gradient check covers both paths
    let forward = |x: &[f64], p: &[f64]| {
        let pt = t64(&[p.len()], Layout::Plain, p.to_vec());
        let mut st = t64(&[b.state.total()], Layout::Plain, vec![0.0; b.state.total()]);
        let mut f = Fwd { be: &be, params: &pt, state: &mut st, mode: Mode::Train { seed: seed } };
        let (y, cache) = blk.forward(&mut f, Arc::new(t64(&[n, c, h, w], Layout::Nchw, x.to_vec()))).unwrap();
        (Arc::try_unwrap(y).unwrap(), cache)
    };
    let (y, cache) = forward(&x, &p);
    let cy = normals(&mut rng, y.numel(), 1.0);
    let pt = t64(&[p.len()], Layout::Plain, p.clone());
    let mut grads = t64(&[p.len()], Layout::Plain, vec![0.0; p.len()]);
    let dx = blk
        .backward(
            &mut Bwd { be: &be, params: &pt, grads: &mut grads },
            cache,
            &t64(y.shape(), Layout::Nchw, cy.clone()),
        )
        .unwrap();
    check_grads("mbconv dx", dx.host().unwrap(), &x, 0..x.len(), |xx| dot(&forward(xx, &p).0, &cy));
    for e in b.params.entries() {
        check_grads(&format!("mbconv {}", e.name), grads.host().unwrap(), &p, e.range(), |pp| {
            dot(&forward(&x, pp).0, &cy)
        });
    }
}

/// The tiny network end to end: shapes, and the gradients of a sample of parameters from every part of it.
#[test]
fn tiny_efficientnet_forward_and_sampled_gradients_in_f64() {
    let be = cpu();
    let mut rng = Rng::new(2);
    let mut b = Builder::default();
    let net = EfficientNet::new(&mut b, EfficientNetConfig::named("tiny").unwrap(), "spatial.");
    // 64 x 64 leaves 2 x 2 positions at the last stage: batch norm has 8 values a channel to take statistics of.
    let (n, s) = (2, 64);
    let x = Arc::new(t64(&[n, 3, s, s], Layout::Nchw, normals(&mut rng, n * 3 * s * s, 1.0)));
    let mut p = normals(&mut rng, b.params.total(), 0.3);
    for e in b.params.entries().iter().filter(|e| e.name.contains("bn") && e.name.ends_with("weight")) {
        p[e.range()].iter_mut().for_each(|v| *v += 1.0);
    }
    let run = |p: &[f64]| {
        let pt = t64(&[p.len()], Layout::Plain, p.to_vec());
        let mut st = t64(&[b.state.total()], Layout::Plain, vec![0.0; b.state.total()]);
        let mut f = Fwd { be: &be, params: &pt, state: &mut st, mode: Mode::Train { seed: 1 } };
        net.forward(&mut f, x.clone()).unwrap()
    };
    let (feat, cache) = run(&p);
    assert_eq!(feat.shape(), &[n, net.features]);
    let c = normals(&mut rng, feat.numel(), 1.0);
    let pt = t64(&[p.len()], Layout::Plain, p.clone());
    let mut grads = t64(&[p.len()], Layout::Plain, vec![0.0; p.len()]);
    net.backward(
        &mut Bwd { be: &be, params: &pt, grads: &mut grads },
        cache,
        &t64(feat.shape(), Layout::Plain, c.clone()),
    )
    .unwrap();
    let g = grads.host::<f64>().unwrap();
    assert!(g.iter().all(|v| v.is_finite()));
    // One coordinate from each of 40 tensors spread over the network.
    let entries = b.params.entries();
    let picks: Vec<usize> = (0..40).map(|i| entries[i * entries.len() / 40].offset).collect();
    check_grads("tiny efficientnet", g, &p, picks, |pp| dot(&run(pp).0, &c));
}

#[test]
fn inference_uses_running_statistics_and_needs_no_seed() {
    let be = cpu();
    let mut b = Builder::default();
    let net = EfficientNet::new(&mut b, EfficientNetConfig::named("tiny").unwrap(), "");
    let p = Tensor::from_vec(&[b.params.total()], Layout::Plain, vec![0.1f32; b.params.total()]).unwrap();
    let mut st = Tensor::from_vec(&[b.state.total()], Layout::Plain, vec![1.0f32; b.state.total()]).unwrap();
    let x = Arc::new(Tensor::from_vec(&[1, 3, 32, 32], Layout::Nchw, vec![0.5f32; 3 * 32 * 32]).unwrap());
    let before = st.host::<f32>().unwrap().to_vec();
    let (feat, _) = net.forward(&mut Fwd { be: &be, params: &p, state: &mut st, mode: Mode::Eval }, x).unwrap();
    assert_eq!(feat.shape(), &[1, net.features]);
    assert_eq!(st.host::<f32>().unwrap(), &before[..], "inference leaves the running statistics alone");
}
