//! Index selection along one dim (embedding lookups) and its adjoint, the
//! scatter-add that carries gradients back to the selected rows.
//!
//! CUDA twin: `cuda/index_select.rs` (launches) and `cuda/index_select.cu` (kernels).

use crate::{Error, Result};

pub fn check_bounds(op: &'static str, idx: &[u32], size: usize) -> Result<()> {
    if let Some(&bad) = idx.iter().find(|&&i| i as usize >= size) {
        return Err(Error::BadArgument { op, msg: format!("index {bad} is out of range for a dim of size {size}") });
    }
    Ok(())
}

/// `src` is contiguous with shape `dims`; the output has `dims[dim]`
/// replaced by `idx.len()`.
pub fn index_select<T: Copy>(src: &[T], dims: &[usize], idx: &[u32], dim: usize) -> Vec<T> {
    let outer: usize = dims[..dim].iter().product();
    let inner: usize = dims[dim + 1..].iter().product();
    let mut out = Vec::with_capacity(outer * idx.len() * inner);
    for o in 0..outer {
        for &i in idx {
            let start = (o * dims[dim] + i as usize) * inner;
            out.extend_from_slice(&src[start..start + inner]);
        }
    }
    out
}

/// `dst` (contiguous, shape `dims`) gets `src` rows added at `idx` along `dim`.
pub fn index_add<T: super::float::Float>(dst: &mut [T], dims: &[usize], idx: &[u32], src: &[T], dim: usize) {
    let outer: usize = dims[..dim].iter().product();
    let inner: usize = dims[dim + 1..].iter().product();
    for o in 0..outer {
        for (j, &i) in idx.iter().enumerate() {
            let d = (o * dims[dim] + i as usize) * inner;
            let s = (o * idx.len() + j) * inner;
            for k in 0..inner {
                dst[d + k] += src[s + k];
            }
        }
    }
}
