//! The files dfgpu writes and reads as text or bytes: metrics logs and --json output (JSON), CSV datasets
//! (RFC 4180), packs (checksums).

use crate::{dfgpu, text, tmp};
use serde_json::Value;
use std::path::Path;

fn synth(dir: &Path, n_real: &str, n_fake: &str) {
    let d = dir.to_str().unwrap();
    assert!(dfgpu(&["synth", d, "--n-real", n_real, "--n-fake", n_fake, "--size", "32", "--seed", "3"])
        .status
        .success());
}

/// A fake group (subfolder) named with a quote, a backslash, a newline and a control character round-trips
/// through metrics.jsonl, metrics.csv, the checkpoint's metadata, `curves` and `--resume`; a line that is not
/// JSON makes `curves` fail naming the file and the line.
#[test]
fn any_group_name_round_trips_through_the_logs() {
    let data = tmp("formats-groups-data");
    synth(&data, "6", "12");
    let odd = "q\"b\\s\nn\u{1}c";
    let families: Vec<_> = std::fs::read_dir(data.join("fake")).unwrap().map(|e| e.unwrap().path()).collect();
    std::fs::rename(&families[0], data.join("fake").join(odd)).unwrap();
    let out = tmp("formats-groups-run");
    let (d, o) = (data.to_str().unwrap(), out.to_str().unwrap());
    let train = ["train", "--device", "cpu", "--data", d, "--val", d, "--out", o, "--batch", "4", "--size", "32"];
    let r = dfgpu(&[&train[..], &["--epochs", "1"]].concat());
    assert!(r.status.success(), "{}", text(&r).1);
    let r =
        dfgpu(&[&train[..], &["--epochs", "2", "--resume", out.join("last.safetensors").to_str().unwrap()]].concat());
    assert!(r.status.success(), "{}", text(&r).1);

    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let lines: Vec<Value> =
        log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    assert_eq!(lines.iter().map(|l| l["epoch"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2], "{log}");
    assert!(lines.iter().all(|l| l["groups"][odd].is_f64()), "{log}");
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 3, "{csv}");
    assert!(rows[0].starts_with("epoch,train_loss,") && rows[2].starts_with("2,"), "{csv}");
    let (_, meta) = dfgpu::model::checkpoint::read(&out.join("last.safetensors")).unwrap();
    let m: Value = serde_json::from_str(&meta["dfgpu.metrics"]).unwrap();
    assert!(m["groups"][odd].is_f64() && m["epoch"] == 2, "{}", meta["dfgpu.metrics"]);
    let r = dfgpu(&["curves", o]);
    assert!(r.status.success(), "{}", text(&r).1);

    std::fs::write(out.join("metrics.jsonl"), log + "{\"epoch\":3,\"val_auc\":NaN}\n").unwrap();
    let r = dfgpu(&["curves", o]);
    let (_, stderr) = text(&r);
    assert!(!r.status.success() && stderr.contains("metrics.jsonl:3: not a metrics line"), "{stderr}");
}

/// A checkpoint whose weights are finite but overflow (P(fake) NaN): `predict --json` prints an error line for
/// the image, valid JSON, never a bare NaN, and exits 1.
#[test]
fn predict_json_never_prints_nan() {
    let data = tmp("formats-nan-data");
    synth(&data, "4", "4");
    let out = tmp("formats-nan-run");
    let (d, o) = (data.to_str().unwrap(), out.to_str().unwrap());
    let r =
        dfgpu(&["train", "--device", "cpu", "--data", d, "--out", o, "--epochs", "1", "--batch", "4", "--size", "32"]);
    assert!(r.status.success(), "{}", text(&r).1);
    let (mut tensors, meta) = dfgpu::model::checkpoint::read(&out.join("last.safetensors")).unwrap();
    let t = tensors.iter_mut().find(|t| t.name == "head.fc1.weight").expect("the head's first layer");
    t.data.iter_mut().enumerate().for_each(|(i, w)| *w = if i % 2 == 0 { 3e38 } else { -3e38 });
    let huge = out.join("huge.safetensors");
    dfgpu::model::checkpoint::write(&huge, &tensors, &meta).unwrap();
    let img = data.join("real/000000.jpg");
    let r = dfgpu(&["predict", "--device", "cpu", "--json", "--ckpt", huge.to_str().unwrap(), img.to_str().unwrap()]);
    let (stdout, stderr) = text(&r);
    let line: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert!(
        line["p_fake"].is_null() && line["error"].as_str().unwrap().contains("P(fake) is not a number"),
        "{stdout}"
    );
    assert!(!r.status.success() && stderr.contains("1 image(s) could not be read or scored"), "{stderr}");
}

