//! Group normalisation over NCHW data, forward and analytic backward.
//!
//! The channels of a group are contiguous in NCHW, so each (image, group) is
//! one contiguous slice: that is the unit of parallel work, and it is small
//! enough (a few KiB to a few hundred KiB) that the second pass over it
//! finds it still in cache. Both passes are therefore "read once from memory".
//!
//! Statistics come from one pass of f64 sums shifted by the slice's first
//! element: the shift removes the cancellation that plain `E[x^2] - E[x]^2`
//! suffers when the mean is large relative to the spread, and f64 keeps the
//! sums exact enough for f32 data of any realistic size. Eight independent
//! accumulators let the loop vectorise (a single running sum is a serial
//! dependency chain the compiler may not reorder).
//!
//! Normalise-and-affine is folded into one multiply-add per element,
//! `y = x * a_c + b_c`, with the per-channel `a_c, b_c` computed in f64.
//! The backward is the closed form of the gradient, which per group needs
//! only two per-channel sums, `sum(dy)` and `sum(dy * (x - mean))`; then
//! `dx` is again one fused expression per element.
//!
//! `group_norm_silu` is the same with SiLU applied on the way out, the
//! pair every normalisation of the U-Net is followed by: one pass writes
//! `silu(x * a_c + b_c)` instead of two passes with a tensor in between.
//! Its backward recomputes the pre-activation `z = x * a_c + b_c` from x and
//! the statistics, turns `dy` into `dz = dy * silu'(z)` group by group, and
//! is then the group norm backward.
//!
//! CUDA twin: `cuda/group_norm.rs` (launches) and `cuda/group_norm.cu` (kernels).

use rayon::prelude::*;
use std::mem::MaybeUninit;

use super::elementwise::{silu, silu_grad};
use super::simd::simd_dispatch;
use super::float::Float;
use crate::backend::GroupNormParams;

// The CPU kernels' own view of the parameters (defined in `backend.rs`).
impl GroupNormParams {
    pub(super) fn channels_per_group(&self) -> usize {
        assert!(
            self.groups >= 1 && self.channels % self.groups == 0,
            "group norm: channels must divide into groups"
        );
        self.channels / self.groups
    }

    /// Elements in one (image, group) slice.
    pub(super) fn group_len(&self) -> usize {
        self.channels_per_group() * self.spatial
    }

    /// Parallel tasks should hold at least this many groups, so that the
    /// tiny groups of 4x4 maps do not each pay rayon's per-task cost.
    pub(super) fn groups_per_task(&self) -> usize {
        (8 * 1024 / self.group_len().max(1)).max(1)
    }
}

/// Partial sums of the f64 loops: two AVX-512 vectors (independent chains
/// of adds), four AVX2 ones. Each lane adds its own elements in order,
/// whatever the vector width, so both give the same bits.
pub(super) const LANES: usize = 16;

// The per-element loops below run over one channel's row of a group, each
// also compiled for AVX-512 and for AVX2 + FMA and picked at run time
// (`simd_dispatch!`, see `simd.rs`): the build's baseline x86-64 would
// vectorise them only 4 wide, and the SiLU's exp is most of the work. The
// f32 row loops gain from AVX-512 (on a Zen 5 with full-width AVX-512, the SiLU
// rows took a fifth less time in a sampling profile), and so do the f64
// sums (`LANES`), which convert and add twice as many values an
// instruction.
/// `out = x * a + b`, or with `with_silu` `out = silu(x * a + b)`.
#[inline(always)]
pub(super) fn affine_row<T: Float>(out: &mut [T], x: &[T], a: T, b: T, with_silu: bool) {
    // SAFETY: same layout, and `affine_row_into` writes only values, so
    // `out` stays initialised.
    let out = unsafe { &mut *(out as *mut [T] as *mut [MaybeUninit<T>]) };
    affine_row_into(out, x, a, b, with_silu);
}

/// `affine_row` into a row that need not hold values yet.
#[inline(always)]
pub(super) fn affine_row_into<T: Float>(out: &mut [MaybeUninit<T>], x: &[T], a: T, b: T, with_silu: bool) {
    #[inline(always)]
    fn run<T: Float>(out: &mut [MaybeUninit<T>], x: &[T], a: T, b: T, with_silu: bool) {
        // Two loops, not a branch per element, so each vectorises.
        if with_silu {
            out.iter_mut().zip(x).for_each(|(o, &v)| {
                o.write(silu(v * a + b));
            });
        } else {
            out.iter_mut().zip(x).for_each(|(o, &v)| {
                o.write(v * a + b);
            });
        }
    }
    assert_eq!(out.len(), x.len(), "one row length");
    simd_dispatch!(run<T: Float>(out: &mut [MaybeUninit<T>], x: &[T], a: T, b: T, with_silu: bool))
}

/// `out = dy * silu'(x * a + b)`: the gradient through the SiLU, its input rebuilt.
#[inline(always)]
pub(super) fn silu_grad_row<T: Float>(out: &mut [T], dy: &[T], x: &[T], a: T, b: T) {
    #[inline(always)]
    fn run<T: Float>(out: &mut [T], dy: &[T], x: &[T], a: T, b: T) {
        for ((d, &g), &v) in out.iter_mut().zip(dy).zip(x) {
            *d = g * silu_grad(v * a + b);
        }
    }
    simd_dispatch!(run<T: Float>(out: &mut [T], dy: &[T], x: &[T], a: T, b: T))
}

