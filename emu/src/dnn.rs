//! cuDNN: the handle, the version, tensor, filter and convolution descriptors, and 2-D convolution forward,
//! backward data and backward filter with their algorithm and workspace queries: what dfgpu calls through
//! cudarc's safe API (src/backend/cuda/conv.rs). Emulated: packed f32 NCHW tensors and KCRS filters,
//! cross-correlation, any padding, stride, dilation and group count (depthwise included). Every algorithm runs
//! the same direct loops, summing in f64, and needs no workspace. Batch norm is not here: dfgpu runs its own
//! kernels for it (kernels/norm.cu).

use crate::tri;
use cudarc::cudnn::sys::{
    cudaStream_t, cudnnConvolutionBwdDataAlgoPerf_t, cudnnConvolutionBwdDataAlgo_t as BwdDataAlgo,
    cudnnConvolutionBwdFilterAlgoPerf_t, cudnnConvolutionBwdFilterAlgo_t as BwdFilterAlgo,
    cudnnConvolutionDescriptor_t, cudnnConvolutionFwdAlgoPerf_t, cudnnConvolutionFwdAlgo_t as FwdAlgo,
    cudnnConvolutionMode_t, cudnnDataType_t, cudnnDeterminism_t, cudnnFilterDescriptor_t, cudnnHandle_t,
    cudnnMathType_t, cudnnStatus_t, cudnnTensorDescriptor_t, cudnnTensorFormat_t,
};
use rayon::prelude::*;
use std::ffi::{c_int, c_uint, c_void};
use std::ops::Range;

use cudnnStatus_t::{
    CUDNN_STATUS_BAD_PARAM as BAD_PARAM, CUDNN_STATUS_NOT_SUPPORTED as NOT_SUPPORTED, CUDNN_STATUS_SUCCESS as SUCCESS,
};

/// cuDNN 9.14.0, as cudnnGetVersion encodes it (major * 10000 + minor * 100 + patch).
const VERSION: usize = 91400;

type Status<T> = Result<T, cudnnStatus_t>;

/// Says on stderr why `what` fails, and gives `status`.
fn say(status: cudnnStatus_t, what: &str, why: impl std::fmt::Display) -> cudnnStatus_t {
    eprintln!("dfgpu-emu: {what}: {why}");
    status
}

fn fail<T>(status: cudnnStatus_t, what: &str, why: impl std::fmt::Display) -> Status<T> {
    Err(say(status, what, why))
}

// ---- the handle: it holds nothing, as every operation has finished when its call returns

#[no_mangle]
pub unsafe extern "C" fn cudnnCreate(handle: *mut cudnnHandle_t) -> cudnnStatus_t {
    create(handle, 0u8)
}

#[no_mangle]
pub unsafe extern "C" fn cudnnDestroy(handle: cudnnHandle_t) -> cudnnStatus_t {
    destroy::<u8, _>(handle)
}

#[no_mangle]
pub unsafe extern "C" fn cudnnSetStream(handle: cudnnHandle_t, _stream: cudaStream_t) -> cudnnStatus_t {
    tri!(handle_ok(handle, "cudnnSetStream"));
    SUCCESS
}

#[no_mangle]
pub unsafe extern "C" fn cudnnGetVersion() -> usize {
    VERSION
}

fn handle_ok(handle: cudnnHandle_t, what: &str) -> Status<()> {
    if handle.is_null() {
        return fail(BAD_PARAM, what, "null handle");
    }
    Ok(())
}

// ---- descriptors: Rust values behind the opaque pointers

/// A tensor's (n, c, h, w) or a filter's (k, c, r, s), packed f32, once set.
#[derive(Clone, Copy)]
struct Dims(Option<[usize; 4]>);

/// A convolution's geometry once set, and its group count and math type (set apart, with defaults).
#[derive(Clone, Copy)]
struct ConvDesc {
    geom: Option<Geom>,
    groups: usize,
    math: cudnnMathType_t,
}

