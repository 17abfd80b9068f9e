//! A folder of pictures turned into training batches.
//!
//! Flower datasets are small (thousands of photos) and training resolutions are tiny (32 or 64
//! pixels), so the whole dataset is decoded exactly once, in parallel, center-cropped to a
//! square and resized, and then kept in memory as compact RGB bytes: 8189 flowers at 64x64 take
//! about 100 MB. Decoding JPEGs every epoch would cost far more than the training step on the
//! CPU. Batches are built on demand as `f32` in the NCHW layout and the `[-1, 1]` range the
//! diffusion model expects, with the one augmentation that suits flowers: a random horizontal
//! flip. File discovery is sorted and the epoch order comes from a seeded shuffle, so two runs
//! with the same seed (or a run resumed from a checkpoint) see the same images in the same order.

use std::fmt;
use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::RgbImage;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

/// What to do with a file that has an image extension but cannot be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CorruptPolicy {
    /// Print a warning naming the file to stderr and leave it out.
    #[default]
    Warn,
    /// Stop with an error naming the file.
    Fail,
}

/// Why a folder of images could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("image folder {} does not exist", .0.display())]
    MissingFolder(PathBuf),
    #[error("{} is not a folder", .0.display())]
    NotAFolder(PathBuf),
    #[error("no readable .jpg/.jpeg/.png images found under {}", .0.display())]
    NoImages(PathBuf),
    #[error("could not decode image {}: {source}", path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
    #[error("could not list folder {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("image size must be at least 1 pixel")]
    ZeroSize,
}

/// Every decodable image under a folder, cropped and resized to `size` x `size` RGB.
pub struct ImageFolder {
    root: PathBuf,
    size: usize,
    paths: Vec<PathBuf>,
    /// One `size * size * 3` HWC buffer per image, in the order of `paths`.
    pixels: Vec<Vec<u8>>,
    /// The class folders (see [`ImageFolder::class_names`]); empty when unlabelled.
    class_names: Vec<String>,
    /// The class of each image, an index into `class_names` (empty when unlabelled).
    labels: Vec<u32>,
}

impl fmt::Debug for ImageFolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageFolder")
            .field("root", &self.root)
            .field("size", &self.size)
            .field("len", &self.pixels.len())
            .finish()
    }
}

