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
    common::fixtures().map(|dir| dir.join("weights.safetensors"))
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

// ---- mistakes, interruptions and nonsense input --------------------------

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts `o` failed with a message containing `want`, and without a panic.
fn fails_with(o: &Output, want: &str, what: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "{what}: must fail, but exited 0\n{err}");
    assert_eq!(o.status.code(), Some(1), "{what}: exits 1 with a message, not a panic or abort\n{err}");
    assert!(err.contains(want), "{what}: the message must contain `{want}`:\n{err}");
    assert!(!err.contains("panicked"), "{what}: {err}");
}

/// A valid petal checkpoint of a freshly initialised tiny model; `tweak`
/// may break it.
fn tiny_checkpoint(path: &Path, tweak: impl FnOnce(&mut nn::Checkpoint)) {
    let model = ddpm::model::Model::new(&ddpm::config::Preset::Tiny.config(), &tensor::Device::Cpu, 0).unwrap();
    let mut ck = nn::Checkpoint::new(&model.store);
    ck.set_meta("config", serde_json::to_string(model.config()).unwrap());
    tweak(&mut ck);
    nn::save_checkpoint(path, &ck).unwrap();
}

/// Arguments of a short CPU run on `data` into `out`.
fn short_train<'a>(data: &'a str, out: &'a str, steps: &'a str, batch: &'a str) -> Vec<&'a str> {
    vec!["train", "--data", data, "--out", out, "--steps", steps, "--batch", batch, "--preview-steps", "1", "--device", "cpu"]
}

/// The next stderr line of a child that satisfies `wanted`, or a panic
/// naming the lines seen.
fn wait_for_line(lines: &std::sync::mpsc::Receiver<String>, seen: &mut Vec<String>, wanted: impl Fn(&str) -> bool) {
    let timeout = std::time::Duration::from_secs(120);
    loop {
        let line = lines.recv_timeout(timeout).unwrap_or_else(|_| panic!("no such line within {timeout:?}: {seen:?}"));
        let found = wanted(&line);
        seen.push(line);
        if found {
            return;
        }
    }
}

