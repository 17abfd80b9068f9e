//! # nn: layers, optimizers and checkpoints for petal
//!
//! The third layer of the stack: `tensor` (arrays and kernels) ->
//! `autograd` (`Var`, reverse-mode gradients) -> **nn** -> `ddpm` (the
//! diffusion U-Net). Everything here is written with `autograd::Var` ops and
//! the fused optimizer kernels of `tensor`; nothing touches a device directly.
//!
//! - `params.rs`: [`ParamStore`], the named parameters of a model, and
//!   [`Path`], a position in its dotted name tree (`down.0.1.conv1.weight`:
//!   PyTorch's `state_dict` names); [`Init`] says how a parameter starts.
//! - `module.rs`: the [`Module`] trait, the forward context [`Ctx`]
//!   (train/eval and the dropout generator) and [`Sequential`].
//! - `layers/`: one file per layer, initialised as PyTorch does: [`Linear`],
//!   [`Conv2d`], [`GroupNorm`], [`BatchNorm2d`], [`Embedding`], [`SinusoidalEmbedding`],
//!   [`Dropout`], [`SiLU`], [`AvgPool2d`], [`MaxPool2d`], [`UpsampleNearest2d`].
//! - `optim/`: the [`Optimizer`] trait with [`Sgd`] and [`Adam`] (AdamW via
//!   [`AdamConfig::adamw`]), [`clip_grad_norm`], the weight average [`Ema`],
//!   and learning-rate schedules ([`LrSchedule`]: [`Constant`],
//!   [`LinearWarmup`], [`CosineAnnealing`]).
//! - `checkpoint.rs`: [`Checkpoint`] files in safetensors format, loadable
//!   by PyTorch, holding weights, optimizer state, EMA weights and metadata.
//! - `precision.rs`: mixed precision: [`Precision`] (f32, bf16, f16
//!   activations over f32 master weights) and the dynamic [`LossScaler`]
//!   that f16 needs.
//! - `error.rs`: [`NnError`].

mod checkpoint;
mod error;
pub mod layers;
mod module;
pub mod optim;
mod params;
mod precision;

pub use autograd;
pub use checkpoint::{load_checkpoint, save_checkpoint, Checkpoint, LoadReport};
pub use error::{NnError, Result};
pub use layers::{AvgPool2d, BatchNorm2d, Conv2d, Conv2dConfig, Dropout, Embedding, GroupNorm, Linear, MaxPool2d, SiLU, SinusoidalEmbedding, UpsampleNearest2d};
pub use module::{Ctx, Module, Sequential};
pub use optim::{clip_grad_norm, Adam, AdamConfig, Constant, CosineAnnealing, Ema, LinearWarmup, LrSchedule, OptimState, Optimizer, Sgd, SgdConfig};
pub use params::{Init, ParamStore, Path};
pub use precision::{LossScaler, LossScalerConfig, Precision};
