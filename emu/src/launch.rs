//! Modules, functions and cuLaunchKernel. A module image (the fatbin that build.rs made) is accepted as it is:
//! kernel names are looked up among every kernels/*.cu compiled for the host (extern "C" names are unique
//! across them, or the link would fail). Blocks run on rayon's threads, each one whole on one thread
//! (runtime.cpp); the launch returns when every block has finished, with the first error any block reported.

use crate::{init_check, put, tri, OK};
use cudarc::driver::sys::{CUfunction, CUmodule, CUresult, CUstream};
use rayon::prelude::*;
use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::{Mutex, OnceLock};

#[repr(C)]
pub struct KernelEntry {
    name: *const c_char,
    call: Option<unsafe extern "C" fn(*mut *mut c_void)>,
}

include!(concat!(env!("OUT_DIR"), "/tables.rs"));

/// Matches `emu::Launch` in registry.h.
#[repr(C)]
struct Launch {
    entry: *const KernelEntry,
    params: *mut *mut c_void,
    grid: [c_uint; 3],
    block: [c_uint; 3],
    shared_bytes: u32,
    thread_order: u32,
    seed: u64,
}
// SAFETY: a Launch is read-only while its blocks run, and the arguments it points at outlive the launch.
unsafe impl Sync for Launch {}

extern "C" {
    fn dfgpu_emu_run_block(l: *const Launch, bx: c_uint, by: c_uint, bz: c_uint, err: *mut c_char, len: usize)
        -> c_int;
}

/// The order in which the threads of a block, and the blocks of a grid, are started. A race-free kernel gives
/// the same bits under every order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Order {
    Forward = 0,
    Reverse = 1,
    Shuffle = 2,
}

#[derive(Clone, Copy, Debug)]
struct Schedule {
    threads: Order,
    blocks: Order,
    seed: u64,
}

/// DFGPU_EMU_SCHEDULE: forward (default), reverse, or shuffle[:SEED], for threads and blocks alike.
fn default_schedule() -> Schedule {
    static S: OnceLock<Schedule> = OnceLock::new();
    *S.get_or_init(|| {
        let v = std::env::var("DFGPU_EMU_SCHEDULE").unwrap_or_default();
        let (kind, seed) = v.split_once(':').unwrap_or((v.as_str(), "0"));
        let order = match kind {
            "" | "forward" => Order::Forward,
            "reverse" => Order::Reverse,
            "shuffle" => Order::Shuffle,
            other => panic!("DFGPU_EMU_SCHEDULE={other}: expected forward, reverse or shuffle[:SEED]"),
        };
        let seed = seed.parse().unwrap_or_else(|_| panic!("DFGPU_EMU_SCHEDULE: the seed '{seed}' is not a number"));
        Schedule { threads: order, blocks: order, seed }
    })
}

