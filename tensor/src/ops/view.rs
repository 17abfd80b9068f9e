//! Views (no copy) and the ops that assemble or split tensors along a dim.

use crate::storage::Storage;
use crate::{Error, Layout, Result, Shape, Tensor};

impl Tensor {
    /// Same elements, new shape. Free for contiguous tensors; others are
    /// copied first.
    pub fn reshape(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if shape.elem_count() != self.elem_count() {
            return Err(Error::ShapeMismatch { op: "reshape", lhs: self.shape().clone(), rhs: shape });
        }
        match self.layout().reshaped(&shape) {
            Some(layout) => Ok(self.with_layout(layout)),
            None => {
                let c = self.contiguous()?;
                Ok(c.with_layout(c.layout().reshaped(&shape).expect("contiguous tensors always reshape")))
            }
        }
    }

    /// Reorders the dims: output dim `i` is input dim `order[i]`.
    pub fn permute(&self, order: &[usize]) -> Result<Tensor> {
        let mut seen = vec![false; self.rank()];
        if order.len() != self.rank() || order.iter().any(|&d| d >= self.rank() || std::mem::replace(&mut seen[d], true)) {
            return Err(Error::BadShape { op: "permute", shape: self.shape().clone(), msg: format!("{order:?} is not a permutation of the dims") });
        }
        Ok(self.with_layout(self.layout().permute(order)))
    }

    pub fn transpose(&self, d0: usize, d1: usize) -> Result<Tensor> {
        self.check_dim("transpose", d0)?;
        self.check_dim("transpose", d1)?;
        let mut order: Vec<usize> = (0..self.rank()).collect();
        order.swap(d0, d1);
        self.permute(&order)
    }

    /// Swaps the last two dims.
    pub fn t(&self) -> Result<Tensor> {
        if self.rank() < 2 {
            return Err(Error::BadShape { op: "t", shape: self.shape().clone(), msg: "needs at least 2 dims".into() });
        }
        self.transpose(self.rank() - 2, self.rank() - 1)
    }

    /// `len` entries of `dim` starting at `start`.
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Tensor> {
        self.check_dim("narrow", dim)?;
        if start + len > self.dims()[dim] {
            return Err(Error::BadShape {
                op: "narrow",
                shape: self.shape().clone(),
                msg: format!("range {start}..{} exceeds dim {dim}", start + len),
            });
        }
        Ok(self.with_layout(self.layout().narrow(dim, start, len)))
    }

