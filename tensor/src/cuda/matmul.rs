//! Matrix products on cuBLAS.
//!
//! cuBLAS is column-major and petal is row-major. A row-major matrix read as
//! column-major is its transpose, so instead of C = A B we ask cuBLAS for
//! C^T = B^T A^T, which it then writes, column-major, as exactly the bytes
//! of row-major C. An operand may be any strided view as long as one of its
//! two strides is 1 (a plain or a transposed matrix, in cuBLAS terms "N" or
//! "T" with some leading dimension); anything else (say a column of a
//! broadcast) is first made contiguous. Batches use `GemmStridedBatchedEx`
//! with the operands' batch strides, 0 for a broadcast operand.
//!
//! f16 and bf16 multiply with f32 accumulation; f32 may use TF32 tensor cores
//! when the device allows it (`CudaDevice::set_tf32`).
//!
//! CPU twin: `cpu/matmul.rs`.

use super::{CudaDevice, CudaResultExt, CudaStorage};
use crate::backend::MatmulDims;
use crate::{DType, Error, Layout, Result};
use cudarc::cublas::result as blas;
use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};
use std::ffi::c_void;

/// A row-major matrix (or a batch of them) in device memory: element (i, j)
/// of batch b lives at element `b * batch_stride + i * rs + j * cs` from `ptr`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MatRef {
    pub ptr: u64,
    pub rs: usize,
    pub cs: usize,
    pub batch_stride: usize,
}

/// How cuBLAS can read `X^T` (cols x rows, column-major) out of a row-major
/// `X` (rows x cols) with strides (rs, cs): the op to apply and the leading
/// dimension, or None when neither stride is 1.
fn blas_view(rows: usize, cols: usize, rs: usize, cs: usize) -> Option<(cublasOperation_t, usize)> {
    // Stored as cols x rows column-major, used as is.
    let ld = if rows == 1 { cols } else { rs };
    if (cs == 1 || cols == 1) && ld >= cols.max(1) {
        return Some((cublasOperation_t::CUBLAS_OP_N, ld));
    }
    // Stored as rows x cols column-major, used transposed.
    let ld = if cols == 1 { rows } else { cs };
    if (rs == 1 || rows == 1) && ld >= rows.max(1) {
        return Some((cublasOperation_t::CUBLAS_OP_T, ld));
    }
    None
}

fn to_i32(what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::Cuda(format!("matmul: {what} = {v} is too large for cuBLAS")))
}

/// Whether `blas_view` can read this operand without a copy.
pub(crate) fn blas_readable(rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    blas_view(rows, cols, rs, cs).is_some()
}

