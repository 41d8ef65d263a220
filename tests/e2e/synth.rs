use crate::{dfgpu, text};

#[test]
fn synth_writes_the_set_and_reports_it() {
    let dir = std::env::temp_dir().join(format!("dfgpu-e2e-synth-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.to_str().unwrap();
    let o = dfgpu(&["synth", d, "--n-real", "2", "--n-fake", "4", "--size", "32", "--families", "upconv,nearest"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("wrote 6 images (2 real, 4 fake, 32x32)"), "{out}");
    assert_eq!(std::fs::read_dir(dir.join("fake/upconv")).unwrap().count(), 2);
    assert!(!dir.join("fake/fingerprint").exists());
    let o = dfgpu(&["synth", d, "--size", "33"]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("size 33 must be even"), "{}", text(&o).1);
}
