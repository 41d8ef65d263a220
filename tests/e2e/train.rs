use crate::{dfgpu, dfgpu_within, text, tmp};

/// A PNG's width and height (from its header).
fn image_size(p: &std::path::Path) -> (u32, u32) {
    let b = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert_eq!(&b[1..4], b"PNG", "{}", p.display());
    (u32::from_be_bytes(b[16..20].try_into().unwrap()), u32::from_be_bytes(b[20..24].try_into().unwrap()))
}

/// End to end on the CPU: a small synthetic set, three epochs of the tiny detector. The loss falls and the
/// held-out AUC is well over chance.
#[test]
fn train_learns_the_synthetic_set_on_the_cpu() {
    let data = tmp("train-data");
    let d = data.to_str().unwrap();
    assert!(dfgpu(&["synth", d, "--n-real", "60", "--n-fake", "300", "--size", "64", "--seed", "5"]).status.success());
    let out = tmp("train-run");
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
    let val_loss = field(&lines[2], "val_loss");
    assert!(val_loss.is_finite() && val_loss > 0.0, "validation loss {val_loss}");
    assert!(stdout.contains("epoch 3 validation: loss "), "{stdout}");
    let auc = field(&lines[2], "val_auc");
    assert!(auc > 0.75, "held-out AUC {auc}\n{stdout}");
    assert!(stdout.contains("group upconv: AUC"), "{stdout}");
    for png in ["curves.png", "roc.png", "grad/step-000001.png"] {
        assert!(image_size(&out.join(png)).0 > 400, "{png}");
    }
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(
        rows[0],
        "epoch,train_loss,val_loss,val_auc,val_ap,val_eer,val_balanced_acc,val_acc,seconds,images_per_s"
    );
    assert_eq!(rows.len(), 4);
    assert!(rows[3].starts_with("3,") && rows[3].contains(&format!("{}", field(&lines[2], "val_auc"))), "{csv}");

    // The best checkpoint evaluates and predicts.
    let best = out.join("best.safetensors");
    let o = dfgpu(&["eval", "--device", "cpu", "--ckpt", best.to_str().unwrap(), "--data", d]);
    let (stdout, stderr) = text(&o);
    assert!(
        o.status.success() && stdout.contains("AUC ") && stdout.contains("group nearest: AUC"),
        "{stdout}\n{stderr}"
    );
    // The checkpoint carries the spectral peak test and its join: eval reports both beside the detector.
    assert!(stdout.contains("spectral peak test (fitted on the training reals alone): AUC "), "{stdout}");
    assert!(stdout.contains("detector or peak test (the larger of the two"), "{stdout}");
    let o = dfgpu(&["eval", "--device", "cpu", "--json", "--ckpt", best.to_str().unwrap(), "--data", d]);
    let j: serde_json::Value =
        serde_json::from_str(text(&o).0.trim()).unwrap_or_else(|e| panic!("{e}: {}", text(&o).0));
    assert!(j.get("report").and_then(|r| r.get("auc")).is_some() && j.get("group_auc").is_some());
    for k in ["peak_auc", "joined_auc"] {
        assert!(j[k].as_f64().is_some_and(|a| (0.0..=1.0).contains(&a)), "{k}: {j}");
    }
    assert_eq!(j["joined_group_auc"].as_object().map(|g| g.len()), Some(3), "{j}");
    let img = data.join("real/000000.jpg");
    let o = dfgpu(&["predict", "--device", "cpu", "--json", "--ckpt", best.to_str().unwrap(), img.to_str().unwrap()]);
    let (stdout, stderr) = text(&o);
    assert!(
        o.status.success() && stdout.starts_with("{\"path\":") && stdout.contains("\"p_fake\":"),
        "{stdout}\n{stderr}"
    );
    // predict's joined score is the checkpoint's join of its logit and its peak score.
    let line: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let (p, peak, joined) = (line["p_fake"].as_f64(), line["peak_z"].as_f64(), line["joined_z"].as_f64());
    let (p, peak, joined) = (p.unwrap(), peak.expect("peak_z"), joined.expect("joined_z"));
    let (_, meta) = dfgpu::model::checkpoint::read_some(&best, |_| false).unwrap();
    let join = dfgpu::model::peak::Join::from_meta(&meta[dfgpu::model::peak::JOIN_KEY], &best).unwrap();
    // The logit from P(fake) at 6 decimals: good to 1e-3 away from 0 and 1.
    assert!(p > 1e-3 && p < 1.0 - 1e-3, "P(fake) {p}");
    let want = join.score((p / (1.0 - p)).ln(), peak);
    assert!((joined - want).abs() < 1e-3, "joined_z {joined}, the join of P(fake) {p} and peak_z {peak}: {want}");
    // A folder stands for its images; an unreadable file is reported, the others still predicted.
    let broken = out.join("broken.jpg");
    std::fs::write(&broken, b"not a jpeg").unwrap();
    let real = data.join("real");
    let args = ["predict", "--device", "cpu", "--json", "--ckpt", best.to_str().unwrap()];
    let o = dfgpu(&[&args[..], &[real.to_str().unwrap(), broken.to_str().unwrap()]].concat());
    let (stdout, stderr) = text(&o);
    assert!(!o.status.success() && stderr.contains("1 image(s) could not be read"), "{stderr}");
    assert_eq!(stdout.lines().filter(|l| l.contains("\"p_fake\":")).count(), 60, "{stdout}");
    assert!(stdout.lines().any(|l| l.contains("broken.jpg") && l.contains("\"error\":")), "{stdout}");
    let o = dfgpu(&["eval", "--device", "cpu", "--ckpt", out.join("metrics.jsonl").to_str().unwrap(), "--data", d]);
    assert!(text(&o).1.contains("metrics.jsonl: not a readable safetensors file"), "{}", text(&o).1);
}

