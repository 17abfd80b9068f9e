//! `ddpm score`: how close generated flowers are to real ones, as a
//! Fréchet distance in the features of petal's own flower classifier
//! (the idea of FID, with `classifier.rs` in place of Inception).
//!
//! Each image set is summarised by the mean `μ` and covariance `Σ` of its
//! pooled classifier features, as if the features were Gaussian. The
//! Fréchet (2-Wasserstein) distance between two Gaussians is
//!
//! ```text
//! FD = |μ₁ - μ₂|² + tr(Σ₁) + tr(Σ₂) - 2 tr((Σ₁^½ Σ₂ Σ₁^½)^½)
//! ```
//!
//! (`tr((Σ₁Σ₂)^½)` in the usual form: `Σ₁Σ₂` is similar to the symmetric
//! `Σ₁^½ Σ₂ Σ₁^½`, so both have the same eigenvalues.) Both square roots
//! come from symmetric eigendecompositions in f64 (`nalgebra`), with tiny
//! negative eigenvalues from rounding clipped to zero.
//!
//! Images of any size are compared fairly: the reference photos are first
//! brought to the size of the images under test (centre crop and an area
//! resize, as for training), then both sets are resized bilinearly to the
//! classifier's 64x64 input. A 32 px model is measured against 32 px
//! photos, not charged for its resolution.
//!
//! Reference statistics cost a pass of the classifier over thousands of
//! photos, so they are cached (`$XDG_CACHE_HOME/petal/score/`, else
//! `~/.cache/petal/score/`) under a key that hashes the decoded pixels and
//! relative paths of every reference image at the test size, the size
//! itself, and the classifier's weights: any change to the folder, the size
//! or the classifier gives a new key.

use crate::classifier::{default_weights, Classifier, FEATURES, INPUT_SIZE};
use crate::cli::{DeviceChoice, Sampler};
use crate::config::Preset;
use crate::data::{is_image_file, CorruptPolicy, ImageFolder};
use crate::diffusion::{initial_noise, Schedule};
use crate::guidance::Labels;
use crate::model::load_for_inference;
use crate::sampler::{generate, SampleSpec};
use anyhow::{bail, Context, Result};
use autograd::Var;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use nalgebra::{DMatrix, SymmetricEigen};
use nn::Ctx;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tensor::{DType, Device, Rng, Tensor};

#[derive(Args, Clone, Debug)]
pub struct ScoreArgs {
    /// Score the images of this folder (searched recursively; jpg and png).
    #[arg(long, conflicts_with = "checkpoint", required_unless_present = "checkpoint")]
    pub images: Option<PathBuf>,
    /// Score images sampled from this checkpoint.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Needed only for a bare PyTorch state_dict.
    #[arg(long, requires = "checkpoint")]
    pub preset: Option<Preset>,
    /// How many images to sample from the checkpoint.
    #[arg(long, default_value_t = 1000)]
    pub n: usize,
    /// The sampler (default: ddim for eps and v models, heun for flow models).
    #[arg(long, value_enum)]
    pub sampler: Option<Sampler>,
    /// Sampling steps (DDPM always runs all 1000).
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Class-conditional checkpoints: the classes to sample (as `ddpm sample
    /// --class`; default `random`, one class per image, so the whole
    /// dataset is scored).
    #[arg(long, requires = "checkpoint")]
    pub class: Option<String>,
    /// Classifier-free guidance weight (as `ddpm sample --guidance`).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub guidance: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
    /// Real photos to compare with (default: the training folder the
    /// checkpoint records, else the one the flowers example would use).
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// Classifier weights (default: the ones committed with petal).
    #[arg(long)]
    pub classifier: Option<PathBuf>,
    /// Print one JSON object {"fd", "n", "size"}.
    #[arg(long)]
    pub json: bool,
}

/// Images per classifier (and sampler) batch.
const BATCH: usize = 64;

/// Mean and covariance of a set of feature vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureStats {
    pub mean: Vec<f64>,
    /// `dim x dim`, row-major, with the unbiased `1 / (n - 1)` normalisation.
    pub cov: Vec<f64>,
    pub n: usize,
}