    /// Splits `dim` into pieces of the given sizes (they must add up).
    pub fn split(&self, sizes: &[usize], dim: usize) -> Result<Vec<Tensor>> {
        self.check_dim("split", dim)?;
        if sizes.iter().sum::<usize>() != self.dims()[dim] {
            return Err(Error::BadShape { op: "split", shape: self.shape().clone(), msg: format!("sizes {sizes:?} do not add up to dim {dim}") });
        }
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
    /// torch.chunk: an empty dim gives `n` empty pieces.
    pub fn chunk(&self, n: usize, dim: usize) -> Result<Vec<Tensor>> {
        self.check_dim("chunk", dim)?;
        if n == 0 {
            return Err(Error::BadArgument { op: "chunk", msg: "cannot split into 0 chunks".into() });
        }
        let size = self.dims()[dim];
        if size == 0 {
            return self.split(&vec![0; n], dim);
        }
        let step = size.div_ceil(n).max(1);
        let mut sizes = Vec::new();
        let mut left = size;
        while left > 0 {
            sizes.push(step.min(left));
            left -= step.min(left);
        }
        self.split(&sizes, dim)
    }

    /// Stretches size-1 dims (and adds leading dims) to `shape`, with no copy.
    pub fn broadcast_as(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        let target = self.shape().broadcast_with(&shape, "broadcast_as")?;
        if target != shape {
            return Err(Error::ShapeMismatch { op: "broadcast_as", lhs: self.shape().clone(), rhs: shape });
        }
        Ok(self.with_layout(self.layout().broadcast_to(&shape)))
    }

    /// Alias of `broadcast_as`, as in PyTorch.
    pub fn expand(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        self.broadcast_as(shape)
    }

    /// Removes `dim`, which must have size 1.
    pub fn squeeze(&self, dim: usize) -> Result<Tensor> {
        self.check_dim("squeeze", dim)?;
        if self.dims()[dim] != 1 {
            return Err(Error::BadShape { op: "squeeze", shape: self.shape().clone(), msg: format!("dim {dim} has size {}, not 1", self.dims()[dim]) });
        }
        let mut dims = self.dims().to_vec();
        let mut strides = self.layout().strides().to_vec();
        dims.remove(dim);
        strides.remove(dim);
        Ok(self.with_layout(Layout::new(dims.into(), strides, self.layout().offset())))
    }

    /// Inserts a dim of size 1 before `dim` (`dim == rank` appends).
    pub fn unsqueeze(&self, dim: usize) -> Result<Tensor> {
        if dim > self.rank() {
            return Err(Error::BadShape { op: "unsqueeze", shape: self.shape().clone(), msg: format!("dim {dim} out of range") });
        }
        let mut dims = self.dims().to_vec();
        let mut strides = self.layout().strides().to_vec();
        let stride = if dim < self.rank() { strides[dim] * dims[dim] } else { 1 };
        dims.insert(dim, 1);
        strides.insert(dim, stride);
        Ok(self.with_layout(Layout::new(dims.into(), strides, self.layout().offset())))
    }

    /// Merges dims `from..` into one.
    pub fn flatten_from(&self, from: usize) -> Result<Tensor> {
        self.check_dim("flatten_from", from)?;
        let mut dims = self.dims()[..from].to_vec();
        dims.push(self.dims()[from..].iter().product());
        self.reshape(dims)
    }

    /// Joins tensors along `dim`; all other dims must match.
    pub fn cat(tensors: &[&Tensor], dim: usize) -> Result<Tensor> {
        let first = *tensors.first().ok_or(Error::BadArgument { op: "cat", msg: "needs at least one tensor".into() })?;
        first.check_dim("cat", dim)?;
        let mut dims = first.dims().to_vec();
        dims[dim] = 0;
        for t in tensors {
            let same_rest = t.rank() == first.rank() && (0..t.rank()).all(|d| d == dim || t.dims()[d] == first.dims()[d]);
            if !same_rest {
                return Err(Error::ShapeMismatch { op: "cat", lhs: first.shape().clone(), rhs: t.shape().clone() });
            }
            if t.dtype() != first.dtype() {
                return Err(Error::DTypeMismatch { op: "cat", lhs: first.dtype(), rhs: t.dtype() });
            }
            dims[dim] += t.dims()[dim];
        }
        // One read lock per distinct storage (cat(&[x, x]) locks x once: a
        // thread must not take the same RwLock twice).
        let owner: Vec<usize> = (0..tensors.len()).map(|i| (0..=i).find(|&j| tensors[j].same_storage(tensors[i])).unwrap()).collect();
        let guards: Vec<_> = tensors.iter().enumerate().map(|(i, t)| (owner[i] == i).then(|| t.storage())).collect();
        let parts: Vec<(&Storage, &Layout)> =
            tensors.iter().enumerate().map(|(i, t)| (&**guards[owner[i]].as_ref().expect("the owner holds the lock"), t.layout())).collect();
        let out = Storage::cat("cat", &parts, dim)?;
        Ok(Tensor::from_storage(out, dims))
    }

    /// Joins tensors of one shape along a new dim.
    pub fn stack(tensors: &[&Tensor], dim: usize) -> Result<Tensor> {
        let expanded = tensors.iter().map(|t| t.unsqueeze(dim)).collect::<Result<Vec<_>>>()?;
        Tensor::cat(&expanded.iter().collect::<Vec<_>>(), dim)
    }
}