#[test]
fn train_errors_name_the_problem() {
    let o = dfgpu(&["train", "--device", "cpu", "--data", "/nonexistent/set"]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("/nonexistent/set: no such folder or file"), "{}", text(&o).1);
    let o = dfgpu(&["train", "--device", "cpu", "--sampler", "fair"]);
    assert!(
        text(&o).1.contains("invalid value 'fair' for '--sampler <SAMPLER>': choose one of natural, balanced"),
        "{}",
        text(&o).1
    );
    let o = dfgpu(&["train", "--device", "cpu", "--backbone", "b9"]);
    assert!(text(&o).1.contains("unknown EfficientNet 'b9'"), "{}", text(&o).1);
}

/// A run whose loss stops being finite ends with an error that says so, and the last checkpoint is untouched.
#[test]
fn a_diverging_run_stops_and_keeps_its_checkpoint() {
    let data = tmp("train-diverge-data");
    let d = data.to_str().unwrap();
    assert!(dfgpu(&["synth", d, "--n-real", "10", "--n-fake", "20", "--size", "32", "--seed", "3"]).status.success());
    let out = tmp("train-diverge-run");
    let o = out.to_str().unwrap();
    let base = ["train", "--device", "cpu", "--data", d, "--out", o, "--batch", "8", "--size", "32"];
    assert!(dfgpu(&[&base[..], &["--epochs", "1"]].concat()).status.success());
    let last = out.join("last.safetensors");
    let before = std::fs::read(&last).unwrap();
    let resume = ["--epochs", "2", "--lr", "1e12", "--max-grad-norm", "0", "--resume", last.to_str().unwrap()];
    let r = dfgpu(&[&base[..], &resume[..]].concat());
    let err = text(&r).1;
    assert!(!r.status.success(), "{err}");
    assert!(err.contains("training diverged: by step") && err.contains("gradient clipping off"), "{err}");
    assert!(err.contains(&format!("The checkpoint of the last finished epoch is kept: {}", last.display())), "{err}");
    assert_eq!(std::fs::read(&last).unwrap(), before, "the checkpoint is not written over with NaN weights");
}

/// `--resume` continues exactly: two epochs in one run and one epoch plus a resumed one give the same
/// checkpoint, byte for byte (weights, running statistics, optimizer moments, step, sampler state).
#[test]
fn resume_gives_the_same_run_as_no_interruption() {
    let data = tmp("train-resume-data");
    let d = data.to_str().unwrap();
    assert!(dfgpu(&["synth", d, "--n-real", "30", "--n-fake", "90", "--size", "32", "--seed", "3"]).status.success());
    let (a, b) = (tmp("train-resume-a"), tmp("train-resume-b"));
    let run = |out: &std::path::Path, epochs: &str, resume: Option<&str>| {
        let mut args =
            vec!["train", "--device", "cpu", "--data", d, "--size", "32", "--batch", "16", "--epochs", epochs];
        args.extend(["--out", out.to_str().unwrap()]);
        if let Some(r) = resume {
            args.extend(["--resume", r]);
        }
        let o = dfgpu(&args);
        assert!(o.status.success(), "{}\n{}", text(&o).0, text(&o).1);
        text(&o).0
    };
    run(&a, "2", None);
    run(&b, "1", None);
    let last = b.join("last.safetensors");
    let out = run(&b, "2", Some(last.to_str().unwrap()));
    assert!(out.contains("resumed at epoch 1 of 2"), "{out}");
    assert_eq!(std::fs::read(a.join("last.safetensors")).unwrap(), std::fs::read(&last).unwrap());
    assert_eq!(std::fs::read_to_string(b.join("metrics.jsonl")).unwrap().lines().count(), 2);
}

