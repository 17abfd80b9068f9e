//! The time-conditioned U-Net of `shared/docs/unet.md`.
//!
//! It predicts the noise in a noisy image given the diffusion step. Every
//! resolution level runs residual blocks whose features are scaled and
//! shifted by the step's embedding; the down path's outputs skip across to
//! the up path. Parameter names follow PyTorch's `state_dict` for the same
//! module tree, so checkpoints move between the two with no conversion.

use crate::config::UNetConfig;
use autograd::Var;
use nn::{Conv2d, Conv2dConfig, Ctx, Dropout, Embedding, GroupNorm, Linear, Module, Path, SinusoidalEmbedding};
use tensor::switch::EnvSwitch;
use tensor::{DType, Fusion, Tensor};

/// GroupNorm over `c` channels with at most `groups` groups (the spec's
/// `g = min(groups, c)`).
fn group_norm(path: &Path, groups: usize, c: usize) -> nn::Result<GroupNorm> {
    GroupNorm::new(path, groups.min(c), c)
}

fn conv3x3(path: &Path, cin: usize, cout: usize) -> nn::Result<Conv2d> {
    Conv2d::new(path, cin, cout, 3, Conv2dConfig::padded(1))
}

/// A residual block whose features are modulated by the time embedding.
pub struct ResBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_scale: Linear,
    time_shift: Linear,
    norm2: GroupNorm,
    dropout: Dropout,
    conv2: Conv2d,
    skip: Option<Conv2d>,
}

impl ResBlock {
    pub fn new(path: &Path, cin: usize, cout: usize, time_dim: usize, cfg: &UNetConfig) -> nn::Result<ResBlock> {
        Ok(ResBlock {
            norm1: group_norm(&path.pp("norm1"), cfg.groups, cin)?,
            conv1: conv3x3(&path.pp("conv1"), cin, cout)?,
            time_scale: Linear::new(&path.pp("time_scale"), time_dim, cout, true)?,
            time_shift: Linear::new(&path.pp("time_shift"), time_dim, cout, true)?,
            norm2: group_norm(&path.pp("norm2"), cfg.groups, cout)?,
            dropout: Dropout::new(cfg.dropout)?,
            conv2: conv3x3(&path.pp("conv2"), cout, cout)?,
            skip: if cin != cout { Some(Conv2d::new(&path.pp("skip"), cin, cout, 1, Conv2dConfig::default())?) } else { None },
        })
    }

    /// `time` is swish(t_emb), shared by every block: [N, F].
    pub fn forward(&self, x: &Var, time: &Var, ctx: &mut Ctx) -> nn::Result<Var> {
        if fuses_inference(x, ctx) {
            return Ok(Var::constant(self.forward_fused(x.tensor(), None, time)?.0));
        }
        let y = self.conv1.forward(&self.norm1.forward_silu(x, ctx)?, ctx)?;
        // y * (time_scale(t) + 1) + time_shift(t), per image and channel,
        // and the dropout after the SiLU, applied inside the second norm's passes.
        let scale = self.time_scale.forward(time, ctx)?.add_scalar(1.0)?;
        let shift = self.time_shift.forward(time, ctx)?;
        let y = self.norm2.forward_silu_modulated(&y, &scale, &shift, Some(&self.dropout), ctx)?;
        let skip = match &self.skip {
            Some(conv) => conv.forward(x, ctx)?,
            None => x.clone(),
        };
        // The skip is added as the second convolution writes its output.
        self.conv2.forward_add(&y, &skip)
    }

