//! Trains the flower classifier that `ddpm score` measures samples with.
//!
//! ```sh
//! cargo run -p ddpm --release --example classifier -- \
//!     --train ../shared/data/flowers102/train --valid ../shared/data/flowers102/valid
//! ```
//!
//! The recipe: the CNN of `ddpm/src/classifier.rs` (conv, batch norm,
//! ReLU) on 64x64 images,
//! softmax cross-entropy with label smoothing, random flips and shifts
//! (random crops of the edge-padded image), AdamW with a one-cycle
//! schedule (linear warm-up, then cosine decay to zero). Each epoch prints
//! the accuracy on the validation folder and writes the weights, so a run
//! stopped early still leaves a usable classifier.

use anyhow::Result;
use autograd::Var;
use clap::Parser;
use ddpm::classifier::{accuracy, batch, default_weights, Classifier, LabelledImages, INPUT_SIZE};
use ddpm::cli::DeviceChoice;
use ddpm::data::{epoch_order, CorruptPolicy, ImageFolder};
use indicatif::{ProgressBar, ProgressStyle};
use nn::{Adam, AdamConfig, CosineAnnealing, Ctx, LinearWarmup, LrSchedule, Optimizer};
use std::path::PathBuf;
use std::time::Instant;
use tensor::{Rng, Tensor};

#[derive(Parser)]
#[command(about = "Train the flower classifier used by `ddpm score`")]
struct Args {
    /// Training images, one folder per class.
    #[arg(long, default_value = "../shared/data/flowers102/train")]
    train: PathBuf,
    /// Validation images, with the same class folders.
    #[arg(long, default_value = "../shared/data/flowers102/valid")]
    valid: PathBuf,
    /// Passes over the training set (24 take about 27 minutes on 2 cores).
    #[arg(long, default_value_t = 24)]
    epochs: u64,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Peak learning rate of the one-cycle schedule.
    #[arg(long, default_value_t = 3e-3)]
    lr: f64,
    #[arg(long, default_value_t = 0.05)]
    weight_decay: f64,
    #[arg(long, default_value_t = 0.1)]
    label_smoothing: f64,
    /// Largest random shift, in pixels, of the crop augmentation.
    #[arg(long, default_value_t = 6)]
    max_shift: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceChoice,
    /// Where to write the weights (default: the copy `ddpm score` loads).
    #[arg(long)]
    out: Option<PathBuf>,
}

// Large buffers on 2 MiB pages (see `tensor::cpu::HugePageHeap`).
#[global_allocator]
static HEAP: tensor::cpu::HugePageHeap = tensor::cpu::HugePageHeap;

fn main() -> Result<()> {
    tensor::cpu::keep_freed_memory();
    tensor::cpu::run_on_pool(train)
}

fn train() -> Result<()> {
    let args = Args::parse();
    let device = args.device.resolve()?;
    let out = args.out.clone().unwrap_or_else(default_weights);
    let t0 = Instant::now();
    let train = LabelledImages::new(ImageFolder::open(&args.train, INPUT_SIZE, CorruptPolicy::Warn)?)?;
    let valid = LabelledImages::new(ImageFolder::open(&args.valid, INPUT_SIZE, CorruptPolicy::Warn)?)?;
    if valid.class_names != train.class_names {
        anyhow::bail!("{} and {} do not hold the same class folders", args.train.display(), args.valid.display());
    }
    let classes = train.class_names.len();
    println!(
        "{} training and {} validation images of {classes} classes, loaded in {:.1} s",
        train.images.len(),
        valid.images.len(),
        t0.elapsed().as_secs_f64()
    );

    let model = Classifier::new(classes, &device, args.seed)?;
    println!("{} parameters; AdamW lr {} wd {}, batch {}, {} epochs, label smoothing {}", model.store.num_params(), args.lr, args.weight_decay, args.batch, args.epochs, args.label_smoothing);
    let cfg = AdamConfig { weight_decay: args.weight_decay, ..AdamConfig::adamw(args.lr) };
    let mut opt = Adam::new(&model.store, cfg)?;
    let per_epoch = train.images.len() / args.batch; // the last partial batch is dropped
    let total = per_epoch as u64 * args.epochs;
    let schedule = LinearWarmup::wrap(CosineAnnealing { base: args.lr, min: 0.0, total_steps: total }, (total / 10).max(1));

    let bar = ProgressBar::new(total);
    bar.set_style(ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} steps, {per_sec}, {elapsed_precise} elapsed, ETA {eta_precise}")?.progress_chars("=> "));
    let mut rng = Rng::new(args.seed ^ 0xc1a5);
    let mut ctx = Ctx::train(Rng::new(args.seed));
    let s = INPUT_SIZE;
    let mut step = 0u64;
    let mut best = 0.0f64;
    let train_start = Instant::now();
    for epoch in 0..args.epochs {
        let order = epoch_order(train.images.len(), args.seed, epoch);
        let (mut loss_sum, mut seen) = (0.0, 0usize);
        for chunk in order.chunks_exact(args.batch) {
            opt.set_lr(schedule.lr(step));
            let x = Tensor::from_vec(batch(&train.images, chunk, Some((args.max_shift, &mut rng))), [chunk.len(), 3, s, s], &device)?;
            let labels: Vec<usize> = chunk.iter().map(|&i| train.labels[i]).collect();
            let loss = model.forward(&Var::constant(x), &mut ctx)?.cross_entropy(&labels, args.label_smoothing)?;
            loss_sum += loss.tensor().to_scalar()?;
            seen += 1;
            let grads = loss.backward()?;
            opt.step(&grads)?;
            step += 1;
            bar.set_message(format!("epoch {}/{} loss {:.3}", epoch + 1, args.epochs, loss_sum / seen as f64));
            bar.inc(1);
            // Without a terminal (a log file) the bar is hidden: print its line now and then.
            if bar.is_hidden() && (step.is_multiple_of(20) || step == total) {
                let rate = step as f64 / train_start.elapsed().as_secs_f64();
                println!("epoch {}/{} step {step}/{total} loss {:.3}, {rate:.2} steps/s, ETA {:.0} s", epoch + 1, args.epochs, loss_sum / seen as f64, (total - step) as f64 / rate);
            }
        }
        let acc = accuracy(&model, &valid, 128, &device)?;
        best = best.max(acc);
        let line = format!("epoch {:>2}: train loss {:.4}, valid top-1 {:.2}% ({:.0} s elapsed)", epoch + 1, loss_sum / seen.max(1) as f64, 100.0 * acc, t0.elapsed().as_secs_f64());
        // A hidden bar (no terminal) drops its println: print the line directly then.
        if bar.is_hidden() {
            println!("{line}");
        } else {
            bar.println(line);
        }
        let mut ck = nn::Checkpoint::new(&model.store);
        ck.set_meta("classes", classes);
        ck.set_meta("input_size", INPUT_SIZE);
        ck.set_meta("class_names", train.class_names.join(","));
        ck.set_meta("epochs_done", epoch + 1);
        ck.set_meta("valid_top1", format!("{acc:.4}"));
        ck.set_meta("command", std::env::args().collect::<Vec<_>>().join(" "));
        nn::save_checkpoint(&out, &ck)?;
    }
    bar.finish_and_clear();
    println!("done in {:.0} s; valid top-1 {:.2}% (best epoch {:.2}%); weights {}", t0.elapsed().as_secs_f64(), 100.0 * accuracy(&model, &valid, 128, &device)?, 100.0 * best, out.display());
    Ok(())
}
