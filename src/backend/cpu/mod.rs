//! The CPU backend: the reference implementation of every op (rayon over the batch). It trains too, slowly.

pub mod conv;
mod fast;
pub mod fft;
pub mod head;
pub mod layers;
pub mod loss;
pub mod norm;
pub mod optim;
mod preprocess;
pub mod real;

use super::conv::{self as conv_op, Conv2d, ConvBackward};
use super::fft::{self as fft_op, FftConfig, FftStats};
use super::head::{self as head_op, HeadForward, HeadGrads, HeadInputs, HeadSaved, Mode};
use super::layers::{self as layers_op, Act};
use super::loss::{self as loss_op, LossConfig, LossOutput};
use super::norm::{self as norm_op, BnBackward, BnParams, BnRunning, BnSaved};
use super::optim::{self as optim_op, norms_len, Optimizer, StepArgs, StepBuffers};
use super::{Backend, BackendOptions, ChannelNorm, Preprocessed, Slots};
use crate::error::Result;
use crate::params::ParamLayout;
use crate::tensor::{Element, HostData, Layout, Slice, Storage, Tensor};
use std::mem::MaybeUninit;
use std::ops::Range;

pub struct CpuBackend {
    opts: BackendOptions,
    /// f32 ops through the fast paths (fast/); f64 always runs the references.
    fast: bool,
}

impl CpuBackend {
    /// The CPU backend as dfgpu trains with it: the fast paths for f32, checked against the references.
    pub fn new(opts: BackendOptions) -> Self {
        keep_freed_memory();
        CpuBackend { opts, fast: true }
    }

    /// The references only: the oracle that the fast paths and the GPU are checked against.
    pub fn reference(opts: BackendOptions) -> Self {
        CpuBackend { opts, fast: false }
    }

    /// True when f32 tensors take the fast paths.
    fn fast_f32(&self, t: &Tensor) -> bool {
        self.fast && t.dtype() == crate::tensor::DType::F32
    }

    /// A host buffer for an op to write: NaN-poisoned when asked (tests), else zeroed.
    pub(crate) fn output<T: Element>(&self, len: usize) -> Vec<T> {
        if self.opts.poison_outputs {
            let ones: Vec<u8> = vec![0xFF; len * std::mem::size_of::<T>()];
            bytemuck::pod_collect_to_vec(&ones)
        } else {
            vec![T::default(); len]
        }
    }

    /// A host buffer of `len` values, which `write` writes: NaN-poisoned first when asked (tests, where a value
    /// left out shows), else not filled at all. A fill is a pass over memory of its own, a tenth of an element-wise
    /// op's time, which the fast paths skip (they write each value once); the references take their buffer
    /// through `filled`.
    ///
    /// # Safety
    /// `write` must initialize every value of the buffer it is given.
    unsafe fn output_with<T: Element>(&self, len: usize, write: impl FnOnce(&mut [MaybeUninit<T>])) -> Vec<T> {
        let mut v = Vec::with_capacity(len);
        let buf = &mut v.spare_capacity_mut()[..len];
        if self.opts.poison_outputs {
            buf.fill(MaybeUninit::new(poison()));
        }
        write(buf);
        // SAFETY: `write` initialized the `len` values (the caller's promise).
        unsafe { v.set_len(len) };
        v
    }

    /// `buf` filled as `output` fills a buffer (NaN-poisoned or zeroed), as values: for the references, which
    /// read what they write.
    fn filled<'a, T: Element>(&self, buf: &'a mut [MaybeUninit<T>]) -> &'a mut [T] {
        buf.fill(MaybeUninit::new(if self.opts.poison_outputs { poison() } else { T::default() }));
        // SAFETY: every value was just written.
        unsafe { &mut *(buf as *mut [MaybeUninit<T>] as *mut [T]) }
    }
}

/// The value with every bit set: NaN for the float types.
fn poison<T: Element>() -> T {
    bytemuck::pod_read_unaligned(&[0xFF; 16][..std::mem::size_of::<T>()])
}

/// Every op returns a new tensor, and a step frees them all again; glibc's malloc maps each block over 128 KiB
/// afresh and hands freed memory back to the system, so each step faulted its outputs' pages in anew (9,000 page
/// faults a step on the tiny model, a tenth of its time). This keeps blocks up to 32 MiB (glibc's most) on the
/// heap and freed memory in the process, where the next step reuses it: the buffer reuse the ops cannot do.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_THRESHOLD: i32 = -3;
        static ONCE: std::sync::Once = std::sync::Once::new();
        // SAFETY: mallopt only sets two of the allocator's parameters (it refuses values out of range).
        ONCE.call_once(|| unsafe {
            mallopt(M_MMAP_THRESHOLD, 32 << 20);
            mallopt(M_TRIM_THRESHOLD, i32::MAX);
        });
    }
}

