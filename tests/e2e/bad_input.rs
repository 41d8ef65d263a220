//! Bad input meets a message that says what is wrong and where.

use crate::{dfgpu, text, tmp};
use std::path::Path;

fn synth(dir: &Path, real: &str, fake: &str) {
    let d = dir.to_str().unwrap();
    assert!(dfgpu(&["synth", d, "--n-real", real, "--n-fake", fake, "--size", "32", "--seed", "5"]).status.success());
}

/// A command that fails, and its standard error.
fn fails(args: &[&str]) -> String {
    let o = dfgpu(args);
    let (stdout, stderr) = text(&o);
    assert!(!o.status.success(), "{}: exit 0\n{stdout}\n{stderr}", args.join(" "));
    stderr
}

/// The first half of a file.
fn cut_in_half(p: &Path) {
    let b = std::fs::read(p).unwrap();
    std::fs::write(p, &b[..b.len() / 2]).unwrap();
}

#[test]
fn messages_name_the_problem() {
    let (data, out) = (tmp("bad-messages-data"), tmp("bad-messages-run"));
    synth(&data, "3", "6");
    let (d, o) = (data.to_str().unwrap(), out.to_str().unwrap());
    let e = fails(&["sanity", "--device", "cpu", "--data", d, "--size", "32"]);
    assert!(e.contains("the set has 3 real and 6 fake, and 3 real and 5 fake of the first ones could be read"), "{e}");

    let pack = out.with_extension("dfpack");
    std::fs::write(&pack, b"DFPACK?? damaged header").unwrap();
    let e = fails(&["train", "--device", "cpu", "--data", pack.to_str().unwrap(), "--out", o]);
    assert!(e.contains("not a readable pack: it does not start with dfgpu's pack header"), "{e}");
    let e = fails(&["train", "--device", "cpu", "--data", d, "--out", o, "--class-weights", "0,0"]);
    assert!(e.contains("invalid value '0,0' for '--class-weights <CLASS_WEIGHTS>': choose"), "{e}");

    let empty = tmp("bad-messages-empty");
    std::fs::create_dir_all(&empty).unwrap();
    let set = tmp("bad-messages-set");
    let e = fails(&["synth", set.to_str().unwrap(), "--from", empty.to_str().unwrap()]);
    assert!(e.contains("no images (jpg, jpeg, png, webp, bmp) under it") && !set.exists(), "{e}");

    let quick = ["train", "--device", "cpu", "--data", d, "--out", o, "--size", "32", "--batch", "4", "--epochs", "1"];
    assert!(dfgpu(&quick).status.success());
    let last = out.join("last.safetensors");
    let e = fails(&["predict", "--device", "cpu", "--ckpt", last.to_str().unwrap(), empty.to_str().unwrap()]);
    assert!(e.contains(&format!("{}: no images (jpg, jpeg, png, webp, bmp) under it", empty.display())), "{e}");
    let e = fails(&[&quick[..], &["--resume", last.to_str().unwrap()]].concat());
    assert!(e.contains("has 1 epoch(s) done already, and --epochs 1 asks for no more"), "{e}");
}

/// A JPEG cut short is an unreadable image (skipped and listed, with no blank line after a decoder's message),
/// and a class that no readable image is left of is an error listing the skipped files, for eval and train.
#[test]
fn cut_images_are_skipped_and_an_emptied_class_is_an_error() {
    let (data, out) = (tmp("bad-cut-data"), tmp("bad-cut-run"));
    synth(&data, "4", "8");
    let (d, o) = (data.to_str().unwrap(), out.to_str().unwrap());
    let mut fake: Vec<_> = walk(&data.join("fake"));
    fake.sort();
    cut_in_half(&fake[0]);
    std::fs::write(&fake[1], &std::fs::read(&fake[2]).unwrap()[..300]).unwrap();
    let pack = out.with_extension("dfpack");
    let r = dfgpu(&["pack", d, pack.to_str().unwrap(), "--size", "32"]);
    let stdout = text(&r).0;
    assert!(r.status.success() && stdout.contains("10 images (2 skipped)"), "{stdout}");
    assert!(stdout.contains(&format!("skipped: {}: cannot decode: the file ends inside", fake[0].display())));
    assert!(!stdout.contains("\n\n"), "{stdout}");

    let quick = ["train", "--device", "cpu", "--data", d, "--out", o, "--size", "32", "--batch", "4", "--epochs", "1"];
    assert!(dfgpu(&quick).status.success());
    fake.iter().for_each(|f| cut_in_half(f));
    let says = |e: &str| {
        e.contains(&format!("{d}: no fake image could be read (4 real, 0 fake); 8 unreadable file(s) skipped:"))
            && e.contains(&fake[7].display().to_string())
    };
    let last = out.join("last.safetensors");
    let e = fails(&["eval", "--device", "cpu", "--ckpt", last.to_str().unwrap(), "--data", d]);
    assert!(says(&e), "{e}");
    let e = fails(&[&quick[..], &["--overwrite"]].concat());
    assert!(says(&e), "{e}");
    let mut on_pack = quick.to_vec();
    on_pack[4] = pack.to_str().unwrap();
    let e = fails(&[&on_pack[..], &["--overwrite", "--val", d]].concat());
    assert!(says(&e), "{e}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flat_map(|e| {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p)
            } else {
                vec![p]
            }
        })
        .collect()
}