/// The join is standardized over the validation reals: with a validation folder of its own, the mean and the
/// standard deviation of the logits and of the peak scores that `predict` gives its reals are the checkpoint's
/// four figures. A checkpoint of a dfgpu before the peak test scores without it.
#[test]
fn the_join_is_standardized_over_the_validation_reals() {
    let sets = [("join-train", "16", "32", "7"), ("join-val", "12", "8", "8")].map(|(name, real, fake, seed)| {
        let data = tmp(name);
        let synth =
            ["synth", data.to_str().unwrap(), "--n-real", real, "--n-fake", fake, "--size", "32", "--seed", seed];
        assert!(dfgpu(&synth).status.success());
        data
    });
    let (d, v, out) = (sets[0].to_str().unwrap(), sets[1].to_str().unwrap(), tmp("join-run"));
    let args = ["train", "--device", "cpu", "--data", d, "--val", v, "--batch", "8", "--size", "32", "--epochs", "1"];
    let o = dfgpu(&[&args[..], &["--grad-report", "0", "--out", out.to_str().unwrap()]].concat());
    assert!(o.status.success(), "{}\n{}", text(&o).0, text(&o).1);
    let best = out.join("best.safetensors");
    let reals = sets[1].join("real");
    let o = dfgpu(&["predict", "--device", "cpu", "--json", "--ckpt", best.to_str().unwrap(), reals.to_str().unwrap()]);
    let lines: Vec<serde_json::Value> = text(&o).0.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 12);
    let logit = |l: &serde_json::Value| {
        let p = l["p_fake"].as_f64().unwrap();
        assert!(p > 1e-3 && p < 1.0 - 1e-3, "P(fake) {p}: its logit at 6 decimals is not good to 1e-3");
        (p / (1.0 - p)).ln()
    };
    let moments = |v: Vec<f64>| {
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        [mean, (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt()]
    };
    let got = [
        moments(lines.iter().map(logit).collect()),
        moments(lines.iter().map(|l| l["peak_z"].as_f64().unwrap()).collect()),
    ];
    let (_, meta) = dfgpu::model::checkpoint::read_some(&best, |_| false).unwrap();
    let want: Vec<f64> = meta[dfgpu::model::peak::JOIN_KEY].split(' ').map(|w| w.parse().unwrap()).collect();
    for (g, w) in got.concat().iter().zip(&want) {
        assert!((g - w).abs() < 2e-3 * w.abs().max(1.0), "from predict {got:?}, in the checkpoint {want:?}");
    }

    // A checkpoint of an earlier dfgpu (the same one without the peak test and the join): eval and predict give
    // the detector's figures alone.
    let (tensors, mut meta) = dfgpu::model::checkpoint::read(&best).unwrap();
    let tensors: Vec<_> = tensors.into_iter().filter(|t| !t.name.starts_with("peak.")).collect();
    meta.remove(dfgpu::model::peak::JOIN_KEY);
    let old = out.join("before-peak.safetensors");
    dfgpu::model::checkpoint::write(&old, &tensors, &meta).unwrap();
    let old = old.to_str().unwrap();
    let o = dfgpu(&["predict", "--device", "cpu", "--json", "--ckpt", old, reals.to_str().unwrap()]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success() && stdout.lines().count() == 12, "{stdout}\n{stderr}");
    assert!(stdout.contains("\"p_fake\":") && !stdout.contains("peak_z") && !stdout.contains("joined_z"), "{stdout}");
    let o = dfgpu(&["eval", "--device", "cpu", "--json", "--ckpt", old, "--data", v]);
    let j: serde_json::Value =
        serde_json::from_str(text(&o).0.trim()).unwrap_or_else(|e| panic!("{e}: {:?}", text(&o)));
    assert!(j["report"]["auc"].is_number() && j["peak_auc"].is_null() && j["joined_auc"].is_null(), "{j}");
    assert_eq!(j["joined_group_auc"], serde_json::json!({}), "{j}");
}

/// A resumed `--freq-profile` run keeps the ring statistics of its first run, on other data too: they are part of
/// the model, gathered once before its first epoch, and the checkpoint's are the ones it goes on with; so is the
/// spectral peak test.
#[test]
fn a_resumed_profile_keeps_its_statistics_on_other_data() {
    let stats = |ckpt: &std::path::Path, name: &str| -> Vec<f32> {
        let (tensors, _) = dfgpu::model::checkpoint::read_some(ckpt, |n| n == name).unwrap();
        tensors.into_iter().next().unwrap_or_else(|| panic!("no {name}")).data
    };
    let sets = [("train-profile-data-a", "5"), ("train-profile-data-b", "6")].map(|(name, seed)| {
        let data = tmp(name);
        let synth =
            ["synth", data.to_str().unwrap(), "--n-real", "8", "--n-fake", "16", "--size", "32", "--seed", seed];
        assert!(dfgpu(&synth).status.success());
        data
    });
    let run = |data: &std::path::Path, out: &str, more: &[&str]| {
        let out = tmp(out);
        let args = ["train", "--device", "cpu", "--data", data.to_str().unwrap(), "--batch", "8", "--size", "32"];
        let o = dfgpu(
            &[&args[..], &["--freq-profile", "--grad-report", "0", "--out", out.to_str().unwrap()], more].concat(),
        );
        assert!(o.status.success(), "{}\n{}", text(&o).0, text(&o).1);
        out.join("last.safetensors")
    };
    let first = run(&sets[0], "train-profile-a", &["--epochs", "1"]);
    let on_b = run(&sets[1], "train-profile-b", &["--epochs", "1"]);
    let (a, b) = (stats(&first, "freq.profile.stats"), stats(&on_b, "freq.profile.stats"));
    // Gathered, not the initial means 0 and deviations 1, and other data gives other statistics.
    assert!(a.iter().any(|&v| v != 0.0 && v != 1.0) && a != b, "{a:?}\n{b:?}");
    let resumed = run(&sets[1], "train-profile-resumed", &["--epochs", "2", "--resume", first.to_str().unwrap()]);
    assert_eq!(stats(&resumed, "freq.profile.stats"), a, "the resumed run refitted its statistics on the new data");
    // So does the spectral peak test (fitted on the training reals whatever the flags).
    let peak = stats(&first, "peak.mean");
    assert!(peak != stats(&on_b, "peak.mean") && peak.len() == 32 * 32, "other reals give another test");
    assert_eq!(stats(&resumed, "peak.mean"), peak, "the resumed run refitted its peak test on the new data");
}

