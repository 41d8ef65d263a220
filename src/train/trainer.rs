//! The training loop: data in memory (decoded once, in parallel), batches by a natural or class-balanced
//! sampler with horizontal flips, the detector's forward and backward, per-tensor norms with clipping, AdamW
//! with warm-up and cosine decay, and validation metrics after every epoch. Without --data it trains on the
//! built-in synthetic set, generated once into a cache folder.

use crate::backend::cpu::real::Real as _;
use crate::backend::fft::{FreqStats, Magnitude};
use crate::backend::head::Mode;
use crate::backend::loss::{ClassWeighting, LossConfig, LossKind};
use crate::backend::optim::{lr_at, Norms, Optimizer, StepArgs};
use crate::backend::{Backend, ChannelNorm};
use crate::data::augment::Augment;
use crate::data::folder::describe;
use crate::data::input::Tiles;
use crate::data::loaded::Loaded;
use crate::data::open::{builtin_data, open_data};
use crate::data::synth::SynthConfig;
use crate::error::{Choice, Error, Result};
use crate::model::checkpoint;
use crate::model::detector::{Detector, DetectorConfig};
use crate::model::layers::{Bwd, Fwd};
use crate::model::state::ModelState;
use crate::rng::Rng;
use crate::tensor::Tensor;
use crate::train::diagnostics::{self, CollapseWatch, Evidence, GradFlag, GradRow};
use crate::train::figures;
use crate::train::inference::{group_aucs, on_compute_threads, predict_logits};
use crate::train::metrics::{auc, Report};
use crate::train::rundir::{self, RunDir};
use crate::train::runlog::{self, EpochLine};
use crate::GIB;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampler {
    /// Every training image once per epoch, shuffled: the data set's own class balance.
    Natural,
    /// Each batch half real, half fake (drawn with replacement), as many batches as a natural epoch.
    Balanced,
}

impl Choice for Sampler {
    const NAMES: &'static [(&'static str, Self)] = &[("natural", Sampler::Natural), ("balanced", Sampler::Balanced)];
}

#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// A folder or CSV dataset; None: the built-in synthetic set.
    pub data: Option<PathBuf>,
    /// A validation set; None: a stratified split of the training set.
    pub val: Option<PathBuf>,
    pub val_fraction: f64,
    /// Where the logs go.
    pub out: PathBuf,
    pub model: DetectorConfig,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f32,
    pub warmup_epochs: f32,
    pub optimizer: Optimizer,
    pub max_grad_norm: Option<f32>,
    pub loss: LossConfig,
    pub weighting: ClassWeighting,
    pub sampler: Sampler,
    pub seed: u64,
    /// The built-in set, when `data` is None.
    pub synth: SynthConfig,
    /// Progress lines every this many steps.
    pub log_every: usize,
    /// The gradient report (per tensor: gradient norm, update / weight) every this many steps; 0: never.
    pub grad_report: usize,
    /// Augmentations of the training images (data/augment.rs).
    pub augment: Augment,
    /// Continue from this checkpoint (its model settings, weights, optimizer state, step and sampler state).
    pub resume: Option<PathBuf>,
    /// Start the spatial branch from these timm EfficientNet weights (scripts/export_timm.py).
    pub pretrained: Option<PathBuf>,
    /// What to do when `out` holds an earlier run (and this is not a --resume of it).
    pub existing: ExistingRun,
    /// The model flags (of `MODEL_FLAGS`) given on the command line: on --resume each must agree with the
    /// checkpoint, whose settings the run keeps.
    pub model_flags: Vec<&'static str>,
}

/// Each model flag and the checkpoint metadata key that stores its setting.
pub const MODEL_FLAGS: [(&str, &str); 16] = [
    ("--backbone", "dfgpu.backbone"),
    ("--size", "dfgpu.size"),
    ("--input", "dfgpu.input"),
    ("--freq-widths", "dfgpu.freq.widths"),
    ("--no-freq-bn", "dfgpu.freq.norm"),
    ("--spectrum", "dfgpu.fft.layout"),
    ("--freq-norm", "dfgpu.fft.magnitude"),
    ("--phase", "dfgpu.fft.phase"),
    ("--grayscale", "dfgpu.fft.grayscale"),
    ("--head-hidden", "dfgpu.head.hidden"),
    ("--no-head-norm", "dfgpu.head.norm"),
    ("--head-act", "dfgpu.head.act"),
    ("--dropout", "dfgpu.head.dropout"),
    ("--gated", "dfgpu.head.gated"),
    ("--branches", "dfgpu.head.branches"),
    ("--branch-dropout", "dfgpu.head.branch_dropout"),
];

