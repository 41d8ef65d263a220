//! The Backend trait: the ops the model needs, implemented once on the CPU (the reference) and once on CUDA.
//! Model code is written against `&dyn Backend`; a test runs the same op on both and compares.

pub mod conv;
pub mod cpu;
pub mod cuda;
pub mod fft;
pub mod head;
pub mod layers;
pub mod loss;
pub mod norm;
pub mod optim;
pub mod preprocess;

use crate::error::{Error, Result};
use crate::params::ParamLayout;
use crate::tensor::{Slice, Tensor};
pub use conv::{Conv2d, ConvBackward};
pub use fft::{FftConfig, FftStats};
pub use head::{HeadConfig, HeadForward, HeadGrads, HeadInputs, HeadSaved, Mode};
pub use layers::Act;
pub use loss::{LossConfig, LossOutput, LossStats};
pub use norm::{BatchNorm, BnBackward, BnParams, BnRunning, BnSaved};
pub use optim::{AdamW, Optimizer, Sgd, StepArgs, StepBuffers};
pub use preprocess::{ChannelNorm, Preprocessed};
use std::ops::Range;
use std::str::FromStr;

/// Settings shared by both backends.
#[derive(Clone, Copy, Debug, Default)]
pub struct BackendOptions {
    /// Fill every output with NaN (all bits set) before an op writes it, so that an element an op forgets
    /// shows up in a test. Costs one memset per output: tests only.
    pub poison_outputs: bool,
}

/// Every op's arguments are checked once, by its family's `check` (conv.rs, norm.rs, ...), first thing in both
/// backends' methods: a bad argument gets the same refusal from each (tests/ops/checks.rs).
pub trait Backend: Send + Sync {
    /// One line: which device, e.g. "cpu (2 rayon threads)" or "cuda:0 NVIDIA H200 (sm_90, 139.8 GiB)".
    fn name(&self) -> String;
    fn is_cuda(&self) -> bool;
    /// The bytes a run can still allocate here (the system's available memory, the device's free memory); None
    /// where it cannot be asked.
    fn free_memory(&self) -> Option<u64>;
    /// A copy of a host tensor in this backend's memory (a plain move of the data on the CPU).
    fn upload(&self, t: &Tensor) -> Result<Tensor>;
    /// A host copy of a tensor of this backend.
    fn download(&self, t: &Tensor) -> Result<Tensor>;
    /// Waits for all queued work (a no-op on the CPU).
    fn synchronize(&self) -> Result<()>;

    /// u8 N x H x W x C (NHWC, C in 1..=4) to f32 NCHW: normalized with per-channel mean/std, and, if asked,
    /// raw in [0, 1] as well, in one pass.
    fn preprocess(&self, images: &Tensor, norm: &ChannelNorm, want_raw: bool) -> Result<Preprocessed>;

    /// The frequency features (backend/fft.rs): images (f32 NCHW in [0, 1] or u8 NHWC) to N x planes x out_h x
    /// out_w magnitude and phase planes. `stats` (from `FftStats::finish`) is needed by log-std only.
    fn fft_features(&self, images: &Tensor, cfg: &FftConfig, stats: Option<&Tensor>) -> Result<Tensor>;

    /// Adds a batch of images to running per-bin statistics of the `log` magnitudes.
    fn fft_stats_update(&self, images: &Tensor, stats: &mut FftStats) -> Result<()>;

    /// The ring profile (backend/fft.rs) of features that `fft_features` made with `cfg` from square images:
    /// [N, S * R], each magnitude plane's mean over rings 0 .. R - 1. With `stats` (S R means, then S R standard
    /// deviations), each value standardized: (mean - stats mean) / stats std.
    fn fft_profile(&self, feats: &Tensor, cfg: &FftConfig, stats: Option<&Slice>) -> Result<Tensor>;

