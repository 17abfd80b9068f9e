//! Reductions and the loss.
//!
//! A sum copies its output gradient back to every element it added up: the
//! gradient is reshaped with the reduced axes kept (size 1) and broadcast
//! to the input's shape, a free view. A mean does the same, divided by the
//! count.

use crate::var::Var;
use tensor::{Error, Result, Shape, Tensor};

/// The input's dims with `axes` set to 1 (the `keepdim` shape), and the
/// number of elements each output sums over.
fn kept(dims: &[usize], axes: &[usize]) -> (Shape, usize) {
    let kept: Vec<usize> = dims.iter().enumerate().map(|(d, &n)| if axes.contains(&d) { 1 } else { n }).collect();
    let mut axes = axes.to_vec();
    axes.sort_unstable();
    axes.dedup();
    let count = axes.iter().filter_map(|&a| dims.get(a)).product();
    (Shape::from(kept), count)
}

impl Var {
    fn reduce(&self, op: &'static str, out: Tensor, axes: &[usize], scale: bool) -> Var {
        let (kept, count) = kept(self.dims(), axes);
        let shape = self.shape().clone();
        Var::from_op(op, out, &[self], move |g, _| {
            let g = g.reshape(kept)?.broadcast_as(shape)?;
            Ok(vec![Some(if scale { g.mul_scalar(1.0 / count as f64)? } else { g })])
        })
    }

    pub fn sum(&self, axes: &[usize], keepdim: bool) -> Result<Var> {
        let out = self.tensor().sum(axes, keepdim)?;
        Ok(self.reduce("sum", out, axes, false))
    }

    pub fn mean(&self, axes: &[usize], keepdim: bool) -> Result<Var> {
        let out = self.tensor().mean(axes, keepdim)?;
        Ok(self.reduce("mean", out, axes, true))
    }

    /// The sum of every element, as a rank-0 value.
    pub fn sum_all(&self) -> Result<Var> {
        self.sum(&(0..self.dims().len()).collect::<Vec<_>>(), false)
    }

    /// The mean of every element, as a rank-0 value.
    pub fn mean_all(&self) -> Result<Var> {
        self.mean(&(0..self.dims().len()).collect::<Vec<_>>(), false)
    }

    /// Mean squared error `mean((self - target)^2)`, a rank-0 value. One
    /// node: it saves only the difference d, and the rules are
    /// `2 d / n` for `self` and `-2 d / n` for `target`.
    pub fn mse(&self, target: &Var) -> Result<Var> {
        if self.shape() != target.shape() {
            return Err(Error::ShapeMismatch { op: "mse", lhs: self.shape().clone(), rhs: target.shape().clone() });
        }
        let diff = self.tensor().sub(target.tensor())?;
        let out = diff.sqr()?.mean_all()?;
        let n = diff.elem_count() as f64;
        Ok(Var::from_op("mse", out, &[self, target], move |g, need| {
            let d = diff.mul(&g.mul_scalar(2.0 / n)?)?;
            let dt = if need[1] { Some(d.neg()?) } else { None };
            Ok(vec![need[0].then_some(d), dt])
        }))
    }
}
