//! Fused Adam/AdamW and EMA updates (kernels in `optim.cu`): each element of
//! parameter, gradient and moments is read once and written once.
//!
//! CPU twin: `cpu/optim.rs`.

use super::elementwise::{float_only, same_dtype};
use super::{check_u32, launch_cfg, CudaResultExt, CudaStorage};
use crate::backend::AdamStep;
use crate::{Error, Result};
use cudarc::driver::{DeviceRepr, PushKernelArg};

/// Matches `struct AdamArgs` in optim.cu; derived from `AdamStep` the way
/// the CPU backend derives its scalars.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct AdamArgs {
    beta1: f64,
    beta2: f64,
    step_size: f64,
    bc2_sqrt: f64,
    eps: f64,
    weight_decay: f64,
    decay: f64,
}
// SAFETY: `#[repr(C)]` doubles.
unsafe impl DeviceRepr for AdamArgs {}

fn same_len(op: &'static str, a: &CudaStorage, b: &CudaStorage) -> Result<()> {
    if a.len != b.len {
        return Err(Error::BadArgument { op, msg: format!("buffers of {} and {} elements", a.len, b.len) });
    }
    Ok(())
}

pub(crate) fn adam(p: &mut CudaStorage, g: &CudaStorage, m: &mut CudaStorage, v: &mut CudaStorage, s: &AdamStep) -> Result<()> {
    const OP: &str = "adam";
    for other in [g, &*m, &*v] {
        same_dtype(OP, p, other)?;
        same_len(OP, p, other)?;
    }
    float_only(OP, p.dtype)?;
    if p.len == 0 {
        return Ok(());
    }
    let args = AdamArgs {
        beta1: s.beta1,
        beta2: s.beta2,
        step_size: s.lr / s.bias_correction1,
        bc2_sqrt: s.bias_correction2.sqrt(),
        eps: s.eps,
        weight_decay: s.weight_decay,
        decay: 1.0 - s.lr * s.decoupled_decay,
    };
    let n32 = check_u32(OP, p.len)?;
    let dev = p.device().clone();
    let f = dev.func("optim", &format!("adam_{}", p.dtype.name()))?;
    let (pp, gp, mp, vp) = (p.ptr(), g.ptr(), m.ptr(), v.ptr());
    let mut b = dev.stream().launch_builder(&f);
    b.arg(&pp).arg(&gp).arg(&mp).arg(&vp).arg(&args).arg(&n32);
    // SAFETY: four buffers of n elements each.
    unsafe { b.launch(launch_cfg(p.len)) }.ctx("adam kernel").map(|_| ())
}

pub(crate) fn ema(avg: &mut CudaStorage, src: &CudaStorage, decay: f64) -> Result<()> {
    const OP: &str = "ema";
    same_dtype(OP, avg, src)?;
    same_len(OP, avg, src)?;
    float_only(OP, avg.dtype)?;
    if avg.len == 0 {
        return Ok(());
    }
    let n32 = check_u32(OP, avg.len)?;
    let dev = avg.device().clone();
    let f = dev.func("optim", &format!("ema_{}", avg.dtype.name()))?;
    let (ap, sp) = (avg.ptr(), src.ptr());
    let mut b = dev.stream().launch_builder(&f);
    b.arg(&ap).arg(&sp).arg(&decay).arg(&n32);
    // SAFETY: two buffers of n elements.
    unsafe { b.launch(launch_cfg(avg.len)) }.ctx("ema kernel").map(|_| ())
}
