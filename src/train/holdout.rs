//! `dfgpu holdout`: how a detector does on a generator it never saw. For each fake group G of a data set (a
//! subfolder of fake/, or the CSV's third column): train on the other groups' fakes and the reals' training
//! share, choose the checkpoint and the decision threshold on a validation split of that same training data (seen
//! generators only), then test on G's fakes against reals that no run trained or validated on. One table: per
//! held-out group its AUC, AP and balanced accuracy at the validation-tuned threshold, then the mean and the worst;
//! beside each AUC, the spectral baseline's (train/baseline.rs) fitted on the same training images, the spectral
//! peak test's (a one-class test fitted on the training reals alone) and that of the detector and the peak test
//! joined (model/peak.rs `Join`: an image is as suspect as the test that finds it furthest from the validation
//! reals), both as the run's checkpoint carries them.
//!
//! On small sets one run's held-out AUC moves by 0.03 to 0.05 with the seed (the split of the reals, the
//! initialization, the batches): `holdout_seeds` repeats the whole of it for several seeds and gives each group's
//! mean, lowest and highest AUC over them, which is what a comparison of two settings should rest on.

use crate::backend::cpu::real::Real;
use crate::backend::Backend;
use crate::data::input::Tiles;
use crate::data::loaded::Loaded;
use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::model::checkpoint;
use crate::rng::Rng;
use crate::train::baseline::{self, Logistic, PEAK_MIN_REALS};
use crate::train::config::{ExistingRun, TrainConfig};
use crate::train::figures;
use crate::train::inference::{group_aucs, predict_scores};
use crate::train::metrics::{auc, average_precision, best_balanced_threshold, confusion_at};
use crate::train::trainer;
use std::fmt::Write as _;
use std::path::Path;

#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// The held-out group.
    pub group: String,
    /// Validation AUC on the seen groups (the checkpoint kept: best.safetensors).
    pub val_auc: f64,
    /// On the held-out group's fakes against the test reals.
    pub auc: f64,
    pub ap: f64,
    /// Balanced accuracy at `threshold`, the one that maximizes it on the validation set.
    pub balanced_acc: f64,
    pub threshold: f32,
    pub n_real: usize,
    pub n_fake: usize,
    /// The seen group the kept checkpoint separates worst on the validation split, with its AUC (its fakes
    /// against the validation reals): a low one says the model did not learn that generator even while training
    /// on it, so its held-out score says nothing of generalization. None when no seen group has both classes.
    pub weakest_seen: Option<(String, f64)>,
    /// The spectral baseline's AUC on the same test images, fitted on the same training images.
    pub baseline_auc: f64,
    /// The spectral peak test's, fitted on the training reals.
    pub peak_auc: f64,
    /// The detector's and the peak test's joined (model/peak.rs `Join`).
    pub either_auc: f64,
}

