//! The fast FFT features of the CPU backend, checked against the reference (../fft.rs) in tests/ops/fft.rs.
//! rustfft's transforms, planned once per size, in f64 as the reference: at the sizes the model runs they cost
//! little beside the per-bin logs and angles, and f64 keeps the phases of small bins exact to f32, which an
//! f32 transform would not (a bin 1e-5 below DC carries 1e-3 of itself in f32 rounding). The real rows go two
//! at a time through one complex transform; only the half spectrum's columns are transformed, and the other
//! half (the `shifted` layout) follows from the symmetry of a real input's spectrum. Each bin is then rounded to
//! f32, and its magnitude, log and angle taken in f32 passes that vectorize (math.rs), within a few ulps: libm's
//! f64 logs and angles took most of the reference's time.

use super::math::{atan2, ln_positive};
use super::widest;
use crate::backend::cpu::fft::{spectrum_bin, FftImages};
use crate::backend::fft::{FftConfig, FftDims, Magnitude, Phase, LOG_CENTER, LOG_EPS, LOG_SCALE};
use rayon::prelude::*;
use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};
use std::cell::RefCell;
use std::sync::{Arc, Mutex, OnceLock};

/// The forward transform of size n. The planner keeps every plan it made, so each size is planned once.
fn plan(n: usize) -> Arc<dyn Fft<f64>> {
    static PLANNER: OnceLock<Mutex<FftPlanner<f64>>> = OnceLock::new();
    let planner = PLANNER.get_or_init(|| Mutex::new(FftPlanner::new()));
    planner.lock().unwrap_or_else(|e| e.into_inner()).plan_fft_forward(n)
}

/// One thread's buffers: row pairs, the half spectrum (column by column), the transforms' scratch, and one
/// plane's bins in output order as f32 (real, imaginary parts).
#[derive(Default)]
struct Buffers {
    pairs: Vec<Complex<f64>>,
    half: Vec<Complex<f64>>,
    scratch: Vec<Complex<f64>>,
    re: Vec<f32>,
    im: Vec<f32>,
}

thread_local! {
    static BUFFERS: RefCell<Buffers> = RefCell::new(Buffers::default());
}

fn sized(v: &mut Vec<Complex<f64>>, len: usize) -> &mut [Complex<f64>] {
    v.resize(len, Complex::default());
    &mut v[..len]
}

/// Same contract as the reference's `features`.
pub fn features(px: &FftImages, d: &FftDims, cfg: &FftConfig, stats: Option<&[f32]>, out: &mut [f32]) {
    let (rows, cols) = (plan(d.w), plan(d.h));
    out.par_chunks_mut(d.planes * d.plane_len()).enumerate().for_each(|(i, img)| {
        BUFFERS.with(|b| {
            let b = &mut *b.borrow_mut();
            for s in 0..d.s {
                let plane = px.plane(d, cfg.grayscale, i, s);
                half_spectrum(&plane, d, &*rows, &*cols, b);
                output_bins(d, cfg, b);
                write_planes(d, cfg, stats, s, &b.re, &b.im, img);
            }
        })
    });
}

/// b.re and b.im: the bins of the plane in output order, from the half spectrum in b.half (the other half from
/// the symmetry of a real input's spectrum, F[ky][kx] = conj F[-ky][-kx]), rounded to f32, with the imaginary
/// parts of the real bins set to 0 as in the reference.
fn output_bins(d: &FftDims, cfg: &FftConfig, b: &mut Buffers) {
    let hw = d.w / 2 + 1;
    b.re.resize(d.plane_len(), 0.0);
    b.im.resize(d.plane_len(), 0.0);
    for oy in 0..d.out_h {
        for ox in 0..d.out_w {
            let (ky, kx) = spectrum_bin(d, cfg.layout, oy, ox);
            let v = if kx < hw { b.half[kx * d.h + ky] } else { b.half[(d.w - kx) * d.h + (d.h - ky) % d.h].conj() };
            let o = oy * d.out_w + ox;
            b.re[o] = v.re as f32;
            b.im[o] = if d.is_real_bin(ky, kx) { 0.0 } else { v.im as f32 };
        }
    }
}