/// Padding, stride and dilation, each as (rows, columns).
#[derive(Clone, Copy)]
struct Geom {
    pad: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
}

unsafe fn create<T, H>(out: *mut *mut H, value: T) -> cudnnStatus_t {
    if out.is_null() {
        return BAD_PARAM;
    }
    out.write(Box::into_raw(Box::new(value)) as *mut H);
    SUCCESS
}

unsafe fn destroy<T, H>(p: *mut H) -> cudnnStatus_t {
    if !p.is_null() {
        drop(Box::from_raw(p as *mut T));
    }
    SUCCESS
}

/// The value behind a descriptor that `create` made as a `T`, to set it.
unsafe fn get_mut<'a, T, H>(p: *mut H, what: &str) -> Status<&'a mut T> {
    match (p as *mut T).as_mut() {
        Some(v) => Ok(v),
        None => fail(BAD_PARAM, what, "null descriptor"),
    }
}

/// A copy of the value behind a descriptor (one call may pass the same descriptor twice, as x and y).
unsafe fn read<T: Copy, H>(p: *mut H, what: &str) -> Status<T> {
    match (p as *const T).as_ref() {
        Some(v) => Ok(*v),
        None => fail(BAD_PARAM, what, "null descriptor"),
    }
}

#[no_mangle]
pub unsafe extern "C" fn cudnnCreateTensorDescriptor(desc: *mut cudnnTensorDescriptor_t) -> cudnnStatus_t {
    create(desc, Dims(None))
}

#[no_mangle]
pub unsafe extern "C" fn cudnnDestroyTensorDescriptor(desc: cudnnTensorDescriptor_t) -> cudnnStatus_t {
    destroy::<Dims, _>(desc)
}

#[no_mangle]
pub unsafe extern "C" fn cudnnCreateFilterDescriptor(desc: *mut cudnnFilterDescriptor_t) -> cudnnStatus_t {
    create(desc, Dims(None))
}

#[no_mangle]
pub unsafe extern "C" fn cudnnDestroyFilterDescriptor(desc: cudnnFilterDescriptor_t) -> cudnnStatus_t {
    destroy::<Dims, _>(desc)
}

#[no_mangle]
pub unsafe extern "C" fn cudnnCreateConvolutionDescriptor(desc: *mut cudnnConvolutionDescriptor_t) -> cudnnStatus_t {
    create(desc, ConvDesc { geom: None, groups: 1, math: cudnnMathType_t::CUDNN_DEFAULT_MATH })
}

#[no_mangle]
pub unsafe extern "C" fn cudnnDestroyConvolutionDescriptor(desc: cudnnConvolutionDescriptor_t) -> cudnnStatus_t {
    destroy::<ConvDesc, _>(desc)
}

/// Sets a tensor or filter descriptor: packed f32 NCHW (KCRS) only, every size at least 1.
unsafe fn set_dims<H>(desc: *mut H, what: &str, format: c_uint, dtype: c_uint, dims: [c_int; 4]) -> cudnnStatus_t {
    let d = tri!(get_mut::<Dims, _>(desc, what));
    if format != cudnnTensorFormat_t::CUDNN_TENSOR_NCHW as c_uint {
        return say(NOT_SUPPORTED, what, format_args!("tensor format {format} is not emulated (NCHW only)"));
    }
    if dtype != cudnnDataType_t::CUDNN_DATA_FLOAT as c_uint {
        return say(NOT_SUPPORTED, what, format_args!("data type {dtype} is not emulated (FLOAT only)"));
    }
    if dims.iter().any(|&v| v < 1) {
        return say(BAD_PARAM, what, format_args!("dimensions {dims:?}"));
    }
    d.0 = Some(dims.map(|v| v as usize));
    SUCCESS
}

