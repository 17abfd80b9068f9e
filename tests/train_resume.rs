//! Training resumes exactly: a run stopped at step 3 and resumed to step 6
//! logs the same losses, digit for digit, as one uninterrupted 6-step run;
//! and the run directory holds what a user expects.

mod common;

use ddpm::objective::Objective;
use ddpm::recipe::Recipe;
use ddpm::train::{RunLength, TrainOptions, Trainer};
use std::collections::BTreeMap;
use std::path::Path;
use tensor::{Device, Tensor};


#[test]
fn a_resumed_run_matches_an_uninterrupted_one() {
    check_resume_is_exact("resume", Device::Cpu);
}

/// The same on a CUDA GPU, whose kernels are deterministic too (no atomics
/// in the U-Net's forward or backward pass): skipped, saying so, without one.
#[test]
fn a_resumed_run_matches_an_uninterrupted_one_on_cuda() {
    if let Some(gpu) = tensor::cuda::device_for_tests() {
        check_resume_is_exact("resume-cuda", Device::Cuda(gpu));
    }
}

/// The cpu-hour levers (v prediction, min-SNR weighting, class labels with
/// dropped labels, LR and EMA warm-up across the stop) resume exactly too,
/// and so does flow matching; the checkpoint records what `sample` and
/// `loss` need.
#[test]
fn a_resumed_run_with_the_new_levers_matches_an_uninterrupted_one() {
    let dir = common::temp_dir("resume-levers");
    let data = common::synthetic_class_images(&dir, 10, 3);
    let levers = Recipe { lr_warmup_steps: 4, cond_drop: 0.3, ..Recipe::cpu_hour() };
    check_resume_with(&dir.join("v"), &data, Device::Cpu, levers.clone());
    let ck = nn::load_checkpoint(dir.join("v/straight/last.safetensors")).unwrap();
    assert_eq!(ck.meta("objective"), Some("v"));
    assert_eq!(ck.meta("class_names"), Some(r#"["1","2","3"]"#));
    assert!(ck.model.contains_key("class_emb.weight"));
    let (model, _) = ddpm::model::load_for_inference(&dir.join("v/straight/last.safetensors"), None, &Device::Cpu).unwrap();
    assert_eq!((model.objective, model.class_names.len(), model.unet.num_classes()), (Objective::V, 3, 3));

    let flow = Recipe { objective: Objective::Flow, class_cond: false, cond_drop: 0.0, ..levers };
    check_resume_with(&dir.join("flow"), &common::synthetic_images(&dir, 10), Device::Cpu, flow);
    let (model, _) = ddpm::model::load_for_inference(&dir.join("flow/straight/last.safetensors"), None, &Device::Cpu).unwrap();
    assert_eq!((model.objective, model.unet.num_classes()), (Objective::Flow, 0));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Resuming replays the checkpoint's recipe, not the options given again.
#[test]
fn a_resumed_run_keeps_its_recipe() {
    let dir = common::temp_dir("resume-recipe");
    let data = common::synthetic_images(&dir, 6);
    let mut first = common::short_run(&data, dir.join("run"));
    first.recipe = Recipe { objective: Objective::Flow, ..Recipe::seed() };
    first.stop_at = Some(2);
    Trainer::new(first.clone()).unwrap().run().unwrap();
    let mut second = TrainOptions { resume: true, stop_at: None, ..first };
    second.recipe = Recipe::seed();
    Trainer::new(second).unwrap().run().unwrap();
    let ck = nn::load_checkpoint(dir.join("run/last.safetensors")).unwrap();
    assert_eq!((ck.meta("objective"), ck.meta("step")), (Some("flow"), Some("6")));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn class_conditioning_needs_class_folders() {
    let dir = common::temp_dir("cond-flat");
    let data = common::synthetic_images(&dir, 4);
    let mut opts = common::short_run(&data, dir.join("run"));
    opts.recipe = Recipe::cpu_hour();
    let err = Trainer::new(opts).err().expect("must fail").to_string();
    assert!(err.contains("class conditioning needs one subfolder per class"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn check_resume_is_exact(name: &str, device: Device) {
    let dir = common::temp_dir(name);
    let data = common::synthetic_images(&dir, 10);
    check_resume_with(&dir, &data, device, Recipe::seed());
    std::fs::remove_dir_all(&dir).unwrap();
}

fn check_resume_with(dir: &Path, data: &Path, device: Device, recipe: Recipe) {
    let (dir, data) = (dir.to_path_buf(), data.to_path_buf());
    let straight = TrainOptions { device, recipe, ..common::short_run(&data, dir.join("straight")) };
    let summary = Trainer::new(straight.clone()).unwrap().run().unwrap();
    assert_eq!(summary.step, 6);
    assert!(!summary.interrupted);

    let mut first = TrainOptions { device: straight.device.clone(), recipe: straight.recipe.clone(), ..common::short_run(&data, dir.join("resumed")) };
    first.stop_at = Some(3);
    let summary = Trainer::new(first.clone()).unwrap().run().unwrap();
    assert_eq!((summary.step, summary.interrupted), (3, true));
    let mut second = first.clone();
    second.stop_at = None;
    second.resume = true;
    let summary = Trainer::new(second).unwrap().run().unwrap();
    assert_eq!((summary.step, summary.interrupted), (6, false));

    let log = |run: &str| std::fs::read_to_string(dir.join(run).join("loss.csv")).unwrap();
    assert_eq!(log("straight"), log("resumed"));
    assert_eq!(log("straight").lines().count(), 7, "header plus one row per step");

    for file in ["last.safetensors", "loss.png", "checkpoints/step-00000006.safetensors", "samples/step-00000006.png"] {
        assert!(dir.join("straight").join(file).exists(), "missing {file}");
    }
    // Checkpoints carry the EMA weights and the optimizer state.
    let ck = nn::load_checkpoint(dir.join("straight/last.safetensors")).unwrap();
    assert!(ck.ema.is_some() && ck.optim.is_some());
    assert_eq!(ck.meta("step"), Some("6"));
    // Equal losses could hide a drifted state; the final checkpoints must be
    // identical in every tensor and every metadata entry.
    let resumed = nn::load_checkpoint(dir.join("resumed/last.safetensors")).unwrap();
    assert_same_checkpoint(&ck, &resumed);
}

/// Every tensor bit for bit (weights, Adam's moments and step counts, EMA
/// weights) and every metadata entry (step, generator state, and for f16
/// runs the loss scaler's scale and growth tracker).
fn assert_same_checkpoint(a: &nn::Checkpoint, b: &nn::Checkpoint) {
    fn same_tensors(what: &str, a: &BTreeMap<String, Tensor>, b: &BTreeMap<String, Tensor>) {
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>(), "{what}: different tensor names");
        assert!(!a.is_empty(), "{what}: no tensors");
        for (name, x) in a {
            let y = &b[name];
            assert_eq!((x.dtype(), x.dims()), (y.dtype(), y.dims()), "{what} `{name}`");
            let bits = |t: &Tensor| t.to_f64_vec().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert!(bits(x) == bits(y), "{what} `{name}` differs after resuming");
        }
    }
    same_tensors("weights", &a.model, &b.model);
    let (oa, ob) = (a.optim.as_ref().unwrap(), b.optim.as_ref().unwrap());
    assert_eq!((oa.step, &oa.param_steps), (ob.step, &ob.param_steps), "optimizer step counts");
    for name in a.model.keys() {
        assert!(oa.tensors.contains_key(&format!("{name}.m")) && oa.tensors.contains_key(&format!("{name}.v")), "no Adam moments for {name}");
    }
    same_tensors("Adam moments", &oa.tensors, &ob.tensors);
    same_tensors("EMA", a.ema.as_ref().unwrap(), b.ema.as_ref().unwrap());
    assert_eq!(a.metadata, b.metadata, "metadata");
}

#[test]
fn resuming_without_a_run_is_a_clear_error() {
    let dir = common::temp_dir("noresume");
    let data = common::synthetic_images(&dir, 2);
    let mut opts = common::short_run(&data, dir.join("empty"));
    opts.resume = true;
    let err = Trainer::new(opts).err().expect("must fail").to_string();
    assert!(err.contains("last.safetensors") && err.contains("does not exist"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_diverging_run_stops_and_keeps_the_last_good_checkpoint() {
    let dir = common::temp_dir("diverge");
    let data = common::synthetic_images(&dir, 4);
    let mut opts = common::short_run(&data, dir.join("run"));
    opts.length = RunLength::Steps(40);
    opts.lr = 1e30;
    let err = Trainer::new(opts).unwrap().run().err().expect("an absurd learning rate must diverge").to_string();
    assert!(err.contains("diverged") && err.contains("PETAL_ANOMALY=1"), "{err}");
    // The checkpoint left behind is the last one written before the bad step.
    let ck = nn::load_checkpoint(dir.join("run/last.safetensors")).unwrap();
    let saved: u64 = ck.meta("step").unwrap().parse().unwrap();
    assert!(err.contains(&format!("at step {}", saved + 1)), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_run_diverging_before_its_first_checkpoint_does_not_claim_one() {
    let dir = common::temp_dir("diverge-early");
    let data = common::synthetic_images(&dir, 8);
    let mut opts = common::short_run(&data, dir.join("run"));
    // Batch 1 over 8 images: the first checkpoint would come at step 8.
    (opts.batch, opts.length, opts.lr) = (1, RunLength::Steps(40), 1e30);
    let err = Trainer::new(opts).unwrap().run().expect_err("an absurd learning rate must diverge").to_string();
    assert!(err.contains("diverged") && err.contains("no checkpoint was written"), "{err}");
    assert!(!err.contains("kept in"), "{err}");
    assert!(!dir.join("run/last.safetensors").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_fresh_run_never_overwrites_an_earlier_one() {
    let dir = common::temp_dir("no-overwrite");
    let data = common::synthetic_images(&dir, 4);
    let mut opts = common::short_run(&data, dir.join("run"));
    opts.length = RunLength::Steps(1);
    Trainer::new(opts.clone()).unwrap().run().unwrap();
    let before = std::fs::read(dir.join("run/last.safetensors")).unwrap();
    let err = Trainer::new(opts.clone()).err().expect("the directory holds a run").to_string();
    assert!(err.contains("--resume") && err.contains("--out"), "{err}");
    assert_eq!(std::fs::read(dir.join("run/last.safetensors")).unwrap(), before);

    // Resuming with a different batch is refused, not silently overridden.
    opts.resume = true;
    opts.batch = 2;
    let err = Trainer::new(opts).err().expect("a changed batch").to_string();
    assert!(err.contains("--batch 2 differs"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_options_are_errors_naming_the_flag_and_create_nothing() {
    let dir = common::temp_dir("bad-options");
    let data = common::synthetic_images(&dir, 2);
    let run = dir.join("run");
    type Breaks = fn(&mut TrainOptions);
    let cases: [(&str, Breaks); 6] = [
        ("--batch", |o| o.batch = 0),
        ("--lr", |o| o.lr = f64::NAN),
        ("--preview-steps", |o| o.preview_steps = 0),
        ("--stop-at", |o| o.stop_at = Some(0)),
        ("--epochs", |o| o.length = RunLength::Epochs(u64::MAX)),
        ("--stop-at 7", |o| o.stop_at = Some(7)),
    ];
    for (flag, breaks) in cases {
        let mut opts = common::short_run(&data, run.clone());
        breaks(&mut opts);
        let err = Trainer::new(opts).err().unwrap_or_else(|| panic!("{flag}: accepted")).to_string();
        assert!(err.contains(flag), "{err}");
        assert!(!run.exists(), "{flag}: a failed start created the run directory");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
