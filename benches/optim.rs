//! `cargo bench --bench optim`: one optimizer step (per-tensor norms with clipping, then AdamW) over an
//! EfficientNet-B0-sized flat buffer (5.3 M parameters in 300 tensors). GPU: microseconds per step against a
//! device-to-device copy of the bytes the step must move (read p, g, m, v and the mask, write p, m, v: 29 bytes a
//! parameter), timed in the same run. CPU: the reference's step time.

mod common;

use common::timing::{copy_ms, median_ms, with_gpu};
use dfgpu::backend::cpu::CpuBackend;
use dfgpu::backend::optim::{decay_mask, Optimizer, StepArgs, StepBuffers};
use dfgpu::params::ParamLayout;
use dfgpu::{Backend, Layout, Result, Tensor};
use std::time::Instant;

fn layout() -> ParamLayout {
    let mut l = ParamLayout::default();
    for i in 0..100 {
        l.push(&format!("conv{i}.weight"), &[176, 300], false);
        l.push(&format!("bn{i}.weight"), &[176], true);
        l.push(&format!("bn{i}.bias"), &[176], true);
    }
    l
}

struct State {
    p: Tensor,
    g: Tensor,
    m: Tensor,
    v: Tensor,
    mask: Tensor,
}

fn state(be: &dyn Backend, l: &ParamLayout) -> Result<State> {
    let f = |x: f32| be.upload(&Tensor::from_vec(&[l.total()], Layout::Plain, vec![x; l.total()])?);
    let mask = be.upload(&Tensor::from_vec(&[l.total()], Layout::Plain, decay_mask(l))?)?;
    Ok(State { p: f(0.5)?, g: f(0.01)?, m: f(0.0)?, v: f(0.0)?, mask })
}

fn step(be: &dyn Backend, l: &ParamLayout, s: &mut State, t: u64) -> Result<()> {
    let norms = be.param_norms(l, &s.p, &s.g, Some(1.0))?;
    let b = StepBuffers { params: &mut s.p, grads: &s.g, m: &mut s.m, v: &mut s.v, decay_mask: &s.mask, norms: &norms };
    be.optimizer_step(l, b, &Optimizer::default(), StepArgs { lr: 1e-3, t })
}

fn main() {
    let l = layout();
    println!("optim: {} parameters in {} tensors", l.total(), l.entries().len());
    with_gpu("optim", |gpu| {
        let mut s = state(gpu, &l)?;
        let mut t = 0;
        let ms = median_ms(gpu.stream(), 10, 50, || {
            t += 1;
            step(gpu, &l, &mut s, t)
        })?;
        let bytes = 29.0 * l.total() as f64;
        let copy = copy_ms(gpu.stream(), bytes)?;
        println!(
            "  step {:.1} us; copy of the same bytes {:.1} us: at {:.0}% of it",
            ms * 1e3,
            copy * 1e3,
            100.0 * copy / ms
        );
        Ok(())
    });
    let cpu = CpuBackend::new(Default::default());
    let mut s = state(&cpu, &l).unwrap();
    step(&cpu, &l, &mut s, 1).unwrap();
    let t0 = Instant::now();
    for t in 2..7 {
        step(&cpu, &l, &mut s, t).unwrap();
    }
    println!("optim {}: step {:.1} ms", cpu.name(), t0.elapsed().as_secs_f64() * 1e3 / 5.0);
}
