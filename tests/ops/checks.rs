//! Argument checks: each op family's `check` runs at the trait's methods, for every backend, so that the same bad
//! argument gets the same refusal from the CPU and from the GPU.

use crate::common::*;
use dfgpu::backend::head::{HeadConfig, HeadInputs, Mode};
use dfgpu::backend::optim::{decay_mask, norms_len, Optimizer, StepArgs, StepBuffers};
use dfgpu::backend::{BatchNorm, BnParams, BnRunning, Conv2d, ConvBackward, Slots};
use dfgpu::params::ParamLayout;
use dfgpu::tensor::Slice;
use dfgpu::{Backend, Layout, Result, Tensor};

/// The refusal of one op call, or "accepted" where it ran.
fn refusal<T>(r: Result<T>) -> String {
    r.map_or_else(|e| e.to_string(), |_| "accepted".into())
}

/// Bad arguments to a few ops on `be`: (what, the message the backend answered).
fn refusals(be: &dyn Backend) -> Vec<(&'static str, String)> {
    let up = |shape: &[usize], layout, n: usize| {
        be.upload(&Tensor::from_vec(shape, layout, (0..n).map(|i| 0.25 + i as f32 * 0.01).collect()).unwrap()).unwrap()
    };
    let (n, c, h, w) = (2, 3, 4, 4);
    let x = up(&[n, c, h, w], Layout::Nchw, n * c * h * w);
    let mut out = vec![];

    // Batch norm: running statistics of C + 1 values (the CPU took them), and overlapping running slots (the GPU
    // took them).
    let bn = BatchNorm::new(c);
    let p = up(&[2 * c], Layout::Plain, 2 * c);
    let bp = BnParams { gamma: Slice { buf: &p, range: 0..c }, beta: Slice { buf: &p, range: c..2 * c }, bn: &bn };
    let mut st = up(&[2 * c + 1], Layout::Plain, 2 * c + 1);
    let r = BnRunning { mean: Slice { buf: &st, range: 0..c + 1 }, var: Slice { buf: &st, range: c..2 * c + 1 } };
    out.push(("batch norm eval, running mean of C + 1", refusal(be.batch_norm_eval(&x, &bp, &r))));
    let running = Slots { buf: &mut st, at: [0..c, 1..c + 1] };
    out.push(("batch norm train, overlapping running slots", refusal(be.batch_norm_train(&x, &bp, running))));

    // Convolution backward: dy of the wrong shape, and a weight gradient slot past the buffer's end.
    let conv = Conv2d::new(c, 2, 3, 1, 1);
    let wt = up(&[conv.weight_len()], Layout::Plain, conv.weight_len());
    let dy = up(&[n, 2, h, w], Layout::Nchw, n * 2 * h * w);
    let bad_dy = up(&[n, 2, h, w - 1], Layout::Nchw, n * 2 * h * (w - 1));
    let mut g = up(&[conv.weight_len()], Layout::Plain, conv.weight_len());
    let (whole, past_end) = (0..conv.weight_len(), 1..conv.weight_len() + 1);
    let a = ConvBackward { x: &x, w: Slice { buf: &wt, range: whole.clone() }, dy: &bad_dy, c: &conv };
    let slot = Slots { buf: &mut g, at: [whole] };
    out.push(("conv backward, dy of the wrong shape", refusal(be.conv2d_backward(&a, slot))));
    let a = ConvBackward { dy: &dy, ..a };
    let slot = Slots { buf: &mut g, at: [past_end] };
    out.push(("conv backward, slot past the end", refusal(be.conv2d_backward(&a, slot))));

    // Linear backward: overlapping weight and bias slots.
    let (ln, k, m) = (2, 3, 2);
    let (lx, ldy, lw) =
        (up(&[ln, k], Layout::Plain, ln * k), up(&[ln, m], Layout::Plain, ln * m), up(&[m * k], Layout::Plain, m * k));
    let mut lg = up(&[m * k + m], Layout::Plain, m * k + m);
    let slots = Slots { buf: &mut lg, at: [0..m * k, m * k - 1..m * k + m - 1] };
    let dx = be.linear_backward(&lx, &Slice { buf: &lw, range: 0..m * k }, &ldy, slots);
    out.push(("linear backward, overlapping slots", refusal(dx)));

    // Head backward: a gradient slot one value short.
    let cfg = HeadConfig::new(4, 2, 3);
    let np = cfg.layout().total();
    let hp = be.upload(&Tensor::from_vec(&[np], Layout::Plain, cfg.init(1)).unwrap()).unwrap();
    let (s, q) = (up(&[2, 4], Layout::Plain, 8), up(&[2, 2], Layout::Plain, 4));
    let hx = HeadInputs { cfg: &cfg, params: Slice { buf: &hp, range: 0..np }, s: &s, q: &q };
    let f = be.head_forward(&hx, Mode::Eval).unwrap();
    let mut hg = up(&[np], Layout::Plain, np);
    let dl = up(&[2], Layout::Plain, 2);
    let short = 0..np - 1;
    let slot = Slots { buf: &mut hg, at: [short] };
    out.push(("head backward, short slot", refusal(be.head_backward(&hx, &f.saved, &dl, slot))));

    // Optimizer step: norms of another layout.
    let mut l = ParamLayout::default();
    l.push("w", &[5], false);
    let t = l.total();
    let (mut pp, gg, mut mm, mut vv) = (
        up(&[t], Layout::Plain, t),
        up(&[t], Layout::Plain, t),
        up(&[t], Layout::Plain, t),
        up(&[t], Layout::Plain, t),
    );
    let mask = be.upload(&Tensor::from_vec(&[t], Layout::Plain, decay_mask(&l)).unwrap()).unwrap();
    let norms = up(&[norms_len(&l) + 1], Layout::Plain, norms_len(&l) + 1);
    let b = StepBuffers { params: &mut pp, grads: &gg, m: &mut mm, v: &mut vv, decay_mask: &mask, norms: &norms };
    let step = be.optimizer_step(&l, b, &Optimizer::default(), StepArgs { lr: 0.1, t: 1 });
    out.push(("optimizer step, norms of another layout", refusal(step)));
    out
}

/// What each refusal says (a part of it): the same list for every backend.
const SAYS: [&str; 7] = [
    "batch norm: 4 running means and 4 variances for 3 channels",
    "batch norm running statistics: slots [0..3, 1..4]",
    "conv backward: dy [2, 2, 4, 3]",
    "conv weight gradient: slots [1..55]",
    "linear backward gradients: slots [0..6, 5..7]",
    "head gradients: slot 0..",
    "norms: 5 values for 1 tensors",
];

#[test]
fn cpu_refuses_bad_arguments() {
    for (be, name) in [(cpu(), "reference"), (fast_cpu(), "fast")] {
        for ((what, e), says) in refusals(&be).into_iter().zip(SAYS) {
            assert!(e.contains(says), "{name} {what}: {e}");
        }
    }
}

#[test]
#[ignore = "needs a CUDA device: a GPU, or the emulator (scripts/emu.sh)"]
fn gpu_refuses_as_the_cpu_does() {
    let (got, want) = (refusals(&gpu()), refusals(&cpu()));
    for ((what, g), (_, w)) in got.iter().zip(&want) {
        assert_eq!(g, w, "{what}");
    }
    assert_eq!(got.len(), SAYS.len());
}
