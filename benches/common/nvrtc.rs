//! Bench-only kernels (benches/*.cu), compiled at run time with NVRTC, so that they stay out of the shipped
//! library and binary and cost no build time. The GPU machine has NVRTC beside its driver (../shared/GPU.md).

use cudarc::driver::{CudaContext, CudaModule};
use cudarc::nvrtc::{result, sys, Ptx};
use dfgpu::{Error, Result};
use std::ffi::{c_char, CStr, CString};
use std::sync::Arc;

/// NVRTC has no C library headers; kernels/common.cuh needs only int64_t from <stdint.h>.
const STDINT: &str = "typedef long long int64_t;\n";

/// Compiles `src` (named `name` in messages) for `ctx`'s GPU and loads it. `headers` are (include name, text)
/// pairs given to NVRTC in memory (`include_str!` of kernels/*), so the bench needs no source tree at run time.
pub fn load(ctx: &Arc<CudaContext>, name: &str, src: &str, headers: &[(&str, &str)]) -> Result<Arc<CudaModule>> {
    // SAFETY: only tries to dlopen libnvrtc; cudarc panics on the first NVRTC call where it is missing.
    if !unsafe { sys::is_culib_present() } {
        return Err(Error::Device("NVRTC (libnvrtc.so) could not be loaded".into()));
    }
    let c = |s: &str| CString::new(s).map_err(|_| Error::Invalid(format!("{name}: a NUL byte in the source")));
    let (src, name_c) = (c(src)?, c(name)?);
    let mut names = vec![c("stdint.h")?];
    let mut texts = vec![c(STDINT)?];
    for (n, t) in headers {
        names.push(c(n)?);
        texts.push(c(t)?);
    }
    let name_ptrs: Vec<*const c_char> = names.iter().map(|s| s.as_ptr()).collect();
    let text_ptrs: Vec<*const c_char> = texts.iter().map(|s| s.as_ptr()).collect();
    let (major, minor) = ctx.compute_capability()?;
    let opts = [format!("--gpu-architecture=compute_{major}{minor}"), "--std=c++17".to_string()];
    let nvrtc = |e: result::NvrtcError| Error::Cuda(format!("NVRTC on {name}: {e:?}"));
    let mut prog: sys::nvrtcProgram = std::ptr::null_mut();
    // SAFETY: every pointer is a NUL-terminated string that outlives the program (destroyed below); the two
    // header arrays have the count given.
    unsafe {
        let n = names.len() as i32;
        sys::nvrtcCreateProgram(&mut prog, src.as_ptr(), name_c.as_ptr(), n, text_ptrs.as_ptr(), name_ptrs.as_ptr())
    }
    .result()
    .map_err(nvrtc)?;
    // SAFETY: prog is the live program created above; the log and PTX come back as NUL-terminated buffers.
    let ptx = unsafe {
        let ptx = match result::compile_program(prog, &opts) {
            Ok(()) => {
                result::get_ptx(prog).map(|p| CStr::from_ptr(p.as_ptr()).to_string_lossy().into_owned()).map_err(nvrtc)
            }
            Err(e) => {
                let log =
                    result::get_program_log(prog).map(|l| CStr::from_ptr(l.as_ptr()).to_string_lossy().into_owned());
                Err(Error::Cuda(format!("NVRTC could not compile {name}: {e:?}\n{}", log.unwrap_or_default())))
            }
        };
        result::destroy_program(prog).map_err(nvrtc)?;
        ptx?
    };
    Ok(ctx.load_module(Ptx::from_src(ptx))?)
}
