//! `dfgpu sanity`: can the model fit 5 real and 5 fake images? A model that cannot overfit ten images has a bug
//! or a broken signal path, and no amount of data will fix it. Trains on the ten (full batch, no augmentation,
//! plain BCE so that "loss under 0.05" means every image is classified with confidence) until the loss is
//! under 0.05 or the step limit, then prints PASS or FAIL with what the diagnostics saw.

use crate::backend::fft::{FreqStats, Magnitude};
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
use crate::train::diagnostics;
use crate::train::inference::predict;
use crate::train::trainer::{flagged, freq_input_range, step, TrainConfig};
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
    // The set's own counts and the ten (or fewer) images picked: the first 5 of each class.
    let (have, ten) = if pack::is_pack(&path) {
        let all = open_data(&path, cfg.model.size, cfg.model.input, log)?;
        let labels = &all.labels;
        let first = |label: u8| (0..labels.len()).filter(move |&i| labels[i] == label).take(5);
        let idx: Vec<usize> = first(0).chain(first(1)).collect();
        (all.counts(), all.subset(&idx))
    } else {
        let mut ds = Dataset::open(&path)?;
        let have = ds.counts();
        let mut picked = Vec::new();
        for label in [0u8, 1] {
            picked.extend(ds.samples.iter().filter(|s| s.label == label).take(5).cloned());
        }
        ds.samples = picked;
        (have, Loaded::decode(&ds, cfg.model.size, cfg.model.input, &path, log)?)
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
    let det = Detector::new(cfg.model.clone())?;
    let mut ms = ModelState::new(be, &det, cfg.seed)?;
    let all: Vec<usize> = (0..10).collect();
    let (x, y) = ten.batch(&all, None)?;
    if det.cfg.freq.fft.magnitude == Magnitude::LogStd {
        let mut st = FreqStats::new(be, det.cfg.freq.fft, 3, cfg.model.size, cfg.model.size)?;
        be.fft_stats_update(&be.upload(&x)?, &mut st)?;
        ms.freq_stats = Some(be.upload(&st.finish(be)?)?);
    }
    log(&format!(
        "sanity: fitting 5 real and 5 fake images from {} (plain BCE, full batch, up to {max_steps} steps)",
        path.display()
    ));
    let (lo, hi) = freq_input_range(be, &det, &ms, &x, log)?;
    let (mut first, mut last, mut lowest) = (f64::NAN, f64::NAN, f64::INFINITY);
    let mut seen: Vec<String> = Vec::new();
    let mut steps = 0;
    for t in 1..=max_steps as u64 {
        let report = t == 1 || t % 25 == 0;
        let lr = lr_at(t - 1, 10, max_steps as u64, cfg.lr, cfg.lr);
        let so = step(be, &det, &mut ms, &x, &y, &cfg.loss, &cfg, StepArgs { lr, t }, report)?;
        let l = so.loss.read(be)?.loss;
        (first, last, lowest, steps) = (if t == 1 { l } else { first }, l, lowest.min(l), t as usize);
        if let Some(rows) = so.rows {
            let f = flagged(&rows);
            if !f.is_empty() {
                seen.push(format!("step {t}: {} tensors flagged ({})", f.len(), f.join(", ")));
            }
        }
        if let Some((sp, fq)) = so.scales {
            if let Some(w) =
                diagnostics::scale_warning(sp, fq).filter(|_| det.head.branches == crate::backend::head::Branches::Both)
            {
                seen.push(format!("step {t}: {w}"));
            }
        }
        if t % 25 == 0 {
            log(&format!("step {t}: loss {l:.4}"));
        }
        if l < TARGET_LOSS {
            break;
        }
    }
    let scores = predict(be, &det, &mut ms, &ten, 10)?;
    let said_fake = scores.iter().filter(|&&s| s >= 0.5).count();
    let passed = last < TARGET_LOSS;
    let mut verdict = if passed {
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
        det.cfg.freq.fft.magnitude.name(),
        if det.cfg.freq.norm { "" } else { ", no batch norm" }
    );
    if seen.is_empty() {
        verdict += "\n  gradient report: no tensor flagged, branch scales within 100x";
    }
    for s in seen.iter().take(4) {
        verdict += &format!("\n  {s}");
    }
    log(&verdict);
    Ok(SanityResult { passed, steps, first_loss: first, last_loss: last, verdict })
}
