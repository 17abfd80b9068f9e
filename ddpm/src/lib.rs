//! The `ddpm` crate is the top of petal's stack (tensor -> autograd -> nn -> ddpm): it holds the
//! time-conditioned U-Net, the denoising-diffusion schedule that trains it and samples from it,
//! and everything around the model that a user touches, such as loading a folder of flower
//! photos, fetching Oxford Flowers 102 when there is none, and writing sample grids and loss
//! curves as PNG files.
//!
//! - `config.rs`: the presets; `unet.rs`: the network; `model.rs`: a network with its
//!   parameters, loaded from petal or PyTorch checkpoints.
//! - `diffusion.rs`: the noise schedule and the DDPM and DDIM samplers;
//!   `objective.rs`: eps, v and flow-matching targets and min-SNR weights;
//!   `sampler.rs`: DPM-Solver++(2M), Euler and Heun, and sampling any
//!   checkpoint; `guidance.rs`: class labels and classifier-free guidance;
//!   `recipe.rs`: the seed and cpu-hour training recipes.
//! - `data.rs`, `download.rs`: images in; `images.rs`: grids, strips and loss curves out.
//! - `train.rs`: the training loop; `evaluate.rs`: the held-out loss; `bench.rs`: throughput.
//! - `cli.rs`: the `ddpm` command; `validate.rs`: its argument checks and memory estimate;
//!   `signals.rs`: Ctrl-C and SIGTERM stop a run with a checkpoint.
//! - `classifier.rs`: a small flower classifier CNN; `score.rs`: the Fréchet distance
//!   in its features (`ddpm score`).

pub mod bench;
pub mod classifier;
pub mod cli;
pub mod config;
pub mod data;
pub mod diffusion;
pub mod doctor;
pub mod download;
pub mod evaluate;
pub mod guidance;
pub mod images;
pub mod model;
pub mod objective;
pub mod recipe;
pub mod sampler;
pub mod score;
pub mod train;
pub mod signals;
pub mod unet;
pub mod validate;

#[cfg(test)]
mod test_util;

/// The chapters of `docs/book/`, whose Rust listings run as doctests of
/// these items (`cargo test -p ddpm --doc`); `tests/book.rs` checks the
/// excerpts and that every chapter is listed here.
#[cfg(doctest)]
mod book {
    #[doc = include_str!("../../docs/book/01-tensors.md")]
    struct Chapter1;
    #[doc = include_str!("../../docs/book/02-autograd.md")]
    struct Chapter2;
    #[doc = include_str!("../../docs/book/03-writing-an-op.md")]
    struct Chapter3;
    #[doc = include_str!("../../docs/book/04-nn-and-optimizers.md")]
    struct Chapter4;
    #[doc = include_str!("../../docs/book/05-training-a-classifier.md")]
    struct Chapter5;
    #[doc = include_str!("../../docs/book/06-diffusion-and-the-unet.md")]
    struct Chapter6;
    #[doc = include_str!("../../docs/book/07-the-gpu.md")]
    struct Chapter7;
    #[doc = include_str!("../../docs/book/08-performance.md")]
    struct Chapter8;
}