/// A batch larger than the training set is clamped to it, with a note, and one whose step cannot have the memory
/// it needs is refused before the first step, saying how much it would take.
#[test]
fn batches_are_bounded_by_the_set_and_by_memory() {
    let (data, out) = (tmp("bad-batch-data"), tmp("bad-batch-run"));
    synth(&data, "8", "40");
    let (d, o) = (data.to_str().unwrap(), out.to_str().unwrap());
    let run = ["--device", "cpu", "--data", d, "--out", o, "--epochs", "1"];
    for cmd in ["train", "holdout"] {
        let r = dfgpu(&[&[cmd], &run[..], &["--size", "32", "--batch", "100000"]].concat());
        let (stdout, stderr) = crate::text(&r);
        assert!(r.status.success(), "{cmd}: {stdout}\n{stderr}");
        assert!(stdout.contains("--batch 100000 is larger than the training set ("), "{cmd}: {stdout}");
        let _ = std::fs::remove_dir_all(&out);
    }

    // A million tiles an image: a million crops in one forward, refused before any image is decoded.
    let r = dfgpu(&[&["train"], &run[..], &["--size", "32", "--batch", "8"]].concat());
    assert!(r.status.success(), "{}", crate::text(&r).1);
    let ckpt = out.join("last.safetensors");
    let c = ckpt.to_str().unwrap();
    for cmd in
        [&["eval", "--device", "cpu", "--ckpt", c, "--data", d][..], &["predict", "--device", "cpu", "--ckpt", c, d]]
    {
        let e = fails(&[cmd, &["--tiles", "1000000"]].concat());
        assert!(
            e.contains(&format!(
                "--tiles 1000000: an image's 1000000 crops of 32x32 (the model of {c}) take at least "
            )),
            "{e}"
        );
        assert!(e.contains("GiB free on cpu") && e.contains("choose fewer tiles"), "{e}");
    }
    let _ = std::fs::remove_dir_all(&out);

    // b0 at 224 keeps about 90 MiB per image for its backward: 38 images need over 3 GiB, refused under a 3 GB
    // address-space limit (where the allocation would abort the run) with what it takes and what would fit.
    let cmd = format!("ulimit -v 3000000; exec '{}' \"$@\"", env!("CARGO_BIN_EXE_dfgpu"));
    let args = [&run[..], &["--backbone", "b0", "--size", "224", "--batch", "38"]].concat();
    let o = std::process::Command::new("sh").args(["-c", &cmd, "sh", "train"]).args(&args).output().unwrap();
    let (stdout, stderr) = crate::text(&o);
    assert!(!o.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("--batch 38: a training step of the b0 model at 224x224 on ")
            && stderr.contains(" GiB free on cpu"),
        "{stderr}"
    );
    let most: usize = stderr.split("choose --batch ").nth(1).and_then(|s| s.split(' ').next()?.parse().ok()).unwrap();
    assert!((1..38).contains(&most), "{stderr}");
    assert!(!out.exists(), "a refused run leaves no folder");
}

/// A reader that stops early (`dfgpu predict ... | head -1`) ends the run quietly, as for other Unix tools: no
/// panic on the closed pipe.
#[cfg(unix)]
#[test]
fn a_closed_pipe_ends_predict_quietly() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::ExitStatusExt;
    let data = crate::tmp("pipe-data");
    let d = data.to_str().unwrap();
    assert!(crate::dfgpu(&["synth", d, "--n-real", "200", "--n-fake", "200", "--size", "32"]).status.success());
    let out = crate::tmp("pipe-run");
    let args = ["train", "--device", "cpu", "--data", d, "--out", out.to_str().unwrap(), "--epochs", "1"];
    assert!(crate::dfgpu(&[&args[..], &["--size", "32", "--batch", "64"]].concat()).status.success());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_dfgpu"))
        .args(["predict", "--device", "cpu", "--ckpt", out.join("last.safetensors").to_str().unwrap(), d])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap(); // then the pipe closes
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!first.is_empty() && !stderr.contains("panicked"), "{first}\n{stderr}");
    assert!(o.status.success() || o.status.signal() == Some(libc::SIGPIPE), "{:?}\n{stderr}", o.status);
}
