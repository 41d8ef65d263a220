//! The CUDA backend: a context and stream on one GPU, the kernel modules that build.rs compiled, launchers
//! (one file per op family), and the cuDNN/cuBLAS/cuFFT wrappers. Finding the driver, the GPUs and the
//! libraries' versions is driver.rs.
//!
//! cudarc panics when a library it needs cannot be loaded, so every entry point here first checks that the
//! library is present (`is_culib_present`) and turns its absence into an `Error::Device` that says so.

pub mod blas;
mod conv;
pub mod driver;
pub mod emu;
pub mod fft;
mod head;
mod layers;
mod loss;
mod norm;
mod optim;
mod preprocess;

use super::conv::{self as conv_op, Conv2d, ConvBackward};
use super::fft::{self as fft_op, FftConfig, FftStats};
use super::head::{self as head_op, HeadForward, HeadGrads, HeadInputs, HeadSaved, Mode};
use super::layers::{self as layers_op, Act};
use super::loss::{self as loss_op, LossConfig, LossOutput};
use super::norm::{self as norm_op, BnBackward, BnParams, BnRunning, BnSaved};
use super::optim::{self as optim_op, Optimizer, StepArgs, StepBuffers};
use super::{Backend, BackendOptions, ChannelNorm, Preprocessed, Slots};
use crate::error::{Error, Result};
use crate::params::ParamLayout;
use crate::tensor::Slice;
use crate::tensor::{DType, Element, Storage, Tensor};
use blas::Blas;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtrMut, LaunchConfig};
use driver::{describe_device, device_count, DeviceInfo};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};

// What `dfgpu info` (src/info.rs) reports, at the paths it has always had.
pub use driver::{devices, driver_version, library_versions};

/// The fatbins that build.rs compiled from kernels/*.cu, what they were compiled for, and typed ids for their
/// modules and kernels (`kernels::head::HEAD_FWD_INPUT`).
pub mod kernels {
    include!(concat!(env!("OUT_DIR"), "/kernels.rs"));

    /// A kernel: a module and the name of one of its `extern "C" __global__` functions.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Kernel {
        pub module: Module,
        pub name: &'static str,
    }

    /// "sm_80,sm_86,sm_89,sm_90 + PTX compute_90", or why there are none.
    pub fn describe() -> String {
        match PTX_ARCH {
            _ if FATBINS.is_empty() => "none: built without nvcc (CPU only)".to_string(),
            Some(ptx) => format!("{SASS_ARCHS} + PTX {ptx}"),
            None => SASS_ARCHS.to_string(),
        }
    }
}

/// The cuDNN handle. cudarc does not mark it Send or Sync; a cuDNN handle may be used from any host thread as
/// long as no two use it at once, which the Mutex around it in `CudaBackend` guarantees.
pub struct DnnHandle {
    pub dnn: Arc<cudarc::cudnn::Cudnn>,
    /// Convolution plans by shape, and the shared workspace.
    pub convs: conv::ConvCache,
}
// SAFETY: see above: every use goes through `CudaBackend::cudnn`, which holds the Mutex for the whole op.
unsafe impl Send for DnnHandle {}

pub struct CudaBackend {
    stream: Arc<CudaStream>,
    modules: HashMap<&'static str, Arc<CudaModule>>,
    info: DeviceInfo,
    opts: BackendOptions,
    /// Made on first use, so that ops that need no cuBLAS run where it is missing.
    blas: OnceLock<std::result::Result<Blas, String>>,
    cudnn: OnceLock<std::result::Result<Mutex<DnnHandle>, String>>,
    /// FFT line plans by transform size (Bluestein's tables are uploaded once per size).
    fft_plans: Mutex<HashMap<usize, fft::SharedPlan>>,
    /// The ring profile's bin order by spectrum shape (out_h, out_w, shifted).
    ring_indices: Mutex<HashMap<(usize, usize, bool), Arc<fft::RingIndex>>>,
}

