//! Helpers shared by the top-level tests: a small folder of synthetic
//! images, so the tests need no dataset.

use std::path::{Path, PathBuf};

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
