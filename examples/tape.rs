//! The tape, seen from inside.
//!
//! Builds a one-neuron model and its squared error,
//! `loss = sum((tanh(w * x + b) - y)²)`, prints the tape that recorded it
//! (one line per value, in the order the ops ran), writes the same graph
//! as a Graphviz file, and then runs `backward` over it.
//!
//! ```sh
//! cargo run -p autograd --example tape            # writes tape.dot
//! cargo run -p autograd --example tape -- out.dot
//! dot -Tsvg tape.dot -o tape.svg                  # draw it (Graphviz)
//! ```

use autograd::tensor::{Device, Result, Tensor};
use autograd::Var;

/// The expression: returns `(loss, w, b)`. `w` and `b` are parameters (they
/// ask for gradients); `x` and `y` are constants (data), so the tape records
/// only the ops that lead from `w` and `b` to the loss.
pub fn build() -> Result<(Var, Var, Var)> {
    let dev = Device::Cpu;
    let w = Var::param(Tensor::from_vec(vec![0.5f64], 1, &dev)?);
    let b = Var::param(Tensor::from_vec(vec![-0.1f64], 1, &dev)?);
    let x = Var::constant(Tensor::from_vec(vec![1.0f64, 2.0, 3.0], 3, &dev)?);
    let y = Var::constant(Tensor::from_vec(vec![0.0f64, 0.5, 1.0], 3, &dev)?);

    let z = w.mul(&x)?.add(&b)?; // [1] * [3] broadcasts to [3]
    let prediction = z.tanh()?;
    let loss = prediction.sub(&y)?.sqr()?.sum_all()?;
    Ok((loss, w, b))
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let (loss, w, b) = build()?;

    // The Wengert list: leaves first, then each op with its inputs and output shape.
    println!("The tape, in execution order:\n{}", loss.tape_summary());

    let path = std::env::args().nth(1).unwrap_or_else(|| "tape.dot".into());
    std::fs::write(&path, loss.to_dot())?;
    println!("wrote {path} (draw it with `dot -Tsvg {path} -o tape.svg`)");

    // backward walks the same list from the bottom up, and consumes it.
    println!("loss = {:.6}", loss.tensor().to_scalar()?);
    let grads = loss.backward()?;
    println!("dloss/dw = {:.6}", grads.get(&w).expect("w is a parameter").to_scalar()?);
    println!("dloss/db = {:.6}", grads.get(&b).expect("b is a parameter").to_scalar()?);
    println!("after backward the tape is gone:\n{}", loss.tape_summary());
    Ok(())
}
