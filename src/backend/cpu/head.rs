//! Reference for kernels/head.cu: the fusion head's forward and backward (backend/head.rs has the formulas).
//! Generic over the float type so that gradient checks run it in f64.

use super::layers::{self, act, act_grad};
use super::real::Real;
use super::CpuBackend;
use crate::backend::head::{HeadConfig, HeadForward, HeadGrads, HeadInputs, HeadSaved, Mode, LN_EPS};
use crate::backend::Slots;
use crate::error::Result;
use crate::params::ParamLayout;
use crate::tensor::{Element, Layout, Tensor};
use rayon::prelude::*;

/// The forward's outputs, one slice each (shapes as in `HeadSaved`).
pub struct ForwardOut<'a, F> {
    pub logits: &'a mut [F],
    pub z: &'a mut [F],
    pub h: &'a mut [F],
    pub stats: &'a mut [F],
    pub gate: &'a mut [F],
}

/// What the backward reads besides the parameters and inputs: the forward's mode and saved values (shapes as in
/// `HeadSaved`), and d loss / d logit.
pub struct BackwardIn<'a, F> {
    pub mode: Mode,
    pub z: &'a [F],
    pub h: &'a [F],
    pub gate: &'a [F],
    pub dlogits: &'a [F],
}

/// The backward's outputs: parameter gradients (the head's layout) and input gradients.
pub struct BackwardOut<'a, F> {
    pub params: &'a mut [F],
    pub ds: &'a mut [F],
    pub dq: &'a mut [F],
}

fn param<'a, F>(p: &'a [F], l: &ParamLayout, name: &str) -> Option<&'a [F]> {
    l.find(name).map(|e| &p[e.range()])
}

/// y = (x - mean) * rstd * gamma + beta with the row's own statistics (two-pass variance), or y = x without
/// gamma. Returns (mean, rstd).
fn layer_norm<F: Real>(x: &[F], gamma: Option<(&[F], &[F])>, y: &mut [F]) -> (F, F) {
    let Some((g, b)) = gamma else {
        y.copy_from_slice(x);
        return (F::ZERO, F::ONE);
    };
    let n = F::of(x.len() as f64);
    let mean = x.iter().copied().sum::<F>() / n;
    let var = x.iter().map(|&v| (v - mean) * (v - mean)).sum::<F>() / n;
    let rstd = F::ONE / (var + F::of(LN_EPS as f64)).sqrt();
    for k in 0..x.len() {
        y[k] = (x[k] - mean) * rstd * g[k] + b[k];
    }
    (mean, rstd)
}

/// u = [m_s y_s; m_q y_q] for sample `b` (rows s and q); returns the row's statistics [mean_s, rstd_s, mean_q,
/// rstd_q].
fn fused_input<F: Real>(
    cfg: &HeadConfig,
    l: &ParamLayout,
    p: &[F],
    (s, q): (&[F], &[F]),
    mode: Mode,
    b: usize,
    u: &mut [F],
) -> [F; 4] {
    let norm = |name: &str| {
        if cfg.layer_norm {
            param(p, l, &format!("{name}.weight")).zip(param(p, l, &format!("{name}.bias")))
        } else {
            None
        }
    };
    let (us, uq) = u.split_at_mut(cfg.ds);
    let (ms, rs) = layer_norm(s, norm("norm_s"), us);
    let (mq, rq) = layer_norm(q, norm("norm_q"), uq);
    let (bs, bq) = cfg.branch_scales(mode, b);
    us.iter_mut().for_each(|v| *v *= F::of(bs as f64));
    uq.iter_mut().for_each(|v| *v *= F::of(bq as f64));
    [ms, rs, mq, rq]
}

