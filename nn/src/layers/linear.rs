//! `y = x Wᵀ + b`, as `torch.nn.Linear`.

use super::param_as;
use crate::{Ctx, Init, Module, Path, Result};
use autograd::Var;

/// ```
/// use nn::{Ctx, Linear, Module, ParamStore};
/// use nn::autograd::{tensor::{DType, Device, Rng, Tensor}, Var};
///
/// let store = ParamStore::new(Device::Cpu, DType::F32, Rng::new(0));
/// let layer = Linear::new(&store.root(), 3, 2, true)?;
/// let x = Var::constant(Tensor::ones([5, 3], DType::F32, &Device::Cpu)?);
/// let y = layer.forward(&x, &mut Ctx::eval())?;
/// assert_eq!(y.dims(), &[5, 2]);
/// # Ok::<(), nn::NnError>(())
/// ```
pub struct Linear {
    /// [out, in]
    pub weight: Var,
    /// [out]
    pub bias: Option<Var>,
}

impl Linear {
    /// Registers `weight` [out, in] and (if `bias`) `bias` [out] under `path`.
    /// Both are uniform in ±1/sqrt(in), as PyTorch initialises them.
    pub fn new(path: &Path, in_features: usize, out_features: usize, bias: bool) -> Result<Linear> {
        let weight = path.param("weight", [out_features, in_features], Init::KaimingUniform { fan_in: in_features })?;
        let bias = if bias {
            let bound = 1.0 / (in_features as f64).sqrt();
            Some(path.param("bias", [out_features], Init::Uniform { bound })?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }
}

impl Module for Linear {
    /// x: [..., in] -> [..., out]
    /// Computes in x's dtype (the parameters are cast to it when it differs).
    fn forward(&self, x: &Var, _ctx: &mut Ctx) -> Result<Var> {
        let wt = param_as(&self.weight, x.dtype())?.transpose(0, 1)?;
        let y = if x.dims().len() == 1 { x.unsqueeze(0)?.matmul(&wt)?.squeeze(0)? } else { x.matmul(&wt)? };
        Ok(match &self.bias {
            Some(b) => y.add(&param_as(b, x.dtype())?)?,
            None => y,
        })
    }
}