impl FeatureStats {
    /// Statistics of `n = features.len() / dim` vectors, accumulated in f64.
    pub fn from_features(features: &[f32], dim: usize) -> Result<FeatureStats> {
        if dim == 0 || !features.len().is_multiple_of(dim) {
            bail!("{} feature values do not split into vectors of {dim}", features.len());
        }
        let n = features.len() / dim;
        if n < 2 {
            bail!("a covariance needs at least 2 images, got {n}");
        }
        let mut mean = vec![0.0f64; dim];
        for row in features.chunks_exact(dim) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += v as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let centred = DMatrix::from_fn(n, dim, |i, j| features[i * dim + j] as f64 - mean[j]);
        let cov = (centred.transpose() * &centred) / (n - 1) as f64;
        // nalgebra is column-major; the matrix is symmetric, so either order reads the same.
        Ok(FeatureStats { mean, cov: cov.as_slice().to_vec(), n })
    }

    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    fn cov_matrix(&self) -> DMatrix<f64> {
        DMatrix::from_row_slice(self.dim(), self.dim(), &self.cov)
    }

    fn save(&self, path: &Path, key: &str) -> Result<()> {
        let d = self.dim();
        let mut ck = nn::Checkpoint::default();
        ck.model.insert("mean".into(), Tensor::from_vec(self.mean.clone(), [d], &Device::Cpu)?);
        ck.model.insert("cov".into(), Tensor::from_vec(self.cov.clone(), [d, d], &Device::Cpu)?);
        ck.set_meta("n", self.n);
        ck.set_meta("key", key);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating cache folder {}", dir.display()))?;
        }
        nn::save_checkpoint(path, &ck)?;
        Ok(())
    }

    /// The cached statistics at `path` if they exist and were stored under `key`.
    fn load(path: &Path, key: &str) -> Option<FeatureStats> {
        let ck = nn::load_checkpoint(path).ok()?;
        if ck.meta("key") != Some(key) {
            return None;
        }
        let mean = ck.model.get("mean")?.to_vec::<f64>().ok()?;
        let cov = ck.model.get("cov")?.to_vec::<f64>().ok()?;
        let n = ck.meta("n")?.parse().ok()?;
        (cov.len() == mean.len() * mean.len()).then_some(FeatureStats { mean, cov, n })
    }
}

/// Square root of a symmetric positive semi-definite matrix, `V √Λ Vᵀ`.
fn sqrt_psd(m: DMatrix<f64>) -> DMatrix<f64> {
    let eig = SymmetricEigen::new(m);
    let roots = eig.eigenvalues.map(|l| l.max(0.0).sqrt());
    &eig.eigenvectors * DMatrix::from_diagonal(&roots) * eig.eigenvectors.transpose()
}

/// The Fréchet distance between the Gaussians of `a` and `b` (see the top of this file).
pub fn frechet_distance(a: &FeatureStats, b: &FeatureStats) -> Result<f64> {
    if a.dim() != b.dim() {
        bail!("feature statistics of different widths: {} and {}", a.dim(), b.dim());
    }
    let mean_term: f64 = a.mean.iter().zip(&b.mean).map(|(x, y)| (x - y).powi(2)).sum();
    let (s1, s2) = (a.cov_matrix(), b.cov_matrix());
    let root1 = sqrt_psd(s1.clone());
    let mut middle = &root1 * &s2 * &root1;
    // Symmetrise away rounding so the symmetric eigensolver sees an exactly symmetric matrix.
    middle = (&middle + middle.transpose()) * 0.5;
    let cross: f64 = SymmetricEigen::new(middle).eigenvalues.iter().map(|l| l.max(0.0).sqrt()).sum();
    Ok(mean_term + s1.trace() + s2.trace() - 2.0 * cross)
}

/// Bilinear resize of `n` NCHW RGB images from `from` to `to` pixels a
/// side, sampling at pixel centres (PyTorch's `interpolate(mode="bilinear",
/// align_corners=False)`, no antialiasing).
pub fn bilinear_resize(images: &[f32], n: usize, from: usize, to: usize) -> Vec<f32> {
    if from == to {
        return images.to_vec();
    }
    let scale = from as f64 / to as f64;
    // For each output coordinate: the two source taps and the weight of the second.
    let taps: Vec<(usize, usize, f32)> = (0..to)
        .map(|o| {
            let src = ((o as f64 + 0.5) * scale - 0.5).max(0.0);
            let lo = (src.floor() as usize).min(from - 1);
            let hi = (lo + 1).min(from - 1);
            (lo, hi, (src - lo as f64) as f32)
        })
        .collect();
    let mut out = vec![0.0f32; n * 3 * to * to];
    for (dst, src) in out.chunks_exact_mut(to * to).zip(images.chunks_exact(from * from)) {
        for (y, &(y0, y1, wy)) in taps.iter().enumerate() {
            for (x, &(x0, x1, wx)) in taps.iter().enumerate() {
                let top = src[y0 * from + x0] * (1.0 - wx) + src[y0 * from + x1] * wx;
                let bottom = src[y1 * from + x0] * (1.0 - wx) + src[y1 * from + x1] * wx;
                dst[y * to + x] = top * (1.0 - wy) + bottom * wy;
            }
        }
    }
    out
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len}, {per_sec}, ETA {eta}").expect("valid template").progress_chars("=> "));
    bar.set_message(what.to_string());
    bar
}

