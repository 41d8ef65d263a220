use crate::{dfgpu, text, tmp};

#[test]
fn info_exits_0_and_says_what_device_auto_uses_and_why() {
    let o = dfgpu(&["info"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("kernels: "), "{out}");
    assert!(out.contains("rayon threads"), "{out}");
    let auto = out.lines().find(|l| l.starts_with("`--device auto` uses")).expect("no device line");
    // Either a GPU (named with its architecture) or the CPU with the reason.
    assert!(auto.contains("cuda:0") || auto.contains("uses the CPU: "), "{auto}");
    if dfgpu::backend::cuda::kernels::FATBINS.is_empty() {
        assert!(out.contains("built without nvcc"), "{out}");
    } else {
        let modules = out.lines().find_map(|l| l.strip_prefix("kernel modules: ")).expect("no module line");
        for (name, _) in dfgpu::backend::cuda::kernels::FATBINS {
            assert!(modules.split(", ").any(|m| m == *name), "{name} missing from {modules}");
        }
        assert!(out.contains("sm_90"), "{out}");
    }
}

#[test]
fn info_ptxas_lists_every_kernel_with_its_registers() {
    let (out, _) = text(&dfgpu(&["info", "--ptxas"]));
    for (module, _) in dfgpu::backend::cuda::kernels::FATBINS {
        assert!(out.contains(&format!("== kernels/{module}.cu")), "{out}");
    }
    if !dfgpu::backend::cuda::kernels::FATBINS.is_empty() {
        assert!(out.contains("Used ") && out.contains("registers"), "{out}");
    }
}

#[test]
fn a_bad_device_flag_is_an_error_that_names_it() {
    let o = dfgpu(&["info", "--device", "gpu0"]);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains("--device 'gpu0': expected auto, cpu, cuda or cuda:N"), "{err}");
}

#[test]
fn cpu_device_is_always_available() {
    let o = dfgpu(&["info", "--device", "cpu"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("device: cpu"), "{out}");
}

/// The commands that never use a device refuse --device rather than run on the CPU whatever it says.
#[test]
fn commands_without_a_device_refuse_the_flag() {
    let (set, run) = (tmp("nodevice-set"), tmp("nodevice-run"));
    let (s, r) = (set.to_str().unwrap(), run.to_str().unwrap());
    for args in [
        vec!["synth", s, "--n-real", "2", "--n-fake", "2"],
        vec!["pack", s, r],
        vec!["curves", r],
        vec!["timm-export", "--ckpt", r, s],
    ] {
        let o = dfgpu(&[&args[..], &["--device", "cuda"]].concat());
        let err = text(&o).1;
        assert!(!o.status.success() && err.contains("unexpected argument '--device'"), "{}: {err}", args[0]);
    }
    assert!(!set.exists(), "synth wrote nothing");
}
