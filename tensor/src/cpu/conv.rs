//! 2-D convolution (NCHW) lowered to matrix products.
//!
//! A convolution is a GEMM in disguise: unfolding every receptive field of an
//! image into a column ("im2col") turns `conv(x, w)` into
//! `W[Cout, Cin*kh*kw] @ cols[Cin*kh*kw, OH*OW]`, and the result is already the
//! NCHW output of that image. The unfold costs O(K * OH*OW) copies against
//! O(Cout * K * OH*OW) flops, so nearly all time goes to the tuned `gemm`
//! crate. The two backward passes are the transposed products:
//!
//! * grad input  = col2im(W^T @ grad_out)  (col2im adds overlapping fields)
//! * grad weight = sum_n grad_out[n] @ cols[n]^T
//!
//! Work is split into chunks of whole images. Each chunk is one GEMM whose
//! `n` dimension is `images * OH*OW`: small feature maps (8x8, 4x4) batch
//! several images per product, because a GEMM that is only 16..64 columns
//! wide spends its time packing instead of multiplying. Chunks run in
//! parallel with single-threaded GEMMs when there are enough of them (no
//! synchronisation inside the product); otherwise the GEMM gets every thread.
//! Pointwise convolutions (1x1, stride 1, no padding) skip the unfold: the
//! image itself is the column matrix.
//!
//! Other paths take over where they are faster, so this file is the
//! general fallback (f64, strided convolutions, CPUs without AVX2):
//! - `winograd4.rs`: f32 3x3 stride-1 convolutions with 32 or more
//!   channels on maps of 4x4 and up, on CPUs with AVX2 + FMA or AVX-512,
//!   by Winograd's F(4x4, 3x3) (4x fewer multiplies; forward, input
//!   gradient and weight gradient, the last from 8x8 maps up);
//! - `conv_direct.rs`: f32 stride-1 convolutions on CPUs with AVX2 + FMA or
//!   AVX-512, computed without the unfold (the default there);
//! - `winograd.rs`: with `PETAL_WINOGRAD=1`, 3x3 stride-1 convolutions with
//!   16 or more channels on both sides, in any dtype (F(2x2, 3x3), 2.25x
//!   fewer multiplies; not the default, see there).
//!
//! CUDA twin: `cuda/conv.rs` (launches, cuBLAS GEMMs) and `cuda/conv.cu` (im2col, col2im, bias).

use rayon::prelude::*;
use std::mem::MaybeUninit;

use super::allocator::zeros;
use super::threads::sum_in_runs;
use super::float::Float;
use super::matmul::{gemm, MatRef};
use super::conv_direct;
use super::winograd;
use super::winograd4;
use crate::backend::Conv2dParams;

// The CPU kernels' own view of the parameters (defined in `backend.rs`).
impl Conv2dParams {
    /// Rows of the unfolded matrix: one per (input channel, kernel tap).
    fn patch_len(&self) -> usize {
        self.in_channels * self.kernel_h * self.kernel_w
    }

    fn out_hw(&self) -> usize {
        self.out_h() * self.out_w()
    }

    fn in_image(&self) -> usize {
        self.in_channels * self.in_h * self.in_w
    }

    fn out_image(&self) -> usize {
        self.out_channels * self.out_hw()
    }

    fn is_pointwise(&self) -> bool {
        self.kernel_h == 1 && self.kernel_w == 1 && self.stride == 1 && self.padding == 0
    }

    fn validate(&self) {
        assert!(self.stride >= 1, "conv2d stride must be at least 1");
        assert!(
            self.kernel_h >= 1 && self.kernel_w >= 1,
            "conv2d kernel must be at least 1x1"
        );
        assert!(
            self.in_h + 2 * self.padding >= self.kernel_h
                && self.in_w + 2 * self.padding >= self.kernel_w,
            "conv2d kernel larger than the padded input"
        );
    }
}

/// How a call is cut into work: `chunk` images per GEMM, and whether chunks
/// run in parallel (each GEMM single-threaded) or in sequence (each GEMM
/// using every thread).
#[derive(Debug, Clone, Copy)]
struct Plan {
    chunk: usize,
    parallel: bool,
    gemm_threads: usize,
}

/// A GEMM narrower than this many columns is dominated by packing overhead,
/// so small feature maps are batched up to it.
const MIN_GEMM_COLS: usize = 256;
/// Keep one chunk's unfolded matrix within roughly this many elements, so the
/// per-thread buffers stay in the outer caches.
const MAX_COL_ELEMS: usize = 1 << 21;

