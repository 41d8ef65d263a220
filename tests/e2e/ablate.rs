use crate::{dfgpu, text};

#[test]
fn ablate_writes_its_tables() {
    let root = std::env::temp_dir().join(format!("dfgpu-e2e-ablate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let data = root.join("data");
    assert!(dfgpu(&["synth", data.to_str().unwrap(), "--n-real", "20", "--n-fake", "40", "--size", "32"])
        .status
        .success());
    let out = root.join("out");
    let o = dfgpu(&[
        "ablate",
        "--device",
        "cpu",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--branches",
        "spatial,freq",
        "--freq-norm",
        "raw,log",
        "--loss",
        "focal",
        "--epochs",
        "1",
        "--size",
        "32",
    ]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}\n{stderr}");
    let csv = std::fs::read_to_string(out.join("ablation.csv")).unwrap();
    // spatial once (the frequency normalization does not apply), freq with each normalization.
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(
        lines[1].starts_with("spatial,-,focal,")
            && lines[2].starts_with("freq,raw,focal,")
            && lines[3].starts_with("freq,log,focal,"),
        "{csv}"
    );
    assert!(std::fs::read_to_string(out.join("ablation.md")).unwrap().contains("| freq | log | focal |"));
    assert!(out.join("ablation.png").is_file());
    let o = dfgpu(&["ablate", "--device", "cpu", "--branches", "all"]);
    assert!(
        text(&o).1.contains("invalid value 'all' for '--branches <BRANCHES>': choose one of both, spatial, freq"),
        "{}",
        text(&o).1
    );
}
