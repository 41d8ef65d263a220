//! Self-fakes: every method leaves a trace that `dfgpu spectrum` shows; a batch labels them fake, draws them
//! from the image's seed, and never touches a fake or an image outside training.

use dfgpu::backend::cpu::CpuBackend;
use dfgpu::data::augment::{jpeg_round_trip, Augment};
use dfgpu::data::input::Input;
use dfgpu::data::loaded::{Loaded, Pixels};
use dfgpu::data::self_fake::{make_with, METHODS};
use dfgpu::data::synth::real_image;
use dfgpu::rng::Rng;
use dfgpu::train::spectrum::spectra;
use image::RgbImage;

const SIZE: usize = 64;

fn real(seed: u64) -> Vec<u8> {
    let img = real_image(SIZE, &mut Rng::new(seed));
    img.px.iter().map(|v| (v * 255.0).round() as u8).collect()
}

fn save(px: &[u8], path: &std::path::Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    RgbImage::from_raw(SIZE as u32, SIZE as u32, px.to_vec()).unwrap().save(path).unwrap();
}

/// The largest difference of the classes' ring averages in `dfgpu spectrum` (mean log magnitude).
fn largest_ring_difference(dir: &std::path::Path) -> f64 {
    let s = spectra(&CpuBackend::new(Default::default()), dir, SIZE, Input::Crop).unwrap();
    let [r, f] = &s.radial;
    r.iter().zip(f).map(|(r, f)| (f - r).abs()).fold(0.0, f64::max)
}

#[test]
fn every_method_leaves_a_spectral_trace() {
    // The control: other reals, JPEG-compressed alone, as "fakes": what chance alone gives.
    let control = std::env::temp_dir().join(format!("dfgpu-test-self-fake-{}-control", std::process::id()));
    for i in 0..24u64 {
        let mut rng = Rng::new(100 + i);
        for (class, seed) in [("real", i), ("fake/jpeg", 1000 + i)] {
            let r = RgbImage::from_raw(SIZE as u32, SIZE as u32, real(seed)).unwrap();
            save(
                jpeg_round_trip(&r, 60 + rng.below(36) as u8).unwrap().as_raw(),
                &control.join(format!("{class}/{i}.png")),
            );
        }
    }
    let control = largest_ring_difference(&control);
    for method in METHODS {
        let dir = std::env::temp_dir().join(format!("dfgpu-test-self-fake-{}-{method:?}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for i in 0..24u64 {
            let mut rng = Rng::new(100 + i);
            // Both classes JPEG-compressed in the same range: the trace is the method's, not JPEG's.
            let r = RgbImage::from_raw(SIZE as u32, SIZE as u32, real(i)).unwrap();
            let r = jpeg_round_trip(&r, 60 + rng.below(36) as u8).unwrap();
            save(r.as_raw(), &dir.join(format!("real/{i}.png")));
            let mut f = real(1000 + i);
            make_with(&mut f, SIZE, method, &mut rng).unwrap();
            save(&f, &dir.join(format!("fake/{method:?}/{i}.png")));
        }
        // Measured: the control differs by 0.05 at most (other images), every method by 0.48 to 0.61.
        let d = largest_ring_difference(&dir);
        assert!(d > 4.0 * control, "{method:?}: {d} against {control} for other reals alone");
    }
}

#[test]
fn a_batch_labels_self_fakes_fake_and_draws_them_from_the_seed() {
    let n = 8;
    let px: Vec<u8> = (0..n as u64).flat_map(real).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i >= 6) as u8).collect(); // 6 real, 2 fake
    let data = Loaded::new(SIZE, Pixels::Owned(px), labels.clone(), vec![None; n]);
    let idx: Vec<usize> = (0..n).collect();
    let all = Augment { self_fakes: 1.0, ..Augment::NONE };
    let (x, y) = data.batch(&idx, Some((&all, 7))).unwrap();
    assert_eq!(y.host::<f32>().unwrap(), &[1.0; 8]);
    let per = SIZE * SIZE * 3;
    let got = x.host::<u8>().unwrap();
    for i in 0..n {
        let same = &got[i * per..(i + 1) * per] == data.image(i).unwrap();
        // Every real became a self-fake; the fakes are as they were.
        assert_eq!(same, i >= 6, "image {i}");
    }
    assert_eq!(
        data.batch(&idx, Some((&all, 7))).unwrap().0.host::<u8>().unwrap(),
        got,
        "the same seed, the same fakes"
    );
    assert_ne!(data.batch(&idx, Some((&all, 8))).unwrap().0.host::<u8>().unwrap(), got);
    // Without it, or outside training, nothing changes.
    for aug in [Some((&Augment::NONE, 7)), None] {
        let (x, y) = data.batch(&idx, aug).unwrap();
        assert_eq!(y.host::<f32>().unwrap(), labels.iter().map(|&l| l as f32).collect::<Vec<_>>());
        assert!(x.host::<u8>().unwrap().chunks(per).enumerate().all(|(i, p)| p == data.image(i).unwrap()));
    }
    // About the asked share of the reals.
    let half = Augment { self_fakes: 0.5, ..Augment::NONE };
    let made: f32 = (0..40)
        .map(|s| data.batch(&idx[..6], Some((&half, s * 8))).unwrap().1.host::<f32>().unwrap().iter().sum::<f32>())
        .sum();
    assert!((90.0..=150.0).contains(&made), "{made} of 240");
}
