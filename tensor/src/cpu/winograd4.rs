//! 3x3 stride-1 convolutions by Winograd's F(4x4, 3x3), on the direct
//! convolution's register kernel.
//!
//! `winograd.rs` explains the algebra with 2x2 output tiles. Here each
//! tile is 4x4 outputs, read from a 6x6 patch of input:
//!
//! ```text
//! Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A        (A: 6x4, B: 6x6, G: 6x3)
//! ```
//!
//! so a tile costs 36 multiplies per channel pair where a direct
//! convolution spends 16 * 9 = 144: 4x fewer, against F(2x2)'s 2.25x. The
//! price is larger constants in the transforms (up to 8 and 1/24), which
//! cost f32 a few more bits: the `kernels` bench prints the error on U-Net
//! shapes next to the direct path's, and the tests bound it.
//!
//! F(2x2) runs its 16 products as big GEMMs over the whole batch, and its
//! transformed input and output stream through memory between the phases;
//! that traffic ate most of its gain. This file works instead on blocks of
//! `BLOCK` tiles (a couple of rows of a 64x64 map, or a few small images),
//! and one rayon task does a block from input to output:
//!
//! 1. for each input channel, copy the rows the block reads into a small
//!    zero-padded band, and transform its patches into `V[36][Cin][BLOCK]`
//!    (a vector of tiles at a time: the same patch position of 16 tiles,
//!    8 with AVX2, comes into one vector, so the transform is plain
//!    vector arithmetic and each transformed value is written once, in
//!    place; tiles side by side in a row are loaded whole and transposed,
//!    others gathered);
//! 2. for each block of output channels, the 36 products
//!    `M[e] = U[e] @ V[e]`, by the direct convolution's register kernel
//!    with a single tap (it is a GEMM microkernel: broadcast weights,
//!    vectors of positions);
//! 3. still in cache, transform `M` back to 4x4 outputs, interleave them
//!    into rows, and write the rows into the NCHW output with the bias,
//!    and, for fused inference, the residual and the moments.
//!
//! `V` of one block (4.5 KiB per input channel) stays in L2, and `M` of
//! one channel block (36 KiB with AVX-512's 8 channels) in L1 or L2.
//!
//! The input gradient of a stride-1 3x3 convolution is a forward one (the
//! flipped filters, channel axes swapped, padding `2 - p`), so it takes
//! this path too. So does the weight gradient (`conv2d_backward_weight`),
//! read backwards: the output gradient's tiles go through `A`, the input's
//! through `Bᵀ d B`, and each of the 36 positions sums `W[e] V[e]ᵀ` over
//! the tiles. Its rounding is worse than the direct kernel's (about 2e-5
//! of the largest weight gradient against 3e-7), far below the noise of a
//! mini-batch's gradient.
//!
//! The filters' transform `U = G g Gᵀ` depends on the weights alone, so a
//! caller that runs the same weights many times (sampling, through
//! `Tensor::conv2d_fused`) can have it made once by `prepare_weights` and
//! pass it in; with `U` ready, the forward pass pays off on 8x8 and 4x4
//! maps too.
//!
//! f32 on x86-64 CPUs with AVX2 + FMA or AVX-512 (the direct kernel's two
//! register blocks, and the transforms written once over `Simd`);
//! elsewhere im2col runs.

use rayon::prelude::*;
use std::mem::MaybeUninit;

use super::allocator::zeros;
use super::conv::sized;
use super::conv_direct::{self, Folded, GemmKernel};
use super::copy::copy_row;
use super::group_norm::{affine_row, biased_rows, BiasedRow, LaneSums};
use super::kept::Kept;
use super::simd::{array_of, simd_dispatch};
use super::threads::sum_in_runs;
use super::transpose::transpose;
use crate::backend::Conv2dParams;
use crate::switch::EnvSwitch;

/// Output tile side.
const TILE: usize = 4;
/// Input patch side: a tile plus the 3x3 kernel's overhang.
const PATCH: usize = 6;
/// Positions of a transformed patch.
const E: usize = PATCH * PATCH;
/// Tiles per block: a multiple of the register kernel's 32 positions.
/// With 256 input channels a block's `V` is 1.2 MiB; larger blocks spill
/// it out of L2.
const BLOCK: usize = 32;

/// `G`'s fractions, multiplied by rather than divided by.
const SIXTH: f64 = 1.0 / 6.0;
const TWELFTH: f64 = 1.0 / 12.0;
const TWENTY_FOURTH: f64 = 1.0 / 24.0;

/// Fewer channels than this make the 36 products too thin: the transforms
/// then cost as much as the multiplies they save.
const MIN_CHANNELS: usize = 32;

/// The distance between consecutive planes of a `[36][len]` scratch
/// (`V`, `M`, `W`): `len` rounded up to an odd number of 64-byte lines.
/// The transforms touch all 36 planes at one offset; were the planes a
/// multiple of 4 KiB apart (`V` with 32 channels is exactly 4 KiB), every
/// one of those accesses would fall into the same set of the 8-way L1
/// cache, which then holds only 8 of the 36 lines. An odd number of lines
/// spreads the 36 over 36 sets.
fn plane_stride(len: usize) -> usize {
    const LINE: usize = 64 / std::mem::size_of::<f32>();
    LINE * (len.div_ceil(LINE) | 1)
}

static DISABLED: EnvSwitch = EnvSwitch::new("PETAL_NO_WINOGRAD4");

/// Sends 3x3 convolutions back to the direct kernel when `on`; the
/// environment's `PETAL_NO_WINOGRAD4=1` does the same.
pub fn set_disabled(on: bool) {
    DISABLED.set(on);
}

/// Whether this path runs here: the CPU has AVX2 and FMA or AVX-512, and
/// nothing turned it off.
pub fn enabled() -> bool {
    kernels().is_some()
}

/// One transform of a block; `transform_input` and `transform_output`
/// state the contracts.
type InputFn = unsafe fn(&[f32], usize, &[i32], u32, usize, &mut [f32], usize, usize);
type OutputFn = unsafe fn(&[f32], usize, usize, usize, &mut [f32]);
type GradFn = unsafe fn(&[f32], usize, &[i32], u32, &mut [f32], usize, usize);

/// The register kernel and the transforms for one instruction set.
#[derive(Clone, Copy)]
struct Kernels {
    gemm: GemmKernel,
    input: InputFn,
    output: OutputFn,
    grad: GradFn,
}

impl Kernels {
    fn new(gemm: GemmKernel) -> Kernels {
        #[cfg(target_arch = "x86_64")]
        {
            if gemm.name == "avx512" {
                return Kernels { gemm, input: transform_input_avx512, output: transform_output_avx512, grad: transform_grad_avx512 };
            }
            return Kernels { gemm, input: transform_input_avx2, output: transform_output_avx2, grad: transform_grad_avx2 };
        }
        #[allow(unreachable_code)]
        {
            unreachable!("the register kernels exist on x86-64 only")
        }
    }
}

/// The kernels of the widest instruction set here, where the path is on.
fn kernels() -> Option<Kernels> {
    conv_direct::gemm_kernel().filter(|_| !DISABLED.is_on()).map(Kernels::new)
}

/// Whether the forward pass of `p` (f32) takes this path.
pub fn applies(p: &Conv2dParams) -> bool {
    fits(p) && kernels().is_some()
}

/// The shapes this path is for, whatever the CPU: 3x3, stride 1, enough
/// channels, maps of at least one tile (4x4), and at least half a block of
/// tiles. With fewer blocks than threads, the threads share out the output
/// channels (see `forward`). On 8x8 and 4x4 maps a block of 32 tiles spans
/// 8 or 32 images and reads all of `U` for a few tiles of each, yet the
/// transforms and the 4x fewer products still beat the direct kernel, even
/// with the filters transformed on every call: 1.3x to 2.9x at 8x8 and
/// 1.0x to 1.7x at 4x4, with 64 or 256 channels (BENCHMARKS.md).
fn fits(p: &Conv2dParams) -> bool {
    shape_fits(p, TILE) && Tiling::new(p).total >= BLOCK / 2
}

/// `shape_fits` with maps of at least `side` x `side`, and at least two
/// blocks of tiles (the weight gradient's rule, see `applies_backward_weight`).
fn fits_maps_from(p: &Conv2dParams, side: usize) -> bool {
    shape_fits(p, side) && Tiling::new(p).total >= 2 * BLOCK
}

/// 3x3, stride 1, enough channels, maps of at least `side` x `side`.
fn shape_fits(p: &Conv2dParams, side: usize) -> bool {
    p.kernel_h == 3
        && p.kernel_w == 3
        && p.stride == 1
        && p.in_channels >= MIN_CHANNELS
        && p.out_channels >= MIN_CHANNELS
        && p.in_h + 2 * p.padding >= 3
        && p.in_w + 2 * p.padding >= 3
        && p.out_h() >= side
        && p.out_w() >= side
}

/// The name of the filter arrangement `prepare_weights` makes for `p` on
/// this CPU (it depends on the register kernel's block of channels), where
/// the forward pass takes this path.
pub fn weight_arrangement(p: &Conv2dParams) -> Option<u64> {
    kernels().filter(|_| fits(p)).map(|k| k.gemm.channels as u64)
}

/// The transformed filters `U` of `weight` `[Cout, Cin, 3, 3]`, for
/// `conv2d_fused` to take instead of transforming them itself.
pub fn prepare_weights(p: &Conv2dParams, weight: &[f32]) -> Vec<f32> {
    let kernels = kernels().expect("checked by weight_arrangement");
    assert_eq!(weight.len(), p.out_channels * p.in_channels * 9);
    transform_weights(p.out_channels, p.in_channels, weight, kernels.gemm.channels)
}

