//! The `ddpm` command line: `info`, `train`, `sample`, `loss`, `score`, `bench`.
//! The `flowers` example reuses `TrainArgs` with its own defaults.

use crate::bench;
use crate::config::{Preset, UNetConfig};
use crate::data::{CorruptPolicy, ImageFolder};
use crate::diffusion::{initial_noise, Schedule};
use crate::guidance::Labels;
use crate::recipe::{RecipeArgs, RecipeName};
pub use crate::sampler::Sampler;
use crate::sampler::{generate, SampleSpec};
use crate::images::{save_grid, save_strip};
use crate::model::{load_for_inference, Model};
use crate::train::{RunLength, TrainOptions, Trainer};
use crate::validate;
use anyhow::{bail, Context, Result};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};
use nn::Precision;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tensor::{Device, Rng, Tensor};

/// `--preset`, listing its values in `--help` and in the error for a bad one.
fn preset_parser() -> impl TypedValueParser<Value = Preset> {
    PossibleValuesParser::new(Preset::ALL.map(Preset::name)).map(|name| name.parse::<Preset>().expect("one of Preset::ALL"))
}

/// `--precision`, listing its values likewise (any letter case).
fn precision_parser() -> impl TypedValueParser<Value = Precision> {
    PossibleValuesParser::new(Precision::ALL.map(Precision::name)).map(|name| name.parse::<Precision>().expect("one of Precision::ALL"))
}

/// Defaults of `train` where a flag is left out (and a resumed run does not
/// record its own value).
pub const DEFAULT_BATCH: usize = 32;
pub const DEFAULT_LR: f64 = 1e-4;
pub const DEFAULT_SEED: u64 = 0;
pub const DEFAULT_EPOCHS: u64 = 100;
pub const DEFAULT_PRESET: Preset = Preset::Tiny;

const TRAIN_EXAMPLES: &str = "Examples:
  ddpm train --data flowers102/train --out runs/tiny --steps 2000
  ddpm train --data flowers102/train --out runs/f64 --preset flowers64 --device cuda --precision bf16
  ddpm train --out runs/tiny --resume                 continue after Ctrl-C, SIGTERM or --stop-at
  ddpm train --out runs/tiny --resume --steps 4000    extend a finished run";

const SAMPLE_EXAMPLES: &str = "Examples:
  ddpm sample --checkpoint runs/tiny/last.safetensors --out grid.png
  ddpm sample --checkpoint runs/tiny/last.safetensors --sampler ddpm --n 4 --strip strip.png";

#[derive(Parser)]
#[command(name = "ddpm", about = "Train a diffusion U-Net on flower photos and sample from it", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Print the architecture of a preset and its parameter counts.
    Info {
        #[arg(long, default_value = "tiny", value_parser = preset_parser())]
        preset: Preset,
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Train (or resume training) a model on a folder of images.
    #[command(after_help = TRAIN_EXAMPLES)]
    Train(TrainArgs),
    /// Sample images from a checkpoint into a PNG grid.
    #[command(after_help = SAMPLE_EXAMPLES)]
    Sample(SampleArgs),
    /// The held-out denoising loss of a checkpoint on a folder of images.
    Loss {
        #[arg(long)]
        checkpoint: PathBuf,
        /// Needed only for a bare PyTorch state_dict.
        #[arg(long, value_parser = preset_parser())]
        preset: Option<Preset>,
        #[arg(long)]
        data: PathBuf,
        #[arg(long, value_enum, default_value = "auto")]
        device: DeviceChoice,
        #[arg(long)]
        json: bool,
    },
    /// Fréchet distance of images (a folder, or samples of a checkpoint) to real flowers.
    Score(crate::score::ScoreArgs),
    /// Training and sampling throughput.
    Bench {
        #[arg(long, default_value = "tiny", value_parser = preset_parser())]
        preset: Preset,
        #[arg(long, default_value_t = 32)]
        batch: usize,
        #[arg(long, default_value_t = 5)]
        steps: usize,
        #[arg(long, value_enum, default_value = "auto")]
        device: DeviceChoice,
        /// Activations in f32, or bf16/f16 mixed precision (CUDA only).
        #[arg(long, default_value = "f32", value_parser = precision_parser(), ignore_case = true)]
        precision: Precision,
        /// Let f32 matrix products and convolutions use TF32 tensor cores (CUDA only).
        #[arg(long)]
        tf32: bool,
        #[arg(long)]
        json: bool,
    },
    /// Check the CUDA setup: driver, libraries, GPUs, a kernel and a GEMM.
    Doctor,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceChoice {
    Cpu,
    Cuda,
    Auto,
}

impl DeviceChoice {
    /// The device to run on. `auto` falls back to the CPU and says why.
    pub fn resolve(self) -> Result<Device> {
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Cuda => Device::cuda(0).context("--device cuda"),
            DeviceChoice::Auto => {
                let (device, why) = Device::cuda_or_cpu();
                if let Some(why) = why {
                    eprintln!("no usable CUDA GPU ({why}); running on the CPU");
                }
                Ok(device)
            }
        }
    }
}

