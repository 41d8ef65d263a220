//! One training run across its epochs: the steps of an epoch, the progress line, the gradient report,
//! validation, and the checkpoints and logs each epoch writes.

use crate::backend::cpu::real::Real as _;
use crate::backend::head::Branches;
use crate::backend::loss::LossConfig;
use crate::backend::optim::{lr_at, Norms, StepArgs};
use crate::backend::Backend;
use crate::data::input::Tiles;
use crate::data::loaded::Loaded;
use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::model::checkpoint;
use crate::model::detector::Detector;
use crate::model::peak::Join;
use crate::model::state::ModelState;
use crate::rng::Rng;
use crate::tensor::Tensor;
use crate::train::config::TrainConfig;
use crate::train::diagnostics::{self, CollapseWatch, Evidence, GradRow};
use crate::train::figures;
use crate::train::inference::{group_aucs, predict_scores};
use crate::train::metrics::{auc, Report};
use crate::train::rundir;
use crate::train::runlog::{self, EpochLine};
use crate::train::trainer::{branch_scale_warning, epoch_batches, flagged, step, EpochResult, ResumePoint, PREFETCH};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A run across its epochs: the model, where the schedule stands, what a divergence message cites and the log.
pub(crate) struct Run<'a> {
    be: &'a dyn Backend,
    cfg: &'a TrainConfig,
    det: Detector,
    ms: ModelState,
    loss_cfg: LossConfig,
    evidence: Evidence,
    watch: CollapseWatch,
    /// The last gradient report's rows, tabled at the end of the epoch.
    last_rows: Vec<GradRow>,
    /// Gradient charts being drawn on their own threads.
    charts: Vec<std::thread::JoinHandle<Result<()>>>,
    /// One per epoch done: metrics.jsonl and metrics.csv.
    lines: Vec<EpochLine>,
    rng: Rng,
    /// The validation reals' peak scores (None until the first validation, or without a peak test).
    val_real_peaks: Option<Vec<f64>>,
    /// Whether the log has said that an epoch's checkpoint has no join.
    join_refused: bool,
    /// Steps done.
    t: u64,
    best_auc: f64,
    best_loss: f64,
    pub(crate) first_epoch: usize,
    /// The learning-rate schedule: warm-up and total steps.
    warmup: u64,
    total: u64,
}

/// An epoch's progress through its batches.
pub(crate) struct EpochProgress {
    epoch: usize,
    steps: usize,
    start: Instant,
    loss_sum: f64,
    /// Seconds the training step waited for a batch.
    waited: f64,
    /// Each step's loss stays on the device until the next progress line reads them all.
    pending: Vec<crate::backend::LossOutput>,
}

impl<'a> Run<'a> {
    pub(crate) fn new(
        be: &'a dyn Backend,
        cfg: &'a TrainConfig,
        (det, ms): (Detector, ModelState),
        loss_cfg: LossConfig,
        evidence: Evidence,
        n_train: usize,
    ) -> Self {
        let steps_per_epoch = (n_train / cfg.batch).max(1);
        Run {
            be,
            cfg,
            det,
            ms,
            loss_cfg,
            evidence,
            watch: CollapseWatch::default(),
            last_rows: Vec::new(),
            charts: Vec::new(),
            lines: Vec::new(),
            rng: Rng::new(cfg.seed ^ 0xA5A5),
            val_real_peaks: None,
            join_refused: false,
            t: 0,
            best_auc: f64::NEG_INFINITY,
            best_loss: f64::INFINITY,
            first_epoch: 1,
            warmup: (cfg.warmup_epochs * steps_per_epoch as f32) as u64,
            total: (steps_per_epoch * cfg.epochs) as u64,
        }
    }