/// Whether the input gradient of `p` takes this path: a forward
/// convolution at padding `2 - p`.
pub fn applies_backward_input(p: &Conv2dParams) -> bool {
    p.kernel_h == 3 && p.kernel_w == 3 && p.stride == 1 && p.padding <= 2 && applies(&conv_direct::backward_as_forward(p))
}

/// Whether the weight gradient of `p` takes this path: maps of at least
/// 8x8 and two blocks of tiles. On 8x8 maps the direct kernel does not take
/// the weight gradient (a quarter of its flattened plane would be
/// padding), so the alternative is im2col, which F(4x4) beat 1.2x to 1.5x
/// at 64 channels and 1.5x to 2.3x at 256. On 4x4 maps the direct kernel
/// was faster at 64 channels (BENCHMARKS.md).
pub fn applies_backward_weight(p: &Conv2dParams) -> bool {
    fits_maps_from(p, 8) && kernels().is_some()
}

/// How the outputs are cut into tiles, numbered image by image, row by row.
#[derive(Debug, Clone, Copy)]
struct Tiling {
    cols: usize,
    per_image: usize,
    total: usize,
}

impl Tiling {
    fn new(p: &Conv2dParams) -> Tiling {
        let rows = p.out_h().div_ceil(TILE);
        let cols = p.out_w().div_ceil(TILE);
        Tiling { cols, per_image: rows * cols, total: p.batch * rows * cols }
    }

    /// Width of a padded band: every tile's patch in bounds.
    fn band_width(&self) -> usize {
        TILE * self.cols + 2
    }
}

/// The length of `transform_weights`' `U` for register blocks of `R` channels.
#[allow(non_snake_case)]
fn transformed_len(cout: usize, cin: usize, R: usize) -> usize {
    E * cout.div_ceil(R) * cin * R
}

/// `U = G g Gᵀ` of every filter, in f64, packed for the register kernel as
/// `[e][channel block][ci][R]` (zero past `Cout`).
///
/// Every forward pass and input gradient pays for this, so it is built to
/// be cheap: multiplies by reciprocals (a division costs a dozen
/// multiplies, and rounding to f32 hides the difference), channel blocks in
/// parallel, a block's `R` filters of one input channel transformed side by
/// side as vector lanes (`filters_side_by_side`), into a scratch of
/// `[ci][36][R]` first, then copied out one plane at a time. Writing all 36
/// planes as the filters were transformed was the slow part: the planes lie
/// a power of two apart, so the 36 write streams fight over one cache set.
#[allow(non_snake_case)]
fn transform_weights(cout: usize, cin: usize, weight: &[f32], R: usize) -> Vec<f32> {
    assert!(R <= LANES_OF_FILTERS, "register blocks of at most {LANES_OF_FILTERS} channels");
    let blocks = cout.div_ceil(R);
    let block_len = cin * R;
    // Zeroed by the pool: a training step transforms every layer's filters
    // anew, and `vec!` had the calling thread clear up to a few MiB alone.
    let mut u = zeros::<f32>(transformed_len(cout, cin, R));
    let target = Output(u.as_mut_ptr());
    (0..blocks).into_par_iter().for_each_init(Vec::new, |scratch: &mut Vec<f32>, cb| {
        let filters = sized(scratch, block_len * E);
        let channels = R.min(cout - cb * R);
        for (ci, transformed) in filters.chunks_exact_mut(E * R).enumerate() {
            filters_side_by_side(weight, cin, ci, cb * R, channels, transformed);
        }
        for e in 0..E {
            // SAFETY: plane `e`'s run for channel block `cb` lies inside
            // `u`, and only this task writes it.
            let plane = unsafe { std::slice::from_raw_parts_mut(target.at((e * blocks + cb) * block_len), block_len) };
            for (dst, src) in plane.chunks_exact_mut(R).zip(filters.chunks_exact(E * R)) {
                copy_row(dst, &src[e * R..][..R]);
            }
        }
    });
    u
}

/// The most filters `filters_side_by_side` transforms at once: the AVX-512
/// register block's channels.
const LANES_OF_FILTERS: usize = 8;

/// `G g Gᵀ` of the filters `[first + r, ci]` for r in `0..channels`, as
/// `out[e * R + r]` with `R = out.len() / 36`; lanes from `channels` to
/// `R` transform a zero filter (a block past `Cout`, never stored). Each
/// filter is a lane of f64 vectors, so one vector operation does a step
/// for all of them; the steps are the scalar ones, in the same order, so
/// each filter gets the same bits as it would alone.
#[inline(always)]
fn filters_side_by_side(weight: &[f32], cin: usize, ci: usize, first: usize, channels: usize, out: &mut [f32]) {
    type Lanes = [f64; LANES_OF_FILTERS];
    #[inline(always)]
    fn run(weight: &[f32], cin: usize, ci: usize, first: usize, channels: usize, out: &mut [f32]) {
        // G's rows applied to (g0, g1, g2), lane by lane.
        #[inline(always)]
        fn g_rows(a: &Lanes, b: &Lanes, c: &Lanes) -> [Lanes; PATCH] {
            let mut rows = [[0.0; LANES_OF_FILTERS]; PATCH];
            for l in 0..LANES_OF_FILTERS {
                let (a, b, c) = (a[l], b[l], c[l]);
                let (outer, middle) = (a * TWENTY_FOURTH + c * SIXTH, b * TWELFTH);
                let row = [a * 0.25, -(a + b + c) * SIXTH, -(a - b + c) * SIXTH, outer + middle, outer - middle, c];
                for (k, v) in row.into_iter().enumerate() {
                    rows[k][l] = v;
                }
            }
            rows
        }
        let lanes = out.len() / E;
        let mut g = [[0.0f64; LANES_OF_FILTERS]; 9];
        for r in 0..channels {
            for (k, taps) in g.iter_mut().enumerate() {
                taps[r] = weight[((first + r) * cin + ci) * 9 + k] as f64;
            }
        }
        let columns = [g_rows(&g[0], &g[3], &g[6]), g_rows(&g[1], &g[4], &g[7]), g_rows(&g[2], &g[5], &g[8])];
        for i in 0..PATCH {
            let row = g_rows(&columns[0][i], &columns[1][i], &columns[2][i]);
            for (j, values) in row.iter().enumerate() {
                for (o, &v) in out[(i * PATCH + j) * lanes..][..lanes].iter_mut().zip(values) {
                    *o = v as f32;
                }
            }
        }
    }
    assert!(out.len().is_multiple_of(E) && out.len() / E <= LANES_OF_FILTERS && channels <= out.len() / E);
    simd_dispatch!(run<>(weight: &[f32], cin: usize, ci: usize, first: usize, channels: usize, out: &mut [f32]))
}

/// A run of tiles in one tile row: image `image` (the block's slot
/// `slot`), row `ty`, columns `tx..tx + len`, at `at..at + len` within the
/// block.
#[derive(Debug, Clone, Copy)]
struct Segment {
    image: usize,
    slot: usize,
    ty: usize,
    tx: usize,
    len: usize,
    at: usize,
}

/// The images a block touches, each with the tile rows it needs.
#[derive(Debug, Clone, Copy)]
struct Slot {
    image: usize,
    first_row: usize,
    /// Padded input rows copied: the tile rows' patches.
    rows: usize,
    /// Offset of the slot's band in the block's band buffer.
    base: usize,
}

/// What one block reads and writes.
struct BlockPlan {
    segments: Vec<Segment>,
    slots: Vec<Slot>,
    band_len: usize,
    /// Offset of each tile's patch in the band buffer (`BLOCK` of them;
    /// lanes past the block's last tile repeat tile 0's).
    offsets: Vec<i32>,
    /// `runs_of_four(offsets)`.
    runs: u32,
}

impl BlockPlan {
    /// Tiles in the block: `BLOCK`, or fewer in the last one.
    fn tiles(&self) -> usize {
        self.segments.last().map_or(0, |s| s.at + s.len)
    }

    fn new(tiling: &Tiling, first: usize) -> BlockPlan {
        let end = (first + BLOCK).min(tiling.total);
        let wb = tiling.band_width();
        let mut segments = Vec::new();
        let mut slots: Vec<Slot> = Vec::new();
        let mut t = first;
        while t < end {
            let (image, within) = (t / tiling.per_image, t % tiling.per_image);
            let (ty, tx) = (within / tiling.cols, within % tiling.cols);
            let len = (tiling.cols - tx).min(end - t);
            match slots.last_mut() {
                Some(slot) if slot.image == image => slot.rows = (ty - slot.first_row) * TILE + PATCH,
                _ => {
                    let base = slots.last().map_or(0, |slot| slot.base + slot.rows * wb);
                    slots.push(Slot { image, first_row: ty, rows: PATCH, base });
                }
            }
            segments.push(Segment { image, slot: slots.len() - 1, ty, tx, len, at: t - first });
            t += len;
        }
        let band_len = slots.last().map_or(0, |slot| slot.base + slot.rows * wb);
        let mut offsets = vec![0i32; BLOCK];
        for s in &segments {
            let slot = &slots[s.slot];
            for k in 0..s.len {
                let at = slot.base + (s.ty - slot.first_row) * TILE * wb + (s.tx + k) * TILE;
                offsets[s.at + k] = i32::try_from(at).expect("a band fits in i32");
            }
        }
        for k in (end - first)..BLOCK {
            offsets[k] = offsets[0];
        }
        let runs = runs_of_four(&offsets);
        BlockPlan { segments, slots, band_len, offsets, runs }
    }
}

