//! Helpers shared by the op tests.

use dfgpu::backend::cpu::CpuBackend;
use dfgpu::backend::cuda::CudaBackend;
use dfgpu::rng::Rng;
use dfgpu::BackendOptions;

/// Every test backend poisons its outputs with NaN, so that an element an op forgets fails the comparison.
pub const POISON: BackendOptions = BackendOptions { poison_outputs: true };

pub fn cpu() -> CpuBackend {
    CpuBackend::new(POISON)
}

/// GPU 0, or a panic that says why: GPU tests are ignored by default and only run where one is expected.
#[allow(dead_code)] // used only by the GPU tests of some op families
pub fn gpu() -> CudaBackend {
    CudaBackend::new(0, POISON).unwrap_or_else(|e| panic!("this GPU test needs a CUDA GPU: {e}"))
}

pub fn random_u8(rng: &mut Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.below(256) as u8).collect()
}

/// Asserts, element-wise, |got - want| <= abs or <= rel * max(|got|, |want|) (approx's relative_eq; NaN never
/// passes); reports how many elements fail and the worst one.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], rel: f64, abs: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut bad = 0usize;
    let mut worst = (0usize, 0f64);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        if !approx::relative_eq!(g as f64, w, epsilon = abs, max_relative = rel) {
            bad += 1;
            if !(err <= worst.1) {
                worst = (i, err);
            }
        }
    }
    assert!(
        bad == 0,
        "{what}: {bad} of {} elements off; worst at {}: got {}, want {}",
        got.len(),
        worst.0,
        got[worst.0],
        want[worst.0]
    );
}

/// Asserts two f32 slices are equal bit for bit (NaN never passes).
#[allow(dead_code)]
pub fn assert_bitwise(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let bad: Vec<usize> =
        (0..got.len()).filter(|&i| got[i].is_nan() || got[i].to_bits() != want[i].to_bits()).collect();
    assert!(
        bad.is_empty(),
        "{what}: {} of {} elements differ; first at {}: got {}, want {}",
        bad.len(),
        got.len(),
        bad[0],
        got[bad[0]],
        want[bad[0]]
    );
}
