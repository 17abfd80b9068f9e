//! The `tape` and `custom_op` examples, run as tests so they cannot rot:
//! each example file is compiled here as a module and its core is called.

#[allow(dead_code)]
#[path = "../../examples/tape.rs"]
mod tape;

#[allow(dead_code)]
#[path = "../../examples/custom_op.rs"]
mod custom_op;

#[test]
fn tape_example_lists_its_ops_in_execution_order() {
    let (loss, w, b) = tape::build().unwrap();
    let summary = loss.tape_summary();
    let ops: Vec<&str> = summary.lines().map(|l| l.split(" = ").nth(1).unwrap().split(['(', ' ']).next().unwrap()).collect();
    // leaves (w, b, x, y in creation order), then the ops as they ran
    assert_eq!(ops, ["param", "param", "constant", "constant", "mul", "add", "tanh", "sub", "sqr", "sum"]);
    let dot = loss.to_dot();
    assert!(dot.starts_with("digraph tape {") && dot.trim_end().ends_with('}'));
    assert_eq!(dot.matches(" -> ").count(), 9, "{dot}");

    // loss = Σ (tanh(w x + b) - y)², checked by hand in f64
    let (xs, ys, wv, bv) = ([1.0f64, 2.0, 3.0], [0.0, 0.5, 1.0], 0.5, -0.1);
    let (mut l, mut dw, mut db) = (0.0, 0.0, 0.0);
    for (x, y) in xs.iter().zip(ys) {
        let p = (wv * x + bv).tanh();
        l += (p - y).powi(2);
        let d = 2.0 * (p - y) * (1.0 - p * p);
        dw += d * x;
        db += d;
    }
    assert!((loss.tensor().to_scalar().unwrap() - l).abs() < 1e-12);
    let grads = loss.backward().unwrap();
    assert!((grads.get(&w).unwrap().to_scalar().unwrap() - dw).abs() < 1e-12);
    assert!((grads.get(&b).unwrap().to_scalar().unwrap() - db).abs() < 1e-12);
}

#[test]
fn custom_op_example_rules_pass_and_the_slip_is_caught() {
    let results = custom_op::check_all().unwrap();
    for (name, err) in &results {
        match *name {
            "hypot_with_a_slip" => assert!(*err > 0.1, "the gradient check missed the slip: {err}"),
            _ => assert!(*err < 1e-7, "{name}: relative error {err}"),
        }
    }
    assert_eq!(results.len(), 3);
}