pub use crate::train::rundir::ExistingRun;

impl TrainConfig {
    /// Defaults for a backbone: focal loss, class-balanced batches, AdamW 1e-3 with one warm-up epoch.
    pub fn new(model: DetectorConfig) -> Self {
        TrainConfig {
            data: None,
            val: None,
            val_fraction: 0.2,
            out: PathBuf::from("runs/latest"),
            synth: SynthConfig { size: model.size.max(32), ..SynthConfig::default() },
            model,
            epochs: 6,
            batch: 32,
            lr: 1e-3,
            warmup_epochs: 1.0,
            optimizer: Optimizer::default(),
            max_grad_norm: Some(5.0),
            loss: LossConfig::focal(),
            weighting: ClassWeighting::None,
            sampler: Sampler::Balanced,
            seed: 0,
            log_every: 10,
            grad_report: 25,
            augment: Augment::default(),
            resume: None,
            pretrained: None,
            existing: ExistingRun::MoveAside,
            model_flags: Vec::new(),
        }
    }
}

/// One epoch's validation figures.
#[derive(Clone, Debug)]
pub struct EpochResult {
    pub epoch: usize,
    pub train_loss: f64,
    /// With the training loss's settings (class weights included).
    pub val_loss: f64,
    pub report: Report,
    /// Per fake group: the AUC of its fakes against all the reals.
    pub group_auc: Vec<(String, f64)>,
    pub seconds: f64,
    pub images_per_s: f64,
}

pub struct Summary {
    pub epochs: Vec<EpochResult>,
    pub device: String,
}

/// Batches made ahead of the training step, on the batch thread.
const PREFETCH: usize = 3;

/// Batches of indices for one epoch.
fn epoch_batches(labels: &[u8], batch: usize, sampler: Sampler, rng: &mut Rng) -> Vec<Vec<usize>> {
    let n = labels.len();
    let steps = (n / batch).max(1);
    match sampler {
        Sampler::Natural => {
            let mut idx: Vec<usize> = (0..n).collect();
            rng.shuffle(&mut idx);
            idx.chunks(batch).take(steps).map(|c| c.to_vec()).collect()
        }
        Sampler::Balanced => {
            let by: [Vec<usize>; 2] = [0u8, 1].map(|c| (0..n).filter(|&i| labels[i] == c).collect());
            (0..steps)
                .map(|_| {
                    (0..batch)
                        .map(|k| {
                            let pool = &by[k % 2];
                            pool[rng.below(pool.len() as u64) as usize]
                        })
                        .collect()
                })
                .collect()
        }
    }
}

/// Logs what the frequency branch is fed (its range is the first thing to look at when a run fails) and
/// returns (min, max).
pub fn freq_input_range(
    be: &dyn Backend,
    det: &Detector,
    ms: &ModelState,
    x: &Tensor,
    log: &mut dyn FnMut(&str),
) -> Result<(f64, f64)> {
    let feats = be.download(&be.fft_features(&be.upload(x)?, &det.cfg.freq.fft, ms.freq_stats.as_ref())?)?;
    let v = feats.host::<f32>()?;
    let (lo, hi) = v.iter().fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x as f64), b.max(x as f64)));
    let (m, sd) = diagnostics::mean_std(v);
    log(&format!(
        "frequency branch input ('{}' magnitudes): {lo:.3e} to {hi:.3e}, mean {m:.3e}, std {sd:.3e}",
        det.cfg.freq.fft.magnitude.name()
    ));
    Ok((lo, hi))
}

/// What one training step leaves: the loss (on the device until read), the norms, and on report steps the
/// branches' feature scales at the fusion input and the gradient report of the active tensors.
pub struct StepOut {
    pub loss: crate::backend::LossOutput,
    pub norms: Tensor,
    pub scales: Option<((f64, f64), (f64, f64))>,
    pub rows: Option<Vec<GradRow>>,
}

