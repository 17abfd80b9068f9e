//! Average and max pooling, forward and backward (kernels in `pool.cu`).
//!
//! Forward kernels run one thread per output pixel; backward kernels one
//! thread per input pixel gathering from the windows that cover it, so they
//! need no atomics and give the same result on every run.
//!
//! CPU twin: `cpu/pool.rs`.

use super::elementwise::{float_only, same_dtype};
use super::{check_u32, launch_cfg, CudaResultExt, CudaStorage};
use crate::backend::Pool2dParams;
use crate::{Error, Layout, Result};
use cudarc::driver::{DeviceRepr, PushKernelArg};

/// Matches `struct PoolGeom` in pool.cu.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct PoolGeom {
    planes: u32,
    h: u32,
    w: u32,
    k: u32,
    stride: u32,
    oh: u32,
    ow: u32,
}
// SAFETY: plain `#[repr(C)]` integers.
unsafe impl DeviceRepr for PoolGeom {}

fn geom(op: &'static str, p: &Pool2dParams) -> Result<PoolGeom> {
    if p.kernel == 0 || p.stride == 0 || p.kernel > p.in_h || p.kernel > p.in_w {
        return Err(Error::BadArgument { op, msg: format!("invalid pooling parameters {p:?}") });
    }
    Ok(PoolGeom {
        planes: check_u32(op, p.batch * p.channels)?,
        h: check_u32(op, p.in_h)?,
        w: check_u32(op, p.in_w)?,
        k: check_u32(op, p.kernel)?,
        stride: check_u32(op, p.stride)?,
        oh: check_u32(op, p.out_h())?,
        ow: check_u32(op, p.out_w())?,
    })
}

/// Launches `kernel` over `n` threads with `inputs` (addresses) then the output.
fn run(op: &'static str, kernel: &str, first: &CudaStorage, inputs: &[u64], out_len: usize, p: &Pool2dParams) -> Result<CudaStorage> {
    float_only(op, first.dtype)?;
    let g = geom(op, p)?;
    let dev = first.device();
    let out = dev.alloc(out_len, first.dtype)?;
    if out_len == 0 {
        return Ok(out);
    }
    let n32 = check_u32(op, out_len)?;
    let f = dev.func("pool", &format!("{kernel}_{}", first.dtype.name()))?;
    let yp = out.ptr();
    let mut b = dev.stream().launch_builder(&f);
    for ptr in inputs {
        b.arg(ptr);
    }
    b.arg(&yp).arg(&g).arg(&n32);
    // SAFETY: inputs are contiguous NCHW tensors of the sizes in g.
    unsafe { b.launch(launch_cfg(out_len)) }.ctx("pooling kernel")?;
    Ok(out)
}

fn contiguous(op: &'static str, l: &Layout) -> Result<()> {
    if !l.is_contiguous() {
        return Err(Error::BadShape { op, shape: l.shape().clone(), msg: "expects a contiguous input".into() });
    }
    Ok(())
}

fn out_len(p: &Pool2dParams) -> usize {
    p.batch * p.channels * p.out_h() * p.out_w()
}

fn in_len(p: &Pool2dParams) -> usize {
    p.batch * p.channels * p.in_h * p.in_w
}

pub(crate) fn avg_pool2d(x: &CudaStorage, l: &Layout, p: &Pool2dParams) -> Result<CudaStorage> {
    contiguous("avg_pool2d", l)?;
    geom("avg_pool2d", p)?;
    run("avg_pool2d", "avg_pool", x, &[x.ptr_at(l.offset())], out_len(p), p)
}

pub(crate) fn avg_pool2d_backward(g: &CudaStorage, gl: &Layout, p: &Pool2dParams) -> Result<CudaStorage> {
    contiguous("avg_pool2d backward", gl)?;
    geom("avg_pool2d backward", p)?;
    run("avg_pool2d backward", "avg_pool_backward", g, &[g.ptr_at(gl.offset())], in_len(p), p)
}

pub(crate) fn max_pool2d(x: &CudaStorage, l: &Layout, p: &Pool2dParams) -> Result<CudaStorage> {
    contiguous("max_pool2d", l)?;
    geom("max_pool2d", p)?;
    run("max_pool2d", "max_pool", x, &[x.ptr_at(l.offset())], out_len(p), p)
}

pub(crate) fn max_pool2d_backward(x: &CudaStorage, l: &Layout, g: &CudaStorage, gl: &Layout, p: &Pool2dParams) -> Result<CudaStorage> {
    same_dtype("max_pool2d backward", x, g)?;
    contiguous("max_pool2d backward", l)?;
    contiguous("max_pool2d backward", gl)?;
    geom("max_pool2d backward", p)?;
    run("max_pool2d backward", "max_pool_backward", x, &[x.ptr_at(l.offset()), g.ptr_at(gl.offset())], in_len(p), p)
}
