//! Stride-1 convolutions computed where the input lies, without im2col.
//!
//! `conv.rs` unfolds every receptive field into a matrix `Cin*kh*kw` rows
//! tall, and the GEMM then copies that matrix once more into its packed
//! panels. With the U-Net's narrow layers (32 and 64 channels) those two
//! copies cost about as much as the multiplies. This file skips both.
//!
//! The trick is to flatten. Pad each input plane with zeros and lay it out
//! row by row with width `Wp = W + 2p`. Then output position `q = y*Wp + x`
//! is
//!
//! ```text
//! y[co][q] = sum over ci, ky, kx of  w[co,ci,ky,kx] * xpad[ci][q + ky*Wp + kx]
//! ```
//!
//! Every tap reads the same flat array, shifted by a constant. So the
//! convolution is `kh*kw` shifted multiply-adds over contiguous memory, and
//! vectorises along `q`. The columns `x >= OW` of each flat output row
//! mix the end of one row with the start of the next: they are computed
//! and thrown away. At 32x32 with padding 1 that is 6% of the work, at 8x8
//! 25%, which is why the smallest maps stay with im2col (see `applies`).
//!
//! The microkernel keeps a block of output channels x flat positions in
//! vector registers. Each step over (input channel, tap) loads the block's
//! input vectors once and broadcasts one weight per channel, so every
//! loaded value feeds several fused multiply-adds. The weights are packed
//! beforehand as `[block][ci][tap][channel]`, so the broadcasts walk memory
//! in order. A block past the last channel holds zero weights, so every
//! block is full: its extra rows are computed and never stored. Two
//! kernels, picked at run time:
//! - AVX-512: 8 channels x 32 positions (two 16-wide vectors), 16
//!   accumulators out of 32 registers;
//! - AVX2 + FMA: 4 channels x 16 positions, 8 accumulators out of 16 (the
//!   fewest that keep both FMA units busy through their 4-cycle latency;
//!   12 left the compiler spilling registers inside the loop).
//!
//! The input gradient of a stride-1 convolution is itself one (the output
//! gradient convolved with the flipped filters, their channel axes swapped,
//! at padding `k - 1 - p`), so it takes the same path. The weight gradient
//! is a sum over positions of the flattened output gradient times shifted
//! input, `dw[co,ci,tap] = sum over q of gflat[co][q] * xpad[ci][q + tap]`,
//! with its own kernels (`grad_avx2`, `grad_avx512`) that keep a block of
//! (channel, tap) sums in registers over a long sweep of `q`.
//!
//! 1x1 kernels (the U-Net's skip convolutions) are the single-tap case:
//! the forward pass and input gradient run here too, the weight gradient
//! stays with im2col's GEMM.
//!
//! f32 on x86-64 with AVX2 and FMA, or AVX-512, only; everything else goes
//! to im2col.

use rayon::prelude::*;
use std::mem::MaybeUninit;

use super::copy::copy_row;
use super::group_norm::{affine_row, biased_rows, BiasedRow, LaneSums};
use super::threads::sum_in_runs;
use super::transpose::transpose;
use crate::backend::Conv2dParams;
use crate::switch::EnvSwitch;

/// Flat positions one weight-gradient sweep should cover at least: each
/// sweep ends with `R * J` horizontal sums, which a short sweep (one 8x8
/// image is 100 positions) would spend as long on as on its multiply-adds.
/// Its two gradient rows (32 KiB) stay in L1/L2 across input channels.
const GRAD_SWEEP: usize = 4096;

/// Input bytes of one band of the weight gradient's input channels (see
/// `backward_weight_with`), well within a 1 MiB L2 cache. With 256
/// channels of 16x16 maps, going channel by channel within each block
/// instead ran about 15% slower (best of runs, 126 against 147 GFLOP/s).
const GRAD_BAND_BYTES: usize = 384 << 10;

/// Input channels summed per pass over the tiles. For a 3x3 kernel, 32
/// channels' packed weights (4.5 KiB) and the input rows one tile reads
/// (about 12 KiB) stay in a 32 KiB L1 cache; all 128 channels at once
/// would not, and ran 30% slower.
const CI_CHUNK: usize = 32;

/// Output rows written per call to `biased_rows`: enough that the call's
/// cost is spread over a few hundred values even on 8x8 maps.
const ROWS_PER_CALL: usize = 8;

/// Input bytes of one spatial band (all input channels), about a quarter
/// of a 1 MiB L2 cache: the rest holds the band's outputs and weights.
const BAND_BYTES: usize = 256 << 10;

static DISABLED: EnvSwitch = EnvSwitch::new("PETAL_CONV_IM2COL");

/// A forward block kernel; `block_avx2` states the contract.
pub(super) type BlockFn = unsafe fn(&[f32], usize, &[usize], &[f32], usize, bool, usize, &mut [f32], usize);
/// A weight-gradient block kernel; `grad_avx2` states the contract.
type GradFn = unsafe fn(&[f32], usize, &[f32], &[usize], usize, &mut [f32]);

/// A microkernel and the block it computes.
#[derive(Clone, Copy)]
struct Kernel {
    /// The instruction set, as `isa` reports it.
    name: &'static str,
    /// Output channels per block.
    channels: usize,
    /// Flat output positions per block.
    positions: usize,
    run: BlockFn,
    /// `run` on the first `positions / 2` positions only.
    run_half: BlockFn,
    /// Output channels x taps per weight-gradient block.
    grad_channels: usize,
    grad_taps: usize,
    /// Vector width of the weight-gradient kernel.
    lanes: usize,
    /// The least share of a flat output row that must be kept, as
    /// `(numerator, denominator)`: see `rows_wide_enough`.
    kept: (usize, usize),
    grad: GradFn,
}

#[cfg(target_arch = "x86_64")]
const AVX512: Kernel = Kernel { name: "avx512", channels: 8, positions: 32, run: block_avx512, run_half: block_avx512_half, grad_channels: 2, grad_taps: 9, lanes: 16, grad: grad_avx512, kept: (2, 3) };
#[cfg(target_arch = "x86_64")]
const AVX2: Kernel = Kernel { name: "avx2", channels: 4, positions: 16, run: block_avx2, run_half: block_avx2_half, grad_channels: 3, grad_taps: 3, lanes: 8, grad: grad_avx2, kept: (4, 5) };

/// The widest kernel this CPU runs, unless AVX-512 was turned off.
fn kernel() -> Option<Kernel> {
    #[cfg(target_arch = "x86_64")]
    {
        if super::simd::has_avx512() {
            return Some(AVX512);
        }
        if super::simd::has_avx2() {
            return Some(AVX2);
        }
    }
    None
}