/// Which groups of four tiles (bit `g` for tiles `4g..4g + 4`) have their
/// patches side by side along one row of the band, four values apart: the
/// transforms read a vector of such groups with plain loads and a
/// transpose rather than gathers (see `Simd::runs4`). On maps of 16
/// columns and up, every full group is one.
fn runs_of_four(offsets: &[i32]) -> u32 {
    let is_run = |g: &[i32]| g.iter().enumerate().all(|(k, &o)| o == g[0] + 4 * k as i32);
    offsets.chunks_exact(4).enumerate().filter(|(_, g)| is_run(g)).fold(0, |runs, (g, _)| runs | 1 << g)
}

/// Values a band holds past its last row: `Simd::runs4` reads whole
/// vectors, up to 2 values past the last patch of a run.
const RUN_SLACK: usize = 16;

/// A raw output pointer that parallel tasks share: each writes only its
/// own elements (a block its tiles' outputs, a channel block its filters'
/// transforms), so no two write the same one.
#[derive(Clone, Copy)]
struct Output(*mut f32);
// SAFETY: see the type's comment; the writes never overlap.
unsafe impl Send for Output {}
unsafe impl Sync for Output {}

impl Output {
    /// The pointer `offset` elements in. A method, so that closures capture
    /// the whole (`Sync`) `Output` rather than its raw pointer field.
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// Per-thread buffers, kept across the blocks one thread runs.
#[derive(Default)]
struct Scratch {
    band: Vec<f32>,
    staged: Vec<f32>,
    v: Vec<f32>,
    m: Vec<f32>,
    rows: Vec<f32>,
}

/// input [N,Cin,H,W], weight [Cout,Cin,3,3], bias [Cout] -> out [N,Cout,OH,OW].
/// The caller has checked `applies(p)`.
pub fn conv2d(p: &Conv2dParams, input: &[f32], weight: &[f32], bias: Option<&[f32]>, out: &mut [MaybeUninit<f32>]) {
    conv2d_fused(p, input, weight, None, bias, &Folded::default(), None, out);
}

/// `conv2d` with `folded`'s input transform done in the band copy and its
/// residual, with the moments (`[N*Cout*2]`), in the output writes; with
/// `prepared`, the filters' `U` from `prepare_weights` (on this CPU, for
/// these weights).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_fused(p: &Conv2dParams, input: &[f32], weight: &[f32], prepared: Option<&[f32]>, bias: Option<&[f32]>, folded: &Folded, moments: Option<&mut [f64]>, out: &mut [MaybeUninit<f32>]) {
    assert!(applies(p), "Winograd F(4x4, 3x3) needs a 3x3 stride-1 convolution with enough channels, and AVX2 or AVX-512");
    forward(kernels().expect("checked by applies"), p, input, weight, prepared, bias, folded, moments, out);
}

/// `conv2d_fused` for any 3x3 stride-1 shape (`applies` only keeps out
/// the ones where this path is slower), with `kernels`.
#[allow(clippy::too_many_arguments)]
fn forward(kernels: Kernels, p: &Conv2dParams, input: &[f32], weight: &[f32], prepared: Option<&[f32]>, bias: Option<&[f32]>, folded: &Folded, moments: Option<&mut [f64]>, out: &mut [MaybeUninit<f32>]) {
    assert!(p.kernel_h == 3 && p.kernel_w == 3 && p.stride == 1, "Winograd F(4x4, 3x3) needs a 3x3 stride-1 convolution");
    let (cin, cout) = (p.in_channels, p.out_channels);
    assert_eq!(input.len(), p.batch * cin * p.in_h * p.in_w);
    assert_eq!(weight.len(), cout * cin * 9);
    assert_eq!(out.len(), p.batch * cout * p.out_h() * p.out_w());
    let tiling = Tiling::new(p);
    let transformed;
    let u = match prepared {
        Some(u) => {
            assert_eq!(u.len(), transformed_len(cout, cin, kernels.gemm.channels), "prepared filters of another shape or CPU");
            u
        }
        None => {
            transformed = transform_weights(cout, cin, weight, kernels.gemm.channels);
            &transformed[..]
        }
    };
    let output = Output(out.as_mut_ptr().cast());
    let blocks = tiling.total.div_ceil(BLOCK);
    // Fewer blocks than threads (small maps, few images): the threads
    // share out each block's output channels, each transforming the
    // block's input for its own share.
    let channel_blocks = cout.div_ceil(kernels.gemm.channels);
    let shares = rayon::current_num_threads().div_ceil(blocks).clamp(1, channel_blocks);
    let per_share = channel_blocks.div_ceil(shares);
    let partial: Vec<(usize, Vec<f64>)> = (0..blocks * shares)
        .into_par_iter()
        .map_init(Kept::<Scratch>::take, |scratch, task| {
            let (b, share) = (task / shares, task % shares);
            let channels = share * per_share..((share + 1) * per_share).min(channel_blocks);
            let plan = BlockPlan::new(&tiling, b * BLOCK);
            let sums = run_block(p, &tiling, &plan, kernels, input, &u, bias, folded, moments.is_some(), channels, output, scratch);
            (plan.slots[0].image, sums)
        })
        .collect();
    if let Some(moments) = moments {
        moments.fill(0.0);
        for (first_image, sums) in partial {
            let at = 2 * first_image * cout;
            moments[at..at + sums.len()].iter_mut().zip(&sums).for_each(|(m, s)| *m += s);
        }
    }
}

/// One block from input to output, for the output channels of the
/// register kernel's blocks `channel_blocks`. Returns its share of the
/// moments, `[slot][Cout][2]` (zero outside those channels), when asked for.
#[allow(clippy::too_many_arguments)]
fn run_block(
    p: &Conv2dParams,
    tiling: &Tiling,
    plan: &BlockPlan,
    kernels: Kernels,
    input: &[f32],
    u: &[f32],
    bias: Option<&[f32]>,
    folded: &Folded,
    moments: bool,
    channel_blocks: std::ops::Range<usize>,
    output: Output,
    scratch: &mut Scratch,
) -> Vec<f64> {
    let (cin, cout) = (p.in_channels, p.out_channels);
    let (oh, ow) = (p.out_h(), p.out_w());
    let kernel = kernels.gemm;
    let r_block = kernel.channels;
    // Columns past the block's tiles are left as they are in `V` and `M`,
    // and never read into the outputs.
    let tiles = plan.tiles();

    // 1. The input transform.
    let v_stride = plane_stride(cin * BLOCK);
    let v = sized(&mut scratch.v, E * v_stride);
    transform_block_input(p, tiling, plan, kernels, input, folded, &mut scratch.band, &mut scratch.staged, v, v_stride);

    // 2 and 3. Products and the output transform, a channel block at a time.
    let m_stride = plane_stride(r_block * BLOCK);
    let m = sized(&mut scratch.m, E * m_stride);
    let rows = sized(&mut scratch.rows, TILE * TILE * BLOCK);
    let all_channel_blocks = cout.div_ceil(r_block);
    let mut sums = if moments { vec![0.0f64; 2 * plan.slots.len() * cout] } else { Vec::new() };
    // Each slot's lane sums for the channel at hand, totalled once per
    // channel: a total per segment (a tile row) took 2.5% of a sampling step.
    let mut slot_sums = vec![LaneSums::default(); if moments { plan.slots.len() } else { 0 }];
    for cb in channel_blocks {
        for e in 0..E {
            let ue = &u[(e * all_channel_blocks + cb) * cin * r_block..][..cin * r_block];
            let ve = &v[e * v_stride..][..cin * BLOCK];
            let me = &mut m[e * m_stride..][..r_block * BLOCK];
            for start in (0..tiles).step_by(kernel.positions) {
                // A block of a few small images may fill only half the
                // kernel's columns (16 tiles of 4x4 maps at batch 16).
                let run = if tiles - start <= kernel.positions / 2 { kernel.run_half } else { kernel.run };
                // SAFETY: as the kernel's contract asks: `ve` holds `cin`
                // rows of BLOCK, `ue` `cin * R` weights, `me` R rows of BLOCK,
                // and `start + P <= BLOCK`.
                unsafe { run(ve, BLOCK, &[0], ue, cin, false, start, me, BLOCK) };
            }
        }
        for r in 0..r_block.min(cout - cb * r_block) {
            let co = cb * r_block + r;
            // SAFETY: as above; `m` holds 36 planes, `m_stride` apart, of R rows of BLOCK,
            // and `rows` 4 rows of 4 * BLOCK.
            unsafe { (kernels.output)(m, m_stride, r * BLOCK, tiles, rows) };
            let bv = bias.map_or(0.0, |b| b[co]);
            slot_sums.fill(LaneSums::default());
            for s in &plan.segments {
                let x0 = s.tx * TILE;
                let n = (x0 + s.len * TILE).min(ow) - x0;
                // The segment's output rows, written in one call.
                let mut tile_rows: [BiasedRow<f32>; TILE] = std::array::from_fn(|_| BiasedRow::empty());
                let count = TILE.min(oh - s.ty * TILE);
                for (dy, row) in tile_rows.iter_mut().enumerate().take(count) {
                    let at = ((s.image * cout + co) * oh + s.ty * TILE + dy) * ow + x0;
                    // SAFETY: this block owns these outputs (see `Output`),
                    // and `at + n` stays within the output's row.
                    let out = unsafe { std::slice::from_raw_parts_mut(output.at(at).cast::<MaybeUninit<f32>>(), n) };
                    let x = &rows[dy * TILE * BLOCK + s.at * TILE..][..n];
                    *row = BiasedRow { out, x, residual: folded.residual.map(|res| &res[at..at + n]) };
                }
                let sums = if moments { Some(&mut slot_sums[s.slot]) } else { None };
                biased_rows(&mut tile_rows[..count], bv, sums);
            }
            for (slot, sum) in slot_sums.iter().enumerate() {
                let at = 2 * (slot * cout + co);
                (sums[at], sums[at + 1]) = sum.total();
            }
        }
    }
    sums
}

