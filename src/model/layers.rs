//! The units the networks are built from, each with an explicit forward that returns what its backward needs
//! (no tape), written once against the Backend trait: conv + batch norm (+ activation), and
//! squeeze-and-excitation. Parameters and batch-norm running statistics are registered by name in the model's
//! flat layouts (timm's names, so that timm's weights load by name).

use crate::backend::{Activation, Backend, BatchNorm, BnSaved, Conv2d};
use crate::error::Result;
use crate::model::params::ParamLayout;
use crate::tensor::{Slice, Tensor};
use std::ops::Range;
use std::sync::Arc;

/// Registers parameters and state while a model is built.
#[derive(Debug, Default)]
pub struct Builder {
    pub params: ParamLayout,
    /// Batch-norm running statistics (not trained, saved with the model).
    pub state: ParamLayout,
}

impl Builder {
    fn param(&mut self, name: &str, shape: &[usize], no_decay: bool) -> Range<usize> {
        self.params.push(name, shape, no_decay);
        self.params.get(name).unwrap().range()
    }
    fn state(&mut self, name: &str, len: usize) -> Range<usize> {
        self.state.push(name, &[len], true);
        self.state.get(name).unwrap().range()
    }
}

/// The forward pass's context: training (with the step's seed for drop-connect) or inference.
pub struct Fwd<'a> {
    pub be: &'a dyn Backend,
    pub params: &'a Tensor,
    pub state: &'a mut Tensor,
    pub train: Option<u64>,
}

/// The backward pass's context: gradients land in `grads`, in the parameters' layout.
pub struct Bwd<'a> {
    pub be: &'a dyn Backend,
    pub params: &'a Tensor,
    pub grads: &'a mut Tensor,
}

fn slice<'a>(buf: &'a Tensor, r: &Range<usize>) -> Slice<'a> {
    Slice { buf, range: r.clone() }
}

/// Convolution, batch norm, and an optional activation.
#[derive(Clone, Debug)]
pub struct ConvBnAct {
    pub conv: Conv2d,
    w: Range<usize>,
    bn: BatchNorm,
    gamma: Range<usize>,
    beta: Range<usize>,
    running: [Range<usize>; 2],
    act: Option<Activation>,
}

pub struct ConvBnActCache {
    x: Arc<Tensor>,
    conv_out: Tensor,
    bn: Option<BnSaved>,
    bn_out: Option<Tensor>,
}

impl ConvBnAct {
    /// `conv` is the convolution's parameter name (e.g. "conv_stem"), `bn` the batch norm's (e.g. "bn1").
    pub fn new(b: &mut Builder, conv_name: &str, bn_name: &str, conv: Conv2d, act: Option<Activation>) -> Self {
        let w = b.param(&format!("{conv_name}.weight"), &conv.weight_shape(), false);
        let gamma = b.param(&format!("{bn_name}.weight"), &[conv.cout], true);
        let beta = b.param(&format!("{bn_name}.bias"), &[conv.cout], true);
        let running = [
            b.state(&format!("{bn_name}.running_mean"), conv.cout),
            b.state(&format!("{bn_name}.running_var"), conv.cout),
        ];
        ConvBnAct { conv, w, bn: BatchNorm::new(conv.cout), gamma, beta, running, act }
    }

    pub fn forward(&self, f: &mut Fwd, x: Arc<Tensor>) -> Result<(Arc<Tensor>, ConvBnActCache)> {
        let conv_out = f.be.conv2d(&x, &slice(f.params, &self.w), &self.conv)?;
        let (g, b) = (slice(f.params, &self.gamma), slice(f.params, &self.beta));
        let (y, saved) = if f.train.is_some() {
            let (y, s) = f.be.batch_norm_train(&conv_out, &g, &b, &self.bn, f.state, self.running.clone())?;
            (y, Some(s))
        } else {
            let (m, v) = (slice(f.state, &self.running[0]), slice(f.state, &self.running[1]));
            (f.be.batch_norm_eval(&conv_out, &g, &b, &self.bn, &m, &v)?, None)
        };
        let (out, bn_out) = match self.act {
            Some(a) => (f.be.act(&y, a)?, Some(y)),
            None => (y, None),
        };
        Ok((Arc::new(out), ConvBnActCache { x, conv_out, bn: saved, bn_out }))
    }