/// The model and training flags reach the run: the checkpoint's metadata holds the model's, and a bad value is
/// an error naming its flag.
#[test]
fn model_and_training_flags_reach_the_run() {
    let data = tmp("train-flags-data");
    let d = data.to_str().unwrap();
    assert!(dfgpu(&["synth", d, "--n-real", "10", "--n-fake", "20", "--size", "32", "--seed", "3"]).status.success());
    let out = tmp("train-flags-run");
    let o = out.to_str().unwrap();
    let base = ["train", "--device", "cpu", "--data", d, "--out", o, "--epochs", "1", "--batch", "8", "--size", "32"];
    let flags = [
        "--gated",
        "--head-act",
        "relu",
        "--no-head-norm",
        "--freq-widths",
        "8,16",
        "--phase",
        "cos-sin",
        "--grayscale",
        "--branch-dropout",
        "0.2",
        "--loss",
        "focal",
        "--focal-alpha",
        "0.4",
        "--class-weights",
        "effective:0.99",
        "--label-smoothing",
        "0.1",
        "--augment",
        "none",
        "--grad-report",
        "0",
        "--optimizer",
        "sgd",
        "--momentum",
        "0.8",
    ];
    let r = dfgpu(&[&base[..], &flags[..]].concat());
    let (stdout, stderr) = text(&r);
    assert!(r.status.success(), "{stdout}\n{stderr}");
    let (_, meta) = dfgpu::model::checkpoint::read(&out.join("last.safetensors")).unwrap();
    let metrics: serde_json::Value = serde_json::from_str(&meta["dfgpu.metrics"]).unwrap();
    assert!(metrics["val_auc"].is_f64(), "{}", meta["dfgpu.metrics"]);
    for (k, v) in [
        ("dfgpu.head.gated", "true"),
        ("dfgpu.head.act", "relu"),
        ("dfgpu.head.norm", "false"),
        ("dfgpu.head.branch_dropout", "0.2"),
        ("dfgpu.freq.widths", "8,16"),
        ("dfgpu.fft.phase", "cos-sin"),
        ("dfgpu.fft.grayscale", "true"),
        ("dfgpu.optimizer", "sgd"),
    ] {
        assert_eq!(meta.get(k).map(String::as_str), Some(v), "{k}");
    }
    assert!(!out.join("grad").exists(), "--grad-report 0 writes no gradient charts");
    // SGD's momentum is not AdamW's moments: resuming with the other optimizer is refused.
    let last = out.join("last.safetensors");
    let r = dfgpu(&[&base[..], &["--resume", last.to_str().unwrap()]].concat());
    assert!(!r.status.success() && text(&r).1.contains("was trained with --optimizer sgd"), "{}", text(&r).1);
    for (flag, value, says) in [
        ("--class-weights", "pos:x", "invalid value 'pos:x' for '--class-weights <CLASS_WEIGHTS>': choose none, auto"),
        ("--freq-widths", "0", "--freq-widths '0': give each stage's channels"),
        ("--sampler", "random", "invalid value 'random' for '--sampler <SAMPLER>': choose one of natural, balanced"),
        ("--head-act", "tanh", "invalid value 'tanh' for '--head-act <HEAD_ACT>': choose one of silu, relu"),
        ("--optimizer", "adam", "invalid value 'adam' for '--optimizer <OPTIMIZER>': choose one of adamw, sgd"),
        ("--momentum", "1", "--momentum '1': must be in [0, 1)"),
    ] {
        let r = dfgpu(&[&base[..], &[flag, value]].concat());
        assert!(!r.status.success() && text(&r).1.contains(says), "{flag} {value}: {}", text(&r).1);
    }
}

