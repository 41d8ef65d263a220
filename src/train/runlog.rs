//! The run's metrics log: one `EpochRow` per epoch drives both metrics.jsonl (with the per-group AUCs) and
//! metrics.csv, through serde, so that any group name (quotes, backslashes, newlines) round-trips.

use crate::error::{Error, Result};
use crate::train::trainer::EpochResult;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// An epoch's figures: a row of metrics.csv, and the scalar part of a metrics.jsonl line. A figure that cannot
/// be had (one class, a non-finite value) is null (an empty CSV cell).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochRow {
    pub epoch: usize,
    pub train_loss: Option<f64>,
    pub val_loss: Option<f64>,
    pub val_auc: Option<f64>,
    pub val_ap: Option<f64>,
    pub val_eer: Option<f64>,
    pub val_balanced_acc: Option<f64>,
    pub val_acc: Option<f64>,
    /// Timing: null in the line a checkpoint carries, which must not depend on the machine's speed.
    #[serde(default)]
    pub seconds: Option<f64>,
    #[serde(default)]
    pub images_per_s: Option<f64>,
}

/// A line of metrics.jsonl: the row, and per fake group the AUC of its fakes against all reals.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochLine {
    #[serde(flatten)]
    pub row: EpochRow,
    #[serde(default)]
    pub groups: BTreeMap<String, f64>,
}

/// `v` rounded to `digits` decimals (a log line short enough to read), or None when it is not finite.
pub fn rounded(v: f64, digits: i32) -> Option<f64> {
    let k = 10f64.powi(digits);
    v.is_finite().then(|| (v * k).round() / k)
}

impl EpochLine {
    /// The epoch's line. Without `timing`, only the figures that depend on the run, not on the machine's speed:
    /// what a checkpoint carries, so that a resumed run's checkpoint is byte for byte the uninterrupted one's.
    pub fn new(r: &EpochResult, timing: bool) -> EpochLine {
        let rep = &r.report;
        let r6 = |v: Option<f64>| v.and_then(|v| rounded(v, 6));
        let row = EpochRow {
            epoch: r.epoch,
            train_loss: r6(Some(r.train_loss)),
            val_loss: r6(Some(r.val_loss)),
            val_auc: r6(rep.auc),
            val_ap: r6(rep.ap),
            val_eer: r6(rep.eer.map(|e| e.0)),
            val_balanced_acc: r6(Some(rep.at_half.balanced_accuracy())),
            val_acc: r6(Some(rep.at_half.accuracy())),
            seconds: rounded(r.seconds, 2).filter(|_| timing),
            images_per_s: rounded(r.images_per_s, 1).filter(|_| timing),
        };
        let groups = r.group_auc.iter().filter_map(|(g, a)| Some((g.clone(), rounded(*a, 6)?))).collect();
        EpochLine { row, groups }
    }

    /// The line as JSON, without a newline (JSON escapes every control character in a group name).
    pub fn json(&self) -> String {
        serde_json::to_string(self).expect("a map of strings to numbers serializes")
    }
}

/// Parses a metrics.jsonl (`path` names it in errors): a line that is not an epoch's line is an error naming
/// the file and the line.
pub fn parse(text: &str, path: &Path) -> Result<Vec<EpochLine>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| Error::corrupt_at(path, i as u64 + 1, format!("not a metrics line ({e}): {}", clip(l))))
        })
        .collect()
}

/// The start of a long line, for an error message.
fn clip(l: &str) -> String {
    match l.char_indices().nth(80) {
        Some((at, _)) => format!("{}...", &l[..at]),
        None => l.to_string(),
    }
}

/// metrics.jsonl's text: one line per epoch.
pub fn jsonl(lines: &[EpochLine]) -> String {
    lines.iter().map(|l| l.json() + "\n").collect()
}

/// metrics.csv's text, RFC 4180: a header (serde writes it with the first row) and the rows (the per-group AUCs
/// stay in the JSON lines).
pub fn csv(lines: &[EpochLine]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    for l in lines {
        w.serialize(&l.row).expect("a row of numbers serializes to memory");
    }
    String::from_utf8(w.into_inner().expect("writes to memory")).expect("CSV of numbers is UTF-8")
}