/// The kernel for a forward pass (or input gradient) of `p`: the widest,
/// except that a few output channels (the U-Net's last layer has 3) go to
/// the AVX2 kernel, whose block of 4 channels they fill where they would
/// leave AVX-512's block of 8 at least half empty. Where a 512-bit
/// multiply-add costs two 256-bit ones (AMD Zen 4) that runs such a layer
/// twice as fast (0.48 against 0.88 ms for 32 -> 3 channels on 32x32 maps,
/// batch 32); elsewhere it ties.
fn kernel_for(p: &Conv2dParams) -> Option<Kernel> {
    #[cfg(target_arch = "x86_64")]
    {
        if p.out_channels <= AVX2.channels && super::simd::has_avx2() {
            return Some(AVX2);
        }
    }
    kernel()
}

/// The forward block kernel alone, for other users of its GEMM shape: with
/// a single tap at offset 0 and `plane` as the row stride of `xpad`, it is
/// `out[R, P] (+)= w[cin, R]ᵀ @ xpad[cin, P]`.
#[derive(Clone, Copy)]
pub(super) struct GemmKernel {
    /// The instruction set, as `isa` reports it.
    pub name: &'static str,
    /// Rows of `out` per call (`R`).
    pub channels: usize,
    /// Columns per call (`P`).
    pub positions: usize,
    pub run: BlockFn,
    /// `run` on `positions / 2` columns.
    pub run_half: BlockFn,
}

/// The widest block kernel this CPU runs (see `kernel`).
pub(super) fn gemm_kernel() -> Option<GemmKernel> {
    kernel().map(|k| k.gemm())
}

/// Every block kernel this CPU can run, for tests that cover each.
#[cfg(test)]
pub(super) fn gemm_kernels() -> Vec<GemmKernel> {
    #[cfg(target_arch = "x86_64")]
    {
        let mut found = Vec::new();
        if super::simd::has_avx2() {
            found.push(AVX2.gemm());
        }
        if is_x86_feature_detected!("avx512f") {
            found.push(AVX512.gemm());
        }
        found
    }
    #[cfg(not(target_arch = "x86_64"))]
    Vec::new()
}

impl Kernel {
    fn gemm(&self) -> GemmKernel {
        GemmKernel { name: self.name, channels: self.channels, positions: self.positions, run: self.run, run_half: self.run_half }
    }
}

/// Keeps this path, and the other loops compiled for AVX-512 (the group
/// norm's rows), on AVX2 even where the CPU has AVX-512 when `on` (to
/// compare the two); the environment's `PETAL_NO_AVX512=1` does the same.
pub fn set_avx512_disabled(on: bool) {
    super::simd::NO_AVX512.set(on);
}

/// The instruction set the direct convolution runs with here, or `None`
/// where it does not run (no AVX2, or sent back to im2col).
pub fn isa() -> Option<&'static str> {
    kernel().filter(|_| !DISABLED.is_on()).map(|k| k.name)
}

/// Sends every convolution back to im2col when `on` (benchmarks compare
/// both paths in one process); the environment's `PETAL_CONV_IM2COL=1` does
/// the same.
pub fn set_disabled(on: bool) {
    DISABLED.set(on);
}

/// Whether the forward pass of `p` (f32) takes this path: stride 1, and
/// output rows wide enough that the discarded columns do not eat the gain
/// (see `rows_wide_enough`). 1x1 kernels too: they need no unfold, but the
/// register block runs their product 1.3 to 1.5 times as fast as the
/// `gemm` crate's AVX2 kernels (BENCHMARKS.md).
pub fn applies(p: &Conv2dParams) -> bool {
    fits(p) && !DISABLED.is_on()
}

/// `computes(p)`, with this CPU's kernel, on rows wide enough for it.
fn fits(p: &Conv2dParams) -> bool {
    computes(p) && kernel_for(p).is_some_and(|k| rows_wide_enough(p, &k))
}

/// The shapes the kernels compute correctly, whatever the CPU.
fn computes(p: &Conv2dParams) -> bool {
    let wp = p.in_w + 2 * p.padding;
    // An empty input (all padding) has no planes to copy: im2col takes it.
    p.stride == 1 && p.in_h > 0 && p.in_w > 0 && p.in_h + 2 * p.padding >= p.kernel_h && wp >= p.kernel_w
}

/// Whether the discarded columns leave this path ahead of im2col: at most
/// a fifth of the work for the AVX2 kernel, a third for the AVX-512 one,
/// whose larger register block runs 4x4 maps with padding 1 (a third
/// discarded) about twice as fast as im2col, forward and input gradient,
/// at 64 and at 256 channels; the AVX2 kernel only ties there.
fn rows_wide_enough(p: &Conv2dParams, kernel: &Kernel) -> bool {
    let (kept, of) = kernel.kept;
    of * p.out_w() >= kept * (p.in_w + 2 * p.padding)
}

/// Whether the input gradient of `p` takes this path: for stride 1, a
/// forward convolution at padding `k - 1 - p`, so the kernel must be
/// square and `p < k`.
pub fn applies_backward_input(p: &Conv2dParams) -> bool {
    fits_backward_input(p) && applies(&backward_as_forward(p))
}

/// Whether the weight gradient of `p` takes this path: the output
/// gradient is flattened with zeros in the discarded columns, which still
/// cost multiply-adds, so at least 3/4 of the padded plane must be output
/// (16x16 maps with padding 1 are, 8x8 ones are not). A 1x1 kernel
/// without padding goes to `backward_weight_pointwise` instead: its single
/// tap would leave the weight-gradient kernel's groups of three taps
/// two-thirds empty (im2col's GEMM ran it 3 to 10 times faster).
pub fn applies_backward_weight(p: &Conv2dParams) -> bool {
    applies(p) && (is_pointwise(p) || (p.kernel_h * p.kernel_w > 1 && 4 * p.out_h() * p.out_w() >= 3 * (p.in_h + 2 * p.padding) * (p.in_w + 2 * p.padding)))
}

/// A 1x1 kernel at stride 1 without padding: output and input share their positions.
fn is_pointwise(p: &Conv2dParams) -> bool {
    p.kernel_h == 1 && p.kernel_w == 1 && p.stride == 1 && p.padding == 0
}

fn fits_backward_input(p: &Conv2dParams) -> bool {
    p.stride == 1 && p.kernel_h == p.kernel_w && p.padding < p.kernel_h && fits(&backward_as_forward(p))
}

/// The forward convolution that computes the input gradient of `p`.
pub(super) fn backward_as_forward(p: &Conv2dParams) -> Conv2dParams {
    Conv2dParams {
        batch: p.batch,
        in_channels: p.out_channels,
        out_channels: p.in_channels,
        in_h: p.out_h(),
        in_w: p.out_w(),
        kernel_h: p.kernel_h,
        kernel_w: p.kernel_w,
        stride: 1,
        padding: p.kernel_h.saturating_sub(1 + p.padding),
    }
}

