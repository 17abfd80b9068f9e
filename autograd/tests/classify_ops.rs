//! The ops a classifier needs (softmax, log_softmax, cross-entropy, max,
//! min, where_cond): values against plain f64 loops, and gradients against
//! central finite differences, over random shapes and values (proptest).

use autograd::tensor::Result;
use autograd::Var;
use proptest::prelude::*;

mod common;
use common::{arb, check, distinct, t};

fn shape_3d() -> impl Strategy<Value = Vec<usize>> {
    (1usize..4, 1usize..5, 1usize..4).prop_map(|(a, b, c)| vec![a, b, c])
}

/// Naive smoothed cross-entropy in f64, straight from the definition.
fn naive_cross_entropy(logits: &[f64], n: usize, c: usize, labels: &[usize], smoothing: f64) -> f64 {
    let mut total = 0.0;
    for row in 0..n {
        let x = &logits[row * c..(row + 1) * c];
        let lse = x.iter().map(|v| v.exp()).sum::<f64>().ln();
        for (k, &v) in x.iter().enumerate() {
            let q = smoothing / c as f64 + if k == labels[row] { 1.0 - smoothing } else { 0.0 };
            total -= q * (v - lse);
        }
    }
    total / n as f64
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn softmax_family(x in shape_3d().prop_flat_map(|d| arb(d, -3.0, 3.0)), dim in 0usize..3) {
        check("softmax", |v| v[0].softmax(dim), std::slice::from_ref(&x))?;
        check("log_softmax", |v| v[0].log_softmax(dim), std::slice::from_ref(&x))?;
        // Values: rows of softmax sum to 1 and match exp(x)/sum(exp(x)).
        let dims = x.dims().to_vec();
        let xs = x.to_vec::<f64>().unwrap();
        let y = Var::constant(x.clone()).softmax(dim).unwrap().tensor().to_vec::<f64>().unwrap();
        let strides = [dims[1] * dims[2], dims[2], 1];
        for i in 0..xs.len() {
            let base = i - (i / strides[dim] % dims[dim]) * strides[dim];
            let denom: f64 = (0..dims[dim]).map(|k| xs[base + k * strides[dim]].exp()).sum();
            prop_assert!((y[i] - xs[i].exp() / denom).abs() < 1e-12);
        }
    }

    #[test]
    fn cross_entropy_matches_the_definition(
        (n, c, logits, labels) in (1usize..5, 1usize..6).prop_flat_map(|(n, c)| (Just(n), Just(c), arb(vec![n, c], -3.0, 3.0), prop::collection::vec(0..c, n))),
        smoothing in prop_oneof![Just(0.0), 0.0f64..0.5],
    ) {
        let got = Var::constant(logits.clone()).cross_entropy(&labels, smoothing).unwrap().tensor().to_scalar().unwrap();
        let want = naive_cross_entropy(&logits.to_vec::<f64>().unwrap(), n, c, &labels, smoothing);
        prop_assert!((got - want).abs() < 1e-12 * want.abs().max(1.0), "{got} vs {want}");
        check("cross_entropy", |v| v[0].cross_entropy(&labels, smoothing), std::slice::from_ref(&logits))?;
    }

    #[test]
    fn max_and_min(x in shape_3d().prop_flat_map(distinct), axis in 0usize..3, keepdim in any::<bool>()) {
        check("max", |v| v[0].max(&[axis], keepdim), std::slice::from_ref(&x))?;
        check("min", |v| v[0].min(&[axis], keepdim), std::slice::from_ref(&x))?;
        check("max over two axes", |v| v[0].max(&[0, 2], keepdim), std::slice::from_ref(&x))?;
    }

    #[test]
    fn where_cond_routes_gradients(
        (mask, a, b) in (1usize..4, 1usize..5).prop_flat_map(|(r, c)| (
            prop::collection::vec(any::<bool>(), r * c).prop_map(move |m| t(m.into_iter().map(|b| b as u8 as f64).collect(), &[r, c])),
            arb(vec![r, c], -3.0, 3.0),
            arb(vec![1, c], -3.0, 3.0),
        )),
    ) {
        check("where_cond", |v| Var::where_cond(&mask, &v[0], &v[1]), &[a.clone(), b.clone()])?;
        let got = Var::where_cond(&mask, &Var::constant(a.clone()), &Var::constant(b.clone())).unwrap().tensor().to_vec::<f64>().unwrap();
        let (m, av, bv) = (mask.to_vec::<f64>().unwrap(), a.to_vec::<f64>().unwrap(), b.to_vec::<f64>().unwrap());
        let c = a.dims()[1];
        for i in 0..got.len() {
            prop_assert_eq!(got[i], if m[i] != 0.0 { av[i] } else { bv[i % c] });
        }
    }
}

/// Tied maxima share the gradient evenly; the others get none.
#[test]
fn max_splits_the_gradient_among_ties() {
    let x = Var::param(t(vec![1.0, 3.0, 3.0, 0.0, 2.0, 5.0], &[2, 3]));
    let grads = x.max(&[1], false).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(grads.get(&x).unwrap().to_vec::<f64>().unwrap(), vec![0.0, 0.5, 0.5, 0.0, 0.0, 1.0]);
    let grads = x.min(&[0], false).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(grads.get(&x).unwrap().to_vec::<f64>().unwrap(), vec![0.0, 0.0, 1.0, 1.0, 1.0, 0.0]);
}

/// Bad labels and shapes are errors that say what is wrong.
#[test]
fn cross_entropy_rejects_bad_input() {
    let logits = Var::constant(t(vec![0.0; 6], &[2, 3]));
    let msg = |r: Result<Var>| r.unwrap_err().to_string();
    assert!(msg(logits.cross_entropy(&[0, 3], 0.0)).contains("label 3 out of range for 3 classes"));
    assert!(msg(logits.cross_entropy(&[0], 0.0)).contains("1 labels for 2 rows"));
    assert!(msg(logits.cross_entropy(&[0, 1], 1.5)).contains("smoothing"));
    let flat = Var::constant(t(vec![0.0; 6], &[6]));
    assert!(msg(flat.cross_entropy(&[0; 6], 0.0)).contains("[N, C]"));
}