/// Pooled classifier features `[n, 256]` of `n` NCHW images in `[-1, 1]`
/// of side `size`, in batches (each resized to the classifier's input).
pub fn extract_features(classifier: &Classifier, images: &[f32], n: usize, size: usize, device: &Device, what: &str) -> Result<Vec<f32>> {
    let per_image = 3 * size * size;
    if images.len() != n * per_image {
        bail!("{} values are not {n} images of 3x{size}x{size}", images.len());
    }
    let progress = bar(n as u64, what);
    let mut out = Vec::with_capacity(n * FEATURES);
    autograd::no_grad(|| -> Result<()> {
        for chunk in images.chunks(BATCH * per_image) {
            let m = chunk.len() / per_image;
            let x = bilinear_resize(chunk, m, size, INPUT_SIZE);
            let x = Tensor::from_vec(x, [m, 3, INPUT_SIZE, INPUT_SIZE], device)?;
            let f = classifier.features(&Var::constant(x), &mut Ctx::eval())?;
            out.extend(f.tensor().to_dtype(DType::F32)?.to_vec::<f32>()?);
            progress.inc(m as u64);
        }
        Ok(())
    })?;
    progress.finish_and_clear();
    Ok(out)
}

/// Every image of a folder as NCHW f32 in `[-1, 1]`.
fn folder_pixels(folder: &ImageFolder) -> Vec<f32> {
    let idx: Vec<usize> = (0..folder.len()).collect();
    folder.batch_with_flips(&idx, &vec![false; idx.len()])
}

/// Opens a folder of images at `size`, stopping at (and naming) the first unreadable file.
fn open_folder(dir: &Path, size: usize) -> Result<ImageFolder> {
    ImageFolder::open(dir, size, CorruptPolicy::Fail).with_context(|| format!("reading images of {}", dir.display()))
}

/// The cache key of a reference folder at `size` for the classifier whose
/// weights hash to `classifier_hash`.
pub fn reference_key(folder: &ImageFolder, classifier_hash: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"petal score reference v1\0");
    h.update((folder.size() as u64).to_le_bytes());
    h.update(classifier_hash.as_bytes());
    for i in 0..folder.len() {
        let rel = folder.path(i).strip_prefix(folder.root()).unwrap_or(folder.path(i));
        h.update(rel.to_string_lossy().as_bytes());
        h.update([0]);
        h.update(folder.image(i));
    }
    format!("{:x}", h.finalize())
}

/// Feature statistics of the reference photos at `size`, from `cache_dir` when
/// an entry for the same folder contents, size and classifier exists.
pub fn reference_stats(classifier: &Classifier, classifier_hash: &str, dir: &Path, size: usize, device: &Device, cache_dir: &Path) -> Result<FeatureStats> {
    let folder = open_folder(dir, size)?;
    let key = reference_key(&folder, classifier_hash);
    let path = cache_dir.join(format!("{}.safetensors", &key[..32]));
    if let Some(stats) = FeatureStats::load(&path, &key) {
        eprintln!("reference statistics of {} ({} images at {size} px) from the cache {}", dir.display(), stats.n, path.display());
        return Ok(stats);
    }
    let features = extract_features(classifier, &folder_pixels(&folder), folder.len(), size, device, "reference features")?;
    let stats = FeatureStats::from_features(&features, FEATURES)?;
    match stats.save(&path, &key) {
        Ok(()) => eprintln!("cached the reference statistics in {}", path.display()),
        Err(e) => eprintln!("warning: could not cache the reference statistics: {e:#}"),
    }
    Ok(stats)
}

/// The side of the first image (sorted by path) under `dir`: the size of a folder under test.
fn first_image_side(dir: &Path) -> Result<usize> {
    fn first(dir: &Path) -> Result<Option<PathBuf>> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot list folder {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| !p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.')))
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                if let Some(f) = first(&p)? {
                    return Ok(Some(f));
                }
            } else if is_image_file(&p) {
                return Ok(Some(p));
            }
        }
        Ok(None)
    }
    let path = first(dir)?.with_context(|| format!("no .jpg/.jpeg/.png images found under {}", dir.display()))?;
    let (w, h) = image::image_dimensions(&path).with_context(|| format!("could not read image {}", path.display()))?;
    Ok(w.min(h) as usize)
}