/// `V = Bᵀ d B` of every input channel's patches in the block, into
/// `v[36][Cin][BLOCK]`: for each channel, copy the rows the block reads
/// into a zero-padded band (applying `folded`'s input transform on the
/// way), then transform the band's patches.
///
/// The input transform runs over each slot's rows at once, into `staged`,
/// before the rows are copied into the band: the rows lie one after another
/// in the input, and one long run keeps the SiLU's vector loop busy where a
/// row at a time (8 or 16 values on small maps) would spend most of it in
/// the loop's setup and scalar tail.
#[allow(clippy::too_many_arguments)]
fn transform_block_input(p: &Conv2dParams, tiling: &Tiling, plan: &BlockPlan, kernels: Kernels, input: &[f32], folded: &Folded, band: &mut Vec<f32>, staged: &mut Vec<f32>, v: &mut [f32], v_stride: usize) {
    let (cin, h, w, pad) = (p.in_channels, p.in_h, p.in_w, p.padding);
    let wb = tiling.band_width();
    let transform = folded.input_affine.is_some() || folded.input_silu;
    let tiles = plan.tiles();
    // The band's borders are never written after this fill, so they stay zero.
    let band = sized(band, plan.band_len + RUN_SLACK);
    band.fill(0.0);
    for ci in 0..cin {
        if ci + 1 < cin {
            prefetch_rows(p, plan, input, ci + 1);
        }
        for slot in &plan.slots {
            // The input rows the slot's band rows `r` hold: y = first_row * 4 + r - pad.
            let first = (slot.first_row * TILE).saturating_sub(pad).min(h);
            let end = (slot.first_row * TILE + slot.rows).saturating_sub(pad).min(h);
            let plane = &input[(slot.image * cin + ci) * h * w..][..h * w];
            let rows = &plane[first * w..end * w];
            let rows = if transform {
                let (scale, shift) = folded.input_affine.map_or((1.0, 0.0), |(scale, shift)| (scale[slot.image * cin + ci], shift[slot.image * cin + ci]));
                let out = sized(staged, rows.len());
                affine_row(out, rows, scale, shift, folded.input_silu);
                &*out
            } else {
                rows
            };
            for (y, row) in (first..end).zip(rows.chunks_exact(w)) {
                let r = y + pad - slot.first_row * TILE;
                copy_row(&mut band[slot.base + r * wb + pad..][..w], row);
            }
        }
        // SAFETY: `kernels` are for this CPU; every offset plus a patch's
        // reach stays inside the band, and `v` holds 36 planes,
        // `v_stride` apart, of `cin * BLOCK`.
        unsafe { (kernels.input)(band, wb, &plan.offsets, plan.runs, tiles, v, v_stride, ci * BLOCK) };
    }
}

/// Asks for the input rows of channel `ci` that the block copies next,
/// while this channel is transformed. Each channel's rows are a few KiB of
/// a plane at a stride of the plane, too short a run for the hardware
/// prefetcher to get going, so without this every band copy starts with
/// misses: in a sampling profile, the fused SiLU of the band copies spent
/// a quarter of its time waiting for its loads, and this took a sixth off
/// its time.
fn prefetch_rows(p: &Conv2dParams, plan: &BlockPlan, input: &[f32], ci: usize) {
    let (cin, h, w, pad) = (p.in_channels, p.in_h, p.in_w, p.padding);
    for slot in &plan.slots {
        let first = (slot.first_row * TILE).saturating_sub(pad).min(h);
        let end = (slot.first_row * TILE + slot.rows).saturating_sub(pad).min(h);
        prefetch(&input[(slot.image * cin + ci) * h * w..][first * w..end * w]);
    }
}

/// Hints the cache to fetch every line of `values`.
fn prefetch(values: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in values.chunks(64 / std::mem::size_of::<f32>()) {
        // SAFETY: a prefetch only hints the cache, and the address lies in `values`.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line.as_ptr().cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = values;
}

/// The vector operations the transforms need, for one instruction set.
/// The transforms below are written once over this trait and compiled
/// twice, inside an AVX-512 and an AVX2 function, where every call inlines.
///
/// # Safety
/// Every method needs its instruction set; call them only from functions
/// compiled with it.
#[cfg(target_arch = "x86_64")]
unsafe trait Simd {
    type V: Copy;
    /// Tiles per vector.
    const LANES: usize;
    unsafe fn splat(x: f32) -> Self::V;
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    /// `a * b + c`.
    unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `c - a * b`.
    unsafe fn fnmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    /// `base[index[k]]` for each lane `k`.
    unsafe fn gather(index: *const i32, base: *const f32) -> Self::V;
    /// `gather(index, base.add(x))` for `x` in 0..4, where each four lanes
    /// are a run (`index[4r + k] == index[4r] + 4k`, see `runs_of_four`):
    /// each run's 16 values are loaded whole and transposed from
    /// tile-major to one vector per `x`.
    unsafe fn runs4(index: *const i32, base: *const f32) -> [Self::V; 4];
    /// Four vectors `a, b, c, d` of `LANES` tiles' values into
    /// `a0 b0 c0 d0 a1 b1 c1 d1 ...`, four vectors long.
    unsafe fn interleave4(v: [Self::V; 4]) -> [Self::V; 4];
}

/// The `Simd` methods that are one intrinsic each, given their names.
#[cfg(target_arch = "x86_64")]
macro_rules! elementwise_ops {
    ($splat:ident, $add:ident, $sub:ident, $mul:ident, $fmadd:ident, $fnmadd:ident, $load:ident, $store:ident) => {
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self::V {
            std::arch::x86_64::$splat(x)
        }
        #[inline(always)]
        unsafe fn add(a: Self::V, b: Self::V) -> Self::V {
            std::arch::x86_64::$add(a, b)
        }
        #[inline(always)]
        unsafe fn sub(a: Self::V, b: Self::V) -> Self::V {
            std::arch::x86_64::$sub(a, b)
        }
        #[inline(always)]
        unsafe fn mul(a: Self::V, b: Self::V) -> Self::V {
            std::arch::x86_64::$mul(a, b)
        }
        #[inline(always)]
        unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
            std::arch::x86_64::$fmadd(a, b, c)
        }
        #[inline(always)]
        unsafe fn fnmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
            std::arch::x86_64::$fnmadd(a, b, c)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self::V {
            std::arch::x86_64::$load(p)
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: Self::V) {
            std::arch::x86_64::$store(p, v)
        }
    };
}

#[cfg(target_arch = "x86_64")]
struct Avx512;

