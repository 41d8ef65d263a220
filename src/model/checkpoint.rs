//! Checkpoints in the safetensors format, so that PyTorch users can open them; the `safetensors` crate lays
//! the files out and checks them (offsets within the file, no overlaps, a dtype for each tensor). dfgpu stores
//! f32 tensors under the model's parameter and state names, the frequency statistics as `freq.stats`, the spectral
//! peak test as `peak.mean` and `peak.inv_std` (model/peak.rs), and the configuration, the epoch, the metrics and
//! the peak test's join as string metadata; it reads F32, F16 and BF16 tensors (a timm
//! export may be in half precision) as f32. Written to a temporary file and renamed: a crash never leaves a
//! broken checkpoint.

use crate::backend::fft::FftConfig;
use crate::backend::Backend;
use crate::data::input::Input;
use crate::error::{Choice, Error, Result};
use crate::files::write_atomic;
use crate::model::detector::{Detector, DetectorConfig};
use crate::model::peak::{Join, PeakTest, JOIN_KEY};
use crate::model::state::ModelState;
use crate::params::ParamLayout;
use crate::tensor::{Layout, Tensor};
use half::{bf16, f16};
use safetensors::tensor::{Metadata, TensorView};
use safetensors::{Dtype, SafeTensorError, SafeTensors};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Clone, Debug, PartialEq)]
pub struct Named {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

pub type Meta = BTreeMap<String, String>;

/// The format's first field, the header's length (a little-endian u64).
const LEN: usize = 8;

/// Writes f32 tensors and metadata as a safetensors file, atomically.
pub fn write(path: &Path, tensors: &[Named], meta: &Meta) -> Result<()> {
    let mut views = Vec::with_capacity(tensors.len());
    for t in tensors {
        let view = TensorView::new(Dtype::F32, t.shape.clone(), bytemuck::cast_slice(&t.data))
            .map_err(|e| Error::Shape(format!("{}: tensor '{}': {e}", path.display(), t.name)))?;
        views.push((t.name.as_str(), view));
    }
    let meta = meta.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let cannot =
        |e: SafeTensorError| Error::Invalid(format!("{}: cannot write a safetensors file: {e}", path.display()));
    let mut bytes = safetensors::serialize(views, Some(meta)).map_err(cannot)?;
    // The crate writes the metadata in a HashMap's order, which changes from run to run
    // (huggingface/safetensors#584): the header again with its keys sorted (the same JSON, so the same length),
    // so that a checkpoint is the same bytes every time (--resume's byte-for-byte guarantee).
    let (n, header) = SafeTensors::read_metadata(&bytes).map_err(cannot)?;
    let sorted = serde_json::to_vec(&serde_json::to_value(&header).map_err(|e| cannot(e.into()))?)
        .expect("a JSON value serializes");
    bytes[LEN..LEN + n].get_mut(..sorted.len()).expect("the sorted header is as long").copy_from_slice(&sorted);
    write_atomic(path, &bytes)
}

/// Reads a safetensors file as f32 tensors. Every problem names the file.
pub fn read(path: &Path) -> Result<(Vec<Named>, Meta)> {
    read_some(path, |_| true)
}

/// As `read`, keeping only the tensors that `keep` names (the others may have any dtype). In file order.
pub fn read_some(path: &Path, keep: impl Fn(&str) -> bool) -> Result<(Vec<Named>, Meta)> {
    let bytes = std::fs::read(path).map_err(Error::io(path))?;
    let bad =
        |e: SafeTensorError| Error::corrupt(path, format!("not a readable safetensors file: {}", why(&e, &bytes)));
    // The header (metadata, file order), then the views into the data: both check the whole file.
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(bad)?;
    let file = SafeTensors::deserialize(&bytes).map_err(bad)?;
    let meta = header.metadata().iter().flatten().map(|(k, v)| (k.clone(), v.clone())).collect();
    let mut tensors = Vec::new();
    for name in header.offset_keys().into_iter().filter(|n| keep(n)) {
        let t = file.tensor(&name).map_err(bad)?;
        let data = match t.dtype() {
            Dtype::F32 => bytemuck::pod_collect_to_vec(t.data()),
            Dtype::F16 => bytemuck::pod_collect_to_vec::<u8, f16>(t.data()).into_iter().map(f32::from).collect(),
            Dtype::BF16 => bytemuck::pod_collect_to_vec::<u8, bf16>(t.data()).into_iter().map(f32::from).collect(),
            d => {
                return Err(Error::Invalid(format!(
                    "{}: tensor '{name}' is {d}; dfgpu reads F32, F16 and BF16 (export in float32)",
                    path.display()
                )))
            }
        };
        tensors.push(Named { name, shape: t.shape().to_vec(), data });
    }
    Ok((tensors, meta))
}

/// What is wrong with a file the crate refused, with the numbers its messages leave out.
fn why(e: &SafeTensorError, bytes: &[u8]) -> String {
    // The header's length, as the file gives it (the errors that use it come after the file's first 8 bytes).
    let n = || bytes.get(..LEN).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()));
    match e {
        SafeTensorError::HeaderTooSmall => "shorter than 8 bytes".into(),
        SafeTensorError::InvalidHeaderLength => format!("header of {} bytes in a {}-byte file", n(), bytes.len()),
        SafeTensorError::HeaderTooLarge => format!("header of {} bytes, over the format's 100,000,000", n()),
        SafeTensorError::InvalidHeader(_) => "header is not UTF-8".into(),
        SafeTensorError::InvalidHeaderDeserialization(e) => format!("header: {e}"),
        SafeTensorError::InvalidOffset(name) => format!(
            "tensor '{name}': its data does not start where the tensor before it ends (tensors that overlap or \
             leave a gap, or offsets that end before they start)"
        ),
        SafeTensorError::TensorInvalidInfo => "a tensor's data offsets do not hold its shape and dtype".into(),
        SafeTensorError::ValidationOverflow => "a tensor's shape is too large (its byte count overflows)".into(),
        SafeTensorError::MetadataIncompleteBuffer => {
            // The header was read: its length fits the file, and it parses (again here, for the tensors' end).
            let n = n() as usize;
            let have = bytes.len() - LEN - n;
            let end = serde_json::from_slice::<Metadata>(&bytes[LEN..LEN + n]).map_or(0, |m| m.data_len());
            if end > have {
                format!(
                    "the tensors' data ends {end} bytes after the header, past the end of the file ({have} bytes \
                     after it): cut short?"
                )
            } else {
                format!("{} bytes after the last tensor's data", have - end)
            }
        }
        e => e.to_string(),
    }
}

