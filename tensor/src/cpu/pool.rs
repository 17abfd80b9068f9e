//! 2-D average and max pooling (NCHW, no padding).
//!
//! Every (image, channel) plane is pooled independently, so planes are the
//! unit of parallel work and each kernel is a plain loop over one plane.
//! Pooling moves far more bytes than it computes, so the loops stay simple
//! and cache-friendly (row by row) rather than clever. The backward passes
//! scatter into the input-sized gradient; windows may overlap when
//! `stride < kernel`, so they accumulate rather than assign.
//!
//! CUDA twin: `cuda/pool.rs` (launches) and `cuda/pool.cu` (kernels).

use rayon::prelude::*;

use super::allocator::zeros;
use super::float::Float;
use crate::backend::Pool2dParams;

// The CPU kernels' own view of the parameters (defined in `backend.rs`).
impl Pool2dParams {
    fn planes(&self) -> usize {
        self.batch * self.channels
    }

    fn validate(&self) {
        assert!(
            self.kernel >= 1 && self.stride >= 1,
            "pooling kernel and stride must be at least 1"
        );
        assert!(
            self.kernel <= self.in_h && self.kernel <= self.in_w,
            "pooling window larger than the input"
        );
    }
}

/// Planes per parallel task: enough elements that rayon's per-task cost
/// (around a microsecond) stays negligible.
fn planes_per_task(plane_len: usize) -> usize {
    (16 * 1024 / plane_len.max(1)).max(1)
}

/// Runs `f(src_plane, dst_plane)` over matching planes in parallel.
fn per_plane<T: Float, F>(src: &[T], src_len: usize, dst: &mut [T], dst_len: usize, f: F)
where
    F: Fn(&[T], &mut [T]) + Send + Sync,
{
    if src_len == 0 || dst_len == 0 {
        return;
    }
    let per_task = planes_per_task(src_len.max(dst_len));
    src.par_chunks(src_len * per_task)
        .zip(dst.par_chunks_mut(dst_len * per_task))
        .for_each(|(s, d)| {
            for (sp, dp) in s.chunks_exact(src_len).zip(d.chunks_exact_mut(dst_len)) {
                f(sp, dp);
            }
        });
}

/// Zeroes an output the caller is about to accumulate into. It is already
/// zero (freshly allocated), but untouched: a `+=` would first read it, mapping
/// the kernel's shared zero page, and the write would then take a second
/// copy-on-write fault with a TLB shootdown, which under virtualisation costs
/// more than the whole pooling pass. Writing first takes one plain fault.
fn fresh_for_accumulation<T: Float>(dst: &mut [T]) {
    dst.fill(T::ZERO);
}

pub fn avg_pool2d<T: Float>(p: &Pool2dParams, input: &[T]) -> Vec<T> {
    p.validate();
    let (h, w, k, s) = (p.in_h, p.in_w, p.kernel, p.stride);
    let (oh, ow) = (p.out_h(), p.out_w());
    assert_eq!(input.len(), p.planes() * h * w);
    let mut out = zeros(p.planes() * oh * ow);
    let inv = T::ONE / T::from_f64((k * k) as f64);
    if (k, s) == (2, 2) {
        // The U-Net's pooling, without a buffer per plane or a window loop:
        // the sums in the general path's order, (a + c) + (b + d).
        per_plane(input, h * w, &mut out, oh * ow, |x, y| {
            for (oy, row) in y.chunks_exact_mut(ow).enumerate() {
                let (top, bottom) = (&x[2 * oy * w..][..2 * ow], &x[(2 * oy + 1) * w..][..2 * ow]);
                for ((o, t), b) in row.iter_mut().zip(top.chunks_exact(2)).zip(bottom.chunks_exact(2)) {
                    *o = ((t[0] + b[0]) + (t[1] + b[1])) * inv;
                }
            }
        });
        return out;
    }
    per_plane(input, h * w, &mut out, oh * ow, |x, y| {
        let mut acc = vec![T::ZERO; w];
        for (oy, row) in y.chunks_exact_mut(ow).enumerate() {
            // Sum the k input rows first (contiguous, vectorisable), then
            // the k-wide windows along that one summed row.
            acc.fill(T::ZERO);
            for r in 0..k {
                let src = &x[(oy * s + r) * w..][..w];
                acc.iter_mut().zip(src).for_each(|(a, &v)| *a += v);
            }
            for (ox, o) in row.iter_mut().enumerate() {
                let win = &acc[ox * s..ox * s + k];
                *o = win.iter().copied().sum::<T>() * inv;
            }
        }
    });
    out
}

