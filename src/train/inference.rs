//! Inference: scores for a loaded set (its centre crops or a grid of tiles), `dfgpu eval` and `dfgpu predict`,
//! and the compute pool the training step runs on too.

use crate::backend::cpu::real::Real as _;
use crate::backend::head::Mode;
use crate::backend::{Backend, ChannelNorm};
use crate::data::folder::describe;
use crate::data::input::{Combine, Tiles};
use crate::data::loaded::{Loaded, Pixels};
use crate::data::open::open_data;
use crate::error::{Error, Result};
use crate::model::checkpoint;
use crate::model::detector::Detector;
use crate::model::layers::Fwd;
use crate::model::state::ModelState;
use crate::tensor::Tensor;
use crate::train::metrics::{auc, Report};
use crate::GIB;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// P(fake) for every image of `data` (its centre crop), in inference mode.
pub fn predict(be: &dyn Backend, det: &Detector, ms: &mut ModelState, data: &Loaded, batch: usize) -> Result<Vec<f32>> {
    Ok(predict_scores(be, det, ms, data, batch, Tiles::CENTRE, false)?.logits.iter().map(|&z| z.sigmoid()).collect())
}

/// What a model says of each image: its logit, and with `peak` (and a model that carries one) its spectral peak
/// score (model/peak.rs); an image's tiles' scores combined alike.
pub struct Scores {
    pub logits: Vec<f32>,
    pub peaks: Option<Vec<f64>>,
}

impl Scores {
    /// Each image's scores from those of its `per` tiles, consecutive, combined by `combine`.
    fn combined(self, per: usize, combine: Combine) -> Scores {
        let of = |v: &[f32]| v.chunks(per).map(|t| combine.apply(t)).collect();
        let peaks = self.peaks.map(|p| p.chunks(per).map(|t| combine.apply(t)).collect());
        Scores { logits: of(&self.logits), peaks }
    }

    /// Each image's score of the detector and the peak test joined, when the model carries the join.
    pub fn joined(&self, ms: &ModelState) -> Option<Vec<f64>> {
        let (join, peaks) = (ms.join.as_ref()?, self.peaks.as_ref()?);
        Some(self.logits.iter().zip(peaks).map(|(&z, &p)| join.score(z as f64, p)).collect())
    }
}

/// The logit of every image of `data`, in inference mode: its `tiles`' logits combined; `batch` crops at a time
/// (at least one image's). With `peak` (and a model that has a peak test), the peak scores too.
pub fn predict_scores(
    be: &dyn Backend,
    det: &Detector,
    ms: &mut ModelState,
    data: &Loaded,
    batch: usize,
    tiles: Tiles,
    peak: bool,
) -> Result<Scores> {
    let per = tiles.k * tiles.k;
    let peak = if peak { ms.peak.clone() } else { None };
    let mut logits = Vec::with_capacity(data.len() * per);
    let mut peaks = Vec::with_capacity(if peak.is_some() { data.len() * per } else { 0 });
    let idx: Vec<usize> = (0..data.len()).collect();
    for chunk in idx.chunks((batch / per).max(1)) {
        let x = be.upload(&data.tiles(chunk, tiles.k)?)?;
        logits.extend(be.download(&infer(be, det, ms, &x)?)?.host::<f32>()?);
        if let Some(p) = &peak {
            peaks.extend(p.scores(be, &x)?);
        }
    }
    Ok(Scores { logits, peaks: peak.map(|_| peaks) }.combined(per, tiles.combine))
}

/// The logits of one batch of u8 NHWC images (on the backend), in inference mode, left on the backend.
pub fn infer(be: &dyn Backend, det: &Detector, ms: &mut ModelState, x: &Tensor) -> Result<Tensor> {
    on_compute_threads(be, || {
        let pre = be.preprocess(x, &ChannelNorm::imagenet(), true)?;
        let raw = pre.raw.expect("asked for");
        let mut f = Fwd { be, params: &ms.params, state: &mut ms.state, mode: Mode::Eval };
        Ok(det.forward(&mut f, Arc::new(pre.normalized), &raw, ms.freq_stats.as_ref())?.0)
    })
}

