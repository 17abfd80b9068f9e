//! Elementwise kernels: unary maps, broadcasting binary ops, comparisons,
//! `where`, and the fused silu backward and gradient accumulation.
//!
//! Each op is a scalar function applied along strided runs (see
//! `StridedRows`); the contiguous same-shape case skips index arithmetic.
//!
//! CUDA twin: `cuda/elementwise.rs` (launches) and `cuda/elementwise.cu` (kernels).

use super::float::Float;
use super::simd::avx2_dispatch;
use super::strided::{contiguous_slice, fill_rows, StridedRows};
use super::PARALLEL_THRESHOLD;
use crate::backend::{BinaryOp, CmpOp, UnaryOp};
use crate::Layout;
use rayon::prelude::*;
use std::mem::MaybeUninit;

#[inline(always)]
fn sigmoid<T: Float>(x: T) -> T {
    T::ONE / (T::ONE + (-x).exp_sat())
}

/// x sigmoid(x) as x / (1 + e^-x): one division instead of two.
#[inline(always)]
pub(crate) fn silu<T: Float>(x: T) -> T {
    x / (T::ONE + (-x).exp_sat())
}

/// d silu / dx = s (1 + x (1 - s)), s = sigmoid(x).
#[inline(always)]
pub(crate) fn silu_grad<T: Float>(x: T) -> T {
    let s = sigmoid(x);
    s * (T::ONE + x * (T::ONE - s))
}

#[inline(always)]
pub fn apply_unary<T: Float>(op: UnaryOp, x: T) -> T {
    match op {
        UnaryOp::Neg => -x,
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Sqr => x * x,
        UnaryOp::Recip => T::ONE / x,
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Sigmoid => sigmoid(x),
        UnaryOp::Silu => silu(x),
        // NaN passes through relu, clamp and the scalar bounds, as in
        // PyTorch: a NaN must not be silently replaced by a bound.
        UnaryOp::Relu => {
            if x <= T::ZERO {
                T::ZERO
            } else {
                x
            }
        }
        UnaryOp::Abs => x.abs(),
        UnaryOp::Sin => x.sin(),
        UnaryOp::Cos => x.cos(),
        UnaryOp::Powf(e) => x.powf(T::from_f64(e)),
        UnaryOp::Clamp(lo, hi) => {
            if x.is_nan() {
                x
            } else {
                x.max(T::from_f64(lo)).min(T::from_f64(hi))
            }
        }
        UnaryOp::Affine { mul, add } => x * T::from_f64(mul) + T::from_f64(add),
        UnaryOp::MaxScalar(s) => {
            if x.is_nan() {
                x
            } else {
                x.max(T::from_f64(s))
            }
        }
        UnaryOp::MinScalar(s) => {
            if x.is_nan() {
                x
            } else {
                x.min(T::from_f64(s))
            }
        }
        UnaryOp::SiluGrad => silu_grad(x),
        UnaryOp::Step => {
            if x > T::ZERO {
                T::ONE
            } else {
                T::ZERO
            }
        }
    }
}

#[inline(always)]
fn apply_binary<T: Float>(op: BinaryOp, a: T, b: T) -> T {
    match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => a / b,
        // NaN wins, as in PyTorch.
        BinaryOp::Maximum => {
            if a.is_nan() || a > b {
                a
            } else {
                b
            }
        }
        BinaryOp::Minimum => {
            if a.is_nan() || a < b {
                a
            } else {
                b
            }
        }
    }
}

#[inline(always)]
fn apply_cmp<T: Float>(op: CmpOp, a: T, b: T) -> T {
    let holds = match op {
        CmpOp::Eq => a == b,
        CmpOp::Ne => a != b,
        CmpOp::Lt => a < b,
        CmpOp::Le => a <= b,
        CmpOp::Gt => a > b,
        CmpOp::Ge => a >= b,
    };
    if holds {
        T::ONE
    } else {
        T::ZERO
    }
}

// Each loop below is also compiled for AVX2 + FMA and picked at run time
// (see `simd.rs`).

/// `out[i] = f(src[i])`; the slices have one length.
#[inline(always)]
fn map_slice<T: Copy, U>(src: &[T], out: &mut [MaybeUninit<U>], f: impl Fn(T) -> U) {
    #[inline(always)]
    fn run<T: Copy, U>(src: &[T], out: &mut [MaybeUninit<U>], f: impl Fn(T) -> U) {
        for (o, &x) in out.iter_mut().zip(src) {
            o.write(f(x));
        }
    }
    avx2_dispatch!(run<T: Copy, U>(src: &[T], out: &mut [MaybeUninit<U>], f: impl Fn(T) -> U))
}

