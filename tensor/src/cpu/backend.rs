//! `BackendStorage` for `CpuStorage`: each method checks dtypes, picks the
//! element type, and hands plain slices to the kernel module of its op.
//!
//! CUDA twin: `cuda/backend.rs`.

use super::copy::{gather, scatter};
use super::float::Float;
use super::{check_same, conv, conv_fused, elementwise, group_norm, group_norm_modulated, index_select, matmul, optim, pool, random, reduce, unsupported, upsample};
use super::strided::contiguous_slice;
use super::{CpuDevice, CpuStorage};
use crate::backend::{AdamStep, BackendStorage, BinaryOp, CmpOp, Conv2dParams, ConvFusion, GroupNormParams, MatmulDims, Pool2dParams, ReduceOp, UnaryOp};
use crate::{DType, Error, Layout, Result};

/// Runs `$body` with `$v` bound to the float vector inside `$s` (f32 or f64),
/// wrapping the result back into the same variant.
macro_rules! map_float {
    ($s:expr, $op:literal, |$v:ident| $body:expr) => {
        match $s {
            CpuStorage::F32($v) => CpuStorage::F32($body),
            CpuStorage::F64($v) => CpuStorage::F64($body),
            other => return Err(unsupported($op, other.dtype())),
        }
    };
}
/// The same for two storages that must share a float dtype.
macro_rules! map_float2 {
    ($a:expr, $b:expr, $op:literal, |$x:ident, $y:ident| $body:expr) => {
        match ($a, $b) {
            (CpuStorage::F32($x), CpuStorage::F32($y)) => CpuStorage::F32($body),
            (CpuStorage::F64($x), CpuStorage::F64($y)) => CpuStorage::F64($body),
            (a, b) if a.dtype() != b.dtype() => {
                return Err(Error::DTypeMismatch { op: $op, lhs: a.dtype(), rhs: b.dtype() })
            }
            (a, _) => return Err(unsupported($op, a.dtype())),
        }
    };
}

/// The slice of a float storage, for kernels that take contiguous input.
pub(super) fn float_slice<'a, T: 'static>(s: &'a CpuStorage, layout: &Layout) -> &'a [T] {
    let any: &dyn std::any::Any = match s {
        CpuStorage::F32(v) => v,
        CpuStorage::F64(v) => v,
        CpuStorage::F16(v) => v,
        CpuStorage::BF16(v) => v,
        CpuStorage::U32(v) => v,
    };
    let v = any.downcast_ref::<Vec<T>>().expect("dtype checked by the caller");
    contiguous_slice(v, layout)
}

/// Every element of a float storage.
pub(super) fn whole_slice<T: 'static>(s: &CpuStorage) -> &[T] {
    float_slice(s, &Layout::contiguous(crate::Shape::from(BackendStorage::len(s))))
}

macro_rules! image_kernel {
    ($self:expr, $layout:expr, $op:literal, |$x:ident : $t:ident| $body:expr) => {
        match $self {
            CpuStorage::F32(_) => {
                type $t = f32;
                let $x = float_slice::<f32>($self, $layout);
                CpuStorage::F32($body)
            }
            CpuStorage::F64(_) => {
                type $t = f64;
                let $x = float_slice::<f64>($self, $layout);
                CpuStorage::F64($body)
            }
            other => return Err(unsupported($op, other.dtype())),
        }
    };
}

fn indices_of<'a>(op: &'static str, s: &'a CpuStorage, layout: &Layout) -> Result<std::borrow::Cow<'a, [u32]>> {
    match s {
        CpuStorage::U32(v) if layout.is_contiguous() => Ok(contiguous_slice(v, layout).into()),
        CpuStorage::U32(v) => Ok(gather(v, layout).into()),
        other => Err(Error::UnsupportedDType { op, got: other.dtype(), hint: "; indices must be u32" }),
    }
}

