//! The tape: one `Node` per recorded op, and the backward walk over it.
//!
//! ## Who owns what
//! The graph owns its parents: every op result `Var` holds an
//! `Arc<Node>`, and a node owns only its parents' `Var`s plus the tensors
//! its backward rule saved (captured by the rule's closure). Nothing points
//! from a parent to its children, so there are no cycles, and dropping the
//! last `Var` of a computation frees its whole history.
//!
//! ## The Wengert list
//! `Var` ids come from one global counter and an op's result is created
//! after its inputs, so ids increase along every edge of the graph. Sorting
//! the nodes reachable from the loss by id therefore gives a topological
//! order: the Wengert list, the sequence of ops as they were executed.
//! `backward` walks it from the highest id down, i.e. in reverse:
//! when a node is reached, every op that used its output has already been
//! processed, so its gradient is complete.
//!
//! ## Memory during backward
//! - A node's output gradient is removed from the map as the node is
//!   processed, and dropped once its rule has run.
//! - The rule and its saved tensors sit in a `Mutex<Option<..>>`: backward
//!   takes them out and consumes them, so they are freed node by node.
//! - The node's links to its parents are taken out at the same time, so
//!   after `backward` nothing of the tape is left (the loss `Var` keeps only
//!   its own value). A second `backward` through the same graph is an error.

use crate::anomaly;
use crate::var::{BackwardFn, Var, VarId};
use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use tensor::{Error, Result, Tensor};

/// One recorded op.
pub(crate) struct Node {
    op: &'static str,
    /// The parents and the backward rule; `None` once backward consumed them.
    saved: Mutex<Option<Saved>>,
}

pub(crate) struct Saved {
    pub(crate) inputs: Vec<Var>,
    backward: BackwardFn,
}

impl Node {
    pub(crate) fn new(op: &'static str, inputs: Vec<Var>, backward: BackwardFn) -> Node {
        Node { op, saved: Mutex::new(Some(Saved { inputs, backward })) }
    }

    pub(crate) fn op(&self) -> &'static str {
        self.op
    }

    pub(crate) fn saved(&self) -> MutexGuard<'_, Option<Saved>> {
        self.saved.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The parent `Var`s, empty once backward has consumed this node.
    pub(crate) fn inputs(&self) -> Vec<Var> {
        self.saved().as_ref().map(|s| s.inputs.clone()).unwrap_or_default()
    }
}

impl Drop for Node {
    /// Frees a long chain of nodes with a loop instead of recursion, so a
    /// graph thousands of ops deep cannot overflow the stack when dropped.
    fn drop(&mut self) {
        let mut stack: Vec<Var> = match self.saved.get_mut().unwrap_or_else(|e| e.into_inner()).take() {
            Some(s) => s.inputs,
            None => return,
        };
        while let Some(v) = stack.pop() {
            // Only the last owner of a parent unlinks it; others just drop a count.
            if let Ok(inner) = Arc::try_unwrap(v.0) {
                if let Some(Ok(mut node)) = inner.node.map(Arc::try_unwrap) {
                    if let Some(s) = node.saved.get_mut().unwrap_or_else(|e| e.into_inner()).take() {
                        stack.extend(s.inputs);
                    }
                }
            }
        }
    }
}

// ---- grad mode ------------------------------------------------------------

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// False inside `no_grad` (on this thread).
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Runs `f` with recording switched off on this thread: ops inside return
/// constants and keep nothing for a backward pass (evaluation, sampling,
/// optimizer arithmetic). Nests, and restores the previous mode even if `f`
/// panics.
///
/// ```
/// use autograd::{no_grad, Var};
/// use autograd::tensor::{Device, Tensor};
///
/// let w = Var::param(Tensor::from_vec(vec![1.0f32, 2.0], 2, &Device::Cpu)?);
/// let y = no_grad(|| w.mul_scalar(3.0))?;
/// assert!(!y.requires_grad()); // a constant: nothing was recorded
/// assert!(w.mul_scalar(3.0)?.requires_grad());
/// # Ok::<(), autograd::tensor::Error>(())
/// ```
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            GRAD_ENABLED.with(|g| g.set(self.0));
        }
    }
    let _restore = Restore(GRAD_ENABLED.with(|g| g.replace(false)));
    f()
}

// ---- gradients --------------------------------------------------------------

/// The gradients `backward` found, keyed by parameter.
#[derive(Default)]
pub struct Grads(HashMap<VarId, Tensor>);

impl Grads {
    /// The gradient of `v`, if `v` is a parameter the loss depends on.
    pub fn get(&self, v: &Var) -> Option<&Tensor> {
        self.0.get(&v.id())
    }
    /// Takes the gradient of `v` out, e.g. to hand it to an optimizer.
    ///
    /// ```
    /// use autograd::Var;
    /// use autograd::tensor::{Device, Tensor};
    ///
    /// let w = Var::param(Tensor::from_vec(vec![3.0f64], 1, &Device::Cpu)?);
    /// let mut grads = w.sqr()?.sum_all()?.backward()?; // d(w²)/dw = 2w
    /// let g = grads.remove(&w).unwrap();
    /// assert_eq!(g.to_vec::<f64>()?, vec![6.0]);
    /// assert!(grads.is_empty());
    /// # Ok::<(), autograd::tensor::Error>(())
    /// ```
    pub fn remove(&mut self, v: &Var) -> Option<Tensor> {
        self.0.remove(&v.id())
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Grads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<_> = self.0.iter().map(|(id, t)| (*id, t.shape().clone())).collect();
        ids.sort_by_key(|(id, _)| *id);
        f.debug_map().entries(ids).finish()
    }
}

