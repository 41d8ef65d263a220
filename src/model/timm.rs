//! timm's EfficientNet weights, the ImageNet weights most users start from. A state_dict exported to
//! safetensors by scripts/export_timm.py loads into the spatial branch by name (conv_stem, bn1, blocks.i.j.*,
//! conv_head, bn2, running statistics included), and the branch is written back under the same names.

use crate::backend::head::Mode;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::checkpoint::{self, fill, Meta, Named};
use crate::model::efficientnet::{EfficientNet, EfficientNetConfig};
use crate::model::layers::{Builder, Fwd};
use crate::model::state::ModelState;
use crate::params::ParamLayout;
use crate::tensor::{Layout, Slice, Tensor};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// The batch norms' step counters (int64 in PyTorch): dfgpu has no use for them.
fn is_counter(name: &str) -> bool {
    name.ends_with("num_batches_tracked")
}

/// The ImageNet classifier, not part of the backbone (the parity script compares its logits).
pub const CLASSIFIER: [&str; 2] = ["classifier.weight", "classifier.bias"];

/// A backbone's parameter and state values, filled from a timm file.
pub struct Loaded {
    pub params: Vec<f32>,
    pub state: Vec<f32>,
    /// classifier.weight and classifier.bias, when the file has them.
    pub classifier: Option<[Named; 2]>,
}

/// Reads a timm EfficientNet file for the entries of `params` and `state` under `prefix`. Every tensor they
/// need must be there with its shape, and every tensor of the file (but the counters and the classifier) must be
/// one they need: the error names the first that differs. Values outside the prefix keep `init`'s.
pub fn load(
    path: &Path,
    (params, state): (&ParamLayout, &ParamLayout),
    prefix: &str,
    init: (Vec<f32>, Vec<f32>),
) -> Result<Loaded> {
    let (tensors, _) = checkpoint::read_some(path, |n| !is_counter(n))?;
    let by_name: BTreeMap<&str, &Named> = tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    let known = |n: &str| {
        let full = format!("{prefix}{n}");
        params.find(&full).is_some() || state.find(&full).is_some() || CLASSIFIER.contains(&n)
    };
    if let Some(t) = tensors.iter().find(|t| !known(&t.name)) {
        return Err(Error::Invalid(format!(
            "{}: tensor '{}' is not part of this EfficientNet (a file of another variant or model?)",
            path.display(),
            t.name
        )));
    }
    let (mut p, mut s) = init;
    fill(params, prefix, &by_name, &mut p, path)?;
    fill(state, prefix, &by_name, &mut s, path)?;
    let classifier = match CLASSIFIER.map(|n| by_name.get(n)) {
        [Some(w), Some(b)] => Some([(*w).clone(), (*b).clone()]),
        _ => None,
    };
    Ok(Loaded { params: p, state: s, classifier })
}

/// Writes the entries under `prefix` of the two layouts under timm's names (the prefix dropped).
pub fn save(
    path: &Path,
    (params, state): (&ParamLayout, &ParamLayout),
    prefix: &str,
    (p, s): (&[f32], &[f32]),
) -> Result<()> {
    let mut out = Vec::new();
    for (layout, values) in [(params, p), (state, s)] {
        for e in layout.entries() {
            if let Some(name) = e.name.strip_prefix(prefix) {
                out.push(Named { name: name.to_string(), shape: e.shape.clone(), data: values[e.range()].to_vec() });
            }
        }
    }
    let meta: Meta = [("format".to_string(), "pt".to_string())].into_iter().collect();
    checkpoint::write(path, &out, &meta)
}

/// Replaces a detector's spatial branch with timm weights (`dfgpu train --pretrained`).
pub fn load_into_detector(
    path: &Path,
    be: &dyn Backend,
    det: &crate::model::detector::Detector,
    ms: &mut ModelState,
) -> Result<()> {
    let (p, s) = (be.download(&ms.params)?, be.download(&ms.state)?);
    let init = (p.host::<f32>()?.to_vec(), s.host::<f32>()?.to_vec());
    let l = load(path, (&det.params, &det.state), "spatial.", init)?;
    ms.params = be.upload(&Tensor::from_vec(&[l.params.len()], Layout::Plain, l.params)?)?;
    ms.state = be.upload(&Tensor::from_vec(&[l.state.len()], Layout::Plain, l.state)?)?;
    Ok(())
}

