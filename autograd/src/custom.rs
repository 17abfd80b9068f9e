//! Differentiable ops defined outside this crate.
//!
//! Every op in `ops/` records itself with the same private call: compute the
//! output with the tensor crate, then hand the tape a closure that maps the
//! output gradient to one gradient per input. This file opens that call to
//! user code, in two forms:
//!
//! - [`Var::custom`]: the closure form, for a one-off op written inline;
//! - [`CustomOp`] with [`Var::apply`]: a type with a `forward` and a
//!   `backward`, for an op you want to name, test and reuse.
//!
//! Either way the op behaves exactly like a built-in one: it is recorded
//! only when an input needs a gradient (and not under `no_grad`), it shows
//! in `tape_summary` and `to_dot` under its name, anomaly mode checks its
//! output, and `backward` checks that its rule returns one gradient per
//! input with that input's shape. Check a new rule with
//! [`check_gradients`](crate::check_gradients) before trusting it.

use crate::var::Var;
use tensor::{Error, Result, Tensor};

/// A differentiable op defined outside the crates.
///
/// `forward` computes the output from the input tensors; `backward`
/// receives the same inputs, that output and the gradient of the loss with
/// respect to the output, and returns the gradient with respect to each
/// input (`None` for an input that is not differentiable, such as an index).
///
/// ```
/// use autograd::{check_gradients, CustomOp, Var};
/// use autograd::tensor::{Device, Result, Tensor};
///
/// /// `softplus(x) = log(1 + exp(x))`, whose derivative is `sigmoid(x)`.
/// struct Softplus;
///
/// impl CustomOp for Softplus {
///     fn name(&self) -> &'static str {
///         "softplus"
///     }
///     fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
///         inputs[0].exp()?.add_scalar(1.0)?.log()
///     }
///     fn backward(&self, inputs: &[&Tensor], _output: &Tensor, grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
///         Ok(vec![Some(grad.mul(&inputs[0].sigmoid()?)?)])
///     }
/// }
///
/// let x = Tensor::from_vec(vec![-2.0f64, 0.0, 3.0], 3, &Device::Cpu)?;
/// let err = check_gradients(|v| Var::apply(Softplus, &[&v[0]]), &[x], 1e-6)?;
/// assert!(err < 1e-7);
/// # Ok::<(), autograd::tensor::Error>(())
/// ```
pub trait CustomOp: Send + 'static {
    /// The name the op shows under in `tape_summary`, `to_dot` and errors.
    fn name(&self) -> &'static str;

    /// The output, computed from the input tensors.
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor>;

    /// One gradient per input, each with that input's shape, given the
    /// gradient `grad` of the loss with respect to `output`.
    fn backward(&self, inputs: &[&Tensor], output: &Tensor, grad: &Tensor) -> Result<Vec<Option<Tensor>>>;
}

impl Var {
    /// Runs `op` on `inputs` and records it on the tape (see [`CustomOp`]).
    /// The inputs and the output stay alive until `backward` has used them.
    pub fn apply(op: impl CustomOp, inputs: &[&Var]) -> Result<Var> {
        if inputs.is_empty() {
            return Err(Error::BadArgument { op: op.name(), msg: "a custom op needs at least one input".into() });
        }
        let tensors: Vec<Tensor> = inputs.iter().map(|v| v.tensor().clone()).collect();
        let out = op.forward(&tensors.iter().collect::<Vec<_>>())?;
        let saved_out = out.clone();
        let name = op.name();
        Ok(Var::from_op(name, out, inputs, move |grad, _needs| {
            let inputs: Vec<&Tensor> = tensors.iter().collect();
            op.backward(&inputs, &saved_out, grad)
        }))
    }

    /// Records an op whose output `out` the caller already computed from
    /// `inputs`. `backward(grad, needs)` receives the gradient of the loss
    /// with respect to `out` and, per input, whether it wants a gradient; it
    /// returns one entry per input (`None` where none is wanted). The
    /// closure owns whatever it needs from the forward pass.
    ///
    /// ```
    /// use autograd::Var;
    /// use autograd::tensor::{Device, Tensor};
    ///
    /// // y = x³, dy/dx = 3x²
    /// let x = Var::param(Tensor::from_vec(vec![1.0f64, 2.0], 2, &Device::Cpu)?);
    /// let xt = x.tensor().clone();
    /// let y = Var::custom("cube", xt.powf(3.0)?, &[&x], move |g, _needs| {
    ///     Ok(vec![Some(g.mul(&xt.sqr()?.mul_scalar(3.0)?)?)])
    /// });
    /// let grads = y.sum_all()?.backward()?;
    /// assert_eq!(grads.get(&x).unwrap().to_vec::<f64>()?, vec![3.0, 12.0]);
    /// # Ok::<(), autograd::tensor::Error>(())
    /// ```
    pub fn custom(
        name: &'static str,
        out: Tensor,
        inputs: &[&Var],
        backward: impl FnOnce(&Tensor, &[bool]) -> Result<Vec<Option<Tensor>>> + Send + 'static,
    ) -> Var {
        Var::from_op(name, out, inputs, backward)
    }
}
