//! Optimizers (`Sgd`, `Adam` with its AdamW form), gradient clipping, the
//! exponential moving average of the weights, and learning-rate schedules.
//!
//! Every optimizer walks the store's parameters by name, skips those without
//! a gradient, and can export and import its state as named tensors so that
//! a resumed run continues bit for bit.

mod adam;
mod clip;
mod ema;
mod schedule;
mod sgd;

pub use adam::{Adam, AdamConfig};
pub use clip::clip_grad_norm;
pub use ema::Ema;
pub use schedule::{Constant, CosineAnnealing, LinearWarmup, LrSchedule};
pub use sgd::{Sgd, SgdConfig};

use crate::{NnError, ParamStore, Result};
use autograd::Grads;
use std::collections::BTreeMap;
use tensor::Tensor;

pub trait Optimizer {
    /// Updates every parameter that has a gradient in `grads`, in place.
    fn step(&mut self, grads: &Grads) -> Result<()>;
    fn lr(&self) -> f64;
    fn set_lr(&mut self, lr: f64);
    /// The optimizer's state. The tensors are its live buffers, not copies:
    /// serialise them before the next `step`.
    fn state(&self) -> OptimState;
    /// Replaces the state with (copies of) `state`'s, which must name only
    /// parameters of the store, with their shapes.
    fn load_state(&mut self, state: &OptimState) -> Result<()>;
}

/// An optimizer's state as named tensors, e.g. `down.0.0.conv1.weight.m`.
#[derive(Clone, Default)]
pub struct OptimState {
    /// Number of `step` calls made.
    pub step: u64,
    /// Per-parameter step counts where they differ from `step` (parameters
    /// that had no gradient at some steps; Adam's bias correction uses them).
    pub param_steps: BTreeMap<String, u64>,
    /// `<param>.<buffer>`: Adam's `m` and `v`, SGD's `momentum_buffer`.
    pub tensors: BTreeMap<String, Tensor>,
}

/// Groups `state.tensors` by parameter and checks each buffer against the
/// store: returns, per parameter, its buffers in the order of `buffers`.
fn per_param_buffers(store: &ParamStore, state: &OptimState, buffers: &[&str]) -> Result<BTreeMap<String, Vec<Tensor>>> {
    let (mut missing, mut unexpected, mut misshaped) = (Vec::new(), Vec::new(), Vec::new());
    let mut found: BTreeMap<String, Vec<Option<Tensor>>> = BTreeMap::new();
    for (key, t) in &state.tensors {
        let split = buffers.iter().enumerate().find_map(|(i, b)| key.strip_suffix(b).and_then(|p| p.strip_suffix('.')).map(|p| (i, p)));
        let Some((i, pname)) = split else {
            unexpected.push(key.clone());
            continue;
        };
        let Some(param) = store.get(pname) else {
            unexpected.push(key.clone());
            continue;
        };
        if param.dims() != t.dims() {
            misshaped.push((key.clone(), param.dims().to_vec(), t.dims().to_vec()));
            continue;
        }
        let slot = found.entry(pname.to_string()).or_insert_with(|| vec![None; buffers.len()]);
        let (dtype, device) = (param.tensor().dtype(), param.tensor().device().clone());
        slot[i] = Some(t.to_dtype(dtype)?.to_device(&device)?.copy()?);
    }
    let mut out = BTreeMap::new();
    for (pname, slots) in found {
        let mut ts = Vec::new();
        for (b, slot) in buffers.iter().zip(slots) {
            match slot {
                Some(t) => ts.push(t),
                None => missing.push(format!("{pname}.{b}")),
            }
        }
        out.insert(pname, ts);
    }
    if missing.is_empty() && unexpected.is_empty() && misshaped.is_empty() {
        Ok(out)
    } else {
        Err(NnError::Mismatch { origin: "optimizer state".into(), missing, unexpected, misshaped })
    }
}
