//! The softmax family and the classification loss.
//!
//! With `y = softmax(x)` along an axis, the Jacobian is `diag(y) - y yᵀ`,
//! so the rule never builds it: `dx = y * (g - sum(g * y))`. For
//! `l = log_softmax(x)`, `dx = g - softmax(x) * sum(g)`, and softmax is
//! `exp(l)`, recomputed from the saved output.
//!
//! `cross_entropy` is one node: it saves the log-probabilities and the
//! target distribution `q` (one-hot, smoothed), and its rule is the
//! well-known `(softmax(x) - q) / N`.

use crate::var::Var;
use tensor::{DType, Error, Result, Tensor};

impl Var {
    /// `exp(x) / sum(exp(x))` along `dim`.
    pub fn softmax(&self, dim: usize) -> Result<Var> {
        let y = self.tensor().softmax(dim)?;
        let saved = y.clone();
        Ok(Var::from_op("softmax", y, &[self], move |g, _| {
            let gy_sum = g.mul(&saved)?.sum(&[dim], true)?;
            Ok(vec![Some(saved.mul(&g.sub(&gy_sum)?)?)])
        }))
    }

    /// `x - log(sum(exp(x)))` along `dim`, computed stably.
    pub fn log_softmax(&self, dim: usize) -> Result<Var> {
        let l = self.tensor().log_softmax(dim)?;
        let saved = l.clone();
        Ok(Var::from_op("log_softmax", l, &[self], move |g, _| {
            let g_sum = g.sum(&[dim], true)?;
            Ok(vec![Some(g.sub(&saved.exp()?.mul(&g_sum)?)?)])
        }))
    }

    /// Mean cross-entropy of logits `[N, C]` against integer class
    /// `labels` (one per row, each below C), with label smoothing: the
    /// target puts `1 - smoothing + smoothing / C` on the true class and
    /// `smoothing / C` on every other class (PyTorch's
    /// `cross_entropy(..., label_smoothing=smoothing)`). A rank-0 value.
    pub fn cross_entropy(&self, labels: &[usize], smoothing: f64) -> Result<Var> {
        let dims = self.dims();
        if dims.len() != 2 {
            return Err(Error::BadShape { op: "cross_entropy", shape: self.shape().clone(), msg: "logits must be [N, C]".into() });
        }
        let (n, c) = (dims[0], dims[1]);
        if labels.len() != n {
            return Err(Error::BadShape { op: "cross_entropy", shape: self.shape().clone(), msg: format!("{} labels for {n} rows", labels.len()) });
        }
        if let Some(&bad) = labels.iter().find(|&&l| l >= c) {
            return Err(Error::BadShape { op: "cross_entropy", shape: self.shape().clone(), msg: format!("label {bad} out of range for {c} classes") });
        }
        if !(0.0..1.0).contains(&smoothing) {
            return Err(Error::BadShape { op: "cross_entropy", shape: self.shape().clone(), msg: format!("label smoothing {smoothing} is not in [0, 1)") });
        }
        let off = smoothing / c as f64;
        let mut q = vec![off; n * c];
        for (row, &l) in labels.iter().enumerate() {
            q[row * c + l] += 1.0 - smoothing;
        }
        let q = Tensor::from_vec(q, [n, c], self.device())?.to_dtype(self.dtype())?;
        let logp = self.tensor().log_softmax(1)?;
        // loss = -sum(q * log p) / N, accumulated in f64 for a stable value.
        let loss = q.mul(&logp)?.to_dtype(DType::F64)?.sum_all()?.mul_scalar(-1.0 / n as f64)?.to_dtype(self.dtype())?;
        Ok(Var::from_op("cross_entropy", loss, &[self], move |g, _| {
            let scale = g.to_dtype(logp.dtype())?.mul_scalar(1.0 / n as f64)?;
            Ok(vec![Some(logp.exp()?.sub(&q)?.mul(&scale)?)])
        }))
    }
}