/// b.half: the DFT's columns kx = 0 ..= W/2 of an H x W real plane, column after column (bin (ky, kx) at
/// kx H + ky).
fn half_spectrum(plane: &[f64], d: &FftDims, rows: &dyn Fft<f64>, cols: &dyn Fft<f64>, b: &mut Buffers) {
    let (h, w, hw) = (d.h, d.w, d.w / 2 + 1);
    // Rows 2p and 2p + 1 as the real and imaginary parts of pair p (an odd last row pairs with zeros).
    let pairs = sized(&mut b.pairs, h.div_ceil(2) * w);
    for (p, z) in pairs.chunks_exact_mut(w).enumerate() {
        let lo = &plane[2 * p * w..][..w];
        let hi = plane.get((2 * p + 1) * w..(2 * p + 2) * w);
        for (j, z) in z.iter_mut().enumerate() {
            *z = Complex::new(lo[j], hi.map_or(0.0, |r| r[j]));
        }
    }
    let need = rows.get_inplace_scratch_len().max(cols.get_inplace_scratch_len());
    let scratch = sized(&mut b.scratch, need);
    rows.process_with_scratch(pairs, scratch);
    // Z = X + iY for real rows x, y: X[k] = (Z[k] + conj Z[-k]) / 2, Y[k] = (Z[k] - conj Z[-k]) / 2i.
    let half = sized(&mut b.half, hw * h);
    for (p, z) in pairs.chunks_exact(w).enumerate() {
        for k in 0..hw {
            let (a, c) = (z[k], z[(w - k) % w].conj());
            half[k * h + 2 * p] = (a + c) * 0.5;
            if 2 * p + 1 < h {
                half[k * h + 2 * p + 1] = Complex::new(a.im - c.im, c.re - a.re) * 0.5;
            }
        }
    }
    cols.process_with_scratch(half, scratch);
}

widest! {
    /// Spectrum s's magnitude and phase planes in `img` from its bins (re, im), as the reference computes them,
    /// in f32 passes that vectorize: the magnitudes first, the phases from them, then the magnitudes' log in place.
    fn write_planes(d: &FftDims, cfg: &FftConfig, stats: Option<&[f32]>, s: usize, re: &[f32], im: &[f32], img: &mut [f32]) {
        let n = d.plane_len();
        let (mags, phases) = img.split_at_mut(d.s * n);
        let mag = &mut mags[s * n..][..n];
        let scale = 1.0 / ((d.h * d.w) as f32).sqrt();
        let log = move |m: f32| (ln_positive(m * scale + LOG_EPS) - LOG_CENTER) / LOG_SCALE;
        mag.iter_mut().zip(re.iter().zip(im)).for_each(|(m, (&a, &b))| *m = (a * a + b * b).sqrt());
        match cfg.phase {
            Phase::Angle => {
                let angle = &mut phases[s * n..][..n];
                angle.iter_mut().zip(re.iter().zip(im)).for_each(|(o, (&a, &b))| *o = atan2(b, a) / std::f32::consts::PI);
            }
            Phase::CosSin => {
                let (cos, sin) = phases.split_at_mut(d.s * n);
                let (cos, sin) = (&mut cos[s * n..][..n], &mut sin[s * n..][..n]);
                for ((c, sn), ((&a, &b), &m)) in cos.iter_mut().zip(sin.iter_mut()).zip(re.iter().zip(im).zip(mag.iter())) {
                    (*c, *sn) = if m > 0.0 { (a / m, b / m) } else { (1.0, 0.0) };
                }
            }
        }
        match cfg.magnitude {
            Magnitude::Raw => {}
            Magnitude::Log => mag.iter_mut().for_each(|m| *m = log(*m)),
            Magnitude::LogStd => {
                let st = stats.expect("log-std without statistics (the op's check lets none through)");
                let (mean, std) = (&st[s * n..][..n], &st[d.stats_len() + s * n..][..n]);
                mag.iter_mut().zip(mean.iter().zip(std)).for_each(|(m, (&mu, &sd))| *m = (log(*m) - mu) / sd);
            }
        }
    }
}
