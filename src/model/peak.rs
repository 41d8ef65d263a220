//! The spectral peak test a detector carries beside its network, and how the two are joined.
//!
//! The test sees no fake: it learns each frequency's log magnitude over the training reals (mean and standard
//! deviation per bin of the luma spectrum) and scores an image by its most anomalous frequency, the largest
//! z-score over the bins. A network learns the direction its training fakes depart from the reals in (the
//! built-in families all lose high frequencies) and calls a generator that departs the other way (a periodic
//! trace that adds a peak) more real than the reals; a test fitted on reals alone cannot learn a direction
//! (docs/generalization-study.md). `Join` puts the two on one scale: each score standardized over the validation
//! reals, the larger taken. Training fits the test before its first step (train/baseline.rs `fit_peak`) and the
//! join at each validation; a checkpoint keeps both, so that eval, predict and holdout score with what the run
//! saved.

use crate::backend::fft::{check, FftConfig, LUMA_SPECTRUM};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::checkpoint::Named;
use crate::stats::Moments;
use crate::tensor::Tensor;
use std::path::Path;

/// Per bin of the luma log spectrum (size x size, zero frequency at the centre): the training reals' mean and
/// 1 / standard deviation (the deviation floored at STD_FLOOR, as `--freq-profile`'s, so that a bin that barely
/// varies does not take the max; 0 for a bin that does not vary at all, which the score leaves out). Both are kept at f32
/// precision, as the checkpoint stores them: a loaded test scores exactly as the one the run fitted.
#[derive(Clone, Debug, PartialEq)]
pub struct PeakTest {
    mean: Vec<f64>,
    inv_std: Vec<f64>,
}

/// The checkpoint's names of the test's two tensors.
const MEAN: &str = "peak.mean";
const INV_STD: &str = "peak.inv_std";
/// The checkpoint's metadata key of the join: four numbers.
pub const JOIN_KEY: &str = "dfgpu.peak_join";

/// The spectrum the test reads.
const SPECTRUM: FftConfig = LUMA_SPECTRUM;

impl PeakTest {
    /// From the reals' per-bin mean and 1 / standard deviation (floored, 0 where it does not vary).
    pub fn new(mean: &[f64], inv_std: &[f64]) -> PeakTest {
        let f32_exact = |v: &[f64]| v.iter().map(|&x| x as f32 as f64).collect();
        PeakTest { mean: f32_exact(mean), inv_std: f32_exact(inv_std) }
    }

    /// An image's score: its largest z-score over the bins that vary.
    pub fn score(&self, spectrum: &[f32]) -> f64 {
        let bins = spectrum.iter().zip(&self.mean).zip(&self.inv_std).filter(|(_, &s)| s > 0.0);
        bins.map(|((&v, m), s)| (v as f64 - m) * s).fold(f64::NEG_INFINITY, f64::max)
    }

    /// The scores of a batch of square images on the backend (as `Backend::fft_features` takes them), in order.
    pub fn scores(&self, be: &dyn Backend, images: &Tensor) -> Result<Vec<f64>> {
        let d = check(images, &SPECTRUM, None)?;
        let plane = d.h * d.w;
        if d.h != d.w || plane != self.mean.len() {
            return Err(Error::Shape(format!(
                "the spectral peak test was fitted on {} bins, the images are {}x{}",
                self.mean.len(),
                d.h,
                d.w
            )));
        }
        let out = be.download(&be.fft_features(images, &SPECTRUM, None)?)?;
        // Planes per image: the luma's magnitude, then its phase.
        Ok(out.host::<f32>()?.chunks(2 * plane).map(|p| self.score(&p[..plane])).collect())
    }

    /// The checkpoint's tensors of the test.
    pub fn tensors(&self) -> [Named; 2] {
        [(MEAN, &self.mean), (INV_STD, &self.inv_std)].map(|(name, v)| Named {
            name: name.into(),
            shape: vec![v.len()],
            data: v.iter().map(|&x| x as f32).collect(),
        })
    }

    /// The test a checkpoint's tensors hold (`find` looks one up by name), for a model of `side` x `side`
    /// images; None when it holds neither (a run without reals to fit on, or an earlier dfgpu).
    pub fn from_tensors<'a>(
        find: impl Fn(&str) -> Option<&'a Named>,
        side: usize,
        path: &Path,
    ) -> Result<Option<PeakTest>> {
        match (find(MEAN), find(INV_STD)) {
            (None, None) => Ok(None),
            (Some(m), Some(s)) if m.data.len() == s.data.len() => {
                if m.data.len() != side * side {
                    return Err(Error::Invalid(format!(
                        "{}: a spectral peak test of {} bins for a model of {side} x {side} images",
                        path.display(),
                        m.data.len()
                    )));
                }
                let wide = |t: &Named| t.data.iter().map(|&v| v as f64).collect();
                Ok(Some(PeakTest { mean: wide(m), inv_std: wide(s) }))
            }
            (m, s) => Err(Error::Invalid(format!(
                "{}: the spectral peak test's tensors '{MEAN}' and '{INV_STD}' hold {} and {} values: both, of as \
                 many bins, or neither",
                path.display(),
                m.map_or(0, |t| t.data.len()),
                s.map_or(0, |t| t.data.len())
            ))),
        }
    }
}

