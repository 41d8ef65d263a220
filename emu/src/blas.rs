//! cuBLAS: handles, the version, and single-precision GEMM, which is all that dfgpu calls (through cudarc's
//! `CudaBlas::new` and `Gemm::<f32>::gemm`, src/backend/cuda/blas.rs). Products are summed in f64, so results
//! are at least as accurate as the GPU's fp32 (FMA, no TF32) ones.

use cudarc::cublas::sys::{cublasHandle_t, cublasOperation_t as Op, cublasStatus_t, cudaStream_t, libraryPropertyType};
use rayon::prelude::*;
use std::ffi::{c_int, c_uint};

use cublasStatus_t::{CUBLAS_STATUS_INVALID_VALUE as INVALID, CUBLAS_STATUS_SUCCESS as SUCCESS};

/// The version reported: the cuBLAS of CUDA 13.0, the toolkit that dfgpu's cudarc bindings are built for.
const VERSION: [c_int; 3] = [13, 0, 0];

/// A handle holds nothing: every operation has finished when its call returns, so its stream does not matter.
#[no_mangle]
pub unsafe extern "C" fn cublasCreate_v2(handle: *mut cublasHandle_t) -> cublasStatus_t {
    if handle.is_null() {
        return INVALID;
    }
    handle.write(Box::into_raw(Box::new(0u8)) as cublasHandle_t);
    SUCCESS
}

#[no_mangle]
pub unsafe extern "C" fn cublasDestroy_v2(handle: cublasHandle_t) -> cublasStatus_t {
    if handle.is_null() {
        return cublasStatus_t::CUBLAS_STATUS_NOT_INITIALIZED;
    }
    drop(Box::from_raw(handle as *mut u8));
    SUCCESS
}

#[no_mangle]
pub unsafe extern "C" fn cublasSetStream_v2(handle: cublasHandle_t, _stream: cudaStream_t) -> cublasStatus_t {
    if handle.is_null() {
        return cublasStatus_t::CUBLAS_STATUS_NOT_INITIALIZED;
    }
    SUCCESS
}

#[no_mangle]
pub unsafe extern "C" fn cublasGetProperty(property: c_uint, value: *mut c_int) -> cublasStatus_t {
    use libraryPropertyType::{MAJOR_VERSION, MINOR_VERSION, PATCH_LEVEL};
    let slot = [MAJOR_VERSION, MINOR_VERSION, PATCH_LEVEL].iter().position(|&p| p as c_uint == property);
    match slot {
        Some(i) if !value.is_null() => {
            value.write(VERSION[i]);
            SUCCESS
        }
        _ => INVALID,
    }
}

/// Bytes spanned by a column-major `rows` x `cols` matrix with leading dimension `ld` (0 when it is empty).
fn span(rows: usize, cols: usize, ld: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        ((cols - 1) * ld + rows) * 4
    }
}

/// `rows` lines of `len` values each, line `r` starting at `p + r * line_step` with values `step` apart,
/// packed one after the other as f64.
unsafe fn pack(p: *const f32, rows: usize, len: usize, line_step: usize, step: usize) -> Vec<f64> {
    let mut v = Vec::with_capacity(rows * len);
    for r in 0..rows {
        v.extend((0..len).map(|q| *p.add(r * line_step + q * step) as f64));
    }
    v
}

/// A dot product with four partial sums, which lets it vectorize.
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..4 {
            acc[l] += x[l] * y[l];
        }
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// Whether an operation is a transpose: N is not, T and C (the same for real data) are; anything else is
/// not an operation that sgemm takes.
fn transposed(op: c_uint) -> Option<bool> {
    if op == Op::CUBLAS_OP_N as c_uint {
        Some(false)
    } else if op == Op::CUBLAS_OP_T as c_uint || op == Op::CUBLAS_OP_C as c_uint {
        Some(true)
    } else {
        None
    }
}

