//! Helpers shared by the op tests.

use dfgpu::backend::cpu::CpuBackend;
use dfgpu::backend::cuda::emu::{self, Order};
use dfgpu::backend::cuda::CudaBackend;
use dfgpu::rng::Rng;
use dfgpu::BackendOptions;

/// Every test backend poisons its outputs with NaN, so that an element an op forgets fails the comparison.
pub const POISON: BackendOptions = BackendOptions { poison_outputs: true };

/// The CPU references: the oracle of the GPU tests and of the fast CPU paths.
pub fn cpu() -> CpuBackend {
    CpuBackend::reference(POISON)
}

/// The CPU backend as dfgpu runs it: f32 ops through the fast paths, checked against `cpu()`.
pub fn fast_cpu() -> CpuBackend {
    CpuBackend::new(POISON)
}

/// CUDA device 0 (a GPU, or the emulated device under scripts/emu.sh), or a panic that says why: GPU tests are
/// ignored by default and only run where a device is expected.
#[allow(dead_code)] // used only by the GPU tests of some op families
pub fn gpu() -> CudaBackend {
    CudaBackend::new(0, POISON)
        .unwrap_or_else(|e| panic!("this GPU test needs a CUDA device: a GPU, or the emulator (scripts/emu.sh): {e}"))
}

/// One output of a device computation, compared bit for bit (NaN included).
#[derive(Clone, Copy)]
pub enum Out<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
}

impl Out<'_> {
    fn len(&self) -> usize {
        match self {
            Out::F32(v) => v.len(),
            Out::F64(v) => v.len(),
        }
    }
    fn bits(&self, i: usize) -> u64 {
        match self {
            Out::F32(v) => v[i].to_bits() as u64,
            Out::F64(v) => v[i].to_bits(),
        }
    }
    fn show(&self, i: usize) -> String {
        match self {
            Out::F32(v) => format!("{:e} (bits {:#010x})", v[i], v[i].to_bits()),
            Out::F64(v) => format!("{:e} (bits {:#018x})", v[i], v[i].to_bits()),
        }
    }
}

/// An element type of device outputs.
pub trait Elem: Copy {
    fn out(v: &[Self]) -> Out<'_>;
}

impl Elem for f32 {
    fn out(v: &[f32]) -> Out<'_> {
        Out::F32(v)
    }
}

impl Elem for f64 {
    fn out(v: &[f64]) -> Out<'_> {
        Out::F64(v)
    }
}

/// What a device computation returns: one output, a list of them, or a pair of those.
pub trait Outputs {
    fn outputs(&self) -> Vec<Out<'_>>;
}

impl<E: Elem> Outputs for Vec<E> {
    fn outputs(&self) -> Vec<Out<'_>> {
        vec![E::out(self)]
    }
}

impl<E: Elem> Outputs for Vec<Vec<E>> {
    fn outputs(&self) -> Vec<Out<'_>> {
        self.iter().map(|v| E::out(v)).collect()
    }
}

impl<A: Outputs, B: Outputs> Outputs for (A, B) {
    fn outputs(&self) -> Vec<Out<'_>> {
        [self.0.outputs(), self.1.outputs()].concat()
    }
}

/// Puts the emulator back to its default order when dropped, a failed run included.
struct ForwardOnDrop(bool);

impl Drop for ForwardOnDrop {
    fn drop(&mut self) {
        if self.0 {
            emu::set_schedule(Order::Forward).expect("the emulator takes Order::Forward");
        }
    }
}

/// Runs the device computation `run` three times and returns its result after asserting that the three runs
/// agree bit for bit. On the emulated device the runs start the threads of each block and the blocks of each
/// grid in forward, reverse and shuffled order (seeded by `what`): a kernel whose result depends on the order
/// has a race (a missing barrier, a read of what another thread writes). On a GPU they are three plain runs,
/// which checks run-to-run determinism: the kernels use no atomics and sum in fixed orders. `run` must start
/// from the same inputs each time (upload them inside it, gather statistics afresh).
#[allow(dead_code)] // used only by the GPU tests
pub fn race_checked<T: Outputs>(what: &str, mut run: impl FnMut() -> T) -> T {
    let emulated = emu::is_emulated();
    let _restore = ForwardOnDrop(emulated);
    // FNV-1a of the name: each test shuffles its own way, the same way every time.
    let seed = what.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    let orders = [Order::Forward, Order::Reverse, Order::Shuffle(seed)];
    let mut first: Option<T> = None;
    for (k, order) in orders.into_iter().enumerate() {
        let how = if emulated { format!("under {order:?}") } else { format!("in run {}", k + 1) };
        if emulated {
            emu::set_schedule(order).unwrap_or_else(|e| panic!("{what}: {e}"));
        }
        let result = run();
        let Some(base) = &first else {
            first = Some(result);
            continue;
        };
        let (got, want) = (result.outputs(), base.outputs());
        let base = if emulated { "under Forward" } else { "in run 1" };
        assert_eq!(got.len(), want.len(), "{what}: the number of outputs {how} differs from {base}");
        for (o, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.len(), w.len(), "{what}: output {o} has another length {how} than {base}");
            let mut bad = (0..g.len()).filter(|&i| g.bits(i) != w.bits(i));
            if let Some(i) = bad.next() {
                panic!(
                    "{what}: output {o} differs {how} from {base} in {} of {} elements; first at {i}: {} vs {}",
                    1 + bad.count(),
                    g.len(),
                    g.show(i),
                    w.show(i)
                );
            }
        }
    }
    first.unwrap()
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

