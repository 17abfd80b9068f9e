//! index_select and index_add along one dim (kernels in `index_select.cu`).
//!
//! Both treat the tensor as [outer, dim, inner]. index_add uses atomic adds
//! because several indices may name the same row.
//!
//! Out-of-range indices: the kernels never follow one (memory stays safe)
//! and record the largest in a flag. Checking that flag means waiting for the
//! GPU, so debug builds check it after every call and return the CPU
//! backend's error, while release builds skip the wait (a bad index then
//! selects zeros / adds nothing).
//!
//! CPU twin: `cpu/index_select.rs`.

use super::elementwise::same_dtype;
use super::{check_u32, launch_cfg, CudaDevice, CudaResultExt, CudaStorage};
use crate::{DType, Error, Layout, Result};
use cudarc::driver::PushKernelArg;

fn indices_u32<'a>(op: &'static str, idx: &'a CudaStorage, il: &Layout, keep: &'a mut Option<CudaStorage>) -> Result<u64> {
    if idx.dtype != DType::U32 {
        return Err(Error::UnsupportedDType { op, got: idx.dtype, hint: "; indices must be u32" });
    }
    if il.is_contiguous() {
        return Ok(idx.ptr_at(il.offset()));
    }
    let c = super::copy::cast(idx, il, DType::U32)?;
    let p = c.ptr();
    *keep = Some(c);
    Ok(p)
}

/// In debug builds, reads the bad-index flag and turns it into the CPU backend's error.
fn check_flag(dev: &CudaDevice, op: &'static str, flag: u64, size: usize) -> Result<()> {
    if cfg!(debug_assertions) {
        let bad = dev.read_back::<u32>(flag, 1)?[0];
        if bad > 0 {
            return Err(Error::BadArgument {
                op,
                msg: format!("index {} is out of range for a dim of size {size}", bad - 1),
            });
        }
    }
    Ok(())
}

pub(crate) fn index_select(src: &CudaStorage, l: &Layout, idx: &CudaStorage, il: &Layout, dim: usize) -> Result<CudaStorage> {
    const OP: &str = "index_select";
    if !l.is_contiguous() {
        return Err(Error::BadShape { op: OP, shape: l.shape().clone(), msg: "expects a contiguous input".into() });
    }
    let dims = l.dims();
    if dim >= dims.len() {
        return Err(Error::BadArgument { op: OP, msg: format!("dim {dim} out of range for rank {}", dims.len()) });
    }
    let n_idx = il.elem_count();
    let (outer, inner): (usize, usize) = (dims[..dim].iter().product(), dims[dim + 1..].iter().product());
    let dev = src.device();
    let n = outer * n_idx * inner;
    let out = dev.alloc(n, src.dtype)?;
    if n == 0 {
        return Ok(out);
    }
    let mut keep = None;
    let ip = indices_u32(OP, idx, il, &mut keep)?;
    let flag = dev.scratch(4)?;
    dev.zero_bytes(flag.ptr(), 4)?;
    let (dim32, nidx32, inner32, n32) = (check_u32(OP, dims[dim])?, check_u32(OP, n_idx)?, check_u32(OP, inner)?, check_u32(OP, n)?);
    check_u32(OP, l.elem_count())?;
    let f = dev.func("index_select", &format!("index_select_{}", src.dtype.name()))?;
    let (sp, op, fp) = (src.ptr_at(l.offset()), out.ptr(), flag.ptr());
    let mut b = dev.stream().launch_builder(&f);
    b.arg(&sp).arg(&ip).arg(&op).arg(&fp).arg(&dim32).arg(&nidx32).arg(&inner32).arg(&n32);
    // SAFETY: in-range indices address inside src; the output has n elements.
    unsafe { b.launch(launch_cfg(n)) }.ctx("index_select kernel")?;
    check_flag(dev, OP, flag.ptr(), dims[dim])?;
    Ok(out)
}

pub(crate) fn index_add(
    dst: &mut CudaStorage,
    dims: &[usize],
    idx: &CudaStorage,
    il: &Layout,
    src: &CudaStorage,
    sl: &Layout,
    dim: usize,
) -> Result<()> {
    const OP: &str = "index_add";
    same_dtype(OP, dst, src)?;
    if dim >= dims.len() {
        return Err(Error::BadArgument { op: OP, msg: format!("dim {dim} out of range for rank {}", dims.len()) });
    }
    let n_idx = il.elem_count();
    let (outer, inner): (usize, usize) = (dims[..dim].iter().product(), dims[dim + 1..].iter().product());
    let n = outer * n_idx * inner;
    if sl.elem_count() != n {
        return Err(Error::BadArgument { op: OP, msg: format!("source has {} elements, expected {n}", sl.elem_count()) });
    }
    if dims.iter().product::<usize>() > dst.len {
        return Err(Error::BadArgument { op: OP, msg: "destination smaller than its dims".into() });
    }
    if n == 0 {
        return Ok(());
    }
    let dev = dst.device().clone();
    let mut keep_idx = None;
    let ip = indices_u32(OP, idx, il, &mut keep_idx)?;
    let src_c;
    let sp = if sl.is_contiguous() {
        src.ptr_at(sl.offset())
    } else {
        src_c = super::copy::cast(src, sl, src.dtype)?;
        src_c.ptr()
    };
    let flag = dev.scratch(4)?;
    dev.zero_bytes(flag.ptr(), 4)?;
    let (dim32, nidx32, inner32, n32) = (check_u32(OP, dims[dim])?, check_u32(OP, n_idx)?, check_u32(OP, inner)?, check_u32(OP, n)?);
    let f = dev.func("index_select", &format!("index_add_{}", dst.dtype.name()))?;
    let (dp, fp) = (dst.ptr(), flag.ptr());
    let mut b = dev.stream().launch_builder(&f);
    b.arg(&dp).arg(&ip).arg(&sp).arg(&fp).arg(&dim32).arg(&nidx32).arg(&inner32).arg(&n32);
    // SAFETY: in-range indices address inside dst; src holds n elements.
    unsafe { b.launch(launch_cfg(n)) }.ctx("index_add kernel")?;
    check_flag(&dev, OP, flag.ptr(), dims[dim])
}
