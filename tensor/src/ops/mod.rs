//! The public operations on `Tensor`, one file per family. Each checks its
//! arguments and shapes, then hands the work to the backend.

mod elementwise;
pub mod fused;
pub mod image;
mod index;
mod matmul;
mod optim;
mod reduce;
mod view;