impl BackendStorage for CpuStorage {
    type Device = CpuDevice;

    fn full(_: &CpuDevice, n: usize, dtype: DType, value: f64) -> Result<Self> {
        Ok(CpuStorage::filled(n, dtype, value))
    }

    fn rand_uniform(_: &CpuDevice, n: usize, dtype: DType, key: u64, start: u64, lo: f64, hi: f64) -> Result<Self> {
        CpuStorage::uniform(n, dtype, key, start, lo, hi)
    }

    fn rand_normal(_: &CpuDevice, n: usize, dtype: DType, key: u64, start: u64, mean: f64, std: f64) -> Result<Self> {
        CpuStorage::normal(n, dtype, key, start, mean, std)
    }

    fn dropout_mask(_: &CpuDevice, n: usize, dtype: DType, keep: f64, scale: f64, key: u64, start: u64) -> Result<Option<Self>> {
        Ok(match dtype {
            DType::F32 => Some(CpuStorage::F32(random::dropout_mask(n, keep, scale, key, start))),
            DType::F64 => Some(CpuStorage::F64(random::dropout_mask(n, keep, scale, key, start))),
            _ => None,
        })
    }

    fn from_cpu(_: &CpuDevice, cpu: &CpuStorage) -> Result<Self> {
        Ok(cpu.clone())
    }

    fn to_cpu(&self) -> Result<CpuStorage> {
        Ok(self.clone())
    }

    fn device(&self) -> CpuDevice {
        CpuDevice
    }

    fn dtype(&self) -> DType {
        CpuStorage::dtype(self)
    }

    fn len(&self) -> usize {
        match self {
            CpuStorage::F32(v) => v.len(),
            CpuStorage::F64(v) => v.len(),
            CpuStorage::F16(v) => v.len(),
            CpuStorage::BF16(v) => v.len(),
            CpuStorage::U32(v) => v.len(),
        }
    }

    fn to_dtype(&self, layout: &Layout, dtype: DType) -> Result<Self> {
        self.copy_strided(layout)?.cast(dtype)
    }

    fn copy_strided(&self, layout: &Layout) -> Result<Self> {
        Ok(match self {
            CpuStorage::F32(v) => CpuStorage::F32(gather(v, layout)),
            CpuStorage::F64(v) => CpuStorage::F64(gather(v, layout)),
            CpuStorage::F16(v) => CpuStorage::F16(gather(v, layout)),
            CpuStorage::BF16(v) => CpuStorage::BF16(gather(v, layout)),
            CpuStorage::U32(v) => CpuStorage::U32(gather(v, layout)),
        })
    }

    fn copy_into(&mut self, dst_layout: &Layout, src: &Self, src_layout: &Layout) -> Result<()> {
        check_same("copy", self, src)?;
        match (self, src) {
            (CpuStorage::F32(d), CpuStorage::F32(s)) => scatter(d, dst_layout, s, src_layout),
            (CpuStorage::F64(d), CpuStorage::F64(s)) => scatter(d, dst_layout, s, src_layout),
            (CpuStorage::F16(d), CpuStorage::F16(s)) => scatter(d, dst_layout, s, src_layout),
            (CpuStorage::BF16(d), CpuStorage::BF16(s)) => scatter(d, dst_layout, s, src_layout),
            (CpuStorage::U32(d), CpuStorage::U32(s)) => scatter(d, dst_layout, s, src_layout),
            _ => unreachable!("dtypes checked above"),
        }
        Ok(())
    }

    fn unary(&self, layout: &Layout, op: UnaryOp) -> Result<Self> {
        Ok(map_float!(self, "unary op", |v| elementwise::unary(v, layout, op)))
    }

    fn binary(&self, layout: &Layout, rhs: &Self, rhs_layout: &Layout, op: BinaryOp) -> Result<Self> {
        Ok(map_float2!(self, rhs, "binary op", |a, b| elementwise::binary(a, layout, b, rhs_layout, op)))
    }

