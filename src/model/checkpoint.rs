//! Checkpoints in the safetensors format (an 8-byte little-endian header length, a JSON header of names, dtypes,
//! shapes and byte offsets, then the data), so that PyTorch users can open them. dfgpu stores f32 tensors
//! under the model's parameter and state names, the frequency statistics as `freq.stats`, and the
//! configuration, the epoch and the metrics as string metadata. Written to a temporary file and renamed: a
//! crash never leaves a broken checkpoint.

use crate::backend::fft::FftConfig;
use crate::backend::Backend;
use crate::data::input::Input;
use crate::error::{Choice, Error, Result};
use crate::model::detector::{Detector, DetectorConfig};
use crate::model::params::ParamLayout;
use crate::model::state::ModelState;
use crate::tensor::{Layout, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Clone, Debug, PartialEq)]
pub struct Named {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

pub type Meta = BTreeMap<String, String>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// A tensor's entry in the header.
#[derive(Serialize, Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [usize; 2],
}

fn json<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).expect("strings, numbers and maps of strings serialize")
}

/// Writes f32 tensors and metadata as a safetensors file, atomically.
pub fn write(path: &Path, tensors: &[Named], meta: &Meta) -> Result<()> {
    let mut header = format!("{{\"__metadata__\":{}", json(meta));
    let mut offset = 0usize;
    for t in tensors {
        let end = offset + 4 * t.data.len();
        let entry = Entry { dtype: "F32".into(), shape: t.shape.clone(), data_offsets: [offset, end] };
        header += &format!(",{}:{}", json(&t.name), json(&entry));
        offset = end;
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' '); // the data starts 8-byte aligned
    }
    let mut bytes = Vec::with_capacity(8 + header.len() + offset);
    bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for t in tensors {
        bytes.extend_from_slice(bytemuck::cast_slice(&t.data));
    }
    let tmp = path.with_extension("safetensors.tmp");
    std::fs::write(&tmp, &bytes).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Reads a safetensors file of f32 tensors. Every problem names the file.
pub fn read(path: &Path) -> Result<(Vec<Named>, Meta)> {
    read_some(path, |_| true)
}

/// As `read`, keeping only the tensors that `keep` names (the others may have any dtype).
pub fn read_some(path: &Path, keep: impl Fn(&str) -> bool) -> Result<(Vec<Named>, Meta)> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    let bad = |m: String| Error::Invalid(format!("{}: not a readable safetensors file: {m}", path.display()));
    let n = u64::from_le_bytes(bytes.get(..8).ok_or_else(|| bad("shorter than 8 bytes".into()))?.try_into().unwrap())
        as usize;
    // `n` is the file's word: checked, so that a damaged length (up to u64::MAX) is an error, not an overflow.
    let header = n
        .checked_add(8)
        .and_then(|end| bytes.get(8..end))
        .ok_or_else(|| bad(format!("header of {n} bytes in a {}-byte file", bytes.len())))?;
    let header = std::str::from_utf8(header).map_err(|_| bad("header is not UTF-8".into()))?;
    let members: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(header).map_err(|e| bad(format!("header: {e}")))?;
    let data = &bytes[8 + n..];
    let mut meta = Meta::new();
    let mut tensors = Vec::new();
    for (name, v) in members {
        if name == "__metadata__" {
            if let serde_json::Value::Object(m) = v {
                meta.extend(m.into_iter().filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_string()))));
            }
            continue;
        }
        if !keep(&name) {
            continue;
        }
        let e: Entry = serde_json::from_value(v).map_err(|e| bad(format!("tensor '{name}': {e}")))?;
        if e.dtype != "F32" {
            return Err(bad(format!("tensor '{name}' is {}; dfgpu reads F32 (export in float32)", e.dtype)));
        }
        let [start, end] = e.data_offsets;
        let raw = data
            .get(start..end)
            .filter(|r| Some(r.len()) == e.shape.iter().try_fold(4usize, |a, &d| a.checked_mul(d)))
            .ok_or_else(|| {
                bad(format!("tensor '{name}': offsets {:?} do not hold shape {:?}", e.data_offsets, e.shape))
            })?;
        tensors.push((start, Named { name, shape: e.shape, data: bytemuck::pod_collect_to_vec(raw) }));
    }
    // In file order (the header's object is read sorted by name).
    tensors.sort_by_key(|t| t.0);
    let tensors = tensors.into_iter().map(|t| t.1).collect();
    Ok((tensors, meta))
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
        ("dfgpu.freq.norm", f.norm.to_string()),
        ("dfgpu.fft.layout", f.fft.layout.name().into()),
        ("dfgpu.fft.magnitude", f.fft.magnitude.name().into()),
        ("dfgpu.fft.phase", f.fft.phase.name().into()),
        ("dfgpu.fft.grayscale", f.fft.grayscale.to_string()),
        ("dfgpu.head.hidden", h.hidden.to_string()),
        ("dfgpu.head.norm", h.norm.to_string()),
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

