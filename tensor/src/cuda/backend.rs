//! `BackendStorage` for `CudaStorage`: the trait's methods, each handed to
//! the module that owns the kernel. Checks that concern every op (dtypes,
//! devices, contiguity) live in those modules, next to the launches.
//!
//! CPU twin: `cpu/backend.rs`.

use super::{conv, copy, elementwise, group_norm, index_select, matmul, optim, pool, random, reduce, upsample, CudaDevice, CudaStorage};
use crate::backend::{AdamStep, BackendStorage, BinaryOp, CmpOp, MatmulDims, ReduceOp, UnaryOp};
use crate::backend::Conv2dParams;
use crate::backend::GroupNormParams;
use crate::backend::Pool2dParams;
use crate::cpu::CpuStorage;
use crate::{DType, Layout, Result};

impl BackendStorage for CudaStorage {
    type Device = CudaDevice;

    fn full(device: &CudaDevice, n: usize, dtype: DType, value: f64) -> Result<Self> {
        device.full(n, dtype, value)
    }

    fn rand_uniform(device: &CudaDevice, n: usize, dtype: DType, key: u64, start: u64, lo: f64, hi: f64) -> Result<Self> {
        random::uniform(device, n, dtype, key, start, lo, hi)
    }

    fn rand_normal(device: &CudaDevice, n: usize, dtype: DType, key: u64, start: u64, mean: f64, std: f64) -> Result<Self> {
        random::normal(device, n, dtype, key, start, mean, std)
    }

    fn from_cpu(device: &CudaDevice, cpu: &CpuStorage) -> Result<Self> {
        device.from_cpu(cpu)
    }

    fn to_cpu(&self) -> Result<CpuStorage> {
        CudaStorage::to_cpu(self)
    }

    fn device(&self) -> CudaDevice {
        CudaStorage::device(self).clone()
    }

    fn dtype(&self) -> DType {
        self.dtype
    }

    fn len(&self) -> usize {
        self.len
    }

    fn to_dtype(&self, layout: &Layout, dtype: DType) -> Result<Self> {
        copy::cast(self, layout, dtype)
    }

    fn copy_strided(&self, layout: &Layout) -> Result<Self> {
        copy::cast(self, layout, self.dtype)
    }

    fn copy_into(&mut self, dst_layout: &Layout, src: &Self, src_layout: &Layout) -> Result<()> {
        copy::copy_into(self, dst_layout, src, src_layout)
    }

    fn unary(&self, layout: &Layout, op: UnaryOp) -> Result<Self> {
        elementwise::unary(self, layout, op)
    }

    fn binary(&self, layout: &Layout, rhs: &Self, rhs_layout: &Layout, op: BinaryOp) -> Result<Self> {
        elementwise::binary(self, layout, rhs, rhs_layout, op)
    }

    fn cmp(&self, layout: &Layout, rhs: &Self, rhs_layout: &Layout, op: CmpOp) -> Result<Self> {
        elementwise::cmp(self, layout, rhs, rhs_layout, op)
    }

    fn where_cond(&self, layout: &Layout, on_true: &Self, tl: &Layout, on_false: &Self, fl: &Layout) -> Result<Self> {
        elementwise::where_cond(self, layout, on_true, tl, on_false, fl)
    }

    fn reduce(&self, layout: &Layout, axes: &[usize], op: ReduceOp) -> Result<Self> {
        reduce::reduce(self, layout, axes, op)
    }

    fn matmul(&self, layout: &Layout, rhs: &Self, rhs_layout: &Layout, dims: MatmulDims) -> Result<Self> {
        matmul::matmul(self, layout, rhs, rhs_layout, dims)
    }

    fn conv2d(&self, layout: &Layout, w: &Self, wl: &Layout, bias: Option<(&Self, &Layout)>, p: &Conv2dParams) -> Result<Self> {
        conv::conv2d(self, layout, w, wl, bias, p)
    }

    fn conv2d_backward_input(&self, gl: &Layout, w: &Self, wl: &Layout, p: &Conv2dParams) -> Result<Self> {
        conv::conv2d_backward_input(self, gl, w, wl, p)
    }