    /// The fusion head's forward (backend/head.rs): B logits, and what backward needs.
    fn head_forward(&self, x: &HeadInputs, mode: Mode) -> Result<HeadForward>;

    /// The fusion head's backward from d loss / d logit: the gradients of both inputs; the parameters'
    /// gradients (the head's layout) go to the slot.
    fn head_backward(&self, x: &HeadInputs, saved: &HeadSaved, dlogits: &Tensor, grads: Slots<1>) -> Result<HeadGrads>;

    /// Mean loss over the batch, d loss / d logit per sample, and the confusion counts at `threshold` on
    /// P(fake), in one pass (backend/loss.rs). Labels: 0 real, 1 fake.
    fn loss(&self, cfg: &LossConfig, logits: &Tensor, labels: &Tensor, threshold: f32) -> Result<LossOutput>;

    /// 2-D convolution (backend/conv.rs). The CPU backend also takes f64 tensors (gradient checks).
    fn conv2d(&self, x: &Tensor, w: &Slice, c: &Conv2d) -> Result<Tensor>;

    /// The input gradient; writes the weight gradient into the slot.
    fn conv2d_backward(&self, a: &ConvBackward, dw: Slots<1>) -> Result<Tensor>;

    /// Batch norm with the batch's statistics; updates the running mean and variance in the two slots
    /// (backend/norm.rs).
    fn batch_norm_train(&self, x: &Tensor, p: &BnParams, running: Slots<2>) -> Result<(Tensor, BnSaved)>;

    /// Batch norm with the running statistics (inference).
    fn batch_norm_eval(&self, x: &Tensor, p: &BnParams, running: &BnRunning) -> Result<Tensor>;

    /// Training-mode backward: the input gradient; d gamma and d beta into the two slots.
    fn batch_norm_backward(&self, a: &BnBackward, grads: Slots<2>) -> Result<Tensor>;

    /// Element-wise activation (backend/layers.rs).
    fn act(&self, x: &Tensor, kind: Act) -> Result<Tensor>;
    /// dy * act'(x).
    fn act_backward(&self, x: &Tensor, dy: &Tensor, kind: Act) -> Result<Tensor>;
    /// Mean over H x W: NCHW to [N, C].
    fn avg_pool(&self, x: &Tensor) -> Result<Tensor>;
    /// [N, C] gradient spread back over `shape` (NCHW).
    fn avg_pool_backward(&self, dy: &Tensor, shape: [usize; 4]) -> Result<Tensor>;
    /// x[n, c, :, :] * s[n, c] (squeeze-and-excitation).
    fn channel_scale(&self, x: &Tensor, s: &Tensor) -> Result<Tensor>;
    /// (dx, ds).
    fn channel_scale_backward(&self, x: &Tensor, s: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor)>;
    /// a + b (the residual connection).
    fn add(&self, a: &Tensor, b: &Tensor) -> Result<Tensor>;
    /// `x[n] * scales[n]` (drop-connect: 0 or 1 / keep probability per sample); its own backward.
    fn sample_scale(&self, x: &Tensor, scales: &[f32]) -> Result<Tensor>;
    /// `[N, P]` and `[N, Q]` side by side: `[N, P + Q]` (the frequency branch's pooled features and its profile).
    fn concat_columns(&self, a: &Tensor, b: &Tensor) -> Result<Tensor>;
    /// Columns `cols` of `x [N, C]`: `[N, cols.len()]` (concat_columns's backward).
    fn columns(&self, x: &Tensor, cols: Range<usize>) -> Result<Tensor>;
    /// `x w^T + b`: `x [N, K]`, `w [M, K]`, `b [M]`.
    fn linear(&self, x: &Tensor, w: &Slice, b: &Slice, m: usize) -> Result<Tensor>;
    /// dx; dw and db into the two slots.
    fn linear_backward(&self, x: &Tensor, w: &Slice, dy: &Tensor, grads: Slots<2>) -> Result<Tensor>;

