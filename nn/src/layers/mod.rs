//! The layers, one per file. Each registers its parameters under the `Path`
//! it is given, with PyTorch's names (`weight`, `bias`) and PyTorch's
//! default initialisation, and implements [`Module`](crate::Module).
//!
//! Mixed precision: `Linear` and `Conv2d` compute in their input's dtype,
//! casting their parameters to it when it differs (`param_as`); `GroupNorm`
//! normalises a half-precision input in its parameters' dtype (f32) and
//! casts the result back. `BatchNorm2d` expects its parameters' dtype.

mod activation;
mod batch_norm;
mod conv2d;
mod dropout;
mod embedding;
mod group_norm;
mod linear;
mod pool;
mod sinusoidal;
mod upsample;

pub use activation::SiLU;
pub use batch_norm::BatchNorm2d;
pub use conv2d::{Conv2d, Conv2dConfig};
pub use dropout::Dropout;
pub use embedding::Embedding;
pub use group_norm::GroupNorm;
pub use linear::Linear;
pub use pool::{AvgPool2d, MaxPool2d};
pub use sinusoidal::SinusoidalEmbedding;
pub use upsample::UpsampleNearest2d;

use autograd::Var;
use tensor::DType;

/// A parameter in the dtype `dtype` of the activations it meets: itself
/// when they agree (the f32 path pays nothing), else a differentiable cast,
/// so the gradient flows back to the (f32 master) parameter in its own dtype.
pub(crate) fn param_as(p: &Var, dtype: DType) -> tensor::Result<Var> {
    if p.dtype() == dtype || !dtype.is_float() {
        return Ok(p.clone());
    }
    p.to_dtype(dtype)
}
