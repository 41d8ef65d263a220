//! dfgpu spectrum: ring averages against planes with known rings; the built-in fakes' trace is found.

use dfgpu::backend::cpu::CpuBackend;
use dfgpu::data::input::Input;
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
    let s = spectra(&CpuBackend::new(Default::default()), &dir, 32, Input::Crop).unwrap();
    assert_eq!(s.counts, [20, 40]);
    let text = summary(&s);
    assert!(text.contains("a spectral trace the frequency branch can use"), "{text}");
    // Downsampling and upsampling remove high frequencies: the fakes' outer rings are weaker.
    let last = s.radial[0].len() - 1;
    assert!(s.radial[1][last - 2] < s.radial[0][last - 2], "{text}");
    let png = dir.join("spectrum.png");
    write_png(&s, &png).unwrap();
    let img = image::open(&png).unwrap().to_rgb8();
    // Panels of 256 pixels (32 x 8) with 12 between, below an 18-pixel title; then the ring plot.
    assert_eq!((img.width(), img.height()), (3 * (256 + 12) + 420, 300));
    let count = |x0: u32, x1: u32, want: fn(&image::Rgb<u8>) -> bool| {
        (x0..x1).flat_map(|x| (18..274).map(move |y| (x, y))).filter(|&(x, y)| want(img.get_pixel(x, y))).count()
    };
    // The difference panel is mostly blue (fakes weaker), and the ring plot has both classes' lines.
    let blue = |p: &image::Rgb<u8>| p[2] == 255 && p[0] < 200;
    assert!(count(2 * 268, 2 * 268 + 256, blue) > 256 * 256 / 4);
    assert!(count(3 * 268, 3 * 268 + 420, |p| *p == image::Rgb(dfgpu::plot::RED)) > 100);
    assert!(count(3 * 268, 3 * 268 + 420, |p| *p == image::Rgb(dfgpu::plot::BLUE)) > 100);
}
