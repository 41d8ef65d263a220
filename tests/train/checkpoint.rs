//! Checkpoints: safetensors round trip, the same predictions after reloading, errors that name the tensor, files
//! the reader must refuse or widen (crafted here byte by byte), and a checkpoint of an earlier dfgpu.

use dfgpu::backend::cpu::CpuBackend;
use dfgpu::data::loaded::{Loaded, Pixels};
use dfgpu::model::checkpoint::{self, Meta, Named};
use dfgpu::model::detector::{Detector, DetectorConfig};
use dfgpu::model::peak::{Join, PeakTest};
use dfgpu::model::state::ModelState;
use dfgpu::train::inference::predict;
use dfgpu::{Backend, Error};
use half::{bf16, f16};
use std::path::{Path, PathBuf};

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

/// A safetensors file from its parts, written here by hand: the header's length, the header (padded with
/// spaces to 8 bytes, as the format's writers do) and the data.
fn crafted(header: &str, data: &[u8]) -> Vec<u8> {
    let pad = " ".repeat((8 - header.len() % 8) % 8);
    let mut b = ((header.len() + pad.len()) as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(pad.as_bytes());
    b.extend_from_slice(data);
    b
}

/// Two F32 tensors 'a' and 'b' of shape [2] at the given offsets.
fn two(a: [usize; 2], b: [usize; 2]) -> String {
    let entry = |o: [usize; 2]| format!(r#"{{"dtype":"F32","shape":[2],"data_offsets":[{},{}]}}"#, o[0], o[1]);
    format!(r#"{{"a":{},"b":{}}}"#, entry(a), entry(b))
}

/// The hand-written reader took any offsets that lay within the data: tensors that shared bytes, a gap between
/// them, or bytes after the last were read without an error. Each is refused, naming the file and the fault.
#[test]
fn offsets_that_overlap_leave_a_gap_or_miss_the_end_are_refused() {
    let path = tmp("offsets.safetensors");
    let data: Vec<u8> = (0..20).collect();
    let tensor_b = "tensor 'b': its data does not start where the tensor before it ends";
    let cases = [
        ("b inside a", two([0, 8], [4, 12]), 12, tensor_b),
        ("a inside b", two([4, 12], [0, 8]), 12, "tensor 'a': its data does not start where the tensor before it ends"),
        ("a gap between a and b", two([0, 8], [12, 20]), 20, tensor_b),
        (
            "b past the end of the file",
            two([0, 8], [8, 16]),
            12,
            "ends 16 bytes after the header, past the end of the file (12 bytes after it)",
        ),
        ("bytes after b", two([0, 8], [8, 16]), 20, "4 bytes after the last tensor's data"),
    ];
    for (what, header, len, says) in cases {
        std::fs::write(&path, crafted(&header, &data[..len])).unwrap();
        let e = checkpoint::read(&path).expect_err(what);
        assert!(matches!(e, Error::Corrupt { .. }), "{what}: {e:?}");
        let e = e.to_string();
        assert!(
            e.contains("offsets.safetensors: not a readable safetensors file: ") && e.contains(says),
            "{what}: {e}"
        );
    }
}

/// A timm export may hold F16 or BF16 weights (and int64 counters): they read as f32, each value what the half
/// crate widens its bits to. The hand-written reader refused every tensor that was not F32.
#[test]
fn f16_and_bf16_tensors_read_as_f32() {
    // Rounded by each format (0.1, pi), at its limits (65504 is f16's largest, 6e-8 an f16 subnormal, 1e38
    // beyond f16 but within bf16), and signed zero.
    let values = [0.0f32, -0.0, 1.0, -2.5, 0.1, std::f32::consts::PI, 65504.0, 6.0e-8, 1e38, -1e-3];
    let f16s: Vec<u8> = values.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect();
    let bf16s: Vec<u8> = values.iter().flat_map(|&v| bf16::from_f32(v).to_le_bytes()).collect();
    let header = r#"{"__metadata__":{"format":"pt"},
        "w.half":{"dtype":"F16","shape":[2,5],"data_offsets":[0,20]},
        "w.brain":{"dtype":"BF16","shape":[10],"data_offsets":[20,40]},
        "bn.num_batches_tracked":{"dtype":"I64","shape":[],"data_offsets":[40,48]}}"#;
    let path = tmp("half.safetensors");
    std::fs::write(&path, crafted(header, &[f16s, bf16s, 7i64.to_le_bytes().to_vec()].concat())).unwrap();

    let (t, meta) = checkpoint::read_some(&path, |n| !n.ends_with("num_batches_tracked")).unwrap();
    assert_eq!(meta.get("format").map(String::as_str), Some("pt"));
    let want = |name: &str, shape: Vec<usize>, widen: fn(f32) -> f32| Named {
        name: name.into(),
        shape,
        data: values.iter().map(|&v| widen(v)).collect(),
    };
    assert_eq!(t[0], want("w.half", vec![2, 5], |v| f16::from_f32(v).to_f32()));
    assert_eq!(t[1], want("w.brain", vec![10], |v| bf16::from_f32(v).to_f32()));
    assert_eq!(t.len(), 2);
    // Bit for bit, signed zero and infinity included (1e38 is beyond f16: infinite there).
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&t[0].data), bits(&values.map(|v| f16::from_f32(v).to_f32())));
    assert!(t[0].data[8].is_infinite() && t[1].data[8] > 9e37);

    // Kept, the int64 counter is an error that names it.
    let e = checkpoint::read(&path).unwrap_err().to_string();
    assert!(
        e.contains("half.safetensors: tensor 'bn.num_batches_tracked' is I64; dfgpu reads F32, F16 and BF16"),
        "{e}"
    );
}

