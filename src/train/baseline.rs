//! The spectral baseline that `dfgpu holdout` scores beside the detector on every held-out group: a logistic
//! regression on each image's azimuthally averaged log spectrum (Durall et al. 2020), of the luma of the input
//! the detector validates on (the centre crop, or the image resized). It is fitted on the run's training images:
//! standardized features, each class weighing half, an L2 penalty of C = 1 (scikit-learn's StandardScaler, then
//! LogisticRegression(class_weight="balanced")), so that the figure can be set beside one made that way. A
//! detector that scores below it on a generator it never saw has learned its training generators rather than
//! what they have in common.
//!
//! Beside it, the spectral peak test (model/peak.rs), a one-class test that sees no fake at all, is fitted here on
//! a run's training reals (`fit_peak`).

use crate::backend::cpu::real::Real;
use crate::backend::fft::STD_FLOOR;
use crate::backend::Backend;
use crate::data::loaded::Loaded;
use crate::error::{Error, Result};
use crate::model::peak::PeakTest;
use crate::stats::Moments;
use crate::train::spectrum::{each_profile, each_spectrum};

/// Each image's mean log magnitude per ring (`spectrum::each_profile`), in order.
pub fn features(be: &dyn Backend, data: &Loaded) -> Result<Vec<Vec<f64>>> {
    let mut out = vec![Vec::new(); data.len()];
    each_profile(be, data, |i, row| out[i] = row.iter().map(|&v| v as f64).collect())?;
    Ok(out)
}

/// The fewest reals the spectral peak test is fitted on: a standard deviation needs two.
pub const PEAK_MIN_REALS: usize = 2;

/// The spectral peak test (model/peak.rs) fitted on the reals of `data`, at least PEAK_MIN_REALS of them (their
/// validation input, as the baseline's features); `data` may hold fakes, which it leaves out.
pub fn fit_peak(be: &dyn Backend, data: &Loaded) -> Result<PeakTest> {
    let reals: Vec<usize> = (0..data.len()).filter(|&i| data.labels[i] == 0).collect();
    if reals.len() < PEAK_MIN_REALS {
        return Err(Error::Invalid(format!(
            "the spectral peak test is fitted on at least {PEAK_MIN_REALS} real images: given {}",
            reals.len()
        )));
    }
    let mut m = Moments::new(data.size * data.size);
    each_spectrum(be, &data.subset(&reals), |_, s| m.add(s.iter().map(|&v| v as f64)))?;
    Ok(PeakTest::new(&m.mean, &m.inv_std(STD_FLOOR as f64)))
}

/// A fitted logistic regression: standardized features, weights, bias last.
#[derive(Clone, Debug)]
pub struct Logistic {
    mean: Vec<f64>,
    /// 1 / standard deviation; 0 for a feature that does not vary.
    inv_std: Vec<f64>,
    w: Vec<f64>,
}

impl Logistic {
    /// Minimizes sum_i c_i BCE(w . z_i + b, y_i) + |w|^2 / 2 (the bias free) over the standardized features z,
    /// with c = n / (2 n_class): each class weighs half, as scikit-learn's class_weight="balanced". Newton's
    /// method with step halving; the penalty makes the problem strictly convex even for separable classes.
    pub fn fit(x: &[Vec<f64>], labels: &[u8]) -> Result<Logistic> {
        let n = x.len();
        let counts = [0u8, 1].map(|c| labels.iter().filter(|&&l| l == c).count());
        if counts.contains(&0) || labels.len() != n {
            return Err(Error::Invalid(format!(
                "the spectral baseline needs both classes to fit: {} real, {} fake",
                counts[0], counts[1]
            )));
        }
        let d = x[0].len();
        if let Some(r) = x.iter().find(|r| r.len() != d) {
            return Err(Error::Shape(format!("spectral features of {} and {d} values", r.len())));
        }
        let mut moments = Moments::new(d);
        x.iter().for_each(|r| moments.add(r.iter().copied()));
        let inv_std = moments.inv_std(0.0);
        let mean = moments.mean;
        let mut model = Logistic { mean, inv_std, w: vec![0.0; d + 1] };
        let z: Vec<Vec<f64>> = x.iter().map(|r| model.standardized(r)).collect();
        let weight = counts.map(|c| n as f64 / (2.0 * c as f64));
        let mut loss = objective(&model.w, &z, labels, weight);
        for _ in 0..100 {
            let (g, mut h) = gradient_and_hessian(&model.w, &z, labels, weight);
            // A touch on the diagonal keeps the bias's row positive when every probability saturates.
            (0..=d).for_each(|j| h[j * (d + 1) + j] += 1e-9);
            let step = solve_spd(h, g, d + 1)?;
            let mut t = 1.0;
            let next = loop {
                let w: Vec<f64> = model.w.iter().zip(&step).map(|(w, s)| w - t * s).collect();
                let l = objective(&w, &z, labels, weight);
                if l <= loss || t < 1e-12 {
                    break (w, l);
                }
                t /= 2.0;
            };
            let moved = next.0.iter().zip(&model.w).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
            (model.w, loss) = next;
            if moved < 1e-10 {
                break;
            }
        }
        Ok(model)
    }

