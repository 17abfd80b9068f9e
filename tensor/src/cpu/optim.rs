//! Fused optimizer updates: Adam/AdamW and the exponential moving average
//! of weights, each one pass over the parameter-sized buffers (written as
//! separate tensor ops, an Adam step would read and write them about a
//! dozen times).
//!
//! CUDA twin: `cuda/optim.rs` (launches) and `cuda/optim.cu` (kernels).

use super::float::Float;
use super::PARALLEL_THRESHOLD;
use crate::backend::AdamStep;
use rayon::prelude::*;

/// PyTorch's Adam/AdamW update, fused into one pass over the parameter.
pub fn adam<T: Float>(p: &mut [T], g: &[T], m: &mut [T], v: &mut [T], s: &AdamStep) {
    let (b1, b2) = (T::from_f64(s.beta1), T::from_f64(s.beta2));
    let step_size = T::from_f64(s.lr / s.bias_correction1);
    let bc2_sqrt = T::from_f64(s.bias_correction2.sqrt());
    let eps = T::from_f64(s.eps);
    let wd = T::from_f64(s.weight_decay);
    let decay = T::from_f64(1.0 - s.lr * s.decoupled_decay);
    let update = |p: &mut T, &g: &T, m: &mut T, v: &mut T| {
        let g = g + wd * *p;
        *p *= decay;
        *m = b1 * *m + (T::ONE - b1) * g;
        *v = b2 * *v + (T::ONE - b2) * g * g;
        // torch: denom = sqrt(v) / sqrt(bc2) + eps; p -= lr / bc1 * m / denom
        *p -= step_size * *m / ((*v).sqrt() / bc2_sqrt + eps);
    };
    p.par_iter_mut()
        .zip(g.par_iter())
        .zip(m.par_iter_mut().zip(v.par_iter_mut()))
        .with_min_len(PARALLEL_THRESHOLD)
        .for_each(|((p, g), (m, v))| update(p, g, m, v));
}

pub fn ema<T: Float>(avg: &mut [T], src: &[T], decay: f64) {
    let (d, rest) = (T::from_f64(decay), T::from_f64(1.0 - decay));
    avg.par_iter_mut()
        .zip(src.par_iter())
        .with_min_len(PARALLEL_THRESHOLD)
        .for_each(|(a, &s)| *a = d * *a + rest * s);
}
