//! The fast preprocessing: the reference's per-image loop (../preprocess.rs) compiled for the CPU's widest
//! vectors, where its mul_add (kept for exact agreement with the CUDA kernel) is one instruction, not a libm
//! call. The same values; checked bit for bit against the reference in tests/ops/preprocess.rs.

super::widest! {
    /// Same contract as the reference's `image`.
    pub fn image(src: &[u8], channels: usize, norm: (&[f32; 4], &[f32; 4]), dst: &mut [f32], raw: Option<&mut [f32]>) {
        crate::backend::cpu::preprocess::image(src, channels, norm, dst, raw)
    }
}
