//! The CPU backend: flat `Vec`s plus kernels written over slices.
//!
//! Strided inputs are walked with `strided_rows`: the iteration dims are
//! coalesced first (see `shape::coalesce`), so the inner loop runs over the
//! longest possible stretch and the index arithmetic happens once per row.
//! Work is split across threads with rayon once it is large enough to pay.

pub mod conv;
mod allocator;
pub mod float;
pub mod group_norm;
pub mod matmul;
pub mod pool;
pub mod upsample;

mod elementwise;
pub use allocator::keep_freed_memory;
mod index;
mod reduce;

use crate::backend::{AdamStep, BackendStorage, BinaryOp, CmpOp, Conv2dParams, GroupNormParams, MatmulDims, Pool2dParams, ReduceOp, UnaryOp};
use crate::rng;
use crate::shape::coalesce;
use crate::{DType, Error, Layout, Result};
use float::Float;
use half::{bf16, f16};
use rayon::prelude::*;

/// Below this many elements, threads cost more than they save.
pub(crate) const PARALLEL_THRESHOLD: usize = 1 << 15;

#[derive(Debug, Clone, PartialEq)]
pub enum CpuStorage {
    F32(Vec<f32>),
    F64(Vec<f64>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    U32(Vec<u32>),
}

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

pub(crate) fn unsupported(op: &'static str, got: DType) -> Error {
    Error::UnsupportedDType { op, got, hint: "; compute in f32 or f64 (to_dtype)" }
}

/// The contiguous elements of a layout known to be contiguous.
pub(crate) fn contiguous_slice<'a, T>(data: &'a [T], layout: &Layout) -> &'a [T] {
    debug_assert!(layout.is_contiguous());
    &data[layout.offset()..layout.offset() + layout.elem_count()]
}

/// Calls `f(row, offsets, run_len, run_strides)` for every innermost run of an
/// iteration over `dims` in which operand `k` starts at `offsets[k]`. Rows are
/// numbered in row-major order; each row holds `run_len` output elements.
pub(crate) struct StridedRows {
    pub outer_dims: Vec<usize>,
    pub outer_strides: Vec<Vec<usize>>,
    pub run_len: usize,
    pub run_strides: Vec<usize>,
    pub base: Vec<usize>,
}

impl StridedRows {
    pub fn new(dims: &[usize], layouts: &[&Layout]) -> Self {
        let strides: Vec<&[usize]> = layouts.iter().map(|l| l.strides()).collect();
        let (mut cdims, mut cstrides) = coalesce(dims, &strides);
        let run_len = cdims.pop().unwrap();
        let run_strides = cstrides.iter_mut().map(|s| s.pop().unwrap()).collect();
        StridedRows {
            outer_dims: cdims,
            outer_strides: cstrides,
            run_len,
            run_strides,
            base: layouts.iter().map(|l| l.offset()).collect(),
        }
    }

    pub fn rows(&self) -> usize {
        self.outer_dims.iter().product()
    }

    /// Storage offset of operand `k` at the start of `row`.
    #[inline]
    pub fn offset(&self, k: usize, mut row: usize) -> usize {
        let mut off = self.base[k];
        for d in (0..self.outer_dims.len()).rev() {
            let n = self.outer_dims[d];
            off += (row % n) * self.outer_strides[k][d];
            row /= n;
        }
        off
    }
}

/// Fills `out` (contiguous, one row of `rows.run_len` per chunk) in parallel
/// when large, calling `fill(row, out_row)`.
pub(crate) fn fill_rows<U: Send>(out: &mut [U], run_len: usize, fill: impl Fn(usize, &mut [U]) + Sync) {
    if out.is_empty() {
        return;
    }
    if out.len() >= PARALLEL_THRESHOLD {
        let rows_per_task = (PARALLEL_THRESHOLD / run_len).max(1);
        out.par_chunks_mut(rows_per_task * run_len).enumerate().for_each(|(task, chunk)| {
            for (i, row) in chunk.chunks_mut(run_len).enumerate() {
                fill(task * rows_per_task + i, row);
            }
        });
    } else {
        for (r, row) in out.chunks_mut(run_len).enumerate() {
            fill(r, row);
        }
    }
}

/// Gathers a strided layout into a new contiguous vector.
pub(crate) fn gather<T: Copy + Send + Sync + Default>(data: &[T], layout: &Layout) -> Vec<T> {
    if layout.is_contiguous() {
        return contiguous_slice(data, layout).to_vec();
    }
    let rows = StridedRows::new(layout.dims(), &[layout]);
    let mut out = vec![T::default(); layout.elem_count()];
    let (len, stride) = (rows.run_len, rows.run_strides[0]);
    fill_rows(&mut out, len, |r, row| {
        let off = rows.offset(0, r);
        for (i, o) in row.iter_mut().enumerate() {
            *o = data[off + i * stride];
        }
    });
    out
}