pub fn avg_pool2d_backward<T: Float>(p: &Pool2dParams, grad_out: &[T]) -> Vec<T> {
    p.validate();
    let (h, w, k, s) = (p.in_h, p.in_w, p.kernel, p.stride);
    let (oh, ow) = (p.out_h(), p.out_w());
    assert_eq!(grad_out.len(), p.planes() * oh * ow);
    let mut grad_in = zeros(p.planes() * h * w);
    let inv = T::ONE / T::from_f64((k * k) as f64);
    per_plane(grad_out, oh * ow, &mut grad_in, h * w, |g, dx| {
        // Write before accumulating: see `fresh_for_accumulation`.
        fresh_for_accumulation(dx);
        let mut spread = vec![T::ZERO; w];
        for (oy, row) in g.chunks_exact(ow).enumerate() {
            // Spread each gradient over its k columns once, then add that
            // row to the k input rows the windows cover.
            spread.fill(T::ZERO);
            for (ox, &gv) in row.iter().enumerate() {
                let v = gv * inv;
                spread[ox * s..ox * s + k].iter_mut().for_each(|d| *d += v);
            }
            for r in 0..k {
                let dst = &mut dx[(oy * s + r) * w..][..w];
                dst.iter_mut().zip(&spread).for_each(|(d, &v)| *d += v);
            }
        }
    });
    grad_in
}

/// Offset within the plane of the first maximum of the window at (oy, ox).
/// NaN never wins a comparison, so it is skipped unless the whole window is NaN.
#[inline]
fn argmax_window<T: Float>(x: &[T], w: usize, k: usize, top: usize, left: usize) -> usize {
    let mut best = top * w + left;
    let mut best_v = x[best];
    for r in 0..k {
        let row = (top + r) * w + left;
        for (c, &v) in x[row..row + k].iter().enumerate() {
            // Selects rather than a branch: on real data the comparison is a
            // coin flip, and mispredictions dominated the loop.
            let better = v > best_v || (best_v.is_nan() && !v.is_nan());
            best_v = if better { v } else { best_v };
            best = if better { row + c } else { best };
        }
    }
    best
}

pub fn max_pool2d<T: Float>(p: &Pool2dParams, input: &[T]) -> Vec<T> {
    p.validate();
    let (h, w, k, s) = (p.in_h, p.in_w, p.kernel, p.stride);
    let (oh, ow) = (p.out_h(), p.out_w());
    assert_eq!(input.len(), p.planes() * h * w);
    let mut out = zeros(p.planes() * oh * ow);
    per_plane(input, h * w, &mut out, oh * ow, |x, y| {
        if k == 2 && s == 2 {
            // The U-Net's down-sampling case: a branch-free row pair.
            for (oy, row) in y.chunks_exact_mut(ow).enumerate() {
                let (r0, r1) = (&x[2 * oy * w..][..w], &x[(2 * oy + 1) * w..][..w]);
                for (ox, o) in row.iter_mut().enumerate() {
                    let a = r0[2 * ox].max(r0[2 * ox + 1]);
                    let b = r1[2 * ox].max(r1[2 * ox + 1]);
                    *o = a.max(b);
                }
            }
            return;
        }
        for (oy, row) in y.chunks_exact_mut(ow).enumerate() {
            for (ox, o) in row.iter_mut().enumerate() {
                *o = x[argmax_window(x, w, k, oy * s, ox * s)];
            }
        }
    });
    out
}

/// Routes each window's gradient to the first position holding its maximum
/// (row-major order), recomputed from `input` rather than stored.
pub fn max_pool2d_backward<T: Float>(p: &Pool2dParams, input: &[T], grad_out: &[T]) -> Vec<T> {
    p.validate();
    let (h, w, k, s) = (p.in_h, p.in_w, p.kernel, p.stride);
    let (oh, ow) = (p.out_h(), p.out_w());
    assert_eq!(input.len(), p.planes() * h * w);
    assert_eq!(grad_out.len(), p.planes() * oh * ow);
    let mut grad_in = zeros(p.planes() * h * w);
    let plane = h * w;
    let per_task = planes_per_task(plane);
    input
        .par_chunks(plane * per_task)
        .zip(grad_out.par_chunks(oh * ow * per_task))
        .zip(grad_in.par_chunks_mut(plane * per_task))
        .for_each(|((xs, gs), dxs)| {
            if k == 2 && s == 2 {
                // The U-Net's case: windows tile the input, so every covered
                // input gets exactly one assignment and nothing accumulates.
                for ((x, g), dx) in xs
                    .chunks_exact(plane)
                    .zip(gs.chunks_exact(oh * ow))
                    .zip(dxs.chunks_exact_mut(plane))
                {
                    max2x2_backward_plane(x, g, dx, w, oh, ow);
                }
                return;
            }
            fresh_for_accumulation(dxs);
            for ((x, g), dx) in xs
                .chunks_exact(plane)
                .zip(gs.chunks_exact(oh * ow))
                .zip(dxs.chunks_exact_mut(plane))
            {
                for (oy, row) in g.chunks_exact(ow).enumerate() {
                    for (ox, &gv) in row.iter().enumerate() {
                        dx[argmax_window(x, w, k, oy * s, ox * s)] += gv;
                    }
                }
            }
        });
    grad_in
}