    pub fn backward(&self, b: &mut Bwd, c: ConvBnActCache, dy: &Tensor) -> Result<Tensor> {
        let through_act;
        let dbn = match (self.act, &c.bn_out) {
            (Some(a), Some(y)) => {
                through_act = b.be.act_backward(y, dy, a)?;
                &through_act
            }
            _ => dy,
        };
        let saved = c.bn.as_ref().ok_or_else(|| crate::Error::Invalid("backward after an inference forward".into()))?;
        let dconv = b.be.batch_norm_backward(
            &c.conv_out,
            &slice(b.params, &self.gamma),
            saved,
            dbn,
            b.grads,
            self.gamma.clone(),
            self.beta.clone(),
        )?;
        b.be.conv2d_backward(&c.x, &slice(b.params, &self.w), &dconv, &self.conv, b.grads, self.w.clone())
    }
}

/// Squeeze-and-excitation: x * sigmoid(W2 silu(W1 mean(x) + b1) + b2), per channel.
#[derive(Clone, Debug)]
pub struct SqueezeExcite {
    c: usize,
    rd: usize,
    w1: Range<usize>,
    b1: Range<usize>,
    w2: Range<usize>,
    b2: Range<usize>,
}

pub struct SeCache {
    x: Arc<Tensor>,
    pooled: Tensor,
    reduced: Tensor,
    activated: Tensor,
    expanded: Tensor,
    gate: Tensor,
}

impl SqueezeExcite {
    /// `c` channels squeezed to `rd` (timm: round(block input channels x 0.25)).
    pub fn new(b: &mut Builder, name: &str, c: usize, rd: usize) -> Self {
        SqueezeExcite {
            c,
            rd,
            w1: b.param(&format!("{name}.conv_reduce.weight"), &[rd, c, 1, 1], false),
            b1: b.param(&format!("{name}.conv_reduce.bias"), &[rd], true),
            w2: b.param(&format!("{name}.conv_expand.weight"), &[c, rd, 1, 1], false),
            b2: b.param(&format!("{name}.conv_expand.bias"), &[c], true),
        }
    }

    pub fn forward(&self, f: &mut Fwd, x: Arc<Tensor>) -> Result<(Arc<Tensor>, SeCache)> {
        let p = f.params;
        let pooled = f.be.avg_pool(&x)?;
        let reduced = f.be.linear(&pooled, &slice(p, &self.w1), &slice(p, &self.b1), self.rd)?;
        let activated = f.be.act(&reduced, Activation::Silu)?;
        let expanded = f.be.linear(&activated, &slice(p, &self.w2), &slice(p, &self.b2), self.c)?;
        let gate = f.be.act(&expanded, Activation::Sigmoid)?;
        let y = f.be.channel_scale(&x, &gate)?;
        Ok((Arc::new(y), SeCache { x, pooled, reduced, activated, expanded, gate }))
    }

    pub fn backward(&self, b: &mut Bwd, c: SeCache, dy: &Tensor) -> Result<Tensor> {
        let p = b.params;
        let (dx_direct, dgate) = b.be.channel_scale_backward(&c.x, &c.gate, dy)?;
        let dexp = b.be.act_backward(&c.expanded, &dgate, Activation::Sigmoid)?;
        let dact =
            b.be.linear_backward(&c.activated, &slice(p, &self.w2), &dexp, b.grads, self.w2.clone(), self.b2.clone())?;
        let dred = b.be.act_backward(&c.reduced, &dact, Activation::Silu)?;
        let dpool =
            b.be.linear_backward(&c.pooled, &slice(p, &self.w1), &dred, b.grads, self.w1.clone(), self.b1.clone())?;
        let s = c.x.shape();
        let dx_pool = b.be.avg_pool_backward(&dpool, [s[0], s[1], s[2], s[3]])?;
        b.be.add(&dx_direct, &dx_pool)
    }
}
