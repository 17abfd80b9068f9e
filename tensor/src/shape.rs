//! Shapes and layouts.
//!
//! A `Layout` says where each element of a tensor lives in its storage:
//! `offset + sum(index[d] * strides[d])`. Views (transpose, narrow,
//! broadcast, ...) only build a new layout; the data is never touched.

use crate::{Error, Result};
use std::fmt;

#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Shape(Vec<usize>);

impl Shape {
    pub fn new(dims: Vec<usize>) -> Self {
        Shape(dims)
    }
    pub fn dims(&self) -> &[usize] {
        &self.0
    }
    pub fn rank(&self) -> usize {
        self.0.len()
    }
    pub fn elem_count(&self) -> usize {
        self.0.iter().product()
    }
    /// Row-major strides of a contiguous tensor of this shape.
    pub fn contiguous_strides(&self) -> Vec<usize> {
        let mut strides = vec![0; self.rank()];
        let mut acc = 1;
        for d in (0..self.rank()).rev() {
            strides[d] = acc;
            acc *= self.0[d];
        }
        strides
    }
    pub fn dim(&self, d: usize) -> usize {
        self.0[d]
    }

    /// NumPy broadcasting: align trailing dims; a dim of 1 stretches.
    ///
    /// ```
    /// use tensor::Shape;
    ///
    /// let batch = Shape::from([8, 1, 5]);
    /// assert_eq!(batch.broadcast_with(&Shape::from([3, 1]), "add")?.dims(), &[8, 3, 5]);
    /// let err = batch.broadcast_with(&Shape::from([4]), "add").unwrap_err();
    /// assert_eq!(err.to_string(), "add: shapes [8, 1, 5] and [4] are incompatible");
    /// # Ok::<(), tensor::Error>(())
    /// ```
    pub fn broadcast_with(&self, other: &Shape, op: &'static str) -> Result<Shape> {
        let rank = self.rank().max(other.rank());
        let mut dims = vec![0; rank];
        for i in 0..rank {
            let a = if i < rank - self.rank() { 1 } else { self.0[i - (rank - self.rank())] };
            let b = if i < rank - other.rank() { 1 } else { other.0[i - (rank - other.rank())] };
            dims[i] = match (a, b) {
                (a, b) if a == b => a,
                (1, b) => b,
                (a, 1) => a,
                _ => return Err(Error::ShapeMismatch { op, lhs: self.clone(), rhs: other.clone() }),
            };
        }
        Ok(Shape(dims))
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}
impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl From<Vec<usize>> for Shape {
    fn from(v: Vec<usize>) -> Self {
        Shape(v)
    }
}
impl From<&[usize]> for Shape {
    fn from(v: &[usize]) -> Self {
        Shape(v.to_vec())
    }
}
impl<const N: usize> From<[usize; N]> for Shape {
    fn from(v: [usize; N]) -> Self {
        Shape(v.to_vec())
    }
}
impl From<&Shape> for Shape {
    fn from(s: &Shape) -> Self {
        s.clone()
    }
}
impl From<()> for Shape {
    fn from(_: ()) -> Self {
        Shape(vec![])
    }
}
impl From<usize> for Shape {
    fn from(d: usize) -> Self {
        Shape(vec![d])
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    shape: Shape,
    strides: Vec<usize>,
    offset: usize,
}

impl Layout {
    pub fn contiguous(shape: Shape) -> Self {
        let strides = shape.contiguous_strides();
        Layout { shape, strides, offset: 0 }
    }
    pub fn new(shape: Shape, strides: Vec<usize>, offset: usize) -> Self {
        debug_assert_eq!(shape.rank(), strides.len());
        Layout { shape, strides, offset }
    }
    pub fn shape(&self) -> &Shape {
        &self.shape
    }
    pub fn dims(&self) -> &[usize] {
        self.shape.dims()
    }
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }
    pub fn offset(&self) -> usize {
        self.offset
    }
    pub fn elem_count(&self) -> usize {
        self.shape.elem_count()
    }

