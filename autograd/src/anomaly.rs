//! Anomaly mode: find the first op that produced a NaN or an infinity.
//!
//! A NaN spreads: once one element of one activation is NaN, the loss, every
//! gradient and then every weight become NaN, and the op that started it is
//! lost in the noise. Anomaly mode checks each op's output as it is made and
//! remembers the first one holding a NaN or an Inf: which op, its place in
//! the sequence of ops, and the shapes that went in and came out.
//!
//! Switch it on with the environment variable `PETAL_ANOMALY=1` (read once,
//! at the first op) or with [`set_anomaly_mode`]. It then works in two
//! places:
//! - **forward**: `Var::from_op`, which every op (built-in or custom) goes
//!   through, checks the output. The first anomaly on a thread is printed to
//!   stderr once and kept; [`first_anomaly`] returns it and
//!   [`clear_anomaly`] forgets it and restarts the op count.
//! - **backward**: `backward` refuses to start from a tape holding a
//!   non-finite value, and stops at the first backward rule that produces a
//!   non-finite gradient. The error names the op and its line in
//!   `tape_summary`.
//!
//! Off, it costs one atomic load per op. On, each op also reduces its output
//! once (a device synchronisation on a GPU): a debugging tool, not a
//! training setting.

use crate::var::{Var, VarId};
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use tensor::{Shape, Tensor};

/// 0: not decided yet (the environment is read at the first query),
/// 1: off, 2: on.
static MODE: AtomicU8 = AtomicU8::new(0);

/// Switches anomaly mode on or off for the whole process, overriding
/// `PETAL_ANOMALY`.
///
/// ```
/// use autograd::{first_anomaly, set_anomaly_mode, Var};
/// use autograd::tensor::{Device, Tensor};
///
/// set_anomaly_mode(true);
/// let x = Var::param(Tensor::from_vec(vec![4.0f64, -1.0], 2, &Device::Cpu)?);
/// let y = x.sqrt()?.mul_scalar(2.0)?; // sqrt(-1) is NaN
/// let first = first_anomaly().expect("sqrt made a NaN");
/// assert_eq!((first.op, first.nan_count), ("sqrt", 1));
/// // backward refuses the tape and names the op that broke it
/// let err = y.sum_all()?.backward().unwrap_err();
/// assert!(err.to_string().contains("`sqrt`"));
/// set_anomaly_mode(false);
/// # Ok::<(), autograd::tensor::Error>(())
/// ```
pub fn set_anomaly_mode(on: bool) {
    MODE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
}

/// Whether anomaly mode is on: set by [`set_anomaly_mode`], else by
/// `PETAL_ANOMALY` (`1`, `true` or `on`).
pub fn is_anomaly_mode() -> bool {
    match MODE.load(Ordering::Relaxed) {
        0 => {
            let on = std::env::var("PETAL_ANOMALY").is_ok_and(|v| matches!(v.trim(), "1" | "true" | "on"));
            // Another thread may have called `set_anomaly_mode` meanwhile: keep its choice.
            let _ = MODE.compare_exchange(0, if on { 2 } else { 1 }, Ordering::Relaxed, Ordering::Relaxed);
            MODE.load(Ordering::Relaxed) == 2
        }
        m => m == 2,
    }
}

/// The first op whose output held a NaN or an infinity.
#[derive(Clone, Debug, PartialEq)]
pub struct Anomaly {
    /// The op's name, as `tape_summary` prints it.
    pub op: &'static str,
    /// Its place in the sequence of ops run on this thread since anomaly
    /// mode was switched on (or since [`clear_anomaly`]), from 1.
    pub op_number: u64,
    /// The id of the value it made.
    pub var: VarId,
    /// Whether it was recorded on the tape (false under `no_grad`, or when
    /// no input needs a gradient).
    pub on_tape: bool,
    /// The shapes of its inputs, in order.
    pub input_shapes: Vec<Shape>,
    pub output_shape: Shape,
    pub nan_count: usize,
    pub inf_count: usize,
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inputs: Vec<String> = self.input_shapes.iter().map(|s| s.to_string()).collect();
        write!(
            f,
            "op #{} `{}` ({:?}, {}) made {} NaN and {} Inf in its output {} from inputs ({})",
            self.op_number,
            self.op,
            self.var,
            if self.on_tape { "on the tape" } else { "not recorded" },
            self.nan_count,
            self.inf_count,
            self.output_shape,
            inputs.join(", ")
        )
    }
}

