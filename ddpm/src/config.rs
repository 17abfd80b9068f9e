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

/// ```
/// use ddpm::config::Preset;
///
/// let tiny: Preset = "tiny".parse().unwrap();
/// let c = tiny.config();
/// assert_eq!((c.image_size, c.base_channels, c.levels()), (32, 32, 3));
/// assert_eq!(c.channels(2), 64); // base channels times the multiplier of level 2
/// assert_eq!(c.time_dim(), 128);
/// assert!("huge".parse::<Preset>().unwrap_err().contains("tiny, flowers64, flowers160"));
/// ```
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

    /// Whether these numbers describe a U-Net that can be built: a config
    /// read from a checkpoint's metadata may hold anything.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |msg: String| Err(ConfigError(format!("U-Net config `{}`: {msg}", self.name)));
        if self.channel_mults.is_empty() {
            return bad("channel_mults is empty; the U-Net needs at least one level".into());
        }
        if self.base_channels == 0 || self.channel_mults.contains(&0) {
            return bad(format!("base_channels {} and channel_mults {:?} must all be at least 1", self.base_channels, self.channel_mults));
        }
        if self.blocks_per_level == 0 {
            return bad("blocks_per_level must be at least 1".into());
        }
        // Far beyond any preset, but small enough that building the model
        // cannot ask for absurd memory: a damaged checkpoint is refused
        // instead of aborting the process in the allocator.
        let widest = self.channel_mults.iter().max().map_or(0, |m| m.saturating_mul(self.base_channels));
        if self.image_size > 4096 || widest > 8192 || self.levels() > 12 || self.blocks_per_level > 64 {
            return bad(format!(
                "image_size {}, {} channels at the widest level, {} levels and {} blocks per level exceed the limits (4096, 8192, 12, 64)",
                self.image_size,
                widest,
                self.levels(),
                self.blocks_per_level
            ));
        }
        let levels = self.levels() as u32;
        if self.image_size == 0 || levels >= usize::BITS || !self.image_size.is_multiple_of(1usize << levels) {
            return bad(format!("image_size {} must be a positive multiple of 2^{levels} (one halving per level)", self.image_size));
        }
        let widths: Vec<usize> = (0..self.levels()).map(|i| self.channels(i)).collect();
        if self.groups == 0 || std::iter::once(self.base_channels).chain(widths.iter().copied()).any(|c| !c.is_multiple_of(self.groups)) {
            return bad(format!("groups {} must divide base_channels {} and every level's channels {widths:?}", self.groups, self.base_channels));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout {} must lie in [0, 1)", self.dropout));
        }
        Ok(())
    }
}

/// A config that describes no buildable U-Net.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_is_buildable() {
        for p in Preset::ALL {
            p.config().check().unwrap();
        }
    }

    #[test]
    fn broken_configs_are_refused_with_the_field_named() {
        let base = Preset::Tiny.config();
        let cases: [(&str, fn(&mut UNetConfig)); 7] = [
            ("channel_mults is empty", |c| c.channel_mults.clear()),
            ("must all be at least 1", |c| c.channel_mults[1] = 0),
            ("blocks_per_level", |c| c.blocks_per_level = 0),
            ("image_size 30", |c| c.image_size = 30),
            ("groups 7", |c| c.groups = 7),
            ("dropout", |c| c.dropout = f64::NAN),
            ("exceed the limits", |c| c.base_channels = 1 << 40),
        ];
        for (want, breaks) in cases {
            let mut c = base.clone();
            breaks(&mut c);
            let err = c.check().unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
    }
}

#[cfg(test)]
mod cpu32_tests {
    use super::*;

    /// Parameters of the spec's U-Net counted layer by layer (conv
    /// `k*k*cin*cout + cout`, linear `in*out + out`, GroupNorm `2c`), plus the
    /// class table of a conditional model.
    fn counted(c: &UNetConfig) -> usize {
        let f = c.time_dim();
        let conv = |k: usize, cin: usize, cout: usize| k * k * cin * cout + cout;
        let block = |cin: usize, cout: usize| {
            2 * cin + conv(3, cin, cout) + 2 * (f * cout + cout) + 2 * cout + conv(3, cout, cout) + if cin != cout { conv(1, cin, cout) } else { 0 }
        };
        let mut n = (c.base_channels * f + f) + (f * f + f) + conv(3, 3, c.base_channels);
        let mut prev = c.base_channels;
        for i in 0..c.levels() {
            for j in 0..c.blocks_per_level {
                n += block(if j == 0 { prev } else { c.channels(i) }, c.channels(i));
            }
            prev = c.channels(i);
        }
        n += 2 * block(prev, prev);
        for i in (0..c.levels()).rev() {
            for j in 0..c.blocks_per_level {
                n += block(if j == 0 { prev + c.channels(i) } else { c.channels(i) }, c.channels(i));
            }
            prev = c.channels(i);
        }
        n += 2 * c.base_channels + conv(3, c.base_channels, 3);
        if c.num_classes > 0 {
            n += (c.num_classes + 1) * f;
        }
        n
    }

    #[test]
    fn the_cpu32_preset_has_the_counted_parameters() {
        let mut config = Preset::Cpu32.config();
        assert_eq!((config.image_size, config.levels(), config.dropout), (32, 4, 0.0));
        let params = |c: &UNetConfig| crate::model::Model::new(c, &tensor::Device::Cpu, 0).unwrap().store.num_params();
        assert_eq!(params(&config), counted(&config));
        assert_eq!(params(&config), 942_339);
        // The flowers102 classes add one row of 4C per class and the null class.
        config.num_classes = 102;
        assert_eq!(params(&config), 942_339 + 103 * 128);
        assert_eq!(params(&Preset::Tiny.config()), counted(&Preset::Tiny.config()));
        assert_eq!("cpu32".parse::<Preset>().unwrap(), Preset::Cpu32);
    }
}
