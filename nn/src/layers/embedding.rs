//! A learned lookup table, as `torch.nn.Embedding` (weights N(0, 1)).

use crate::{Ctx, Init, Module, Path, Result};
use autograd::Var;
use tensor::Tensor;

pub struct Embedding {
    /// [num_embeddings, dim]
    pub weight: Var,
}

impl Embedding {
    pub fn new(path: &Path, num_embeddings: usize, dim: usize) -> Result<Embedding> {
        Ok(Embedding { weight: path.param("weight", [num_embeddings, dim], Init::Normal { std: 1.0 })? })
    }

    /// Rows of the table at the u32 `indices` (any shape): the output has
    /// shape `indices.dims() ++ [dim]`.
    pub fn lookup(&self, indices: &Tensor) -> Result<Var> {
        let flat = indices.reshape(indices.elem_count())?;
        let rows = self.weight.index_select(&flat, 0)?;
        let mut dims = indices.dims().to_vec();
        dims.push(self.weight.dims()[1]);
        Ok(rows.reshape(dims)?)
    }
}

impl Module for Embedding {
    /// `x` holds u32 indices (a constant).
    fn forward(&self, x: &Var, _ctx: &mut Ctx) -> Result<Var> {
        self.lookup(x.tensor())
    }
}
