//! Matrix products with NumPy batch broadcasting.

use crate::backend::{BackendStorage, MatmulDims};
use crate::shape::coalesce;
use crate::storage::dispatch;
use crate::{Error, Layout, Result, Shape, Tensor};

/// The [batch, rows, cols] layout of a tensor whose batch dims have been
/// broadcast to `batch_dims`, when its batch dims collapse to one stride.
fn as_batched(t: &Tensor, batch_dims: &[usize]) -> Result<Option<Layout>> {
    let r = t.rank();
    let (rows, cols) = (t.dims()[r - 2], t.dims()[r - 1]);
    let mut full: Vec<usize> = batch_dims.to_vec();
    full.extend([rows, cols]);
    let l = t.layout().broadcast_to(&Shape::from(full));
    let nb = batch_dims.len();
    let batch: usize = batch_dims.iter().product();
    let batch_stride = if nb == 0 {
        0
    } else {
        let (dims, strides) = coalesce(&l.dims()[..nb], &[&l.strides()[..nb]]);
        if dims.len() > 1 {
            return Ok(None);
        }
        if batch == 1 {
            0
        } else {
            strides[0][0]
        }
    };
    Ok(Some(Layout::new(
        Shape::from([batch, rows, cols]),
        vec![batch_stride, l.strides()[nb], l.strides()[nb + 1]],
        l.offset(),
    )))
}

impl Tensor {
    /// `[..., m, k] @ [..., k, n] -> [..., m, n]`; batch dims broadcast.
    ///
    /// ```
    /// use tensor::{Device, Tensor};
    ///
    /// let a = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0], [2, 2], &Device::Cpu)?;
    /// let b = Tensor::from_vec(vec![5.0f64, 6.0, 7.0, 8.0], [2, 2], &Device::Cpu)?;
    /// assert_eq!(a.matmul(&b)?.to_vec::<f64>()?, vec![19.0, 22.0, 43.0, 50.0]);
    /// let err = a.matmul(&Tensor::zeros([3, 1], tensor::DType::F64, &Device::Cpu)?).unwrap_err();
    /// assert!(err.to_string().contains("[2, 2] and [3, 1]"));
    /// # Ok::<(), tensor::Error>(())
    /// ```
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        let mismatch = || Error::ShapeMismatch { op: "matmul", lhs: self.shape().clone(), rhs: rhs.shape().clone() };
        if self.rank() < 2 || rhs.rank() < 2 {
            return Err(mismatch());
        }
        if self.dtype() != rhs.dtype() {
            return Err(Error::DTypeMismatch { op: "matmul", lhs: self.dtype(), rhs: rhs.dtype() });
        }
        let (ra, rb) = (self.rank(), rhs.rank());
        let (m, k, k2, n) = (self.dims()[ra - 2], self.dims()[ra - 1], rhs.dims()[rb - 2], rhs.dims()[rb - 1]);
        if k != k2 {
            return Err(mismatch());
        }
        let batch_shape = Shape::from(&self.dims()[..ra - 2]).broadcast_with(&Shape::from(&rhs.dims()[..rb - 2]), "matmul").map_err(|_| mismatch())?;
        let batch: usize = batch_shape.elem_count();

        // Operands whose batch dims don't collapse to one stride are copied.
        let operand = |t: &Tensor| -> Result<(Tensor, Layout)> {
            match as_batched(t, batch_shape.dims())? {
                Some(l) => Ok((t.clone(), l)),
                None => {
                    let mut full = batch_shape.dims().to_vec();
                    full.extend(&t.dims()[t.rank() - 2..]);
                    let c = t.broadcast_as(full.clone())?.contiguous()?;
                    let l = as_batched(&c, batch_shape.dims())?.expect("contiguous batches collapse");
                    Ok((c, l))
                }
            }
        };
        let (a, al) = operand(self)?;
        let (b, bl) = operand(rhs)?;
        let dims = MatmulDims { batch, m, k, n };
        let out = dispatch!("matmul", &*a.storage(), &*b.storage(), |x, y| x.matmul(&al, y, &bl, dims));
        let mut out_dims = batch_shape.dims().to_vec();
        out_dims.extend([m, n]);
        Ok(Tensor::from_storage(out, out_dims))
    }
}