/// A CSV dataset as pandas and spreadsheets write it (RFC 4180): a UTF-8 BOM before a header that names the
/// columns in another order, quoted paths with commas and quotes, a quoted group; a header with no path
/// column is an error that names the file and the accepted names.
#[test]
fn csv_datasets_follow_rfc_4180() {
    let data = tmp("formats-csv-data");
    synth(&data, "3", "3");
    let (real, fake) = (data.join("real/000000.jpg"), data.join("fake"));
    let fakes: Vec<_> = walk(&fake);
    std::fs::rename(&real, data.join("a,b.jpg")).unwrap();
    std::fs::rename(&fakes[0], data.join("q\"x.jpg")).unwrap();
    let csv = data.join("set.csv");
    let rows = format!(
        "\u{feff}label,Image,generator\nreal,\"a,b.jpg\",\n1,\"q\"\"x.jpg\",\"gen,1\"\n0,real/000001.jpg,\nfake,{},\n",
        fakes[1].strip_prefix(&data).unwrap().display()
    );
    std::fs::write(&csv, rows).unwrap();
    let pack = data.join("set.dfpack");
    let r = dfgpu(&["pack", csv.to_str().unwrap(), pack.to_str().unwrap(), "--size", "32"]);
    let (stdout, stderr) = text(&r);
    assert!(r.status.success() && stdout.contains("4 images: 2 real, 2 fake"), "{stdout}\n{stderr}");
    let l = dfgpu::data::pack::open(&pack, &mut |_| {}).unwrap();
    assert!(l.groups.contains(&Some("gen,1".into())), "{:?}", l.groups);

    std::fs::write(&csv, "name,label\na.jpg,0\n").unwrap();
    let r = dfgpu(&["pack", csv.to_str().unwrap(), pack.to_str().unwrap(), "--size", "32"]);
    let (_, stderr) = text(&r);
    assert!(
        !r.status.success() && stderr.contains("set.csv:1: the first row") && stderr.contains("path: path or file"),
        "{stderr}"
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files.extend(walk(&p));
        } else {
            files.push(p);
        }
    }
    files.sort();
    files
}

/// A flipped pixel byte or a flipped label in a pack is found, naming the pack and the image (and where it was
/// packed from): by `pack --verify`, by training (each image checked the first time it is read) and on open
/// (the trailer's checksum).
#[test]
fn a_damaged_pack_is_found_naming_the_image() {
    let data = tmp("formats-pack-data");
    synth(&data, "4", "8");
    let file = data.with_extension("dfpack");
    let (d, f) = (data.to_str().unwrap(), file.to_str().unwrap());
    assert!(dfgpu(&["pack", d, f, "--size", "32", "--input", "resize"]).status.success());
    let r = dfgpu(&["pack", "--verify", f]);
    assert!(r.status.success() && text(&r).0.contains("all 12 images match their checksums"), "{:?}", text(&r));
    let good = std::fs::read(&file).unwrap();

    let mut bytes = good.clone();
    bytes[8 + 5 * 32 * 32 * 3 + 100] ^= 0x10;
    std::fs::write(&file, &bytes).unwrap();
    let r = dfgpu(&["pack", "--verify", f]);
    let (_, stderr) = text(&r);
    assert!(
        !r.status.success()
            && stderr.contains("1 of 12 images do not match")
            && stderr.contains("image 5 (packed from"),
        "{stderr}"
    );
    let out = tmp("formats-pack-run");
    let train = [
        "train",
        "--device",
        "cpu",
        "--data",
        f,
        "--out",
        out.to_str().unwrap(),
        "--epochs",
        "1",
        "--batch",
        "4",
        "--size",
        "32",
        "--input",
        "resize",
    ];
    let r = dfgpu(&train);
    let (_, stderr) = text(&r);
    assert!(!r.status.success() && stderr.contains(&format!("{f}: image 5 (packed from")), "{stderr}");

    let mut bytes = good;
    let at = bytes.windows(10).position(|w| w == b"\"labels\":[").unwrap() + 10;
    bytes[at] ^= 1; // '0' <-> '1'
    std::fs::write(&file, &bytes).unwrap();
    for args in [&["pack", "--verify", f][..], &train[..]] {
        let r = dfgpu(args);
        let (_, stderr) = text(&r);
        assert!(
            !r.status.success() && stderr.contains(&format!("{f}: not a readable dfgpu pack: the trailer (labels")),
            "{stderr}"
        );
    }
}