/// The held-out runs. `test_reals`: the share of the reals kept apart for testing (the same reals in every run).
/// Each run writes under `out/<group>`; the tables go to `out/holdout.md` and `out/holdout.csv`, the figure to
/// `out/holdout.png`.
pub fn holdout(
    be: &dyn Backend,
    base: &TrainConfig,
    data: &Loaded,
    test_reals: f64,
    out: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<Row>> {
    let folds = folds(data, test_reals, base.seed)?;
    let ungrouped = (0..data.len()).filter(|&i| data.labels[i] == 1 && data.groups[i].is_none()).count();
    if ungrouped > 0 {
        log(&format!("{ungrouped} fakes have no group: they are trained on in every run, never tested on"));
    }
    let mut rows = Vec::new();
    for fold in &folds {
        let g = fold.group.as_str();
        let (train, val) = data.subset(&fold.pool).split(base.val_fraction, base.seed)?;
        let test = data.subset(&fold.test);
        let mut cfg = base.clone();
        cfg.out = out.join(folder_name(g));
        cfg.existing = ExistingRun::Overwrite; // the holdout's folder is its own
        let seen: Vec<&str> = folds.iter().map(|f| f.group.as_str()).filter(|&o| o != g).collect();
        log(&format!(
            "=== held out: {g} (training on {}: {} real, {} fake; test: {} real, {} {g})",
            seen.join(", "),
            train.counts()[0],
            train.counts()[1],
            test.counts()[0],
            test.counts()[1]
        ));
        // The baseline first: a set it cannot fit fails before the fold's training, not after it.
        let baseline_auc = baseline_auc(be, &train, &test)?;
        trainer::train_on(be, &cfg, &train, &val, &mut |line| {
            let note = line.starts_with("COLLAPSE") || line.starts_with("--batch");
            if note || line.starts_with("epoch") && line.contains("validation") {
                log(line.lines().next().unwrap_or(""));
            }
        })?;
        // The checkpoint and the threshold are chosen on the seen groups only.
        let best = cfg.out.join("best.safetensors");
        let (det, mut ms, _) = checkpoint::load(&best, be)?;
        let val_logits = predict_scores(be, &det, &mut ms, &val, 64, Tiles::CENTRE, false)?.logits;
        let tested = predict_scores(be, &det, &mut ms, &test, 64, Tiles::CENTRE, true)?;
        let [val_scores, scores] =
            [&val_logits, &tested.logits].map(|z| z.iter().map(|z| z.sigmoid()).collect::<Vec<f32>>());
        let (threshold, _) = best_balanced_threshold(&val_scores, &val.labels).unwrap_or((0.5, f64::NAN));
        let auc_of = |s: Option<&[f64]>, why: &str, log: &mut dyn FnMut(&str)| match s {
            Some(s) => auc(&s.iter().map(|&v| v as f32).collect::<Vec<_>>(), &test.labels).unwrap_or(f64::NAN),
            None => {
                log(&format!("    {g}: no {why} ({})", best.display()));
                f64::NAN
            }
        };
        let few = format!("spectral peak test: fewer than {PEAK_MIN_REALS} training reals");
        let peak_auc = auc_of(tested.peaks.as_deref(), &few, log);
        let why = "detector or peak test: no peak test, or validation logits that do not vary";
        let either_auc = auc_of(tested.joined(&ms).as_deref(), why, log);
        let row = Row {
            group: g.to_string(),
            val_auc: auc(&val_scores, &val.labels).unwrap_or(f64::NAN),
            auc: auc(&scores, &test.labels).unwrap_or(f64::NAN),
            ap: average_precision(&scores, &test.labels).unwrap_or(f64::NAN),
            balanced_acc: confusion_at(&scores, &test.labels, threshold).balanced_accuracy(),
            threshold,
            n_real: test.counts()[0],
            n_fake: test.counts()[1],
            weakest_seen: weakest(group_aucs(&val_scores, &val)),
            baseline_auc,
            peak_auc,
            either_auc,
        };
        let weakest = row.weakest_seen.as_ref().map_or(String::new(), |(w, a)| format!("; weakest seen: {w} {a:.4}"));
        log(&format!(
            "    {g}: AUC {:.4} (spectral baseline {:.4}, peak test {:.4}, detector or peak test {:.4}), AP {:.4}, \
             balanced accuracy {:.4} at {threshold:.4} (validation AUC {:.4}{weakest})",
            row.auc, row.baseline_auc, row.peak_auc, row.either_auc, row.ap, row.balanced_acc, row.val_auc
        ));
        rows.push(row);
    }
    let (md, csv) = tables(&rows);
    for (name, text) in [("holdout.md", md), ("holdout.csv", csv)] {
        let p = out.join(name);
        write_atomic(&p, text.as_bytes())?;
    }
    figures::holdout(&rows, &out.join("holdout.png"))?;
    Ok(rows)
}

/// A held-out group's AUCs over several seeds: the mean, the lowest and the highest, the detector's, the
/// baseline's, the peak test's and the detector's joined to the peak test.
#[derive(Clone, Debug, PartialEq)]
pub struct Spread {
    pub group: String,
    pub auc: [f64; 3],
    pub baseline_auc: [f64; 3],
    pub peak_auc: [f64; 3],
    pub either_auc: [f64; 3],
}

/// `holdout` once per seed, from `base.seed` on (`seeds` of them), each under `out/seed-S`; then each group's
/// spread over them (`spreads`) in `out/holdout.md`, `.csv` and `.png`. Returns every seed's rows.
pub fn holdout_seeds(
    be: &dyn Backend,
    base: &TrainConfig,
    data: &Loaded,
    test_reals: f64,
    seeds: usize,
    out: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<Vec<Row>>> {
    let mut runs = Vec::with_capacity(seeds);
    for k in 0..seeds as u64 {
        let seed = base.seed.wrapping_add(k);
        log(&format!("##### seed {seed} ({} of {seeds})", k + 1));
        let cfg = TrainConfig { seed, ..base.clone() };
        runs.push(holdout(be, &cfg, data, test_reals, &out.join(format!("seed-{seed}")), log)?);
    }
    let spread = spreads(&runs)?;
    let (md, csv) = spread_tables(&spread, &runs);
    for (name, text) in [("holdout.md", md), ("holdout.csv", csv)] {
        write_atomic(&out.join(name), text.as_bytes())?;
    }
    figures::holdout_seeds(&spread, runs.len(), &out.join("holdout.png"))?;
    Ok(runs)
}

/// Per group (in the runs' order), the mean, lowest and highest AUC over the runs, of each figure of a Spread.
/// Every run must hold the same groups in the same order.
pub fn spreads(runs: &[Vec<Row>]) -> Result<Vec<Spread>> {
    let first = runs.first().ok_or_else(|| Error::Invalid("a spread over no runs".into()))?;
    let groups: Vec<&str> = first.iter().map(|r| r.group.as_str()).collect();
    if let Some(r) = runs.iter().find(|r| r.iter().map(|r| r.group.as_str()).ne(groups.iter().copied())) {
        let other: Vec<&str> = r.iter().map(|r| r.group.as_str()).collect();
        return Err(Error::Invalid(format!("runs of other groups: {groups:?} and {other:?}")));
    }
    let stats = |g: usize, of: fn(&Row) -> f64| {
        let v: Vec<f64> = runs.iter().map(|r| of(&r[g])).collect();
        if v.iter().any(|a| a.is_nan()) {
            return [f64::NAN; 3]; // a run without the figure: no spread of it (min and max would skip the NaN)
        }
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        [mean, v.iter().copied().fold(f64::INFINITY, f64::min), v.iter().copied().fold(f64::NEG_INFINITY, f64::max)]
    };
    Ok((0..groups.len())
        .map(|g| Spread {
            group: groups[g].to_string(),
            auc: stats(g, |r| r.auc),
            baseline_auc: stats(g, |r| r.baseline_auc),
            peak_auc: stats(g, |r| r.peak_auc),
            either_auc: stats(g, |r| r.either_auc),
        })
        .collect())
}

/// The markdown table of the spreads (with the mean and the worst of the means under it, and each seed's mean)
/// and the CSV one.
pub fn spread_tables(spread: &[Spread], runs: &[Vec<Row>]) -> (String, String) {
    let mut md = format!("| held-out group | AUC mean over {} seeds | lowest | highest ", runs.len());
    for name in ["spectral baseline", "peak test", "detector or peak test"] {
        let _ = write!(md, "| {name} mean | lowest | highest ");
    }
    md += &format!("|\n|{}\n", " --- |".repeat(13));
    let mut csv = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["group".to_string(), "seeds".to_string()];
    for name in ["auc", "baseline", "peak", "either"] {
        header.extend(["mean", "min", "max"].map(|s| format!("{name}_{s}")));
    }
    csv.write_record(&header).expect("writes to memory");
    for s in spread {
        let values = [s.auc, s.baseline_auc, s.peak_auc, s.either_auc].concat();
        let _ = writeln!(md, "| {} |{}", s.group, values.iter().map(|v| format!(" {v:.4} |")).collect::<String>());
        let values = values.iter().map(|v| format!("{v:.6}"));
        let record: Vec<String> = [s.group.clone(), runs.len().to_string()].into_iter().chain(values).collect();
        csv.write_record(&record).expect("writes to memory");
    }
    summary(
        &mut md,
        spread,
        [
            ("held-out AUC, means over the seeds", |s| s.auc[0]),
            (BASELINE, |s| s.baseline_auc[0]),
            (PEAK, |s| s.peak_auc[0]),
            (EITHER, |s| s.either_auc[0]),
        ],
    );
    let per_seed: Vec<String> = runs
        .iter()
        .map(|r| {
            let ((m, _), (b, _)) = (mean_and_worst(r, |r| r.auc), mean_and_worst(r, |r| r.baseline_auc));
            format!("{m:.4} ({b:.4})")
        })
        .collect();
    let _ = writeln!(md, "each seed's mean held-out AUC (the baseline's): {}", per_seed.join(", "));
    let csv = String::from_utf8(csv.into_inner().expect("writes to memory")).expect("the texts are UTF-8");
    (md, csv)
}

/// The spectral baseline's test AUC, fitted on `train`.
fn baseline_auc(be: &dyn Backend, train: &Loaded, test: &Loaded) -> Result<f64> {
    let fit = Logistic::fit(&baseline::features(be, train)?, &train.labels)?;
    let scores: Vec<f32> = baseline::features(be, test)?.iter().map(|x| fit.score(x) as f32).collect();
    Ok(auc(&scores, &test.labels).unwrap_or(f64::NAN))
}

/// One held-out run: the images it trains and validates on (`pool`), and those it is tested on.
#[derive(Clone, Debug, PartialEq)]
pub struct Fold {
    pub group: String,
    pub pool: Vec<usize>,
    pub test: Vec<usize>,
}

/// The held-out runs of `data`, one per fake group in name order: a seeded `test_reals` share of the reals (at
/// least one, and at least two left over) is tested on in every run and never trained on; each run's pool is the
/// other reals and every fake outside its group.
pub fn folds(data: &Loaded, test_reals: f64, seed: u64) -> Result<Vec<Fold>> {
    if !(test_reals > 0.0 && test_reals < 1.0) {
        return Err(Error::Invalid(format!("--test-reals {test_reals} must be between 0 and 1")));
    }
    let mut groups: Vec<&str> = data.groups.iter().flatten().map(String::as_str).collect();
    groups.sort_unstable();
    groups.dedup();
    if groups.len() < 2 {
        return Err(Error::Invalid(format!(
            "holdout needs fakes of at least two groups (subfolders of fake/, or a CSV's third column); this set \
             has {}",
            if groups.is_empty() { "none".to_string() } else { format!("only '{}'", groups[0]) }
        )));
    }
    let mut reals: Vec<usize> = (0..data.len()).filter(|&i| data.labels[i] == 0).collect();
    if reals.len() < 3 {
        return Err(Error::Invalid(format!("holdout needs at least 3 real images, this set has {}", reals.len())));
    }
    Rng::new(seed ^ 0x7E57).shuffle(&mut reals);
    let n_test = ((reals.len() as f64 * test_reals).round() as usize).clamp(1, reals.len() - 2);
    let (test_real, train_real) = reals.split_at(n_test);
    Ok(groups
        .into_iter()
        .map(|g| {
            let held = |i: &usize| data.groups[*i].as_deref() == Some(g);
            let fakes = (0..data.len()).filter(|&i| data.labels[i] == 1);
            Fold {
                group: g.to_string(),
                pool: fakes.clone().filter(|i| !held(i)).chain(train_real.iter().copied()).collect(),
                test: test_real.iter().copied().chain(fakes.filter(held)).collect(),
            }
        })
        .collect())
}

/// A group's run folder: its name with anything but letters, digits, '-' and '_' replaced.
fn folder_name(group: &str) -> String {
    let name: String =
        group.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    format!("heldout-{name}")
}

/// The group with the lowest AUC (the first of equals, in name order), None for none.
pub fn weakest(group_aucs: Vec<(String, f64)>) -> Option<(String, f64)> {
    group_aucs.into_iter().reduce(|w, g| if g.1 < w.1 { g } else { w })
}

/// The mean and the worst of the held-out AUCs `auc` picks (one of the figures of rows or spreads); NaN for both
/// when a row lacks it.
pub fn mean_and_worst<T>(rows: &[T], auc: impl Fn(&T) -> f64) -> (f64, f64) {
    let mean = rows.iter().map(&auc).sum::<f64>() / rows.len() as f64;
    (mean, if mean.is_nan() { f64::NAN } else { rows.iter().map(auc).fold(f64::INFINITY, f64::min) })
}

/// A figure of the tables: its name, and how to read it from a row or a spread.
type Figure<T> = (&'static str, fn(&T) -> f64);

const BASELINE: &str = "spectral baseline (Durall et al. 2020)";
const PEAK: &str = "spectral peak test";
const EITHER: &str = "detector or peak test";

/// The lines under a table: for each figure, its name and the mean and the worst of it over `rows`; then what the
/// two spectral tests' columns are, for a reader of the file alone.
fn summary<T>(md: &mut String, rows: &[T], figures: [Figure<T>; 4]) {
    let _ = writeln!(md);
    for (name, of) in figures {
        let (mean, worst) = mean_and_worst(rows, of);
        let _ = writeln!(md, "{name}: mean {mean:.4}, worst {worst:.4}");
    }
    let _ = writeln!(
        md,
        "\n{PEAK}: fitted on the training reals alone, an image's largest z-score over the bins of its luma log \
         spectrum. {EITHER}: the larger of the detector's logit and the peak score, each standardized over the \
         validation reals."
    );
}

/// The markdown table (with the mean and the worst AUC under it) and the CSV one (RFC 4180, as metrics.csv).
pub fn tables(rows: &[Row]) -> (String, String) {
    let mut md = String::from(
        "| held-out group | test real | test fake | validation AUC (seen) | weakest seen group | AUC | spectral \
         baseline AUC | peak test AUC | detector or peak test AUC | AP | balanced acc | threshold |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let mut csv = csv::Writer::from_writer(Vec::new());
    let header = [
        "group",
        "n_real",
        "n_fake",
        "val_auc",
        "auc",
        "ap",
        "balanced_acc",
        "threshold",
        "weakest_seen",
        "weakest_seen_auc",
        "baseline_auc",
        "peak_auc",
        "either_auc",
    ];
    csv.write_record(header).expect("writes to memory");
    for r in rows {
        let (weakest, weakest_auc) = match &r.weakest_seen {
            Some((g, a)) => (format!("{g} {a:.4}"), format!("{a:.6}")),
            None => ("-".into(), String::new()),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.4} | {weakest} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} |",
            r.group,
            r.n_real,
            r.n_fake,
            r.val_auc,
            r.auc,
            r.baseline_auc,
            r.peak_auc,
            r.either_auc,
            r.ap,
            r.balanced_acc,
            r.threshold
        );
        let name = r.weakest_seen.as_ref().map_or("", |w| w.0.as_str());
        let f6 = |v: f64| format!("{v:.6}");
        let (n_real, n_fake) = (r.n_real.to_string(), r.n_fake.to_string());
        let (val, auc, ap, bacc, t) = (f6(r.val_auc), f6(r.auc), f6(r.ap), f6(r.balanced_acc), f6(r.threshold as f64));
        let (base, peak, joined) = (f6(r.baseline_auc), f6(r.peak_auc), f6(r.either_auc));
        let record =
            [r.group.as_str(), &n_real, &n_fake, &val, &auc, &ap, &bacc, &t, name, &weakest_auc, &base, &peak, &joined];
        csv.write_record(record).expect("writes to memory");
    }
    let figures: [Figure<Row>; 4] = [
        ("held-out AUC", |r| r.auc),
        (BASELINE, |r| r.baseline_auc),
        (PEAK, |r| r.peak_auc),
        (EITHER, |r| r.either_auc),
    ];
    summary(&mut md, rows, figures);
    let csv = String::from_utf8(csv.into_inner().expect("writes to memory")).expect("the texts are UTF-8");
    (md, csv)
}