/// An earlier run is never silently overwritten: a named --out that holds one is an error that says what to do
/// (unless --overwrite), and the default folder moves the earlier run aside.
#[test]
fn an_earlier_run_is_kept() {
    let data = tmp("train-keep-data");
    let d = data.to_str().unwrap();
    assert!(dfgpu(&["synth", d, "--n-real", "6", "--n-fake", "12", "--size", "32", "--seed", "1"]).status.success());
    let quick = ["train", "--device", "cpu", "--data", d, "--epochs", "1", "--batch", "4", "--size", "32"];
    let out = tmp("train-keep-run");
    let o = out.to_str().unwrap();
    assert!(dfgpu(&[&quick[..], &["--out", o]].concat()).status.success());
    let before = std::fs::read(out.join("last.safetensors")).unwrap();
    let r = dfgpu(&[&quick[..], &["--out", o, "--seed", "9"]].concat());
    let (_, stderr) = text(&r);
    assert!(
        !r.status.success() && stderr.contains("holds an earlier run (metrics.jsonl, last.safetensors"),
        "{stderr}"
    );
    assert!(stderr.contains("--resume") && stderr.contains("--overwrite"), "{stderr}");
    assert_eq!(std::fs::read(out.join("last.safetensors")).unwrap(), before, "the earlier run is untouched");
    // --overwrite removes the earlier run's files before the first epoch, so that none of them (here its gradient
    // charts, which this run does not draw) stays beside the new run's.
    let charts = [&quick[..], &["--out", o, "--seed", "3", "--overwrite", "--grad-report", "1"]].concat();
    assert!(dfgpu(&charts).status.success());
    assert!(out.join("grad").join("step-000001.png").is_file());
    let r = dfgpu(&[&quick[..], &["--out", o, "--seed", "9", "--overwrite", "--grad-report", "0"]].concat());
    let (stdout, stderr) = text(&r);
    assert!(r.status.success(), "{stderr}");
    let cleared = stdout.find("written over: removed the earlier run's metrics.jsonl, last.safetensors");
    assert!(cleared.is_some_and(|at| at < stdout.find("epoch 1").unwrap()), "{stdout}");
    assert!(stdout.contains("gradient chart"), "{stdout}");
    assert!(!out.join("grad").exists(), "the earlier run's gradient charts are gone");
    assert_ne!(std::fs::read(out.join("last.safetensors")).unwrap(), before);
    // A `grad` that is not a folder is refused before anything is removed; one that is a link is not followed.
    let before = std::fs::read(out.join("last.safetensors")).unwrap();
    std::fs::write(out.join("grad"), "the user's notes").unwrap();
    let r = dfgpu(&charts);
    let (_, stderr) = text(&r);
    assert!(!r.status.success() && stderr.contains("grad is not a folder: the gradient charts"), "{stderr}");
    assert_eq!(std::fs::read(out.join("last.safetensors")).unwrap(), before, "the earlier run is untouched");
    assert_eq!(std::fs::read_to_string(out.join("grad")).unwrap(), "the user's notes");
    std::fs::remove_file(out.join("grad")).unwrap();
    let elsewhere = tmp("train-keep-elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("step-000001.png"), "not the run's").unwrap();
    std::os::unix::fs::symlink(&elsewhere, out.join("grad")).unwrap();
    assert!(dfgpu(&[&quick[..], &["--out", o, "--overwrite", "--grad-report", "0"]].concat()).status.success());
    assert!(elsewhere.join("step-000001.png").is_file(), "nothing is removed through a link");
    std::fs::remove_file(out.join("grad")).unwrap();

    // What a kill in the first epoch leaves (its best.safetensors and log, written before last.safetensors):
    // nothing to resume, which the error says, and kept until --overwrite.
    std::fs::remove_file(out.join("last.safetensors")).unwrap();
    let r = dfgpu(&[&quick[..], &["--out", o]].concat());
    let (_, stderr) = text(&r);
    let why = "holds the files of an earlier run that ended in its first epoch (metrics.jsonl, best.safetensors; \
               no last.safetensors to resume from): pass --overwrite";
    assert!(!r.status.success() && stderr.contains(why), "{stderr}");
    assert!(out.join("best.safetensors").is_file());

    // The default folder, runs/latest under the working directory: the earlier run moves to runs/latest-1.
    let cwd = tmp("train-keep-cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    let run =
        || std::process::Command::new(env!("CARGO_BIN_EXE_dfgpu")).args(quick).current_dir(&cwd).output().unwrap();
    assert!(run().status.success());
    let second = run();
    assert!(second.status.success(), "{}", text(&second).1);
    assert!(text(&second).0.contains("held an earlier run: moved it to runs/latest-1"), "{}", text(&second).0);
    for dir in ["runs/latest", "runs/latest-1"] {
        assert!(cwd.join(dir).join("metrics.jsonl").is_file(), "{dir}");
    }
}

/// The main job on the CUDA backend (a GPU, or the emulated device in CI): a short tiny run writes a checkpoint,
/// and `predict` on the device gives the P(fake) that the CPU backend gives for that checkpoint.
#[test]
#[ignore = "needs a CUDA device: a GPU, or the emulator (scripts/emu.sh)"]
fn train_and_predict_on_the_cuda_device() {
    let data = tmp("cuda-data");
    let d = data.to_str().unwrap();
    // Small: every kernel runs one fiber per CUDA thread on the emulated device, under the sanitizers in CI.
    assert!(dfgpu(&["synth", d, "--n-real", "4", "--n-fake", "20", "--size", "32", "--seed", "9"]).status.success());
    let out = tmp("cuda-run");
    let o = dfgpu(&[
        "train",
        "--device",
        "cuda",
        "--data",
        d,
        "--out",
        out.to_str().unwrap(),
        "--size",
        "32",
        "--epochs",
        "2",
        "--batch",
        "8",
        "--grad-report",
        "1",
    ]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("on cuda:0"), "{stdout}");
    assert!(stdout.contains("epoch 2 validation: loss "), "{stdout}");
    let best = out.join("best.safetensors");
    let img = data.join("real");
    // Each image's P(fake) and spectral peak score.
    let scores = |device: &str| -> Vec<[f64; 2]> {
        let o =
            dfgpu(&["predict", "--device", device, "--json", "--ckpt", best.to_str().unwrap(), img.to_str().unwrap()]);
        let (stdout, stderr) = text(&o);
        assert!(o.status.success(), "predict on {device}: {stdout}\n{stderr}");
        let line = |l: &str| serde_json::from_str::<serde_json::Value>(l).unwrap();
        stdout.lines().map(|l| ["p_fake", "peak_z"].map(|k| line(l)[k].as_f64().expect(l))).collect()
    };
    let (gpu, cpu) = (scores("cuda"), scores("cpu"));
    assert_eq!(gpu.len(), 4);
    for (i, (g, c)) in gpu.iter().zip(&cpu).enumerate() {
        // fp32 on both sides, different summation orders through a whole network: agree to 1e-4.
        assert!((g[0] - c[0]).abs() <= 1e-4, "image {i}: P(fake) {} on cuda, {} on cpu", g[0], c[0]);
        // One FFT, a log and a z-score: the FFT's error (1e-5 relative, tests/ops/fft.rs) over the standard
        // deviation of the bin that scores, which is far above STD_FLOOR on these images.
        assert!((g[1] - c[1]).abs() <= 1e-3 * c[1].abs().max(1.0), "image {i}: peak {} on cuda, {} on cpu", g[1], c[1]);
    }
}

/// Divergence in the last step of an epoch (one step per epoch, a huge learning rate), which no progress line sees:
/// no checkpoint is written with weights or scores that are not finite, no "best" is claimed, and an earlier
/// epoch's checkpoint is kept as it was.
#[test]
fn divergence_in_an_epochs_last_step_writes_no_checkpoint() {
    let data = tmp("train-lastdiverge-data");
    let d = data.to_str().unwrap();
    assert!(dfgpu(&["synth", d, "--n-real", "10", "--n-fake", "20", "--size", "32", "--seed", "3"]).status.success());
    let out = tmp("train-lastdiverge-run");
    let o = out.to_str().unwrap();
    // 24 training images in batches of 16: one step per epoch.
    let base = ["train", "--device", "cpu", "--data", d, "--out", o, "--batch", "16", "--size", "32"];
    let diverge = ["--lr", "1e30", "--warmup-epochs", "0", "--max-grad-norm", "0"];
    let r = dfgpu(&[&base[..], &diverge[..], &["--epochs", "1"]].concat());
    let (stdout, stderr) = text(&r);
    assert!(!r.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("training diverged: by step 1 (the end of epoch 1)"), "{stderr}");
    assert!(stderr.contains("No epoch finished, so no checkpoint was written."), "{stderr}");
    assert!(!stdout.contains("best validation AUC so far"), "{stdout}");
    assert!(!out.join("last.safetensors").exists() && !out.join("best.safetensors").exists());

    assert!(dfgpu(&[&base[..], &["--epochs", "1", "--overwrite"]].concat()).status.success());
    let last = out.join("last.safetensors");
    let before = std::fs::read(&last).unwrap();
    let r = dfgpu(&[&base[..], &diverge[..], &["--epochs", "2", "--resume", last.to_str().unwrap()]].concat());
    let (stdout, stderr) = text(&r);
    assert!(!r.status.success() && stderr.contains("(the end of epoch 2)"), "{stdout}\n{stderr}");
    assert!(stderr.contains(&format!("The checkpoint of the last finished epoch is kept: {}", last.display())));
    assert!(!stdout.contains("best validation AUC so far"), "{stdout}");
    assert_eq!(std::fs::read(&last).unwrap(), before, "the checkpoint is not written over");
    // Resumed into a fresh folder, the checkpoint kept is the one resumed from.
    let other = tmp("train-lastdiverge-other");
    let into = ["--epochs", "2", "--resume", last.to_str().unwrap(), "--out", other.to_str().unwrap()];
    let r = dfgpu(&[&base[..5], &["--batch", "16", "--size", "32"], &diverge[..], &into[..]].concat());
    let stderr = text(&r).1;
    assert!(
        stderr.contains(&format!("The checkpoint of the last finished epoch is kept: {}", last.display())),
        "{stderr}"
    );
    assert!(!other.join("last.safetensors").exists(), "{stderr}");
}

/// A checkpoint with a weight that is not finite is refused by predict, eval and --resume, naming the file and the
/// tensor: predict --json never prints NaN, eval never reports an AUC of NaN scores.
#[test]
fn a_checkpoint_with_nan_weights_is_refused() {
    let data = tmp("train-nanckpt-data");
    let d = data.to_str().unwrap();
    assert!(dfgpu(&["synth", d, "--n-real", "6", "--n-fake", "12", "--size", "32", "--seed", "2"]).status.success());
    let out = tmp("train-nanckpt-run");
    let base =
        ["train", "--device", "cpu", "--data", d, "--out", out.to_str().unwrap(), "--batch", "4", "--size", "32"];
    assert!(dfgpu(&[&base[..], &["--epochs", "1"]].concat()).status.success());
    let (mut tensors, meta) = dfgpu::model::checkpoint::read(&out.join("last.safetensors")).unwrap();
    let t = tensors.iter_mut().find(|t| t.name == "head.fc1.weight").expect("the head's first layer");
    t.data[3] = f32::NAN;
    let nan = out.join("nan.safetensors");
    dfgpu::model::checkpoint::write(&nan, &tensors, &meta).unwrap();
    let n = nan.to_str().unwrap();
    let says = format!("{n}: tensor 'head.fc1.weight' holds NaN (at index 3)");
    let img = data.join("real/000000.jpg");
    for args in [
        vec!["predict", "--device", "cpu", "--json", "--ckpt", n, img.to_str().unwrap()],
        vec!["eval", "--device", "cpu", "--json", "--ckpt", n, "--data", d],
        [&base[..], &["--epochs", "2", "--resume", n]].concat(),
    ] {
        let r = dfgpu(&args);
        let (stdout, stderr) = text(&r);
        assert!(!r.status.success() && stderr.contains(&says), "{}: {stdout}\n{stderr}", args[0]);
        assert!(!stdout.contains("NaN") && !stdout.contains("AUC"), "{}: {stdout}", args[0]);
    }
}

/// `--resume A/last.safetensors --out B` does not write over the run in B (without --overwrite), and a resumed
/// run keeps the checkpoint's model: a model flag that contradicts it is an error naming both values, a missing
/// one takes the checkpoint's (here the data is decoded at its 32, not the tiny backbone's default 64).
#[test]
fn resume_keeps_other_runs_and_the_checkpoints_model() {
    let data = tmp("train-resumeinto-data");
    let d = data.to_str().unwrap();
    assert!(dfgpu(&["synth", d, "--n-real", "6", "--n-fake", "12", "--size", "32", "--seed", "4"]).status.success());
    let (a, b) = (tmp("train-resumeinto-a"), tmp("train-resumeinto-b"));
    let quick = ["train", "--device", "cpu", "--data", d, "--batch", "4", "--grad-report", "0"];
    for out in [&a, &b] {
        let r = dfgpu(&[&quick[..], &["--size", "32", "--epochs", "1", "--out", out.to_str().unwrap()]].concat());
        assert!(r.status.success(), "{}", text(&r).1);
    }
    let last_a = a.join("last.safetensors");
    let resume = [&quick[..], &["--epochs", "2", "--resume", last_a.to_str().unwrap()]].concat();
    let before = std::fs::read(b.join("last.safetensors")).unwrap();
    let r = dfgpu(&[&resume[..], &["--out", b.to_str().unwrap()]].concat());
    let stderr = text(&r).1;
    assert!(!r.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("{}: holds an earlier run", b.display())), "{stderr}");
    assert_eq!(std::fs::read(b.join("last.safetensors")).unwrap(), before, "run B is untouched");

    let r = dfgpu(&[&resume[..], &["--size", "64"]].concat());
    let stderr = text(&r).1;
    assert!(!r.status.success(), "{stderr}");
    assert!(stderr.contains("--size (size 64) contradicts the checkpoint's size 32"), "{stderr}");
    let r = dfgpu(&[&resume[..], &["--gated"]].concat());
    assert!(text(&r).1.contains("--gated (head.gated true) contradicts the checkpoint's head.gated false"));
    let r = dfgpu(&[&resume[..], &["--freq-profile"]].concat());
    let e = text(&r).1;
    assert!(e.contains("--freq-profile (freq.profile true) contradicts the checkpoint's freq.profile false"), "{e}");

    // No --size and no --out: the checkpoint's size, in the checkpoint's folder.
    let r = dfgpu(&resume);
    let (stdout, stderr) = text(&r);
    assert!(r.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("images at 32x32 ready") && stdout.contains("resumed at epoch 1 of 2"), "{stdout}");
    assert_eq!(std::fs::read_to_string(a.join("metrics.jsonl")).unwrap().lines().count(), 2);
}

/// A run locks its folder: a second run on it is refused, naming the first one's process; a lock left by a run
/// that no longer runs (killed) is taken over; the lock goes when the run ends, whether it succeeded or failed.
#[test]
fn a_run_folder_is_locked_while_a_run_writes_into_it() {
    let data = tmp("train-lock-data");
    let d = data.to_str().unwrap();
    assert!(dfgpu(&["synth", d, "--n-real", "6", "--n-fake", "12", "--size", "32", "--seed", "6"]).status.success());
    let out = tmp("train-lock-run");
    let quick = ["train", "--device", "cpu", "--data", d, "--epochs", "1", "--batch", "4", "--size", "32"];
    let run = [&quick[..], &["--out", out.to_str().unwrap()]].concat();
    let lock = out.join("dfgpu.lock");
    std::fs::create_dir_all(&out).unwrap();
    // A live process: this test's own.
    std::fs::write(&lock, std::process::id().to_string()).unwrap();
    let r = dfgpu(&run);
    let stderr = text(&r).1;
    assert!(!r.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("another dfgpu run (process {}) is writing into", std::process::id())),
        "{stderr}"
    );
    assert!(lock.exists() && !out.join("last.safetensors").exists(), "the other run's lock and folder are left alone");

    // A process that has ended.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    std::fs::write(&lock, gone.id().to_string()).unwrap();
    let r = dfgpu(&run);
    let (stdout, stderr) = text(&r);
    assert!(r.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(&format!("taken over from process {}, which is no longer running", gone.id())), "{stdout}");
    assert!(!lock.exists() && out.join("last.safetensors").exists());
    let r = dfgpu(&[&run[..], &["--overwrite", "--batch", "1"]].concat());
    assert!(!r.status.success() && !lock.exists(), "a failed run leaves no lock: {}", text(&r).1);
}