/// Runs a generic op on the tensor's float type: f32, or f64 for gradient checks.
macro_rules! by_real {
    ($dtype:expr, $m:ident :: $f:ident, ($($arg:expr),*)) => {
        match $dtype {
            crate::tensor::DType::F32 => $m::$f::<f32>($($arg),*),
            crate::tensor::DType::F64 => $m::$f::<f64>($($arg),*),
            d => shape_err!("the CPU backend runs this op on f32 or f64 tensors, got {d:?}"),
        }
    };
}

/// Two checked slots (`Slots::check`: disjoint, inside the buffer) as values of type F, mutable at once.
pub(crate) fn two_of<'a, F: Element>(slots: Slots<'a, 2>) -> Result<(&'a mut [F], &'a mut [F])> {
    let Slots { buf, at: [a, b] } = slots;
    let v = buf.host_mut::<F>()?;
    if a.start < b.start {
        let (lo, hi) = v.split_at_mut(b.start);
        Ok((&mut lo[a], &mut hi[..b.len()]))
    } else {
        let (lo, hi) = v.split_at_mut(a.start);
        Ok((&mut hi[..a.len()], &mut lo[b]))
    }
}

/// The pixel source of an FFT input (the op's check has fixed dtype and layout).
fn pixels(images: &Tensor) -> Result<fft::FftImages<'_>> {
    Ok(match images.dtype() {
        crate::tensor::DType::U8 => fft::FftImages::U8Nhwc(images.host()?),
        _ => fft::FftImages::F32Nchw(images.host()?),
    })
}

impl Backend for CpuBackend {
    fn name(&self) -> String {
        let kind = if self.fast { "" } else { ", references" };
        format!("cpu ({} rayon threads{kind})", rayon::current_num_threads())
    }
    fn is_cuda(&self) -> bool {
        false
    }
    fn free_memory(&self) -> Option<u64> {
        crate::memory::available_memory()
    }
    fn upload(&self, t: &Tensor) -> Result<Tensor> {
        self.download(t)
    }
    fn download(&self, t: &Tensor) -> Result<Tensor> {
        match t.storage() {
            Storage::Host(d) => Ok(match d {
                HostData::U8(v) => Tensor::from_vec(t.shape(), t.layout(), v.clone())?,
                HostData::F32(v) => Tensor::from_vec(t.shape(), t.layout(), v.clone())?,
                HostData::F16(v) => Tensor::from_vec(t.shape(), t.layout(), v.clone())?,
                HostData::BF16(v) => Tensor::from_vec(t.shape(), t.layout(), v.clone())?,
                HostData::F64(v) => Tensor::from_vec(t.shape(), t.layout(), v.clone())?,
            }),
            Storage::Cuda(_) => shape_err!("the CPU backend was given a GPU tensor; download it with its CUDA backend"),
        }
    }
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    fn preprocess(&self, images: &Tensor, norm: &ChannelNorm, want_raw: bool) -> Result<Preprocessed> {
        let d = super::preprocess::check(images, norm)?;
        let len = d.n * d.c * d.h * d.w;
        let mut out = self.output::<f32>(len);
        let mut raw = want_raw.then(|| self.output::<f32>(len));
        let (px, raw_out) = (images.host::<u8>()?, raw.as_deref_mut());
        match self.fast {
            true => preprocess::preprocess_with(px, d, norm, &mut out, raw_out, fast::preprocess::image),
            false => preprocess::preprocess(px, d, norm, &mut out, raw_out),
        }
        Ok(Preprocessed {
            normalized: Tensor::from_vec(&d.nchw(), Layout::Nchw, out)?,
            raw: raw.map(|r| Tensor::from_vec(&d.nchw(), Layout::Nchw, r)).transpose()?,
        })
    }

    fn fft_features(&self, images: &Tensor, cfg: &FftConfig, stats: Option<&Tensor>) -> Result<Tensor> {
        let d = fft_op::check(images, cfg, stats)?;
        let mut out = self.output::<f32>(d.out_shape().iter().product());
        let stats = stats.map(|t| t.host::<f32>()).transpose()?;
        let features = if self.fast { fast::fft::features } else { fft::features };
        features(&pixels(images)?, &d, cfg, stats, &mut out);
        Tensor::from_vec(&d.out_shape(), Layout::Nchw, out)
    }

