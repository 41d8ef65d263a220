//! The imbalance losses' contract, shared by both backends.
//!
//! Label 1 is FAKE, label 0 is REAL; the model's logit x gives P(fake) = sigmoid(x). For a (smoothed) label y:
//!   loss = w1 * y * f1(x) + w0 * (1 - y) * f0(x),   mean over the batch,
//! - BCE:   f1 = -ln p,                          f0 = -ln(1 - p)
//! - focal: f1 = -alpha (1 - p)^gamma ln p,      f0 = -(1 - alpha) p^gamma ln(1 - p)
//!   (alpha_t = alpha for the class labelled 1, fake. With fakes the majority, alpha should favour the rarer
//!   real class: alpha < 0.5, as the default 0.25 does.)
//! - class weights (w0, w1): none, `pos_weight` (w1 = it, w0 = 1), per class, `auto` (w1 = n_real / n_fake,
//!   from the training set's counts), or class-balanced by the effective number of samples (Cui et al. 2019:
//!   w_c proportional to (1 - beta) / (1 - beta^n_c), scaled to sum to 2).
//! - label smoothing eps: y = label (1 - eps) + eps / 2.
//!
//! Every term is computed from softplus and sigmoid of +-x, so any logit (+-100 included) gives finite values.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::tensor::{DType, Layout, Tensor};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LossKind {
    Bce,
    Focal { alpha: f32, gamma: f32 },
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossConfig {
    pub kind: LossKind,
    /// (w0, w1): the weights of real and fake samples.
    pub weights: [f32; 2],
    pub smoothing: f32,
}

impl LossConfig {
    /// Focal loss with alpha = 0.25, gamma = 2, unweighted, no smoothing.
    pub fn focal() -> Self {
        LossConfig { kind: LossKind::Focal { alpha: 0.25, gamma: 2.0 }, weights: [1.0, 1.0], smoothing: 0.0 }
    }

    pub fn bce(weights: [f32; 2]) -> Self {
        LossConfig { kind: LossKind::Bce, weights, smoothing: 0.0 }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Invalid(m));
        if let LossKind::Focal { alpha, gamma } = self.kind {
            if !(0.0..=1.0).contains(&alpha) {
                return bad(format!("focal alpha {alpha} must be in [0, 1]"));
            }
            if !(gamma >= 0.0 && gamma.is_finite()) {
                return bad(format!("focal gamma {gamma} must be finite and >= 0"));
            }
        }
        if !self.weights.iter().all(|w| w.is_finite() && *w >= 0.0) {
            return bad(format!("class weights {:?} must be finite and >= 0", self.weights));
        }
        if !(0.0..1.0).contains(&self.smoothing) {
            return bad(format!("label smoothing {} must be in [0, 1)", self.smoothing));
        }
        Ok(())
    }
}

/// How the class weights (w0, w1) are chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ClassWeighting {
    None,
    PosWeight(f32),
    PerClass([f32; 2]),
    /// w1 = n_real / n_fake.
    Auto,
    /// Class-balanced by the effective number of samples, beta in [0, 1).
    Effective {
        beta: f64,
    },
}

impl ClassWeighting {
    /// The weights for a training set with `counts` = [n_real, n_fake].
    pub fn weights(&self, counts: [usize; 2]) -> Result<[f32; 2]> {
        let need_both = || {
            if counts.contains(&0) {
                Err(Error::Invalid(format!("class weights need both classes; counts (real, fake) are {counts:?}")))
            } else {
                Ok(())
            }
        };
        Ok(match *self {
            ClassWeighting::None => [1.0, 1.0],
            ClassWeighting::PosWeight(w) => [1.0, w],
            ClassWeighting::PerClass(w) => w,
            ClassWeighting::Auto => {
                need_both()?;
                [1.0, (counts[0] as f64 / counts[1] as f64) as f32]
            }
            ClassWeighting::Effective { beta } => {
                need_both()?;
                if !(0.0..1.0).contains(&beta) {
                    return Err(Error::Invalid(format!("class-balanced beta {beta} must be in [0, 1)")));
                }
                let raw = counts.map(|n| (1.0 - beta) / (1.0 - beta.powf(n as f64)));
                let sum = raw[0] + raw[1];
                raw.map(|w| (2.0 * w / sum) as f32)
            }
        })
    }
}

/// Confusion counts at a threshold on P(fake); positive = fake.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Confusion {
    pub tp: u64,
    pub fp: u64,
    pub tn: u64,
    pub fn_: u64,
}

impl std::ops::AddAssign for Confusion {
    fn add_assign(&mut self, o: Self) {
        self.tp += o.tp;
        self.fp += o.fp;
        self.tn += o.tn;
        self.fn_ += o.fn_;
    }
}

/// What the loss op leaves on the backend's device. Reading the scalars (`LossOutput::read`) waits for the
/// GPU, so a training step reads them only when it reports, not every step.
#[derive(Debug)]
pub struct LossOutput {
    /// d loss / d logit per sample (the 1/B of the mean included).
    pub dlogits: Tensor,
    /// 5 f32: mean loss, TP, FP, TN, FN (counts exact below 2^24 samples).
    pub stats: Tensor,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossStats {
    pub loss: f64,
    pub confusion: Confusion,
}

impl LossOutput {
    pub fn read(&self, be: &dyn Backend) -> Result<LossStats> {
        let host;
        let s = if self.stats.is_host() {
            self.stats.host::<f32>()?
        } else {
            host = be.download(&self.stats)?;
            host.host::<f32>()?
        };
        let count = |x: f32| x as u64;
        Ok(LossStats {
            loss: s[0] as f64,
            confusion: Confusion { tp: count(s[1]), fp: count(s[2]), tn: count(s[3]), fn_: count(s[4]) },
        })
    }
}

/// The threshold on P(fake) as a threshold on the logit (sigmoid is monotonic), rounded to f32 once, so that
/// both backends compare the same f32 numbers: x >= ln(t / (1 - t)) exactly when sigmoid(x) >= t.
pub fn threshold_logit(t: f32) -> f32 {
    let t = t as f64;
    (t / (1.0 - t)).ln() as f32
}

/// Boundary checks: logits and labels both f32 vectors of the same length B >= 1; returns B.
pub fn check(logits: &Tensor, labels: &Tensor, cfg: &LossConfig, threshold: f32) -> Result<usize> {
    logits.expect("loss logits", DType::F32, Layout::Plain, 1)?;
    labels.expect("loss labels", DType::F32, Layout::Plain, 1)?;
    if logits.shape() != labels.shape() || logits.numel() == 0 {
        shape_err!("loss: {} logits and {} labels (need the same number, at least 1)", logits.numel(), labels.numel());
    }
    if !(0.0..=1.0).contains(&threshold) {
        return Err(Error::Invalid(format!("threshold {threshold} must be in [0, 1]")));
    }
    cfg.validate()?;
    Ok(logits.numel())
}
