//! Shared helpers for the property tests of the tensor ops: random shapes
//! and values, non-contiguous views holding given values, a naive f64
//! reference indexed element by element, and a tolerance-stating
//! `assert_close`.
//!
//! Each test file uses only some of these.
#![allow(dead_code)]

use proptest::prelude::*;
use tensor::{DType, Device, Tensor};

pub const CPU: Device = Device::Cpu;

// ---- strategies ---------------------------------------------------------

/// One dim: 0..=6, with 1 drawn often so size-1 dims (broadcasting,
/// squeeze, coalescing corner cases) show up in most shapes, and 0 now and
/// then so every op also meets empty tensors.
pub fn dim() -> impl Strategy<Value = usize> {
    prop_oneof![1 => Just(0usize), 3 => Just(1usize), 8 => 1usize..=6]
}

/// One dim of 1..=6, for ops that have no value on an empty input (the max
/// of nothing).
pub fn nonzero_dim() -> impl Strategy<Value = usize> {
    prop_oneof![1 => Just(1usize), 3 => 1usize..=6]
}

/// A shape of rank 0..=4 with dims in 0..=6.
pub fn shape() -> BoxedStrategy<Vec<usize>> {
    shape_rank(0..=4)
}

pub fn shape_rank(rank: std::ops::RangeInclusive<usize>) -> BoxedStrategy<Vec<usize>> {
    prop::collection::vec(dim(), rank).boxed()
}

/// `n` values in [lo, hi).
pub fn values(n: usize, lo: f64, hi: f64) -> BoxedStrategy<Vec<f64>> {
    prop::collection::vec(lo..hi, n).boxed()
}

/// A shape and that many values in [-3, 3).
pub fn shaped_values() -> BoxedStrategy<(Vec<usize>, Vec<f64>)> {
    shaped_values_in(shape(), -3.0, 3.0)
}

pub fn shaped_values_in(shape: BoxedStrategy<Vec<usize>>, lo: f64, hi: f64) -> BoxedStrategy<(Vec<usize>, Vec<f64>)> {
    shape.prop_flat_map(move |s| {
        let n = s.iter().product();
        (Just(s), values(n, lo, hi))
    })
    .boxed()
}

/// Small integers / 2 in [-2, 2]: values with many ties, for comparisons,
/// argmax and max/min.
pub fn tied_values(n: usize) -> BoxedStrategy<Vec<f64>> {
    prop::collection::vec((-4i32..=4).prop_map(|i| i as f64 / 2.0), n).boxed()
}

/// `shape` with each dim replaced by 1 where `mask` has its bit set, and
/// the leading `drop` dims removed: a shape that broadcasts to `shape`.
pub fn squashed(shape: &[usize], drop: usize, mask: u8) -> Vec<usize> {
    let drop = drop.min(shape.len());
    shape[drop..].iter().enumerate().map(|(i, &d)| if mask >> i & 1 == 1 { 1 } else { d }).collect()
}

/// (output shape, lhs shape, rhs shape) where lhs and rhs broadcast to the
/// output: rank differences and size-1 stretching on either side.
pub fn broadcast_pair() -> BoxedStrategy<(Vec<usize>, Vec<usize>, Vec<usize>)> {
    (shape(), 0..=4usize, 0..=4usize, any::<u8>(), any::<u8>())
        .prop_map(|(out, da, db, ma, mb)| {
            let a = squashed(&out, da, ma);
            let b = squashed(&out, db, mb);
            // The true output is the broadcast of a and b (it can be smaller
            // than `out` when both dropped or squashed the same dims).
            let want = broadcast_shapes(&a, &b).expect("compatible by construction");
            (want, a, b)
        })
        .boxed()
}

/// NumPy's broadcast of two shapes, or None.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    (0..rank)
        .map(|i| {
            let x = if i + a.len() >= rank { a[i + a.len() - rank] } else { 1 };
            let y = if i + b.len() >= rank { b[i + b.len() - rank] } else { 1 };
            match (x, y) {
                (x, y) if x == y => Some(x),
                (1, y) => Some(y),
                (x, 1) => Some(x),
                _ => None,
            }
        })
        .collect()
}

// ---- naive reference ----------------------------------------------------