impl Plan {
    fn new(p: &Conv2dParams) -> Plan {
        let threads = rayon::current_num_threads().max(1);
        let ohw = p.out_hw().max(1);
        let by_width = MIN_GEMM_COLS.div_ceil(ohw);
        let by_memory = (MAX_COL_ELEMS / (p.patch_len() * ohw).max(1)).max(1);
        let mut chunk = by_width.min(by_memory).clamp(1, p.batch.max(1));
        let mut chunks = p.batch.div_ceil(chunk);
        if chunks < threads && p.batch >= threads {
            // Splitting finer costs a narrower GEMM, but idle cores cost more.
            chunks = threads;
        } else if chunks >= threads {
            // A count that is a multiple of the thread count keeps the cores
            // evenly loaded (3 chunks on 2 cores leave one idle for a third).
            chunks = chunks.div_ceil(threads) * threads;
        }
        chunk = p.batch.div_ceil(chunks.clamp(1, p.batch.max(1))).max(1);
        let parallel = threads > 1 && p.batch.div_ceil(chunk) >= threads;
        Plan {
            chunk,
            parallel,
            gemm_threads: if parallel { 1 } else { threads },
        }
    }
}

/// Per-worker scratch, reused across the chunks one worker handles.
struct Scratch<T> {
    cols: Vec<T>,
    mat: Vec<T>,
}

impl<T: Float> Scratch<T> {
    fn new() -> Self {
        Scratch {
            cols: Vec::new(),
            mat: Vec::new(),
        }
    }
}

/// The first `len` values of the scratch buffer `v`, grown with zeros
/// where it is shorter (kept across calls, so it is allocated once).
pub(super) fn sized<T: Float>(v: &mut Vec<T>, len: usize) -> &mut [T] {
    if v.len() < len {
        v.resize(len, T::ZERO);
    }
    &mut v[..len]
}

/// Runs `work` over matching chunks of `src` and `dst` (whole images), in
/// parallel or in sequence as the plan says, with one scratch per worker.
fn for_each_chunk<T: Float, F>(
    plan: &Plan,
    src: &[T],
    src_img: usize,
    dst: &mut [T],
    dst_img: usize,
    work: F,
) where
    F: Fn(&[T], &mut [T], &mut Scratch<T>) + Send + Sync,
{
    let (sc, dc) = (plan.chunk * src_img, plan.chunk * dst_img);
    if plan.parallel {
        src.par_chunks(sc)
            .zip(dst.par_chunks_mut(dc))
            .for_each_init(Scratch::new, |s, (x, y)| work(x, y, s));
    } else {
        let mut s = Scratch::new();
        for (x, y) in src.chunks(sc).zip(dst.chunks_mut(dc)) {
            work(x, y, &mut s);
        }
    }
}

/// Range of output columns `ow` whose input column `ow*stride + tap - pad`
/// lies inside `0..len`; the rest read padding.
#[inline]
fn valid_range(
    len: usize,
    out_len: usize,
    tap: usize,
    stride: usize,
    pad: usize,
) -> (usize, usize) {
    let lo = if pad > tap {
        (pad - tap).div_ceil(stride)
    } else {
        0
    };
    let hi = if len + pad > tap {
        (len + pad - tap).div_ceil(stride)
    } else {
        0
    };
    let hi = hi.min(out_len);
    let lo = lo.min(hi);
    (lo, hi)
}

