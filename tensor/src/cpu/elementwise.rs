//! Elementwise kernels: unary maps, broadcasting binary ops, comparisons,
//! `where`, and the fused optimizer updates.
//!
//! Each op is a scalar function applied along strided runs (see
//! `StridedRows`); the contiguous same-shape case skips index arithmetic.

use super::{contiguous_slice, fill_rows, float::Float, StridedRows, PARALLEL_THRESHOLD};
use crate::backend::{AdamStep, BinaryOp, CmpOp, UnaryOp};
use crate::Layout;
use rayon::prelude::*;

#[inline(always)]
fn sigmoid<T: Float>(x: T) -> T {
    T::ONE / (T::ONE + (-x).exp())
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
        UnaryOp::Silu => x * sigmoid(x),
        UnaryOp::Relu => {
            if x > T::ZERO {
                x
            } else {
                T::ZERO
            }
        }
        UnaryOp::Abs => x.abs(),
        UnaryOp::Sin => x.sin(),
        UnaryOp::Cos => x.cos(),
        UnaryOp::Powf(e) => x.powf(T::from_f64(e)),
        UnaryOp::Clamp(lo, hi) => x.max(T::from_f64(lo)).min(T::from_f64(hi)),
        UnaryOp::Affine { mul, add } => x * T::from_f64(mul) + T::from_f64(add),
        UnaryOp::MaxScalar(s) => x.max(T::from_f64(s)),
        UnaryOp::MinScalar(s) => x.min(T::from_f64(s)),
        UnaryOp::SiluGrad => {
            let s = sigmoid(x);
            s * (T::ONE + x * (T::ONE - s))
        }
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

/// Maps `f` over one strided operand into a new contiguous vector.
fn map1<T: Float, U: Float>(v: &[T], l: &Layout, f: impl Fn(T) -> U + Sync + Send) -> Vec<U> {
    if l.is_contiguous() {
        let src = contiguous_slice(v, l);
        return if src.len() >= PARALLEL_THRESHOLD {
            src.par_iter().map(|&x| f(x)).collect()
        } else {
            src.iter().map(|&x| f(x)).collect()
        };
    }
    let rows = StridedRows::new(l.dims(), &[l]);
    let mut out = vec![U::ZERO; l.elem_count()];
    let stride = rows.run_strides[0];
    fill_rows(&mut out, rows.run_len, |r, row| {
        let off = rows.offset(0, r);
        for (i, o) in row.iter_mut().enumerate() {
            *o = f(v[off + i * stride]);
        }
    });
    out
}

/// Maps `f` over two strided operands of one shape into a contiguous vector.
fn map2<T: Float>(a: &[T], al: &Layout, b: &[T], bl: &Layout, f: impl Fn(T, T) -> T + Sync + Send) -> Vec<T> {
    if al.is_contiguous() && bl.is_contiguous() {
        let (x, y) = (contiguous_slice(a, al), contiguous_slice(b, bl));
        return if x.len() >= PARALLEL_THRESHOLD {
            x.par_iter().zip(y.par_iter()).map(|(&p, &q)| f(p, q)).collect()
        } else {
            x.iter().zip(y).map(|(&p, &q)| f(p, q)).collect()
        };
    }
    let rows = StridedRows::new(al.dims(), &[al, bl]);
    let mut out = vec![T::ZERO; al.elem_count()];
    let (sa, sb) = (rows.run_strides[0], rows.run_strides[1]);
    fill_rows(&mut out, rows.run_len, |r, row| {
        let (oa, ob) = (rows.offset(0, r), rows.offset(1, r));
        match (sa, sb) {
            // The broadcast patterns of a network (bias, scale) get tight loops.
            (1, 0) => {
                let (y, len) = (b[ob], row.len());
                for (o, &x) in row.iter_mut().zip(&a[oa..oa + len]) {
                    *o = f(x, y);
                }
            }
            (0, 1) => {
                let (x, len) = (a[oa], row.len());
                for (o, &y) in row.iter_mut().zip(&b[ob..ob + len]) {
                    *o = f(x, y);
                }
            }
            _ => {
                for (i, o) in row.iter_mut().enumerate() {
                    *o = f(a[oa + i * sa], b[ob + i * sb]);
                }
            }
        }
    });
    out
}

pub fn unary<T: Float>(v: &[T], l: &Layout, op: UnaryOp) -> Vec<T> {
    map1(v, l, |x| apply_unary(op, x))
}

pub fn binary<T: Float>(a: &[T], al: &Layout, b: &[T], bl: &Layout, op: BinaryOp) -> Vec<T> {
    // Matching once here lets the compiler specialise each inner loop.
    match op {
        BinaryOp::Add => map2(a, al, b, bl, |x, y| x + y),
        BinaryOp::Sub => map2(a, al, b, bl, |x, y| x - y),
        BinaryOp::Mul => map2(a, al, b, bl, |x, y| x * y),
        BinaryOp::Div => map2(a, al, b, bl, |x, y| x / y),
        _ => map2(a, al, b, bl, |x, y| apply_binary(op, x, y)),
    }
}

pub fn cmp<T: Float>(a: &[T], al: &Layout, b: &[T], bl: &Layout, op: CmpOp) -> Vec<T> {
    map2(a, al, b, bl, |x, y| apply_cmp(op, x, y))
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

/// PyTorch's Adam/AdamW update, fused into one pass over the parameter.
pub fn adam<T: Float>(p: &mut [T], g: &[T], m: &mut [T], v: &mut [T], s: &AdamStep) {
    let (b1, b2) = (T::from_f64(s.beta1), T::from_f64(s.beta2));
    let step_size = T::from_f64(s.lr / s.bias_correction1);
    let bc2_sqrt = T::from_f64(s.bias_correction2.sqrt());
    let eps = T::from_f64(s.eps);
    let wd = T::from_f64(s.weight_decay);
    let decay = T::from_f64(1.0 - s.lr * s.decoupled_decay);
    let update = |p: &mut T, &g: &T, m: &mut T, v: &mut T| {
        let g = g + wd * *p;
        *p *= decay;
        *m = b1 * *m + (T::ONE - b1) * g;
        *v = b2 * *v + (T::ONE - b2) * g * g;
        // torch: denom = sqrt(v) / sqrt(bc2) + eps; p -= lr / bc1 * m / denom
        *p -= step_size * *m / ((*v).sqrt() / bc2_sqrt + eps);
    };
    p.par_iter_mut()
        .zip(g.par_iter())
        .zip(m.par_iter_mut().zip(v.par_iter_mut()))
        .with_min_len(PARALLEL_THRESHOLD)
        .for_each(|((p, g), (m, v))| update(p, g, m, v));
}

pub fn ema<T: Float>(avg: &mut [T], src: &[T], decay: f64) {
    let (d, rest) = (T::from_f64(decay), T::from_f64(1.0 - decay));
    avg.par_iter_mut()
        .zip(src.par_iter())
        .with_min_len(PARALLEL_THRESHOLD)
        .for_each(|(a, &s)| *a = d * *a + rest * s);
}
