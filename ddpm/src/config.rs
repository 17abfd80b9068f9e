//! The three presets of the seed U-Net (see `shared/docs/unet.md`), the
//! CPU-sized `cpu32` preset added for short CPU runs, and the numbers that
//! define a model: image size, base channels, channel multipliers per level,
//! residual blocks per level, norm groups, dropout, classes.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UNetConfig {
    /// Preset name, kept so a checkpoint says what it holds.
    pub name: String,
    pub image_size: usize,
    pub base_channels: usize,
    pub channel_mults: Vec<usize>,
    pub blocks_per_level: usize,
    pub groups: usize,
    pub dropout: f64,
    /// Classes of a class-conditional model (0: unconditional, as the seed
    /// presets). Absent from older checkpoints, which are unconditional.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub num_classes: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    Tiny,
    Flowers64,
    Flowers160,
    /// Not a seed preset: `tiny`'s width at 32 px with a fourth level (a
    /// 2x2 middle, for more global context at little cost) and no dropout
    /// (a short run underfits; dropout only slows it).
    Cpu32,
}

impl Preset {
    pub const ALL: [Preset; 4] = [Preset::Tiny, Preset::Flowers64, Preset::Flowers160, Preset::Cpu32];

    pub fn name(self) -> &'static str {
        match self {
            Preset::Tiny => "tiny",
            Preset::Flowers64 => "flowers64",
            Preset::Flowers160 => "flowers160",
            Preset::Cpu32 => "cpu32",
        }
    }

    pub fn config(self) -> UNetConfig {
        let (image_size, base_channels, channel_mults, blocks_per_level, groups) = match self {
            Preset::Tiny => (32, 32, vec![1, 2, 2], 1, 8),
            Preset::Flowers64 => (64, 64, vec![1, 2, 4, 4], 2, 32),
            Preset::Flowers160 => (160, 96, vec![1, 2, 2, 4, 4], 2, 32),
            Preset::Cpu32 => (32, 32, vec![1, 2, 2, 2], 1, 8),
        };
        let dropout = if self == Preset::Cpu32 { 0.0 } else { 0.1 };
        UNetConfig { name: self.name().into(), image_size, base_channels, channel_mults, blocks_per_level, groups, dropout, num_classes: 0 }
    }
}

impl FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Preset::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown preset '{s}'; choose one of tiny, flowers64, flowers160, cpu32"))
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl UNetConfig {
    /// Width of the time features after the MLP (F = 4C).
    pub fn time_dim(&self) -> usize {
        4 * self.base_channels
    }

    pub fn levels(&self) -> usize {
        self.channel_mults.len()
    }

    pub fn channels(&self, level: usize) -> usize {
        self.base_channels * self.channel_mults[level]
    }
}
