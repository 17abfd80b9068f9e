//! Ops that pick elements: max and min over axes, and `where_cond`.
//!
//! The gradient of a maximum flows to the element that attained it. When
//! several elements tie, it is split evenly among them (as PyTorch's
//! `amax`/`amin` do): the rule builds the mask `x == max`, divides it by
//! the number of ties, and multiplies by the broadcast output gradient.
//! That keeps the rule a few device-agnostic tensor ops, and the split is
//! the gradient of the subgradient that treats all tied inputs alike.
//!
//! `where_cond` routes each element's gradient to the input it came from;
//! the other input gets zero there. Both are then summed back to their own
//! (possibly broadcast) shapes.

use crate::var::Var;
use tensor::{Result, Shape, Tensor};

impl Var {
    /// Largest element over `axes`. Ties share the gradient evenly.
    pub fn max(&self, axes: &[usize], keepdim: bool) -> Result<Var> {
        let out = self.tensor().max(axes, keepdim)?;
        Ok(self.extreme("max", out, axes))
    }

    /// Smallest element over `axes`. Ties share the gradient evenly.
    pub fn min(&self, axes: &[usize], keepdim: bool) -> Result<Var> {
        let out = self.tensor().min(axes, keepdim)?;
        Ok(self.extreme("min", out, axes))
    }

    fn extreme(&self, op: &'static str, out: Tensor, axes: &[usize]) -> Var {
        let kept: Vec<usize> = self.dims().iter().enumerate().map(|(d, &n)| if axes.contains(&d) { 1 } else { n }).collect();
        let (x, extreme) = (self.tensor().clone(), out.clone());
        let shape = self.shape().clone();
        let axes = axes.to_vec();
        Var::from_op(op, out, &[self], move |g, _| {
            let kept = Shape::from(kept);
            let at = x.eq(&extreme.reshape(kept.clone())?)?;
            let ties = at.sum(&axes, true)?;
            let share = g.reshape(kept)?.div(&ties)?;
            Ok(vec![Some(at.mul(&share.broadcast_as(shape)?)?)])
        })
    }

    /// `on_true` where `cond` is nonzero, else `on_false`; the three
    /// broadcast together. `cond` gets no gradient.
    pub fn where_cond(cond: &Tensor, on_true: &Var, on_false: &Var) -> Result<Var> {
        let out = cond.where_cond(on_true.tensor(), on_false.tensor())?;
        let (st, sf) = (on_true.shape().clone(), on_false.shape().clone());
        let cond = cond.clone();
        Ok(Var::from_op("where_cond", out, &[on_true, on_false], move |g, need| {
            let zero = Tensor::scalar(0.0, g.dtype(), g.device())?;
            let gt = if need[0] { Some(cond.where_cond(g, &zero)?.sum_to(&st)?) } else { None };
            let gf = if need[1] { Some(cond.where_cond(&zero, g)?.sum_to(&sf)?) } else { None };
            Ok(vec![gt, gf])
        }))
    }
}
