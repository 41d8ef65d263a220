//! End-to-end tests of the `dfgpu` binary, one module per command.

mod ablate;
mod bad_input;
mod faults;
mod formats;
mod holdout;
mod info;
mod input;
mod pack;
mod sanity;
mod synth;
mod train;

use std::process::{Command, Output};

/// Runs the dfgpu binary that cargo built for this test run.
pub fn dfgpu(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dfgpu")).args(args).output().expect("could not start the dfgpu binary")
}

/// A fresh path in the temporary folder, unique to this test process.
pub fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("dfgpu-e2e-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

pub fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// As `dfgpu`, for a command that could hang: killed after `secs` seconds, and the test fails saying so.
pub fn dfgpu_within(secs: u64, args: &[&str]) -> Output {
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_dfgpu"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("could not start the dfgpu binary");
    let start = std::time::Instant::now();
    while child.try_wait().expect("dfgpu runs").is_none() {
        if start.elapsed().as_secs() >= secs {
            let _ = child.kill();
            panic!("dfgpu {} did not end within {secs} s", args.join(" "));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("dfgpu's output")
}
