//! Why a run fails, shown without being asked: the gradient flow per parameter tensor (norm, and the size of
//! the update against the weights), the scale of the two branches at the fusion input, and the collapse of the
//! predictions to one class, with the likely causes and what the run's own numbers say about each.

use crate::backend::optim::Norms;
use crate::params::ParamLayout;
use std::fmt::Write as _;

/// Gradients under this norm, or under VANISHING_RELATIVE of the model's largest tensor gradient, are flagged as
/// vanishing (float32 rounding leaves about 1e-7 where the exact gradient is zero); over `EXPLODING`, exploding.
pub const VANISHING: f64 = 1e-7;
pub const VANISHING_RELATIVE: f64 = 1e-5;
pub const EXPLODING: f64 = 1e3;
/// A weight tensor that one step moves by more than this fraction of its norm is flagged: steps that large keep
/// rewriting the weights instead of refining them. Healthy runs on the built-in set move 1e-4 to 2e-2 per step;
/// the SGD run whose predictions collapsed to one value (docs/collapse-study.md) moved its convolutions by 8e-2 to 1e-1.
pub const LARGE_STEP: f64 = 5e-2;
/// Branch feature scales (standard deviations) further apart than this factor are flagged.
pub const SCALE_RATIO: f64 = 100.0;

#[derive(Clone, Debug, PartialEq)]
pub struct GradRow {
    pub name: String,
    pub grad_norm: f64,
    pub weight_norm: f64,
    /// |step| / |weights|: how much one optimizer step moved the tensor.
    pub update_ratio: f64,
    /// A weight the optimizer decays (convolution kernels, linear weights), whose update ratio is judged;
    /// normalization parameters and biases are not (a bias near zero moves by large fractions of itself).
    pub decays: bool,
    /// What is wrong with the tensor's gradient or step, if anything.
    pub flag: Option<GradFlag>,
}

/// A gradient report's verdict on one tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GradFlag {
    /// Under VANISHING, or under VANISHING_RELATIVE of the model's largest tensor gradient.
    Vanishing,
    /// Over EXPLODING, or not finite.
    Exploding,
    /// One step moved a decayed weight by more than LARGE_STEP of its norm.
    LargeSteps,
}

impl std::fmt::Display for GradFlag {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(match self {
            GradFlag::Vanishing => "vanishing",
            GradFlag::Exploding => "exploding",
            GradFlag::LargeSteps => "large steps",
        })
    }
}

impl GradRow {
    /// A batch norm's shift whose output only feeds other batch norms (through convolutions and residual adds)
    /// has no gradient by construction: any constant shift is removed downstream. EfficientNet's projection
    /// norms are such. Their flag is expected, so it is shown in the table but raises no warning.
    pub fn expected_zero(&self) -> bool {
        self.name.contains(".bn") && self.name.ends_with(".bias")
    }

    pub fn flag(&self) -> Option<GradFlag> {
        self.flag
    }
}

/// The flag of a row, given the largest tensor gradient norm of the model.
fn judge(r: &GradRow, largest: f64) -> Option<GradFlag> {
    let g = r.grad_norm;
    if !g.is_finite() || g > EXPLODING {
        Some(GradFlag::Exploding)
    } else if g < VANISHING.max(VANISHING_RELATIVE * largest) {
        Some(GradFlag::Vanishing)
    } else if r.decays && r.update_ratio > LARGE_STEP {
        Some(GradFlag::LargeSteps)
    } else {
        None
    }
}

fn set_flags(rows: &mut [GradRow]) {
    let largest = rows.iter().map(|r| r.grad_norm).filter(|g| g.is_finite()).fold(0.0, f64::max);
    rows.iter_mut().for_each(|r| r.flag = judge(r, largest));
}

/// Rows per parameter tensor from two reductions on the device (backend/optim.rs): `grads` from param_norms
/// (gradient and weight norms) and `steps` from step_norms (the step's norm and the weights' before it).
pub fn grad_rows(layout: &ParamLayout, grads: &Norms, steps: &Norms) -> Vec<GradRow> {
    let mut rows: Vec<GradRow> = layout
        .entries()
        .iter()
        .zip(grads.per_tensor.iter().zip(&steps.per_tensor))
        .map(|(e, (&(g, w), &(step, before)))| GradRow {
            name: e.name.clone(),
            grad_norm: g,
            weight_norm: w,
            update_ratio: step / before.max(1e-12),
            decays: !e.no_decay,
            flag: None,
        })
        .collect();
    set_flags(&mut rows);
    rows
}