#[no_mangle]
pub unsafe extern "C" fn cudnnSetTensor4dDescriptor(
    desc: cudnnTensorDescriptor_t,
    format: c_uint,
    dtype: c_uint,
    n: c_int,
    c: c_int,
    h: c_int,
    w: c_int,
) -> cudnnStatus_t {
    set_dims(desc, "cudnnSetTensor4dDescriptor", format, dtype, [n, c, h, w])
}

#[no_mangle]
pub unsafe extern "C" fn cudnnSetFilter4dDescriptor(
    desc: cudnnFilterDescriptor_t,
    dtype: c_uint,
    format: c_uint,
    k: c_int,
    c: c_int,
    h: c_int,
    w: c_int,
) -> cudnnStatus_t {
    set_dims(desc, "cudnnSetFilter4dDescriptor", format, dtype, [k, c, h, w])
}

#[no_mangle]
pub unsafe extern "C" fn cudnnSetConvolution2dDescriptor(
    desc: cudnnConvolutionDescriptor_t,
    pad_h: c_int,
    pad_w: c_int,
    stride_h: c_int,
    stride_w: c_int,
    dilation_h: c_int,
    dilation_w: c_int,
    mode: c_uint,
    compute: c_uint,
) -> cudnnStatus_t {
    let what = "cudnnSetConvolution2dDescriptor";
    let d = tri!(get_mut::<ConvDesc, _>(desc, what));
    if mode != cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION as c_uint {
        return say(NOT_SUPPORTED, what, format_args!("mode {mode} is not emulated (CROSS_CORRELATION only)"));
    }
    if compute != cudnnDataType_t::CUDNN_DATA_FLOAT as c_uint {
        return say(NOT_SUPPORTED, what, format_args!("compute type {compute} is not emulated (FLOAT only)"));
    }
    let (pad, stride, dilation) = ([pad_h, pad_w], [stride_h, stride_w], [dilation_h, dilation_w]);
    if pad.iter().any(|&p| p < 0) || stride.iter().chain(&dilation).any(|&s| s < 1) {
        let why = format_args!("padding {pad:?}, stride {stride:?}, dilation {dilation:?}");
        return say(BAD_PARAM, what, why);
    }
    let u = |v: [c_int; 2]| v.map(|x| x as usize);
    d.geom = Some(Geom { pad: u(pad), stride: u(stride), dilation: u(dilation) });
    SUCCESS
}

#[no_mangle]
pub unsafe extern "C" fn cudnnSetConvolutionGroupCount(
    desc: cudnnConvolutionDescriptor_t,
    groups: c_int,
) -> cudnnStatus_t {
    let what = "cudnnSetConvolutionGroupCount";
    let d = tri!(get_mut::<ConvDesc, _>(desc, what));
    if groups < 1 {
        return say(BAD_PARAM, what, format_args!("{groups} groups"));
    }
    d.groups = groups as usize;
    SUCCESS
}

/// Any math type is accepted (the emulator always sums in f64) and kept, to be reported by the algorithm queries.
#[no_mangle]
pub unsafe extern "C" fn cudnnSetConvolutionMathType(
    desc: cudnnConvolutionDescriptor_t,
    math: c_uint,
) -> cudnnStatus_t {
    use cudnnMathType_t::*;
    let what = "cudnnSetConvolutionMathType";
    let d = tri!(get_mut::<ConvDesc, _>(desc, what));
    let known = [CUDNN_DEFAULT_MATH, CUDNN_TENSOR_OP_MATH, CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION, CUDNN_FMA_MATH];
    match known.into_iter().find(|&m| m as c_uint == math) {
        Some(m) => {
            d.math = m;
            SUCCESS
        }
        None => say(BAD_PARAM, what, format_args!("math type {math}")),
    }
}

// ---- one convolution, its descriptors checked against each other

/// x [n, c, h, w], w [k, c / groups, r, s], y [n, k, oh, ow].
#[derive(Clone, Copy)]
struct Conv {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    r: usize,
    s: usize,
    oh: usize,
    ow: usize,
    groups: usize,
    geom: Geom,
    math: cudnnMathType_t,
}