#[derive(Args, Clone, Debug)]
pub struct TrainArgs {
    /// Folder of training images (searched recursively; jpg and png).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Model size; `ddpm info --preset NAME` shows each. [default: tiny; on
    /// --resume, the run's own]
    #[arg(long, value_parser = preset_parser())]
    pub preset: Option<Preset>,
    /// Length of the run in epochs (passes over the data). [default: 100
    /// epochs; on --resume, the run's own length]
    #[arg(long, conflicts_with = "steps")]
    pub epochs: Option<u64>,
    /// Length of the run in optimizer steps (on --resume, a larger value
    /// extends the run).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Images per optimizer step. [default: 32; on --resume, the run's own]
    #[arg(long)]
    pub batch: Option<usize>,
    /// Peak learning rate of the cosine schedule. [default: 1e-4; on
    /// --resume, the run's own]
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f64>,
    /// Seed of the weights and of every random draw. [default: 0; on
    /// --resume, the run's own]
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
    /// Run directory: loss log, sample grids, checkpoints.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue from the run directory's newest checkpoint. Without it, a
    /// directory that already holds a run is refused, never overwritten.
    #[arg(long)]
    pub resume: bool,
    /// Sample a preview grid and keep a checkpoint every this many epochs.
    #[arg(long, default_value_t = 5)]
    pub sample_every: u64,
    /// Stop with a checkpoint after this step, as if interrupted (resume later).
    #[arg(long)]
    pub stop_at: Option<u64>,
    /// DDIM steps for the preview grids.
    #[arg(long, default_value_t = 50)]
    pub preview_steps: usize,
    /// Stop at the first unreadable image instead of skipping it with a warning.
    #[arg(long)]
    pub strict_images: bool,
    /// Activations in f32, or bf16/f16 mixed precision over f32 weights
    /// (CUDA only; f16 adds dynamic loss scaling).
    #[arg(long, default_value = "f32", value_parser = precision_parser(), ignore_case = true)]
    pub precision: Precision,
    /// Let f32 matrix products and convolutions use TF32 tensor cores (CUDA
    /// only): about 10 mantissa bits in the products, like PyTorch's default
    /// for cuDNN convolutions; faster on Ampere and later GPUs.
    #[arg(long)]
    pub tf32: bool,
    /// When stderr is not a terminal (a log file), print a progress line
    /// this often, in seconds.
    #[arg(long, default_value_t = crate::train::PROGRESS_EVERY.as_secs_f64(), allow_negative_numbers = true)]
    pub progress_every: f64,
    #[command(flatten)]
    pub recipe: RecipeArgs,
}

