//! The `ddpm` crate is the top of petal's stack (tensor -> autograd -> nn -> ddpm): it holds the
//! time-conditioned U-Net, the denoising-diffusion schedule that trains it and samples from it,
//! and everything around the model that a user touches, such as loading a folder of flower
//! photos, fetching Oxford Flowers 102 when there is none, and writing sample grids and loss
//! curves as PNG files.
//!
//! - `config.rs`: the three presets; `unet.rs`: the network; `model.rs`: a network with its
//!   parameters, loaded from petal or PyTorch checkpoints.
//! - `diffusion.rs`: the noise schedule and the DDPM and DDIM samplers.
//! - `data.rs`, `download.rs`: images in; `images.rs`: grids, strips and loss curves out.
//! - `train.rs`: the training loop; `evaluate.rs`: the held-out loss; `bench.rs`: throughput.
//! - `classifier.rs`: a small flower classifier CNN; `score.rs`: the Fréchet distance
//!   in its features (`ddpm score`).
//! - `cli.rs`: the `ddpm` command.

pub mod bench;
pub mod classifier;
pub mod cli;
pub mod config;
pub mod data;
pub mod diffusion;
pub mod download;
pub mod evaluate;
pub mod images;
pub mod model;
pub mod score;
pub mod train;
pub mod unet;

#[cfg(test)]
mod test_util;