/// One branch's backward through its scale m and LayerNorm: dx from du; adds d gamma and d beta into `gp`
/// at the given offsets. `norm` = (gamma, offset of d gamma, offset of d beta), or None with `norm` off; (mean,
/// rstd) the row's statistics.
fn branch_backward<F: Real>(
    x: &[F],
    du: &[F],
    m: F,
    norm: Option<(&[F], usize, usize)>,
    (mean, rstd): (F, F),
    dx: &mut [F],
    gp: &mut [F],
) {
    let Some((gamma, o_g, o_b)) = norm else {
        dx.iter_mut().zip(du).for_each(|(o, &g)| *o = g * m);
        return;
    };
    let n = F::of(x.len() as f64);
    let (mut sum_dxh, mut sum_dxh_xh) = (F::ZERO, F::ZERO);
    for k in 0..x.len() {
        let (dy, xh) = (du[k] * m, (x[k] - mean) * rstd);
        gp[o_g + k] += dy * xh;
        gp[o_b + k] += dy;
        sum_dxh += dy * gamma[k];
        sum_dxh_xh += dy * gamma[k] * xh;
    }
    for k in 0..x.len() {
        let (dy, xh) = (du[k] * m, (x[k] - mean) * rstd);
        dx[k] = rstd * (dy * gamma[k] - sum_dxh / n - xh * sum_dxh_xh / n);
    }
}

pub fn forward<F: Real>(cfg: &HeadConfig, p: &[F], s: &[F], q: &[F], mode: Mode, out: ForwardOut<F>) {
    forward_with(cfg, p, s, q, mode, out, layers::linear::<F>);
}

/// `forward` with the hidden layer's product through `linear` (the layers' reference, or their fast path).
pub(super) fn forward_with<F: Real>(
    cfg: &HeadConfig,
    p: &[F],
    s: &[F],
    q: &[F],
    mode: Mode,
    out: ForwardOut<F>,
    linear: impl FnOnce(&[F], &[F], &[F], usize, usize, &mut [F]),
) {
    let l = cfg.layout();
    let (d, hid) = (cfg.d(), cfg.hidden);
    let w1 = param(p, &l, "fc1.weight").unwrap();
    let b1 = param(p, &l, "fc1.bias").unwrap();
    let w2 = param(p, &l, "fc2.weight").unwrap();
    let b2 = param(p, &l, "fc2.bias").unwrap()[0];
    let gate_w = param(p, &l, "gate.weight");
    let gate_b = param(p, &l, "gate.bias").map(|g| g[0]);
    let ForwardOut { logits, z, h, stats, gate } = out;
    z.par_chunks_mut(d).zip(stats.par_chunks_mut(4)).zip(gate.par_iter_mut()).enumerate().for_each(
        |(b, ((z, st), g))| {
            let st4 = fused_input(cfg, &l, p, (&s[b * cfg.ds..][..cfg.ds], &q[b * cfg.dq..][..cfg.dq]), mode, b, z);
            st.copy_from_slice(&st4);
            *g = match (gate_w, gate_b) {
                (Some(w), Some(bias)) => (w.iter().zip(z.iter()).map(|(&w, &u)| w * u).sum::<F>() + bias).sigmoid(),
                _ => F::of(0.5),
            };
            let two = F::of(2.0);
            let (gs, gq) = (two * *g, two * (F::ONE - *g));
            z[..cfg.ds].iter_mut().for_each(|v| *v *= gs);
            z[cfg.ds..].iter_mut().for_each(|v| *v *= gq);
        },
    );
    linear(z, w1, b1, d, hid, h);
    logits.par_iter_mut().zip(h.par_chunks(hid)).enumerate().for_each(|(b, (logit, h))| {
        let mut acc = b2;
        for (j, &hj) in h.iter().enumerate() {
            acc += w2[j] * act(cfg.act, hj) * F::of(cfg.keep(mode, b, j) as f64);
        }
        *logit = acc;
    });
}

pub fn backward<F: Real>(cfg: &HeadConfig, p: &[F], s: &[F], q: &[F], input: BackwardIn<F>, out: BackwardOut<F>) {
    backward_with(cfg, p, s, q, input, out, layers::linear_backward::<F>);
}