impl TrainArgs {
    /// `--batch`, or its default.
    pub fn batch(&self) -> usize {
        self.batch.unwrap_or(DEFAULT_BATCH)
    }
    /// `--lr`, or its default.
    pub fn lr(&self) -> f64 {
        self.lr.unwrap_or(DEFAULT_LR)
    }
    /// `--seed`, or its default.
    pub fn seed(&self) -> u64 {
        self.seed.unwrap_or(DEFAULT_SEED)
    }

    /// Every number checked before any work, each error naming its flag.
    pub fn validate(&self) -> Result<()> {
        validate::at_least_one("--batch", self.batch() as u64)?;
        validate::learning_rate("--lr", self.lr())?;
        validate::at_least_one("--sample-every", self.sample_every)?;
        validate::at_least_one("--preview-steps", self.preview_steps as u64)?;
        for (flag, value) in [("--steps", self.steps), ("--epochs", self.epochs), ("--stop-at", self.stop_at)] {
            if let Some(v) = value {
                validate::at_least_one(flag, v)?;
            }
        }
        if !(self.progress_every.is_finite() && self.progress_every >= 0.0) {
            bail!("--progress-every must be a number of seconds, at least 0, got {}", self.progress_every);
        }
        if self.tf32 && self.device == DeviceChoice::Cpu {
            validate::tf32_on(&Device::Cpu)?;
        }
        Ok(())
    }

    /// On `--resume`, takes each choice left out (data, preset, length,
    /// batch, learning rate, seed) from the run's newest checkpoint, so that
    /// only choices actually given are compared with the run's (the trainer
    /// refuses different ones). Does nothing without `--resume`.
    pub fn take_choices_of_resumed_run(&mut self) -> Result<()> {
        if !self.resume {
            return Ok(());
        }
        let out = self.out.clone().context("--resume needs --out DIR (the run directory)")?;
        let last = out.join("last.safetensors");
        if !last.exists() {
            bail!("--resume: {} does not exist (no earlier run in {})", last.display(), out.display());
        }
        self.fill_from_run(&nn::load_checkpoint(&last)?)
    }

    fn fill_from_run(&mut self, ck: &nn::Checkpoint) -> Result<()> {
        let meta = |k: &str| ck.meta(k).with_context(|| format!("the run's checkpoint lacks metadata `{k}`"));
        if self.batch.is_none() {
            self.batch = Some(meta("batch")?.parse().context("bad `batch` metadata")?);
        }
        if self.lr.is_none() {
            self.lr = Some(meta("lr")?.parse().context("bad `lr` metadata")?);
        }
        if self.seed.is_none() {
            self.seed = Some(meta("seed")?.parse().context("bad `seed` metadata")?);
        }
        if self.data.is_none() {
            self.data = Some(PathBuf::from(ck.meta("data").context("the checkpoint does not record its data folder: pass --data")?));
        }
        if self.preset.is_none() {
            let config = crate::model::checkpoint_config(ck)?.context("the run's checkpoint has no config metadata")?;
            self.preset = Some(config.name.parse().map_err(anyhow::Error::msg)?);
        }
        if self.epochs.is_none() && self.steps.is_none() {
            self.steps = Some(ck.meta_u64("total_steps")?.context("the run's checkpoint lacks metadata `total_steps`")?);
        }
        Ok(())
    }
}

