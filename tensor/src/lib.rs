//! # tensor: the bottom layer of petal
//!
//! An n-dimensional array with a CPU backend and a CUDA backend. Everything
//! above it (autograd, the layers, the diffusion model) is written in terms
//! of `Tensor` and never touches a device directly.
//!
//! A `Tensor` is shared storage plus a `Layout` (shape, strides, offset), so
//! views are free. Each op checks shapes in `ops/`, then calls one method of
//! the `BackendStorage` trait (`backend.rs`) that both `cpu/` and `cuda/`
//! implement: the kernels for one op sit side by side in those two folders.
//!
//! Errors are values: a bad shape returns an `Error` naming the op and the
//! shapes; nothing here panics on user input.

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
mod tensor;

pub use backend::{AdamStep, BinaryOp, CmpOp, Conv2dParams, GroupNormParams, MatmulDims, Pool2dParams, ReduceOp, UnaryOp};
pub use device::Device;
pub use dtype::{DType, WithDType};
pub use error::{Error, Result};
pub use ops::image::conv2d_params;
pub use rng::Rng;
pub use shape::{Layout, Shape};
pub use storage::{live_bytes, peak_bytes, reset_peak_bytes, Storage};
pub use tensor::{Tensor, TensorId};