    fn cmp(&self, layout: &Layout, rhs: &Self, rhs_layout: &Layout, op: CmpOp) -> Result<Self> {
        Ok(map_float2!(self, rhs, "comparison", |a, b| elementwise::cmp(a, layout, b, rhs_layout, op)))
    }

    fn where_cond(&self, layout: &Layout, t: &Self, tl: &Layout, f: &Self, fl: &Layout) -> Result<Self> {
        check_same("where", self, t)?;
        Ok(map_float2!(t, f, "where", |a, b| {
            let mask = match self {
                CpuStorage::F32(m) => elementwise::mask_of(m, layout),
                CpuStorage::F64(m) => elementwise::mask_of(m, layout),
                _ => unreachable!("dtype checked above"),
            };
            elementwise::where_cond(&mask, a, tl, b, fl)
        }))
    }

    fn reduce(&self, layout: &Layout, axes: &[usize], op: ReduceOp) -> Result<Self> {
        if op == ReduceOp::ArgMax {
            return match self {
                CpuStorage::F32(v) => Ok(CpuStorage::U32(reduce::argmax(v, layout, axes))),
                CpuStorage::F64(v) => Ok(CpuStorage::U32(reduce::argmax(v, layout, axes))),
                other => Err(unsupported("argmax", other.dtype())),
            };
        }
        Ok(map_float!(self, "reduction", |v| reduce::reduce(v, layout, axes, op)))
    }

    fn matmul(&self, layout: &Layout, rhs: &Self, rhs_layout: &Layout, dims: MatmulDims) -> Result<Self> {
        Ok(map_float2!(self, rhs, "matmul", |a, b| matmul::batched_matmul(a, layout, b, rhs_layout, dims)))
    }

    fn conv2d(&self, layout: &Layout, w: &Self, wl: &Layout, bias: Option<(&Self, &Layout)>, p: &Conv2dParams) -> Result<Self> {
        check_same("conv2d", self, w)?;
        if let Some((b, _)) = bias {
            check_same("conv2d", self, b)?;
        }
        Ok(image_kernel!(self, layout, "conv2d", |x: T| conv::conv2d::<T>(
            p,
            x,
            float_slice::<T>(w, wl),
            bias.map(|(b, bl)| float_slice::<T>(b, bl))
        )))
    }

    fn conv2d_backward_input(&self, gl: &Layout, w: &Self, wl: &Layout, p: &Conv2dParams) -> Result<Self> {
        check_same("conv2d backward", self, w)?;
        Ok(image_kernel!(self, gl, "conv2d backward", |g: T| conv::conv2d_backward_input::<T>(
            p,
            g,
            float_slice::<T>(w, wl)
        )))
    }

    fn conv2d_backward_weight(&self, layout: &Layout, g: &Self, gl: &Layout, p: &Conv2dParams) -> Result<Self> {
        check_same("conv2d backward", self, g)?;
        Ok(image_kernel!(self, layout, "conv2d backward", |x: T| conv::conv2d_backward_weight::<T>(
            p,
            x,
            float_slice::<T>(g, gl)
        )))
    }

    fn conv_weight_arrangement(&self, p: &Conv2dParams) -> Option<u64> {
        matches!(self, CpuStorage::F32(_)).then(|| conv_fused::weight_arrangement(p)).flatten()
    }

    fn prepare_conv_weight(&self, layout: &Layout, p: &Conv2dParams) -> Result<Self> {
        match self {
            CpuStorage::F32(_) => Ok(CpuStorage::F32(conv_fused::prepare_weight(p, float_slice::<f32>(self, layout)))),
            _ => Err(unsupported("prepare_conv_weight", self.dtype())),
        }
    }

