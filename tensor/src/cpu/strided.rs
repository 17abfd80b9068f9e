//! Walking strided layouts on the CPU.
//!
//! A strided operand is walked with `StridedRows`: the iteration dims are
//! coalesced first (see `shape::coalesce`), so the inner loop runs over the
//! longest possible stretch and the index arithmetic happens once per row.
//!
//! CUDA twin: `cuda/strided.rs` (the same walk, as a kernel argument).

use super::PARALLEL_THRESHOLD;
use crate::shape::coalesce;
use crate::Layout;
use rayon::prelude::*;

/// The contiguous elements of a layout known to be contiguous.
pub(crate) fn contiguous_slice<'a, T>(data: &'a [T], layout: &Layout) -> &'a [T] {
    debug_assert!(layout.is_contiguous());
    &data[layout.offset()..layout.offset() + layout.elem_count()]
}

/// Calls `f(row, offsets, run_len, run_strides)` for every innermost run of an
/// iteration over `dims` in which operand `k` starts at `offsets[k]`. Rows are
/// numbered in row-major order; each row holds `run_len` output elements.
pub(crate) struct StridedRows {
    pub outer_dims: Vec<usize>,
    pub outer_strides: Vec<Vec<usize>>,
    pub run_len: usize,
    pub run_strides: Vec<usize>,
    pub base: Vec<usize>,
}

impl StridedRows {
    pub fn new(dims: &[usize], layouts: &[&Layout]) -> Self {
        let strides: Vec<&[usize]> = layouts.iter().map(|l| l.strides()).collect();
        let (mut cdims, mut cstrides) = coalesce(dims, &strides);
        let run_len = cdims.pop().unwrap();
        let run_strides = cstrides.iter_mut().map(|s| s.pop().unwrap()).collect();
        StridedRows {
            outer_dims: cdims,
            outer_strides: cstrides,
            run_len,
            run_strides,
            base: layouts.iter().map(|l| l.offset()).collect(),
        }
    }

    pub fn rows(&self) -> usize {
        self.outer_dims.iter().product()
    }

    /// Storage offset of operand `k` at the start of `row`.
    #[inline]
    pub fn offset(&self, k: usize, mut row: usize) -> usize {
        let mut off = self.base[k];
        for d in (0..self.outer_dims.len()).rev() {
            let n = self.outer_dims[d];
            off += (row % n) * self.outer_strides[k][d];
            row /= n;
        }
        off
    }
}

/// Fills `out` (contiguous, one row of `rows.run_len` per chunk) in parallel
/// when large, calling `fill(row, out_row)`.
pub(crate) fn fill_rows<U: Send>(out: &mut [U], run_len: usize, fill: impl Fn(usize, &mut [U]) + Sync) {
    if out.is_empty() {
        return;
    }
    if out.len() >= PARALLEL_THRESHOLD {
        let rows_per_task = (PARALLEL_THRESHOLD / run_len).max(1);
        out.par_chunks_mut(rows_per_task * run_len).enumerate().for_each(|(task, chunk)| {
            for (i, row) in chunk.chunks_mut(run_len).enumerate() {
                fill(task * rows_per_task + i, row);
            }
        });
    } else {
        for (r, row) in out.chunks_mut(run_len).enumerate() {
            fill(r, row);
        }
    }
}
