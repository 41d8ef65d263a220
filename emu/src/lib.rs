//! dfgpu's emulated CUDA device: a shared library that answers, on the CPU, the calls that cudarc makes into
//! libcuda (this file and launch.rs), cuBLAS (blas.rs), cuDNN (dnn.rs) and cuFFT (fft.rs). Loaded in place of
//! the real libraries (scripts/emu.sh puts it first on LD_LIBRARY_PATH under their names), it lets
//! src/backend/cuda run unchanged: its launches run kernels/*.cu compiled for the host (runtime.cpp), device
//! memory is host memory, and every stream operation is done before the call returns.
//!
//! What it checks that a GPU would not tell you: copies and library calls outside an allocation, barriers
//! not reached by every thread, warp operations with missing lanes, and, with DFGPU_EMU_SANITIZE=1, any
//! out-of-bounds access or undefined behaviour in a kernel (ASan, UBSan). What it cannot vouch for: speed,
//! the last bits of fast math, real warp scheduling, the memory model.

#![allow(non_snake_case, clippy::missing_safety_doc)]

mod blas;
mod dnn;
mod fft;
mod launch;
pub mod mem;

use cudarc::driver::sys::{CUcontext, CUdevice, CUdeviceptr, CUevent, CUresult, CUstream};
use std::ffi::{c_char, c_int, c_uint, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// What `dfgpu info` and cuDeviceGetName show: the emulator, never a GPU.
pub const DEVICE_NAME: &str = "dfgpu-emu (emulated CUDA device on the CPU)";
/// A host "GPU" of 8 GiB: enough for the tests, small enough that a runaway allocation fails early.
const TOTAL_MEM: usize = 8 << 30;
/// Few multiprocessors: grids sized by the SM count stay small, and grid-stride loops run several rounds.
const SMS: c_int = 4;

static INIT: AtomicBool = AtomicBool::new(false);

pub(crate) use CUresult::CUDA_SUCCESS as OK;

fn init_check() -> Result<(), CUresult> {
    if INIT.load(Ordering::Acquire) {
        Ok(())
    } else {
        Err(CUresult::CUDA_ERROR_NOT_INITIALIZED)
    }
}

macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(code) => return code,
        }
    };
}
pub(crate) use tri;

/// Writes `v` through an out-pointer that the caller gave, or fails on null.
unsafe fn put<T>(p: *mut T, v: T) -> CUresult {
    if p.is_null() {
        return CUresult::CUDA_ERROR_INVALID_VALUE;
    }
    p.write(v);
    OK
}

// ---- initialization and the device

#[no_mangle]
pub unsafe extern "C" fn cuInit(_flags: c_uint) -> CUresult {
    INIT.store(true, Ordering::Release);
    OK
}

