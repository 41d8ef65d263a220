//! The units the networks are built from, each with an explicit forward that returns what its backward needs
//! (no tape), written once against the Backend trait: conv + batch norm (+ activation) and
//! squeeze-and-excitation. Parameters and batch-norm running statistics are registered by name in the model's
//! flat layouts (timm's names, so that timm's weights load by name).

use crate::backend::head::Mode;
use crate::backend::{Act, Backend, BatchNorm, BnBackward, BnParams, BnRunning, BnSaved, Conv2d, ConvBackward, Slots};
use crate::error::Result;
use crate::params::ParamLayout;
use crate::tensor::{Slice, Tensor};
use std::ops::Range;
use std::sync::Arc;

/// Registers parameters and state while a model is built.
#[derive(Debug, Default)]
pub struct Builder {
    pub params: ParamLayout,
    /// Batch-norm running statistics and other statistics of the data (not trained, saved with the model).
    pub state: ParamLayout,
}

impl Builder {
    fn param(&mut self, name: &str, shape: &[usize], no_decay: bool) -> Range<usize> {
        self.params.push(name, shape, no_decay);
        self.params.get(name).unwrap().range()
    }
    pub(crate) fn state(&mut self, name: &str, len: usize) -> Range<usize> {
        self.state.push(name, &[len], true);
        self.state.get(name).unwrap().range()
    }
}

/// The forward pass's context: training (with the step's seed for drop-connect and the head's dropout) or
/// inference.
pub struct Fwd<'a> {
    pub be: &'a dyn Backend,
    pub params: &'a Tensor,
    pub state: &'a mut Tensor,
    pub mode: Mode,
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

/// Batch norm's parameters and running statistics.
#[derive(Clone, Debug)]
struct Norm {
    bn: BatchNorm,
    gamma: Range<usize>,
    beta: Range<usize>,
    running: [Range<usize>; 2],
}

impl Norm {
    /// `c` channels under `name` (timm's names: NAME.weight, .bias, .running_mean, .running_var).
    fn new(b: &mut Builder, name: &str, c: usize) -> Norm {
        Norm {
            bn: BatchNorm::new(c),
            gamma: b.param(&format!("{name}.weight"), &[c], true),
            beta: b.param(&format!("{name}.bias"), &[c], true),
            running: [b.state(&format!("{name}.running_mean"), c), b.state(&format!("{name}.running_var"), c)],
        }
    }

    /// Batch statistics in training (with what the backward needs), running ones in inference.
    fn forward(&self, f: &mut Fwd, x: &Tensor) -> Result<(Tensor, Option<BnSaved>)> {
        let p = BnParams { gamma: slice(f.params, &self.gamma), beta: slice(f.params, &self.beta), bn: &self.bn };
        if f.mode != Mode::Eval {
            let running = Slots { buf: f.state, at: self.running.clone() };
            let (y, s) = f.be.batch_norm_train(x, &p, running)?;
            Ok((y, Some(s)))
        } else {
            let r = BnRunning { mean: slice(f.state, &self.running[0]), var: slice(f.state, &self.running[1]) };
            Ok((f.be.batch_norm_eval(x, &p, &r)?, None))
        }
    }

    /// The input's gradient; the scale's and shift's land in the gradient buffer.
    fn backward(&self, b: &mut Bwd, x: &Tensor, saved: &BnSaved, dy: &Tensor) -> Result<Tensor> {
        let a = BnBackward { x, gamma: slice(b.params, &self.gamma), saved, dy };
        b.be.batch_norm_backward(&a, Slots { buf: b.grads, at: [self.gamma.clone(), self.beta.clone()] })
    }
}

/// Convolution, batch norm (optional: the frequency branch can do without, to reproduce a failure), and an
/// optional activation.
#[derive(Clone, Debug)]
pub struct ConvBnAct {
    pub conv: Conv2d,
    w: Range<usize>,
    norm: Option<Norm>,
    act: Option<Act>,
}

pub struct ConvBnActCache {
    x: Arc<Tensor>,
    /// With batch norm in training: its input and saved statistics.
    bn: Option<(Tensor, BnSaved)>,
    /// With an activation: its input.
    act_in: Option<Tensor>,
}