impl ImageFolder {
    /// Loads every `.jpg`, `.jpeg` and `.png` (any letter case) under `dir`, recursively.
    ///
    /// Hidden files and folders (names starting with `.`, such as macOS `._x.jpg` resource
    /// forks) are left out, and symbolic links to folders are not followed. Each image is
    /// center-cropped to a square and resized to `size` x `size` with a triangle filter, which
    /// averages over the whole source area when shrinking.
    pub fn open(dir: &Path, size: usize, on_corrupt: CorruptPolicy) -> Result<Self, DataError> {
        if size == 0 {
            return Err(DataError::ZeroSize);
        }
        match std::fs::metadata(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DataError::MissingFolder(dir.to_path_buf()))
            }
            Err(source) => {
                return Err(DataError::Io {
                    path: dir.to_path_buf(),
                    source,
                })
            }
            Ok(m) if !m.is_dir() => return Err(DataError::NotAFolder(dir.to_path_buf())),
            Ok(_) => {}
        }

        let mut candidates = Vec::new();
        collect_image_paths(dir, &mut candidates)?;
        candidates.sort();

        let decoded: Vec<Result<Vec<u8>, image::ImageError>> = candidates
            .par_iter()
            .map(|path| load_square(path, size as u32).map(RgbImage::into_raw))
            .collect();

        let mut paths = Vec::with_capacity(candidates.len());
        let mut pixels = Vec::with_capacity(candidates.len());
        for (path, result) in candidates.into_iter().zip(decoded) {
            match result {
                Ok(rgb) => {
                    paths.push(path);
                    pixels.push(rgb);
                }
                Err(source) => match on_corrupt {
                    CorruptPolicy::Fail => return Err(DataError::Corrupt { path, source }),
                    CorruptPolicy::Warn => {
                        eprintln!(
                            "warning: skipping unreadable image {}: {source}",
                            path.display()
                        )
                    }
                },
            }
        }
        if pixels.is_empty() {
            return Err(DataError::NoImages(dir.to_path_buf()));
        }
        let (class_names, labels) = class_labels(dir, &paths);
        Ok(Self {
            root: dir.to_path_buf(),
            size,
            paths,
            pixels,
            class_names,
            labels,
        })
    }

    /// The classes of a labelled folder, where every image lies in a
    /// subfolder of the root and the first subfolder names its class (as in
    /// `flowers102/train/<1..102>/*.jpg`). Numbers sort as numbers, other
    /// names alphabetically; label `i` is `class_names()[i]`. Empty when some
    /// image lies directly in the root.
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// The class label of image `i`, or `None` when the folder is unlabelled.
    pub fn label(&self, i: usize) -> Option<u32> {
        self.labels.get(i).copied()
    }

    /// Number of images kept.
    pub fn len(&self) -> usize {
        self.pixels.len()
    }

    /// Always false: [`ImageFolder::open`] refuses folders without images.
    pub fn is_empty(&self) -> bool {
        self.pixels.is_empty()
    }

    /// Side length in pixels of every image.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The folder the images were loaded from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file image `i` came from.
    pub fn path(&self, i: usize) -> &Path {
        &self.paths[i]
    }

    /// Image `i` as `size * size * 3` RGB bytes, row-major (HWC).
    pub fn image(&self, i: usize) -> &[u8] {
        &self.pixels[i]
    }

    /// The images at `indices` as NCHW `f32` with shape `[indices.len(), 3, size, size]`,
    /// scaled to `[-1, 1]`, each mirrored left-right with probability 1/2.
    ///
    /// Panics if an index is out of range.
    pub fn batch(&self, indices: &[usize], rng: &mut (impl Rng + ?Sized)) -> Vec<f32> {
        let flips: Vec<bool> = indices.iter().map(|_| rng.random_bool(0.5)).collect();
        self.batch_with_flips(indices, &flips)
    }

    /// Like [`ImageFolder::batch`], with the flips chosen by the caller (`flips[k]` mirrors
    /// the `k`-th image). Useful for evaluation batches and tests.
    pub fn batch_with_flips(&self, indices: &[usize], flips: &[bool]) -> Vec<f32> {
        assert_eq!(indices.len(), flips.len(), "one flip flag per index");
        for &i in indices {
            assert!(
                i < self.len(),
                "image index {i} out of range for {} images",
                self.len()
            );
        }
        let s = self.size;
        let plane = s * s;
        let mut out = vec![0.0f32; indices.len() * 3 * plane];
        out.par_chunks_mut(3 * plane)
            .zip(indices.par_iter().zip(flips.par_iter()))
            .for_each(|(dst, (&i, &flip))| {
                let src = &self.pixels[i];
                for y in 0..s {
                    for x in 0..s {
                        let sx = if flip { s - 1 - x } else { x };
                        let p = &src[(y * s + sx) * 3..][..3];
                        for c in 0..3 {
                            dst[c * plane + y * s + x] = p[c] as f32 / 127.5 - 1.0;
                        }
                    }
                }
            });
        out
    }
}

