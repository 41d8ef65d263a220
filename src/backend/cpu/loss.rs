//! Reference for kernels/loss.cu: per-sample loss and d loss / d logit, mean over the batch, confusion counts.
//! Generic over the float type so that gradient checks run it in f64.

use super::real::Real;
use crate::backend::loss::{Confusion, LossConfig, LossKind};

/// (loss, d loss / d x) of one sample with logit `x` and label `label` (0 real, 1 fake), unscaled by 1/B.
pub fn sample<F: Real>(cfg: &LossConfig, x: F, label: F) -> (F, F) {
    let eps = F::of(cfg.smoothing as f64);
    let half = F::of(0.5);
    let y = label * (F::ONE - eps) + eps * half;
    let (w0, w1) = (F::of(cfg.weights[0] as f64), F::of(cfg.weights[1] as f64));
    let (p, q) = (x.sigmoid(), (-x).sigmoid()); // p = P(fake), q = 1 - p without cancellation
    let (ln_p, ln_q) = (-(-x).softplus(), -x.softplus());
    let (f1, d1, f0, d0) = match cfg.kind {
        LossKind::Bce => (-ln_p, -q, -ln_q, p),
        LossKind::Focal { alpha, gamma } => {
            let (a, g) = (F::of(alpha as f64), F::of(gamma as f64));
            let (qg, pg) = (q.powf(g), p.powf(g));
            let f1 = -a * qg * ln_p;
            let d1 = a * qg * (g * p * ln_p - q);
            let f0 = -(F::ONE - a) * pg * ln_q;
            let d0 = (F::ONE - a) * pg * (p - g * q * ln_q);
            (f1, d1, f0, d0)
        }
    };
    (w1 * y * f1 + w0 * (F::ONE - y) * f0, w1 * y * d1 + w0 * (F::ONE - y) * d0)
}

/// Mean loss over the batch; writes d(mean loss)/d logit into `dlogits`; counts the confusion with "fake"
/// predicted where the logit is >= `threshold_logit` (`loss::threshold_logit`).
pub fn loss<F: Real>(
    cfg: &LossConfig,
    logits: &[F],
    labels: &[F],
    threshold_logit: f32,
    dlogits: &mut [F],
) -> (F, Confusion) {
    let inv_b = F::ONE / F::of(logits.len() as f64);
    let mut total = F::ZERO;
    let mut c = Confusion::default();
    for ((&x, &y), d) in logits.iter().zip(labels).zip(dlogits.iter_mut()) {
        let (l, g) = sample(cfg, x, y);
        total += l;
        *d = g * inv_b;
        let (fake, said_fake) = (y.f64() >= 0.5, x.f64() >= threshold_logit as f64);
        match (fake, said_fake) {
            (true, true) => c.tp += 1,
            (false, true) => c.fp += 1,
            (false, false) => c.tn += 1,
            (true, false) => c.fn_ += 1,
        }
    }
    (total * inv_b, c)
}