#[cfg(target_arch = "x86_64")]
unsafe impl Simd for Avx512 {
    type V = std::arch::x86_64::__m512;
    const LANES: usize = 16;
    elementwise_ops!(_mm512_set1_ps, _mm512_add_ps, _mm512_sub_ps, _mm512_mul_ps, _mm512_fmadd_ps, _mm512_fnmadd_ps, _mm512_loadu_ps, _mm512_storeu_ps);
    #[inline(always)]
    unsafe fn gather(index: *const i32, base: *const f32) -> Self::V {
        use std::arch::x86_64::*;
        _mm512_i32gather_ps::<4>(_mm512_loadu_si512(index.cast()), base)
    }
    #[inline(always)]
    unsafe fn runs4(index: *const i32, base: *const f32) -> [Self::V; 4] {
        use std::arch::x86_64::*;
        // Each run of four tiles is one vector, a tile's four values in
        // each 128-bit lane.
        let [a, b, c, d] = array_of(|r| _mm512_loadu_ps(base.offset(*index.add(4 * r) as isize)));
        // A 4x4 transpose in each 128-bit lane: vector x holds, in lane t,
        // value x of tile t of the four runs...
        let (ab_lo, ab_hi) = (_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
        let (cd_lo, cd_hi) = (_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
        let pairs = |x: __m512, y: __m512, hi: bool| {
            let (x, y) = (_mm512_castps_pd(x), _mm512_castps_pd(y));
            _mm512_castpd_ps(if hi { _mm512_unpackhi_pd(x, y) } else { _mm512_unpacklo_pd(x, y) })
        };
        let by_x = [pairs(ab_lo, cd_lo, false), pairs(ab_lo, cd_lo, true), pairs(ab_hi, cd_hi, false), pairs(ab_hi, cd_hi, true)];
        // ...which one permute puts in tile order (run r's tile t in 4r + t).
        let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        array_of(|i| _mm512_permutexvar_ps(order, by_x[i]))
    }
    #[inline(always)]
    unsafe fn interleave4(v: [Self::V; 4]) -> [Self::V; 4] {
        use std::arch::x86_64::*;
        let [a, b, c, d] = v;
        let (ab_lo, ab_hi) = (_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
        let (cd_lo, cd_hi) = (_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
        let pairs = |x: __m512, y: __m512, hi: bool| {
            let (x, y) = (_mm512_castps_pd(x), _mm512_castps_pd(y));
            _mm512_castpd_ps(if hi { _mm512_unpackhi_pd(x, y) } else { _mm512_unpacklo_pd(x, y) })
        };
        // In each 128-bit lane k, q_i holds tile 4k + i's four values.
        let (q0, q1) = (pairs(ab_lo, cd_lo, false), pairs(ab_lo, cd_lo, true));
        let (q2, q3) = (pairs(ab_hi, cd_hi, false), pairs(ab_hi, cd_hi, true));
        // A 4x4 transpose of 128-bit lanes puts tiles 4k..4k+3 in vector k.
        let t0 = _mm512_shuffle_f32x4::<0b01_00_01_00>(q0, q1);
        let t1 = _mm512_shuffle_f32x4::<0b01_00_01_00>(q2, q3);
        let t2 = _mm512_shuffle_f32x4::<0b11_10_11_10>(q0, q1);
        let t3 = _mm512_shuffle_f32x4::<0b11_10_11_10>(q2, q3);
        [
            _mm512_shuffle_f32x4::<0b10_00_10_00>(t0, t1),
            _mm512_shuffle_f32x4::<0b11_01_11_01>(t0, t1),
            _mm512_shuffle_f32x4::<0b10_00_10_00>(t2, t3),
            _mm512_shuffle_f32x4::<0b11_01_11_01>(t2, t3),
        ]
    }
}

#[cfg(target_arch = "x86_64")]
struct Avx2;

#[cfg(target_arch = "x86_64")]
unsafe impl Simd for Avx2 {
    type V = std::arch::x86_64::__m256;
    const LANES: usize = 8;
    elementwise_ops!(_mm256_set1_ps, _mm256_add_ps, _mm256_sub_ps, _mm256_mul_ps, _mm256_fmadd_ps, _mm256_fnmadd_ps, _mm256_loadu_ps, _mm256_storeu_ps);
    #[inline(always)]
    unsafe fn gather(index: *const i32, base: *const f32) -> Self::V {
        use std::arch::x86_64::*;
        _mm256_i32gather_ps::<4>(base, _mm256_loadu_si256(index.cast()))
    }
    #[inline(always)]
    unsafe fn runs4(index: *const i32, base: *const f32) -> [Self::V; 4] {
        use std::arch::x86_64::*;
        let (lo, hi) = (base.offset(*index as isize), base.offset(*index.add(4) as isize));
        // Each 128-bit lane holds one tile's four values: tiles 0 and 1 in
        // `a`, 2 and 3 in `b` (the first run), and so on.
        let [a, b, c, d] = array_of(|i| _mm256_loadu_ps([lo, lo.add(8), hi, hi.add(8)][i]));
        // A 4x4 transpose in each 128-bit lane: vector x holds tiles
        // 0, 2, 4, 6 in its low lane and 1, 3, 5, 7 in its high one...
        let (ab_lo, ab_hi) = (_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
        let (cd_lo, cd_hi) = (_mm256_unpacklo_ps(c, d), _mm256_unpackhi_ps(c, d));
        let pairs = |x: __m256, y: __m256, hi: bool| {
            let (x, y) = (_mm256_castps_pd(x), _mm256_castps_pd(y));
            _mm256_castpd_ps(if hi { _mm256_unpackhi_pd(x, y) } else { _mm256_unpacklo_pd(x, y) })
        };
        let by_x = [pairs(ab_lo, cd_lo, false), pairs(ab_lo, cd_lo, true), pairs(ab_hi, cd_hi, false), pairs(ab_hi, cd_hi, true)];
        // ...which one permute puts in tile order.
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        array_of(|i| _mm256_permutevar8x32_ps(by_x[i], order))
    }
    #[inline(always)]
    unsafe fn interleave4(v: [Self::V; 4]) -> [Self::V; 4] {
        use std::arch::x86_64::*;
        let [a, b, c, d] = v;
        let (ab_lo, ab_hi) = (_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
        let (cd_lo, cd_hi) = (_mm256_unpacklo_ps(c, d), _mm256_unpackhi_ps(c, d));
        let pairs = |x: __m256, y: __m256, hi: bool| {
            let (x, y) = (_mm256_castps_pd(x), _mm256_castps_pd(y));
            _mm256_castpd_ps(if hi { _mm256_unpackhi_pd(x, y) } else { _mm256_unpacklo_pd(x, y) })
        };
        // In each 128-bit lane k, q_i holds tile 4k + i's four values.
        let (q0, q1) = (pairs(ab_lo, cd_lo, false), pairs(ab_lo, cd_lo, true));
        let (q2, q3) = (pairs(ab_hi, cd_hi, false), pairs(ab_hi, cd_hi, true));
        // Tiles 0 and 1, 2 and 3 from the low lanes; 4 to 7 from the high.
        [
            _mm256_permute2f128_ps::<0x20>(q0, q1),
            _mm256_permute2f128_ps::<0x20>(q2, q3),
            _mm256_permute2f128_ps::<0x31>(q0, q1),
            _mm256_permute2f128_ps::<0x31>(q2, q3),
        ]
    }
}

/// `Bᵀ d` over six rows (or columns) of patch values.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn bt6<S: Simd>(d: [S::V; 6]) -> [S::V; 6] {
    let (two, four, five) = (S::splat(2.0), S::splat(4.0), S::splat(5.0));
    let [d0, d1, d2, d3, d4, d5] = d;
    let a = S::fnmadd(four, d2, d4); // d4 - 4 d2
    let b = S::fnmadd(four, d1, d3); // d3 - 4 d1
    let c = S::sub(d4, d2);
    let e = S::mul(two, S::sub(d3, d1));
    [
        S::fmadd(four, d0, S::fnmadd(five, d2, d4)),
        S::add(a, b),
        S::sub(a, b),
        S::add(c, e),
        S::sub(c, e),
        S::fmadd(four, d1, S::fnmadd(five, d3, d5)),
    ]
}

/// `Aᵀ m` over six rows (or columns) of a transformed tile.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn at6<S: Simd>(m: [S::V; 6]) -> [S::V; 4] {
    let [m0, m1, m2, m3, m4, m5] = m;
    let (s12, d12) = (S::add(m1, m2), S::sub(m1, m2));
    let (s34, d34) = (S::add(m3, m4), S::sub(m3, m4));
    [
        S::add(S::add(m0, s12), s34),
        S::fmadd(S::splat(2.0), d34, d12),
        S::fmadd(S::splat(4.0), s34, s12),
        S::add(S::fmadd(S::splat(8.0), d34, d12), m5),
    ]
}

/// `V = Bᵀ d B` of the block's patches in one band, a vector of tiles at
/// a time, into `v[e * ld + col + tile]`, for the vectors that hold any of
/// the first `tiles` tiles.
///
/// # Safety
/// The CPU has `S`'s instruction set; every `offsets[t] + 5 * wb + 5 +
/// RUN_SLACK` is inside `band`; `offsets` holds `BLOCK` values and `runs`
/// is `runs_of_four(offsets)`; `v` holds `36 * ld` values and
/// `col + BLOCK <= ld`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn transform_input<S: Simd>(band: &[f32], wb: usize, offsets: &[i32], runs: u32, tiles: usize, v: &mut [f32], ld: usize, col: usize) {
    debug_assert!(offsets.len() == BLOCK && v.len() >= E * ld && col + BLOCK <= ld && runs == runs_of_four(offsets) && tiles <= BLOCK);
    debug_assert!(offsets.iter().all(|&o| o as usize + (PATCH - 1) * (wb + 1) + RUN_SLACK < band.len()));
    for group in (0..tiles).step_by(S::LANES) {
        let index = offsets.as_ptr().add(group);
        let in_runs = all_runs::<S>(runs, group);
        // Rows first (B along x), then columns (Bᵀ along y).
        let t: [[S::V; PATCH]; PATCH] = array_of(|k| {
            let base = band.as_ptr().add(k * wb);
            let d = if in_runs {
                let ([d0, d1, d2, d3], [d4, d5, _, _]) = (S::runs4(index, base), S::runs4(index, base.add(4)));
                [d0, d1, d2, d3, d4, d5]
            } else {
                array_of(|x| S::gather(index, base.add(x)))
            };
            bt6::<S>(d)
        });
        for j in 0..PATCH {
            let column = bt6::<S>(array_of(|k| t[k][j]));
            for (i, &value) in column.iter().enumerate() {
                S::store(v.as_mut_ptr().add((i * PATCH + j) * ld + col + group), value);
            }
        }
    }
}

/// Whether the lanes of the vector at tile `group` are all in runs.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn all_runs<S: Simd>(runs: u32, group: usize) -> bool {
    let want = ((1u32 << (S::LANES / 4)) - 1) << (group / 4);
    runs & want == want
}

/// `Y = Aᵀ M A` of one output channel's tiles, from
/// `m[e * ld + at + tile]`, as four output rows of `4 * BLOCK` values,
/// tile after tile: the vectors of tiles that hold any of the first `tiles`.
///
/// # Safety
/// The CPU has `S`'s instruction set; `m` holds `36 * ld` values and
/// `at + BLOCK <= ld`; `rows` holds `16 * BLOCK`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn transform_output<S: Simd>(m: &[f32], ld: usize, at: usize, tiles: usize, rows: &mut [f32]) {
    debug_assert!(m.len() >= E * ld && at + BLOCK <= ld && rows.len() >= TILE * TILE * BLOCK && tiles <= BLOCK);
    for group in (0..tiles).step_by(S::LANES) {
        let load = |e: usize| S::load(m.as_ptr().add(e * ld + at + group));
        let s: [[S::V; TILE]; PATCH] = array_of(|i| at6::<S>(array_of(|j| load(i * PATCH + j))));
        let columns: [[S::V; TILE]; TILE] = array_of(|j| at6::<S>(array_of(|i| s[i][j])));
        for dy in 0..TILE {
            let out = S::interleave4(array_of(|j| columns[j][dy]));
            let dst = rows.as_mut_ptr().add(dy * TILE * BLOCK + group * TILE);
            for (q, &value) in out.iter().enumerate() {
                S::store(dst.add(S::LANES * q), value);
            }
        }
    }
}

/// `A d`: four values of an output gradient tile's row (or column) to
/// its six transformed positions, the transpose of `at6`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn a6<S: Simd>(y: [S::V; 4]) -> [S::V; 6] {
    let four = S::splat(4.0);
    let [y0, y1, y2, y3] = y;
    let (even, odd) = (S::add(y0, y2), S::add(y1, y3));
    let even4 = S::fmadd(four, y2, y0); // y0 + 4 y2
    let odd4 = S::mul(S::splat(2.0), S::fmadd(four, y3, y1)); // 2 y1 + 8 y3
    [y0, S::add(even, odd), S::sub(even, odd), S::add(even4, odd4), S::sub(even4, odd4), y3]
}

