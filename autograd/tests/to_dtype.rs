//! The differentiable cast `Var::to_dtype`: its gradient is the output
//! gradient cast back to the input's dtype.

use autograd::{check_gradients, Var};
use tensor::{DType, Device, Result, Tensor};

fn t64(v: Vec<f64>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// f64 -> f32 -> f64 inside a differentiable function: finite differences
/// agree with the tape (to the f32 rounding the round trip introduces).
#[test]
fn cast_round_trip_passes_gradcheck() {
    let x = t64(vec![0.3, -1.2, 2.0, 0.75, -0.5, 1.5], &[2, 3]);
    let w = t64(vec![0.2, -0.4, 1.1], &[3]);
    let f = |v: &[Var]| -> Result<Var> { v[0].to_dtype(DType::F32)?.mul(&v[1].to_dtype(DType::F32)?)?.to_dtype(DType::F64)?.sin() };
    // A large step: the f32 rounding of x ± h is ~1e-7 relative to h = 1e-2.
    let err = check_gradients(f, &[x, w], 1e-2).unwrap();
    assert!(err < 1e-3, "relative error {err}");
}

/// An f32 parameter used through an f16 cast gets an f32 gradient: the
/// f16 gradient of the cast's output, cast back up.
#[test]
fn gradient_comes_back_in_the_input_dtype() {
    let p = Var::param(Tensor::from_vec(vec![1.0f32, -2.0, 3.0, 0.5], 4, &Device::Cpu).unwrap());
    let w: Vec<f32> = vec![0.1, 0.25, -3.0, 1000.3];
    // The CPU backend only casts half values; the arithmetic stays in f32.
    let loss = p
        .to_dtype(DType::F16)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .mul(&Var::constant(Tensor::from_vec(w.clone(), 4, &Device::Cpu).unwrap()))
        .unwrap()
        .sum_all()
        .unwrap();
    let grads = loss.backward().unwrap();
    let g = grads.get(&p).expect("the parameter has a gradient");
    assert_eq!(g.dtype(), DType::F32);
    // The gradient went through f16 on the way back: w rounded to f16.
    let want = Tensor::from_vec(w.clone(), 4, &Device::Cpu).unwrap().to_dtype(DType::F16).unwrap().to_dtype(DType::F32).unwrap();
    let want = want.to_vec::<f32>().unwrap();
    assert_ne!(want, w, "1000.3 is not an f16 value: the test must see the rounding");
    assert_eq!(g.to_vec::<f32>().unwrap(), want);
}

/// The f32 path costs nothing: a cast to the same dtype is the value itself.
#[test]
fn same_dtype_is_a_no_op() {
    let p = Var::param(Tensor::from_vec(vec![1.0f32, 2.0], 2, &Device::Cpu).unwrap());
    let same = p.to_dtype(DType::F32).unwrap();
    assert_eq!(same.id(), p.id());
    assert!(same.tensor().same_storage(p.tensor()));
}

/// Gradients of a value used both directly and through a cast add up.
#[test]
fn fan_out_through_a_cast_adds_up() {
    let p = Var::param(t64(vec![1.5, -0.5], &[2]));
    let a = p.mul_scalar(2.0).unwrap();
    let b = p.to_dtype(DType::F32).unwrap().mul_scalar(3.0).unwrap().to_dtype(DType::F64).unwrap();
    let grads = a.add(&b).unwrap().sum_all().unwrap().backward().unwrap();
    let g = grads.get(&p).unwrap();
    assert_eq!(g.dtype(), DType::F64);
    assert_eq!(g.to_vec::<f64>().unwrap(), vec![5.0, 5.0]);
}

/// A cast to u32 is not differentiable: the result is a constant.
#[test]
fn integer_cast_is_a_constant() {
    let p = Var::param(t64(vec![1.0, 2.0], &[2]));
    let i = p.to_dtype(DType::U32).unwrap();
    assert!(!i.requires_grad());
    assert_eq!(i.tensor().to_vec::<u32>().unwrap(), vec![1, 2]);
}
