//! Checks on the command line's numbers before any work starts: every
//! message names the flag at fault, so a mistake costs a second, not a
//! half-built run. Also a memory estimate for the requested batch, so an
//! impossible `--batch` or `--n` is refused up front instead of aborting
//! after minutes of allocation.

use crate::config::UNetConfig;
use anyhow::{bail, Result};
use std::path::Path;
use tensor::Device;

/// `value` must be at least 1.
pub fn at_least_one(flag: &str, value: u64) -> Result<()> {
    if value == 0 {
        bail!("{flag} must be at least 1, got 0");
    }
    Ok(())
}

/// A learning rate: finite and above zero.
pub fn learning_rate(flag: &str, lr: f64) -> Result<()> {
    if !(lr.is_finite() && lr > 0.0) {
        bail!("{flag} must be a positive number (for example 1e-4), got {lr}");
    }
    Ok(())
}

/// Image outputs are written as PNG, so the file name must say so (a
/// `.jpg` holding PNG bytes confuses every viewer).
pub fn png_path(flag: &str, path: &Path) -> Result<()> {
    let is_png = path.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if !is_png {
        bail!("{flag} {}: images are written as PNG; give a file name ending in .png", path.display());
    }
    Ok(())
}

/// `--tf32` only changes CUDA matrix products; on a CPU asked for by name it
/// is a mistake worth stopping for.
pub fn tf32_on(device: &Device) -> Result<()> {
    if matches!(device, Device::Cpu) {
        bail!("--tf32 applies to CUDA devices only; drop it, or pass --device cuda");
    }
    Ok(())
}

// ---- memory estimate ------------------------------------------------------

/// Floats of activation per image that one pass through the U-Net touches,
/// up to a constant: each level holds its resolution squared times its
/// channels, once per residual block on the way down and up, plus the skip.
fn activation_floats_per_image(config: &UNetConfig) -> u64 {
    let per_level = 2 * config.blocks_per_level as u64 + 1;
    (0..config.levels())
        .map(|i| {
            let res = (config.image_size >> i) as u64;
            res * res * config.channels(i) as u64 * per_level
        })
        .sum()
}

/// Parameters of the U-Net, counted from the config without building it.
fn parameter_floats(config: &UNetConfig) -> u64 {
    // Convolutions dominate: about 2 3x3 convolutions per block at each
    // level's width, down and up (the up path is wider by the skip).
    let r = config.blocks_per_level as u64;
    (0..config.levels())
        .map(|i| {
            let c = config.channels(i) as u64;
            9 * c * c * 2 * r * 3
        })
        .sum()
}

/// Bytes a training step needs at `batch` images, a deliberately rough
/// upper estimate. The activation factor (12 floats saved for backward per
/// counted float) is the measured peak of one training step of `tiny` and
/// `flowers64` on the CPU (`ddpm bench --steps 1 --json`, peak_train_bytes at
/// batches 1 and 4: 7.3 MB and 108 MB per image), rounded up. The fixed part
/// counts weights, gradients, two Adam moments, the EMA and the preview copy.
pub fn training_bytes(config: &UNetConfig, batch: usize) -> u64 {
    let per_image = 4 * 12 * activation_floats_per_image(config);
    let fixed = 4 * 6 * parameter_floats(config);
    fixed.saturating_add(per_image.saturating_mul(batch as u64))
}

/// Bytes sampling `n` images at once needs: no activations are kept for a
/// backward pass, but the skip connections of every level stay alive.
pub fn sampling_bytes(config: &UNetConfig, n: usize) -> u64 {
    let per_image = 4 * 4 * activation_floats_per_image(config);
    (4 * parameter_floats(config)).saturating_add(per_image.saturating_mul(n as u64))
}

/// `MemAvailable` of `/proc/meminfo` in bytes; `None` where there is none.
pub fn available_cpu_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_available(&text)
}

fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Refuses `needed` bytes that the device cannot hold. On the CPU that is
/// `MemAvailable`. On CUDA the tensor crate does not report the device's
/// free memory, so a GPU run is not checked here; the caching allocator
/// reports an out-of-memory error by itself there.
pub fn fits_in_memory(flag: &str, value: usize, needed: u64, device: &Device) -> Result<()> {
    if !matches!(device, Device::Cpu) {
        return Ok(());
    }
    let Some(available) = available_cpu_memory() else { return Ok(()) };
    if needed > available {
        bail!(
            "{flag} {value} needs about {} of memory, but only {} is available; use a smaller {flag}",
            gib(needed),
            gib(available)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Preset;

    #[test]
    fn zero_is_refused_with_the_flag_named() {
        let err = at_least_one("--batch", 0).unwrap_err().to_string();
        assert!(err.contains("--batch") && err.contains("at least 1"), "{err}");
        assert!(at_least_one("--batch", 1).is_ok());
    }

    #[test]
    fn learning_rates_must_be_positive_and_finite() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let err = learning_rate("--lr", bad).unwrap_err().to_string();
            assert!(err.contains("--lr"), "{err}");
        }
        assert!(learning_rate("--lr", 1e-4).is_ok());
    }

    #[test]
    fn image_outputs_must_be_png() {
        assert!(png_path("--out", Path::new("a/b.PNG")).is_ok());
        for bad in ["grid.jpg", "grid", "grid.png.txt"] {
            let err = png_path("--out", Path::new(bad)).unwrap_err().to_string();
            assert!(err.contains("--out") && err.contains(bad), "{err}");
        }
    }

    #[test]
    fn tf32_is_refused_on_the_cpu() {
        assert!(tf32_on(&Device::Cpu).unwrap_err().to_string().contains("--tf32"));
    }

    #[test]
    fn the_estimate_grows_with_the_batch_and_brackets_the_measured_peak() {
        // Measured peaks of one CPU training step (see `training_bytes`).
        for (preset, batch, measured) in [(Preset::Tiny, 4usize, 37_941_172u64), (Preset::Flowers64, 4, 630_127_412)] {
            let estimate = training_bytes(&preset.config(), batch);
            assert!(estimate >= measured && estimate < 3 * measured, "{preset}: estimate {estimate} vs measured {measured}");
        }
        let c = Preset::Tiny.config();
        assert!(training_bytes(&c, 64) > training_bytes(&c, 32));
        assert!(sampling_bytes(&c, 16) < training_bytes(&c, 16));
        assert_eq!(training_bytes(&c, usize::MAX), u64::MAX, "saturates instead of overflowing");
    }

    #[test]
    fn an_impossible_batch_is_refused_on_the_cpu() {
        if available_cpu_memory().is_none() {
            eprintln!("SKIPPED: no /proc/meminfo here");
            return;
        }
        let needed = training_bytes(&Preset::Tiny.config(), 100_000);
        let err = fits_in_memory("--batch", 100_000, needed, &Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("--batch 100000") && err.contains("GiB"), "{err}");
        assert!(fits_in_memory("--batch", 1, training_bytes(&Preset::Tiny.config(), 1), &Device::Cpu).is_ok());
    }

    #[test]
    fn mem_available_is_read_in_kib() {
        let text = "MemTotal:  100 kB\nMemFree:  5 kB\nMemAvailable:   2048 kB\n";
        assert_eq!(parse_mem_available(text), Some(2048 * 1024));
        assert_eq!(parse_mem_available("MemTotal: 1 kB\n"), None);
    }
}
