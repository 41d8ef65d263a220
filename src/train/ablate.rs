//! `dfgpu ablate`: one data set, a grid of runs (branches x frequency normalization x loss, or the subset asked
//! for), and a table of AUC, balanced accuracy at 0.5 and EER per run, as markdown and CSV.

use crate::backend::fft::Magnitude;
use crate::backend::head::Branches;
use crate::backend::loss::LossKind;
use crate::backend::Backend;
use crate::error::{Choice, Error, Result};
use crate::files::write_atomic;
use crate::train::config::{ExistingRun, Loss, TrainConfig};
use crate::train::trainer;
use std::fmt::Write as _;
use std::path::Path;

#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub branches: String,
    pub freq_norm: String,
    pub loss: String,
    pub auc: f64,
    pub balanced_acc: f64,
    pub eer: f64,
    pub collapsed: bool,
}

/// Runs every combination; `base` gives everything else (data, epochs, sizes, seed). Each run writes its logs
/// under `out/<branches>-<freq>-<loss>`; the tables go to `out/ablation.md` and `out/ablation.csv`.
pub fn ablate(
    be: &dyn Backend,
    base: &TrainConfig,
    grid: (&[Branches], &[Magnitude], &[Loss]),
    out: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<Row>> {
    let (bs, fs, ls) = grid;
    let mut rows = Vec::new();
    for &b in bs {
        for &f in fs {
            let spatial_only = b == Branches::Spatial;
            if spatial_only && f != fs[0] {
                continue; // the frequency normalization does not matter without the frequency branch
            }
            for &l in ls {
                let mut cfg = base.clone();
                cfg.model.head.branches = b;
                cfg.model.freq.fft.magnitude = f;
                (cfg.loss, cfg.weighting) = l.config();
                // The base's focal parameters and smoothing hold in every run; the grid sets the kind.
                if let (LossKind::Focal { .. }, LossKind::Focal { .. }) = (cfg.loss.kind, base.loss.kind) {
                    cfg.loss.kind = base.loss.kind;
                }
                cfg.loss.smoothing = base.loss.smoothing;
                let (b, f, l) = (b.name(), f.name(), l.name());
                cfg.out = out.join(format!("{b}-{f}-{l}"));
                cfg.existing = ExistingRun::Overwrite; // the ablation's folder is its own
                log(&format!("=== ablation run: branches {b}, freq-norm {f}, loss {l}"));
                let summary = trainer::train(be, &cfg, &mut |line| {
                    if line.starts_with("COLLAPSE") || line.starts_with("epoch") && line.contains("validation") {
                        log(line.lines().next().unwrap_or(""));
                    }
                })?;
                let last = summary.epochs.last().ok_or_else(|| Error::Invalid("a run with no epoch".into()))?;
                let r = &last.report;
                rows.push(Row {
                    branches: b.into(),
                    freq_norm: if spatial_only { "-" } else { f }.into(),
                    loss: l.into(),
                    auc: r.auc.unwrap_or(f64::NAN),
                    balanced_acc: r.at_half.balanced_accuracy(),
                    eer: r.eer.map_or(f64::NAN, |e| e.0),
                    collapsed: crate::train::diagnostics::collapsed_confusion(&r.at_half),
                });
                log(&format!(
                    "    AUC {:.4}, balanced accuracy {:.4}",
                    rows.last().unwrap().auc,
                    rows.last().unwrap().balanced_acc
                ));
            }
        }
    }
    let (md, csv) = tables(&rows);
    for (name, text) in [("ablation.md", md), ("ablation.csv", csv)] {
        let p = out.join(name);
        write_atomic(&p, text.as_bytes())?;
    }
    crate::train::figures::ablation(&rows, &out.join("ablation.png"))?;
    Ok(rows)
}

/// The markdown and CSV tables.
pub fn tables(rows: &[Row]) -> (String, String) {
    let mut md = String::from("| branches | freq-norm | loss | AUC | balanced acc @0.5 | EER | all one class @0.5 |\n| --- | --- | --- | --- | --- | --- | --- |\n");
    let mut csv = String::from("branches,freq_norm,loss,auc,balanced_acc,eer,collapsed\n");
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.4} | {:.4} | {:.4} | {} |",
            r.branches,
            r.freq_norm,
            r.loss,
            r.auc,
            r.balanced_acc,
            r.eer,
            if r.collapsed { "yes" } else { "no" }
        );
        let _ = writeln!(
            csv,
            "{},{},{},{:.6},{:.6},{:.6},{}",
            r.branches, r.freq_norm, r.loss, r.auc, r.balanced_acc, r.eer, r.collapsed
        );
    }
    (md, csv)
}