/// A named setting from metadata; the error names the file, the key and the value.
fn pick<T: Choice>(meta: &Meta, path: &Path, k: &str) -> Result<T> {
    let v = meta.get(k).ok_or_else(|| {
        Error::Invalid(format!("{}: not a dfgpu checkpoint (no '{k}' in its metadata)", path.display()))
    })?;
    T::parse(v, k).map_err(|_| Error::Invalid(format!("{}: metadata '{k}' = '{v}' is not understood", path.display())))
}

/// The configuration back from metadata; names the key that is missing or unreadable.
pub fn config_from_meta(meta: &Meta, path: &Path) -> Result<DetectorConfig> {
    let get = |k: &str| {
        meta.get(k).map(String::as_str).ok_or_else(|| {
            Error::Invalid(format!("{}: not a dfgpu checkpoint (no '{k}' in its metadata)", path.display()))
        })
    };
    let bad =
        |k: &str, v: &str| Error::Invalid(format!("{}: metadata '{k}' = '{v}' is not understood", path.display()));
    let num = |k: &str| -> Result<f64> {
        let v = get(k)?;
        v.parse().map_err(|_| bad(k, v))
    };
    let flag = |k: &str| -> Result<bool> {
        let v = get(k)?;
        v.parse().map_err(|_| bad(k, v))
    };
    let backbone = get("dfgpu.backbone")?;
    let mut cfg = DetectorConfig::new(backbone)
        .map_err(|e| Error::Invalid(format!("{}: metadata 'dfgpu.backbone': {e}", path.display())))?;
    cfg.size = num("dfgpu.size")? as usize;
    // Checkpoints from before --input were all trained on resized images.
    cfg.input = if meta.contains_key("dfgpu.input") { pick(meta, path, "dfgpu.input")? } else { Input::Resize };
    cfg.freq.widths = get("dfgpu.freq.widths")?
        .split(',')
        .map(|w| w.parse().map_err(|_| bad("dfgpu.freq.widths", w)))
        .collect::<Result<_>>()?;
    cfg.freq.norm = flag("dfgpu.freq.norm")?;
    cfg.freq.fft = FftConfig {
        layout: pick(meta, path, "dfgpu.fft.layout")?,
        magnitude: pick(meta, path, "dfgpu.fft.magnitude")?,
        phase: pick(meta, path, "dfgpu.fft.phase")?,
        grayscale: flag("dfgpu.fft.grayscale")?,
    };
    let h = &mut cfg.head;
    h.hidden = num("dfgpu.head.hidden")? as usize;
    h.norm = flag("dfgpu.head.norm")?;
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

/// A detector's tensors as a checkpoint holds them: parameters, running statistics, frequency statistics and
/// the optimizer's two buffers.
pub fn tensors(be: &dyn Backend, det: &Detector, ms: &ModelState) -> Result<Vec<Named>> {
    let p = be.download(&ms.params)?;
    let s = be.download(&ms.state)?;
    let mut tensors = named_from(&det.params, p.host::<f32>()?);
    tensors.extend(named_from(&det.state, s.host::<f32>()?));
    if let Some(fs) = &ms.freq_stats {
        let h = be.download(fs)?;
        tensors.push(Named { name: "freq.stats".into(), shape: h.shape().to_vec(), data: h.host::<f32>()?.to_vec() });
    }
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

/// Saves a detector's parameters, running statistics, frequency statistics and configuration, plus `extra`.
pub fn save(path: &Path, be: &dyn Backend, det: &Detector, ms: &ModelState, extra: &Meta) -> Result<()> {
    write_detector(path, &tensors(be, det, ms)?, &det.cfg, extra)
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
    let det = Detector::new(cfg)?;
    let by_name: BTreeMap<&str, &Named> = tensors.iter().map(|t| (t.name.as_str(), t)).collect();
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
    Ok((det, ms, meta))
}