    /// Goes on from a checkpoint: its step, generator and best AUC, and the log of the epochs before it.
    pub(crate) fn resume(
        &mut self,
        ckpt: &Path,
        r: &ResumePoint,
        meta: &checkpoint::Meta,
        log: &mut dyn FnMut(&str),
    ) -> Result<()> {
        (self.t, self.best_auc, self.best_loss) = (r.t, r.best_auc, r.best_loss);
        (self.first_epoch, self.rng) = (r.epoch + 1, Rng::new(r.rng));
        // Keep the log of the epochs before the checkpoint, and what a kill between the epoch's files lost.
        self.lines = rundir::resumed_log(ckpt, r.epoch, meta, log);
        rundir::restore_best(ckpt, meta, &self.cfg.out, log)?;
        log(&format!("resumed at epoch {} of {}, step {}", r.epoch, self.cfg.epochs, self.t));
        Ok(())
    }

    /// The checkpoint that a divergence in `epoch` leaves: the last finished epoch's, or the one resumed from
    /// (with --out elsewhere, the run's folder has none yet).
    fn kept(&self, epoch: usize) -> Option<PathBuf> {
        if epoch > self.first_epoch {
            Some(self.cfg.out.join("last.safetensors"))
        } else {
            self.cfg.resume.clone()
        }
    }

    /// One epoch: its steps, then validation and the epoch's files.
    pub(crate) fn epoch(
        &mut self,
        epoch: usize,
        train: &Loaded,
        val: &Loaded,
        log: &mut dyn FnMut(&str),
    ) -> Result<EpochResult> {
        let cfg = self.cfg;
        let start = Instant::now();
        // The sampler and the augmentation seeds draw from the run's generator here, before the batch thread
        // starts: a run is the same whatever the threads do, and --resume restarts it exactly.
        let plan: Vec<(Vec<usize>, u64)> = epoch_batches(&train.labels, cfg.batch, cfg.sampler, &mut self.rng)
            .into_iter()
            .map(|idx| (idx, self.rng.next_u64()))
            .collect();
        let mut e = EpochProgress { epoch, steps: plan.len(), start, loss_sum: 0.0, waited: 0.0, pending: Vec::new() };
        train.for_each_batch(&plan, &cfg.augment, PREFETCH, |i, x, y, wait| {
            e.waited += wait.as_secs_f64();
            self.train_step(&mut e, i, &x, &y, log)
        })?;
        let seconds = start.elapsed().as_secs_f64();
        self.finish_charts(epoch, log)?;
        let (r, scores, tensors) = self.validate(&e, seconds, val, log)?;
        self.save(&r, &scores, &tensors, &val.labels, log)?;
        Ok(r)
    }

    /// One training step and what it reports: the branch scales, the gradient report, the progress line.
    fn train_step(
        &mut self,
        e: &mut EpochProgress,
        i: usize,
        x: &Tensor,
        y: &Tensor,
        log: &mut dyn FnMut(&str),
    ) -> Result<()> {
        let cfg = self.cfg;
        let report = cfg.grad_report > 0 && (self.t as usize).is_multiple_of(cfg.grad_report);
        self.t += 1;
        let t = self.t;
        let lr = lr_at(t - 1, self.warmup, self.total, cfg.lr, cfg.lr * 0.01);
        let so = step(self.be, &self.det, &mut self.ms, x, y, &self.loss_cfg, cfg, StepArgs { lr, t }, report)?;
        e.pending.push(so.loss);
        self.evidence.lr = lr as f64;
        if let Some((sp, fq)) = so.scales {
            log(&format!(
                "branch scales at the fusion input: spatial mean {:.3e} std {:.3e}, frequency mean {:.3e} std {:.3e}",
                sp.0, sp.1, fq.0, fq.1
            ));
            if self.det.head.branches == Branches::Both {
                self.evidence.branch_scales = Some((sp, fq));
            }
            if let Some(w) = branch_scale_warning(&self.det, sp, fq) {
                log(&format!("WARNING: {w}"));
            }
        }
        if let Some(rows) = so.rows {
            self.grad_report(rows, log);
        }
        if (i + 1).is_multiple_of(cfg.log_every) || i + 1 == e.steps {
            self.progress_line(e, i, &so.norms, lr, log)?;
        }
        Ok(())
    }