#[no_mangle]
pub unsafe extern "C" fn cuDriverGetVersion(v: *mut c_int) -> CUresult {
    put(v, 13000)
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetCount(n: *mut c_int) -> CUresult {
    tri!(init_check());
    put(n, 1)
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGet(dev: *mut CUdevice, ordinal: c_int) -> CUresult {
    tri!(init_check());
    if ordinal != 0 {
        return CUresult::CUDA_ERROR_INVALID_DEVICE;
    }
    put(dev, 0)
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetName(name: *mut c_char, len: c_int, dev: CUdevice) -> CUresult {
    if dev != 0 || name.is_null() || len <= 0 {
        return CUresult::CUDA_ERROR_INVALID_VALUE;
    }
    let n = DEVICE_NAME.len().min(len as usize - 1);
    std::ptr::copy_nonoverlapping(DEVICE_NAME.as_ptr() as *const c_char, name, n);
    *name.add(n) = 0;
    OK
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceTotalMem_v2(bytes: *mut usize, _dev: CUdevice) -> CUresult {
    put(bytes, TOTAL_MEM)
}

#[no_mangle]
pub unsafe extern "C" fn cuMemGetInfo_v2(free: *mut usize, total: *mut usize) -> CUresult {
    let used = mem::bytes_in_use();
    tri!(match put(free, TOTAL_MEM.saturating_sub(used)) {
        OK => Ok(()),
        e => Err(e),
    });
    put(total, TOTAL_MEM)
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetAttribute(v: *mut c_int, attrib: c_uint, _dev: CUdevice) -> CUresult {
    use cudarc::driver::sys::CUdevice_attribute as A;
    let is = |a: A| attrib == a as c_uint;
    let value = if is(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR) {
        9
    } else if is(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR) {
        0
    } else if is(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT) {
        SMS
    } else if is(A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK) || is(A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X) {
        1024
    } else if is(A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR) {
        2048
    } else if is(A::CU_DEVICE_ATTRIBUTE_WARP_SIZE) {
        32
    } else if is(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK) {
        48 << 10
    } else if is(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
        || is(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR)
    {
        227 << 10
    } else if is(A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X) {
        i32::MAX
    } else if is(A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y) || is(A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z) {
        65535
    } else if is(A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y) {
        1024
    } else if is(A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z) {
        64
    } else {
        // Memory pools, managed memory, peer access, ...: not emulated, so cudarc takes its plain paths.
        0
    };
    put(v, value)
}

// ---- contexts: one primary context, current per host thread

struct Ctx;
static PRIMARY: Ctx = Ctx;
thread_local! {
    static CURRENT: std::cell::Cell<CUcontext> = const { std::cell::Cell::new(std::ptr::null_mut()) };
}

fn primary() -> CUcontext {
    &PRIMARY as *const Ctx as CUcontext
}

#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxRetain(ctx: *mut CUcontext, dev: CUdevice) -> CUresult {
    tri!(init_check());
    if dev != 0 {
        return CUresult::CUDA_ERROR_INVALID_DEVICE;
    }
    put(ctx, primary())
}

#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxRelease_v2(_dev: CUdevice) -> CUresult {
    OK
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxSetCurrent(ctx: CUcontext) -> CUresult {
    CURRENT.with(|c| c.set(ctx));
    OK
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxGetCurrent(ctx: *mut CUcontext) -> CUresult {
    put(ctx, CURRENT.with(|c| c.get()))
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxGetDevice(dev: *mut CUdevice) -> CUresult {
    put(dev, 0)
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxSynchronize() -> CUresult {
    OK
}

// ---- streams and events: every operation has finished when its call returns

#[no_mangle]
pub unsafe extern "C" fn cuStreamCreate(s: *mut CUstream, _flags: c_uint) -> CUresult {
    tri!(init_check());
    put(s, Box::into_raw(Box::new(0u64)) as CUstream)
}

#[no_mangle]
pub unsafe extern "C" fn cuStreamDestroy_v2(s: CUstream) -> CUresult {
    if !s.is_null() {
        drop(Box::from_raw(s as *mut u64));
    }
    OK
}

#[no_mangle]
pub unsafe extern "C" fn cuStreamSynchronize(_s: CUstream) -> CUresult {
    OK
}

#[no_mangle]
pub unsafe extern "C" fn cuStreamWaitEvent(_s: CUstream, _e: CUevent, _flags: c_uint) -> CUresult {
    OK
}

#[no_mangle]
pub unsafe extern "C" fn cuStreamQuery(_s: CUstream) -> CUresult {
    OK
}

#[no_mangle]
pub unsafe extern "C" fn cuLaunchHostFunc(
    _s: CUstream,
    f: Option<unsafe extern "C" fn(*mut c_void)>,
    data: *mut c_void,
) -> CUresult {
    match f {
        Some(f) => {
            f(data);
            OK
        }
        None => CUresult::CUDA_ERROR_INVALID_VALUE,
    }
}

/// An event is the moment it was recorded (timings on the emulator are host time, not GPU time).
struct Event(Option<Instant>);

#[no_mangle]
pub unsafe extern "C" fn cuEventCreate(e: *mut CUevent, _flags: c_uint) -> CUresult {
    put(e, Box::into_raw(Box::new(Event(None))) as CUevent)
}

#[no_mangle]
pub unsafe extern "C" fn cuEventDestroy_v2(e: CUevent) -> CUresult {
    if !e.is_null() {
        drop(Box::from_raw(e as *mut Event));
    }
    OK
}

#[no_mangle]
pub unsafe extern "C" fn cuEventRecord(e: CUevent, _s: CUstream) -> CUresult {
    if e.is_null() {
        return CUresult::CUDA_ERROR_INVALID_HANDLE;
    }
    (*(e as *mut Event)).0 = Some(Instant::now());
    OK
}

#[no_mangle]
pub unsafe extern "C" fn cuEventSynchronize(_e: CUevent) -> CUresult {
    OK
}

#[no_mangle]
pub unsafe extern "C" fn cuEventQuery(_e: CUevent) -> CUresult {
    OK
}

#[no_mangle]
pub unsafe extern "C" fn cuEventElapsedTime_v2(ms: *mut f32, start: CUevent, end: CUevent) -> CUresult {
    if start.is_null() || end.is_null() {
        return CUresult::CUDA_ERROR_INVALID_HANDLE;
    }
    match ((*(start as *mut Event)).0, (*(end as *mut Event)).0) {
        (Some(a), Some(b)) => put(ms, b.saturating_duration_since(a).as_secs_f32() * 1e3),
        _ => CUresult::CUDA_ERROR_INVALID_HANDLE,
    }
}

#[no_mangle]
pub unsafe extern "C" fn cuEventElapsedTime(ms: *mut f32, start: CUevent, end: CUevent) -> CUresult {
    cuEventElapsedTime_v2(ms, start, end)
}

// ---- errors

fn error_text(e: c_uint) -> (&'static [u8], &'static [u8]) {
    use CUresult as R;
    let is = |r: R| e == r as c_uint;
    if is(R::CUDA_SUCCESS) {
        (b"CUDA_SUCCESS\0", b"no error\0")
    } else if is(R::CUDA_ERROR_INVALID_VALUE) {
        (b"CUDA_ERROR_INVALID_VALUE\0", b"invalid argument (dfgpu-emu: a pointer or size outside an allocation?)\0")
    } else if is(R::CUDA_ERROR_OUT_OF_MEMORY) {
        (b"CUDA_ERROR_OUT_OF_MEMORY\0", b"out of memory\0")
    } else if is(R::CUDA_ERROR_NOT_INITIALIZED) {
        (b"CUDA_ERROR_NOT_INITIALIZED\0", b"initialization error\0")
    } else if is(R::CUDA_ERROR_NOT_FOUND) {
        (b"CUDA_ERROR_NOT_FOUND\0", b"named symbol not found\0")
    } else if is(R::CUDA_ERROR_LAUNCH_FAILED) {
        (b"CUDA_ERROR_LAUNCH_FAILED\0", b"unspecified launch failure (dfgpu-emu: the reason is on stderr)\0")
    } else if is(R::CUDA_ERROR_INVALID_HANDLE) {
        (b"CUDA_ERROR_INVALID_HANDLE\0", b"invalid resource handle\0")
    } else if is(R::CUDA_ERROR_INVALID_DEVICE) {
        (b"CUDA_ERROR_INVALID_DEVICE\0", b"invalid device ordinal\0")
    } else if is(R::CUDA_ERROR_NOT_SUPPORTED) {
        (b"CUDA_ERROR_NOT_SUPPORTED\0", b"operation not supported by dfgpu-emu\0")
    } else {
        (b"CUDA_ERROR_UNKNOWN\0", b"unknown error\0")
    }
}

#[no_mangle]
pub unsafe extern "C" fn cuGetErrorString(e: c_uint, s: *mut *const c_char) -> CUresult {
    put(s, error_text(e).1.as_ptr() as *const c_char)
}

#[no_mangle]
pub unsafe extern "C" fn cuGetErrorName(e: c_uint, s: *mut *const c_char) -> CUresult {
    put(s, error_text(e).0.as_ptr() as *const c_char)
}

// ---- memory (mem.rs keeps the allocations)

#[no_mangle]
pub unsafe extern "C" fn cuMemAlloc_v2(p: *mut CUdeviceptr, bytes: usize) -> CUresult {
    tri!(init_check());
    put(p, tri!(mem::alloc(bytes)))
}

#[no_mangle]
pub unsafe extern "C" fn cuMemAllocAsync(p: *mut CUdeviceptr, bytes: usize, _s: CUstream) -> CUresult {
    cuMemAlloc_v2(p, bytes)
}

#[no_mangle]
pub unsafe extern "C" fn cuMemFree_v2(p: CUdeviceptr) -> CUresult {
    tri!(mem::free(p));
    OK
}

#[no_mangle]
pub unsafe extern "C" fn cuMemFreeAsync(p: CUdeviceptr, _s: CUstream) -> CUresult {
    cuMemFree_v2(p)
}

#[no_mangle]
pub unsafe extern "C" fn cuMemHostAlloc(p: *mut *mut c_void, bytes: usize, _flags: c_uint) -> CUresult {
    put(p, tri!(mem::alloc(bytes)) as *mut c_void)
}

#[no_mangle]
pub unsafe extern "C" fn cuMemFreeHost(p: *mut c_void) -> CUresult {
    tri!(mem::free(p as CUdeviceptr));
    OK
}

#[no_mangle]
pub unsafe extern "C" fn cuMemcpyHtoD_v2(dst: CUdeviceptr, src: *const c_void, n: usize) -> CUresult {
    tri!(mem::check(dst, n, "cuMemcpyHtoD destination"));
    std::ptr::copy(src as *const u8, dst as *mut u8, n);
    OK
}

#[no_mangle]
pub unsafe extern "C" fn cuMemcpyHtoDAsync_v2(
    dst: CUdeviceptr,
    src: *const c_void,
    n: usize,
    _s: CUstream,
) -> CUresult {
    cuMemcpyHtoD_v2(dst, src, n)
}

#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoH_v2(dst: *mut c_void, src: CUdeviceptr, n: usize) -> CUresult {
    tri!(mem::check(src, n, "cuMemcpyDtoH source"));
    std::ptr::copy(src as *const u8, dst as *mut u8, n);
    OK
}

#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoHAsync_v2(dst: *mut c_void, src: CUdeviceptr, n: usize, _s: CUstream) -> CUresult {
    cuMemcpyDtoH_v2(dst, src, n)
}

#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoD_v2(dst: CUdeviceptr, src: CUdeviceptr, n: usize) -> CUresult {
    tri!(mem::check(src, n, "cuMemcpyDtoD source"));
    tri!(mem::check(dst, n, "cuMemcpyDtoD destination"));
    std::ptr::copy(src as *const u8, dst as *mut u8, n);
    OK
}

#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoDAsync_v2(dst: CUdeviceptr, src: CUdeviceptr, n: usize, _s: CUstream) -> CUresult {
    cuMemcpyDtoD_v2(dst, src, n)
}

#[no_mangle]
pub unsafe extern "C" fn cuMemsetD8_v2(dst: CUdeviceptr, v: u8, n: usize) -> CUresult {
    tri!(mem::check(dst, n, "cuMemsetD8 destination"));
    std::ptr::write_bytes(dst as *mut u8, v, n);
    OK
}

#[no_mangle]
pub unsafe extern "C" fn cuMemsetD8Async(dst: CUdeviceptr, v: u8, n: usize, _s: CUstream) -> CUresult {
    cuMemsetD8_v2(dst, v, n)
}

#[no_mangle]
pub unsafe extern "C" fn cuMemsetD32_v2(dst: CUdeviceptr, v: u32, n: usize) -> CUresult {
    tri!(mem::check(dst, n * 4, "cuMemsetD32 destination"));
    std::slice::from_raw_parts_mut(dst as *mut u32, n).fill(v);
    OK
}

#[no_mangle]
pub unsafe extern "C" fn cuMemsetD32Async(dst: CUdeviceptr, v: u32, n: usize, _s: CUstream) -> CUresult {
    cuMemsetD32_v2(dst, v, n)
}