/// Row-major multi-index of flat position `i` in `dims`.
pub fn unravel(mut i: usize, dims: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; dims.len()];
    for d in (0..dims.len()).rev() {
        idx[d] = i % dims[d];
        i /= dims[d];
    }
    idx
}

/// Row-major flat position of `idx` in `dims`.
pub fn ravel(idx: &[usize], dims: &[usize]) -> usize {
    idx.iter().zip(dims).fold(0, |acc, (&i, &n)| {
        assert!(i < n, "index {idx:?} out of {dims:?}");
        acc * n + i
    })
}

/// Element `i` of a layout (offset + sum(index * stride)), computed the slow
/// way: the reference for every strided read.
pub fn strided_index(i: usize, dims: &[usize], strides: &[usize], offset: usize) -> usize {
    unravel(i, dims).iter().zip(strides).fold(offset, |acc, (&x, &s)| acc + x * s)
}

/// A plain row-major f64 array: the reference every op is compared with.
#[derive(Clone, Debug, PartialEq)]
pub struct Nd {
    pub dims: Vec<usize>,
    pub data: Vec<f64>,
}

impl Nd {
    pub fn new(dims: &[usize], data: Vec<f64>) -> Nd {
        assert_eq!(dims.iter().product::<usize>(), data.len());
        Nd { dims: dims.to_vec(), data }
    }

    pub fn from_fn(dims: &[usize], f: impl Fn(&[usize]) -> f64) -> Nd {
        let n = dims.iter().product();
        Nd { dims: dims.to_vec(), data: (0..n).map(|i| f(&unravel(i, dims))).collect() }
    }

    pub fn at(&self, idx: &[usize]) -> f64 {
        self.data[ravel(idx, &self.dims)]
    }

    /// The element at `idx` of the output of broadcasting `self` to a shape
    /// of rank `idx.len()`: trailing dims align, size-1 dims repeat.
    pub fn at_broadcast(&self, idx: &[usize]) -> f64 {
        let extra = idx.len() - self.dims.len();
        let own: Vec<usize> = self.dims.iter().enumerate().map(|(d, &n)| if n == 1 { 0 } else { idx[extra + d] }).collect();
        self.at(&own)
    }

    pub fn map(&self, f: impl Fn(f64) -> f64) -> Nd {
        Nd { dims: self.dims.clone(), data: self.data.iter().map(|&x| f(x)).collect() }
    }

    /// Elementwise `f` of two arrays broadcast to `out`.
    pub fn zip(&self, other: &Nd, out: &[usize], f: impl Fn(f64, f64) -> f64) -> Nd {
        Nd::from_fn(out, |i| f(self.at_broadcast(i), other.at_broadcast(i)))
    }

    pub fn round(&self, dtype: DType) -> Nd {
        self.map(|x| round_to(dtype, x))
    }
}

/// `x` rounded to the precision of `dtype` (what a tensor of that dtype
/// holds after being filled with `x`).
pub fn round_to(dtype: DType, x: f64) -> f64 {
    match dtype {
        DType::F64 => x,
        DType::F32 => x as f32 as f64,
        DType::F16 => half::f16::from_f64(x).to_f64(),
        DType::BF16 => half::bf16::from_f64(x).to_f64(),
        DType::U32 => x.max(0.0) as u32 as f64,
    }
}

// ---- building tensors ---------------------------------------------------

/// A contiguous tensor of `dtype` holding `data` (rounded to the dtype).
pub fn tensor(data: &[f64], dims: &[usize], dtype: DType) -> Tensor {
    Tensor::from_vec(data.to_vec(), dims.to_vec(), &CPU).unwrap().to_dtype(dtype).unwrap()
}

pub fn tensor_of(nd: &Nd, dtype: DType) -> Tensor {
    tensor(&nd.data, &nd.dims, dtype)
}

/// Number of ways `non_contiguous` can build a view.
pub const VIEW_KINDS: u8 = 4;

/// Filler for storage that a correct view never reads: NaN makes any stray
/// read show up in the result.
const GARBAGE: f64 = f64::NAN;

