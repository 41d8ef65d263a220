//! Diagnostics: the gradient report flags a tensor whose gradient is zero by construction, the collapse check
//! fires on constant predictions and stays quiet on a healthy run, the branch-scale warning.

use dfgpu::backend::cpu::CpuBackend;
use dfgpu::backend::head::Mode;
use dfgpu::backend::optim::Norms;
use dfgpu::backend::ChannelNorm;
use dfgpu::model::detector::{Detector, DetectorConfig};
use dfgpu::model::layers::{Bwd, Fwd};
use dfgpu::model::state::ModelState;
use dfgpu::train::diagnostics::*;
use dfgpu::{Backend, Layout, Tensor};
use std::sync::Arc;

#[test]
fn the_gradient_report_flags_a_layer_with_no_gradient_by_construction() {
    // In an inverted-residual block, the projection's batch-norm shift feeds only batch norms downstream, which
    // remove any constant shift: its gradient is zero by construction, and the report must say so.
    let be = CpuBackend::new(Default::default());
    let det = Detector::new(DetectorConfig { size: 64, ..DetectorConfig::new("tiny").unwrap() }).unwrap();
    let mut ms = ModelState::new(&be, &det, 1).unwrap();
    let mut rng = dfgpu::rng::Rng::new(2);
    let px: Vec<u8> = (0..8 * 64 * 64 * 3).map(|_| rng.below(256) as u8).collect();
    let pre = be
        .preprocess(&Tensor::from_vec(&[8, 64, 64, 3], Layout::Nhwc, px).unwrap(), &ChannelNorm::imagenet(), true)
        .unwrap();
    let mut f = Fwd { be: &be, params: &ms.params, state: &mut ms.state, mode: Mode::Train { seed: 1 } };
    let (logits, cache) = det.forward(&mut f, Arc::new(pre.normalized), pre.raw.as_ref().unwrap(), None).unwrap();
    let dl = Tensor::from_vec(&[8], Layout::Plain, vec![0.1f32; 8]).unwrap();
    det.backward(&mut Bwd { be: &be, params: &ms.params, grads: &mut ms.grads }, cache, &dl).unwrap();
    assert_eq!(logits.numel(), 8);
    let p = ms.params.host::<f32>().unwrap();
    let after = Tensor::from_vec(&[p.len()], Layout::Plain, p.iter().map(|v| v * 1.001).collect()).unwrap();
    let read = |t: Tensor| Norms::read(&t, &be, &det.params).unwrap();
    let grads = read(be.param_norms(&det.params, &ms.params, &ms.grads, None).unwrap());
    let steps = read(be.step_norms(&det.params, &ms.params, &after).unwrap());
    let rows = grad_rows(&det.params, &grads, &steps);
    let row = |n: &str| rows.iter().find(|r| r.name == n).unwrap();
    let zero = row("spatial.blocks.1.0.bn3.bias");
    assert_eq!(zero.flag(), Some(GradFlag::Vanishing), "{zero:?}");
    assert!(zero.expected_zero());
    for name in [
        "spatial.conv_stem.weight",
        "spatial.blocks.1.0.conv_pwl.weight",
        "freq.stages.0.conv.weight",
        "head.fc1.weight",
    ] {
        assert_eq!(row(name).flag(), None, "{:?}", row(name));
    }
    assert!((row("head.fc1.weight").update_ratio - 1e-3).abs() < 1e-6);
    let fc1 = det.params.get("head.fc1.weight").unwrap().range();
    let want = ms.grads.host::<f32>().unwrap()[fc1].iter().map(|&g| g as f64 * g as f64).sum::<f64>().sqrt();
    assert!((row("head.fc1.weight").grad_norm - want).abs() <= 1e-6 * want, "{want}");
    let t = table(&rows);
    assert!(t.contains("spatial.blocks.1.0") && t.contains("update/weight"), "{t}");
    let mut rows = rows;
    rows[0].grad_norm = 1e4;
    let rows = grad_rows_like(rows);
    assert_eq!(rows[0].flag(), Some(GradFlag::Exploding));
}