    fn fft_stats_update(&self, images: &Tensor, stats: &mut FftStats) -> Result<()> {
        let feats = self.fft_features(images, &stats.cfg, None)?;
        let d = fft_op::check(images, &stats.cfg, None)?;
        fft_op::check_stats(stats, &d)?;
        fft::stats_update(feats.host()?, &d, stats.count, stats.mean.host_mut()?, stats.m2.host_mut()?);
        stats.count += d.n as u64;
        Ok(())
    }

    fn fft_profile(&self, feats: &Tensor, cfg: &FftConfig, stats: Option<&Slice>) -> Result<Tensor> {
        let d = fft_op::check_profile(feats, cfg, stats)?;
        by_real!(feats.dtype(), fft::run_profile, (self, feats, &d, stats))
    }

    fn head_forward(&self, x: &HeadInputs, mode: Mode) -> Result<HeadForward> {
        let b = head_op::check(x)?;
        if self.fast_f32(x.s) {
            return head::run_forward_with(self, x, mode, b, fast::layers::linear);
        }
        by_real!(x.s.dtype(), head::run_forward, (self, x, mode, b))
    }

    fn head_backward(&self, x: &HeadInputs, saved: &HeadSaved, dlogits: &Tensor, grads: Slots<1>) -> Result<HeadGrads> {
        let b = head_op::check_backward(x, saved, dlogits, &grads)?;
        if self.fast_f32(x.s) {
            return head::run_backward_with(self, x, saved, dlogits, grads, b, fast::layers::linear_backward);
        }
        by_real!(x.s.dtype(), head::run_backward, (self, x, saved, dlogits, grads, b))
    }

    fn loss(&self, cfg: &LossConfig, logits: &Tensor, labels: &Tensor, threshold: f32) -> Result<LossOutput> {
        let b = loss_op::check(logits, labels, cfg, threshold)?;
        let mut d = self.output(b);
        let t = loss_op::threshold_logit(threshold);
        let (l, c) = loss::loss(cfg, logits.host::<f32>()?, labels.host()?, t, &mut d);
        let stats = vec![l, c.tp as f32, c.fp as f32, c.tn as f32, c.fn_ as f32];
        Ok(LossOutput {
            dlogits: Tensor::from_vec(&[b], Layout::Plain, d)?,
            stats: Tensor::from_vec(&[5], Layout::Plain, stats)?,
        })
    }

    fn param_norms(
        &self,
        layout: &ParamLayout,
        params: &Tensor,
        grads: &Tensor,
        max_norm: Option<f32>,
    ) -> Result<Tensor> {
        optim_op::check(layout, params, grads)?;
        let mut out = self.output::<f32>(norms_len(layout));
        optim::param_norms(layout, params.host()?, grads.host()?, max_norm, &mut out);
        Tensor::from_vec(&[out.len()], Layout::Plain, out)
    }

    fn step_norms(&self, layout: &ParamLayout, before: &Tensor, after: &Tensor) -> Result<Tensor> {
        optim_op::check(layout, before, after)?;
        let mut out = self.output::<f32>(norms_len(layout));
        optim::step_norms(layout, before.host()?, after.host()?, &mut out);
        Tensor::from_vec(&[out.len()], Layout::Plain, out)
    }

    fn duplicate(&self, t: &Tensor) -> Result<Tensor> {
        self.download(t)
    }

    fn optimizer_step(&self, layout: &ParamLayout, b: StepBuffers, opt: &Optimizer, step: StepArgs) -> Result<()> {
        optim_op::check_step(layout, &b, opt, step)?;
        let clip = *b.norms.host::<f32>()?.last().unwrap();
        let (p, g, m, mask) = (b.params.host_mut()?, b.grads.host()?, b.m.host_mut()?, b.decay_mask.host()?);
        match opt {
            Optimizer::AdamW(a) => {
                let adamw = if self.fast { fast::optim::adamw } else { optim::adamw };
                adamw(p, g, m, b.v.host_mut()?, mask, &optim::AdamWStep::new(a, clip, step))
            }
            Optimizer::Sgd(s) => optim::sgd(p, g, m, mask, clip, s, step),
        }
        Ok(())
    }