    /// A gradient report: its chart (drawn on its own thread, tens of ms: the device does not wait for a PNG) and
    /// a warning naming the flagged tensors.
    fn grad_report(&mut self, rows: Vec<GradRow>, log: &mut dyn FnMut(&str)) {
        let t = self.t;
        let png = rundir::grad_chart(&self.cfg.out, t);
        let (chart, title) = (rows.clone(), format!("GRADIENT REPORT, STEP {t}"));
        self.charts.push(std::thread::spawn(move || figures::grad_report(&chart, &title, &png)));
        self.evidence.flagged = flagged(&rows);
        self.last_rows = rows;
        if !self.evidence.flagged.is_empty() {
            log(&format!(
                "WARNING: gradient report at step {t}: {} tensors flagged: {}",
                self.evidence.flagged.len(),
                self.evidence.flagged.join(", ")
            ));
        }
    }

    /// Reads the losses since the last line and stops a diverging run; else the progress line: the bar, the mean
    /// loss, the gradient norm, the learning rate, the rate and the time left.
    fn progress_line(
        &mut self,
        e: &mut EpochProgress,
        i: usize,
        norms: &Tensor,
        lr: f32,
        log: &mut dyn FnMut(&str),
    ) -> Result<()> {
        let (be, cfg, t, steps) = (self.be, self.cfg, self.t, e.steps);
        let losses = e.pending.drain(..).map(|o| Ok(o.read(be)?.loss)).collect::<Result<Vec<f64>>>()?;
        e.loss_sum += losses.iter().sum::<f64>();
        let gn = Norms::read(norms, be, &self.det.params)?.total;
        // Stop at the first sign of divergence: every step after it would only write NaN weights.
        let bad_loss = losses.iter().copied().find(|l| !l.is_finite());
        if bad_loss.is_some() || !gn.is_finite() {
            let loss = bad_loss.or(losses.last().copied()).unwrap_or(f64::NAN);
            self.charts.drain(..).for_each(|c| drop(c.join())); // the last charts show the way there
            let what = format!("the training loss reached {loss} and the gradient norm {gn}");
            return Err(Error::Diverged(diagnostics::divergence(
                t,
                &what,
                &self.evidence,
                self.kept(e.epoch).as_deref(),
            )));
        }
        let elapsed = e.start.elapsed().as_secs_f64();
        let rate = ((i + 1) * cfg.batch) as f64 / elapsed;
        let eta = (steps - i - 1) as f64 * cfg.batch as f64 / rate;
        // Say so when the device waits for data: the decoding and augmentation threads are too slow.
        let share = e.waited / elapsed;
        let wait =
            if share >= 0.01 { format!(", {:.0}% of the time waiting for data", 100.0 * share) } else { String::new() };
        let done = (i + 1) * 20 / steps;
        let bar = format!("[{}{}]", "#".repeat(done), ".".repeat(20 - done));
        log(&format!(
            "epoch {}/{} {bar} step {}/{steps}: loss {:.4}, grad norm {gn:.3}, lr {lr:.2e}, {rate:.0} images/s{wait}, epoch ends in {eta:.0} s",
            e.epoch,
            cfg.epochs,
            i + 1,
            losses.iter().sum::<f64>() / losses.len() as f64
        ));
        Ok(())
    }

    /// Waits for the epoch's gradient charts and tables its last gradient report.
    fn finish_charts(&mut self, epoch: usize, log: &mut dyn FnMut(&str)) -> Result<()> {
        for c in self.charts.drain(..) {
            c.join().expect("the chart thread does not panic")?;
        }
        if !self.last_rows.is_empty() {
            log(&format!(
                "gradient report (last of epoch {epoch}, per block):\n{}",
                diagnostics::table(&self.last_rows).trim_end()
            ));
        }
        Ok(())
    }