/// Sizes of the flattened problem, shared by the packing and the kernel.
struct Flat {
    /// Padded input width: the stride of a flat row, input and output alike.
    wp: usize,
    ow: usize,
    /// Register blocks of positions that cover the `oh` flat output rows.
    tiles: usize,
    /// Length of one padded input plane, with zeros past its end for the
    /// last block's farthest tap.
    plane: usize,
    /// Flat offset of each tap, `ky*Wp + kx`.
    taps: Vec<usize>,
}

impl Flat {
    fn new(p: &Conv2dParams, positions: usize) -> Flat {
        let (wp, hp) = (p.in_w + 2 * p.padding, p.in_h + 2 * p.padding);
        let (oh, ow) = (p.out_h(), p.out_w());
        let tiles = (oh * wp).div_ceil(positions);
        let taps: Vec<usize> = (0..p.kernel_h).flat_map(|ky| (0..p.kernel_w).map(move |kx| ky * wp + kx)).collect();
        let farthest = tiles * positions + taps.last().copied().unwrap_or(0);
        // A whole number of vectors, so the weight gradient's planes laid
        // end to end stay aligned to the vector width.
        Flat { wp, ow, tiles, plane: farthest.max(hp * wp).next_multiple_of(16), taps }
    }
}

/// `[Cout, Cin, taps]` weights as `[block][ci][tap][R]`, zero past `Cout`.
#[allow(non_snake_case)]
fn pack_weights(weight: &[f32], cout: usize, cin: usize, taps: usize, R: usize) -> Vec<f32> {
    let blocks = cout.div_ceil(R);
    let mut packed = vec![0.0f32; blocks * cin * taps * R];
    if packed.is_empty() {
        // No input channels (or taps): nothing to arrange, and rayon
        // refuses chunks of length zero.
        return packed;
    }
    // In parallel, a block of output channels each: sampling calls this
    // for every convolution of every step, and the pool would wait.
    packed.par_chunks_mut(cin * taps * R).enumerate().for_each(|(block, packed)| {
        for r in 0..R.min(cout - block * R) {
            let filters = &weight[(block * R + r) * cin * taps..][..cin * taps];
            for (at, &w) in filters.iter().enumerate() {
                packed[at * R + r] = w;
            }
        }
    });
    packed
}

/// input [N,Cin,H,W], weight [Cout,Cin,kh,kw], bias [Cout] -> out [N,Cout,OH,OW].
/// The caller has checked `applies(p)`.
pub fn conv2d(p: &Conv2dParams, input: &[f32], weight: &[f32], bias: Option<&[f32]>, out: &mut [MaybeUninit<f32>]) {
    conv2d_fused(p, input, weight, bias, &Folded::default(), None, out);
}

/// What the forward pass folds into its input copy and its output writes
/// (see `ops/fused.rs`).
#[derive(Default, Clone, Copy)]
pub struct Folded<'a> {
    /// `(scale, shift)`, `[N*Cin]` each: the input is read as `x * scale + shift`.
    pub input_affine: Option<(&'a [f32], &'a [f32])>,
    /// SiLU on the input, after the affine.
    pub input_silu: bool,
    /// `[N,Cout,OH,OW]`, added to the output after the bias.
    pub residual: Option<&'a [f32]>,
}

/// `conv2d` with the work of `folded` done on the way in and out, and,
/// given `moments` (`[N*Cout*2]`), each output channel's sum and sum of
/// squares in f64, taken while the channel is still in cache.
/// The caller has checked `applies(p)`.
pub fn conv2d_fused(p: &Conv2dParams, input: &[f32], weight: &[f32], bias: Option<&[f32]>, folded: &Folded, moments: Option<&mut [f64]>, out: &mut [MaybeUninit<f32>]) {
    assert!(applies(p), "the direct convolution needs stride 1, and AVX2 and FMA or AVX-512");
    let kernel = kernel_for(p).expect("checked by applies");
    conv2d_with(kernel, p, band_tiles(kernel, p.in_channels), input, weight, bias, folded, moments, out);
}

/// Tiles per spatial band: as many as keep the band's input, for every
/// input channel, within `BAND_BYTES`.
fn band_tiles(kernel: Kernel, cin: usize) -> usize {
    (BAND_BYTES / (4 * kernel.positions * cin.max(1))).max(1)
}