/// 2x2, stride-2 max-pool backward for one plane, branch-free: the gradient
/// goes to the first of the four positions that equals the window maximum
/// (to the first position when all four are NaN).
fn max2x2_backward_plane<T: Float>(x: &[T], g: &[T], dx: &mut [T], w: usize, oh: usize, ow: usize) {
    let z = T::ZERO;
    for oy in 0..oh {
        let (r0, r1) = x[2 * oy * w..(2 * oy + 2) * w].split_at(w);
        let (d0, d1) = dx[2 * oy * w..(2 * oy + 2) * w].split_at_mut(w);
        let grow = &g[oy * ow..(oy + 1) * ow];
        for (ox, &gv) in grow.iter().enumerate() {
            let (i, j) = (2 * ox, 2 * ox + 1);
            let (a, b, c, d) = (r0[i], r0[j], r1[i], r1[j]);
            let m = a.max(b).max(c.max(d));
            // Non-short-circuit `&`/`|` so the compiler emits selects, not
            // branches that the data would make unpredictable.
            let ta = (a == m) | m.is_nan();
            let tb = !ta & (b == m);
            let tc = !(ta | tb) & (c == m);
            let td = !(ta | tb | tc);
            d0[i] = if ta { gv } else { z };
            d0[j] = if tb { gv } else { z };
            d1[i] = if tc { gv } else { z };
            d1[j] = if td { gv } else { z };
        }
        // An odd trailing column is in no window.
        if w % 2 == 1 {
            d0[w - 1] = z;
            d1[w - 1] = z;
        }
    }
    // Nor is an odd trailing row.
    dx[2 * oh * w..].fill(z);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn params() -> impl Strategy<Value = Pool2dParams> {
        (
            1usize..4,
            1usize..4,
            1usize..10,
            1usize..10,
            1usize..4,
            1usize..4,
        )
            .prop_filter_map(
                "window larger than input",
                |(batch, channels, in_h, in_w, kernel, stride)| {
                    (kernel <= in_h && kernel <= in_w).then_some(Pool2dParams {
                        batch,
                        channels,
                        in_h,
                        in_w,
                        kernel,
                        stride,
                    })
                },
            )
    }

    fn idx(p: &Pool2dParams, plane: usize, y: usize, x: usize) -> usize {
        (plane * p.in_h + y) * p.in_w + x
    }

    fn naive_avg(p: &Pool2dParams, x: &[f64]) -> Vec<f64> {
        let mut out = vec![];
        for pl in 0..p.planes() {
            for oy in 0..p.out_h() {
                for ox in 0..p.out_w() {
                    let mut s = 0.0;
                    for r in 0..p.kernel {
                        for c in 0..p.kernel {
                            s += x[idx(p, pl, oy * p.stride + r, ox * p.stride + c)];
                        }
                    }
                    out.push(s / (p.kernel * p.kernel) as f64);
                }
            }
        }
        out
    }

    fn naive_avg_backward(p: &Pool2dParams, g: &[f64]) -> Vec<f64> {
        let mut dx = vec![0.0; p.planes() * p.in_h * p.in_w];
        let mut gi = g.iter();
        for pl in 0..p.planes() {
            for oy in 0..p.out_h() {
                for ox in 0..p.out_w() {
                    let gv = gi.next().unwrap() / (p.kernel * p.kernel) as f64;
                    for r in 0..p.kernel {
                        for c in 0..p.kernel {
                            dx[idx(p, pl, oy * p.stride + r, ox * p.stride + c)] += gv;
                        }
                    }
                }
            }
        }
        dx
    }

    /// Index of the first maximum of each window, in row-major order.
    fn naive_argmax(p: &Pool2dParams, x: &[f64]) -> Vec<usize> {
        let mut out = vec![];
        for pl in 0..p.planes() {
            for oy in 0..p.out_h() {
                for ox in 0..p.out_w() {
                    let mut best = idx(p, pl, oy * p.stride, ox * p.stride);
                    for r in 0..p.kernel {
                        for c in 0..p.kernel {
                            let i = idx(p, pl, oy * p.stride + r, ox * p.stride + c);
                            if x[i] > x[best] {
                                best = i;
                            }
                        }
                    }
                    out.push(best);
                }
            }
        }
        out
    }

    /// Inputs drawn from a few integers so that ties (the "first max" rule)
    /// actually occur.
    fn case() -> impl Strategy<Value = (Pool2dParams, Vec<f64>, Vec<f64>)> {
        params().prop_flat_map(|p| {
            let n_in = p.planes() * p.in_h * p.in_w;
            let n_out = p.planes() * p.out_h() * p.out_w();
            (
                Just(p),
                prop::collection::vec((-4i32..4).prop_map(|v| v as f64 * 0.5), n_in),
                prop::collection::vec(-2.0f64..2.0, n_out),
            )
        })
    }

    fn to32(v: &[f64]) -> Vec<f32> {
        v.iter().map(|&x| x as f32).collect()
    }

    fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    // Tolerances: f64 to 1e-12 absolute (values are O(1), sums of at most
    // k*k*overlap terms); f32 to 1e-5 absolute, ~100 ulps of such sums.
    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn avg_pool_matches_naive((p, x, g) in case()) {
            let want = naive_avg(&p, &x);
            for (a, b) in avg_pool2d(&p, &x).iter().zip(&want) { prop_assert!((a - b).abs() < 1e-12); }
            for (a, b) in avg_pool2d(&p, &to32(&x)).iter().zip(&want) { prop_assert!((*a as f64 - b).abs() < 1e-5); }
            let want = naive_avg_backward(&p, &g);
            let got = avg_pool2d_backward(&p, &g);
            prop_assert_eq!(got.len(), want.len());
            for (a, b) in got.iter().zip(&want) { prop_assert!((a - b).abs() < 1e-12); }
            for (a, b) in avg_pool2d_backward(&p, &to32(&g)).iter().zip(&want) { prop_assert!((*a as f64 - b).abs() < 1e-5); }
            // Adjoint: <avg(x), g> == <x, avg_backward(g)>.
            prop_assert!((dot(&avg_pool2d(&p, &x), &g) - dot(&x, &got)).abs() < 1e-10);
        }

        #[test]
        fn max_pool_matches_naive((p, x, g) in case()) {
            let arg = naive_argmax(&p, &x);
            let want: Vec<f64> = arg.iter().map(|&i| x[i]).collect();
            prop_assert_eq!(&max_pool2d(&p, &x), &want);
            prop_assert_eq!(max_pool2d(&p, &to32(&x)), to32(&want));
            let mut want_dx = vec![0.0; x.len()];
            for (&i, &gv) in arg.iter().zip(&g) { want_dx[i] += gv; }
            let got = max_pool2d_backward(&p, &x, &g);
            prop_assert_eq!(got.len(), want_dx.len());
            for (a, b) in got.iter().zip(&want_dx) { prop_assert!((a - b).abs() < 1e-12); }
            for (a, b) in max_pool2d_backward(&p, &to32(&x), &to32(&g)).iter().zip(&want_dx) {
                prop_assert!((*a as f64 - b).abs() < 1e-5);
            }
            // Max pooling is linear in g given the argmax: <max(x) selecting g> adjoint.
            let mut sel = 0.0;
            for (&i, &gv) in arg.iter().zip(&g) { sel += x[i] * gv; }
            prop_assert!((sel - dot(&x, &got)).abs() < 1e-10);
        }
    }

    /// The 2x2 / stride-2 fast paths on odd and even sizes, with many ties.
    #[test]
    fn max_pool_2x2_fast_path_matches_naive() {
        let mut seed = 12345u64;
        for (h, w) in [(2, 2), (3, 5), (4, 4), (5, 2), (7, 7), (2, 9)] {
            let p = Pool2dParams {
                batch: 2,
                channels: 3,
                in_h: h,
                in_w: w,
                kernel: 2,
                stride: 2,
            };
            let x: Vec<f64> = (0..p.planes() * h * w)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((seed >> 60) % 3) as f64
                })
                .collect();
            let g: Vec<f64> = (0..p.planes() * p.out_h() * p.out_w())
                .map(|i| i as f64 + 1.0)
                .collect();
            let arg = naive_argmax(&p, &x);
            let mut want = vec![0.0; x.len()];
            for (&i, &gv) in arg.iter().zip(&g) {
                want[i] += gv;
            }
            assert_eq!(max_pool2d_backward(&p, &x, &g), want, "{h}x{w}");
            assert_eq!(
                max_pool2d(&p, &x),
                arg.iter().map(|&i| x[i]).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn max_pool_gradient_goes_to_first_max() {
        let p = Pool2dParams {
            batch: 1,
            channels: 1,
            in_h: 2,
            in_w: 2,
            kernel: 2,
            stride: 2,
        };
        let dx = max_pool2d_backward(&p, &[1.0f32, 3.0, 3.0, 0.0], &[5.0]);
        assert_eq!(dx, vec![0.0, 5.0, 0.0, 0.0]);
    }
}
