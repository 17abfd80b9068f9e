//! The `ddpm` command line: `info`, `train`, `sample`, `loss`, `score`, `bench`.
//! The `flowers` example reuses `TrainArgs` with its own defaults.

use crate::bench;
use crate::config::{Preset, UNetConfig};
use crate::data::{CorruptPolicy, ImageFolder};
use crate::diffusion::{initial_noise, sample_ddim, sample_ddpm, Schedule};
use crate::evaluate::heldout_loss;
use crate::images::{save_grid, save_strip};
use crate::model::{load_for_inference, Model};
use crate::train::{to_tensor_error, RunLength, TrainOptions, Trainer};
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use nn::Precision;
use std::path::{Path, PathBuf};
use tensor::{Device, Rng, Tensor};

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
        #[arg(long, default_value = "tiny")]
        preset: Preset,
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Train (or resume training) a model on a folder of images.
    Train(TrainArgs),
    /// Sample images from a checkpoint into a PNG grid.
    Sample(SampleArgs),
    /// The held-out denoising loss of a checkpoint on a folder of images.
    Loss {
        #[arg(long)]
        checkpoint: PathBuf,
        /// Needed only for a bare PyTorch state_dict.
        #[arg(long)]
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
        #[arg(long, default_value = "tiny")]
        preset: Preset,
        #[arg(long, default_value_t = 32)]
        batch: usize,
        #[arg(long, default_value_t = 5)]
        steps: usize,
        #[arg(long, value_enum, default_value = "auto")]
        device: DeviceChoice,
        /// Activations in f32, or bf16/f16 mixed precision (CUDA only).
        #[arg(long, default_value = "f32")]
        precision: Precision,
        /// Let f32 matrix products and convolutions use TF32 tensor cores (CUDA only).
        #[arg(long)]
        tf32: bool,
        #[arg(long)]
        json: bool,
    },
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
    #[arg(long)]
    pub preset: Option<Preset>,
    /// Length of the run in epochs.
    #[arg(long, conflicts_with = "steps")]
    pub epochs: Option<u64>,
    /// Length of the run in optimizer steps.
    #[arg(long)]
    pub steps: Option<u64>,
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
    /// Run directory: loss log, sample grids, checkpoints.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue from the run directory's newest checkpoint.
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
    #[arg(long, default_value = "f32")]
    pub precision: Precision,
    /// Let f32 matrix products and convolutions use TF32 tensor cores (CUDA
    /// only): about 10 mantissa bits in the products, like PyTorch's default
    /// for cuDNN convolutions; faster on Ampere and later GPUs.
    #[arg(long)]
    pub tf32: bool,
}