/// Where the reference photos are when `--reference` is not given.
fn default_reference(checkpoint: Option<&Path>) -> Result<PathBuf> {
    if let Some(ck) = checkpoint {
        if let Some(data) = nn::load_checkpoint(ck).ok().and_then(|c| c.meta("data").map(PathBuf::from)) {
            return Ok(data);
        }
    }
    if let Some(dir) = std::env::var_os("PETAL_DATA") {
        return Ok(dir.into());
    }
    let candidates = [PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/flowers102/train"), PathBuf::from("../shared/data/flowers102/train")];
    candidates
        .into_iter()
        .find(|p| p.is_dir())
        .context("no reference photos found: pass --reference DIR (a folder of real flowers, e.g. flowers102/train)")
}

/// Samples `n` images of side `size` from a checkpoint, in batches, with one progress bar.
fn sample_images(args: &ScoreArgs, checkpoint: &Path, device: &Device) -> Result<(Vec<f32>, usize)> {
    let (model, weights) = load_for_inference(checkpoint, args.preset, device)?;
    let size = model.config().image_size;
    let sampler = args.sampler.unwrap_or(Sampler::default_for(model.objective));
    // A conditional model is scored over all its classes unless told otherwise.
    let class = args.class.clone().or_else(|| (!model.class_names.is_empty()).then(|| "random".to_string()));
    let per_batch = sampler.step_count(Schedule::default().steps(), args.steps);
    eprintln!("sampling {} images of {size} px with {sampler} ({per_batch} steps, {} weights)", args.n, weights.name().to_uppercase());
    let progress = bar((args.n.div_ceil(BATCH) * per_batch) as u64, "sampling");
    let mut rng = Rng::new(args.seed);
    let mut images = Vec::with_capacity(args.n * 3 * size * size);
    let mut left = args.n;
    while left > 0 {
        let m = left.min(BATCH);
        let noise = initial_noise(m, size, device, &mut rng)?;
        let labels = Labels::from_flag(class.as_deref(), &model.class_names, m, &mut rng)?;
        let spec = SampleSpec { sampler, steps: args.steps, labels, guidance: args.guidance };
        let mut on_step = |_t: usize, _x: &Tensor| progress.inc(1);
        let x = autograd::no_grad(|| generate(&model, noise, &spec, &mut rng, &mut on_step))?;
        images.extend(x.clamp(-1.0, 1.0)?.to_dtype(DType::F32)?.to_vec::<f32>()?);
        left -= m;
    }
    progress.finish_and_clear();
    Ok((images, size))
}

/// The `ddpm score` command.
pub fn run(args: &ScoreArgs) -> Result<()> {
    if args.n < 2 {
        bail!("--n must be at least 2 (a covariance needs two images), got {}", args.n);
    }
    crate::validate::at_least_one("--steps", args.steps as u64)?;
    crate::validate::guidance("--guidance", args.guidance)?;
    let device = args.device.resolve()?;
    let classifier_path = args.classifier.clone().unwrap_or_else(default_weights);
    let classifier = Classifier::load(&classifier_path, &device)?;
    let classifier_hash = crate::download::sha256_file(&classifier_path).with_context(|| format!("reading {}", classifier_path.display()))?;
    let reference = match &args.reference {
        Some(r) => r.clone(),
        None => default_reference(args.checkpoint.as_deref())?,
    };
    if !reference.is_dir() {
        bail!("reference folder {} does not exist (pass --reference DIR)", reference.display());
    }
    let (images, size) = match (&args.images, &args.checkpoint) {
        (Some(dir), _) => {
            let size = first_image_side(dir)?;
            let folder = open_folder(dir, size)?;
            (folder_pixels(&folder), size)
        }
        (None, Some(ck)) => sample_images(args, ck, &device)?,
        (None, None) => bail!("pass --images DIR or --checkpoint CKPT"),
    };
    let n = images.len() / (3 * size * size);
    let features = extract_features(&classifier, &images, n, size, &device, "features")?;
    let stats = FeatureStats::from_features(&features, FEATURES)?;
    let reference_stats = reference_stats(&classifier, &classifier_hash, &reference, size, &device, &crate::download::cache_dir().join("score"))?;
    let fd = frechet_distance(&stats, &reference_stats)?;
    if args.json {
        println!("{}", serde_json::json!({ "fd": fd, "n": n, "size": size }));
    } else {
        println!("Fréchet distance {fd:.6} ({n} images of {size} px against {} reference images of {})", reference_stats.n, reference.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::TempDir;
    use image::{Rgb, RgbImage};

    fn lcg(seed: &mut u64) -> f64 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (*seed >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Stats with covariance `Q diag(vars) Qᵀ` for the orthogonal `q`.
    fn rotated(mean: Vec<f64>, vars: &[f64], q: &DMatrix<f64>) -> FeatureStats {
        let d = vars.len();
        let cov = q * DMatrix::from_diagonal(&nalgebra::DVector::from_column_slice(vars)) * q.transpose();
        let cov: Vec<f64> = (0..d * d).map(|k| cov[(k / d, k % d)]).collect();
        FeatureStats { mean, cov, n: 100 }
    }

    /// For Gaussians whose covariances share eigenvectors, FD has the closed
    /// form `|μ₁-μ₂|² + Σᵢ (√λᵢ - √νᵢ)²`; a shared rotation leaves it unchanged
    /// but makes every matrix dense.
    #[test]
    fn frechet_distance_matches_the_closed_form() {
        let mut seed = 7;
        for d in [1usize, 3, 8, 20] {
            let m1: Vec<f64> = (0..d).map(|_| lcg(&mut seed) * 4.0 - 2.0).collect();
            let m2: Vec<f64> = (0..d).map(|_| lcg(&mut seed) * 4.0 - 2.0).collect();
            let v1: Vec<f64> = (0..d).map(|_| 0.1 + 3.0 * lcg(&mut seed)).collect();
            let v2: Vec<f64> = (0..d).map(|_| 0.1 + 3.0 * lcg(&mut seed)).collect();
            let want: f64 = m1.iter().zip(&m2).map(|(a, b)| (a - b).powi(2)).sum::<f64>() + v1.iter().zip(&v2).map(|(a, b)| (a.sqrt() - b.sqrt()).powi(2)).sum::<f64>();
            let identity = DMatrix::identity(d, d);
            let q = DMatrix::from_fn(d, d, |_, _| lcg(&mut seed) - 0.5).qr().q();
            for rot in [&identity, &q] {
                let fd = frechet_distance(&rotated(m1.clone(), &v1, rot), &rotated(m2.clone(), &v2, rot)).unwrap();
                assert!((fd - want).abs() < 1e-9 * want.max(1.0), "d {d}: {fd} vs {want}");
            }
        }
    }

    #[test]
    fn identical_sets_score_zero_and_stats_match_plain_loops() {
        let (n, d) = (40, 6);
        let mut seed = 3;
        let features: Vec<f32> = (0..n * d).map(|_| lcg(&mut seed) as f32 * 2.0 - 1.0).collect();
        let stats = FeatureStats::from_features(&features, d).unwrap();
        for j in 0..d {
            let mean = (0..n).map(|i| features[i * d + j] as f64).sum::<f64>() / n as f64;
            assert!((stats.mean[j] - mean).abs() < 1e-12);
            for k in 0..d {
                let mk = (0..n).map(|i| features[i * d + k] as f64).sum::<f64>() / n as f64;
                let cov = (0..n).map(|i| (features[i * d + j] as f64 - mean) * (features[i * d + k] as f64 - mk)).sum::<f64>() / (n - 1) as f64;
                assert!((stats.cov[j * d + k] - cov).abs() < 1e-12);
            }
        }
        let fd = frechet_distance(&stats, &stats.clone()).unwrap();
        assert!(fd.abs() < 1e-9, "{fd}");
        // A shifted copy: only the mean term remains.
        let shifted: Vec<f32> = features.iter().map(|v| v + 0.5).collect();
        let fd = frechet_distance(&stats, &FeatureStats::from_features(&shifted, d).unwrap()).unwrap();
        assert!((fd - 0.25 * d as f64).abs() < 1e-6, "{fd}");
        assert!(FeatureStats::from_features(&features[..d], d).unwrap_err().to_string().contains("at least 2"));
        let other = FeatureStats { mean: vec![0.0; 2], cov: vec![0.0; 4], n: 2 };
        assert!(frechet_distance(&stats, &other).unwrap_err().to_string().contains("6 and 2"));
    }

    /// PyTorch: `F.interpolate(torch.arange(4.).view(1,1,2,2), size=4, mode="bilinear")`.
    #[test]
    fn bilinear_resize_matches_pytorch() {
        let plane = [0.0f32, 1.0, 2.0, 3.0];
        let img: Vec<f32> = plane.iter().cycle().take(12).copied().collect();
        let out = bilinear_resize(&img, 1, 2, 4);
        let want = [0.0, 0.25, 0.75, 1.0, 0.5, 0.75, 1.25, 1.5, 1.5, 1.75, 2.25, 2.5, 2.0, 2.25, 2.75, 3.0];
        for c in 0..3 {
            assert_eq!(&out[c * 16..(c + 1) * 16], &want);
        }
        let flat = vec![0.3f32; 2 * 3 * 5 * 5];
        assert!(bilinear_resize(&flat, 2, 5, 64).iter().all(|&v| (v - 0.3).abs() < 1e-6));
    }

    fn write_png(path: &Path, side: u32, shade: u8) {
        RgbImage::from_fn(side, side, |x, y| Rgb([shade, (x * 7) as u8, (y * 11) as u8])).save(path).unwrap();
    }

    #[test]
    fn cache_key_follows_contents_size_and_classifier() {
        let dir = TempDir::new("score-key");
        std::fs::create_dir_all(dir.0.join("1")).unwrap();
        write_png(&dir.0.join("1/a.png"), 16, 10);
        write_png(&dir.0.join("1/b.png"), 16, 20);
        let key = |size: usize, clf: &str| reference_key(&open_folder(&dir.0, size).unwrap(), clf);
        let k0 = key(16, "c");
        assert_eq!(k0, key(16, "c"), "same folder, same key");
        assert_ne!(k0, key(8, "c"), "size");
        assert_ne!(k0, key(16, "d"), "classifier");
        write_png(&dir.0.join("1/b.png"), 16, 21);
        let k1 = key(16, "c");
        assert_ne!(k0, k1, "a changed image");
        write_png(&dir.0.join("1/c.png"), 16, 30);
        assert_ne!(k1, key(16, "c"), "an added image");
        std::fs::rename(dir.0.join("1/c.png"), dir.0.join("1/d.png")).unwrap();
        assert_ne!(k1, key(16, "c"), "a renamed image");
    }

    #[test]
    fn a_corrupt_image_is_named() {
        let dir = TempDir::new("score-corrupt");
        write_png(&dir.0.join("good.png"), 8, 0);
        std::fs::write(dir.0.join("broken.jpg"), b"not a jpeg at all").unwrap();
        let err = format!("{:#}", open_folder(&dir.0, 8).unwrap_err());
        assert!(err.contains("broken.jpg"), "{err}");
        assert_eq!(first_image_side(&dir.0).unwrap_err().to_string(), format!("could not read image {}", dir.0.join("broken.jpg").display()));
        std::fs::remove_file(dir.0.join("broken.jpg")).unwrap();
        assert_eq!(first_image_side(&dir.0).unwrap(), 8);
    }

    /// The second computation of reference statistics comes from the cache, identical.
    #[test]
    fn reference_statistics_are_cached() {
        let dir = TempDir::new("score-ref");
        for (i, shade) in [0u8, 80, 160, 240].into_iter().enumerate() {
            write_png(&dir.0.join(format!("{i}.png")), 12, shade);
        }
        let cache = dir.0.join(".cache");
        let clf = Classifier::new(3, &Device::Cpu, 0).unwrap();
        let first = reference_stats(&clf, "h", &dir.0, 12, &Device::Cpu, &cache).unwrap();
        assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1);
        let second = reference_stats(&clf, "h", &dir.0, 12, &Device::Cpu, &cache).unwrap();
        assert_eq!(first, second);
        assert_eq!(first.n, 4);
        // Same photos scored against themselves: zero, to rounding. With 4
        // images the 256x256 covariance has rank 3, and the square roots of
        // its ~1e-17 eigenvalues leave about 1e-8 each, hence the tolerance
        // relative to the trace.
        let folder = open_folder(&dir.0, 12).unwrap();
        let own = FeatureStats::from_features(&extract_features(&clf, &folder_pixels(&folder), 4, 12, &Device::Cpu, "t").unwrap(), FEATURES).unwrap();
        let trace: f64 = (0..FEATURES).map(|i| own.cov[i * FEATURES + i]).sum();
        let fd = frechet_distance(&own, &first).unwrap();
        assert!(fd.abs() < 1e-4 * trace, "{fd} against a trace of {trace}");
    }
}
