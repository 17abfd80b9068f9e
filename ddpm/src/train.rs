//! The training loop of the seed recipe: Adam, cosine-annealed learning
//! rate, EMA of the weights, epsilon-prediction MSE with one random step per
//! image. A `Recipe` (`recipe.rs`) can change the objective and its
//! weighting, add class conditioning, and warm up the learning rate and the
//! EMA; the seed recipe leaves every step exactly as before.
//!
//! A run lives in one directory: `loss.csv`, `loss.png`, sample grids under
//! `samples/`, snapshots under `checkpoints/`, and `last.safetensors`. Every
//! random draw comes from one counter-based generator whose state is saved
//! in each checkpoint with the step, so `--resume` continues exactly: the
//! resumed run logs the same losses, digit for digit, as one uninterrupted
//! run.
//!
//! `--precision bf16|f16` (CUDA only) runs the U-Net on half-precision
//! activations over the f32 master weights: the noisy images go in as the
//! half dtype, the predicted noise comes back to f32 for the loss. With f16
//! the loss is scaled (`nn::LossScaler`) and a step whose gradients
//! overflowed is skipped; the scaler's state is saved with each checkpoint.

use crate::config::{Preset, UNetConfig};
use crate::data::{CorruptPolicy, ImageFolder, Shuffler};
use crate::diffusion::{initial_noise, sample_steps, Schedule, T};
use crate::guidance::{drop_labels, Labels};
use crate::recipe::Recipe;
use crate::sampler::{generate, SampleSpec, Sampler};
use crate::images::{save_grid, save_loss_curve};
use crate::model::{checkpoint_config, Model};
use anyhow::{bail, Context, Result};
use autograd::Var;
use indicatif::{ProgressBar, ProgressStyle};
use nn::{Adam, AdamConfig, CosineAnnealing, Ctx, Ema, LinearWarmup, LossScaler, LrSchedule, Optimizer, Precision};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::io::IsTerminal;
use std::time::{Duration, Instant};
use tensor::{DType, Device, Rng, Tensor};

/// Everything that defines a run.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub data: PathBuf,
    pub preset: Preset,
    /// Length of the run in optimizer steps (from `--steps` or `--epochs`).
    pub length: RunLength,
    pub batch: usize,
    pub lr: f64,
    pub seed: u64,
    pub device: Device,
    pub out: PathBuf,
    pub resume: bool,
    /// Sample a grid (and snapshot a checkpoint) every this many epochs.
    pub sample_every_epochs: u64,
    /// Stop (with a checkpoint) after this step, as if interrupted.
    pub stop_at: Option<u64>,
    pub ema_decay: f64,
    pub on_corrupt: CorruptPolicy,
    /// DDIM steps for the preview grids.
    pub preview_steps: usize,
    /// Activation dtype: f32, or bf16/f16 mixed precision (CUDA only).
    pub precision: Precision,
    /// Objective, weighting, conditioning and warm-ups (the seed recipe by default).
    pub recipe: Recipe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunLength {
    Steps(u64),
    Epochs(u64),
}