/// Writes a checkpoint's spatial branch as a timm state_dict (`dfgpu timm-export`). Host work only: the
/// checkpoint is read on the CPU backend, whatever device the command line names.
pub fn export_from_checkpoint(ckpt: &Path, out: &Path) -> Result<()> {
    let be = crate::backend::cpu::CpuBackend::new(Default::default());
    let (det, ms, _) = checkpoint::load(ckpt, &be)?;
    let (p, s) = (be.download(&ms.params)?, be.download(&ms.state)?);
    save(out, (&det.params, &det.state), "spatial.", (p.host()?, s.host()?))
}

/// The backbone alone in inference mode on normalized NCHW images: the pooled features, and the ImageNet
/// logits when the file has the classifier (the parity check against timm, scripts/timm_parity.py).
pub fn forward(be: &dyn Backend, variant: &str, weights: &Path, images: &Tensor) -> Result<(Tensor, Option<Tensor>)> {
    let mut b = Builder::default();
    let net = EfficientNet::new(&mut b, EfficientNetConfig::named(variant)?, "");
    let init = (vec![0.0; b.params.total()], vec![0.0; b.state.total()]);
    let l = load(weights, (&b.params, &b.state), "", init)?;
    let params = be.upload(&Tensor::from_vec(&[l.params.len()], Layout::Plain, l.params)?)?;
    let mut state = be.upload(&Tensor::from_vec(&[l.state.len()], Layout::Plain, l.state)?)?;
    let mut f = Fwd { be, params: &params, state: &mut state, mode: Mode::Eval };
    let (feats, _) = net.forward(&mut f, Arc::new(be.upload(images)?))?;
    let logits = match l.classifier {
        Some([w, bias]) => {
            let m = bias.data.len();
            if w.shape != [m, net.features] {
                return Err(Error::Invalid(format!(
                    "{}: classifier.weight has shape {:?}, expected [{m}, {}]",
                    weights.display(),
                    w.shape,
                    net.features
                )));
            }
            let wb = be.upload(&Tensor::from_vec(&[w.data.len() + m], Layout::Plain, [w.data, bias.data].concat())?)?;
            let k = m * net.features;
            Some(be.linear(&feats, &Slice { buf: &wb, range: 0..k }, &Slice { buf: &wb, range: k..k + m }, m)?)
        }
        None => None,
    };
    Ok((feats, logits))
}

/// `dfgpu timm-forward`: `forward` from files. `input` holds one f32 tensor `images` (N x 3 x H x W, normalized);
/// `out` gets `features` and, with the classifier, `logits`. Returns what was written, for the log line.
pub fn forward_files(be: &dyn Backend, variant: &str, weights: &Path, input: &Path, out: &Path) -> Result<String> {
    let (tensors, _) = checkpoint::read(input)?;
    let x = tensors
        .into_iter()
        .find(|t| t.name == "images" && t.shape.len() == 4 && t.shape[1] == 3)
        .ok_or_else(|| Error::Invalid(format!("{}: no tensor 'images' of shape N x 3 x H x W", input.display())))?;
    let (feats, logits) = forward(be, variant, weights, &Tensor::from_vec(&x.shape, Layout::Nchw, x.data)?)?;
    let mut named = Vec::new();
    for (name, t) in [("features", Some(feats)), ("logits", logits)] {
        if let Some(t) = t {
            let h = be.download(&t)?;
            named.push(Named { name: name.into(), shape: h.shape().to_vec(), data: h.host::<f32>()?.to_vec() });
        }
    }
    checkpoint::write(out, &named, &Meta::new())?;
    Ok(named.iter().map(|n| format!("{} {:?}", n.name, n.shape)).collect::<Vec<_>>().join(", "))
}