/// One training step on a host batch: forward, loss, backward, norms with clipping, the optimizer.
#[allow(clippy::too_many_arguments)]
pub fn step(
    be: &dyn Backend,
    det: &Detector,
    ms: &mut ModelState,
    x: &Tensor,
    y: &Tensor,
    loss_cfg: &LossConfig,
    cfg: &TrainConfig,
    args: StepArgs,
    report: bool,
) -> Result<StepOut> {
    on_compute_threads(be, || step_here(be, det, ms, x, y, loss_cfg, cfg, args, report))
}

#[allow(clippy::too_many_arguments)]
fn step_here(
    be: &dyn Backend,
    det: &Detector,
    ms: &mut ModelState,
    x: &Tensor,
    y: &Tensor,
    loss_cfg: &LossConfig,
    cfg: &TrainConfig,
    args: StepArgs,
    report: bool,
) -> Result<StepOut> {
    let (x, y) = (be.upload(x)?, be.upload(y)?);
    let pre = be.preprocess(&x, &ChannelNorm::imagenet(), true)?;
    let raw = pre.raw.expect("asked for");
    let mut f = Fwd {
        be,
        params: &ms.params,
        state: &mut ms.state,
        mode: Mode::Train { seed: cfg.seed.wrapping_add(args.t) ^ 0x9E37 },
    };
    let (logits, cache) = det.forward(&mut f, Arc::new(pre.norm), &raw, ms.freq_stats.as_ref())?;
    let loss = be.loss(loss_cfg, &logits, &y, 0.5)?;
    let scales = if report {
        let (sf, qf) = det.branch_features(&cache);
        Some((diagnostics::mean_std(be.download(sf)?.host()?), diagnostics::mean_std(be.download(qf)?.host()?)))
    } else {
        None
    };
    det.backward(&mut Bwd { be, params: &ms.params, grads: &mut ms.grads }, cache, &loss.dlogits)?;
    let norms = be.param_norms(&det.params, &ms.params, &ms.grads, cfg.max_grad_norm)?;
    let before = if report { Some(be.duplicate(&ms.params)?) } else { None };
    let bufs = crate::backend::StepBuffers {
        params: &mut ms.params,
        grads: &ms.grads,
        m: &mut ms.m,
        v: &mut ms.v,
        decay_mask: &ms.mask,
        norms: &norms,
    };
    be.optimizer_step(&det.params, bufs, &cfg.optimizer, args)?;
    let rows = match before {
        Some(before) => {
            // Two reductions on the device; only two numbers per tensor come back.
            let steps = Norms::read(&be.step_norms(&det.params, &before, &ms.params)?, be, &det.params)?;
            let grads = Norms::read(&norms, be, &det.params)?;
            let mut rows = diagnostics::grad_rows(&det.params, &grads, &steps);
            rows.retain(|r| det.is_active(&r.name));
            Some(rows)
        }
        None => None,
    };
    Ok(StepOut { loss, norms, scales, rows })
}

/// The flagged tensors of a report, leaving out the batch-norm shifts that have no gradient by construction.
pub(crate) fn flagged(rows: &[GradRow]) -> Vec<String> {
    rows.iter()
        .filter(|r| !(r.expected_zero() && r.flag() == Some(GradFlag::Vanishing)))
        .filter_map(|r| r.flag().map(|f| format!("{} ({f})", r.name)))
        .collect()
}

/// Trains; returns every epoch's validation figures. `log` receives the progress lines.
pub fn train(be: &dyn Backend, cfg: &TrainConfig, log: &mut dyn FnMut(&str)) -> Result<Summary> {
    let (dir, resumed) = start(be, cfg, log)?;
    let data_path = match &cfg.data {
        Some(p) => p.clone(),
        None => builtin_data(&cfg.synth, log)?,
    };
    let t0 = Instant::now();
    // A resumed run decodes its data as the checkpoint's model takes it: its model settings come from there.
    let model = resumed.as_ref().map_or(&cfg.model, |(det, ..)| &det.cfg);
    let (size, input) = (model.size, model.input);
    let mut all = open_data(&data_path, size, input, log)?;
    let mut skipped = std::mem::take(&mut all.skipped);
    let (train, val) = match &cfg.val {
        Some(v) => {
            let mut val = open_data(v, size, input, log)?;
            skipped.append(&mut val.skipped);
            (all, val)
        }
        None => all.split(cfg.val_fraction, cfg.seed)?,
    };
    log(&format!("data: {} ({})", data_path.display(), describe(train.counts())));
    log(&format!("validation: {}", describe(val.counts())));
    for s in &skipped {
        log(&format!("skipped: {s}"));
    }
    log(&format!(
        "{} images at {size}x{size} ready in {:.1} s ({} skipped)",
        train.len() + val.len(),
        t0.elapsed().as_secs_f64(),
        skipped.len()
    ));
    run(be, cfg, (dir, resumed), &train, &val, log)
}

