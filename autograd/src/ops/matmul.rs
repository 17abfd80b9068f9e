//! Matrix product. For `C = A B`: `dA = dC Bᵀ` and `dB = Aᵀ dC`; with
//! batch broadcasting, each is summed back to its operand's shape.

use crate::var::Var;
use tensor::Result;

impl Var {
    /// `[..., m, k] @ [..., k, n] -> [..., m, n]`, batch dims broadcasting.
    ///
    /// ```
    /// use autograd::Var;
    /// use autograd::tensor::{Device, Tensor};
    ///
    /// // d/dW sum(x W) = xᵀ 1
    /// let x = Var::constant(Tensor::from_vec(vec![1.0f64, 2.0], [1, 2], &Device::Cpu)?);
    /// let w = Var::param(Tensor::zeros([2, 3], autograd::tensor::DType::F64, &Device::Cpu)?);
    /// let grads = x.matmul(&w)?.sum_all()?.backward()?;
    /// assert_eq!(grads.get(&w).unwrap().to_vec::<f64>()?, vec![1.0, 1.0, 1.0, 2.0, 2.0, 2.0]);
    /// # Ok::<(), autograd::tensor::Error>(())
    /// ```
    pub fn matmul(&self, rhs: &Var) -> Result<Var> {
        let out = self.tensor().matmul(rhs.tensor())?;
        let (a, b) = (self.tensor().clone(), rhs.tensor().clone());
        Ok(Var::from_op("matmul", out, &[self, rhs], move |g, need| {
            let ga = if need[0] { Some(g.matmul(&b.t()?)?.sum_to(a.shape())?) } else { None };
            let gb = if need[1] { Some(a.t()?.matmul(g)?.sum_to(b.shape())?) } else { None };
            Ok(vec![ga, gb])
        }))
    }
}
