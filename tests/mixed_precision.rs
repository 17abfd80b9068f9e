//! `--precision f32|bf16|f16`: on the CPU a clear error before anything
//! starts; on a CUDA GPU the half-precision U-Net tracks the f32 one, and a
//! few f16 training steps with loss scaling stay finite.
//!
//! The GPU tests print "SKIPPED: no CUDA device" and pass without one,
//! unless `PETAL_REQUIRE_CUDA=1` is set, in which case they fail.

mod common;

use autograd::Var;
use ddpm::config::Preset;
use ddpm::model::Model;
use ddpm::train::{RunLength, TrainOptions, Trainer};
use nn::{Ctx, LossScaler, Precision};
use std::path::{Path, PathBuf};
use std::process::Command;
use tensor::{DType, Device, Rng, Tensor};

const CPU_MESSAGE: &str = "mixed precision needs a CUDA device; the CPU backend computes in f32/f64";

fn gpu() -> Option<Device> {
    tensor::cuda::device_for_tests().map(Device::Cuda)
}

fn options(data: &Path, out: PathBuf, device: Device, precision: Precision, steps: u64) -> TrainOptions {
    TrainOptions { device, precision, length: RunLength::Steps(steps), ..common::short_run(data, out) }
}

/// The `ddpm` binary: Cargo's, or the one beside the tests directory of a
/// GPU pack (`scripts/pack-gpu.sh`), or None (skip) when neither exists.
fn ddpm_bin() -> Option<PathBuf> {
    let cargo = PathBuf::from(env!("CARGO_BIN_EXE_ddpm"));
    let packed = std::env::current_exe().ok().and_then(|e| Some(e.parent()?.parent()?.join("ddpm")));
    let found = std::iter::once(cargo).chain(packed).find(|p| p.is_file());
    if found.is_none() {
        eprintln!("SKIPPED: no ddpm binary found");
    }
    found
}

// ---- CPU: a clear error, before training starts ---------------------------