    fn conv2d_fused(&self, layout: &Layout, w: &Self, wl: &Layout, f: &ConvFusion<'_, Self>, p: &Conv2dParams) -> Result<Option<(Self, Option<Self>)>> {
        let mut operands = vec![w];
        operands.extend(f.bias.map(|b| b.0));
        operands.extend(f.input_affine.iter().flat_map(|(scale, shift)| [scale.0, shift.0]));
        operands.extend(f.residual.map(|r| r.0));
        for operand in operands {
            check_same("conv2d_fused", self, operand)?;
        }
        fn run<'a, T: Float + 'static>(x: &[T], w: &[T], f: &ConvFusion<'a, CpuStorage>, p: &Conv2dParams) -> (Vec<T>, Option<Vec<f64>>) {
            let slice = |(s, l): (&'a CpuStorage, &'a Layout)| float_slice::<T>(s, l);
            let args = conv_fused::FusedArgs {
                bias: f.bias.map(slice),
                input_affine: f.input_affine.map(|(scale, shift)| (slice(scale), slice(shift))),
                input_silu: f.input_silu,
                residual: f.residual.map(slice),
                moments: f.moments,
                prepared_weight: f.prepared_weight.map(whole_slice::<T>),
            };
            conv_fused::conv2d_fused(p, x, w, &args)
        }
        let (out, moments) = match self {
            CpuStorage::F32(_) => {
                let (out, m) = run(float_slice::<f32>(self, layout), float_slice::<f32>(w, wl), f, p);
                (CpuStorage::F32(out), m)
            }
            CpuStorage::F64(_) => {
                let (out, m) = run(float_slice::<f64>(self, layout), float_slice::<f64>(w, wl), f, p);
                (CpuStorage::F64(out), m)
            }
            _ => return Ok(None),
        };
        Ok(Some((out, moments.map(CpuStorage::F64))))
    }

    fn channel_moments(&self, layout: &Layout, (n, c, hw): (usize, usize, usize)) -> Result<Option<Self>> {
        Ok(match self {
            CpuStorage::F32(_) => Some(CpuStorage::F64(conv_fused::channel_moments(float_slice::<f32>(self, layout), n * c, hw))),
            CpuStorage::F64(_) => Some(CpuStorage::F64(conv_fused::channel_moments(float_slice::<f64>(self, layout), n * c, hw))),
            _ => None,
        })
    }

    fn avg_pool2d(&self, layout: &Layout, p: &Pool2dParams) -> Result<Self> {
        Ok(image_kernel!(self, layout, "avg_pool2d", |x: T| pool::avg_pool2d::<T>(p, x)))
    }

    fn avg_pool2d_backward(&self, gl: &Layout, p: &Pool2dParams) -> Result<Self> {
        Ok(image_kernel!(self, gl, "avg_pool2d backward", |g: T| pool::avg_pool2d_backward::<T>(p, g)))
    }

    fn max_pool2d(&self, layout: &Layout, p: &Pool2dParams) -> Result<Self> {
        Ok(image_kernel!(self, layout, "max_pool2d", |x: T| pool::max_pool2d::<T>(p, x)))
    }

    fn max_pool2d_backward(&self, layout: &Layout, g: &Self, gl: &Layout, p: &Pool2dParams) -> Result<Self> {
        check_same("max_pool2d backward", self, g)?;
        Ok(image_kernel!(self, layout, "max_pool2d backward", |x: T| pool::max_pool2d_backward::<T>(
            p,
            x,
            float_slice::<T>(g, gl)
        )))
    }

    fn upsample_nearest2d(&self, layout: &Layout, d: (usize, usize, usize, usize), s: (usize, usize)) -> Result<Self> {
        Ok(image_kernel!(self, layout, "upsample_nearest2d", |x: T| upsample::upsample_nearest2d::<T>(
            d.0, d.1, d.2, d.3, s.0, s.1, x
        )))
    }