#[derive(Args, Clone, Debug)]
pub struct SampleArgs {
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Needed only for a bare PyTorch state_dict.
    #[arg(long, value_parser = preset_parser())]
    pub preset: Option<Preset>,
    /// ddim (default for eps and v models), ddpm, dpm++ (DPM-Solver++(2M));
    /// heun (default for flow models) or euler.
    #[arg(long, value_enum)]
    pub sampler: Option<Sampler>,
    /// Sampling steps (DDPM always runs all 1000).
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Images to sample (ignored with --noise, whose first dimension counts).
    #[arg(long, default_value_t = 16)]
    pub n: usize,
    /// The grid, a PNG file.
    #[arg(long, default_value = "samples.png")]
    pub out: PathBuf,
    /// Start from this noise (safetensors tensor `noise`, shape [N,3,S,S]).
    #[arg(long)]
    pub noise: Option<PathBuf>,
    /// Also write the samples (tensor `samples`, values in [-1, 1]).
    #[arg(long)]
    pub save_tensor: Option<PathBuf>,
    /// Also write a strip (PNG) showing the first samples being denoised step by step.
    #[arg(long)]
    pub strip: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
    /// Class-conditional checkpoints: a class (its folder name, e.g. 5, or
    /// its label index as #4), `random` (one per image), or `rows` (one class
    /// per grid row). Without it they sample unconditionally.
    #[arg(long)]
    pub class: Option<String>,
    /// Classifier-free guidance weight: 1 is the conditional model as
    /// trained, 0 the unconditional one, above 1 stronger class features.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub guidance: f64,
}

impl SampleArgs {
    /// Every number and file name checked before any work.
    pub fn validate(&self) -> Result<()> {
        validate::at_least_one("--steps", self.steps as u64)?;
        validate::guidance("--guidance", self.guidance)?;
        if self.noise.is_none() {
            validate::at_least_one("--n", self.n as u64)?;
        }
        validate::png_path("--out", &self.out)?;
        if let Some(strip) = &self.strip {
            validate::png_path("--strip", strip)?;
        }
        Ok(())
    }
}

/// "1 image", "2 images".
pub fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// An error as one line per distinct cause. Many of petal's errors already
/// quote their source in their own message; anyhow's default report would
/// print that cause a second time.
pub fn error_report(err: &anyhow::Error) -> String {
    let mut lines: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !lines.iter().any(|l| l.contains(&text)) {
            lines.push(text);
        }
    }
    let mut report = format!("error: {}", lines[0]);
    for cause in &lines[1..] {
        report.push_str(&format!("\n  caused by: {cause}"));
    }
    report
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Info { preset, json } => info(preset, json),
        Command::Doctor => crate::doctor::run(),
        Command::Train(mut args) => {
            args.validate()?;
            let out = args.out.clone().context("--out DIR is required (the run directory)")?;
            args.take_choices_of_resumed_run()?;
            let data = args.data.clone().context("--data DIR is required (a folder of training images)")?;
            let preset = match args.preset {
                Some(p) => p,
                None => {
                    eprintln!("using --preset {DEFAULT_PRESET} (the default; see `ddpm info --preset NAME` for the others)");
                    DEFAULT_PRESET
                }
            };
            let length = match (args.epochs, args.steps) {
                (_, Some(s)) => RunLength::Steps(s),
                (Some(e), None) => RunLength::Epochs(e),
                (None, None) => RunLength::Epochs(DEFAULT_EPOCHS),
            };
            train(&args, data, preset, length, out, RecipeName::Seed)
        }
        Command::Sample(args) => sample(&args),
        Command::Score(args) => crate::score::run(&args),
        Command::Loss { checkpoint, preset, data, device, json } => {
            let device = device.resolve()?;
            let (model, weights) = load_for_inference(&checkpoint, preset, &device)?;
            let folder = ImageFolder::open(&data, model.config().image_size, CorruptPolicy::Warn)?;
            let loss = heldout_loss_with_progress(&model, &folder, &device)?;
            if !loss.is_finite() {
                bail!("the held-out loss of {} is {loss}: its weights produce non-finite predictions", checkpoint.display());
            }
            if json {
                println!("{}", serde_json::json!({ "loss": loss, "images": folder.len(), "weights": weights.name(), "objective": model.objective.name() }));
            } else {
                println!(
                    "held-out loss {loss:.6} over {} of {} ({} weights, {} objective)",
                    plural(folder.len(), "image"),
                    data.display(),
                    weights.name().to_uppercase(),
                    model.objective
                );
            }
            Ok(())
        }
        Command::Bench { preset, batch, steps, device, precision, tf32, json } => {
            validate::at_least_one("--batch", batch as u64)?;
            validate::at_least_one("--steps", steps as u64)?;
            if tf32 && device == DeviceChoice::Cpu {
                validate::tf32_on(&Device::Cpu)?;
            }
            let device = device.resolve()?;
            validate::fits_in_memory("--batch", batch, validate::training_bytes(&preset.config(), batch, precision), &device, Some(precision))?;
            let r = bench::run(preset, batch, steps, &device, precision, tf32)?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "{} on {} ({}), batch {}: train {:.3} s/step ({:.2} images/s), sample forward {:.3} s per 16 ({:.2} images/s), peak tensor memory {:.1} MiB",
                    r.preset,
                    r.device,
                    r.precision,
                    r.batch,
                    r.train_step_s,
                    r.train_images_per_s,
                    r.sample_forward_s,
                    r.sample_images_per_s,
                    r.peak_train_bytes as f64 / (1 << 20) as f64
                );
                if let Some(rss) = r.peak_resident_bytes {
                    let conv = r.cpu_conv.as_ref().map_or(String::new(), |path| format!(", 3x3 convolutions by {path}"));
                    println!("peak resident memory of the process {:.2} GiB{conv}", rss as f64 / (1u64 << 30) as f64);
                }
                if let Some(m) = &r.gpu_memory {
                    println!(
                        "GPU memory: peak in use {:.1} MiB, reserved {:.1} MiB, driver allocations in timed steps {}{}",
                        m.peak_in_use_bytes as f64 / (1 << 20) as f64,
                        m.reserved_bytes as f64 / (1 << 20) as f64,
                        m.driver_allocs_in_timed_steps,
                        if r.tf32 { " (TF32 on)" } else { "" }
                    );
                }
            }
            Ok(())
        }
    }
}

