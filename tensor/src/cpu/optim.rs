//! Fused optimizer updates: Adam/AdamW and the exponential moving average
//! of weights, each one pass over the parameter-sized buffers (written as
//! separate tensor ops, an Adam step would read and write them about a
//! dozen times).
//!
//! CUDA twin: `cuda/optim.rs` (launches) and `cuda/optim.cu` (kernels).

use super::float::Float;
use super::simd::simd_dispatch;
use crate::backend::AdamStep;
use rayon::prelude::*;

/// Values per task. A small model's parameters are tensors of a few
/// thousand to some tens of thousands of values: at the elementwise ops'
/// threshold nearly every one ran on a single thread, one value at a time,
/// while the pool waited (3% of a `tiny` training step).
const CHUNK: usize = 4096;

/// PyTorch's Adam/AdamW update, fused into one pass over the parameter.
pub fn adam<T: Float>(p: &mut [T], g: &[T], m: &mut [T], v: &mut [T], s: &AdamStep) {
    // beta1, beta2, lr / bias correction 1, sqrt(bias correction 2), eps,
    // L2 weight decay, decoupled decay factor.
    let constants = [
        T::from_f64(s.beta1),
        T::from_f64(s.beta2),
        T::from_f64(s.lr / s.bias_correction1),
        T::from_f64(s.bias_correction2.sqrt()),
        T::from_f64(s.eps),
        T::from_f64(s.weight_decay),
        T::from_f64(1.0 - s.lr * s.decoupled_decay),
    ];
    // A loop over slices, compiled for the CPU's vectors (`sqrt` and the
    // division are exact in every lane, so the bits are a scalar loop's).
    #[inline(always)]
    fn run<T: Float>(p: &mut [T], g: &[T], m: &mut [T], v: &mut [T], constants: [T; 7]) {
        let [b1, b2, step_size, bc2_sqrt, eps, wd, decay] = constants;
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            let g = g + wd * *p;
            *p *= decay;
            *m = b1 * *m + (T::ONE - b1) * g;
            *v = b2 * *v + (T::ONE - b2) * g * g;
            // torch: denom = sqrt(v) / sqrt(bc2) + eps; p -= lr / bc1 * m / denom
            *p -= step_size * *m / ((*v).sqrt() / bc2_sqrt + eps);
        }
    }
    p.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
        .for_each(|((p, g), (m, v))| simd_dispatch!(run<T: Float>(p: &mut [T], g: &[T], m: &mut [T], v: &mut [T], constants: [T; 7])));
}

pub fn ema<T: Float>(avg: &mut [T], src: &[T], decay: f64) {
    let (d, rest) = (T::from_f64(decay), T::from_f64(1.0 - decay));
    #[inline(always)]
    fn run<T: Float>(avg: &mut [T], src: &[T], d: T, rest: T) {
        for (a, &s) in avg.iter_mut().zip(src) {
            *a = d * *a + rest * s;
        }
    }
    avg.par_chunks_mut(CHUNK).zip(src.par_chunks(CHUNK)).for_each(|(avg, src)| simd_dispatch!(run<T: Float>(avg: &mut [T], src: &[T], d: T, rest: T)));
}
