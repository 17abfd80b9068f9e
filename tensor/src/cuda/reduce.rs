//! Sum, max, min and argmax over any set of axes (kernels in `reduce.cu`).
//!
//! Three launch shapes, picked from the shape of the problem:
//! - many outputs whose rows are short, or whose reduced axes are the outer
//!   ones (adjacent outputs then sit at adjacent addresses): one thread per
//!   output (`reduce_thread_T`);
//! - otherwise one 256-thread block per output (`reduce_block_T`);
//! - and when there are too few outputs to fill the GPU with blocks (a sum of
//!   a whole tensor), each output is split over several blocks that write
//!   double partials, folded by `reduce_finish_T`.
//!
//! CPU twin: `cpu/reduce.rs`.

use super::elementwise::float_only;
use super::strided::{check_span, too_many_dims, MAX_DIMS};
use super::{check_u32, launch_cfg, CudaResultExt, CudaStorage};
use crate::backend::ReduceOp;
use crate::{DType, Layout, Result};
use crate::shape::coalesce;
use cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};

const BLOCK: u32 = 256;
/// Enough blocks to keep every SM of a large GPU busy several times over.
const TARGET_BLOCKS: usize = 1024;

fn code(op: ReduceOp) -> u32 {
    match op {
        ReduceOp::Sum => 0,
        ReduceOp::Max => 1,
        ReduceOp::Min => 2,
        ReduceOp::ArgMax => 3,
    }
}

pub(crate) fn reduce(x: &CudaStorage, layout: &Layout, axes: &[usize], op: ReduceOp) -> Result<CudaStorage> {
    let name = if op == ReduceOp::ArgMax { "argmax" } else { "reduction" };
    float_only(name, x.dtype)?;
    let dev = x.device();
    let plan = ReducePlan::new(name, layout, axes)?;
    let out_dtype = if op == ReduceOp::ArgMax { DType::U32 } else { x.dtype };
    let out = dev.alloc(plan.outputs, out_dtype)?;
    if plan.outputs == 0 {
        return Ok(out);
    }
    let n_out = check_u32(name, plan.outputs)?;
    let r = check_u32(name, plan.row_len)?;
    let opc = code(op);
    let (xp, yp) = (x.ptr_at(layout.offset()), out.ptr());
    let t = x.dtype.name();

    let outer_axes = plan.inner_stride != 1 && plan.outputs >= 1024;
    if plan.row_len <= 32 || outer_axes {
        let f = dev.func("reduce", &format!("reduce_thread_{t}"))?;
        let mut b = dev.stream().launch_builder(&f);
        b.arg(&xp).arg(&yp).arg(&plan.index).arg(&n_out).arg(&r).arg(&opc);
        // SAFETY: the walk stays inside `layout`; one write per output.
        unsafe { b.launch(launch_cfg(plan.outputs)) }.ctx("reduce kernel")?;
        return Ok(out);
    }

    // Block per output, split further when outputs alone cannot fill the GPU.
    let max_splits = plan.row_len.div_ceil(BLOCK as usize * 16).max(1);
    let splits = if op == ReduceOp::ArgMax || plan.outputs >= TARGET_BLOCKS {
        1
    } else {
        (TARGET_BLOCKS / plan.outputs).clamp(1, max_splits.min(65535))
    };
    let chunk = check_u32(name, plan.row_len.div_ceil(splits))?;
    let partial = if splits > 1 { Some(dev.scratch(plan.outputs * splits * 8)?) } else { None };
    let pp: u64 = partial.as_ref().map_or(0, |p| p.ptr());
    let f = dev.func("reduce", &format!("reduce_block_{t}"))?;
    let cfg = LaunchConfig { grid_dim: (n_out, splits as u32, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 };
    let mut b = dev.stream().launch_builder(&f);
    b.arg(&xp).arg(&yp).arg(&pp).arg(&plan.index).arg(&r).arg(&opc).arg(&chunk);
    // SAFETY: as above; partials get outputs * splits doubles.
    unsafe { b.launch(cfg) }.ctx("reduce kernel")?;
    if splits > 1 {
        let splits32 = splits as u32;
        let f = dev.func("reduce", &format!("reduce_finish_{t}"))?;
        let cfg = LaunchConfig { grid_dim: (n_out, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 };
        let mut b = dev.stream().launch_builder(&f);
        b.arg(&pp).arg(&yp).arg(&splits32).arg(&opc);
        // SAFETY: reads the partials written above, one write per output.
        unsafe { b.launch(cfg) }.ctx("reduce finish kernel")?;
    }
    Ok(out)
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
