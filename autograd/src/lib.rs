//! # autograd: reverse-mode differentiation on a tape
//!
//! Every op on a value that needs a gradient computes its result with the
//! tensor crate and records a node: which op, which inputs, and what its
//! backward rule will need. The nodes, in the order they ran, form a tape
//! (a Wengert list). `loss.backward()` walks the tape in reverse: each node
//! receives the gradient of the loss with respect to its output, and its
//! rule *adds* its share into the gradient of each input (a value used
//! twice gets the sum). When the walk reaches the parameters, their
//! gradients are complete.
//!
//! ```
//! use autograd::{Var, tensor::{Tensor, Device}};
//! let w = Var::param(Tensor::from_vec(vec![2.0f64, -1.0], 2, &Device::Cpu)?);
//! let x = Var::constant(Tensor::from_vec(vec![3.0f64, 4.0], 2, &Device::Cpu)?);
//! let loss = w.mul(&x)?.sum_all()?;          // 2*3 - 1*4
//! let grads = loss.backward()?;
//! assert_eq!(grads.get(&w).unwrap().to_vec::<f64>()?, vec![3.0, 4.0]);
//! # Ok::<(), tensor::Error>(())
//! ```
//!
//! ## Where things live
//! - `src/var.rs`: `Var` (a tensor plus the node that made it), constants,
//!   parameters, `detach`, and `from_op`, the one way an op records itself.
//! - `src/tape.rs`: `Node`, why sorting by id gives the Wengert list, the
//!   backward walk and how it frees memory as it goes, `Grads`, `no_grad`.
//! - `src/display.rs`: `tape_summary` and `to_dot`, to look at a tape.
//! - The backward rules, one file per family:
//!   - `src/ops/elementwise.rs`: add, sub, mul, div (broadcasting, undone by
//!     `sum_to`), scalar forms, exp, log, tanh, silu, ..., clamp, dropout,
//!     and `to_dtype`, the cast whose gradient is cast back (mixed precision);
//!   - `src/ops/reduce.rs`: sum, mean and the `mse` loss;
//!   - `src/ops/softmax.rs`: softmax, log_softmax and the `cross_entropy`
//!     loss (with label smoothing);
//!   - `src/ops/select.rs`: max and min over axes (ties share the
//!     gradient), and `where_cond`;
//!   - `src/ops/matmul.rs`: matrix product;
//!   - `src/ops/image.rs`: conv2d, pools, nearest upsampling, group norm;
//!   - `src/ops/index.rs`: `index_select` (embeddings);
//!   - `src/ops/view.rs`: reshape, permute, narrow, broadcast, cat, split...
//! - `src/gradcheck.rs`: `check_gradients`, which tests any rule (or any
//!   composition) against finite differences.
//! - `src/custom.rs`: `CustomOp` and `Var::custom`, to add a differentiable
//!   op from outside the crates (`examples/custom_op.rs` does).
//! - `src/anomaly.rs`: anomaly mode (`PETAL_ANOMALY=1`), which names the
//!   first op whose output holds a NaN or an infinity.
//!
//! Values that reach no parameter record nothing, and neither does anything
//! inside `no_grad(|| ...)`: their results are plain constants.

pub mod anomaly;
mod custom;
mod display;
pub mod gradcheck;
mod ops;
mod tape;
mod var;

pub use anomaly::{clear_anomaly, first_anomaly, is_anomaly_mode, set_anomaly_mode, Anomaly};
pub use custom::CustomOp;
pub use gradcheck::check_gradients;
pub use tape::{is_grad_enabled, no_grad, Grads};
pub use tensor;
pub use var::{Var, VarId};