impl Conv {
    fn x_len(&self) -> usize {
        self.n * self.c * self.h * self.w
    }
    fn w_len(&self) -> usize {
        self.k * (self.c / self.groups) * self.r * self.s
    }
    fn y_len(&self) -> usize {
        self.n * self.k * self.oh * self.ow
    }
}

unsafe fn conv_of(
    what: &str,
    x: cudnnTensorDescriptor_t,
    w: cudnnFilterDescriptor_t,
    conv: cudnnConvolutionDescriptor_t,
    y: cudnnTensorDescriptor_t,
) -> Status<Conv> {
    let (xd, wd) = (read::<Dims, _>(x, what)?, read::<Dims, _>(w, what)?);
    let (cd, yd) = (read::<ConvDesc, _>(conv, what)?, read::<Dims, _>(y, what)?);
    let (Some([n, c, h, wi]), Some([k, cg, r, s]), Some(geom), Some(ys)) = (xd.0, wd.0, cd.geom, yd.0) else {
        return fail(BAD_PARAM, what, "a descriptor was never set");
    };
    let g = cd.groups;
    let shapes = format!("x {:?}, w {:?}, {g} groups, y {ys:?}", [n, c, h, wi], [k, cg, r, s]);
    if c % g != 0 || k % g != 0 || cg != c / g {
        return fail(BAD_PARAM, what, format_args!("{shapes}: the channels do not split into the groups"));
    }
    // Output size per axis: (in + 2 pad - dilation (kernel - 1) - 1) / stride + 1, when the kernel fits.
    let out = |len: usize, ker: usize, a: usize| {
        let (padded, reach) = (len + 2 * geom.pad[a], geom.dilation[a] * (ker - 1) + 1);
        (padded >= reach).then(|| (padded - reach) / geom.stride[a] + 1)
    };
    let (Some(oh), Some(ow)) = (out(h, r, 0), out(wi, s, 1)) else {
        return fail(BAD_PARAM, what, format_args!("{shapes}: the filter is larger than the padded input"));
    };
    if ys != [n, k, oh, ow] {
        return fail(BAD_PARAM, what, format_args!("{shapes}: y should be {:?}", [n, k, oh, ow]));
    }
    Ok(Conv { n, c, h, w: wi, k, r, s, oh, ow, groups: g, geom, math: cd.math })
}

/// Every algorithm number below `count` is accepted: all run the same loops.
fn algo_ok(what: &str, algo: c_uint, count: c_uint) -> Status<()> {
    if algo >= count {
        return fail(BAD_PARAM, what, format_args!("algorithm {algo}"));
    }
    Ok(())
}

/// One result, from an algorithm that needs no workspace: what the `_v7` queries report.
unsafe fn one_result<P>(what: &str, requested: c_int, returned: *mut c_int, perf: *mut P, result: P) -> cudnnStatus_t {
    if requested < 1 || returned.is_null() || perf.is_null() {
        return say(BAD_PARAM, what, format_args!("room for {requested} results, or a null output"));
    }
    perf.write(result);
    returned.write(1);
    SUCCESS
}

unsafe fn no_workspace(size: *mut usize) -> cudnnStatus_t {
    if size.is_null() {
        return BAD_PARAM;
    }
    size.write(0);
    SUCCESS
}

/// The `_v7` algorithm query of one direction: its parameters in cuDNN's order (descriptor types differ per
/// direction), the (input, filter, output) order for `conv_of`, and the one algorithm it reports.
macro_rules! algo_query {
    ($name:ident, $perf:ident, ($a:ident: $ta:ty, $b:ident: $tb:ty, $c:ident: $tc:ty), ($x:ident, $w:ident, $y:ident), $algo:expr) => {
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            handle: cudnnHandle_t,
            $a: $ta,
            $b: $tb,
            conv: cudnnConvolutionDescriptor_t,
            $c: $tc,
            requested: c_int,
            returned: *mut c_int,
            perf: *mut $perf,
        ) -> cudnnStatus_t {
            let what = stringify!($name);
            tri!(handle_ok(handle, what));
            let cv = tri!(conv_of(what, $x, $w, conv, $y));
            let result = $perf {
                algo: $algo,
                status: SUCCESS,
                time: 0.0,
                memory: 0,
                determinism: cudnnDeterminism_t::CUDNN_DETERMINISTIC,
                mathType: cv.math,
                reserved: [0; 3],
            };
            one_result(what, requested, returned, perf, result)
        }
    };
}