pub(crate) fn group_aucs(scores: &[f32], data: &Loaded) -> Vec<(String, f64)> {
    let mut groups: Vec<String> = data.groups.iter().flatten().cloned().collect();
    groups.sort();
    groups.dedup();
    groups
        .into_iter()
        .filter_map(|g| {
            let pick: Vec<usize> =
                (0..data.len()).filter(|&i| data.labels[i] == 0 || data.groups[i].as_deref() == Some(&g)).collect();
            let s: Vec<f32> = pick.iter().map(|&i| scores[i]).collect();
            let y: Vec<u8> = pick.iter().map(|&i| data.labels[i]).collect();
            auc(&s, &y).map(|a| (g, a))
        })
        .collect()
}

/// Runs f on the CPU backend's compute threads (rayon's pool; on a GPU, here): each op then starts its parallel
/// work from a pool thread instead of handing it over from this one, a wake-up and a wait per op (10 to 20 us:
/// an eighth of the tiny model's inference on 2 cores).
pub(crate) fn on_compute_threads<R: Send>(be: &dyn Backend, f: impl FnOnce() -> R + Send) -> R {
    match be.is_cuda() {
        true => f(),
        false => rayon::scope(|_| f()),
    }
}

/// An image's tiles are scored in one forward: a grid whose forward needs more memory than is free is refused
/// before any image is decoded, saying what it takes.
fn check_tiles(be: &dyn Backend, det: &Detector, ckpt: &Path, tiles: Tiles) -> Result<()> {
    let n = tiles.k * tiles.k;
    let need = det.forward_bytes(n);
    match be.free_memory() {
        Some(free) if need > free => Err(Error::Invalid(format!(
            "--tiles {n}: an image's {n} crops of {s}x{s} (the model of {}) take at least {:.2} GiB in one forward, \
             more than the {:.2} GiB free on {}: choose fewer tiles",
            ckpt.display(),
            need as f64 / GIB,
            free as f64 / GIB,
            be.name(),
            s = det.cfg.size,
        ))),
        _ => Ok(()),
    }
}

/// What `dfgpu eval` finds: the detector's metrics and each fake group's AUC; with the checkpoint's spectral peak
/// test, its AUC, and the AUCs of the detector joined to it (overall and per group), None where a figure has no
/// meaning (one class only, or a checkpoint without the test or the join).
pub struct Evaluation {
    pub report: Report,
    pub group_auc: Vec<(String, f64)>,
    pub peak_auc: Option<f64>,
    pub joined_auc: Option<f64>,
    pub joined_group_auc: Vec<(String, f64)>,
}

/// `dfgpu eval`: a checkpoint's metrics on a dataset, and each fake group's AUC; each image scored by `tiles`
/// (a count and how to combine them: `--tiles`, `--tile-combine`).
pub fn evaluate(
    be: &dyn Backend,
    ckpt: &Path,
    data: &Path,
    tiles: (usize, Combine),
    log: &mut dyn FnMut(&str),
) -> Result<Evaluation> {
    let (det, mut ms, meta) = checkpoint::load(ckpt, be)?;
    let tiles = Tiles::new(tiles.0, tiles.1, det.cfg.input)?;
    check_tiles(be, &det, ckpt, tiles)?;
    let loaded = open_data(data, det.cfg.size, det.cfg.input, log)?;
    log(&format!(
        "checkpoint {} (epoch {}), data {} ({})",
        ckpt.display(),
        meta.get("dfgpu.epoch").map_or("?", String::as_str),
        data.display(),
        describe(loaded.counts())
    ));
    for s in &loaded.skipped {
        log(&format!("skipped: {s}"));
    }
    let scores = predict_scores(be, &det, &mut ms, &loaded, 64, tiles, true)?;
    let p: Vec<f32> = scores.logits.iter().map(|&z| z.sigmoid()).collect();
    let narrow = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let joined = scores.joined(&ms).map(|j| narrow(&j));
    Ok(Evaluation {
        report: Report::new(&p, &loaded.labels),
        group_auc: group_aucs(&p, &loaded),
        peak_auc: scores.peaks.and_then(|s| auc(&narrow(&s), &loaded.labels)),
        joined_auc: joined.as_ref().and_then(|j| auc(j, &loaded.labels)),
        joined_group_auc: joined.map_or(Vec::new(), |j| group_aucs(&j, &loaded)),
    })
}

