//! Model tests: the networks built from the ops, checked as wholes (shapes and names against timm, gradients
//! of whole blocks against finite differences in f64 on the CPU backend).

#[path = "../ops/common.rs"]
#[allow(dead_code)]
mod common;
mod detector;
mod efficientnet;
mod timm;
