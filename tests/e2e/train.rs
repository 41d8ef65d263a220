use crate::{dfgpu, text};
use std::path::PathBuf;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dfgpu-e2e-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// End to end on the CPU: a small synthetic set, three epochs of the tiny detector. The loss falls and the
/// held-out AUC is well over chance.
#[test]
fn train_learns_the_synthetic_set_on_the_cpu() {
    let data = tmp("data");
    let d = data.to_str().unwrap();
    assert!(dfgpu(&["synth", d, "--n-real", "60", "--n-fake", "300", "--size", "64", "--seed", "5"]).status.success());
    let out = tmp("run");
    let o = dfgpu(&[
        "train",
        "--device",
        "cpu",
        "--data",
        d,
        "--out",
        out.to_str().unwrap(),
        "--epochs",
        "3",
        "--batch",
        "16",
    ]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("288 images: 48 real, 240 fake (1 real to 5.00 fake)"), "{stdout}");
    let lines: Vec<String> =
        std::fs::read_to_string(out.join("metrics.jsonl")).unwrap().lines().map(String::from).collect();
    assert_eq!(lines.len(), 3);
    let field = |l: &str, k: &str| -> f64 {
        let at = l.find(&format!("\"{k}\":")).unwrap() + k.len() + 3;
        l[at..].split([',', '}']).next().unwrap().parse().unwrap()
    };
    let (first, last) = (field(&lines[0], "train_loss"), field(&lines[2], "train_loss"));
    assert!(last < first, "training loss {first} -> {last}");
    let auc = field(&lines[2], "val_auc");
    assert!(auc > 0.75, "held-out AUC {auc}\n{stdout}");
    assert!(stdout.contains("group upconv: AUC"), "{stdout}");

    // The best checkpoint evaluates and predicts.
    let best = out.join("best.safetensors");
    let o = dfgpu(&["eval", "--device", "cpu", "--ckpt", best.to_str().unwrap(), "--data", d]);
    let (stdout, stderr) = text(&o);
    assert!(
        o.status.success() && stdout.contains("AUC ") && stdout.contains("group nearest: AUC"),
        "{stdout}\n{stderr}"
    );
    let img = data.join("real/000000.jpg");
    let o = dfgpu(&["predict", "--device", "cpu", "--json", "--ckpt", best.to_str().unwrap(), img.to_str().unwrap()]);
    let (stdout, stderr) = text(&o);
    assert!(
        o.status.success() && stdout.starts_with("{\"path\":") && stdout.contains("\"p_fake\":"),
        "{stdout}\n{stderr}"
    );
    let o = dfgpu(&["eval", "--device", "cpu", "--ckpt", out.join("metrics.jsonl").to_str().unwrap(), "--data", d]);
    assert!(text(&o).1.contains("metrics.jsonl: not a readable safetensors file"), "{}", text(&o).1);
}

#[test]
fn train_errors_name_the_problem() {
    let o = dfgpu(&["train", "--device", "cpu", "--data", "/nonexistent/set"]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("/nonexistent/set: no such folder or file"), "{}", text(&o).1);
    let o = dfgpu(&["train", "--device", "cpu", "--sampler", "fair"]);
    assert!(text(&o).1.contains("--sampler 'fair': choose balanced or natural"), "{}", text(&o).1);
    let o = dfgpu(&["train", "--device", "cpu", "--backbone", "b9"]);
    assert!(text(&o).1.contains("unknown EfficientNet 'b9'"), "{}", text(&o).1);
}