/// A kill between an epoch's files (here: after last.safetensors, before best.safetensors and the metrics line)
/// loses nothing on --resume: best.safetensors and the epoch's line come back, as in a run never interrupted;
/// the temporary files the kill left are removed, with a note.
#[test]
fn resume_repairs_what_a_kill_between_the_epochs_files_lost() {
    let data = tmp("train-repair-data");
    let d = data.to_str().unwrap();
    assert!(dfgpu(&["synth", d, "--n-real", "10", "--n-fake", "20", "--size", "32", "--seed", "7"]).status.success());
    let (whole, cut) = (tmp("train-repair-whole"), tmp("train-repair-cut"));
    let run = |out: &std::path::Path, extra: &[&str]| {
        let base = ["train", "--device", "cpu", "--data", d, "--batch", "8", "--size", "32", "--grad-report", "0"];
        let r = dfgpu(&[&base[..], &["--out", out.to_str().unwrap()], extra].concat());
        assert!(r.status.success(), "{}\n{}", text(&r).0, text(&r).1);
        text(&r).0
    };
    run(&whole, &["--epochs", "2"]);
    run(&cut, &["--epochs", "1"]);
    for f in ["best.safetensors", "metrics.jsonl", "metrics.csv"] {
        std::fs::remove_file(cut.join(f)).unwrap();
    }
    std::fs::write(cut.join("best.safetensors.tmp"), b"half a checkpoint").unwrap();
    let last = cut.join("last.safetensors");
    let stdout = run(&cut, &["--epochs", "2", "--resume", last.to_str().unwrap()]);
    assert!(stdout.contains("best.safetensors.tmp: a temporary file left by an interrupted run"), "{stdout}");
    assert!(stdout.contains("restored epoch 1's line"), "{stdout}");
    assert!(!cut.join("best.safetensors.tmp").exists());
    let best = |dir: &std::path::Path| std::fs::read(dir.join("best.safetensors")).unwrap();
    assert_eq!(best(&cut), best(&whole), "best.safetensors as in the run never interrupted");
    let log = std::fs::read_to_string(cut.join("metrics.jsonl")).unwrap();
    let epochs: Vec<&str> = log.lines().map(|l| &l[..10]).collect();
    assert_eq!(epochs, ["{\"epoch\":1", "{\"epoch\":2"], "{log}");
}

