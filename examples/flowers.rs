//! Train the diffusion model on flowers and watch them appear.
//!
//! `cargo run -p ddpm --release --example flowers` picks sensible defaults
//! and says what it chose and why:
//! - on a CUDA GPU, the seed recipe: the `flowers64` preset for 100 epochs
//!   (the seed's first run);
//! - on a CPU, the `cpu-hour` recipe (v prediction with min-SNR weighting,
//!   class conditioning, warm-ups; see `ddpm::recipe`) on the `cpu32` preset
//!   for about an hour. At equal time it beats the seed recipe by the
//!   score (BENCHMARKS.md, "An hour on the CPU").
//!
//! `--recipe seed` gives the seed recipe on a CPU too (the `tiny` preset for
//! about an hour). Every `ddpm train` flag overrides these (`-- --help`).
//!
//! Images come from `--data DIR`, else `$PETAL_DATA`, else the workspace's
//! `../shared/data/flowers102/train`, else the download cache, which is
//! filled from the official Oxford Flowers 102 archive when empty.

use anyhow::Result;
use clap::{Parser, ValueEnum};
use ddpm::cli::{DeviceChoice, TrainArgs};
use ddpm::config::Preset;
use ddpm::recipe::RecipeName;
use ddpm::train::RunLength;
use std::path::PathBuf;

/// Steps of the tiny preset that fill about an hour on a 2-core CPU
/// (0.34 s per batch-32 step there; see BENCHMARKS.md).
const CPU_STEPS: u64 = 10_000;
/// Steps of the cpu32 preset for about an hour on the same CPU: a cpu32 step
/// costs about what a tiny one does (its fourth level works on 4x4 and 2x2
/// maps, and it has no dropout), and the class embedding adds nothing
/// measurable.
const CPU_HOUR_STEPS: u64 = 10_000;
/// Peak learning rate of the cpu-hour recipe on a CPU: higher than the
/// seed's 1e-4, which its 500 warm-up steps make safe (a choice, not yet a
/// measured optimum).
const CPU_HOUR_LR: f64 = 3e-4;

#[derive(Parser)]
#[command(name = "flowers", about = "Train the diffusion U-Net on flower photos with sensible defaults")]
struct Flowers {
    #[command(flatten)]
    train: TrainArgs,
}

fn find_data() -> Result<(PathBuf, &'static str)> {
    if let Ok(dir) = std::env::var("PETAL_DATA") {
        return Ok((dir.into(), "from $PETAL_DATA"));
    }
    let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/flowers102/train");
    if shared.is_dir() {
        return Ok((shared, "the Oxford Flowers 102 copy beside this workspace"));
    }
    Ok((ddpm::download::ensure_flowers102(&ddpm::download::cache_dir())?, "Oxford Flowers 102 in the download cache"))
}

// Large buffers on 2 MiB pages (see `tensor::cpu::HugePageHeap`).
#[global_allocator]
static HEAP: tensor::cpu::HugePageHeap = tensor::cpu::HugePageHeap;

fn main() -> Result<()> {
    // Training frees and reallocates the same large buffers every step.
    tensor::cpu::keep_freed_memory();
    // The kernels start on this work's own thread, with no hand-off to the pool.
    tensor::cpu::run_on_pool(train)
}

fn train() -> Result<()> {
    let mut args = Flowers::parse().train;
    args.validate()?;
    // A resumed run keeps its own choices where none are given (with the
    // default run directory, those of the default recipe).
    if args.out.is_some() {
        args.take_choices_of_resumed_run()?;
    }
    let device = args.device.resolve()?;
    let on_gpu = device.is_cuda();
    let default_recipe = if on_gpu { RecipeName::Seed } else { RecipeName::CpuHour };
    let recipe = args.recipe.recipe.unwrap_or(default_recipe);
    let cpu_hour = recipe == RecipeName::CpuHour;
    // Resolve once; the trainer gets the same device again.
    args.device = if on_gpu { DeviceChoice::Cuda } else { DeviceChoice::Cpu };

    let (preset, why_preset) = match args.preset {
        Some(p) => (p, "as asked"),
        None if on_gpu => (Preset::Flowers64, "a CUDA GPU is available: the seed's first run"),
        None if cpu_hour => (Preset::Cpu32, "no GPU, the cpu-hour recipe: the CPU-sized preset"),
        None => (Preset::Tiny, "no GPU, the seed recipe: the small model that trains on a CPU in about an hour"),
    };
    if cpu_hour && !on_gpu && args.lr.is_none() {
        args.lr = Some(CPU_HOUR_LR);
    }
    let (length, why_length) = match (args.epochs, args.steps) {
        (_, Some(s)) => (RunLength::Steps(s), "as asked".to_string()),
        (Some(e), None) => (RunLength::Epochs(e), "as asked".to_string()),
        (None, None) if on_gpu => (RunLength::Epochs(100), "the seed recipe's 100 epochs".to_string()),
        (None, None) if cpu_hour => (RunLength::Steps(CPU_HOUR_STEPS), format!("{CPU_HOUR_STEPS} steps of batch {} is about an hour on 2 cores", args.batch())),
        (None, None) => (RunLength::Steps(CPU_STEPS), format!("{CPU_STEPS} steps of batch {} is about an hour on 2 cores", args.batch())),
    };
    let (data, why_data) = match args.data.clone() {
        Some(d) => (d, "as asked"),
        None => find_data()?,
    };
    // Class conditioning needs one folder per class; a flat folder of
    // images (your own, or a download whose labels could not be had)
    // trains the same recipe without it.
    let conditional = args.recipe.resolve(recipe)?.class_cond;
    if conditional && !args.resume && ddpm::download::has_images(&data) {
        println!("note:    {} has images outside class folders: training without class conditioning", data.display());
        args.recipe.class_cond = Some(false);
    }
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(format!("flowers-{preset}")));
    println!("device:  {device}");
    println!("preset:  {preset} ({why_preset})");
    println!("length:  {length:?} ({why_length})");
    println!("data:    {} ({why_data})", data.display());
    // A resumed run trains on with the recipe its checkpoint records.
    let levers = match args.resume {
        true => "the resumed run's own recipe".to_string(),
        false => format!("{} ({})", recipe.to_possible_value().expect("named").get_name(), args.recipe.resolve(default_recipe)?.describe()),
    };
    println!(
        "recipe:  {levers}, Adam lr {}, batch {}, cosine annealing, EMA 0.999, dropout {}, seed {}",
        args.lr(),
        args.batch(),
        preset.config().dropout,
        args.seed()
    );
    println!("output:  {} (loss.csv, loss.png, samples/*.png, last.safetensors)", out.display());
    ddpm::cli::train(&args, data, preset, length, out, default_recipe)
}