/// Each image is computed a band of flat positions at a time, every
/// channel block and input channel within a band before the next, so the
/// band's input stays in the L2 cache while all blocks read it. Without
/// bands a 160x160 map streamed 32 input planes of 105 KiB each from L3
/// for every block, and the AVX-512 kernel ran at 56 GFLOP/s instead of
/// 130 to 170.
#[allow(non_snake_case, clippy::too_many_arguments)]
fn conv2d_with(
    kernel: Kernel,
    p: &Conv2dParams,
    band: usize,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    folded: &Folded,
    moments: Option<&mut [f64]>,
    out: &mut [MaybeUninit<f32>],
) {
    let (R, P) = (kernel.channels, kernel.positions);
    let (cin, cout) = (p.in_channels, p.out_channels);
    let taps = p.kernel_h * p.kernel_w;
    let (in_image, ohw) = (cin * p.in_h * p.in_w, p.out_h() * p.out_w());
    assert_eq!(input.len(), p.batch * in_image);
    assert_eq!(weight.len(), cout * cin * taps);
    assert_eq!(out.len(), p.batch * cout * ohw);
    if out.is_empty() {
        return;
    }
    let flat = Flat::new(p, P);
    let packed = pack_weights(weight, cout, cin, taps, R);
    let blocks = cout.div_ceil(R);
    // Work items are (image, run of channel blocks). Small batches split
    // each image's channels too, so that every thread has work; each item
    // pads its own copy of the image, which is cheap next to the multiplies.
    let threads = rayon::current_num_threads();
    let splits = (2 * threads).div_ceil(p.batch).clamp(1, blocks);
    let per_item = blocks.div_ceil(splits) * R * ohw;
    // (image, first channel block, its outputs, their moments)
    type Item<'a> = (usize, usize, &'a mut [MaybeUninit<f32>], Option<&'a mut [f64]>);
    let mut items: Vec<Item> = Vec::new();
    let mut moment_images = moments.map(|m| m.chunks_mut(2 * cout));
    for (n, image) in out.chunks_mut(cout * ohw).enumerate() {
        // The item's channels' moments, two values per channel.
        let mut moment_parts = moment_images.as_mut().map(|m| m.next().expect("2*Cout moments per image").chunks_mut(2 * per_item / ohw));
        for (s, part) in image.chunks_mut(per_item).enumerate() {
            let moments = moment_parts.as_mut().map(|m| m.next().expect("moments for every item"));
            items.push((n, s * per_item / (R * ohw), part, moments));
        }
    }
    // A 1x1 convolution whose input needs no transform reads its image in
    // place when its padded plane would be the plane itself (`Flat::new`
    // makes it longer wherever the kernel's last columns would run past the
    // plane): a padded copy would be the input again, and the skip
    // convolutions of a U-Net step copied several MiB that way.
    let in_place = is_pointwise(p) && folded.input_affine.is_none() && !folded.input_silu && flat.plane == p.in_h * p.in_w;
    // The item's blocks side by side, R rows of `tiles * P` each.
    let ld = flat.tiles * P;
    let block_scratch = R * ld;
    // One run of items per thread: each run allocates and zeroes its own
    // buffers once, where rayon's finer default split would redo that for
    // every piece it hands out.
    let per_thread = items.len().div_ceil(threads);
    items.into_par_iter().with_min_len(per_thread).for_each_init(
        || (vec![0.0f32; if in_place { 0 } else { cin * flat.plane }], vec![0.0f32; per_item.div_ceil(R * ohw) * block_scratch]),
        |(xpad, scratch), (n, first_block, part, mut moments)| {
            let image = &input[n * in_image..][..in_image];
            let xpad: &[f32] = if in_place {
                image
            } else {
                pad_image(p, &flat, n, folded, image, xpad);
                xpad
            };
            let item_blocks = part.len().div_ceil(R * ohw);
            for first_tile in (0..flat.tiles).step_by(band) {
                let tiles = first_tile..flat.tiles.min(first_tile + band);
                for (i, out) in scratch.chunks_exact_mut(block_scratch).take(item_blocks).enumerate() {
                    let block = first_block + i;
                    let w = &packed[block * cin * taps * R..][..cin * taps * R];
                    for first in (0..cin).step_by(CI_CHUNK) {
                        let chunk = CI_CHUNK.min(cin - first);
                        let x = &xpad[first * flat.plane..][..chunk * flat.plane];
                        let w = &w[first * taps * R..][..chunk * taps * R];
                        for tile in tiles.clone() {
                            // SAFETY: `kernel()` checked the CPU's features;
                            // `Flat::new` sized each plane for the farthest
                            // tap of the last tile, and `out` holds R rows
                            // of `ld = tiles * P`.
                            unsafe { (kernel.run)(x, flat.plane, &flat.taps, w, chunk, first > 0, tile * P, out, ld) };
                        }
                    }
                }
            }
            for (i, channels) in part.chunks_mut(R * ohw).enumerate() {
                let rows = &scratch[i * block_scratch..][..block_scratch];
                for (r, plane) in channels.chunks_mut(ohw).enumerate() {
                    let co = (first_block + i) * R + r;
                    let b = bias.map_or(0.0, |b| b[co]);
                    let row0 = &rows[r * ld..];
                    let residual = folded.residual.map(|residual| &residual[(n * cout + co) * ohw..][..ohw]);
                    let mut sums = LaneSums::default();
                    // The plane's rows, written `ROWS_PER_CALL` at a time.
                    for (first, band) in plane.chunks_mut(ROWS_PER_CALL * flat.ow).enumerate() {
                        let mut rows: [BiasedRow<f32>; ROWS_PER_CALL] = std::array::from_fn(|_| BiasedRow::empty());
                        let count = band.len() / flat.ow;
                        for (i, (out, row)) in band.chunks_exact_mut(flat.ow).zip(rows.iter_mut()).enumerate() {
                            let y = first * ROWS_PER_CALL + i;
                            let residual = residual.map(|residual| &residual[y * flat.ow..][..flat.ow]);
                            *row = BiasedRow { out, x: &row0[y * flat.wp..][..flat.ow], residual };
                        }
                        biased_rows(&mut rows[..count], b, moments.is_some().then_some(&mut sums));
                    }
                    if let Some(moments) = moments.as_deref_mut() {
                        let (sum, squares) = sums.total();
                        let c = i * R + r;
                        moments[2 * c] = sum;
                        moments[2 * c + 1] = squares;
                    }
                }
            }
        },
    );
}

/// grad_out [N,Cout,OH,OW], weight [Cout,Cin,kh,kw] -> grad_input [N,Cin,H,W]:
/// the forward convolution with the filters flipped and transposed.
/// The caller has checked `applies_backward_input(p)`.
pub fn conv2d_backward_input(p: &Conv2dParams, grad_out: &[f32], weight: &[f32], grad_in: &mut [MaybeUninit<f32>]) {
    assert!(applies_backward_input(p), "the direct input gradient needs a square kernel and padding below its size");
    backward_input_with(kernel_for(&backward_as_forward(p)).expect("checked by applies"), p, grad_out, weight, grad_in);
}

fn backward_input_with(kernel: Kernel, p: &Conv2dParams, grad_out: &[f32], weight: &[f32], grad_in: &mut [MaybeUninit<f32>]) {
    let flipped = flip_filters(weight, p.out_channels, p.in_channels, p.kernel_h * p.kernel_w);
    let q = backward_as_forward(p);
    debug_assert_eq!((q.out_h(), q.out_w()), (p.in_h, p.in_w));
    conv2d_with(kernel, &q, band_tiles(kernel, q.in_channels), grad_out, &flipped, None, &Folded::default(), None, grad_in);
}

/// `[Cout, Cin, taps]` filters as the `[Cin, Cout, taps]` filters of the
/// input gradient's forward convolution, each turned by 180 degrees.
pub(super) fn flip_filters(weight: &[f32], cout: usize, cin: usize, taps: usize) -> Vec<f32> {
    let mut flipped = vec![0.0f32; weight.len()];
    for co in 0..cout {
        for ci in 0..cin {
            let src = &weight[(co * cin + ci) * taps..][..taps];
            let dst = &mut flipped[(ci * cout + co) * taps..][..taps];
            dst.iter_mut().zip(src.iter().rev()).for_each(|(d, &s)| *d = s);
        }
    }
    flipped
}

/// input [N,Cin,H,W], grad_out [N,Cout,OH,OW] -> grad_weight [Cout,Cin,kh,kw].
/// The caller has checked `applies_backward_weight(p)`.
pub fn conv2d_backward_weight(p: &Conv2dParams, input: &[f32], grad_out: &[f32], grad_weight: &mut [f32]) {
    assert!(applies_backward_weight(p), "the direct weight gradient needs stride 1, output rows near the padded width, and AVX2 and FMA or AVX-512");
    let kernel = kernel().expect("checked by applies");
    if is_pointwise(p) {
        return backward_weight_pointwise(kernel, p, input, grad_out, grad_weight);
    }
    let flat = Flat::new(p, kernel.positions);
    // Long sweeps, in a number of chunks the threads share evenly: 32
    // images in chunks of 13 left one of two threads with twice the work.
    let threads = rayon::current_num_threads().max(1);
    let chunks = p.batch.div_ceil(GRAD_SWEEP.div_ceil(flat.plane)).next_multiple_of(threads).max(1);
    let chunk = p.batch.div_ceil(chunks).max(1);
    backward_weight_with(kernel, p, chunk, GRAD_BAND_BYTES, input, grad_out, grad_weight);
}