/// The configuration as metadata strings.
pub fn config_meta(cfg: &DetectorConfig) -> Meta {
    let f = &cfg.freq;
    let h = &cfg.head;
    let widths: Vec<String> = f.widths.iter().map(|w| w.to_string()).collect();
    [
        ("dfgpu.format", "1".to_string()),
        ("dfgpu.backbone", cfg.backbone.name.clone()),
        ("dfgpu.size", cfg.size.to_string()),
        ("dfgpu.input", cfg.input.name().into()),
        ("dfgpu.freq.widths", widths.join(",")),
        ("dfgpu.freq.norm", f.batch_norm.to_string()),
        ("dfgpu.freq.profile", f.profile.to_string()),
        ("dfgpu.fft.layout", f.fft.layout.name().into()),
        ("dfgpu.fft.magnitude", f.fft.magnitude.name().into()),
        ("dfgpu.fft.phase", f.fft.phase.name().into()),
        ("dfgpu.fft.grayscale", f.fft.grayscale.to_string()),
        ("dfgpu.head.hidden", h.hidden.to_string()),
        ("dfgpu.head.norm", h.layer_norm.to_string()),
        ("dfgpu.head.act", h.act.name().into()),
        ("dfgpu.head.dropout", h.dropout.to_string()),
        ("dfgpu.head.gated", h.gated.to_string()),
        ("dfgpu.head.branches", h.branches.name().into()),
        ("dfgpu.head.branch_dropout", h.branch_dropout.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn not_dfgpu(path: &Path, k: &str) -> Error {
    Error::corrupt(path, format!("not a dfgpu checkpoint (no '{k}' in its metadata)"))
}

fn not_understood(path: &Path, k: &str, v: &str) -> Error {
    Error::corrupt(path, format!("metadata '{k}' = '{v}' is not understood"))
}

/// A named setting from metadata; the error names the file, the key and the value.
fn pick<T: Choice>(meta: &Meta, path: &Path, k: &str) -> Result<T> {
    let v = meta.get(k).ok_or_else(|| not_dfgpu(path, k))?;
    T::parse(v, k).map_err(|_| not_understood(path, k, v))
}

/// The configuration back from metadata; names the key that is missing or unreadable.
pub fn config_from_meta(meta: &Meta, path: &Path) -> Result<DetectorConfig> {
    let get = |k: &str| meta.get(k).map(String::as_str).ok_or_else(|| not_dfgpu(path, k));
    let bad = |k: &str, v: &str| not_understood(path, k, v);
    let num = |k: &str| -> Result<f64> {
        let v = get(k)?;
        v.parse().map_err(|_| bad(k, v))
    };
    let flag = |k: &str| -> Result<bool> {
        let v = get(k)?;
        v.parse().map_err(|_| bad(k, v))
    };
    let backbone = get("dfgpu.backbone")?;
    let mut cfg =
        DetectorConfig::new(backbone).map_err(|e| Error::corrupt(path, format!("metadata 'dfgpu.backbone': {e}")))?;
    cfg.size = num("dfgpu.size")? as usize;
    // Checkpoints from before --input were all trained on resized images.
    cfg.input = if meta.contains_key("dfgpu.input") { pick(meta, path, "dfgpu.input")? } else { Input::Resize };
    cfg.freq.widths = get("dfgpu.freq.widths")?
        .split(',')
        .map(|w| w.parse().map_err(|_| bad("dfgpu.freq.widths", w)))
        .collect::<Result<_>>()?;
    cfg.freq.batch_norm = flag("dfgpu.freq.norm")?;
    // Checkpoints from before --freq-profile have none.
    cfg.freq.profile = meta.contains_key("dfgpu.freq.profile") && flag("dfgpu.freq.profile")?;
    cfg.freq.fft = FftConfig {
        layout: pick(meta, path, "dfgpu.fft.layout")?,
        magnitude: pick(meta, path, "dfgpu.fft.magnitude")?,
        phase: pick(meta, path, "dfgpu.fft.phase")?,
        grayscale: flag("dfgpu.fft.grayscale")?,
    };
    let h = &mut cfg.head;
    h.hidden = num("dfgpu.head.hidden")? as usize;
    h.layer_norm = flag("dfgpu.head.norm")?;
    h.act = pick(meta, path, "dfgpu.head.act")?;
    h.dropout = num("dfgpu.head.dropout")? as f32;
    h.gated = flag("dfgpu.head.gated")?;
    h.branches = pick(meta, path, "dfgpu.head.branches")?;
    h.branch_dropout = num("dfgpu.head.branch_dropout")? as f32;
    Ok(cfg)
}

fn named_from(layout: &ParamLayout, values: &[f32]) -> Vec<Named> {
    layout
        .entries()
        .iter()
        .map(|e| Named { name: e.name.clone(), shape: e.shape.clone(), data: values[e.range()].to_vec() })
        .collect()
}

/// A detector's tensors as a checkpoint holds them: parameters, running statistics, frequency statistics, the
/// spectral peak test and the optimizer's two buffers.
pub fn tensors(be: &dyn Backend, det: &Detector, ms: &ModelState) -> Result<Vec<Named>> {
    let p = be.download(&ms.params)?;
    let s = be.download(&ms.state)?;
    let mut tensors = named_from(&det.params, p.host::<f32>()?);
    tensors.extend(named_from(&det.state, s.host::<f32>()?));
    if let Some(fs) = &ms.freq_stats {
        let h = be.download(fs)?;
        tensors.push(Named { name: "freq.stats".into(), shape: h.shape().to_vec(), data: h.host::<f32>()?.to_vec() });
    }
    tensors.extend(ms.peak.iter().flat_map(PeakTest::tensors));
    // AdamW's moments, flat in the parameters' layout, for --resume.
    for (name, t) in [("optim.m", &ms.m), ("optim.v", &ms.v)] {
        let h = be.download(t)?;
        tensors.push(Named { name: name.into(), shape: vec![h.numel()], data: h.host::<f32>()?.to_vec() });
    }
    Ok(tensors)
}

/// The first value that is not finite (NaN or infinite): its tensor's name, its index and the value.
pub fn first_non_finite(tensors: &[Named]) -> Option<(&str, usize, f32)> {
    tensors.iter().find_map(|t| t.data.iter().position(|x| !x.is_finite()).map(|i| (t.name.as_str(), i, t.data[i])))
}

/// Writes a detector's tensors (from `tensors`) with its configuration and `extra` as metadata.
pub fn write_detector(path: &Path, tensors: &[Named], cfg: &DetectorConfig, extra: &Meta) -> Result<()> {
    let mut meta = config_meta(cfg);
    meta.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    write(path, tensors, &meta)
}

/// The metadata a model's state adds to its configuration's: the peak test's join, when it has one.
pub fn state_meta(ms: &ModelState) -> Meta {
    ms.join.iter().map(|j| (JOIN_KEY.to_string(), j.to_meta())).collect()
}

/// Saves a detector's parameters, running statistics, frequency statistics, peak test and configuration, plus
/// `extra`.
pub fn save(path: &Path, be: &dyn Backend, det: &Detector, ms: &ModelState, extra: &Meta) -> Result<()> {
    let mut meta = state_meta(ms);
    meta.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    write_detector(path, &tensors(be, det, ms)?, &det.cfg, &meta)
}

/// Fills `values` (a layout's flat buffer) from the tensors; the first missing or misshapen one is the error.
/// Only the entries whose names start with `prefix` are filled, from the tensor named without it.
pub(crate) fn fill(
    layout: &ParamLayout,
    prefix: &str,
    tensors: &BTreeMap<&str, &Named>,
    values: &mut [f32],
    path: &Path,
) -> Result<()> {
    for e in layout.entries() {
        let Some(name) = e.name.strip_prefix(prefix) else { continue };
        let t = tensors.get(name).ok_or_else(|| {
            Error::Invalid(format!(
                "{}: no tensor '{name}', which the model needs (a file of another model?)",
                path.display()
            ))
        })?;
        if t.shape != e.shape {
            return Err(Error::Invalid(format!(
                "{}: tensor '{name}' has shape {:?}, the model needs {:?}",
                path.display(),
                t.shape,
                e.shape
            )));
        }
        values[e.range()].copy_from_slice(&t.data);
    }
    Ok(())
}

/// Loads a checkpoint onto a backend: the detector it describes and its state, and the metadata.
pub fn load(path: &Path, be: &dyn Backend) -> Result<(Detector, ModelState, Meta)> {
    let (tensors, meta) = read(path)?;
    // NaN weights would score every image NaN: refuse them here, for predict, eval and --resume alike.
    if let Some((name, i, v)) = first_non_finite(&tensors) {
        return Err(Error::Invalid(format!(
            "{}: tensor '{name}' holds {v} (at index {i}): the weights of a diverged run? Use a checkpoint of an \
             earlier epoch",
            path.display()
        )));
    }
    let cfg = config_from_meta(&meta, path)?;
    let by_name: BTreeMap<&str, &Named> = tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    if cfg.freq.profile && !by_name.contains_key("freq.profile.stats") {
        return Err(Error::Invalid(format!(
            "{}: a --freq-profile model without the profile's statistics ('freq.profile.stats'): written by an \
             earlier dfgpu, whose profile went through batch norm and a linear map. Train it again",
            path.display()
        )));
    }
    let det = Detector::new(cfg)?;
    let mut p = vec![0f32; det.params.total()];
    let mut s = vec![0f32; det.state.total()];
    fill(&det.params, "", &by_name, &mut p, path)?;
    fill(&det.state, "", &by_name, &mut s, path)?;
    let mut ms = ModelState::new(be, &det, 0)?;
    ms.params = be.upload(&Tensor::from_vec(&[p.len()], Layout::Plain, p)?)?;
    ms.state = be.upload(&Tensor::from_vec(&[s.len()], Layout::Plain, s)?)?;
    for (name, slot) in [("optim.m", &mut ms.m), ("optim.v", &mut ms.v)] {
        if let Some(t) = by_name.get(name).filter(|t| t.data.len() == det.params.total()) {
            *slot = be.upload(&Tensor::from_vec(&[t.data.len()], Layout::Plain, t.data.clone())?)?;
        }
    }
    if let Some(fs) = by_name.get("freq.stats") {
        ms.freq_stats = Some(be.upload(&Tensor::from_vec(&fs.shape, Layout::Plain, fs.data.clone())?)?);
    }
    ms.peak = PeakTest::from_tensors(|n| by_name.get(n).copied(), det.cfg.size, path)?;
    ms.join = meta.get(JOIN_KEY).map(|j| Join::from_meta(j, path)).transpose()?;
    Ok((det, ms, meta))
}
