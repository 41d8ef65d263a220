//! Op tests, one module per op family: CPU references against plain f64 math (run everywhere), and GPU against
//! CPU (`#[ignore = "needs a CUDA device: a GPU, or the emulator (scripts/emu.sh)"]`): run them with
//! `--include-ignored` on a GPU machine, or anywhere with `scripts/emu.sh cargo test --test ops -- --ignored`.
//! Every GPU test computes its GPU side through `common::race_checked`, three runs that must agree bit for bit:
//! on the emulator under forward, reverse and shuffled thread and block orders, which turns races into failures.
//! One test binary for all op families, so that the GPU machine gets one executable to run.

mod checks;
mod common;
mod conv;
mod fft;
mod head;
mod layers;
mod loss;
mod norm;
mod optim;
mod preprocess;