    fn standardized(&self, x: &[f64]) -> Vec<f64> {
        let z = x.iter().zip(&self.mean).zip(&self.inv_std).map(|((v, m), s)| (v - m) * s);
        z.chain([1.0]).collect()
    }

    /// The logit of "fake" for one image's features.
    pub fn score(&self, x: &[f64]) -> f64 {
        self.standardized(x).iter().zip(&self.w).map(|(z, w)| z * w).sum()
    }
}

/// The weighted loss plus the penalty, at weights `w` (bias last) on standardized, bias-extended rows `z`.
fn objective(w: &[f64], z: &[Vec<f64>], labels: &[u8], weight: [f64; 2]) -> f64 {
    let d = w.len() - 1;
    let penalty = w[..d].iter().map(|v| v * v).sum::<f64>() / 2.0;
    let data: f64 = z
        .iter()
        .zip(labels)
        .map(|(zi, &y)| {
            let t: f64 = zi.iter().zip(w).map(|(a, b)| a * b).sum();
            // BCE with logits: softplus(t) - y t.
            weight[y as usize] * (t.softplus() - y as f64 * t)
        })
        .sum();
    data + penalty
}

/// The objective's gradient and its Hessian (row-major, (d + 1)^2).
fn gradient_and_hessian(w: &[f64], z: &[Vec<f64>], labels: &[u8], weight: [f64; 2]) -> (Vec<f64>, Vec<f64>) {
    let k = w.len();
    let mut g: Vec<f64> = w.to_vec();
    g[k - 1] = 0.0;
    let mut h = vec![0.0; k * k];
    (0..k - 1).for_each(|j| h[j * k + j] = 1.0);
    for (zi, &y) in z.iter().zip(labels) {
        let p = zi.iter().zip(w).map(|(a, b)| a * b).sum::<f64>().sigmoid();
        let c = weight[y as usize];
        let (gi, hi) = (c * (p - y as f64), c * p * (1.0 - p));
        for a in 0..k {
            g[a] += gi * zi[a];
            for b in 0..k {
                h[a * k + b] += hi * zi[a] * zi[b];
            }
        }
    }
    (g, h)
}

