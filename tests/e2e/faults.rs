//! Fault injection: a training run is killed with SIGKILL again and again, and `--resume` finishes it
//! each time with the checkpoints and logs of an uninterrupted run.
//!
//! Two kinds of kill, drawn from a seeded generator: at a random time of the run (spread over the uninterrupted
//! run's measured length, startup included), and inside a write. For the second, the test puts a named pipe where
//! the run writes its next temporary file (`last.safetensors.tmp`, ...); the run blocks opening it, which the
//! test sees in /proc (the thread waits in `wait_for_partner`). A log is killed there, with its temporary file
//! created and still empty; a checkpoint is first read part way (a random count of its bytes), so that the run
//! dies in the middle of writing it. Then the pipe is replaced by what the kill would have left: a regular file
//! holding the bytes written so far. The binary has no code for the test.

use crate::{dfgpu, text, tmp};
use std::io::Read as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The files an epoch writes through a temporary file.
const WRITES: [&str; 4] = ["last.safetensors", "best.safetensors", "metrics.jsonl", "metrics.csv"];
const EPOCHS: &str = "5";
const KILLS: usize = 40;

/// splitmix64: the kill schedule, the same on every run of the test.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

fn train(data: &Path, out: &Path, extra: &[&str]) -> Child {
    let (d, o) = (data.to_str().unwrap(), out.to_str().unwrap());
    let args = ["train", "--device", "cpu", "--data", d, "--out", o, "--size", "32", "--batch", "4"];
    Command::new(env!("CARGO_BIN_EXE_dfgpu"))
        .args(args)
        .args(["--epochs", EPOCHS, "--grad-report", "0", "--seed", "3"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("could not start the dfgpu binary")
}

/// The next run on `out`: a resume when an epoch was finished, else a start (over what a kill in the first epoch
/// left).
fn next_run(data: &Path, out: &Path) -> Child {
    let last = out.join("last.safetensors");
    match last.exists() {
        true => train(data, out, &["--resume", last.to_str().unwrap()]),
        false => train(data, out, &["--overwrite"]),
    }
}

/// Whether a thread of `pid` waits in the open of a named pipe for a reader.
fn waits_on_pipe(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.flatten().any(|t| std::fs::read_to_string(t.path().join("wchan")).is_ok_and(|w| w == "wait_for_partner"))
}

/// The epoch a checkpoint stores (its safetensors header's dfgpu.epoch).
fn epoch_of(ckpt: &Path) -> Option<usize> {
    let b = std::fs::read(ckpt).ok()?;
    let n = u64::from_le_bytes(b.get(..8)?.try_into().ok()?) as usize;
    let header = std::str::from_utf8(b.get(8..8 + n)?).ok()?;
    header.split("\"dfgpu.epoch\":\"").nth(1)?.split('"').next()?.parse().ok()
}

/// The log without the two figures that depend on the machine's speed, not on the run (each epoch's seconds and
/// images per second: a resumed epoch takes another time).
fn jsonl_without_timing(text: &str) -> String {
    text.lines()
        .map(|l| match (l.find("\"seconds\":"), l.find("\"groups\":")) {
            (Some(a), Some(b)) if a < b => format!("{}{}\n", &l[..a], &l[b..]),
            _ => format!("{l}\n"),
        })
        .collect()
}

fn csv_without_timing(text: &str) -> String {
    let header: Vec<&str> = text.lines().next().unwrap_or("").split(',').collect();
    let keep: Vec<usize> = (0..header.len()).filter(|&i| !["seconds", "images_per_s"].contains(&header[i])).collect();
    text.lines()
        .map(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            keep.iter().map(|&i| cells.get(i).copied().unwrap_or("")).collect::<Vec<_>>().join(",") + "\n"
        })
        .collect()
}

/// `out` holds what `reference` holds: the same checkpoints byte for byte (tensors and metadata, the epoch's
/// figures in it included), the same logs but for the timings, no temporary file and no lock.
fn assert_same_run(out: &Path, reference: &Path, kills: &str) {
    for f in ["last.safetensors", "best.safetensors"] {
        let (a, b) = (std::fs::read(out.join(f)).unwrap(), std::fs::read(reference.join(f)).unwrap());
        assert!(a == b, "{f} differs from the uninterrupted run's after kills {kills}");
    }
    let read = |d: &Path, f: &str| std::fs::read_to_string(d.join(f)).unwrap();
    assert_eq!(
        jsonl_without_timing(&read(out, "metrics.jsonl")),
        jsonl_without_timing(&read(reference, "metrics.jsonl")),
        "after kills {kills}"
    );
    assert_eq!(
        csv_without_timing(&read(out, "metrics.csv")),
        csv_without_timing(&read(reference, "metrics.csv")),
        "after kills {kills}"
    );
    assert_eq!(read(out, "metrics.jsonl").lines().count(), EPOCHS.parse::<usize>().unwrap());
    for f in ["curves.png", "roc.png"] {
        assert!(out.join(f).is_file(), "{f} missing after kills {kills}");
    }
    let left: Vec<String> = std::fs::read_dir(out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp") || n == "dfgpu.lock")
        .collect();
    assert!(left.is_empty(), "left in the run folder after kills {kills}: {left:?}");
}

#[test]
#[cfg(target_os = "linux")]
fn killed_runs_resume_to_the_uninterrupted_result() {
    let data = tmp("faults-data");
    let d = data.to_str().unwrap();
    let o = dfgpu(&["synth", d, "--n-real", "8", "--n-fake", "40", "--size", "32", "--seed", "7"]);
    assert!(o.status.success(), "{}", text(&o).1);
    let reference = tmp("faults-reference");
    let started = Instant::now();
    let o = train(&data, &reference, &[]).wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let length = started.elapsed();

    let mut rng = Rng(14);
    let (mut kills, mut in_writes, mut rounds, mut attempts) = (Vec::<String>::new(), 0, 0, 0);
    let test_started = Instant::now();
    // Rounds of a whole run, each killed until it finishes, until enough kills have fallen.
    while kills.len() < KILLS {
        rounds += 1;
        let out = tmp(&format!("faults-run-{rounds}"));
        let mut round: Vec<String> = Vec::new();
        loop {
            let mut child = next_run(&data, &out);
            // Into a write: a pipe where the run's next temporary file of that name goes, from the start. A round
            // starts with best.safetensors (a first epoch is always the best so far); then every other run, the
            // file of the others that the fewest kills fell in so far; the rest die at a random time.
            attempts += 1;
            let pipe = match round.is_empty() {
                true => Some("best.safetensors"),
                false => (attempts % 2 == 0).then(|| {
                    let hits = |f: &str| kills.iter().chain(&round).filter(|k| k.contains(f)).count();
                    let others = WRITES.into_iter().filter(|f| *f != "best.safetensors");
                    others.min_by_key(|f| hits(f)).unwrap()
                }),
            };
            let pipe = pipe.map(|f| out.join(format!("{f}.tmp")));
            if pipe.is_none() {
                std::thread::sleep(length.mul_f64(rng.below(1000) as f64 / 1000.0));
            }
            if let Some(p) = &pipe {
                while std::fs::create_dir_all(&out).is_err()
                    || !Command::new("mkfifo").arg(p).status().unwrap().success()
                {
                    // The run's own temporary file is there for a moment: after its rename the pipe can go.
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            let mut torn = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(20);
            let blocked = loop {
                if child.try_wait().unwrap().is_some() {
                    break false;
                }
                if pipe.is_none() || waits_on_pipe(child.id()) {
                    break pipe.is_some();
                }
                assert!(Instant::now() < deadline, "the run neither wrote into {pipe:?} nor ended");
                std::thread::sleep(Duration::from_millis(1));
            };
            // Open until the kill: a reader that goes first would end the write with a broken pipe instead.
            let mut _reader = None;
            if let (true, Some(p)) = (blocked, &pipe) {
                if p.to_string_lossy().ends_with(".safetensors.tmp") {
                    // The writer goes on until the pipe is full: it dies in the middle of the checkpoint.
                    let want = 1 + rng.below(1 << 20) as usize;
                    let mut reader = std::fs::File::open(p).unwrap();
                    torn.resize(want, 0);
                    reader.read_exact(&mut torn).unwrap();
                    _reader = Some(reader);
                }
            }
            let killed = child.try_wait().unwrap().is_none();
            if killed {
                child.kill().unwrap(); // SIGKILL
            }
            let output = child.wait_with_output().unwrap();
            if let Some(p) = &pipe {
                let _ = std::fs::remove_file(p);
                if blocked {
                    std::fs::write(p, &torn).unwrap();
                }
            }
            if killed {
                let what = match (&pipe, blocked) {
                    (Some(p), true) => {
                        format!("in {} ({} bytes written)", p.file_name().unwrap().to_string_lossy(), torn.len())
                    }
                    _ => "at a random time".into(),
                };
                in_writes += blocked as usize;
                round.push(what);
                continue;
            }
            let stderr = String::from_utf8_lossy(&output.stderr);
            // A kill after the last epoch's checkpoint left the run complete: a resume then has nothing to do.
            let done =
                stderr.contains("asks for no more") && epoch_of(&out.join("last.safetensors")) == EPOCHS.parse().ok();
            assert!(output.status.success() || done, "after kills {round:?}: {stderr}");
            break;
        }
        assert_same_run(&out, &reference, &format!("{round:?}"));
        kills.extend(round);
    }
    assert!(kills.len() - in_writes >= 5, "too few kills at random times: {kills:?}");
    let writes: Vec<&String> = kills.iter().filter(|k| k.starts_with("in ")).collect();
    for f in WRITES {
        assert!(writes.iter().any(|k| k.contains(f)), "no kill in a write of {f}: {kills:?}");
    }
    eprintln!(
        "{} kills ({in_writes} inside a write) over {rounds} rounds in {:.1} s; the uninterrupted run takes {:.2} s",
        kills.len(),
        test_started.elapsed().as_secs_f64(),
        length.as_secs_f64()
    );
}
