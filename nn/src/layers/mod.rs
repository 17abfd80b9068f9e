//! The layers, one per file. Each registers its parameters under the `Path`
//! it is given, with PyTorch's names (`weight`, `bias`) and PyTorch's
//! default initialisation, and implements [`Module`](crate::Module).

mod activation;
mod conv2d;
mod dropout;
mod embedding;
mod group_norm;
mod linear;
mod pool;
mod sinusoidal;
mod upsample;

pub use activation::SiLU;
pub use conv2d::{Conv2d, Conv2dConfig};
pub use dropout::Dropout;
pub use embedding::Embedding;
pub use group_norm::GroupNorm;
pub use linear::Linear;
pub use pool::{AvgPool2d, MaxPool2d};
pub use sinusoidal::SinusoidalEmbedding;
pub use upsample::UpsampleNearest2d;
