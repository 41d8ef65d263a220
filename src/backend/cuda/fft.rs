//! Launchers for kernels/fft.cu, and the per-size line plans (radices, Bluestein tables) they use.

use super::{kernels, CudaBackend};
use crate::backend::cpu::fft::{bluestein_tables, smooth_factors, C64};
use crate::backend::fft::{check, FftConfig, FftDims, FftStats, Magnitude, Phase, ProfileDims, SpectrumLayout};
use crate::error::Error;
use crate::error::Result;
use crate::tensor::{DType, Layout, Slice, Tensor};
use cudarc::cufft::{sys as cufft_sys, CudaFft};
use cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg};
use std::sync::Arc;

/// Matches `struct Line` in kernels/fft.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Line {
    n: i32,
    len: i32,
    nrad: i32,
    bluestein: i32,
    radices: u64,
}
// SAFETY: plain old data with the kernel parameter's C layout (4 i32, then a u64 at offset 16).
unsafe impl DeviceRepr for Line {}

/// Matches `struct FftArgs` in kernels/fft.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct FftArgs {
    n_img: i32,
    c: i32,
    h: i32,
    w: i32,
    s: i32,
    out_h: i32,
    out_w: i32,
    planes: i32,
    input_u8: i32,
    grayscale: i32,
    layout: i32,
    magnitude: i32,
    phase: i32,
    inv_sqrt_hw: f32,
}
// SAFETY: plain old data with the kernel parameter's C layout.
unsafe impl DeviceRepr for FftArgs {}

/// A planned transform size: the kernel's `Line`, and Bluestein's tables on the device (as float2 pairs).
pub struct LinePlan {
    line: Line,
    tables: Option<(CudaSlice<f32>, CudaSlice<f32>)>,
}

/// Plans are cached per size on the backend; this is the cache's value type.
pub type SharedPlan = Arc<LinePlan>;

/// Radices for the kernels: the prime factors, with pairs of 2s merged into 4s (fewer passes).
fn radices(len: usize) -> Vec<usize> {
    let f = smooth_factors(len).expect("a smooth size");
    let twos = f.iter().filter(|&&p| p == 2).count();
    let mut r = vec![4; twos / 2];
    r.extend(std::iter::repeat_n(2, twos % 2));
    r.extend(f.into_iter().filter(|&p| p != 2));
    r
}

pub fn plan(be: &CudaBackend, n: usize) -> Result<LinePlan> {
    let (len, tables) = match smooth_factors(n) {
        Some(_) => (n, None),
        None => {
            let (chirp, kfft) = bluestein_tables(n);
            let flat = |v: &[C64]| v.iter().flat_map(|c| [c.re as f32, c.im as f32]).collect::<Vec<f32>>();
            let t = (be.stream().clone_htod(&flat(&chirp))?, be.stream().clone_htod(&flat(&kfft))?);
            (kfft.len(), Some(t))
        }
    };
    let r = radices(len);
    assert!(r.len() <= 21, "{len} needs more radices than the packed field holds");
    let packed = r.iter().enumerate().fold(0u64, |acc, (i, &x)| acc | ((x as u64) << (3 * i)));
    let line = Line {
        n: n as i32,
        len: len as i32,
        nrad: r.len() as i32,
        bluestein: tables.is_some() as i32,
        radices: packed,
    };
    Ok(LinePlan { line, tables })
}

/// Lines per block: as many as fit in 32 KiB of shared memory (two buffers of len complex each), up to 16.
fn lines_per_block(len: usize) -> usize {
    (32768 / (16 * len)).clamp(1, 16)
}

fn launch_cfg(blocks: usize, len: usize, lines: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: (lines * 2 * len * 8) as u32,
    }
}