/// The group a tensor reports under: a block of the backbone, or a branch's part.
fn group_of(name: &str) -> String {
    let parts: Vec<&str> = name.split('.').collect();
    let n = if parts.get(1) == Some(&"blocks") || parts.get(1) == Some(&"stages") { 4 } else { 2 };
    parts[..n.min(parts.len() - 1).max(1)].join(".")
}

/// Rows summed (in squares) per group, in model order.
pub fn group_rows(rows: &[GradRow]) -> Vec<GradRow> {
    let mut out: Vec<(GradRow, f64)> = Vec::new(); // (row, squared step)
    for r in rows {
        let g = group_of(&r.name);
        let step2 = (r.update_ratio * r.weight_norm).powi(2);
        match out.last_mut().filter(|(o, _)| o.name == g) {
            Some((o, s2)) => {
                o.grad_norm = o.grad_norm.hypot(r.grad_norm);
                o.weight_norm = o.weight_norm.hypot(r.weight_norm);
                o.decays |= r.decays;
                *s2 += step2;
            }
            None => out.push((
                GradRow {
                    name: g,
                    grad_norm: r.grad_norm,
                    weight_norm: r.weight_norm,
                    update_ratio: 0.0,
                    decays: r.decays,
                    flag: None,
                },
                step2,
            )),
        }
    }
    let mut rows: Vec<GradRow> = out
        .into_iter()
        .map(|(mut r, s2)| {
            r.update_ratio = s2.sqrt() / r.weight_norm.max(1e-12);
            r
        })
        .collect();
    set_flags(&mut rows);
    rows
}

/// A table of the groups, flagged ones marked.
pub fn table(rows: &[GradRow]) -> String {
    let mut s = format!("  {:<34} {:>11} {:>11} {:>12}\n", "parameters", "grad norm", "weight norm", "update/weight");
    for r in group_rows(rows) {
        let flag = r.flag().map_or(String::new(), |f| format!("  <- {f}"));
        let _ = writeln!(
            s,
            "  {:<34} {:>11.3e} {:>11.3e} {:>12.3e}{flag}",
            r.name, r.grad_norm, r.weight_norm, r.update_ratio
        );
    }
    s
}

/// Mean and standard deviation of a branch's features.
pub fn mean_std(v: &[f32]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    (m, (v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / n).sqrt())
}

/// A warning when the two branches' feature scales differ by more than SCALE_RATIO.
pub fn scale_warning(spatial: (f64, f64), freq: (f64, f64)) -> Option<String> {
    let (a, b) = (spatial.1.max(1e-12), freq.1.max(1e-12));
    (a / b > SCALE_RATIO || b / a > SCALE_RATIO).then(|| {
        format!(
            "branch scales are {:.0}x apart at the fusion input (spatial std {:.3e}, frequency std {:.3e}): the larger branch \
             swamps the other unless the head normalizes them (the head's LayerNorm is on by default)",
            (a / b).max(b / a),
            spatial.1,
            freq.1
        )
    })
}

/// Whether validation predictions have collapsed: all on one side of 0.5, or spread under 1e-3.
pub fn collapsed(scores: &[f32]) -> Option<String> {
    if scores.is_empty() {
        return None;
    }
    let fake = scores.iter().filter(|&&s| s >= 0.5).count();
    let (_, std) = mean_std(scores);
    if fake == 0 {
        Some(format!("every validation image is predicted real (P(fake) std {std:.2e})"))
    } else if fake == scores.len() {
        Some(format!("every validation image is predicted fake (P(fake) std {std:.2e})"))
    } else if std < 1e-3 {
        Some(format!("the predictions barely differ between images (P(fake) std {std:.2e})"))
    } else {
        None
    }
}

/// What the run's own numbers say about each likely cause of a collapse.
#[derive(Clone, Debug, Default)]
pub struct Evidence {
    /// Which branches feed the head: "both", "spatial" or "freq" (a cause that needs the other is left out).
    pub branches: String,
    pub freq_magnitude: String,
    pub freq_feature_range: (f64, f64),
    pub branch_scales: Option<((f64, f64), (f64, f64))>,
    pub lr: f64,
    /// The optimizer and its settings (Optimizer::describe).
    pub optimizer: String,
    /// The clipping of the gradient's total norm, if any.
    pub max_grad_norm: Option<f32>,
    pub flagged: Vec<String>,
    pub class_weights: [f32; 2],
    pub sampler: String,
    pub fake_share: f64,
    /// The validation AUC and the threshold with the best balanced accuracy (and that accuracy).
    pub auc: Option<f64>,
    pub best_threshold: Option<(f32, f64)>,
}