/// `silu_grad_row`, returning `grad_sums(x, out, mean)` taken while the
/// row is in registers (the same sums, lane for lane, as a second pass
/// would take).
#[inline(always)]
fn silu_grad_row_summed<T: Float>(out: &mut [T], dy: &[T], x: &[T], a: T, b: T, mean: f64) -> (f64, f64) {
    #[inline(always)]
    fn run<T: Float>(out: &mut [T], dy: &[T], x: &[T], a: T, b: T, mean: f64) -> (f64, f64) {
        let mut s = [0.0f64; LANES];
        let mut q = [0.0f64; LANES];
        let mut add = |l: usize, g: T, xv: T| {
            let g = g.to_f64();
            s[l] += g;
            q[l] += g * (xv.to_f64() - mean);
        };
        let whole = out.len() - out.len() % LANES;
        let (out_chunks, out_tail) = out.split_at_mut(whole);
        for ((co, cg), cx) in out_chunks.chunks_exact_mut(LANES).zip(dy.chunks_exact(LANES)).zip(x.chunks_exact(LANES)) {
            for l in 0..LANES {
                co[l] = cg[l] * silu_grad(cx[l] * a + b);
                add(l, co[l], cx[l]);
            }
        }
        for ((d, &g), &v) in out_tail.iter_mut().zip(&dy[whole..]).zip(&x[whole..]) {
            *d = g * silu_grad(v * a + b);
            add(0, *d, v);
        }
        (s.iter().sum(), q.iter().sum())
    }
    assert!(dy.len() == out.len() && x.len() == out.len(), "one row length");
    simd_dispatch!(run<T: Float>(out: &mut [T], dy: &[T], x: &[T], a: T, b: T, mean: f64) -> (f64, f64))
}

/// `out = a * dy + bx * x + c0`: the group norm's input gradient, into a
/// row that need not hold values yet.
#[inline(always)]
pub(super) fn grad_x_row<T: Float>(out: &mut [MaybeUninit<T>], dy: &[T], x: &[T], a: T, bx: T, c0: T) {
    #[inline(always)]
    fn run<T: Float>(out: &mut [MaybeUninit<T>], dy: &[T], x: &[T], a: T, bx: T, c0: T) {
        for ((d, &g), &v) in out.iter_mut().zip(dy).zip(x) {
            d.write(a * g + bx * v + c0);
        }
    }
    assert!(dy.len() == out.len() && x.len() == out.len(), "one row length");
    simd_dispatch!(run<T: Float>(out: &mut [MaybeUninit<T>], dy: &[T], x: &[T], a: T, bx: T, c0: T))
}

/// `(sum(x - shift), sum((x - shift)^2))` in f64.
#[inline(always)]
pub(super) fn shifted_sums<T: Float>(x: &[T], shift: f64) -> (f64, f64) {
    let mut sums = LaneSums::default();
    sums.add(x, shift);
    sums.total()
}

/// Running f64 sums of values and of their squares, `LANES` partial sums
/// each (independent accumulators, so the loop vectorises), added to slice
/// after slice and totalled once at the end: e.g. a convolution's output
/// moments, taken row by row as the rows are written.
///
/// Aligned to a cache line: a row's loop loads the sums into registers and
/// stores them back, and the next row loads them again at once; a vector
/// split across two lines could not be forwarded from store to load, and
/// each row would wait for the last one's stores to reach the cache.
#[derive(Clone, Copy, Default)]
#[repr(align(64))]
pub(super) struct LaneSums {
    values: [f64; LANES],
    squares: [f64; LANES],
}

impl LaneSums {
    /// Adds each `x - shift` and its square.
    #[inline(always)]
    pub(super) fn add<T: Float>(&mut self, x: &[T], shift: f64) {
        #[inline(always)]
        fn run<T: Float>(x: &[T], shift: f64, sums: &mut LaneSums) {
            let (s, q) = (&mut sums.values, &mut sums.squares);
            let chunks = x.chunks_exact(LANES);
            let tail = chunks.remainder();
            for c in chunks {
                for l in 0..LANES {
                    let d = c[l].to_f64() - shift;
                    s[l] += d;
                    q[l] += d * d;
                }
            }
            for &v in tail {
                let d = v.to_f64() - shift;
                s[0] += d;
                q[0] += d * d;
            }
        }
        let sums = self;
        simd_dispatch!(run<T: Float>(x: &[T], shift: f64, sums: &mut LaneSums))
    }

    /// `(sum(x), sum(x^2))` over everything added.
    pub(super) fn total(&self) -> (f64, f64) {
        (self.values.iter().sum(), self.squares.iter().sum())
    }
}

/// One output row for `biased_rows`: where it goes, the values the
/// convolution computed for it, and the residual to add, if any.
pub(super) struct BiasedRow<'a, T> {
    pub out: &'a mut [MaybeUninit<T>],
    pub x: &'a [T],
    pub residual: Option<&'a [T]>,
}

impl<T> BiasedRow<'_, T> {
    /// A row of no values, to fill a fixed array of rows with.
    pub(super) fn empty() -> Self {
        BiasedRow { out: &mut [], x: &[], residual: None }
    }
}