/// The crate writes the metadata in a HashMap's order, different for every map; dfgpu writes it sorted, so
/// that the same checkpoint is the same bytes (what --resume is tested against).
#[test]
fn the_same_checkpoint_is_the_same_bytes() {
    let meta = checkpoint::config_meta(&DetectorConfig::new("tiny").unwrap());
    let t = [Named { name: "w".into(), shape: vec![3], data: vec![1.0, 2.0, 3.0] }];
    let files: Vec<Vec<u8>> = (0..3)
        .map(|i| {
            let path = tmp(&format!("same-{i}.safetensors"));
            checkpoint::write(&path, &t, &meta).unwrap();
            std::fs::read(&path).unwrap()
        })
        .collect();
    assert!(files.iter().all(|f| *f == files[0]));
    let header = String::from_utf8_lossy(&files[0]);
    let at: Vec<usize> = meta.keys().map(|k| header.find(&format!("\"{k}\"")).unwrap()).collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "metadata in key order: {header}");
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
    (cfg.freq.widths, cfg.freq.profile) = (vec![8, 16], true);
    cfg.head.gated = true;
    let det = Detector::new(cfg).unwrap();
    let mut ms = ModelState::new(&be, &det, 4).unwrap();
    // The ring profile's statistics as if gathered (the initial 0 and 1 would hide a mean and a deviation swapped).
    let r = det.freq.profile_stats().unwrap();
    let k = r.len() / 2;
    let st = ms.state.host_mut::<f32>().unwrap();
    (0..k).for_each(|j| (st[r.start + j], st[r.start + k + j]) = (-0.5 + 0.01 * j as f32, 0.5 + 0.02 * j as f32));
    let data = images(3, 32);
    let before = predict(&be, &det, &mut ms, &data, 2).unwrap();
    // A spectral peak test and its join, of values that f32 and a short decimal do not hold exactly.
    let bins: Vec<f64> = (0..32 * 32).map(|k| (k as f64 / 7.0).sin()).collect();
    ms.peak = Some(PeakTest::new(&bins, &bins.iter().map(|v| 1.0 / (1.1 + v)).collect::<Vec<_>>()));
    ms.join = Some(Join::fit(&[0.1, -0.3, 1.0 / 3.0], &[2.5, 1.0 / 7.0, 4.0]).unwrap());
    let path = tmp("det.safetensors");
    checkpoint::save(&path, &be, &det, &ms, &Meta::new()).unwrap();
    let (det2, mut ms2, meta) = checkpoint::load(&path, &be).unwrap();
    assert_eq!((&ms2.peak, &ms2.join), (&ms.peak, &ms.join), "the peak test and its join read back exactly");
    assert_eq!(det2.cfg, det.cfg);
    assert_eq!(meta.get("dfgpu.backbone").map(String::as_str), Some("tiny"));
    assert_eq!(predict(&be, &det2, &mut ms2, &data, 2).unwrap(), before);
    assert_eq!(
        be.download(&ms2.state).unwrap().host::<f32>().unwrap(),
        be.download(&ms.state).unwrap().host::<f32>().unwrap()
    );

    // A peak test of another image size, or half of one, is refused, naming the file.
    let (mut tensors, meta) = checkpoint::read(&path).unwrap();
    let saved = tensors.clone();
    let peak = |t: &Named| t.name.starts_with("peak.");
    let cases = [(&["peak.mean", "peak.inv_std"][..], 256, "a spectral peak test of 256 bins for a model of 32 x 32")];
    for (names, len, want) in cases.into_iter().chain([(&["peak.mean"][..], 0, "hold 0 and 1024 values")]) {
        for t in tensors.iter_mut().filter(|t| names.contains(&t.name.as_str())) {
            (t.data, t.shape) = (vec![0.5; len], vec![len]);
        }
        let kept: Vec<Named> = tensors.iter().filter(|t| !(peak(t) && t.data.is_empty())).cloned().collect();
        checkpoint::write(&path, &kept, &meta).unwrap();
        let e = checkpoint::load(&path, &be).err().unwrap().to_string();
        assert!(e.contains("det.safetensors") && e.contains(want), "{e}");
        tensors = saved.clone();
    }

    // A --freq-profile checkpoint of the earlier design (batch norm and a linear map) has no statistics.
    let stats = tensors.iter().position(|t| t.name == "freq.profile.stats").unwrap();
    let saved = tensors.remove(stats);
    checkpoint::write(&path, &tensors, &meta).unwrap();
    let e = checkpoint::load(&path, &be).err().unwrap().to_string();
    assert!(e.contains("det.safetensors") && e.contains("'freq.profile.stats'") && e.contains("earlier dfgpu"), "{e}");
    tensors.insert(stats, saved);

    // A checkpoint of another model: the first tensor that differs is named.
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