/// `C[b] = A[b] @ B[b] + beta * C[b]` for `batch` row-major products of
/// [m, k] @ [k, n]; C is contiguous rows of n with `c_batch_stride` between
/// batches. Both operands must satisfy `blas_readable`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(
    dev: &CudaDevice,
    dtype: DType,
    batch: usize,
    (m, n, k): (usize, usize, usize),
    a: MatRef,
    b: MatRef,
    c: u64,
    c_batch_stride: usize,
    beta: f64,
) -> Result<()> {
    if batch == 0 || m == 0 || n == 0 {
        return Ok(());
    }
    // Column-major view: C^T (n x m) = B^T (n x k) . A^T (k x m).
    let (op_b, ld_b) = blas_view(k, n, b.rs, b.cs).ok_or_else(|| Error::Cuda("matmul: rhs layout unreadable".into()))?;
    let (op_a, ld_a) = blas_view(m, k, a.rs, a.cs).ok_or_else(|| Error::Cuda("matmul: lhs layout unreadable".into()))?;
    let (data_type, compute, one_f64) = match dtype {
        DType::F32 if dev.tf32() => (cudaDataType::CUDA_R_32F, cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32, false),
        DType::F32 => (cudaDataType::CUDA_R_32F, cublasComputeType_t::CUBLAS_COMPUTE_32F, false),
        DType::F64 => (cudaDataType::CUDA_R_64F, cublasComputeType_t::CUBLAS_COMPUTE_64F, true),
        DType::F16 => (cudaDataType::CUDA_R_16F, cublasComputeType_t::CUBLAS_COMPUTE_32F, false),
        DType::BF16 => (cudaDataType::CUDA_R_16BF, cublasComputeType_t::CUBLAS_COMPUTE_32F, false),
        DType::U32 => {
            return Err(Error::UnsupportedDType { op: "matmul", got: dtype, hint: "; convert to a float dtype first" })
        }
    };
    // alpha and beta live on the host, in the compute type.
    let (alpha64, beta64) = (1.0f64, beta);
    let (alpha32, beta32) = (1.0f32, beta as f32);
    let (alpha_p, beta_p): (*const c_void, *const c_void) = if one_f64 {
        (&alpha64 as *const f64 as _, &beta64 as *const f64 as _)
    } else {
        (&alpha32 as *const f32 as _, &beta32 as *const f32 as _)
    };
    dev.profile_mark(|| format!("cublas gemm {} batch {batch} m {m} n {n} k {k}", dtype.name()));
    dev.bind()?;
    let handle = dev.blas();
    // SAFETY: pointers and strides describe memory inside live buffers (the
    // callers derive them from validated layouts); alpha/beta outlive the call.
    unsafe {
        blas::gemm_strided_batched_ex(
            *handle.handle(),
            op_b,
            op_a,
            to_i32("n", n)?,
            to_i32("m", m)?,
            to_i32("k", k)?,
            alpha_p,
            b.ptr as *const c_void,
            data_type,
            to_i32("ldb", ld_b)?,
            (b.batch_stride * if batch > 1 { 1 } else { 0 }) as i64,
            a.ptr as *const c_void,
            data_type,
            to_i32("lda", ld_a)?,
            (a.batch_stride * if batch > 1 { 1 } else { 0 }) as i64,
            beta_p,
            c as *mut c_void,
            data_type,
            to_i32("ldc", n)?,
            c_batch_stride as i64,
            to_i32("batch", batch)?,
            compute,
            cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    }
    .ctx("cuBLAS GemmStridedBatchedEx")?;
    Ok(())
}

/// The trait's matmul: operands are [batch, rows, cols] views.
pub(crate) fn matmul(a: &CudaStorage, al: &Layout, b: &CudaStorage, bl: &Layout, d: MatmulDims) -> Result<CudaStorage> {
    super::elementwise::same_dtype("matmul", a, b)?;
    let dev = a.device();
    let out = if d.k == 0 { dev.zeros(d.batch * d.m * d.n, a.dtype)? } else { dev.alloc(d.batch * d.m * d.n, a.dtype)? };
    if d.k == 0 || d.batch * d.m * d.n == 0 {
        return Ok(out);
    }
    // Operands cuBLAS cannot read as they are are made contiguous first;
    // `copies` keeps those alive until the product is enqueued.
    let mut copies = Vec::new();
    let mut operand = |s: &CudaStorage, l: &Layout, rows: usize, cols: usize| -> Result<MatRef> {
        let st = l.strides();
        if blas_readable(rows, cols, st[1], st[2]) {
            return Ok(MatRef { ptr: s.ptr_at(l.offset()), rs: st[1], cs: st[2], batch_stride: st[0] });
        }
        let c = super::copy::cast(s, l, s.dtype)?;
        let r = MatRef { ptr: c.ptr(), rs: cols, cs: 1, batch_stride: rows * cols };
        copies.push(c);
        Ok(r)
    };
    let ar = operand(a, al, d.m, d.k)?;
    let br = operand(b, bl, d.k, d.n)?;
    gemm(dev, a.dtype, d.batch, (d.m, d.n, d.k), ar, br, out.ptr(), d.m * d.n, 0.0)?;
    Ok(out)
}
