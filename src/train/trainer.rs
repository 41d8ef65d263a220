//! The training loop: data in memory (decoded once, in parallel), batches by a natural or class-balanced
//! sampler with horizontal flips, the detector's forward and backward, per-tensor norms with clipping, AdamW
//! with warm-up and cosine decay, and validation metrics after every epoch. Without --data it trains on the
//! built-in synthetic set, generated once into a cache folder.

use crate::backend::cpu::real::Real as _;
use crate::backend::fft::{FreqStats, Magnitude};
use crate::backend::head::{Branches, Mode};
use crate::backend::loss::{ClassWeighting, LossConfig, LossKind};
use crate::backend::optim::{lr_at, AdamW, Norms, Optimizer, Sgd, StepArgs};
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
use std::str::FromStr;
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
    be.optimizer_step(
        &det.params,
        &mut ms.params,
        &ms.grads,
        &mut ms.m,
        &mut ms.v,
        &ms.mask,
        &norms,
        &cfg.optimizer,
        args,
    )?;
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
    let weights = cfg.weighting.weights(train.counts())?;
    let loss_cfg = LossConfig { weights, ..cfg.loss };
    let (det, mut ms, resumed) = match resumed {
        Some((det, ms, point, meta)) => (det, ms, Some((point, meta))),
        None => {
            let (det, ms) = new_model(be, cfg, log)?;
            (det, ms, None)
        }
    };
    let cfg = &bounded_batch(cfg, train.len(), log);
    check_memory(be, &det, cfg)?;
    dir.move_aside(log)?;
    if let Some(n) = fit_freq_stats(be, &det, &mut ms, train)? {
        log(&format!("frequency statistics gathered over {n} training images"));
    }
    let evidence = first_evidence(be, &det, &ms, cfg, train, weights, log)?;
    if cfg.grad_report > 0 {
        let grad_dir = cfg.out.join("grad");
        std::fs::create_dir_all(&grad_dir).map_err(|source| Error::Io { path: grad_dir.clone(), source })?;
    }
    let mut run = Run::new(be, cfg, (det, ms), loss_cfg, evidence, train.len());
    if let (Some((point, meta)), Some(ckpt)) = (&resumed, &cfg.resume) {
        run.resume(ckpt, point, meta, log)?;
    }
    let mut summary = Summary { epochs: Vec::new(), device: be.name() };
    for epoch in run.first_epoch..=cfg.epochs {
        summary.epochs.push(run.epoch(epoch, train, val, log)?);
    }
    log(&format!(
        "metrics of every epoch: {} and metrics.csv beside it; figures: curves.png, roc.png{}",
        cfg.out.join("metrics.jsonl").display(),
        if cfg.grad_report > 0 { ", grad/step-*.png" } else { "" }
    ));
    Ok(summary)
}

/// A new detector and its state, its spatial branch from timm weights when asked.
fn new_model(be: &dyn Backend, cfg: &TrainConfig, log: &mut dyn FnMut(&str)) -> Result<(Detector, ModelState)> {
    let det = Detector::new(cfg.model.clone())?;
    let mut ms = ModelState::new(be, &det, cfg.seed)?;
    if let Some(p) = &cfg.pretrained {
        crate::model::timm::load_into_detector(p, be, &det, &mut ms)?;
        log(&format!("spatial branch: timm weights from {}", p.display()));
    }
    Ok((det, ms))
}

/// The per-bin statistics that log-std magnitudes are standardized by, over every image of `set`, unless the
/// model has none to gather or has them already (a resumed run). Returns how many images they took.
pub(crate) fn fit_freq_stats(
    be: &dyn Backend,
    det: &Detector,
    ms: &mut ModelState,
    set: &Loaded,
) -> Result<Option<u64>> {
    if det.cfg.freq.fft.magnitude != Magnitude::LogStd || ms.freq_stats.is_some() {
        return Ok(None);
    }
    let mut st = FreqStats::new(be, det.cfg.freq.fft, 3, det.cfg.size, det.cfg.size)?;
    let idx: Vec<usize> = (0..set.len()).collect();
    for chunk in idx.chunks(64) {
        be.fft_stats_update(&be.upload(&set.batch(chunk, None)?.0)?, &mut st)?;
    }
    ms.freq_stats = Some(be.upload(&st.finish(be)?)?);
    Ok(Some(st.count))
}

/// The warning when one branch's features dwarf the other's at the fusion input. None with a branch switched off:
/// its features are zeros, there is no scale to compare.
pub(crate) fn branch_scale_warning(det: &Detector, spatial: (f64, f64), freq: (f64, f64)) -> Option<String> {
    (det.head.branches == Branches::Both).then(|| diagnostics::scale_warning(spatial, freq)).flatten()
}