/// A checkpoint that dfgpu wrote before it used the safetensors crate still reads, values and metadata alike.
/// tests/fixtures/checkpoint-before-crate.safetensors: `dfgpu train --device cpu --epochs 1 --batch 8 --backbone
/// tiny --size 16 --freq-widths 4 --head-hidden 4 --seed 1` (main at 7f583e3) on `dfgpu synth --n-real 8 --n-fake
/// 8 --size 32 --seed 1`; its head and frequency branch (the backbone alone is 0.8 MB, its AdamW moments twice
/// that) and all its metadata, written again by that build's `checkpoint::write`, the writer of every checkpoint.
#[test]
fn a_checkpoint_from_before_the_crate_reads() {
    // Relative: cargo runs a test from the package root, and gpu-pack/run.sh from the repository root, where the
    // build machine's absolute path does not exist.
    let path = Path::new("tests/fixtures/checkpoint-before-crate.safetensors");
    let (tensors, meta) = checkpoint::read(path).unwrap();
    let cfg = checkpoint::config_from_meta(&meta, path).unwrap();
    assert_eq!(
        (cfg.backbone.name.as_str(), cfg.size, &cfg.freq.widths[..], cfg.head.hidden),
        ("tiny", 16, &[4][..], 4)
    );
    assert!(!cfg.freq.profile, "a checkpoint from before --freq-profile has none");
    for (k, v) in
        [("dfgpu.epoch", "1"), ("dfgpu.step", "1"), ("dfgpu.rng", "10372713005361070689"), ("dfgpu.input", "crop")]
    {
        assert_eq!(meta.get(k).map(String::as_str), Some(v), "{k}");
    }
    assert!(meta["dfgpu.metrics"].starts_with(r#"{"epoch":1,"train_loss":0.092509,"#), "{}", meta["dfgpu.metrics"]);
    // In the file's order, the model's layout (the old writer's), each with the shape the model gives it.
    let det = Detector::new(cfg).unwrap();
    let names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names.len(), 13);
    assert_eq!((names[0], names[12]), ("freq.stages.0.conv.weight", "freq.stages.0.bn.running_var"));
    for t in &tensors {
        let e = det.params.find(&t.name).or_else(|| det.state.find(&t.name)).unwrap();
        assert_eq!(t.shape, e.shape, "{}", t.name);
    }
    // Values, bit for bit (read from the file's bytes by a separate decoder).
    let bits = |name: &str| -> Vec<u32> {
        let t = tensors.iter().find(|t| t.name == name).unwrap();
        t.data.iter().take(4).map(|x| x.to_bits()).collect()
    };
    assert_eq!(bits("head.fc2.bias"), [0x3d6b9d7d]);
    assert_eq!(bits("head.fc2.weight"), [0x3d657ecf, 0xbea5b911, 0xbc874485, 0x3e561456]);
    assert_eq!(bits("head.fc1.weight"), [0x3cd51fd9, 0x3d0aea9f, 0xbb9217f9, 0x3d3daa3c]);
    assert_eq!(bits("freq.stages.0.bn.running_var"), [0x3f732cc7, 0x3f6f7382, 0x3f7a785a, 0x3f6f901c]);
}