/// `train` on a training and a validation set already in memory (`cfg.data` and `cfg.val` are not read): what
/// `dfgpu holdout` runs for each held-out group.
pub fn train_on(
    be: &dyn Backend,
    cfg: &TrainConfig,
    train: &Loaded,
    val: &Loaded,
    log: &mut dyn FnMut(&str),
) -> Result<Summary> {
    let started = start(be, cfg, log)?;
    run(be, cfg, started, train, val, log)
}

/// A checkpoint resumed from: its detector, state, resume point and metadata.
type Resumed = (Detector, ModelState, ResumePoint, checkpoint::Meta);

/// Checks the settings, takes the run folder and loads the checkpoint to resume from, before any data is read.
fn start(be: &dyn Backend, cfg: &TrainConfig, log: &mut dyn FnMut(&str)) -> Result<(RunDir, Option<Resumed>)> {
    if cfg.batch < 2 || cfg.epochs == 0 {
        return Err(Error::Invalid(format!("batch {} and epochs {} must be at least 2 and 1", cfg.batch, cfg.epochs)));
    }
    let dir = RunDir::open(&cfg.out, cfg.existing, cfg.resume.as_deref(), log)?;
    let resumed = cfg.resume.as_deref().map(|p| resume_from(be, cfg, p, log)).transpose()?;
    Ok((dir, resumed))
}