/// `out[i] = f(a[i], b[i])`; the slices have one length.
#[inline(always)]
pub(super) fn zip_slice<T: Copy, U>(a: &[T], b: &[T], out: &mut [MaybeUninit<U>], f: impl Fn(T, T) -> U) {
    #[inline(always)]
    fn run<T: Copy, U>(a: &[T], b: &[T], out: &mut [MaybeUninit<U>], f: impl Fn(T, T) -> U) {
        for (o, (&x, &y)) in out.iter_mut().zip(a.iter().zip(b)) {
            o.write(f(x, y));
        }
    }
    avx2_dispatch!(run<T: Copy, U>(a: &[T], b: &[T], out: &mut [MaybeUninit<U>], f: impl Fn(T, T) -> U))
}

/// `dst[i] += src[i]`; the slices have one length.
#[inline(always)]
fn add_slice<T: Float>(dst: &mut [T], src: &[T]) {
    #[inline(always)]
    fn run<T: Float>(dst: &mut [T], src: &[T]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d += s;
        }
    }
    avx2_dispatch!(run<T: Float>(dst: &mut [T], src: &[T]))
}

/// Elements per parallel task in `build`: big enough to amortise a task,
/// small enough to balance two threads.
const CHUNK: usize = 1 << 14;

/// A vector of `n` elements, each written exactly once by `fill(start,
/// chunk)` (chunk `i` of the output starts at element `start`), in parallel
/// chunks when large. Nothing is zero-filled first: in this VM, zeroing
/// fresh memory and then overwriting it costs a memset and two page faults
/// per page, where writing it once costs one fault.
pub(crate) fn build<U: Send>(n: usize, fill: impl Fn(usize, &mut [MaybeUninit<U>]) + Sync) -> Vec<U> {
    let mut out = Vec::with_capacity(n);
    let spare = &mut out.spare_capacity_mut()[..n];
    if n >= PARALLEL_THRESHOLD {
        spare.par_chunks_mut(CHUNK).enumerate().for_each(|(i, c)| fill(i * CHUNK, c));
    } else {
        fill(0, spare);
    }
    // SAFETY: `fill` wrote every element (all kernels below write their
    // whole chunk); if it panicked we never get here and the Vec stays empty.
    unsafe { out.set_len(n) };
    out
}

/// Maps `f` over one strided operand into a new contiguous vector.
#[inline(always)]
pub(super) fn map1<T: Float, U: Float>(v: &[T], l: &Layout, f: impl Fn(T) -> U + Sync + Send + Copy) -> Vec<U> {
    if l.is_contiguous() {
        let src = contiguous_slice(v, l);
        return build(src.len(), |start, out| map_slice(&src[start..start + out.len()], out, f));
    }
    let rows = StridedRows::new(l.dims(), &[l]);
    let stride = rows.run_strides[0];
    uninit_rows(l.elem_count(), rows.run_len, |r, row| {
        let off = rows.offset(0, r);
        for (i, o) in row.iter_mut().enumerate() {
            o.write(f(v[off + i * stride]));
        }
    })
}

/// `fill_rows` into a fresh vector of `n` elements that is not zeroed first.
fn uninit_rows<U: Send>(n: usize, run_len: usize, fill: impl Fn(usize, &mut [MaybeUninit<U>]) + Sync) -> Vec<U> {
    let mut out = Vec::with_capacity(n);
    fill_rows(&mut out.spare_capacity_mut()[..n], run_len, fill);
    // SAFETY: fill_rows hands every row of the n elements to `fill`, which
    // writes all of it.
    unsafe { out.set_len(n) };
    out
}

/// Maps `f` over two strided operands of one shape into a contiguous vector.
#[inline(always)]
fn map2<T: Float>(a: &[T], al: &Layout, b: &[T], bl: &Layout, f: impl Fn(T, T) -> T + Sync + Send + Copy) -> Vec<T> {
    if al.is_contiguous() && bl.is_contiguous() {
        let (x, y) = (contiguous_slice(a, al), contiguous_slice(b, bl));
        return build(x.len(), |start, out| {
            let end = start + out.len();
            zip_slice(&x[start..end], &y[start..end], out, f)
        });
    }
    let rows = StridedRows::new(al.dims(), &[al, bl]);
    let (sa, sb) = (rows.run_strides[0], rows.run_strides[1]);
    uninit_rows(al.elem_count(), rows.run_len, |r, row| {
        let (oa, ob) = (rows.offset(0, r), rows.offset(1, r));
        let len = row.len();
        match (sa, sb) {
            // The broadcast patterns of a network (bias, scale) get tight loops.
            (1, 0) => {
                let y = b[ob];
                map_slice(&a[oa..oa + len], row, |x| f(x, y))
            }
            (0, 1) => {
                let x = a[oa];
                map_slice(&b[ob..ob + len], row, |y| f(x, y))
            }
            (1, 1) => zip_slice(&a[oa..oa + len], &b[ob..ob + len], row, f),
            _ => {
                for (i, o) in row.iter_mut().enumerate() {
                    o.write(f(a[oa + i * sa], b[ob + i * sb]));
                }
            }
        }
    })
}

