//! Compiles every kernels/*.cu with nvcc into a fatbin (SASS for each listed architecture, PTX for the newest,
//! so that newer cards JIT it), and writes `$OUT_DIR/kernels.rs`, which embeds them with include_bytes and
//! names them with typed ids: `Module::Head` for kernels/head.cu, `head::HEAD_FWD_INPUT` for its kernel
//! `head_fwd_input` (the ids are written without nvcc too, so the crate always compiles).
//!
//! nvcc is looked for in `NVCC`, `CUDA_HOME`/`CUDA_PATH`, `PATH`, then the project's own toolchain folder
//! (scripts/install-cuda-toolchain.sh; `DFGPU_CUDA_HOME`, default ~/.cache/dfgpu/cuda-13.0).
//! Without nvcc the build still succeeds, with one warning, and the binary runs on the CPU only;
//! `DFGPU_REQUIRE_NVCC=1` (set by CI) turns that into an error.
//! ptxas's resource report (registers, shared memory, spills per kernel) is embedded too: `dfgpu info --ptxas`.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "kernels/names.rs"]
mod names;
use names::kernel_names;

const DEFAULT_ARCHS: &str = "80,86,89,90";

fn main() {
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    let kernel_dir = Path::new("kernels");
    println!("cargo:rerun-if-changed=kernels");
    for var in ["NVCC", "CUDA_HOME", "CUDA_PATH", "PATH", "DFGPU_CUDA_HOME", "DFGPU_CUDA_ARCHS", "DFGPU_REQUIRE_NVCC"] {
        println!("cargo:rerun-if-env-changed={var}");
    }

    let mut sources: Vec<PathBuf> = fs::read_dir(kernel_dir)
        .expect("kernels/ folder is missing")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
        .collect();
    sources.sort();
    // The typed ids (Module, and each module's kernels) are written with or without nvcc, so the crate compiles.
    let modules: Vec<(String, Vec<String>)> = sources
        .iter()
        .map(|src| {
            let stem = src.file_stem().unwrap().to_string_lossy().into_owned();
            let text = fs::read_to_string(src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
            (stem, kernel_names(&text))
        })
        .collect();

    let archs = parse_archs(&env::var("DFGPU_CUDA_ARCHS").unwrap_or_else(|_| DEFAULT_ARCHS.to_string()));
    let require = env::var("DFGPU_REQUIRE_NVCC").is_ok_and(|v| v == "1");

    let nvcc = match find_nvcc() {
        Some(n) => n,
        None => {
            if require {
                panic!("DFGPU_REQUIRE_NVCC=1 but no nvcc was found (NVCC, CUDA_HOME, CUDA_PATH, PATH, DFGPU_CUDA_HOME); run scripts/install-cuda-toolchain.sh");
            }
            println!("cargo:warning=nvcc not found: building without GPU kernels (CPU only). Run scripts/install-cuda-toolchain.sh or set NVCC to compile them.");
            write_index(&out_dir, &modules, &[], "", None, "built without nvcc: no GPU kernels compiled in\n");
            return;
        }
    };

    // One nvcc per file, in parallel: each compiles the file once per architecture.
    let results: Vec<(String, Result<String, String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = sources
            .iter()
            .map(|src| {
                let (nvcc, archs, out_dir) = (&nvcc, &archs, &out_dir);
                s.spawn(move || {
                    let name = src.file_stem().unwrap().to_string_lossy().into_owned();
                    let r = compile(nvcc, src, &out_dir.join(format!("{name}.fatbin")), archs);
                    (name, r)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let mut report = String::new();
    let mut names = Vec::new();
    let mut failures = Vec::new();
    for (name, r) in results {
        match r {
            Ok(log) => {
                let _ = writeln!(report, "== kernels/{name}.cu");
                report.push_str(&summarize_ptxas(&log));
                names.push(name);
            }
            Err(e) => failures.push(format!("kernels/{name}.cu:\n{e}")),
        }
    }
    if !failures.is_empty() {
        panic!("nvcc failed ({}):\n{}", nvcc.display(), failures.join("\n"));
    }
    for line in report.lines().filter(|l| l.contains("spill") && !l.contains(" 0 bytes spill")) {
        println!("cargo:warning=ptxas reports a spill: {line}");
    }
    let archs_text = archs.iter().map(|a| format!("sm_{a}")).collect::<Vec<_>>().join(",");
    let ptx = archs.iter().max().map(|a| format!("compute_{a}"));
    write_index(&out_dir, &modules, &names, &archs_text, ptx.as_deref(), &report);
}

fn parse_archs(s: &str) -> Vec<u32> {
    let archs: Vec<u32> = s
        .split(',')
        .map(|a| a.trim().trim_start_matches("sm_").trim_start_matches("compute_"))
        .filter(|a| !a.is_empty())
        .map(|a| {
            a.parse().unwrap_or_else(|_| panic!("DFGPU_CUDA_ARCHS: '{a}' is not an architecture like 90 or sm_90"))
        })
        .collect();
    assert!(!archs.is_empty(), "DFGPU_CUDA_ARCHS lists no architecture");
    archs
}

fn find_nvcc() -> Option<PathBuf> {
    if let Ok(p) = env::var("NVCC") {
        return Some(PathBuf::from(p));
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Ok(home) = env::var(var) {
            let p = Path::new(&home).join("bin/nvcc");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    if let Some(path) = env::var_os("PATH") {
        if let Some(p) = env::split_paths(&path).map(|d| d.join("nvcc")).find(|p| p.is_file()) {
            return Some(p);
        }
    }
    let home = env::var("DFGPU_CUDA_HOME")
        .map(PathBuf::from)
        .or_else(|_| env::var("HOME").map(|h| Path::new(&h).join(".cache/dfgpu/cuda-13.0")))
        .ok()?;
    // The pip packages install into lib/pythonX.Y/site-packages/nvidia/cu13/bin.
    fs::read_dir(home.join("lib"))
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages/nvidia/cu13/bin/nvcc"))
        .find(|p| p.is_file())
}

fn compile(nvcc: &Path, src: &Path, out: &Path, archs: &[u32]) -> Result<String, String> {
    let mut cmd = Command::new(nvcc);
    // -lineinfo keeps source lines for profilers; it triples the fatbin, so every section is compressed
    // (the driver inflates it at load).
    cmd.args(["-fatbin", "-O3", "-std=c++17", "-Xptxas", "-v", "-lineinfo", "-Xfatbin=-compress-all"]);
    cmd.arg("-I").arg("kernels");
    for a in archs {
        cmd.arg("-gencode").arg(format!("arch=compute_{a},code=sm_{a}"));
    }
    let newest = archs.iter().max().unwrap();
    cmd.arg("-gencode").arg(format!("arch=compute_{newest},code=compute_{newest}"));
    cmd.arg("-o").arg(out).arg(src);
    let output = cmd.output().map_err(|e| format!("could not run {}: {e}", nvcc.display()))?;
    let log = String::from_utf8_lossy(&output.stderr).into_owned() + &String::from_utf8_lossy(&output.stdout);
    if output.status.success() {
        Ok(log)
    } else {
        Err(log)
    }
}

/// Keeps ptxas's per-kernel lines (function name, then registers / shared memory / spills).
fn summarize_ptxas(log: &str) -> String {
    let mut out = String::new();
    for line in log.lines() {
        let l = line.trim_start_matches("ptxas info    : ").trim();
        if l.starts_with("Compiling entry function")
            || l.starts_with("Used ")
            || l.contains("bytes spill")
            || l.contains("stack frame")
        {
            let _ = writeln!(out, "  {l}");
        } else if line.contains("warning") || line.contains("error") {
            let _ = writeln!(out, "  {line}");
        }
    }
    out
}

/// "preprocess" -> "Preprocess", "my_op" -> "MyOp": a module's enum variant.
fn camel(stem: &str) -> String {
    stem.split('_').filter(|w| !w.is_empty()).map(|w| w[..1].to_ascii_uppercase() + &w[1..]).collect()
}

/// Writes `Module` (one variant per kernels/*.cu) and, for each module, a `Kernel` constant per kernel, so that
/// a misspelled module or kernel is a compile error, not a failure at launch.
fn write_ids(s: &mut String, modules: &[(String, Vec<String>)]) {
    let ident = |n: &str| !n.is_empty() && n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    for (stem, kernels) in modules {
        // Stems become Rust modules and variants, kernel names constants: snake_case keeps that one-to-one.
        assert!(
            ident(stem) && !stem.starts_with(|c: char| c.is_ascii_digit()),
            "kernels/{stem}.cu: name files in snake_case"
        );
        for k in kernels {
            assert!(ident(k), "kernels/{stem}.cu: kernel '{k}' is not snake_case");
        }
    }
    let _ = writeln!(s, "/// A kernel module: one kernels/*.cu file.");
    let _ = writeln!(s, "#[derive(Clone, Copy, Debug, PartialEq, Eq)]");
    let _ = writeln!(s, "pub enum Module {{");
    for (stem, _) in modules {
        let _ = writeln!(s, "    /// kernels/{stem}.cu\n    {},", camel(stem));
    }
    let _ = writeln!(s, "}}\n");
    let _ = writeln!(s, "impl Module {{");
    let _ = writeln!(s, "    /// The file stem (kernels/NAME.cu), as `FATBINS` names it.");
    let _ = writeln!(s, "    pub const fn name(self) -> &'static str {{\n        match self {{");
    for (stem, _) in modules {
        let _ = writeln!(s, "            Module::{} => {stem:?},", camel(stem));
    }
    let _ = writeln!(s, "        }}\n    }}\n}}\n");
    for (stem, kernels) in modules.iter().filter(|(_, k)| !k.is_empty()) {
        let _ = writeln!(s, "/// The kernels of kernels/{stem}.cu.");
        let _ = writeln!(s, "pub mod {stem} {{\n    use super::{{Kernel, Module}};");
        for k in kernels {
            let _ = writeln!(
                s,
                "    pub const {}: Kernel = Kernel {{ module: Module::{}, name: {k:?} }};",
                k.to_ascii_uppercase(),
                camel(stem)
            );
        }
        let _ = writeln!(s, "}}\n");
    }
}

fn write_index(
    out_dir: &Path,
    modules: &[(String, Vec<String>)],
    names: &[String],
    archs: &str,
    ptx: Option<&str>,
    report: &str,
) {
    fs::write(out_dir.join("ptxas-report.txt"), report).unwrap();
    let mut s = String::from("// @generated by build.rs\n");
    write_ids(&mut s, modules);
    let _ = writeln!(s, "/// (module name, fatbin) for every kernels/*.cu that nvcc compiled.");
    let _ = writeln!(s, "pub const FATBINS: &[(&str, &[u8])] = &[");
    for n in names {
        let _ = writeln!(s, "    ({n:?}, include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{n}.fatbin\"))),");
    }
    let _ = writeln!(s, "];");
    let _ = writeln!(s, "/// SASS architectures compiled in, comma-separated; empty without nvcc.");
    let _ = writeln!(s, "pub const SASS_ARCHS: &str = {archs:?};");
    let _ = writeln!(s, "/// The PTX embedded for newer cards, if any.");
    let _ = writeln!(s, "pub const PTX_ARCH: Option<&str> = {ptx:?};");
    let _ = writeln!(s, "/// ptxas's resource report: registers, shared memory and spills per kernel.");
    let _ =
        writeln!(s, "pub const PTXAS_REPORT: &str = include_str!(concat!(env!(\"OUT_DIR\"), \"/ptxas-report.txt\"));");
    fs::write(out_dir.join("kernels.rs"), s).unwrap();
}