/// The held-out loss with a progress bar (it takes a while on the CPU).
fn heldout_loss_with_progress(model: &Model, folder: &ImageFolder, device: &Device) -> Result<f64> {
    let batches = crate::evaluate::EVAL_STEPS.len() * folder.len().div_ceil(crate::evaluate::EVAL_BATCH);
    eprintln!("held-out loss of {} at {} noise levels", plural(folder.len(), "image"), crate::evaluate::EVAL_STEPS.len());
    let bar = indicatif::ProgressBar::new(batches as u64);
    bar.set_style(indicatif::ProgressStyle::with_template("[{bar:30}] {pos}/{len} batches, ETA {eta}").expect("valid template"));
    let loss = crate::evaluate::heldout_loss_reporting(model, folder, device, &mut |_| bar.inc(1))?;
    bar.finish_and_clear();
    Ok(loss)
}

/// Runs (or resumes) training with the given choices and reports the end.
/// `default_recipe` is the recipe used when `--recipe` is not given.
pub fn train(args: &TrainArgs, data: PathBuf, preset: Preset, length: RunLength, out: PathBuf, default_recipe: RecipeName) -> Result<()> {
    args.validate()?;
    let device = args.device.resolve()?;
    if args.tf32 {
        match &device {
            Device::Cuda(gpu) => gpu.set_tf32(true)?,
            Device::Cpu => eprintln!("note: --tf32 applies to CUDA devices only; the CPU computes in full f32"),
        }
    }
    let opts = TrainOptions {
        data,
        preset,
        length,
        batch: args.batch(),
        lr: args.lr(),
        seed: args.seed(),
        device,
        out,
        resume: args.resume,
        sample_every_epochs: args.sample_every,
        stop_at: args.stop_at,
        ema_decay: 0.999,
        on_corrupt: if args.strict_images { CorruptPolicy::Fail } else { CorruptPolicy::Warn },
        preview_steps: args.preview_steps,
        precision: args.precision,
        recipe: args.recipe.resolve(default_recipe)?,
    };
    let out = opts.out.clone();
    let mut trainer = Trainer::new(opts)?;
    trainer.set_progress_every(Duration::from_secs_f64(args.progress_every));
    println!(
        "training on {} images, {} steps ({} per epoch); run directory {}",
        trainer.dataset_len(),
        trainer.total_steps(),
        trainer.steps_per_epoch(),
        out.display()
    );
    let summary = trainer.run()?;
    if summary.interrupted {
        println!("stopped at step {} of {}; checkpoint {} (continue with --resume)", summary.step, summary.total_steps, summary.checkpoint.display());
    } else {
        let last_loss = summary.last_loss.map_or("none".to_string(), |l| format!("{l:.4}"));
        println!("done: {} steps, last loss {last_loss}; checkpoint {}", summary.step, summary.checkpoint.display());
    }
    Ok(())
}