/// x with A x = b, A symmetric positive definite (k x k, row-major), by Cholesky.
fn solve_spd(mut a: Vec<f64>, mut b: Vec<f64>, k: usize) -> Result<Vec<f64>> {
    for j in 0..k {
        let diag = a[j * k + j] - (0..j).map(|p| a[j * k + p] * a[j * k + p]).sum::<f64>();
        if diag <= 0.0 || !diag.is_finite() {
            return Err(Error::Invalid("the spectral baseline's fit is not positive definite".into()));
        }
        let l = diag.sqrt();
        a[j * k + j] = l;
        for i in j + 1..k {
            let s = a[i * k + j] - (0..j).map(|p| a[i * k + p] * a[j * k + p]).sum::<f64>();
            a[i * k + j] = s / l;
        }
    }
    // L y = b, then L^T x = y.
    for i in 0..k {
        b[i] = (b[i] - (0..i).map(|p| a[i * k + p] * b[p]).sum::<f64>()) / a[i * k + i];
    }
    for i in (0..k).rev() {
        b[i] = (b[i] - (i + 1..k).map(|p| a[p * k + i] * b[p]).sum::<f64>()) / a[i * k + i];
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Two overlapping Gaussian classes in 3 features, 1 real to 3 fakes, the third feature constant.
    fn data(seed: u64) -> (Vec<Vec<f64>>, Vec<u8>) {
        let mut rng = Rng::new(seed);
        let mut normal = || {
            let (u, v) = (rng.uniform_f64().max(1e-12), rng.uniform_f64());
            (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
        };
        let labels: Vec<u8> = (0..200).map(|i| (i % 4 != 0) as u8).collect();
        let x = labels
            .iter()
            .map(|&y| vec![3.0 + 2.0 * normal() + y as f64, -1.0 + 0.5 * normal() - 0.3 * y as f64, 7.0])
            .collect();
        (x, labels)
    }

    #[test]
    fn the_fit_is_where_the_objective_is_flat() {
        let (x, labels) = data(1);
        let m = Logistic::fit(&x, &labels).unwrap();
        let z: Vec<Vec<f64>> = x.iter().map(|r| m.standardized(r)).collect();
        let weight = [200.0 / 100.0, 200.0 / 300.0];
        // Central differences of the objective itself, not of the gradient the fit uses.
        let h = 1e-5;
        for j in 0..m.w.len() {
            let at = |d: f64| {
                let mut w = m.w.clone();
                w[j] += d;
                objective(&w, &z, &labels, weight)
            };
            let slope = (at(h) - at(-h)) / (2.0 * h);
            approx::assert_abs_diff_eq!(slope, 0.0, epsilon = 1e-5);
            assert!(at(1e-3) > at(0.0) && at(-1e-3) > at(0.0), "weight {j} is not at a minimum");
        }
        // The constant feature gets no weight, the informative ones the signs of their class shifts.
        assert_eq!(m.w[2], 0.0);
        assert!(m.w[0] > 0.0 && m.w[1] < 0.0, "{:?}", m.w);
    }

    #[test]
    fn balanced_weights_centre_the_scores_between_the_classes() {
        // One feature, the classes at -1 and +1 with equal spread but 1 to 3 in number: balanced weights put the
        // boundary midway (score 0 at feature 0) whatever the ratio.
        let x: Vec<Vec<f64>> =
            (0..400).map(|i| vec![if i % 4 == 0 { -1.0 } else { 1.0 } + ((i / 4) % 5) as f64 - 2.0]).collect();
        let labels: Vec<u8> = (0..400).map(|i| (i % 4 != 0) as u8).collect();
        let m = Logistic::fit(&x, &labels).unwrap();
        approx::assert_abs_diff_eq!(m.score(&[0.0]), 0.0, epsilon = 1e-9);
        assert!(m.score(&[1.0]) > 0.0 && m.score(&[-1.0]) < 0.0);
    }

    #[test]
    fn one_class_is_refused() {
        let e = Logistic::fit(&[vec![1.0], vec![2.0]], &[1, 1]).unwrap_err().to_string();
        assert!(e.contains("both classes") && e.contains("0 real, 2 fake"), "{e}");
    }

    #[test]
    fn cholesky_solves_what_it_is_given() {
        let a = vec![4.0, 2.0, 0.6, 2.0, 5.0, 1.0, 0.6, 1.0, 3.0];
        let x = [1.5, -2.0, 0.25];
        let b: Vec<f64> = (0..3).map(|i| (0..3).map(|j| a[i * 3 + j] * x[j]).sum()).collect();
        let got = solve_spd(a, b, 3).unwrap();
        for (g, want) in got.iter().zip(x) {
            approx::assert_abs_diff_eq!(*g, want, epsilon = 1e-12);
        }
        assert!(solve_spd(vec![1.0, 2.0, 2.0, 1.0], vec![1.0, 1.0], 2).is_err(), "not positive definite");
    }

    #[test]
    fn the_peak_test_finds_a_periodic_trace_it_never_saw() {
        use crate::backend::cpu::CpuBackend;
        use crate::data::loaded::{Loaded, Pixels};
        // Reals: grey noise, 30 levels in standard deviation. Fakes: the same plus a cosine of period 4 along x,
        // 60 levels in amplitude: about 7 000 in its bins against about 480 for the noise's typical bin.
        let (size, n) = (16, 60);
        let mut rng = Rng::new(3);
        let mut image = |fake: bool| -> Vec<u8> {
            let mut px = Vec::with_capacity(size * size * 3);
            for i in 0..size * size {
                let (u, v) = (rng.uniform_f64().max(1e-12), rng.uniform_f64());
                let noise = 30.0 * (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
                let wave = if fake { 60.0 * (std::f64::consts::FRAC_PI_2 * (i % size) as f64).cos() } else { 0.0 };
                px.extend([(128.0 + noise + wave).round().clamp(0.0, 255.0) as u8; 3]);
            }
            px
        };
        let labels: Vec<u8> = (0..n).map(|i| (i >= 40) as u8).collect();
        let px: Vec<u8> = labels.iter().flat_map(|&l| image(l == 1)).collect();
        let data = Loaded::new(size, Pixels::Owned(px), labels, vec![None; n]);
        let be = CpuBackend::new(Default::default());
        // Fitted on the first 30 (reals), fakes among the images it is given being left out.
        let t = fit_peak(&be, &data.subset(&(0..30).chain(45..50).collect::<Vec<_>>())).unwrap();
        assert_eq!(t, fit_peak(&be, &data.subset(&(0..30).collect::<Vec<_>>())).unwrap());
        let s = t.scores(&be, &data.batch(&(30..n).collect::<Vec<_>>(), None).unwrap().0).unwrap();
        let (reals, fakes) = s.split_at(10);
        let top_real = reals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        assert!(fakes.iter().all(|&f| f > top_real + 1.0), "reals {reals:?}, fakes {fakes:?}");
        // Fitted on fewer than 2 reals, or scoring images of another size, is refused.
        let e = fit_peak(&be, &data.subset(&[0, 45, 46])).unwrap_err().to_string();
        assert!(e.contains("at least 2 real images: given 1"), "{e}");
        let larger = Loaded::new(32, Pixels::Owned(vec![0; 32 * 32 * 3]), vec![0], vec![None]);
        let e = t.scores(&be, &larger.batch(&[0], None).unwrap().0).unwrap_err().to_string();
        assert!(e.contains("256 bins") && e.contains("32x32"), "{e}");
    }
}