/// What `dfgpu predict` says of an image: P(fake), and with the checkpoint's spectral peak test the image's peak
/// score (its largest z over the bins, against the training reals) and, with the join too, its score joined to the
/// detector's (a z-value over the validation reals, model/peak.rs). With tiles, each is combined over them first.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prediction {
    pub p_fake: f32,
    pub peak_z: Option<f64>,
    pub joined_z: Option<f64>,
}

/// `dfgpu predict`: P(fake) per image, for files and folders (every image under a folder, in path order), in
/// chunks so that memory stays bounded whatever the count; each image scored by `tiles` over the whole of it.
/// `emit` gets each image's path and its prediction, or why it could not be read (the others go on). Returns how
/// many could not be read.
pub fn predict_files(
    be: &dyn Backend,
    ckpt: &Path,
    inputs: &[PathBuf],
    tiles: (usize, Combine),
    emit: &mut dyn FnMut(&Path, std::result::Result<Prediction, String>),
) -> Result<usize> {
    let (det, mut ms, _) = checkpoint::load(ckpt, be)?;
    let tiles = Tiles::new(tiles.0, tiles.1, det.cfg.input)?;
    check_tiles(be, &det, ckpt, tiles)?;
    let mut files = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let (under, skipped) = crate::data::folder::images_under(p)?;
            if under.is_empty() {
                return Err(Error::Invalid(format!("{}: no images (jpg, jpeg, png, webp, bmp) under it", p.display())));
            }
            files.extend(under);
            // A link that loops back into the folder is not followed: reported as an input that was skipped.
            skipped.into_iter().for_each(|s| emit(p, Err(s)));
        } else {
            files.push(p.clone());
        }
    }
    let (size, input, per) = (det.cfg.size, det.cfg.input, tiles.k * tiles.k);
    // Each file's crops are images of their own here, combined per file below.
    let mut failed = 0;
    for decoded in crate::data::input::decoded_chunks(&files, 256, |f| tiles.of_file(f, size, input)) {
        let mut ok = Vec::new();
        let mut pixels = Vec::new();
        for (f, r) in decoded {
            match r {
                Ok(px) => {
                    pixels.extend(px);
                    ok.push(f);
                }
                Err(e) => {
                    failed += 1;
                    emit(f, Err(e.to_string()));
                }
            }
        }
        let n = ok.len() * per;
        let crops = Loaded::new(size, Pixels::Owned(pixels), vec![0; n], vec![None; n]);
        let scores = predict_scores(be, &det, &mut ms, &crops, 64, Tiles::CENTRE, true)?.combined(per, tiles.combine);
        let joined = scores.joined(&ms);
        for (k, f) in ok.into_iter().enumerate() {
            let (peak_z, joined_z) = (scores.peaks.as_ref().map(|p| p[k]), joined.as_ref().map(|j| j[k]));
            let p_fake = scores.logits[k].sigmoid();
            // A score that is not a number (weights that overflow on this image) is no answer: reported, never NaN.
            if p_fake.is_nan() {
                failed += 1;
                emit(f, Err(format!("{}: the model's P(fake) is not a number (its logit overflows)", f.display())));
            } else {
                emit(f, Ok(Prediction { p_fake, peak_z, joined_z }));
            }
        }
    }
    Ok(failed)
}
