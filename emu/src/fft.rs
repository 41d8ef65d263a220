//! cuFFT: batched 2-D real-to-complex transforms planned with cufftPlanMany, which is all dfgpu calls (through
//! cudarc's `CudaFft::plan_many` and `exec_r2c`, in src/backend/cuda/fft.rs's CufftPipeline). Computed with
//! rustfft in f64, then rounded to f32: forward (e^-2πi), unnormalized, H x (W/2 + 1) bins per plane.

use cudarc::cufft::sys::{cudaStream_t, cufftComplex, cufftHandle, cufftReal, cufftResult, cufftType};
use rayon::prelude::*;
use rustfft::{num_complex::Complex64, Fft, FftPlanner};
use std::collections::BTreeMap;
use std::ffi::{c_int, c_uint};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use cufftResult::{CUFFT_INVALID_PLAN as INVALID_PLAN, CUFFT_INVALID_VALUE as INVALID_VALUE, CUFFT_SUCCESS as SUCCESS};

/// cuFFT 12.0.0, that of CUDA 13.0, as cufftGetVersion encodes it (major * 1000 + minor * 100 + patch).
const VERSION: c_int = 12000;

/// Where value (b, y, x) of a batch lies: at b dist + (y row + x) stride, counted in values (floats in, complex
/// values out).
#[derive(Clone, Copy)]
struct Layout {
    dist: usize,
    row: usize,
    stride: usize,
}

impl Layout {
    fn at(&self, b: usize, y: usize, x: usize) -> usize {
        b * self.dist + (y * self.row + x) * self.stride
    }
}

#[derive(Clone)]
struct Plan {
    /// Rows (H) and columns (W) of each real input.
    h: usize,
    w: usize,
    batch: usize,
    input: Layout,
    output: Layout,
    /// Transforms of a row (length W) and of a column (length H).
    rows: Arc<dyn Fft<f64>>,
    cols: Arc<dyn Fft<f64>>,
}

impl Plan {
    /// Bins per output row.
    fn half(&self) -> usize {
        self.w / 2 + 1
    }
    /// Values spanned by the input (floats) and the output (complex values).
    fn extents(&self) -> (usize, usize) {
        let last = self.batch - 1;
        (self.input.at(last, self.h - 1, self.w - 1) + 1, self.output.at(last, self.h - 1, self.half() - 1) + 1)
    }
}

/// Live plans by handle. Handles start at 1: cudarc takes 0 for "no plan".
static PLANS: Mutex<BTreeMap<cufftHandle, Plan>> = Mutex::new(BTreeMap::new());
static NEXT: AtomicI32 = AtomicI32::new(1);

fn fail(status: cufftResult, what: &str, why: impl std::fmt::Display) -> cufftResult {
    eprintln!("dfgpu-emu: {what}: {why}");
    status
}

#[no_mangle]
pub unsafe extern "C" fn cufftGetVersion(version: *mut c_int) -> cufftResult {
    if version.is_null() {
        return INVALID_VALUE;
    }
    version.write(VERSION);
    SUCCESS
}

/// The layout of one side: the basic, contiguous one (`line` values per row) when `embed` is null, as cuFFT
/// ignores stride and dist then; else rows of embed[1] values, `stride` apart, planes `dist` apart.
unsafe fn layout(embed: *const c_int, stride: c_int, dist: c_int, (h, line): (usize, usize)) -> Option<Layout> {
    if embed.is_null() {
        return Some(Layout { dist: h * line, row: line, stride: 1 });
    }
    let row = usize::try_from(*embed.add(1)).ok().filter(|&r| r >= line)?;
    let stride = usize::try_from(stride).ok().filter(|&s| s >= 1)?;
    let dist = usize::try_from(dist).ok().filter(|&d| d >= 1)?;
    Some(Layout { dist, row, stride })
}

