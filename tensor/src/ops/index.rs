//! Row lookups (embeddings) and their scatter-add adjoint.

use crate::backend::BackendStorage;
use crate::storage::dispatch;
use crate::{DType, Error, Result, Tensor};

impl Tensor {
    /// Picks entries along `dim` at the u32 `indices` (rank 1): the output
    /// has `dims[dim]` replaced by the number of indices.
    pub fn index_select(&self, indices: &Tensor, dim: usize) -> Result<Tensor> {
        self.check_dim("index_select", dim)?;
        check_indices("index_select", indices)?;
        let x = self.contiguous()?;
        let out = dispatch!("index_select", &*x.storage(), &*indices.storage(), |s, i| s.index_select(x.layout(), i, indices.layout(), dim));
        let mut dims = self.dims().to_vec();
        dims[dim] = indices.elem_count();
        Ok(Tensor::from_storage(out, dims))
    }

    /// A copy of `self` with `src` slices added at `indices` along `dim`
    /// (repeated indices accumulate): the gradient of `index_select`.
    pub fn index_add(&self, dim: usize, indices: &Tensor, src: &Tensor) -> Result<Tensor> {
        self.check_dim("index_add", dim)?;
        check_indices("index_add", indices)?;
        let mut want = self.dims().to_vec();
        want[dim] = indices.elem_count();
        if src.dims() != want.as_slice() {
            return Err(Error::ShapeMismatch { op: "index_add", lhs: self.shape().clone(), rhs: src.shape().clone() });
        }
        let out = self.copy()?;
        {
            let (mut dst, is, ss) = (out.storage_mut(), indices.storage(), src.storage());
            dispatch!("index_add", (&mut *dst, &*is, &*ss), |d, i, s; _wrap| d.index_add(self.dims(), i, indices.layout(), s, src.layout(), dim))?;
        }
        Ok(out)
    }
}

fn check_indices(op: &'static str, indices: &Tensor) -> Result<()> {
    if indices.dtype() != DType::U32 {
        return Err(Error::UnsupportedDType { op, got: indices.dtype(), hint: "; indices must be u32" });
    }
    if indices.rank() != 1 {
        return Err(Error::BadShape { op, shape: indices.shape().clone(), msg: "indices must have rank 1".into() });
    }
    Ok(())
}