/// Unfolds one image `img [Cin, H, W]` into `cols`, whose rows are
/// `ld` long; this image fills columns `offset .. offset + OH*OW` of each.
fn im2col<T: Float>(p: &Conv2dParams, img: &[T], cols: &mut [T], ld: usize, offset: usize) {
    let (h, w, s, pad) = (p.in_h, p.in_w, p.stride, p.padding);
    let (oh, ow) = (p.out_h(), p.out_w());
    for c in 0..p.in_channels {
        let plane = &img[c * h * w..(c + 1) * h * w];
        for ki in 0..p.kernel_h {
            for kj in 0..p.kernel_w {
                let row = (c * p.kernel_h + ki) * p.kernel_w + kj;
                let dst = &mut cols[row * ld + offset..][..oh * ow];
                let (lo, hi) = valid_range(w, ow, kj, s, pad);
                for (y, out) in dst.chunks_exact_mut(ow).enumerate() {
                    let iy = (y * s + ki).wrapping_sub(pad);
                    if iy >= h {
                        out.fill(T::ZERO);
                        continue;
                    }
                    let src = &plane[iy * w..(iy + 1) * w];
                    out[..lo].fill(T::ZERO);
                    out[hi..].fill(T::ZERO);
                    if lo < hi {
                        let start = lo * s + kj - pad;
                        if s == 1 {
                            out[lo..hi].copy_from_slice(&src[start..start + (hi - lo)]);
                        } else {
                            for (o, &v) in
                                out[lo..hi].iter_mut().zip(src[start..].iter().step_by(s))
                            {
                                *o = v;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of `im2col`: adds every unfolded entry back onto the input
/// position it was copied from. `img` must be zeroed (or hold what to add to).
fn col2im<T: Float>(p: &Conv2dParams, cols: &[T], ld: usize, offset: usize, img: &mut [T]) {
    let (h, w, s, pad) = (p.in_h, p.in_w, p.stride, p.padding);
    let (oh, ow) = (p.out_h(), p.out_w());
    for c in 0..p.in_channels {
        let plane = &mut img[c * h * w..(c + 1) * h * w];
        for ki in 0..p.kernel_h {
            for kj in 0..p.kernel_w {
                let row = (c * p.kernel_h + ki) * p.kernel_w + kj;
                let src = &cols[row * ld + offset..][..oh * ow];
                let (lo, hi) = valid_range(w, ow, kj, s, pad);
                if lo >= hi {
                    continue;
                }
                for (y, vals) in src.chunks_exact(ow).enumerate() {
                    let iy = (y * s + ki).wrapping_sub(pad);
                    if iy >= h {
                        continue;
                    }
                    let start = lo * s + kj - pad;
                    let dst = &mut plane[iy * w..(iy + 1) * w];
                    if s == 1 {
                        for (d, &v) in dst[start..start + (hi - lo)].iter_mut().zip(&vals[lo..hi]) {
                            *d += v;
                        }
                    } else {
                        for (d, &v) in dst[start..].iter_mut().step_by(s).zip(&vals[lo..hi]) {
                            *d += v;
                        }
                    }
                }
            }
        }
    }
}

/// Unfolds a chunk of images side by side: `[K, images * OH*OW]`.
fn im2col_chunk<'a, T: Float>(p: &Conv2dParams, x: &[T], buf: &'a mut Vec<T>) -> &'a [T] {
    let images = x.len() / p.in_image();
    let ld = images * p.out_hw();
    let cols = sized(buf, p.patch_len() * ld);
    for (b, img) in x.chunks_exact(p.in_image()).enumerate() {
        im2col(p, img, cols, ld, b * p.out_hw());
    }
    cols
}

/// Rearranges a chunk of NCHW maps `[B, C, HW]` into one matrix `[C, B*HW]`
/// so the whole chunk is a single GEMM operand.
fn gather_channels<T: Float>(src: &[T], channels: usize, hw: usize, dst: &mut [T]) {
    let images = src.len() / (channels * hw);
    let ld = images * hw;
    for (b, img) in src.chunks_exact(channels * hw).enumerate() {
        for (c, plane) in img.chunks_exact(hw).enumerate() {
            dst[c * ld + b * hw..][..hw].copy_from_slice(plane);
        }
    }
}

fn row_major<T>(data: &[T], cols: usize) -> MatRef<'_, T> {
    MatRef {
        data,
        offset: 0,
        row_stride: cols as isize,
        col_stride: 1,
    }
}

/// The transpose of a row-major `[rows, cols]` matrix, by strides alone.
fn transposed<T>(data: &[T], cols: usize) -> MatRef<'_, T> {
    MatRef {
        data,
        offset: 0,
        row_stride: 1,
        col_stride: cols as isize,
    }
}

/// Runs an f32-only kernel (`conv_direct`) on two operands into a fresh
/// output of `len` values; `None`, with nothing allocated, when `T` is not
/// f32.
pub(super) fn on_f32<T: Float>(p: &Conv2dParams, len: usize, a: &[T], b: &[T], run: impl FnOnce(&[f32], &[f32], &mut [f32])) -> Option<Vec<T>> {
    let (a, b) = (T::as_f32(a)?, T::as_f32(b)?);
    p.validate();
    let mut out = zeros(len);
    run(a, b, T::as_f32_mut(&mut out)?);
    Some(out)
}

/// `on_f32` for the kernels that write every output element (the forward
/// passes and input gradients of the direct and F(4x4) paths), so the
/// output is not zeroed first: clearing it cost a pass over memory as
/// large as the output, 3 to 4% of a tiny training step.
///
/// # Safety
/// `run` must write each of the `len` elements of its output.
pub(super) unsafe fn on_f32_unzeroed<T: Float>(p: &Conv2dParams, len: usize, a: &[T], b: &[T], run: impl FnOnce(&[f32], &[f32], &mut [MaybeUninit<f32>])) -> Option<Vec<T>> {
    let (a, b) = (T::as_f32(a)?, T::as_f32(b)?);
    p.validate();
    let mut out = Vec::with_capacity(len);
    run(a, b, T::as_f32_uninit_mut(&mut out.spare_capacity_mut()[..len])?);
    // SAFETY: the caller's promise: `run` wrote the first `len` elements.
    unsafe { out.set_len(len) };
    Some(out)
}

/// Whether the input holds no values although the output does: no input
/// channels, or planes that are all padding (H or W of 0). Every product
/// is then zero, and the chunked paths below would split by a size of 0.
fn input_is_empty(p: &Conv2dParams) -> bool {
    p.in_image() == 0
}

/// input [N,Cin,H,W], weight [Cout,Cin,kh,kw], bias [Cout] -> [N,Cout,OH,OW]
pub fn conv2d<T: Float>(p: &Conv2dParams, input: &[T], weight: &[T], bias: Option<&[T]>) -> Vec<T> {
    if input_is_empty(p) {
        let mut out = vec![T::ZERO; p.batch * p.out_image()];
        if let Some(bias) = bias {
            for (plane, &b) in out.chunks_exact_mut(p.out_hw().max(1)).zip(bias.iter().cycle()) {
                plane.fill(b);
            }
        }
        return out;
    }
    if winograd::applies(p) {
        return winograd::conv2d(p, input, weight, bias);
    }
    if winograd4::applies(p) {
        let len = p.batch * p.out_image();
        // SAFETY: the F(4x4) forward pass writes every output.
        if let Some(out) = unsafe { on_f32_unzeroed(p, len, input, weight, |x, w, y| winograd4::conv2d(p, x, w, bias.and_then(T::as_f32), y)) } {
            return out;
        }
    }
    if conv_direct::applies(p) {
        let len = p.batch * p.out_image();
        // SAFETY: the direct forward pass writes every output.
        if let Some(out) = unsafe { on_f32_unzeroed(p, len, input, weight, |x, w, y| conv_direct::conv2d(p, x, w, bias.and_then(T::as_f32), y)) } {
            return out;
        }
    }
    conv2d_planned(p, &Plan::new(p), input, weight, bias)
}

fn conv2d_planned<T: Float>(
    p: &Conv2dParams,
    plan: &Plan,
    input: &[T],
    weight: &[T],
    bias: Option<&[T]>,
) -> Vec<T> {
    p.validate();
    let (k, ohw, cout) = (p.patch_len(), p.out_hw(), p.out_channels);
    assert_eq!(input.len(), p.batch * p.in_image());
    assert_eq!(weight.len(), cout * k);
    if let Some(b) = bias {
        assert_eq!(b.len(), cout);
    }
    let mut out = zeros(p.batch * p.out_image());
    if out.is_empty() {
        return out;
    }
    if k == 0 {
        // No input channels: each output is a sum over nothing plus its bias.
        if let Some(b) = bias {
            for (plane, &bv) in out.chunks_exact_mut(ohw).zip(b.iter().cycle()) {
                plane.fill(bv);
            }
        }
        return out;
    }
    let w = row_major(weight, k);
    for_each_chunk(
        plan,
        input,
        p.in_image(),
        &mut out,
        p.out_image(),
        |x, y, s| {
            let images = x.len() / p.in_image();
            let n = images * ohw;
            let cols = if p.is_pointwise() && images == 1 {
                x
            } else {
                im2col_chunk(p, x, &mut s.cols)
            };
            if images == 1 {
                // One image: the product lands directly in its NCHW output.
                gemm(
                    cout,
                    n,
                    k,
                    w,
                    row_major(cols, n),
                    y,
                    false,
                    plan.gemm_threads,
                );
                if let Some(b) = bias {
                    for (plane, &bv) in y.chunks_exact_mut(ohw).zip(b) {
                        plane.iter_mut().for_each(|v| *v += bv);
                    }
                }
            } else {
                // Several images: the product is [Cout, B*OHW]; scatter it back
                // to [B, Cout, OHW], adding the bias on the way.
                let mat = sized(&mut s.mat, cout * n);
                gemm(
                    cout,
                    n,
                    k,
                    w,
                    row_major(cols, n),
                    mat,
                    false,
                    plan.gemm_threads,
                );
                for (b, img) in y.chunks_exact_mut(p.out_image()).enumerate() {
                    for (c, plane) in img.chunks_exact_mut(ohw).enumerate() {
                        let src = &mat[c * n + b * ohw..][..ohw];
                        match bias {
                            Some(bias) => {
                                let bv = bias[c];
                                plane.iter_mut().zip(src).for_each(|(d, &v)| *d = v + bv);
                            }
                            None => plane.copy_from_slice(src),
                        }
                    }
                }
            }
        },
    );
    out
}

/// grad_out [N,Cout,OH,OW], weight -> grad_input [N,Cin,H,W]
pub fn conv2d_backward_input<T: Float>(p: &Conv2dParams, grad_out: &[T], weight: &[T]) -> Vec<T> {
    if input_is_empty(p) {
        return Vec::new();
    }
    if winograd::applies_backward_input(p) {
        return winograd::conv2d_backward_input(p, grad_out, weight);
    }
    if winograd4::applies_backward_input(p) {
        let len = p.batch * p.in_image();
        // SAFETY: a forward pass underneath, which writes every output.
        if let Some(grad_in) = unsafe { on_f32_unzeroed(p, len, grad_out, weight, |g, w, dx| winograd4::conv2d_backward_input(p, g, w, dx)) } {
            return grad_in;
        }
    }
    if conv_direct::applies_backward_input(p) {
        let len = p.batch * p.in_image();
        // SAFETY: as above.
        if let Some(grad_in) = unsafe { on_f32_unzeroed(p, len, grad_out, weight, |g, w, dx| conv_direct::conv2d_backward_input(p, g, w, dx)) } {
            return grad_in;
        }
    }
    conv2d_backward_input_planned(p, &Plan::new(p), grad_out, weight)
}

fn conv2d_backward_input_planned<T: Float>(
    p: &Conv2dParams,
    plan: &Plan,
    grad_out: &[T],
    weight: &[T],
) -> Vec<T> {
    p.validate();
    let (k, ohw, cout) = (p.patch_len(), p.out_hw(), p.out_channels);
    assert_eq!(grad_out.len(), p.batch * p.out_image());
    assert_eq!(weight.len(), cout * k);
    let mut grad_in = zeros(p.batch * p.in_image());
    if grad_in.is_empty() || ohw == 0 || cout == 0 {
        // No output positions or channels: nothing flows back.
        return grad_in;
    }
    let wt = transposed(weight, k);
    for_each_chunk(
        plan,
        grad_out,
        p.out_image(),
        &mut grad_in,
        p.in_image(),
        |g, dx, s| {
            let images = g.len() / p.out_image();
            let n = images * ohw;
            if p.is_pointwise() && images == 1 {
                // The column matrix of a pointwise conv is the image itself.
                gemm(
                    k,
                    n,
                    cout,
                    wt,
                    row_major(g, n),
                    dx,
                    false,
                    plan.gemm_threads,
                );
                return;
            }
            let g = if images == 1 {
                g
            } else {
                let mat = sized(&mut s.mat, cout * n);
                gather_channels(g, cout, ohw, mat);
                mat
            };
            let cols = sized(&mut s.cols, k * n);
            gemm(
                k,
                n,
                cout,
                wt,
                row_major(g, n),
                cols,
                false,
                plan.gemm_threads,
            );
            // `dx` is fresh zeroed memory that col2im reads before writing: a
            // read maps the shared zero page and the write then takes a second,
            // copy-on-write fault with a TLB shootdown. Writing first avoids both.
            dx.fill(T::ZERO);
            for (b, img) in dx.chunks_exact_mut(p.in_image()).enumerate() {
                col2im(p, cols, n, b * ohw, img);
            }
        },
    );
    grad_in
}

/// input, grad_out -> grad_weight [Cout,Cin,kh,kw]   (the bias gradient is a plain sum done elsewhere)
pub fn conv2d_backward_weight<T: Float>(p: &Conv2dParams, input: &[T], grad_out: &[T]) -> Vec<T> {
    if input_is_empty(p) {
        return vec![T::ZERO; p.out_channels * p.patch_len()];
    }
    if winograd::applies(p) {
        return winograd::conv2d_backward_weight(p, input, grad_out);
    }
    let len = p.out_channels * p.patch_len();
    if winograd4::applies_backward_weight(p) {
        if let Some(grad_weight) = on_f32(p, len, input, grad_out, |x, g, dw| winograd4::conv2d_backward_weight(p, x, g, dw)) {
            return grad_weight;
        }
    }
    if conv_direct::applies_backward_weight(p) {
        if let Some(grad_weight) = on_f32(p, len, input, grad_out, |x, g, dw| conv_direct::conv2d_backward_weight(p, x, g, dw)) {
            return grad_weight;
        }
    }
    conv2d_backward_weight_planned(p, &Plan::new(p), input, grad_out)
}

fn conv2d_backward_weight_planned<T: Float>(
    p: &Conv2dParams,
    plan: &Plan,
    input: &[T],
    grad_out: &[T],
) -> Vec<T> {
    p.validate();
    let (k, ohw, cout) = (p.patch_len(), p.out_hw(), p.out_channels);
    assert_eq!(input.len(), p.batch * p.in_image());
    assert_eq!(grad_out.len(), p.batch * p.out_image());
    let len = cout * k;
    if len == 0 || p.batch == 0 || ohw == 0 {
        return vec![T::ZERO; len];
    }
    // Adds one chunk's `grad_out @ cols^T` (contraction over B*OHW) to `acc`,
    // or writes it when `acc` is new: fresh memory that is read before it is
    // written takes two page faults (zero page, then copy-on-write) instead of one.
    let accumulate = |x: &[T], g: &[T], s: &mut Scratch<T>, acc: &mut Option<Vec<T>>| {
        let images = x.len() / p.in_image();
        let n = images * ohw;
        let cols = if p.is_pointwise() && images == 1 {
            x
        } else {
            im2col_chunk(p, x, &mut s.cols)
        };
        let g = if images == 1 {
            g
        } else {
            let mat = sized(&mut s.mat, cout * n);
            gather_channels(g, cout, ohw, mat);
            mat
        };
        let add = acc.is_some();
        let dst = acc.get_or_insert_with(|| vec![T::ZERO; len]);
        gemm(
            cout,
            k,
            n,
            row_major(g, n),
            transposed(cols, n),
            dst,
            add,
            plan.gemm_threads,
        );
    };
    let (xc, gc) = (plan.chunk * p.in_image(), plan.chunk * p.out_image());
    let total = if plan.parallel {
        // Each thread sums a run of chunks into its own partial; partials
        // are added at the end (one per thread, each only Cout*K long).
        let chunks = input.len().div_ceil(xc);
        sum_in_runs(chunks, |run| {
            let (mut acc, mut s) = (None, Scratch::new());
            for (x, g) in input.chunks(xc).zip(grad_out.chunks(gc)).take(run.end).skip(run.start) {
                accumulate(x, g, &mut s, &mut acc);
            }
            // (A run holds at least one chunk, which wrote `acc`.)
            acc.unwrap_or_else(|| vec![T::ZERO; len])
        })
    } else {
        let mut acc = None;
        let mut s = Scratch::new();
        for (x, g) in input.chunks(xc).zip(grad_out.chunks(gc)) {
            accumulate(x, g, &mut s, &mut acc);
        }
        acc
    };
    total.unwrap_or_else(|| vec![T::ZERO; len])
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A filled buffer as the output of a kernel that writes every element
    /// (the kernels take outputs that are not zeroed first). Tests fill it
    /// with NaN, so an element the kernel missed shows.
    pub(in crate::cpu) fn unwritten(v: &mut [f32]) -> &mut [MaybeUninit<f32>] {
        // SAFETY: same layout, and the kernels only ever write f32 values,
        // so the buffer stays initialised.
        unsafe { &mut *(v as *mut [f32] as *mut [MaybeUninit<f32>]) }
    }

    /// Direct nested-loop convolution in f64. Also returns, per output, the
    /// sum of |terms|, the scale that bounds f32 rounding error.
    pub(in crate::cpu) fn naive_forward(
        p: &Conv2dParams,
        x: &[f64],
        w: &[f64],
        b: Option<&[f64]>,
    ) -> (Vec<f64>, Vec<f64>) {
        let (oh, ow) = (p.out_h(), p.out_w());
        let mut out = vec![0.0; p.batch * p.out_channels * oh * ow];
        let mut mag = out.clone();
        for n in 0..p.batch {
            for co in 0..p.out_channels {
                for y in 0..oh {
                    for xo in 0..ow {
                        let (mut acc, mut m) = b.map_or((0.0, 0.0), |b| (b[co], b[co].abs()));
                        for ci in 0..p.in_channels {
                            for ki in 0..p.kernel_h {
                                for kj in 0..p.kernel_w {
                                    let iy = (y * p.stride + ki) as isize - p.padding as isize;
                                    let ix = (xo * p.stride + kj) as isize - p.padding as isize;
                                    if iy < 0
                                        || ix < 0
                                        || iy >= p.in_h as isize
                                        || ix >= p.in_w as isize
                                    {
                                        continue;
                                    }
                                    let xv = x[((n * p.in_channels + ci) * p.in_h + iy as usize)
                                        * p.in_w
                                        + ix as usize];
                                    let wv = w[((co * p.in_channels + ci) * p.kernel_h + ki)
                                        * p.kernel_w
                                        + kj];
                                    acc += xv * wv;
                                    m += (xv * wv).abs();
                                }
                            }
                        }
                        let i = ((n * p.out_channels + co) * oh + y) * ow + xo;
                        out[i] = acc;
                        mag[i] = m;
                    }
                }
            }
        }
        (out, mag)
    }

    /// Reference gradients by scattering every term of the forward sum.
    pub(in crate::cpu) fn naive_backward(
        p: &Conv2dParams,
        x: &[f64],
        w: &[f64],
        g: &[f64],
    ) -> [(Vec<f64>, Vec<f64>); 2] {
        let (oh, ow) = (p.out_h(), p.out_w());
        let mut dx = vec![0.0; x.len()];
        let mut dx_mag = dx.clone();
        let mut dw = vec![0.0; w.len()];
        let mut dw_mag = dw.clone();
        for n in 0..p.batch {
            for co in 0..p.out_channels {
                for y in 0..oh {
                    for xo in 0..ow {
                        let gv = g[((n * p.out_channels + co) * oh + y) * ow + xo];
                        for ci in 0..p.in_channels {
                            for ki in 0..p.kernel_h {
                                for kj in 0..p.kernel_w {
                                    let iy = (y * p.stride + ki) as isize - p.padding as isize;
                                    let ix = (xo * p.stride + kj) as isize - p.padding as isize;
                                    if iy < 0
                                        || ix < 0
                                        || iy >= p.in_h as isize
                                        || ix >= p.in_w as isize
                                    {
                                        continue;
                                    }
                                    let xi = ((n * p.in_channels + ci) * p.in_h + iy as usize)
                                        * p.in_w
                                        + ix as usize;
                                    let wi = ((co * p.in_channels + ci) * p.kernel_h + ki)
                                        * p.kernel_w
                                        + kj;
                                    dx[xi] += gv * w[wi];
                                    dx_mag[xi] += (gv * w[wi]).abs();
                                    dw[wi] += gv * x[xi];
                                    dw_mag[wi] += (gv * x[xi]).abs();
                                }
                            }
                        }
                    }
                }
            }
        }
        [(dx, dx_mag), (dw, dw_mag)]
    }

    fn params() -> impl Strategy<Value = Conv2dParams> {
        (
            1usize..4,
            1usize..5,
            1usize..5,
            1usize..9,
            1usize..9,
            prop::sample::select(vec![1usize, 2, 3]),
            prop::sample::select(vec![1usize, 2, 3]),
            1usize..3,
            0usize..3,
        )
            .prop_filter_map(
                "kernel larger than padded input",
                |(batch, cin, cout, h, w, kh, kw, stride, padding)| {
                    let p = Conv2dParams {
                        batch,
                        in_channels: cin,
                        out_channels: cout,
                        in_h: h,
                        in_w: w,
                        kernel_h: kh,
                        kernel_w: kw,
                        stride,
                        padding,
                    };
                    (h + 2 * padding >= p.kernel_h && w + 2 * padding >= p.kernel_w).then_some(p)
                },
            )
    }

    /// A shape, a chunking plan (so every code path runs on small shapes),
    /// and values for x, w, bias and grad_out.
    fn case() -> impl Strategy<Value = (Conv2dParams, Plan, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>)>
    {
        params().prop_flat_map(|p| {
            let xs = p.batch * p.in_image();
            let ws = p.out_channels * p.patch_len();
            let gs = p.batch * p.out_image();
            (
                Just(p),
                (1..=p.batch, any::<bool>(), 1usize..3).prop_map(
                    |(chunk, parallel, gemm_threads)| Plan {
                        chunk,
                        parallel,
                        gemm_threads,
                    },
                ),
                prop::collection::vec(-2.0f64..2.0, xs),
                prop::collection::vec(-2.0f64..2.0, ws),
                prop::collection::vec(-2.0f64..2.0, p.out_channels),
                prop::collection::vec(-2.0f64..2.0, gs),
            )
        })
    }

    /// Random 3x3 stride-1 problems: a shape `(batch, cin, cout, h, w,
    /// padding)` from `shapes` (those whose padded input fits the kernel),
    /// then input, weight, bias and output gradient in [-2, 2).
    #[allow(clippy::type_complexity)]
    pub(in crate::cpu) fn conv3x3_case(
        shapes: impl Strategy<Value = (usize, usize, usize, usize, usize, usize)>,
    ) -> impl Strategy<Value = (Conv2dParams, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>)> {
        shapes
            .prop_filter_map("kernel larger than padded input", |(batch, cin, cout, h, w, padding)| {
                let p = Conv2dParams { batch, in_channels: cin, out_channels: cout, in_h: h, in_w: w, kernel_h: 3, kernel_w: 3, stride: 1, padding };
                (h + 2 * padding >= 3 && w + 2 * padding >= 3).then_some(p)
            })
            .prop_flat_map(|p| {
                let xs = p.batch * p.in_channels * p.in_h * p.in_w;
                let gs = p.batch * p.out_channels * p.out_h() * p.out_w();
                (
                    Just(p),
                    prop::collection::vec(-2.0f64..2.0, xs),
                    prop::collection::vec(-2.0f64..2.0, p.out_channels * p.in_channels * 9),
                    prop::collection::vec(-2.0f64..2.0, p.out_channels),
                    prop::collection::vec(-2.0f64..2.0, gs),
                )
            })
    }

    pub(in crate::cpu) fn to32(v: &[f64]) -> Vec<f32> {
        v.iter().map(|&x| x as f32).collect()
    }

    /// f32 results must be within 1e-5 of the sum of |terms| (about 80 ulps
    /// of the worst-case accumulated rounding, far below any indexing bug).
    pub(in crate::cpu) fn close_f32(got: &[f32], want: &[f64], mag: &[f64]) -> Result<(), TestCaseError> {
        prop_assert_eq!(got.len(), want.len());
        for (i, ((&g, &w), &m)) in got.iter().zip(want).zip(mag).enumerate() {
            prop_assert!(
                (g as f64 - w).abs() <= 1e-5 * m + 1e-6,
                "at {}: {} vs {} (mag {})",
                i,
                g,
                w,
                m
            );
        }
        Ok(())
    }

    /// f64 results must match to 1e-10 relative to the sum of |terms|.
    fn close_f64(got: &[f64], want: &[f64], mag: &[f64]) -> Result<(), TestCaseError> {
        prop_assert_eq!(got.len(), want.len());
        for (i, ((&g, &w), &m)) in got.iter().zip(want).zip(mag).enumerate() {
            prop_assert!(
                (g - w).abs() <= 1e-10 * (m + 1.0),
                "at {}: {} vs {}",
                i,
                g,
                w
            );
        }
        Ok(())
    }

    fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn forward_matches_naive((p, plan, x, w, b, _g) in case(), use_bias in any::<bool>()) {
            let bias = use_bias.then_some(&b[..]);
            let (want, mag) = naive_forward(&p, &x, &w, bias);
            let got = conv2d_planned(&p, &plan, &x, &w, bias);
            close_f64(&got, &want, &mag)?;
            let b32 = to32(&b);
            let got = conv2d_planned(&p, &plan, &to32(&x), &to32(&w), use_bias.then_some(&b32[..]));
            close_f32(&got, &want, &mag)?;
            // The public entry point (automatic plan) agrees too.
            close_f64(&conv2d(&p, &x, &w, bias), &want, &mag)?;
        }

        #[test]
        fn backward_input_matches_naive((p, plan, x, w, _b, g) in case()) {
            let [(want, mag), _] = naive_backward(&p, &x, &w, &g);
            close_f64(&conv2d_backward_input_planned(&p, &plan, &g, &w), &want, &mag)?;
            close_f32(&conv2d_backward_input_planned(&p, &plan, &to32(&g), &to32(&w)), &want, &mag)?;
            close_f64(&conv2d_backward_input(&p, &g, &w), &want, &mag)?;
        }

        #[test]
        fn backward_weight_matches_naive((p, plan, x, w, _b, g) in case()) {
            let [_, (want, mag)] = naive_backward(&p, &x, &w, &g);
            close_f64(&conv2d_backward_weight_planned(&p, &plan, &x, &g), &want, &mag)?;
            close_f32(&conv2d_backward_weight_planned(&p, &plan, &to32(&x), &to32(&g)), &want, &mag)?;
            close_f64(&conv2d_backward_weight(&p, &x, &g), &want, &mag)?;
        }

        /// The backward kernels are the adjoints of the (bias-free, hence
        /// bilinear) forward: <conv(x,w), g> = <x, dx(g,w)> = <w, dw(x,g)>.
        #[test]
        fn backwards_are_adjoints((p, _plan, x, w, _b, g) in case()) {
            let y = conv2d(&p, &x, &w, None);
            let lhs = dot(&y, &g);
            let via_x = dot(&x, &conv2d_backward_input(&p, &g, &w));
            let via_w = dot(&w, &conv2d_backward_weight(&p, &x, &g));
            let scale = 1.0 + y.iter().zip(&g).map(|(a, b)| (a * b).abs()).sum::<f64>();
            prop_assert!((lhs - via_x).abs() <= 1e-10 * scale, "{} vs {}", lhs, via_x);
            prop_assert!((lhs - via_w).abs() <= 1e-10 * scale, "{} vs {}", lhs, via_w);
        }
    }

    /// An input of padding only (H = 0) or without channels: the output is
    /// the bias, the input gradient empty and the weight gradient zero.
    #[test]
    fn input_of_padding_only() {
        for (cin, h) in [(3, 0), (0, 4)] {
            let p = Conv2dParams { batch: 2, in_channels: cin, out_channels: 2, in_h: h, in_w: 4, kernel_h: 1, kernel_w: 1, stride: 1, padding: 1 };
            let w = vec![1.0f32; 2 * cin];
            let out = conv2d::<f32>(&p, &[], &w, Some(&[0.5, -1.0]));
            assert_eq!(out.len(), 2 * 2 * p.out_h() * p.out_w());
            let ohw = p.out_h() * p.out_w();
            assert!(out.chunks(ohw).enumerate().all(|(i, plane)| plane.iter().all(|&v| v == [0.5, -1.0][i % 2])));
            let g = vec![1.0f32; out.len()];
            assert!(conv2d_backward_input::<f32>(&p, &g, &w).is_empty());
            assert_eq!(conv2d_backward_weight::<f32>(&p, &[], &g), vec![0.0; 2 * cin]);
        }
    }

    #[test]
    fn output_size_and_flops() {
        let p = Conv2dParams {
            batch: 2,
            in_channels: 3,
            out_channels: 4,
            in_h: 7,
            in_w: 6,
            kernel_h: 3,
            kernel_w: 3,
            stride: 2,
            padding: 1,
        };
        assert_eq!((p.out_h(), p.out_w()), (4, 3));
        assert_eq!(p.flops(), 2.0 * (2 * 4 * 27 * 12) as f64);
    }

    #[test]
    fn planner_covers_batch() {
        for batch in [1, 2, 3, 7, 32] {
            for (hw, c) in [(1, 8), (4, 256), (8, 256), (32, 128), (64, 64)] {
                let p = Conv2dParams {
                    batch,
                    in_channels: c,
                    out_channels: c,
                    in_h: hw,
                    in_w: hw,
                    kernel_h: 3,
                    kernel_w: 3,
                    stride: 1,
                    padding: 1,
                };
                let plan = Plan::new(&p);
                assert!(plan.chunk >= 1 && plan.chunk <= batch, "{plan:?} {p:?}");
            }
        }
    }
}