/// The run itself, once the data is in memory and the run folder taken (`start`).
fn run(
    be: &dyn Backend,
    cfg: &TrainConfig,
    (mut dir, resumed): (RunDir, Option<Resumed>),
    train: &Loaded,
    val: &Loaded,
    log: &mut dyn FnMut(&str),
) -> Result<Summary> {
    let counts = train.counts();
    let weights = cfg.weighting.weights(counts)?;
    let loss_cfg = LossConfig { weights, ..cfg.loss };
    let (det, mut ms, resumed) = match resumed {
        Some((det, ms, point, meta)) => (det, ms, Some((point, meta))),
        None => {
            let det = Detector::new(cfg.model.clone())?;
            let mut ms = ModelState::new(be, &det, cfg.seed)?;
            if let Some(p) = &cfg.pretrained {
                crate::model::timm::load_into_detector(p, be, &det, &mut ms)?;
                log(&format!("spatial branch: timm weights from {}", p.display()));
            }
            (det, ms, None)
        }
    };
    let cfg = &bounded_batch(cfg, train.len(), log);
    check_memory(be, &det, cfg)?;
    dir.move_aside(log)?;
    if det.cfg.freq.fft.magnitude == Magnitude::LogStd && ms.freq_stats.is_none() {
        let mut st = FreqStats::new(be, det.cfg.freq.fft, 3, det.cfg.size, det.cfg.size)?;
        let idx: Vec<usize> = (0..train.len()).collect();
        for chunk in idx.chunks(64) {
            be.fft_stats_update(&be.upload(&train.batch(chunk, None)?.0)?, &mut st)?;
        }
        ms.freq_stats = Some(be.upload(&st.finish(be)?)?);
        log(&format!("frequency statistics gathered over {} training images", st.count));
    }

    let (lo, hi) = freq_input_range(
        be,
        &det,
        &ms,
        &train.batch(&(0..train.len().min(cfg.batch)).collect::<Vec<_>>(), None)?.0,
        log,
    )?;
    let mut evidence = Evidence {
        branches: det.head.branches.name().into(),
        freq_magnitude: det.cfg.freq.fft.magnitude.name().into(),
        freq_feature_range: (lo, hi),
        class_weights: weights,
        optimizer: cfg.optimizer.describe(),
        max_grad_norm: cfg.max_grad_norm,
        sampler: cfg.sampler.name().into(),
        fake_share: counts[1] as f64 / train.len() as f64,
        ..Evidence::default()
    };
    let mut watch = CollapseWatch::default();
    let mut last_rows: Vec<GradRow> = Vec::new();
    let mut charts = Vec::new();

    let jsonl_path = cfg.out.join("metrics.jsonl");
    let grad_dir = cfg.out.join("grad");
    if cfg.grad_report > 0 {
        std::fs::create_dir_all(&grad_dir).map_err(|source| Error::Io { path: grad_dir.clone(), source })?;
    }
    let mut lines = Vec::new();
    let mut rng = Rng::new(cfg.seed ^ 0xA5A5);
    let (mut t, mut best_auc, mut first_epoch) = (0u64, f64::NEG_INFINITY, 1);
    if let (Some((r, meta)), Some(ckpt)) = (&resumed, &cfg.resume) {
        (t, best_auc, first_epoch, rng) = (r.t, r.best_auc, r.epoch + 1, Rng::new(r.rng));
        // Keep the log of the epochs before the checkpoint, and what a kill between the epoch's files lost.
        lines = rundir::resumed_log(ckpt, r.epoch, meta, log);
        rundir::restore_best(ckpt, meta, &cfg.out, log)?;
        log(&format!("resumed at epoch {} of {}, step {t}", r.epoch, cfg.epochs));
    }
    let steps_per_epoch = (train.len() / cfg.batch).max(1);
    let total = (steps_per_epoch * cfg.epochs) as u64;
    let warmup = (cfg.warmup_epochs * steps_per_epoch as f32) as u64;
    let mut summary = Summary { epochs: Vec::new(), device: be.name() };
    // The checkpoint that a divergence in `epoch` leaves: the last finished epoch's, or the one resumed from (with
    // --out elsewhere, the run's folder has none yet).
    let kept =
        |epoch: usize| if epoch > first_epoch { Some(cfg.out.join("last.safetensors")) } else { cfg.resume.clone() };
    for epoch in first_epoch..=cfg.epochs {
        let start = Instant::now();
        // The sampler and the augmentation seeds draw from the run's generator here, before the batch thread
        // starts: a run is the same whatever the threads do, and --resume restarts it exactly.
        let plan: Vec<(Vec<usize>, u64)> = epoch_batches(&train.labels, cfg.batch, cfg.sampler, &mut rng)
            .into_iter()
            .map(|idx| (idx, rng.next_u64()))
            .collect();
        let steps = plan.len();
        let (mut loss_sum, mut waited) = (0.0, 0.0);
        // Each step's loss stays on the device until the next progress line reads them all.
        let mut pending = Vec::new();
        train.for_each_batch(&plan, &cfg.augment, PREFETCH, |i, x, y, wait| {
            waited += wait.as_secs_f64();
            let report = cfg.grad_report > 0 && (t as usize).is_multiple_of(cfg.grad_report);
            t += 1;
            let lr = lr_at(t - 1, warmup, total, cfg.lr, cfg.lr * 0.01);
            let so = step(be, &det, &mut ms, &x, &y, &loss_cfg, cfg, StepArgs { lr, t }, report)?;
            let norms = so.norms;
            pending.push(so.loss);
            evidence.lr = lr as f64;
            if let Some((sp, fq)) = so.scales {
                log(&format!("branch scales at the fusion input: spatial mean {:.3e} std {:.3e}, frequency mean {:.3e} std {:.3e}", sp.0, sp.1, fq.0, fq.1));
                // With a branch switched off its features are zeros: there is no scale to compare.
                if det.head.branches == crate::backend::head::Branches::Both {
                    evidence.branch_scales = Some((sp, fq));
                    if let Some(w) = diagnostics::scale_warning(sp, fq) {
                        log(&format!("WARNING: {w}"));
                    }
                }
            }
            if let Some(rows) = so.rows {
                let png = grad_dir.join(format!("step-{t:06}.png"));
                // Drawn and encoded on its own thread (tens of ms): the device does not wait for a PNG.
                let (chart, title) = (rows.clone(), format!("GRADIENT REPORT, STEP {t}"));
                charts.push(std::thread::spawn(move || figures::grad_report(&chart, &title, &png)));
                evidence.flagged = flagged(&rows);
                last_rows = rows;
                if !evidence.flagged.is_empty() {
                    log(&format!(
                        "WARNING: gradient report at step {t}: {} tensors flagged: {}",
                        evidence.flagged.len(),
                        evidence.flagged.join(", ")
                    ));
                }
            }
            if (i + 1) % cfg.log_every == 0 || i + 1 == steps {
                let losses = pending.drain(..).map(|o| Ok(o.read(be)?.loss)).collect::<Result<Vec<f64>>>()?;
                loss_sum += losses.iter().sum::<f64>();
                let gn = Norms::read(&norms, be, &det.params)?.total;
                // Stop at the first sign of divergence: every step after it would only write NaN weights.
                let bad_loss = losses.iter().copied().find(|l| !l.is_finite());
                if bad_loss.is_some() || !gn.is_finite() {
                    let loss = bad_loss.or(losses.last().copied()).unwrap_or(f64::NAN);
                    charts.drain(..).for_each(|c| drop(c.join())); // the last charts show the way there
                    let what = format!("the training loss reached {loss} and the gradient norm {gn}");
                    return Err(Error::Diverged(diagnostics::divergence(t, &what, &evidence, kept(epoch).as_deref())));
                }
                let elapsed = start.elapsed().as_secs_f64();
                let rate = ((i + 1) * cfg.batch) as f64 / elapsed;
                let eta = (steps - i - 1) as f64 * cfg.batch as f64 / rate;
                // Say so when the device waits for data: the decoding and augmentation threads are too slow.
                let share = waited / elapsed;
                let wait = if share >= 0.01 { format!(", {:.0}% of the time waiting for data", 100.0 * share) } else { String::new() };
                let done = (i + 1) * 20 / steps;
                let bar = format!("[{}{}]", "#".repeat(done), ".".repeat(20 - done));
                log(&format!(
                    "epoch {epoch}/{} {bar} step {}/{steps}: loss {:.4}, grad norm {gn:.3}, lr {lr:.2e}, {rate:.0} images/s{wait}, epoch ends in {eta:.0} s",
                    cfg.epochs,
                    i + 1,
                    losses.iter().sum::<f64>() / losses.len() as f64
                ));
            }
            Ok(())
        })?;
        let seconds = start.elapsed().as_secs_f64();
        for c in charts.drain(..) {
            c.join().expect("the chart thread does not panic")?;
        }
        if !last_rows.is_empty() {
            log(&format!(
                "gradient report (last of epoch {epoch}, per block):\n{}",
                diagnostics::table(&last_rows).trim_end()
            ));
        }
        let logits = predict_logits(be, &det, &mut ms, val, 64, Tiles::CENTRE)?;
        let scores: Vec<f32> = logits.iter().map(|&z| z.sigmoid()).collect();
        // The last step may have diverged after the last progress line read its loss: check what would be saved.
        let tensors = checkpoint::tensors(be, &det, &ms)?;
        let bad_scores = scores.iter().filter(|s| !s.is_finite()).count();
        let not_finite = match checkpoint::first_non_finite(&tensors) {
            Some((name, i, v)) => Some(format!("tensor '{name}' holds {v} (at index {i})")),
            None => {
                (bad_scores > 0).then(|| format!("{bad_scores} of {} validation scores are not finite", scores.len()))
            }
        };
        if let Some(what) = not_finite {
            let what = format!("(the end of epoch {epoch}) {what}");
            return Err(Error::Diverged(diagnostics::divergence(t, &what, &evidence, kept(epoch).as_deref())));
        }
        // The validation loss with the training loss's settings, from the logits (finite for any of them).
        let labels: Vec<f32> = val.labels.iter().map(|&y| y as f32).collect();
        let (val_loss, _) =
            crate::backend::cpu::loss::loss(&loss_cfg, &logits, &labels, 0.0, &mut vec![0.0; logits.len()]);
        evidence.auc = auc(&scores, &val.labels);
        evidence.best_threshold = crate::train::metrics::best_balanced_threshold(&scores, &val.labels);
        if let Some(w) = watch.check(&scores, &evidence) {
            log(w.trim_end());
        }
        let report = Report::new(&scores, &val.labels);
        let r = EpochResult {
            epoch,
            train_loss: loss_sum / steps as f64,
            val_loss: val_loss as f64,
            group_auc: group_aucs(&scores, val),
            report,
            seconds,
            images_per_s: (steps * cfg.batch) as f64 / seconds,
        };
        let mut text =
            format!("epoch {epoch} validation: loss {:.4} (training {:.4})\n{}", r.val_loss, r.train_loss, r.report);
        for (g, a) in &r.group_auc {
            let _ = writeln!(text, "  group {g}: AUC {a:.4} (its fakes against all reals)");
        }
        log(text.trim_end());
        let auc_now = r.report.auc.unwrap_or(0.0);
        let is_best = auc_now > best_auc;
        best_auc = best_auc.max(auc_now);
        let mut meta = ResumePoint { epoch, t, rng: rng.state(), best_auc }.to_meta(auc_now);
        // The epoch's validation figures travel with the weights (the metrics.jsonl line).
        meta.insert("dfgpu.metrics".into(), EpochLine::new(&r, false).json());
        meta.insert("dfgpu.optimizer".into(), cfg.optimizer.name().into());
        // Whether this epoch is the best so far: --resume restores best.safetensors from it if a kill lost it.
        meta.insert("dfgpu.best".into(), is_best.to_string());
        // last.safetensors comes last: it is what --resume starts from, so a kill before it redoes the epoch, which
        // writes the same files again, and a kill after it has lost nothing.
        if is_best {
            checkpoint::write_detector(&cfg.out.join("best.safetensors"), &tensors, &det.cfg, &meta)?;
            log(&format!("best validation AUC so far: {}", cfg.out.join("best.safetensors").display()));
        }
        lines.push(EpochLine::new(&r, true));
        // Both logs are rewritten whole each epoch, through a temporary file: a crash never leaves a torn log.
        rundir::write_atomic(&jsonl_path, runlog::jsonl(&lines).as_bytes())?;
        rundir::write_atomic(&cfg.out.join("metrics.csv"), runlog::csv(&lines).as_bytes())?;
        figures::curves(&lines, &cfg.out.join("curves.png"))?;
        if epoch == cfg.epochs {
            let title = format!("ROC, EPOCH {epoch}: AUC {:.4}", r.report.auc.unwrap_or(f64::NAN));
            figures::roc_curve(&scores, &val.labels, &title, &cfg.out.join("roc.png"))?;
        }
        checkpoint::write_detector(&cfg.out.join("last.safetensors"), &tensors, &det.cfg, &meta)?;
        summary.epochs.push(r);
    }
    log(&format!(
        "metrics of every epoch: {} and metrics.csv beside it; figures: curves.png, roc.png{}",
        jsonl_path.display(),
        if cfg.grad_report > 0 { ", grad/step-*.png" } else { "" }
    ));
    Ok(summary)
}

