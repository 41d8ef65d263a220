//! The synthetic set and the datasets: structure, determinism, errors that name the file, and that the fakes
//! carry a spectral trace at all.

use dfgpu::backend::cpu::CpuBackend;
use dfgpu::backend::fft::FftConfig;
use dfgpu::data::folder::Dataset;
use dfgpu::data::input::{load, Input};
use dfgpu::data::synth::{self, SynthConfig};
use dfgpu::train::metrics::auc;
use dfgpu::{Backend, Error, Layout, Tensor};
use std::path::{Path, PathBuf};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dfgpu-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn small(seed: u64) -> SynthConfig {
    SynthConfig { n_real: 6, n_fake: 9, size: 32, seed, ..SynthConfig::default() }
}

#[test]
fn synth_writes_a_folder_dataset_deterministically() {
    let (a, b, c) = (tmp("synth-a"), tmp("synth-b"), tmp("synth-c"));
    assert_eq!(synth::write(&small(1), &a).unwrap(), 15);
    synth::write(&small(1), &b).unwrap();
    synth::write(&small(2), &c).unwrap();
    let ds = Dataset::open(&a).unwrap();
    assert_eq!(ds.counts(), [6, 9]);
    let mut groups: Vec<String> = ds.samples.iter().filter_map(|s| s.group.clone()).collect();
    groups.dedup();
    groups.sort();
    assert_eq!(groups, ["fingerprint", "nearest", "upconv"]);
    for s in &ds.samples {
        let rel = s.path.strip_prefix(&a).unwrap();
        let same = std::fs::read(b.join(rel)).unwrap() == std::fs::read(&s.path).unwrap();
        let other = std::fs::read(c.join(rel)).unwrap() == std::fs::read(&s.path).unwrap();
        assert!(same && !other, "{}", rel.display());
        assert_eq!(load(&s.path, 32, Input::Resize).unwrap().px.len(), 32 * 32 * 3);
    }
    assert!(ds.describe().contains("15 images: 6 real, 9 fake (1 real to 1.50 fake)"), "{}", ds.describe());
    let e = synth::write(&SynthConfig { families: vec!["gan".into()], ..small(1) }, &a).unwrap_err().to_string();
    assert!(e.contains("unknown fake family 'gan'"), "{e}");
}

/// The fakes must carry a trace in the spectrum, or the frequency branch has nothing to find: the mean `log`
/// magnitude of the highest frequencies alone separates the classes.
/// The AUC of the mean log magnitude (channel 0) over `bins` (ky, kx) as a score for "fake", on a small set of
/// `families` at 64 x 64.
fn spectral_auc(families: &[&str], bins: &[(usize, usize)], name: &str) -> f64 {
    let dir = tmp(name);
    let families = families.iter().map(|f| f.to_string()).collect();
    let cfg = SynthConfig { n_real: 60, n_fake: 60, size: 64, seed: 3, families, ..SynthConfig::default() };
    synth::write(&cfg, &dir).unwrap();
    let ds = Dataset::open(&dir).unwrap();
    let n = ds.samples.len();
    let px: Vec<u8> = ds.samples.iter().flat_map(|s| load(&s.path, 64, Input::Resize).unwrap().px).collect();
    let images = Tensor::from_vec(&[n, 64, 64, 3], Layout::Nhwc, px).unwrap();
    let cpu = CpuBackend::new(Default::default());
    let f = cpu.fft_features(&images, &FftConfig::default(), None).unwrap();
    let (w, per) = (33, 6 * 64 * 33);
    let v = f.host::<f32>().unwrap();
    let score: Vec<f32> = (0..n)
        .map(|i| bins.iter().map(|&(ky, kx)| v[i * per + ky * w + kx]).sum::<f32>() / bins.len() as f32)
        .collect();
    let labels: Vec<u8> = ds.samples.iter().map(|s| s.label).collect();
    auc(&score, &labels).unwrap()
}

#[test]
fn synthetic_fakes_carry_a_spectral_trace() {
    // The default families lose high frequencies (above half of Nyquist on both axes); `periodic` adds peaks
    // at a quarter of the sampling rate, (ky, kx) = (+-16, 16): the opposite trace.
    let high: Vec<(usize, usize)> = (16..48).flat_map(|ky| (16..33).map(move |kx| (ky, kx))).collect();
    let a = spectral_auc(&synth::DEFAULT_FAMILIES, &high, "trace");
    assert!(a < 0.2, "high-frequency energy: default fakes weaker than reals, AUC {a}");
    let p = spectral_auc(&["periodic"], &[(16, 16), (48, 16)], "trace-periodic");
    assert!(p > 0.8, "the period-4 peaks: periodic fakes stronger than reals, AUC {p}");
}

