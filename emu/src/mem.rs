//! Device memory: host allocations, 256-byte aligned as cudaMalloc's are, filled with 0xFF bytes (NaN as f32
//! and f64) so that a read of memory nobody wrote shows. Every copy and library call checks that its range lies
//! inside one live allocation, which catches launcher-side size mistakes that a GPU would turn into garbage.

use cudarc::driver::sys::{CUdeviceptr, CUresult};
use std::alloc::{dealloc, Layout};
use std::collections::BTreeMap;
use std::sync::Mutex;

const ALIGN: usize = 256;

/// Start address -> size in bytes, of every live allocation.
static LIVE: Mutex<BTreeMap<u64, usize>> = Mutex::new(BTreeMap::new());

fn layout(bytes: usize) -> Option<Layout> {
    Layout::from_size_align(bytes.max(1), ALIGN).ok()
}

pub fn alloc(bytes: usize) -> Result<CUdeviceptr, CUresult> {
    let l = layout(bytes).ok_or(CUresult::CUDA_ERROR_OUT_OF_MEMORY)?;
    if bytes > super::TOTAL_MEM.saturating_sub(bytes_in_use()) {
        return Err(CUresult::CUDA_ERROR_OUT_OF_MEMORY);
    }
    // SAFETY: the layout has a non-zero size.
    let p = unsafe { std::alloc::alloc(l) };
    if p.is_null() {
        return Err(CUresult::CUDA_ERROR_OUT_OF_MEMORY);
    }
    // SAFETY: p is a fresh allocation of l.size() bytes.
    unsafe { std::ptr::write_bytes(p, 0xFF, l.size()) };
    LIVE.lock().unwrap().insert(p as u64, bytes);
    Ok(p as CUdeviceptr)
}

pub fn free(p: CUdeviceptr) -> Result<(), CUresult> {
    if p == 0 {
        return Ok(());
    }
    let bytes = LIVE.lock().unwrap().remove(&p).ok_or_else(|| {
        eprintln!("dfgpu-emu: free of 0x{p:x}, which is not the start of a live allocation");
        CUresult::CUDA_ERROR_INVALID_VALUE
    })?;
    // SAFETY: p was allocated by alloc with this layout and is freed once (it left the map above).
    unsafe { dealloc(p as *mut u8, layout(bytes).unwrap()) };
    Ok(())
}

pub fn bytes_in_use() -> usize {
    LIVE.lock().unwrap().values().sum()
}

/// Ok when [p, p + bytes) lies inside one live allocation; otherwise says so on stderr, naming `what`.
pub fn check(p: CUdeviceptr, bytes: usize, what: &str) -> Result<(), CUresult> {
    if bytes == 0 {
        return Ok(());
    }
    let live = LIVE.lock().unwrap();
    if let Some((&start, &len)) = live.range(..=p).next_back() {
        if p + bytes as u64 <= start + len as u64 {
            return Ok(());
        }
        eprintln!(
            "dfgpu-emu: {what}: 0x{p:x} + {bytes} bytes runs past its allocation (0x{start:x}, {len} bytes) by {} bytes",
            p + bytes as u64 - (start + len as u64)
        );
    } else {
        eprintln!("dfgpu-emu: {what}: 0x{p:x} + {bytes} bytes is not inside any allocation");
    }
    Err(CUresult::CUDA_ERROR_INVALID_VALUE)
}