impl RunLength {
    /// Optimizer steps for a dataset of `dataset_len` images at `batch`.
    /// An absurd `--epochs` is an error rather than an overflow.
    pub fn total_steps(self, dataset_len: usize, batch: usize) -> Result<u64> {
        if batch == 0 {
            bail!("--batch must be at least 1, got 0");
        }
        match self {
            RunLength::Steps(s) => Ok(s),
            RunLength::Epochs(e) => match e.checked_mul(dataset_len as u64) {
                Some(images) => Ok(images.div_ceil(batch as u64)),
                None => bail!("--epochs {e} is too large: {e} epochs of {dataset_len} images overflow the step counter"),
            },
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    pub step: u64,
    pub total_steps: u64,
    pub last_loss: Option<f32>,
    pub interrupted: bool,
    pub checkpoint: PathBuf,
}

/// Fixed seed for the preview grids, so every grid starts from the same noise.
const PREVIEW_SEED: u64 = 0x5EED_F10E;
/// The training generator is derived from the seed but kept apart from the
/// one that initialises the weights.
const TRAIN_STREAM: u64 = 0x7261_696E;

pub struct Trainer {
    opts: TrainOptions,
    data: ImageFolder,
    model: Model,
    preview: Model,
    opt: Adam,
    ema: Ema,
    schedule: Schedule,
    lr_schedule: LinearWarmup<CosineAnnealing>,
    total_steps: u64,
    step: u64,
    rng: Rng,
    losses: Vec<(u64, f32)>,
    /// Dynamic loss scaling, for f16 only.
    scaler: Option<LossScaler>,
    /// The step held by `last.safetensors`, if one was written (or resumed).
    saved_step: Option<u64>,
    /// A plain progress line this often when stderr is not a terminal (a
    /// log file shows nothing of the progress bar).
    progress_every: Duration,
}

/// Default interval of the plain progress lines.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(30);

/// Checks options that would otherwise fail late or make no sense, naming
/// the command-line flag of each.
fn check_options(opts: &TrainOptions) -> Result<()> {
    crate::validate::at_least_one("--batch", opts.batch as u64)?;
    crate::validate::learning_rate("--lr", opts.lr)?;
    crate::validate::at_least_one("--sample-every", opts.sample_every_epochs)?;
    crate::validate::at_least_one("--preview-steps", opts.preview_steps as u64)?;
    if let Some(stop) = opts.stop_at {
        crate::validate::at_least_one("--stop-at", stop)?;
    }
    if let RunLength::Steps(0) = opts.length {
        bail!("--steps must be at least 1, got 0");
    }
    if let RunLength::Epochs(0) = opts.length {
        bail!("--epochs must be at least 1, got 0");
    }
    if !(0.0..1.0).contains(&opts.ema_decay) {
        bail!("the EMA decay must lie in [0, 1), got {}", opts.ema_decay);
    }
    Ok(())
}

/// Files whose presence means `dir` holds a run that a fresh start would
/// overwrite.
const RUN_FILES: [&str; 3] = ["last.safetensors", "loss.csv", "checkpoints"];

/// A fresh run never replaces another: forgetting `--resume` after an
/// interruption would otherwise wipe its progress.
fn refuse_to_overwrite(out: &Path) -> Result<()> {
    if let Some(found) = RUN_FILES.iter().find(|f| out.join(f).exists()) {
        bail!(
            "{} already holds a run ({found} exists): continue it with --resume, or choose a new --out for a fresh run",
            out.display()
        );
    }
    Ok(())
}


impl Trainer {
    /// Sets up a run, restoring it from `out/last.safetensors` on `--resume`.
    ///
    /// A fresh run refuses a directory that already holds one. A resumed run
    /// keeps the batch, learning rate, seed, preset and data of its
    /// checkpoint and refuses different ones; its length follows `length`,
    /// so a finished run can be extended with a larger `--steps` or
    /// `--epochs`. Nothing is created on disk until every check passed.
    pub fn new(mut opts: TrainOptions) -> Result<Trainer> {
        check_options(&opts)?;
        opts.precision.check_device(&opts.device)?;
        let last = opts.out.join("last.safetensors");
        let resumed = if opts.resume {
            if !last.exists() {
                bail!("--resume: {} does not exist (no earlier run in {})", last.display(), opts.out.display());
            }
            let ck = nn::load_checkpoint(&last)?;
            let config = checkpoint_config(&ck)?.context("checkpoint has no config metadata")?;
            // The recipe is part of the run: a resumed run keeps its own.
            let recorded = match ck.meta("recipe") {
                Some(json) => serde_json::from_str(json).context("checkpoint metadata `recipe` is not a valid recipe")?,
                None => Recipe::seed(),
            };
            if opts.recipe != recorded && opts.recipe != Recipe::seed() {
                eprintln!("note: this run was trained with {}; continuing with it", recorded.describe());
            }
            opts.recipe = recorded;
            Some((ck, config))
        } else {
            refuse_to_overwrite(&opts.out)?;
            None
        };
        opts.recipe.check()?;
        let mut config: UNetConfig = resumed.as_ref().map(|(_, c)| c.clone()).unwrap_or_else(|| opts.preset.config());

        let mut step = 0;
        if let Some((ck, config)) = &resumed {
            let meta = |k: &str| ck.meta_u64(k)?.with_context(|| format!("{} lacks metadata `{k}`", last.display()));
            step = meta("step")?;
            let lr: f64 = ck.meta("lr").context("checkpoint lacks `lr`")?.parse().context("bad `lr` metadata")?;
            let recorded = [
                ("--batch", opts.batch.to_string(), meta("batch")?.to_string()),
                ("--lr", opts.lr.to_string(), lr.to_string()),
                ("--seed", opts.seed.to_string(), meta("seed")?.to_string()),
                ("--preset", opts.preset.name().to_string(), config.name.clone()),
            ];
            for (flag, given, was) in recorded {
                if given != was {
                    bail!("{flag} {given} differs from the resumed run's {flag} {was}: a resumed run keeps its {flag} (leave {flag} out, or start a new run with a new --out)");
                }
            }
            if let Some(was) = ck.meta("data").filter(|&d| Path::new(d) != opts.data) {
                bail!(
                    "--data {} differs from the resumed run's --data {was}: a resumed run keeps its data (leave --data out, or start a new run with a new --out)",
                    opts.data.display()
                );
            }
        }
        let needed = crate::validate::training_bytes(&config, opts.batch, opts.precision);
        crate::validate::fits_in_memory("--batch", opts.batch, needed, &opts.device, Some(opts.precision))?;

        let data = ImageFolder::open(&opts.data, config.image_size, opts.on_corrupt)?;
        let total_steps = opts.length.total_steps(data.len(), opts.batch)?;
        if total_steps < step {
            bail!("the run is already at step {step}, past the requested length of {total_steps} steps; ask for more --steps or --epochs");
        }
        if let Some(stop) = opts.stop_at.filter(|&s| s <= step || s > total_steps) {
            bail!("--stop-at {stop} must lie after the current step {step} and at most at the run's end, step {total_steps}");
        }
        if opts.recipe.class_cond {
            config.num_classes = class_count(&data, resumed.as_ref().map(|(ck, _)| ck), &opts.data)?;
        }
        let mut model = Model::new(&config, &opts.device, opts.seed)?;
        let mut preview = Model::new(&config, &opts.device, opts.seed)?;
        for m in [&mut model, &mut preview] {
            m.objective = opts.recipe.objective;
            m.class_names = if opts.recipe.class_cond { data.class_names().to_vec() } else { Vec::new() };
        }
        let mut opt = Adam::new(&model.store, AdamConfig::adam(opts.lr))?;
        let mut ema = Ema::new(&model.store, opts.ema_decay)?;
        let mut rng = Rng::new(opts.seed ^ TRAIN_STREAM);
        let mut scaler = opts.precision.needs_loss_scaling().then(LossScaler::new);

        if let Some((ck, _)) = &resumed {
            ck.load_into(&model.store, true)?;
            ck.load_optimizer(&mut opt)?;
            opt.set_lr(opts.lr);
            ck.load_ema(&mut ema)?;
            rng = ck.rng("train_rng")?.context("checkpoint lacks the training generator state")?;
            if let Some(was) = ck.meta("precision").filter(|&p| p != opts.precision.name()) {
                eprintln!("note: this run was trained with --precision {was}; continuing with --precision {}", opts.precision);
            }
            if let Some(scaler) = scaler.as_mut() {
                scaler.load_meta(ck)?;
            }
            let recorded_total = ck.meta_u64("total_steps")?.with_context(|| format!("{} lacks metadata `total_steps`", last.display()))?;
            if recorded_total != total_steps {
                eprintln!(
                    "note: the run's length changes from {recorded_total} to {total_steps} steps; the cosine learning-rate schedule now ends at step {total_steps}"
                );
            }
        }
        let losses = read_losses(&opts.out.join("loss.csv"), step)?;
        let lr_schedule = LinearWarmup::wrap(CosineAnnealing { base: opts.lr, min: 0.0, total_steps }, opts.recipe.lr_warmup_steps);
        std::fs::create_dir_all(&opts.out).with_context(|| format!("cannot create run directory {}", opts.out.display()))?;
        let saved_step = resumed.is_some().then_some(step);
        Ok(Trainer {
            opts,
            data,
            model,
            preview,
            opt,
            ema,
            schedule: Schedule::default(),
            lr_schedule,
            total_steps,
            step,
            rng,
            losses,
            scaler,
            saved_step,
            progress_every: PROGRESS_EVERY,
        })
    }

    /// How often a plain progress line is printed when stderr is not a
    /// terminal (default [`PROGRESS_EVERY`]).
    pub fn set_progress_every(&mut self, every: Duration) {
        self.progress_every = every;
    }

    pub fn dataset_len(&self) -> usize {
        self.data.len()
    }

    pub fn total_steps(&self) -> u64 {
        self.total_steps
    }

    pub fn steps_per_epoch(&self) -> u64 {
        (self.data.len() as u64).div_ceil(self.opts.batch as u64).max(1)
    }

    /// One optimizer step on the next batch; returns the batch loss.
    fn train_step(&mut self, shuffler: &mut Shuffler) -> Result<f32> {
        let (b, s) = (self.opts.batch, self.model.config().image_size);
        let indices = shuffler.next_batch(b);
        let flips: Vec<bool> = indices.iter().map(|_| self.rng.below(2) == 1).collect();
        let x0 = Tensor::from_vec(self.data.batch_with_flips(&indices, &flips), [b, 3, s, s], &self.opts.device)?;
        let t = sample_steps(b, T, &mut self.rng);
        let noise = initial_noise(b, s, &self.opts.device, &mut self.rng)?;
        let recipe = &self.opts.recipe;
        let (xt, target) = recipe.objective.training_pair(&self.schedule, &x0, &noise, &t)?;
        let labels = if recipe.class_cond {
            let labels: Vec<u32> = indices.iter().map(|&i| self.data.label(i).expect("a class-conditional run has labelled data")).collect();
            Some(drop_labels(&labels, self.model.unet.num_classes(), recipe.cond_drop, &mut self.rng))
        } else {
            None
        };

        let mut ctx = Ctx::train(self.rng);
        // The U-Net computes in the precision's dtype; the loss in f32.
        let x = Var::constant(xt.to_dtype(self.opts.precision.dtype())?);
        let pred = self.model.unet.forward_with_labels(&x, &t, labels.as_deref(), &mut ctx)?.to_dtype(DType::F32)?;
        self.rng = ctx.rng;
        let loss = match recipe.min_snr_gamma {
            None => pred.mse(&Var::constant(target))?,
            Some(gamma) => {
                let weights: Vec<f32> = t.iter().map(|&k| recipe.objective.min_snr_weight(&self.schedule, k, gamma) as f32).collect();
                let weights = Tensor::from_vec(weights, [b, 1, 1, 1], &self.opts.device)?;
                pred.sub(&Var::constant(target))?.sqr()?.mul(&Var::constant(weights))?.mean_all()?
            }
        };
        let value = loss.tensor().to_scalar()? as f32;
        if !value.is_finite() {
            let kept = match self.saved_step {
                Some(saved) => format!("the last good checkpoint, from step {saved}, is kept in {}", self.opts.out.join("last.safetensors").display()),
                None => "no checkpoint was written before it".to_string(),
            };
            bail!(
                "the loss became {value} at step {}: training diverged; {kept}. Try a lower --lr{}, \
                 or run with PETAL_ANOMALY=1 to name the first op that made a NaN or an infinity",
                self.step + 1,
                if self.opts.precision.is_mixed() { " or --precision f32" } else { "" }
            );
        }
        self.opt.set_lr(self.lr_schedule.lr(self.step));
        let stepped = match &mut self.scaler {
            // f16: skips the step (and halves the scale) when a gradient overflowed.
            Some(scaler) => {
                let mut grads = scaler.scale(&loss)?.backward()?;
                scaler.step(&mut self.opt, &self.model.store, &mut grads)?
            }
            None => {
                self.opt.step(&loss.backward()?)?;
                true
            }
        };
        if stepped {
            self.ema.decay = self.opts.recipe.ema_decay(self.opts.ema_decay, self.step);
            self.ema.update(&self.model.store)?;
        }
        Ok(value)
    }

    /// Trains until the end of the run, an interrupt, or `stop_at`.
    pub fn run(&mut self) -> Result<RunSummary> {
        crate::signals::install();
        let mut shuffler = Shuffler::resume(self.data.len(), self.opts.seed, self.step * self.opts.batch as u64);
        let mut log = open_loss_log(&self.opts.out.join("loss.csv"), &self.losses)?;
        let bar = ProgressBar::new(self.total_steps).with_position(self.step);
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} steps, {elapsed_precise} elapsed, ETA {eta_precise}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        let steps_per_epoch = self.steps_per_epoch();
        let (mut last_loss, mut interrupted) = (self.losses.last().map(|l| l.1), false);
        let mut recent_rate = RateMeter::default();
        // The bar draws nothing into a log file; plain lines do instead.
        let plain_progress = !std::io::stderr().is_terminal();
        let mut last_report = Instant::now();
        while self.step < self.total_steps {
            // A signal during a checkpoint or preview grid stops here.
            if crate::signals::stop_requested() {
                interrupted = true;
                break;
            }
            let started = Instant::now();
            let loss = self.train_step(&mut shuffler)?;
            self.step += 1;
            recent_rate.record(self.opts.batch, started.elapsed().as_secs_f64());
            last_loss = Some(loss);
            self.losses.push((self.step, loss));
            writeln!(log, "{},{}", self.step, loss)?;
            // Flushed every step, so `tail -f loss.csv` follows the run.
            log.flush()?;
            let epoch = (self.step - 1) / steps_per_epoch + 1;
            bar.set_message(format!("epoch {epoch} loss {loss:.4} {:.1} img/s", recent_rate.images_per_s()));
            bar.set_position(self.step);
            if plain_progress && last_report.elapsed() >= self.progress_every {
                last_report = Instant::now();
                eprintln!(
                    "step {}/{} (epoch {epoch}): loss {loss:.4}, {:.1} images/s, {} elapsed",
                    self.step,
                    self.total_steps,
                    recent_rate.images_per_s(),
                    format_duration(bar.elapsed())
                );
            }

            let epoch_done = self.step % steps_per_epoch == 0;
            let finished = self.step == self.total_steps;
            if crate::signals::stop_requested() || self.opts.stop_at == Some(self.step) {
                interrupted = !finished;
                break;
            }
            if epoch_done || finished {
                log.flush()?;
                self.save_last()?;
                save_loss_curve(&self.opts.out.join("loss.png"), &self.losses)?;
                let epoch = self.step.div_ceil(steps_per_epoch);
                if finished || (epoch_done && epoch % self.opts.sample_every_epochs.max(1) == 0) {
                    let name = format!("step-{:08}", self.step);
                    self.checkpoint(&self.opts.out.join("checkpoints").join(format!("{name}.safetensors")))?;
                    let grid = self.opts.out.join("samples").join(format!("{name}.png"));
                    bar.suspend(|| println!("epoch {epoch}: loss {loss:.4}; sampling a preview grid to {}", grid.display()));
                    self.preview_grid(&grid)?;
                }
            }
        }
        log.flush()?;
        let last = self.save_last()?;
        save_loss_curve(&self.opts.out.join("loss.png"), &self.losses)?;
        bar.finish();
        Ok(RunSummary { step: self.step, total_steps: self.total_steps, last_loss, interrupted, checkpoint: last })
    }

    /// Writes `last.safetensors`; a stop signal meanwhile waits for it.
    fn save_last(&mut self) -> Result<PathBuf> {
        let last = self.opts.out.join("last.safetensors");
        let _saving = crate::signals::Saving::start();
        self.checkpoint(&last)?;
        self.saved_step = Some(self.step);
        Ok(last)
    }

    /// Writes model, Adam state, EMA weights, step and generator state.
    fn checkpoint(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut ck = nn::Checkpoint::new(&self.model.store).with_optimizer(&self.opt).with_ema(&self.ema);
        ck.set_meta("config", serde_json::to_string(self.model.config())?);
        ck.set_meta("step", self.step);
        ck.set_meta("epoch", self.step / self.steps_per_epoch());
        ck.set_meta("total_steps", self.total_steps);
        ck.set_meta("batch", self.opts.batch);
        ck.set_meta("seed", self.opts.seed);
        ck.set_meta("lr", self.opts.lr);
        ck.set_meta("data", self.opts.data.display());
        ck.set_meta("precision", self.opts.precision);
        ck.set_meta("objective", self.opts.recipe.objective);
        ck.set_meta("recipe", serde_json::to_string(&self.opts.recipe)?);
        if self.opts.recipe.class_cond {
            ck.set_meta("class_names", serde_json::to_string(&self.model.class_names)?);
        }
        if let Some(scaler) = &self.scaler {
            scaler.save_meta(&mut ck);
        }
        ck.set_rng("train_rng", &self.rng);
        nn::save_checkpoint(path, &ck)?;
        Ok(())
    }

    /// 16 samples from the EMA weights, always from the same noise.
    fn preview_grid(&self, path: &Path) -> Result<()> {
        for (name, avg) in self.ema.named() {
            self.preview.store.get(&name).context("EMA names a missing parameter")?.tensor().assign(&avg)?;
        }
        let s = self.preview.config().image_size;
        let noise = initial_noise(16, s, &self.opts.device, &mut Rng::new(PREVIEW_SEED))?;
        let spec = preview_spec(&self.opts.recipe, self.preview.unet.num_classes(), self.opts.preview_steps);
        let samples = generate(&self.preview, noise, &spec, &mut Rng::new(PREVIEW_SEED), &mut |_, _| {})?;
        // Sampling prepared filters for the preview weights (4x their
        // size); training steps have no use for them until the next grid.
        for (name, _) in self.ema.named() {
            self.preview.store.get(&name).context("EMA names a missing parameter")?.tensor().forget_derived();
        }
        save_grid(path, &samples.to_vec::<f32>()?, 16, s, 4)
    }
}

/// How previews sample: the seed's DDIM for eps models, DPM-Solver++ for v
/// models, Heun for flow models; a class-conditional run shows 16 classes
/// spread over its range with the recipe's guidance.
fn preview_spec(recipe: &Recipe, num_classes: usize, steps: usize) -> SampleSpec {
    let sampler = match recipe.objective {
        crate::objective::Objective::Eps => Sampler::Ddim,
        crate::objective::Objective::V => Sampler::DpmSolver,
        crate::objective::Objective::Flow => Sampler::Heun,
    };
    let labels = match num_classes {
        0 => Labels::Unconditional,
        k => Labels::Classes((0..16).map(|i| (i * k / 16) as u32).collect()),
    };
    SampleSpec { sampler, steps, labels, guidance: recipe.guidance }
}

/// The number of classes of a class-conditional run on `data`: its class
/// folders, which must be those the checkpoint (when resuming) was trained on.
fn class_count(data: &ImageFolder, resumed: Option<&nn::Checkpoint>, dir: &Path) -> Result<usize> {
    let names = data.class_names();
    if names.is_empty() {
        bail!("class conditioning needs one subfolder per class under {} (some images lie directly in it)", dir.display());
    }
    if let Some(ck) = resumed {
        let trained = crate::model::checkpoint_class_names(ck)?;
        if trained != names {
            bail!("{} has classes {:?} but the checkpoint was trained on {:?}", dir.display(), names, trained);
        }
    }
    Ok(names.len())
}

pub(crate) fn to_tensor_error(e: nn::NnError) -> tensor::Error {
    match e {
        nn::NnError::Tensor(e) => e,
        other => tensor::Error::BadArgument { op: "unet", msg: other.to_string() },
    }
}

/// `1h02m03s`, `4m05s` or `6s`.
fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m{sec:02}s"),
        (h, m, sec) => format!("{h}h{m:02}m{sec:02}s"),
    }
}

