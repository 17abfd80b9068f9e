//! The sinusoidal features of an integer diffusion step (no parameters).
//!
//! For an output size C, `half = C/2` and `f_k = exp(-ln(10000) k / half)`
//! for k in 0..half; step t maps to `[sin(t f_0), .., sin(t f_{half-1}),
//! cos(t f_0), .., cos(t f_{half-1})]`. Computed in f64, then cast, so every
//! implementation of the U-Net gets the same features (docs/unet.md).

use crate::{Ctx, Module, NnError, Result};
use autograd::Var;
use tensor::{DType, Device, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinusoidalEmbedding {
    pub dim: usize,
    /// The dtype of the output.
    pub dtype: DType,
}

impl SinusoidalEmbedding {
    /// `dim` must be even and positive.
    pub fn new(dim: usize, dtype: DType) -> Result<SinusoidalEmbedding> {
        if dim == 0 || !dim.is_multiple_of(2) {
            return Err(NnError::bad("SinusoidalEmbedding", format!("size must be even and positive, got {dim}")));
        }
        Ok(SinusoidalEmbedding { dim, dtype })
    }

    /// The features of the steps `t`, row-major [t.len(), dim], in f64.
    pub fn features(&self, t: &[u32]) -> Vec<f64> {
        let half = self.dim / 2;
        let mut out = Vec::with_capacity(t.len() * self.dim);
        for &step in t {
            let args: Vec<f64> = (0..half).map(|k| step as f64 * (-(10000f64.ln()) * k as f64 / half as f64).exp()).collect();
            out.extend(args.iter().map(|a| a.sin()));
            out.extend(args.iter().map(|a| a.cos()));
        }
        out
    }

    /// [t.len(), dim] on `device`, a constant.
    pub fn embed(&self, t: &[u32], device: &Device) -> Result<Var> {
        let f = Tensor::from_vec(self.features(t), [t.len(), self.dim], device)?.to_dtype(self.dtype)?;
        Ok(Var::constant(f))
    }

    /// Steps given as a rank-1 u32 tensor; the result lives on its device.
    pub fn embed_tensor(&self, t: &Tensor) -> Result<Var> {
        if t.rank() != 1 {
            return Err(NnError::bad("SinusoidalEmbedding", format!("steps must be a rank-1 u32 tensor, got shape {:?}", t.dims())));
        }
        self.embed(&t.to_vec::<u32>()?, t.device())
    }
}

impl Module for SinusoidalEmbedding {
    /// `x` holds the u32 steps, shape [N].
    fn forward(&self, x: &Var, _ctx: &mut Ctx) -> Result<Var> {
        self.embed_tensor(x.tensor())
    }
}
