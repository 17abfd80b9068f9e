//! Helpers shared by the property tests of the backward rules.

use autograd::tensor::{Device, Result, Tensor};
use autograd::{check_gradients, Var};
use proptest::prelude::*;

/// Finite-difference step, and the largest relative error allowed.
pub const EPS: f64 = 1e-6;
pub const TOL: f64 = 1e-6;

pub fn t(data: Vec<f64>, dims: &[usize]) -> Tensor {
    Tensor::from_vec(data, dims.to_vec(), &Device::Cpu).unwrap()
}

pub fn arb(dims: Vec<usize>, lo: f64, hi: f64) -> impl Strategy<Value = Tensor> {
    let n = dims.iter().product::<usize>();
    prop::collection::vec(lo..hi, n).prop_map(move |v| t(v, &dims))
}

/// Distinct values (a shuffled ramp with gaps of 0.1), so max pooling and
/// max/min reductions have no ties.
pub fn distinct(dims: Vec<usize>) -> impl Strategy<Value = Tensor> {
    let n = dims.iter().product::<usize>();
    Just((0..n).collect::<Vec<usize>>()).prop_shuffle().prop_map(move |p| t(p.into_iter().map(|i| i as f64 * 0.1 - 1.0).collect(), &dims))
}

/// Gradient check of `f` at `inputs`, as a proptest failure naming `name`.
pub fn check(name: &str, f: impl Fn(&[Var]) -> Result<Var>, inputs: &[Tensor]) -> std::result::Result<(), TestCaseError> {
    let err = check_gradients(f, inputs, EPS).map_err(|e| TestCaseError::fail(format!("{name}: {e}")))?;
    prop_assert!(err < TOL, "{name}: relative error {err:e}");
    Ok(())
}
