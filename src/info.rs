//! `dfgpu info`: what this binary can run on, and why not when it cannot.

use crate::backend::{cuda, select, DeviceSpec};
use crate::error::Result;
use std::fmt::Write as _;

/// Prints the report; then opens `device` (an error if that device cannot be used) and, with `ptxas`,
/// prints the kernels' resource report.
pub fn run(device: DeviceSpec, ptxas: bool) -> Result<()> {
    print!("{}", report());
    if device != DeviceSpec::Auto {
        let (_, line) = select(device, Default::default())?;
        println!("{line}");
    }
    if ptxas {
        print!("ptxas report (registers, shared memory, spills per kernel):\n{}", cuda::kernels::PTXAS_REPORT);
    }
    Ok(())
}

/// The report, one fact per line. Never fails: what cannot be found is said.
pub fn report() -> String {
    let mut s = String::new();
    let _ = writeln!(s, "dfgpu {}", env!("CARGO_PKG_VERSION"));
    let modules: Vec<&str> = cuda::kernels::FATBINS.iter().map(|(n, _)| *n).collect();
    let _ = writeln!(s, "kernels: {}", cuda::kernels::describe());
    if !modules.is_empty() {
        let _ = writeln!(s, "kernel modules: {}", modules.join(", "));
    }
    let _ = writeln!(s, "cpu: {} rayon threads", rayon::current_num_threads());
    match cuda::driver_version() {
        Ok(v) => {
            let _ = writeln!(s, "cuda driver: {v}");
            match cuda::devices() {
                Ok(devs) => {
                    for d in devs {
                        let _ = writeln!(
                            s,
                            "  cuda:{} {} (compute {}.{}, {} SMs, {:.1} GiB)",
                            d.ordinal,
                            d.name,
                            d.compute.0,
                            d.compute.1,
                            d.sms,
                            d.memory_bytes as f64 / crate::GIB
                        );
                    }
                }
                Err(e) => {
                    let _ = writeln!(s, "  devices: {}", e.reason());
                }
            }
        }
        Err(e) => {
            let _ = writeln!(s, "cuda driver: {}", e.reason());
        }
    }
    for (lib, v) in cuda::library_versions() {
        let _ = writeln!(s, "{lib}: {v}");
    }
    let device = match cuda::CudaBackend::new(0, Default::default()) {
        Ok(b) => format!("`--device auto` uses {}", crate::Backend::name(&b)),
        Err(e) => format!("`--device auto` uses the CPU: {}", e.reason()),
    };
    let _ = writeln!(s, "{device}");
    s
}
