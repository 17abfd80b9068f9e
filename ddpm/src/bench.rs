//! Training and sampling throughput of a preset, measured after warm-up
//! (medians over the timed steps), plus the peak tensor memory of a step.

use crate::config::Preset;
use crate::diffusion::{initial_noise, sample_steps, Schedule, T};
use crate::model::Model;
use crate::train::to_tensor_error;
use anyhow::Result;
use autograd::Var;
use nn::{Adam, AdamConfig, Ctx, LossScaler, Optimizer, Precision};
use serde::Serialize;
use std::time::Instant;
use tensor::{DType, Device, Rng};

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub preset: String,
    pub device: String,
    pub precision: String,
    pub batch: usize,
    pub steps: usize,
    pub train_step_s: f64,
    pub train_images_per_s: f64,
    pub sample_forward_s: f64,
    pub sample_images_per_s: f64,
    /// Highest live tensor bytes during a training step (all devices).
    pub peak_train_bytes: usize,
    /// The process's peak resident memory (Linux `VmHWM`), what `ps` and
    /// PyTorch's `ru_maxrss` show; `None` where /proc is missing.
    pub peak_resident_bytes: Option<usize>,
    /// How 3x3 stride-1 convolutions ran on the CPU: "Winograd F(2x2)",
    /// "Winograd F(4x4) ... below" with the path of small maps, "direct
    /// (avx512)", "direct (avx2)" or "im2col"; `None` on CUDA.
    pub cpu_conv: Option<String>,
    /// Whether f32 matrix products could use TF32 tensor cores (CUDA only).
    pub tf32: bool,
    /// CUDA only: the caching allocator's view of GPU memory.
    pub gpu_memory: Option<GpuMemory>,
}

/// GPU memory of the benchmark, from the device's caching allocator.
#[derive(Debug, Serialize)]
pub struct GpuMemory {
    /// Highest bytes held by live tensors during the training steps.
    pub peak_in_use_bytes: usize,
    /// Bytes taken from the driver at the end (in use plus cached).
    pub reserved_bytes: usize,
    /// Driver allocations during the timed training steps (0 once the cache is warm).
    pub driver_allocs_in_timed_steps: u64,
}

