//! `dfgpu spectrum`: do the fakes carry a spectral trace at all? The mean log-magnitude spectrum of each class
//! (luma, zero frequency at the centre), their difference, and the azimuthally averaged spectrum of each class
//! (Durall et al. 2020), computed with the training FFT op, written as one PNG and summarized as text.
//!
//! The PNG, left to right: mean real spectrum, mean fake spectrum (grey: dark low, light high), their difference
//! fake - real (blue: fakes weaker there, red: stronger), and the azimuthal averages from the centre (left) to
//! the corner frequencies (right), real in blue and fake in red.

use crate::backend::fft::{rings, ProfileDims, SpectrumLayout, LUMA_SPECTRUM};
use crate::backend::Backend;
use crate::error::Result;
use crate::model::freq::ring_profile;
use crate::plot::{self, Canvas, Series};
use crate::tensor::{DType, Tensor};

use crate::data::input::Input;
use crate::data::loaded::Loaded;
use crate::data::open::open_data;
use std::path::Path;

pub struct Spectra {
    pub size: usize,
    /// Mean log magnitude per bin (size x size, centred), per class: [real, fake].
    pub mean: [Vec<f64>; 2],
    /// Mean over rings of radius r = 0, 1, ... (rounded distance from the centre), per class.
    pub radial: [Vec<f64>; 2],
    pub counts: [usize; 2],
}

/// The spectra of a dataset's two classes at `size` x `size`: of the images' centre crops or of the images resized,
/// by `input`.
pub fn spectra(be: &dyn Backend, data: &Path, size: usize, input: Input) -> Result<Spectra> {
    let loaded = open_data(data, size, input, &mut |l| println!("{l}"))?;
    let plane = size * size;
    let mut sum = [vec![0f64; plane], vec![0f64; plane]];
    let mut counts = [0usize; 2];
    each_spectrum(be, &loaded, |i, spectrum| {
        let c = loaded.labels[i] as usize;
        counts[c] += 1;
        sum[c].iter_mut().zip(spectrum).for_each(|(s, &m)| *s += m as f64);
    })?;
    let mean = [0, 1].map(|c| sum[c].iter().map(|s| s / counts[c].max(1) as f64).collect::<Vec<f64>>());
    let radial = [0, 1].map(|c| radial_mean(&mean[c], size));
    Ok(Spectra { size, mean, radial, counts })
}

/// Runs `f` on each batch of 64 of the images' validation input (the centre crop, or resized), uploaded: their
/// indices and the batch.
pub(crate) fn in_batches(
    be: &dyn Backend,
    loaded: &Loaded,
    mut f: impl FnMut(&[usize], Tensor) -> Result<()>,
) -> Result<()> {
    let all: Vec<usize> = (0..loaded.len()).collect();
    for idx in all.chunks(64) {
        f(idx, be.upload(&loaded.batch(idx, None)?.0)?)?;
    }
    Ok(())
}

/// Hands `f` each image's log-magnitude spectrum of its luma (size x size, zero frequency at the centre), image
/// after image, computed with the training FFT op on the images' validation input (the centre crop, or resized).
pub fn each_spectrum(be: &dyn Backend, loaded: &Loaded, mut f: impl FnMut(usize, &[f32])) -> Result<()> {
    let plane = loaded.size * loaded.size;
    in_batches(be, loaded, |idx, x| {
        let out = be.download(&be.fft_features(&x, &LUMA_SPECTRUM, None)?)?;
        let v = out.host::<f32>()?;
        // Planes per image: the luma's magnitude, then its phase.
        idx.iter().enumerate().for_each(|(k, &i)| f(i, &v[k * 2 * plane..][..plane]));
        Ok(())
    })
}

/// Hands `f` each image's ring profile (`freq::ring_profile`, not standardized: the mean log magnitude of its
/// luma per ring), image after image, on the images' validation input.
pub fn each_profile(be: &dyn Backend, loaded: &Loaded, mut f: impl FnMut(usize, &[f32])) -> Result<()> {
    let r = rings(loaded.size);
    in_batches(be, loaded, |idx, x| {
        let out = be.download(&ring_profile(be, &x, None, DType::F32)?)?;
        idx.iter().zip(out.host::<f32>()?.chunks(r)).for_each(|(&i, row)| f(i, row));
        Ok(())
    })
}