    fn conv2d(&self, x: &Tensor, w: &Slice, c: &Conv2d) -> Result<Tensor> {
        let d = conv_op::check(x, w, c)?;
        if self.fast_f32(x) {
            return conv::run_forward_with(self, x, w, c, d, fast::conv::forward);
        }
        by_real!(x.dtype(), conv::run_forward, (self, x, w, c, d))
    }
    fn conv2d_backward(&self, a: &ConvBackward, dw: Slots<1>) -> Result<Tensor> {
        let d = conv_op::check_backward(a, &dw)?;
        if self.fast_f32(a.x) {
            return conv::run_backward_with(self, a, dw, d, fast::conv::backward);
        }
        by_real!(a.x.dtype(), conv::run_backward, (self, a, dw, d))
    }
    fn batch_norm_train(&self, x: &Tensor, p: &BnParams, running: Slots<2>) -> Result<(Tensor, BnSaved)> {
        let d = norm_op::check_train(x, p, &running)?;
        if self.fast_f32(x) {
            return norm::run_train_with(self, x, p, running, d, fast::norm::forward_train);
        }
        by_real!(x.dtype(), norm::run_train, (self, x, p, running, d))
    }
    fn batch_norm_eval(&self, x: &Tensor, p: &BnParams, running: &BnRunning) -> Result<Tensor> {
        let d = norm_op::check_eval(x, p, running)?;
        if self.fast_f32(x) {
            return norm::run_eval_with(self, x, p, running, d, fast::norm::apply);
        }
        by_real!(x.dtype(), norm::run_eval, (self, x, p, running, d))
    }
    fn batch_norm_backward(&self, a: &BnBackward, grads: Slots<2>) -> Result<Tensor> {
        let d = norm_op::check_backward(a, &grads)?;
        if self.fast_f32(a.x) {
            return norm::run_backward_with(self, a, grads, d, fast::norm::backward);
        }
        by_real!(a.x.dtype(), norm::run_backward, (self, a, grads, d))
    }
    fn act(&self, x: &Tensor, kind: Act) -> Result<Tensor> {
        if self.fast_f32(x) {
            return layers::run_act_with(self, x, kind, fast::layers::act_forward);
        }
        by_real!(x.dtype(), layers::run_act, (self, x, kind))
    }
    fn act_backward(&self, x: &Tensor, dy: &Tensor, kind: Act) -> Result<Tensor> {
        layers_op::same(x, dy, "activation backward")?;
        if self.fast_f32(x) {
            return layers::run_act_backward_with(self, x, dy, kind, fast::layers::act_backward);
        }
        by_real!(x.dtype(), layers::run_act_backward, (self, x, dy, kind))
    }
    fn avg_pool(&self, x: &Tensor) -> Result<Tensor> {
        let d = layers_op::nchw(x, "average pool input")?;
        by_real!(x.dtype(), layers::run_avg_pool, (self, x, d))
    }
    fn avg_pool_backward(&self, dy: &Tensor, shape: [usize; 4]) -> Result<Tensor> {
        layers_op::check_avg_pool_backward(dy, shape)?;
        by_real!(dy.dtype(), layers::run_avg_pool_backward, (self, dy, shape))
    }
    fn channel_scale(&self, x: &Tensor, s: &Tensor) -> Result<Tensor> {
        let [_, _, hw] = layers_op::check_channel_scale(x, s)?;
        by_real!(x.dtype(), layers::run_channel_scale, (self, x, s, hw))
    }
    fn channel_scale_backward(&self, x: &Tensor, s: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor)> {
        let [_, _, hw] = layers_op::check_channel_scale_backward(x, s, dy)?;
        by_real!(x.dtype(), layers::run_channel_scale_backward, (self, x, s, dy, hw))
    }
    fn add(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        layers_op::same(a, b, "add")?;
        by_real!(a.dtype(), layers::run_add, (self, a, b))
    }
    fn sample_scale(&self, x: &Tensor, scales: &[f32]) -> Result<Tensor> {
        layers_op::check_sample_scale(x, scales)?;
        by_real!(x.dtype(), layers::run_sample_scale, (self, x, scales))
    }
    fn concat_columns(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let d = layers_op::check_concat_columns(a, b)?;
        by_real!(a.dtype(), layers::run_concat_columns, (self, a, b, d))
    }
    fn columns(&self, x: &Tensor, cols: Range<usize>) -> Result<Tensor> {
        let d = layers_op::check_columns(x, &cols)?;
        by_real!(x.dtype(), layers::run_columns, (self, x, cols, d))
    }
    fn linear(&self, x: &Tensor, w: &Slice, b: &Slice, m: usize) -> Result<Tensor> {
        let d = layers_op::check_linear(x, w, b, m)?;
        if self.fast_f32(x) {
            return layers::run_linear_with(self, x, w, b, d, fast::layers::linear);
        }
        by_real!(x.dtype(), layers::run_linear, (self, x, w, b, d))
    }
    fn linear_backward(&self, x: &Tensor, w: &Slice, dy: &Tensor, grads: Slots<2>) -> Result<Tensor> {
        let d = layers_op::check_linear_backward(x, w, dy, &grads)?;
        if self.fast_f32(x) {
            return layers::run_linear_backward_with(self, x, w, dy, grads, d, fast::layers::linear_backward);
        }
        by_real!(x.dtype(), layers::run_linear_backward, (self, x, w, dy, grads, d))
    }
}