/// A batch draws from the training set: one larger than the set is clamped to it, with a note. The steps per
/// epoch stay the same (one: the set's size over the batch, at least one), and so does the learning-rate
/// schedule; the batch then holds each image once instead of drawing the same ones again.
fn bounded_batch(cfg: &TrainConfig, n_train: usize, log: &mut dyn FnMut(&str)) -> TrainConfig {
    if cfg.batch <= n_train {
        return cfg.clone();
    }
    log(&format!("--batch {} is larger than the training set ({n_train} images): batches of {n_train}", cfg.batch));
    TrainConfig { batch: n_train, ..cfg.clone() }
}

/// A step that needs more memory than the backend has free is refused before anything is allocated for it (the
/// system would otherwise kill the run midway), saying what it takes and the largest batch that fits.
fn check_memory(be: &dyn Backend, det: &Detector, cfg: &TrainConfig) -> Result<()> {
    let set = cfg.data.as_ref().map_or("the built-in set".into(), |p| p.display().to_string());
    let need = det.step_bytes(cfg.batch);
    match be.free_memory() {
        Some(free) if need > free => {
            let (fixed, per) = (det.step_bytes(0), det.step_bytes(1) - det.step_bytes(0));
            let most = free.saturating_sub(fixed) / per;
            Err(Error::Invalid(format!(
                "--batch {}: a training step of the {} model at {s}x{s} on {set} takes at least {:.2} GiB ({:.1} MiB \
                 per image), more than the {:.2} GiB free on {}: choose --batch {most} or less",
                cfg.batch,
                det.cfg.backbone.name,
                need as f64 / GIB,
                per as f64 / (1u64 << 20) as f64,
                free as f64 / GIB,
                be.name(),
                s = det.cfg.size,
            )))
        }
        _ => Ok(()),
    }
}