/// The workspace query of one direction (parameters as in `algo_query`, then the number of algorithms).
macro_rules! workspace_query {
    ($name:ident, ($a:ident: $ta:ty, $b:ident: $tb:ty, $c:ident: $tc:ty), ($x:ident, $w:ident, $y:ident), $count:expr) => {
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            handle: cudnnHandle_t,
            $a: $ta,
            $b: $tb,
            conv: cudnnConvolutionDescriptor_t,
            $c: $tc,
            algo: c_uint,
            size: *mut usize,
        ) -> cudnnStatus_t {
            let what = stringify!($name);
            tri!(handle_ok(handle, what));
            tri!(conv_of(what, $x, $w, conv, $y));
            tri!(algo_ok(what, algo, $count as c_uint));
            no_workspace(size)
        }
    };
}

type Td = cudnnTensorDescriptor_t;
type Fd = cudnnFilterDescriptor_t;

algo_query!(cudnnGetConvolutionForwardAlgorithm_v7, cudnnConvolutionFwdAlgoPerf_t, (x: Td, w: Fd, y: Td), (x, w, y),
    FwdAlgo::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM);
algo_query!(cudnnGetConvolutionBackwardDataAlgorithm_v7, cudnnConvolutionBwdDataAlgoPerf_t, (w: Fd, dy: Td, dx: Td),
    (dx, w, dy), BwdDataAlgo::CUDNN_CONVOLUTION_BWD_DATA_ALGO_0);
algo_query!(cudnnGetConvolutionBackwardFilterAlgorithm_v7, cudnnConvolutionBwdFilterAlgoPerf_t,
    (x: Td, dy: Td, dw: Fd), (x, dw, dy), BwdFilterAlgo::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0);
workspace_query!(cudnnGetConvolutionForwardWorkspaceSize, (x: Td, w: Fd, y: Td), (x, w, y),
    FwdAlgo::CUDNN_CONVOLUTION_FWD_ALGO_COUNT);
workspace_query!(cudnnGetConvolutionBackwardDataWorkspaceSize, (w: Fd, dy: Td, dx: Td), (dx, w, dy),
    BwdDataAlgo::CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT);
workspace_query!(cudnnGetConvolutionBackwardFilterWorkspaceSize, (x: Td, dy: Td, dw: Fd), (x, dw, dy),
    BwdFilterAlgo::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT);

// ---- the three launches

/// A device buffer of f32 values that a launch touches, named for the messages.
struct Buf {
    p: u64,
    len: usize,
    name: &'static str,
}

/// What every launch checks before it touches memory: the handle, the algorithm, alpha and beta (host f32, as
/// for FLOAT data), that the workspace and each buffer lie inside an allocation, and that the output overlaps
/// no input (cuDNN does not compute in place). Gives (alpha, beta).
#[allow(clippy::too_many_arguments)]
unsafe fn launch_checks(
    what: &str,
    handle: cudnnHandle_t,
    (algo, count): (c_uint, c_uint),
    alpha: *const c_void,
    beta: *const c_void,
    (ws, ws_bytes): (*mut c_void, usize),
    inputs: [&Buf; 2],
    out: &Buf,
) -> Status<(f64, f64)> {
    handle_ok(handle, what)?;
    algo_ok(what, algo, count)?;
    if alpha.is_null() || beta.is_null() {
        return fail(BAD_PARAM, what, "alpha or beta is null");
    }
    let check = |p: u64, bytes: usize, name: &str| {
        crate::mem::check(p, bytes, &format!("{what} {name}")).map_err(|_| BAD_PARAM)
    };
    if !ws.is_null() {
        check(ws as u64, ws_bytes, "workspace")?;
    }
    for b in inputs.iter().chain([&out]) {
        check(b.p, b.len * 4, b.name)?;
    }
    for b in inputs {
        if b.p < out.p + 4 * out.len as u64 && out.p < b.p + 4 * b.len as u64 {
            return fail(BAD_PARAM, what, format_args!("{} overlaps {}", out.name, b.name));
        }
    }
    Ok((*(alpha as *const f32) as f64, *(beta as *const f32) as f64))
}

