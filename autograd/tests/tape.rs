//! The tape's behaviour: what gets recorded, fan-out, errors, printing,
//! no_grad, dropout.

use autograd::tensor::{DType, Device, Rng, Tensor};
use autograd::{is_grad_enabled, no_grad, Var};

fn v(data: &[f64], dims: &[usize]) -> Tensor {
    Tensor::from_vec(data.to_vec(), dims.to_vec(), &Device::Cpu).unwrap()
}

#[test]
fn fan_out_adds_gradients() {
    // y = x*x + x  =>  dy/dx = 2x + 1
    let x = Var::param(v(&[1.0, -2.0, 0.5], &[3]));
    let y = x.mul(&x).unwrap().add(&x).unwrap().sum_all().unwrap();
    let grads = y.backward().unwrap();
    assert_eq!(grads.get(&x).unwrap().to_vec::<f64>().unwrap(), vec![3.0, -3.0, 2.0]);
}

#[test]
fn each_gradient_has_storage_of_its_own() {
    // add passes its output gradient to both inputs unchanged; cat hands out
    // windows of one gradient. The gradients returned must not alias.
    let a = Var::param(v(&[1.0, 2.0], &[2]));
    let b = Var::param(v(&[3.0, 4.0], &[2]));
    let loss = a.add(&b).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let (ga, gb) = (grads.get(&a).unwrap(), grads.get(&b).unwrap());
    assert!(!ga.same_storage(gb));
    ga.assign(&v(&[9.0, 9.0], &[2])).unwrap();
    assert_eq!(gb.to_vec::<f64>().unwrap(), vec![1.0, 1.0]);

    let loss = Var::cat(&[&a, &b], 0).unwrap().sqr().unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    assert!(!grads.get(&a).unwrap().same_storage(grads.get(&b).unwrap()));
    assert_eq!(grads.get(&b).unwrap().to_vec::<f64>().unwrap(), vec![6.0, 8.0]);
}

#[test]
fn only_parameters_get_gradients_and_constant_branches_record_nothing() {
    let w = Var::param(v(&[2.0, 3.0], &[2]));
    let c = Var::constant(v(&[1.0, 4.0], &[2]));
    let c2 = c.exp().unwrap().mul_scalar(2.0).unwrap();
    assert!(!c2.requires_grad());
    assert_eq!(c2.tape_summary().lines().count(), 1, "a constant result has no history");
    let loss = w.mul(&c2).unwrap().sum_all().unwrap();
    assert!(loss.requires_grad());
    let mut grads = loss.backward().unwrap();
    assert_eq!(grads.len(), 1);
    assert!(grads.get(&c).is_none() && grads.get(&c2).is_none());
    let g = grads.remove(&w).unwrap();
    assert_eq!(g, c2.tensor().clone());
    assert!(grads.is_empty());
}

#[test]
fn detach_cuts_the_graph() {
    let w = Var::param(v(&[2.0], &[1]));
    let y = w.sqr().unwrap();
    let loss = y.detach().mul(&w).unwrap().sum_all().unwrap(); // d/dw (const 4 * w) = 4
    assert_eq!(loss.backward().unwrap().get(&w).unwrap().to_vec::<f64>().unwrap(), vec![4.0]);
}

#[test]
fn backward_errors() {
    let w = Var::param(v(&[1.0, 2.0], &[2]));
    assert!(w.exp().unwrap().backward().is_err(), "two elements are not a loss");
    let c = Var::constant(v(&[1.0], &[1]));
    assert!(c.exp().unwrap().backward().is_err(), "nothing to differentiate");
    let loss = w.sqr().unwrap().sum_all().unwrap();
    loss.backward().unwrap();
    let err = loss.backward().unwrap_err().to_string();
    assert!(err.contains("already consumed"), "{err}");
}

#[test]
fn no_grad_records_nothing_and_nests() {
    let w = Var::param(v(&[1.0, 2.0], &[2]));
    assert!(is_grad_enabled());
    let y = no_grad(|| {
        assert!(!is_grad_enabled());
        let inner = no_grad(|| w.exp().unwrap());
        assert!(!is_grad_enabled(), "leaving a nested no_grad keeps the outer one");
        inner.mul(&w).unwrap()
    });
    assert!(is_grad_enabled());
    assert!(!y.requires_grad());
    assert_eq!(y.tape_summary().lines().count(), 1);
    // Other threads are unaffected.
    no_grad(|| std::thread::spawn(|| assert!(is_grad_enabled())).join().unwrap());
}

