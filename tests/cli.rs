//! The `ddpm` command as a user runs it: parameter counts, sampling from
//! petal and PyTorch checkpoints, the held-out loss, and clear errors.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn ddpm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ddpm")).args(args).output().expect("run ddpm")
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "ddpm failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn info_counts_parameters_exactly_as_pytorch() {
    for (preset, params) in [("tiny", 715_843u64), ("flowers64", 16_634_371), ("flowers160", 41_058_627)] {
        let out = stdout(&ddpm(&["info", "--preset", preset, "--json"]));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["params"].as_u64(), Some(params), "{preset}");
    }
    let table = stdout(&ddpm(&["info", "--preset", "tiny"]));
    assert!(table.contains("total") && table.contains("715843"), "{table}");
}

fn fixture_weights() -> Option<std::path::PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/tiny/weights.safetensors");
    if p.exists() {
        return Some(p);
    }
    eprintln!("SKIPPED: no PyTorch fixture weights at {}", p.display());
    None
}

#[test]
fn samples_from_a_bare_pytorch_state_dict_with_given_noise() {
    let Some(weights) = fixture_weights() else { return };
    let dir = common::temp_dir("cli-sample");
    let (noise, grid, samples, strip) = (dir.join("noise.safetensors"), dir.join("grid.png"), dir.join("s.safetensors"), dir.join("strip.png"));
    // Write the starting noise with petal's own checkpoint writer.
    let mut ck = nn::Checkpoint::default();
    let mut rng = tensor::Rng::new(3);
    ck.model.insert("noise".into(), tensor::Tensor::randn(0.0, 1.0, [2, 3, 32, 32], tensor::DType::F32, &tensor::Device::Cpu, &mut rng).unwrap());
    nn::save_checkpoint(&noise, &ck).unwrap();

    let w = weights.to_str().unwrap();
    let without_preset = ddpm(&["sample", "--checkpoint", w, "--steps", "2", "--device", "cpu"]);
    assert!(!without_preset.status.success());
    assert!(String::from_utf8_lossy(&without_preset.stderr).contains("--preset"), "a bare state_dict needs --preset");

    let args = ["sample", "--checkpoint", w, "--preset", "tiny", "--sampler", "ddim", "--steps", "4", "--device", "cpu"];
    let mut full: Vec<&str> = args.to_vec();
    full.extend(["--noise", noise.to_str().unwrap(), "--out", grid.to_str().unwrap()]);
    full.extend(["--save-tensor", samples.to_str().unwrap(), "--strip", strip.to_str().unwrap()]);
    stdout(&ddpm(&full));
    let img = image::open(&grid).unwrap();
    assert_eq!((img.width(), img.height()), (2 * 34 + 2, 34 + 2), "2 tiles of 32 px with 2 px borders");
    assert!(strip.exists());
    let out = nn::load_checkpoint(&samples).unwrap();
    let s = &out.model["samples"];
    assert_eq!(s.dims(), &[2, 3, 32, 32]);
    let v = s.to_f64_vec().unwrap();
    assert!(v.iter().all(|x| (-1.0..=1.0).contains(x)));

    // Same weights and noise give the same images.
    let again = dir.join("again.safetensors");
    let mut twice: Vec<&str> = args.to_vec();
    twice.extend(["--noise", noise.to_str().unwrap(), "--out", grid.to_str().unwrap(), "--save-tensor", again.to_str().unwrap()]);
    stdout(&ddpm(&twice));
    assert_eq!(nn::load_checkpoint(&again).unwrap().model["samples"].to_f64_vec().unwrap(), v);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn heldout_loss_is_reported_as_json() {
    let Some(weights) = fixture_weights() else { return };
    let dir = common::temp_dir("cli-loss");
    let data = common::synthetic_images(&dir, 3);
    let out = stdout(&ddpm(&["loss", "--checkpoint", weights.to_str().unwrap(), "--preset", "tiny", "--data", data.to_str().unwrap(), "--device", "cpu", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let loss = v["loss"].as_f64().unwrap();
    assert!(loss.is_finite() && loss > 0.0, "{out}");
    // Fixed noise: the same number twice.
    let out2 = stdout(&ddpm(&["loss", "--checkpoint", weights.to_str().unwrap(), "--preset", "tiny", "--data", data.to_str().unwrap(), "--device", "cpu", "--json"]));
    assert_eq!(out, out2);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_gets_clear_errors() {
    let dir = common::temp_dir("cli-errors");
    let corrupt = dir.join("corrupt.safetensors");
    std::fs::write(&corrupt, b"not a checkpoint at all").unwrap();
    let o = ddpm(&["sample", "--checkpoint", corrupt.to_str().unwrap(), "--preset", "tiny", "--device", "cpu"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("corrupt.safetensors"), "the error names the file");

    let missing = dir.join("no-such-folder");
    let o = ddpm(&["train", "--data", missing.to_str().unwrap(), "--out", dir.join("run").to_str().unwrap(), "--device", "cpu"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no-such-folder"), "the error names the folder");

    let o = ddpm(&["info", "--preset", "huge"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("tiny, flowers64, flowers160"));

    if !tensor::cuda::cuda_is_available() {
        let o = ddpm(&["bench", "--device", "cuda", "--steps", "1"]);
        assert!(!o.status.success(), "no GPU here: asking for one is an error, not a panic");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("--device cuda") && !err.contains("panicked"), "{err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