/// The detector's logit and the peak score on one scale: each standardized by its mean and standard deviation
/// over the validation reals (images neither was fitted on), the larger taken, so that an image is as suspect as
/// the test that finds it furthest from the reals makes it. The score is a z-value, not a probability.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Join {
    /// (mean, standard deviation) of the logits, then of the peak scores, over the reals.
    logit: (f64, f64),
    peak: (f64, f64),
}

impl Join {
    /// Fitted on the reals' logits and peak scores (the same images, in order); refused when either does not vary
    /// (a collapsed detector's constant logits cannot be standardized).
    pub fn fit(logits: &[f64], peaks: &[f64]) -> Result<Join> {
        if logits.len() != peaks.len() || logits.len() < 2 {
            return Err(Error::Shape(format!(
                "joining by the logits of {} reals and the peak scores of {} (the same reals, at least 2)",
                logits.len(),
                peaks.len()
            )));
        }
        let standard = |v: &[f64]| {
            let mut m = Moments::new(1);
            v.iter().for_each(|&x| m.add([x].into_iter()));
            match m.std()[0] {
                std if std > 0.0 => Ok((m.mean[0], std)),
                _ => Err(Error::Invalid(format!(
                    "the {} reals' scores are all {}: nothing to standardize by",
                    v.len(),
                    m.mean[0]
                ))),
            }
        };
        Ok(Join { logit: standard(logits)?, peak: standard(peaks)? })
    }

    /// The joined score of an image's logit and peak score; NaN if either is (f64::max would drop it).
    pub fn score(&self, logit: f64, peak: f64) -> f64 {
        let (a, b) = ((logit - self.logit.0) / self.logit.1, (peak - self.peak.0) / self.peak.1);
        if a.is_nan() || b.is_nan() {
            f64::NAN
        } else {
            a.max(b)
        }
    }

    /// As the checkpoint's metadata keeps it: the four numbers, each printed so that it reads back exactly.
    pub fn to_meta(&self) -> String {
        format!("{} {} {} {}", self.logit.0, self.logit.1, self.peak.0, self.peak.1)
    }