    /// `forward` in eval mode without a tape, with everything between the
    /// two convolutions folded into them (see `tensor::Fusion`): each norm
    /// and its SiLU are applied as the convolution reads its input, the
    /// time scale-and-shift is folded into the second norm, and the skip is
    /// added as the second convolution writes. The first norm needs the
    /// input's channel moments: `x_moments` where the caller has them,
    /// else a pass of their own. Returns the output with its own moments,
    /// taken as the second convolution writes it.
    fn forward_fused(&self, x: &Tensor, x_moments: Option<Tensor>, time: &Var) -> nn::Result<(Tensor, Tensor)> {
        let (n, hw) = (x.dims()[0], x.dims()[2] * x.dims()[3]);
        let x_moments = match x_moments {
            Some(moments) => moments,
            None => x.channel_moments()?,
        };
        let (scale, shift) = self.norm1.inference_affine(&x_moments, hw, None, x.dtype())?;
        let into_conv1 = Fusion { input_affine: Some((&scale, &shift)), input_silu: true, moments: true, ..Fusion::default() };
        let (y, y_moments) = self.conv1.forward_fused(x, into_conv1)?;
        let ctx = &mut Ctx::eval();
        let c = y.dims()[1];
        let time_scale = self.time_scale.forward(time, ctx)?.add_scalar(1.0)?.reshape([n, c])?;
        let time_shift = self.time_shift.forward(time, ctx)?.reshape([n, c])?;
        let y_moments = y_moments.expect("moments were asked for");
        let modulation = (time_scale.tensor(), time_shift.tensor());
        let (scale, shift) = self.norm2.inference_affine(&y_moments, y.dims()[2] * y.dims()[3], Some(modulation), y.dtype())?;
        let skip = match &self.skip {
            Some(conv) => conv.forward_fused(x, Fusion::default())?.0,
            None => x.clone(),
        };
        let into_conv2 = Fusion { input_affine: Some((&scale, &shift)), input_silu: true, residual: Some(&skip), moments: true, ..Fusion::default() };
        let (out, out_moments) = self.conv2.forward_fused(&y, into_conv2)?;
        Ok((out, out_moments.expect("moments were asked for")))
    }
}

/// Whether a forward pass takes the fused inference path: evaluation (no
/// dropout) without a tape, on the CPU, in f32 or f64. On a GPU the fused
/// op has no kernel of its own yet and would be composed from more ops than
/// the plain path runs, so the GPU keeps the plain path.
/// `PETAL_UNFUSED_INFERENCE=1` or `set_fused_inference(false)` turns the
/// fused path off, to compare.
fn fuses_inference(x: &Var, ctx: &Ctx) -> bool {
    !UNFUSED_INFERENCE.is_on() && !ctx.train && !autograd::is_grad_enabled() && x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64)
}

static UNFUSED_INFERENCE: EnvSwitch = EnvSwitch::new("PETAL_UNFUSED_INFERENCE");

/// Whether evaluation on the CPU takes the fused path (the default).
pub fn set_fused_inference(on: bool) {
    UNFUSED_INFERENCE.set(!on);
}

/// Intermediate activations, for checking against a reference.
#[derive(Default)]
pub struct Activations {
    pub time_features: Option<Var>,
    pub time_emb: Option<Var>,
    /// Output of each down level's last block (the skips).
    pub down: Vec<Var>,
    pub middle: Option<Var>,
    /// Output of each up level's last block, in execution order.
    pub up: Vec<Var>,
}