/// Column-major C (m x n) = alpha op(A) op(B) + beta C, op(A) m x k, op(B) k x n, alpha and beta on the host
/// (cuBLAS's default pointer mode). As documented: A and B are not read when alpha is 0 or k is 0, and C is
/// not read when beta is 0 (it may hold NaN).
#[no_mangle]
pub unsafe extern "C" fn cublasSgemm_v2(
    handle: cublasHandle_t,
    transa: c_uint,
    transb: c_uint,
    m: c_int,
    n: c_int,
    k: c_int,
    alpha: *const f32,
    a: *const f32,
    lda: c_int,
    b: *const f32,
    ldb: c_int,
    beta: *const f32,
    c: *mut f32,
    ldc: c_int,
) -> cublasStatus_t {
    if handle.is_null() {
        return cublasStatus_t::CUBLAS_STATUS_NOT_INITIALIZED;
    }
    let (Some(ta), Some(tb)) = (transposed(transa), transposed(transb)) else {
        eprintln!("dfgpu-emu: cublasSgemm_v2: operations {transa}, {transb} are not N, T or C");
        return INVALID;
    };
    let dims = [m, n, k, lda, ldb, ldc].map(|v| usize::try_from(v).ok());
    let [Some(m), Some(n), Some(k), Some(lda), Some(ldb), Some(ldc)] = dims else {
        eprintln!("dfgpu-emu: cublasSgemm_v2: negative size in m {m}, n {n}, k {k}, lda {lda}, ldb {ldb}, ldc {ldc}");
        return INVALID;
    };
    // As stored: A is m x k (k x m when transposed), B k x n (n x k).
    let (a_rows, a_cols) = if ta { (k, m) } else { (m, k) };
    let (b_rows, b_cols) = if tb { (n, k) } else { (k, n) };
    if lda < a_rows.max(1) || ldb < b_rows.max(1) || ldc < m.max(1) {
        eprintln!(
            "dfgpu-emu: cublasSgemm_v2: leading dimensions {lda}, {ldb}, {ldc} below the rows {a_rows}, {b_rows}, {m}"
        );
        return INVALID;
    }
    if alpha.is_null() || beta.is_null() {
        eprintln!("dfgpu-emu: cublasSgemm_v2: alpha or beta is null");
        return INVALID;
    }
    if m == 0 || n == 0 {
        return SUCCESS;
    }
    let (alpha, beta) = (*alpha as f64, *beta as f64);
    let c_bytes = span(m, n, ldc);
    if crate::mem::check(c as u64, c_bytes, "cublasSgemm_v2 C").is_err() {
        return INVALID;
    }
    let product = if alpha == 0.0 || k == 0 {
        None
    } else {
        if crate::mem::check(a as u64, span(a_rows, a_cols, lda), "cublasSgemm_v2 A").is_err()
            || crate::mem::check(b as u64, span(b_rows, b_cols, ldb), "cublasSgemm_v2 B").is_err()
        {
            return INVALID;
        }
        // Row i of op(A) and column j of op(B) as lines of k values, so that each product is one dot.
        let at = if ta { pack(a, m, k, lda, 1) } else { pack(a, m, k, 1, lda) };
        let bt = if tb { pack(b, n, k, 1, ldb) } else { pack(b, n, k, ldb, 1) };
        let p: Vec<f64> =
            (0..m * n).into_par_iter().map(|ij| dot(&at[ij % m * k..][..k], &bt[ij / m * k..][..k])).collect();
        Some(p)
    };
    // SAFETY: checked above to lie in one allocation; A and B were read into `product` before.
    let cs = std::slice::from_raw_parts_mut(c, c_bytes / 4);
    for j in 0..n {
        let col = &mut cs[j * ldc..][..m];
        for (i, out) in col.iter_mut().enumerate() {
            let ab = product.as_ref().map_or(0.0, |p| alpha * p[j * m + i]);
            *out = if beta == 0.0 { ab } else { ab + beta * *out as f64 } as f32;
        }
    }
    SUCCESS
}