impl ConvBnAct {
    /// Per image, on an `h` x `w` input: the values its training forward keeps for the backward (the convolution's
    /// output, the batch norm's and the activation's), and the output's height and width.
    pub fn kept(&self, h: usize, w: usize) -> (usize, usize, usize) {
        let (ho, wo) = (h.div_ceil(self.conv.stride), w.div_ceil(self.conv.stride));
        let copies = 1 + self.norm.is_some() as usize + self.act.is_some() as usize;
        (copies * self.conv.cout * ho * wo, ho, wo)
    }

    /// `conv_name` is the convolution's parameter name (e.g. "conv_stem"), `bn_name` the batch norm's (e.g.
    /// "bn1"); no batch norm without one.
    pub fn new(b: &mut Builder, conv_name: &str, bn_name: Option<&str>, conv: Conv2d, act: Option<Act>) -> Self {
        let w = b.param(&format!("{conv_name}.weight"), &conv.weight_shape(), false);
        let norm = bn_name.map(|n| Norm::new(b, n, conv.cout));
        ConvBnAct { conv, w, norm, act }
    }

    pub fn forward(&self, f: &mut Fwd, x: Arc<Tensor>) -> Result<(Arc<Tensor>, ConvBnActCache)> {
        let conv_out = f.be.conv2d(&x, &slice(f.params, &self.w), &self.conv)?;
        let (y, bn) = match &self.norm {
            None => (conv_out, None),
            Some(n) => {
                let (y, saved) = n.forward(f, &conv_out)?;
                (y, saved.map(|s| (conv_out, s)))
            }
        };
        let (out, act_in) = match self.act {
            Some(a) => (f.be.act(&y, a)?, Some(y)),
            None => (y, None),
        };
        Ok((Arc::new(out), ConvBnActCache { x, bn, act_in }))
    }

    pub fn backward(&self, b: &mut Bwd, c: ConvBnActCache, dy: &Tensor) -> Result<Tensor> {
        let through_act;
        let dy = match (self.act, &c.act_in) {
            (Some(a), Some(y)) => {
                through_act = b.be.act_backward(y, dy, a)?;
                &through_act
            }
            _ => dy,
        };
        let through_norm;
        let dconv = match (&self.norm, &c.bn) {
            (None, _) => dy,
            (Some(n), Some((conv_out, saved))) => {
                through_norm = n.backward(b, conv_out, saved, dy)?;
                &through_norm
            }
            (Some(_), None) => return Err(crate::Error::Invalid("backward after an inference forward".into())),
        };
        let a = ConvBackward { x: &c.x, w: slice(b.params, &self.w), dy: dconv, c: &self.conv };
        b.be.conv2d_backward(&a, Slots { buf: b.grads, at: [self.w.clone()] })
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
        let activated = f.be.act(&reduced, Act::Silu)?;
        let expanded = f.be.linear(&activated, &slice(p, &self.w2), &slice(p, &self.b2), self.c)?;
        let gate = f.be.act(&expanded, Act::Sigmoid)?;
        let y = f.be.channel_scale(&x, &gate)?;
        Ok((Arc::new(y), SeCache { x, pooled, reduced, activated, expanded, gate }))
    }

    pub fn backward(&self, b: &mut Bwd, c: SeCache, dy: &Tensor) -> Result<Tensor> {
        let p = b.params;
        let (dx_direct, dgate) = b.be.channel_scale_backward(&c.x, &c.gate, dy)?;
        let dexp = b.be.act_backward(&c.expanded, &dgate, Act::Sigmoid)?;
        let g2 = Slots { buf: &mut *b.grads, at: [self.w2.clone(), self.b2.clone()] };
        let dact = b.be.linear_backward(&c.activated, &slice(p, &self.w2), &dexp, g2)?;
        let dred = b.be.act_backward(&c.reduced, &dact, Act::Silu)?;
        let g1 = Slots { buf: &mut *b.grads, at: [self.w1.clone(), self.b1.clone()] };
        let dpool = b.be.linear_backward(&c.pooled, &slice(p, &self.w1), &dred, g1)?;
        let s = c.x.shape();
        let dx_pool = b.be.avg_pool_backward(&dpool, [s[0], s[1], s[2], s[3]])?;
        b.be.add(&dx_direct, &dx_pool)
    }
}
