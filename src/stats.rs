//! Streamed statistics of rows of numbers, shared by the model's fitted tests and the trainer.

/// Per-column mean and population standard deviation of rows given one at a time (Welford's update, in f64):
/// how the spectral baseline standardizes its features, `--freq-profile` its ring profile, and the peak test its
/// bins and its join.
#[derive(Clone, Debug)]
pub struct Moments {
    pub count: u64,
    pub mean: Vec<f64>,
    m2: Vec<f64>,
}

impl Moments {
    pub fn new(columns: usize) -> Self {
        Moments { count: 0, mean: vec![0.0; columns], m2: vec![0.0; columns] }
    }

    pub fn add(&mut self, row: impl ExactSizeIterator<Item = f64>) {
        assert_eq!(row.len(), self.mean.len(), "a row of another width");
        self.count += 1;
        let n = self.count as f64;
        for ((v, mean), m2) in row.zip(&mut self.mean).zip(&mut self.m2) {
            let delta = v - *mean;
            *mean += delta / n;
            *m2 += delta * (v - *mean);
        }
    }

    pub fn std(&self) -> Vec<f64> {
        self.m2.iter().map(|m2| (m2 / self.count.max(1) as f64).sqrt()).collect()
    }

    /// 1 / standard deviation, the deviation floored at `floor`; 0 for a column that does not vary.
    pub fn inv_std(&self, floor: f64) -> Vec<f64> {
        self.std().iter().map(|&s| if s > 0.0 { 1.0 / s.max(floor) } else { 0.0 }).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Moments;
    use crate::rng::Rng;

    #[test]
    fn moments_match_the_two_pass_formulas() {
        let mut rng = Rng::new(5);
        let x: Vec<[f64; 3]> = (0..200).map(|_| [3.0 + 2.0 * rng.normal(), -1.0 + 0.5 * rng.normal(), 7.0]).collect();
        let mut m = Moments::new(3);
        x.iter().for_each(|r| m.add(r.iter().map(|v| v + 1e6)));
        let n = x.len() as f64;
        for j in 0..3 {
            let mean = x.iter().map(|r| r[j] + 1e6).sum::<f64>() / n;
            let var = x.iter().map(|r| (r[j] + 1e6 - mean).powi(2)).sum::<f64>() / n;
            approx::assert_relative_eq!(m.mean[j], mean, max_relative = 1e-14);
            // Shifted by 1e6, a sum of squares minus a squared sum would lose all but a few digits.
            approx::assert_abs_diff_eq!(m.std()[j], var.sqrt(), epsilon = 1e-8);
        }
        assert_eq!(m.count, x.len() as u64);
    }
}