/// Images per second over the last few steps.
#[derive(Default)]
struct RateMeter {
    recent: std::collections::VecDeque<(usize, f64)>,
}

impl RateMeter {
    fn record(&mut self, images: usize, seconds: f64) {
        self.recent.push_back((images, seconds));
        if self.recent.len() > 20 {
            self.recent.pop_front();
        }
    }
    fn images_per_s(&self) -> f64 {
        let (n, s) = self.recent.iter().fold((0, 0.0), |(n, s), &(i, t)| (n + i, s + t));
        n as f64 / s.max(1e-9)
    }
}

/// The losses logged up to and including `step` (later rows belong to steps
/// that no checkpoint holds, and will be logged again).
fn read_losses(path: &Path, step: u64) -> Result<Vec<(u64, f32)>> {
    if step == 0 || !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let Some((s, l)) = line.split_once(',') else { continue };
        let (s, l): (u64, f32) = (s.parse()?, l.parse()?);
        if s <= step {
            out.push((s, l));
        }
    }
    Ok(out)
}

/// Rewrites the log with `kept` rows, then appends as training goes.
fn open_loss_log(path: &Path, kept: &[(u64, f32)]) -> Result<std::io::BufWriter<std::fs::File>> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?);
    writeln!(f, "step,loss")?;
    for (s, l) in kept {
        writeln!(f, "{s},{l}")?;
    }
    Ok(f)
}