/// Positions per chunk of `backward_weight_pointwise`: its two transposed
/// operands, 256 positions by up to 512 channels each, stay in L2.
const POINTWISE_CHUNK: usize = 256;

/// The weight gradient of a 1x1 convolution, `dw[co][ci] = sum over images
/// and positions q of g[co][q] * x[ci][q]`: a GEMM whose summed index is
/// the position. The register block sums over its first operand's rows,
/// so each chunk of positions is transposed first, into `[q][ci]` (the
/// block's positions are input channels here) and `[channel block][q][R]`
/// (its weights), as F(4x4)'s weight gradient does with tiles. Chunks run
/// in one fixed run per thread (`sum_in_runs`), so the sum repeats bit for
/// bit. Against im2col's GEMM (the `gemm` crate, AVX2 only) this runs the
/// U-Net's skip convolutions' weight gradients about twice as fast.
#[allow(non_snake_case)]
fn backward_weight_pointwise(kernel: Kernel, p: &Conv2dParams, input: &[f32], grad_out: &[f32], dw: &mut [f32]) {
    let (R, P) = (kernel.channels, kernel.positions);
    let (cin, cout, hw) = (p.in_channels, p.out_channels, p.in_h * p.in_w);
    assert_eq!(input.len(), p.batch * cin * hw);
    assert_eq!(grad_out.len(), p.batch * cout * hw);
    assert_eq!(dw.len(), cout * cin);
    let (cin_pad, blocks) = (cin.next_multiple_of(P), cout.div_ceil(R));
    let chunks_per_image = hw.div_ceil(POINTWISE_CHUNK);
    let partial = |run: std::ops::Range<usize>| {
        // Columns past `cin` and rows past `cout` stay zero.
        let mut sums = vec![0.0f32; blocks * R * cin_pad];
        let mut xt = vec![0.0f32; POINTWISE_CHUNK * cin_pad];
        let mut gt = vec![0.0f32; blocks * POINTWISE_CHUNK * R];
        for item in run {
            let (n, first) = (item / chunks_per_image, item % chunks_per_image * POINTWISE_CHUNK);
            let q = POINTWISE_CHUNK.min(hw - first);
            transpose(&input[n * cin * hw + first..], hw, cin, q, &mut xt, cin_pad);
            for (cb, block) in gt.chunks_exact_mut(POINTWISE_CHUNK * R).enumerate() {
                let channels = R.min(cout - cb * R);
                transpose(&grad_out[(n * cout + cb * R) * hw + first..], hw, channels, q, block, R);
            }
            for (weights, out) in gt.chunks_exact(POINTWISE_CHUNK * R).zip(sums.chunks_exact_mut(R * cin_pad)) {
                for start in (0..cin_pad).step_by(P) {
                    // SAFETY: `kernel()` checked the CPU's features; `xt`
                    // holds `q` rows of `cin_pad`, `weights` `q * R` values,
                    // `out` R rows of `cin_pad`, and `start + P <= cin_pad`.
                    unsafe { (kernel.run)(&xt, cin_pad, &[0], weights, q, true, start, out, cin_pad) };
                }
            }
        }
        sums
    };
    let sums = sum_in_runs(p.batch * chunks_per_image, partial).unwrap_or_else(|| vec![0.0; blocks * R * cin_pad]);
    for (co, row) in dw.chunks_exact_mut(cin.max(1)).enumerate().take(cout) {
        row.copy_from_slice(&sums[co * cin_pad..][..cin]);
    }
}

/// The weight gradient is a sum over output positions,
/// `dw[co,ci,tap] = sum over q of gflat[co][q] * xpad[ci][q + tap]`, with
/// the output gradient flattened like the output (zeros in the discarded
/// columns, so they add nothing). Each chunk of `chunk` images lays its
/// planes end to end per channel, so one sweep covers the whole chunk; the
/// chunks run in parallel, each thread summing into its own `dw`.
fn backward_weight_with(kernel: Kernel, p: &Conv2dParams, chunk: usize, band_bytes: usize, input: &[f32], grad_out: &[f32], dw: &mut [f32]) {
    let (cin, cout, taps) = (p.in_channels, p.out_channels, p.kernel_h * p.kernel_w);
    let (in_image, out_image) = (cin * p.in_h * p.in_w, cout * p.out_h() * p.out_w());
    assert_eq!(input.len(), p.batch * in_image);
    assert_eq!(grad_out.len(), p.batch * out_image);
    assert_eq!(dw.len(), cout * cin * taps);
    dw.fill(0.0);
    if dw.is_empty() || p.batch == 0 {
        return;
    }
    let flat = Flat::new(p, kernel.positions);
    let r = kernel.grad_channels;
    let blocks = cout.div_ceil(r);
    // Past the chunk's last plane, the farthest tap of the last vector reads zeros.
    let stride = chunk * flat.plane + flat.taps.last().copied().unwrap_or(0) + kernel.lanes;
    // Input channels per band (`band_bytes` of planes).
    let band = (band_bytes / (4 * stride)).max(1);
    // Taps in groups of the kernel's size, the last one padded with taps
    // whose sums are dropped.
    let j = kernel.grad_taps;
    let groups: Vec<Vec<usize>> = flat.taps.chunks(j).map(|c| (0..j).map(|t| c.get(t).copied().unwrap_or(0)).collect()).collect();
    let (oh, ow, wp, pad) = (p.out_h(), flat.ow, flat.wp, p.padding);
    // One run of chunks per thread, each summed into its own partial.
    let partial = |run: std::ops::Range<usize>| {
        let (mut acc, mut xs, mut gs) = (vec![0.0f32; dw.len()], vec![0.0f32; cin * stride], vec![0.0f32; blocks * r * stride]);
        let pairs = input.chunks(chunk * in_image).zip(grad_out.chunks(chunk * out_image));
        for (x, g) in pairs.take(run.end).skip(run.start) {
            let images = x.len() / in_image;
            let used = images * flat.plane;
            // Planes end to end: xs[ci][image][plane], gs[co][image][plane].
            // Borders, discarded columns and tails are never written.
            for (ci, xc) in xs.chunks_exact_mut(stride).enumerate() {
                for b in 0..images {
                    let src = &x[b * in_image + ci * p.in_h * p.in_w..][..p.in_h * p.in_w];
                    for (y, row) in src.chunks_exact(p.in_w).enumerate() {
                        copy_row(&mut xc[b * flat.plane + (y + pad) * wp + pad..][..p.in_w], row);
                    }
                }
                // A short last chunk: the next plane's slot holds an
                // older image, which the slack reads must not see.
                xc[used..].fill(0.0);
            }
            for (co, gc) in gs.chunks_exact_mut(stride).enumerate().take(cout) {
                for b in 0..images {
                    let src = &g[b * out_image + co * oh * ow..][..oh * ow];
                    for (y, row) in src.chunks_exact(ow).enumerate() {
                        copy_row(&mut gc[b * flat.plane + y * wp..][..ow], row);
                    }
                }
            }
            let mut sums = vec![0.0f32; r * j];
            // `band` input channels at a time, every block of
            // output gradients passing over them before the next band:
            // the band's planes stay in L2 instead of streaming from L3
            // once per block.
            for first_ci in (0..cin).step_by(band) {
                for block in 0..blocks {
                    let gb = &gs[block * r * stride..][..r * stride];
                    for ci in first_ci..cin.min(first_ci + band) {
                        for (gi, group) in groups.iter().enumerate() {
                            sums.fill(0.0);
                            // SAFETY: `kernel()` checked the CPU's features; every
                            // read stays below `used + last tap + lanes <= stride`.
                            unsafe { (kernel.grad)(gb, stride, &xs[ci * stride..][..stride], group, used, &mut sums) };
                            for (rr, row) in sums.chunks_exact(j).enumerate() {
                                let co = block * r + rr;
                                if co >= cout {
                                    break;
                                }
                                let dst = &mut acc[(co * cin + ci) * taps..][..taps];
                                for (d, &v) in dst.iter_mut().skip(gi * j).zip(row) {
                                    *d += v;
                                }
                            }
                        }
                    }
                }
            }
        }
        acc
    };
    let total = sum_in_runs(p.batch.div_ceil(chunk), partial);
    if let Some(total) = total {
        dw.copy_from_slice(&total);
    }
}

