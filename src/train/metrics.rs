//! Detection metrics from scores (P(fake)) and labels (1 fake, 0 real), as DeepfakeBench reports them: AUC-ROC,
//! average precision, EER, and the confusion matrix with accuracy, balanced accuracy and per-class F1, at 0.5
//! and at the threshold that maximizes balanced accuracy. Accuracy alone is never the headline: with 1 real to
//! 5 fakes, calling everything fake scores 83%.

use crate::backend::loss::Confusion;
use serde::Serialize;
use std::fmt;

/// Predicted fake where score >= threshold.
pub fn confusion_at(scores: &[f32], labels: &[u8], threshold: f32) -> Confusion {
    let mut c = Confusion::default();
    for (&s, &y) in scores.iter().zip(labels) {
        match (y == 1, s >= threshold) {
            (true, true) => c.tp += 1,
            (false, true) => c.fp += 1,
            (false, false) => c.tn += 1,
            (true, false) => c.fn_ += 1,
        }
    }
    c
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        f64::NAN
    } else {
        a as f64 / b as f64
    }
}

impl Confusion {
    pub fn total(&self) -> u64 {
        self.tp + self.fp + self.tn + self.fn_
    }
    pub fn accuracy(&self) -> f64 {
        ratio(self.tp + self.tn, self.total())
    }
    /// Recall of fakes (true positive rate).
    pub fn tpr(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }
    /// Recall of reals (true negative rate).
    pub fn tnr(&self) -> f64 {
        ratio(self.tn, self.tn + self.fp)
    }
    /// The mean of the two recalls: 0.5 for any constant prediction, whatever the class balance.
    pub fn balanced_accuracy(&self) -> f64 {
        (self.tpr() + self.tnr()) / 2.0
    }
    pub fn f1_fake(&self) -> f64 {
        ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn_)
    }
    pub fn f1_real(&self) -> f64 {
        ratio(2 * self.tn, 2 * self.tn + self.fn_ + self.fp)
    }
}

/// Indices sorted by descending score.
fn by_score_desc(scores: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    idx
}

/// ROC points (fpr, tpr, threshold), one per distinct score, from (0, 0) at +inf. None without both classes.
pub fn roc(scores: &[f32], labels: &[u8]) -> Option<Vec<(f64, f64, f32)>> {
    let pos = labels.iter().filter(|&&y| y == 1).count() as f64;
    let neg = labels.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return None;
    }
    let idx = by_score_desc(scores);
    let mut pts = vec![(0.0, 0.0, f32::INFINITY)];
    let (mut tp, mut fp) = (0.0, 0.0);
    for (k, &i) in idx.iter().enumerate() {
        if labels[i] == 1 {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        // Tied scores form one point: a threshold cannot split them.
        if k + 1 == idx.len() || scores[idx[k + 1]] != scores[i] {
            pts.push((fp / neg, tp / pos, scores[i]));
        }
    }
    Some(pts)
}

