//! cuBLAS for the matrix products, on the backend's stream, row-major.

use crate::error::{Error, Result};
use cudarc::cublas::{sys::cublasOperation_t as Op, CudaBlas, Gemm, GemmConfig};
use cudarc::driver::{CudaStream, DevicePtr, DevicePtrMut};
use std::sync::Arc;

pub struct Blas(CudaBlas);

impl Blas {
    /// Errors (never panics) when libcublas cannot be loaded.
    pub fn new(stream: Arc<CudaStream>) -> Result<Self> {
        // SAFETY: only tries to dlopen libcublas.
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Err(Error::Device("cuBLAS (libcublas.so) could not be loaded".into()));
        }
        CudaBlas::new(stream).map(Blas).map_err(|e| Error::Cuda(format!("cuBLAS handle: {e}")))
    }

    /// Row-major C (m x n) = op(A) op(B) + beta C, op(A) m x k, op(B) k x n. `ta`: A is stored k x m and used
    /// transposed; `tb`: B is stored n x k and used transposed. fp32 throughout (no TF32).
    pub fn gemm<A: DevicePtr<f32>, B: DevicePtr<f32>, C: DevicePtrMut<f32>>(
        &self,
        (ta, tb): (bool, bool),
        (m, n, k): (usize, usize, usize),
        a: &A,
        b: &B,
        beta: f32,
        c: &mut C,
    ) -> Result<()> {
        let (lda, ldb) = (if ta { m } else { k }, if tb { k } else { n });
        if a.len() < m * k || b.len() < k * n || c.len() < m * n {
            shape_err!("gemm {m}x{n}x{k}: buffers of {}, {} and {} elements are too small", a.len(), b.len(), c.len());
        }
        // cuBLAS is column-major: a row-major X is a column-major X^T, so C^T = op(B)^T op(A)^T.
        let op = |t: bool| if t { Op::CUBLAS_OP_T } else { Op::CUBLAS_OP_N };
        let cfg = GemmConfig {
            transa: op(tb),
            transb: op(ta),
            m: n as i32,
            n: m as i32,
            k: k as i32,
            alpha: 1.0f32,
            lda: ldb as i32,
            ldb: lda as i32,
            beta,
            ldc: n as i32,
        };
        // SAFETY: the sizes were checked against the buffers above; all three live on the handle's stream.
        unsafe { self.0.gemm(cfg, b, a, c) }.map_err(|e| Error::Cuda(format!("cuBLAS sgemm {m}x{n}x{k}: {e}")))
    }
}