#[test]
fn tape_summary_and_dot() {
    let x = Var::constant(Tensor::ones([1, 2, 4, 4], DType::F32, &Device::Cpu).unwrap());
    let w = Var::param(Tensor::ones([3, 2, 3, 3], DType::F32, &Device::Cpu).unwrap());
    let h = x.conv2d(&w, None, 1, 1).unwrap().relu().unwrap();
    let loss = h.add(&h).unwrap().mean_all().unwrap();
    let summary = loss.tape_summary();
    let expected = "\
v0 = constant [1, 2, 4, 4]
v1 = param [3, 2, 3, 3]
v2 = conv2d(v0 [1, 2, 4, 4], v1 [3, 2, 3, 3]) -> [1, 3, 4, 4]
v3 = relu(v2 [1, 3, 4, 4]) -> [1, 3, 4, 4]
v4 = add(v3 [1, 3, 4, 4], v3 [1, 3, 4, 4]) -> [1, 3, 4, 4]
v5 = mean(v4 [1, 3, 4, 4]) -> []
";
    assert_eq!(summary, expected);

    let dot = loss.to_dot();
    assert!(dot.starts_with("digraph tape {"), "{dot}");
    assert!(dot.trim_end().ends_with('}'));
    assert!(dot.contains("v2 [label=\"conv2d\\n[1, 3, 4, 4]\", shape=ellipse];"), "{dot}");
    assert!(dot.contains("v1 [label=\"param\\n[3, 2, 3, 3]\""), "{dot}");
    assert!(dot.contains("v0 [label=\"constant\\n[1, 2, 4, 4]\""), "{dot}");
    for edge in ["v0 -> v2;", "v1 -> v2;", "v2 -> v3;", "v3 -> v4;", "v4 -> v5;"] {
        assert!(dot.contains(edge), "missing {edge} in {dot}");
    }
    assert_eq!(dot.matches("v3 -> v4;").count(), 2, "both uses of h are edges");

    loss.backward().unwrap();
    assert_eq!(loss.tape_summary(), "v0 = mean() -> []\n", "backward consumed the tape");
}

#[test]
fn dropout_is_unbiased_reproducible_and_its_gradient_uses_the_mask() {
    let x = Var::param(Tensor::ones([100, 100], DType::F32, &Device::Cpu).unwrap());
    let p = 0.3;
    let mut rng = Rng::new(11);
    let saved = rng;
    let y = x.dropout(p, &mut rng).unwrap();
    assert_ne!(rng, saved, "dropout advances the generator");

    // In expectation the output equals the input.
    let mean = y.tensor().mean_all().unwrap().to_scalar().unwrap();
    assert!((mean - 1.0).abs() < 0.03, "mean {mean}");
    let vals = y.tensor().to_vec::<f32>().unwrap();
    let zeros = vals.iter().filter(|&&a| a == 0.0).count() as f64 / vals.len() as f64;
    assert!((zeros - p).abs() < 0.03, "dropped fraction {zeros}");
    assert!(vals.iter().all(|&a| a == 0.0 || (a as f64 - 1.0 / (1.0 - p)).abs() < 1e-5));

    // Same generator state, same mask.
    let y2 = x.dropout(p, &mut saved.clone()).unwrap();
    assert_eq!(y.tensor(), y2.tensor());

    // The gradient of sum(dropout(x)) is the mask itself, i.e. y / x = y.
    let grads = y.sum_all().unwrap().backward().unwrap();
    assert_eq!(grads.get(&x).unwrap(), y.tensor());

    // p == 0 is the identity (no node, no randomness); p outside [0, 1] is an error.
    let mut r = Rng::new(1);
    let same = x.dropout(0.0, &mut r).unwrap();
    assert_eq!(same.id(), x.id());
    assert_eq!(r, Rng::new(1));
    assert!(x.dropout(1.5, &mut r).is_err());
}

#[test]
fn deep_graphs_drop_and_differentiate_without_recursion() {
    let w = Var::param(v(&[0.0], &[1]));
    let mut y = w.clone();
    for _ in 0..100_000 {
        y = y.add_scalar(1.0).unwrap();
    }
    let g = y.sum_all().unwrap().backward().unwrap();
    assert_eq!(g.get(&w).unwrap().to_vec::<f64>().unwrap(), vec![1.0]);

    // Dropping an untouched deep graph must not overflow the stack either.
    let mut z = w.clone();
    for _ in 0..100_000 {
        z = z.mul_scalar(1.0).unwrap();
    }
    drop(z);
}

#[test]
fn vars_cross_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Var>();
    assert_send_sync::<autograd::Grads>();
    let w = Var::param(v(&[3.0], &[1]));
    let loss = w.sqr().unwrap().sum_all().unwrap();
    let g = std::thread::spawn(move || loss.backward().unwrap()).join().unwrap();
    assert_eq!(g.get(&w).unwrap().to_vec::<f64>().unwrap(), vec![6.0]);
}
