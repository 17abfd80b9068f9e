//! An exponential moving average of the weights, used for sampling:
//! after each optimizer step, `shadow = decay * shadow + (1 - decay) * param`.

use crate::{NnError, ParamStore, Result};
use std::collections::BTreeMap;
use tensor::Tensor;

/// ```
/// use nn::{Ema, Init, ParamStore};
/// use nn::autograd::tensor::{DType, Device, Rng, Tensor};
///
/// let store = ParamStore::new(Device::Cpu, DType::F32, Rng::new(0));
/// let w = store.root().param("w", [1], Init::Const(0.0))?;
/// let mut ema = Ema::new(&store, 0.9)?;
/// w.tensor().assign(&Tensor::from_vec(vec![1.0f32], 1, &Device::Cpu)?)?; // a "training step"
/// ema.update(&store)?; // 0.9 * 0 + 0.1 * 1
/// let (name, shadow) = &ema.named()[0];
/// assert_eq!(name, "w");
/// assert!((shadow.to_vec::<f32>()?[0] - 0.1).abs() < 1e-6);
/// # Ok::<(), nn::NnError>(())
/// ```
pub struct Ema {
    pub decay: f64,
    shadow: BTreeMap<String, Tensor>,
}

impl Ema {
    /// Starts from a copy of every parameter of `store`.
    pub fn new(store: &ParamStore, decay: f64) -> Result<Ema> {
        if !(0.0..=1.0).contains(&decay) {
            return Err(NnError::bad("Ema", format!("decay must be in [0, 1], got {decay}")));
        }
        let shadow = store.named().into_iter().map(|(k, v)| Ok((k, v.tensor().copy()?))).collect::<Result<_>>()?;
        Ok(Ema { decay, shadow })
    }

    /// Moves every shadow towards the store's current value (in place).
    pub fn update(&mut self, store: &ParamStore) -> Result<()> {
        for (name, shadow) in &self.shadow {
            let p = store.get(name).ok_or_else(|| NnError::bad("Ema::update", format!("parameter `{name}` is not in the store")))?;
            shadow.ema_update_(p.tensor(), self.decay)?;
        }
        Ok(())
    }

    /// The averaged weights by parameter name (live tensors, not copies).
    pub fn named(&self) -> Vec<(String, Tensor)> {
        self.shadow.iter().map(|(k, t)| (k.clone(), t.clone())).collect()
    }

    /// Overwrites the store's parameters with the averaged weights (e.g. for
    /// sampling).
    pub fn copy_to(&self, store: &ParamStore) -> Result<()> {
        for (name, shadow) in &self.shadow {
            let p = store.get(name).ok_or_else(|| NnError::bad("Ema::copy_to", format!("parameter `{name}` is not in the store")))?;
            p.tensor().assign(shadow)?;
        }
        Ok(())
    }

    /// Replaces the averages with (converted copies of) `tensors`, which must
    /// name exactly the tracked parameters with their shapes.
    pub fn load(&mut self, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
        let (mut missing, mut unexpected, mut misshaped) = (Vec::new(), Vec::new(), Vec::new());
        for (name, shadow) in &self.shadow {
            match tensors.get(name) {
                None => missing.push(name.clone()),
                Some(t) if t.dims() != shadow.dims() => misshaped.push((name.clone(), shadow.dims().to_vec(), t.dims().to_vec())),
                Some(_) => {}
            }
        }
        unexpected.extend(tensors.keys().filter(|k| !self.shadow.contains_key(*k)).cloned());
        if !(missing.is_empty() && unexpected.is_empty() && misshaped.is_empty()) {
            return Err(NnError::Mismatch { origin: "EMA weights".into(), missing, unexpected, misshaped });
        }
        for (name, shadow) in &self.shadow {
            shadow.assign(&tensors[name].to_dtype(shadow.dtype())?.to_device(shadow.device())?)?;
        }
        Ok(())
    }
}
