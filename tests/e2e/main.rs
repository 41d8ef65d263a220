//! End-to-end tests of the `dfgpu` binary, one module per command.

mod ablate;
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
