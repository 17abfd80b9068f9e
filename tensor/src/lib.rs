//! # tensor: the bottom layer of petal
//!
//! An n-dimensional array with a CPU backend and a CUDA backend. Everything
//! above it (autograd, the layers, the diffusion model) is written in terms
//! of `Tensor` and never touches a device directly.
//!
//! A `Tensor` is shared storage plus a `Layout` (shape, strides, offset), so
//! views are free. Each op checks shapes in `ops/`, then calls one method of
//! the `BackendStorage` trait (`backend.rs`) through `dispatch!`
//! (`storage.rs`), the only place that lists the backends. Both `cpu/` and
//! `cuda/` implement the trait, and name their files the same way: an op
//! family's CPU code is `cpu/<family>.rs`, its CUDA launches
//! `cuda/<family>.rs`, its CUDA kernels `cuda/<family>.cu` (`conv`,
//! `elementwise`, `pool`, `reduce`, ...).
//!
//! Errors are values: a bad shape returns an `Error` naming the op and the
//! shapes; nothing here panics on user input.
//!
//! ## Adding an op
//!
//! A new elementwise unary op (say `erf`) touches four files:
//!
//! 1. `tensor/src/backend.rs`: a variant `UnaryOp::Erf`, and its number in
//!    `UnaryOp::code` (the compiler points at that match).
//! 2. `tensor/src/cpu/elementwise.rs`: the scalar function, one arm in
//!    `apply_unary`. The CPU loop, threads and strides come with it.
//! 3. `tensor/src/cuda/elementwise.cu`: a `#define U_ERF` with that number
//!    and one `case` in `apply_unary`. Launch code and NVRTC compilation
//!    come with it.
//! 4. `autograd/src/ops/elementwise.rs`: a `Var` method that runs
//!    `x.tensor().unary(UnaryOp::Erf)` forward and states the backward rule
//!    (see `sigmoid` there), checked with `autograd::check_gradients`.
//!
//! `Tensor::unary(UnaryOp::Erf)` works as soon as step 1 is done; a named
//! shorthand `Tensor::erf` is one more line in `unary_methods!`
//! (`tensor/src/ops/elementwise.rs`). Tests go in
//! `tensor/tests/ops_elementwise.rs` (against an f64 reference), the
//! operator list of `tensor/tests/cuda.rs` (CUDA against CPU), and a
//! gradcheck in `autograd/tests/`.
//!
//! An op that is not elementwise (a new kernel shape) adds a method to
//! `BackendStorage`, its parameters beside it in `backend.rs`, the CPU
//! kernel in a new `cpu/<op>.rs`, the CUDA launch and kernel in
//! `cuda/<op>.rs` and `cuda/<op>.cu` (listed in `cuda/compile.rs`), and the
//! checking `Tensor` method in `ops/`. If a plain composition of existing
//! trait methods can serve every backend, give the trait method a default
//! body built from them, as `silu_backward` and `cat` have, and override it
//! only where a fused kernel pays.

pub mod backend;
pub mod cpu;
pub mod cuda;
mod device;
mod display;
mod dtype;
mod error;
mod ops;
pub mod rng;
mod shape;
mod storage;
pub mod switch;
mod tensor;

pub use backend::{AdamStep, BinaryOp, CmpOp, Conv2dParams, ConvFusion, GroupNormParams, MatmulDims, Pool2dParams, ReduceOp, UnaryOp};
pub use device::{Device, MemoryInfo};
pub use dtype::{DType, WithDType};
pub use error::{Error, Result};
pub use ops::fused::Fusion;
pub use ops::image::conv2d_params;
pub use rng::Rng;
pub use shape::{Layout, Shape};
pub use storage::{live_bytes, peak_bytes, reset_peak_bytes, Storage};
pub use tensor::{Tensor, TensorId};