fn info(preset: Preset, json: bool) -> Result<()> {
    let config = preset.config();
    let model = Model::new(&config, &Device::Cpu, 0)?;
    // Parts: the first one or two name components (e.g. `down.1`, `time_mlp`).
    let mut parts: Vec<(String, usize)> = Vec::new();
    for (name, var) in model.store.named() {
        let pieces: Vec<&str> = name.split('.').collect();
        let part = match pieces[0] {
            "down" | "up" | "middle" if pieces.len() > 2 => format!("{}.{}", pieces[0], pieces[1]),
            other => other.to_string(),
        };
        match parts.iter_mut().find(|(p, _)| *p == part) {
            Some((_, n)) => *n += var.tensor().elem_count(),
            None => parts.push((part, var.tensor().elem_count())),
        }
    }
    let order = |p: &str| -> (usize, usize) {
        let idx = p.split('.').nth(1).and_then(|i| i.parse().ok()).unwrap_or(0);
        let group = ["time_mlp", "conv_in", "down", "middle", "up", "norm_out", "conv_out"].iter().position(|g| p.starts_with(g)).unwrap_or(9);
        (group, idx)
    };
    parts.sort_by_key(|(p, _)| order(p));
    let total = model.store.num_params();
    if json {
        let parts_json: serde_json::Map<String, serde_json::Value> = parts.iter().map(|(p, n)| (p.clone(), (*n).into())).collect();
        println!("{}", serde_json::json!({ "preset": preset.name(), "config": config, "params": total, "parts": parts_json }));
        return Ok(());
    }
    print_architecture(&config);
    println!("\nparameters by part:");
    for (p, n) in &parts {
        println!("  {p:<10} {n:>12}");
    }
    println!("  {:<10} {:>12}", "total", total);
    Ok(())
}

fn print_architecture(c: &UNetConfig) {
    println!(
        "preset {}: {}x{} images, base channels {}, multipliers {:?}, {} blocks per level, {} norm groups, dropout {}",
        c.name, c.image_size, c.image_size, c.base_channels, c.channel_mults, c.blocks_per_level, c.groups, c.dropout
    );
    println!("time embedding: sinusoidal {} -> MLP -> {}", c.base_channels, c.time_dim());
    for i in 0..c.levels() {
        let res = c.image_size >> i;
        println!("  down {i}: {res}x{res}, {} channels, {} blocks", c.channels(i), c.blocks_per_level);
    }
    let deepest = c.image_size >> c.levels();
    println!("  middle: {deepest}x{deepest}, {} channels, 2 blocks", c.channels(c.levels() - 1));
    for (k, i) in (0..c.levels()).rev().enumerate() {
        let res = c.image_size >> i;
        println!("  up {k}: {res}x{res}, {} channels, {} blocks", c.channels(i), c.blocks_per_level);
    }
}

/// Reads tensor `name` from a safetensors file as f32.
fn read_tensor(path: &Path, name: &str, device: &Device) -> Result<Tensor> {
    let ck = nn::load_checkpoint(path)?;
    let t = ck.model.get(name).with_context(|| format!("{} holds no tensor `{name}`", path.display()))?;
    Ok(t.to_dtype(tensor::DType::F32)?.to_device(device)?)
}

