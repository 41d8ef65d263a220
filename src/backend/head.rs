//! The fusion head's contract, shared by both backends.
//!
//! Inputs: spatial features S (B x Ds) and frequency features Q (B x Dq). Per sample b:
//!   y_s = LayerNorm(S_b) * gamma_s + beta_s      (or S_b itself with `norm` off; likewise y_q from Q_b)
//!   u_s = m_s * y_s,  u_q = m_q * y_q            branch scales m: branch switches and branch dropout
//!   g   = sigmoid(w_g . [u_s; u_q] + b_g)        gated variant only; otherwise g = 1/2
//!   z   = [2g u_s; 2(1 - g) u_q]                 so that g = 1/2 is the ungated head
//!   h   = W1 z + b1                              (H)
//!   a   = act(h) * keep / (1 - p)                SiLU or ReLU; dropout in training, keep in {0, 1}
//!   logit = w2 . a + b2                          P(fake) = sigmoid(logit)
//! Branch dropout (training, both branches on): with probability p_b a sample loses one branch, chosen
//! 50/50; the other is scaled by 2, so the fused layer sees the same total feature mass.
//! All randomness comes from `rng::counter_counter_uniform(seed, stream, row, col)`, a counter-based hash that kernels/head.cu
//! computes the same way: the masks are identical on both backends, and backward recomputes the forward's.

use crate::backend::layers::Act;
use crate::backend::Slots;
use crate::error::{Choice, Error, Result};
use crate::params::ParamLayout;
use crate::rng::{counter_uniform, Rng};
use crate::tensor::{DType, Layout, Slice, Tensor};

pub const LN_EPS: f32 = 1e-5;

/// Which branches feed the head: an ablation needs no other code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Branches {
    Both,
    Spatial,
    Freq,
}

impl Choice for Branches {
    const NAMES: &'static [(&'static str, Self)] =
        &[("both", Branches::Both), ("spatial", Branches::Spatial), ("freq", Branches::Freq)];
}

#[derive(Clone, Debug, PartialEq)]
pub struct HeadConfig {
    pub ds: usize,
    pub dq: usize,
    pub hidden: usize,
    /// Per-branch LayerNorm with learned scale and shift (on by default).
    pub layer_norm: bool,
    pub act: Act,
    /// Dropout on the hidden layer, training only.
    pub dropout: f32,
    pub gated: bool,
    pub branches: Branches,
    /// Probability per sample of dropping one branch, training only.
    pub branch_dropout: f32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Eval,
    /// Training: dropout and branch dropout masks drawn from `seed` (one seed per step).
    Train {
        seed: u64,
    },
}

impl HeadConfig {
    /// The defaults: LayerNorm on, SiLU, dropout 0.3, ungated, both branches, no branch dropout.
    pub fn new(ds: usize, dq: usize, hidden: usize) -> Self {
        HeadConfig {
            ds,
            dq,
            hidden,
            layer_norm: true,
            act: Act::Silu,
            dropout: 0.3,
            gated: false,
            branches: Branches::Both,
            branch_dropout: 0.0,
        }
    }

    pub fn d(&self) -> usize {
        self.ds + self.dq
    }

    /// The head's parameters in its flat buffer, named as in PyTorch's state_dict of the same head.
    pub fn layout(&self) -> ParamLayout {
        let mut l = ParamLayout::default();
        if self.layer_norm {
            l.push("norm_s.weight", &[self.ds], true);
            l.push("norm_s.bias", &[self.ds], true);
            l.push("norm_q.weight", &[self.dq], true);
            l.push("norm_q.bias", &[self.dq], true);
        }
        if self.gated {
            l.push("gate.weight", &[self.d()], false);
            l.push("gate.bias", &[1], true);
        }
        l.push("fc1.weight", &[self.hidden, self.d()], false);
        l.push("fc1.bias", &[self.hidden], true);
        l.push("fc2.weight", &[self.hidden], false);
        l.push("fc2.bias", &[1], true);
        l
    }

    /// Initial parameters: LayerNorm scale 1 and shift 0, gate 0 (g = 1/2, the ungated head), linear layers
    /// uniform in +-1/sqrt(fan_in) as PyTorch's nn.Linear.
    pub fn init(&self, seed: u64) -> Vec<f32> {
        let l = self.layout();
        let mut p = vec![0f32; l.total()];
        let mut rng = Rng::new(seed);
        for e in l.entries() {
            let fan_in = if e.name.starts_with("fc1") { self.d() } else { self.hidden };
            let bound = 1.0 / (fan_in as f32).sqrt();
            let slot = &mut p[e.range()];
            match e.name.as_str() {
                "norm_s.weight" | "norm_q.weight" => slot.fill(1.0),
                n if n.starts_with("fc") => slot.iter_mut().for_each(|v| *v = (2.0 * rng.uniform() - 1.0) * bound),
                _ => {}
            }
        }
        p
    }