    /// The epoch's validation figures with its scores and the tensors to save; a divergence error when any of
    /// them is not finite.
    fn validate(
        &mut self,
        e: &EpochProgress,
        seconds: f64,
        val: &Loaded,
        log: &mut dyn FnMut(&str),
    ) -> Result<(EpochResult, Vec<f32>, Vec<checkpoint::Named>)> {
        let (be, epoch) = (self.be, e.epoch);
        // The validation reals' peak scores do not change with the weights: taken at the first validation only.
        let first = self.val_real_peaks.is_none();
        let scored = predict_scores(be, &self.det, &mut self.ms, val, 64, Tiles::CENTRE, first)?;
        let logits = scored.logits;
        let scores: Vec<f32> = logits.iter().map(|&z| z.sigmoid()).collect();
        // The last step may have diverged after the last progress line read its loss: check what would be saved.
        let tensors = checkpoint::tensors(be, &self.det, &self.ms)?;
        let bad_scores = scores.iter().filter(|s| !s.is_finite()).count();
        let not_finite = match checkpoint::first_non_finite(&tensors) {
            Some((name, i, v)) => Some(format!("tensor '{name}' holds {v} (at index {i})")),
            None => {
                (bad_scores > 0).then(|| format!("{bad_scores} of {} validation scores are not finite", scores.len()))
            }
        };
        if let Some(what) = not_finite {
            let what = format!("(the end of epoch {epoch}) {what}");
            return Err(Error::Diverged(diagnostics::divergence(
                self.t,
                &what,
                &self.evidence,
                self.kept(epoch).as_deref(),
            )));
        }
        self.ms.join = self.join(val, &logits, scored.peaks, log);
        // The validation loss with the training loss's settings, from the logits (finite for any of them).
        let labels: Vec<f32> = val.labels.iter().map(|&y| y as f32).collect();
        let (val_loss, _) =
            crate::backend::cpu::loss::loss(&self.loss_cfg, &logits, &labels, 0.0, &mut vec![0.0; logits.len()]);
        self.evidence.auc = auc(&scores, &val.labels);
        self.evidence.best_threshold = crate::train::metrics::best_balanced_threshold(&scores, &val.labels);
        if let Some(w) = self.watch.check(&scores, &self.evidence) {
            log(w.trim_end());
        }
        let report = Report::new(&scores, &val.labels);
        let r = EpochResult {
            epoch,
            train_loss: e.loss_sum / e.steps as f64,
            val_loss: val_loss as f64,
            group_auc: group_aucs(&scores, val),
            report,
            seconds,
            images_per_s: (e.steps * self.cfg.batch) as f64 / seconds,
        };
        let mut text =
            format!("epoch {epoch} validation: loss {:.4} (training {:.4})\n{}", r.val_loss, r.train_loss, r.report);
        for (g, a) in &r.group_auc {
            let _ = writeln!(text, "  group {g}: AUC {a:.4} (its fakes against all reals)");
        }
        log(text.trim_end());
        Ok((r, scores, tensors))
    }

    /// The peak test's join at this epoch, over the validation reals: their logits, and their peak scores (the
    /// same every epoch: `peaks`, of every validation image, given at the first validation). None without a peak
    /// test, or when there are fewer than 2 validation reals or their logits do not vary (said once).
    fn join(
        &mut self,
        val: &Loaded,
        logits: &[f32],
        peaks: Option<Vec<f64>>,
        log: &mut dyn FnMut(&str),
    ) -> Option<Join> {
        let reals: Vec<usize> = (0..val.len()).filter(|&i| val.labels[i] == 0).collect();
        if let Some(p) = peaks {
            self.val_real_peaks = Some(reals.iter().map(|&i| p[i]).collect());
        }
        let peaks = self.val_real_peaks.as_ref()?;
        let z: Vec<f64> = reals.iter().map(|&i| logits[i] as f64).collect();
        match Join::fit(&z, peaks) {
            Ok(j) => Some(j),
            Err(e) => {
                if !std::mem::replace(&mut self.join_refused, true) {
                    log(&format!("no join of the detector and the spectral peak test in this checkpoint: {e}"));
                }
                None
            }
        }
    }

