//! `dfgpu sanity`: can the model fit 5 real and 5 fake images? A model that cannot overfit ten images has a bug
//! or a broken signal path, and no amount of data will fix it. Trains on the ten (full batch, no augmentation,
//! plain BCE so that "loss under 0.05" means every image is classified with confidence) until the loss is
//! under 0.05 or the step limit, then prints PASS or FAIL with what the diagnostics saw.

use crate::backend::loss::LossConfig;
use crate::backend::optim::{lr_at, StepArgs};
use crate::backend::Backend;
use crate::data::folder::Dataset;
use crate::data::loaded::Loaded;
use crate::data::open::{builtin_data, open_data};
use crate::data::pack;
use crate::error::{Choice, Error, Result};
use crate::model::detector::{Detector, DetectorConfig};
use crate::model::state::ModelState;
use crate::tensor::Tensor;
use crate::train::config::TrainConfig;
use crate::train::inference::predict;
use crate::train::trainer::{branch_scale_warning, fit_freq_stats, flagged, freq_input_range, step};
use std::path::Path;

pub const TARGET_LOSS: f64 = 0.05;

pub struct SanityResult {
    pub passed: bool,
    pub steps: usize,
    pub first_loss: f64,
    pub last_loss: f64,
    pub verdict: String,
}

pub fn sanity(
    be: &dyn Backend,
    data: Option<&Path>,
    model: DetectorConfig,
    max_steps: usize,
    log: &mut dyn FnMut(&str),
) -> Result<SanityResult> {
    let mut cfg = TrainConfig::new(model);
    cfg.loss = LossConfig::bce([1.0, 1.0]);
    let path = match data {
        Some(p) => p.to_path_buf(),
        None => builtin_data(&cfg.synth, log)?,
    };
    let ten = first_ten(&path, &cfg.model, log)?;
    let det = Detector::new(cfg.model.clone())?;
    let mut ms = ModelState::new(be, &det, cfg.seed)?;
    fit_freq_stats(be, &det, &mut ms, &ten)?;
    let (x, y) = ten.batch(&(0..10).collect::<Vec<_>>(), None)?;
    log(&format!(
        "sanity: fitting 5 real and 5 fake images from {} (plain BCE, full batch, up to {max_steps} steps)",
        path.display()
    ));
    let range = freq_input_range(be, &det, &ms, &x, log)?;
    let fit = fit(be, &det, &mut ms, (&x, &y), &cfg, max_steps, log)?;
    let scores = predict(be, &det, &mut ms, &ten, 10)?;
    let said_fake = scores.iter().filter(|&&s| s >= 0.5).count();
    let verdict = verdict(&fit, said_fake, range, &det.cfg);
    log(&verdict);
    Ok(SanityResult { passed: fit.passed(), steps: fit.steps, first_loss: fit.first, last_loss: fit.last, verdict })
}

/// The first 5 real and 5 fake images of a set, decoded; an error that says how many the set has and how many
/// of the first ones could be read when that is fewer.
fn first_ten(path: &Path, model: &DetectorConfig, log: &mut dyn FnMut(&str)) -> Result<Loaded> {
    // The set's own counts and the ten (or fewer) images picked.
    let (have, ten) = if pack::is_pack(path) {
        let all = open_data(path, model.size, model.input, log)?;
        let labels = &all.labels;
        let first = |label: u8| (0..labels.len()).filter(move |&i| labels[i] == label).take(5);
        let idx: Vec<usize> = first(0).chain(first(1)).collect();
        (all.counts(), all.subset(&idx))
    } else {
        let mut ds = Dataset::open(path)?;
        let have = ds.counts();
        let mut picked = Vec::new();
        for label in [0u8, 1] {
            picked.extend(ds.samples.iter().filter(|s| s.label == label).take(5).cloned());
        }
        ds.samples = picked;
        (have, Loaded::decode(&ds, model.size, model.input, path, log)?)
    };
    let [r, f] = ten.counts();
    if r < 5 || f < 5 {
        let unreadable = match ten.skipped.len() {
            0 => String::new(),
            n => format!("; {n} of them unreadable:\n  {}", ten.skipped.join("\n  ")),
        };
        return Err(Error::Invalid(format!(
            "{}: the check fits the first 5 real and 5 fake images; the set has {} real and {} fake, and {r} real \
             and {f} fake of the first ones could be read{unreadable}",
            path.display(),
            have[0],
            have[1]
        )));
    }
    Ok(ten)
}

