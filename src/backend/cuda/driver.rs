//! Driver and library discovery: whether a CUDA driver loads, which GPUs it sees, and which versions of the CUDA
//! libraries dfgpu uses are found. Never panics: cudarc would, so each library is checked for presence first.

use crate::error::{Error, Result};
use cudarc::driver::{sys, CudaContext};
use std::sync::Arc;

/// Checks that the CUDA driver can be loaded and initialized, and counts the GPUs. Never panics.
pub fn device_count() -> Result<usize> {
    // SAFETY: only tries to dlopen libcuda; it calls nothing in it.
    if !unsafe { sys::is_culib_present() } {
        return Err(Error::Device("no CUDA driver: libcuda.so could not be loaded".into()));
    }
    cudarc::driver::result::init().map_err(|e| Error::Device(format!("the CUDA driver did not initialize: {e}")))?;
    let n = CudaContext::device_count().map_err(|e| Error::Device(format!("could not count GPUs: {e}")))?;
    if n == 0 {
        return Err(Error::Device("the CUDA driver is loaded but sees no GPU".into()));
    }
    Ok(n as usize)
}

/// The CUDA driver's version, e.g. "13.0".
pub fn driver_version() -> Result<String> {
    device_count()?;
    let mut v = 0i32;
    // SAFETY: the driver is loaded and initialized (device_count), and v is a valid out-pointer.
    unsafe { sys::cuDriverGetVersion(&mut v) }.result()?;
    Ok(format!("{}.{}", v / 1000, (v % 1000) / 10))
}

/// Versions of the CUDA libraries dfgpu uses, or "not found" for each one that cannot be loaded.
pub fn library_versions() -> Vec<(&'static str, String)> {
    let missing = || "not found".to_string();
    // SAFETY (all three): each library is checked for presence first, and the calls only write the out-pointers.
    let cublas = if unsafe { cudarc::cublas::sys::is_culib_present() } {
        use cudarc::cublas::sys::{cublasGetProperty, libraryPropertyType as P};
        let mut v = [0i32; 3];
        for (slot, p) in v.iter_mut().zip([P::MAJOR_VERSION, P::MINOR_VERSION, P::PATCH_LEVEL]) {
            unsafe { cublasGetProperty(p, slot) };
        }
        format!("{}.{}.{}", v[0], v[1], v[2])
    } else {
        missing()
    };
    let cudnn = if unsafe { cudarc::cudnn::sys::is_culib_present() } {
        let v = unsafe { cudarc::cudnn::sys::cudnnGetVersion() };
        format!("{}.{}.{}", v / 10000, (v % 10000) / 100, v % 100)
    } else {
        missing()
    };
    let cufft = if unsafe { cudarc::cufft::sys::is_culib_present() } {
        let mut v = 0i32;
        unsafe { cudarc::cufft::sys::cufftGetVersion(&mut v) };
        // cufft.h: CUFFT_VERSION = major * 1000 + minor * 100 + patch (cuDNN's major is * 10000).
        format!("{}.{}.{}", v / 1000, (v % 1000) / 100, v % 100)
    } else {
        missing()
    };
    vec![("cuBLAS", cublas), ("cuDNN", cudnn), ("cuFFT", cufft)]
}

/// One GPU as `dfgpu info` shows it.
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    pub compute: (i32, i32),
    pub memory_bytes: usize,
    pub sms: i32,
}

/// Every GPU the driver sees.
pub fn devices() -> Result<Vec<DeviceInfo>> {
    (0..device_count()?).map(|i| describe_device(&CudaContext::new(i)?)).collect()
}

/// The facts `dfgpu info` shows of an opened GPU; `CudaBackend` keeps them for its name and launch sizes.
pub(super) fn describe_device(ctx: &Arc<CudaContext>) -> Result<DeviceInfo> {
    Ok(DeviceInfo {
        ordinal: ctx.ordinal(),
        name: ctx.name()?,
        compute: ctx.compute_capability()?,
        memory_bytes: ctx.total_mem()?,
        sms: ctx.attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?,
    })
}
