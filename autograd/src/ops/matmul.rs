//! Matrix product. For `C = A B`: `dA = dC Bᵀ` and `dB = Aᵀ dC`; with
//! batch broadcasting, each is summed back to its operand's shape.

use crate::var::Var;
use tensor::Result;

impl Var {
    /// `[..., m, k] @ [..., k, n] -> [..., m, n]`, batch dims broadcasting.
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
