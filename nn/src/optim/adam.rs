//! Adam and AdamW, exactly as `torch.optim.Adam` / `torch.optim.AdamW`
//! (non-amsgrad, non-foreach) compute them, for parameter p with gradient g
//! at its step t = 1, 2, ...:
//!
//! ```text
//! AdamW only:  p = p * (1 - lr * weight_decay)
//! Adam only:   g = g + weight_decay * p
//! m = beta1 * m + (1 - beta1) * g
//! v = beta2 * v + (1 - beta2) * g²
//! p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
//! ```
//!
//! The update runs as one fused kernel per parameter (`Tensor::adam_update_`).

use super::{per_param_buffers, OptimState, Optimizer};
use crate::{NnError, ParamStore, Result};
use autograd::Grads;
use std::collections::BTreeMap;
use tensor::{AdamStep, Tensor};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// true: AdamW (decay applied to the weights, not added to the gradient).
    pub decoupled_weight_decay: bool,
}

impl Default for AdamConfig {
    /// PyTorch's Adam defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8, no decay.
    fn default() -> Self {
        AdamConfig { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decoupled_weight_decay: false }
    }
}

impl AdamConfig {
    /// Adam with PyTorch's defaults and learning rate `lr`.
    pub fn adam(lr: f64) -> Self {
        AdamConfig { lr, ..Default::default() }
    }

    /// AdamW with PyTorch's defaults (weight decay 0.01) and learning rate `lr`.
    pub fn adamw(lr: f64) -> Self {
        AdamConfig { lr, weight_decay: 0.01, decoupled_weight_decay: true, ..Default::default() }
    }
}

struct ParamState {
    m: Tensor,
    v: Tensor,
    step: u64,
}

/// Adam, or AdamW when `cfg.decoupled_weight_decay` is set.
///
/// ```
/// use nn::{Adam, AdamConfig, Init, Optimizer, ParamStore};
/// use nn::autograd::tensor::{DType, Device, Rng};
///
/// let store = ParamStore::new(Device::Cpu, DType::F32, Rng::new(0));
/// let w = store.root().param("w", [2], Init::Const(1.0))?;
/// let mut opt = Adam::new(&store, AdamConfig::adamw(1e-2))?;
/// let grads = w.sqr()?.sum_all()?.backward()?;
/// opt.step(&grads)?;
/// // Adam's first step moves each weight by about lr, whatever the gradient's scale
/// let after = w.tensor().to_vec::<f32>()?;
/// assert!(after.iter().all(|v| (v - 0.99).abs() < 1e-3), "{after:?}");
/// assert_eq!(opt.state().step, 1);
/// # Ok::<(), nn::NnError>(())
/// ```
pub struct Adam {
    store: ParamStore,
    pub cfg: AdamConfig,
    step: u64,
    state: BTreeMap<String, ParamState>,
}

impl Adam {
    pub fn new(store: &ParamStore, cfg: AdamConfig) -> Result<Adam> {
        let ok = cfg.lr >= 0.0 && cfg.eps >= 0.0 && (0.0..1.0).contains(&cfg.beta1) && (0.0..1.0).contains(&cfg.beta2) && cfg.weight_decay >= 0.0;
        if !ok {
            return Err(NnError::bad("Adam", format!("invalid configuration {cfg:?}")));
        }
        Ok(Adam { store: store.clone(), cfg, step: 0, state: BTreeMap::new() })
    }
}

impl Optimizer for Adam {
    fn step(&mut self, grads: &Grads) -> Result<()> {
        self.step += 1;
        let c = self.cfg;
        for (name, var) in self.store.named() {
            let Some(grad) = grads.get(&var) else { continue };
            let p = var.tensor();
            let st = match self.state.entry(name) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => e.insert(ParamState { m: p.zeros_like()?, v: p.zeros_like()?, step: 0 }),
            };
            st.step += 1;
            let t = st.step as f64;
            let (l2, decoupled) = if c.decoupled_weight_decay { (0.0, c.weight_decay) } else { (c.weight_decay, 0.0) };
            let s = AdamStep {
                lr: c.lr,
                beta1: c.beta1,
                beta2: c.beta2,
                eps: c.eps,
                weight_decay: l2,
                decoupled_decay: decoupled,
                bias_correction1: 1.0 - c.beta1.powf(t),
                bias_correction2: 1.0 - c.beta2.powf(t),
            };
            p.adam_update_(grad, &st.m, &st.v, &s)?;
        }
        Ok(())
    }

    fn lr(&self) -> f64 {
        self.cfg.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }

    fn state(&self) -> OptimState {
        let mut out = OptimState { step: self.step, ..Default::default() };
        for (name, st) in &self.state {
            out.tensors.insert(format!("{name}.m"), st.m.clone());
            out.tensors.insert(format!("{name}.v"), st.v.clone());
            if st.step != self.step {
                out.param_steps.insert(name.clone(), st.step);
            }
        }
        out
    }

    fn load_state(&mut self, state: &OptimState) -> Result<()> {
        let buffers = per_param_buffers(&self.store, state, &["m", "v"])?;
        self.step = state.step;
        self.state = buffers
            .into_iter()
            .map(|(name, mut ts)| {
                let v = ts.pop().expect("two buffers");
                let m = ts.pop().expect("two buffers");
                let step = state.param_steps.get(&name).copied().unwrap_or(state.step);
                (name, ParamState { m, v, step })
            })
            .collect();
        Ok(())
    }
}
