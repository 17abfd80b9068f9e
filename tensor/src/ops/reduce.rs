//! Reductions over sets of axes, and the softmax family built on them.

use crate::backend::{BackendStorage, ReduceOp};
use crate::storage::dispatch;
use crate::{DType, Error, Result, Shape, Tensor};

impl Tensor {
    /// Sorted, de-duplicated axes, checked against the rank.
    fn normalise_axes(&self, op: &'static str, axes: &[usize]) -> Result<Vec<usize>> {
        let mut sorted = axes.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        if let Some(&bad) = sorted.iter().find(|&&a| a >= self.rank()) {
            return Err(Error::BadShape { op, shape: self.shape().clone(), msg: format!("axis {bad} out of range") });
        }
        Ok(sorted)
    }

    fn reduce(&self, op: ReduceOp, axes: &[usize], keepdim: bool, name: &'static str) -> Result<Tensor> {
        let axes = self.normalise_axes(name, axes)?;
        let kept_shape: Vec<usize> = self.dims().iter().enumerate().map(|(d, &n)| if axes.contains(&d) { 1 } else { n }).collect();
        let out = dispatch!("reduce", &*self.storage(), |s| s.reduce(self.layout(), &axes, op));
        let t = Tensor::from_storage(out, kept_shape.clone());
        if keepdim {
            Ok(t)
        } else {
            let dims: Vec<usize> = kept_shape.iter().enumerate().filter(|(d, _)| !axes.contains(d)).map(|(_, &n)| n).collect();
            t.reshape(Shape::from(dims))
        }
    }

    pub fn sum(&self, axes: &[usize], keepdim: bool) -> Result<Tensor> {
        self.reduce(ReduceOp::Sum, axes, keepdim, "sum")
    }

    /// The sum of every element, as a rank-0 tensor.
    pub fn sum_all(&self) -> Result<Tensor> {
        self.sum(&(0..self.rank()).collect::<Vec<_>>(), false)
    }

    pub fn mean(&self, axes: &[usize], keepdim: bool) -> Result<Tensor> {
        let axes = self.normalise_axes("mean", axes)?;
        let n: usize = axes.iter().map(|&a| self.dims()[a]).product();
        self.sum(&axes, keepdim)?.div_scalar(n as f64)
    }

    pub fn mean_all(&self) -> Result<Tensor> {
        self.mean(&(0..self.rank()).collect::<Vec<_>>(), false)
    }

    pub fn max(&self, axes: &[usize], keepdim: bool) -> Result<Tensor> {
        self.reduce(ReduceOp::Max, axes, keepdim, "max")
    }

    pub fn min(&self, axes: &[usize], keepdim: bool) -> Result<Tensor> {
        self.reduce(ReduceOp::Min, axes, keepdim, "min")
    }

    /// Index (u32) of the first maximum along `axis`.
    pub fn argmax(&self, axis: usize, keepdim: bool) -> Result<Tensor> {
        self.reduce(ReduceOp::ArgMax, &[axis], keepdim, "argmax")
    }

    /// Population variance (NumPy's default, ddof = 0).
    pub fn var(&self, axes: &[usize], keepdim: bool) -> Result<Tensor> {
        let mean = self.mean(axes, true)?;
        self.sub(&mean)?.sqr()?.mean(axes, keepdim)
    }

    /// `exp(x) / sum(exp(x))` along `dim`, shifted by the max for stability.
    pub fn softmax(&self, dim: usize) -> Result<Tensor> {
        let shifted = self.sub(&self.max(&[dim], true)?)?;
        let e = shifted.exp()?;
        e.div(&e.sum(&[dim], true)?)
    }

    pub fn log_softmax(&self, dim: usize) -> Result<Tensor> {
        let shifted = self.sub(&self.max(&[dim], true)?)?;
        let lse = shifted.exp()?.sum(&[dim], true)?.log()?;
        shifted.sub(&lse)
    }

    /// Sums `self` down to `shape`, undoing a broadcast: the gradient rule
    /// of every broadcasting op.
    ///
    /// ```
    /// use tensor::{DType, Device, Shape, Tensor};
    ///
    /// // a [3] bias broadcast over [2, 3] receives the sum over the batch
    /// let grad = Tensor::ones([2, 3], DType::F32, &Device::Cpu)?;
    /// assert_eq!(grad.sum_to(&Shape::from([3]))?.to_vec::<f32>()?, vec![2.0, 2.0, 2.0]);
    /// assert_eq!(grad.sum_to(&Shape::from([2, 1]))?.to_vec::<f32>()?, vec![3.0, 3.0]);
    /// # Ok::<(), tensor::Error>(())
    /// ```
    pub fn sum_to(&self, shape: &Shape) -> Result<Tensor> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        if shape.rank() > self.rank() {
            return Err(Error::ShapeMismatch { op: "sum_to", lhs: self.shape().clone(), rhs: shape.clone() });
        }
        let extra = self.rank() - shape.rank();
        let mut axes: Vec<usize> = (0..extra).collect();
        for (i, &n) in shape.dims().iter().enumerate() {
            match (n, self.dims()[extra + i]) {
                (a, b) if a == b => {}
                (1, _) => axes.push(extra + i),
                _ => return Err(Error::ShapeMismatch { op: "sum_to", lhs: self.shape().clone(), rhs: shape.clone() }),
            }
        }
        self.sum(&axes, true)?.reshape(shape.clone())
    }

    /// Mean of `(self - target)^2` over every element, as a rank-0 tensor.
    pub fn mse(&self, target: &Tensor) -> Result<Tensor> {
        if self.shape() != target.shape() {
            return Err(Error::ShapeMismatch { op: "mse", lhs: self.shape().clone(), rhs: target.shape().clone() });
        }
        self.sub(target)?.sqr()?.mean_all()
    }

    /// True when any element is NaN or infinite.
    pub fn has_non_finite(&self) -> Result<bool> {
        let s = self.to_dtype(DType::F64)?.abs()?.sum_all()?.to_scalar()?;
        Ok(!s.is_finite())
    }
}
