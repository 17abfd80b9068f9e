//! Mixed precision: which dtype the activations use, and the dynamic loss
//! scaling that f16 needs.
//!
//! The recipe (as PyTorch's autocast + `GradScaler`):
//! - the master weights stay f32 in the [`ParamStore`] and the optimizer
//!   steps on them in f32;
//! - the network's input is cast to the half dtype; `Linear` and `Conv2d`
//!   cast their f32 parameters to the input's dtype with the differentiable
//!   `Var::to_dtype` (so the gradients come back to the f32 masters), and
//!   `GroupNorm` computes its statistics in f32; the products run on
//!   cuBLAS with f32 accumulation;
//! - the output is cast back to f32 before the loss.
//!
//! bf16 has f32's exponent range and needs nothing more. f16 tops out at
//! 65504 and flushes gradients below about 6e-8 to zero, so the loss is
//! multiplied by a large factor before `backward` ([`LossScaler::scale`]),
//! and the gradients divided by it afterwards
//! ([`LossScaler::unscale_and_check`]). When that overflowed somewhere (an
//! inf or NaN gradient) the step is skipped and the factor halved; after
//! 2000 clean steps in a row it doubles again.
//!
//! Only the CUDA backend computes in f16/bf16 (the CPU kernels support f32
//! and f64): [`Precision::check_device`] says so up front.

use crate::optim::Optimizer;
use crate::{Checkpoint, NnError, ParamStore, Result};
use autograd::{Grads, Var};
use std::fmt;
use std::str::FromStr;
use tensor::{DType, Device, Tensor};

/// The dtype of the activations (the weights stay f32 whatever it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    F32,
    Bf16,
    F16,
}

impl Precision {
    pub const ALL: [Precision; 3] = [Precision::F32, Precision::Bf16, Precision::F16];

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        }
    }

    /// The dtype the activations are computed in.
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
            Precision::F16 => DType::F16,
        }
    }

    /// True for bf16 and f16.
    pub fn is_mixed(self) -> bool {
        self != Precision::F32
    }

    /// Only f16 needs loss scaling (bf16 has f32's exponent range).
    pub fn needs_loss_scaling(self) -> bool {
        self == Precision::F16
    }

    /// Fails, with a message that says why, when `device` cannot run this
    /// precision: the CPU backend computes in f32/f64 only, and GPUs older
    /// than Ampere have no bf16.
    pub fn check_device(self, device: &Device) -> Result<()> {
        if self.is_mixed() && !device.is_cuda() {
            return Err(NnError::bad(
                "precision",
                format!("{self} on {device}: mixed precision needs a CUDA device; the CPU backend computes in f32/f64 (use f32 there)"),
            ));
        }
        if let Device::Cuda(gpu) = device {
            gpu.check_dtype(self.dtype())?;
        }
        Ok(())
    }
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Precision::ALL
            .into_iter()
            .find(|p| p.name() == s.to_ascii_lowercase())
            .ok_or_else(|| format!("unknown precision '{s}'; choose one of f32, bf16, f16"))
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The constants of dynamic loss scaling; the defaults are PyTorch's
/// `GradScaler`'s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossScalerConfig {
    /// The first scale: 2^16.
    pub init_scale: f64,
    /// The scale is multiplied by this after `growth_interval` clean steps: 2.
    pub growth_factor: f64,
    /// ... and by this after a step with an inf/NaN gradient: 0.5.
    pub backoff_factor: f64,
    /// Consecutive finite steps before the scale grows: 2000.
    pub growth_interval: u64,
}

impl Default for LossScalerConfig {
    fn default() -> Self {
        LossScalerConfig { init_scale: 65536.0, growth_factor: 2.0, backoff_factor: 0.5, growth_interval: 2000 }
    }
}

/// Dynamic loss scaling with `torch.cuda.amp.GradScaler` semantics:
///
/// ```text
/// let loss = scaler.scale(&loss)?;          // loss * S
/// let mut grads = loss.backward()?;         // gradients * S
/// if scaler.unscale_and_check(&store, &mut grads)? { opt.step(&grads)?; }
/// scaler.update(!finite);                   // S / 2 on overflow, S * 2 every 2000 clean steps
/// ```
///
/// or all of the last two lines at once with [`LossScaler::step`].
#[derive(Debug, Clone, PartialEq)]
pub struct LossScaler {
    cfg: LossScalerConfig,
    scale: f64,
    /// Consecutive finite steps since the last change of scale.
    growth_tracker: u64,
}

/// Checkpoint metadata keys of the scaler's state.
const META_SCALE: &str = "loss_scaler.scale";
const META_TRACKER: &str = "loss_scaler.growth_tracker";

impl Default for LossScaler {
    fn default() -> Self {
        LossScaler::new()
    }
}

impl LossScaler {
    /// PyTorch's defaults: scale 2^16, x2 every 2000 clean steps, x0.5 on overflow.
    pub fn new() -> LossScaler {
        let cfg = LossScalerConfig::default();
        LossScaler { cfg, scale: cfg.init_scale, growth_tracker: 0 }
    }