/// What a divergence message cites from the start: the frequency branch's input range (logged here, on the
/// first batch), the class weights, the optimizer, the sampler and the class balance.
fn first_evidence(
    be: &dyn Backend,
    det: &Detector,
    ms: &ModelState,
    cfg: &TrainConfig,
    train: &Loaded,
    class_weights: [f32; 2],
    log: &mut dyn FnMut(&str),
) -> Result<Evidence> {
    let first = train.batch(&(0..train.len().min(cfg.batch)).collect::<Vec<_>>(), None)?.0;
    let (lo, hi) = freq_input_range(be, det, ms, &first, log)?;
    Ok(Evidence {
        branches: det.head.branches.name().into(),
        freq_magnitude: det.cfg.freq.fft.magnitude.name().into(),
        freq_feature_range: (lo, hi),
        class_weights,
        optimizer: cfg.optimizer.describe(),
        max_grad_norm: cfg.max_grad_norm,
        sampler: cfg.sampler.name().into(),
        fake_share: train.counts()[1] as f64 / train.len() as f64,
        ..Evidence::default()
    })
}

/// A run across its epochs: the model, where the schedule stands, what a divergence message cites and the log.
struct Run<'a> {
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
    /// Steps done.
    t: u64,
    best_auc: f64,
    first_epoch: usize,
    /// The learning-rate schedule: warm-up and total steps.
    warmup: u64,
    total: u64,
}

/// An epoch's progress through its batches.
struct EpochProgress {
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
    fn new(
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
            t: 0,
            best_auc: f64::NEG_INFINITY,
            first_epoch: 1,
            warmup: (cfg.warmup_epochs * steps_per_epoch as f32) as u64,
            total: (steps_per_epoch * cfg.epochs) as u64,
        }
    }

    /// Goes on from a checkpoint: its step, generator and best AUC, and the log of the epochs before it.
    fn resume(
        &mut self,
        ckpt: &Path,
        r: &ResumePoint,
        meta: &checkpoint::Meta,
        log: &mut dyn FnMut(&str),
    ) -> Result<()> {
        (self.t, self.best_auc, self.first_epoch, self.rng) = (r.t, r.best_auc, r.epoch + 1, Rng::new(r.rng));
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
    fn epoch(&mut self, epoch: usize, train: &Loaded, val: &Loaded, log: &mut dyn FnMut(&str)) -> Result<EpochResult> {
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
        let png = self.cfg.out.join("grad").join(format!("step-{t:06}.png"));
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
        let logits = predict_logits(be, &self.det, &mut self.ms, val, 64, Tiles::CENTRE)?;
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

    /// The epoch's files: best.safetensors when its AUC is the best so far, the logs, the figures, and
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
        let is_best = auc_now > self.best_auc;
        self.best_auc = self.best_auc.max(auc_now);
        let mut meta =
            ResumePoint { epoch, t: self.t, rng: self.rng.state(), best_auc: self.best_auc }.to_meta(auc_now);
        // The epoch's validation figures travel with the weights (the metrics.jsonl line).
        meta.insert("dfgpu.metrics".into(), EpochLine::new(r, false).json());
        meta.insert("dfgpu.optimizer".into(), cfg.optimizer.name().into());
        // Whether this epoch is the best so far: --resume restores best.safetensors from it if a kill lost it.
        meta.insert("dfgpu.best".into(), is_best.to_string());
        // last.safetensors comes last: it is what --resume starts from, so a kill before it redoes the epoch, which
        // writes the same files again, and a kill after it has lost nothing.
        if is_best {
            checkpoint::write_detector(&cfg.out.join("best.safetensors"), tensors, &self.det.cfg, &meta)?;
            log(&format!("best validation AUC so far: {}", cfg.out.join("best.safetensors").display()));
        }
        self.lines.push(EpochLine::new(r, true));
        // Both logs are rewritten whole each epoch, through a temporary file: a crash never leaves a torn log.
        rundir::write_atomic(&cfg.out.join("metrics.jsonl"), runlog::jsonl(&self.lines).as_bytes())?;
        rundir::write_atomic(&cfg.out.join("metrics.csv"), runlog::csv(&self.lines).as_bytes())?;
        figures::curves(&self.lines, &cfg.out.join("curves.png"))?;
        if epoch == cfg.epochs {
            let title = format!("ROC, EPOCH {epoch}: AUC {:.4}", r.report.auc.unwrap_or(f64::NAN));
            figures::roc_curve(scores, val_labels, &title, &cfg.out.join("roc.png"))?;
        }
        checkpoint::write_detector(&cfg.out.join("last.safetensors"), tensors, &self.det.cfg, &meta)?;
        Ok(())
    }
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

/// The losses the command line names: each sets the loss and its default class weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// Alpha 0.25 on fakes, gamma 2, unweighted.
    Focal,
    /// BCE weighted n_real / n_fake on fakes.
    Wbce,
    Bce,
}