/// Copies one image into its padded planes. The borders and the tail of
/// each plane are never written, so they keep the zeros `xpad` was made with.
fn pad_image(p: &Conv2dParams, flat: &Flat, n: usize, folded: &Folded, image: &[f32], xpad: &mut [f32]) {
    let (h, w, pad) = (p.in_h, p.in_w, p.padding);
    let transform = folded.input_affine.is_some() || folded.input_silu;
    for (ci, (plane, padded)) in image.chunks_exact(h * w).zip(xpad.chunks_exact_mut(flat.plane)).enumerate() {
        let (scale, shift) = folded.input_affine.map_or((1.0, 0.0), |(scale, shift)| (scale[n * p.in_channels + ci], shift[n * p.in_channels + ci]));
        for (y, row) in plane.chunks_exact(w).enumerate() {
            let dst = &mut padded[(y + pad) * flat.wp + pad..][..w];
            if transform {
                affine_row(dst, row, scale, shift, folded.input_silu);
            } else {
                copy_row(dst, row);
            }
        }
    }
}

/// One register block: `out[r][start..start + P]` (row stride `ld`) for the
/// block's `R` channels, summed over `cin` input channels and every tap,
/// and added to what `out` holds when `accumulate`.
///
/// # Safety
/// The CPU has AVX2 and FMA; `xpad` holds `cin` planes of `plane` values,
/// each readable at `start + tap + P` for every tap; `w` holds
/// `cin * taps.len() * R` values; `out` holds `R` rows of `ld >= start + P`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn block_avx2(xpad: &[f32], plane: usize, taps: &[usize], w: &[f32], cin: usize, accumulate: bool, start: usize, out: &mut [f32], ld: usize) {
    block_avx2_of::<2>(xpad, plane, taps, w, cin, accumulate, start, out, ld)
}

/// `block_avx2` on half the positions (`P = 8`), for blocks of F(4x4)
/// tiles that fill only half the full kernel's columns.
///
/// # Safety
/// As `block_avx2` with `P = 8`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn block_avx2_half(xpad: &[f32], plane: usize, taps: &[usize], w: &[f32], cin: usize, accumulate: bool, start: usize, out: &mut [f32], ld: usize) {
    block_avx2_of::<1>(xpad, plane, taps, w, cin, accumulate, start, out, ld)
}

/// `block_avx2` with `V` vectors of positions.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn block_avx2_of<const V: usize>(xpad: &[f32], plane: usize, taps: &[usize], w: &[f32], cin: usize, accumulate: bool, start: usize, out: &mut [f32], ld: usize) {
    use std::arch::x86_64::*;
    const R: usize = 4;
    let p = 8 * V;
    debug_assert!(xpad.len() >= cin * plane && start + p + taps.last().copied().unwrap_or(0) <= plane);
    debug_assert!(w.len() >= cin * taps.len() * R && out.len() >= (R - 1) * ld + start + p);
    let mut acc = [[_mm256_setzero_ps(); V]; R];
    if accumulate {
        for (r, row) in acc.iter_mut().enumerate() {
            let src = out.as_ptr().add(r * ld + start);
            for (v, a) in row.iter_mut().enumerate() {
                *a = _mm256_loadu_ps(src.add(8 * v));
            }
        }
    }
    let mut wp = w.as_ptr();
    for ci in 0..cin {
        let base = xpad.as_ptr().add(ci * plane + start);
        for &tap in taps {
            let src = base.add(tap);
            let x: [__m256; V] = std::array::from_fn(|v| _mm256_loadu_ps(src.add(8 * v)));
            for (r, row) in acc.iter_mut().enumerate() {
                let wr = _mm256_broadcast_ss(&*wp.add(r));
                for (a, &xv) in row.iter_mut().zip(&x) {
                    *a = _mm256_fmadd_ps(wr, xv, *a);
                }
            }
            wp = wp.add(R);
        }
    }
    for (r, row) in acc.iter().enumerate() {
        let dst = out.as_mut_ptr().add(r * ld + start);
        for (v, &a) in row.iter().enumerate() {
            _mm256_storeu_ps(dst.add(8 * v), a);
        }
    }
}

/// Weight-gradient block: `sums[r*J + j] = sum over q < len of
/// g[r*ldg + q] * x[q + taps[j]]`, for `R = 3` output channels and `J = 3`
/// taps (one kernel row of a 3x3): 9 accumulators, and 6 loads for 9
/// fused multiply-adds.
///
/// # Safety
/// The CPU has AVX2 and FMA; `len` is a multiple of 8; `g` holds `R` rows
/// of `ldg >= len`; `taps` holds `J` offsets and `x` is readable up to
/// `len + max(taps)`; `sums` holds `R * J` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn grad_avx2(g: &[f32], ldg: usize, x: &[f32], taps: &[usize], len: usize, sums: &mut [f32]) {
    use std::arch::x86_64::*;
    const R: usize = 3;
    const J: usize = 3;
    debug_assert!(len.is_multiple_of(8) && g.len() >= (R - 1) * ldg + len && sums.len() >= R * J);
    debug_assert!(taps.len() == J && x.len() >= len + taps.iter().max().copied().unwrap_or(0));
    let mut acc = [[_mm256_setzero_ps(); J]; R];
    let src: [*const f32; J] = std::array::from_fn(|j| x.as_ptr().add(taps[j]));
    for q in (0..len).step_by(8) {
        let gv: [__m256; R] = std::array::from_fn(|r| _mm256_loadu_ps(g.as_ptr().add(r * ldg + q)));
        for (j, &s) in src.iter().enumerate() {
            let xv = _mm256_loadu_ps(s.add(q));
            for (row, &gr) in acc.iter_mut().zip(&gv) {
                row[j] = _mm256_fmadd_ps(gr, xv, row[j]);
            }
        }
    }
    for (sum, a) in sums.iter_mut().zip(acc.iter().flatten()) {
        let mut lanes = [0.0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), *a);
        *sum = lanes.iter().sum();
    }
}

