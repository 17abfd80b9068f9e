//! Reductions over any set of axes.
//!
//! The reduced axes are moved to the end (a view), the view is gathered into
//! contiguous rows when it isn't already, and each output element reduces
//! one contiguous row. Sums accumulate in f64 so that large f32 reductions
//! stay accurate.
//!
//! CUDA twin: `cuda/reduce.rs` (launches) and `cuda/reduce.cu` (kernels).

use super::copy::gather;
use super::float::Float;
use super::strided::StridedRows;
use super::PARALLEL_THRESHOLD;
use crate::backend::ReduceOp;
use crate::Layout;
use rayon::prelude::*;

/// The layout with kept axes first and reduced axes last, and the length of
/// one reduced row.
fn rows_layout(layout: &Layout, axes: &[usize]) -> (Layout, usize) {
    let kept = (0..layout.dims().len()).filter(|d| !axes.contains(d));
    let order: Vec<usize> = kept.chain(axes.iter().copied()).collect();
    let row_len = axes.iter().map(|&a| layout.dims()[a]).product();
    (layout.permute(&order), row_len)
}

fn for_each_row<T: Float, U: Send + Copy + Default>(v: &[T], layout: &Layout, axes: &[usize], f: impl Fn(&[T]) -> U + Sync) -> Vec<U> {
    let (permuted, row_len) = rows_layout(layout, axes);
    let owned;
    let data: &[T] = if permuted.is_contiguous() {
        &v[permuted.offset()..permuted.offset() + permuted.elem_count()]
    } else {
        owned = gather(v, &permuted);
        &owned
    };
    if row_len == 0 {
        let rows = (0..layout.dims().len()).filter(|d| !axes.contains(d)).map(|d| layout.dims()[d]).product();
        return vec![f(&[]); rows];
    }
    if data.len() >= PARALLEL_THRESHOLD {
        data.par_chunks(row_len).map(&f).collect()
    } else {
        data.chunks(row_len).map(&f).collect()
    }
}

/// The sum of `row` in f64, over 8 interleaved partial sums: one running
/// sum is a chain of dependent adds (4 cycles each); eight independent ones
/// vectorise and overlap. Compiled for AVX2 too, picked at run time (the
/// baseline build would add two f64 at a time): the bias gradients sum
/// every activation this way.
#[inline]
fn sum_f64<T: Float>(row: &[T]) -> f64 {
    super::simd::avx2_dispatch!(sum_f64_in<T: Float>(row: &[T]) -> f64)
}

#[inline(always)]
fn sum_f64_in<T: Float>(row: &[T]) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = row.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().map(|x| x.to_f64()).sum();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x.to_f64();
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// A sum whose reduced axes are not one contiguous row per output (the
/// bias gradient of a convolution sums [N, C, H, W] over N, H and W): each
/// output adds up its strided runs in place, instead of gathering the
/// whole input into rows first.
fn sum_strided<T: Float>(v: &[T], layout: &Layout, axes: &[usize]) -> Vec<T> {
    let (permuted, _) = rows_layout(layout, axes);
    let kept = layout.dims().len() - axes.len();
    let (dims, strides) = (permuted.dims(), permuted.strides());
    let reduced = Layout::new(dims[kept..].to_vec().into(), strides[kept..].to_vec(), 0);
    let runs = StridedRows::new(reduced.dims(), &[&reduced]);
    let (run_len, run_stride) = (runs.run_len, runs.run_strides[0]);
    let outputs: usize = dims[..kept].iter().product();
    let one = |o: usize| {
        let (mut base, mut rest) = (permuted.offset(), o);
        for d in (0..kept).rev() {
            base += (rest % dims[d]) * strides[d];
            rest /= dims[d];
        }
        let mut total = 0.0;
        for r in 0..runs.rows() {
            let off = base + runs.offset(0, r);
            total += if run_stride == 1 {
                sum_f64(&v[off..off + run_len])
            } else {
                (0..run_len).map(|i| v[off + i * run_stride].to_f64()).sum()
            };
        }
        T::from_f64(total)
    };
    if layout.elem_count() >= PARALLEL_THRESHOLD {
        (0..outputs).into_par_iter().map(one).collect()
    } else {
        (0..outputs).map(one).collect()
    }
}

pub fn reduce<T: Float>(v: &[T], layout: &Layout, axes: &[usize], op: ReduceOp) -> Vec<T> {
    match op {
        ReduceOp::Sum if !axes.is_empty() && !rows_layout(layout, axes).0.is_contiguous() && layout.elem_count() > 0 => {
            sum_strided(v, layout, axes)
        }
        ReduceOp::Sum => for_each_row(v, layout, axes, |row| T::from_f64(sum_f64(row))),
        ReduceOp::Max => for_each_row(v, layout, axes, |row| {
            // NaN propagates, as in PyTorch.
            row.iter().fold(T::NEG_INFINITY, |m, &x| if m.is_nan() || !(x.is_nan() || x > m) { m } else { x })
        }),
        ReduceOp::Min => for_each_row(v, layout, axes, |row| {
            row.iter().fold(T::INFINITY, |m, &x| if m.is_nan() || !(x.is_nan() || x < m) { m } else { x })
        }),
        ReduceOp::ArgMax => unreachable!("argmax has its own entry point"),
    }
}

pub fn argmax<T: Float>(v: &[T], layout: &Layout, axes: &[usize]) -> Vec<u32> {
    for_each_row(v, layout, axes, |row| {
        let mut best = 0;
        for (i, &x) in row.iter().enumerate() {
            if x > row[best] || (x.is_nan() && !row[best].is_nan()) {
                best = i;
            }
        }
        best as u32
    })
}