/// Only rank 2, R2C, is emulated. n is {H, W}; inembed and onembed follow cuFFT's advanced layout (their first
/// value, the number of rows, is not needed).
#[no_mangle]
pub unsafe extern "C" fn cufftPlanMany(
    plan: *mut cufftHandle,
    rank: c_int,
    n: *mut c_int,
    inembed: *mut c_int,
    istride: c_int,
    idist: c_int,
    onembed: *mut c_int,
    ostride: c_int,
    odist: c_int,
    kind: c_uint,
    batch: c_int,
) -> cufftResult {
    let what = "cufftPlanMany";
    if kind != cufftType::CUFFT_R2C as c_uint || rank != 2 {
        return fail(
            cufftResult::CUFFT_NOT_SUPPORTED,
            what,
            format_args!("type {kind}, rank {rank}: only 2-D R2C is emulated"),
        );
    }
    if plan.is_null() || n.is_null() {
        return fail(INVALID_VALUE, what, "null plan or sizes");
    }
    let (h, w) = (*n, *n.add(1));
    if h < 1 || w < 1 || batch < 1 {
        return fail(cufftResult::CUFFT_INVALID_SIZE, what, format_args!("{h} x {w}, batch {batch}"));
    }
    let (h, w, batch) = (h as usize, w as usize, batch as usize);
    let (Some(input), Some(output)) =
        (layout(inembed, istride, idist, (h, w)), layout(onembed, ostride, odist, (h, w / 2 + 1)))
    else {
        return fail(
            INVALID_VALUE,
            what,
            format_args!("a layout: strides {istride}, {ostride}, dists {idist}, {odist}"),
        );
    };
    let mut planner = FftPlanner::new();
    let (rows, cols) = (planner.plan_fft_forward(w), planner.plan_fft_forward(h));
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    PLANS.lock().unwrap().insert(id, Plan { h, w, batch, input, output, rows, cols });
    plan.write(id);
    SUCCESS
}

#[no_mangle]
pub unsafe extern "C" fn cufftSetStream(plan: cufftHandle, _stream: cudaStream_t) -> cufftResult {
    if PLANS.lock().unwrap().contains_key(&plan) {
        SUCCESS
    } else {
        INVALID_PLAN
    }
}

#[no_mangle]
pub unsafe extern "C" fn cufftDestroy(plan: cufftHandle) -> cufftResult {
    match PLANS.lock().unwrap().remove(&plan) {
        Some(_) => SUCCESS,
        None => INVALID_PLAN,
    }
}

/// The half spectrum of one H x W real plane, column-major (bin (y, x) at x H + y): rows first, keeping their
/// W/2 + 1 non-redundant bins, then those columns.
fn spectrum(p: &Plan, input: &[f32], b: usize) -> Vec<Complex64> {
    let (h, w, half) = (p.h, p.w, p.half());
    let mut rows: Vec<Complex64> =
        (0..h * w).map(|i| Complex64::new(input[p.input.at(b, i / w, i % w)] as f64, 0.0)).collect();
    p.rows.process(&mut rows);
    let mut cols: Vec<Complex64> = (0..half * h).map(|i| rows[(i % h) * w + i / h]).collect();
    p.cols.process(&mut cols);
    cols
}

#[no_mangle]
pub unsafe extern "C" fn cufftExecR2C(
    plan: cufftHandle,
    idata: *mut cufftReal,
    odata: *mut cufftComplex,
) -> cufftResult {
    let what = "cufftExecR2C";
    let Some(p) = PLANS.lock().unwrap().get(&plan).cloned() else {
        return fail(INVALID_PLAN, what, format_args!("no plan {plan}"));
    };
    let (n_in, n_out) = p.extents();
    let (i_bytes, o_bytes) = (n_in * 4, n_out * 8);
    if crate::mem::check(idata as u64, i_bytes, "cufftExecR2C input").is_err()
        || crate::mem::check(odata as u64, o_bytes, "cufftExecR2C output").is_err()
    {
        return INVALID_VALUE;
    }
    let (i0, o0) = (idata as u64, odata as u64);
    if i0 < o0 + o_bytes as u64 && o0 < i0 + i_bytes as u64 {
        return fail(
            cufftResult::CUFFT_NOT_SUPPORTED,
            what,
            "the input overlaps the output: in-place transforms are not emulated",
        );
    }
    // SAFETY: both ranges lie in allocations (checked above) and do not overlap.
    let input = std::slice::from_raw_parts(idata as *const f32, n_in);
    let out = std::slice::from_raw_parts_mut(odata as *mut f32, 2 * n_out);
    let spectra: Vec<Vec<Complex64>> = (0..p.batch).into_par_iter().map(|b| spectrum(&p, input, b)).collect();
    for (b, s) in spectra.iter().enumerate() {
        for y in 0..p.h {
            for x in 0..p.half() {
                let (v, o) = (s[x * p.h + y], 2 * p.output.at(b, y, x));
                out[o] = v.re as f32;
                out[o + 1] = v.im as f32;
            }
        }
    }
    SUCCESS
}