/// out = alpha acc + beta out, without reading out when beta is 0 (it may hold NaN).
fn store(out: &mut [f32], acc: &[f64], alpha: f64, beta: f64) {
    for (o, a) in out.iter_mut().zip(acc) {
        *o = if beta == 0.0 { alpha * a } else { alpha * a + beta * *o as f64 } as f32;
    }
}

/// The outputs o < n_out whose input o * stride + off lies in [0, n_in).
fn valid(n_out: usize, n_in: usize, stride: usize, off: isize) -> Range<usize> {
    let lo = if off < 0 { off.unsigned_abs().div_ceil(stride) } else { 0 };
    let room = n_in as isize - off;
    let hi = if room <= 0 { 0 } else { ((room - 1) as usize / stride + 1).min(n_out) };
    lo.min(hi)..hi
}

/// The kernel tap (ky, kx) of a convolution: the output rows and columns whose input it reads inside the image
/// (not in the padding), the offset of its input row, and the input column of the first of those columns.
struct Tap {
    oys: Range<usize>,
    oxs: Range<usize>,
    off_y: isize,
    ix0: usize,
}

impl Conv {
    /// None when the tap reads only padding.
    fn tap(&self, ky: usize, kx: usize) -> Option<Tap> {
        let Geom { pad, stride, dilation } = self.geom;
        let off_y = (ky * dilation[0]) as isize - pad[0] as isize;
        let off_x = (kx * dilation[1]) as isize - pad[1] as isize;
        let (oys, oxs) = (valid(self.oh, self.h, stride[0], off_y), valid(self.ow, self.w, stride[1], off_x));
        if oys.is_empty() || oxs.is_empty() {
            return None;
        }
        let ix0 = ((oxs.start * stride[1]) as isize + off_x) as usize;
        Some(Tap { oys, oxs, off_y, ix0 })
    }

    fn iy(&self, t: &Tap, oy: usize) -> usize {
        ((oy * self.geom.stride[0]) as isize + t.off_y) as usize
    }

    /// y = alpha conv(x, w) + beta y, one (image, output channel) plane per task.
    fn forward(&self, x: &[f32], w: &[f32], y: &mut [f32], alpha: f64, beta: f64) {
        let (cg, kg, sx) = (self.c / self.groups, self.k / self.groups, self.geom.stride[1]);
        let (plane_in, plane_out) = (self.h * self.w, self.oh * self.ow);
        y.par_chunks_mut(plane_out).enumerate().for_each(|(i, yp)| {
            let (b, co) = (i / self.k, i % self.k);
            let mut acc = vec![0.0f64; plane_out];
            for ci in 0..cg {
                let xp = &x[(b * self.c + co / kg * cg + ci) * plane_in..][..plane_in];
                for ky in 0..self.r {
                    for kx in 0..self.s {
                        let wv = w[((co * cg + ci) * self.r + ky) * self.s + kx] as f64;
                        let Some(t) = self.tap(ky, kx) else { continue };
                        for oy in t.oys.clone() {
                            let row = &xp[self.iy(&t, oy) * self.w + t.ix0..];
                            let out = &mut acc[oy * self.ow..][t.oxs.clone()];
                            for (o, v) in out.iter_mut().zip(row.iter().step_by(sx)) {
                                *o += wv * *v as f64;
                            }
                        }
                    }
                }
            }
            store(yp, &acc, alpha, beta);
        });
    }