    fn upsample_nearest2d_backward(&self, gl: &Layout, d: (usize, usize, usize, usize), s: (usize, usize)) -> Result<Self> {
        Ok(image_kernel!(self, gl, "upsample_nearest2d backward", |g: T| {
            upsample::upsample_nearest2d_backward::<T>(d.0, d.1, d.2, d.3, s.0, s.1, g)
        }))
    }

    fn group_norm(&self, layout: &Layout, gamma: &Self, gl: &Layout, beta: &Self, bl: &Layout, p: &GroupNormParams) -> Result<(Self, Self, Self)> {
        normalise("group_norm", self, layout, gamma, gl, beta, bl, p, false)
    }

    fn group_norm_backward(&self, gamma: &Self, mean: &Self, rstd: &Self, grad_y: &Self, p: &GroupNormParams) -> Result<(Self, Self, Self)> {
        normalise_backward("group_norm backward", self, gamma, None, mean, rstd, grad_y, p)
    }

    fn group_norm_silu(&self, layout: &Layout, gamma: &Self, gl: &Layout, beta: &Self, bl: &Layout, p: &GroupNormParams) -> Result<(Self, Self, Self)> {
        normalise("group_norm_silu", self, layout, gamma, gl, beta, bl, p, true)
    }

    fn group_norm_silu_backward(&self, gamma: &Self, beta: &Self, mean: &Self, rstd: &Self, grad_y: &Self, p: &GroupNormParams) -> Result<(Self, Self, Self)> {
        normalise_backward("group_norm_silu backward", self, gamma, Some(beta), mean, rstd, grad_y, p)
    }

    fn group_norm_silu_modulated(&self, scale: &Self, shift: &Self, gamma: &Self, beta: &Self, mask: Option<&Self>, p: &GroupNormParams) -> Result<Option<(Self, Self, Self)>> {
        for other in [scale, shift, gamma, beta].into_iter().chain(mask) {
            check_same("group_norm_silu_modulated", self, other)?;
        }
        macro_rules! run {
            ($t:ty, $variant:ident) => {{
                let whole = whole_slice::<$t>;
                let (y, mean, rstd) = group_norm_modulated::group_norm_silu_modulated::<$t>(p, whole(self), whole(scale), whole(shift), whole(gamma), whole(beta), mask.map(whole));
                Ok(Some((CpuStorage::$variant(y), CpuStorage::$variant(mean), CpuStorage::$variant(rstd))))
            }};
        }
        match self {
            CpuStorage::F32(_) => run!(f32, F32),
            CpuStorage::F64(_) => run!(f64, F64),
            _ => Ok(None),
        }
    }

    fn group_norm_silu_modulated_backward(
        &self,
        scale: &Self,
        shift: &Self,
        gamma: &Self,
        beta: &Self,
        mean: &Self,
        rstd: &Self,
        grad_y: &Self,
        mask: Option<&Self>,
        p: &GroupNormParams,
    ) -> Result<Option<(Self, Self, Self, Self, Self)>> {
        for other in [scale, shift, gamma, beta, mean, rstd, grad_y].into_iter().chain(mask) {
            check_same("group_norm_silu_modulated backward", self, other)?;
        }
        macro_rules! run {
            ($t:ty, $variant:ident) => {{
                let whole = whole_slice::<$t>;
                let (dx, ds, db, dg, dbeta) = group_norm_modulated::group_norm_silu_modulated_backward::<$t>(
                    p,
                    whole(self),
                    whole(scale),
                    whole(shift),
                    whole(gamma),
                    whole(beta),
                    whole(mean),
                    whole(rstd),
                    whole(grad_y),
                    mask.map(whole),
                );
                let wrap = CpuStorage::$variant;
                Ok(Some((wrap(dx), wrap(ds), wrap(db), wrap(dg), wrap(dbeta))))
            }};
        }
        match self {
            CpuStorage::F32(_) => run!(f32, F32),
            CpuStorage::F64(_) => run!(f64, F64),
            _ => Ok(None),
        }
    }

