//! A training recipe: the choices beyond the model and the data that decide
//! what a run learns and how fast. `seed` is the seed recipe exactly
//! (`eps` prediction, unconditional, no warm-up); `cpu-hour` gathers the
//! levers meant to make a short CPU run count (see README).
//!
//! A run records its recipe in every checkpoint, so `--resume` continues
//! with the same one, and `sample`/`loss` know the objective and classes.

use crate::objective::Objective;
use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

/// Everything a run trains with, beyond the model, data and optimizer basics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    pub objective: Objective,
    /// Min-SNR-gamma loss weighting (`None`: every image counts the same).
    pub min_snr_gamma: Option<f64>,
    /// Condition on the class folders of the data (classifier-free guidance).
    pub class_cond: bool,
    /// Probability that a training label is replaced by the null class.
    pub cond_drop: f64,
    /// Steps of linear learning-rate warm-up before the cosine decay.
    pub lr_warmup_steps: u64,
    /// EMA decay ramping up as `min(decay, (1 + k) / (10 + k))` after `k`
    /// updates, so early averages are not mostly the initial weights.
    pub ema_warmup: bool,
    /// Guidance weight of the preview grids of a class-conditional run.
    pub guidance: f64,
}

/// The named recipes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum RecipeName {
    /// The seed recipe: eps prediction, unconditional, no warm-up.
    #[default]
    Seed,
    /// v prediction with min-SNR-5 weighting, class conditioning (10% null
    /// labels, guidance 2 in previews), 500 warm-up steps, EMA warm-up.
    CpuHour,
}

impl Default for Recipe {
    fn default() -> Recipe {
        Recipe::seed()
    }
}

impl Recipe {
    pub fn seed() -> Recipe {
        Recipe { objective: Objective::Eps, min_snr_gamma: None, class_cond: false, cond_drop: 0.0, lr_warmup_steps: 0, ema_warmup: false, guidance: 1.0 }
    }

    pub fn cpu_hour() -> Recipe {
        Recipe { objective: Objective::V, min_snr_gamma: Some(5.0), class_cond: true, cond_drop: 0.1, lr_warmup_steps: 500, ema_warmup: true, guidance: 2.0 }
    }

    pub fn named(name: RecipeName) -> Recipe {
        match name {
            RecipeName::Seed => Recipe::seed(),
            RecipeName::CpuHour => Recipe::cpu_hour(),
        }
    }

    /// The EMA decay for update number `k` (counting from 0).
    pub fn ema_decay(&self, decay: f64, k: u64) -> f64 {
        if self.ema_warmup {
            decay.min((1.0 + k as f64) / (10.0 + k as f64))
        } else {
            decay
        }
    }

    /// The recipe in words, for logs.
    pub fn describe(&self) -> String {
        let gamma = self.min_snr_gamma.map_or("off".to_string(), |g| g.to_string());
        let classes = if self.class_cond { format!("on, {}% null labels", self.cond_drop * 100.0) } else { "off".to_string() };
        format!(
            "objective {}, min-SNR gamma {gamma}, class conditioning {classes}, LR warm-up {} steps, EMA warm-up {}",
            self.objective,
            self.lr_warmup_steps,
            if self.ema_warmup { "on" } else { "off" }
        )
    }

    /// Refuses values no run can use, naming the flag.
    pub fn check(&self) -> Result<()> {
        if let Some(g) = self.min_snr_gamma {
            if !(g.is_finite() && g > 0.0) {
                bail!("--min-snr-gamma must be a positive number, got {g}");
            }
        }
        if !(0.0..1.0).contains(&self.cond_drop) {
            bail!("--cond-drop must be in [0, 1), got {}", self.cond_drop);
        }
        if self.class_cond && self.cond_drop == 0.0 {
            bail!("--cond-drop 0 would never train the unconditional model that guidance needs; use 0.1 to 0.2");
        }
        crate::validate::guidance("--guidance", self.guidance)?;
        Ok(())
    }
}