fn consumed(op: &str) -> Error {
    Error::BadArgument { op: "backward", msg: format!("the graph through `{op}` was already consumed by an earlier backward(); run the forward pass again") }
}

/// The op results reachable from `root` through values that require a
/// gradient, sorted by id: the Wengert list, in execution order.
fn wengert_list(root: &Var) -> Result<Vec<Var>> {
    let mut seen = HashSet::new();
    let mut stack = vec![root.clone()];
    let mut list = Vec::new();
    while let Some(v) = stack.pop() {
        if !seen.insert(v.id()) {
            continue;
        }
        let Some(node) = v.node() else { continue }; // a leaf
        {
            let saved = node.saved();
            let saved = saved.as_ref().ok_or_else(|| consumed(node.op()))?;
            stack.extend(saved.inputs.iter().filter(|i| i.requires_grad() && !seen.contains(&i.id())).cloned());
        }
        list.push(v);
    }
    list.sort_by_key(|v| v.id());
    Ok(list)
}

/// Reverse mode: see the module docs.
pub(crate) fn backward(root: &Var) -> Result<Grads> {
    if root.tensor().elem_count() != 1 {
        return Err(Error::BadShape { op: "backward", shape: root.shape().clone(), msg: "needs a one-element value (a loss)".into() });
    }
    if !root.requires_grad() {
        return Err(Error::BadArgument { op: "backward", msg: "this value depends on no parameter (made from constants only, or under no_grad)".into() });
    }
    let mut list = wengert_list(root)?;
    // Anomaly mode: refuse a tape that already holds NaN or Inf, naming the
    // first op that made one; then check each rule's gradients as they come.
    let anomaly_names = anomaly::is_anomaly_mode().then(|| crate::display::tape_names(root));
    if let Some(names) = &anomaly_names {
        if let Some(msg) = anomaly::check_tape(names, &list) {
            return Err(Error::BadArgument { op: "backward", msg });
        }
    }
    let mut grads: HashMap<VarId, Tensor> = HashMap::new();
    grads.insert(root.id(), root.tensor().ones_like()?);

    // Highest id first: the tape in reverse.
    while let Some(v) = list.pop() {
        let node = v.node().expect("the list holds op results only");
        let Some(Saved { inputs, backward }) = node.saved().take() else { return Err(consumed(node.op())) };
        // No gradient reached this node (its rule gave `None` on the way):
        // dropping `backward` and `inputs` still frees it.
        let Some(grad) = grads.remove(&v.id()) else { continue };
        let needs: Vec<bool> = inputs.iter().map(Var::requires_grad).collect();
        let input_grads = backward(&grad, &needs)?; // consumes the saved tensors
        drop(grad);
        if input_grads.len() != inputs.len() {
            return Err(Error::BadArgument { op: node.op(), msg: format!("backward rule gave {} gradients for {} inputs", input_grads.len(), inputs.len()) });
        }
        for (k, ((input, need), g)) in inputs.iter().zip(needs).zip(input_grads).enumerate() {
            let Some(g) = g.filter(|_| need) else { continue };
            if let Some(msg) = anomaly_names.as_ref().and_then(|names| anomaly::check_gradient(names, &v, node.op(), k, &g)) {
                return Err(Error::BadArgument { op: "backward", msg });
            }
            if g.shape() != input.shape() {
                return Err(Error::ShapeMismatch { op: node.op(), lhs: input.shape().clone(), rhs: g.shape().clone() });
            }
            // Fan-out: a value used by several ops receives the sum.
            let total = match grads.remove(&input.id()) {
                // In place when `acc` is not shared (see `Tensor::add_into`).
                Some(acc) => acc.add_into(&g)?,
                None => g,
            };
            grads.insert(input.id(), total);
        }
    }
    // Every op result has been processed and removed; what is left are the
    // gradients of leaves that require one, i.e. parameters. Hand them out
    // contiguous (a broadcast rule may have produced a stride-0 view), and
    // each with storage of its own: rules pass gradients through unchanged
    // (`add` gives both inputs the same tensor), and an optimizer or a
    // clipping step that writes one gradient in place must not change another.
    let mut out = HashMap::with_capacity(grads.len());
    let mut handed_out: Vec<Tensor> = Vec::with_capacity(grads.len());
    for (id, g) in grads {
        let mut g = g.contiguous()?;
        if handed_out.iter().any(|h| h.same_storage(&g)) {
            g = g.copy()?;
        }
        handed_out.push(g.clone());
        out.insert(id, g);
    }
    Ok(Grads(out))
}

impl Var {
    /// Reverse-mode differentiation from this one-element value: returns the
    /// gradient of every parameter it depends on. Consumes the tape: the
    /// graph behind `self` is freed as the walk goes, so a second call is an
    /// error.
    ///
    /// ```
    /// use autograd::Var;
    /// use autograd::tensor::{Device, Tensor};
    ///
    /// let x = Var::param(Tensor::from_vec(vec![1.0f64, 2.0, 3.0], 3, &Device::Cpu)?);
    /// let loss = x.exp()?.sum_all()?;
    /// let grads = loss.backward()?;
    /// let e: Vec<f64> = [1.0f64, 2.0, 3.0].iter().map(|v| v.exp()).collect();
    /// assert_eq!(grads.get(&x).unwrap().to_vec::<f64>()?, e);
    /// assert!(loss.backward().is_err(), "the tape was consumed");
    /// # Ok::<(), autograd::tensor::Error>(())
    /// ```
    pub fn backward(&self) -> Result<Grads> {
        backward(self)
    }
}