fn scatter<T: Copy>(dst: &mut [T], dst_layout: &Layout, src: &[T], src_layout: &Layout) {
    let rows = StridedRows::new(dst_layout.dims(), &[dst_layout, src_layout]);
    let (ds, ss) = (rows.run_strides[0], rows.run_strides[1]);
    for r in 0..rows.rows() {
        let (d0, s0) = (rows.offset(0, r), rows.offset(1, r));
        for i in 0..rows.run_len {
            dst[d0 + i * ds] = src[s0 + i * ss];
        }
    }
}

impl CpuStorage {
    pub fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F64(_) => DType::F64,
            CpuStorage::F16(_) => DType::F16,
            CpuStorage::BF16(_) => DType::BF16,
            CpuStorage::U32(_) => DType::U32,
        }
    }

    pub fn full(n: usize, dtype: DType, value: f64) -> Self {
        match dtype {
            DType::F32 => CpuStorage::F32(vec![value as f32; n]),
            DType::F64 => CpuStorage::F64(vec![value; n]),
            DType::F16 => CpuStorage::F16(vec![f16::from_f64(value); n]),
            DType::BF16 => CpuStorage::BF16(vec![bf16::from_f64(value); n]),
            DType::U32 => CpuStorage::U32(vec![value as u32; n]),
        }
    }

    fn from_f64_fn(n: usize, dtype: DType, f: impl Fn(u64) -> f64 + Sync) -> Result<Self> {
        if dtype == DType::F32 {
            // The working dtype: round each value as it is made, instead of
            // filling an f64 vector and casting it (the same values).
            return Ok(CpuStorage::F32(elementwise::build(n, |start, out| {
                for (i, o) in out.iter_mut().enumerate() {
                    o.write(f((start + i) as u64) as f32);
                }
            })));
        }
        let vals: Vec<f64> = if n >= PARALLEL_THRESHOLD {
            (0..n as u64).into_par_iter().map(&f).collect()
        } else {
            (0..n as u64).map(&f).collect()
        };
        CpuStorage::F64(vals).cast(dtype)
    }

    /// Uniform [lo, hi) values: element i is `rng::uniform_at(key, start, i)`.
    pub fn rand_uniform(n: usize, dtype: DType, key: u64, start: u64, lo: f64, hi: f64) -> Result<Self> {
        let mut values = Self::from_f64_fn(n, dtype, |i| rng::uniform_at(key, start, i, lo, hi))?;
        values.keep_below(lo, hi);
        Ok(values)
    }

    /// Rounding a draw just under `hi` to a narrow dtype can give `hi`
    /// itself (bf16 does for about one draw in 500 from [0, 1)), which
    /// [lo, hi) excludes: such values step down to the next value of the
    /// dtype, unless that falls below `lo` (a range narrower than one step).
    /// `cuda/random.cu` applies the same rule.
    pub(crate) fn keep_below(&mut self, lo: f64, hi: f64) {
        if lo.is_nan() || hi.is_nan() || hi <= lo {
            return;
        }
        fn fix<T: Copy>(v: &mut [T], lo: f64, hi: f64, to_f64: impl Fn(T) -> f64, down: impl Fn(T) -> T) {
            for x in v.iter_mut().filter(|x| to_f64(**x) >= hi) {
                let d = down(*x);
                if to_f64(d) >= lo {
                    *x = d;
                }
            }
        }
        // One step down in a 16-bit float's order (the same for f16 and bf16).
        fn down16(bits: u16) -> u16 {
            if bits & 0x7fff == 0 {
                0x8001 // from +-0 to the negative value nearest zero
            } else if bits & 0x8000 == 0 {
                bits - 1
            } else {
                bits + 1
            }
        }
        match self {
            CpuStorage::F32(v) => fix(v, lo, hi, |x| x as f64, f32::next_down),
            CpuStorage::F64(v) => fix(v, lo, hi, |x| x, f64::next_down),
            CpuStorage::F16(v) => fix(v, lo, hi, |x| x.to_f64(), |x| f16::from_bits(down16(x.to_bits()))),
            CpuStorage::BF16(v) => fix(v, lo, hi, |x| x.to_f64(), |x| bf16::from_bits(down16(x.to_bits()))),
            CpuStorage::U32(_) => {}
        }
    }

    /// Normal values: element i is `mean + std * rng::normal_at(key, start, i)`.
    pub fn rand_normal(n: usize, dtype: DType, key: u64, start: u64, mean: f64, std: f64) -> Result<Self> {
        Self::from_f64_fn(n, dtype, |i| mean + std * rng::normal_at(key, start, i))
    }

    /// Converts a contiguous whole storage to another dtype.
    pub fn cast(&self, dtype: DType) -> Result<Self> {
        fn conv<S: Copy + Sync, D: Send>(v: &[S], f: impl Fn(S) -> D + Sync + Send) -> Vec<D> {
            if v.len() >= PARALLEL_THRESHOLD {
                v.par_iter().map(|&x| f(x)).collect()
            } else {
                v.iter().map(|&x| f(x)).collect()
            }
        }
        let as_f64: Vec<f64>;
        let src: &[f64] = match self {
            CpuStorage::F64(v) => v,
            CpuStorage::F32(v) => {
                match dtype {
                    DType::F32 => return Ok(self.clone()),
                    DType::F16 => return Ok(CpuStorage::F16(conv(v, f16::from_f32))),
                    DType::BF16 => return Ok(CpuStorage::BF16(conv(v, bf16::from_f32))),
                    _ => {}
                }
                as_f64 = conv(v, |x| x as f64);
                &as_f64
            }
            CpuStorage::F16(v) => {
                if dtype == DType::F32 {
                    return Ok(CpuStorage::F32(conv(v, f16::to_f32)));
                }
                as_f64 = conv(v, f16::to_f64);
                &as_f64
            }
            CpuStorage::BF16(v) => {
                if dtype == DType::F32 {
                    return Ok(CpuStorage::F32(conv(v, bf16::to_f32)));
                }
                as_f64 = conv(v, bf16::to_f64);
                &as_f64
            }
            CpuStorage::U32(v) => {
                as_f64 = conv(v, |x| x as f64);
                &as_f64
            }
        };
        Ok(match dtype {
            DType::F64 => CpuStorage::F64(src.to_vec()),
            DType::F32 => CpuStorage::F32(conv(src, |x| x as f32)),
            DType::F16 => CpuStorage::F16(conv(src, f16::from_f64)),
            DType::BF16 => CpuStorage::BF16(conv(src, bf16::from_f64)),
            DType::U32 => CpuStorage::U32(conv(src, |x| x.max(0.0) as u32)),
        })
    }

    /// `grad * silu'(self)` in one pass (see `elementwise::silu_backward`).
    pub fn silu_backward(&self, layout: &Layout, grad: &Self, grad_layout: &Layout) -> Result<Self> {
        Ok(map_float2!(self, grad, "silu backward", |x, g| elementwise::silu_backward(x, layout, g, grad_layout)))
    }

    /// Inverted dropout's output and scaled mask in one pass (see
    /// `elementwise::dropout`).
    pub fn dropout(&self, layout: &Layout, keep: f64, scale: f64, key: u64, start: u64) -> Result<(Self, Self)> {
        Ok(match self {
            CpuStorage::F32(v) => {
                let (o, m) = elementwise::dropout(v, layout, keep, scale, key, start);
                (CpuStorage::F32(o), CpuStorage::F32(m))
            }
            CpuStorage::F64(v) => {
                let (o, m) = elementwise::dropout(v, layout, keep, scale, key, start);
                (CpuStorage::F64(o), CpuStorage::F64(m))
            }
            other => return Err(unsupported("dropout", other.dtype())),
        })
    }

    /// Joins `parts` (one dtype, equal dims except `dim`) along `dim` into
    /// a new contiguous storage. Each output element is written once, by
    /// copying whole blocks, instead of into zeros first (see
    /// `elementwise::build` for why that matters here).
    pub fn cat(parts: &[(&CpuStorage, &Layout)], dim: usize) -> Result<Self> {
        fn join<T: Copy + Send + Sync + Default + 'static>(parts: &[(&CpuStorage, &Layout)], dim: usize) -> Vec<T> {
            let dims = parts[0].1.dims();
            let outer: usize = dims[..dim].iter().product();
            let inner: usize = dims[dim + 1..].iter().product();
            let blocks: Vec<(std::borrow::Cow<[T]>, usize)> = parts
                .iter()
                .map(|&(s, l)| {
                    let data = if l.is_contiguous() { float_slice::<T>(s, l).into() } else { gather(whole_slice::<T>(s), l).into() };
                    (data, l.dims()[dim] * inner)
                })
                .collect();
            let total: usize = blocks.iter().map(|(_, b)| b).sum::<usize>() * outer;
            let mut out = Vec::with_capacity(total);
            for o in 0..outer {
                for (data, block) in &blocks {
                    out.extend_from_slice(&data[o * block..(o + 1) * block]);
                }
            }
            out
        }
        for &(s, _) in &parts[1..] {
            check_same("cat", parts[0].0, s)?;
        }
        Ok(match parts[0].0 {
            CpuStorage::F32(_) => CpuStorage::F32(join(parts, dim)),
            CpuStorage::F64(_) => CpuStorage::F64(join(parts, dim)),
            CpuStorage::F16(_) => CpuStorage::F16(join(parts, dim)),
            CpuStorage::BF16(_) => CpuStorage::BF16(join(parts, dim)),
            CpuStorage::U32(_) => CpuStorage::U32(join(parts, dim)),
        })
    }

    /// `self += src[layout]` for a contiguous `src` with as many elements
    /// as `self`; false (and nothing done) for other dtypes or sizes.
    pub fn add_assign(&mut self, src: &Self, layout: &Layout) -> bool {
        if !layout.is_contiguous() || layout.elem_count() != BackendStorage::len(self) {
            return false;
        }
        match (self, src) {
            (CpuStorage::F32(d), CpuStorage::F32(s)) => elementwise::add_assign(d, contiguous_slice(s, layout)),
            (CpuStorage::F64(d), CpuStorage::F64(s)) => elementwise::add_assign(d, contiguous_slice(s, layout)),
            _ => return false,
        }
        true
    }

    /// The elements of `layout` as f64, for printing and tests.
    pub fn to_f64_vec(&self, layout: &Layout) -> Vec<f64> {
        match self.copy_strided(layout).and_then(|s| s.cast(DType::F64)) {
            Ok(CpuStorage::F64(v)) => v,
            _ => unreachable!("every dtype converts to f64"),
        }
    }

    pub fn as_f32(&self) -> Option<&[f32]> {
        match self {
            CpuStorage::F32(v) => Some(v),
            _ => None,
        }
    }
}

