use crate::common::*;
use dfgpu::backend::head::Mode;
use dfgpu::backend::ChannelNorm;
use dfgpu::model::checkpoint::{self, Named};
use dfgpu::model::detector::{Detector, DetectorConfig};
use dfgpu::model::layers::Fwd;
use dfgpu::model::timm;
use dfgpu::rng::Rng;
use dfgpu::{Backend, Layout, Tensor};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dfgpu-timm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// A tiny detector with random weights and random running statistics.
fn detector() -> (Detector, Vec<f32>, Vec<f32>) {
    let det = Detector::new(DetectorConfig { size: 32, ..DetectorConfig::new("tiny").unwrap() }).unwrap();
    let p = det.init_params(5);
    let mut rng = Rng::new(9);
    let s: Vec<f32> = det
        .state
        .entries()
        .iter()
        .flat_map(|e| {
            let var = e.name.ends_with("running_var");
            (0..e.len()).map(|_| if var { 0.5 + rng.uniform() } else { rng.uniform() - 0.5 }).collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(s.len(), det.state.total(), "state entries are packed without padding");
    (det, p, s)
}

/// The spatial branch's pooled features in inference mode, and the normalized images it saw.
fn spatial_features(be: &dyn Backend, det: &Detector, p: &[f32], s: &[f32], n: usize) -> (Vec<f32>, Tensor) {
    let mut rng = Rng::new(2);
    let x = Tensor::from_vec(&[n, 32, 32, 3], Layout::Nhwc, random_u8(&mut rng, n * 32 * 32 * 3)).unwrap();
    let pre = be.preprocess(&be.upload(&x).unwrap(), &ChannelNorm::imagenet(), true).unwrap();
    let params = be.upload(&Tensor::from_vec(&[p.len()], Layout::Plain, p.to_vec()).unwrap()).unwrap();
    let mut state = be.upload(&Tensor::from_vec(&[s.len()], Layout::Plain, s.to_vec()).unwrap()).unwrap();
    let norm = be.download(&pre.normalized).unwrap();
    let mut f = Fwd { be, params: &params, state: &mut state, mode: Mode::Eval };
    let (_, cache) = det.forward(&mut f, Arc::new(pre.normalized), pre.raw.as_ref().unwrap(), None).unwrap();
    let feats = be.download(det.branch_features(&cache).0).unwrap().host::<f32>().unwrap().to_vec();
    (feats, norm)
}

/// Writes the tensors, plus an int64 counter as timm has one per batch norm.
fn write_with_counter(path: &Path, tensors: &[Named]) {
    checkpoint::write(path, tensors, &Default::default()).unwrap();
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap().trim_end();
    let data = &bytes[8 + n..];
    let end = data.len();
    let mut h = format!(
        "{},\"bn1.num_batches_tracked\":{{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[{end},{}]}}}}",
        &header[..header.len() - 1],
        end + 8
    );
    while h.len() % 8 != 0 {
        h.push(' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&7i64.to_le_bytes());
    std::fs::write(path, out).unwrap();
}

/// The spatial branch under timm's names (written to `file`: each test its own, as they run at once).
fn spatial_named(det: &Detector, p: &[f32], s: &[f32], file: &str) -> Vec<Named> {
    let path = tmp(file);
    timm::save(&path, (&det.params, &det.state), "spatial.", (p, s)).unwrap();
    checkpoint::read(&path).unwrap().0
}

#[test]
fn timm_names_round_trip_to_the_same_features() {
    let be = cpu();
    let (det, p, s) = detector();
    let (want, images) = spatial_features(&be, &det, &p, &s, 3);
    let named = spatial_named(&det, &p, &s, "round-trip.safetensors");
    assert!(named.iter().any(|t| t.name == "conv_stem.weight"));
    assert!(named.iter().any(|t| t.name == "blocks.1.0.se.conv_reduce.weight"));
    assert!(named.iter().any(|t| t.name == "bn2.running_var"));
    assert!(named.iter().all(|t| !t.name.starts_with("spatial.") && !t.name.starts_with("freq.")));

    // With the classifier and a counter, as timm's state_dict has them.
    let mut rng = Rng::new(4);
    let feat = want.len() / 3;
    let (w, b) = (normals(&mut rng, 5 * feat, 0.1), normals(&mut rng, 5, 0.1));
    let mut file = named.clone();
    file.push(Named { name: "classifier.weight".into(), shape: vec![5, feat], data: to_f32(&w) });
    file.push(Named { name: "classifier.bias".into(), shape: vec![5], data: to_f32(&b) });
    let path = tmp("with-classifier.safetensors");
    write_with_counter(&path, &file);

    let (feats, logits) = timm::forward(&be, "tiny", &path, &images).unwrap();
    let got = be.download(&feats).unwrap().host::<f32>().unwrap().to_vec();
    assert_bitwise("features through timm names", &got, &want);
    let logits = be.download(&logits.expect("the file has a classifier")).unwrap();
    let expect: Vec<f64> = (0..3)
        .flat_map(|i| {
            let (w, b, x) = (&w, &b, &got[i * feat..(i + 1) * feat]);
            (0..5).map(move |k| b[k] + (0..feat).map(|j| w[k * feat + j] * x[j] as f64).sum::<f64>())
        })
        .collect();
    assert_close("ImageNet logits", logits.host::<f32>().unwrap(), &expect, 1e-5, 1e-6);
}

#[test]
fn pretrained_weights_replace_only_the_spatial_branch() {
    let (det, p, s) = detector();
    let path = tmp("pretrained.safetensors");
    timm::save(&path, (&det.params, &det.state), "spatial.", (&p, &s)).unwrap();
    let other: Vec<f32> = det.init_params(6);
    let l = timm::load(&path, (&det.params, &det.state), "spatial.", (other.clone(), vec![0.0; s.len()])).unwrap();
    for e in det.params.entries() {
        let want = if e.name.starts_with("spatial.") { &p } else { &other };
        assert_eq!(&l.params[e.range()], &want[e.range()], "{}", e.name);
    }
    for e in det.state.entries() {
        let want = if e.name.starts_with("spatial.") { s[e.range()].to_vec() } else { vec![0.0; e.len()] };
        assert_eq!(l.state[e.range()], want, "{}", e.name);
    }
}

#[test]
fn a_file_that_differs_names_the_first_tensor() {
    let (det, p, s) = detector();
    let named = spatial_named(&det, &p, &s, "differs.safetensors");
    let fails = |file: Vec<Named>, what: &str| {
        let path = tmp(&format!("bad-{}.safetensors", what.replace(['\'', ' '], "_")));
        checkpoint::write(&path, &file, &Default::default()).unwrap();
        let e = timm::load(&path, (&det.params, &det.state), "spatial.", (p.clone(), s.clone())).err().unwrap();
        let msg = e.to_string();
        assert!(msg.contains(what) && msg.contains(&path.display().to_string()), "{msg}");
    };
    let mut extra = named.clone();
    extra.push(Named { name: "fc.weight".into(), shape: vec![1], data: vec![0.0] });
    fails(extra, "'fc.weight' is not part of this EfficientNet");
    fails(named.iter().filter(|t| t.name != "conv_head.weight").cloned().collect(), "no tensor 'conv_head.weight'");
    let mut wrong = named.clone();
    let t = wrong.iter_mut().find(|t| t.name == "blocks.0.0.conv_dw.weight").unwrap();
    t.shape = vec![t.data.len()];
    fails(wrong, "tensor 'blocks.0.0.conv_dw.weight' has shape");
}

#[test]
fn timm_forward_reads_and_writes_files() {
    let be = cpu();
    let (det, p, s) = detector();
    let (want, images) = spatial_features(&be, &det, &p, &s, 2);
    let weights = tmp("files-weights.safetensors");
    timm::save(&weights, (&det.params, &det.state), "spatial.", (&p, &s)).unwrap();
    let (input, out) = (tmp("files-in.safetensors"), tmp("files-out.safetensors"));
    let x =
        Named { name: "images".into(), shape: images.shape().to_vec(), data: images.host::<f32>().unwrap().to_vec() };
    checkpoint::write(&input, &[x], &Default::default()).unwrap();
    let wrote = timm::forward_files(&be, "tiny", &weights, &input, &out).unwrap();
    assert!(wrote.starts_with("features [2, ") && !wrote.contains("logits"), "{wrote}");
    let (got, _) = checkpoint::read(&out).unwrap();
    assert_bitwise("features from files", &got[0].data, &want);
    let e = timm::forward_files(&be, "tiny", &weights, &weights, &out).unwrap_err().to_string();
    assert!(e.contains("files-weights.safetensors: no tensor 'images'"), "{e}");
}

#[test]
fn a_checkpoints_spatial_branch_exports_under_timm_names() {
    let be = cpu();
    let (det, p, s) = detector();
    let mut ms = dfgpu::model::state::ModelState::new(&be, &det, 0).unwrap();
    ms.params = Tensor::from_vec(&[p.len()], Layout::Plain, p.clone()).unwrap();
    ms.state = Tensor::from_vec(&[s.len()], Layout::Plain, s.clone()).unwrap();
    let (ckpt, out) = (tmp("export-ckpt.safetensors"), tmp("export-timm.safetensors"));
    checkpoint::save(&ckpt, &be, &det, &ms, &Default::default()).unwrap();
    timm::export_from_checkpoint(&ckpt, &out).unwrap();
    let init = (vec![0.0; p.len()], vec![0.0; s.len()]);
    let l = timm::load(&out, (&det.params, &det.state), "spatial.", init).unwrap();
    for (layout, got, want) in [(&det.params, &l.params, &p), (&det.state, &l.state, &s)] {
        for e in layout.entries().iter().filter(|e| e.name.starts_with("spatial.")) {
            assert_eq!(got[e.range()], want[e.range()], "{}", e.name);
        }
    }
    let e = timm::export_from_checkpoint(&out, &tmp("export-again.safetensors")).unwrap_err().to_string();
    assert!(e.contains("export-timm.safetensors: not a dfgpu checkpoint"), "{e}");
}