/// `grad_avx2` with 16-wide vectors, `R = 2` output channels and `J = 9`
/// taps (a whole 3x3): 18 accumulators out of 32 registers.
///
/// # Safety
/// As `grad_avx2`, with `len` a multiple of 16, on a CPU with AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn grad_avx512(g: &[f32], ldg: usize, x: &[f32], taps: &[usize], len: usize, sums: &mut [f32]) {
    use std::arch::x86_64::*;
    const R: usize = 2;
    const J: usize = 9;
    debug_assert!(len.is_multiple_of(16) && g.len() >= (R - 1) * ldg + len && sums.len() >= R * J);
    debug_assert!(taps.len() == J && x.len() >= len + taps.iter().max().copied().unwrap_or(0));
    let mut acc = [[_mm512_setzero_ps(); J]; R];
    let src: [*const f32; J] = std::array::from_fn(|j| x.as_ptr().add(taps[j]));
    for q in (0..len).step_by(16) {
        let gv: [__m512; R] = std::array::from_fn(|r| _mm512_loadu_ps(g.as_ptr().add(r * ldg + q)));
        for (j, &s) in src.iter().enumerate() {
            let xv = _mm512_loadu_ps(s.add(q));
            for (row, &gr) in acc.iter_mut().zip(&gv) {
                row[j] = _mm512_fmadd_ps(gr, xv, row[j]);
            }
        }
    }
    for (sum, a) in sums.iter_mut().zip(acc.iter().flatten()) {
        let mut lanes = [0.0f32; 16];
        _mm512_storeu_ps(lanes.as_mut_ptr(), *a);
        *sum = lanes.iter().sum();
    }
}

/// `block_avx2` with 16-wide vectors: 8 channels x 32 positions.
///
/// # Safety
/// As `block_avx2` with `R = 8` and `P = 32`, on a CPU with AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn block_avx512(xpad: &[f32], plane: usize, taps: &[usize], w: &[f32], cin: usize, accumulate: bool, start: usize, out: &mut [f32], ld: usize) {
    block_avx512_of::<2>(xpad, plane, taps, w, cin, accumulate, start, out, ld)
}

/// `block_avx512` on half the positions (`P = 16`).
///
/// # Safety
/// As `block_avx512` with `P = 16`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn block_avx512_half(xpad: &[f32], plane: usize, taps: &[usize], w: &[f32], cin: usize, accumulate: bool, start: usize, out: &mut [f32], ld: usize) {
    block_avx512_of::<1>(xpad, plane, taps, w, cin, accumulate, start, out, ld)
}