/// The slice of a float storage, for kernels that take contiguous input.
fn float_slice<'a, T: 'static>(s: &'a CpuStorage, layout: &Layout) -> &'a [T] {
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
fn whole_slice<T: 'static>(s: &CpuStorage) -> &[T] {
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

fn check_same(op: &'static str, a: &CpuStorage, b: &CpuStorage) -> Result<()> {
    if a.dtype() != b.dtype() {
        return Err(Error::DTypeMismatch { op, lhs: a.dtype(), rhs: b.dtype() });
    }
    Ok(())
}

fn indices_of<'a>(op: &'static str, s: &'a CpuStorage, layout: &Layout) -> Result<std::borrow::Cow<'a, [u32]>> {
    match s {
        CpuStorage::U32(v) if layout.is_contiguous() => Ok(contiguous_slice(v, layout).into()),
        CpuStorage::U32(v) => Ok(gather(v, layout).into()),
        other => Err(Error::UnsupportedDType { op, got: other.dtype(), hint: "; indices must be u32" }),
    }
}

impl BackendStorage for CpuStorage {
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
        Ok(map_float2!(self, rhs, "matmul", |a, b| batched_matmul(a, layout, b, rhs_layout, dims)))
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
        check_same("group_norm", self, gamma)?;
        check_same("group_norm", self, beta)?;
        macro_rules! run {
            ($t:ty, $variant:ident) => {{
                let (y, mean, rstd) = group_norm::group_norm::<$t>(
                    p,
                    float_slice::<$t>(self, layout),
                    float_slice::<$t>(gamma, gl),
                    float_slice::<$t>(beta, bl),
                );
                Ok((CpuStorage::$variant(y), CpuStorage::$variant(mean), CpuStorage::$variant(rstd)))
            }};
        }
        match self {
            CpuStorage::F32(_) => run!(f32, F32),
            CpuStorage::F64(_) => run!(f64, F64),
            other => Err(unsupported("group_norm", other.dtype())),
        }
    }

    fn group_norm_backward(&self, gamma: &Self, mean: &Self, rstd: &Self, grad_y: &Self, p: &GroupNormParams) -> Result<(Self, Self, Self)> {
        for other in [gamma, mean, rstd, grad_y] {
            check_same("group_norm backward", self, other)?;
        }
        macro_rules! run {
            ($t:ty, $variant:ident) => {{
                let whole = whole_slice::<$t>;
                let (dx, dg, db) =
                    group_norm::group_norm_backward::<$t>(p, whole(self), whole(gamma), whole(mean), whole(rstd), whole(grad_y));
                Ok((CpuStorage::$variant(dx), CpuStorage::$variant(dg), CpuStorage::$variant(db)))
            }};
        }
        match self {
            CpuStorage::F32(_) => run!(f32, F32),
            CpuStorage::F64(_) => run!(f64, F64),
            other => Err(unsupported("group_norm backward", other.dtype())),
        }
    }

    fn index_select(&self, layout: &Layout, indices: &Self, il: &Layout, dim: usize) -> Result<Self> {
        let idx = indices_of("index_select", indices, il)?;
        index::check_bounds("index_select", &idx, layout.dims()[dim])?;
        Ok(match self {
            CpuStorage::F32(v) => CpuStorage::F32(index::index_select(contiguous_slice(v, layout), layout.dims(), &idx, dim)),
            CpuStorage::F64(v) => CpuStorage::F64(index::index_select(contiguous_slice(v, layout), layout.dims(), &idx, dim)),
            CpuStorage::F16(v) => CpuStorage::F16(index::index_select(contiguous_slice(v, layout), layout.dims(), &idx, dim)),
            CpuStorage::BF16(v) => CpuStorage::BF16(index::index_select(contiguous_slice(v, layout), layout.dims(), &idx, dim)),
            CpuStorage::U32(v) => CpuStorage::U32(index::index_select(contiguous_slice(v, layout), layout.dims(), &idx, dim)),
        })
    }

    fn index_add(&mut self, dims: &[usize], indices: &Self, il: &Layout, src: &Self, sl: &Layout, dim: usize) -> Result<()> {
        let idx = indices_of("index_add", indices, il)?;
        index::check_bounds("index_add", &idx, dims[dim])?;
        check_same("index_add", self, src)?;
        match (self, src) {
            (CpuStorage::F32(d), CpuStorage::F32(s)) => index::index_add(d, dims, &idx, &gather(s, sl), dim),
            (CpuStorage::F64(d), CpuStorage::F64(s)) => index::index_add(d, dims, &idx, &gather(s, sl), dim),
            (d, _) => return Err(unsupported("index_add", d.dtype())),
        }
        Ok(())
    }

    fn adam_update(&mut self, grad: &Self, m: &mut Self, v: &mut Self, s: &AdamStep) -> Result<()> {
        check_same("adam", self, grad)?;
        match (self, grad, m, v) {
            (CpuStorage::F32(p), CpuStorage::F32(g), CpuStorage::F32(m), CpuStorage::F32(v)) => elementwise::adam(p, g, m, v, s),
            (CpuStorage::F64(p), CpuStorage::F64(g), CpuStorage::F64(m), CpuStorage::F64(v)) => elementwise::adam(p, g, m, v, s),
            (p, ..) => return Err(unsupported("adam", p.dtype())),
        }
        Ok(())
    }

    fn ema_update(&mut self, src: &Self, decay: f64) -> Result<()> {
        check_same("ema", self, src)?;
        match (self, src) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => elementwise::ema(a, b, decay),
            (CpuStorage::F64(a), CpuStorage::F64(b)) => elementwise::ema(a, b, decay),
            (a, _) => return Err(unsupported("ema", a.dtype())),
        }
        Ok(())
    }
}

