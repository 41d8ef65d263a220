//! dfgpu spectrum: ring averages against planes with known rings; the built-in fakes' trace is found.

use dfgpu::backend::cpu::CpuBackend;
use dfgpu::data::synth::{self, SynthConfig};
use dfgpu::train::spectrum::{radial_mean, spectra, summary, write_png};

#[test]
fn ring_averages_of_known_planes() {
    let n = 16;
    assert!(radial_mean(&vec![2.5; n * n], n).iter().all(|&v| v == 2.5));
    // Each bin holds its own distance from the centre: ring r averages values that round to r.
    let c = (n / 2) as f64;
    let plane: Vec<f64> = (0..n * n).map(|i| ((i / n) as f64 - c).hypot((i % n) as f64 - c)).collect();
    for (r, v) in radial_mean(&plane, n).iter().enumerate() {
        assert!((v - r as f64).abs() <= 0.5, "ring {r}: {v}");
    }
}

#[test]
fn the_built_in_fakes_show_a_trace_in_the_figure_and_the_table() {
    let dir = std::env::temp_dir().join(format!("dfgpu-test-spectrum-{}", std::process::id()));
    synth::write(&SynthConfig { n_real: 20, n_fake: 40, size: 32, seed: 2, ..SynthConfig::default() }, &dir).unwrap();
    let s = spectra(&CpuBackend::new(Default::default()), &dir, 32).unwrap();
    assert_eq!(s.counts, [20, 40]);
    let text = summary(&s);
    assert!(text.contains("a spectral trace the frequency branch can use"), "{text}");
    // Downsampling and upsampling remove high frequencies: the fakes' outer rings are weaker.
    let last = s.radial[0].len() - 1;
    assert!(s.radial[1][last - 2] < s.radial[0][last - 2], "{text}");
    let png = dir.join("spectrum.png");
    write_png(&s, &png).unwrap();
    let img = image::open(&png).unwrap();
    assert_eq!(img.height() as usize, 32 * 3);
}
