//! The differentiable ops, one file per family. Each method computes its
//! value with the tensor crate, then records a node whose closure holds the
//! backward rule and exactly the tensors that rule needs.

mod elementwise;
mod image;
mod index;
mod matmul;
mod reduce;
mod select;
mod softmax;
mod view;