/// Area under the ROC curve (trapezoids: a tie between a real and a fake counts one half).
pub fn auc(scores: &[f32], labels: &[u8]) -> Option<f64> {
    let pts = roc(scores, labels)?;
    Some(pts.windows(2).map(|w| (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0).sum())
}

/// Average precision of the fake class: sum over thresholds of (recall step) x precision (as scikit-learn).
pub fn average_precision(scores: &[f32], labels: &[u8]) -> Option<f64> {
    let pos = labels.iter().filter(|&&y| y == 1).count() as f64;
    let pts = roc(scores, labels)?;
    let neg = labels.len() as f64 - pos;
    let mut ap = 0.0;
    for w in pts.windows(2) {
        let (tp, fp) = (w[1].1 * pos, w[1].0 * neg);
        ap += (w[1].1 - w[0].1) * tp / (tp + fp);
    }
    Some(ap)
}

/// Equal error rate: where the false positive rate equals the false negative rate, interpolated linearly
/// between the two ROC points that bracket it. Returns (eer, threshold at the nearer point).
pub fn eer(scores: &[f32], labels: &[u8]) -> Option<(f64, f32)> {
    let pts = roc(scores, labels)?;
    for w in pts.windows(2) {
        let (d0, d1) = (w[0].0 - (1.0 - w[0].1), w[1].0 - (1.0 - w[1].1)); // fpr - fnr, rising from -1 to 1
        if d1 >= 0.0 {
            let t = if d1 == d0 { 0.0 } else { -d0 / (d1 - d0) };
            let e = w[0].0 + t * (w[1].0 - w[0].0);
            return Some((e, if t < 0.5 { w[0].2 } else { w[1].2 }));
        }
    }
    None
}

/// The threshold (among the scores) with the highest balanced accuracy, and that accuracy.
pub fn best_balanced_threshold(scores: &[f32], labels: &[u8]) -> Option<(f32, f64)> {
    let pts = roc(scores, labels)?;
    pts.iter().skip(1).map(|&(fpr, tpr, t)| (t, (tpr + 1.0 - fpr) / 2.0)).max_by(|a, b| a.1.total_cmp(&b.1))
}

/// Everything an evaluation reports.
#[derive(Clone, Debug)]
pub struct Report {
    pub n_real: usize,
    pub n_fake: usize,
    pub auc: Option<f64>,
    pub ap: Option<f64>,
    pub eer: Option<(f64, f32)>,
    pub at_half: Confusion,
    pub best: Option<(f32, Confusion)>,
}

impl Report {
    pub fn new(scores: &[f32], labels: &[u8]) -> Report {
        let n_fake = labels.iter().filter(|&&y| y == 1).count();
        let best = best_balanced_threshold(scores, labels).map(|(t, _)| (t, confusion_at(scores, labels, t)));
        Report {
            n_real: labels.len() - n_fake,
            n_fake,
            auc: auc(scores, labels),
            ap: average_precision(scores, labels),
            eer: eer(scores, labels),
            at_half: confusion_at(scores, labels, 0.5),
            best,
        }
    }
}

/// The report as `eval --json` prints it: counts, AUC, AP, EER (and its threshold), and the confusion and rates
/// at 0.5 and at the threshold of best balanced accuracy. A metric that one class cannot give is null.
#[derive(Serialize)]
struct ReportJson {
    n_real: usize,
    n_fake: usize,
    auc: Option<f64>,
    ap: Option<f64>,
    eer: Option<f64>,
    eer_threshold: Option<f64>,
    #[serde(rename = "at_0.5")]
    at_half: ConfusionJson,
    best: Option<BestJson>,
}

#[derive(Serialize)]
struct ConfusionJson {
    tp: u64,
    fp: u64,
    tn: u64,
    #[serde(rename = "fn")]
    fn_: u64,
    accuracy: Option<f64>,
    balanced_accuracy: Option<f64>,
    f1_fake: Option<f64>,
    f1_real: Option<f64>,
}

#[derive(Serialize)]
struct BestJson {
    threshold: Option<f64>,
    confusion: ConfusionJson,
}

fn r6(v: f64) -> Option<f64> {
    crate::train::runlog::rounded(v, 6)
}

impl From<&Confusion> for ConfusionJson {
    fn from(c: &Confusion) -> ConfusionJson {
        ConfusionJson {
            tp: c.tp,
            fp: c.fp,
            tn: c.tn,
            fn_: c.fn_,
            accuracy: r6(c.accuracy()),
            balanced_accuracy: r6(c.balanced_accuracy()),
            f1_fake: r6(c.f1_fake()),
            f1_real: r6(c.f1_real()),
        }
    }
}

impl Serialize for Report {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        ReportJson {
            n_real: self.n_real,
            n_fake: self.n_fake,
            auc: self.auc.and_then(r6),
            ap: self.ap.and_then(r6),
            eer: self.eer.and_then(|e| r6(e.0)),
            eer_threshold: self.eer.and_then(|e| r6(e.1 as f64)),
            at_half: (&self.at_half).into(),
            best: self.best.as_ref().map(|(t, c)| BestJson { threshold: r6(*t as f64), confusion: c.into() }),
        }
        .serialize(s)
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or("n/a (one class)".into(), |x| format!("{x:.4}"))
}

fn confusion_lines(f: &mut fmt::Formatter<'_>, what: &str, c: &Confusion) -> fmt::Result {
    writeln!(
        f,
        "  {what}: balanced acc {:.4}, acc {:.4}, F1 fake {:.4}, F1 real {:.4}",
        c.balanced_accuracy(),
        c.accuracy(),
        c.f1_fake(),
        c.f1_real()
    )?;
    writeln!(f, "    confusion      said real  said fake")?;
    writeln!(f, "    real        {:>11} {:>10}", c.tn, c.fp)?;
    writeln!(f, "    fake        {:>11} {:>10}", c.fn_, c.tp)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "  {} real, {} fake", self.n_real, self.n_fake)?;
        let eer = self.eer.map(|(e, _)| e);
        writeln!(f, "  AUC {}, AP {}, EER {}", opt(self.auc), opt(self.ap), opt(eer))?;
        confusion_lines(f, "at 0.5", &self.at_half)?;
        if let Some((t, c)) = &self.best {
            confusion_lines(f, &format!("at {t:.4} (best balanced accuracy)"), c)?;
        }
        Ok(())
    }
}
