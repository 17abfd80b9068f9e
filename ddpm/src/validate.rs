//! Checks on the command line's numbers before any work starts: every
//! message names the flag at fault, so a mistake costs a second, not a
//! half-built run. Also a memory estimate for the requested batch, so an
//! impossible `--batch` or `--n` is refused up front instead of aborting
//! after minutes of allocation.

use crate::config::UNetConfig;
use anyhow::{bail, Context, Result};
use nn::Precision;
use std::path::Path;
use tensor::{DType, Device};

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

/// A classifier-free guidance weight: finite and not negative (0 is the
/// unconditional model, 1 the conditional one).
pub fn guidance(flag: &str, w: f64) -> Result<()> {
    if !(w.is_finite() && w >= 0.0) {
        bail!("{flag} must be a number >= 0, got {w}");
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
/// batches 1 and 4: 7.3 MB and 108 MB per image), rounded up. Mixed precision
/// stores activations in bf16/f16, half the bytes (reasoned, not measured).
/// The fixed part counts weights, gradients, two Adam moments, the EMA and
/// the preview copy, all f32 at every precision.
pub fn training_bytes(config: &UNetConfig, batch: usize, precision: Precision) -> u64 {
    let per_image = precision.dtype().size_in_bytes() as u64 * 12 * activation_floats_per_image(config);
    let fixed = 4 * 6 * parameter_floats(config);
    fixed.saturating_add(per_image.saturating_mul(batch as u64))
}

/// Bytes sampling `n` images at once needs: no activations are kept for a
/// backward pass, but the skip connections of every level stay alive. The
/// fixed part is the weights and, on the CPU, their Winograd-transformed
/// filters, kept while sampling: 4 floats for each weight of a 3x3
/// convolution.
pub fn sampling_bytes(config: &UNetConfig, n: usize) -> u64 {
    let per_image = 4 * 4 * activation_floats_per_image(config);
    (4 * 5 * parameter_floats(config)).saturating_add(per_image.saturating_mul(n as u64))
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Refuses `needed` bytes that the device cannot hold: more than
/// `MemAvailable` on the CPU, more than the free memory of a GPU. `flag` and
/// `value` are the request to blame (`--batch 64`); `precision` is the
/// run's, where the command has a `--precision` flag. Where the CPU's
/// memory is unknown (no `/proc/meminfo`) the run goes ahead unchecked.
pub fn fits_in_memory(flag: &str, value: usize, needed: u64, device: &Device, precision: Option<Precision>) -> Result<()> {
    let memory = match device.memory_info() {
        Ok(memory) => memory,
        Err(_) if device.is_cpu() => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("checking that {flag} {value} fits on {device}")),
    };
    let place = match device {
        Device::Cpu => Place::Cpu,
        Device::Cuda(gpu) => Place::Gpu {
            name: format!("{device} ({})", gpu.name()),
            // bf16 needs Ampere or newer; an older GPU is not sent there.
            suggest_bf16: precision == Some(Precision::F32) && gpu.check_dtype(DType::BF16).is_ok(),
        },
    };
    check_fits(flag, value, needed, memory.free_bytes, &place)
}

/// Where the memory a request needs would come from, as a refusal names it.
#[derive(Debug)]
enum Place {
    Cpu,
    /// `name` reads like `cuda:0 (NVIDIA H200)`; `suggest_bf16` when the run
    /// is in f32 and the GPU computes in bf16.
    Gpu { name: String, suggest_bf16: bool },
}

/// The decision alone: `needed` bytes against `free` bytes, with the
/// message that names the request, both amounts and the way out.
fn check_fits(flag: &str, value: usize, needed: u64, free: u64, place: &Place) -> Result<()> {
    if needed <= free {
        return Ok(());
    }
    let (needed, free) = (gib(needed), gib(free));
    match place {
        Place::Cpu => bail!("{flag} {value} needs about {needed} of memory, but only {free} is available; use a smaller {flag}"),
        Place::Gpu { name, suggest_bf16 } => {
            let bf16 = if *suggest_bf16 { ", or --precision bf16" } else { "" };
            bail!("{flag} {value} needs about {needed} of GPU memory, but {name} has only {free} free; use a smaller {flag}{bf16}")
        }
    }
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
    fn guidance_is_a_finite_weight_of_at_least_zero() {
        for w in [-1.0, f64::NAN, f64::INFINITY] {
            let err = guidance("--guidance", w).unwrap_err().to_string();
            assert!(err.contains("--guidance") && err.contains(">= 0"), "{err}");
        }
        for w in [0.0, 1.0, 7.5] {
            assert!(guidance("--guidance", w).is_ok());
        }
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
            let estimate = training_bytes(&preset.config(), batch, Precision::F32);
            assert!(estimate >= measured && estimate < 3 * measured, "{preset}: estimate {estimate} vs measured {measured}");
        }
        let c = Preset::Tiny.config();
        assert!(training_bytes(&c, 64, Precision::F32) > training_bytes(&c, 32, Precision::F32));
        assert!(training_bytes(&c, 64, Precision::Bf16) < training_bytes(&c, 64, Precision::F32));
        assert!(sampling_bytes(&c, 16) < training_bytes(&c, 16, Precision::F32));
        assert_eq!(training_bytes(&c, usize::MAX, Precision::F32), u64::MAX, "saturates instead of overflowing");
    }

    #[test]
    fn an_impossible_batch_is_refused_on_the_cpu() {
        if let Err(e) = Device::Cpu.memory_info() {
            eprintln!("SKIPPED: {e}");
            return;
        }
        let tiny = Preset::Tiny.config();
        let needed = training_bytes(&tiny, 100_000, Precision::F32);
        let err = fits_in_memory("--batch", 100_000, needed, &Device::Cpu, Some(Precision::F32)).unwrap_err().to_string();
        assert!(err.contains("--batch 100000") && err.contains("GiB"), "{err}");
        assert!(!err.contains("bf16"), "bf16 is CUDA only: {err}");
        assert!(fits_in_memory("--batch", 1, training_bytes(&tiny, 1, Precision::F32), &Device::Cpu, None).is_ok());
    }

    #[test]
    fn a_request_fits_up_to_the_last_free_byte() {
        let gpu = Place::Gpu { name: "cuda:0 (NVIDIA H200)".into(), suggest_bf16: true };
        for place in [&Place::Cpu, &gpu] {
            assert!(check_fits("--batch", 8, 1 << 30, 1 << 30, place).is_ok(), "{place:?}");
            assert!(check_fits("--batch", 8, 0, 0, place).is_ok(), "{place:?}");
            assert!(check_fits("--batch", 8, (1 << 30) + 1, 1 << 30, place).is_err(), "{place:?}");
        }
    }

    #[test]
    fn a_refusal_names_the_request_the_memory_and_the_way_out() {
        let err = |flag, value, needed, free, place: &Place| check_fits(flag, value, needed, free, place).unwrap_err().to_string();
        let h200 = |suggest_bf16| Place::Gpu { name: "cuda:0 (NVIDIA H200)".into(), suggest_bf16 };
        assert_eq!(
            err("--batch", 512, 40 << 30, 12 << 30, &h200(true)),
            "--batch 512 needs about 40.0 GiB of GPU memory, but cuda:0 (NVIDIA H200) has only 12.0 GiB free; \
             use a smaller --batch, or --precision bf16"
        );
        assert_eq!(
            err("--batch", 512, 40 << 30, 12 << 30, &h200(false)),
            "--batch 512 needs about 40.0 GiB of GPU memory, but cuda:0 (NVIDIA H200) has only 12.0 GiB free; \
             use a smaller --batch"
        );
        assert_eq!(
            err("--n", 4096, 3 << 29, 1 << 29, &h200(false)),
            "--n 4096 needs about 1.5 GiB of GPU memory, but cuda:0 (NVIDIA H200) has only 0.5 GiB free; use a smaller --n"
        );
        assert_eq!(
            err("--batch", 100, 5 << 30, 2 << 30, &Place::Cpu),
            "--batch 100 needs about 5.0 GiB of memory, but only 2.0 GiB is available; use a smaller --batch"
        );
    }
}