    pub fn validate(&self) -> Result<()> {
        if self.ds == 0 || self.dq == 0 || self.hidden == 0 {
            return Err(Error::Invalid(format!(
                "head sizes must be positive: Ds {}, Dq {}, hidden {}",
                self.ds, self.dq, self.hidden
            )));
        }
        for (what, p) in [("dropout", self.dropout), ("branch dropout", self.branch_dropout)] {
            if !(0.0..1.0).contains(&p) {
                return Err(Error::Invalid(format!("head {what} {p} must be in [0, 1)")));
            }
        }
        Ok(())
    }

    /// (m_s, m_q) for sample `b`.
    pub fn branch_scales(&self, mode: Mode, b: usize) -> (f32, f32) {
        match (self.branches, mode) {
            (Branches::Spatial, _) => (1.0, 0.0),
            (Branches::Freq, _) => (0.0, 1.0),
            (Branches::Both, Mode::Train { seed })
                if self.branch_dropout > 0.0 && counter_uniform(seed, 1, b as u32, 0) < self.branch_dropout =>
            {
                if counter_uniform(seed, 2, b as u32, 0) < 0.5 {
                    (0.0, 2.0)
                } else {
                    (2.0, 0.0)
                }
            }
            _ => (1.0, 1.0),
        }
    }

    /// The dropout factor of hidden unit `j` of sample `b`: 0 or 1 / (1 - p).
    pub fn keep(&self, mode: Mode, b: usize, j: usize) -> f32 {
        match mode {
            Mode::Train { seed } if self.dropout > 0.0 => {
                if counter_uniform(seed, 0, b as u32, j as u32) < self.dropout {
                    0.0
                } else {
                    1.0 / (1.0 - self.dropout)
                }
            }
            _ => 1.0,
        }
    }
}

/// The forward's outputs: the logits, and what backward needs.
#[derive(Debug)]
pub struct HeadForward {
    /// B logits.
    pub logits: Tensor,
    pub saved: HeadSaved,
}

#[derive(Debug)]
pub struct HeadSaved {
    pub mode: Mode,
    /// B x D, the fused layer's input.
    pub z: Tensor,
    /// B x H, the hidden pre-activations (bias included).
    pub h: Tensor,
    /// B x 4: mean_s, rstd_s, mean_q, rstd_q (0 and 1 with `norm` off).
    pub stats: Tensor,
    /// B: the gate g (1/2 when ungated).
    pub gate: Tensor,
}

/// The gradients that flow into the two branches (the parameters' land in the flat gradient buffer).
#[derive(Debug)]
pub struct HeadGrads {
    /// B x Ds and B x Dq.
    pub ds: Tensor,
    pub dq: Tensor,
}

/// The head's inputs, the same in forward and backward: its configuration, its parameters (the head's layout)
/// and the two branches' features.
#[derive(Debug)]
pub struct HeadInputs<'a> {
    pub cfg: &'a HeadConfig,
    pub params: Slice<'a>,
    /// B x Ds.
    pub s: &'a Tensor,
    /// B x Dq.
    pub q: &'a Tensor,
}

/// Boundary checks for forward; returns the batch size.
/// f32 everywhere; the CPU backend also runs f64 (the whole detector's gradient check), one dtype for all.
pub fn check(x: &HeadInputs) -> Result<usize> {
    let HeadInputs { cfg, params, s, q } = x;
    cfg.validate()?;
    let dt = if params.buf.dtype() == DType::F64 { DType::F64 } else { DType::F32 };
    params.buf.expect("head params", dt, Layout::Plain, 1)?;
    s.expect("head spatial features", dt, Layout::Plain, 2)?;
    q.expect("head frequency features", dt, Layout::Plain, 2)?;
    let want = cfg.layout().total();
    if params.len() != want || params.range.end > params.buf.numel() {
        shape_err!("head params: {} values at {:?}, the configuration needs {want}", params.len(), params.range);
    }
    let b = s.shape()[0];
    if b == 0 || s.shape() != [b, cfg.ds] || q.shape() != [b, cfg.dq] {
        shape_err!(
            "head inputs: spatial {:?} and frequency {:?}; expected [B, {}] and [B, {}] with the same B >= 1",
            s.shape(),
            q.shape(),
            cfg.ds,
            cfg.dq
        );
    }
    Ok(b)
}

/// `check`, plus the backward's extra arguments against the forward's batch size, and the gradient slot;
/// returns the batch size.
pub fn check_backward(x: &HeadInputs, saved: &HeadSaved, dlogits: &Tensor, grads: &Slots<1>) -> Result<usize> {
    let (b, cfg) = (check(x)?, x.cfg);
    let [at] = &grads.at;
    if at.len() != cfg.layout().total() || at.end > grads.buf.numel() {
        shape_err!(
            "head gradients: slot {at:?} of {} values for {} parameters",
            grads.buf.numel(),
            cfg.layout().total()
        );
    }
    dlogits.expect("head dlogits", grads.buf.dtype(), Layout::Plain, 1)?;
    if dlogits.numel() != b || saved.z.shape() != [b, cfg.d()] || saved.h.shape() != [b, cfg.hidden] {
        shape_err!(
            "head backward: {} dlogits, saved z {:?} and h {:?} for a batch of {b}",
            dlogits.numel(),
            saved.z.shape(),
            saved.h.shape()
        );
    }
    Ok(b)
}
