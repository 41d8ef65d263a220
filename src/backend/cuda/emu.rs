//! The emulated CUDA device (emu/, docs/emulated-device.md) as dfgpu sees it: a libcuda that runs on the
//! CPU. dfgpu treats it as a GPU everywhere except where that would mislead: `dfgpu info` names it, and benches
//! print no timing taken on it. Tests use its hooks to change the order of threads and blocks.

use crate::error::{Error, Result};
use cudarc::driver::sys;
use std::ffi::{c_char, c_int};

/// A symbol that only the emulator exports, or None on a real driver (or none at all).
fn hook<T: Copy>(name: &[u8]) -> Option<T> {
    // SAFETY: only dlopens libcuda (checked present first) and looks a symbol up; T is the hook's C signature.
    unsafe {
        if !sys::is_culib_present() {
            return None;
        }
        sys::culib().get::<T>(name).ok().map(|s| *s)
    }
}

/// True when the loaded libcuda is dfgpu's emulator.
pub fn is_emulated() -> bool {
    hook::<unsafe extern "C" fn() -> c_int>(b"dfgpu_emu_sanitized\0").is_some()
}

/// True when the emulator's kernels were built with AddressSanitizer and UndefinedBehaviorSanitizer.
pub fn is_sanitized() -> bool {
    hook::<unsafe extern "C" fn() -> c_int>(b"dfgpu_emu_sanitized\0").is_some_and(|f| unsafe { f() } == 1)
}

/// In what order the emulator starts the threads of each block and the blocks of each grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    Forward,
    Reverse,
    /// A seeded permutation (a different one per block).
    Shuffle(u64),
}

/// Sets the order of this host thread's later launches. An error on a real GPU, whose order is its own.
pub fn set_schedule(order: Order) -> Result<()> {
    let f = hook::<unsafe extern "C" fn(u32, u32, u64) -> c_int>(b"dfgpu_emu_set_schedule\0")
        .ok_or_else(|| Error::Device("thread orders can be set on the emulated device only".into()))?;
    let (o, seed) = match order {
        Order::Forward => (0, 0),
        Order::Reverse => (1, 0),
        Order::Shuffle(s) => (2, s),
    };
    // SAFETY: the hook takes plain integers.
    match unsafe { f(o, o, seed) } {
        0 => Ok(()),
        _ => Err(Error::Device(format!("the emulator refused the order {order:?}"))),
    }
}

/// The message of this host thread's last failed launch on the emulator (it names the kernel and the block).
pub fn last_error() -> Option<String> {
    let f = hook::<unsafe extern "C" fn(*mut c_char, usize) -> usize>(b"dfgpu_emu_last_error\0")?;
    let mut buf = vec![0u8; 1024];
    // SAFETY: buf is writable for its length; the hook writes a NUL-terminated prefix of the message.
    let n = unsafe { f(buf.as_mut_ptr() as *mut c_char, buf.len()) };
    (n > 0).then(|| {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    })
}
