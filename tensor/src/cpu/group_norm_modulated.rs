//! `silu(group_norm(x * scale + shift))`, with a scale and a shift per
//! (image, channel), forward and analytic backward, without ever making
//! the modulated tensor `z = x * scale + shift`.
//!
//! This is the second norm of every U-Net residual block, whose input the
//! time embedding scales and shifts. Composed from plain ops, training
//! pays two elementwise passes forward (the product, then the sum, each
//! writing a tensor the tape keeps) and three backward (the gradient
//! through each, and the product `dz * x` that the scale's gradient sums).
//! Here both directions are the two passes over each group that
//! `group_norm_silu` makes anyway.
//!
//! Forward: the group's statistics of z come from per-channel sums of x,
//! since z is affine in x within a channel; `u = (z - mean) * rstd * gamma
//! + beta` is then again one multiply-add per element of x, `x * a_c + b_c`.
//! Each channel's sums are shifted by its first value, as in `group_norm.rs`,
//! and the group's variance is assembled around the group mean, so no
//! large terms cancel.
//!
//! Backward: the plain group norm's gradient with respect to z is, per
//! channel, `dz = k_g * dy_u + K (z - mean) + L` (`dy_u` the gradient at u,
//! after the SiLU), and `dx = scale * dz`: one fused expression per element
//! of x again. The scale's and shift's gradients, `sum(dz * x)` and
//! `sum(dz)` over a channel, follow in closed form from four per-channel
//! sums taken in the same pass as the group norm's own: `sum(dy_u)`,
//! `sum(dy_u * d)`, `sum(d)` and `sum(d^2)`, with `d = x - x_first`.
//!
//! An optional dropout mask (the scaled mask of `Tensor::dropout_mask`)
//! multiplies the output as it is written, and the incoming gradient as it
//! is read: the dropout that follows this norm in the U-Net, without its
//! own pass each way and the tensor in between. Products are taken in the
//! same order as the separate ops take them, so the results are the same.
//!
//! The statistics returned are those of z (what the backward needs); the
//! reference is `group_norm_silu` of the modulated tensor, which the tests
//! and the front end's fallback for other backends compose.

use rayon::prelude::*;

use std::mem::MaybeUninit;

use super::elementwise::{silu, silu_grad};
use super::float::Float;
use super::group_norm::{affine_row_into, grad_x_row, shifted_sums, silu_grad_row, summed_over_images, LANES};
use super::simd::simd_dispatch;
use crate::backend::GroupNormParams;

/// One channel's row of a group, as the forward sums it: its scale and
/// shift, its first value, and the sums of `d = x - first`.
#[derive(Clone, Copy)]
struct RowMoments {
    scale: f64,
    shift: f64,
    first: f64,
    /// sum(d) and sum(d^2)
    d: f64,
    dd: f64,
}

impl RowMoments {
    fn of<T: Float>(row: &[T], scale: f64, shift: f64) -> RowMoments {
        let first = row[0].to_f64();
        let (d, dd) = shifted_sums(row, first);
        RowMoments { scale, shift, first, d, dd }
    }

    /// `z - m` at the row's first value, for a group mean m.
    fn centred_first(&self, m: f64) -> f64 {
        self.scale * self.first + self.shift - m
    }
}

/// The group's (mean, variance) of z from its rows' moments, `per_row`
/// values each: the mean first, then each row's squares about it.
fn group_moments(rows: &[RowMoments], per_row: usize) -> (f64, f64) {
    let (k, n) = (per_row as f64, (rows.len() * per_row) as f64);
    let mean = rows.iter().map(|r| k * (r.scale * r.first + r.shift) + r.scale * r.d).sum::<f64>() / n;
    let squares: f64 = rows
        .iter()
        .map(|r| {
            let c = r.centred_first(mean);
            k * c * c + 2.0 * c * r.scale * r.d + r.scale * r.scale * r.dd
        })
        .sum();
    (mean, (squares / n).max(0.0))
}

