//! Gradient clipping by global norm, as `torch.nn.utils.clip_grad_norm_`.

use crate::{ParamStore, Result};
use autograd::Grads;
use tensor::Tensor;

/// Computes the L2 norm of all the store's parameter gradients taken
/// together and, when it exceeds `max_norm`, scales every gradient by
/// `max_norm / (norm + 1e-6)`. Returns the norm before clipping.
///
/// The gradient tensors are rescaled in place, so every holder of `grads`
/// sees the clipped values. A non-finite norm is returned as it is and the
/// gradients are left alone: check it to skip a diverged step.
///
/// ```
/// use nn::{clip_grad_norm, Init, ParamStore};
/// use nn::autograd::tensor::{DType, Device, Rng};
///
/// let store = ParamStore::new(Device::Cpu, DType::F64, Rng::new(0));
/// let w = store.root().param("w", [2], Init::Const(1.0))?;
/// // the gradient of 3 w₀ + 4 w₁ is [3, 4], of norm 5
/// let coeffs = nn::autograd::Var::constant(nn::autograd::tensor::Tensor::from_vec(vec![3.0f64, 4.0], 2, &Device::Cpu)?);
/// let mut grads = w.mul(&coeffs)?.sum_all()?.backward()?;
/// let norm = clip_grad_norm(&store, &mut grads, 1.0)?;
/// assert_eq!(norm, 5.0);
/// let g = grads.get(&w).unwrap().to_vec::<f64>()?;
/// assert!((g[0] - 0.6).abs() < 1e-6 && (g[1] - 0.8).abs() < 1e-6);
/// # Ok::<(), nn::NnError>(())
/// ```
pub fn clip_grad_norm(store: &ParamStore, grads: &mut Grads, max_norm: f64) -> Result<f64> {
    let gs: Vec<Tensor> = store.named().iter().filter_map(|(_, v)| grads.get(v).cloned()).collect();
    let mut sum_sq = 0.0;
    for g in &gs {
        sum_sq += g.sqr()?.sum_all()?.to_scalar()?;
    }
    let norm = sum_sq.sqrt();
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        // All scaled copies first, then the writes: gradients that share
        // storage (one tensor handed to two parameters) are scaled once.
        let scaled = gs.iter().map(|g| g.mul_scalar(coef)).collect::<tensor::Result<Vec<_>>>()?;
        for (g, s) in gs.iter().zip(&scaled) {
            g.assign(s)?;
        }
    }
    Ok(norm)
}
