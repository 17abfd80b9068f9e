//! Ops defined outside the crate (`CustomOp`, `Var::custom`) behave like
//! built-in ones: recorded only when needed, named on the tape, and held to
//! the same checks on their gradients.

use autograd::tensor::{Device, Error, Result, Tensor};
use autograd::{check_gradients, no_grad, CustomOp, Var};

fn t(data: &[f64]) -> Tensor {
    Tensor::from_vec(data.to_vec(), data.len(), &Device::Cpu).unwrap()
}

/// `a * b + a`, with a rule that gives a gradient to the first input only
/// when `needs` says so.
struct MulAdd;
impl CustomOp for MulAdd {
    fn name(&self) -> &'static str {
        "mul_add"
    }
    fn forward(&self, x: &[&Tensor]) -> Result<Tensor> {
        x[0].mul(x[1])?.add(x[0])
    }
    fn backward(&self, x: &[&Tensor], _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.mul(&x[1].add_scalar(1.0)?)?), Some(g.mul(x[0])?)])
    }
}

#[test]
fn a_custom_op_is_differentiated_like_a_built_in_one() {
    let (a, b) = (t(&[0.5, -1.5, 2.0]), t(&[1.0, 3.0, -0.25]));
    let err = check_gradients(|v| Var::apply(MulAdd, &[&v[0], &v[1]]), &[a.clone(), b.clone()], 1e-6).unwrap();
    assert!(err < 1e-8, "{err}");

    let (pa, cb) = (Var::param(a), Var::constant(b));
    let y = Var::apply(MulAdd, &[&pa, &cb]).unwrap();
    assert!(y.requires_grad());
    assert!(y.tape_summary().contains("= mul_add(v0 [3], v1 [3]) -> [3]"), "{}", y.tape_summary());
    let grads = y.sum_all().unwrap().backward().unwrap();
    assert_eq!(grads.get(&pa).unwrap().to_vec::<f64>().unwrap(), vec![2.0, 4.0, 0.75]);
    assert!(grads.get(&cb).is_none());
}

#[test]
fn nothing_is_recorded_without_a_parameter_or_under_no_grad() {
    let p = Var::param(t(&[1.0]));
    let c = Var::constant(t(&[2.0]));
    assert!(!Var::apply(MulAdd, &[&c, &c]).unwrap().requires_grad());
    let y = no_grad(|| Var::apply(MulAdd, &[&p, &c])).unwrap();
    assert!(!y.requires_grad());
    assert_eq!(y.tensor().to_vec::<f64>().unwrap(), vec![3.0]);
}

#[test]
fn a_rule_with_the_wrong_count_or_shape_is_an_error_naming_the_op() {
    let x = Var::param(t(&[1.0, 2.0]));
    let too_few = Var::custom("too_few", x.tensor().clone(), &[&x, &x], |g, _| Ok(vec![Some(g.clone())]));
    let err = too_few.sum_all().unwrap().backward().unwrap_err().to_string();
    assert!(err.contains("too_few") && err.contains("1 gradients for 2 inputs"), "{err}");

    let misshaped = Var::custom("misshaped", x.tensor().clone(), &[&x], |g, _| Ok(vec![Some(g.sum_all()?)]));
    match misshaped.sum_all().unwrap().backward() {
        Err(Error::ShapeMismatch { op: "misshaped", .. }) => {}
        other => panic!("expected a shape mismatch naming the op, got {other:?}"),
    }
}

#[test]
fn an_op_needs_an_input_and_forward_errors_come_back() {
    let err = Var::apply(MulAdd, &[]).unwrap_err().to_string();
    assert!(err.contains("mul_add") && err.contains("at least one input"), "{err}");
    let (a, b) = (Var::param(t(&[1.0, 2.0])), Var::param(t(&[1.0, 2.0, 3.0])));
    assert!(matches!(Var::apply(MulAdd, &[&a, &b]), Err(Error::ShapeMismatch { .. })));
}