/// The mean over each ring (`fft::ring_of`: the frequency radius rounded) of a size x size plane with the zero
/// frequency at the centre (size / 2, size / 2), rings 0 to `fft::rings(size)` - 1.
pub fn radial_mean(plane: &[f64], size: usize) -> Vec<f64> {
    let d = ProfileDims {
        n: 1,
        planes: 1,
        s: 1,
        out_h: size,
        out_w: size,
        rings: rings(size),
        layout: SpectrumLayout::Shifted,
    };
    let (mut s, mut n) = (vec![0.0; d.rings], vec![0usize; d.rings]);
    for (&v, r) in plane.iter().zip(d.ring_per_bin()) {
        s[r] += v;
        n[r] += 1;
    }
    s.iter().zip(&n).filter(|(_, &k)| k > 0).map(|(v, &k)| v / k as f64).collect()
}

fn grey(v: f64, lo: f64, hi: f64) -> [u8; 3] {
    let t = ((v - lo) / (hi - lo).max(1e-12)).clamp(0.0, 1.0);
    [(t * 255.0) as u8; 3]
}

fn diverging(v: f64, m: f64) -> [u8; 3] {
    let t = (v / m.max(1e-12)).clamp(-1.0, 1.0);
    let f = |a: f64| (255.0 * (1.0 - a)) as u8;
    if t >= 0.0 {
        [255, f(t), f(t)]
    } else {
        [f(-t), f(-t), 255]
    }
}

/// Writes the figure described in the module documentation.
pub fn write_png(s: &Spectra, out: &Path) -> Result<()> {
    let n = s.size;
    let scale = (256 / n).max(1);
    let p = n * scale;
    let (gap, top, plot_w) = (12, 18, 420.max(p * 3 / 2));
    let mut c = Canvas::new(3 * (p + gap) + plot_w, (p + top + 4).max(300));
    let all = s.mean[0].iter().chain(&s.mean[1]);
    let (lo, hi) = all.fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let diff: Vec<f64> = s.mean[1].iter().zip(&s.mean[0]).map(|(f, r)| f - r).collect();
    let dmax = diff.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    type Shade<'a> = Box<dyn Fn(usize) -> plot::Rgb + 'a>;
    let panels: [(&str, Shade); 3] = [
        ("MEAN REAL", Box::new(|i| grey(s.mean[0][i], lo, hi))),
        ("MEAN FAKE", Box::new(|i| grey(s.mean[1][i], lo, hi))),
        ("FAKE - REAL", Box::new(|i| diverging(diff[i], dmax))),
    ];
    for (k, (title, color)) in panels.iter().enumerate() {
        let x0 = k * (p + gap);
        c.text(x0 as i64 + 2, 4, title, 1, plot::BLACK);
        for y in 0..p {
            for x in 0..p {
                c.set((x0 + x) as i64, (top + y) as i64, color((y / scale) * n + x / scale));
            }
        }
    }
    let ring = |k: usize| s.radial[k].iter().enumerate().map(|(r, &v)| (r as f64, v)).collect::<Vec<_>>();
    let f = plot::Frame {
        x: (3 * (p + gap)) as i64,
        y: 0,
        w: plot_w as i64,
        h: c.h as i64,
        title: "MEAN LOG MAGNITUDE PER RING".into(),
        x_label: "RING (CENTRE TO CORNER)".into(),
    };
    plot::line_chart(
        &mut c,
        &f,
        &[Series::new("REAL", plot::BLUE, ring(0)), Series::new("FAKE", plot::RED, ring(1))],
        None,
        None,
    );
    c.save(out)
}

/// A few lines a person reads first: where the classes differ most, ring by ring.
pub fn summary(s: &Spectra) -> String {
    let [r, f] = &s.radial;
    let n = r.len().min(f.len());
    let mut out = format!(
        "{} real and {} fake images at {}x{} (luma, mean log magnitude per ring, centre to corner):\n",
        s.counts[0], s.counts[1], s.size, s.size
    );
    out += "  ring   real     fake     fake-real\n";
    let mut rings: Vec<usize> = (0..n).step_by((n / 8).max(1)).chain([n - 1]).collect();
    rings.dedup();
    for i in rings {
        out += &format!("  {i:>4} {:>8.4} {:>8.4} {:>+9.4}\n", r[i], f[i], f[i] - r[i]);
    }
    let (k, d) = (0..n).map(|i| (i, f[i] - r[i])).max_by(|a, b| a.1.abs().total_cmp(&b.1.abs())).unwrap_or((0, 0.0));
    out += &format!(
        "  the classes differ most at ring {k} of {n} ({d:+.4}): {}",
        if d.abs() < 0.02 { "no clear spectral trace" } else { "a spectral trace the frequency branch can use" }
    );
    out
}
