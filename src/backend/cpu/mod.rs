//! The CPU backend: the reference implementation of every op (rayon over the batch). It trains too, slowly.

pub mod fft;
pub mod head;
pub mod loss;
pub mod optim;
mod preprocess;
pub mod real;

use super::fft::{self as fft_op, FftConfig, FreqStats};
use super::head::{self as head_op, HeadConfig, HeadForward, HeadGrads, HeadSaved, Mode};
use super::loss::{self as loss_op, LossConfig, LossOutput};
use super::optim::{self as optim_op, norms_len, AdamW, StepArgs};
use super::{Backend, BackendOptions, ChannelNorm, Preprocessed};
use crate::error::Result;
use crate::model::params::ParamLayout;
use crate::tensor::{Element, HostData, Layout, Storage, Tensor};

pub struct CpuBackend {
    opts: BackendOptions,
}

impl CpuBackend {
    pub fn new(opts: BackendOptions) -> Self {
        CpuBackend { opts }
    }

    /// A host buffer for an op to write: NaN-poisoned when asked (tests), else zeroed.
    fn output<T: Element>(&self, len: usize) -> Vec<T> {
        if self.opts.poison_outputs {
            let ones: Vec<u8> = vec![0xFF; len * std::mem::size_of::<T>()];
            bytemuck::pod_collect_to_vec(&ones)
        } else {
            vec![T::default(); len]
        }
    }
}

/// The pixel source of an FFT input (the op's check has fixed dtype and layout).
fn pixels(images: &Tensor) -> Result<fft::Pixels<'_>> {
    Ok(match images.dtype() {
        crate::tensor::DType::U8 => fft::Pixels::U8Nhwc(images.host()?),
        _ => fft::Pixels::F32Nchw(images.host()?),
    })
}

impl Backend for CpuBackend {
    fn name(&self) -> String {
        format!("cpu ({} rayon threads)", rayon::current_num_threads())
    }
    fn is_cuda(&self) -> bool {
        false
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
        preprocess::preprocess(images.host::<u8>()?, d, norm, &mut out, raw.as_deref_mut());
        Ok(Preprocessed {
            norm: Tensor::from_vec(&d.nchw(), Layout::Nchw, out)?,
            raw: raw.map(|r| Tensor::from_vec(&d.nchw(), Layout::Nchw, r)).transpose()?,
        })
    }

    fn fft_features(&self, images: &Tensor, cfg: &FftConfig, stats: Option<&Tensor>) -> Result<Tensor> {
        let d = fft_op::check(images, cfg, stats)?;
        let mut out = self.output::<f32>(d.out_shape().iter().product());
        let stats = stats.map(|t| t.host::<f32>()).transpose()?;
        fft::features(&pixels(images)?, &d, cfg, stats, &mut out);
        Tensor::from_vec(&d.out_shape(), Layout::Nchw, out)
    }

    fn fft_stats_update(&self, images: &Tensor, stats: &mut FreqStats) -> Result<()> {
        let feats = self.fft_features(images, &stats.cfg, None)?;
        let d = fft_op::check(images, &stats.cfg, None)?;
        fft_op::check_stats(stats, &d)?;
        fft::stats_update(feats.host()?, &d, stats.count, stats.mean.host_mut()?, stats.m2.host_mut()?);
        stats.count += d.n as u64;
        Ok(())
    }

    fn head_forward(
        &self,
        cfg: &HeadConfig,
        params: &Tensor,
        s: &Tensor,
        q: &Tensor,
        mode: Mode,
    ) -> Result<HeadForward> {
        let b = head_op::check(cfg, params, s, q)?;
        let (mut logits, mut z, mut h) = (self.output(b), self.output(b * cfg.d()), self.output(b * cfg.hidden));
        let (mut stats, mut gate) = (self.output(b * 4), self.output(b));
        let out = head::ForwardOut { logits: &mut logits, z: &mut z, h: &mut h, stats: &mut stats, gate: &mut gate };
        head::forward(cfg, params.host::<f32>()?, s.host()?, q.host()?, mode, out);
        let plain = |shape: &[usize], v| Tensor::from_vec(shape, Layout::Plain, v);
        Ok(HeadForward {
            logits: plain(&[b], logits)?,
            saved: HeadSaved {
                mode,
                z: plain(&[b, cfg.d()], z)?,
                h: plain(&[b, cfg.hidden], h)?,
                stats: plain(&[b, 4], stats)?,
                gate: plain(&[b], gate)?,
            },
        })
    }

    fn head_backward(
        &self,
        cfg: &HeadConfig,
        params: &Tensor,
        s: &Tensor,
        q: &Tensor,
        saved: &HeadSaved,
        dlogits: &Tensor,
    ) -> Result<HeadGrads> {
        let b = head_op::check(cfg, params, s, q)?;
        head_op::check_backward(saved, dlogits, cfg, b)?;
        let (mut gp, mut ds, mut dq) =
            (self.output::<f32>(params.numel()), self.output(b * cfg.ds), self.output(b * cfg.dq));
        let out = head::BackwardOut { params: &mut gp, ds: &mut ds, dq: &mut dq };
        let (z, h, gate) = (saved.z.host()?, saved.h.host()?, saved.gate.host()?);
        head::backward(cfg, params.host()?, s.host()?, q.host()?, saved.mode, z, h, gate, dlogits.host()?, out);
        Ok(HeadGrads {
            params: Tensor::from_vec(&[params.numel()], Layout::Plain, gp)?,
            ds: Tensor::from_vec(&[b, cfg.ds], Layout::Plain, ds)?,
            dq: Tensor::from_vec(&[b, cfg.dq], Layout::Plain, dq)?,
        })
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

    fn adamw_step(
        &self,
        layout: &ParamLayout,
        params: &mut Tensor,
        grads: &Tensor,
        m: &mut Tensor,
        v: &mut Tensor,
        decay_mask: &Tensor,
        norms: &Tensor,
        opt: &AdamW,
        step: StepArgs,
    ) -> Result<()> {
        optim_op::check(layout, params, grads)?;
        optim_op::check_step(layout, m, v, decay_mask, norms, opt, step)?;
        let clip = *norms.host::<f32>()?.last().unwrap();
        optim::adamw(
            params.host_mut()?,
            grads.host()?,
            m.host_mut()?,
            v.host_mut()?,
            decay_mask.host()?,
            clip,
            opt,
            step,
        );
        Ok(())
    }
}
