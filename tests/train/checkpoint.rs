//! Checkpoints: safetensors round trip, the same predictions after reloading, errors that name the tensor.

use dfgpu::backend::cpu::CpuBackend;
use dfgpu::data::loaded::{Loaded, Pixels};
use dfgpu::model::checkpoint::{self, Meta, Named};
use dfgpu::model::detector::{Detector, DetectorConfig};
use dfgpu::model::state::ModelState;
use dfgpu::train::inference::predict;
use dfgpu::Backend;
use std::path::PathBuf;

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("dfgpu-test-ckpt-{}-{name}", std::process::id()))
}

#[test]
fn safetensors_round_trip() {
    let path = tmp("rt.safetensors");
    let t = vec![
        Named { name: "a.weight".into(), shape: vec![2, 3], data: vec![1.0, 2.0, 3.0, 4.0, 5.0, -6.5] },
        Named { name: "b".into(), shape: vec![1], data: vec![f32::MIN_POSITIVE] },
    ];
    let meta: Meta = [("k".to_string(), "v \"quoted\"".to_string())].into_iter().collect();
    checkpoint::write(&path, &t, &meta).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert_eq!((8 + n) % 8, 0, "data starts 8-byte aligned");
    let (back, m) = checkpoint::read(&path).unwrap();
    assert_eq!(back, t);
    assert_eq!(m, meta);
    std::fs::write(&path, b"short").unwrap();
    let e = checkpoint::read(&path).unwrap_err().to_string();
    assert!(e.contains("rt.safetensors: not a readable safetensors file: shorter than 8 bytes"), "{e}");
}

/// Found by tests/fuzz: a header length near u64::MAX overflowed `8 + n` (a panic in a debug build, a wrong
/// slice in a release one) instead of an error naming the file.
#[test]
fn a_header_length_at_its_extreme_is_an_error() {
    let path = tmp("len.safetensors");
    let t = [Named { name: "a".into(), shape: vec![1], data: vec![1.0] }];
    checkpoint::write(&path, &t, &Meta::new()).unwrap();
    let good = std::fs::read(&path).unwrap();
    for n in [u64::MAX, u64::MAX - 7, u64::MAX - 8, 1 << 63, good.len() as u64] {
        let mut bytes = good.clone();
        bytes[..8].copy_from_slice(&n.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let e = std::panic::catch_unwind(|| checkpoint::read(&path)).expect("no panic").unwrap_err().to_string();
        assert!(e.contains("len.safetensors: not a readable safetensors file: header of"), "{n}: {e}");
    }
}

/// Found by tests/fuzz: a damaged backbone name in a checkpoint's metadata was reported without the file.
#[test]
fn an_unknown_backbone_in_a_checkpoint_names_the_file() {
    let path = tmp("backbone.safetensors");
    let mut meta = checkpoint::config_meta(&DetectorConfig::new("tiny").unwrap());
    meta.insert("dfgpu.backbone".into(), "tify".into());
    let e = checkpoint::config_from_meta(&meta, &path).unwrap_err().to_string();
    assert!(e.contains("backbone.safetensors: metadata 'dfgpu.backbone'") && e.contains("'tify'"), "{e}");
}

fn images(n: usize, size: usize) -> Loaded {
    let mut rng = dfgpu::rng::Rng::new(9);
    let pixels = (0..n * size * size * 3).map(|_| rng.below(256) as u8).collect();
    Loaded::new(size, Pixels::Owned(pixels), vec![0; n], vec![None; n])
}

#[test]
fn a_reloaded_detector_predicts_the_same() {
    let be = CpuBackend::new(Default::default());
    let mut cfg = DetectorConfig { size: 32, ..DetectorConfig::new("tiny").unwrap() };
    cfg.freq.widths = vec![8, 16];
    cfg.head.gated = true;
    let det = Detector::new(cfg).unwrap();
    let mut ms = ModelState::new(&be, &det, 4).unwrap();
    let data = images(3, 32);
    let before = predict(&be, &det, &mut ms, &data, 2).unwrap();
    let path = tmp("det.safetensors");
    checkpoint::save(&path, &be, &det, &ms, &Meta::new()).unwrap();
    let (det2, mut ms2, meta) = checkpoint::load(&path, &be).unwrap();
    assert_eq!(det2.cfg, det.cfg);
    assert_eq!(meta.get("dfgpu.backbone").map(String::as_str), Some("tiny"));
    assert_eq!(predict(&be, &det2, &mut ms2, &data, 2).unwrap(), before);
    assert_eq!(
        be.download(&ms2.state).unwrap().host::<f32>().unwrap(),
        be.download(&ms.state).unwrap().host::<f32>().unwrap()
    );

    // A checkpoint of another model: the first tensor that differs is named.
    let (mut tensors, meta) = checkpoint::read(&path).unwrap();
    let i = tensors.iter().position(|t| t.name == "spatial.conv_stem.weight").unwrap();
    tensors[i].shape = vec![8, 3, 5, 5];
    tensors[i].data = vec![0.0; 8 * 3 * 25];
    checkpoint::write(&path, &tensors, &meta).unwrap();
    let e = checkpoint::load(&path, &be).err().unwrap().to_string();
    assert!(
        e.contains("tensor 'spatial.conv_stem.weight' has shape [8, 3, 5, 5], the model needs [8, 3, 3, 3]"),
        "{e}"
    );
    tensors.remove(i);
    checkpoint::write(&path, &tensors, &meta).unwrap();
    let e = checkpoint::load(&path, &be).err().unwrap().to_string();
    assert!(e.contains("no tensor 'spatial.conv_stem.weight'"), "{e}");
    checkpoint::write(&path, &tensors, &Meta::new()).unwrap();
    let e = checkpoint::load(&path, &be).err().unwrap().to_string();
    assert!(e.contains("not a dfgpu checkpoint (no 'dfgpu.backbone' in its metadata)"), "{e}");
}