/// `A dY Aᵀ` of the block's 4x4 output gradient tiles in one band, a
/// vector of tiles at a time, into `w[e * ld + col + tile]`.
///
/// # Safety
/// The CPU has `S`'s instruction set; every `offsets[t] + 3 * wg + 3 +
/// RUN_SLACK` is inside `band`; `offsets` holds `BLOCK` values and `runs`
/// is `runs_of_four(offsets)`; `w` holds `36 * ld` values and
/// `col + BLOCK <= ld`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn transform_grad<S: Simd>(band: &[f32], wg: usize, offsets: &[i32], runs: u32, w: &mut [f32], ld: usize, col: usize) {
    debug_assert!(offsets.len() == BLOCK && w.len() >= E * ld && col + BLOCK <= ld && runs == runs_of_four(offsets));
    debug_assert!(offsets.iter().all(|&o| o as usize + (TILE - 1) * (wg + 1) + RUN_SLACK < band.len()));
    for group in (0..BLOCK).step_by(S::LANES) {
        let index = offsets.as_ptr().add(group);
        let in_runs = all_runs::<S>(runs, group);
        // Rows first (along x), then columns (along y), as `V`.
        let t: [[S::V; PATCH]; TILE] = array_of(|k| {
            let base = band.as_ptr().add(k * wg);
            a6::<S>(if in_runs { S::runs4(index, base) } else { array_of(|x| S::gather(index, base.add(x))) })
        });
        for j in 0..PATCH {
            let column = a6::<S>(array_of(|k| t[k][j]));
            for (i, &value) in column.iter().enumerate() {
                S::store(w.as_mut_ptr().add((i * PATCH + j) * ld + col + group), value);
            }
        }
    }
}

/// The transforms compiled for one instruction set.
#[cfg(target_arch = "x86_64")]
macro_rules! transforms_for {
    ($isa:ty, $feature:literal, $input:ident, $output:ident, $grad:ident) => {
        /// `transform_input` for this instruction set.
        ///
        /// # Safety
        /// As `transform_input`.
        #[target_feature(enable = $feature)]
        unsafe fn $input(band: &[f32], wb: usize, offsets: &[i32], runs: u32, tiles: usize, v: &mut [f32], ld: usize, col: usize) {
            transform_input::<$isa>(band, wb, offsets, runs, tiles, v, ld, col)
        }

        /// `transform_output` for this instruction set.
        ///
        /// # Safety
        /// As `transform_output`.
        #[target_feature(enable = $feature)]
        unsafe fn $output(m: &[f32], ld: usize, at: usize, tiles: usize, rows: &mut [f32]) {
            transform_output::<$isa>(m, ld, at, tiles, rows)
        }

        /// `transform_grad` for this instruction set.
        ///
        /// # Safety
        /// As `transform_grad`.
        #[target_feature(enable = $feature)]
        unsafe fn $grad(band: &[f32], wg: usize, offsets: &[i32], runs: u32, w: &mut [f32], ld: usize, col: usize) {
            transform_grad::<$isa>(band, wg, offsets, runs, w, ld, col)
        }
    };
}

#[cfg(target_arch = "x86_64")]
transforms_for!(Avx512, "avx512f", transform_input_avx512, transform_output_avx512, transform_grad_avx512);
#[cfg(target_arch = "x86_64")]
transforms_for!(Avx2, "avx2,fma", transform_input_avx2, transform_output_avx2, transform_grad_avx2);

/// grad_out [N,Cout,OH,OW], weight -> grad_input [N,Cin,H,W]: the forward
/// convolution with the flipped, channel-swapped filters at padding
/// `2 - p`. The caller has checked `applies_backward_input(p)`.
pub fn conv2d_backward_input(p: &Conv2dParams, grad_out: &[f32], weight: &[f32], grad_in: &mut [MaybeUninit<f32>]) {
    assert!(applies_backward_input(p), "the Winograd input gradient needs padding <= 2");
    let flipped = conv_direct::flip_filters(weight, p.out_channels, p.in_channels, 9);
    conv2d(&conv_direct::backward_as_forward(p), grad_out, &flipped, None, grad_in);
}

/// input [N,Cin,H,W], grad_out [N,Cout,OH,OW] -> grad_weight [Cout,Cin,3,3].
/// The caller has checked `applies_backward_weight(p)`.
///
/// `Y = Aᵀ [U ⊙ V] A` is linear in `U = G g Gᵀ`, so the gradient of a
/// filter is `Gᵀ S G` with `S = Σ over tiles of (A dY Aᵀ) ⊙ V`: the
/// output gradient's tiles go through `A` (the transpose of the output
/// transform), the input's through `Bᵀ d B` as in the forward pass, and
/// for each of the 36 positions `S[e] = W[e] V[e]ᵀ` is a product over
/// tiles: 4x fewer multiplies than the direct kernel's sum over pixels.
/// Each thread sums its blocks into its own `S`; `Gᵀ S G` runs once, in
/// f64, at the end.
pub fn conv2d_backward_weight(p: &Conv2dParams, input: &[f32], grad_out: &[f32], grad_weight: &mut [f32]) {
    assert!(applies_backward_weight(p), "Winograd F(4x4, 3x3) needs a 3x3 stride-1 convolution with enough channels, and AVX2 or AVX-512");
    backward_weight(kernels().expect("checked by applies"), p, input, grad_out, grad_weight);
}

/// `S`'s layout: `[36][cout_pad][cin_pad]`, output channels padded to the
/// register kernel's channels and input channels to its positions (the
/// padding's sums are never read).
#[derive(Clone, Copy)]
struct SumShape {
    cin_pad: usize,
    cout_pad: usize,
}

/// `conv2d_backward_weight` for any 3x3 stride-1 shape, with `kernels`.
fn backward_weight(kernels: Kernels, p: &Conv2dParams, input: &[f32], grad_out: &[f32], dw: &mut [f32]) {
    assert!(p.kernel_h == 3 && p.kernel_w == 3 && p.stride == 1, "Winograd F(4x4, 3x3) needs a 3x3 stride-1 convolution");
    let (cin, cout) = (p.in_channels, p.out_channels);
    assert_eq!(input.len(), p.batch * cin * p.in_h * p.in_w);
    assert_eq!(grad_out.len(), p.batch * cout * p.out_h() * p.out_w());
    assert_eq!(dw.len(), cout * cin * 9);
    let tiling = Tiling::new(p);
    let shape = SumShape { cin_pad: cin.next_multiple_of(kernels.gemm.positions), cout_pad: cout.next_multiple_of(kernels.gemm.channels) };
    let blocks = tiling.total.div_ceil(BLOCK);
    // One run of blocks per thread, each summed into its own partial.
    let partial = |run: std::ops::Range<usize>| {
        let (mut sums, mut scratch) = (vec![0.0f32; E * shape.cout_pad * shape.cin_pad], Kept::<GradScratch>::take());
        for b in run {
            let plan = BlockPlan::new(&tiling, b * BLOCK);
            grad_block(p, &tiling, &plan, kernels, input, grad_out, shape, &mut sums, &mut scratch);
        }
        sums
    };
    let sums = sum_in_runs(blocks, partial);
    let Some(sums) = sums else {
        dw.fill(0.0);
        return;
    };
    // Gᵀ applied to six values.
    let gt_rows = |[s0, s1, s2, s3, s4, s5]: [f64; 6]| {
        let (sum12, sum34) = (s1 + s2, s3 + s4);
        [s0 * 0.25 - sum12 * SIXTH + sum34 * TWENTY_FOURTH, (s2 - s1) * SIXTH + (s3 - s4) * TWELFTH, (sum34 - sum12) * SIXTH + s5]
    };
    // Per output channel, each of the 36 sums is a contiguous run over the
    // input channels, so both passes of `Gᵀ` run along those runs (and
    // vectorize); taking one filter's 36 sums at a time instead meant 36
    // reads a plane apart per filter, and took 1.6% of a tiny training step.
    dw.par_chunks_mut(cin * 9).enumerate().for_each_init(Vec::new, |rows: &mut Vec<f64>, (co, filters)| {
        let sums_of = |e: usize| &sums[(e * shape.cout_pad + co) * shape.cin_pad..][..cin];
        // `rows[(i * 3 + b) * cin + ci]`: `Gᵀ` applied to row `i` of the sums.
        let rows = sized(rows, PATCH * 3 * cin);
        for i in 0..PATCH {
            let row: [&[f32]; PATCH] = std::array::from_fn(|j| sums_of(i * PATCH + j));
            let (r0, rest) = rows[i * 3 * cin..][..3 * cin].split_at_mut(cin);
            let (r1, r2) = rest.split_at_mut(cin);
            for ci in 0..cin {
                [r0[ci], r1[ci], r2[ci]] = gt_rows(std::array::from_fn(|j| row[j][ci] as f64));
            }
        }
        for b in 0..3 {
            for ci in 0..cin {
                let column = gt_rows(std::array::from_fn(|i| rows[(i * 3 + b) * cin + ci]));
                for (a, &value) in column.iter().enumerate() {
                    filters[ci * 9 + a * 3 + b] = value as f32;
                }
            }
        }
    });
}

