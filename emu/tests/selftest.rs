//! The emulated device proves that its checks can fail: each deliberately broken kernel of emu/selftest.cu
//! must be reported. Runs through cudarc, as dfgpu does: `scripts/emu.sh cargo test -p dfgpu-emu`.
//! The sanitizer cases run in a child process (ASan and UBSan end the process), which this same test binary is.

use cudarc::driver::{sys, CudaContext, CudaFunction, CudaStream, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;
use std::process::Command;
use std::sync::Arc;

const CHILD: &str = "DFGPU_EMU_SELFTEST_CHILD";

fn hook<T: Copy>(name: &[u8]) -> T {
    // SAFETY: libcuda is present (checked in `kernel`), and T is the hook's C signature.
    unsafe {
        *sys::culib()
            .get::<T>(name)
            .unwrap_or_else(|_| panic!("libcuda is not dfgpu's emulator: run through scripts/emu.sh"))
    }
}

/// The stream and one kernel of emu/selftest.cu.
fn kernel(name: &str) -> (Arc<CudaStream>, CudaFunction) {
    // SAFETY: only dlopens libcuda.
    assert!(unsafe { sys::is_culib_present() }, "no libcuda: run these tests through scripts/emu.sh");
    let ctx = CudaContext::new(0).unwrap();
    // The emulator accepts any module image and finds kernels by name among those compiled for the host.
    let module = ctx.load_module(Ptx::from_binary(b"emu/selftest.cu".to_vec())).unwrap();
    (ctx.default_stream(), module.load_function(name).unwrap())
}

fn cfg(threads: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: (1, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 }
}

fn last_error() -> String {
    let f: unsafe extern "C" fn(*mut std::ffi::c_char, usize) -> usize = hook(b"dfgpu_emu_last_error\0");
    let mut buf = vec![0u8; 1024];
    // SAFETY: buf is writable for its length.
    unsafe { f(buf.as_mut_ptr() as *mut _, buf.len()) };
    String::from_utf8_lossy(&buf[..buf.iter().position(|&b| b == 0).unwrap()]).into_owned()
}

/// Runs `name` with a buffer of `threads` floats and `extra` as a second argument when given.
fn launch(name: &str, threads: u32, extra: Option<i32>) -> Result<Vec<f32>, String> {
    let (stream, f) = kernel(name);
    let mut out = stream.alloc_zeros::<f32>(threads as usize).unwrap();
    let mut b = stream.launch_builder(&f);
    b.arg(&mut out);
    if let Some(v) = &extra {
        b.arg(v);
    }
    // SAFETY: the kernels of selftest.cu take (float*, [int]); the buffer holds `threads` floats.
    match unsafe { b.launch(cfg(threads)) } {
        Ok(_) => Ok(stream.clone_dtoh(&out).unwrap()),
        Err(e) => Err(format!("{e}: {}", last_error())),
    }
}

#[test]
fn a_race_shows_as_different_outputs_under_two_thread_orders() {
    let set: unsafe extern "C" fn(u32, u32, u64) -> i32 = hook(b"dfgpu_emu_set_schedule\0");
    let mut runs = Vec::new();
    for order in [0, 1] {
        // SAFETY: plain integers; 0 forward, 1 reverse.
        assert_eq!(unsafe { set(order, order, 0) }, 0);
        runs.push(launch("selftest_race", 64, None).unwrap());
    }
    // SAFETY: as above; later tests on this thread get the default order back.
    unsafe { set(0, 0, 0) };
    // Forward: thread 63 writes the cell last; reverse: thread 0 does.
    assert_eq!(runs[0], vec![63.0; 64]);
    assert_eq!(runs[1], vec![0.0; 64]);
}

#[test]
fn a_barrier_that_half_the_block_skips_is_reported() {
    let err = launch("selftest_divergent_barrier", 32, None).unwrap_err();
    assert!(err.contains("selftest_divergent_barrier") && err.contains("__syncthreads reached by 16 of 32"), "{err}");
}

#[test]
fn a_full_mask_shuffle_in_a_partial_warp_is_reported() {
    let err = launch("selftest_partial_warp_shuffle", 16, None).unwrap_err();
    assert!(err.contains("selftest_partial_warp_shuffle") && err.contains("partial warp"), "{err}");
    // The same kernel with a whole warp is fine: lane i gets lane i ^ 1's value.
    let ok = launch("selftest_partial_warp_shuffle", 32, None).unwrap();
    assert_eq!(ok, (0..32).map(|i| (i ^ 1) as f32).collect::<Vec<_>>());
}

/// Runs `test` (this binary's test of that name) in a child that launches the broken kernel, and returns the
/// child's stderr after checking that it failed.
fn child_stderr(test: &str, what: &str) -> String {
    let sanitized: unsafe extern "C" fn() -> i32 = hook(b"dfgpu_emu_sanitized\0");
    // SAFETY: no arguments.
    assert_eq!(
        unsafe { sanitized() },
        1,
        "{what} needs the emulator built with DFGPU_EMU_SANITIZE=1 (the default of scripts/emu.sh)"
    );
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "the child ran {what} and exited 0:\n{stderr}");
    stderr
}

#[test]
fn an_out_of_bounds_write_is_caught_by_asan() {
    if std::env::var_os(CHILD).is_some() {
        let r = launch("selftest_out_of_bounds", 8, Some(8));
        panic!("the out-of-bounds write was not caught: {r:?}");
    }
    let err = child_stderr("an_out_of_bounds_write_is_caught_by_asan", "the out-of-bounds write");
    assert!(err.contains("AddressSanitizer: heap-buffer-overflow") && err.contains("selftest_out_of_bounds"), "{err}");
}

#[test]
fn a_signed_overflow_is_caught_by_ubsan() {
    if std::env::var_os(CHILD).is_some() {
        let r = launch("selftest_int_overflow", 4, Some(1 << 30));
        panic!("the signed overflow was not caught: {r:?}");
    }
    let err = child_stderr("a_signed_overflow_is_caught_by_ubsan", "the signed overflow");
    assert!(err.contains("signed integer overflow") && err.contains("selftest.cu"), "{err}");
}