/// How the fit went: the losses, the steps taken and what the diagnostics flagged on the way.
struct Fit {
    first: f64,
    last: f64,
    lowest: f64,
    steps: usize,
    seen: Vec<String>,
}

impl Fit {
    fn passed(&self) -> bool {
        self.last < TARGET_LOSS
    }
}

/// Full-batch steps on the ten until the loss is under the target or `max_steps`, with a gradient report on the
/// first step and every 25th.
fn fit(
    be: &dyn Backend,
    det: &Detector,
    ms: &mut ModelState,
    (x, y): (&Tensor, &Tensor),
    cfg: &TrainConfig,
    max_steps: usize,
    log: &mut dyn FnMut(&str),
) -> Result<Fit> {
    let mut fit = Fit { first: f64::NAN, last: f64::NAN, lowest: f64::INFINITY, steps: 0, seen: Vec::new() };
    for t in 1..=max_steps as u64 {
        let report = t == 1 || t % 25 == 0;
        let lr = lr_at(t - 1, 10, max_steps as u64, cfg.lr, cfg.lr);
        let so = step(be, det, ms, x, y, &cfg.loss, cfg, StepArgs { lr, t }, report)?;
        let l = so.loss.read(be)?.loss;
        let first = if t == 1 { l } else { fit.first };
        (fit.first, fit.last, fit.lowest, fit.steps) = (first, l, fit.lowest.min(l), t as usize);
        if let Some(rows) = so.rows {
            let f = flagged(&rows);
            if !f.is_empty() {
                fit.seen.push(format!("step {t}: {} tensors flagged ({})", f.len(), f.join(", ")));
            }
        }
        if let Some(w) = so.scales.and_then(|(sp, fq)| branch_scale_warning(det, sp, fq)) {
            fit.seen.push(format!("step {t}: {w}"));
        }
        if t % 25 == 0 {
            log(&format!("step {t}: loss {l:.4}"));
        }
        if l < TARGET_LOSS {
            break;
        }
    }
    Ok(fit)
}

/// PASS or FAIL, what inference on the ten said, the frequency branch's input range (lo, hi) and what the
/// diagnostics flagged.
fn verdict(fit: &Fit, said_fake: usize, (lo, hi): (f64, f64), model: &DetectorConfig) -> String {
    let Fit { first, last, lowest, steps, .. } = *fit;
    let mut verdict = if fit.passed() {
        format!("PASS: the training loss fell from {first:.4} to {last:.4} (under {TARGET_LOSS}) in {steps} steps")
    } else {
        format!("FAIL: after {steps} steps the training loss is {last:.4} (from {first:.4}, lowest {lowest:.4}); it must fall under {TARGET_LOSS}")
    };
    verdict += &format!("\n  inference on the ten: {said_fake} called fake (5 are)");
    if said_fake.abs_diff(5) > 1 {
        verdict += &format!(
            " (inference uses the batch norms' running statistics, which move 10% a step and have had {steps} steps to \
             follow the batch's; training uses the batch's own)"
        );
    }
    verdict += &format!(
        "\n  frequency branch input: {lo:.3e} to {hi:.3e} ('{}' magnitudes{})",
        model.freq.fft.magnitude.name(),
        if model.freq.batch_norm { "" } else { ", no batch norm" }
    );
    if fit.seen.is_empty() {
        verdict += "\n  gradient report: no tensor flagged, branch scales within 100x";
    }
    for s in fit.seen.iter().take(4) {
        verdict += &format!("\n  {s}");
    }
    verdict
}
