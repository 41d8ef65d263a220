//! The fast AdamW step: the reference's update (../optim.rs) in chunks of GRAIN per rayon task, compiled for the
//! CPU's widest vectors (its square root and division vectorize); the reference hands rayon one parameter at a
//! time. The same values, bit for bit (tests/ops/optim.rs).

use super::super::optim::AdamWStep;
use super::{widest, GRAIN};
use rayon::prelude::*;

/// Same contract as the reference's `adamw`.
pub fn adamw(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], mask: &[u8], k: &AdamWStep) {
    let chunks = p.par_chunks_mut(GRAIN).zip(m.par_chunks_mut(GRAIN)).zip(v.par_chunks_mut(GRAIN));
    chunks.zip(g.par_chunks(GRAIN).zip(mask.par_chunks(GRAIN))).for_each(|(((p, m), v), (g, mask))| {
        update(k, p, m, v, g, mask);
    });
}

widest! {
    fn update(k: &AdamWStep, p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], mask: &[u8]) {
        for ((p, (m, v)), (&g, &mask)) in p.iter_mut().zip(m.iter_mut().zip(v.iter_mut())).zip(g.iter().zip(mask)) {
            k.update(p, m, v, g, mask);
        }
    }
}