/// `out = silu(x * a + b) * mask`.
#[inline(always)]
fn masked_silu_row<T: Float>(out: &mut [MaybeUninit<T>], x: &[T], mask: &[T], a: T, b: T) {
    #[inline(always)]
    fn run<T: Float>(out: &mut [MaybeUninit<T>], x: &[T], mask: &[T], a: T, b: T) {
        for ((o, &v), &m) in out.iter_mut().zip(x).zip(mask) {
            o.write(silu(v * a + b) * m);
        }
    }
    assert!(x.len() == out.len() && mask.len() == out.len(), "one row length");
    simd_dispatch!(run<T: Float>(out: &mut [MaybeUninit<T>], x: &[T], mask: &[T], a: T, b: T))
}

/// `out = (dy * mask) * silu'(x * a + b)`: the gradient back through the
/// dropout and the SiLU, its input rebuilt.
#[inline(always)]
fn masked_silu_grad_row<T: Float>(out: &mut [T], dy: &[T], x: &[T], mask: &[T], a: T, b: T) {
    #[inline(always)]
    fn run<T: Float>(out: &mut [T], dy: &[T], x: &[T], mask: &[T], a: T, b: T) {
        for (((d, &g), &v), &m) in out.iter_mut().zip(dy).zip(x).zip(mask) {
            *d = g * m * silu_grad(v * a + b);
        }
    }
    assert!(dy.len() == out.len() && x.len() == out.len() && mask.len() == out.len(), "one row length");
    simd_dispatch!(run<T: Float>(out: &mut [T], dy: &[T], x: &[T], mask: &[T], a: T, b: T))
}

/// Returns (y, mean [N*G], rstd [N*G]) with y = silu(group_norm(z)), z =
/// x * scale + shift, `scale` and `shift` [N*C]; the statistics are z's.
/// With a `mask` (as long as x), y is multiplied by it.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_silu_modulated<T: Float>(
    p: &GroupNormParams,
    x: &[T],
    scale: &[T],
    shift: &[T],
    gamma: &[T],
    beta: &[T],
    mask: Option<&[T]>,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let cpg = p.channels_per_group();
    let len = p.group_len();
    let ng = p.batch * p.groups;
    assert_eq!(x.len(), ng * len);
    assert_eq!(scale.len(), p.batch * p.channels);
    assert_eq!(shift.len(), p.batch * p.channels);
    assert_eq!(gamma.len(), p.channels);
    assert_eq!(beta.len(), p.channels);
    assert!(mask.is_none_or(|m| m.len() == x.len()), "a mask as long as x");
    let mut mean = vec![T::ZERO; ng];
    let mut rstd = vec![T::ZERO; ng];
    if len == 0 {
        // Empty groups, as `group_norm`: mean 0, rstd of eps.
        rstd.fill(T::from_f64(1.0 / p.eps.sqrt()));
        return (Vec::new(), mean, rstd);
    }
    // Not zeroed first: every group's rows are written below.
    let mut y = Vec::with_capacity(x.len());
    x.par_chunks(len)
        .zip(y.spare_capacity_mut()[..x.len()].par_chunks_mut(len))
        .zip(scale.par_chunks(cpg).zip(shift.par_chunks(cpg)))
        .zip(mean.par_iter_mut().zip(rstd.par_iter_mut()))
        .enumerate()
        .with_min_len(p.groups_per_task())
        .for_each_init(Vec::new, |rows: &mut Vec<RowMoments>, (i, (((xs, ys), (ss, bs)), (m_out, r_out)))| {
            let g = i % p.groups;
            rows.clear();
            rows.extend(xs.chunks_exact(p.spatial).zip(ss.iter().zip(bs)).map(|(xp, (s, b))| RowMoments::of(xp, s.to_f64(), b.to_f64())));
            let (m, var) = group_moments(rows, p.spatial);
            let r = 1.0 / (var + p.eps).sqrt();
            *m_out = T::from_f64(m);
            *r_out = T::from_f64(r);
            for (ci, ((xp, yp), row)) in xs.chunks_exact(p.spatial).zip(ys.chunks_exact_mut(p.spatial)).zip(rows.iter()).enumerate() {
                let c = g * cpg + ci;
                // u = (x * s + b - m) * r * gamma + beta = x * (s * a) + ((b - m) * a + beta)
                let a = r * gamma[c].to_f64();
                let (a, b) = (T::from_f64(row.scale * a), T::from_f64((row.shift - m) * a + beta[c].to_f64()));
                match mask {
                    Some(mask) => masked_silu_row(yp, xp, &mask[(i * cpg + ci) * p.spatial..][..p.spatial], a, b),
                    None => affine_row_into(yp, xp, a, b, true),
                }
            }
        });
    // SAFETY: the groups tile `x`, and each wrote all its rows.
    unsafe { y.set_len(x.len()) };
    (y, mean, rstd)
}