    /// dx = alpha convᵀ(dy, w) + beta dx, one (image, input channel) plane per task.
    fn backward_data(&self, w: &[f32], dy: &[f32], dx: &mut [f32], alpha: f64, beta: f64) {
        let (cg, kg, sx) = (self.c / self.groups, self.k / self.groups, self.geom.stride[1]);
        let (plane_in, plane_out) = (self.h * self.w, self.oh * self.ow);
        dx.par_chunks_mut(plane_in).enumerate().for_each(|(i, dxp)| {
            let (b, ci) = (i / self.c, i % self.c);
            let (g, cl) = (ci / cg, ci % cg);
            let mut acc = vec![0.0f64; plane_in];
            for co in g * kg..(g + 1) * kg {
                let dyp = &dy[(b * self.k + co) * plane_out..][..plane_out];
                for ky in 0..self.r {
                    for kx in 0..self.s {
                        let wv = w[((co * cg + cl) * self.r + ky) * self.s + kx] as f64;
                        let Some(t) = self.tap(ky, kx) else { continue };
                        for oy in t.oys.clone() {
                            let src = &dyp[oy * self.ow..][t.oxs.clone()];
                            let dst = &mut acc[self.iy(&t, oy) * self.w + t.ix0..];
                            for (o, d) in dst.iter_mut().step_by(sx).zip(src) {
                                *o += wv * *d as f64;
                            }
                        }
                    }
                }
            }
            store(dxp, &acc, alpha, beta);
        });
    }

    /// dw = alpha (sum over images of dy ⋆ x) + beta dw, one (output channel, input channel) filter per task.
    fn backward_filter(&self, x: &[f32], dy: &[f32], dw: &mut [f32], alpha: f64, beta: f64) {
        let (cg, kg, sx) = (self.c / self.groups, self.k / self.groups, self.geom.stride[1]);
        let (plane_in, plane_out) = (self.h * self.w, self.oh * self.ow);
        dw.par_chunks_mut(self.r * self.s).enumerate().for_each(|(i, dwp)| {
            let (co, cl) = (i / cg, i % cg);
            let ci = co / kg * cg + cl;
            let mut acc = vec![0.0f64; self.r * self.s];
            for b in 0..self.n {
                let xp = &x[(b * self.c + ci) * plane_in..][..plane_in];
                let dyp = &dy[(b * self.k + co) * plane_out..][..plane_out];
                for ky in 0..self.r {
                    for kx in 0..self.s {
                        let Some(t) = self.tap(ky, kx) else { continue };
                        for oy in t.oys.clone() {
                            let d = &dyp[oy * self.ow..][t.oxs.clone()];
                            let row = &xp[self.iy(&t, oy) * self.w + t.ix0..];
                            acc[ky * self.s + kx] +=
                                d.iter().zip(row.iter().step_by(sx)).map(|(a, v)| *a as f64 * *v as f64).sum::<f64>();
                        }
                    }
                }
            }
            store(dwp, &acc, alpha, beta);
        });
    }
}

unsafe fn slice<'a>(b: &Buf) -> &'a [f32] {
    std::slice::from_raw_parts(b.p as *const f32, b.len)
}

unsafe fn slice_mut<'a>(b: &Buf) -> &'a mut [f32] {
    std::slice::from_raw_parts_mut(b.p as *mut f32, b.len)
}

