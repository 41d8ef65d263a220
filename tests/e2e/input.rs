use crate::{dfgpu, text, tmp};

/// A model trained on native-pixel crops keeps its input geometry in its checkpoint; eval and predict score a
/// grid of tiles with it; a model trained on resized images refuses tiles.
#[test]
fn crop_models_score_tiles_and_resize_models_refuse_them() {
    let data = tmp("input-data");
    let d = data.to_str().unwrap();
    // Images of 48 for a model of 32: crops are native pixels, resize would squash.
    assert!(dfgpu(&["synth", d, "--n-real", "8", "--n-fake", "16", "--size", "48", "--seed", "5"]).status.success());
    let run = |input: &str| {
        let out = tmp(&format!("input-run-{input}"));
        let args = ["train", "--device", "cpu", "--data", d, "--out", out.to_str().unwrap(), "--epochs", "1"];
        // Self-fakes on too: the run takes them in its stride.
        let more = ["--batch", "8", "--size", "32", "--input", input, "--self-fakes", "0.5"];
        let o = dfgpu(&[&args[..], &more].concat());
        let (stdout, stderr) = text(&o);
        assert!(o.status.success(), "{stdout}\n{stderr}");
        let ckpt = out.join("last.safetensors");
        let head = String::from_utf8_lossy(&std::fs::read(&ckpt).unwrap()[..4096]).into_owned();
        assert!(head.contains(&format!("\"dfgpu.input\":\"{input}\"")), "{head}");
        ckpt
    };
    let crop = run("crop");
    let c = crop.to_str().unwrap();
    let o = dfgpu(&["predict", "--device", "cpu", "--ckpt", c, "--tiles", "4", "--tile-combine", "max", "--json", d]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success() && stdout.lines().count() == 24, "{stdout}\n{stderr}");
    let o = dfgpu(&["eval", "--device", "cpu", "--ckpt", c, "--data", d, "--tiles", "9"]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success() && stdout.contains("AUC"), "{stdout}\n{stderr}");
    let o = dfgpu(&["eval", "--device", "cpu", "--ckpt", c, "--data", d, "--tiles", "2"]);
    assert!(!o.status.success() && text(&o).1.contains("--tiles 2: the tiles form a square grid"), "{}", text(&o).1);

    let resize = run("resize");
    let o = dfgpu(&["predict", "--device", "cpu", "--ckpt", resize.to_str().unwrap(), "--tiles", "4", d]);
    let (_, stderr) = text(&o);
    assert!(!o.status.success() && stderr.contains("trained on resized images (--input resize)"), "{stderr}");
    let o = dfgpu(&["train", "--device", "cpu", "--input", "stretch"]);
    assert!(!o.status.success() && text(&o).1.contains("choose one of resize, crop"), "{}", text(&o).1);
    let o = dfgpu(&["train", "--device", "cpu", "--self-fakes", "2"]);
    assert!(!o.status.success() && text(&o).1.contains("--self-fakes '2': a probability"), "{}", text(&o).1);
}