    fn index_select(&self, layout: &Layout, indices: &Self, il: &Layout, dim: usize) -> Result<Self> {
        let idx = indices_of("index_select", indices, il)?;
        index_select::check_bounds("index_select", &idx, layout.dims()[dim])?;
        Ok(match self {
            CpuStorage::F32(v) => CpuStorage::F32(index_select::index_select(contiguous_slice(v, layout), layout.dims(), &idx, dim)),
            CpuStorage::F64(v) => CpuStorage::F64(index_select::index_select(contiguous_slice(v, layout), layout.dims(), &idx, dim)),
            CpuStorage::F16(v) => CpuStorage::F16(index_select::index_select(contiguous_slice(v, layout), layout.dims(), &idx, dim)),
            CpuStorage::BF16(v) => CpuStorage::BF16(index_select::index_select(contiguous_slice(v, layout), layout.dims(), &idx, dim)),
            CpuStorage::U32(v) => CpuStorage::U32(index_select::index_select(contiguous_slice(v, layout), layout.dims(), &idx, dim)),
        })
    }

    fn index_add(&mut self, dims: &[usize], indices: &Self, il: &Layout, src: &Self, sl: &Layout, dim: usize) -> Result<()> {
        let idx = indices_of("index_add", indices, il)?;
        index_select::check_bounds("index_add", &idx, dims[dim])?;
        check_same("index_add", self, src)?;
        match (self, src) {
            (CpuStorage::F32(d), CpuStorage::F32(s)) => index_select::index_add(d, dims, &idx, &gather(s, sl), dim),
            (CpuStorage::F64(d), CpuStorage::F64(s)) => index_select::index_add(d, dims, &idx, &gather(s, sl), dim),
            (d, _) => return Err(unsupported("index_add", d.dtype())),
        }
        Ok(())
    }

    fn adam_update(&mut self, grad: &Self, m: &mut Self, v: &mut Self, s: &AdamStep) -> Result<()> {
        check_same("adam", self, grad)?;
        match (self, grad, m, v) {
            (CpuStorage::F32(p), CpuStorage::F32(g), CpuStorage::F32(m), CpuStorage::F32(v)) => optim::adam(p, g, m, v, s),
            (CpuStorage::F64(p), CpuStorage::F64(g), CpuStorage::F64(m), CpuStorage::F64(v)) => optim::adam(p, g, m, v, s),
            (p, ..) => return Err(unsupported("adam", p.dtype())),
        }
        Ok(())
    }