    fn conv2d_backward_weight(&self, layout: &Layout, g: &Self, gl: &Layout, p: &Conv2dParams) -> Result<Self> {
        conv::conv2d_backward_weight(self, layout, g, gl, p)
    }

    fn avg_pool2d(&self, layout: &Layout, p: &Pool2dParams) -> Result<Self> {
        pool::avg_pool2d(self, layout, p)
    }

    fn avg_pool2d_backward(&self, gl: &Layout, p: &Pool2dParams) -> Result<Self> {
        pool::avg_pool2d_backward(self, gl, p)
    }

    fn max_pool2d(&self, layout: &Layout, p: &Pool2dParams) -> Result<Self> {
        pool::max_pool2d(self, layout, p)
    }

    fn max_pool2d_backward(&self, layout: &Layout, g: &Self, gl: &Layout, p: &Pool2dParams) -> Result<Self> {
        pool::max_pool2d_backward(self, layout, g, gl, p)
    }

    fn upsample_nearest2d(&self, layout: &Layout, dims: (usize, usize, usize, usize), scale: (usize, usize)) -> Result<Self> {
        upsample::upsample_nearest2d(self, layout, dims, scale)
    }

    fn upsample_nearest2d_backward(&self, gl: &Layout, dims: (usize, usize, usize, usize), scale: (usize, usize)) -> Result<Self> {
        upsample::upsample_nearest2d_backward(self, gl, dims, scale)
    }

    fn group_norm(&self, layout: &Layout, gamma: &Self, gl: &Layout, beta: &Self, bl: &Layout, p: &GroupNormParams) -> Result<(Self, Self, Self)> {
        group_norm::group_norm(self, layout, gamma, gl, beta, bl, p, false)
    }

    fn group_norm_backward(&self, gamma: &Self, mean: &Self, rstd: &Self, grad_y: &Self, p: &GroupNormParams) -> Result<(Self, Self, Self)> {
        group_norm::group_norm_backward(self, gamma, None, mean, rstd, grad_y, p)
    }

    fn group_norm_silu(&self, layout: &Layout, gamma: &Self, gl: &Layout, beta: &Self, bl: &Layout, p: &GroupNormParams) -> Result<(Self, Self, Self)> {
        group_norm::group_norm(self, layout, gamma, gl, beta, bl, p, true)
    }

    fn group_norm_silu_backward(&self, gamma: &Self, beta: &Self, mean: &Self, rstd: &Self, grad_y: &Self, p: &GroupNormParams) -> Result<(Self, Self, Self)> {
        group_norm::group_norm_backward(self, gamma, Some(beta), mean, rstd, grad_y, p)
    }

    fn index_select(&self, layout: &Layout, indices: &Self, il: &Layout, dim: usize) -> Result<Self> {
        index_select::index_select(self, layout, indices, il, dim)
    }

    fn index_add(&mut self, dims: &[usize], indices: &Self, il: &Layout, src: &Self, sl: &Layout, dim: usize) -> Result<()> {
        index_select::index_add(self, dims, indices, il, src, sl, dim)
    }

    fn adam_update(&mut self, grad: &Self, m: &mut Self, v: &mut Self, step: &AdamStep) -> Result<()> {
        optim::adam(self, grad, m, v, step)
    }

    fn ema_update(&mut self, src: &Self, decay: f64) -> Result<()> {
        optim::ema(self, src, decay)
    }

    fn dropout(&self, layout: &Layout, keep: f64, scale: f64, key: u64, start: u64) -> Result<Option<(Self, Self)>> {
        // The kernel walks one contiguous run: gather a strided input first.
        let gathered;
        let (x, offset) = if layout.is_contiguous() {
            (self, layout.offset())
        } else {
            gathered = copy::cast(self, layout, self.dtype)?;
            (&gathered, 0)
        };
        random::dropout(x, offset, layout.elem_count(), keep, scale, key, start).map(Some)
    }
}
