//! Gathers, casts, scatters and fills (kernels in `copy.cu`).
//!
//! A contiguous range needs no kernel: it is one `cuMemcpyDtoD`. Anything
//! strided goes through the `cast_S_D` kernel, which reads any layout and
//! writes contiguous output, converting the dtype on the way when asked.
//!
//! CPU twin: `cpu/copy.rs`.

use super::strided::Strided;
use super::{check_u32, launch_cfg, CudaDevice, CudaResultExt, CudaStorage};
use crate::{DType, Error, Layout, Result};
use cudarc::driver::PushKernelArg;

/// `n` copies of `value` converted to `dtype`.
pub(crate) fn fill(dev: &CudaDevice, n: usize, dtype: DType, value: f64) -> Result<CudaStorage> {
    let out = dev.alloc(n, dtype)?;
    if n == 0 {
        return Ok(out);
    }
    let n32 = check_u32("full", n)?;
    let f = dev.func("copy", &format!("fill_{}", dtype.name()))?;
    let dst = out.ptr();
    let mut b = dev.stream().launch_builder(&f);
    b.arg(&dst).arg(&value).arg(&n32);
    // SAFETY: the kernel writes n elements of `dtype` at dst.
    unsafe { b.launch(launch_cfg(n)) }.ctx("fill kernel")?;
    Ok(out)
}

/// The elements of `layout`, contiguous, converted to `dtype`.
pub(crate) fn cast(src: &CudaStorage, layout: &Layout, dtype: DType) -> Result<CudaStorage> {
    let dev = src.device();
    let n = layout.elem_count();
    let out = dev.alloc(n, dtype)?;
    if n == 0 {
        return Ok(out);
    }
    if dtype == src.dtype && layout.is_contiguous() {
        let size = dtype.size_in_bytes();
        dev.copy_bytes(out.ptr(), src.ptr_at(layout.offset()), n * size)?;
        return Ok(out);
    }
    let s = Strided::new("copy", layout.dims(), &[layout])?;
    let n32 = check_u32("copy", n)?;
    let f = dev.func("copy", &format!("cast_{}_{}", src.dtype.name(), dtype.name()))?;
    let (x, y) = (src.ptr_at(layout.offset()), out.ptr());
    let mut b = dev.stream().launch_builder(&f);
    b.arg(&x).arg(&y).arg(&s).arg(&n32);
    // SAFETY: `s` stays within src's layout (checked when the view was built)
    // and the kernel writes n elements at y.
    unsafe { b.launch(launch_cfg(n)) }.ctx("copy/cast kernel")?;
    Ok(out)
}

/// Writes `src` (seen through `src_layout`) into the `dst_layout` positions of `dst`.
pub(crate) fn copy_into(dst: &mut CudaStorage, dst_layout: &Layout, src: &CudaStorage, src_layout: &Layout) -> Result<()> {
    if dst.dtype != src.dtype {
        return Err(Error::DTypeMismatch { op: "copy", lhs: dst.dtype, rhs: src.dtype });
    }
    if dst_layout.dims() != src_layout.dims() {
        return Err(Error::ShapeMismatch { op: "copy", lhs: dst_layout.shape().clone(), rhs: src_layout.shape().clone() });
    }
    let dev = dst.device().clone();
    let n = dst_layout.elem_count();
    if n == 0 {
        return Ok(());
    }
    if dst_layout.is_contiguous() && src_layout.is_contiguous() {
        let size = dst.dtype.size_in_bytes();
        return dev.copy_bytes(dst.ptr_at(dst_layout.offset()), src.ptr_at(src_layout.offset()), n * size);
    }
    let s = Strided::new("copy", dst_layout.dims(), &[dst_layout, src_layout])?;
    let n32 = check_u32("copy", n)?;
    let f = dev.func("copy", &format!("scatter_{}", dst.dtype.name()))?;
    let (x, y) = (src.ptr_at(src_layout.offset()), dst.ptr_at(dst_layout.offset()));
    let mut b = dev.stream().launch_builder(&f);
    b.arg(&x).arg(&y).arg(&s).arg(&n32);
    // SAFETY: both walks stay inside their layouts.
    unsafe { b.launch(launch_cfg(n)) }.ctx("copy_into kernel")?;
    Ok(())
}