/// `[sum(g), sum(g * d), sum(d), sum(d^2)]` in f64 over one row, with
/// `d = x - first`.
#[inline(always)]
fn row_grad_sums<T: Float>(x: &[T], g: &[T], first: f64) -> [f64; 4] {
    #[inline(always)]
    fn run<T: Float>(x: &[T], g: &[T], first: f64) -> [f64; 4] {
        let mut acc = [[0.0f64; LANES]; 4];
        let mut add = |l: usize, xv: T, gv: T| {
            let (d, gv) = (xv.to_f64() - first, gv.to_f64());
            acc[0][l] += gv;
            acc[1][l] += gv * d;
            acc[2][l] += d;
            acc[3][l] += d * d;
        };
        let chunks = x.chunks_exact(LANES);
        let tail = chunks.remainder().len();
        for (cx, cg) in chunks.zip(g.chunks_exact(LANES)) {
            for l in 0..LANES {
                add(l, cx[l], cg[l]);
            }
        }
        for (&xv, &gv) in x[x.len() - tail..].iter().zip(&g[g.len() - tail..]) {
            add(0, xv, gv);
        }
        acc.map(|lanes| lanes.iter().sum())
    }
    assert_eq!(x.len(), g.len(), "one row length");
    simd_dispatch!(run<T: Float>(x: &[T], g: &[T], first: f64) -> [f64; 4])
}

