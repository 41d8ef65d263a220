//! GPU timing with CUDA events, for benches: warm-up runs, then the median of many timed runs.

use cudarc::driver::{sys::CUevent_flags, CudaStream};
use dfgpu::backend::cuda::{emu, CudaBackend};
use dfgpu::{Backend, Result};

/// Runs a bench's GPU part on GPU 0, or prints in one line why it was skipped or where it failed.
pub fn with_gpu(what: &str, f: impl FnOnce(&CudaBackend) -> Result<()>) {
    match CudaBackend::new(0, Default::default()) {
        Err(e) => println!("{what} gpu: skipped ({})", e.reason()),
        // Host time on an emulated device says nothing about a GPU: no figure is printed rather than a false one.
        Ok(_) if emu::is_emulated() => println!("{what} gpu: skipped (the emulated device: no GPU timings)"),
        Ok(gpu) => {
            println!("{what} gpu: {}", gpu.name());
            if let Err(e) = f(&gpu) {
                println!("{what} gpu: failed: {e}");
            }
        }
    }
}

/// Median milliseconds of `iters` runs of `f` on `stream`, after `warmup` untimed runs.
pub fn median_ms(stream: &CudaStream, warmup: usize, iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..warmup {
        f()?;
    }
    let ctx = stream.context();
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters.max(1) {
        let start = ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
        let end = ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
        start.record(stream)?;
        f()?;
        end.record(stream)?;
        times.push(start.elapsed_ms(&end)? as f64);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok(times[times.len() / 2])
}

/// The memory roofline for an op that moves `bytes` in total (read plus written): the median milliseconds of a
/// device-to-device copy of `bytes / 2`, which reads and writes that many.
pub fn copy_ms(stream: &std::sync::Arc<CudaStream>, bytes: f64) -> Result<f64> {
    let half = (bytes / 2.0) as usize;
    let src = stream.alloc_zeros::<u8>(half)?;
    let mut dst = stream.alloc_zeros::<u8>(half)?;
    median_ms(stream, 10, 50, || Ok(stream.memcpy_dtod(&src, &mut dst)?))
}

/// The high-water mark in bytes of the device's default memory pool (where every tensor is allocated,
/// stream-ordered) since the last `reset_peak`; None where the device has no pools.
pub fn peak_bytes(stream: &CudaStream) -> Result<Option<u64>> {
    pool_attr(stream, None)
}

/// Resets the high-water mark of `peak_bytes` to what is in use now.
pub fn reset_peak(stream: &CudaStream) -> Result<()> {
    pool_attr(stream, Some(0)).map(drop)
}

fn pool_attr(stream: &CudaStream, set: Option<u64>) -> Result<Option<u64>> {
    use cudarc::driver::sys::{self, CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH, CUresult};
    let ctx = stream.context();
    if !ctx.has_async_alloc() {
        return Ok(None);
    }
    ctx.bind_to_thread()?;
    let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
    let mut value = set.unwrap_or(0);
    let ptr = &mut value as *mut u64 as *mut std::ffi::c_void;
    // SAFETY: the device handle is the context's; the attribute is a u64 in and out (CUDA driver API).
    let r = unsafe {
        match sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device()) {
            CUresult::CUDA_SUCCESS if set.is_some() => {
                sys::cuMemPoolSetAttribute(pool, CU_MEMPOOL_ATTR_USED_MEM_HIGH, ptr)
            }
            CUresult::CUDA_SUCCESS => sys::cuMemPoolGetAttribute(pool, CU_MEMPOOL_ATTR_USED_MEM_HIGH, ptr),
            e => e,
        }
    };
    r.result()?;
    Ok(Some(value))
}
