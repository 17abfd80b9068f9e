//! Every way a tensor operation can refuse its input.
//!
//! Ops return `Result` rather than panicking so that a bad shape coming from
//! user code surfaces as a message naming the op and the shapes involved.

use crate::{DType, Shape};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op}: shapes {lhs} and {rhs} are incompatible")]
    ShapeMismatch { op: &'static str, lhs: Shape, rhs: Shape },

    #[error("{op}: {msg} (shape {shape})")]
    BadShape { op: &'static str, shape: Shape, msg: String },

    #[error("{op}: {msg}")]
    BadArgument { op: &'static str, msg: String },

    #[error("{op}: dtype {got} not supported here{hint}")]
    UnsupportedDType { op: &'static str, got: DType, hint: &'static str },

    #[error("{op}: dtypes {lhs} and {rhs} differ; convert one with to_dtype")]
    DTypeMismatch { op: &'static str, lhs: DType, rhs: DType },

    #[error("{op}: tensors live on different devices ({lhs} and {rhs}); move one with to_device")]
    DeviceMismatch { op: &'static str, lhs: String, rhs: String },

    #[error("{op}: {len} values do not fill shape {shape}")]
    DataLength { op: &'static str, len: usize, shape: Shape },

    #[error("CUDA: {0}")]
    Cuda(String),
}

pub type Result<T> = std::result::Result<T, Error>;
