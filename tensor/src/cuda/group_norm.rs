//! Group normalisation, forward and fused backward (kernels in
//! `group_norm.cu`): one 256-thread block per (image, group) slice, which is
//! contiguous in NCHW; statistics are shifted double sums, as on the CPU.
//!
//! `group_norm_silu` and its backward are the same kernels with SiLU fused
//! in (a template flag in the .cu). **Not the default:** the fused kernels
//! have not run on a GPU yet, so unless `PETAL_CUDA_FUSED_NORM=1` the op is
//! composed of the plain group-norm kernels and the SiLU ones (the backward
//! rebuilds the SiLU's input with one more forward kernel). The variable is
//! read once per process; `0` or unset is the composed path, anything else
//! an error naming it.
//!
//! CPU twin: `cpu/group_norm.rs`.

use super::elementwise::{self, float_only, same_dtype};
use super::{check_u32, launch_cfg, CudaResultExt, CudaStorage};
use crate::backend::{BackendStorage, GroupNormParams, UnaryOp};
use crate::{Error, Layout, Result};
use cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
use std::sync::OnceLock;

const GN_BLOCK: u32 = 256;

/// The environment variable that turns on the fused GroupNorm + SiLU kernels.
pub const FUSED_NORM_VAR: &str = "PETAL_CUDA_FUSED_NORM";

/// True when `PETAL_CUDA_FUSED_NORM=1` (read once per process).
fn fused_selected() -> Result<bool> {
    static CHOICE: OnceLock<std::result::Result<bool, String>> = OnceLock::new();
    CHOICE
        .get_or_init(|| match std::env::var(FUSED_NORM_VAR).ok().as_deref() {
            None | Some("") | Some("0") => Ok(false),
            Some("1") => Ok(true),
            Some(other) => Err(format!("{FUSED_NORM_VAR}={other:?}: use 1 (the fused GroupNorm + SiLU kernels) or 0 (the default)")),
        })
        .clone()
        .map_err(Error::Cuda)
}

/// Matches `struct GnGeom` in group_norm.cu.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct GnGeom {
    batch: u32,
    channels: u32,
    spatial: u32,
    groups: u32,
    eps: f64,
}
// SAFETY: `#[repr(C)]` numbers with the C struct's layout.
unsafe impl DeviceRepr for GnGeom {}

fn geom(op: &'static str, p: &GroupNormParams) -> Result<GnGeom> {
    if p.groups == 0 || !p.channels.is_multiple_of(p.groups) {
        return Err(Error::BadArgument { op, msg: format!("{} channels do not split into {} groups", p.channels, p.groups) });
    }
    check_u32(op, p.batch * p.channels * p.spatial)?;
    Ok(GnGeom {
        batch: check_u32(op, p.batch)?,
        channels: check_u32(op, p.channels)?,
        spatial: check_u32(op, p.spatial)?,
        groups: check_u32(op, p.groups)?,
        eps: p.eps,
    })
}

fn blocks(n: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: (n as u32, 1, 1), block_dim: (GN_BLOCK, 1, 1), shared_mem_bytes: 0 }
}

fn contiguous(op: &'static str, l: &Layout) -> Result<()> {
    if !l.is_contiguous() {
        return Err(Error::BadShape { op, shape: l.shape().clone(), msg: "expects a contiguous input".into() });
    }
    Ok(())
}

/// `group_norm`, or with `with_silu` `group_norm_silu`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn group_norm(
    x: &CudaStorage,
    xl: &Layout,
    gamma: &CudaStorage,
    gl: &Layout,
    beta: &CudaStorage,
    bl: &Layout,
    p: &GroupNormParams,
    with_silu: bool,
) -> Result<(CudaStorage, CudaStorage, CudaStorage)> {
    if with_silu && !fused_selected()? {
        let (y, mean, rstd) = group_norm(x, xl, gamma, gl, beta, bl, p, false)?;
        let y = elementwise::unary(&y, &Layout::contiguous(xl.shape().clone()), UnaryOp::Silu)?;
        return Ok((y, mean, rstd));
    }
    const OP: &str = "group_norm";
    same_dtype(OP, x, gamma)?;
    same_dtype(OP, x, beta)?;
    float_only(OP, x.dtype)?;
    for l in [xl, gl, bl] {
        contiguous(OP, l)?;
    }
    let g = geom(OP, p)?;
    let (dev, dt) = (x.device(), x.dtype);
    let ng = p.batch * p.groups;
    let y = dev.alloc(p.batch * p.channels * p.spatial, dt)?;
    let mean = dev.alloc(ng, dt)?;
    let rstd = dev.alloc(ng, dt)?;
    if ng == 0 {
        return Ok((y, mean, rstd));
    }
    let kernel = if with_silu { "group_norm_silu" } else { "group_norm" };
    let f = dev.func("group_norm", &format!("{kernel}_{}", dt.name()))?;
    let (xp, gp, bp) = (x.ptr_at(xl.offset()), gamma.ptr_at(gl.offset()), beta.ptr_at(bl.offset()));
    let (yp, mp, rp) = (y.ptr(), mean.ptr(), rstd.ptr());
    let mut b = dev.stream().launch_builder(&f);
    b.arg(&xp).arg(&gp).arg(&bp).arg(&yp).arg(&mp).arg(&rp).arg(&g);
    // SAFETY: each block touches only its own (image, group) slice and stats entry.
    unsafe { b.launch(blocks(ng)) }.ctx("group_norm kernel")?;
    Ok((y, mean, rstd))
}

