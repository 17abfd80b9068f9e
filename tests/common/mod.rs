//! Helpers shared by the top-level tests: a small folder of synthetic
//! images, so the tests need no dataset, and the options of a short run.

// Each test file uses its own subset of these helpers.
#![allow(dead_code)]

use ddpm::config::Preset;
use ddpm::data::CorruptPolicy;
use ddpm::train::{RunLength, TrainOptions};
use std::path::{Path, PathBuf};
use tensor::Device;

/// A fresh, empty directory under the system temp dir.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("petal-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `n` 40x36 PNG images of smooth colour gradients (different per image).
pub fn synthetic_images(dir: &Path, n: usize) -> PathBuf {
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    for i in 0..n {
        let img = image::RgbImage::from_fn(40, 36, |x, y| {
            image::Rgb([(x * 6 + i as u32 * 20) as u8, (y * 7) as u8, ((x + y) * 3 + i as u32 * 50) as u8])
        });
        img.save(images.join(format!("img{i:02}.png"))).unwrap();
    }
    images
}

/// `n` images like [`synthetic_images`], spread over class folders
/// `1..=classes` (as `flowers102/train/<class>/`).
pub fn synthetic_class_images(dir: &Path, n: usize, classes: usize) -> PathBuf {
    let flat = synthetic_images(&dir.join("flat"), n);
    let images = dir.join("classes");
    for i in 0..n {
        let class = images.join(format!("{}", i % classes + 1));
        std::fs::create_dir_all(&class).unwrap();
        std::fs::copy(flat.join(format!("img{i:02}.png")), class.join(format!("img{i:02}.png"))).unwrap();
    }
    images
}

/// A 6-step tiny run at batch 4 on the CPU in f32, with cheap previews.
pub fn short_run(data: &Path, out: PathBuf) -> TrainOptions {
    TrainOptions {
        data: data.to_path_buf(),
        preset: Preset::Tiny,
        length: RunLength::Steps(6),
        batch: 4,
        lr: 1e-3,
        seed: 7,
        device: Device::Cpu,
        out,
        resume: false,
        sample_every_epochs: 100,
        stop_at: None,
        ema_decay: 0.999,
        on_corrupt: CorruptPolicy::Warn,
        preview_steps: 2,
        precision: nn::Precision::F32,
        recipe: ddpm::recipe::Recipe::seed(),
    }
}

/// The PyTorch fixtures of the tiny U-Net: `$PETAL_FIXTURES` when set (a
/// GPU pack runs away from the source tree), else `shared/fixtures/tiny`
/// beside the workspace. Missing fixtures skip the test, saying so; with
/// `PETAL_REQUIRE_FIXTURES=1` (as CI sets it) they fail it instead, so a
/// broken checkout cannot pass the parity tests by skipping them.
pub fn fixtures() -> Option<PathBuf> {
    let dir = match std::env::var_os("PETAL_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/tiny"),
    };
    let present = dir.join("case.safetensors").exists() && dir.join("weights.safetensors").exists();
    let what = format!("the PyTorch fixtures are missing at {} (set PETAL_FIXTURES to their folder)", dir.display());
    present_or_skip(present, "PETAL_REQUIRE_FIXTURES", &what).then_some(dir)
}

/// The Oxford Flowers 102 validation photos: `$PETAL_DATA/../valid` when
/// `PETAL_DATA` (the train folder) is set, else `shared/data/flowers102/valid`
/// beside the workspace. Missing photos skip the test, saying so; with
/// `PETAL_REQUIRE_DATA=1` (as CI sets it) they fail it instead.
pub fn flowers_valid() -> Option<PathBuf> {
    let dir = match std::env::var_os("PETAL_DATA") {
        Some(train) => PathBuf::from(train).join("../valid"),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/flowers102/valid"),
    };
    let what = format!("the Flowers 102 validation photos are missing at {} (set PETAL_DATA to the train folder)", dir.display());
    present_or_skip(dir.is_dir(), "PETAL_REQUIRE_DATA", &what).then_some(dir)
}

/// Whether data a test needs is `present`. When it is not, the test skips
/// and says so where people see it, unless `require_var=1` turns the skip
/// into a failure (CI sets it wherever the data exists).
fn present_or_skip(present: bool, require_var: &str, what: &str) -> bool {
    if present {
        return true;
    }
    if std::env::var(require_var).is_ok_and(|v| v == "1") {
        panic!("{require_var}=1 but {what}");
    }
    eprintln!("SKIPPED: {what}");
    false
}