#[test]
fn nonsense_numbers_are_refused_before_any_work_naming_the_flag() {
    let dir = common::temp_dir("cli-nonsense");
    let data = common::synthetic_images(&dir, 2);
    let (data, run) = (data.to_str().unwrap().to_string(), dir.join("run"));
    let out = run.to_str().unwrap();
    let train = |extra: &[&str]| {
        let mut args = vec!["train", "--data", &data, "--out", out, "--device", "cpu"];
        args.extend(extra);
        ddpm(&args)
    };
    for (extra, flag) in [
        (&["--batch", "0"][..], "--batch"),
        (&["--steps", "0"], "--steps"),
        (&["--epochs", "0"], "--epochs"),
        (&["--stop-at", "0"], "--stop-at"),
        (&["--preview-steps", "0"], "--preview-steps"),
        (&["--sample-every", "0"], "--sample-every"),
        (&["--lr", "-1"], "--lr"),
        (&["--lr", "NaN"], "--lr"),
        (&["--lr", "0"], "--lr"),
        (&["--tf32"], "--tf32"),
        (&["--progress-every", "-3"], "--progress-every"),
        (&["--batch", "100000000"], "--batch 100000000"),
        (&["--epochs", "18446744073709551615"], "--epochs"),
        (&["--steps", "5", "--stop-at", "9"], "--stop-at 9"),
    ] {
        let o = train(extra);
        fails_with(&o, flag, &format!("train {extra:?}"));
        assert!(!run.exists(), "train {extra:?}: a failed start leaves no run directory behind");
    }
    let o = train(&["--lr", "-1"]);
    assert!(!stderr(&o).contains("AdamConfig"), "{}", stderr(&o));

    let ck = dir.join("tiny.safetensors");
    tiny_checkpoint(&ck, |_| {});
    let ck = ck.to_str().unwrap();
    let grid = dir.join("grid.png");
    let sample = |extra: &[&str]| {
        let mut args = vec!["sample", "--checkpoint", ck, "--device", "cpu"];
        args.extend(extra);
        for (flag, default) in [("--steps", "1"), ("--out", grid.to_str().unwrap())] {
            if !extra.contains(&flag) {
                args.extend([flag, default]);
            }
        }
        ddpm(&args)
    };
    for (extra, flag) in [
        (&["--steps", "0"][..], "--steps"),
        (&["--n", "0"], "--n"),
        (&["--out", "grid.jpg"], "--out grid.jpg"),
        (&["--strip", "strip.jpeg"], "--strip strip.jpeg"),
        (&["--n", "1000000000"], "--n 1000000000"),
    ] {
        fails_with(&sample(extra), flag, &format!("sample {extra:?}"));
        assert!(!grid.exists() && !Path::new("grid.jpg").exists(), "sample {extra:?} wrote an image");
    }
    for (extra, flag) in [
        (&["--batch", "0"][..], "--batch"),
        (&["--steps", "0"], "--steps"),
        (&["--tf32", "--device", "cpu"], "--tf32"),
        (&["--batch", "100000000", "--device", "cpu"], "--batch 100000000"),
    ] {
        let mut args = vec!["bench"];
        args.extend(extra);
        if !extra.contains(&"--steps") {
            args.extend(["--steps", "1"]);
        }
        fails_with(&ddpm(&args), flag, &format!("bench {extra:?}"));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_run_directory_is_never_overwritten_and_resume_never_ignores_a_flag() {
    let dir = common::temp_dir("cli-overwrite");
    let data = common::synthetic_images(&dir, 4);
    let (data, run) = (data.to_str().unwrap(), dir.join("run"));
    let out = run.to_str().unwrap();
    let done = stdout(&ddpm(&short_train(data, out, "2", "2")));
    assert!(done.contains("done: 2 steps, last loss 1.") || done.contains("done: 2 steps, last loss 0."), "{done}");
    assert!(!done.contains("Some("), "{done}");
    let last = run.join("last.safetensors");
    let before = std::fs::read(&last).unwrap();
    let log_before = std::fs::read_to_string(run.join("loss.csv")).unwrap();

    // Forgetting --resume: refused, nothing touched.
    let o = ddpm(&short_train(data, out, "2", "2"));
    fails_with(&o, "--resume", "a second fresh run into the same --out");
    assert!(stderr(&o).contains("--out"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&last).unwrap(), before, "last.safetensors was replaced");
    assert_eq!(std::fs::read_to_string(run.join("loss.csv")).unwrap(), log_before, "loss.csv was replaced");

    // A changed batch, learning rate, seed, preset or data is refused by name.
    let other_data = common::synthetic_images(&dir.join("other"), 4);
    for (flag, value) in [("--batch", "3"), ("--lr", "0.5"), ("--seed", "9"), ("--preset", "flowers64"), ("--data", other_data.to_str().unwrap())] {
        let o = ddpm(&["train", "--out", out, "--resume", "--device", "cpu", flag, value]);
        fails_with(&o, &format!("{flag} {value} differs"), &format!("--resume {flag} {value}"));
    }
    // The same values are fine, and a larger --steps extends the finished run.
    let o = ddpm(&["train", "--out", out, "--resume", "--device", "cpu", "--batch", "2", "--steps", "3", "--preview-steps", "1"]);
    let text = stdout(&o);
    assert!(text.contains("done: 3 steps"), "{text}");
    assert!(stderr(&o).contains("from 2 to 3 steps"), "the new length is announced: {}", stderr(&o));
    assert_eq!(nn::load_checkpoint(&last).unwrap().meta("step"), Some("3"));
    // Fewer steps than already done is refused.
    fails_with(&ddpm(&["train", "--out", out, "--resume", "--device", "cpu", "--steps", "1"]), "--steps", "--resume --steps 1");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn broken_checkpoint_contents_are_errors_not_black_images_or_panics() {
    let dir = common::temp_dir("cli-broken-weights");
    let data = common::synthetic_images(&dir, 2);
    let nan = dir.join("nan.safetensors");
    tiny_checkpoint(&nan, |ck| {
        let t = &ck.model["conv_out.weight"];
        let bad = tensor::Tensor::from_vec(vec![f32::NAN; t.elem_count()], t.dims().to_vec(), &tensor::Device::Cpu).unwrap();
        ck.model.insert("conv_out.weight".into(), bad);
    });
    let grid = dir.join("grid.png");
    let o = ddpm(&["sample", "--checkpoint", nan.to_str().unwrap(), "--steps", "1", "--n", "1", "--device", "cpu", "--out", grid.to_str().unwrap()]);
    fails_with(&o, "conv_out.weight", "sampling NaN weights");
    assert!(!grid.exists(), "no image from NaN weights");
    let o = ddpm(&["loss", "--checkpoint", nan.to_str().unwrap(), "--data", data.to_str().unwrap(), "--device", "cpu"]);
    fails_with(&o, "NaN", "the loss of NaN weights");

    let no_levels = dir.join("no-levels.safetensors");
    tiny_checkpoint(&no_levels, |ck| {
        let mut config = ddpm::config::Preset::Tiny.config();
        config.channel_mults.clear();
        ck.set_meta("config", serde_json::to_string(&config).unwrap());
    });
    let o = ddpm(&["sample", "--checkpoint", no_levels.to_str().unwrap(), "--steps", "1", "--n", "1", "--device", "cpu", "--out", grid.to_str().unwrap()]);
    fails_with(&o, "channel_mults is empty", "a config without levels");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn output_speaks_to_users_not_in_rust_debug_syntax() {
    let dir = common::temp_dir("cli-words");
    let ck = dir.join("tiny.safetensors");
    tiny_checkpoint(&ck, |ck| {
        // With EMA weights, like every checkpoint a run writes.
        ck.ema = Some(ck.model.clone());
    });
    let grid = dir.join("one.png");
    let o = ddpm(&["sample", "--checkpoint", ck.to_str().unwrap(), "--steps", "1", "--n", "1", "--device", "cpu", "--out", grid.to_str().unwrap()]);
    stdout(&o);
    let err = stderr(&o);
    assert!(err.contains("sampling 1 image with DDIM (1 steps, EMA weights)"), "{err}");
    for internal in ["Ddim", "Ema", "1 images", "Some("] {
        assert!(!err.contains(internal), "`{internal}` in: {err}");
    }
    // Each cause of an error once, not again in a `Caused by` list.
    let o = ddpm(&["sample", "--checkpoint", dir.join("missing.safetensors").to_str().unwrap(), "--device", "cpu"]);
    let err = stderr(&o);
    assert!(!o.status.success() && err.contains("missing.safetensors"), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    for (i, a) in lines.iter().enumerate() {
        for b in &lines[i + 1..] {
            let b = b.trim_start().trim_start_matches("caused by: ");
            assert!(!a.contains(b), "a cause printed twice:\n{err}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn help_lists_choices_defaults_and_examples() {
    let help = stdout(&ddpm(&["train", "--help"]));
    for want in ["tiny, flowers64, flowers160", "f32, bf16, f16", "default: tiny", "default: 100 epochs", "default: 32", "Examples:", "--resume"] {
        assert!(help.contains(want), "`train --help` lacks `{want}`:\n{help}");
    }
    let help = stdout(&ddpm(&["sample", "--help"]));
    assert!(help.contains("Examples:") && help.contains("tiny, flowers64, flowers160"), "{help}");
    let help = stdout(&ddpm(&["bench", "--help"]));
    assert!(help.contains("f32, bf16, f16"), "{help}");
}

// ---- stop signals ------------------------------------------------------------

/// Starts a long CPU run whose stderr prints a line per step (it is a pipe,
/// not a terminal); returns the child and a channel of its stderr lines.
fn start_long_run(data: &str, out: &str) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    // Batches of 8 make each step last long enough for a second signal to
    // land while the run is still stopping.
    let mut args = short_train(data, out, "100000", "8");
    args.extend(["--progress-every", "0"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_ddpm"))
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run ddpm");
    let (tx, rx) = std::sync::mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Waits for the run to log step 3 (its plain progress line), then sends
/// `signals`: each one after the run acknowledged the one before (two
/// signals sent at once may reach the process as one). Returns the exit
/// status, stdout, all of stderr and the test directory.
fn stop_run_with(name: &str, signals: &[libc::c_int]) -> (std::process::ExitStatus, String, String, std::path::PathBuf) {
    use std::io::Read;
    let dir = common::temp_dir(name);
    let data = common::synthetic_images(&dir, 8);
    let run = dir.join("run");
    let (mut child, lines) = start_long_run(data.to_str().unwrap(), run.to_str().unwrap());
    let mut seen = Vec::new();
    wait_for_line(&lines, &mut seen, |l| l.starts_with("step 3/"));
    for (i, &sig) in signals.iter().enumerate() {
        if i > 0 {
            wait_for_line(&lines, &mut seen, |l| l.starts_with("stop requested"));
        }
        // SAFETY: kill(2) on the pid of our own child.
        assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, sig) }, 0);
    }
    let status = child.wait().unwrap();
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    seen.extend(lines.iter());
    (status, out, seen.join("\n"), dir)
}

/// The checkpoint holds the last logged step: nothing was lost.
fn assert_checkpoint_matches_log(dir: &Path, out: &str, err: &str) {
    let run = dir.join("run");
    let ck = nn::load_checkpoint(run.join("last.safetensors")).unwrap_or_else(|e| panic!("no checkpoint: {e}\n{err}"));
    let step: u64 = ck.meta("step").unwrap().parse().unwrap();
    let logged = std::fs::read_to_string(run.join("loss.csv")).unwrap().lines().count() as u64 - 1;
    assert_eq!(step, logged, "the checkpoint holds every logged step");
    assert!(step >= 3, "{err}");
    assert!(out.contains(&format!("stopped at step {step} of 100000")) && out.contains("--resume"), "{out}\n{err}");
}

#[test]
fn sigterm_saves_a_checkpoint_and_exits_cleanly() {
    let (status, out, err, dir) = stop_run_with("cli-sigterm", &[libc::SIGTERM]);
    assert!(status.success(), "a stopped run exits 0: {status:?}\n{err}");
    assert!(err.contains("stop requested"), "the signal is acknowledged at once:\n{err}");
    assert_checkpoint_matches_log(&dir, &out, &err);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_second_ctrl_c_waits_for_the_checkpoint_and_says_so() {
    let (status, out, err, dir) = stop_run_with("cli-sigint-twice", &[libc::SIGINT, libc::SIGINT]);
    assert!(status.success(), "the second signal does not kill the run: {status:?}\n{err}");
    assert!(err.contains("stop requested"), "{err}");
    // The second signal lands during the step or during the save; either way it says the save comes first.
    assert!(err.contains("waiting for it to finish") || err.contains("a checkpoint is written right after the current step"), "{err}");
    assert_checkpoint_matches_log(&dir, &out, &err);
    std::fs::remove_dir_all(&dir).unwrap();
}