/// `group_norm_backward`, or with `silu_beta` `group_norm_silu_backward`.
pub(crate) fn group_norm_backward(
    x: &CudaStorage,
    gamma: &CudaStorage,
    silu_beta: Option<&CudaStorage>,
    mean: &CudaStorage,
    rstd: &CudaStorage,
    grad_y: &CudaStorage,
    p: &GroupNormParams,
) -> Result<(CudaStorage, CudaStorage, CudaStorage)> {
    let fused = silu_beta.is_some() && fused_selected()?;
    if let Some(beta) = silu_beta.filter(|_| !fused) {
        let xl = Layout::contiguous([p.batch, p.channels, p.spatial].into());
        let cl = Layout::contiguous([p.channels].into());
        // The SiLU's input, rebuilt: the forward kept only the statistics.
        let (pre, _, _) = group_norm(x, &xl, gamma, &cl, beta, &cl, p, false)?;
        let grad_pre = pre.silu_backward(&xl, grad_y, &xl)?;
        return group_norm_backward(x, gamma, None, mean, rstd, &grad_pre, p);
    }
    const OP: &str = "group_norm backward";
    for other in [gamma, mean, rstd, grad_y].into_iter().chain(silu_beta) {
        same_dtype(OP, x, other)?;
    }
    float_only(OP, x.dtype)?;
    let g = geom(OP, p)?;
    let (dev, dt) = (x.device(), x.dtype);
    let n = p.batch * p.channels * p.spatial;
    let ng = p.batch * p.groups;
    let beta_short = silu_beta.is_some_and(|b| b.len < p.channels);
    if x.len < n || grad_y.len < n || gamma.len < p.channels || beta_short || mean.len < ng || rstd.len < ng {
        return Err(Error::BadArgument { op: OP, msg: "a buffer is smaller than the parameters say".into() });
    }
    let dx = dev.alloc(n, dt)?;
    let dgamma = dev.alloc(p.channels, dt)?;
    let dbeta = dev.alloc(p.channels, dt)?;
    if p.channels == 0 {
        return Ok((dx, dgamma, dbeta));
    }
    // Per (image, channel) sums, folded over images by the second kernel.
    let db_nc = dev.scratch(p.batch * p.channels * 8)?;
    let dg_nc = dev.scratch(p.batch * p.channels * 8)?;
    let (dbp, dgp) = (db_nc.ptr(), dg_nc.ptr());
    if ng > 0 {
        let kernel = if silu_beta.is_some() { "group_norm_silu_backward" } else { "group_norm_backward" };
        let f = dev.func("group_norm", &format!("{kernel}_{}", dt.name()))?;
        let (xp, gp, mp, rp, gyp, dxp) = (x.ptr(), gamma.ptr(), mean.ptr(), rstd.ptr(), grad_y.ptr(), dx.ptr());
        // The plain kernel never reads beta.
        let bp = silu_beta.map_or(0u64, |b| b.ptr());
        let mut b = dev.stream().launch_builder(&f);
        b.arg(&xp).arg(&gp).arg(&bp).arg(&mp).arg(&rp).arg(&gyp).arg(&dxp).arg(&dbp).arg(&dgp).arg(&g);
        // SAFETY: each block touches only its own slice and its channels' sums.
        unsafe { b.launch(blocks(ng)) }.ctx("group_norm backward kernel")?;
    }
    let f = dev.func("group_norm", &format!("group_norm_param_grads_{}", dt.name()))?;
    let (ggp, gbp) = (dgamma.ptr(), dbeta.ptr());
    let mut b = dev.stream().launch_builder(&f);
    b.arg(&dbp).arg(&dgp).arg(&ggp).arg(&gbp).arg(&g.batch).arg(&g.channels);
    // SAFETY: reads batch*channels sums, writes channels values to each output.
    unsafe { b.launch(launch_cfg(p.channels)) }.ctx("group_norm parameter-gradient kernel")?;
    Ok((dx, dgamma, dbeta))
}