    /// Per-tensor norms of gradients and values, the total gradient norm and the clip factor, in one pass over
    /// the flat buffers (backend/optim.rs); left on the device.
    fn param_norms(
        &self,
        layout: &ParamLayout,
        params: &Tensor,
        grads: &Tensor,
        max_norm: Option<f32>,
    ) -> Result<Tensor>;

    /// Per-tensor sums of squares of one optimizer step (after - before) and of the weights before it, in the
    /// norms' layout: the update-to-weight ratios of the gradient report, in one pass (backend/optim.rs).
    fn step_norms(&self, layout: &ParamLayout, before: &Tensor, after: &Tensor) -> Result<Tensor>;

    /// A copy of a tensor on the same device.
    fn duplicate(&self, t: &Tensor) -> Result<Tensor>;

    /// One optimizer step (AdamW or SGD) on the flat buffers, with gradients scaled by the clip factor in `norms`.
    fn optimizer_step(&self, layout: &ParamLayout, b: StepBuffers, opt: &Optimizer, step: StepArgs) -> Result<()>;
}

/// Ranges of one flat buffer that an op writes: gradient slots in a model's gradients, or the running statistics
/// in its state. One `&mut` buffer with N ranges, because a layer's slots share the buffer.
#[derive(Debug)]
pub struct Slots<'a, const N: usize> {
    pub buf: &'a mut Tensor,
    pub at: [Range<usize>; N],
}

impl<const N: usize> Slots<'_, N> {
    /// Checks that slot i holds `lens[i]` values, lies inside the buffer and overlaps no other slot.
    pub fn check(&self, what: &str, lens: [usize; N]) -> Result<()> {
        let (at, total) = (&self.at, self.buf.numel());
        let overlap = |i: usize| (0..i).any(|j| at[i].start < at[j].end && at[j].start < at[i].end);
        if (0..N).any(|i| at[i].len() != lens[i] || at[i].end > total || overlap(i)) {
            shape_err!("{what}: slots {at:?} of a {total}-value buffer for {lens:?} values, not overlapping");
        }
        Ok(())
    }
}

/// Which device to run on: `auto`, `cpu`, `cuda` or `cuda:N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    Auto,
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(|| Error::Invalid(format!("--device '{s}': expected auto, cpu, cuda or cuda:N"))),
        }
    }
}

/// Opens the backend for `spec`. Returns it with one line that says which device was chosen and, when `auto`
/// fell back to the CPU, why. `cuda` that cannot be used is an error, never a silent fallback, never a panic.
pub fn select(spec: DeviceSpec, opts: BackendOptions) -> Result<(Box<dyn Backend>, String)> {
    match spec {
        DeviceSpec::Cpu => {
            let b = cpu::CpuBackend::new(opts);
            let line = format!("device: {}, as asked", b.name());
            Ok((Box::new(b), line))
        }
        DeviceSpec::Cuda(n) => {
            let b = cuda::CudaBackend::new(n, opts)?;
            let line = format!("device: {}", b.name());
            Ok((Box::new(b), line))
        }
        DeviceSpec::Auto => match cuda::CudaBackend::new(0, opts) {
            Ok(b) => {
                let line = format!("device: {} (a GPU was found)", b.name());
                Ok((Box::new(b), line))
            }
            Err(e) => {
                let b = cpu::CpuBackend::new(opts);
                let line = format!("device: {} (no usable GPU: {})", b.name(), e.reason());
                Ok((Box::new(b), line))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_spec_parses_and_rejects() {
        assert_eq!("auto".parse::<DeviceSpec>().unwrap(), DeviceSpec::Auto);
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        for bad in ["gpu", "cuda:", "cuda:x", "CPU", ""] {
            let e = bad.parse::<DeviceSpec>().unwrap_err();
            assert!(e.to_string().contains("expected auto, cpu, cuda or cuda:N"), "{bad}: {e}");
        }
    }
}