impl Evidence {
    /// "magnitudes are 'raw', the branch's input spans A to B", with advice when that is far from unit range.
    fn freq_input(&self) -> String {
        let (lo, hi) = self.freq_feature_range;
        format!(
            "magnitudes are '{}', the branch's input spans {lo:.3e} to {hi:.3e}{}",
            self.freq_magnitude,
            if hi - lo > 1e3 { " (far from unit range: use --freq-norm log)" } else { "" }
        )
    }
}

/// Fires on the second collapsed evaluation in a row.
#[derive(Debug, Default)]
pub struct CollapseWatch {
    in_a_row: usize,
}

impl CollapseWatch {
    pub fn check(&mut self, scores: &[f32], ev: &Evidence) -> Option<String> {
        let Some(what) = collapsed(scores) else {
            self.in_a_row = 0;
            return None;
        };
        self.in_a_row += 1;
        if self.in_a_row < 2 {
            return None;
        }
        let mut s = format!(
            "COLLAPSE: {what}, for {} evaluations in a row. Likely causes, and what this run shows:\n",
            self.in_a_row
        );
        match (ev.auc, ev.best_threshold) {
            (Some(a), Some((t, b))) if a >= 0.75 => {
                let _ = writeln!(
                    s,
                    "  - the decision threshold, not the features: validation AUC is {a:.3}, so the scores still rank fakes \
                     above reals; only 0.5 sits on one side of them. At P(fake) >= {t:.3} the balanced accuracy is {b:.3}. \
                     Weight the classes (--loss focal or wbce) or balance the batches (--sampler balanced)"
                );
            }
            (Some(a), _) => {
                let _ = writeln!(
                    s,
                    "  - the features: validation AUC is {a:.3}: the scores do not separate the classes yet"
                );
            }
            _ => {}
        }
        if ev.branches != "spatial" {
            let _ = writeln!(s, "  - frequency magnitudes not normalized: {}", ev.freq_input());
        }
        match ev.branch_scales {
            Some((sp, fq)) => {
                let _ = writeln!(
                    s,
                    "  - branch scales apart: spatial std {:.3e}, frequency std {:.3e}{}",
                    sp.1,
                    fq.1,
                    if scale_warning(sp, fq).is_some() { " (more than 100x apart)" } else { "" }
                );
            }
            None if ev.branches == "spatial" || ev.branches == "freq" => {
                let _ = writeln!(s, "  - branch scales apart: does not apply (only the {} branch is on)", ev.branches);
            }
            None => {
                let _ = writeln!(s, "  - branch scales apart: not measured yet");
            }
        }
        let _ = writeln!(
            s,
            "  - learning rate: {:.2e} with {}; flagged tensors (vanishing or exploding gradients, large steps): {}",
            ev.lr,
            ev.optimizer,
            if ev.flagged.is_empty() { "none".to_string() } else { ev.flagged.join(", ") }
        );
        let _ = writeln!(
            s,
            "  - loss weighting: class weights (real, fake) ({}, {}), {} sampler, {:.0}% of the training images are fake",
            ev.class_weights[0],
            ev.class_weights[1],
            ev.sampler,
            100.0 * ev.fake_share
        );
        Some(s)
    }
}

/// Why a run stopped at a loss, gradient norm, weight or validation score that is not finite (`what` says which),
/// with what the run's numbers say. `kept` is the checkpoint left from an earlier epoch, if any.
pub fn divergence(step: u64, what: &str, ev: &Evidence, kept: Option<&std::path::Path>) -> String {
    let mut s = format!("by step {step} {what}.\n");
    let _ = writeln!(
        s,
        "  - learning rate {:.2e} with {}, gradient clipping {}",
        ev.lr,
        ev.optimizer,
        ev.max_grad_norm.map_or("off (--max-grad-norm 0)".to_string(), |m| format!("at {m}"))
    );
    if ev.branches != "spatial" {
        let _ = writeln!(s, "  - frequency branch: {}", ev.freq_input());
    }
    if !ev.flagged.is_empty() {
        let _ = writeln!(s, "  - flagged at the last gradient report: {}", ev.flagged.join(", "));
    }
    match kept {
        Some(p) => {
            let _ = write!(s, "The checkpoint of the last finished epoch is kept: {}", p.display());
        }
        None => s.push_str("No epoch finished, so no checkpoint was written."),
    }
    s
}

/// Whether a confusion matrix has every prediction in one class.
pub fn collapsed_confusion(c: &crate::backend::loss::Confusion) -> bool {
    c.tp + c.fp == 0 || c.tn + c.fn_ == 0
}
