//! A small CNN that tells the 102 kinds of flowers apart, and the pieces
//! around it: labels from class folders, the flip-and-shift augmentation,
//! top-1 accuracy, and loading the trained weights.
//!
//! The network exists for `ddpm score`: its globally pooled features are
//! the space in which generated and real flowers are compared (see
//! `score.rs`). It is trained by `examples/classifier.rs`.
//!
//! Architecture, for `[N, 3, 64, 64]` images in `[-1, 1]`:
//!
//! ```text
//! stem     64x64 -> 32x32   conv 3->32, stride 2
//! stage 0  32x32            conv 32->64                     max pool 2
//! stage 1  16x16            conv 64->128,  conv 128->128    max pool 2
//! stage 2   8x8             conv 128->256, conv 256->256
//! global average pool -> 256 features -> linear -> 102 logits
//! ```
//!
//! Each conv is 3x3 (padding 1, no bias) followed by BatchNorm and ReLU.
//! The strided stem halves the resolution at once: on a CPU the full-size
//! 64x64 activations cost more in memory traffic than they give in accuracy
//! for a budget of half an hour.
//! BatchNorm rather than GroupNorm: with a half-hour budget it learns
//! faster (see BENCHMARKS.md); its running statistics are in the weights
//! file, and evaluation (`Ctx::eval`) uses them.

use crate::data::ImageFolder;
use anyhow::{bail, Context, Result};
use autograd::Var;
use nn::{BatchNorm2d, Conv2d, Conv2dConfig, Ctx, Linear, Module, ParamStore, Path};
use std::path::{Path as FsPath, PathBuf};
use tensor::{DType, Device, Rng, Tensor};

/// Side of the square images the classifier takes.
pub const INPUT_SIZE: usize = 64;
/// Width of the pooled feature vector.
pub const FEATURES: usize = 256;
/// Output channels of each conv, stage by stage.
const STEM: usize = 32;
const STAGES: [&[usize]; 3] = [&[64], &[128, 128], &[256, 256]];

/// Where the committed weights live in the source tree.
pub fn default_weights() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/flower-classifier.safetensors"))
}

/// conv 3x3 -> BatchNorm -> ReLU.
struct ConvBlock {
    conv: Conv2d,
    norm: BatchNorm2d,
}

impl ConvBlock {
    fn new(path: &Path, cin: usize, cout: usize, stride: usize) -> Result<ConvBlock> {
        let conv = Conv2d::new(&path.pp("conv"), cin, cout, 3, Conv2dConfig { stride, padding: 1, bias: false })?;
        let norm = BatchNorm2d::new(&path.pp("norm"), cout)?;
        Ok(ConvBlock { conv, norm })
    }

    fn forward(&self, x: &Var, ctx: &mut Ctx) -> Result<Var> {
        Ok(self.norm.forward(&self.conv.forward(x, ctx)?, ctx)?.relu()?)
    }
}

pub struct Classifier {
    pub store: ParamStore,
    stem: ConvBlock,
    /// `stages[s][b]`: block b of stage s (names `stages.s.b.conv.weight`, ...).
    stages: Vec<Vec<ConvBlock>>,
    head: Linear,
    pub classes: usize,
}

impl Classifier {
    /// A freshly initialised network for `classes` classes, drawn from `seed`.
    pub fn new(classes: usize, device: &Device, seed: u64) -> Result<Classifier> {
        let store = ParamStore::new(device.clone(), DType::F32, Rng::new(seed));
        let root = store.root();
        let stem = ConvBlock::new(&root.pp("stem"), 3, STEM, 2)?;
        let mut stages = Vec::new();
        let mut cin = STEM;
        for (s, widths) in STAGES.iter().enumerate() {
            let mut blocks = Vec::new();
            for (b, &cout) in widths.iter().enumerate() {
                blocks.push(ConvBlock::new(&root.pp("stages").pp(s).pp(b), cin, cout, 1)?);
                cin = cout;
            }
            stages.push(blocks);
        }
        let head = Linear::new(&root.pp("head"), FEATURES, classes, true)?;
        Ok(Classifier { store, stem, stages, head, classes })
    }

    /// Loads trained weights written by the classifier example; the class
    /// count comes from the file's metadata.
    pub fn load(path: &FsPath, device: &Device) -> Result<Classifier> {
        if !path.exists() {
            bail!("classifier weights {} not found (train them with `cargo run -p ddpm --release --example classifier`, or pass --classifier FILE)", path.display());
        }
        let ck = nn::load_checkpoint(path).with_context(|| format!("loading classifier {}", path.display()))?;
        let classes: usize = ck
            .meta("classes")
            .with_context(|| format!("{} is not a flower classifier (no `classes` metadata)", path.display()))?
            .parse()
            .with_context(|| format!("{}: metadata `classes` is not a number", path.display()))?;
        let model = Classifier::new(classes, device, 0)?;
        ck.load_into(&model.store, true).with_context(|| format!("loading classifier {}", path.display()))?;
        Ok(model)
    }

    /// The globally average-pooled features `[N, 256]` of images `[N, 3, 64, 64]`.
    pub fn features(&self, x: &Var, ctx: &mut Ctx) -> Result<Var> {
        let dims = x.dims();
        if dims.len() != 4 || dims[1] != 3 || dims[2] != INPUT_SIZE || dims[3] != INPUT_SIZE {
            bail!("the classifier takes [N, 3, {INPUT_SIZE}, {INPUT_SIZE}] images, got {dims:?}");
        }
        let mut h = self.stem.forward(x, ctx)?;
        for (s, blocks) in self.stages.iter().enumerate() {
            for block in blocks {
                h = block.forward(&h, ctx)?;
            }
            if s + 1 < self.stages.len() {
                h = h.max_pool2d(2, 2)?;
            }
        }
        Ok(h.mean(&[2, 3], false)?)
    }

