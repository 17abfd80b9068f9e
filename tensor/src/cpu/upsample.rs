//! Nearest-neighbour up-sampling by integer factors (NCHW).
//!
//! With integer scales every input pixel becomes a `scale_h x scale_w`
//! block, so the forward pass builds each widened output row once and copies
//! it `scale_h` times, and the backward pass sums each block. Planes are
//! independent and are the unit of parallel work.
//!
//! CUDA twin: `cuda/upsample.rs` (launches) and `cuda/upsample.cu` (kernels).

use rayon::prelude::*;
use std::mem::MaybeUninit;

use super::allocator::zeros;
use super::float::Float;

/// Planes per parallel task, so tiny planes do not each pay rayon's overhead.
fn planes_per_task(plane_len: usize) -> usize {
    (16 * 1024 / plane_len.max(1)).max(1)
}

/// [N, C, H, W] -> [N, C, H*scale_h, W*scale_w]
pub fn upsample_nearest2d<T: Float>(
    batch: usize,
    channels: usize,
    in_h: usize,
    in_w: usize,
    scale_h: usize,
    scale_w: usize,
    input: &[T],
) -> Vec<T> {
    let (oh, ow) = (in_h * scale_h, in_w * scale_w);
    let planes = batch * channels;
    assert_eq!(input.len(), planes * in_h * in_w);
    let len = planes * oh * ow;
    if len == 0 {
        return Vec::new();
    }
    // Every output element is written below, so the buffer is not zeroed
    // first (that was a third of this op's memory traffic).
    let mut out = Vec::with_capacity(len);
    let per_task = planes_per_task(oh * ow);
    input
        .par_chunks(in_h * in_w * per_task)
        .zip(out.spare_capacity_mut()[..len].par_chunks_mut(oh * ow * per_task))
        .for_each(|(xs, ys)| {
            for (x, y) in xs
                .chunks_exact(in_h * in_w)
                .zip(ys.chunks_exact_mut(oh * ow))
            {
                for (src, block) in x.chunks_exact(in_w).zip(y.chunks_exact_mut(scale_h * ow)) {
                    let (first, rest) = block.split_at_mut(ow);
                    if scale_w == 2 {
                        // The common case, kept free of an inner loop.
                        for (pair, &v) in first.chunks_exact_mut(2).zip(src) {
                            pair[0].write(v);
                            pair[1].write(v);
                        }
                    } else {
                        for (run, &v) in first.chunks_exact_mut(scale_w).zip(src) {
                            run.iter_mut().for_each(|o| {
                                o.write(v);
                            });
                        }
                    }
                    // SAFETY: every element of `first` was written just above.
                    let first: &[T] = unsafe { &*(first as *const [MaybeUninit<T>] as *const [T]) };
                    for row in rest.chunks_exact_mut(ow) {
                        row.write_copy_of_slice(first);
                    }
                }
            }
        });
    // SAFETY: the tasks cover all `len` elements (each plane's `in_h`
    // blocks of `scale_h` rows of `ow`), and wrote each one.
    unsafe { out.set_len(len) };
    out
}