/// `out = x + bias`, or `out = x + bias + residual`, for each of `rows`: a
/// convolution's output rows as its kernels write them, in that order. The
/// outputs need not hold values yet (the output buffers are not zeroed
/// first); they come back written.
///
/// With `sums`, each value written, and its square, is also added into
/// `sums` (as `LaneSums::add` would, with no shift) while the value is
/// still in a register: reading the row back just after writing it cost
/// more than the writes, as the loads had to wait for the stores.
///
/// Several rows per call, because a convolution writes them a tile's 4
/// rows (or a plane's band) at a time: on small maps, with rows of 4 to
/// 16 values, a call per row spent as long on the dispatch and on moving
/// the sums between memory and registers as on the row.
#[inline(always)]
pub(super) fn biased_rows<T: Float>(rows: &mut [BiasedRow<'_, T>], bias: T, sums: Option<&mut LaneSums>) {
    #[inline(always)]
    fn run<T: Float>(rows: &mut [BiasedRow<'_, T>], bias: T, sums: Option<&mut LaneSums>) {
        // Four copies of the loops, not a branch per element, so each
        // vectorises; without a residual, `x` stands in for it, unread.
        // The sums live in registers across the rows, not behind `sums`.
        let (mut s, mut q) = sums.as_ref().map_or(([0.0; LANES], [0.0; LANES]), |sums| (sums.values, sums.squares));
        for row in rows.iter_mut() {
            match (row.residual, sums.is_some()) {
                (Some(r), true) => row_runs::<T, true, true>(row.out, row.x, r, bias, &mut s, &mut q),
                (None, true) => row_runs::<T, false, true>(row.out, row.x, row.x, bias, &mut s, &mut q),
                (Some(r), false) => row_runs::<T, true, false>(row.out, row.x, r, bias, &mut s, &mut q),
                (None, false) => row_runs::<T, false, false>(row.out, row.x, row.x, bias, &mut s, &mut q),
            }
        }
        if let Some(sums) = sums {
            (sums.values, sums.squares) = (s, q);
        }
    }
    for row in rows.iter() {
        assert!(row.x.len() == row.out.len() && row.residual.is_none_or(|r| r.len() == row.out.len()), "one row length");
    }
    simd_dispatch!(run<T: Float>(rows: &mut [BiasedRow<'_, T>], bias: T, sums: Option<&mut LaneSums>))
}

/// `out[i] = x[i] + bias`, with `RESIDUAL` `+ r[i]`, and with `SUMS` each
/// value added into the lane sums `s` and `q`: runs of `LANES`, then of 8
/// (rows on 8x8 maps), then one at a time into lane 0. The slices have one
/// length.
///
/// Plain functions all the way down, no closures: with the value passed
/// in as a closure, the inliner left its call out of line, compiled
/// without the caller's vector instructions, and every element paid a call.
#[inline(always)]
fn row_runs<T: Float, const RESIDUAL: bool, const SUMS: bool>(out: &mut [MaybeUninit<T>], x: &[T], r: &[T], bias: T, s: &mut [f64; LANES], q: &mut [f64; LANES]) {
    let n = out.len();
    let (wide, rest) = out.split_at_mut(n - n % LANES);
    for ((o, xs), rs) in wide.chunks_exact_mut(LANES).zip(x.chunks_exact(LANES)).zip(r.chunks_exact(LANES)) {
        row_run::<T, RESIDUAL, SUMS, LANES>(o.try_into().expect("LANES values"), xs.try_into().expect("LANES values"), rs.try_into().expect("LANES values"), bias, s, q);
    }
    let (x, r) = (&x[wide.len()..], &r[wide.len()..]);
    let eights = if rest.len() >= 8 { 8 } else { 0 };
    let (eight, tail) = rest.split_at_mut(eights);
    if let Ok(o) = <&mut [MaybeUninit<T>; 8]>::try_from(eight) {
        row_run::<T, RESIDUAL, SUMS, 8>(o, x[..8].try_into().expect("8 values"), r[..8].try_into().expect("8 values"), bias, s, q);
    }
    for ((o, &v), &r) in tail.iter_mut().zip(&x[eights..]).zip(&r[eights..]) {
        let d = o.write(row_value::<T, RESIDUAL>(v, r, bias)).to_f64();
        if SUMS {
            s[0] += d;
            q[0] += d * d;
        }
    }
}

/// One run of `row_runs`, value `l` into lane `l`. Every value is read
/// before any is written: the rows come out of a slice, so the compiler
/// cannot tell that `o` does not overlap `xs` or `rs`, and reading and
/// writing in turn kept it to one value at a time.
#[inline(always)]
fn row_run<T: Float, const RESIDUAL: bool, const SUMS: bool, const N: usize>(o: &mut [MaybeUninit<T>; N], xs: &[T; N], rs: &[T; N], bias: T, s: &mut [f64; LANES], q: &mut [f64; LANES]) {
    let (xs, rs) = (*xs, *rs);
    for l in 0..N {
        let d = o[l].write(row_value::<T, RESIDUAL>(xs[l], rs[l], bias)).to_f64();
        if SUMS {
            s[l] += d;
            q[l] += d * d;
        }
    }
}

/// `v + bias`, with `RESIDUAL` `v + bias + r`.
#[inline(always)]
fn row_value<T: Float, const RESIDUAL: bool>(v: T, r: T, bias: T) -> T {
    if RESIDUAL {
        v + bias + r
    } else {
        v + bias
    }
}

/// `(sum(dy), sum(dy * (x - mean)))` in f64.
#[inline(always)]
fn grad_sums<T: Float>(x: &[T], dy: &[T], mean: f64) -> (f64, f64) {
    simd_dispatch!(grad_sums_in<T: Float>(x: &[T], dy: &[T], mean: f64) -> (f64, f64))
}

#[inline(always)]
fn grad_sums_in<T: Float>(x: &[T], dy: &[T], mean: f64) -> (f64, f64) {
    let mut s = [0.0f64; LANES];
    let mut q = [0.0f64; LANES];
    let xc = x.chunks_exact(LANES);
    let (xt, gt) = (xc.remainder(), &dy[x.len() - x.len() % LANES..]);
    for (cx, cg) in xc.zip(dy.chunks_exact(LANES)) {
        for l in 0..LANES {
            let g = cg[l].to_f64();
            s[l] += g;
            q[l] += g * (cx[l].to_f64() - mean);
        }
    }
    for (&xv, &g) in xt.iter().zip(gt) {
        let g = g.to_f64();
        s[0] += g;
        q[0] += g * (xv.to_f64() - mean);
    }
    (s.iter().sum(), q.iter().sum())
}

/// y = (x - mean_g) * rstd_g * gamma[c] + beta[c]; returns (y, mean [N*G], rstd [N*G]).
/// Statistics in ONE pass (sum and sum of squares accumulated in f64, or Welford), fused normalise+affine.
pub fn group_norm<T: Float>(
    p: &GroupNormParams,
    x: &[T],
    gamma: &[T],
    beta: &[T],
) -> (Vec<T>, Vec<T>, Vec<T>) {
    normalise(p, x, gamma, beta, false)
}

/// y = silu(group_norm(x)), in the same single pass; returns (y, mean, rstd)
/// with the statistics of the group norm.
pub fn group_norm_silu<T: Float>(
    p: &GroupNormParams,
    x: &[T],
    gamma: &[T],
    beta: &[T],
) -> (Vec<T>, Vec<T>, Vec<T>) {
    normalise(p, x, gamma, beta, true)
}

/// The forward of both, with or without the SiLU.
fn normalise<T: Float>(
    p: &GroupNormParams,
    x: &[T],
    gamma: &[T],
    beta: &[T],
    with_silu: bool,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let cpg = p.channels_per_group();
    let len = p.group_len();
    let ng = p.batch * p.groups;
    assert_eq!(x.len(), ng * len);
    assert_eq!(gamma.len(), p.channels);
    assert_eq!(beta.len(), p.channels);
    let mut mean = vec![T::ZERO; ng];
    let mut rstd = vec![T::ZERO; ng];
    if len == 0 {
        // Empty groups: no statistics to speak of; report mean 0, rstd of eps.
        rstd.fill(T::from_f64(1.0 / p.eps.sqrt()));
        return (Vec::new(), mean, rstd);
    }
    // Not zeroed first: every group's rows are written below.
    let mut y = Vec::with_capacity(x.len());
    let per_task = p.groups_per_task();
    x.par_chunks(len)
        .zip(y.spare_capacity_mut()[..x.len()].par_chunks_mut(len))
        .zip(mean.par_iter_mut().zip(rstd.par_iter_mut()))
        .enumerate()
        .with_min_len(per_task)
        .for_each(|(i, ((xs, ys), (m_out, r_out)))| {
            let g = i % p.groups;
            let shift = xs[0].to_f64();
            let (s, q) = shifted_sums(xs, shift);
            let n = len as f64;
            let d = s / n;
            let var = (q / n - d * d).max(0.0);
            let m = shift + d;
            let r = 1.0 / (var + p.eps).sqrt();
            *m_out = T::from_f64(m);
            *r_out = T::from_f64(r);
            for (ci, (xp, yp)) in xs
                .chunks_exact(p.spatial)
                .zip(ys.chunks_exact_mut(p.spatial))
                .enumerate()
            {
                let c = g * cpg + ci;
                let a = r * gamma[c].to_f64();
                affine_row_into(yp, xp, T::from_f64(a), T::from_f64(beta[c].to_f64() - m * a), with_silu);
            }
        });
    // SAFETY: the groups tile `x`, and each wrote all its rows.
    unsafe { y.set_len(x.len()) };
    (y, mean, rstd)
}

/// returns (grad_x, grad_gamma [C], grad_beta [C]); the fused analytic backward, not composed from small ops.
pub fn group_norm_backward<T: Float>(
    p: &GroupNormParams,
    x: &[T],
    gamma: &[T],
    mean: &[T],
    rstd: &[T],
    grad_y: &[T],
) -> (Vec<T>, Vec<T>, Vec<T>) {
    backward(p, x, gamma, None, mean, rstd, grad_y)
}

/// The backward of `group_norm_silu`: (grad_x, grad_gamma, grad_beta), from
/// x, the parameters and the forward's statistics.
pub fn group_norm_silu_backward<T: Float>(
    p: &GroupNormParams,
    x: &[T],
    gamma: &[T],
    beta: &[T],
    mean: &[T],
    rstd: &[T],
    grad_y: &[T],
) -> (Vec<T>, Vec<T>, Vec<T>) {
    assert_eq!(beta.len(), p.channels);
    backward(p, x, gamma, Some(beta), mean, rstd, grad_y)
}

/// The backward of both: with `silu_beta`, the gradient first goes back
/// through the SiLU (which needs beta to rebuild its input).
fn backward<T: Float>(
    p: &GroupNormParams,
    x: &[T],
    gamma: &[T],
    silu_beta: Option<&[T]>,
    mean: &[T],
    rstd: &[T],
    grad_y: &[T],
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let cpg = p.channels_per_group();
    let len = p.group_len();
    let ng = p.batch * p.groups;
    assert_eq!(x.len(), ng * len);
    assert_eq!(grad_y.len(), x.len());
    assert_eq!(gamma.len(), p.channels);
    assert_eq!(mean.len(), ng);
    assert_eq!(rstd.len(), ng);
    // Not zeroed first: every group's rows are written below.
    let mut dx = Vec::with_capacity(x.len());
    // Per (image, channel): sum(dy) and sum(dy * xhat); reduced over images
    // at the end, which keeps the parallel loop free of shared writes.
    let mut db_nc = vec![0.0f64; p.batch * p.channels];
    let mut dg_nc = vec![0.0f64; p.batch * p.channels];
    if len > 0 {
        let per_task = p.groups_per_task();
        x.par_chunks(len)
            .zip(grad_y.par_chunks(len))
            .zip(dx.spare_capacity_mut()[..x.len()].par_chunks_mut(len))
            .zip(db_nc.par_chunks_mut(cpg).zip(dg_nc.par_chunks_mut(cpg)))
            .enumerate()
            .with_min_len(per_task)
            // Each thread keeps one buffer for `dz` across its groups.
            .for_each_init(Vec::new, |dz_buffer: &mut Vec<T>, (i, (((xs, dys), dxs), (db, dg)))| {
                let g = i % p.groups;
                let (m, r) = (mean[i].to_f64(), rstd[i].to_f64());
                // Per channel: sum(dz) and sum(dz * (x - m)), into db and dg
                // (dg scaled by r below). After a SiLU, the group norm's
                // output gradient is dz = dy * silu'(z), z rebuilt exactly
                // as the forward made it, and its sums are taken as it is
                // written.
                let gs: &[T] = match silu_beta {
                    None => {
                        for (ci, (xp, gp)) in xs.chunks_exact(p.spatial).zip(dys.chunks_exact(p.spatial)).enumerate() {
                            (db[ci], dg[ci]) = grad_sums(xp, gp, m);
                        }
                        dys
                    }
                    Some(beta) => {
                        dz_buffer.resize(len, T::ZERO);
                        let buf = &mut dz_buffer[..];
                        for (ci, ((xp, gp), dp)) in xs
                            .chunks_exact(p.spatial)
                            .zip(dys.chunks_exact(p.spatial))
                            .zip(buf.chunks_exact_mut(p.spatial))
                            .enumerate()
                        {
                            let c = g * cpg + ci;
                            let a = r * gamma[c].to_f64();
                            (db[ci], dg[ci]) = silu_grad_row_summed(dp, gp, xp, T::from_f64(a), T::from_f64(beta[c].to_f64() - m * a), m);
                        }
                        buf
                    }
                };
                // sum over the group of gamma*dy and of gamma*dy*xhat.
                let (mut sum_gdy, mut sum_gdy_xhat) = (0.0, 0.0);
                for ci in 0..cpg {
                    let gam = gamma[g * cpg + ci].to_f64();
                    let (s_dy, s_dy_xc) = (db[ci], dg[ci]);
                    dg[ci] = s_dy_xc * r;
                    sum_gdy += gam * s_dy;
                    sum_gdy_xhat += gam * s_dy_xc * r;
                }
                // dx = r * (gamma*dy - mean(gamma*dy) - xhat * mean(gamma*dy*xhat))
                //    = (r*gamma_c) * dy + bx * x + c0, with xhat = (x - m) * r.
                let n = len as f64;
                let (a_mean, b_mean) = (sum_gdy / n, sum_gdy_xhat / n);
                let bx = -r * r * b_mean;
                let c0 = r * r * b_mean * m - r * a_mean;
                let (bx_t, c0_t) = (T::from_f64(bx), T::from_f64(c0));
                for (ci, (gp, (xp, dp))) in gs
                    .chunks_exact(p.spatial)
                    .zip(
                        xs.chunks_exact(p.spatial)
                            .zip(dxs.chunks_exact_mut(p.spatial)),
                    )
                    .enumerate()
                {
                    grad_x_row(dp, gp, xp, T::from_f64(r * gamma[g * cpg + ci].to_f64()), bx_t, c0_t);
                }
            });
    }
    // SAFETY: the groups tile `x`, and each wrote all its rows of `dx`
    // (with no groups, `x` is empty).
    unsafe { dx.set_len(x.len()) };
    let (grad_gamma, grad_beta) = summed_over_images(p, &dg_nc, &db_nc);
    (dx, grad_gamma, grad_beta)
}

/// The gradients of gamma and beta `[C]` from their per (image, channel)
/// parts `[N * C]` in f64, summed over the images in order.
pub(super) fn summed_over_images<T: Float>(p: &GroupNormParams, dg_nc: &[f64], db_nc: &[f64]) -> (Vec<T>, Vec<T>) {
    let mut grad_gamma = vec![0.0f64; p.channels];
    let mut grad_beta = vec![0.0f64; p.channels];
    for (db, dg) in db_nc
        .chunks_exact(p.channels.max(1))
        .zip(dg_nc.chunks_exact(p.channels.max(1)))
    {
        grad_beta.iter_mut().zip(db).for_each(|(a, &b)| *a += b);
        grad_gamma.iter_mut().zip(dg).for_each(|(a, &b)| *a += b);
    }
    let cast = |v: Vec<f64>| v.into_iter().map(T::from_f64).collect::<Vec<T>>();
    (cast(grad_gamma), cast(grad_beta))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Case = (GroupNormParams, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>);

    /// Values are f32-representable so the f32 kernel sees the same inputs
    /// as the f64 reference. An optional offset gives groups a mean far from
    /// zero relative to their spread, the case that breaks naive statistics.
    fn case() -> impl Strategy<Value = Case> {
        (
            1usize..4,
            1usize..4,
            1usize..4,
            1usize..20,
            prop::sample::select(vec![0.0f64, 8.0]),
        )
            .prop_flat_map(|(batch, groups, cpg, spatial, offset)| {
                let p = GroupNormParams {
                    batch,
                    channels: groups * cpg,
                    spatial,
                    groups,
                    eps: 1e-5,
                };
                let n = batch * groups * cpg * spatial;
                let f = |v: f64| v as f32 as f64;
                (
                    Just(p),
                    prop::collection::vec((-2.0f64..2.0).prop_map(move |v| f(v + offset)), n),
                    prop::collection::vec((-2.0f64..2.0).prop_map(f), p.channels),
                    prop::collection::vec((-2.0f64..2.0).prop_map(f), p.channels),
                    prop::collection::vec((-2.0f64..2.0).prop_map(f), n),
                )
            })
    }

    fn index(p: &GroupNormParams, n: usize, c: usize, s: usize) -> usize {
        (n * p.channels + c) * p.spatial + s
    }

    /// Two-pass statistics, straight from the definition.
    fn naive_stats(p: &GroupNormParams, x: &[f64]) -> Vec<(f64, f64)> {
        let cpg = p.channels / p.groups;
        let mut out = vec![];
        for n in 0..p.batch {
            for g in 0..p.groups {
                let vals: Vec<f64> = (g * cpg..(g + 1) * cpg)
                    .flat_map(|c| (0..p.spatial).map(move |s| (c, s)))
                    .map(|(c, s)| x[index(p, n, c, s)])
                    .collect();
                let m = vals.iter().sum::<f64>() / vals.len() as f64;
                let var = vals.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / vals.len() as f64;
                out.push((m, 1.0 / (var + p.eps).sqrt()));
            }
        }
        out
    }

    /// The forward in f64 and, per output, the magnitude |x*a| + |m*a| + |beta|
    /// that scales the f32 rounding error.
    fn naive_forward(
        p: &GroupNormParams,
        x: &[f64],
        gamma: &[f64],
        beta: &[f64],
    ) -> (Vec<f64>, Vec<f64>) {
        let cpg = p.channels / p.groups;
        let stats = naive_stats(p, x);
        let mut y = vec![0.0; x.len()];
        let mut mag = y.clone();
        for n in 0..p.batch {
            for c in 0..p.channels {
                let (m, r) = stats[n * p.groups + c / cpg];
                for s in 0..p.spatial {
                    let i = index(p, n, c, s);
                    y[i] = (x[i] - m) * r * gamma[c] + beta[c];
                    mag[i] = (x[i].abs() + m.abs()) * r * gamma[c].abs() + beta[c].abs();
                }
            }
        }
        (y, mag)
    }

    fn to32(v: &[f64]) -> Vec<f32> {
        v.iter().map(|&x| x as f32).collect()
    }

    fn to64(v: &[f32]) -> Vec<f64> {
        v.iter().map(|&x| x as f64).collect()
    }

    /// The f32 fused backward against the f64 one (`want`). Besides the
    /// plain group norm's rounding, dz = dy * silu'(z) inherits the f32
    /// error of z = x * a + b: a few ulps of |x * a| + |b| (`naive_forward`'s
    /// magnitude), which is large when a group is nearly constant and rstd
    /// nears 1/sqrt(eps); with |silu''| <= 0.5 that moves dz by up to
    /// |dy| * 2.4e-7 * magnitude.
    #[allow(clippy::type_complexity)]
    fn fused_silu_backward_f32_agrees(
        p: &GroupNormParams,
        x: &[f64],
        gamma: &[f64],
        beta: &[f64],
        g: &[f64],
        (dx, dgamma, dbeta): (&[f64], &[f64], &[f64]),
        rstd: &[f64],
    ) -> Result<(), TestCaseError> {
        let (_, m32, r32) = group_norm_silu(p, &to32(x), &to32(gamma), &to32(beta));
        let (dx32, dg32, db32) = group_norm_silu_backward(p, &to32(x), &to32(gamma), &to32(beta), &m32, &r32, &to32(g));
        let (_, mag) = naive_forward(p, x, gamma, beta);
        let largest = |v: &[f64]| v.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        let gmax = largest(g);
        let dz_err = gmax * 2.4e-7 * largest(&mag);
        let gamma_max = largest(gamma);
        for (i, (a, b)) in to64(&dx32).iter().zip(dx).enumerate() {
            let r = rstd[i / p.group_len()];
            let tol = 1e-4 * (r * gmax * 3.0 + 1.0) + 3.0 * r * gamma_max * dz_err;
            prop_assert!((a - b).abs() <= tol, "dx32[{}]: {} vs {}", i, a, b);
        }
        let n = (p.batch * p.spatial) as f64;
        // |xhat| is at most sqrt(group length) (its mean square is below 1).
        let xhat_max = (p.group_len() as f64).sqrt();
        for (a, b) in to64(&dg32).iter().zip(dgamma) {
            prop_assert!((a - b).abs() <= 1e-5 * n * gmax * 10.0 + 1e-5 + n * dz_err * xhat_max, "dgamma32: {} vs {}", a, b);
        }
        for (a, b) in to64(&db32).iter().zip(dbeta) {
            prop_assert!((a - b).abs() <= 1e-5 * n * gmax + 1e-5 + n * dz_err, "dbeta32: {} vs {}", a, b);
        }
        Ok(())
    }

    /// A one-element group (variance 0, rstd = 1/sqrt(eps) ~ 316), where
    /// z = x * a + b cancels in f32: the case that sized the tolerances of
    /// `fused_silu_backward_f32_agrees`.
    #[test]
    fn fused_silu_backward_of_a_constant_group() {
        let p = GroupNormParams { batch: 1, channels: 1, spatial: 1, groups: 1, eps: 1e-5 };
        let (x, gamma, beta, g) = ([8.0], [-1.653435468673706], [0.36208799481391907], [0.739790141582489]);
        let (_, mean, rstd) = group_norm_silu(&p, &x, &gamma, &beta);
        let (dx, dgamma, dbeta) = group_norm_silu_backward(&p, &x, &gamma, &beta, &mean, &rstd, &g);
        // Exactly: x - mean = 0, so z = beta, dx = 0 and dgamma = 0.
        let silu_grad64 = |z: f64| {
            let s = 1.0 / (1.0 + (-z).exp());
            s * (1.0 + z * (1.0 - s))
        };
        assert!((dbeta[0] - g[0] * silu_grad64(beta[0])).abs() < 1e-12, "{dbeta:?}");
        assert!(dx[0].abs() < 1e-9 && dgamma[0].abs() < 1e-12, "{dx:?} {dgamma:?}");
        fused_silu_backward_f32_agrees(&p, &x, &gamma, &beta, &g, (&dx, &dgamma, &dbeta), &rstd).unwrap();
    }

    /// Checks (dx, dgamma, dbeta) against central differences of
    /// L = <forward(x, gamma, beta), g> in f64 (step 1e-5, so truncation
    /// error ~1e-10 * third derivative and rounding ~1e-11 / 1e-5):
    /// agreement to 1e-5 relative.
    #[allow(clippy::too_many_arguments)]
    fn matches_central_differences(
        p: &GroupNormParams,
        x: &[f64],
        gamma: &[f64],
        beta: &[f64],
        g: &[f64],
        forward: &dyn Fn(&[f64], &[f64], &[f64]) -> Vec<f64>,
        (dx, dgamma, dbeta): (&[f64], &[f64], &[f64]),
        rstd: &[f64],
    ) -> Result<(), TestCaseError> {
        let (x, gamma, beta) = (x.to_vec(), gamma.to_vec(), beta.to_vec());
        let loss = |x: &[f64], gamma: &[f64], beta: &[f64]| -> f64 { forward(x, gamma, beta).iter().zip(g).map(|(a, b)| a * b).sum() };
        let h = 1e-5;
        let fd = |f: &dyn Fn(f64) -> f64| (f(h) - f(-h)) / (2.0 * h);
        let tol = |v: f64, scale: f64| 1e-5 * (v.abs() + scale + 1.0);
        for i in 0..x.len() {
            let num = fd(&|e| { let mut x2 = x.clone(); x2[i] += e; loss(&x2, &gamma, &beta) });
            // Gradients scale with rstd; so must the tolerance.
            let r = rstd[i / p.group_len()];
            prop_assert!((num - dx[i]).abs() <= tol(num, r), "dx[{}]: {} vs {}", i, dx[i], num);
        }
        for c in 0..p.channels {
            let num = fd(&|e| { let mut g2 = gamma.clone(); g2[c] += e; loss(&x, &g2, &beta) });
            prop_assert!((num - dgamma[c]).abs() <= tol(num, 0.0), "dgamma[{}]: {} vs {}", c, dgamma[c], num);
            let num = fd(&|e| { let mut b2 = beta.clone(); b2[c] += e; loss(&x, &gamma, &b2) });
            prop_assert!((num - dbeta[c]).abs() <= tol(num, 0.0), "dbeta[{}]: {} vs {}", c, dbeta[c], num);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// A convolution's output rows with their moments, every length
        /// (runs of 16, of 8, and the tail): each row is written as
        /// `x + bias (+ residual)`, by one call per row without sums and by
        /// one call for all rows with them, and the sums are the f64 sums
        /// to within the rounding of the adds.
        #[test]
        fn summed_rows_match_plain_rows_and_f64_sums(
            rows in prop::collection::vec((prop::collection::vec(-3.0f32..3.0, 0..60), any::<bool>()), 1..5),
            bias in -1.0f32..1.0,
        ) {
            let residuals: Vec<Option<Vec<f32>>> = rows.iter().map(|(x, with)| with.then(|| x.iter().map(|v| v * 0.5 - 0.25).collect())).collect();
            let fresh = |x: &Vec<f32>| vec![MaybeUninit::new(f32::NAN); x.len()];
            let (mut plain, mut summed): (Vec<_>, Vec<_>) = rows.iter().map(|(x, _)| (fresh(x), fresh(x))).unzip();
            for ((out, (x, _)), residual) in plain.iter_mut().zip(&rows).zip(&residuals) {
                biased_rows(&mut [BiasedRow { out, x, residual: residual.as_deref() }], bias, None);
            }
            let mut all: Vec<BiasedRow<f32>> = summed.iter_mut().zip(&rows).zip(&residuals).map(|((out, (x, _)), residual)| BiasedRow { out, x, residual: residual.as_deref() }).collect();
            let mut sums = LaneSums::default();
            biased_rows(&mut all, bias, Some(&mut sums));
            let (mut values, mut squares, mut mag) = (0.0f64, 0.0f64, 0.0f64);
            for (((x, _), residual), (plain, summed)) in rows.iter().zip(&residuals).zip(plain.iter().zip(&summed)) {
                // SAFETY: `biased_rows` wrote every element of both.
                let [plain, summed]: [Vec<f32>; 2] = [plain, summed].map(|row| row.iter().map(|v| unsafe { v.assume_init() }).collect());
                let expected: Vec<f32> = x.iter().enumerate().map(|(i, &v)| residual.as_ref().map_or(v + bias, |r| v + bias + r[i])).collect();
                prop_assert_eq!(&plain, &expected);
                prop_assert_eq!(&summed, &plain);
                for &v in &plain {
                    let v = v as f64;
                    values += v;
                    squares += v * v;
                    mag += v.abs();
                }
            }
            let (got_values, got_squares) = sums.total();
            prop_assert!((got_values - values).abs() <= 1e-12 * (1.0 + mag), "{} vs {}", got_values, values);
            prop_assert!((got_squares - squares).abs() <= 1e-12 * (1.0 + squares), "{} vs {}", got_squares, squares);
        }

        /// f64: 1e-10 relative to the magnitude of the terms; f32: 1e-5.
        #[test]
        fn forward_matches_naive((p, x, gamma, beta, _g) in case()) {
            let (want, mag) = naive_forward(&p, &x, &gamma, &beta);
            let stats = naive_stats(&p, &x);
            let (y, mean, rstd) = group_norm(&p, &x, &gamma, &beta);
            for ((a, b), m) in y.iter().zip(&want).zip(&mag) { prop_assert!((a - b).abs() <= 1e-10 * (m + 1.0), "{} vs {}", a, b); }
            for (i, &(m, r)) in stats.iter().enumerate() {
                prop_assert!((mean[i] - m).abs() <= 1e-12 * (1.0 + m.abs()));
                prop_assert!((rstd[i] - r).abs() <= 1e-9 * r);
            }
            let (y32, mean32, rstd32) = group_norm(&p, &to32(&x), &to32(&gamma), &to32(&beta));
            for ((a, b), m) in y32.iter().zip(&want).zip(&mag) {
                prop_assert!((*a as f64 - b).abs() <= 1e-5 * (m + 1.0), "{} vs {}", a, b);
            }
            for (i, &(m, r)) in stats.iter().enumerate() {
                prop_assert!((mean32[i] as f64 - m).abs() <= 1e-6 * (1.0 + m.abs()));
                prop_assert!((rstd32[i] as f64 - r).abs() <= 1e-5 * r);
            }
        }

        /// Central differences of L = <group_norm(x, gamma, beta), g> in f64
        /// (step 1e-5, so truncation error ~1e-10 * third derivative and
        /// rounding ~1e-11 / 1e-5): agreement to 1e-5 relative.
        #[test]
        fn backward_matches_finite_differences((p, x, gamma, beta, g) in case()) {
            let (_, mean, rstd) = group_norm(&p, &x, &gamma, &beta);
            let (dx, dgamma, dbeta) = group_norm_backward(&p, &x, &gamma, &mean, &rstd, &g);
            let forward = |x: &[f64], gamma: &[f64], beta: &[f64]| group_norm(&p, x, gamma, beta).0;
            matches_central_differences(&p, &x, &gamma, &beta, &g, &forward, (&dx, &dgamma, &dbeta), &rstd)?;

            // The f32 kernel agrees with the f64 one to 1e-4 relative to the
            // scale of the terms (dx is a difference of O(rstd * |g|) terms).
            let (_, m32, r32) = group_norm(&p, &to32(&x), &to32(&gamma), &to32(&beta));
            let (dx32, dg32, db32) = group_norm_backward(&p, &to32(&x), &to32(&gamma), &m32, &r32, &to32(&g));
            let gmax = g.iter().fold(0.0f64, |a, v| a.max(v.abs()));
            for (i, (a, b)) in to64(&dx32).iter().zip(&dx).enumerate() {
                let r = rstd[i / p.group_len()];
                prop_assert!((a - b).abs() <= 1e-4 * (r * gmax * 3.0 + 1.0), "dx32[{}]: {} vs {}", i, a, b);
            }
            let n = (p.batch * p.spatial) as f64;
            for (a, b) in to64(&dg32).iter().zip(&dgamma) { prop_assert!((a - b).abs() <= 1e-5 * n * gmax * 10.0 + 1e-5); }
            for (a, b) in to64(&db32).iter().zip(&dbeta) { prop_assert!((a - b).abs() <= 1e-5 * n * gmax + 1e-5); }
        }

        /// silu(group_norm(x)) against the naive forward followed by a naive
        /// SiLU (|silu'| < 1.1, so the group norm's error bound carries
        /// over), with the group norm's own statistics.
        #[test]
        fn fused_silu_forward_matches_naive((p, x, gamma, beta, _g) in case()) {
            let (z, mag) = naive_forward(&p, &x, &gamma, &beta);
            let silu64 = |v: f64| v / (1.0 + (-v).exp());
            let (y, mean, rstd) = group_norm_silu(&p, &x, &gamma, &beta);
            let (_, mean0, rstd0) = group_norm(&p, &x, &gamma, &beta);
            prop_assert_eq!(mean, mean0);
            prop_assert_eq!(rstd, rstd0);
            for ((a, zi), m) in y.iter().zip(&z).zip(&mag) {
                prop_assert!((a - silu64(*zi)).abs() <= 1e-10 * (m + 1.0), "{} vs silu({})", a, zi);
            }
            let (y32, _, _) = group_norm_silu(&p, &to32(&x), &to32(&gamma), &to32(&beta));
            for ((a, zi), m) in y32.iter().zip(&z).zip(&mag) {
                prop_assert!((*a as f64 - silu64(*zi)).abs() <= 2e-5 * (m + 1.0), "{} vs silu({})", a, zi);
            }
        }

        /// The fused backward against central differences of
        /// L = <silu(group_norm(x, gamma, beta)), g> in f64, as for the plain
        /// group norm above; and the f32 kernel against the f64 one.
        #[test]
        fn fused_silu_backward_matches_finite_differences((p, x, gamma, beta, g) in case()) {
            let (_, mean, rstd) = group_norm_silu(&p, &x, &gamma, &beta);
            let (dx, dgamma, dbeta) = group_norm_silu_backward(&p, &x, &gamma, &beta, &mean, &rstd, &g);
            let forward = |x: &[f64], gamma: &[f64], beta: &[f64]| group_norm_silu(&p, x, gamma, beta).0;
            matches_central_differences(&p, &x, &gamma, &beta, &g, &forward, (&dx, &dgamma, &dbeta), &rstd)?;
            fused_silu_backward_f32_agrees(&p, &x, &gamma, &beta, &g, (&dx, &dgamma, &dbeta), &rstd)?;
        }
    }
}