/// `v` rounded to f32: values both precisions hold exactly, so that an f32 and an f64 run start from the same
/// inputs.
pub fn f32_exact(v: Vec<f64>) -> Vec<f64> {
    to_f32(&v).iter().map(|&a| a as f64).collect()
}

/// A host tensor of `v`, in f32 or in f64.
pub fn host_in(f32s: bool, shape: &[usize], layout: dfgpu::Layout, v: &[f64]) -> dfgpu::Tensor {
    match f32s {
        true => dfgpu::Tensor::from_vec(shape, layout, to_f32(v)).unwrap(),
        false => t64(shape, layout, v.to_vec()),
    }
}

/// A host tensor's values as f64, from f32 or from f64 (the tensor must be of that type).
pub fn values(f32s: bool, t: &dfgpu::Tensor) -> Vec<f64> {
    match f32s {
        true => t.host::<f32>().unwrap().iter().map(|&v| v as f64).collect(),
        false => t.host::<f64>().unwrap().to_vec(),
    }
}

/// sum(c * y) for an f64 tensor y: the objective whose gradient with respect to y is c.
pub fn dot(y: &dfgpu::Tensor, c: &[f64]) -> f64 {
    y.host::<f64>().unwrap().iter().zip(c).map(|(a, b)| a * b).sum()
}

/// Natural-like values for `planes` planes of h x w: each an offset (0.5 to 2.5), a gradient and two slow waves,
/// with 1% noise: smooth, far from zero mean and alike between neighbours, as images and activations are (the
/// inputs where sums do not cancel, and where statistics have a large mean beside a small spread).
#[allow(dead_code)] // used only by the fast-path tests of some op families
pub fn smooth_planes(rng: &mut Rng, planes: usize, h: usize, w: usize) -> Vec<f64> {
    let mut v = Vec::with_capacity(planes * h * w);
    for _ in 0..planes {
        let (offset, gy, gx) = (0.5 + 2.0 * rng.uniform_f64(), 0.3 * rng.normal(), 0.3 * rng.normal());
        let waves: Vec<[f64; 4]> = (0..2)
            .map(|_| [0.2 * rng.normal(), rng.uniform_f64() * 0.6, rng.uniform_f64() * 0.6, rng.uniform_f64() * 6.3])
            .collect();
        for y in 0..h {
            for x in 0..w {
                let (fy, fx) = (y as f64 / h.max(2) as f64, x as f64 / w.max(2) as f64);
                let wave: f64 = waves.iter().map(|[a, ky, kx, p]| a * (ky * y as f64 + kx * x as f64 + p).cos()).sum();
                v.push(offset + gy * fy + gx * fx + wave + 0.01 * rng.normal());
            }
        }
    }
    v
}

/// Asserts |got - want| <= tol * scale element-wise, where `scale` is the sum of the magnitudes of the terms of
/// each value (for a convolution: the op run on |inputs|): what a floating-point sum's error is proportional to, so that sums that
/// cancel to near zero are not held to a relative error they cannot have.
#[allow(dead_code)] // used only by the fast-path tests of some op families
pub fn assert_scaled(what: &str, got: &[f64], want: &[f64], scale: &[f64], tol: f64) {
    assert_eq!((got.len(), want.len()), (scale.len(), scale.len()), "{what}: lengths");
    let ratio = |i: usize| (got[i] - want[i]).abs() / scale[i].max(f64::MIN_POSITIVE);
    let worst = (0..got.len()).max_by(|&a, &b| ratio(a).total_cmp(&ratio(b))).unwrap();
    let r = ratio(worst);
    assert!(
        r <= tol, // NaN fails
        "{what}: worst at {worst}: got {}, want {} (error {r:e} of the scale {:e}, allowed {tol:e})",
        got[worst],
        want[worst],
        scale[worst]
    );
}
