//! Stochastic gradient descent with momentum, as `torch.optim.SGD`
//! (dampening 0):
//!
//! ```text
//! g = g + weight_decay * p
//! buf = g                       (first step)
//! buf = momentum * buf + g      (later steps)
//! g = g + momentum * buf        (nesterov)   or   g = buf   (otherwise)
//! p = p - lr * g
//! ```

use super::{per_param_buffers, OptimState, Optimizer};
use crate::{NnError, ParamStore, Result};
use autograd::Grads;
use std::collections::BTreeMap;
use tensor::Tensor;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
}

impl SgdConfig {
    /// Plain SGD with learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        SgdConfig { lr, momentum: 0.0, weight_decay: 0.0, nesterov: false }
    }
}

/// ```
/// use nn::{Init, Optimizer, ParamStore, Sgd, SgdConfig};
/// use nn::autograd::tensor::{DType, Device, Rng};
///
/// // minimise (w - 3)² from w = 0
/// let store = ParamStore::new(Device::Cpu, DType::F64, Rng::new(0));
/// let w = store.root().param("w", [1], Init::Const(0.0))?;
/// let mut opt = Sgd::new(&store, SgdConfig::new(0.1))?;
/// for _ in 0..100 {
///     let loss = w.add_scalar(-3.0)?.sqr()?.sum_all()?;
///     opt.step(&loss.backward()?)?;
/// }
/// assert!((w.tensor().to_scalar()? - 3.0).abs() < 1e-6);
/// # Ok::<(), nn::NnError>(())
/// ```
pub struct Sgd {
    store: ParamStore,
    pub cfg: SgdConfig,
    step: u64,
    momentum: BTreeMap<String, Tensor>,
}

impl Sgd {
    pub fn new(store: &ParamStore, cfg: SgdConfig) -> Result<Sgd> {
        if cfg.lr < 0.0 || cfg.momentum < 0.0 || cfg.weight_decay < 0.0 || (cfg.nesterov && cfg.momentum == 0.0) {
            return Err(NnError::bad("Sgd", format!("invalid configuration {cfg:?} (nesterov needs momentum)")));
        }
        Ok(Sgd { store: store.clone(), cfg, step: 0, momentum: BTreeMap::new() })
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, grads: &Grads) -> Result<()> {
        self.step += 1;
        let c = self.cfg;
        for (name, var) in self.store.named() {
            let Some(grad) = grads.get(&var) else { continue };
            let p = var.tensor();
            let mut d = if c.weight_decay != 0.0 { grad.add(&p.mul_scalar(c.weight_decay)?)? } else { grad.clone() };
            if c.momentum != 0.0 {
                let buf = match self.momentum.remove(&name) {
                    None => d.copy()?,
                    Some(buf) => buf.mul_scalar(c.momentum)?.add(&d)?,
                };
                d = if c.nesterov { d.add(&buf.mul_scalar(c.momentum)?)? } else { buf.clone() };
                self.momentum.insert(name, buf);
            }
            p.assign(&p.sub(&d.mul_scalar(c.lr)?)?)?;
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
        let tensors = self.momentum.iter().map(|(k, t)| (format!("{k}.momentum_buffer"), t.clone())).collect();
        OptimState { step: self.step, param_steps: BTreeMap::new(), tensors }
    }

    fn load_state(&mut self, state: &OptimState) -> Result<()> {
        let buffers = per_param_buffers(&self.store, state, &["momentum_buffer"])?;
        self.step = state.step;
        self.momentum = buffers.into_iter().map(|(k, mut ts)| (k, ts.pop().expect("one buffer"))).collect();
        Ok(())
    }
}
