//! Nearest-neighbour up-sampling by integer factors and its backward
//! (kernels in `upsample.cu`): one thread per output pixel forward, one per
//! input pixel backward (summing its block), so no atomics are needed.
//!
//! CPU twin: `cpu/upsample.rs`.

use super::elementwise::float_only;
use super::{check_u32, launch_cfg, CudaResultExt, CudaStorage};
use crate::{Error, Layout, Result};
use cudarc::driver::{DeviceRepr, PushKernelArg};

/// Matches `struct UpGeom` in upsample.cu.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct UpGeom {
    h: u32,
    w: u32,
    sh: u32,
    sw: u32,
}
// SAFETY: plain `#[repr(C)]` integers.
unsafe impl DeviceRepr for UpGeom {}

fn run(
    op: &'static str,
    kernel: &str,
    x: &CudaStorage,
    l: &Layout,
    dims: (usize, usize, usize, usize),
    scale: (usize, usize),
    out_len: usize,
) -> Result<CudaStorage> {
    float_only(op, x.dtype)?;
    if !l.is_contiguous() {
        return Err(Error::BadShape { op, shape: l.shape().clone(), msg: "expects a contiguous input".into() });
    }
    if scale.0 == 0 || scale.1 == 0 {
        return Err(Error::BadArgument { op, msg: format!("scale factors must be at least 1, got {scale:?}") });
    }
    let g = UpGeom { h: check_u32(op, dims.2)?, w: check_u32(op, dims.3)?, sh: check_u32(op, scale.0)?, sw: check_u32(op, scale.1)? };
    let dev = x.device();
    let out = dev.alloc(out_len, x.dtype)?;
    if out_len == 0 {
        return Ok(out);
    }
    let n32 = check_u32(op, out_len)?;
    let f = dev.func("upsample", &format!("{kernel}_{}", x.dtype.name()))?;
    let (xp, yp) = (x.ptr_at(l.offset()), out.ptr());
    let mut b = dev.stream().launch_builder(&f);
    b.arg(&xp).arg(&yp).arg(&g).arg(&n32);
    // SAFETY: x is contiguous NCHW of the given dims; the output has out_len elements.
    unsafe { b.launch(launch_cfg(out_len)) }.ctx("upsample kernel")?;
    Ok(out)
}

pub(crate) fn upsample_nearest2d(x: &CudaStorage, l: &Layout, d: (usize, usize, usize, usize), s: (usize, usize)) -> Result<CudaStorage> {
    run("upsample_nearest2d", "upsample", x, l, d, s, d.0 * d.1 * d.2 * s.0 * d.3 * s.1)
}

pub(crate) fn upsample_nearest2d_backward(g: &CudaStorage, gl: &Layout, d: (usize, usize, usize, usize), s: (usize, usize)) -> Result<CudaStorage> {
    run("upsample_nearest2d backward", "upsample_backward", g, gl, d, s, d.0 * d.1 * d.2 * d.3)
}