/// Links that loop back into a data folder (`real/loop -> ..`, `fake/upconv/up2 -> ../..`) hang neither pack,
/// train nor predict; they are skipped and reported, and label nothing: the counts are the folder's own.
#[test]
fn links_that_loop_back_into_the_data_are_skipped() {
    let data = tmp("train-loops-data");
    let d = data.to_str().unwrap();
    assert!(dfgpu(&["synth", d, "--n-real", "6", "--n-fake", "12", "--size", "32", "--seed", "8"]).status.success());
    std::os::unix::fs::symlink("..", data.join("real/loop")).unwrap();
    std::os::unix::fs::symlink("../..", data.join("fake/upconv/up2")).unwrap();
    let says = |s: &str| s.contains("real/loop: a link to") && s.contains("up2: a link to");
    let pack = data.with_extension("dfpack");
    let r = dfgpu_within(60, &["pack", d, pack.to_str().unwrap(), "--size", "32"]);
    let (stdout, stderr) = text(&r);
    assert!(r.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("(18 images: 6 real, 12 fake") && says(&stdout), "{stdout}");

    let out = tmp("train-loops-run");
    let o = out.to_str().unwrap();
    let r = dfgpu_within(60, &["train", "--device", "cpu", "--data", d, "--out", o, "--epochs", "1", "--size", "32"]);
    let (stdout, stderr) = text(&r);
    assert!(r.status.success() && says(&stdout), "{stdout}\n{stderr}");
    assert!(stdout.contains("18 images at 32x32 ready"), "{stdout}");

    let last = out.join("last.safetensors");
    let real = data.join("real");
    let args = ["predict", "--device", "cpu", "--json", "--ckpt", last.to_str().unwrap(), real.to_str().unwrap()];
    let r = dfgpu_within(60, &args);
    let (stdout, stderr) = text(&r);
    assert_eq!(stdout.lines().filter(|l| l.contains("\"p_fake\":")).count(), 6, "{stdout}\n{stderr}");
    assert!(stdout.lines().any(|l| l.contains("real/loop: a link to") && l.contains("\"error\":")), "{stdout}");
}
