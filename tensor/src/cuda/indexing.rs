//! Kernel arguments that describe strided walks.
//!
//! A strided tensor reaches a kernel as a base address (layout offset
//! already added) and a `Strided` struct passed by value: the iteration dims
//! after `coalesce` (neighbouring dims merged wherever every operand allows,
//! so a contiguous tensor is one dim) and each operand's strides. The struct
//! has the exact layout of `struct Strided` in `common.cuh`. Indices are
//! 32-bit there, so everything is range-checked here.

use super::check_u32;
use crate::shape::coalesce;
use crate::{Error, Layout, Result};
use cudarc::driver::DeviceRepr;

pub(crate) const MAX_DIMS: usize = 8;
pub(crate) const MAX_OPERANDS: usize = 3;

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Strided {
    rank: u32,
    dims: [u32; MAX_DIMS],
    strides: [[u32; MAX_DIMS]; MAX_OPERANDS],
}

// SAFETY: plain `#[repr(C)]` integers matching `struct Strided` in common.cuh.
unsafe impl DeviceRepr for Strided {}

/// The largest element offset a layout reaches from its own offset, which
/// must fit the kernels' 32-bit offsets.
fn check_span(op: &'static str, l: &Layout) -> Result<()> {
    let span = l.storage_span().saturating_sub(l.offset());
    check_u32(op, span).map(|_| ())
}

fn too_many_dims(op: &'static str, rank: usize) -> Error {
    Error::BadArgument {
        op,
        msg: format!("the CUDA backend walks at most {MAX_DIMS} strided dims, and this view needs {rank}"),
    }
}

impl Strided {
    /// A walk over `dims` in row-major order for each layout in `layouts`
    /// (all of that shape, already broadcast).
    pub fn new(op: &'static str, dims: &[usize], layouts: &[&Layout]) -> Result<Strided> {
        assert!(layouts.len() <= MAX_OPERANDS);
        for l in layouts {
            check_span(op, l)?;
        }
        let strides: Vec<&[usize]> = layouts.iter().map(|l| l.strides()).collect();
        let (cdims, cstrides) = coalesce(dims, &strides);
        if cdims.len() > MAX_DIMS {
            return Err(too_many_dims(op, cdims.len()));
        }
        let mut s = Strided { rank: cdims.len() as u32, ..Default::default() };
        for (d, &n) in cdims.iter().enumerate() {
            s.dims[d] = check_u32(op, n)?;
            for (k, st) in cstrides.iter().enumerate() {
                s.strides[k][d] = check_u32(op, st[d])?;
            }
        }
        Ok(s)
    }
}

/// The walk of a reduction: kept dims (one output each) and reduced dims
/// (folded into one output), matching `struct ReduceIndex` in reduce.cu.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ReduceIndex {
    pub out_rank: u32,
    pub out_dims: [u32; MAX_DIMS],
    pub out_strides: [u32; MAX_DIMS],
    pub red_rank: u32,
    pub red_dims: [u32; MAX_DIMS],
    pub red_strides: [u32; MAX_DIMS],
}

// SAFETY: plain `#[repr(C)]` integers matching `struct ReduceIndex`.
unsafe impl DeviceRepr for ReduceIndex {}

/// What the host needs to know about a reduction besides the kernel argument.
pub(crate) struct ReducePlan {
    pub index: ReduceIndex,
    pub outputs: usize,
    pub row_len: usize,
    /// Stride of the innermost reduced dim (1: rows are contiguous).
    pub inner_stride: usize,
}

impl ReducePlan {
    pub fn new(op: &'static str, layout: &Layout, axes: &[usize]) -> Result<ReducePlan> {
        check_span(op, layout)?;
        let (dims, strides) = (layout.dims(), layout.strides());
        let kept: Vec<usize> = (0..dims.len()).filter(|d| !axes.contains(d)).collect();
        let pick = |list: &[usize]| -> (Vec<usize>, Vec<usize>) {
            (list.iter().map(|&d| dims[d]).collect(), list.iter().map(|&d| strides[d]).collect())
        };
        let (kd, ks) = pick(&kept);
        let (rd, rs) = pick(axes);
        let (kd, ks) = coalesce(&kd, &[&ks]);
        let (rd, rs) = coalesce(&rd, &[&rs]);
        if kd.len() > MAX_DIMS || rd.len() > MAX_DIMS {
            return Err(too_many_dims(op, kd.len().max(rd.len())));
        }
        let mut index = ReduceIndex { out_rank: kd.len() as u32, red_rank: rd.len() as u32, ..Default::default() };
        for (d, &n) in kd.iter().enumerate() {
            index.out_dims[d] = check_u32(op, n)?;
            index.out_strides[d] = check_u32(op, ks[0][d])?;
        }
        for (d, &n) in rd.iter().enumerate() {
            index.red_dims[d] = check_u32(op, n)?;
            index.red_strides[d] = check_u32(op, rs[0][d])?;
        }
        let outputs = kept.iter().map(|&d| dims[d]).product();
        let row_len = axes.iter().map(|&d| dims[d]).product();
        let inner_stride = *rs[0].last().unwrap();
        Ok(ReducePlan { index, outputs, row_len, inner_stride })
    }
}