/// The features of checked arguments (`d` from `check`).
pub fn features(
    be: &CudaBackend,
    images: &Tensor,
    cfg: &FftConfig,
    stats: Option<&Tensor>,
    d: FftDims,
) -> Result<Tensor> {
    let (rows, cols) = (be.fft_plan(d.w)?, be.fft_plan(d.h)?);
    let a = args(images, cfg, &d);
    let wh = d.w / 2 + 1;
    let spectra = d.n * d.s;
    let mut spec = be.output::<f32>(spectra * d.h * wh * 2)?;
    let mut out = be.output::<f32>(d.out_shape().iter().product())?;
    let null = 0u64;
    let stream = be.stream();

    let lpb = lines_per_block(rows.line.len as usize);
    let blocks = (spectra * d.h.div_ceil(2)).div_ceil(lpb);
    let f = be.function(kernels::fft::FFT_ROWS)?;
    let mut l = stream.launch_builder(&f);
    match images.dtype() {
        DType::U8 => l.arg(&null).arg(images.device::<u8>()?),
        _ => l.arg(images.device::<f32>()?).arg(&null),
    };
    l.arg(&a).arg(&rows.line);
    push_tables(&mut l, &rows, &null);
    let lpb32 = lpb as i32;
    l.arg(&lpb32).arg(&mut spec);
    // SAFETY: arguments match the kernel; `check` validated the sizes; `spec` holds every plane's half spectrum.
    unsafe { l.launch(launch_cfg(blocks, rows.line.len as usize, lpb)) }?;

    let lpb = lines_per_block(cols.line.len as usize);
    let blocks = spectra * wh.div_ceil(lpb);
    let f = be.function(kernels::fft::FFT_COLS)?;
    let mut l = stream.launch_builder(&f);
    l.arg(&spec).arg(&a).arg(&cols.line);
    push_tables(&mut l, &cols, &null);
    let lpb32 = lpb as i32;
    l.arg(&lpb32);
    match stats {
        Some(t) => l.arg(t.device::<f32>()?),
        None => l.arg(&null),
    };
    l.arg(&mut out);
    // SAFETY: as above; `stats`, when log-std reads it, was checked to be [2, S, out_h, out_w].
    unsafe { l.launch(launch_cfg(blocks, cols.line.len as usize, lpb)) }?;
    Tensor::from_device(&d.out_shape(), Layout::Nchw, out)
}

fn push_tables<'a>(l: &mut cudarc::driver::LaunchArgs<'a>, p: &'a LinePlan, null: &'a u64) {
    match &p.tables {
        Some((chirp, kfft)) => l.arg(chirp).arg(kfft),
        None => l.arg(null).arg(null),
    };
}

fn args(images: &Tensor, cfg: &FftConfig, d: &FftDims) -> FftArgs {
    FftArgs {
        n_img: d.n as i32,
        c: d.c as i32,
        h: d.h as i32,
        w: d.w as i32,
        s: d.s as i32,
        out_h: d.out_h as i32,
        out_w: d.out_w as i32,
        planes: d.planes as i32,
        input_u8: (images.dtype() == DType::U8) as i32,
        grayscale: cfg.grayscale as i32,
        layout: (cfg.layout == SpectrumLayout::Shifted) as i32,
        magnitude: match cfg.magnitude {
            Magnitude::Raw => 0,
            Magnitude::Log => 1,
            Magnitude::LogStd => 2,
        },
        phase: (cfg.phase == Phase::CosSin) as i32,
        inv_sqrt_hw: (1.0 / ((d.h * d.w) as f64).sqrt()) as f32,
    }
}

/// Adds the features `feats` of checked images (`d` from `check` and `check_stats`) to the statistics.
pub fn stats_update(be: &CudaBackend, feats: &Tensor, stats: &mut FftStats, d: FftDims) -> Result<()> {
    let per_image = (d.planes * d.plane_len()) as i64;
    let (bins, n, count) = (d.stats_len() as i32, d.n as i32, stats.count as f64);
    let f = be.function(kernels::fft::FFT_STATS_UPDATE)?;
    let cfg = be.grid_stride(d.stats_len(), 256);
    let (mean, m2) = (&mut stats.mean, &mut stats.m2);
    let mut l = be.stream().launch_builder(&f);
    l.arg(feats.device::<f32>()?).arg(&per_image).arg(&bins).arg(&n).arg(&count);
    l.arg(mean.device_mut::<f64>()?).arg(m2.device_mut::<f64>()?);
    // SAFETY: arguments match the kernel; mean and m2 hold `bins` values (check_stats), feats n images.
    unsafe { l.launch(cfg) }?;
    stats.count += d.n as u64;
    Ok(())
}

/// The ring order of one spectrum shape (`ProfileDims::ring_order`) on the device, made once per shape.
pub struct RingIndex {
    order: CudaSlice<u32>,
    starts: CudaSlice<u32>,
}

impl RingIndex {
    pub fn new(be: &CudaBackend, d: &ProfileDims) -> Result<Self> {
        let (order, starts) = d.ring_order();
        Ok(RingIndex { order: be.stream().clone_htod(&order)?, starts: be.stream().clone_htod(&starts)? })
    }
}