/// The class folder names under `root` and each path's label (see
/// [`ImageFolder::class_names`]).
fn class_labels(root: &Path, paths: &[PathBuf]) -> (Vec<String>, Vec<u32>) {
    let class_of = |p: &Path| -> Option<String> {
        let rel = p.strip_prefix(root).ok()?;
        let mut parts = rel.components();
        let first = parts.next()?;
        parts.next()?; // a file directly in the root has no class folder
        Some(first.as_os_str().to_string_lossy().into_owned())
    };
    let Some(classes) = paths.iter().map(|p| class_of(p)).collect::<Option<Vec<String>>>() else {
        return (Vec::new(), Vec::new());
    };
    let mut names = classes.clone();
    names.sort_by(|a, b| match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y).then_with(|| a.cmp(b)),
        (Ok(_), Err(_)) => std::cmp::Ordering::Less,
        (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
        (Err(_), Err(_)) => a.cmp(b),
    });
    names.dedup();
    let labels = classes.iter().map(|c| names.iter().position(|n| n == c).expect("every class is named") as u32).collect();
    (names, labels)
}

/// True when `path` has a `.jpg`, `.jpeg` or `.png` extension, in any letter case.
pub fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| {
            let e = e.to_ascii_lowercase();
            e == "jpg" || e == "jpeg" || e == "png"
        })
        .unwrap_or(false)
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