#[derive(Args, Clone, Debug)]
pub struct SampleArgs {
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Needed only for a bare PyTorch state_dict.
    #[arg(long)]
    pub preset: Option<Preset>,
    #[arg(long, value_enum, default_value = "ddim")]
    pub sampler: Sampler,
    /// DDIM steps (DDPM always runs all 1000).
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    #[arg(long, default_value_t = 16)]
    pub n: usize,
    #[arg(long, default_value = "samples.png")]
    pub out: PathBuf,
    /// Start from this noise (safetensors tensor `noise`, shape [N,3,S,S]).
    #[arg(long)]
    pub noise: Option<PathBuf>,
    /// Also write the samples (tensor `samples`, values in [-1, 1]).
    #[arg(long)]
    pub save_tensor: Option<PathBuf>,
    /// Also write a strip showing the first samples being denoised step by step.
    #[arg(long)]
    pub strip: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Sampler {
    Ddpm,
    Ddim,
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Info { preset, json } => info(preset, json),
        Command::Train(args) => {
            let data = match (&args.data, args.resume) {
                (Some(d), _) => d.clone(),
                (None, true) => data_of_run(args.out.as_deref())?,
                (None, false) => bail!("--data DIR is required (a folder of training images)"),
            };
            let out = args.out.clone().context("--out DIR is required (the run directory)")?;
            let preset = args.preset.unwrap_or(Preset::Tiny);
            let length = match (args.epochs, args.steps) {
                (_, Some(s)) => RunLength::Steps(s),
                (Some(e), None) => RunLength::Epochs(e),
                (None, None) => RunLength::Epochs(100),
            };
            train(&args, data, preset, length, out)
        }
        Command::Sample(args) => sample(&args),
        Command::Score(args) => crate::score::run(&args),
        Command::Loss { checkpoint, preset, data, device, json } => {
            let device = device.resolve()?;
            let (model, weights) = load_for_inference(&checkpoint, preset, &device)?;
            let folder = ImageFolder::open(&data, model.config().image_size, CorruptPolicy::Warn)?;
            let loss = heldout_loss(&model, &folder, &device)?;
            if json {
                println!("{}", serde_json::json!({ "loss": loss, "images": folder.len(), "weights": format!("{weights:?}").to_lowercase() }));
            } else {
                println!("held-out loss {loss:.6} over {} images of {} ({weights:?} weights)", folder.len(), data.display());
            }
            Ok(())
        }
        Command::Bench { preset, batch, steps, device, precision, tf32, json } => {
            let device = device.resolve()?;
            let r = bench::run(preset, batch, steps.max(1), &device, precision, tf32)?;
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

/// The data folder recorded in a run directory's newest checkpoint.
fn data_of_run(out: Option<&Path>) -> Result<PathBuf> {
    let out = out.context("--resume needs --out DIR (the run directory)")?;
    let ck = nn::load_checkpoint(out.join("last.safetensors"))?;
    Ok(PathBuf::from(ck.meta("data").context("the checkpoint does not record its data folder: pass --data")?))
}

/// Runs (or resumes) training with the given choices and reports the end.
pub fn train(args: &TrainArgs, data: PathBuf, preset: Preset, length: RunLength, out: PathBuf) -> Result<()> {
    let device = args.device.resolve()?;
    if args.tf32 {
        match &device {
            Device::Cuda(gpu) => gpu.set_tf32(true),
            Device::Cpu => eprintln!("note: --tf32 applies to CUDA devices only; the CPU computes in full f32"),
        }
    }
    let opts = TrainOptions {
        data,
        preset,
        length,
        batch: args.batch,
        lr: args.lr,
        seed: args.seed,
        device,
        out,
        resume: args.resume,
        sample_every_epochs: args.sample_every,
        stop_at: args.stop_at,
        ema_decay: 0.999,
        on_corrupt: if args.strict_images { CorruptPolicy::Fail } else { CorruptPolicy::Warn },
        preview_steps: args.preview_steps,
        precision: args.precision,
    };
    let out = opts.out.clone();
    let mut trainer = Trainer::new(opts)?;
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
        println!("done: {} steps, last loss {:?}; checkpoint {}", summary.step, summary.last_loss, summary.checkpoint.display());
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
    let device = args.device.resolve()?;
    let (model, weights) = load_for_inference(&args.checkpoint, args.preset, &device)?;
    let s = model.config().image_size;
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
    let schedule = Schedule::default();
    let total = match args.sampler {
        Sampler::Ddpm => schedule.steps(),
        Sampler::Ddim => crate::diffusion::ddim_steps(schedule.steps(), args.steps).len(),
    };
    eprintln!("sampling {n} images with {:?} ({total} steps, {weights:?} weights)", args.sampler);
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
    let mut denoise = |x: &Tensor, t: &[u32]| model.unet.predict(x, t).map_err(to_tensor_error);
    let samples = match args.sampler {
        Sampler::Ddpm => sample_ddpm(&schedule, noise, &mut denoise, &mut rng, &mut on_step)?,
        Sampler::Ddim => sample_ddim(&schedule, noise, args.steps, &mut denoise, &mut on_step)?,
    };
    bar.finish_and_clear();
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