    /// True when the elements sit in row-major order with no gaps, so the
    /// data is the slice `storage[offset .. offset + elem_count]`.
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1;
        for d in (0..self.shape.rank()).rev() {
            let n = self.shape.dim(d);
            if n != 1 && self.strides[d] != expected {
                return false;
            }
            expected *= n;
        }
        true
    }

    /// The largest storage index this layout touches, plus one (0 when empty).
    pub fn storage_span(&self) -> usize {
        if self.elem_count() == 0 {
            return 0;
        }
        self.offset + self.dims().iter().zip(&self.strides).map(|(&n, &s)| (n - 1) * s).sum::<usize>() + 1
    }

    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Layout {
        let mut dims = self.shape.dims().to_vec();
        dims[dim] = len;
        Layout { shape: Shape(dims), strides: self.strides.clone(), offset: self.offset + start * self.strides[dim] }
    }

    pub fn permute(&self, order: &[usize]) -> Layout {
        let dims = order.iter().map(|&d| self.shape.dim(d)).collect();
        let strides = order.iter().map(|&d| self.strides[d]).collect();
        Layout { shape: Shape(dims), strides, offset: self.offset }
    }

    /// Stretches size-1 (or missing leading) dims to `target` with stride 0.
    /// The caller has checked that the shapes broadcast.
    pub fn broadcast_to(&self, target: &Shape) -> Layout {
        let extra = target.rank() - self.shape.rank();
        let strides = (0..target.rank())
            .map(|i| {
                if i < extra {
                    0
                } else {
                    let d = i - extra;
                    if self.shape.dim(d) == 1 && target.dim(i) != 1 {
                        0
                    } else {
                        self.strides[d]
                    }
                }
            })
            .collect();
        Layout { shape: target.clone(), strides, offset: self.offset }
    }

    /// A view with a new shape over the same elements, when the strides
    /// allow it without a copy (always for contiguous layouts).
    pub fn reshaped(&self, shape: &Shape) -> Option<Layout> {
        if self.is_contiguous() {
            return Some(Layout { shape: shape.clone(), strides: shape.contiguous_strides(), offset: self.offset });
        }
        None
    }
}

/// Dims of an iteration over one output shape and several strided operands,
/// with neighbouring dims merged wherever every operand allows it, so inner
/// loops run as long as possible. Returns (dims, strides per operand).
pub fn coalesce(dims: &[usize], strides: &[&[usize]]) -> (Vec<usize>, Vec<Vec<usize>>) {
    let mut out_dims: Vec<usize> = Vec::new();
    let mut out_strides: Vec<Vec<usize>> = vec![Vec::new(); strides.len()];
    for d in 0..dims.len() {
        if dims[d] == 1 {
            continue;
        }
        let mergeable = !out_dims.is_empty()
            && strides.iter().zip(&out_strides).all(|(s, o)| *o.last().unwrap() == s[d] * dims[d]);
        if mergeable {
            *out_dims.last_mut().unwrap() *= dims[d];
            for (s, o) in strides.iter().zip(out_strides.iter_mut()) {
                *o.last_mut().unwrap() = s[d];
            }
        } else {
            out_dims.push(dims[d]);
            for (s, o) in strides.iter().zip(out_strides.iter_mut()) {
                o.push(s[d]);
            }
        }
    }
    if out_dims.is_empty() {
        out_dims.push(1);
        for o in out_strides.iter_mut() {
            o.push(0);
        }
    }
    (out_dims, out_strides)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy() {
        let a = Shape::from([4, 1, 3]);
        let b = Shape::from([5, 1]);
        assert_eq!(a.broadcast_with(&b, "t").unwrap(), Shape::from([4, 5, 3]));
        let err = Shape::from([2, 3]).broadcast_with(&Shape::from([4]), "add").unwrap_err();
        assert_eq!(err.to_string(), "add: shapes [2, 3] and [4] are incompatible");
    }

    #[test]
    fn coalesce_merges_contiguous_runs() {
        // [2,3,4] contiguous against a [2,3,1] broadcast to [2,3,4].
        let (dims, strides) = coalesce(&[2, 3, 4], &[&[12, 4, 1], &[3, 1, 0]]);
        assert_eq!(dims, vec![6, 4]);
        assert_eq!(strides, vec![vec![4, 1], vec![1, 0]]);
    }
}