/// The ring profile of checked features (`check_profile`), standardized by `stats` if given.
pub fn profile(be: &CudaBackend, feats: &Tensor, d: ProfileDims, stats: Option<&Slice>) -> Result<Tensor> {
    feats.expect("fft profile features", DType::F32, Layout::Nchw, 4)?;
    let index = be.ring_index(&d)?;
    let len = d.out_shape().iter().product();
    let mut out = be.output::<f32>(len)?;
    let f = be.function(kernels::fft::FFT_PROFILE)?;
    let [n, planes, s, rings] = [d.n, d.planes, d.s, d.rings].map(|v| v as i32);
    let plane_len = (d.out_h * d.out_w) as i64;
    let stats = stats.map(|st| st.device::<f32>()).transpose()?;
    let standardize = stats.is_some() as i32;
    let mut l = be.stream().launch_builder(&f);
    l.arg(feats.device::<f32>()?).arg(&n).arg(&planes).arg(&s).arg(&plane_len).arg(&rings);
    l.arg(&index.order).arg(&index.starts).arg(&standardize);
    // Without statistics the kernel reads none; it still takes a valid pointer, the features'.
    match &stats {
        Some(st) => l.arg(st),
        None => l.arg(feats.device::<f32>()?),
    };
    l.arg(&mut out);
    // SAFETY: arguments match the kernel; feats holds n images of `planes` planes (check_profile), the index
    // covers one plane of this shape, stats (when read) holds 2 s rings values (check_profile), out n s rings.
    unsafe { l.launch(be.grid_stride(len, 128)) }?;
    Tensor::from_device(&d.out_shape(), Layout::Plain, out)
}

/// The baseline the bench times against: cuFFT's batched R2C transform, then dfgpu's features kernel on its
/// half spectrum. Also a cross-check of the fused kernels against cuFFT (tests/ops/fft.rs).
pub struct CufftPipeline {
    plan: CudaFft,
    dims: FftDims,
    spec: CudaSlice<cufft_sys::float2>,
}

impl CufftPipeline {
    /// For f32 NCHW batches of `dims` (per channel, no grayscale: cuFFT sees the planes as they are).
    pub fn new(be: &CudaBackend, dims: FftDims) -> Result<Self> {
        // SAFETY: only tries to dlopen libcufft.
        if !unsafe { cufft_sys::is_culib_present() } {
            return Err(Error::Device("cuFFT (libcufft.so) could not be loaded".into()));
        }
        let (h, w) = (dims.h as i32, dims.w as i32);
        let planes = (dims.n * dims.c) as i32;
        let half = h * (w / 2 + 1);
        let plan = CudaFft::plan_many(
            &[h, w],
            None,
            1,
            h * w,
            None,
            1,
            half,
            cufft_sys::cufftType::CUFFT_R2C,
            planes,
            be.stream().clone(),
        )
        .map_err(|e| Error::Cuda(format!("cuFFT plan {h}x{w} x{planes}: {e:?}")))?;
        let spec = be.stream().alloc_zeros::<cufft_sys::float2>(planes as usize * half as usize)?;
        Ok(CufftPipeline { plan, dims, spec })
    }

    pub fn run(
        &mut self,
        be: &CudaBackend,
        images: &Tensor,
        cfg: &FftConfig,
        stats: Option<&Tensor>,
    ) -> Result<Tensor> {
        let d = check(images, cfg, stats)?;
        if images.dtype() != DType::F32
            || cfg.grayscale
            || (d.n, d.c, d.h, d.w) != (self.dims.n, self.dims.c, self.dims.h, self.dims.w)
        {
            shape_err!(
                "the cuFFT pipeline was planned for f32 {:?}, per channel; got {:?} {:?}",
                [self.dims.n, self.dims.c, self.dims.h, self.dims.w],
                images.dtype(),
                images.shape()
            );
        }
        self.plan
            .exec_r2c(images.device::<f32>()?, &mut self.spec)
            .map_err(|e| Error::Cuda(format!("cuFFT R2C: {e:?}")))?;
        let mut out = be.output::<f32>(d.out_shape().iter().product())?;
        let a = args(images, cfg, &d);
        let null = 0u64;
        let f = be.function(kernels::fft::FFT_FEATURES_FROM_SPECTRUM)?;
        let mut l = be.stream().launch_builder(&f);
        l.arg(&self.spec).arg(&a);
        match stats {
            Some(t) => l.arg(t.device::<f32>()?),
            None => l.arg(&null),
        };
        l.arg(&mut out);
        // SAFETY: arguments match the kernel; the spectrum holds n*c half spectra of these sizes.
        unsafe { l.launch(be.grid_stride(d.n * d.s * d.h * (d.w / 2 + 1), 256)) }?;
        Tensor::from_device(&d.out_shape(), Layout::Nchw, out)
    }
}