/// The backward of `group_norm_silu_modulated`: (grad_x, grad_scale [N*C],
/// grad_shift [N*C], grad_gamma [C], grad_beta [C]) from x, the
/// modulation, the parameters, the forward's statistics and its mask.
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
pub fn group_norm_silu_modulated_backward<T: Float>(
    p: &GroupNormParams,
    x: &[T],
    scale: &[T],
    shift: &[T],
    gamma: &[T],
    beta: &[T],
    mean: &[T],
    rstd: &[T],
    grad_y: &[T],
    mask: Option<&[T]>,
) -> (Vec<T>, Vec<T>, Vec<T>, Vec<T>, Vec<T>) {
    let cpg = p.channels_per_group();
    let len = p.group_len();
    let ng = p.batch * p.groups;
    let nc = p.batch * p.channels;
    assert_eq!(x.len(), ng * len);
    assert_eq!(grad_y.len(), x.len());
    assert_eq!(scale.len(), nc);
    assert_eq!(shift.len(), nc);
    assert_eq!(gamma.len(), p.channels);
    assert_eq!(beta.len(), p.channels);
    assert_eq!(mean.len(), ng);
    assert_eq!(rstd.len(), ng);
    assert!(mask.is_none_or(|m| m.len() == x.len()), "a mask as long as x");
    // Not zeroed first: every group's rows are written below.
    let mut dx = Vec::with_capacity(x.len());
    let mut grad_scale = vec![T::ZERO; nc];
    let mut grad_shift = vec![T::ZERO; nc];
    // Per (image, channel): the gradients of beta and gamma, reduced over
    // images at the end, which keeps the parallel loop free of shared writes.
    let mut db_nc = vec![0.0f64; nc];
    let mut dg_nc = vec![0.0f64; nc];
    if len > 0 {
        let hw = p.spatial as f64;
        x.par_chunks(len)
            .zip(grad_y.par_chunks(len))
            .zip(dx.spare_capacity_mut()[..x.len()].par_chunks_mut(len))
            .zip(scale.par_chunks(cpg).zip(shift.par_chunks(cpg)))
            .zip(grad_scale.par_chunks_mut(cpg).zip(grad_shift.par_chunks_mut(cpg)))
            .zip(db_nc.par_chunks_mut(cpg).zip(dg_nc.par_chunks_mut(cpg)))
            .enumerate()
            .with_min_len(p.groups_per_task())
            // Each thread keeps one buffer for `dy_u` and one for the row sums.
            .for_each_init(
                || (Vec::new(), Vec::new()),
                |(du_buffer, sums): &mut (Vec<T>, Vec<[f64; 4]>), (i, (((((xs, dys), dxs), (ss, bs)), (dss, dbs)), (db, dg)))| {
                    let g = i % p.groups;
                    let (m, r) = (mean[i].to_f64(), rstd[i].to_f64());
                    du_buffer.resize(len, T::ZERO);
                    sums.clear();
                    // The gradient at u = zhat * gamma + beta, through the
                    // mask and the SiLU, whose input is rebuilt as the
                    // forward made it; then the row's sums.
                    for (ci, ((xp, gp), dp)) in xs.chunks_exact(p.spatial).zip(dys.chunks_exact(p.spatial)).zip(du_buffer.chunks_exact_mut(p.spatial)).enumerate() {
                        let c = g * cpg + ci;
                        let (s, b) = (ss[ci].to_f64(), bs[ci].to_f64());
                        let a = r * gamma[c].to_f64();
                        let (a, b) = (T::from_f64(s * a), T::from_f64((b - m) * a + beta[c].to_f64()));
                        match mask {
                            Some(mask) => masked_silu_grad_row(dp, gp, xp, &mask[(i * cpg + ci) * p.spatial..][..p.spatial], a, b),
                            None => silu_grad_row(dp, gp, xp, a, b),
                        }
                        sums.push(row_grad_sums(xp, dp, xp[0].to_f64()));
                    }
                    // sum over the group of gamma*dy_u and of gamma*dy_u*zhat,
                    // with sum(dy_u * (z - m)) = (z - m at first) * sum(dy_u) + s * sum(dy_u * d).
                    let (mut sum_gdu, mut sum_gdu_zhat) = (0.0, 0.0);
                    for (ci, row) in sums.iter().enumerate() {
                        let c = g * cpg + ci;
                        let (s, b, first) = (ss[ci].to_f64(), bs[ci].to_f64(), xs[ci * p.spatial].to_f64());
                        let [sg, sgd, _, _] = *row;
                        let du_zc = (s * first + b - m) * sg + s * sgd;
                        let gam = gamma[c].to_f64();
                        db[ci] = sg;
                        dg[ci] = du_zc * r;
                        sum_gdu += gam * sg;
                        sum_gdu_zhat += gam * du_zc * r;
                    }
                    // dz = r*gamma_c*dy_u + k_z * (z - m) + k_0 (the plain
                    // group norm's closed form), and dx = s * dz.
                    let n = len as f64;
                    let (k_z, k_0) = (-r * r * sum_gdu_zhat / n, -r * sum_gdu / n);
                    for (ci, ((gp, (xp, dp)), row)) in du_buffer.chunks_exact(p.spatial).zip(xs.chunks_exact(p.spatial).zip(dxs.chunks_exact_mut(p.spatial))).zip(sums.iter()).enumerate() {
                        let c = g * cpg + ci;
                        let (s, b, first) = (ss[ci].to_f64(), bs[ci].to_f64(), xp[0].to_f64());
                        let a = r * gamma[c].to_f64();
                        // z - m = (b - m) + s * x
                        grad_x_row(dp, gp, xp, T::from_f64(s * a), T::from_f64(k_z * s * s), T::from_f64(s * (k_z * (b - m) + k_0)));
                        // sum(dz) and sum(dz * x) from the row's sums, x = first + d.
                        let [sg, sgd, sd, sdd] = *row;
                        let zc = s * first + b - m;
                        let sum_zc = hw * zc + s * sd;
                        let sum_x = hw * first + sd;
                        let sum_gx = first * sg + sgd;
                        let sum_zc_x = hw * zc * first + (zc + s * first) * sd + s * sdd;
                        dbs[ci] = T::from_f64(a * sg + k_z * sum_zc + k_0 * hw);
                        dss[ci] = T::from_f64(a * sum_gx + k_z * sum_zc_x + k_0 * sum_x);
                    }
                },
            );
    }
    // SAFETY: the groups tile `x`, and each wrote all its rows of `dx`
    // (with no groups, `x` is empty).
    unsafe { dx.set_len(x.len()) };
    let (grad_gamma, grad_beta) = summed_over_images(p, &dg_nc, &db_nc);
    (dx, grad_scale, grad_shift, grad_gamma, grad_beta)
}

