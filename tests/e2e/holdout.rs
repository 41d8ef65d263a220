use crate::{dfgpu, text};

#[test]
fn holdout_trains_without_each_group_and_tests_on_it() {
    let root = std::env::temp_dir().join(format!("dfgpu-e2e-holdout-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let data = root.join("data");
    let synth = ["synth", data.to_str().unwrap(), "--n-real", "20", "--n-fake", "36", "--size", "32"];
    let o = dfgpu(&[&synth[..], &["--families", "upconv,nearest,periodic"]].concat());
    assert!(o.status.success(), "{}", text(&o).1);
    let out = root.join("out");
    let o = dfgpu(&[
        "holdout",
        "--device",
        "cpu",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--epochs",
        "1",
        "--size",
        "32",
        "--batch",
        "8",
    ]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}\n{stderr}");
    let csv = std::fs::read_to_string(out.join("holdout.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "{csv}");
    for (line, g) in lines[1..].iter().zip(["nearest", "periodic", "upconv"]) {
        // 4 of the 20 reals are kept for testing; each family has 12 fakes.
        assert!(line.starts_with(&format!("{g},4,12,")), "{csv}");
        let auc: f64 = line.split(',').nth(4).unwrap().parse().unwrap();
        assert!((0.0..=1.0).contains(&auc), "{csv}");
        // The seen group the model separates worst on validation: one it trained on, never the held-out one.
        let weakest: Vec<&str> = line.split(',').skip(8).collect();
        assert!(weakest[0] != g && ["nearest", "periodic", "upconv"].contains(&weakest[0]), "{csv}");
        assert!((0.0..=1.0).contains(&weakest[1].parse::<f64>().unwrap()), "{csv}");
        // The spectral baseline's AUC on the same test images, the peak test's and the detector's joined to it.
        for v in &weakest[2..] {
            assert!((0.0..=1.0).contains(&v.parse::<f64>().unwrap()), "{csv}");
        }
        assert_eq!(weakest.len(), 5, "{csv}");
        assert!(out.join(format!("heldout-{g}/best.safetensors")).is_file());
    }
    assert!(stdout.contains("held-out AUC: mean ") && stdout.contains(", worst "), "{stdout}");
    assert!(stdout.contains("spectral baseline (Durall et al. 2020): mean "), "{stdout}");
    let peak = stdout.contains("spectral peak test: mean ") && stdout.contains("detector or peak test: mean ");
    assert!(peak, "{stdout}");
    assert!(std::fs::read_to_string(out.join("holdout.md")).unwrap().contains("| periodic | 4 | 12 |"));
    assert!(out.join("holdout.png").is_file());
    // Two seeds: each run the same as one run of that seed, then each group's spread over them.
    let seeds = root.join("seeds");
    let (d, s) = (data.to_str().unwrap(), seeds.to_str().unwrap());
    let args = ["--epochs", "1", "--size", "32", "--batch", "8", "--seeds", "2"];
    let o = dfgpu(&[&["holdout", "--device", "cpu", "--data", d, "--out", s][..], &args[..]].concat());
    let (stdout, stderr) = text(&o);
    assert!(o.status.success() && stdout.contains("means over the seeds: mean "), "{stdout}\n{stderr}");
    assert_eq!(std::fs::read_to_string(seeds.join("seed-0/holdout.csv")).unwrap(), csv, "seed 0 as the plain run");
    let auc = |csv: &str, row: usize| csv.lines().nth(row).unwrap().split(',').nth(4).unwrap().parse::<f64>().unwrap();
    let second = std::fs::read_to_string(seeds.join("seed-1/holdout.csv")).unwrap();
    let spread = std::fs::read_to_string(seeds.join("holdout.csv")).unwrap();
    let lines: Vec<&str> = spread.lines().collect();
    assert_eq!(lines.len(), 4, "{spread}");
    for (i, (line, g)) in lines[1..].iter().zip(["nearest", "periodic", "upconv"]).enumerate() {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!((f[0], f[1]), (g, "2"), "{spread}");
        let (a, b) = (auc(&csv, i + 1), auc(&second, i + 1));
        let want = [(a + b) / 2.0, a.min(b), a.max(b)];
        let got: Vec<f64> = f[2..5].iter().map(|v| v.parse().unwrap()).collect();
        assert!(got.iter().zip(want).all(|(g, w)| (g - w).abs() < 2e-6), "{g}: {got:?} against {want:?}");
    }
    assert!(seeds.join("holdout.md").is_file() && seeds.join("holdout.png").is_file());
    // A set with one group cannot be held out.
    let one = root.join("one");
    let o = dfgpu(&["synth", one.to_str().unwrap(), "--n-real", "8", "--n-fake", "8", "--families", "upconv"]);
    assert!(o.status.success(), "{}", text(&o).1);
    let o = dfgpu(&["holdout", "--device", "cpu", "--data", one.to_str().unwrap(), "--size", "32"]);
    assert!(!o.status.success() && text(&o).1.contains("only 'upconv'"), "{}", text(&o).1);
}
