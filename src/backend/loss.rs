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
use std::str::FromStr;

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

/// `--class-weights`: none, auto, effective[:BETA], pos:W or W_REAL,W_FAKE.
impl FromStr for ClassWeighting {
    type Err = Error;

    fn from_str(w: &str) -> Result<Self> {
        let num = |v: &str| v.trim().parse::<f32>().ok().filter(|x| x.is_finite() && *x >= 0.0);
        let parsed = match w {
            "none" => Some(ClassWeighting::None),
            "auto" => Some(ClassWeighting::Auto),
            "effective" => Some(ClassWeighting::Effective { beta: 0.999 }),
            _ => match (w.split_once(':'), w.split_once(',')) {
                (Some(("effective", b)), _) => b
                    .parse::<f64>()
                    .ok()
                    .filter(|b| (0.0..1.0).contains(b))
                    .map(|beta| ClassWeighting::Effective { beta }),
                (Some(("pos", v)), _) => num(v).map(ClassWeighting::PosWeight),
                (None, Some((a, b))) => match (num(a), num(b)) {
                    (Some(a), Some(b)) if a + b > 0.0 => Some(ClassWeighting::PerClass([a, b])),
                    _ => None,
                },
                _ => None,
            },
        };
        parsed.ok_or_else(|| {
            Error::Invalid(
                "choose none, auto, effective[:BETA], pos:W or W_REAL,W_FAKE (weights >= 0, not both 0, BETA in [0, 1))"
                    .into(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_weights_parse() {
        let ok = |s: &str| s.parse::<ClassWeighting>().unwrap();
        assert_eq!(ok("none"), ClassWeighting::None);
        assert_eq!(ok("auto"), ClassWeighting::Auto);
        assert_eq!(ok("effective"), ClassWeighting::Effective { beta: 0.999 });
        assert_eq!(ok("effective:0.9"), ClassWeighting::Effective { beta: 0.9 });
        assert_eq!(ok("pos:2.5"), ClassWeighting::PosWeight(2.5));
        assert_eq!(ok("1, 0.25"), ClassWeighting::PerClass([1.0, 0.25]));
        assert_eq!(ok("0,3"), ClassWeighting::PerClass([0.0, 3.0]));
    }

    #[test]
    fn bad_class_weights_list_the_grammar() {
        for bad in
            ["", "Auto", "pos:x", "pos:-1", "pos:inf", "0,0", "1,-2", "1,2,3", "effective:1", "effective:-0.1", "neg:2"]
        {
            let e = bad.parse::<ClassWeighting>().unwrap_err().to_string();
            assert!(e.starts_with("choose none, auto, effective[:BETA], pos:W or W_REAL,W_FAKE"), "{bad}: {e}");
        }
    }
}