/// The recipe flags shared by `ddpm train` and the flowers example: a named
/// recipe, then any of its parts overridden.
#[derive(Args, Clone, Debug, Default)]
pub struct RecipeArgs {
    /// Start from a named recipe (seed: the seed recipe; cpu-hour: the levers
    /// for a short CPU run); the flags below override its parts.
    #[arg(long, value_enum)]
    pub recipe: Option<RecipeName>,
    /// What the network predicts: eps (noise), v, or flow (flow matching).
    #[arg(long, value_enum)]
    pub objective: Option<Objective>,
    /// Min-SNR-gamma loss weighting with this gamma (5 is the paper's choice).
    #[arg(long)]
    pub min_snr_gamma: Option<f64>,
    /// Condition on the class folders of --data (true/false).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub class_cond: Option<bool>,
    /// Fraction of training labels dropped to the null class (0.1 to 0.2).
    #[arg(long)]
    pub cond_drop: Option<f64>,
    /// Steps of linear learning-rate warm-up.
    #[arg(long)]
    pub lr_warmup: Option<u64>,
    /// Ramp the EMA decay up from 0.1 (true/false).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub ema_warmup: Option<bool>,
    /// Classifier-free guidance weight of the preview grids (1: none).
    #[arg(long)]
    pub guidance: Option<f64>,
}

impl RecipeArgs {
    /// The named recipe (`default` when none was asked for) with the flags applied.
    pub fn resolve(&self, default: RecipeName) -> Result<Recipe> {
        let mut r = Recipe::named(self.recipe.unwrap_or(default));
        if let Some(o) = self.objective {
            r.objective = o;
        }
        if let Some(g) = self.min_snr_gamma {
            r.min_snr_gamma = Some(g);
        }
        if let Some(c) = self.class_cond {
            r.class_cond = c;
            if c && self.cond_drop.is_none() && r.cond_drop == 0.0 {
                r.cond_drop = 0.1;
            }
        }
        if let Some(p) = self.cond_drop {
            r.cond_drop = p;
        }
        if let Some(w) = self.lr_warmup {
            r.lr_warmup_steps = w;
        }
        if let Some(e) = self.ema_warmup {
            r.ema_warmup = e;
        }
        if let Some(w) = self.guidance {
            r.guidance = w;
        }
        r.check()?;
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ema_warmup_ramps_to_the_decay() {
        let r = Recipe::cpu_hour();
        assert!((r.ema_decay(0.999, 0) - 0.1).abs() < 1e-15);
        assert!((r.ema_decay(0.999, 10) - 11.0 / 20.0).abs() < 1e-15);
        assert_eq!(r.ema_decay(0.999, 100_000), 0.999);
        assert_eq!(Recipe::seed().ema_decay(0.999, 0), 0.999);
    }

    #[test]
    fn flags_override_the_named_recipe_and_bad_values_name_the_flag() {
        let args = RecipeArgs { recipe: Some(RecipeName::CpuHour), objective: Some(Objective::Flow), ..Default::default() };
        let r = args.resolve(RecipeName::Seed).unwrap();
        assert_eq!((r.objective, r.class_cond, r.lr_warmup_steps), (Objective::Flow, true, 500));
        assert_eq!(RecipeArgs::default().resolve(RecipeName::Seed).unwrap(), Recipe::seed());
        let cond = RecipeArgs { class_cond: Some(true), ..Default::default() }.resolve(RecipeName::Seed).unwrap();
        assert_eq!(cond.cond_drop, 0.1);
        let bad = RecipeArgs { cond_drop: Some(1.5), ..Default::default() }.resolve(RecipeName::Seed).unwrap_err();
        assert!(bad.to_string().contains("--cond-drop"));
        let bad = RecipeArgs { min_snr_gamma: Some(-1.0), ..Default::default() }.resolve(RecipeName::Seed).unwrap_err();
        assert!(bad.to_string().contains("--min-snr-gamma"));
    }
}
