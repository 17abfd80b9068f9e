//! Inverted dropout: in training, zeroes each element with probability `p`
//! and scales the rest by 1/(1-p); in evaluation, the identity.

use crate::{Ctx, Module, NnError, Result};
use autograd::Var;
use tensor::{DType, Device, Tensor};

#[derive(Debug, Clone, Copy, PartialEq)]
/// ```
/// use nn::{Ctx, Dropout, Module};
/// use nn::autograd::{tensor::{DType, Device, Rng, Tensor}, Var};
///
/// let drop = Dropout::new(0.5)?;
/// let x = Var::constant(Tensor::ones([1000], DType::F32, &Device::Cpu)?);
/// // evaluation: the identity
/// assert_eq!(drop.forward(&x, &mut Ctx::eval())?.tensor().to_vec::<f32>()?, vec![1.0; 1000]);
/// // training: each element is zeroed with probability p, the rest scaled by 1/(1-p)
/// let y = drop.forward(&x, &mut Ctx::train(Rng::new(0)))?.tensor().to_vec::<f32>()?;
/// assert!(y.iter().all(|&v| v == 0.0 || v == 2.0));
/// let kept = y.iter().filter(|&&v| v == 2.0).count();
/// assert!((400..600).contains(&kept));
/// # Ok::<(), nn::NnError>(())
/// ```
pub struct Dropout {
    pub p: f64,
}

impl Dropout {
    pub fn new(p: f64) -> Result<Dropout> {
        if !(0.0..1.0).contains(&p) {
            return Err(NnError::bad("Dropout", format!("probability must be in [0, 1), got {p}")));
        }
        Ok(Dropout { p })
    }
}

impl Dropout {
    /// The scaled mask this layer would apply to a tensor of `shape` in
    /// training (the same draws as `forward`), for an op that applies it as
    /// it writes its output; `None` where `forward` is the identity.
    pub fn mask(&self, shape: &[usize], dtype: DType, device: &Device, ctx: &mut Ctx) -> Result<Option<Tensor>> {
        if ctx.train && self.p > 0.0 {
            Ok(Some(Tensor::dropout_mask(self.p, shape, dtype, device, &mut ctx.rng)?))
        } else {
            Ok(None)
        }
    }
}

impl Module for Dropout {
    fn forward(&self, x: &Var, ctx: &mut Ctx) -> Result<Var> {
        if ctx.train && self.p > 0.0 {
            Ok(x.dropout(self.p, &mut ctx.rng)?)
        } else {
            Ok(x.clone())
        }
    }
}