/// A view holding `data` (shape `dims`) whose layout is NOT plain row-major
/// from offset 0 (except where the shape makes every layout contiguous, e.g.
/// a permutation of a shape with one non-1 dim):
/// - 0: a window (`narrow` on every dim) of a bigger tensor padded with NaN,
///   so the view has an offset and row gaps;
/// - 1: a contiguous tensor holding the values in reversed-dim order,
///   `permute`d back;
/// - 2: every other element of a tensor twice as long in the last dim
///   (`narrow` then `squeeze`), so the innermost stride is 2;
/// - 3: a plain contiguous tensor (the baseline).
pub fn non_contiguous(data: &[f64], dims: &[usize], dtype: DType, kind: u8) -> Tensor {
    let r = dims.len();
    match kind % VIEW_KINDS {
        0 => {
            // Pad each dim by one on both sides (rank 0: a [3] vector).
            if r == 0 {
                let t = tensor(&[GARBAGE, data[0], GARBAGE], &[3], dtype);
                return t.narrow(0, 1, 1).unwrap().squeeze(0).unwrap();
            }
            let big: Vec<usize> = dims.iter().map(|d| d + 2).collect();
            let src = Nd::new(dims, data.to_vec());
            let padded = Nd::from_fn(&big, |i| {
                if i.iter().zip(dims).all(|(&x, &n)| x >= 1 && x <= n) {
                    src.at(&i.iter().map(|x| x - 1).collect::<Vec<_>>())
                } else {
                    GARBAGE
                }
            });
            let mut t = tensor_of(&padded, dtype);
            for (d, &n) in dims.iter().enumerate() {
                t = t.narrow(d, 1, n).unwrap();
            }
            t
        }
        1 => {
            let rev: Vec<usize> = dims.iter().rev().copied().collect();
            let src = Nd::new(dims, data.to_vec());
            let p = Nd::from_fn(&rev, |j| src.at(&j.iter().rev().copied().collect::<Vec<_>>()));
            let order: Vec<usize> = (0..r).rev().collect();
            tensor_of(&p, dtype).permute(&order).unwrap()
        }
        2 => {
            let mut wide = dims.to_vec();
            wide.push(2);
            let interleaved: Vec<f64> = data.iter().flat_map(|&x| [x, GARBAGE]).collect();
            tensor(&interleaved, &wide, dtype).narrow(r, 0, 1).unwrap().squeeze(r).unwrap()
        }
        _ => tensor(data, dims, dtype),
    }
}

pub fn non_contiguous_of(nd: &Nd, dtype: DType, kind: u8) -> Tensor {
    non_contiguous(&nd.data, &nd.dims, dtype, kind)
}

// ---- comparisons --------------------------------------------------------

/// Checks `|got - want| <= atol + rtol * |want|` elementwise (NaN matches
/// NaN, infinities must match exactly); the message states the tolerance
/// and the first offending element.
#[track_caller]
pub fn assert_close(got: &[f64], want: &[f64], rtol: f64, atol: f64) {
    assert_eq!(got.len(), want.len(), "lengths differ: got {} values, want {}", got.len(), want.len());
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_nan() {
            g.is_nan()
        } else if w.is_infinite() {
            g == w
        } else {
            (g - w).abs() <= atol + rtol * w.abs()
        };
        assert!(
            ok,
            "element {i}: got {g}, want {w} (|diff| = {:e} > atol {atol:e} + rtol {rtol:e} * |want|)\n got: {got:?}\nwant: {want:?}",
            (g - w).abs()
        );
    }
}

/// Shape check plus `assert_close` on the values.
#[track_caller]
pub fn assert_tensor_close(t: &Tensor, want: &Nd, rtol: f64, atol: f64) {
    assert_eq!(t.dims(), want.dims.as_slice(), "shape");
    assert_close(&t.to_f64_vec().unwrap(), &want.data, rtol, atol);
}

/// The (rtol, atol) of one rounding of the result in `dtype`, with slack:
/// for ops that are correctly rounded or nearly so.
pub fn tol(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::F64 => (1e-12, 1e-12),
        DType::F32 => (1e-5, 1e-6),
        DType::F16 => (2e-3, 1e-4),
        DType::BF16 => (1e-2, 1e-3),
        DType::U32 => (0.0, 0.0),
    }
}

/// The error text of a result that must be an error.
#[track_caller]
pub fn err_text<T: std::fmt::Debug>(r: tensor::Result<T>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e.to_string(),
    }
}

pub const FLOATS: [DType; 2] = [DType::F32, DType::F64];
