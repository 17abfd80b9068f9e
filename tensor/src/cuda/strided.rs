//! Kernel arguments that describe strided walks (`Strided`).
//!
//! A strided tensor reaches a kernel as a base address (layout offset
//! already added) and a `Strided` struct passed by value: the iteration dims
//! after `coalesce` (neighbouring dims merged wherever every operand allows,
//! so a contiguous tensor is one dim) and each operand's strides. The struct
//! has the exact layout of `struct Strided` in `common.cuh`. Indices are
//! 32-bit there, so everything is range-checked here.
//!
//! CPU twin: `cpu/strided.rs` (the same walk, as an iterator of rows).

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
pub(crate) fn check_span(op: &'static str, l: &Layout) -> Result<()> {
    let span = l.storage_span().saturating_sub(l.offset());
    check_u32(op, span).map(|_| ())
}

pub(crate) fn too_many_dims(op: &'static str, rank: usize) -> Error {
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