/// A checkpoint to resume from: its detector, state and resume point. The optimizer and every model flag given
/// must agree with it.
fn resume_from(be: &dyn Backend, cfg: &TrainConfig, p: &Path, log: &mut dyn FnMut(&str)) -> Result<Resumed> {
    let (det, ms, meta) = checkpoint::load(p, be)?;
    // The two state buffers mean different things to AdamW and SGD.
    let stored = meta.get("dfgpu.optimizer").map_or("adamw", String::as_str);
    if stored != cfg.optimizer.name() {
        return Err(Error::Invalid(format!(
            "{}: was trained with --optimizer {stored}; resume it with the same optimizer (asked: {})",
            p.display(),
            cfg.optimizer.name()
        )));
    }
    let (asked, has) = (checkpoint::config_meta(&cfg.model), checkpoint::config_meta(&det.cfg));
    for (flag, key) in MODEL_FLAGS.iter().filter(|(f, _)| cfg.model_flags.contains(f)) {
        if asked[*key] != has[*key] {
            let k = key.trim_start_matches("dfgpu.");
            return Err(Error::Invalid(format!(
                "{}: {flag} ({k} {}) contradicts the checkpoint's {k} {}: a resumed run keeps the model it was \
                 trained with (drop {flag}, or start a new run)",
                p.display(),
                asked[*key],
                has[*key]
            )));
        }
    }
    let point = ResumePoint::from_meta(&meta, p)?;
    if cfg.epochs <= point.epoch {
        return Err(Error::Invalid(format!(
            "{}: has {} epoch(s) done already, and --epochs {} asks for no more: give --epochs above {} to \
             continue it",
            p.display(),
            point.epoch,
            cfg.epochs,
            point.epoch
        )));
    }
    log(&format!("resuming from {} with the model settings stored in it", p.display()));
    Ok((det, ms, point, meta))
}