/// `dims.batch` products; operands are [batch, rows, cols] views whose
/// strides go straight to `gemm` (transposes cost nothing).
fn batched_matmul<T: Float>(a: &[T], al: &Layout, b: &[T], bl: &Layout, d: MatmulDims) -> Vec<T> {
    use matmul::{gemm, MatRef};
    let mut out = vec![T::ZERO; d.batch * d.m * d.n];
    let (as_, bs) = (al.strides(), bl.strides());
    let operand = |data, l: &Layout, s: &[usize], i: usize| MatRef {
        data,
        offset: l.offset() + i * s[0],
        row_stride: s[1] as isize,
        col_stride: s[2] as isize,
    };
    let threads = rayon::current_num_threads();
    let per_product = d.m * d.n * d.k;
    if d.batch > 1 && per_product < 256 * 256 * 256 {
        // Many small products: one thread each beats splitting each one.
        out.par_chunks_mut((d.m * d.n).max(1)).enumerate().for_each(|(i, dst)| {
            gemm(d.m, d.n, d.k, operand(a, al, as_, i), operand(b, bl, bs, i), dst, false, 1);
        });
    } else {
        for (i, dst) in out.chunks_mut((d.m * d.n).max(1)).enumerate().take(d.batch) {
            gemm(d.m, d.n, d.k, operand(a, al, as_, i), operand(b, bl, bs, i), dst, false, threads);
        }
    }
    out
}