fn sample(args: &SampleArgs) -> Result<()> {
    args.validate()?;
    let device = args.device.resolve()?;
    let (model, weights) = load_for_inference(&args.checkpoint, args.preset, &device)?;
    let s = model.config().image_size;
    if args.noise.is_none() {
        validate::fits_in_memory("--n", args.n, validate::sampling_bytes(model.config(), args.n), &device, None)?;
    }
    let mut rng = Rng::new(args.seed);
    let noise = match &args.noise {
        Some(path) => {
            let t = read_tensor(path, "noise", &device)?;
            if t.dims().len() != 4 || t.dims()[1..] != [3, s, s] {
                bail!("{}: noise has shape {:?}, expected [N, 3, {s}, {s}]", path.display(), t.dims());
            }
            t
        }
        None => initial_noise(args.n, s, &device, &mut rng)?,
    };
    let n = noise.dims()[0];
    if n == 0 {
        bail!("{}: the noise holds no images", args.noise.as_deref().unwrap_or(Path::new("--noise")).display());
    }
    let sampler = args.sampler.unwrap_or(Sampler::default_for(model.objective));
    let labels = Labels::from_flag(args.class.as_deref(), &model.class_names, n, &mut rng)?;
    let spec = SampleSpec { sampler, steps: args.steps, labels, guidance: args.guidance };
    let total = sampler.step_count(Schedule::default().steps(), args.steps);
    // The seed's eps objective goes unsaid.
    let objective = match model.objective {
        crate::objective::Objective::Eps => String::new(),
        other => format!("{other} objective, "),
    };
    eprintln!("sampling {} with {sampler} ({total} steps, {objective}{} weights)", plural(n, "image"), weights.name().to_uppercase());
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(indicatif::ProgressStyle::with_template("[{bar:30}] {pos}/{len} steps, ETA {eta}").expect("valid template"));
    // The strip keeps up to 4 samples at about 10 evenly spaced moments.
    let strip_rows = n.min(4);
    let every = (total / 10).max(1);
    let mut frames: Vec<Vec<f32>> = Vec::new();
    let mut done = 0usize;
    let mut on_step = |_t: usize, x: &Tensor| {
        done += 1;
        bar.inc(1);
        if args.strip.is_some() && (done % every == 0 || done == total) {
            if let Ok(v) = x.narrow(0, 0, strip_rows).and_then(|v| v.to_vec::<f32>()) {
                frames.push(v);
            }
        }
    };
    let samples = generate(&model, noise, &spec, &mut rng, &mut on_step)?;
    bar.finish_and_clear();
    if samples.has_non_finite()? {
        bail!("the samples of {} are not finite numbers: its weights are broken", args.checkpoint.display());
    }
    let cols = (n as f64).sqrt().ceil() as usize;
    save_grid(&args.out, &samples.to_vec::<f32>()?, n, s, cols)?;
    println!("wrote {}", args.out.display());
    if let Some(path) = &args.save_tensor {
        let mut ck = nn::Checkpoint::default();
        ck.model.insert("samples".into(), samples.to_device(&Device::Cpu)?);
        nn::save_checkpoint(path, &ck)?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &args.strip {
        save_strip(path, &frames, strip_rows, s)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_report_prints_each_cause_once() {
        #[derive(Debug)]
        struct Source;
        impl std::fmt::Display for Source {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("disk full")
            }
        }
        impl std::error::Error for Source {}
        // A context that already quotes its source, and one that does not.
        let err = anyhow::Error::new(Source).context("cannot write a.png: disk full").context("saving the grid");
        assert_eq!(error_report(&err), "error: saving the grid\n  caused by: cannot write a.png: disk full");
    }

    #[test]
    fn counts_read_as_words() {
        assert_eq!(plural(1, "image"), "1 image");
        assert_eq!(plural(0, "image"), "0 images");
        assert_eq!(plural(16, "image"), "16 images");
    }
}