#[derive(Default)]
struct ThreadState {
    ops_seen: u64,
    first: Option<Anomaly>,
}

thread_local! {
    static STATE: RefCell<ThreadState> = RefCell::new(ThreadState::default());
}

/// The first anomaly seen on this thread since anomaly mode was switched on
/// or [`clear_anomaly`] was called.
pub fn first_anomaly() -> Option<Anomaly> {
    STATE.with(|s| s.borrow().first.clone())
}

/// Forgets this thread's anomaly and restarts its op count.
pub fn clear_anomaly() {
    STATE.with(|s| *s.borrow_mut() = ThreadState::default());
}

/// How many NaN and infinite elements `t` holds; `None` when it has none
/// (or cannot be read, e.g. an integer index tensor that cannot hold either).
fn non_finite_counts(t: &Tensor) -> Option<(usize, usize)> {
    if !t.has_non_finite().ok()? {
        return None;
    }
    let values = t.to_f64_vec().ok()?;
    let nan = values.iter().filter(|v| v.is_nan()).count();
    Some((nan, values.iter().filter(|v| v.is_infinite()).count()))
}

/// The forward hook, called by `Var::from_op` when anomaly mode is on.
pub(crate) fn check_output(op: &'static str, out: &Var, inputs: &[&Var]) {
    let op_number = STATE.with(|s| {
        let mut s = s.borrow_mut();
        s.ops_seen += 1;
        s.ops_seen
    });
    if first_anomaly().is_some() {
        return; // only the first one matters: the rest is its fallout
    }
    let Some((nan_count, inf_count)) = non_finite_counts(out.tensor()) else { return };
    let anomaly = Anomaly {
        op,
        op_number,
        var: out.id(),
        on_tape: out.node().is_some(),
        input_shapes: inputs.iter().map(|v| v.shape().clone()).collect(),
        output_shape: out.shape().clone(),
        nan_count,
        inf_count,
    };
    eprintln!("petal anomaly mode: first non-finite value: {anomaly}");
    STATE.with(|s| s.borrow_mut().first = Some(anomaly));
}

/// The backward hook on the tape before the walk: the first op result, in
/// execution order, that holds a NaN or an infinity, as an error message.
/// `names` are the values' names in `tape_summary`, taken before the walk.
pub(crate) fn check_tape(names: &HashMap<VarId, String>, list: &[Var]) -> Option<String> {
    for v in list {
        if let Some((nan, inf)) = non_finite_counts(v.tensor()) {
            let node = v.node()?;
            let inputs: Vec<String> = node.inputs().iter().map(|i| i.shape().to_string()).collect();
            return Some(format!(
                "anomaly mode: `{}` ({} in tape_summary) made {nan} NaN and {inf} Inf in its output {} from inputs ({}); it is the first op on this tape to do so",
                node.op(),
                names.get(&v.id()).map_or("?", String::as_str),
                v.shape(),
                inputs.join(", ")
            ));
        }
    }
    None
}

/// The backward hook after one rule ran: names the rule if a gradient it
/// produced holds a NaN or an infinity.
pub(crate) fn check_gradient(names: &HashMap<VarId, String>, v: &Var, op: &'static str, input: usize, grad: &Tensor) -> Option<String> {
    let (nan, inf) = non_finite_counts(grad)?;
    Some(format!(
        "anomaly mode: the backward rule of `{op}` ({} in tape_summary) gave input {input} a gradient {} with {nan} NaN and {inf} Inf",
        names.get(&v.id()).map_or("?", String::as_str),
        grad.shape()
    ))
}