#[no_mangle]
pub unsafe extern "C" fn cudnnConvolutionForward(
    handle: cudnnHandle_t,
    alpha: *const c_void,
    x_desc: cudnnTensorDescriptor_t,
    x: *const c_void,
    w_desc: cudnnFilterDescriptor_t,
    w: *const c_void,
    conv: cudnnConvolutionDescriptor_t,
    algo: c_uint,
    ws: *mut c_void,
    ws_bytes: usize,
    beta: *const c_void,
    y_desc: cudnnTensorDescriptor_t,
    y: *mut c_void,
) -> cudnnStatus_t {
    let what = "cudnnConvolutionForward";
    let cv = tri!(conv_of(what, x_desc, w_desc, conv, y_desc));
    let xb = Buf { p: x as u64, len: cv.x_len(), name: "x" };
    let wb = Buf { p: w as u64, len: cv.w_len(), name: "w" };
    let yb = Buf { p: y as u64, len: cv.y_len(), name: "y" };
    let algos = (algo, FwdAlgo::CUDNN_CONVOLUTION_FWD_ALGO_COUNT as c_uint);
    let (a, b) = tri!(launch_checks(what, handle, algos, alpha, beta, (ws, ws_bytes), [&xb, &wb], &yb));
    // SAFETY: each range lies in an allocation, and y overlaps neither input (launch_checks).
    cv.forward(slice(&xb), slice(&wb), slice_mut(&yb), a, b);
    SUCCESS
}

#[no_mangle]
pub unsafe extern "C" fn cudnnConvolutionBackwardData(
    handle: cudnnHandle_t,
    alpha: *const c_void,
    w_desc: cudnnFilterDescriptor_t,
    w: *const c_void,
    dy_desc: cudnnTensorDescriptor_t,
    dy: *const c_void,
    conv: cudnnConvolutionDescriptor_t,
    algo: c_uint,
    ws: *mut c_void,
    ws_bytes: usize,
    beta: *const c_void,
    dx_desc: cudnnTensorDescriptor_t,
    dx: *mut c_void,
) -> cudnnStatus_t {
    let what = "cudnnConvolutionBackwardData";
    let cv = tri!(conv_of(what, dx_desc, w_desc, conv, dy_desc));
    let wb = Buf { p: w as u64, len: cv.w_len(), name: "w" };
    let dyb = Buf { p: dy as u64, len: cv.y_len(), name: "dy" };
    let dxb = Buf { p: dx as u64, len: cv.x_len(), name: "dx" };
    let algos = (algo, BwdDataAlgo::CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT as c_uint);
    let (a, b) = tri!(launch_checks(what, handle, algos, alpha, beta, (ws, ws_bytes), [&wb, &dyb], &dxb));
    // SAFETY: as in cudnnConvolutionForward.
    cv.backward_data(slice(&wb), slice(&dyb), slice_mut(&dxb), a, b);
    SUCCESS
}

#[no_mangle]
pub unsafe extern "C" fn cudnnConvolutionBackwardFilter(
    handle: cudnnHandle_t,
    alpha: *const c_void,
    x_desc: cudnnTensorDescriptor_t,
    x: *const c_void,
    dy_desc: cudnnTensorDescriptor_t,
    dy: *const c_void,
    conv: cudnnConvolutionDescriptor_t,
    algo: c_uint,
    ws: *mut c_void,
    ws_bytes: usize,
    beta: *const c_void,
    dw_desc: cudnnFilterDescriptor_t,
    dw: *mut c_void,
) -> cudnnStatus_t {
    let what = "cudnnConvolutionBackwardFilter";
    let cv = tri!(conv_of(what, x_desc, dw_desc, conv, dy_desc));
    let xb = Buf { p: x as u64, len: cv.x_len(), name: "x" };
    let dyb = Buf { p: dy as u64, len: cv.y_len(), name: "dy" };
    let dwb = Buf { p: dw as u64, len: cv.w_len(), name: "dw" };
    let algos = (algo, BwdFilterAlgo::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT as c_uint);
    let (a, b) = tri!(launch_checks(what, handle, algos, alpha, beta, (ws, ws_bytes), [&xb, &dyb], &dwb));
    // SAFETY: as in cudnnConvolutionForward.
    cv.backward_filter(slice(&xb), slice(&dyb), slice_mut(&dwb), a, b);
    SUCCESS
}