#[cfg(test)]
mod tests {
    use super::super::group_norm::{group_norm_silu, group_norm_silu_backward};
    use super::*;
    use proptest::prelude::*;

    type Case = (GroupNormParams, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Option<Vec<f64>>);

    /// (params, x, scale [N*C], shift [N*C], gamma, beta, upstream gradient,
    /// dropout mask), f32-representable values, so the f32 kernels see the
    /// f64 inputs. The optional offset puts groups' means far from their
    /// spread; the scales include values near zero and negative ones; the
    /// mask, where there is one, holds 0 and 1.25 (dropout at p = 0.2).
    fn case() -> impl Strategy<Value = Case> {
        (1usize..4, 1usize..4, 1usize..4, 1usize..20, prop::sample::select(vec![0.0f64, 8.0])).prop_flat_map(|(batch, groups, cpg, spatial, offset)| {
            let p = GroupNormParams { batch, channels: groups * cpg, spatial, groups, eps: 1e-5 };
            let (n, nc) = (batch * groups * cpg * spatial, batch * p.channels);
            let f = |v: f64| v as f32 as f64;
            (
                Just(p),
                prop::collection::vec((-2.0f64..2.0).prop_map(move |v| f(v + offset)), n),
                prop::collection::vec((-1.5f64..2.5).prop_map(f), nc),
                prop::collection::vec((-2.0f64..2.0).prop_map(f), nc),
                prop::collection::vec((-2.0f64..2.0).prop_map(f), p.channels),
                prop::collection::vec((-2.0f64..2.0).prop_map(f), p.channels),
                prop::collection::vec((-2.0f64..2.0).prop_map(f), n),
                prop::option::of(prop::collection::vec(prop::sample::select(vec![0.0f64, 1.25]), n)),
            )
        })
    }

    /// z = x * scale + shift, in f64.
    fn modulate(p: &GroupNormParams, x: &[f64], scale: &[f64], shift: &[f64]) -> Vec<f64> {
        x.iter().enumerate().map(|(i, &v)| v * scale[i / p.spatial] + shift[i / p.spatial]).collect()
    }

    /// `v * mask`, or v without a mask.
    fn masked(v: &[f64], mask: Option<&Vec<f64>>) -> Vec<f64> {
        match mask {
            Some(m) => v.iter().zip(m).map(|(a, b)| a * b).collect(),
            None => v.to_vec(),
        }
    }

    fn to32(v: &[f64]) -> Vec<f32> {
        v.iter().map(|&x| x as f32).collect()
    }

