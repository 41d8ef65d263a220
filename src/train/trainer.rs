//! The training loop: data in memory (decoded once, in parallel), batches by a natural or class-balanced
//! sampler with horizontal flips, the detector's forward and backward, per-tensor norms with clipping, AdamW
//! with warm-up and cosine decay, and validation metrics after every epoch. Without --data it trains on the
//! built-in synthetic set, generated once into a cache folder.

use crate::backend::fft::{FftStats, Magnitude, STD_FLOOR};
use crate::backend::head::{Branches, Mode};
use crate::backend::loss::LossConfig;
use crate::backend::optim::{Norms, StepArgs};
use crate::backend::{Backend, ChannelNorm};
use crate::data::folder::describe;
use crate::data::loaded::Loaded;
use crate::data::open::{builtin_data, open_data};
use crate::error::{Choice, Error, Result};
use crate::model::checkpoint;
use crate::model::detector::Detector;
use crate::model::layers::{Bwd, Fwd};
use crate::model::state::ModelState;
use crate::rng::Rng;
use crate::stats::Moments;
use crate::tensor::Tensor;
use crate::train::baseline::{fit_peak, PEAK_MIN_REALS};
use crate::train::config::MODEL_FLAGS;
use crate::train::config::{Sampler, TrainConfig};
use crate::train::diagnostics::{self, Evidence, GradFlag, GradRow};
use crate::train::epoch::Run;
use crate::train::inference::on_compute_threads;
use crate::train::metrics::Report;
use crate::train::rundir::RunDir;
use crate::train::spectrum::{each_profile, in_batches};
use crate::GIB;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

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
pub(crate) const PREFETCH: usize = 3;

