//! The run's figures (PNG, drawn with plot.rs): learning curves and the ROC curve (`dfgpu train`), the gradient
//! report per block (every report step), and the ablation's AUC and balanced accuracy per run (`dfgpu ablate`).

use crate::error::Result;
use crate::plot::{self, BarRow, Bars, Canvas, Frame, Series, BLACK, BLUE, GREEN, GREY, ORANGE, RED};
use crate::train::ablate::Row;
use crate::train::diagnostics::{self, GradRow, EXPLODING, VANISHING};
use crate::train::metrics::roc;
use crate::train::runlog::{EpochLine, EpochRow};
use std::path::Path;

/// Training loss (the mean over the epoch) and validation loss (left), and validation AUC, average precision
/// and balanced accuracy at 0.5 (right), per epoch,
/// from the run's log (so that a resumed run's figure has the epochs before the checkpoint too).
pub fn curves(lines: &[EpochLine], path: &Path) -> Result<()> {
    let at = |k: fn(&EpochRow) -> Option<f64>| -> Vec<(f64, f64)> {
        lines.iter().filter_map(|l| Some((l.row.epoch as f64, k(&l.row)?))).collect()
    };
    let first = lines.first().map_or(0.0, |l| l.row.epoch as f64);
    let last = lines.last().map_or(1.0, |l| l.row.epoch as f64).max(first + 1.0);
    let xr = Some((first - 0.2, last + 0.2));
    let mut c = Canvas::new(960, 340);
    let frame = |x: i64, title: &str| Frame { x, y: 0, w: 480, h: 340, title: title.into(), x_label: "EPOCH".into() };
    let loss =
        [Series::new("TRAINING", BLUE, at(|r| r.train_loss)), Series::new("VALIDATION", ORANGE, at(|r| r.val_loss))];
    let top = loss.iter().flat_map(|l| l.points.iter().map(|p| p.1)).fold(0.0f64, f64::max) * 1.1;
    plot::line_chart(&mut c, &frame(0, "LOSS"), &loss, xr, Some((0.0, top.max(1e-6))));
    let val = [
        Series::new("AUC", BLUE, at(|r| r.val_auc)),
        Series::new("AVERAGE PRECISION", ORANGE, at(|r| r.val_ap)),
        Series::new("BALANCED ACC. AT 0.5", GREEN, at(|r| r.val_balanced_acc)),
    ];
    plot::line_chart(&mut c, &frame(480, "VALIDATION"), &val, xr, Some((0.0, 1.0)));
    c.save(path)
}

/// The ROC curve of validation scores, with the chance diagonal.
pub fn roc_curve(scores: &[f32], labels: &[u8], title: &str, path: &Path) -> Result<()> {
    let mut c = Canvas::new(440, 420);
    let points: Vec<(f64, f64)> = roc(scores, labels).unwrap_or_default().iter().map(|p| (p.0, p.1)).collect();
    let chance = Series {
        dashed: true,
        ..Series::new("CHANCE", GREY, (0..=20).map(|k| (k as f64 / 20.0, k as f64 / 20.0)).collect())
    };
    let f = Frame {
        x: 0,
        y: 0,
        w: 440,
        h: 420,
        title: title.into(),
        x_label: "FALSE POSITIVE RATE (REALS CALLED FAKE)".into(),
    };
    plot::line_chart(&mut c, &f, &[Series::new("ROC", BLUE, points), chance], Some((0.0, 1.0)), Some((0.0, 1.0)));
    c.save(path)
}

/// The gradient report per block: gradient norm (blue; red, with a red name, when flagged) and update / weight
/// (orange), on a log scale with the vanishing and exploding thresholds marked.
pub fn grad_report(rows: &[GradRow], title: &str, path: &Path) -> Result<()> {
    let groups = diagnostics::group_rows(rows);
    let bars: Vec<BarRow> = groups
        .iter()
        .map(|r| {
            let col = if r.flag().is_some() && !r.expected_zero() { RED } else { BLUE };
            (r.name.clone(), if col == RED { RED } else { BLACK }, vec![(r.grad_norm, col), (r.update_ratio, ORANGE)])
        })
        .collect();
    let mut c = Canvas::new(900, Bars::height(bars.len(), 2));
    let b = Bars {
        title,
        x_label: "GRADIENT NORM (BLUE, RED: FLAGGED), UPDATE/WEIGHT (ORANGE); LINES: 1E-7 AND 1E3",
        lo: 1e-10,
        hi: 1e4,
        log: true,
        marks: &[(VANISHING, RED), (EXPLODING, RED)],
        ranges: &[],
    };
    b.draw(&mut c, 0, 900, 250, &bars);
    c.save(path)
}