impl CudaBackend {
    /// Opens GPU `ordinal` and loads every kernel module. Errors (never panics) when there is no driver, no
    /// such GPU, no compiled kernels, or no code in them for this GPU.
    pub fn new(ordinal: usize, opts: BackendOptions) -> Result<Self> {
        let n = device_count()?;
        if ordinal >= n {
            return Err(Error::Device(format!(
                "cuda:{ordinal} asked for, but {n} GPU(s) found (cuda:0 to cuda:{})",
                n - 1
            )));
        }
        if kernels::FATBINS.is_empty() {
            return Err(Error::Device(
                "GPU kernels were not compiled in: this binary was built without nvcc \
                 (run scripts/install-cuda-toolchain.sh, then rebuild)"
                    .into(),
            ));
        }
        let ctx = CudaContext::new(ordinal)?;
        let info = describe_device(&ctx)?;
        let mut modules = HashMap::new();
        for (name, fatbin) in kernels::FATBINS {
            let m = ctx.load_module(cudarc::nvrtc::Ptx::from_binary(fatbin.to_vec())).map_err(|e| {
                Error::Device(format!(
                    "kernels/{name}.cu could not be loaded on {} (sm_{}{}; compiled for {}): {e}",
                    info.name,
                    info.compute.0,
                    info.compute.1,
                    kernels::describe()
                ))
            })?;
            modules.insert(*name, m);
        }
        let stream = ctx.new_stream()?;
        Ok(CudaBackend {
            stream,
            modules,
            info,
            opts,
            blas: OnceLock::new(),
            cudnn: OnceLock::new(),
            fft_plans: Mutex::new(HashMap::new()),
            ring_indices: Mutex::new(HashMap::new()),
        })
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The cuBLAS handle on this backend's stream.
    pub fn blas(&self) -> Result<&Blas> {
        self.blas
            .get_or_init(|| Blas::new(self.stream.clone()).map_err(|e| e.reason()))
            .as_ref()
            .map_err(|m| Error::Device(m.clone()))
    }

    /// The cuDNN handle on this backend's stream, locked for one op; an error (never a panic) where libcudnn
    /// is missing.
    pub fn cudnn(&self) -> Result<std::sync::MutexGuard<'_, DnnHandle>> {
        let h = self
            .cudnn
            .get_or_init(|| {
                // SAFETY: only tries to dlopen libcudnn.
                if !unsafe { cudarc::cudnn::sys::is_culib_present() } {
                    return Err("cuDNN (libcudnn.so) could not be loaded".into());
                }
                let dnn = cudarc::cudnn::Cudnn::new(self.stream.clone()).map_err(|e| format!("cuDNN handle: {e:?}"))?;
                Ok(Mutex::new(DnnHandle { dnn, convs: Default::default() }))
            })
            .as_ref()
            .map_err(|m| Error::Device(m.clone()))?;
        Ok(h.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The FFT plan for transform size n, made on first use.
    fn fft_plan(&self, n: usize) -> Result<fft::SharedPlan> {
        let mut plans = self.fft_plans.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = plans.get(&n) {
            return Ok(p.clone());
        }
        let p = Arc::new(fft::plan(self, n)?);
        plans.insert(n, p.clone());
        Ok(p)
    }

    /// The ring profile's bin order for this spectrum shape, made on first use.
    fn ring_index(&self, d: &crate::backend::fft::ProfileDims) -> Result<Arc<fft::RingIndex>> {
        let key = (d.out_h, d.out_w, d.layout == crate::backend::fft::SpectrumLayout::Shifted);
        let mut indices = self.ring_indices.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = indices.get(&key) {
            return Ok(i.clone());
        }
        let i = Arc::new(fft::RingIndex::new(self, d)?);
        indices.insert(key, i.clone());
        Ok(i)
    }

    /// A kernel by its typed id (`kernels::head::HEAD_FWD_INPUT`).
    pub fn function(&self, k: kernels::Kernel) -> Result<CudaFunction> {
        let module = k.module.name();
        let m = self
            .modules
            .get(module)
            .ok_or_else(|| Error::Device(format!("no kernel module '{module}' was compiled in")))?;
        m.load_function(k.name).map_err(|e| Error::Cuda(format!("kernel {module}::{}: {e}", k.name)))
    }

    /// A grid-stride launch over `n` work items: enough blocks to fill the GPU, no more.
    pub fn grid_stride(&self, n: usize, block: u32) -> LaunchConfig {
        let want = n.div_ceil(block as usize).max(1);
        let cap = self.info.sms as usize * (2048 / block as usize);
        LaunchConfig { grid_dim: (want.min(cap) as u32, 1, 1), block_dim: (block, 1, 1), shared_mem_bytes: 0 }
    }

    /// Device memory for an op to write: NaN-poisoned when asked (tests), else left as it is.
    pub fn output<T: Element>(&self, len: usize) -> Result<CudaSlice<T>> {
        // SAFETY: every op writes all of its output before it is read; poisoning (tests) checks exactly that.
        let mut s = unsafe { self.stream.alloc::<T>(len) }?;
        if self.opts.poison_outputs {
            let bytes = s.num_bytes();
            let (ptr, _sync) = s.device_ptr_mut(&self.stream);
            // SAFETY: ptr is a live allocation of `bytes` bytes on this stream; all-ones bytes are NaN in every
            // float dtype and 255 in u8.
            unsafe { cudarc::driver::result::memset_d8_async(ptr, 0xFF, bytes, self.stream.cu_stream()) }?;
        }
        Ok(s)
    }

    fn upload_typed<T: Element>(&self, t: &Tensor) -> Result<Tensor> {
        let data = self.stream.clone_htod(t.host::<T>()?)?;
        Tensor::from_device(t.shape(), t.layout(), data)
    }

    fn download_typed<T: Element>(&self, t: &Tensor) -> Result<Tensor> {
        let data = self.stream.clone_dtoh(t.device::<T>()?)?;
        Tensor::from_vec(t.shape(), t.layout(), data)
    }
}

impl Backend for CudaBackend {
    fn name(&self) -> String {
        let i = &self.info;
        format!(
            "cuda:{} {} (sm_{}{}, {:.1} GiB)",
            i.ordinal,
            i.name,
            i.compute.0,
            i.compute.1,
            i.memory_bytes as f64 / crate::GIB
        )
    }
    fn is_cuda(&self) -> bool {
        true
    }
    fn free_memory(&self) -> Option<u64> {
        self.stream.context().mem_get_info().ok().map(|(free, _)| free as u64)
    }
    fn upload(&self, t: &Tensor) -> Result<Tensor> {
        match t.dtype() {
            DType::U8 => self.upload_typed::<u8>(t),
            DType::F32 => self.upload_typed::<f32>(t),
            DType::F16 => self.upload_typed::<half::f16>(t),
            DType::BF16 => self.upload_typed::<half::bf16>(t),
            DType::F64 => self.upload_typed::<f64>(t),
        }
    }
    fn download(&self, t: &Tensor) -> Result<Tensor> {
        if let Storage::Host(_) = t.storage() {
            shape_err!("download: the tensor is already on the host");
        }
        match t.dtype() {
            DType::U8 => self.download_typed::<u8>(t),
            DType::F32 => self.download_typed::<f32>(t),
            DType::F16 => self.download_typed::<half::f16>(t),
            DType::BF16 => self.download_typed::<half::bf16>(t),
            DType::F64 => self.download_typed::<f64>(t),
        }
    }
    fn synchronize(&self) -> Result<()> {
        Ok(self.stream.synchronize()?)
    }

    fn preprocess(&self, images: &Tensor, norm: &ChannelNorm, want_raw: bool) -> Result<Preprocessed> {
        let d = super::preprocess::check(images, norm)?;
        preprocess::preprocess(self, images, norm, want_raw, d)
    }

    fn fft_features(&self, images: &Tensor, cfg: &FftConfig, stats: Option<&Tensor>) -> Result<Tensor> {
        let d = fft_op::check(images, cfg, stats)?;
        fft::features(self, images, cfg, stats, d)
    }

    fn fft_stats_update(&self, images: &Tensor, stats: &mut FftStats) -> Result<()> {
        let feats = self.fft_features(images, &stats.cfg, None)?;
        let d = fft_op::check(images, &stats.cfg, None)?;
        fft_op::check_stats(stats, &d)?;
        fft::stats_update(self, &feats, stats, d)
    }

    fn fft_profile(&self, feats: &Tensor, cfg: &FftConfig, stats: Option<&Slice>) -> Result<Tensor> {
        let d = fft_op::check_profile(feats, cfg, stats)?;
        fft::profile(self, feats, d, stats)
    }

    fn head_forward(&self, x: &HeadInputs, mode: Mode) -> Result<HeadForward> {
        let b = head_op::check(x)?;
        head::forward(self, x, mode, b)
    }

    fn head_backward(&self, x: &HeadInputs, saved: &HeadSaved, dlogits: &Tensor, grads: Slots<1>) -> Result<HeadGrads> {
        let b = head_op::check_backward(x, saved, dlogits, &grads)?;
        head::backward(self, x, saved, dlogits, grads, b)
    }

    fn loss(&self, cfg: &LossConfig, logits: &Tensor, labels: &Tensor, threshold: f32) -> Result<LossOutput> {
        let n = loss_op::check(logits, labels, cfg, threshold)?;
        loss::loss(self, cfg, logits, labels, threshold, n)
    }

    fn param_norms(
        &self,
        layout: &ParamLayout,
        params: &Tensor,
        grads: &Tensor,
        max_norm: Option<f32>,
    ) -> Result<Tensor> {
        optim_op::check(layout, params, grads)?;
        optim::param_norms(self, layout, params, grads, max_norm)
    }

    fn step_norms(&self, layout: &ParamLayout, before: &Tensor, after: &Tensor) -> Result<Tensor> {
        optim_op::check(layout, before, after)?;
        optim::step_norms(self, layout, before, after)
    }

    fn duplicate(&self, t: &Tensor) -> Result<Tensor> {
        fn copy<T: Element>(s: &Arc<CudaStream>, t: &Tensor) -> Result<Tensor> {
            Tensor::from_device(t.shape(), t.layout(), s.clone_dtod(t.device::<T>()?)?)
        }
        match t.dtype() {
            DType::U8 => copy::<u8>(&self.stream, t),
            DType::F32 => copy::<f32>(&self.stream, t),
            DType::F64 => copy::<f64>(&self.stream, t),
            other => shape_err!("duplicate: {other:?} tensors are not copied on the GPU"),
        }
    }

    fn optimizer_step(&self, layout: &ParamLayout, b: StepBuffers, opt: &Optimizer, step: StepArgs) -> Result<()> {
        optim_op::check_step(layout, &b, opt, step)?;
        optim::optimizer_step(self, layout, b, opt, step)
    }

    fn conv2d(&self, x: &Tensor, w: &Slice, c: &Conv2d) -> Result<Tensor> {
        let d = conv_op::check(x, w, c)?;
        conv::forward(self, x, w, c, d)
    }
    fn conv2d_backward(&self, a: &ConvBackward, dw: Slots<1>) -> Result<Tensor> {
        let d = conv_op::check_backward(a, &dw)?;
        conv::backward(self, a, dw, d)
    }
    fn batch_norm_train(&self, x: &Tensor, p: &BnParams, running: Slots<2>) -> Result<(Tensor, BnSaved)> {
        let d = norm_op::check_train(x, p, &running)?;
        norm::train(self, x, p, running, d)
    }
    fn batch_norm_eval(&self, x: &Tensor, p: &BnParams, running: &BnRunning) -> Result<Tensor> {
        norm_op::check_eval(x, p, running)?;
        norm::eval(self, x, p, running)
    }
    fn batch_norm_backward(&self, a: &BnBackward, grads: Slots<2>) -> Result<Tensor> {
        let d = norm_op::check_backward(a, &grads)?;
        norm::backward(self, a, grads, d)
    }
    fn act(&self, x: &Tensor, kind: Act) -> Result<Tensor> {
        layers::act(self, x, kind)
    }
    fn act_backward(&self, x: &Tensor, dy: &Tensor, kind: Act) -> Result<Tensor> {
        layers_op::same(x, dy, "activation backward")?;
        layers::act_backward(self, x, dy, kind)
    }
    fn avg_pool(&self, x: &Tensor) -> Result<Tensor> {
        let d = layers_op::nchw(x, "average pool input")?;
        layers::avg_pool(self, x, d)
    }
    fn avg_pool_backward(&self, dy: &Tensor, shape: [usize; 4]) -> Result<Tensor> {
        layers_op::check_avg_pool_backward(dy, shape)?;
        layers::avg_pool_backward(self, dy, shape)
    }
    fn channel_scale(&self, x: &Tensor, s: &Tensor) -> Result<Tensor> {
        let [_, _, hw] = layers_op::check_channel_scale(x, s)?;
        layers::channel_scale(self, x, s, hw)
    }
    fn channel_scale_backward(&self, x: &Tensor, s: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor)> {
        let d = layers_op::check_channel_scale_backward(x, s, dy)?;
        layers::channel_scale_backward(self, x, s, dy, d)
    }
    fn add(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        layers_op::same(a, b, "add")?;
        layers::add(self, a, b)
    }
    fn sample_scale(&self, x: &Tensor, scales: &[f32]) -> Result<Tensor> {
        layers_op::check_sample_scale(x, scales)?;
        layers::sample_scale(self, x, scales)
    }
    fn concat_columns(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let d = layers_op::check_concat_columns(a, b)?;
        layers::concat_columns(self, a, b, d)
    }
    fn columns(&self, x: &Tensor, cols: Range<usize>) -> Result<Tensor> {
        let d = layers_op::check_columns(x, &cols)?;
        layers::columns(self, x, cols, d)
    }
    fn linear(&self, x: &Tensor, w: &Slice, b: &Slice, m: usize) -> Result<Tensor> {
        let d = layers_op::check_linear(x, w, b, m)?;
        layers::linear(self, x, w, b, d)
    }
    fn linear_backward(&self, x: &Tensor, w: &Slice, dy: &Tensor, grads: Slots<2>) -> Result<Tensor> {
        let d = layers_op::check_linear_backward(x, w, dy, &grads)?;
        layers::linear_backward(self, x, w, dy, grads, d)
    }
}