#[test]
fn dataset_errors_name_what_is_wrong() {
    let missing = Dataset::open(Path::new("/nonexistent/set")).unwrap_err().to_string();
    assert!(missing.contains("/nonexistent/set: no such folder or file"), "{missing}");

    let d = tmp("no-fake");
    std::fs::create_dir_all(d.join("real")).unwrap();
    let e = Dataset::open(&d).unwrap_err().to_string();
    assert!(e.contains("missing folder 'fake/'"), "{e}");

    std::fs::create_dir_all(d.join("fake/gan1")).unwrap();
    std::fs::write(d.join("fake/gan1/a.png"), b"not an image").unwrap();
    let e = Dataset::open(&d).unwrap_err().to_string();
    assert!(e.contains("no real images (0 real, 1 fake)"), "{e}");

    let e = load(&d.join("fake/gan1/a.png"), 32, Input::Resize).unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e:?}");
    let e = e.to_string();
    assert!(e.contains("fake/gan1/a.png") && e.contains("cannot decode"), "{e}");

    let csv = d.join("set.csv");
    std::fs::write(&csv, "path,label\nfake/gan1/a.png,fake\nreal/gone.jpg,0\n").unwrap();
    let e = Dataset::open(&csv).unwrap_err();
    assert!(matches!(&e, Error::Corrupt { line: Some(3), .. }), "{e:?}");
    let e = e.to_string();
    assert!(e.contains("set.csv:3:") && e.contains("real/gone.jpg does not exist"), "{e}");
    std::fs::write(&csv, "fake/gan1/a.png,maybe\n").unwrap();
    let e = Dataset::open(&csv).unwrap_err().to_string();
    assert!(e.contains("set.csv:1: the first row [\"fake/gan1/a.png\", \"maybe\"] is neither"), "{e}");
    std::fs::write(&csv, "path,label\nfake/gan1/a.png,maybe\n").unwrap();
    let e = Dataset::open(&csv).unwrap_err().to_string();
    assert!(e.contains("set.csv:2: label 'maybe' is not 0, 1, real or fake"), "{e}");
}

#[test]
fn csv_datasets_and_stratified_splits() {
    let d = tmp("csv");
    synth::write(&SynthConfig { n_real: 10, n_fake: 50, ..small(4) }, &d).unwrap();
    let folder = Dataset::open(&d).unwrap();
    let mut text = String::from("path,label,group\n");
    for s in &folder.samples {
        let rel = s.path.strip_prefix(&d).unwrap().display().to_string();
        text += &format!("{rel},{},{}\n", s.label, s.group.clone().unwrap_or_default());
    }
    std::fs::write(d.join("all.csv"), text).unwrap();
    let csv = Dataset::open(&d.join("all.csv")).unwrap();
    assert_eq!(csv.samples, folder.samples);

    let (train, val) = csv.split(0.2, 7).unwrap();
    assert_eq!((train.counts(), val.counts()), ([8, 40], [2, 10]));
    let (_, val2) = csv.split(0.2, 7).unwrap();
    assert_eq!(val.samples, val2.samples, "the same seed gives the same split");
    let (_, val3) = csv.split(0.2, 8).unwrap();
    assert_ne!(val.samples, val3.samples);
}

/// `synth --from`: the images are crops of the user's photos (here three flat colours, so each real image must
/// be one of them), fakes are made from such crops, and an empty or unreadable folder is an error naming it.
#[test]
fn synth_from_photos_crops_them() {
    let photos = tmp("photos");
    std::fs::create_dir_all(photos.join("trip")).unwrap();
    let colours = [[200u8, 30, 30], [30, 200, 30], [30, 30, 200]];
    for (i, c) in colours.iter().enumerate() {
        let (w, h) = (80 + 10 * i as u32, 70);
        image::RgbImage::from_pixel(w, h, image::Rgb(*c)).save(photos.join(format!("trip/p{i}.png"))).unwrap();
    }
    let out = tmp("from-photos");
    let cfg = SynthConfig { from: Some(photos.clone()), ..small(4) };
    assert_eq!(synth::write(&cfg, &out).unwrap(), 15);
    let ds = Dataset::open(&out).unwrap();
    let mut seen = [false; 3];
    for s in ds.samples.iter().filter(|s| s.label == 0) {
        let px = load(&s.path, 32, Input::Resize).unwrap().px;
        let mean = [0, 1, 2].map(|c| px.iter().skip(c).step_by(3).map(|&v| v as f64).sum::<f64>() / (32.0 * 32.0));
        let k = colours
            .iter()
            .position(|col| col.iter().zip(&mean).all(|(&a, &m)| (a as f64 - m).abs() < 6.0))
            .unwrap_or_else(|| panic!("{}: mean colour {mean:?} is none of the photos'", s.path.display()));
        seen[k] = true;
    }
    assert!(seen.iter().filter(|&&x| x).count() >= 2, "crops come from several photos");

    let empty = tmp("no-photos");
    std::fs::create_dir_all(&empty).unwrap();
    let e = synth::write(&SynthConfig { from: Some(empty.clone()), ..small(4) }, &tmp("x")).unwrap_err().to_string();
    assert!(e.contains(&format!("{}: no images", empty.display())), "{e}");
    std::fs::write(empty.join("broken.jpg"), b"no jpeg").unwrap();
    let e = synth::write(&SynthConfig { from: Some(empty), ..small(4) }, &tmp("y")).unwrap_err().to_string();
    assert!(e.contains("broken.jpg: cannot decode"), "{e}");
}
