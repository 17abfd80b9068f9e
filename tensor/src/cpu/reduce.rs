//! Reductions over any set of axes.
//!
//! The reduced axes are moved to the end (a view), the view is gathered into
//! contiguous rows when it isn't already, and each output element reduces
//! one contiguous row. Sums accumulate in f64 so that large f32 reductions
//! stay accurate.

use super::{float::Float, gather, PARALLEL_THRESHOLD};
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

pub fn reduce<T: Float>(v: &[T], layout: &Layout, axes: &[usize], op: ReduceOp) -> Vec<T> {
    match op {
        ReduceOp::Sum => for_each_row(v, layout, axes, |row| T::from_f64(row.iter().map(|x| x.to_f64()).sum::<f64>())),
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