fn collect_image_paths(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    let io_err = |source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        let path = entry.path();
        if is_hidden(&path) {
            continue;
        }
        let kind = entry.file_type().map_err(io_err)?;
        if kind.is_dir() {
            collect_image_paths(&path, out)?;
        } else if is_image_file(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// Decodes one file (trusting its content over its extension), crops the largest centered
/// square and resizes it to `size` x `size`.
fn load_square(path: &Path, size: u32) -> Result<RgbImage, image::ImageError> {
    let img = image::ImageReader::open(path)?
        .with_guessed_format()?
        .decode()?
        .to_rgb8();
    let (w, h) = img.dimensions();
    let side = w.min(h);
    let square = if w == h {
        img
    } else {
        image::imageops::crop_imm(&img, (w - side) / 2, (h - side) / 2, side, side).to_image()
    };
    if side == size {
        Ok(square)
    } else {
        Ok(image::imageops::resize(
            &square,
            size,
            size,
            FilterType::Triangle,
        ))
    }
}

/// A seeded permutation of `0..len` for one epoch.
///
/// The same `(seed, epoch)` always gives the same order, so a run resumed from a checkpoint
/// continues exactly where it stopped; different epochs (or seeds) give independent orders.
/// The two numbers are packed side by side into the RNG seed, so no two pairs collide.
pub fn epoch_order(len: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&epoch.to_le_bytes());
    key[16..].copy_from_slice(b"petal/epoch-ord\0");
    let mut rng = StdRng::from_seed(key);
    let mut order: Vec<usize> = (0..len).collect();
    order.shuffle(&mut rng);
    order
}

/// Hands out batches of indices epoch after epoch, each epoch in [`epoch_order`].
///
/// Its whole state is the number of samples handed out so far, so a training run can save
/// that one number (or recompute it as `step * batch_size`) and [`Shuffler::resume`] later.
#[derive(Debug, Clone)]
pub struct Shuffler {
    len: usize,
    seed: u64,
    epoch: u64,
    pos: usize,
    order: Vec<usize>,
}

impl Shuffler {
    /// Starts at the beginning of epoch 0. Panics if `len` is 0.
    pub fn new(len: usize, seed: u64) -> Self {
        Self::resume(len, seed, 0)
    }

    /// Continues as if `samples_seen` indices had already been handed out.
    pub fn resume(len: usize, seed: u64, samples_seen: u64) -> Self {
        assert!(len > 0, "cannot shuffle an empty dataset");
        let epoch = samples_seen / len as u64;
        let pos = (samples_seen % len as u64) as usize;
        Self {
            len,
            seed,
            epoch,
            pos,
            order: epoch_order(len, seed, epoch),
        }
    }

    /// The next `batch` indices; a batch that runs past the end of an epoch is completed
    /// from the start of the next one.
    pub fn next_batch(&mut self, batch: usize) -> Vec<usize> {
        let mut out = Vec::with_capacity(batch);
        while out.len() < batch {
            if self.pos == self.len {
                self.epoch += 1;
                self.pos = 0;
                self.order = epoch_order(self.len, self.seed, self.epoch);
            }
            let take = (batch - out.len()).min(self.len - self.pos);
            out.extend_from_slice(&self.order[self.pos..self.pos + take]);
            self.pos += take;
        }
        out
    }

    /// The epoch the next index will come from (counting from 0).
    pub fn epoch(&self) -> u64 {
        if self.pos == self.len {
            self.epoch + 1
        } else {
            self.epoch
        }
    }

    /// How many indices have been handed out since epoch 0 began.
    pub fn samples_seen(&self) -> u64 {
        self.epoch * self.len as u64 + self.pos as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    #[test]
    fn class_folders_give_labels_in_numeric_order() {
        let t = TempDir::new("data-classes");
        for (class, n) in [("10", 2), ("2", 1), ("tulip", 1)] {
            std::fs::create_dir_all(t.0.join(class).join("deeper")).unwrap();
            for i in 0..n {
                RgbImage::from_pixel(4, 4, Rgb([i as u8, 0, 0])).save(t.0.join(class).join(format!("{i}.png"))).unwrap();
            }
        }
        RgbImage::from_pixel(4, 4, RED).save(t.0.join("tulip/deeper/x.png")).unwrap();
        let folder = ImageFolder::open(&t.0, 4, CorruptPolicy::Fail).unwrap();
        assert_eq!(folder.class_names(), ["2", "10", "tulip"]);
        let labels: Vec<(String, u32)> = (0..folder.len())
            .map(|i| (folder.path(i).strip_prefix(&t.0).unwrap().display().to_string(), folder.label(i).unwrap()))
            .collect();
        for (path, label) in &labels {
            let class = path.split('/').next().unwrap();
            assert_eq!(folder.class_names()[*label as usize], class, "{path}");
        }
        // One image directly in the root: the folder is unlabelled.
        RgbImage::from_pixel(4, 4, RED).save(t.0.join("loose.png")).unwrap();
        let folder = ImageFolder::open(&t.0, 4, CorruptPolicy::Fail).unwrap();
        assert!(folder.class_names().is_empty() && folder.label(0).is_none());
    }

    use crate::test_util::TempDir;

    const RED: Rgb<u8> = Rgb([255, 0, 0]);
    const GREEN: Rgb<u8> = Rgb([0, 255, 0]);
    const BLUE: Rgb<u8> = Rgb([0, 0, 255]);

    /// 40x20: blue | red | green | blue in four 10-pixel bands, so the centered 20x20 square
    /// is red on the left and green on the right, and any blue means a wrong crop.
    fn banded() -> RgbImage {
        RgbImage::from_fn(40, 20, |x, _| match x {
            0..=9 | 30..=39 => BLUE,
            10..=19 => RED,
            _ => GREEN,
        })
    }

    /// An 8x8 image whose pixel (x, y) is (8x, 8y, 100): already at the target size.
    fn gradient8() -> RgbImage {
        RgbImage::from_fn(8, 8, |x, y| Rgb([(x * 8) as u8, (y * 8) as u8, 100]))
    }

    /// a.png (banded), b.jpg (square 16x16), c.png (gradient8), nested/deep/D.JPEG,
    /// broken.png (garbage), notes.txt (ignored).
    fn sample_folder() -> TempDir {
        let t = TempDir::new("data-sample");
        let d = &t.0;
        banded().save(d.join("a.png")).unwrap();
        RgbImage::from_pixel(16, 16, Rgb([200, 100, 50]))
            .save(d.join("b.jpg"))
            .unwrap();
        gradient8().save(d.join("c.png")).unwrap();
        std::fs::create_dir_all(d.join("nested/deep")).unwrap();
        RgbImage::from_pixel(12, 30, Rgb([10, 20, 30]))
            .save_with_format(d.join("nested/deep/D.JPEG"), image::ImageFormat::Jpeg)
            .unwrap();
        std::fs::write(d.join("broken.png"), b"this is not a png at all").unwrap();
        std::fs::write(d.join("notes.txt"), b"not an image").unwrap();
        t
    }

    fn px(img: &[u8], size: usize, x: usize, y: usize) -> [u8; 3] {
        let i = (y * size + x) * 3;
        [img[i], img[i + 1], img[i + 2]]
    }

    #[test]
    fn loads_sorted_recursive_and_skips_corrupt_with_warn() {
        let t = sample_folder();
        let ds = ImageFolder::open(&t.0, 8, CorruptPolicy::Warn).unwrap();
        assert_eq!(ds.len(), 4);
        assert_eq!(ds.size(), 8);
        let names: Vec<String> = (0..ds.len())
            .map(|i| ds.path(i).strip_prefix(&t.0).unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["a.png", "b.jpg", "c.png", "nested/deep/D.JPEG"]);
        for i in 0..ds.len() {
            assert_eq!(ds.image(i).len(), 8 * 8 * 3);
        }
    }

    #[test]
    fn fail_policy_names_the_corrupt_file() {
        let t = sample_folder();
        let err = ImageFolder::open(&t.0, 8, CorruptPolicy::Fail).unwrap_err();
        assert!(matches!(err, DataError::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains("broken.png"), "{err}");
    }

    #[test]
    fn center_crop_then_resize_keeps_the_middle() {
        let t = sample_folder();
        let ds = ImageFolder::open(&t.0, 8, CorruptPolicy::Warn).unwrap();
        let a = ds.image(0);
        for y in 0..8 {
            // The outer columns sit entirely inside one band; nothing may be blue.
            assert_eq!(px(a, 8, 0, y), [255, 0, 0], "left edge, row {y}");
            assert_eq!(px(a, 8, 7, y), [0, 255, 0], "right edge, row {y}");
            for x in 0..8 {
                assert_eq!(px(a, 8, x, y)[2], 0, "blue leaked in at ({x}, {y})");
            }
        }
        // The portrait JPEG keeps a flat colour (up to JPEG error) after cropping 12x30.
        let d = ds.image(3);
        for c in d.chunks(3) {
            assert!(
                (c[0] as i32 - 10).abs() <= 4 && (c[2] as i32 - 30).abs() <= 4,
                "{c:?}"
            );
        }
    }

    #[test]
    fn image_already_at_size_is_kept_exactly() {
        let t = sample_folder();
        let ds = ImageFolder::open(&t.0, 8, CorruptPolicy::Warn).unwrap();
        assert_eq!(ds.image(2), gradient8().as_raw().as_slice());
    }

    #[test]
    fn batch_is_nchw_in_range_and_flips() {
        let t = sample_folder();
        let ds = ImageFolder::open(&t.0, 8, CorruptPolicy::Warn).unwrap();
        let s = 8;
        let plane = s * s;
        let b = ds.batch_with_flips(&[0, 0, 2], &[false, true, false]);
        assert_eq!(b.len(), 3 * 3 * plane);
        assert!(b.iter().all(|v| (-1.0..=1.0).contains(v)));
        // Unflipped banded image: red on the left -> R = 1, G = -1 at x = 0.
        assert_eq!(b[0], 1.0);
        assert_eq!(b[plane], -1.0);
        // Flipped copy: green on the left.
        let f = 3 * plane;
        assert_eq!(b[f], -1.0);
        assert_eq!(b[f + plane], 1.0);
        // The flipped image is the mirror of the unflipped one, channel by channel.
        for c in 0..3 {
            for y in 0..s {
                for x in 0..s {
                    assert_eq!(
                        b[c * plane + y * s + x],
                        b[f + c * plane + y * s + (s - 1 - x)]
                    );
                }
            }
        }
        // Exact scaling on the gradient: pixel (3, 5) is (24, 40, 100).
        let g = 6 * plane;
        let at = |c: usize| b[g + c * plane + 5 * s + 3];
        assert_eq!(at(0), 24.0 / 127.5 - 1.0);
        assert_eq!(at(1), 40.0 / 127.5 - 1.0);
        assert_eq!(at(2), 100.0 / 127.5 - 1.0);
    }

    #[test]
    fn random_batches_flip_about_half_the_time() {
        let t = sample_folder();
        let ds = ImageFolder::open(&t.0, 8, CorruptPolicy::Warn).unwrap();
        let mut rng = StdRng::seed_from_u64(7);
        let b = ds.batch(&[0; 200], &mut rng);
        let plane = 64;
        let flipped = (0..200).filter(|k| b[k * 3 * plane] == -1.0).count();
        assert!((60..=140).contains(&flipped), "{flipped} of 200 flipped");
        assert!(b.iter().all(|v| (-1.0..=1.0).contains(v)));
    }

    #[test]
    fn missing_and_empty_folders_are_errors_naming_them() {
        let t = TempDir::new("data-empty");
        let missing = t.0.join("no-such-folder");
        let err = ImageFolder::open(&missing, 8, CorruptPolicy::Warn).unwrap_err();
        assert!(matches!(err, DataError::MissingFolder(_)));
        assert!(err.to_string().contains("no-such-folder"), "{err}");

        std::fs::write(t.0.join("readme.txt"), b"no pictures here").unwrap();
        std::fs::create_dir_all(t.0.join("sub")).unwrap();
        let err = ImageFolder::open(&t.0, 8, CorruptPolicy::Warn).unwrap_err();
        assert!(matches!(err, DataError::NoImages(_)));
        assert!(
            err.to_string().contains(&t.0.display().to_string()),
            "{err}"
        );

        // Only corrupt images: nothing usable is the same error.
        std::fs::write(t.0.join("x.jpg"), b"junk").unwrap();
        let err = ImageFolder::open(&t.0, 8, CorruptPolicy::Warn).unwrap_err();
        assert!(matches!(err, DataError::NoImages(_)));

        let file = t.0.join("readme.txt");
        let err = ImageFolder::open(&file, 8, CorruptPolicy::Warn).unwrap_err();
        assert!(matches!(err, DataError::NotAFolder(_)));
    }

    #[test]
    fn epoch_order_is_a_seeded_permutation() {
        let a = epoch_order(100, 42, 0);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(100, 42, 0));
        assert_ne!(a, epoch_order(100, 42, 1));
        assert_ne!(a, epoch_order(100, 43, 0));
        assert_ne!(epoch_order(100, 1, 0), epoch_order(100, 0, 1));
        assert!(epoch_order(0, 1, 2).is_empty());
    }

    #[test]
    fn shuffler_crosses_epochs_and_resumes() {
        let mut s = Shuffler::new(10, 5);
        let mut seen = Vec::new();
        for _ in 0..5 {
            seen.extend(s.next_batch(4));
        }
        assert_eq!(s.samples_seen(), 20);
        assert_eq!(&seen[..10], epoch_order(10, 5, 0).as_slice());
        assert_eq!(&seen[10..20], epoch_order(10, 5, 1).as_slice());

        let mut fresh = Shuffler::new(10, 5);
        for _ in 0..3 {
            fresh.next_batch(4);
        }
        let mut resumed = Shuffler::resume(10, 5, 12);
        assert_eq!(resumed.epoch(), 1);
        for _ in 0..6 {
            assert_eq!(fresh.next_batch(4), resumed.next_batch(4));
        }
    }

    #[test]
    fn flowers102_validation_split_has_818_images() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/flowers102/valid");
        if !dir.is_dir() {
            println!("skipped: {} is absent", dir.display());
            return;
        }
        let ds = ImageFolder::open(&dir, 32, CorruptPolicy::Fail).unwrap();
        assert_eq!(ds.len(), 818);
        assert!(ds.image(0).len() == 32 * 32 * 3);
    }
}
