//! The held-out denoising loss: how well a model predicts the noise on
//! images it never trained on, at five fixed steps, from fixed noise. Two
//! runs (or two implementations) can compare this number directly.
//!
//! Models of every objective are scored in noise units: a `v` or flow
//! prediction is turned into the noise it implies (`objective.rs`), so the
//! number of an `eps` model is exactly the seed's. Flow models see their own
//! noise levels at the same five steps (`t = (k + 1) / T`), and a
//! class-conditional model is scored unconditionally (the null class).

use crate::data::ImageFolder;
use crate::diffusion::Schedule;
use crate::model::Model;
use crate::train::to_tensor_error;
use anyhow::Result;
use tensor::{DType, Device, Rng, Tensor};

/// The steps the loss is averaged over.
pub const EVAL_STEPS: [u32; 5] = [50, 250, 500, 750, 950];
/// The noise seed: fixed, so the loss depends on the model alone.
pub const EVAL_SEED: u64 = 2024;
/// Images per forward pass.
pub const EVAL_BATCH: usize = 64;

/// Mean squared error of the predicted noise over every image of `data` at
/// each of `EVAL_STEPS`, in eval mode. Image `i` at step index `j` always
/// gets the same noise, however the images are batched.
pub fn heldout_loss(model: &Model, data: &ImageFolder, device: &Device) -> Result<f64> {
    heldout_loss_reporting(model, data, device, &mut |_| {})
}

/// [`heldout_loss`], calling `on_batch` with the images of each batch done.
pub fn heldout_loss_reporting(model: &Model, data: &ImageFolder, device: &Device, on_batch: &mut dyn FnMut(usize)) -> Result<f64> {
    let schedule = Schedule::default();
    let s = data.size();
    let per_image = (3 * s * s) as u64;
    let (mut total, mut count) = (0.0f64, 0usize);
    for (j, &t) in EVAL_STEPS.iter().enumerate() {
        for start in (0..data.len()).step_by(EVAL_BATCH) {
            let indices: Vec<usize> = (start..(start + EVAL_BATCH).min(data.len())).collect();
            let n = indices.len();
            let x0 = Tensor::from_vec(data.batch_with_flips(&indices, &vec![false; n]), [n, 3, s, s], device)?;
            let mut rng = Rng { key: EVAL_SEED, counter: (j * data.len() + start) as u64 * per_image };
            let noise = Tensor::randn(0.0, 1.0, [n, 3, s, s], DType::F32, device, &mut rng)?;
            let steps = vec![t; n];
            let (xt, _) = model.objective.training_pair(&schedule, &x0, &noise, &steps)?;
            let pred = model.unet.predict(&xt, &steps).map_err(to_tensor_error)?;
            let eps = model.objective.implied_noise(&schedule, &xt, &pred, &steps)?;
            let sq = eps.sub(&noise)?.sqr()?.to_dtype(DType::F64)?.sum_all()?.to_scalar()?;
            total += sq;
            count += n * 3 * s * s;
            on_batch(n);
        }
    }
    Ok(total / count as f64)
}