thread_local! {
    /// Set by dfgpu_emu_set_schedule for the launches of one host thread (a test), else the default.
    static SCHEDULE: Cell<Option<Schedule>> = const { Cell::new(None) };
    static LAST_ERROR: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Extension for tests: the schedule of this host thread's later launches (orders 0 forward, 1 reverse,
/// 2 shuffle). Returns 0, or 1 for an unknown order.
#[no_mangle]
pub extern "C" fn dfgpu_emu_set_schedule(threads: u32, blocks: u32, seed: u64) -> c_int {
    let order = |o| match o {
        0 => Some(Order::Forward),
        1 => Some(Order::Reverse),
        2 => Some(Order::Shuffle),
        _ => None,
    };
    match (order(threads), order(blocks)) {
        (Some(threads), Some(blocks)) => {
            SCHEDULE.with(|s| s.set(Some(Schedule { threads, blocks, seed })));
            0
        }
        _ => 1,
    }
}

/// Extension for tests: copies the message of this host thread's last failed launch (NUL-terminated, cut to
/// `len`) and returns its full length; 0 when no launch failed.
#[no_mangle]
pub unsafe extern "C" fn dfgpu_emu_last_error(buf: *mut c_char, len: usize) -> usize {
    LAST_ERROR.with(|e| {
        let e = e.borrow();
        if !buf.is_null() && len > 0 {
            let n = e.len().min(len - 1);
            std::ptr::copy_nonoverlapping(e.as_ptr() as *const c_char, buf, n);
            *buf.add(n) = 0;
        }
        e.len()
    })
}

/// Extension: 1 when the kernels were built with ASan and UBSan.
#[no_mangle]
pub extern "C" fn dfgpu_emu_sanitized() -> c_int {
    SANITIZED as c_int
}

struct Module {
    functions: Mutex<HashMap<String, Box<Function>>>,
}

struct Function {
    name: String,
    entry: *const KernelEntry,
    max_dynamic_shared: c_int,
}

/// Every compiled kernel by name.
fn kernels() -> &'static HashMap<String, usize> {
    static K: OnceLock<HashMap<String, usize>> = OnceLock::new();
    K.get_or_init(|| {
        let mut map = HashMap::new();
        for (_, table) in tables() {
            let mut e = table;
            // SAFETY: each table is a static C array that ends with a null name (build.rs).
            unsafe {
                while !(*e).name.is_null() {
                    map.insert(CStr::from_ptr((*e).name).to_string_lossy().into_owned(), e as usize);
                    e = e.add(1);
                }
            }
        }
        map
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuModuleLoadData(m: *mut CUmodule, image: *const c_void) -> CUresult {
    tri!(init_check());
    if image.is_null() {
        return CUresult::CUDA_ERROR_INVALID_VALUE;
    }
    put(m, Box::into_raw(Box::new(Module { functions: Mutex::new(HashMap::new()) })) as CUmodule)
}

#[no_mangle]
pub unsafe extern "C" fn cuModuleUnload(m: CUmodule) -> CUresult {
    if !m.is_null() {
        drop(Box::from_raw(m as *mut Module));
    }
    OK
}

#[no_mangle]
pub unsafe extern "C" fn cuModuleGetFunction(f: *mut CUfunction, m: CUmodule, name: *const c_char) -> CUresult {
    if m.is_null() || name.is_null() {
        return CUresult::CUDA_ERROR_INVALID_HANDLE;
    }
    let name = CStr::from_ptr(name).to_string_lossy().into_owned();
    let Some(&entry) = kernels().get(&name) else {
        eprintln!("dfgpu-emu: no kernel named '{name}' was compiled for the host (emu/build.rs compiles kernels/*.cu)");
        return CUresult::CUDA_ERROR_NOT_FOUND;
    };
    let module = &*(m as *mut Module);
    let mut fns = module.functions.lock().unwrap();
    let fun = fns.entry(name.clone()).or_insert_with(|| {
        Box::new(Function { name, entry: entry as *const KernelEntry, max_dynamic_shared: 48 << 10 })
    });
    put(f, &mut **fun as *mut Function as CUfunction)
}

#[no_mangle]
pub unsafe extern "C" fn cuFuncSetAttribute(f: CUfunction, attrib: c_uint, value: c_int) -> CUresult {
    use cudarc::driver::sys::CUfunction_attribute as A;
    if f.is_null() {
        return CUresult::CUDA_ERROR_INVALID_HANDLE;
    }
    if attrib == A::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES as c_uint {
        if !(0..=227 << 10).contains(&value) {
            return CUresult::CUDA_ERROR_INVALID_VALUE;
        }
        (*(f as *mut Function)).max_dynamic_shared = value;
    }
    OK
}

#[no_mangle]
pub unsafe extern "C" fn cuFuncGetAttribute(v: *mut c_int, attrib: c_uint, f: CUfunction) -> CUresult {
    use cudarc::driver::sys::CUfunction_attribute as A;
    if f.is_null() {
        return CUresult::CUDA_ERROR_INVALID_HANDLE;
    }
    let value = if attrib == A::CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK as c_uint {
        1024
    } else if attrib == A::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES as c_uint {
        (*(f as *mut Function)).max_dynamic_shared
    } else {
        0
    };
    put(v, value)
}

/// The order of `n` items under `o` (splitmix64 shuffle for Shuffle).
fn permutation(n: usize, o: Order, seed: u64) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    match o {
        Order::Forward => {}
        Order::Reverse => p.reverse(),
        Order::Shuffle => {
            let mut s = seed ^ 0xD1B5_4A32_D192_ED03;
            for i in (1..n).rev() {
                s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = s;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                p.swap(i, (z % (i as u64 + 1)) as usize);
            }
        }
    }
    p
}

#[no_mangle]
pub unsafe extern "C" fn cuLaunchKernel(
    f: CUfunction,
    gx: c_uint,
    gy: c_uint,
    gz: c_uint,
    bx: c_uint,
    by: c_uint,
    bz: c_uint,
    shared_bytes: c_uint,
    _stream: CUstream,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CUresult {
    if f.is_null() {
        return CUresult::CUDA_ERROR_INVALID_HANDLE;
    }
    let fun = &*(f as *mut Function);
    let fail = |msg: String| {
        let msg = format!("kernel {}: {msg}", fun.name);
        eprintln!("dfgpu-emu: {msg}");
        LAST_ERROR.with(|e| *e.borrow_mut() = msg);
        CUresult::CUDA_ERROR_LAUNCH_FAILED
    };
    if !extra.is_null() {
        return fail("arguments through `extra` are not emulated".into());
    }
    let threads = bx as u64 * by as u64 * bz as u64;
    if gx == 0
        || gy == 0
        || gz == 0
        || threads == 0
        || threads > 1024
        || by > 1024
        || bz > 64
        || gy > 65535
        || gz > 65535
    {
        return fail(format!("invalid launch: grid ({gx},{gy},{gz}), block ({bx},{by},{bz})"));
    }
    if shared_bytes as c_int > fun.max_dynamic_shared {
        return fail(format!(
            "{shared_bytes} bytes of dynamic shared memory, above the {} allowed (cuFuncSetAttribute raises it)",
            fun.max_dynamic_shared
        ));
    }
    let sched = SCHEDULE.with(|s| s.get()).unwrap_or_else(default_schedule);
    let launch = Launch {
        entry: fun.entry,
        params,
        grid: [gx, gy, gz],
        block: [bx, by, bz],
        shared_bytes,
        thread_order: sched.threads as u32,
        seed: sched.seed,
    };
    let blocks = gx as usize * gy as usize * gz as usize;
    let order = permutation(blocks, sched.blocks, sched.seed);
    let run = |&b: &usize| -> Result<(), String> {
        let (x, y, z) = (b % gx as usize, (b / gx as usize) % gy as usize, b / (gx as usize * gy as usize));
        let mut err = [0 as c_char; 640];
        // SAFETY: launch points at this call's arguments, valid until it returns; err is a writable buffer.
        if unsafe { dfgpu_emu_run_block(&launch, x as c_uint, y as c_uint, z as c_uint, err.as_mut_ptr(), err.len()) }
            == 0
        {
            Ok(())
        } else {
            // SAFETY: the runtime wrote a NUL-terminated message.
            Err(unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy().into_owned())
        }
    };
    // Few blocks or one thread of work: no need to hand them to rayon.
    let result =
        if blocks < 4 { order.iter().try_for_each(run) } else { order.par_iter().with_min_len(1).try_for_each(run) };
    match result {
        Ok(()) => {
            LAST_ERROR.with(|e| e.borrow_mut().clear());
            OK
        }
        Err(msg) => fail(msg),
    }
}
