//! The CPU backend's fast f32 paths, one file per op family as beside them: the same contracts as the
//! references in ../ (which stay the oracle for f64 gradient checks and for the GPU), checked against them op by
//! op in tests/ops.

pub mod conv;
pub mod fft;
pub mod layers;
pub mod norm;

/// Values per rayon task in element-wise passes: 64 KiB of f32, large enough that the task overhead vanishes,
/// small enough that every large tensor gives both cores many tasks.
const GRAIN: usize = 1 << 14;

/// Runs f compiled for the widest vector instructions the CPU has (AVX-512, or AVX2), else as built (SSE2 on
/// x86-64): the loops inlined into f vectorize at that width. Results do not change: the same IEEE operations
/// in the same order (no fused multiply-adds, whose rounding would differ), only more lanes at once.
#[inline(always)]
fn simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn avx512<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        #[target_feature(enable = "avx2")]
        fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if std::env::var("NOSIMD").is_err() {
        if is_x86_feature_detected!("avx512f") && std::env::var("AVX2").is_err() {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { avx512(f) };
        }
        if is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            return unsafe { avx2(f) };
        }
        }
    }
    f()
}
