//! The CPU backend's fast f32 paths, one file per op family as beside them: the same contracts as the
//! references in ../ (which stay the oracle for f64 gradient checks and for the GPU), checked against them op by
//! op in tests/ops.

pub mod conv;
pub mod fft;
pub mod layers;
mod math;
pub mod norm;
pub mod optim;
pub mod preprocess;

use std::mem::MaybeUninit;

/// Values per rayon task in element-wise passes: 64 KiB of f32, large enough that the task overhead vanishes,
/// small enough that every large tensor gives both cores many tasks.
const GRAIN: usize = 1 << 14;

/// The fewest items of `size` values each that one rayon task takes (about GRAIN values), so that a small tensor
/// stays on the calling thread: rayon splits no further than that, and a job it does not split never leaves the
/// caller, where handing it to the pool (a wake-up and a wait) would cost more than the job.
fn min_items(size: usize) -> usize {
    GRAIN.div_ceil(size.max(1))
}

/// Where a matrix product goes: values, or uninitialized values, which only beta = 0 may be given
/// (matrixmultiply reads C only when beta is not 0).
trait Dest {
    const UNINIT: bool;
    fn raw(&mut self) -> (*mut f32, usize);
}

impl Dest for [f32] {
    const UNINIT: bool = false;
    fn raw(&mut self) -> (*mut f32, usize) {
        (self.as_mut_ptr(), self.len())
    }
}

impl Dest for [MaybeUninit<f32>] {
    const UNINIT: bool = true;
    fn raw(&mut self) -> (*mut f32, usize) {
        (self.as_mut_ptr().cast(), self.len())
    }
}

/// C (m x n, row stride ldc) = A (m x k) B (k x n) + beta C, with A and B given by (row stride, column stride).
fn sgemm<C: Dest + ?Sized>(
    (m, k, n): (usize, usize, usize),
    a: &[f32],
    (rsa, csa): (usize, usize),
    b: &[f32],
    (rsb, csb): (usize, usize),
    beta: f32,
    (c, ldc): (&mut C, usize),
) {
    let (cp, clen) = c.raw();
    assert!(m == 0 || (m - 1) * rsa + (k.max(1) - 1) * csa < a.len().max(1));
    assert!(k == 0 || (k - 1) * rsb + (n.max(1) - 1) * csb < b.len().max(1));
    assert!(m == 0 || n == 0 || (m - 1) * ldc + n <= clen);
    assert!(beta == 0.0 || !C::UNINIT, "beta {beta} would read uninitialized values");
    // SAFETY: the asserts above keep every index of A, B and C inside its slice, and C is read only where it holds
    // values; C does not alias A or B (a &mut slice).
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa as isize,
            csa as isize,
            b.as_ptr(),
            rsb as isize,
            csb as isize,
            beta,
            cp,
            ldc as isize,
            1,
        )
    }
}

/// `buf` zeroed, as values: for the kernels that add into their output.
fn zeroed(buf: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    buf.fill(MaybeUninit::new(0.0));
    // SAFETY: every value was just written.
    unsafe { &mut *(buf as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// Defines a function whose body is compiled for the widest vector instructions the CPU has (AVX-512, or AVX2
/// with FMA; else as built, SSE2 on x86-64), chosen at run time: its loops, and what they call that is inlined,
/// vectorize at that width. Results do not change: the same IEEE operations in the same order, only more lanes
/// at once (mul_add is exact on every path, and nothing is contracted into one that the code does not write).
macro_rules! widest {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn avx512($($arg: $ty),*) {
                    body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) {
                    body($($arg),*)
                }
                if is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F.
                    return unsafe { avx512($($arg),*) };
                }
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has AVX2 and FMA.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}
use widest;