/// Per-thread buffers of the weight gradient.
#[derive(Default)]
struct GradScratch {
    band: Vec<f32>,
    staged: Vec<f32>,
    v: Vec<f32>,
    grad_band: Vec<f32>,
    w: Vec<f32>,
    /// `V[e]` and `W[e]` tile-major, as the register kernel reads them.
    v_tiles: Vec<f32>,
    w_tiles: Vec<f32>,
}

/// Where a block's output gradient tiles sit in a band of their own: each
/// slot's tile rows, `4 * cols` wide, zero past the map's edges.
struct GradBand {
    /// Offset of each slot's rows in the band.
    bases: Vec<usize>,
    len: usize,
    /// Offset of each tile's 4x4 patch (`BLOCK` of them; lanes past the
    /// block's last tile repeat tile 0's, and their sums are never taken).
    offsets: Vec<i32>,
    /// `runs_of_four(offsets)`.
    runs: u32,
}

impl GradBand {
    fn new(tiling: &Tiling, plan: &BlockPlan) -> GradBand {
        let wg = TILE * tiling.cols;
        let mut bases = Vec::with_capacity(plan.slots.len());
        let mut len = 0;
        for slot in &plan.slots {
            bases.push(len);
            len += (slot.rows - (PATCH - TILE)) * wg;
        }
        let mut offsets = vec![0i32; BLOCK];
        for s in &plan.segments {
            let first_row = plan.slots[s.slot].first_row;
            for k in 0..s.len {
                let at = bases[s.slot] + (s.ty - first_row) * TILE * wg + (s.tx + k) * TILE;
                offsets[s.at + k] = i32::try_from(at).expect("a band fits in i32");
            }
        }
        for k in plan.tiles()..BLOCK {
            offsets[k] = offsets[0];
        }
        let runs = runs_of_four(&offsets);
        GradBand { bases, len, offsets, runs }
    }
}