    pub fn from_meta(text: &str, path: &Path) -> Result<Join> {
        let v: Vec<f64> = text.split(' ').map(str::parse).collect::<std::result::Result<_, _>>().unwrap_or_default();
        match v[..] {
            [lm, ls, pm, ps] if ls > 0.0 && ps > 0.0 && v.iter().all(|x| x.is_finite()) => {
                Ok(Join { logit: (lm, ls), peak: (pm, ps) })
            }
            _ => Err(Error::Invalid(format!(
                "{}: metadata '{JOIN_KEY}' is '{text}': four numbers expected (the logits' mean and standard \
                 deviation over the validation reals, then the peak scores')",
                path.display()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_score_is_the_largest_z_over_the_bins_that_vary() {
        // Standard deviations 0.5, 2, none (a constant bin, left out: whatever the value) and 1.
        let t = PeakTest::new(&[1.0, -2.0, 0.5, 3.0], &[2.0, 0.5, 0.0, 1.0]);
        approx::assert_abs_diff_eq!(t.score(&[1.25, 0.0, 100.0, 2.0]), 1.0, epsilon = 1e-12);
        // A deficit everywhere still scores its least negative bin: the test looks for excess only.
        approx::assert_abs_diff_eq!(t.score(&[0.0, -4.0, 0.5, 1.0]), -1.0, epsilon = 1e-12);
    }

    /// The score against math: a naive f64 DFT of the luma (BT.601 of the pixels / 255), its log magnitude as
    /// the FFT op defines it, the zero frequency at the centre, then the largest z over the bins.
    #[test]
    fn scores_read_the_centred_log_spectrum_of_the_luma() {
        use crate::backend::cpu::{fft::log_magnitude, CpuBackend};
        use crate::rng::Rng;
        use crate::tensor::Layout;
        let (n, side) = (3, 16);
        let plane = side * side;
        let mut rng = Rng::new(11);
        let px: Vec<u8> = (0..n * plane * 3).map(|_| rng.below(256) as u8).collect();
        let mean: Vec<f64> = (0..plane).map(|_| rng.uniform_f64() - 0.5).collect();
        let inv_std: Vec<f64> = (0..plane).map(|k| if k % 7 == 3 { 0.0 } else { 0.5 + rng.uniform_f64() }).collect();
        let t = PeakTest::new(&mean, &inv_std);
        let images = Tensor::from_vec(&[n, side, side, 3], Layout::Nhwc, px.clone()).unwrap();
        let got = t.scores(&CpuBackend::new(Default::default()), &images).unwrap();
        for (i, g) in got.iter().enumerate() {
            let luma: Vec<f64> = px[i * plane * 3..][..plane * 3]
                .chunks(3)
                .map(|c| (0.299 * c[0] as f64 + 0.587 * c[1] as f64 + 0.114 * c[2] as f64) / 255.0)
                .collect();
            let mut want = f64::NEG_INFINITY;
            for (ky, kx) in (0..side).flat_map(|ky| (0..side).map(move |kx| (ky, kx))) {
                let (mut re, mut im) = (0.0, 0.0);
                for (p, v) in luma.iter().enumerate() {
                    let a =
                        -std::f64::consts::TAU * ((ky * (p / side)) as f64 + (kx * (p % side)) as f64) / side as f64;
                    (re, im) = (re + v * a.cos(), im + v * a.sin());
                }
                let bin = (ky + side / 2) % side * side + (kx + side / 2) % side;
                if t.inv_std[bin] > 0.0 {
                    let z = (log_magnitude(re.hypot(im), side, side) - t.mean[bin]) * t.inv_std[bin];
                    want = want.max(z);
                }
            }
            approx::assert_abs_diff_eq!(*g, want, epsilon = 1e-4);
        }
    }

    #[test]
    fn a_test_reads_back_from_its_tensors_exactly() {
        let t = PeakTest::new(&[0.1, 1.0 / 3.0, 2.0, -7.25], &[1.0 / 0.3, 0.0, 7.0, 0.4]);
        let [m, s] = t.tensors();
        let path = Path::new("x.safetensors");
        let both = |n: &str| [&m, &s].into_iter().find(|t| t.name == n);
        assert_eq!(PeakTest::from_tensors(both, 2, path).unwrap(), Some(t));
        assert_eq!(PeakTest::from_tensors(|_| None, 2, path).unwrap(), None);
        let e = PeakTest::from_tensors(|n| (n == MEAN).then_some(&m), 2, path).unwrap_err().to_string();
        assert!(e.contains("x.safetensors") && e.contains("hold 4 and 0 values"), "{e}");
        let e = PeakTest::from_tensors(both, 3, path).unwrap_err().to_string();
        assert!(
            e.contains("x.safetensors") && e.contains("a spectral peak test of 4 bins for a model of 3 x 3"),
            "{e}"
        );
    }

    #[test]
    fn the_join_takes_the_test_that_finds_an_image_furthest_from_the_reals() {
        // Logits over the reals: mean 0, std 1; peak scores: mean 10, std 2.
        let j = Join::fit(&[-1.0, 1.0, -1.0, 1.0], &[8.0, 12.0, 8.0, 12.0]).unwrap();
        for ((z, p), want) in [(3.0, 10.0), (0.0, 18.0), (-2.0, 6.0)].into_iter().zip([3.0, 4.0, -2.0]) {
            approx::assert_abs_diff_eq!(j.score(z, p), want, epsilon = 1e-12);
        }
        assert!(j.score(f64::NAN, 30.0).is_nan() && j.score(30.0, f64::NAN).is_nan(), "a NaN is not dropped");
        let path = Path::new("x.safetensors");
        assert_eq!(Join::from_meta(&j.to_meta(), path).unwrap(), j);
        let odd = Join::fit(&[0.1, 0.7, 1.0 / 3.0], &[2.0, 2.5, 9.0]).unwrap();
        assert_eq!(Join::from_meta(&odd.to_meta(), path).unwrap(), odd, "read back to the last bit");
        assert!(Join::fit(&[1.0], &[1.0]).is_err());
        assert!(Join::fit(&[1.0, 2.0], &[1.0]).is_err());
        let e = Join::fit(&[2.0, 2.0], &[1.0, 3.0]).unwrap_err().to_string();
        assert!(e.contains("the 2 reals' scores are all 2"), "{e}");
        for bad in ["", "1 2 3", "0 0 1 1", "1 2 3 x", "1 2 3 4 x", "1 x 2 3 4", "1 2 3 NaN", "1 2 3 4 5"] {
            let e = Join::from_meta(bad, path).unwrap_err().to_string();
            assert!(e.contains("x.safetensors") && e.contains(JOIN_KEY), "{bad}: {e}");
        }
    }
}
