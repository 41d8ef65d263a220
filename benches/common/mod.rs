//! What the benches share (`mod common;` in each): GPU timing, and run-time compilation of bench-only kernels.
//! Kept out of the library so that nothing only a bench needs is shipped.

// Each bench is its own crate and uses only some of these.
#![allow(dead_code)]

pub mod nvrtc;
pub mod timing;