/// One block's share of `S`, added into `sums`.
#[allow(clippy::too_many_arguments)]
fn grad_block(p: &Conv2dParams, tiling: &Tiling, plan: &BlockPlan, kernels: Kernels, input: &[f32], grad_out: &[f32], shape: SumShape, sums: &mut [f32], scratch: &mut GradScratch) {
    let (cin, cout) = (p.in_channels, p.out_channels);
    let (oh, ow) = (p.out_h(), p.out_w());
    let kernel = kernels.gemm;
    let r_block = kernel.channels;
    let tiles = plan.tiles();

    // 1. V, as in the forward pass.
    let v_stride = plane_stride(cin * BLOCK);
    let v = sized(&mut scratch.v, E * v_stride);
    transform_block_input(p, tiling, plan, kernels, input, &Folded::default(), &mut scratch.band, &mut scratch.staged, v, v_stride);

    // 2. W = A dY Aᵀ of each output channel's tiles, from a band that is
    // zero past the map's edges (rows and columns never written).
    let layout = GradBand::new(tiling, plan);
    let wg = TILE * tiling.cols;
    let band = sized(&mut scratch.grad_band, layout.len + RUN_SLACK);
    band.fill(0.0);
    let w_stride = plane_stride(cout * BLOCK);
    let w = sized(&mut scratch.w, E * w_stride);
    for co in 0..cout {
        for (slot, &base) in plan.slots.iter().zip(&layout.bases) {
            let plane = &grad_out[(slot.image * cout + co) * oh * ow..][..oh * ow];
            // The next channel's rows, as in `prefetch_rows`.
            if co + 1 < cout {
                let rows = (slot.first_row * TILE).min(oh)..(slot.first_row * TILE + slot.rows - (PATCH - TILE)).min(oh);
                prefetch(&grad_out[(slot.image * cout + co + 1) * oh * ow..][rows.start * ow..rows.end * ow]);
            }
            for r in 0..slot.rows - (PATCH - TILE) {
                let y = slot.first_row * TILE + r;
                if y >= oh {
                    break;
                }
                copy_row(&mut band[base + r * wg..][..ow], &plane[y * ow..][..ow]);
            }
        }
        // SAFETY: `kernels` are for this CPU; every offset plus a tile's
        // reach stays inside the band, and `w` holds 36 planes,
        // `w_stride` apart, of `cout * BLOCK`.
        unsafe { (kernels.grad)(band, wg, &layout.offsets, layout.runs, w, w_stride, co * BLOCK) };
    }

    // 3. S[e] += W[e] V[e]ᵀ, a sum over the block's tiles. The register
    // kernel wants the summed index outermost: V[e] as [tile][Cin] (its
    // positions) and W[e] as [channel block][tile][R] (its weights).
    let v_tiles = sized(&mut scratch.v_tiles, tiles * shape.cin_pad);
    let w_tiles = sized(&mut scratch.w_tiles, shape.cout_pad * tiles);
    for e in 0..E {
        transpose(&v[e * v_stride..][..cin * BLOCK], BLOCK, cin, tiles, v_tiles, shape.cin_pad);
        let we = &w[e * w_stride..][..cout * BLOCK];
        for (cb, block) in w_tiles.chunks_exact_mut(tiles * r_block).enumerate() {
            let channels = r_block.min(cout - cb * r_block);
            transpose(&we[cb * r_block * BLOCK..], BLOCK, channels, tiles, block, r_block);
        }
        let se = &mut sums[e * shape.cout_pad * shape.cin_pad..][..shape.cout_pad * shape.cin_pad];
        for (weights, out) in w_tiles.chunks_exact(tiles * r_block).zip(se.chunks_exact_mut(r_block * shape.cin_pad)) {
            for start in (0..shape.cin_pad).step_by(kernel.positions) {
                // SAFETY: as the kernel's contract asks: `v_tiles` holds
                // `tiles` rows of `cin_pad`, `weights` `tiles * R` values,
                // `out` R rows of `cin_pad`, and `start + P <= cin_pad`.
                unsafe { (kernel.run)(v_tiles, shape.cin_pad, &[0], weights, tiles, true, start, out, shape.cin_pad) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::conv::tests::{conv3x3_case, naive_backward, naive_forward, to32, unwritten};
    use proptest::prelude::*;

    /// Any 3x3 stride-1 shape, including the ones `applies` leaves to the
    /// direct kernel: few channels, channel counts off the 8-channel block,
    /// maps that end mid-tile, batches whose blocks straddle images, and
    /// rows of 4 tiles and more, whose groups of four are runs (some of
    /// them broken by the end of a row).
    fn case() -> impl Strategy<Value = (Conv2dParams, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>)> {
        let widths = prop_oneof![1usize..22, 28usize..42];
        conv3x3_case((1usize..4, prop::sample::select(vec![1usize, 3, 8, 17, 40]), prop::sample::select(vec![1usize, 5, 8, 9, 20]), 1usize..22, widths, 0usize..3))
    }

    /// The kernels of every instruction set this CPU has, saying which
    /// are skipped.
    fn all_kernels() -> Vec<Kernels> {
        let found: Vec<Kernels> = conv_direct::gemm_kernels().into_iter().map(Kernels::new).collect();
        for isa in ["avx2", "avx512"] {
            if !found.iter().any(|k| k.gemm.name == isa) {
                eprintln!("SKIPPED: this CPU lacks {isa}, so Winograd F(4x4, 3x3) on {isa} is not tested here");
            }
        }
        found
    }

    /// F(4x4)'s constants cost f32 a few bits more than F(2x2)'s: within
    /// 5e-5 of the sum of |terms| (F(2x2) is held to 4e-5).
    fn close(got: &[f32], want: &[f64], mag: &[f64]) -> Result<(), TestCaseError> {
        prop_assert_eq!(got.len(), want.len());
        for (i, ((&g, &w), &m)) in got.iter().zip(want).zip(mag).enumerate() {
            prop_assert!((g as f64 - w).abs() <= 5e-5 * (m + 1.0), "at {}: {} vs {} (mag {})", i, g, w, m);
        }
        Ok(())
    }

    /// The forward pass, which must give the same bits with the filters
    /// transformed ahead of time (as `prepare_weights` does).
    fn run(kernels: Kernels, p: &Conv2dParams, x: &[f32], w: &[f32], bias: Option<&[f32]>, folded: &Folded, mut moments: Option<&mut [f64]>) -> Vec<f32> {
        let mut out = vec![f32::NAN; p.batch * p.out_channels * p.out_h() * p.out_w()];
        forward(kernels, p, x, w, None, bias, folded, moments.as_deref_mut(), unwritten(&mut out));
        let u = transform_weights(p.out_channels, p.in_channels, w, kernels.gemm.channels);
        let mut again = vec![f32::NAN; out.len()];
        let mut moments_again = moments.as_ref().map(|m| vec![f64::NAN; m.len()]);
        forward(kernels, p, x, w, Some(&u), bias, folded, moments_again.as_deref_mut(), unwritten(&mut again));
        assert!(out.iter().zip(&again).all(|(a, b)| a.to_bits() == b.to_bits()), "prepared filters changed the output");
        assert_eq!(moments.as_deref(), moments_again.as_deref(), "prepared filters changed the moments");
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn forward_matches_naive((p, x, w, b, _g) in case(), use_bias in any::<bool>()) {
            let bias = use_bias.then_some(&b[..]);
            let (want, mag) = naive_forward(&p, &x, &w, bias);
            let b32 = to32(&b);
            for kernels in all_kernels() {
                close(&run(kernels, &p, &to32(&x), &to32(&w), use_bias.then_some(&b32[..]), &Folded::default(), None), &want, &mag)?;
            }
        }

        /// The input gradient through this path's forward pass, as
        /// `conv2d_backward_input` runs it.
        #[test]
        fn backward_input_matches_naive((p, x, w, _b, g) in case()) {
            prop_assume!(p.padding <= 2);
            let [(want, mag), _] = naive_backward(&p, &x, &w, &g);
            let q = conv_direct::backward_as_forward(&p);
            let flipped = conv_direct::flip_filters(&to32(&w), p.out_channels, p.in_channels, 9);
            for kernels in all_kernels() {
                close(&run(kernels, &q, &to32(&g), &flipped, None, &Folded::default(), None), &want, &mag)?;
            }
        }

        /// The weight gradient: transformed tiles summed, then `Gᵀ S G`.
        #[test]
        fn backward_weight_matches_naive((p, x, w, _b, g) in case()) {
            let [_, (want, mag)] = naive_backward(&p, &x, &w, &g);
            for kernels in all_kernels() {
                let mut got = vec![f32::NAN; want.len()];
                backward_weight(kernels, &p, &to32(&x), &to32(&g), &mut got);
                close(&got, &want, &mag)?;
            }
        }

        /// The input affine and SiLU in the band copy, the residual and the
        /// moments in the output writes.
        #[test]
        fn fused_matches_naive((p, x, w, b, g) in case(), scales in prop::collection::vec(-1.5f64..1.5, 24), silu_on in any::<bool>()) {
            let planes = p.batch * p.in_channels;
            let (scale, shift): (Vec<f64>, Vec<f64>) = (0..planes).map(|i| (scales[i % 24], scales[(i * 7 + 3) % 24])).unzip();
            let hw = p.in_h * p.in_w;
            let transformed: Vec<f64> = x.iter().enumerate().map(|(i, &v)| {
                let y = v * scale[i / hw] + shift[i / hw];
                if silu_on { y / (1.0 + (-y).exp()) } else { y }
            }).collect();
            let (conv, mag) = naive_forward(&p, &transformed, &w, Some(&b));
            let want: Vec<f64> = conv.iter().zip(&g).map(|(c, r)| c + r).collect();
            let (scale32, shift32, residual) = (to32(&scale), to32(&shift), to32(&g));
            let folded = Folded { input_affine: Some((&scale32, &shift32)), input_silu: silu_on, residual: Some(&residual) };
            let mag: Vec<f64> = mag.iter().zip(&g).map(|(m, r)| m + r.abs()).collect();
            for kernels in all_kernels() {
                let mut moments = vec![f64::NAN; 2 * p.batch * p.out_channels];
                let got = run(kernels, &p, &to32(&x), &to32(&w), Some(&to32(&b)), &folded, Some(&mut moments));
                close(&got, &want, &mag)?;
                let ohw = p.out_h() * p.out_w();
                for (plane, values) in got.chunks_exact(ohw).enumerate() {
                    let sum: f64 = values.iter().map(|&v| v as f64).sum();
                    let squares: f64 = values.iter().map(|&v| (v as f64) * (v as f64)).sum();
                    prop_assert!((moments[2 * plane] - sum).abs() <= 1e-9 * (1.0 + squares), "sum of plane {}", plane);
                    prop_assert!((moments[2 * plane + 1] - squares).abs() <= 1e-9 * (1.0 + squares), "squares of plane {}", plane);
                }
            }
        }
    }

    /// `interleave4` on lanes numbered 0.. (plus 100 * vector), for `S`.
    ///
    /// # Safety
    /// The CPU has `S`'s instruction set.
    #[inline(always)]
    unsafe fn interleaved<S: Simd>() -> Vec<f32> {
        let lanes: Vec<f32> = (0..S::LANES).map(|t| t as f32).collect();
        let v: [S::V; 4] = std::array::from_fn(|j| S::add(S::load(lanes.as_ptr()), S::splat(100.0 * j as f32)));
        let mut got = vec![0.0f32; 4 * S::LANES];
        for (q, &value) in S::interleave4(v).iter().enumerate() {
            S::store(got.as_mut_ptr().add(S::LANES * q), value);
        }
        got
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn interleaved_avx512() -> Vec<f32> {
        interleaved::<Avx512>()
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn interleaved_avx2() -> Vec<f32> {
        interleaved::<Avx2>()
    }

    #[test]
    fn interleave4_puts_each_tiles_values_together() {
        for kernels in all_kernels() {
            // SAFETY: `all_kernels` lists only instruction sets this CPU has.
            let (got, lanes) = match kernels.gemm.name {
                "avx512" => (unsafe { interleaved_avx512() }, 16),
                _ => (unsafe { interleaved_avx2() }, 8),
            };
            let want: Vec<f32> = (0..lanes).flat_map(|t| (0..4).map(move |j| t as f32 + 100.0 * j as f32)).collect();
            assert_eq!(got, want, "{}", kernels.gemm.name);
        }
    }

    /// `runs4` against `gather` on a band of distinct values, for `S`:
    /// runs of four tiles wherever they sit in the band.
    ///
    /// # Safety
    /// The CPU has `S`'s instruction set.
    #[inline(always)]
    unsafe fn runs_against_gathers<S: Simd>() {
        let band: Vec<f32> = (0..400).map(|i| i as f32).collect();
        for starts in [[0, 16, 32, 48], [3, 200, 21, 90], [117, 41, 41, 300], [300, 5, 250, 100]] {
            let index: Vec<i32> = (0..16).map(|k| starts[k / 4] + 4 * (k as i32 % 4)).collect();
            let got = S::runs4(index.as_ptr(), band.as_ptr());
            for (x, &v) in got.iter().enumerate() {
                let (mut loaded, mut gathered) = (vec![0.0f32; S::LANES], vec![0.0f32; S::LANES]);
                S::store(loaded.as_mut_ptr(), v);
                S::store(gathered.as_mut_ptr(), S::gather(index.as_ptr(), band.as_ptr().add(x)));
                assert_eq!(loaded, gathered, "x = {x}, runs from {starts:?}, {} lanes", S::LANES);
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn runs_avx512() {
        runs_against_gathers::<Avx512>()
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn runs_avx2() {
        runs_against_gathers::<Avx2>()
    }

    #[test]
    fn runs_load_what_gathers_load() {
        for kernels in all_kernels() {
            // SAFETY: `all_kernels` lists only instruction sets this CPU has.
            match kernels.gemm.name {
                "avx512" => unsafe { runs_avx512() },
                _ => unsafe { runs_avx2() },
            }
        }
    }

    #[test]
    fn runs_are_groups_of_four_patches_side_by_side() {
        let mut offsets: Vec<i32> = (0..32).map(|t| 4 * t).collect();
        assert_eq!(runs_of_four(&offsets), 0xff);
        // A row of 10 tiles: the third group starts a new row at tile 10.
        for (t, o) in offsets.iter_mut().enumerate().skip(10) {
            *o = 1000 + 4 * (t as i32 - 10);
        }
        assert_eq!(runs_of_four(&offsets), 0b1111_1011);
        // Lanes past the last tile repeat tile 0's offset.
        offsets[31] = offsets[0];
        assert_eq!(runs_of_four(&offsets), 0b0111_1011);
    }

    #[test]
    fn applies_to_wide_3x3_layers_with_enough_tiles() {
        let p = Conv2dParams { batch: 16, in_channels: 64, out_channels: 64, in_h: 16, in_w: 16, kernel_h: 3, kernel_w: 3, stride: 1, padding: 1 };
        assert!(fits(&p));
        assert!(!fits(&Conv2dParams { stride: 2, ..p }));
        assert!(!fits(&Conv2dParams { kernel_h: 1, kernel_w: 1, padding: 0, ..p }));
        assert!(!fits(&Conv2dParams { in_channels: 3, ..p }));
        assert!(!fits(&Conv2dParams { in_w: 1, padding: 0, ..p }));
        // Small maps, as long as the tiles fill half a block.
        assert!(fits(&Conv2dParams { in_h: 8, in_w: 8, ..p }));
        assert!(fits(&Conv2dParams { in_h: 4, in_w: 4, ..p }));
        assert!(!fits(&Conv2dParams { batch: 15, in_h: 4, in_w: 4, ..p }), "15 tiles");
        assert!(!fits(&Conv2dParams { in_h: 2, in_w: 2, ..p }), "maps smaller than a tile");
        // The weight gradient goes down to 8x8 maps, with two blocks of tiles.
        assert!(fits_maps_from(&Conv2dParams { in_h: 8, in_w: 8, ..p }, 8));
        assert!(!fits_maps_from(&Conv2dParams { batch: 32, in_h: 4, in_w: 4, ..p }, 8));
        assert!(!fits_maps_from(&Conv2dParams { batch: 8, in_h: 8, in_w: 8, ..p }, 8), "one block of tiles");
    }
}