    /// Class logits `[N, classes]`.
    pub fn forward(&self, x: &Var, ctx: &mut Ctx) -> Result<Var> {
        let f = self.features(x, ctx)?;
        Ok(self.head.forward(&f, ctx)?)
    }
}

/// Images with their class: the class of a file is the name of the folder
/// right under the root that holds it (`train/17/image_03.jpg` is class
/// "17"). Classes are numbered in sorted order of their names (numerically
/// when every name is a number), so train and valid folders with the same
/// class folders agree.
pub struct LabelledImages {
    pub images: ImageFolder,
    pub labels: Vec<usize>,
    pub class_names: Vec<String>,
}

impl LabelledImages {
    pub fn new(images: ImageFolder) -> Result<LabelledImages> {
        let class_of = |i: usize| -> Result<String> {
            let rel = images.path(i).strip_prefix(images.root()).unwrap_or(images.path(i));
            let mut parts = rel.components();
            match (parts.next(), parts.next()) {
                (Some(dir), Some(_)) => Ok(dir.as_os_str().to_string_lossy().into_owned()),
                _ => bail!("{} is not inside a class folder of {}", images.path(i).display(), images.root().display()),
            }
        };
        let names: Vec<String> = (0..images.len()).map(class_of).collect::<Result<_>>()?;
        let mut class_names = names.clone();
        class_names.sort_by(|a, b| match (a.parse::<u64>(), b.parse::<u64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => a.cmp(b),
        });
        class_names.dedup();
        let labels = names.iter().map(|n| class_names.iter().position(|c| c == n).expect("listed above")).collect();
        Ok(LabelledImages { images, labels, class_names })
    }
}

/// The images at `indices` as NCHW f32 in `[-1, 1]`. With `augment`, each
/// is mirrored with probability 1/2 and shifted by up to `max_shift`
/// pixels in each direction, edge pixels filling the border (a random crop
/// of the edge-padded image).
pub fn batch(data: &ImageFolder, indices: &[usize], augment: Option<(usize, &mut Rng)>) -> Vec<f32> {
    let s = data.size();
    let plane = s * s;
    let mut out = vec![0.0f32; indices.len() * 3 * plane];
    let mut draws = Vec::with_capacity(indices.len());
    match augment {
        Some((max_shift, rng)) => {
            for _ in indices {
                let span = 2 * max_shift as u64 + 1;
                let flip = rng.below(2) == 1;
                let dx = rng.below(span) as isize - max_shift as isize;
                let dy = rng.below(span) as isize - max_shift as isize;
                draws.push((flip, dx, dy));
            }
        }
        None => draws.resize(indices.len(), (false, 0, 0)),
    }
    for ((dst, &i), &(flip, dx, dy)) in out.chunks_mut(3 * plane).zip(indices).zip(&draws) {
        let src = data.image(i);
        let clamp = |v: isize| v.clamp(0, s as isize - 1) as usize;
        for y in 0..s {
            let sy = clamp(y as isize + dy);
            for x in 0..s {
                let mx = if flip { s - 1 - x } else { x };
                let sx = clamp(mx as isize + dx);
                let p = &src[(sy * s + sx) * 3..][..3];
                for c in 0..3 {
                    dst[c * plane + y * s + x] = p[c] as f32 / 127.5 - 1.0;
                }
            }
        }
    }
    out
}

/// Top-1 accuracy of `model` on `data`, in eval mode, in batches of `batch_size`.
pub fn accuracy(model: &Classifier, data: &LabelledImages, batch_size: usize, device: &Device) -> Result<f64> {
    let s = data.images.size();
    let mut correct = 0usize;
    autograd::no_grad(|| -> Result<()> {
        for start in (0..data.images.len()).step_by(batch_size) {
            let idx: Vec<usize> = (start..(start + batch_size).min(data.images.len())).collect();
            let x = Tensor::from_vec(batch(&data.images, &idx, None), [idx.len(), 3, s, s], device)?;
            let logits = model.forward(&Var::constant(x), &mut Ctx::eval())?;
            let pred = logits.tensor().argmax(1, false)?.to_vec::<u32>()?;
            correct += idx.iter().zip(pred).filter(|(&i, p)| data.labels[i] == *p as usize).count();
        }
        Ok(())
    })?;
    Ok(correct as f64 / data.images.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_names() {
        let model = Classifier::new(5, &Device::Cpu, 0).unwrap();
        let x = Var::constant(Tensor::zeros([2, 3, 64, 64], DType::F32, &Device::Cpu).unwrap());
        assert_eq!(model.features(&x, &mut Ctx::eval()).unwrap().dims(), &[2, FEATURES]);
        assert_eq!(model.forward(&x, &mut Ctx::eval()).unwrap().dims(), &[2, 5]);
        let names: Vec<String> = model.store.named().into_iter().map(|(n, _)| n).collect();
        assert!(names.contains(&"stages.2.1.conv.weight".to_string()), "{names:?}");
        assert!(names.contains(&"head.bias".to_string()));
        let bad = Var::constant(Tensor::zeros([1, 3, 32, 32], DType::F32, &Device::Cpu).unwrap());
        assert!(model.features(&bad, &mut Ctx::eval()).unwrap_err().to_string().contains("[1, 3, 32, 32]"));
    }
}