/// `backward` with the hidden layer's products through `linear_backward` (the layers' reference, or their fast
/// path).
pub(super) fn backward_with<F: Real>(
    cfg: &HeadConfig,
    p: &[F],
    s: &[F],
    q: &[F],
    input: BackwardIn<F>,
    out: BackwardOut<F>,
    linear_backward: impl FnOnce(&[F], &[F], &[F], (usize, usize, usize), &mut [F], &mut [F], &mut [F]),
) {
    let l = cfg.layout();
    let BackwardIn { mode, z: saved_z, h: saved_h, gate: saved_gate, dlogits } = input;
    let (d, hid, nb) = (cfg.d(), cfg.hidden, dlogits.len());
    let w1 = param(p, &l, "fc1.weight").unwrap();
    let w2 = param(p, &l, "fc2.weight").unwrap();
    let off = |name: &str| l.find(name).map(|e| e.offset);
    let BackwardOut { params: gp, ds, dq } = out;
    gp.fill(F::ZERO);

    // Output layer, dropout and activation: dh (B x H).
    let mut dh = vec![F::ZERO; nb * hid];
    let (o_w2, o_b2) = (off("fc2.weight").unwrap(), off("fc2.bias").unwrap());
    for b in 0..nb {
        let dl = dlogits[b];
        gp[o_b2] += dl;
        for j in 0..hid {
            let hj = saved_h[b * hid + j];
            let keep = F::of(cfg.keep(mode, b, j) as f64);
            gp[o_w2 + j] += dl * act(cfg.act, hj) * keep;
            dh[b * hid + j] = dl * w2[j] * keep * act_grad(cfg.act, hj);
        }
    }

    // fc1: db1 = sum_b dh, dW1 = dh^T z, dz = dh W1.
    let (o_w1, o_b1) = (off("fc1.weight").unwrap(), off("fc1.bias").unwrap());
    let mut dz = vec![F::ZERO; nb * d];
    {
        let (head, tail) = gp.split_at_mut(o_b1);
        linear_backward(saved_z, w1, &dh, (nb, d, hid), &mut dz, &mut head[o_w1..o_w1 + hid * d], &mut tail[..hid]);
    }

    // Per sample: the gate, the branch scales, the LayerNorms.
    let mut u = vec![F::ZERO; d];
    let mut du = vec![F::ZERO; d];
    let two = F::of(2.0);
    for b in 0..nb {
        let (sb, qb) = (&s[b * cfg.ds..][..cfg.ds], &q[b * cfg.dq..][..cfg.dq]);
        let st = fused_input(cfg, &l, p, (sb, qb), mode, b, &mut u);
        let g = saved_gate[b];
        let dzb = &dz[b * d..][..d];
        for k in 0..d {
            du[k] = dzb[k] * if k < cfg.ds { two * g } else { two * (F::ONE - g) };
        }
        if let (Some(o_gw), Some(o_gb)) = (off("gate.weight"), off("gate.bias")) {
            let dg: F = (0..d).map(|k| if k < cfg.ds { two * u[k] * dzb[k] } else { -two * u[k] * dzb[k] }).sum();
            let dpre = dg * g * (F::ONE - g);
            let wg = param(p, &l, "gate.weight").unwrap();
            for k in 0..d {
                gp[o_gw + k] += dpre * u[k];
                du[k] += dpre * wg[k];
            }
            gp[o_gb] += dpre;
        }
        let (bs, bq) = cfg.branch_scales(mode, b);
        let norm = |name: &str, len: usize| {
            let (o_g, o_b) = (off(&format!("{name}.weight"))?, off(&format!("{name}.bias"))?);
            Some((&p[o_g..o_g + len], o_g, o_b))
        };
        let (dus, duq) = du.split_at(cfg.ds);
        let dsb = &mut ds[b * cfg.ds..][..cfg.ds];
        branch_backward(sb, dus, F::of(bs as f64), norm("norm_s", cfg.ds), (st[0], st[1]), dsb, gp);
        let dqb = &mut dq[b * cfg.dq..][..cfg.dq];
        branch_backward(qb, duq, F::of(bq as f64), norm("norm_q", cfg.dq), (st[2], st[3]), dqb, gp);
    }
}