/// `block_avx512` with `V` vectors of positions.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn block_avx512_of<const V: usize>(xpad: &[f32], plane: usize, taps: &[usize], w: &[f32], cin: usize, accumulate: bool, start: usize, out: &mut [f32], ld: usize) {
    use std::arch::x86_64::*;
    const R: usize = 8;
    let p = 16 * V;
    debug_assert!(xpad.len() >= cin * plane && start + p + taps.last().copied().unwrap_or(0) <= plane);
    debug_assert!(w.len() >= cin * taps.len() * R && out.len() >= (R - 1) * ld + start + p);
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    if accumulate {
        for (r, row) in acc.iter_mut().enumerate() {
            let src = out.as_ptr().add(r * ld + start);
            for (v, a) in row.iter_mut().enumerate() {
                *a = _mm512_loadu_ps(src.add(16 * v));
            }
        }
    }
    let mut wp = w.as_ptr();
    for ci in 0..cin {
        let base = xpad.as_ptr().add(ci * plane + start);
        for &tap in taps {
            let src = base.add(tap);
            let x: [__m512; V] = std::array::from_fn(|v| _mm512_loadu_ps(src.add(16 * v)));
            for (r, row) in acc.iter_mut().enumerate() {
                let wr = _mm512_set1_ps(*wp.add(r));
                for (a, &xv) in row.iter_mut().zip(&x) {
                    *a = _mm512_fmadd_ps(wr, xv, *a);
                }
            }
            wp = wp.add(R);
        }
    }
    for (r, row) in acc.iter().enumerate() {
        let dst = out.as_mut_ptr().add(r * ld + start);
        for (v, &a) in row.iter().enumerate() {
            _mm512_storeu_ps(dst.add(16 * v), a);
        }
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::conv::tests::{close_f32, naive_backward, naive_forward, to32, unwritten};
    use crate::cpu::simd::has_avx2;
    use proptest::prelude::*;

    /// Stride-1 shapes this path takes: odd sizes, kernels up to 4x4 (not
    /// all square), padding 0 to 3, channel counts that are not multiples
    /// of the 4-channel block, and more than `CI_CHUNK` input channels.
    fn case() -> impl Strategy<Value = (Conv2dParams, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>)> {
        (1usize..4, prop::sample::select(vec![1usize, 3, 4, 7, 33, 70]), prop::sample::select(vec![1usize, 2, 3, 5, 9, 36]), 1usize..13, 1usize..13, 1usize..5, 1usize..5, 0usize..4)
            .prop_filter_map("a shape the direct kernels do not compute", |(batch, cin, cout, h, w, kh, kw, padding)| {
                let p = Conv2dParams { batch, in_channels: cin, out_channels: cout, in_h: h, in_w: w, kernel_h: kh, kernel_w: kw, stride: 1, padding };
                computes(&p).then_some(p)
            })
            .prop_flat_map(|p| {
                let xs = p.batch * p.in_channels * p.in_h * p.in_w;
                let ws = p.out_channels * p.in_channels * p.kernel_h * p.kernel_w;
                let gs = p.batch * p.out_channels * p.out_h() * p.out_w();
                (
                    Just(p),
                    prop::collection::vec(-2.0f64..2.0, xs),
                    prop::collection::vec(-2.0f64..2.0, ws),
                    prop::collection::vec(-2.0f64..2.0, p.out_channels),
                    prop::collection::vec(-2.0f64..2.0, gs),
                )
            })
    }

    /// The kernels this CPU runs. A missing one says SKIPPED once per test.
    fn kernels() -> Vec<Kernel> {
        let mut found = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if has_avx2() {
                found.push(AVX2);
            } else {
                eprintln!("SKIPPED: this CPU lacks AVX2 and FMA, so the AVX2 direct convolution is not tested here");
            }
            if is_x86_feature_detected!("avx512f") {
                found.push(AVX512);
            } else {
                eprintln!("SKIPPED: this CPU lacks AVX-512, so the AVX-512 direct convolution is not tested here");
            }
        }
        found
    }

    /// 1x1 shapes without padding, with planes of up to several chunks of
    /// `POINTWISE_CHUNK` positions, and a last chunk cut short.
    fn pointwise_case() -> impl Strategy<Value = (Conv2dParams, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>)> {
        pointwise_shapes(|| 1usize..40)
    }

    /// 1x1 shapes whose planes are often a whole number of either kernel's
    /// columns (read in place) and sometimes not (read through a padded copy).
    fn pointwise_planes_case() -> impl Strategy<Value = (Conv2dParams, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>)> {
        pointwise_shapes(|| prop::sample::select(vec![1usize, 2, 3, 4, 8, 16, 32]))
    }

    /// 1x1 shapes without padding, sides drawn from `sides`, with values.
    fn pointwise_shapes<S: Strategy<Value = usize>>(sides: impl Fn() -> S) -> impl Strategy<Value = (Conv2dParams, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>)> {
        (1usize..4, prop::sample::select(vec![1usize, 3, 8, 33, 70]), prop::sample::select(vec![1usize, 2, 5, 9, 36]), sides(), sides()).prop_flat_map(|(batch, cin, cout, h, w)| {
            let p = Conv2dParams { batch, in_channels: cin, out_channels: cout, in_h: h, in_w: w, kernel_h: 1, kernel_w: 1, stride: 1, padding: 0 };
            (
                Just(p),
                prop::collection::vec(-2.0f64..2.0, batch * cin * h * w),
                prop::collection::vec(-2.0f64..2.0, cout * cin),
                prop::collection::vec(-2.0f64..2.0, cout),
                prop::collection::vec(-2.0f64..2.0, batch * cout * h * w),
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn pointwise_backward_weight_matches_naive((p, x, w, _b, g) in pointwise_case()) {
            let [_, (want, mag)] = naive_backward(&p, &x, &w, &g);
            for kernel in kernels() {
                let mut got = vec![f32::NAN; want.len()];
                backward_weight_pointwise(kernel, &p, &to32(&x), &to32(&g), &mut got);
                close_f32(&got, &want, &mag)?;
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn forward_matches_naive((p, x, w, b, _g) in case(), use_bias in any::<bool>(), band in 1usize..4) {
            let (want, mag) = naive_forward(&p, &x, &w, use_bias.then_some(&b[..]));
            let b32 = to32(&b);
            for kernel in kernels() {
                let mut got = vec![f32::NAN; want.len()];
                conv2d_with(kernel, &p, band, &to32(&x), &to32(&w), use_bias.then_some(&b32[..]), &Folded::default(), None, unwritten(&mut got));
                close_f32(&got, &want, &mag)?;
            }
        }

        #[test]
        fn backward_input_matches_naive((p, x, w, _b, g) in case()) {
            prop_assume!(fits_backward_input(&p));
            let [(want, mag), _] = naive_backward(&p, &x, &w, &g);
            for kernel in kernels() {
                let mut got = vec![f32::NAN; want.len()];
                backward_input_with(kernel, &p, &to32(&g), &to32(&w), unwritten(&mut got));
                close_f32(&got, &want, &mag)?;
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn backward_weight_matches_naive((p, x, w, _b, g) in case(), chunk in 1usize..4, band_bytes in 1usize..100_000) {
            let [_, (want, mag)] = naive_backward(&p, &x, &w, &g);
            for kernel in kernels() {
                let mut got = vec![f32::NAN; want.len()];
                backward_weight_with(kernel, &p, chunk.min(p.batch), band_bytes, &to32(&x), &to32(&g), &mut got);
                close_f32(&got, &want, &mag)?;
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn pointwise_forward_and_input_gradient_match_naive((p, x, w, b, g) in pointwise_planes_case()) {
            let (want, mag) = naive_forward(&p, &x, &w, Some(&b));
            let [(want_dx, mag_dx), _] = naive_backward(&p, &x, &w, &g);
            for kernel in kernels() {
                let mut got = vec![f32::NAN; want.len()];
                conv2d_with(kernel, &p, band_tiles(kernel, p.in_channels), &to32(&x), &to32(&w), Some(&to32(&b)), &Folded::default(), None, unwritten(&mut got));
                close_f32(&got, &want, &mag)?;
                let mut got_dx = vec![f32::NAN; want_dx.len()];
                backward_input_with(kernel, &p, &to32(&g), &to32(&w), unwritten(&mut got_dx));
                close_f32(&got_dx, &want_dx, &mag_dx)?;
            }
        }
    }

    /// The public entry points route the U-Net's convolutions here, and
    /// leave strided and very narrow outputs to im2col.
    #[test]
    fn applies_to_the_unet_shapes() {
        if kernel().is_none() {
            eprintln!("SKIPPED: this CPU has neither AVX2 + FMA nor AVX-512, so convolutions stay with im2col");
            return;
        }
        let p = |cin, hw, k, stride, padding| Conv2dParams { batch: 2, in_channels: cin, out_channels: 32, in_h: hw, in_w: hw, kernel_h: k, kernel_w: k, stride, padding };
        assert!(applies(&p(3, 32, 3, 1, 1)) && applies(&p(64, 8, 3, 1, 1)));
        assert!(applies_backward_input(&p(32, 32, 3, 1, 1)) && applies_backward_weight(&p(64, 16, 3, 1, 1)));
        assert!(!applies_backward_weight(&p(64, 8, 3, 1, 1)), "36% of an 8x8 map's padded plane is padding");
        assert!(applies(&p(96, 32, 1, 1, 0)) && applies_backward_input(&p(96, 32, 1, 1, 0)), "1x1: no unfold, but the kernel's register block beats the GEMM");
        assert!(applies_backward_weight(&p(96, 32, 1, 1, 0)), "1x1 weight gradients as a transposed GEMM");
        assert!(!applies_backward_weight(&p(96, 32, 1, 1, 1)), "1x1 with padding: a single tap in groups of three");
        assert!(!applies(&p(32, 32, 3, 2, 1)) && !applies_backward_input(&p(32, 32, 3, 2, 1)), "stride 2");
        // 4 of 6 flat columns kept: enough for the AVX-512 block only.
        assert_eq!(applies(&p(32, 4, 3, 1, 1)), kernel().is_some_and(|k| k.name == "avx512"));
        assert!(!applies(&p(32, 2, 3, 1, 1)), "2 of 4 flat columns kept");
        // The last layer's 3 channels fill AVX2's block of 4, not AVX-512's 8.
        let last = Conv2dParams { out_channels: 3, ..p(32, 32, 3, 1, 1) };
        assert!(applies(&last));
        assert_eq!(kernel_for(&last).map(|k| k.name), Some("avx2"));
        assert_eq!(kernel_for(&p(32, 32, 3, 1, 1)).map(|k| k.name), kernel().map(|k| k.name));
    }
}