#[test]
fn half_precision_on_the_cpu_fails_with_a_clear_message() {
    let Some(ddpm) = ddpm_bin() else { return };
    let dir = common::temp_dir("mp-cli");
    let out = dir.join("run");
    for precision in ["bf16", "f16"] {
        let o = Command::new(&ddpm)
            .args(["train", "--precision", precision, "--device", "cpu", "--steps", "1"])
            .args(["--data", dir.join("no-images-here").to_str().unwrap(), "--out", out.to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "train --precision {precision} on the CPU must fail");
        assert!(stderr.contains(CPU_MESSAGE), "{stderr}");
        // It failed before touching the data folder or the run directory.
        assert!(!stderr.contains("no-images-here"), "{stderr}");
        assert!(!out.exists(), "the run directory was created");

        let o = Command::new(&ddpm)
            .args(["bench", "--precision", precision, "--device", "cpu", "--steps", "1", "--batch", "1"])
            .output()
            .unwrap();
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains(CPU_MESSAGE), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let o = Command::new(&ddpm).args(["bench", "--precision", "fp8", "--device", "cpu"]).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("f32, bf16, f16"), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn the_trainer_refuses_half_precision_on_the_cpu() {
    let dir = common::temp_dir("mp-trainer");
    let err = Trainer::new(options(&dir.join("none"), dir.join("run"), Device::Cpu, Precision::F16, 1)).err().expect("must fail");
    assert!(format!("{err:#}").contains(CPU_MESSAGE), "{err:#}");
}

/// The U-Net computes in its input's dtype over f32 parameters. The CPU
/// has no half kernels, so f64 stands in for the half dtype here: the same
/// casts (time features, Linear/Conv2d parameters, GroupNorm in f32, the
/// output back to f32) as bf16/f16 on a GPU.
#[test]
fn unet_computes_in_its_input_dtype_over_f32_weights() {
    let model = Model::new(&Preset::Tiny.config(), &Device::Cpu, 0).unwrap();
    let mut rng = Rng::new(4);
    let x = Tensor::randn(0.0, 1.0, [1, 3, 32, 32], DType::F32, &Device::Cpu, &mut rng).unwrap();
    let noise = Tensor::randn(0.0, 1.0, [1, 3, 32, 32], DType::F32, &Device::Cpu, &mut rng).unwrap();
    let run = |dtype: DType| {
        let eps = model.unet.forward(&Var::constant(x.to_dtype(dtype).unwrap()), &[123], &mut Ctx::eval()).unwrap();
        assert_eq!(eps.dtype(), dtype);
        let eps = eps.to_dtype(DType::F32).unwrap();
        let grads = eps.mse(&Var::constant(noise.clone())).unwrap().backward().unwrap();
        (eps.tensor().to_f64_vec().unwrap(), grads_by_name(&model, &grads))
    };
    let (eps32, g32) = run(DType::F32);
    let (eps64, g64) = run(DType::F64);
    assert!(rel_err(&eps64, &eps32) < 1e-4, "{}", rel_err(&eps64, &eps32));
    let (name, err) = worst_gradient(&g64, &g32);
    eprintln!("f64 activations: worst gradient {name}, relative error {err:.2e}");
    assert!(err < 1e-3, "{name}: gradient differs by {err}");
}

#[test]
fn every_gradient_is_checked_on_its_own() {
    // One gradient off by half among many exact ones: a single global error
    // over all of them would barely notice.
    let want = vec![("a".to_string(), vec![1.0; 1000]), ("b".to_string(), vec![0.5, -0.5])];
    let mut got = want.clone();
    got[1].1[0] = 0.75;
    assert!(rel_err(&got.iter().flat_map(|g| g.1.clone()).collect::<Vec<_>>(), &want.iter().flat_map(|g| g.1.clone()).collect::<Vec<_>>()) < 0.01);
    let (name, err) = worst_gradient(&got, &want);
    assert_eq!(name, "b");
    assert!(err > 0.3, "{err}");
    // A gradient of negligible size is measured against the floor, not itself.
    let tiny = vec![("a".to_string(), vec![1.0; 4]), ("t".to_string(), vec![1e-12])];
    let mut noisy = tiny.clone();
    noisy[1].1[0] = 2e-12;
    assert!(worst_gradient(&noisy, &tiny).1 < 1e-6);
}

// ---- CUDA ------------------------------------------------------------------------

/// Every parameter's gradient by name, as f64.
fn grads_by_name(model: &Model, grads: &autograd::Grads) -> Vec<(String, Vec<f64>)> {
    let mut out = Vec::new();
    for (name, p) in model.store.named() {
        let g = grads.get(&p).unwrap_or_else(|| panic!("no gradient for {name}"));
        assert_eq!(g.dtype(), DType::F32, "{name}: the master parameters' gradients are f32");
        out.push((name.to_string(), g.to_f64_vec().unwrap()));
    }
    out
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// The parameter whose gradient differs most, and by how much: each
/// gradient is measured on its own, so a few wrong ones cannot hide among
/// many right ones as they would in one error over all of them. A gradient
/// far smaller than the largest one is measured against a floor (1e-3 of the
/// largest norm) instead of its own norm, where rounding alone dominates.
fn worst_gradient(got: &[(String, Vec<f64>)], want: &[(String, Vec<f64>)]) -> (String, f64) {
    assert_eq!(got.len(), want.len());
    let floor = 1e-3 * want.iter().map(|(_, w)| norm(w)).fold(0.0, f64::max);
    let mut worst = (String::new(), 0.0);
    for ((name, g), (wname, w)) in got.iter().zip(want) {
        assert_eq!((name, g.len()), (wname, w.len()));
        let diff: Vec<f64> = g.iter().zip(w).map(|(a, b)| a - b).collect();
        let err = if g.iter().all(|v| v.is_finite()) { norm(&diff) / norm(w).max(floor).max(1e-30) } else { f64::INFINITY };
        if err >= worst.1 {
            worst = (name.clone(), err);
        }
    }
    worst
}

fn rel_err(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let num: f64 = got.iter().zip(want).map(|(a, b)| (a - b).powi(2)).sum();
    let den: f64 = want.iter().map(|b| b * b).sum();
    (num / den.max(1e-30)).sqrt()
}

/// One forward (eval: no dropout) and backward of the tiny U-Net in the
/// given precision; returns the predicted noise and the f32 gradients.
fn forward_backward(model: &Model, x: &Tensor, noise: &Tensor, t: &[u32], precision: Precision) -> (Vec<f64>, Vec<(String, Vec<f64>)>) {
    let mut scaler = precision.needs_loss_scaling().then(LossScaler::new);
    for _ in 0..8 {
        let input = Var::constant(x.to_dtype(precision.dtype()).unwrap());
        let eps = model.unet.forward(&input, t, &mut Ctx::eval()).unwrap().to_dtype(DType::F32).unwrap();
        assert_eq!(eps.dtype(), DType::F32);
        let loss = eps.mse(&Var::constant(noise.clone())).unwrap();
        let grads = match &mut scaler {
            Some(scaler) => {
                let mut grads = scaler.scale(&loss).unwrap().backward().unwrap();
                if !scaler.unscale_and_check(&model.store, &mut grads).unwrap() {
                    eprintln!("f16 gradients overflowed at scale {}; backing off", scaler.get_scale());
                    scaler.update(true);
                    continue;
                }
                grads
            }
            None => loss.backward().unwrap(),
        };
        return (eps.tensor().to_f64_vec().unwrap(), grads_by_name(model, &grads));
    }
    panic!("{precision}: the gradients overflowed at every scale tried");
}

#[test]
fn half_precision_unet_tracks_f32_on_cuda() {
    let Some(dev) = gpu() else { return };
    let model = Model::new(&Preset::Tiny.config(), &dev, 0).unwrap();
    let mut rng = Rng::new(4);
    let x = Tensor::randn(0.0, 1.0, [2, 3, 32, 32], DType::F32, &dev, &mut rng).unwrap();
    let noise = Tensor::randn(0.0, 1.0, [2, 3, 32, 32], DType::F32, &dev, &mut rng).unwrap();
    let t = [10u32, 600];
    let (eps32, g32) = forward_backward(&model, &x, &noise, &t, Precision::F32);
    // Loose bounds: bf16 keeps 8 mantissa bits, f16 11; both accumulate in f32.
    for (precision, eps_tol, grad_tol) in [(Precision::Bf16, 0.08, 0.2), (Precision::F16, 0.02, 0.1)] {
        let (eps, g) = forward_backward(&model, &x, &noise, &t, precision);
        assert!(eps.iter().all(|v| v.is_finite()), "{precision}: non-finite values");
        let e_eps = rel_err(&eps, &eps32);
        let (name, e_g) = worst_gradient(&g, &g32);
        eprintln!("{precision}: relative error of eps {e_eps:.2e}, worst gradient {name} {e_g:.2e}");
        assert!(e_eps < eps_tol, "{precision}: eps differs from f32 by {e_eps}");
        assert!(e_g < grad_tol, "{precision}: the gradient of {name} differs from f32 by {e_g}");
    }
    // The master weights stayed f32 throughout.
    assert!(model.store.named().iter().all(|(_, p)| p.dtype() == DType::F32));
}

#[test]
fn f16_training_with_loss_scaling_stays_finite_on_cuda() {
    let Some(dev) = gpu() else { return };
    let dir = common::temp_dir("mp-f16-train");
    let data = common::synthetic_images(&dir, 10);
    for (precision, out) in [(Precision::F16, dir.join("f16")), (Precision::Bf16, dir.join("bf16"))] {
        let summary = Trainer::new(options(&data, out.clone(), dev.clone(), precision, 6)).unwrap().run().unwrap();
        assert_eq!(summary.step, 6);
        let loss = summary.last_loss.expect("a loss was logged");
        assert!(loss.is_finite() && loss > 0.0, "{precision}: last loss {loss}");

        let ck = nn::load_checkpoint(out.join("last.safetensors")).unwrap();
        assert_eq!(ck.meta("precision"), Some(precision.name()));
        for (name, w) in &ck.model {
            assert_eq!(w.dtype(), DType::F32, "{name}: master weights are saved in f32");
            assert!(!w.has_non_finite().unwrap(), "{precision}: {name} is not finite");
        }
        let mut scaler = LossScaler::new();
        let has_state = scaler.load_meta(&ck).unwrap();
        assert_eq!(has_state, precision == Precision::F16, "{precision}: scaler state only for f16");
        if has_state {
            // At most a few overflow backoffs in 6 steps, never growth.
            assert!(scaler.get_scale() <= 65536.0 && scaler.get_scale() >= 65536.0 / 64.0, "scale {}", scaler.get_scale());
        }
    }

    // An interrupted f16 run resumes with its scaler state and logs the same losses.
    let straight = std::fs::read_to_string(dir.join("f16").join("loss.csv")).unwrap();
    let split = dir.join("f16-split");
    let mut first = options(&data, split.clone(), dev.clone(), Precision::F16, 6);
    first.stop_at = Some(3);
    assert!(Trainer::new(first).unwrap().run().unwrap().interrupted);
    let mut second = options(&data, split.clone(), dev.clone(), Precision::F16, 6);
    second.resume = true;
    Trainer::new(second).unwrap().run().unwrap();
    let resumed = std::fs::read_to_string(split.join("loss.csv")).unwrap();
    let parse = |csv: &str| -> Vec<(u64, f64)> {
        csv.lines().skip(1).map(|l| l.split_once(',').map(|(s, v)| (s.parse().unwrap(), v.parse().unwrap())).unwrap()).collect()
    };
    let (a, b) = (parse(&straight), parse(&resumed));
    assert_eq!(a.len(), 6);
    assert_eq!(a.iter().map(|r| r.0).collect::<Vec<_>>(), b.iter().map(|r| r.0).collect::<Vec<_>>());
    for ((step, x), (_, y)) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-3 * x.abs(), "step {step}: straight {x}, resumed {y}");
    }
    let scale_of = |run: &Path| {
        let mut s = LossScaler::new();
        assert!(s.load_meta(&nn::load_checkpoint(run.join("last.safetensors")).unwrap()).unwrap());
        (s.get_scale(), s.growth_tracker())
    };
    assert_eq!(scale_of(&split), scale_of(&dir.join("f16")), "the resumed run's loss scaler state differs");
}