    fn largest(v: &[f64]) -> f64 {
        v.iter().fold(0.0f64, |a, v| a.max(v.abs()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Against `group_norm_silu` of the modulated tensor (itself checked
        /// against the naive definition) times the mask, in f64 and in f32.
        #[test]
        fn forward_matches_the_composed_op((p, x, scale, shift, gamma, beta, _g, mask) in case()) {
            let z = modulate(&p, &x, &scale, &shift);
            let (want, want_mean, want_rstd) = group_norm_silu(&p, &z, &gamma, &beta);
            let want = masked(&want, mask.as_ref());
            let (y, mean, rstd) = group_norm_silu_modulated(&p, &x, &scale, &shift, &gamma, &beta, mask.as_deref());
            // The output's error scales with |x * a| + |b| of the fused affine.
            let mag = ((largest(&x) * largest(&scale) + largest(&shift) + largest(&want_mean)) * largest(&want_rstd) * largest(&gamma) + largest(&beta) + 1.0) * 1.25;
            for (a, b) in y.iter().zip(&want) { prop_assert!((a - b).abs() <= 1e-10 * mag, "{} vs {}", a, b); }
            for (i, (&m, &r)) in want_mean.iter().zip(&want_rstd).enumerate() {
                prop_assert!((mean[i] - m).abs() <= 1e-12 * (1.0 + largest(&z)), "mean {} vs {}", mean[i], m);
                prop_assert!((rstd[i] - r).abs() <= 1e-8 * r, "rstd {} vs {}", rstd[i], r);
            }
            let mask32 = mask.as_ref().map(|m| to32(m));
            let (y32, _, r32) = group_norm_silu_modulated(&p, &to32(&x), &to32(&scale), &to32(&shift), &to32(&gamma), &to32(&beta), mask32.as_deref());
            for (a, b) in y32.iter().zip(&want) { prop_assert!((*a as f64 - b).abs() <= 3e-6 * mag, "f32 {} vs {}", a, b); }
            for (a, b) in r32.iter().zip(&want_rstd) { prop_assert!((*a as f64 - b).abs() <= 1e-5 * b, "f32 rstd {} vs {}", a, b); }
        }

        /// Against the chain rule through the composed op: the gradient
        /// times the mask, dz from `group_norm_silu_backward`, then dx =
        /// scale * dz, dscale = sum(dz * x), dshift = sum(dz) over each
        /// channel, all in f64.
        #[test]
        fn backward_matches_the_chain_rule((p, x, scale, shift, gamma, beta, g, mask) in case()) {
            let z = modulate(&p, &x, &scale, &shift);
            let (_, zm, zr) = group_norm_silu(&p, &z, &gamma, &beta);
            let (dz, want_dgamma, want_dbeta) = group_norm_silu_backward(&p, &z, &gamma, &beta, &zm, &zr, &masked(&g, mask.as_ref()));
            let want_dx: Vec<f64> = dz.iter().enumerate().map(|(i, d)| d * scale[i / p.spatial]).collect();
            let mut want_dscale = vec![0.0; scale.len()];
            let mut want_dshift = vec![0.0; scale.len()];
            for (i, d) in dz.iter().enumerate() {
                want_dscale[i / p.spatial] += d * x[i];
                want_dshift[i / p.spatial] += d;
            }

            let (_, mean, rstd) = group_norm_silu_modulated(&p, &x, &scale, &shift, &gamma, &beta, mask.as_deref());
            let (dx, dscale, dshift, dgamma, dbeta) = group_norm_silu_modulated_backward(&p, &x, &scale, &shift, &gamma, &beta, &mean, &rstd, &g, mask.as_deref());
            // Terms of size up to rstd * |gamma| * |g| (times |x| and the
            // row length for the sums) cancel into each gradient.
            let term = (largest(&rstd) * largest(&gamma) * largest(&g) * (1.0 + largest(&scale)) + largest(&g)) * 1.25;
            let row = p.spatial as f64 * (1.0 + largest(&x));
            for (i, (a, b)) in dx.iter().zip(&want_dx).enumerate() { prop_assert!((a - b).abs() <= 1e-9 * term, "dx[{}] {} vs {}", i, a, b); }
            for (i, (a, b)) in dscale.iter().zip(&want_dscale).enumerate() { prop_assert!((a - b).abs() <= 1e-9 * term * row, "dscale[{}] {} vs {}", i, a, b); }
            for (i, (a, b)) in dshift.iter().zip(&want_dshift).enumerate() { prop_assert!((a - b).abs() <= 1e-9 * term * row, "dshift[{}] {} vs {}", i, a, b); }
            let all = (p.batch * p.spatial) as f64 * (1.0 + largest(&x));
            for (a, b) in dgamma.iter().zip(&want_dgamma) { prop_assert!((a - b).abs() <= 1e-9 * term * all, "dgamma {} vs {}", a, b); }
            for (a, b) in dbeta.iter().zip(&want_dbeta) { prop_assert!((a - b).abs() <= 1e-9 * term * all, "dbeta {} vs {}", a, b); }

            // The f32 kernel against the f64 one.
            let mask32 = mask.as_ref().map(|m| to32(m));
            let (_, m32, r32) = group_norm_silu_modulated(&p, &to32(&x), &to32(&scale), &to32(&shift), &to32(&gamma), &to32(&beta), mask32.as_deref());
            let (dx32, ds32, db32, _, _) = group_norm_silu_modulated_backward(&p, &to32(&x), &to32(&scale), &to32(&shift), &to32(&gamma), &to32(&beta), &m32, &r32, &to32(&g), mask32.as_deref());
            // Besides rounding, dz inherits the f32 error of the SiLU's
            // rebuilt input, as in `group_norm.rs`'s f32 check.
            let input = (largest(&x) * largest(&scale) + largest(&shift) + largest(&zm)) * largest(&rstd) * largest(&gamma) + largest(&beta);
            let tol32 = 1e-4 * term * (1.0 + input);
            for (i, (a, b)) in dx32.iter().zip(&dx).enumerate() { prop_assert!((*a as f64 - b).abs() <= tol32, "dx32[{}] {} vs {}", i, a, b); }
            for (i, (a, b)) in ds32.iter().zip(&dscale).enumerate() { prop_assert!((*a as f64 - b).abs() <= tol32 * row, "dscale32[{}] {} vs {}", i, a, b); }
            for (i, (a, b)) in db32.iter().zip(&dshift).enumerate() { prop_assert!((*a as f64 - b).abs() <= tol32 * row, "dshift32[{}] {} vs {}", i, a, b); }
        }

        /// Central differences of L = <forward, g> in every input, f64
        /// (step 1e-5): the chain-rule check above, independently.
        #[test]
        fn backward_matches_finite_differences((p, x, scale, shift, gamma, beta, g, mask) in case()) {
            let mask = mask.as_deref();
            let (_, mean, rstd) = group_norm_silu_modulated(&p, &x, &scale, &shift, &gamma, &beta, mask);
            let grads = group_norm_silu_modulated_backward(&p, &x, &scale, &shift, &gamma, &beta, &mean, &rstd, &g, mask);
            let inputs = [&x, &scale, &shift, &gamma, &beta];
            let got = [&grads.0, &grads.1, &grads.2, &grads.3, &grads.4];
            let loss = |v: &[Vec<f64>]| -> f64 { group_norm_silu_modulated(&p, &v[0], &v[1], &v[2], &v[3], &v[4], mask).0.iter().zip(&g).map(|(a, b)| a * b).sum() };
            let h = 1e-5;
            let scale_of = largest(&rstd) * (1.0 + largest(&scale)) * (1.0 + largest(&x));
            for (which, (input, grad)) in inputs.iter().zip(got).enumerate() {
                for i in 0..input.len() {
                    let at = |e: f64| { let mut v: Vec<Vec<f64>> = inputs.iter().map(|v| v.to_vec()).collect(); v[which][i] += e; loss(&v) };
                    let num = (at(h) - at(-h)) / (2.0 * h);
                    prop_assert!((num - grad[i]).abs() <= 1e-5 * (num.abs() + scale_of + 1.0), "input {} [{}]: {} vs {}", which, i, grad[i], num);
                }
            }
        }

        /// With a mask, the fused op gives the same bits as the separate
        /// ops it replaces in training: y * mask, and the gradient times
        /// the mask fed to the unmasked backward.
        #[test]
        fn the_mask_gives_the_bits_of_a_separate_dropout((p, x, scale, shift, gamma, beta, g, mask) in case()) {
            let Some(mask) = mask.map(|m| to32(&m)) else { return Ok(()) };
            let (x, scale, shift, gamma, beta, g) = (to32(&x), to32(&scale), to32(&shift), to32(&gamma), to32(&beta), to32(&g));
            let (y, mean, rstd) = group_norm_silu_modulated(&p, &x, &scale, &shift, &gamma, &beta, None);
            let (ym, mean_m, rstd_m) = group_norm_silu_modulated(&p, &x, &scale, &shift, &gamma, &beta, Some(&mask));
            let apart: Vec<f32> = y.iter().zip(&mask).map(|(a, m)| a * m).collect();
            prop_assert_eq!(&ym, &apart);
            prop_assert_eq!((&mean_m, &rstd_m), (&mean, &rstd));
            let gm: Vec<f32> = g.iter().zip(&mask).map(|(a, m)| a * m).collect();
            let fused = group_norm_silu_modulated_backward(&p, &x, &scale, &shift, &gamma, &beta, &mean, &rstd, &g, Some(&mask));
            let apart = group_norm_silu_modulated_backward(&p, &x, &scale, &shift, &gamma, &beta, &mean, &rstd, &gm, None);
            prop_assert_eq!(fused, apart);
        }
    }
}