    /// The epoch's files: best.safetensors when it `outranks` the best so far, the logs, the figures, and
    /// last.safetensors.
    fn save(
        &mut self,
        r: &EpochResult,
        scores: &[f32],
        tensors: &[checkpoint::Named],
        val_labels: &[u8],
        log: &mut dyn FnMut(&str),
    ) -> Result<()> {
        let (cfg, epoch) = (self.cfg, r.epoch);
        let auc_now = r.report.auc.unwrap_or(0.0);
        let is_best = outranks((auc_now, r.val_loss), (self.best_auc, self.best_loss));
        let tie = is_best && auc_now == self.best_auc;
        if is_best {
            (self.best_auc, self.best_loss) = (auc_now, r.val_loss);
        }
        let (best_auc, best_loss) = (self.best_auc, self.best_loss);
        let mut meta = ResumePoint { epoch, t: self.t, rng: self.rng.state(), best_auc, best_loss }.to_meta(auc_now);
        // The epoch's validation figures travel with the weights (the metrics.jsonl line).
        meta.insert("dfgpu.metrics".into(), EpochLine::new(r, false).json());
        meta.insert("dfgpu.optimizer".into(), cfg.optimizer.name().into());
        // Whether this epoch is the best so far: --resume restores best.safetensors from it if a kill lost it.
        meta.insert("dfgpu.best".into(), is_best.to_string());
        meta.extend(checkpoint::state_meta(&self.ms));
        // last.safetensors comes last: it is what --resume starts from, so a kill before it redoes the epoch, which
        // writes the same files again, and a kill after it has lost nothing.
        if is_best {
            checkpoint::write_detector(&cfg.out.join("best.safetensors"), tensors, &self.det.cfg, &meta)?;
            let why = if tie { " (the same AUC, a lower validation loss)" } else { "" };
            log(&format!("best validation AUC so far{why}: {}", cfg.out.join("best.safetensors").display()));
        }
        self.lines.push(EpochLine::new(r, true));
        // Both logs are rewritten whole each epoch, through a temporary file: a crash never leaves a torn log.
        write_atomic(&cfg.out.join("metrics.jsonl"), runlog::jsonl(&self.lines).as_bytes())?;
        write_atomic(&cfg.out.join("metrics.csv"), runlog::csv(&self.lines).as_bytes())?;
        figures::curves(&self.lines, &cfg.out.join("curves.png"))?;
        if epoch == cfg.epochs {
            let title = format!("ROC, EPOCH {epoch}: AUC {:.4}", r.report.auc.unwrap_or(f64::NAN));
            figures::roc_curve(scores, val_labels, &title, &cfg.out.join("roc.png"))?;
        }
        checkpoint::write_detector(&cfg.out.join("last.safetensors"), tensors, &self.det.cfg, &meta)?;
        Ok(())
    }
}

/// Whether an epoch's (validation AUC, validation loss) beats the best so far: the higher AUC, and of equal AUCs
/// the lower loss, so that a run whose AUC reaches 1.000 early keeps its most confident epoch, not its first.
/// Without both classes in validation there is no AUC (0 here): the lowest loss wins. A NaN best loss loses
/// every tie.
fn outranks((auc, loss): (f64, f64), (best_auc, best_loss): (f64, f64)) -> bool {
    auc > best_auc || (auc == best_auc && (loss < best_loss || best_loss.is_nan()))
}

#[cfg(test)]
mod tests {
    use super::outranks;

    #[test]
    fn the_higher_auc_then_the_lower_loss_is_best() {
        assert!(outranks((0.5, 0.7), (f64::NEG_INFINITY, f64::INFINITY)), "a first epoch is the best so far");
        assert!(outranks((0.91, 0.9), (0.9, 0.1)), "a higher AUC wins whatever its loss");
        assert!(!outranks((0.9, 0.05), (0.91, 0.1)), "a lower AUC loses whatever its loss");
        assert!(outranks((1.0, 0.05), (1.0, 0.1)), "of equal AUCs the lower loss wins");
        assert!(!outranks((1.0, 0.1), (1.0, 0.1)) && !outranks((1.0, 0.2), (1.0, 0.1)));
        assert!(!outranks((1.0, f64::NAN), (1.0, 0.1)), "a NaN loss wins no tie");
        assert!(outranks((1.0, 0.3), (1.0, f64::NAN)), "and a NaN best loses every tie");
        // A checkpoint from before the tie-break resumes with NEG_INFINITY: its best is kept on a tie, as before.
        assert!(!outranks((1.0, 0.0), (1.0, f64::NEG_INFINITY)));
    }
}