/// The backend's head_forward for one float type (arguments checked by the caller; `b` is the batch).
pub(super) fn run_forward<F: Real + Element>(
    be: &CpuBackend,
    x: &HeadInputs,
    mode: Mode,
    b: usize,
) -> Result<HeadForward> {
    run_forward_with(be, x, mode, b, layers::linear::<F>)
}

/// `run_forward` with the hidden layer's product through `linear` (see `forward_with`).
pub(super) fn run_forward_with<F: Real + Element>(
    be: &CpuBackend,
    x: &HeadInputs,
    mode: Mode,
    b: usize,
    linear: impl FnOnce(&[F], &[F], &[F], usize, usize, &mut [F]),
) -> Result<HeadForward> {
    let cfg = x.cfg;
    let (mut logits, mut z, mut h) = (be.output::<F>(b), be.output::<F>(b * cfg.d()), be.output::<F>(b * cfg.hidden));
    let (mut stats, mut gate) = (be.output::<F>(b * 4), be.output::<F>(b));
    let out = ForwardOut { logits: &mut logits, z: &mut z, h: &mut h, stats: &mut stats, gate: &mut gate };
    forward_with(cfg, x.params.host::<F>()?, x.s.host()?, x.q.host()?, mode, out, linear);
    let plain = |shape: &[usize], v: Vec<F>| Tensor::from_vec(shape, Layout::Plain, v);
    Ok(HeadForward {
        logits: plain(&[b], logits)?,
        saved: HeadSaved {
            mode,
            z: plain(&[b, cfg.d()], z)?,
            h: plain(&[b, cfg.hidden], h)?,
            stats: plain(&[b, 4], stats)?,
            gate: plain(&[b], gate)?,
        },
    })
}

/// The backend's head_backward for one float type (arguments checked by the caller; `b` is the batch).
pub(super) fn run_backward<F: Real + Element>(
    be: &CpuBackend,
    x: &HeadInputs,
    saved: &HeadSaved,
    dlogits: &Tensor,
    grads: Slots<1>,
    b: usize,
) -> Result<HeadGrads> {
    run_backward_with(be, x, saved, dlogits, grads, b, layers::linear_backward::<F>)
}

/// `run_backward` with the hidden layer's products through `linear_backward` (see `backward_with`).
pub(super) fn run_backward_with<F: Real + Element>(
    be: &CpuBackend,
    x: &HeadInputs,
    saved: &HeadSaved,
    dlogits: &Tensor,
    grads: Slots<1>,
    b: usize,
    linear_backward: impl FnOnce(&[F], &[F], &[F], (usize, usize, usize), &mut [F], &mut [F], &mut [F]),
) -> Result<HeadGrads> {
    let cfg = x.cfg;
    let (mut ds, mut dq) = (be.output::<F>(b * cfg.ds), be.output::<F>(b * cfg.dq));
    let Slots { buf, at: [at] } = grads;
    let out = BackwardOut { params: &mut buf.host_mut::<F>()?[at], ds: &mut ds, dq: &mut dq };
    let (z, h, gate) = (saved.z.host()?, saved.h.host()?, saved.gate.host()?);
    let input = BackwardIn { mode: saved.mode, z, h, gate, dlogits: dlogits.host()? };
    backward_with(cfg, x.params.host::<F>()?, x.s.host()?, x.q.host()?, input, out, linear_backward);
    Ok(HeadGrads {
        ds: Tensor::from_vec(&[b, cfg.ds], Layout::Plain, ds)?,
        dq: Tensor::from_vec(&[b, cfg.dq], Layout::Plain, dq)?,
    })
}