/// The ablation: per run, the validation AUC (blue) and balanced accuracy at 0.5 (green; red when the run
/// predicted one class for all).
pub fn ablation(rows: &[Row], path: &Path) -> Result<()> {
    let bars: Vec<BarRow> = rows
        .iter()
        .map(|r| {
            let label = format!("{} {} {}", r.branches, r.freq_norm, r.loss);
            (label, BLACK, vec![(r.auc, BLUE), (r.balanced_acc, if r.collapsed { RED } else { GREEN })])
        })
        .collect();
    bars_against_chance(
        "ABLATION: BRANCHES, FREQUENCY NORMALIZATION, LOSS",
        "AUC (BLUE), BALANCED ACC. AT 0.5 (GREEN; RED: ALL ONE CLASS); LINE: CHANCE",
        &bars,
        &[],
        path,
    )
}

/// The held-out groups: per group, the AUC on its fakes (blue), the spectral baseline's (orange), the detector
/// joined to the peak test's (red), and the balanced accuracy at the validation-tuned threshold (green), against
/// chance.
pub fn holdout(rows: &[crate::train::holdout::Row], path: &Path) -> Result<()> {
    let bars: Vec<BarRow> = rows
        .iter()
        .map(|r| {
            let bars = vec![(r.auc, BLUE), (r.baseline_auc, ORANGE), (r.either_auc, RED), (r.balanced_acc, GREEN)];
            (r.group.to_uppercase(), BLACK, bars)
        })
        .collect();
    bars_against_chance(
        "HELD-OUT GENERATORS: TRAINED ON THE OTHERS",
        "AUC (BLUE), SPECTRAL BASELINE (ORANGE), DETECTOR OR PEAK TEST (RED), BALANCED ACC. (GREEN); LINE: CHANCE",
        &bars,
        &[],
        path,
    )
}

/// `holdout --seeds`: per held-out group, the mean AUC over the seeds (bars) and the lowest to the highest
/// (whiskers): the detector's, the spectral baseline's and the detector joined to the peak test's.
pub fn holdout_seeds(spread: &[crate::train::holdout::Spread], seeds: usize, path: &Path) -> Result<()> {
    let figures = |s: &crate::train::holdout::Spread| [(s.auc, BLUE), (s.baseline_auc, ORANGE), (s.either_auc, RED)];
    let bars: Vec<BarRow> = spread
        .iter()
        .map(|s| (s.group.to_uppercase(), BLACK, figures(s).map(|(a, col)| (a[0], col)).to_vec()))
        .collect();
    let ranges: Vec<Vec<(f64, f64)>> = spread.iter().map(|s| figures(s).map(|(a, _)| (a[1], a[2])).to_vec()).collect();
    bars_against_chance(
        &format!("HELD-OUT GENERATORS: TRAINED ON THE OTHERS, MEAN OVER {seeds} SEEDS (WHISKERS: LOWEST TO HIGHEST)"),
        "AUC (BLUE), SPECTRAL BASELINE AUC (ORANGE), DETECTOR OR PEAK TEST AUC (RED); LINE: CHANCE",
        &bars,
        &ranges,
        path,
    )
}

/// Bars on [0, 1] with a line at chance (0.5), and whiskers over the `ranges` (Bars).
fn bars_against_chance(
    title: &str,
    x_label: &str,
    bars: &[BarRow],
    ranges: &[Vec<(f64, f64)>],
    path: &Path,
) -> Result<()> {
    let per_row = bars.iter().map(|b| b.2.len()).max().unwrap_or(1);
    let mut c = Canvas::new(760, Bars::height(bars.len(), per_row));
    let b = Bars { title, x_label, lo: 0.0, hi: 1.0, log: false, marks: &[(0.5, GREY)], ranges };
    b.draw(&mut c, 0, 760, 220, bars);
    c.save(path)
}
