//! The `ddpm` command with the cpu-hour levers: a class-conditional v model
//! trains, samples one class per row with guidance, reports its loss, and
//! refuses what it cannot do with a clear error; an unconditional
//! checkpoint refuses `--class`.

mod common;

use std::process::{Command, Output};

fn ddpm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ddpm")).args(args).output().expect("run ddpm")
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "ddpm failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn fails_with(o: &Output, needle: &str) {
    assert!(!o.status.success(), "ddpm should have failed");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(needle), "expected `{needle}` in: {err}");
}

#[test]
fn a_class_conditional_run_samples_classes_with_guidance() {
    let dir = common::temp_dir("cli-cond");
    let data = common::synthetic_class_images(&dir, 8, 4);
    let (run, data) = (dir.join("run"), data.to_str().unwrap().to_string());
    let run_s = run.to_str().unwrap();
    let common_args = ["--preset", "tiny", "--steps", "2", "--batch", "2", "--preview-steps", "2", "--device", "cpu"];
    let mut train = vec!["train", "--data", &data, "--out", run_s, "--recipe", "cpu-hour", "--lr-warmup", "1"];
    train.extend(common_args);
    ok(&ddpm(&train));
    let ck = run.join("last.safetensors");
    let ck = ck.to_str().unwrap();

    let grid = dir.join("rows.png");
    let args = ["sample", "--checkpoint", ck, "--class", "rows", "--guidance", "2", "--sampler", "dpm++", "--steps", "3", "--n", "4"];
    let out = ddpm(&[&args[..], &["--out", grid.to_str().unwrap(), "--device", "cpu"]].concat());
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("DPM-Solver++(2M) (3 steps, v objective"));
    assert!(grid.exists());
    ok(&ddpm(&["sample", "--checkpoint", ck, "--class", "3", "--steps", "2", "--n", "1", "--out", grid.to_str().unwrap(), "--device", "cpu"]));

    fails_with(&ddpm(&["sample", "--checkpoint", ck, "--sampler", "heun", "--device", "cpu"]), "--sampler heun cannot sample");
    fails_with(&ddpm(&["sample", "--checkpoint", ck, "--class", "9", "--device", "cpu"]), "--class 9: not a class");
    fails_with(&ddpm(&["sample", "--checkpoint", ck, "--class", "1", "--guidance=-1", "--device", "cpu"]), "--guidance");

    let loss = ok(&ddpm(&["loss", "--checkpoint", ck, "--data", &data, "--json", "--device", "cpu"]));
    let v: serde_json::Value = serde_json::from_str(&loss).unwrap();
    assert_eq!(v["objective"], "v");
    assert!(v["loss"].as_f64().unwrap().is_finite());

    // An unconditional (seed recipe) checkpoint has no classes to ask for.
    let seed_run = dir.join("seed");
    let mut train = vec!["train", "--data", &data, "--out", seed_run.to_str().unwrap()];
    train.extend(common_args);
    ok(&ddpm(&train));
    let seed_ck = seed_run.join("last.safetensors");
    fails_with(&ddpm(&["sample", "--checkpoint", seed_ck.to_str().unwrap(), "--class", "1", "--device", "cpu"]), "unconditional");
    std::fs::remove_dir_all(&dir).unwrap();
}
