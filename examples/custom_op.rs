//! A new differentiable op, defined outside the crates.
//!
//! Two ways to add one:
//! - implement `CustomOp` (a name, a forward, a backward) and call
//!   `Var::apply`: here `Hypot`, `sqrt(a² + b²)` of two inputs;
//! - for a one-off, compute the output yourself and hand `Var::custom` the
//!   backward rule as a closure: here `softplus`.
//!
//! A backward rule is only trusted once it agrees with finite differences,
//! so the example checks both with `check_gradients`, and shows that the
//! check catches a rule with a plausible slip in it.
//!
//! ```sh
//! cargo run -p autograd --example custom_op
//! ```

use autograd::tensor::{DType, Device, Result, Rng, Tensor};
use autograd::{check_gradients, CustomOp, Var};

/// `hypot(a, b) = sqrt(a² + b²)`, elementwise, for two tensors of one shape.
/// `∂h/∂a = a / h` and `∂h/∂b = b / h`.
pub struct Hypot;

impl CustomOp for Hypot {
    fn name(&self) -> &'static str {
        "hypot"
    }

    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        let (a, b) = (inputs[0], inputs[1]);
        a.sqr()?.add(&b.sqr()?)?.sqrt()
    }

    /// `output` is `h`, saved by the tape: the rule reuses it instead of
    /// recomputing the square root.
    fn backward(&self, inputs: &[&Tensor], output: &Tensor, grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let g_over_h = grad.div(output)?;
        Ok(vec![Some(g_over_h.mul(inputs[0])?), Some(g_over_h.mul(inputs[1])?)])
    }
}

/// The same op with a slip in its rule (the gradient of `a` forgets to
/// divide by `h`), to show that the gradient check notices.
pub struct HypotWithASlip;

impl CustomOp for HypotWithASlip {
    fn name(&self) -> &'static str {
        "hypot_with_a_slip"
    }
    fn forward(&self, inputs: &[&Tensor]) -> Result<Tensor> {
        Hypot.forward(inputs)
    }
    fn backward(&self, inputs: &[&Tensor], output: &Tensor, grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(grad.mul(inputs[0])?), Some(grad.div(output)?.mul(inputs[1])?)])
    }
}

/// `softplus(x) = log(1 + eˣ)`, whose derivative is `sigmoid(x)`, recorded
/// with a closure. The closure owns what the rule needs: the input.
pub fn softplus(x: &Var) -> Result<Var> {
    let input = x.tensor().clone();
    let out = input.exp()?.add_scalar(1.0)?.log()?;
    Ok(Var::custom("softplus", out, &[x], move |grad, _needs| Ok(vec![Some(grad.mul(&input.sigmoid()?)?)])))
}

/// The largest relative gradient error of each op on random f64 inputs:
/// `(name, error)`.
pub fn check_all() -> Result<Vec<(&'static str, f64)>> {
    let mut rng = Rng::new(42);
    let mut random = |shape: &[usize]| Tensor::randn(0.0, 1.0, shape.to_vec(), DType::F64, &Device::Cpu, &mut rng);
    let (a, b, x) = (random(&[3, 4])?, random(&[3, 4])?, random(&[5])?);
    Ok(vec![
        ("hypot", check_gradients(|v| Var::apply(Hypot, &[&v[0], &v[1]]), &[a.clone(), b.clone()], 1e-6)?),
        ("softplus", check_gradients(|v| softplus(&v[0]), &[x], 1e-6)?),
        ("hypot_with_a_slip", check_gradients(|v| Var::apply(HypotWithASlip, &[&v[0], &v[1]]), &[a, b], 1e-6)?),
    ])
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    // Custom ops compose with built-in ones and show on the tape by name.
    let a = Var::param(Tensor::from_vec(vec![3.0f64, 5.0], 2, &Device::Cpu)?);
    let b = Var::constant(Tensor::from_vec(vec![4.0f64, 12.0], 2, &Device::Cpu)?);
    let loss = softplus(&Var::apply(Hypot, &[&a, &b])?)?.sum_all()?;
    print!("{}", loss.tape_summary());
    let grads = loss.backward()?;
    println!("d loss / d a = {:?}\n", grads.get(&a).expect("a is a parameter").to_vec::<f64>()?);

    println!("relative error of each backward rule against finite differences:");
    for (name, err) in check_all()? {
        let verdict = if err < 1e-6 { "ok" } else { "WRONG: the rule disagrees with the forward" };
        println!("  {name:<18} {err:.2e}  {verdict}");
    }
    Ok(())
}