impl Choice for Loss {
    const NAMES: &'static [(&'static str, Self)] = &[("focal", Loss::Focal), ("wbce", Loss::Wbce), ("bce", Loss::Bce)];
}

impl Loss {
    pub fn config(self) -> (LossConfig, ClassWeighting) {
        let bce = LossConfig { kind: LossKind::Bce, ..LossConfig::focal() };
        match self {
            Loss::Focal => (LossConfig::focal(), ClassWeighting::None),
            Loss::Wbce => (bce, ClassWeighting::Auto),
            Loss::Bce => (bce, ClassWeighting::None),
        }
    }
}

/// The optimizer as the command line names it; its settings come from their own flags (`with`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptimizerName {
    AdamW,
    Sgd,
}

impl Choice for OptimizerName {
    const NAMES: &'static [(&'static str, Self)] = &[("adamw", OptimizerName::AdamW), ("sgd", OptimizerName::Sgd)];
}

impl OptimizerName {
    /// The optimizer with its own default weight decay unless one is given; `momentum` is SGD's.
    pub fn with(self, momentum: f32, weight_decay: Option<f32>) -> Optimizer {
        match self {
            OptimizerName::AdamW => {
                let d = AdamW::default();
                Optimizer::AdamW(AdamW { weight_decay: weight_decay.unwrap_or(d.weight_decay), ..d })
            }
            OptimizerName::Sgd => {
                Optimizer::Sgd(Sgd { momentum, weight_decay: weight_decay.unwrap_or(Sgd::default().weight_decay) })
            }
        }
    }
}

/// `--class-weights`: none, auto, effective[:BETA], pos:W or W_REAL,W_FAKE. Parsed here, beside the training
/// settings, because backend/loss.rs (where ClassWeighting lives) carries no command-line grammar.
impl FromStr for ClassWeighting {
    type Err = Error;

    fn from_str(w: &str) -> Result<Self> {
        let num = |v: &str| v.trim().parse::<f32>().ok().filter(|x| x.is_finite() && *x >= 0.0);
        let parsed = match w {
            "none" => Some(ClassWeighting::None),
            "auto" => Some(ClassWeighting::Auto),
            "effective" => Some(ClassWeighting::Effective { beta: 0.999 }),
            _ => match (w.split_once(':'), w.split_once(',')) {
                (Some(("effective", b)), _) => b
                    .parse::<f64>()
                    .ok()
                    .filter(|b| (0.0..1.0).contains(b))
                    .map(|beta| ClassWeighting::Effective { beta }),
                (Some(("pos", v)), _) => num(v).map(ClassWeighting::PosWeight),
                (None, Some((a, b))) => match (num(a), num(b)) {
                    (Some(a), Some(b)) if a + b > 0.0 => Some(ClassWeighting::PerClass([a, b])),
                    _ => None,
                },
                _ => None,
            },
        };
        parsed.ok_or_else(|| {
            Error::Invalid(
                "choose none, auto, effective[:BETA], pos:W or W_REAL,W_FAKE (weights >= 0, not both 0, BETA in [0, 1))"
                    .into(),
            )
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_weights_parse() {
        let ok = |s: &str| s.parse::<ClassWeighting>().unwrap();
        assert_eq!(ok("none"), ClassWeighting::None);
        assert_eq!(ok("auto"), ClassWeighting::Auto);
        assert_eq!(ok("effective"), ClassWeighting::Effective { beta: 0.999 });
        assert_eq!(ok("effective:0.9"), ClassWeighting::Effective { beta: 0.9 });
        assert_eq!(ok("pos:2.5"), ClassWeighting::PosWeight(2.5));
        assert_eq!(ok("1, 0.25"), ClassWeighting::PerClass([1.0, 0.25]));
        assert_eq!(ok("0,3"), ClassWeighting::PerClass([0.0, 3.0]));
    }

    #[test]
    fn bad_class_weights_list_the_grammar() {
        for bad in
            ["", "Auto", "pos:x", "pos:-1", "pos:inf", "0,0", "1,-2", "1,2,3", "effective:1", "effective:-0.1", "neg:2"]
        {
            let e = bad.parse::<ClassWeighting>().unwrap_err().to_string();
            assert!(e.starts_with("choose none, auto, effective[:BETA], pos:W or W_REAL,W_FAKE"), "{bad}: {e}");
        }
    }
}
