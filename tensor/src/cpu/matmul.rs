//! Matrix products through the `gemm` crate.
//!
//! `gemm` takes arbitrary row and column strides, so transposed or sliced
//! operands need no copy: the layout's strides go straight in.
//!
//! CUDA twin: `cuda/matmul.rs` (cuBLAS; no kernel file).

use super::allocator::zeros;
use super::float::Float;
use crate::backend::MatmulDims;
use crate::Layout;
use rayon::prelude::*;

/// One strided matrix operand: `data[offset + i * row_stride + j * col_stride]`.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a, T> {
    pub data: &'a [T],
    pub offset: usize,
    pub row_stride: isize,
    pub col_stride: isize,
}

/// `dst[m, n] (+)= lhs[m, k] @ rhs[k, n]`, with `dst` contiguous row-major.
/// When `accumulate` is true the product is added to what `dst` holds.
pub fn gemm<T: Float>(
    m: usize,
    n: usize,
    k: usize,
    lhs: MatRef<'_, T>,
    rhs: MatRef<'_, T>,
    dst: &mut [T],
    accumulate: bool,
    threads: usize,
) {
    assert!(dst.len() >= m * n, "gemm destination too small");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(T::ZERO);
        }
        return;
    }
    let parallelism = if threads > 1 && m * n * k >= 64 * 64 * 64 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: every pointer below stays inside its slice, because the layouts
    // were validated when the views were created, and `dst` holds m*n values.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr().add(lhs.offset),
            lhs.col_stride,
            lhs.row_stride,
            rhs.data.as_ptr().add(rhs.offset),
            rhs.col_stride,
            rhs.row_stride,
            // gemm computes dst = alpha * dst + beta * lhs @ rhs.
            if accumulate { T::ONE } else { T::ZERO },
            T::ONE,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// Contiguous row-major `a[m,k] @ b[k,n]` into a fresh vector; the common case.
pub fn matmul_contiguous<T: Float>(a: &[T], b: &[T], m: usize, k: usize, n: usize) -> Vec<T> {
    let mut out = zeros(m * n);
    gemm(
        m,
        n,
        k,
        MatRef { data: a, offset: 0, row_stride: k as isize, col_stride: 1 },
        MatRef { data: b, offset: 0, row_stride: n as isize, col_stride: 1 },
        &mut out,
        false,
        rayon::current_num_threads(),
    );
    out
}

/// `dims.batch` products; operands are [batch, rows, cols] views whose
/// strides go straight to `gemm` (transposes cost nothing).
pub(super) fn batched_matmul<T: Float>(a: &[T], al: &Layout, b: &[T], bl: &Layout, d: MatmulDims) -> Vec<T> {
    let mut out = zeros(d.batch * d.m * d.n);
    let (as_, bs) = (al.strides(), bl.strides());
    let operand = |data, l: &Layout, s: &[usize], i: usize| MatRef {
        data,
        offset: l.offset() + i * s[0],
        row_stride: s[1] as isize,
        col_stride: s[2] as isize,
    };
    let threads = rayon::current_num_threads();
    let per_product = d.m * d.n * d.k;
    if d.batch > 1 && per_product < 256 * 256 * 256 {
        // Many small products: one thread each beats splitting each one.
        out.par_chunks_mut((d.m * d.n).max(1)).enumerate().for_each(|(i, dst)| {
            gemm(d.m, d.n, d.k, operand(a, al, as_, i), operand(b, bl, bs, i), dst, false, 1);
        });
    } else {
        for (i, dst) in out.chunks_mut((d.m * d.n).max(1)).enumerate().take(d.batch) {
            gemm(d.m, d.n, d.k, operand(a, al, as_, i), operand(b, bl, bs, i), dst, false, threads);
        }
    }
    out
}
