//! Row lookup (embeddings). `index_select` copies rows out; its adjoint
//! scatters the gradient rows back with `index_add`, so a row picked twice
//! receives both gradients.

use crate::var::Var;
use tensor::{Result, Tensor};

impl Var {
    /// Entries of `dim` at the u32 `indices` (rank 1). The indices get no
    /// gradient.
    pub fn index_select(&self, indices: &Tensor, dim: usize) -> Result<Var> {
        let out = self.tensor().index_select(indices, dim)?;
        let (indices, shape, dtype, device) = (indices.clone(), self.shape().clone(), self.dtype(), self.device().clone());
        Ok(Var::from_op("index_select", out, &[self], move |g, _| Ok(vec![Some(Tensor::zeros(shape, dtype, &device)?.index_add(dim, &indices, g)?)])))
    }
}