pub struct UNet {
    pub config: UNetConfig,
    time_features: SinusoidalEmbedding,
    time_mlp0: Linear,
    time_mlp2: Linear,
    /// Class-conditional models only: one row per class and a last row for
    /// the null class (see `guidance.rs`), added to the time embedding.
    class_emb: Option<Embedding>,
    conv_in: Conv2d,
    down: Vec<Vec<ResBlock>>,
    middle: Vec<ResBlock>,
    up: Vec<Vec<ResBlock>>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl UNet {
    /// Builds the network under `root`, registering its parameters there.
    pub fn new(root: &Path, config: &UNetConfig) -> nn::Result<UNet> {
        let (c, f, r, levels) = (config.base_channels, config.time_dim(), config.blocks_per_level, config.levels());
        let dtype = root.store().dtype();
        let time_features = SinusoidalEmbedding::new(c, dtype)?;
        let time_mlp0 = Linear::new(&root.pp("time_mlp").pp(0), c, f, true)?;
        let time_mlp2 = Linear::new(&root.pp("time_mlp").pp(2), f, f, true)?;
        let class_emb = match config.num_classes {
            0 => None,
            k => Some(Embedding::new(&root.pp("class_emb"), k + 1, f)?),
        };
        let conv_in = conv3x3(&root.pp("conv_in"), 3, c)?;

        let mut down = Vec::new();
        let mut prev = c;
        for i in 0..levels {
            let ci = config.channels(i);
            let blocks = (0..r)
                .map(|j| ResBlock::new(&root.pp("down").pp(i).pp(j), if j == 0 { prev } else { ci }, ci, f, config))
                .collect::<nn::Result<Vec<_>>>()?;
            down.push(blocks);
            prev = ci;
        }
        let deepest = config.channels(levels - 1);
        let middle = (0..2).map(|j| ResBlock::new(&root.pp("middle").pp(j), deepest, deepest, f, config)).collect::<nn::Result<Vec<_>>>()?;

        let mut up = Vec::new();
        let mut cx = deepest;
        for (k, i) in (0..levels).rev().enumerate() {
            let ci = config.channels(i);
            let blocks = (0..r)
                .map(|j| ResBlock::new(&root.pp("up").pp(k).pp(j), if j == 0 { cx + ci } else { ci }, ci, f, config))
                .collect::<nn::Result<Vec<_>>>()?;
            up.push(blocks);
            cx = ci;
        }
        let norm_out = group_norm(&root.pp("norm_out"), config.groups, c)?;
        let conv_out = conv3x3(&root.pp("conv_out"), c, 3)?;
        Ok(UNet { config: config.clone(), time_features, time_mlp0, time_mlp2, class_emb, conv_in, down, middle, up, norm_out, conv_out })
    }

    /// Predicted noise for noisy images `x` [N, 3, S, S] at steps `t` (one per image).
    pub fn forward(&self, x: &Var, t: &[u32], ctx: &mut Ctx) -> nn::Result<Var> {
        self.forward_with_activations(x, t, ctx, None)
    }

    pub fn forward_with_activations(&self, x: &Var, t: &[u32], ctx: &mut Ctx, acts: Option<&mut Activations>) -> nn::Result<Var> {
        self.forward_full(x, t, None, ctx, acts)
    }

    /// Classes of a class-conditional model (0 for an unconditional one).
    pub fn num_classes(&self) -> usize {
        self.config.num_classes
    }

    /// The forward pass of a class-conditional model with one class label
    /// per image; `None` (or the label `num_classes`) is the null class,
    /// i.e. the unconditional model. An unconditional model takes `None` only.
    pub fn forward_with_labels(&self, x: &Var, t: &[u32], labels: Option<&[u32]>, ctx: &mut Ctx) -> nn::Result<Var> {
        self.forward_full(x, t, labels, ctx, None)
    }

    fn forward_full(&self, x: &Var, t: &[u32], labels: Option<&[u32]>, ctx: &mut Ctx, mut acts: Option<&mut Activations>) -> nn::Result<Var> {
        let (n, s) = (x.dims()[0], self.config.image_size);
        if x.dims() != [n, 3, s, s] || t.len() != n {
            return Err(nn::NnError::bad(
                "UNet::forward",
                format!("expected images [N, 3, {s}, {s}] and N steps, got {:?} and {} steps", x.dims(), t.len()),
            ));
        }
        if let Some(&bad) = t.iter().find(|&&t| t as usize >= crate::diffusion::T) {
            return Err(nn::NnError::bad("UNet::forward", format!("step {bad} is outside 0..{}", crate::diffusion::T)));
        }
        // Mixed precision: the step features follow the input's dtype (the
        // layers cast their f32 parameters to it).
        let features = self.time_features.embed(t, x.device())?.to_dtype(x.dtype())?;
        let t_emb = self.time_mlp2.forward(&self.time_mlp0.forward(&features, ctx)?.silu()?, ctx)?;
        let t_emb = match (&self.class_emb, labels) {
            (None, None) => t_emb,
            (None, Some(_)) => return Err(nn::NnError::bad("UNet::forward", "class labels given to an unconditional model")),
            (Some(table), labels) => {
                let k = self.config.num_classes as u32;
                let labels = labels.map_or_else(|| vec![k; n], <[u32]>::to_vec);
                if labels.len() != n || labels.iter().any(|&l| l > k) {
                    return Err(nn::NnError::bad("UNet::forward", format!("expected {n} class labels in 0..={k} ({k} is the null class), got {labels:?}")));
                }
                let rows = table.lookup(&Tensor::from_vec(labels, [n], x.device())?)?.to_dtype(t_emb.dtype())?;
                t_emb.add(&rows)?
            }
        };
        let time = t_emb.silu()?;
        if let Some(a) = acts.as_deref_mut() {
            a.time_features = Some(features.clone());
            a.time_emb = Some(t_emb.clone());
        } else if fuses_inference(x, ctx) {
            return Ok(Var::constant(self.forward_fused(x.tensor(), &time)?));
        }

        let mut h = self.conv_in.forward(x, ctx)?;
        let mut skips = Vec::new();
        for level in &self.down {
            for block in level {
                h = block.forward(&h, &time, ctx)?;
            }
            skips.push(h.clone());
            h = h.avg_pool2d(2, 2)?;
        }
        if let Some(a) = acts.as_deref_mut() {
            a.down = skips.clone();
        }
        for block in &self.middle {
            h = block.forward(&h, &time, ctx)?;
        }
        if let Some(a) = acts.as_deref_mut() {
            a.middle = Some(h.clone());
        }
        for level in &self.up {
            let skip = skips.pop().expect("one skip per level");
            h = Var::cat(&[&h.upsample_nearest2d(2, 2)?, &skip], 1)?;
            for block in level {
                h = block.forward(&h, &time, ctx)?;
            }
            if let Some(a) = acts.as_deref_mut() {
                a.up.push(h.clone());
            }
        }
        let h = self.norm_out.forward_silu(&h, ctx)?;
        self.conv_out.forward(&h, ctx)
    }

    /// `forward_full`'s layers on the fused inference path (see
    /// `ResBlock::forward_fused`), each activation travelling with its
    /// channel moments from the convolution that wrote it to the norm that
    /// reads it, so that no norm takes a pass of its own over its input.
    /// Nearest upsampling by 2 repeats each value 4 times, so it multiplies
    /// the moments by 4, and a concatenation of channels concatenates
    /// them; only pooling loses them.
    fn forward_fused(&self, x: &Tensor, time: &Var) -> nn::Result<Tensor> {
        // An activation and its moments, where known, through a run of blocks.
        let blocks = |run: &[ResBlock], h: Tensor, moments: Option<Tensor>| {
            run.iter().try_fold((h, moments), |(h, moments), block| {
                let (out, out_moments) = block.forward_fused(&h, moments, time)?;
                nn::Result::Ok((out, Some(out_moments)))
            })
        };
        let (h, moments) = self.conv_in.forward_fused(x, Fusion { moments: true, ..Fusion::default() })?;
        let (mut h, mut moments) = (h, Some(moments.expect("moments were asked for")));
        let mut skips = Vec::new();
        for level in &self.down {
            (h, moments) = blocks(level, h, moments)?;
            skips.push((h.clone(), moments));
            (h, moments) = (h.avg_pool2d(2, 2)?, None);
        }
        (h, moments) = blocks(&self.middle, h, moments)?;
        for level in &self.up {
            let (skip, skip_moments) = skips.pop().expect("one skip per level");
            let joined = match (moments, skip_moments) {
                (Some(up), Some(skip)) => Some(Tensor::cat(&[&up.mul_scalar(4.0)?, &skip], 1)?),
                _ => None,
            };
            h = Tensor::cat(&[&h.upsample_nearest2d(2, 2)?, &skip], 1)?;
            (h, moments) = blocks(level, h, joined)?;
        }
        let moments = match moments {
            Some(moments) => moments,
            None => h.channel_moments()?,
        };
        let hw = h.dims()[2] * h.dims()[3];
        let (scale, shift) = self.norm_out.inference_affine(&moments, hw, None, h.dtype())?;
        let fusion = Fusion { input_affine: Some((&scale, &shift)), input_silu: true, ..Fusion::default() };
        Ok(self.conv_out.forward_fused(&h, fusion)?.0)
    }

    /// Predicted noise as a plain tensor, recording nothing (for sampling).
    pub fn predict(&self, x: &Tensor, t: &[u32]) -> nn::Result<Tensor> {
        self.predict_with_labels(x, t, None)
    }

    /// Like `predict`, for the classes `labels` (`None`: the null class).
    pub fn predict_with_labels(&self, x: &Tensor, t: &[u32], labels: Option<&[u32]>) -> nn::Result<Tensor> {
        autograd::no_grad(|| Ok(self.forward_with_labels(&Var::constant(x.clone()), t, labels, &mut Ctx::eval())?.tensor().clone()))
    }
}
