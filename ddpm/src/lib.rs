//! The `ddpm` crate is the top of petal's stack (tensor -> autograd -> nn -> ddpm): it holds the
//! time-conditioned U-Net, the denoising-diffusion schedule that trains it and samples from it,
//! and everything around the model that a user touches, such as loading a folder of flower
//! photos, fetching Oxford Flowers 102 when there is none, and writing sample grids and loss
//! curves as PNG files.

pub mod config;
pub mod data;
pub mod diffusion;
pub mod download;
pub mod images;
pub mod unet;
