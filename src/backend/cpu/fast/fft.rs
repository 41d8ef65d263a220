//! The fast FFT features of the CPU backend, checked against the reference (../fft.rs) in tests/ops/fft.rs.
//! rustfft's transforms, planned once per size, in f64 as the reference: at the sizes the model runs they cost
//! little beside the per-bin logs and angles, and f64 keeps the phases of small bins exact to f32, which an
//! f32 transform would not (a bin 1e-5 below DC carries 1e-3 of itself in f32 rounding). The real rows go two
//! at a time through one complex transform; only the half spectrum's columns are transformed, and the other
//! half (the `shifted` layout) follows from the symmetry of a real input's spectrum. Each bin is then rounded to
//! f32 and its magnitude, log and angle taken in f32 (half the time of f64's libm calls), within a few ulps.

use crate::backend::cpu::fft::{write_spectrum, Pixels};
use crate::backend::fft::{FftConfig, FftDims};
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

/// One thread's buffers: row pairs, the half spectrum (column by column), the transforms' scratch.
#[derive(Default)]
struct Buffers {
    pairs: Vec<Complex<f64>>,
    half: Vec<Complex<f64>>,
    scratch: Vec<Complex<f64>>,
}

thread_local! {
    static BUFFERS: RefCell<Buffers> = RefCell::new(Buffers::default());
}

fn sized(v: &mut Vec<Complex<f64>>, len: usize) -> &mut [Complex<f64>] {
    v.resize(len, Complex::default());
    &mut v[..len]
}

/// Same contract as the reference's `features`.
pub fn features(px: &Pixels, d: &FftDims, cfg: &FftConfig, stats: Option<&[f32]>, out: &mut [f32]) {
    let (rows, cols) = (plan(d.w), plan(d.h));
    out.par_chunks_mut(d.planes * d.plane_len()).enumerate().for_each(|(i, img)| {
        BUFFERS.with(|b| {
            let b = &mut *b.borrow_mut();
            for s in 0..d.s {
                let plane = px.plane(d, cfg.grayscale, i, s);
                let half = half_spectrum(&plane, d, &*rows, &*cols, b);
                let hw = d.w / 2 + 1;
                // Bins past the half come from the symmetry of a real input: F[ky][kx] = conj F[-ky][-kx].
                let bin = |ky: usize, kx: usize| {
                    let v = if kx < hw { half[kx * d.h + ky] } else { half[(d.w - kx) * d.h + (d.h - ky) % d.h].conj() };
                    (v.re as f32, v.im as f32)
                };
                write_spectrum(d, cfg, stats, s, bin, img);
            }
        })
    });
}

/// The DFT's columns kx = 0 ..= W/2 of an H x W real plane, column after column (bin (ky, kx) at kx H + ky).
fn half_spectrum<'a>(plane: &[f64], d: &FftDims, rows: &dyn Fft<f64>, cols: &dyn Fft<f64>, b: &'a mut Buffers) -> &'a [Complex<f64>] {
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
    half
}