fn cpu_conv_path() -> String {
    let direct = match tensor::cpu::conv_direct::isa() {
        Some(isa) => format!("direct ({isa})"),
        None => "im2col".into(),
    };
    if tensor::cpu::winograd::enabled() {
        "Winograd F(2x2)".into()
    } else if tensor::cpu::winograd4::enabled() {
        format!("Winograd F(4x4) on maps of 4x4 and up (weight gradients from 8x8), {direct} below")
    } else {
        direct
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Times `steps` training steps (forward, backward, Adam) at `batch`, then
/// `steps` batch-16 forward passes without a tape, each after one warm-up.
/// `precision` is the activation dtype (bf16/f16 need CUDA; f16 adds loss scaling).
/// `tf32` lets f32 matrix products on a CUDA device use TF32 tensor cores.
pub fn run(preset: Preset, batch: usize, steps: usize, device: &Device, precision: Precision, tf32: bool) -> Result<BenchReport> {
    precision.check_device(device)?;
    let gpu = match device {
        Device::Cuda(gpu) => Some(gpu.clone()),
        Device::Cpu => None,
    };
    if let Some(gpu) = &gpu {
        gpu.set_tf32(tf32)?;
    }
    let dtype = precision.dtype();
    let mut scaler = precision.needs_loss_scaling().then(LossScaler::new);
    let config = preset.config();
    let model = Model::new(&config, device, 0)?;
    let mut opt = Adam::new(&model.store, AdamConfig::adam(1e-4))?;
    let schedule = Schedule::default();
    let mut rng = Rng::new(1);
    let s = config.image_size;
    let x0 = initial_noise(batch, s, device, &mut rng)?.clamp(-1.0, 1.0)?;

    let mut train_times = Vec::new();
    let mut peak = 0;
    let mut driver_allocs_before_timed = 0;
    if let Some(gpu) = &gpu {
        gpu.reset_peak_memory();
    }
    for i in 0..steps + 1 {
        if i == 1 {
            if let Some(gpu) = &gpu {
                driver_allocs_before_timed = gpu.memory_stats().driver_allocs;
            }
            tensor::cuda::profile::reset();
        }
        tensor::reset_peak_bytes();
        let started = Instant::now();
        let t = sample_steps(batch, T, &mut rng);
        let noise = initial_noise(batch, s, device, &mut rng)?;
        let xt = schedule.add_noise(&x0, &noise, &t)?;
        let mut ctx = Ctx::train(rng);
        let eps = model.unet.forward(&Var::constant(xt.to_dtype(dtype)?), &t, &mut ctx)?.to_dtype(DType::F32)?;
        rng = ctx.rng;
        let loss = eps.mse(&Var::constant(noise))?;
        let grads = match &mut scaler {
            Some(scaler) => {
                let mut grads = scaler.scale(&loss)?.backward()?;
                scaler.step(&mut opt, &model.store, &mut grads)?;
                grads
            }
            None => {
                let grads = loss.backward()?;
                opt.step(&grads)?;
                grads
            }
        };
        // Reading the loss waits for the device to finish the step.
        loss.tensor().to_scalar()?;
        drop(grads);
        if i > 0 {
            train_times.push(started.elapsed().as_secs_f64());
        }
        peak = peak.max(tensor::peak_bytes());
    }
    if gpu.is_some() && tensor::cuda::profile::enabled() {
        print_profile(steps);
    }
    let gpu_memory = gpu.as_ref().map(|gpu| {
        let stats = gpu.memory_stats();
        GpuMemory {
            peak_in_use_bytes: stats.peak_in_use,
            reserved_bytes: stats.reserved(),
            driver_allocs_in_timed_steps: stats.driver_allocs - driver_allocs_before_timed,
        }
    });

    let x = initial_noise(16, s, device, &mut rng)?;
    let mut sample_times = Vec::new();
    for i in 0..steps + 1 {
        let started = Instant::now();
        let eps = model.unet.predict(&x.to_dtype(dtype)?, &[500; 16]).map_err(to_tensor_error)?;
        eps.sum_all()?.to_scalar()?;
        if i > 0 {
            sample_times.push(started.elapsed().as_secs_f64());
        }
    }
    let (train_step_s, sample_forward_s) = (median(train_times), median(sample_times));
    Ok(BenchReport {
        preset: preset.name().into(),
        device: device.to_string(),
        precision: precision.to_string(),
        batch,
        steps,
        train_step_s,
        train_images_per_s: batch as f64 / train_step_s,
        sample_forward_s,
        sample_images_per_s: 16.0 / sample_forward_s,
        peak_train_bytes: peak,
        peak_resident_bytes: peak_resident_bytes(),
        cpu_conv: gpu.is_none().then(cpu_conv_path),
        tf32: gpu.is_some() && tf32,
        gpu_memory,
    })
}

/// The `VmHWM` line of /proc/self/status, in bytes.
fn peak_resident_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The CUDA profiler's table (`PETAL_CUDA_PROFILE=1`), per training step, on stderr.
fn print_profile(steps: usize) {
    let rows = tensor::cuda::profile::report();
    let total: f64 = rows.iter().map(|r| r.1.as_secs_f64()).sum();
    eprintln!("CUDA profile, per training step (device synchronized at every label; {:.2} ms in all):", total * 1e3 / steps as f64);
    eprintln!("{:>9} {:>6} {:>7}  label", "ms/step", "share", "calls");
    for (label, time, calls) in rows.iter().take(60) {
        let t = time.as_secs_f64();
        eprintln!("{:>9.3} {:>5.1}% {:>7}  {label}", t * 1e3 / steps as f64, 100.0 * t / total, calls / steps as u64);
    }
}
