//! `Var`: a tensor plus, when it was computed from tracked values, the tape
//! node that made it.
//!
//! A `Var` is cheap to clone (an `Arc`). It is one of three kinds:
//! - a **constant** (`Var::constant`, or any result computed under `no_grad`
//!   or from constants only): no history, never gets a gradient;
//! - a **parameter** (`Var::param`): a leaf that asks for its gradient;
//! - an **op result**: holds the `Node` (see `tape.rs`) that records which
//!   op made it, from which parent `Var`s, and what its backward rule needs.

use crate::anomaly;
use crate::tape::{self, Node};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tensor::{DType, Device, Result, Shape, Tensor};

/// Identifies a `Var`. Ids increase monotonically: an op's result always has
/// a larger id than each of its inputs, which is what lets `backward` order
/// the tape by sorting ids (see `tape.rs`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct VarId(usize);

impl VarId {
    pub(crate) fn fresh() -> VarId {
        static NEXT: AtomicUsize = AtomicUsize::new(1);
        VarId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

#[derive(Clone)]
pub struct Var(pub(crate) Arc<VarInner>);

pub(crate) struct VarInner {
    pub(crate) id: VarId,
    pub(crate) tensor: Tensor,
    pub(crate) requires_grad: bool,
    /// `Some` for op results; `None` for leaves (constants and parameters).
    pub(crate) node: Option<Arc<Node>>,
}

/// What an op's backward rule receives: the gradient of its output, and for
/// each input whether that input wants a gradient (a rule may skip work for
/// the others and return `None` there). It returns one entry per input.
pub(crate) type BackwardFn = Box<dyn FnOnce(&Tensor, &[bool]) -> Result<Vec<Option<Tensor>>> + Send>;

impl Var {
    fn leaf(t: Tensor, requires_grad: bool) -> Var {
        Var(Arc::new(VarInner { id: VarId::fresh(), tensor: t, requires_grad, node: None }))
    }

    /// A value that never gets a gradient (data, targets, frozen weights).
    pub fn constant(t: Tensor) -> Var {
        Var::leaf(t, false)
    }

    /// A leaf that asks for its gradient: `backward` returns its gradient.
    pub fn param(t: Tensor) -> Var {
        Var::leaf(t, true)
    }

    /// The same tensor, as a constant with no history.
    ///
    /// ```
    /// use autograd::Var;
    /// use autograd::tensor::{Device, Tensor};
    ///
    /// let w = Var::param(Tensor::from_vec(vec![3.0f64], 1, &Device::Cpu)?);
    /// // d/dw (stop_gradient(w²) * w) = w² = 9: the detached factor is a constant
    /// let loss = w.sqr()?.detach().mul(&w)?.sum_all()?;
    /// assert_eq!(loss.backward()?.get(&w).unwrap().to_vec::<f64>()?, vec![9.0]);
    /// # Ok::<(), autograd::tensor::Error>(())
    /// ```
    pub fn detach(&self) -> Var {
        Var::constant(self.tensor().clone())
    }

    /// Records an op on the tape: `out = op(inputs)`, with `backward`
    /// mapping the output gradient to the input gradients. When no input
    /// asks for a gradient, or inside `no_grad`, nothing is recorded (the
    /// closure, and the tensors it saved, are dropped right away) and the
    /// result is a constant. In anomaly mode the output is checked for NaN
    /// and Inf.
    pub(crate) fn from_op(
        op: &'static str,
        out: Tensor,
        inputs: &[&Var],
        backward: impl FnOnce(&Tensor, &[bool]) -> Result<Vec<Option<Tensor>>> + Send + 'static,
    ) -> Var {
        let result = if tracks(inputs) {
            let parents = inputs.iter().map(|&v| v.clone()).collect();
            let node = Node::new(op, parents, Box::new(backward));
            Var(Arc::new(VarInner { id: VarId::fresh(), tensor: out, requires_grad: true, node: Some(Arc::new(node)) }))
        } else {
            Var::constant(out)
        };
        // Off, this is one atomic load (see `anomaly.rs`).
        if anomaly::is_anomaly_mode() {
            anomaly::check_output(op, &result, inputs);
        }
        result
    }

    pub(crate) fn node(&self) -> Option<&Arc<Node>> {
        self.0.node.as_ref()
    }

    pub fn tensor(&self) -> &Tensor {
        &self.0.tensor
    }
    pub fn id(&self) -> VarId {
        self.0.id
    }
    /// True for parameters and for results of ops that reach a parameter
    /// (recorded outside `no_grad`).
    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad
    }
    pub fn dims(&self) -> &[usize] {
        self.0.tensor.dims()
    }
    pub fn shape(&self) -> &Shape {
        self.0.tensor.shape()
    }
    pub fn dtype(&self) -> DType {
        self.0.tensor.dtype()
    }
    pub fn device(&self) -> &Device {
        self.0.tensor.device()
    }
}

/// Whether an op on these inputs should be recorded.
pub(crate) fn tracks(inputs: &[&Var]) -> bool {
    tape::is_grad_enabled() && inputs.iter().any(|v| v.requires_grad())
}

impl std::fmt::Debug for Var {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match (self.node(), self.requires_grad()) {
            (Some(n), _) => n.op(),
            (None, true) => "param",
            (None, false) => "constant",
        };
        write!(f, "Var({:?}, {kind}, {:?})", self.id(), self.tensor())
    }
}
