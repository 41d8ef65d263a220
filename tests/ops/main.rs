//! Op tests, one module per op family: CPU references against plain f64 math (run everywhere), and GPU against
//! CPU (`#[ignore = "needs a CUDA GPU"]`; run them on a GPU machine with `--include-ignored`).
//! One test binary for all op families, so that the GPU machine gets one executable to run.

mod common;
mod conv;
mod fft;
mod head;
mod layers;
mod loss;
mod norm;
mod optim;
mod preprocess;