pub fn unary<T: Float>(v: &[T], l: &Layout, op: UnaryOp) -> Vec<T> {
    // Matching once here, not per element, lets each loop vectorise.
    match op {
        UnaryOp::Neg => map1(v, l, |x: T| -x),
        UnaryOp::Sqr => map1(v, l, |x: T| x * x),
        UnaryOp::Sqrt => map1(v, l, |x: T| x.sqrt()),
        UnaryOp::Recip => map1(v, l, |x: T| T::ONE / x),
        UnaryOp::Sigmoid => map1(v, l, sigmoid),
        UnaryOp::Silu => map1(v, l, silu),
        UnaryOp::SiluGrad => map1(v, l, silu_grad),
        UnaryOp::Affine { mul, add } => {
            let (m, a) = (T::from_f64(mul), T::from_f64(add));
            map1(v, l, move |x: T| x * m + a)
        }
        UnaryOp::Step => map1(v, l, |x: T| if x > T::ZERO { T::ONE } else { T::ZERO }),
        _ => map1(v, l, move |x| apply_unary(op, x)),
    }
}

/// The input gradient of silu, `g * silu'(x)`, in one pass (instead of
/// computing silu'(x) into a temporary and multiplying).
pub fn silu_backward<T: Float>(x: &[T], xl: &Layout, g: &[T], gl: &Layout) -> Vec<T> {
    map2(x, xl, g, gl, |x, g| g * silu_grad(x))
}

/// `dst += src`, in parallel chunks when large.
pub fn add_assign<T: Float>(dst: &mut [T], src: &[T]) {
    if dst.len() >= PARALLEL_THRESHOLD {
        dst.par_chunks_mut(CHUNK).zip(src.par_chunks(CHUNK)).for_each(|(d, s)| add_slice(d, s));
    } else {
        add_slice(dst, src);
    }
}

pub fn binary<T: Float>(a: &[T], al: &Layout, b: &[T], bl: &Layout, op: BinaryOp) -> Vec<T> {
    // Matching once here lets the compiler specialise each inner loop.
    match op {
        BinaryOp::Add => map2(a, al, b, bl, |x, y| x + y),
        BinaryOp::Sub => map2(a, al, b, bl, |x, y| x - y),
        BinaryOp::Mul => map2(a, al, b, bl, |x, y| x * y),
        BinaryOp::Div => map2(a, al, b, bl, |x, y| x / y),
        _ => map2(a, al, b, bl, move |x, y| apply_binary(op, x, y)),
    }
}

pub fn cmp<T: Float>(a: &[T], al: &Layout, b: &[T], bl: &Layout, op: CmpOp) -> Vec<T> {
    map2(a, al, b, bl, move |x, y| apply_cmp(op, x, y))
}

/// The mask as a contiguous vector of bools.
pub fn mask_of<T: Float>(m: &[T], l: &Layout) -> Vec<bool> {
    let as_float: Vec<T> = map1(m, l, |x| if x != T::ZERO { T::ONE } else { T::ZERO });
    as_float.into_iter().map(|x| x != T::ZERO).collect()
}

pub fn where_cond<T: Float>(mask: &[bool], a: &[T], al: &Layout, b: &[T], bl: &Layout) -> Vec<T> {
    let a = map1(a, al, |x| x);
    let b = map1(b, bl, |x| x);
    mask.iter().zip(a.iter().zip(&b)).map(|(&m, (&x, &y))| if m { x } else { y }).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn exp_f32_is_accurate() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (crate::cpu::float::exp_f32(x), (x as f64).exp());
            assert!(((got as f64 - want) / want).abs() < 3e-7, "exp({x}) = {got}, want {want}");
            x += 0.0137;
        }
        assert!(crate::cpu::float::exp_f32(f32::NAN).is_nan());
    }
}