/// Batches of indices for one epoch.
pub(crate) fn epoch_batches(labels: &[u8], batch: usize, sampler: Sampler, rng: &mut Rng) -> Vec<Vec<usize>> {
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
    let (logits, cache) = det.forward(&mut f, Arc::new(pre.normalized), &raw, ms.freq_stats.as_ref())?;
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
    // A resumed model has its statistics from its first run.
    if resumed.is_none() {
        if let Some(n) = fit_freq_stats(be, &det, &mut ms, train)? {
            log(&format!("frequency statistics gathered over {n} training images"));
        }
    }
    // So has its peak test; a checkpoint of an earlier dfgpu has none, and gets one fitted here.
    if ms.peak.is_none() {
        match train.counts()[0] {
            n if n >= PEAK_MIN_REALS => {
                ms.peak = Some(fit_peak(be, train)?);
                log(&format!("spectral peak test fitted on {n} training reals"));
            }
            n => log(&format!("no spectral peak test: {n} training real(s), it needs {PEAK_MIN_REALS}")),
        }
    }
    let evidence = first_evidence(be, &det, &ms, cfg, train, weights, log)?;
    dir.clear_earlier(cfg.grad_report > 0, log)?;
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

/// The statistics a new model standardizes its frequency inputs by, over every image of `set`: log-std's per-bin
/// statistics, and `--freq-profile`'s per-ring mean and standard deviation (floored at STD_FLOOR, as log-std's).
/// Returns how many images they took, None if the model needs none.
pub(crate) fn fit_freq_stats(
    be: &dyn Backend,
    det: &Detector,
    ms: &mut ModelState,
    set: &Loaded,
) -> Result<Option<u64>> {
    let fft = &det.cfg.freq.fft;
    let rings = det.freq.profile_stats();
    if fft.magnitude != Magnitude::LogStd && rings.is_none() {
        return Ok(None);
    }
    if fft.magnitude == Magnitude::LogStd {
        let mut st = FftStats::new(be, *fft, 3, det.cfg.size, det.cfg.size)?;
        in_batches(be, set, |_, images| be.fft_stats_update(&images, &mut st))?;
        ms.freq_stats = Some(be.upload(&st.finish(be)?)?);
    }
    if let Some(range) = rings {
        let mut m = Moments::new(range.len() / 2);
        each_profile(be, set, |_, row| m.add(row.iter().map(|&v| v as f64)))?;
        let mut state = be.download(&ms.state)?;
        let std = m.std().into_iter().map(|s| s.max(STD_FLOOR as f64));
        let values = m.mean.iter().copied().chain(std).map(|v| v as f32);
        state.host_mut::<f32>()?[range].iter_mut().zip(values).for_each(|(s, v)| *s = v);
        ms.state = be.upload(&state)?;
    }
    Ok(Some(set.len() as u64))
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

/// Where a run stands at the end of an epoch: what `--resume` needs besides the weights and moments.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ResumePoint {
    pub epoch: usize,
    pub t: u64,
    /// The sampler's and the augmentations' generator state.
    pub rng: u64,
    pub best_auc: f64,
    /// The validation loss of the best epoch: of two epochs with the same AUC (1.000 is common on easy data), the
    /// one with the lower loss is kept.
    pub best_loss: f64,
}

impl ResumePoint {
    pub(crate) fn to_meta(self, val_auc: f64) -> checkpoint::Meta {
        [
            ("dfgpu.epoch", self.epoch.to_string()),
            ("dfgpu.step", self.t.to_string()),
            ("dfgpu.rng", self.rng.to_string()),
            ("dfgpu.best_auc", format!("{}", self.best_auc)),
            ("dfgpu.best_loss", format!("{}", self.best_loss)),
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
            // Checkpoints from before the tie-break have none: no later tie replaces their best, as before.
            best_loss: match meta.get("dfgpu.best_loss") {
                Some(v) => v.parse().map_err(|_| bad("dfgpu.best_loss"))?,
                None => f64::NEG_INFINITY,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::ResumePoint;
    use std::path::Path;

    #[test]
    fn a_resume_point_reads_back_and_one_from_before_the_tie_break_keeps_its_best() {
        let p = ResumePoint { epoch: 3, t: 71, rng: u64::MAX, best_auc: 1.0, best_loss: 0.012_345_678_9 };
        let mut meta = p.to_meta(0.5);
        assert_eq!(ResumePoint::from_meta(&meta, Path::new("x")).unwrap(), p, "{meta:?}");
        meta.remove("dfgpu.best_loss");
        let old = ResumePoint::from_meta(&meta, Path::new("x")).unwrap();
        assert_eq!(old.best_loss, f64::NEG_INFINITY);
        meta.insert("dfgpu.best_loss".into(), "low".into());
        let e = ResumePoint::from_meta(&meta, Path::new("run/last.safetensors")).unwrap_err().to_string();
        assert!(e.contains("run/last.safetensors") && e.contains("'dfgpu.best_loss' is not a number"), "{e}");
    }

    /// `--freq-profile`'s statistics are the mean and population standard deviation of each ring over the whole
    /// training set (more than one batch of the pass), so that the profiles the model sees are standardized.
    #[test]
    fn the_profile_statistics_standardize_the_training_set() {
        use super::fit_freq_stats;
        use crate::backend::cpu::CpuBackend;
        use crate::data::loaded::{Loaded, Pixels};
        use crate::model::detector::{Detector, DetectorConfig};
        use crate::model::freq::ring_profile;
        use crate::model::state::ModelState;
        use crate::tensor::{DType, Slice};

        let be = CpuBackend::new(Default::default());
        let mut cfg = DetectorConfig { size: 32, ..DetectorConfig::new("tiny").unwrap() };
        (cfg.freq.widths, cfg.freq.profile) = (vec![8], true);
        let det = Detector::new(cfg).unwrap();
        let mut ms = ModelState::new(&be, &det, 1).unwrap();
        let n = 70;
        let mut rng = crate::rng::Rng::new(2);
        // Images of varying contrast, so that every ring varies.
        let pixels = (0..n)
            .flat_map(|_| {
                let c = 32 + rng.below(224);
                (0..32 * 32 * 3).map(|_| rng.below(c) as u8).collect::<Vec<u8>>()
            })
            .collect();
        let set = Loaded::new(32, Pixels::Owned(pixels), vec![0; n], vec![None; n]);
        assert_eq!(fit_freq_stats(&be, &det, &mut ms, &set).unwrap(), Some(n as u64));
        let range = det.freq.profile_stats().unwrap();
        let images = set.batch(&(0..n).collect::<Vec<_>>(), None).unwrap().0;
        let raw = ring_profile(&be, &images, None, DType::F32).unwrap();
        let k = range.len() / 2;
        let rows: Vec<&[f32]> = raw.host::<f32>().unwrap().chunks(k).collect();
        let state = ms.state.host::<f32>().unwrap();
        for j in 0..k {
            let mean = rows.iter().map(|r| r[j] as f64).sum::<f64>() / n as f64;
            let std = (rows.iter().map(|r| (r[j] as f64 - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
            approx::assert_relative_eq!(state[range.start + j] as f64, mean, max_relative = 1e-6, epsilon = 1e-6);
            approx::assert_relative_eq!(state[range.start + k + j] as f64, std, max_relative = 1e-5);
        }
        let stats = Slice { buf: &ms.state, range };
        let z = ring_profile(&be, &images, Some(&stats), DType::F32).unwrap();
        let z: Vec<&[f32]> = z.host::<f32>().unwrap().chunks(k).collect();
        for j in 0..k {
            let mean = z.iter().map(|r| r[j] as f64).sum::<f64>() / n as f64;
            let var = z.iter().map(|r| (r[j] as f64 - mean).powi(2)).sum::<f64>() / n as f64;
            assert!(mean.abs() < 1e-4 && (var - 1.0).abs() < 1e-3, "ring {j}: mean {mean}, variance {var}");
        }
    }
}