/// The loss kinds the command line names.
pub fn loss_named(name: &str) -> Result<(LossConfig, ClassWeighting)> {
    Ok(match name {
        "focal" => (LossConfig::focal(), ClassWeighting::None),
        "wbce" => (LossConfig { kind: LossKind::Bce, ..LossConfig::focal() }, ClassWeighting::Auto),
        "bce" => (LossConfig { kind: LossKind::Bce, ..LossConfig::focal() }, ClassWeighting::None),
        other => return Err(Error::Invalid(format!("--loss '{other}': choose focal, wbce or bce"))),
    })
}

/// Where a run stands at the end of an epoch: what `--resume` needs besides the weights and moments.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ResumePoint {
    pub epoch: usize,
    pub t: u64,
    /// The sampler's and the augmentations' generator state.
    pub rng: u64,
    pub best_auc: f64,
}

impl ResumePoint {
    fn to_meta(self, val_auc: f64) -> checkpoint::Meta {
        [
            ("dfgpu.epoch", self.epoch.to_string()),
            ("dfgpu.step", self.t.to_string()),
            ("dfgpu.rng", self.rng.to_string()),
            ("dfgpu.best_auc", format!("{}", self.best_auc)),
            ("dfgpu.val_auc", format!("{val_auc:.6}")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    fn from_meta(meta: &checkpoint::Meta, path: &Path) -> Result<Self> {
        let get = |k: &str| -> Result<&str> {
            meta.get(k).map(String::as_str).ok_or_else(|| {
                Error::Invalid(format!("{}: cannot resume from it: no '{k}' in its metadata", path.display()))
            })
        };
        let bad = |k: &str| Error::Invalid(format!("{}: cannot resume from it: '{k}' is not a number", path.display()));
        Ok(ResumePoint {
            epoch: get("dfgpu.epoch")?.parse().map_err(|_| bad("dfgpu.epoch"))?,
            t: get("dfgpu.step")?.parse().map_err(|_| bad("dfgpu.step"))?,
            rng: get("dfgpu.rng")?.parse().map_err(|_| bad("dfgpu.rng"))?,
            best_auc: get("dfgpu.best_auc")?.parse().map_err(|_| bad("dfgpu.best_auc"))?,
        })
    }
}
