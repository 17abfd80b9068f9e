//! A U-Net together with its parameter store, and loading one from a
//! checkpoint: petal's own (its metadata names the preset, the objective and
//! the class names; sampling uses its EMA weights) or a bare PyTorch
//! `state_dict` saved with safetensors (an unconditional `eps` model).

use crate::config::{Preset, UNetConfig};
use crate::objective::Objective;
use crate::unet::UNet;
use anyhow::{bail, Context, Result};
use nn::ParamStore;
use std::path::Path;
use tensor::{DType, Device, Rng};

pub struct Model {
    pub store: ParamStore,
    pub unet: UNet,
    /// What the network predicts (the seed's `eps` unless a checkpoint says otherwise).
    pub objective: Objective,
    /// The class of each label of a class-conditional model, in label order
    /// (the training folder's class folder names); empty when unconditional.
    pub class_names: Vec<String>,
}

impl Model {
    /// A freshly initialised model, drawn from `seed`.
    pub fn new(config: &UNetConfig, device: &Device, seed: u64) -> Result<Model> {
        config.check()?;
        let store = ParamStore::new(device.clone(), DType::F32, Rng::new(seed));
        let unet = UNet::new(&store.root(), config)?;
        Ok(Model { store, unet, objective: Objective::Eps, class_names: Vec::new() })
    }

    pub fn config(&self) -> &UNetConfig {
        &self.unet.config
    }
}

/// Which weights of a checkpoint a loaded model holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weights {
    Ema,
    Raw,
}

impl Weights {
    /// `ema` or `raw`, as the JSON reports print it.
    pub fn name(self) -> &'static str {
        match self {
            Weights::Ema => "ema",
            Weights::Raw => "raw",
        }
    }
}

/// The config recorded in a petal checkpoint, if it has one.
pub fn checkpoint_config(ck: &nn::Checkpoint) -> Result<Option<UNetConfig>> {
    match ck.meta("config") {
        Some(json) => {
            let config: UNetConfig = serde_json::from_str(json).context("checkpoint metadata `config` is not a valid U-Net config")?;
            config.check().context("checkpoint metadata `config` describes no buildable U-Net")?;
            Ok(Some(config))
        }
        None => Ok(None),
    }
}

/// The objective recorded in a checkpoint: `eps` when it records none (the
/// seed's checkpoints and PyTorch `state_dict`s).
pub fn checkpoint_objective(ck: &nn::Checkpoint) -> Result<Objective> {
    match ck.meta("objective") {
        Some(name) => name.parse().map_err(|e: String| anyhow::anyhow!("{}: metadata `objective`: {e}", where_from(ck))),
        None => Ok(Objective::Eps),
    }
}

fn where_from(ck: &nn::Checkpoint) -> String {
    ck.path.as_deref().map_or_else(|| "checkpoint".to_string(), |p| p.display().to_string())
}

/// The class names recorded in a checkpoint (JSON list; none when unconditional).
pub fn checkpoint_class_names(ck: &nn::Checkpoint) -> Result<Vec<String>> {
    match ck.meta("class_names") {
        Some(json) => serde_json::from_str(json).with_context(|| format!("{}: metadata `class_names` is not a JSON list of names", where_from(ck))),
        None => Ok(Vec::new()),
    }
}

/// Loads a model for inference: the checkpoint's own config wins; a bare
/// `state_dict` needs `preset`. EMA weights are used where present.
pub fn load_for_inference(path: &Path, preset: Option<Preset>, device: &Device) -> Result<(Model, Weights)> {
    let ck = nn::load_checkpoint(path)?;
    let config = match (checkpoint_config(&ck)?, preset) {
        (Some(c), Some(p)) if c.name != p.name() => {
            bail!("{} holds a {} model but --preset {} was given", path.display(), c.name, p.name())
        }
        (Some(c), _) => c,
        (None, Some(p)) => p.config(),
        (None, None) => bail!("{} has no petal metadata (a bare state_dict?): pass --preset tiny|flowers64|flowers160", path.display()),
    };
    let mut model = Model::new(&config, device, 0)?;
    model.objective = checkpoint_objective(&ck)?;
    model.class_names = checkpoint_class_names(&ck)?;
    if model.class_names.len() != config.num_classes {
        bail!("{}: the model has {} classes but the metadata names {}", path.display(), config.num_classes, model.class_names.len());
    }
    let weights = match &ck.ema {
        Some(ema) => {
            let as_model = nn::Checkpoint { model: ema.clone(), path: ck.path.clone(), ..Default::default() };
            as_model.load_into(&model.store, true)?;
            Weights::Ema
        }
        None => {
            ck.load_into(&model.store, true)?;
            Weights::Raw
        }
    };
    // NaN weights would otherwise give a black grid or a NaN loss in silence.
    for (name, var) in model.store.named() {
        if var.tensor().has_non_finite()? {
            bail!("{}: {} tensor `{name}` holds NaN or infinite values", path.display(), weights.name().to_uppercase());
        }
    }
    Ok((model, weights))
}