/// grad [N, C, H*scale_h, W*scale_w] -> [N, C, H, W]: each input pixel
/// receives the sum of its output block.
pub fn upsample_nearest2d_backward<T: Float>(
    batch: usize,
    channels: usize,
    in_h: usize,
    in_w: usize,
    scale_h: usize,
    scale_w: usize,
    grad_out: &[T],
) -> Vec<T> {
    let (oh, ow) = (in_h * scale_h, in_w * scale_w);
    let planes = batch * channels;
    assert_eq!(grad_out.len(), planes * oh * ow);
    let mut grad_in = zeros(planes * in_h * in_w);
    if grad_in.is_empty() {
        return grad_in;
    }
    if oh * ow == 0 {
        return grad_in;
    }
    let per_task = planes_per_task(oh * ow);
    grad_out
        .par_chunks(oh * ow * per_task)
        .zip(grad_in.par_chunks_mut(in_h * in_w * per_task))
        .for_each(|(gs, dxs)| {
            let mut acc = vec![T::ZERO; ow];
            for (g, dx) in gs
                .chunks_exact(oh * ow)
                .zip(dxs.chunks_exact_mut(in_h * in_w))
            {
                for (block, dst) in g.chunks_exact(scale_h * ow).zip(dx.chunks_exact_mut(in_w)) {
                    // Add the block's rows together first (contiguous), then
                    // fold each run of scale_w columns.
                    acc.copy_from_slice(&block[..ow]);
                    for row in block[ow..].chunks_exact(ow) {
                        acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v);
                    }
                    for (d, run) in dst.iter_mut().zip(acc.chunks_exact(scale_w)) {
                        *d = run.iter().copied().sum();
                    }
                }
            }
        });
    grad_in
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Dims = (usize, usize, usize, usize, usize, usize);

    fn case() -> impl Strategy<Value = (Dims, Vec<f64>, Vec<f64>)> {
        (
            1usize..4,
            1usize..4,
            1usize..7,
            1usize..7,
            1usize..4,
            1usize..4,
        )
            .prop_flat_map(|d| {
                let (n, c, h, w, sh, sw) = d;
                (
                    Just(d),
                    prop::collection::vec(-2.0f64..2.0, n * c * h * w),
                    prop::collection::vec(-2.0f64..2.0, n * c * h * sh * w * sw),
                )
            })
    }

    fn naive(d: Dims, x: &[f64]) -> Vec<f64> {
        let (n, c, h, w, sh, sw) = d;
        let mut out = vec![];
        for pl in 0..n * c {
            for y in 0..h * sh {
                for xo in 0..w * sw {
                    out.push(x[(pl * h + y / sh) * w + xo / sw]);
                }
            }
        }
        out
    }

    fn naive_backward(d: Dims, g: &[f64]) -> Vec<f64> {
        let (n, c, h, w, sh, sw) = d;
        let mut dx = vec![0.0; n * c * h * w];
        let mut gi = g.iter();
        for pl in 0..n * c {
            for y in 0..h * sh {
                for xo in 0..w * sw {
                    dx[(pl * h + y / sh) * w + xo / sw] += gi.next().unwrap();
                }
            }
        }
        dx
    }

    fn to32(v: &[f64]) -> Vec<f32> {
        v.iter().map(|&x| x as f32).collect()
    }

    // The forward copies, so it must be exact. The backward sums at most 9
    // O(1) terms: 1e-12 absolute in f64, 1e-5 absolute in f32.
    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn matches_naive((d, x, g) in case()) {
            let (n, c, h, w, sh, sw) = d;
            prop_assert_eq!(upsample_nearest2d(n, c, h, w, sh, sw, &x), naive(d, &x));
            prop_assert_eq!(upsample_nearest2d(n, c, h, w, sh, sw, &to32(&x)), to32(&naive(d, &x)));
            let want = naive_backward(d, &g);
            let got = upsample_nearest2d_backward(n, c, h, w, sh, sw, &g);
            prop_assert_eq!(got.len(), want.len());
            for (a, b) in got.iter().zip(&want) { prop_assert!((a - b).abs() < 1e-12); }
            for (a, b) in upsample_nearest2d_backward(n, c, h, w, sh, sw, &to32(&g)).iter().zip(&want) {
                prop_assert!((*a as f64 - b).abs() < 1e-5);
            }
            // Adjoint: <up(x), g> == <x, up_backward(g)>.
            let lhs: f64 = upsample_nearest2d(n, c, h, w, sh, sw, &x).iter().zip(&g).map(|(a, b)| a * b).sum();
            let rhs: f64 = x.iter().zip(&got).map(|(a, b)| a * b).sum();
            prop_assert!((lhs - rhs).abs() < 1e-10);
        }
    }
}
