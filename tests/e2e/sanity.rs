use crate::{dfgpu, text};

/// The default model must fit ten images on the CPU, quickly.
#[test]
fn sanity_passes_with_the_default_settings() {
    let data = std::env::temp_dir().join(format!("dfgpu-e2e-sanity-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let d = data.to_str().unwrap();
    assert!(dfgpu(&["synth", d, "--n-real", "5", "--n-fake", "5", "--size", "64"]).status.success());
    let o = dfgpu(&["sanity", "--device", "cpu", "--data", d]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("PASS: the training loss fell from"), "{out}");
    assert!(out.contains("frequency branch input:"), "{out}");
    let o = dfgpu(&["sanity", "--device", "cpu", "--data", "/nonexistent"]);
    assert!(!o.status.success() && text(&o).1.contains("/nonexistent: no such folder or file"));
}