    pub fn with_config(cfg: LossScalerConfig) -> Result<LossScaler> {
        let ok = cfg.init_scale.is_finite()
            && cfg.init_scale > 0.0
            && cfg.growth_factor > 1.0
            && cfg.growth_factor.is_finite()
            && cfg.backoff_factor > 0.0
            && cfg.backoff_factor < 1.0
            && cfg.growth_interval > 0;
        if !ok {
            return Err(NnError::bad("LossScaler", format!("invalid configuration {cfg:?}")));
        }
        Ok(LossScaler { cfg, scale: cfg.init_scale, growth_tracker: 0 })
    }

    pub fn config(&self) -> &LossScalerConfig {
        &self.cfg
    }

    /// The current scale factor.
    pub fn get_scale(&self) -> f64 {
        self.scale
    }

    /// Consecutive finite steps since the scale last changed.
    pub fn growth_tracker(&self) -> u64 {
        self.growth_tracker
    }

    /// `loss * scale`, to call `backward` on.
    pub fn scale(&self, loss: &Var) -> Result<Var> {
        Ok(loss.mul_scalar(self.scale)?)
    }

    /// Divides every gradient of the store's parameters by the scale, in
    /// place, and returns true when all of them are finite. When it returns
    /// false the gradients are garbage: skip the optimizer step (and call
    /// `update(true)`).
    ///
    /// One read from the device per call: the per-tensor sums of |g| are
    /// added up on the device, and only that total comes back.
    pub fn unscale_and_check(&self, store: &ParamStore, grads: &mut Grads) -> Result<bool> {
        let inv = 1.0 / self.scale;
        let mut done: Vec<Tensor> = Vec::new();
        let mut total: Option<Tensor> = None;
        for (_, var) in store.named() {
            let Some(g) = grads.get(&var) else { continue };
            if done.iter().any(|d| d.same_storage(g)) {
                continue; // one tensor handed to two parameters: unscale it once
            }
            g.assign(&g.mul_scalar(inv)?)?;
            // NaN and inf survive abs and sum; the f64 total cannot overflow
            // from finite per-tensor sums of realistic size.
            let s = g.abs()?.sum_all()?.to_dtype(DType::F64)?;
            total = Some(match total {
                Some(t) => t.add(&s)?,
                None => s,
            });
            done.push(g.clone());
        }
        let Some(total) = total else { return Ok(true) };
        if total.to_scalar()?.is_finite() {
            return Ok(true);
        }
        // Rare: an inf/NaN, or a per-tensor sum that overflowed its dtype
        // with finite elements. Decide exactly, element by element in f64.
        for g in &done {
            if g.has_non_finite()? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Adjusts the scale after a step: backs off (and restarts the count)
    /// when `found_inf`, grows after `growth_interval` finite steps in a row.
    pub fn update(&mut self, found_inf: bool) {
        if found_inf {
            self.scale *= self.cfg.backoff_factor;
            self.growth_tracker = 0;
            return;
        }
        self.growth_tracker += 1;
        if self.growth_tracker >= self.cfg.growth_interval {
            let grown = self.scale * self.cfg.growth_factor;
            // As PyTorch: never grow into an infinite scale.
            if grown.is_finite() {
                self.scale = grown;
            }
            self.growth_tracker = 0;
        }
    }

    /// Unscales and checks `grads`, steps `opt` when they are finite, and
    /// updates the scale. Returns whether the optimizer stepped.
    pub fn step(&mut self, opt: &mut dyn Optimizer, store: &ParamStore, grads: &mut Grads) -> Result<bool> {
        let finite = self.unscale_and_check(store, grads)?;
        if finite {
            opt.step(grads)?;
        }
        self.update(!finite);
        Ok(finite)
    }

    /// Writes the scale and the growth count into checkpoint metadata
    /// (`loss_scaler.scale`, `loss_scaler.growth_tracker`).
    pub fn save_meta(&self, ck: &mut Checkpoint) {
        // f64's Display prints the shortest string that parses back exactly.
        ck.set_meta(META_SCALE, self.scale);
        ck.set_meta(META_TRACKER, self.growth_tracker);
    }

    /// Restores what `save_meta` wrote. Returns false (and changes nothing)
    /// when the checkpoint holds no scaler state.
    pub fn load_meta(&mut self, ck: &Checkpoint) -> Result<bool> {
        let bad = |msg: String| NnError::Checkpoint { path: ck.path.clone().unwrap_or_else(|| "<in memory>".into()), msg };
        let tracker = ck.meta_u64(META_TRACKER)?;
        let scale = match ck.meta(META_SCALE) {
            None => None,
            Some(s) => match s.parse::<f64>() {
                Ok(v) if v.is_finite() && v > 0.0 => Some(v),
                _ => return Err(bad(format!("metadata `{META_SCALE}` = {s:?} is not a positive number"))),
            },
        };
        match (scale, tracker) {
            (Some(scale), Some(tracker)) => {
                self.scale = scale;
                self.growth_tracker = tracker;
                Ok(true)
            }
            (None, None) => Ok(false),
            _ => Err(bad(format!("metadata has only half of the loss scaler state ({META_SCALE} and {META_TRACKER} go together)"))),
        }
    }
}
