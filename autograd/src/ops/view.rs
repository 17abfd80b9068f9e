//! Views and assembly. These ops move elements around without computing on
//! them, so each rule moves the gradient back the same way: reshape back,
//! permute by the inverse order, sum a broadcast away, paste a narrowed
//! window into zeros, cut a concatenation into pieces.

use crate::var::Var;
use tensor::{Result, Shape, Tensor};

impl Var {
    pub fn reshape(&self, shape: impl Into<Shape>) -> Result<Var> {
        let out = self.tensor().reshape(shape)?;
        let shape = self.shape().clone();
        Ok(Var::from_op("reshape", out, &[self], move |g, _| Ok(vec![Some(g.reshape(shape)?)])))
    }

    /// Output dim `i` is input dim `order[i]`; the rule applies the inverse.
    pub fn permute(&self, order: &[usize]) -> Result<Var> {
        let out = self.tensor().permute(order)?;
        let mut inverse = vec![0; order.len()];
        for (i, &d) in order.iter().enumerate() {
            inverse[d] = i;
        }
        Ok(Var::from_op("permute", out, &[self], move |g, _| Ok(vec![Some(g.permute(&inverse)?)])))
    }

    pub fn transpose(&self, d0: usize, d1: usize) -> Result<Var> {
        let out = self.tensor().transpose(d0, d1)?;
        Ok(Var::from_op("transpose", out, &[self], move |g, _| Ok(vec![Some(g.transpose(d0, d1)?)])))
    }

    /// `len` entries of `dim` from `start`. The rule writes the gradient
    /// into that window of a zero tensor of the input's shape.
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Var> {
        let out = self.tensor().narrow(dim, start, len)?;
        let (shape, dtype, device) = (self.shape().clone(), self.dtype(), self.device().clone());
        Ok(Var::from_op("narrow", out, &[self], move |g, _| {
            let full = Tensor::zeros(shape, dtype, &device)?;
            full.narrow(dim, start, len)?.assign(g)?;
            Ok(vec![Some(full)])
        }))
    }

    /// Stretches size-1 (or missing leading) dims; the rule sums them back.
    pub fn broadcast_as(&self, shape: impl Into<Shape>) -> Result<Var> {
        let out = self.tensor().broadcast_as(shape)?;
        let shape = self.shape().clone();
        Ok(Var::from_op("broadcast_as", out, &[self], move |g, _| Ok(vec![Some(g.sum_to(&shape)?)])))
    }

    pub fn squeeze(&self, dim: usize) -> Result<Var> {
        let out = self.tensor().squeeze(dim)?;
        Ok(Var::from_op("squeeze", out, &[self], move |g, _| Ok(vec![Some(g.unsqueeze(dim)?)])))
    }

    pub fn unsqueeze(&self, dim: usize) -> Result<Var> {
        let out = self.tensor().unsqueeze(dim)?;
        Ok(Var::from_op("unsqueeze", out, &[self], move |g, _| Ok(vec![Some(g.squeeze(dim)?)])))
    }

    /// Joins values along `dim`; each gets back its slice of the gradient.
    pub fn cat(vars: &[&Var], dim: usize) -> Result<Var> {
        let tensors: Vec<&Tensor> = vars.iter().map(|v| v.tensor()).collect();
        let out = Tensor::cat(&tensors, dim)?;
        let sizes: Vec<usize> = vars.iter().map(|v| v.dims()[dim]).collect();
        Ok(Var::from_op("cat", out, vars, move |g, need| {
            let mut start = 0;
            let mut grads = Vec::with_capacity(sizes.len());
            for (&len, &need) in sizes.iter().zip(need) {
                grads.push(if need { Some(g.narrow(dim, start, len)?) } else { None });
                start += len;
            }
            Ok(grads)
        }))
    }

    /// Pieces of the given sizes along `dim` (they must add up). Each piece
    /// is a `narrow`, recorded on its own.
    pub fn split(&self, sizes: &[usize], dim: usize) -> Result<Vec<Var>> {
        self.tensor().split(sizes, dim)?; // checks the arguments
        let mut start = 0;
        sizes
            .iter()
            .map(|&len| {
                let piece = self.narrow(dim, start, len);
                start += len;
                piece
            })
            .collect()
    }

    /// `n` nearly equal pieces along `dim` (the last may be smaller), as
    /// `Tensor::chunk`.
    pub fn chunk(&self, n: usize, dim: usize) -> Result<Vec<Var>> {
        let sizes: Vec<usize> = self.tensor().chunk(n, dim)?.iter().map(|t| t.dims()[dim]).collect();
        self.split(&sizes, dim)
    }
}
