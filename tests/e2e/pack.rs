use crate::{dfgpu, text, tmp};

/// `dfgpu pack` writes a file that train reads without decoding; sizes that differ and missing folders are
/// errors that say what to do.
#[test]
fn train_reads_a_pack() {
    let data = tmp("pack-data");
    let d = data.to_str().unwrap();
    assert!(dfgpu(&["synth", d, "--n-real", "12", "--n-fake", "24", "--size", "32", "--seed", "2"]).status.success());
    let file = data.with_extension("dfpack");
    let f = file.to_str().unwrap();
    let o = dfgpu(&["pack", d, f, "--size", "32"]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success() && stdout.contains("36 images (0 skipped)"), "{stdout}\n{stderr}");

    let out = tmp("pack-run");
    let args =
        ["train", "--device", "cpu", "--data", f, "--out", out.to_str().unwrap(), "--epochs", "1", "--batch", "8"];
    let o = dfgpu(&[&args[..], &["--size", "32", "--augment", "robust"]].concat());
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("29 images: 10 real, 19 fake") && stdout.contains("AUC"), "{stdout}");

    let o = dfgpu(&[&args[..], &["--overwrite"]].concat());
    let (_, stderr) = text(&o);
    assert!(
        !o.status.success() && stderr.contains("packed for 32x32 inputs by --input crop, the model takes 64x64"),
        "{stderr}"
    );
    // A pack keeps what its input geometry needs: one made for crop does not serve resize.
    let o = dfgpu(&[&args[..], &["--overwrite", "--size", "32", "--input", "resize"]].concat());
    let (_, stderr) = text(&o);
    assert!(!o.status.success() && stderr.contains("pack again with --size 32 --input resize"), "{stderr}");
    // sanity takes a pack too: its first 5 real and 5 fake images.
    let o = dfgpu(&["sanity", "--device", "cpu", "--data", f, "--size", "32"]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success() && stdout.contains("PASS: the training loss fell"), "{stdout}\n{stderr}");
    assert!(stdout.contains("fitting 5 real and 5 fake images from"), "{stdout}");
    let missing = data.join("nowhere");
    let o = dfgpu(&["pack", missing.to_str().unwrap(), f]);
    let (_, stderr) = text(&o);
    assert!(!o.status.success() && stderr.contains("nowhere: no such folder or file"), "{stderr}");
    assert!(file.exists(), "a failed pack leaves the earlier file alone");
}
