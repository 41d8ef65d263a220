//! Elementary f32 functions for the fast paths, branch-free so that loops over them vectorize (libm's calls do
//! not): Cephes' polynomials (Moshier), within 2 ulps on their domains. Each is checked through the ops that use
//! it, against the references in f64 (tests/ops/layers.rs, tests/ops/fft.rs).

use std::f32::consts::{FRAC_PI_2, FRAC_PI_4, PI};

/// ln 2 in two parts (Cody and Waite): LN2_HI = 355 / 512 exactly, whose products with small integers are exact,
/// and the rest.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

/// c[0] x^(N-1) + ... + c[N-1], by Horner's rule.
#[inline(always)]
fn horner<const N: usize>(x: f32, c: [f32; N]) -> f32 {
    c.iter().fold(0.0, |acc, &k| acc * x + k)
}

/// e^a for a <= 0 (Cephes' expf: a = n ln 2 + r with |r| <= ln 2 / 2, e^r by a degree-7 polynomial, 2^n put into
/// the exponent bits): within 2 ulps, branch-free so that loops over it vectorize. Below -87.3 the result
/// would leave f32's normal range: it is 0 there. NaN stays NaN.
#[inline(always)]
pub fn exp_nonpositive(a: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // Adding and subtracting 1.5 x 2^23 rounds to an integer, which then sits in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let b = if a < -87.3 { -87.3 } else { a };
    let t = b * LOG2E + ROUND;
    let n = t - ROUND;
    let r = b - n * LN2_HI - n * LN2_LO;
    let p = horner(r, [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5, 1.0, 1.0]);
    // 2^n: n + 127 into the exponent field (t's low bits hold n + 0x40_0000, which the shift drops).
    let scale = f32::from_bits(t.to_bits().wrapping_add(127u32.wrapping_sub(0x4B40_0000)) << 23);
    if a < -87.3 {
        0.0
    } else {
        p * scale
    }
}

/// ln x for positive normal x (Cephes' logf: x = m 2^e with m in [sqrt(1/2), sqrt(2)), ln m by a polynomial in
/// m - 1, e ln 2 in two parts).
#[inline(always)]
pub fn ln_positive(x: f32) -> f32 {
    let bits = x.to_bits();
    // m in [1, 2) from the mantissa; halved (and e raised) above sqrt(2).
    let m = f32::from_bits((bits & 0x007F_FFFF) | 0x3F80_0000);
    let big = m > std::f32::consts::SQRT_2;
    let f = if big { 0.5 * m } else { m } - 1.0;
    let e = ((bits >> 23) as i32 - 127 + big as i32) as f32;
    let z = f * f;
    let p = horner(
        f,
        [
            7.037_683_6e-2,
            -1.151_461e-1,
            1.167_699_9e-1,
            -1.242_014_1e-1,
            1.424_932_3e-1,
            -1.666_805_8e-1,
            2.000_071_4e-1,
            -2.499_999_4e-1,
            3.333_333e-1,
        ],
    );
    let y = p * f * z + LN2_LO * e - 0.5 * z;
    f + y + LN2_HI * e
}

/// The angle of (x, y) in [-pi, pi], as f32::atan2 (signed zeros included); 0 at the origin.
#[inline(always)]
pub fn atan2(y: f32, x: f32) -> f32 {
    let (ax, ay) = (x.abs(), y.abs());
    // atan of t = min / max in [0, 1], reduced to |t| <= tan(pi / 8) around pi / 4 (Cephes' atanf).
    let swap = ay > ax;
    let (num, den) = if swap { (ax, ay) } else { (ay, ax) };
    let t = if den > 0.0 { num / den } else { 0.0 };
    let reduce = t > 0.414_213_57;
    let u = if reduce { (t - 1.0) / (t + 1.0) } else { t };
    let z = u * u;
    let p = horner(z, [8.053_744_5e-2, -1.387_768_6e-1, 1.997_771_1e-1, -3.333_295e-1]) * z * u + u;
    let a = if reduce { p + FRAC_PI_4 } else { p };
    let a = if swap { FRAC_PI_2 - a } else { a };
    let a = if x.is_sign_negative() { PI - a } else { a };
    a.copysign(y)
}
