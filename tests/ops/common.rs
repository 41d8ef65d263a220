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
            if err.is_nan() || err > worst.1 {
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

/// Checks grad[i] against central differences of f in coordinate i of x, for each i in `idx`: relative error
/// at most 1e-6 (with a floor of 1e-9 for gradients that are zero).
pub fn check_grads(
    what: &str,
    grad: &[f64],
    x: &[f64],
    idx: impl IntoIterator<Item = usize>,
    f: impl Fn(&[f64]) -> f64,
) {
    let mut xx = x.to_vec();
    for i in idx {
        let h = 1e-5 * x[i].abs().max(1.0);
        xx[i] = x[i] + h;
        let plus = f(&xx);
        xx[i] = x[i] - h;
        let minus = f(&xx);
        xx[i] = x[i];
        let numeric = (plus - minus) / (2.0 * h);
        let err = (numeric - grad[i]).abs();
        assert!(
            err <= 1e-6 * numeric.abs().max(grad[i].abs()) + 1e-9,
            "{what}[{i}]: numeric {numeric}, analytic {}",
            grad[i]
        );
    }
}

/// An f64 host tensor: the CPU backend runs the backbone's ops in f64 for gradient checks.
pub fn t64(shape: &[usize], layout: dfgpu::Layout, v: Vec<f64>) -> dfgpu::Tensor {
    dfgpu::Tensor::from_vec(shape, layout, v).unwrap()
}

pub fn normals(rng: &mut Rng, n: usize, scale: f64) -> Vec<f64> {
    (0..n).map(|_| scale * rng.normal()).collect()
}

pub fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// sum(c * y) for an f64 tensor y: the objective whose gradient with respect to y is c.
pub fn dot(y: &dfgpu::Tensor, c: &[f64]) -> f64 {
    y.host::<f64>().unwrap().iter().zip(c).map(|(a, b)| a * b).sum()
}