    fn ema_update(&mut self, src: &Self, decay: f64) -> Result<()> {
        check_same("ema", self, src)?;
        match (self, src) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => optim::ema(a, b, decay),
            (CpuStorage::F64(a), CpuStorage::F64(b)) => optim::ema(a, b, decay),
            (a, _) => return Err(unsupported("ema", a.dtype())),
        }
        Ok(())
    }

    /// `grad * silu'(self)` in one pass (see `elementwise::silu_backward`).
    fn silu_backward(&self, layout: &Layout, grad: &Self, grad_layout: &Layout) -> Result<Self> {
        Ok(map_float2!(self, grad, "silu backward", |x, g| elementwise::silu_backward(x, layout, g, grad_layout)))
    }

    /// Inverted dropout's output and scaled mask in one pass (see
    /// `random::dropout`).
    fn dropout(&self, layout: &Layout, keep: f64, scale: f64, key: u64, start: u64) -> Result<Option<(Self, Self)>> {
        Ok(Some(match self {
            CpuStorage::F32(v) => {
                let (o, m) = random::dropout(v, layout, keep, scale, key, start);
                (CpuStorage::F32(o), CpuStorage::F32(m))
            }
            CpuStorage::F64(v) => {
                let (o, m) = random::dropout(v, layout, keep, scale, key, start);
                (CpuStorage::F64(o), CpuStorage::F64(m))
            }
            // No fused kernel for the other dtypes: the front end composes one.
            _ => return Ok(None),
        }))
    }

    /// Joins by copying whole blocks, each output element written once,
    /// instead of zero-filling first (see `elementwise::build` for why that
    /// matters here).
    fn cat(parts: &[(&Self, &Layout)], dim: usize) -> Result<Self> {
        CpuStorage::concat(parts, dim)
    }

    /// `self += src[layout]` for a contiguous `src` with as many elements
    /// as `self`; false (and nothing done) for other dtypes or sizes.
    fn add_assign(&mut self, src: &Self, layout: &Layout) -> Result<bool> {
        if !layout.is_contiguous() || layout.elem_count() != self.len() {
            return Ok(false);
        }
        match (self, src) {
            (CpuStorage::F32(d), CpuStorage::F32(s)) => elementwise::add_assign(d, contiguous_slice(s, layout)),
            (CpuStorage::F64(d), CpuStorage::F64(s)) => elementwise::add_assign(d, contiguous_slice(s, layout)),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// `group_norm` and `group_norm_silu`, by dtype.
#[allow(clippy::too_many_arguments)]
fn normalise(
    op: &'static str,
    x: &CpuStorage,
    layout: &Layout,
    gamma: &CpuStorage,
    gl: &Layout,
    beta: &CpuStorage,
    bl: &Layout,
    p: &GroupNormParams,
    with_silu: bool,
) -> Result<(CpuStorage, CpuStorage, CpuStorage)> {
    check_same(op, x, gamma)?;
    check_same(op, x, beta)?;
    macro_rules! run {
        ($t:ty, $variant:ident) => {{
            let f = if with_silu { group_norm::group_norm_silu::<$t> } else { group_norm::group_norm::<$t> };
            let (y, mean, rstd) = f(p, float_slice::<$t>(x, layout), float_slice::<$t>(gamma, gl), float_slice::<$t>(beta, bl));
            Ok((CpuStorage::$variant(y), CpuStorage::$variant(mean), CpuStorage::$variant(rstd)))
        }};
    }
    match x {
        CpuStorage::F32(_) => run!(f32, F32),
        CpuStorage::F64(_) => run!(f64, F64),
        other => Err(unsupported(op, other.dtype())),
    }
}

/// `group_norm_backward`, and with `silu_beta` `group_norm_silu_backward`, by dtype.
#[allow(clippy::too_many_arguments)]
fn normalise_backward(
    op: &'static str,
    x: &CpuStorage,
    gamma: &CpuStorage,
    silu_beta: Option<&CpuStorage>,
    mean: &CpuStorage,
    rstd: &CpuStorage,
    grad_y: &CpuStorage,
    p: &GroupNormParams,
) -> Result<(CpuStorage, CpuStorage, CpuStorage)> {
    for other in [gamma, mean, rstd, grad_y].into_iter().chain(silu_beta) {
        check_same(op, x, other)?;
    }
    macro_rules! run {
        ($t:ty, $variant:ident) => {{
            let whole = whole_slice::<$t>;
            let (dx, dg, db) = match silu_beta {
                None => group_norm::group_norm_backward::<$t>(p, whole(x), whole(gamma), whole(mean), whole(rstd), whole(grad_y)),
                Some(beta) => group_norm::group_norm_silu_backward::<$t>(
                    p,
                    whole(x),
                    whole(gamma),
                    whole(beta),
                    whole(mean),
                    whole(rstd),
                    whole(grad_y),
                ),
            };
            Ok((CpuStorage::$variant(dx), CpuStorage::$variant(dg), CpuStorage::$variant(db)))
        }};
    }
    match x {
        CpuStorage::F32(_) => run!(f32, F32),
        CpuStorage::F64(_) => run!(f64, F64),
        other => Err(unsupported(op, other.dtype())),
    }
}