#[test]
fn the_collapse_check_fires_on_constant_predictions_and_stays_quiet_when_healthy() {
    let ev = Evidence {
        freq_magnitude: "raw".into(),
        freq_feature_range: (0.0, 2.5e4),
        lr: 1e-2,
        auc: Some(0.9),
        best_threshold: Some((0.83, 0.81)),
        ..Evidence::default()
    };
    let mut w = CollapseWatch::default();
    let constant = vec![0.91f32; 50];
    assert!(w.check(&constant, &ev).is_none(), "one collapsed evaluation is not yet a collapse");
    let msg = w.check(&constant, &ev).expect("two in a row");
    assert!(
        msg.contains("every validation image is predicted fake") && msg.contains("for 2 evaluations in a row"),
        "{msg}"
    );
    assert!(msg.contains("magnitudes are 'raw'") && msg.contains("use --freq-norm log"), "{msg}");
    assert!(msg.contains("learning rate: 1.00e-2"), "{msg}");
    // A good ranking with every prediction on one side: the threshold, not the features.
    assert!(
        msg.contains("validation AUC is 0.900") && msg.contains("At P(fake) >= 0.830 the balanced accuracy is 0.810"),
        "{msg}"
    );
    // With one branch on, the causes that need the other are not offered.
    let mut w = CollapseWatch::default();
    let freq_only = Evidence { branches: "freq".into(), ..ev.clone() };
    w.check(&constant, &freq_only);
    let msg = w.check(&constant, &freq_only).unwrap();
    assert!(msg.contains("branch scales apart: does not apply (only the freq branch is on)"), "{msg}");
    let mut w = CollapseWatch::default();
    let spatial_only = Evidence { branches: "spatial".into(), ..ev.clone() };
    w.check(&constant, &spatial_only);
    let msg = w.check(&constant, &spatial_only).unwrap();
    assert!(!msg.contains("frequency magnitudes") && msg.contains("only the spatial branch is on"), "{msg}");
    let mut w = CollapseWatch::default();
    let blind = Evidence { auc: Some(0.5), ..ev.clone() };
    w.check(&constant, &blind);
    assert!(w.check(&constant, &blind).unwrap().contains("the scores do not separate the classes yet"));
    let healthy: Vec<f32> = (0..50).map(|i| i as f32 / 50.0).collect();
    let mut w = CollapseWatch::default();
    assert!(w.check(&healthy, &ev).is_none() && w.check(&healthy, &ev).is_none());
    // A collapse must be consecutive: a healthy evaluation resets the count.
    assert!(w.check(&constant, &ev).is_none() && w.check(&healthy, &ev).is_none() && w.check(&constant, &ev).is_none());
    assert!(collapsed(&[0.2f32, 0.3, 0.1]).unwrap().contains("predicted real"));
    assert!(collapsed(&[0.5004f32, 0.5001, 0.49995]).unwrap().contains("barely differ"));
}

#[test]
fn branch_scales_far_apart_are_flagged() {
    assert!(scale_warning((0.0, 1.0), (0.0, 2.0)).is_none());
    let w = scale_warning((0.0, 0.5), (1e4, 2.5e3)).unwrap();
    assert!(w.contains("5000x apart"), "{w}");
}

/// The flags of rows whose norms were edited, judged again (as group_rows does for its groups).
/// Weights that one step moves by more than LARGE_STEP of their norm are flagged; biases and norms are not.
#[test]
fn large_steps_on_weights_are_flagged() {
    let mut l = dfgpu::params::ParamLayout::default();
    l.push("conv.weight", &[4], false);
    l.push("conv.bias", &[4], true);
    l.push("fc.weight", &[4], false);
    let grads = Norms { per_tensor: vec![(1.0, 2.0); 3], total: 0.0, clip: 1.0 };
    // Steps of 0.2, 0.2 and 0.02 against weights of norm 2.
    let steps = Norms { per_tensor: vec![(0.2, 2.0), (0.2, 2.0), (0.02, 2.0)], total: 0.0, clip: 1.0 };
    let rows = grad_rows(&l, &grads, &steps);
    let flags: Vec<_> = rows.iter().map(|r| r.flag()).collect();
    assert_eq!(flags, [Some(GradFlag::LargeSteps), None, None], "{rows:?}");
}

fn grad_rows_like(rows: Vec<GradRow>) -> Vec<GradRow> {
    let mut l = dfgpu::params::ParamLayout::default();
    rows.iter().for_each(|r| l.push(&r.name, &[1], false));
    let norms =
        |f: &dyn Fn(&GradRow) -> (f64, f64)| Norms { per_tensor: rows.iter().map(f).collect(), total: 0.0, clip: 1.0 };
    grad_rows(&l, &norms(&|r| (r.grad_norm, 1.0)), &norms(&|_| (0.0, 1.0)))
}
