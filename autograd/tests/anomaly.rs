//! Anomaly mode names the first op that made a NaN or an infinity, forward
//! and backward. The mode is process-wide, so these tests take turns.

use autograd::tensor::{Device, Result, Tensor};
use autograd::{clear_anomaly, first_anomaly, is_anomaly_mode, no_grad, set_anomaly_mode, CustomOp, Var};
use std::sync::{Mutex, MutexGuard};

static TURN: Mutex<()> = Mutex::new(());

/// Holds the turn, with anomaly mode set to `on` and this thread's record cleared.
fn mode(on: bool) -> MutexGuard<'static, ()> {
    let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    set_anomaly_mode(on);
    clear_anomaly();
    turn
}

fn t(data: &[f64]) -> Tensor {
    Tensor::from_vec(data.to_vec(), data.len(), &Device::Cpu).unwrap()
}

#[test]
fn names_the_first_op_whose_output_is_not_finite() {
    let _turn = mode(true);
    let x = Var::param(t(&[1.0, -1.0, 4.0]));
    let doubled = x.mul_scalar(2.0).unwrap(); // op 1: fine
    let logs = doubled.log().unwrap(); // op 2: log(-2) is NaN
    let loss = logs.exp().unwrap().sum_all().unwrap(); // ops 3, 4: carry the NaN on

    let a = first_anomaly().expect("the NaN was seen");
    assert_eq!((a.op, a.op_number, a.nan_count, a.inf_count), ("log", 2, 1, 0));
    assert_eq!(a.var, logs.id());
    assert!(a.on_tape);
    assert_eq!(a.input_shapes.iter().map(|s| s.dims().to_vec()).collect::<Vec<_>>(), vec![vec![3]]);
    assert_eq!(a.output_shape.dims(), &[3]);
    let text = a.to_string();
    assert!(text.contains("op #2 `log`") && text.contains("1 NaN"), "{text}");

    // backward refuses the tape and says where the NaN started: `log` is
    // v2 in tape_summary (v0 = x, v1 = mul_scalar).
    assert!(loss.tape_summary().lines().nth(2).unwrap().starts_with("v2 = log("));
    let err = loss.backward().unwrap_err().to_string();
    assert!(err.contains("`log` (v2 in tape_summary)") && err.contains("1 NaN"), "{err}");
    set_anomaly_mode(false);
}

#[test]
fn names_the_backward_rule_that_made_a_non_finite_gradient() {
    let _turn = mode(true);
    // sqrt(0) = 0 is fine forward, but its derivative 1/(2 sqrt(0)) is infinite.
    let x = Var::param(t(&[0.0, 1.0]));
    let loss = x.sqrt().unwrap().sum_all().unwrap();
    assert_eq!(first_anomaly(), None);
    let err = loss.backward().unwrap_err().to_string();
    assert!(err.contains("backward rule of `sqrt` (v1 in tape_summary)") && err.contains("1 Inf"), "{err}");
    set_anomaly_mode(false);
}

#[test]
fn keeps_only_the_first_anomaly_and_sees_unrecorded_ops() {
    let _turn = mode(true);
    let x = Var::constant(t(&[0.0, 2.0]));
    no_grad(|| {
        let inv = x.powf(-1.0).unwrap(); // 1/0 = inf
        inv.mul_scalar(0.0).unwrap(); // inf * 0 = NaN: fallout, not reported
    });
    let a = first_anomaly().unwrap();
    assert_eq!((a.op, a.op_number, a.on_tape, a.nan_count, a.inf_count), ("powf", 1, false, 0, 1));
    clear_anomaly();
    assert_eq!(first_anomaly(), None);
    set_anomaly_mode(false);
}

struct Broken;
impl CustomOp for Broken {
    fn name(&self) -> &'static str {
        "broken"
    }
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        inputs[0].div_scalar(0.0)
    }
    fn backward(&self, inputs: &[&Tensor], _: &Tensor, _: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(inputs[0].clone())])
    }
}

#[test]
fn checks_custom_ops_too() {
    let _turn = mode(true);
    let x = Var::param(t(&[1.0, 2.0]));
    let y = Var::apply(Broken, &[&x]).unwrap();
    let a = first_anomaly().unwrap();
    assert_eq!((a.op, a.inf_count, a.var), ("broken", 2, y.id()));
    set_anomaly_mode(false);
}

#[test]
fn off_it_records_nothing_and_backward_runs_through_nan() {
    let _turn = mode(false);
    assert!(!is_anomaly_mode());
    let x = Var::param(t(&[-1.0]));
    let loss = x.log().unwrap().sum_all().unwrap();
    assert_eq!(first_anomaly(), None);
    let grads = loss.backward().unwrap();
    assert_eq!(grads.get(&x).unwrap().to_vec::<f64>().unwrap(), vec![-1.0]);
}

/// `PETAL_ANOMALY=1` switches the mode on: checked in a child process,
/// since the variable is read once per process.
#[test]
fn the_environment_variable_switches_it_on() {
    let _turn = mode(false);
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_with_the_environment_variable", "--ignored", "--nocapture", "--test-threads=1"])
        .env("PETAL_ANOMALY", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stdout.contains("1 passed"), "{stdout}\n{stderr}");
    assert!(stderr.contains("petal anomaly mode: first non-finite value: op #1 `log`"), "{stderr}");
}

#[test]
#[ignore = "run by the_environment_variable_switches_it_on, with PETAL_ANOMALY=1"]
fn child_with_the_environment_variable() {
    assert!(is_anomaly_mode());
    let x = Var::param(t(&[-1.0]));
    x.log().unwrap();
    assert_eq!(first_anomaly().unwrap().op, "log");
}
