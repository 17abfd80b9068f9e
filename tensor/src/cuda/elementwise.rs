//! Unary maps, broadcasting binary ops, comparisons and `where` (kernels in
//! `elementwise.cu`).
//!
//! One kernel per dtype and family; the op travels as an integer code whose
//! numbering must match the `#define`s in elementwise.cu (`UnaryOp::code`
//! and friends in `backend.rs` are the single place that maps the Rust
//! enums to those numbers).
//! Operands of any strides, broadcast ones included (stride 0), are walked
//! with one `Strided` argument, so nothing is materialised first.
//!
//! CPU twin: `cpu/elementwise.rs`.

use super::strided::Strided;
use super::{check_u32, launch_cfg, CudaResultExt, CudaStorage};
use crate::backend::{BinaryOp, CmpOp, UnaryOp};
use crate::{DType, Error, Layout, Result};
use cudarc::driver::PushKernelArg;

pub(crate) fn float_only(op: &'static str, dtype: DType) -> Result<()> {
    if dtype.is_float() {
        Ok(())
    } else {
        Err(Error::UnsupportedDType { op, got: dtype, hint: "; convert to a float dtype first (to_dtype)" })
    }
}

pub(crate) fn same_dtype(op: &'static str, a: &CudaStorage, b: &CudaStorage) -> Result<()> {
    if a.dtype != b.dtype {
        return Err(Error::DTypeMismatch { op, lhs: a.dtype, rhs: b.dtype });
    }
    if a.device != b.device {
        return Err(Error::DeviceMismatch {
            op,
            lhs: format!("cuda:{}", a.device.ordinal()),
            rhs: format!("cuda:{}", b.device.ordinal()),
        });
    }
    Ok(())
}

fn same_shape(op: &'static str, a: &Layout, b: &Layout) -> Result<()> {
    if a.dims() != b.dims() {
        return Err(Error::ShapeMismatch { op, lhs: a.shape().clone(), rhs: b.shape().clone() });
    }
    Ok(())
}

pub(crate) fn unary(x: &CudaStorage, layout: &Layout, op: UnaryOp) -> Result<CudaStorage> {
    float_only("unary op", x.dtype)?;
    let dev = x.device();
    let n = layout.elem_count();
    let out = dev.alloc(n, x.dtype)?;
    if n == 0 {
        return Ok(out);
    }
    let s = Strided::new("unary op", layout.dims(), &[layout])?;
    let n32 = check_u32("unary op", n)?;
    let (code, p0, p1) = op.code();
    let f = dev.func("elementwise", &format!("unary_{}", x.dtype.name()))?;
    let (xp, yp) = (x.ptr_at(layout.offset()), out.ptr());
    let mut b = dev.stream().launch_builder(&f);
    b.arg(&xp).arg(&yp).arg(&s).arg(&n32).arg(&code).arg(&p0).arg(&p1);
    // SAFETY: reads stay inside `layout`, writes cover the n-element output.
    unsafe { b.launch(launch_cfg(n)) }.ctx("unary kernel")?;
    Ok(out)
}

/// Shared launcher of `binary_T` and `cmp_T` (same signature).
fn two_operand(
    kernel: &str,
    op_name: &'static str,
    code: u32,
    a: &CudaStorage,
    al: &Layout,
    b: &CudaStorage,
    bl: &Layout,
) -> Result<CudaStorage> {
    same_dtype(op_name, a, b)?;
    float_only(op_name, a.dtype)?;
    same_shape(op_name, al, bl)?;
    let dev = a.device();
    let n = al.elem_count();
    let out = dev.alloc(n, a.dtype)?;
    if n == 0 {
        return Ok(out);
    }
    let s = Strided::new(op_name, al.dims(), &[al, bl])?;
    let n32 = check_u32(op_name, n)?;
    let f = dev.func("elementwise", &format!("{kernel}_{}", a.dtype.name()))?;
    let (ap, bp, op) = (a.ptr_at(al.offset()), b.ptr_at(bl.offset()), out.ptr());
    let mut lb = dev.stream().launch_builder(&f);
    lb.arg(&ap).arg(&bp).arg(&op).arg(&s).arg(&n32).arg(&code);
    // SAFETY: reads stay inside the layouts, writes cover the output.
    unsafe { lb.launch(launch_cfg(n)) }.ctx("binary kernel")?;
    Ok(out)
}

pub(crate) fn binary(a: &CudaStorage, al: &Layout, b: &CudaStorage, bl: &Layout, op: BinaryOp) -> Result<CudaStorage> {
    two_operand("binary", "binary op", op.code(), a, al, b, bl)
}

pub(crate) fn cmp(a: &CudaStorage, al: &Layout, b: &CudaStorage, bl: &Layout, op: CmpOp) -> Result<CudaStorage> {
    two_operand("cmp", "comparison", op.code(), a, al, b, bl)
}

/// `mask ? t : f`; the mask may have any dtype (nonzero is true).
pub(crate) fn where_cond(
    mask: &CudaStorage,
    ml: &Layout,
    t: &CudaStorage,
    tl: &Layout,
    f: &CudaStorage,
    fl: &Layout,
) -> Result<CudaStorage> {
    same_dtype("where", t, f)?;
    if mask.device != t.device {
        return Err(Error::DeviceMismatch {
            op: "where",
            lhs: format!("cuda:{}", mask.device.ordinal()),
            rhs: format!("cuda:{}", t.device.ordinal()),
        });
    }
    same_shape("where", ml, tl)?;
    same_shape("where", ml, fl)?;
    let dev = t.device();
    let n = ml.elem_count();
    let out = dev.alloc(n, t.dtype)?;
    if n == 0 {
        return Ok(out);
    }
    let s = Strided::new("where", ml.dims(), &[ml, tl, fl])?;
    let n32 = check_u32("where", n)?;
    let func = dev.func("elementwise", &format!("where_{}_{}", mask.dtype.name(), t.dtype.name()))?;
    let (mp, tp, fp, op) = (mask.ptr_at(ml.offset()), t.ptr_at(tl.offset()), f.ptr_at(fl.offset()), out.ptr());
    let mut b = dev.stream().launch_builder(&func);
    b.arg(&mp).arg(&tp).arg(&fp).arg(&op).arg(&s).arg(&n32);
    // SAFETY: reads stay inside the layouts, writes cover the output.
    unsafe { b.launch(launch_cfg(n)) }.ctx("where kernel")?;
    Ok(out)
}
