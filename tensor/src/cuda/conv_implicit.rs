//! 2-D convolution as an implicit GEMM: no unfolded columns in memory.
//!
//! `conv.rs` unfolds the image (im2col) into a matrix with one column per
//! output pixel, then multiplies with cuBLAS. That matrix is `Cin*kh*kw`
//! times larger than the output, so at large images most of the time goes
//! into writing and re-reading it. The kernels here (`conv_implicit.cu`)
//! run the same matrix products but gather each tile of the unfolded matrix
//! from the image straight into shared memory, inside the GEMM loop. The
//! three passes and their GEMM shapes are tabled at the top of the `.cu`.
//!
//! Two engines (`Engine`): plain FMA kernels for every dtype (f32 exactly
//! as f32, no TF32; f16/bf16 widened to f32), and for f16 and bf16 on
//! Ampere and newer, tensor-core kernels (`mma.sync.m16n8k16`, f32
//! accumulation) with the same tiling and index maps.
//!
//! **Not the default.** None of these kernels has run on a GPU yet: they
//! compile for every supported architecture and their loop nests are
//! emulated on the host, nothing more. im2col + cuBLAS stays the default
//! and the reference. Set `PETAL_CUDA_CONV=implicit` to use them
//! (`im2col`, or unset, for the default; anything else is an error naming
//! the variable). The variable is read once per process.
//!
//! Per pass, the host picks a tile (`plan`): the largest of the engine's
//! tiles (128x128, 64x64 and, FMA only, 32x32) that still gives the GPU
//! enough blocks and does not leave most rows of a tile empty. The
//! grad-weight pass, whose reduction runs over every output pixel of the
//! batch, also splits that reduction over several blocks and sums the
//! parts in a second kernel.
//!
//! The index arithmetic of the kernels is mirrored by `emulation` (tests
//! only): a host run of the same tiled loop nests, in f64, checked against
//! naive convolutions; for tensor cores, the fragment loads and stores are
//! checked against a transcription of the PTX ISA's fragment tables. That
//! shows the tiling, masks and index maps are right as written in Rust;
//! that the `.cu` says the same is checked by the GPU tests at the bottom,
//! which compare with the CPU backend.
//!
//! CPU twin: `cpu/conv.rs` (the same three passes, as loops).

use super::arch::{ComputeCapability, AMPERE};
use super::conv::{check_params, contiguous};
use super::elementwise::{float_only, same_dtype};
use super::{check_u32, CudaDevice, CudaResultExt, CudaStorage};
use crate::backend::Conv2dParams;
use crate::{DType, Error, Layout, Result};
use cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
use std::sync::OnceLock;

/// The environment variable that selects the convolution path.
pub const CONV_PATH_VAR: &str = "PETAL_CUDA_CONV";

/// True when `PETAL_CUDA_CONV=implicit` (read once per process); false when
/// it is unset or `im2col`; an error naming the variable otherwise.
pub(crate) fn selected() -> Result<bool> {
    static CHOICE: OnceLock<std::result::Result<bool, String>> = OnceLock::new();
    CHOICE
        .get_or_init(|| parse_choice(std::env::var(CONV_PATH_VAR).ok().as_deref()))
        .clone()
        .map_err(Error::Cuda)
}

fn parse_choice(value: Option<&str>) -> std::result::Result<bool, String> {
    match value {
        None | Some("") | Some("im2col") => Ok(false),
        Some("implicit") => Ok(true),
        Some(other) => Err(format!("{CONV_PATH_VAR}={other:?} is not a convolution path; use `im2col` (the default) or `implicit`")),
    }
}

/// Threads per block and reduction depth of one tile step of the FMA
/// kernels (`IG_THREADS`, `IG_BK` in the .cu).
const THREADS: usize = 256;
const BK: usize = 8;
/// Reduction depth of one tile step of the tensor-core kernels, and the
/// padding of their shared rows (`IG_MMA_BK`, `IG_MMA_PAD`; the padding
/// matters only to the emulation, which lays out the same tiles).
const MMA_BK: usize = 32;
#[cfg(test)]
const MMA_PAD: usize = 8;

/// Blocks that keep a large GPU busy (two waves on a 132-SM H100/H200);
/// smaller tiles or more K splits are chosen until a launch has this many.
const ENOUGH_BLOCKS: usize = 264;

/// A grad-weight K split is at least this long, so each block does real
/// work before writing its partial sums.
const MIN_SPLIT_K: usize = 1024;

/// The three GEMMs of a convolution (`MODE_*` in the .cu).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    Forward,
    GradInput,
    GradWeight,
}

impl Pass {
    fn kernel_name(self) -> &'static str {
        match self {
            Pass::Forward => "fwd",
            Pass::GradInput => "dgrad",
            Pass::GradWeight => "wgrad",
        }
    }

    /// GEMM sizes (M, N, K) of this pass.
    fn gemm(self, p: &Conv2dParams) -> (usize, usize, usize) {
        let taps = p.kernel_h * p.kernel_w;
        let (ohw, hw) = (p.out_h() * p.out_w(), p.in_h * p.in_w);
        match self {
            Pass::Forward => (p.out_channels, p.batch * ohw, p.in_channels * taps),
            Pass::GradInput => (p.in_channels, p.batch * hw, p.out_channels * taps),
            Pass::GradWeight => (p.out_channels, p.in_channels * taps, p.batch * ohw),
        }
    }
}

/// An output tile of `bm` x `bn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tile {
    pub bm: usize,
    pub bn: usize,
}

/// Which kernels multiply: plain FMA (every dtype, every GPU) or tensor
/// cores (`mma.sync.m16n8k16`: f16 and bf16 on compute capability 8.0+).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Engine {
    Fma,
    TensorCore,
}

impl Engine {
    /// Tensor cores where they exist for the dtype; FMA otherwise.
    pub(crate) fn for_dtype(dtype: DType, gpu: ComputeCapability) -> Engine {
        match dtype {
            DType::F16 | DType::BF16 if gpu >= AMPERE => Engine::TensorCore,
            _ => Engine::Fma,
        }
    }

    /// The tiles this engine has kernels for, largest first.
    pub(crate) fn tiles(self) -> &'static [Tile] {
        match self {
            Engine::Fma => &[Tile { bm: 128, bn: 128 }, Tile { bm: 64, bn: 64 }, Tile { bm: 32, bn: 32 }],
            Engine::TensorCore => &[Tile { bm: 128, bn: 128 }, Tile { bm: 64, bn: 64 }],
        }
    }

    /// K consumed per step of the tile loop.
    fn k_step(self) -> usize {
        match self {
            Engine::Fma => BK,
            Engine::TensorCore => MMA_BK,
        }
    }

    /// The warps of a tensor-core block, as (rows, columns) of the tile
    /// (`WARPS_M`, `WARPS_N` of the kernel with that tile).
    fn warps(tile: Tile) -> (usize, usize) {
        if tile.bm == 128 {
            (2, 4)
        } else {
            (2, 2)
        }
    }

    fn threads(self, tile: Tile) -> usize {
        match self {
            Engine::Fma => THREADS,
            Engine::TensorCore => {
                let (wm, wn) = Engine::warps(tile);
                32 * wm * wn
            }
        }
    }

    fn kernel_prefix(self) -> &'static str {
        match self {
            Engine::Fma => "igemm",
            Engine::TensorCore => "igemm_mma",
        }
    }
}

/// The largest tile that gives at least `ENOUGH_BLOCKS` blocks and whose
/// rows are at most twice the matrix's (a 128-row tile over 3 output
/// channels would compute 125 rows of nothing); else the smallest.
pub(crate) fn choose_tile(engine: Engine, m: usize, n: usize) -> Tile {
    let tiles = engine.tiles();
    for &t in tiles {
        let blocks = m.div_ceil(t.bm) * n.div_ceil(t.bn);
        if t.bm <= 2 * m.max(1) && blocks >= ENOUGH_BLOCKS {
            return t;
        }
    }
    tiles[tiles.len() - 1]
}

/// How one pass is launched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    pub engine: Engine,
    pub tile: Tile,
    /// Blocks along N, along M, and K splits.
    pub grid: (usize, usize, usize),
    /// K range of one split, a multiple of the engine's K step.
    pub k_per_split: usize,
}

/// The launch of one pass over an M x N x K product: the tile from
/// `choose_tile` and, for the grad-weight pass, enough K splits to reach
/// `ENOUGH_BLOCKS`, each at least `MIN_SPLIT_K` long.
pub(crate) fn plan(engine: Engine, pass: Pass, m: usize, n: usize, k: usize) -> Plan {
    let tile = choose_tile(engine, m, n);
    let blocks = m.div_ceil(tile.bm) * n.div_ceil(tile.bn);
    let splits = match pass {
        Pass::GradWeight => ENOUGH_BLOCKS.div_ceil(blocks.max(1)).min(k.div_ceil(MIN_SPLIT_K)),
        Pass::Forward | Pass::GradInput => 1,
    };
    plan_for(engine, m, n, k, tile, splits)
}

/// The launch with a given tile and (at most) `splits` K splits: splits of
/// a whole number of K steps, and none left empty by the rounding.
pub(crate) fn plan_for(engine: Engine, m: usize, n: usize, k: usize, tile: Tile, splits: usize) -> Plan {
    let step = engine.k_step();
    let splits = splits.clamp(1, 65_535);
    let k_per_split = k.div_ceil(splits).div_ceil(step).max(1) * step;
    let splits = k.div_ceil(k_per_split).max(1);
    Plan { engine, tile, grid: (n.div_ceil(tile.bn), m.div_ceil(tile.bm), splits), k_per_split }
}

/// Matches `struct IgGeom` in conv_implicit.cu.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct IgGeom {
    batch: u32,
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    kh: u32,
    kw: u32,
    stride: u32,
    pad: u32,
    oh: u32,
    ow: u32,
    gm: u32,
    gn: u32,
    gk: u32,
    k_per_split: u32,
}
// SAFETY: plain `#[repr(C)]` integers.
unsafe impl DeviceRepr for IgGeom {}

/// The geometry the kernels get, with every size and offset they compute
/// checked to fit their 32-bit (signed, for offsets) arithmetic.
pub(crate) fn geom(pass: Pass, p: &Conv2dParams, plan: &Plan) -> Result<IgGeom> {
    const OP: &str = "conv2d (implicit GEMM)";
    let (m, n, k) = pass.gemm(p);
    let u = |v: usize| check_u32(OP, v);
    // Operand and output lengths bound every offset the kernels form.
    u(p.batch * p.in_channels * p.in_h * p.in_w)?;
    u(p.batch * p.out_channels * p.out_h() * p.out_w())?;
    u(p.out_channels * p.in_channels * p.kernel_h * p.kernel_w)?;
    u(plan.grid.2 * m * n)?;
    u(k + plan.k_per_split)?;
    if plan.grid.1 > 65_535 || plan.grid.2 > 65_535 {
        return Err(Error::BadArgument { op: OP, msg: format!("{m} output rows or {} K splits exceed the CUDA grid", plan.grid.2) });
    }
    Ok(IgGeom {
        batch: u(p.batch)?,
        cin: u(p.in_channels)?,
        h: u(p.in_h)?,
        w: u(p.in_w)?,
        cout: u(p.out_channels)?,
        kh: u(p.kernel_h)?,
        kw: u(p.kernel_w)?,
        stride: u(p.stride)?,
        pad: u(p.padding)?,
        oh: u(p.out_h())?,
        ow: u(p.out_w())?,
        gm: u(m)?,
        gn: u(n)?,
        gk: u(k)?,
        k_per_split: u(plan.k_per_split)?,
    })
}

/// The kernel of conv_implicit.cu for this engine, pass, tile and dtype,
/// e.g. `igemm_mma_fwd_64x64_bf16`.
pub(crate) fn kernel_name(engine: Engine, pass: Pass, tile: Tile, dtype: DType) -> String {
    format!("{}_{}_{}x{}_{}", engine.kernel_prefix(), pass.kernel_name(), tile.bm, tile.bn, dtype.name())
}

/// Every kernel `launch` may ask for on a GPU of capability `gpu` (for the
/// test that looks for each of them in the compiled module).
#[cfg(test)]
pub(crate) fn kernels_for(gpu: ComputeCapability) -> Vec<String> {
    let mut names = vec![];
    for dtype in [DType::F32, DType::F64, DType::F16, DType::BF16] {
        names.push(format!("igemm_sum_splits_{}", dtype.name()));
        let engine = Engine::for_dtype(dtype, gpu);
        for pass in [Pass::Forward, Pass::GradInput, Pass::GradWeight] {
            for &tile in engine.tiles() {
                names.push(kernel_name(engine, pass, tile, dtype));
            }
        }
    }
    names
}

/// Size in bytes of the kernels' accumulation type for `dtype` (`Num<T>::Acc`;
/// the tensor-core kernels accumulate f16 and bf16 in f32 too).
fn acc_size(dtype: DType) -> usize {
    if dtype == DType::F64 {
        8
    } else {
        4
    }
}

/// Runs one pass: `out` gets the [M, N] product, laid out as the pass says.
/// `forced` (tests only) replaces the planned tile and split count.
#[allow(clippy::too_many_arguments)]
fn launch(
    dev: &CudaDevice,
    dtype: DType,
    pass: Pass,
    p: &Conv2dParams,
    (a, b, out, bias): (u64, u64, u64, u64),
    forced: Option<(Tile, usize)>,
) -> Result<()> {
    let (m, n, k) = pass.gemm(p);
    let engine = Engine::for_dtype(dtype, dev.compute_capability());
    let plan = match forced {
        Some((tile, splits)) if engine.tiles().contains(&tile) => plan_for(engine, m, n, k, tile, splits),
        Some((tile, _)) => return Err(Error::Cuda(format!("no {engine:?} conv kernel for tile {tile:?}"))),
        None => plan(engine, pass, m, n, k),
    };
    let g = geom(pass, p, &plan)?;
    let name = kernel_name(engine, pass, plan.tile, dtype);
    let f = dev.func("conv_implicit", &name)?;
    let splits = plan.grid.2;
    let scratch = if splits > 1 { Some(dev.scratch(splits * m * n * acc_size(dtype))?) } else { None };
    let partial = scratch.as_ref().map_or(0u64, |s| s.ptr());
    let cfg = LaunchConfig {
        grid_dim: (plan.grid.0 as u32, plan.grid.1 as u32, splits as u32),
        block_dim: (engine.threads(plan.tile) as u32, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut lb = dev.stream().launch_builder(&f);
    lb.arg(&a).arg(&b).arg(&out).arg(&partial).arg(&bias).arg(&g);
    // SAFETY: a, b and out hold the operands of this pass for `p` (checked by
    // the callers), partial holds splits*M*N accumulators when splits > 1, and
    // `geom` checked that every offset fits the kernels' 32-bit arithmetic.
    unsafe { lb.launch(cfg) }.ctx(&format!("{name} kernel"))?;
    if let Some(s) = &scratch {
        let len = check_u32("conv2d (implicit GEMM)", m * n)?;
        let splits32 = splits as u32;
        let f = dev.func("conv_implicit", &format!("igemm_sum_splits_{}", dtype.name()))?;
        let sp = s.ptr();
        let mut lb = dev.stream().launch_builder(&f);
        lb.arg(&sp).arg(&out).arg(&len).arg(&splits32);
        // SAFETY: reads splits*len accumulators, writes len values of `out`.
        unsafe { lb.launch(super::launch_cfg(m * n)) }.ctx("igemm_sum_splits kernel")?;
    }
    Ok(())
}

pub(crate) fn conv2d(
    x: &CudaStorage,
    xl: &Layout,
    w: &CudaStorage,
    wl: &Layout,
    bias: Option<(&CudaStorage, &Layout)>,
    p: &Conv2dParams,
) -> Result<CudaStorage> {
    conv2d_forced(x, xl, w, wl, bias, p, None)
}

pub(crate) fn conv2d_backward_input(
    g: &CudaStorage,
    gl: &Layout,
    w: &CudaStorage,
    wl: &Layout,
    p: &Conv2dParams,
) -> Result<CudaStorage> {
    conv2d_backward_input_forced(g, gl, w, wl, p, None)
}

pub(crate) fn conv2d_backward_weight(
    x: &CudaStorage,
    xl: &Layout,
    g: &CudaStorage,
    gl: &Layout,
    p: &Conv2dParams,
) -> Result<CudaStorage> {
    conv2d_backward_weight_forced(x, xl, g, gl, p, None)
}

// The passes, with the launch plan optionally forced (by the tests, to run
// every tile and split count on small shapes).

fn conv2d_forced(
    x: &CudaStorage,
    xl: &Layout,
    w: &CudaStorage,
    wl: &Layout,
    bias: Option<(&CudaStorage, &Layout)>,
    p: &Conv2dParams,
    forced: Option<(Tile, usize)>,
) -> Result<CudaStorage> {
    same_dtype("conv2d", x, w)?;
    float_only("conv2d", x.dtype)?;
    check_params(p)?;
    contiguous("conv2d", xl)?;
    contiguous("conv2d", wl)?;
    let bias_ptr = match bias {
        Some((b, bl)) => {
            same_dtype("conv2d", x, b)?;
            contiguous("conv2d", bl)?;
            b.ptr_at(bl.offset())
        }
        None => 0,
    };
    let (dev, dt) = (x.device(), x.dtype);
    let out = dev.alloc(p.batch * p.out_channels * p.out_h() * p.out_w(), dt)?;
    if out.len == 0 {
        return Ok(out);
    }
    // With Cin = 0 the reduction is empty and the kernel writes the bias (or 0).
    launch(dev, dt, Pass::Forward, p, (w.ptr_at(wl.offset()), x.ptr_at(xl.offset()), out.ptr(), bias_ptr), forced)?;
    Ok(out)
}

fn conv2d_backward_input_forced(
    g: &CudaStorage,
    gl: &Layout,
    w: &CudaStorage,
    wl: &Layout,
    p: &Conv2dParams,
    forced: Option<(Tile, usize)>,
) -> Result<CudaStorage> {
    same_dtype("conv2d backward", g, w)?;
    float_only("conv2d backward", g.dtype)?;
    check_params(p)?;
    contiguous("conv2d backward", gl)?;
    contiguous("conv2d backward", wl)?;
    let (dev, dt) = (g.device(), g.dtype);
    let dx = dev.alloc(p.batch * p.in_channels * p.in_h * p.in_w, dt)?;
    if dx.len == 0 {
        return Ok(dx);
    }
    launch(dev, dt, Pass::GradInput, p, (w.ptr_at(wl.offset()), g.ptr_at(gl.offset()), dx.ptr(), 0), forced)?;
    Ok(dx)
}

fn conv2d_backward_weight_forced(
    x: &CudaStorage,
    xl: &Layout,
    g: &CudaStorage,
    gl: &Layout,
    p: &Conv2dParams,
    forced: Option<(Tile, usize)>,
) -> Result<CudaStorage> {
    same_dtype("conv2d backward", x, g)?;
    float_only("conv2d backward", x.dtype)?;
    check_params(p)?;
    contiguous("conv2d backward", xl)?;
    contiguous("conv2d backward", gl)?;
    let (dev, dt) = (x.device(), x.dtype);
    let dw = dev.alloc(p.out_channels * p.in_channels * p.kernel_h * p.kernel_w, dt)?;
    if dw.len == 0 {
        return Ok(dw);
    }
    launch(dev, dt, Pass::GradWeight, p, (g.ptr_at(gl.offset()), x.ptr_at(xl.offset()), dw.ptr(), 0), forced)?;
    Ok(dw)
}

/// A host run of `conv_implicit.cu`, to test its tiling and index maps
/// without a GPU.
///
/// `col`, `k_info`, `b_offset`, `a_offset` and `out_offset` repeat the
/// kernel's `ig_*` functions in the kernel's own 32-bit arithmetic, and `run` walks
/// a loop nest (`fma_block` or `mma_block`): every block of the grid, the
/// decoding of each step's K indices into the shared table, a barrier, the
/// threads' loads into the shared tiles, a barrier, their multiply-adds (or
/// each warp's fragment loads and `mma`s, the instruction itself emulated
/// from the PTX ISA's fragment tables by `mma_m16n8k16`), and the epilogue
/// (with the split sums when there are splits). Plans and geometry come from the real
/// launch code (`plan_for`, `geom`). Shared slots start as NaN and outputs
/// are counted, so a slot read before any thread loaded it, an output
/// written twice, or one never written, fails the test.
///
/// What this proves: that these index maps and loop nests compute the
/// convolution for the shapes tested. What it does not: that the `.cu` text
/// says the same, that `mma_m16n8k16` matches the hardware (both are
/// transcriptions; the GPU tests below check them, on a GPU), nor anything
/// about races, timing or memory coalescing.
#[cfg(test)]
// The loops run over thread, lane and tile indices, as the kernel does.
#[allow(clippy::needless_range_loop)]
mod emulation {
    use super::*;

    /// `IgCol` of the kernel.
    pub(super) struct Col {
        ok: bool,
        base: i32,
        y0: i32,
        x0: i32,
    }

    // Wrapping arithmetic: the kernel's u32 and int arithmetic wraps (for
    // columns past the end, whose values are then never used).
    fn mul(a: u32, b: u32) -> u32 {
        a.wrapping_mul(b)
    }

    /// `ig_col`.
    pub(super) fn col(pass: Pass, g: &IgGeom, n: u32) -> Col {
        let ok = n < g.gn;
        match pass {
            Pass::Forward => {
                let ohw = g.oh * g.ow;
                let (b, r) = (n / ohw, n % ohw);
                let (oy, ox) = (r / g.ow, r % g.ow);
                Col {
                    ok,
                    base: mul(mul(mul(b, g.cin), g.h), g.w) as i32,
                    y0: mul(oy, g.stride) as i32 - g.pad as i32,
                    x0: mul(ox, g.stride) as i32 - g.pad as i32,
                }
            }
            Pass::GradInput => {
                let hw = g.h * g.w;
                let (b, r) = (n / hw, n % hw);
                let (iy, ix) = (r / g.w, r % g.w);
                Col { ok, base: mul(mul(mul(b, g.cout), g.oh), g.ow) as i32, y0: (iy + g.pad) as i32, x0: (ix + g.pad) as i32 }
            }
            Pass::GradWeight => {
                let taps = g.kh * g.kw;
                let (ci, t) = (n / taps, n % taps);
                let (ky, kx) = (t / g.kw, t % g.kw);
                Col { ok, base: mul(mul(ci, g.h), g.w) as i32, y0: ky as i32 - g.pad as i32, x0: kx as i32 - g.pad as i32 }
            }
        }
    }

    /// `IgK`: what the block's table holds for one reduction index.
    #[derive(Clone, Copy)]
    pub(super) struct KInfo {
        a: i32,
        delta: i32,
        p: i32,
        q: i32,
    }

    /// `ig_k`.
    pub(super) fn k_info(pass: Pass, g: &IgGeom, k: u32, k_end: u32) -> KInfo {
        if k >= k_end {
            return KInfo { a: -1, delta: 0, p: 0, q: 0 };
        }
        match pass {
            Pass::Forward => {
                let taps = g.kh * g.kw;
                let (ci, t) = (k / taps, k % taps);
                let (ky, kx) = (t / g.kw, t % g.kw);
                KInfo { a: k as i32, delta: (ci * g.h * g.w) as i32, p: ky as i32, q: kx as i32 }
            }
            Pass::GradInput => {
                let taps = g.kh * g.kw;
                let (co, t) = (k / taps, k % taps);
                let (ky, kx) = (t / g.kw, t % g.kw);
                KInfo { a: (co * g.cin * taps + t) as i32, delta: (co * g.oh * g.ow) as i32, p: ky as i32, q: kx as i32 }
            }
            Pass::GradWeight => {
                let ohw = g.oh * g.ow;
                let (b, r) = (k / ohw, k % ohw);
                let (oy, ox) = (r / g.ow, r % g.ow);
                KInfo {
                    a: (b * g.cout * ohw + r) as i32,
                    delta: (b * g.cin * g.h * g.w) as i32,
                    p: (oy * g.stride) as i32,
                    q: (ox * g.stride) as i32,
                }
            }
        }
    }

    /// `ig_fill`, run by threads 0..bk: the table of one tile step.
    fn k_table(pass: Pass, g: &IgGeom, bk: usize, k0: u32, k_end: u32) -> Vec<KInfo> {
        (0..bk as u32).map(|tid| k_info(pass, g, k0 + tid, k_end)).collect()
    }

    /// `ig_b_offset`: None where the kernel returns -1.
    pub(super) fn b_offset(pass: Pass, g: &IgGeom, c: &Col, e: &KInfo) -> Option<usize> {
        if !c.ok || e.a < 0 {
            return None;
        }
        match pass {
            Pass::GradInput => {
                let (ys, xs) = (c.y0 - e.p, c.x0 - e.q);
                if ys < 0 || xs < 0 {
                    return None;
                }
                let (mut oy, mut ox) = (ys as u32, xs as u32);
                if g.stride != 1 {
                    if oy % g.stride != 0 || ox % g.stride != 0 {
                        return None;
                    }
                    oy /= g.stride;
                    ox /= g.stride;
                }
                (oy < g.oh && ox < g.ow).then(|| (c.base + e.delta + (oy * g.ow + ox) as i32) as usize)
            }
            Pass::Forward | Pass::GradWeight => {
                let (iy, ix) = (c.y0 + e.p, c.x0 + e.q);
                let inside = iy >= 0 && iy < g.h as i32 && ix >= 0 && ix < g.w as i32;
                inside.then(|| (c.base + e.delta + iy * g.w as i32 + ix) as usize)
            }
        }
    }

    /// `ig_a_offset`.
    pub(super) fn a_offset(pass: Pass, g: &IgGeom, m: u32, e: &KInfo) -> Option<usize> {
        if m >= g.gm || e.a < 0 {
            return None;
        }
        let row = match pass {
            Pass::Forward => g.gk,
            Pass::GradInput => g.kh * g.kw,
            Pass::GradWeight => g.oh * g.ow,
        };
        Some((e.a + (m * row) as i32) as usize)
    }

    /// `ig_out_offset`.
    pub(super) fn out_offset(pass: Pass, g: &IgGeom, m: u32, n: u32) -> usize {
        (match pass {
            Pass::Forward => {
                let ohw = g.oh * g.ow;
                (n / ohw * g.cout + m) * ohw + n % ohw
            }
            Pass::GradInput => {
                let hw = g.h * g.w;
                (n / hw * g.cin + m) * hw + n % hw
            }
            Pass::GradWeight => m * g.gn + n,
        }) as usize
    }

    /// The kernel's loop nest, run block by block and thread by thread
    /// between its barriers, in f64. `a` and `b` are the pass's operands as
    /// the launch code passes them; the result is the pass's output.
    pub(super) fn run(pass: Pass, p: &Conv2dParams, plan: &Plan, a: &[f64], b: &[f64], bias: Option<&[f64]>) -> Vec<f64> {
        let g = geom(pass, p, plan).unwrap();
        let (m, n, _) = pass.gemm(p);
        let (grid_x, grid_y, splits) = plan.grid;
        let out_len = match pass {
            Pass::Forward => p.batch * p.out_channels * p.out_h() * p.out_w(),
            Pass::GradInput => p.batch * p.in_channels * p.in_h * p.in_w,
            Pass::GradWeight => m * n,
        };
        let mut out = vec![f64::NAN; out_len];
        let mut writes = vec![0u32; out_len];
        let mut partial = vec![f64::NAN; splits * m * n];
        let mut partial_writes = vec![0u32; splits * m * n];
        for bz in 0..splits as u32 {
            for by in 0..grid_y as u32 {
                for bx in 0..grid_x as u32 {
                    // The epilogue: (m, n, value) for every cell a thread owns.
                    let cells = match plan.engine {
                        Engine::Fma => fma_block(pass, &g, plan.tile, (bx, by, bz), a, b),
                        Engine::TensorCore => mma_block(pass, &g, plan.tile, (bx, by, bz), a, b),
                    };
                    for (mi, ni, v) in cells {
                        if mi >= g.gm || ni >= g.gn {
                            continue;
                        }
                        if splits > 1 {
                            let at = ((bz * g.gm + mi) * g.gn + ni) as usize;
                            partial[at] = v;
                            partial_writes[at] += 1;
                        } else {
                            let at = out_offset(pass, &g, mi, ni);
                            out[at] = v + bias.map_or(0.0, |bv| bv[mi as usize]);
                            writes[at] += 1;
                        }
                    }
                }
            }
        }
        if splits > 1 {
            assert!(partial_writes.iter().all(|&c| c == 1), "a partial sum was written {:?} times", partial_writes.iter().find(|&&c| c != 1));
            // igemm_sum_splits
            for (i, o) in out.iter_mut().enumerate() {
                *o = (0..splits).map(|z| partial[z * m * n + i]).sum();
                writes[i] += 1;
            }
        }
        assert!(writes.iter().all(|&c| c == 1), "an output was written {:?} times", writes.iter().find(|&&c| c != 1));
        out
    }

    fn load(v: &[f64], off: Option<usize>) -> f64 {
        off.map_or(0.0, |o| v[o])
    }

    /// One block of `implicit_gemm`: returns each thread's (m, n, sum).
    fn fma_block(pass: Pass, g: &IgGeom, tile: Tile, (bx, by, bz): (u32, u32, u32), a: &[f64], b: &[f64]) -> Vec<(u32, u32, f64)> {
        let Tile { bm, bn } = tile;
        let (tm, tn) = (bm / 16, bn / 16);
        let (a_loads, b_loads, b_row_step) = (bm * BK / THREADS, bn * BK / THREADS, THREADS / bn);
        let (m0, n0) = (by * bm as u32, bx * bn as u32);
        let k_begin = bz * g.k_per_split;
        let k_end = g.gk.min(k_begin + g.k_per_split);
        let cols: Vec<Col> = (0..THREADS).map(|tid| col(pass, g, n0 + (tid % bn) as u32)).collect();
        let mut acc = vec![0.0f64; THREADS * tm * tn];
        let mut k0 = k_begin;
        while k0 < k_end {
            let table = k_table(pass, g, BK, k0, k_end);
            // __syncthreads()
            let mut a_s = vec![f64::NAN; BK * bm];
            let mut b_s = vec![f64::NAN; BK * bn];
            for tid in 0..THREADS {
                for l in 0..a_loads {
                    let i = tid + l * THREADS;
                    let (mm, kk) = (i / BK, i % BK);
                    a_s[kk * bm + mm] = load(a, a_offset(pass, g, m0 + mm as u32, &table[kk]));
                }
                let (b_col, b_row) = (tid % bn, tid / bn);
                for l in 0..b_loads {
                    let kk = b_row + l * b_row_step;
                    b_s[kk * bn + b_col] = load(b, b_offset(pass, g, &cols[tid], &table[kk]));
                }
            }
            // __syncthreads()
            for tid in 0..THREADS {
                let (tx, ty) = (tid % 16, tid / 16);
                for kk in 0..BK {
                    for i in 0..tm {
                        for j in 0..tn {
                            acc[(tid * tm + i) * tn + j] += a_s[kk * bm + ty + 16 * i] * b_s[kk * bn + tx + 16 * j];
                        }
                    }
                }
            }
            k0 += BK as u32;
        }
        let mut cells = vec![];
        for tid in 0..THREADS {
            let (tx, ty) = (tid % 16, tid / 16);
            for i in 0..tm {
                for j in 0..tn {
                    cells.push((m0 + (ty + 16 * i) as u32, n0 + (tx + 16 * j) as u32, acc[(tid * tm + i) * tn + j]));
                }
            }
        }
        cells
    }

    /// `mma.sync.aligned.m16n8k16.row.col` for one warp, as the PTX ISA
    /// defines it, written from its fragment tables (not from the kernel):
    /// lane 4g+t holds A[g][2t+h], A[g+8][2t+h], A[g][2t+8+h], A[g+8][2t+8+h]
    /// (registers 0..3, h the half), B[2t+h][g], B[2t+8+h][g] (registers 0,
    /// 1), and gets D[g][2t], D[g][2t+1], D[g+8][2t], D[g+8][2t+1].
    fn mma_m16n8k16(fa: &[[[f64; 2]; 4]; 32], fb: &[[[f64; 2]; 2]; 32], acc: &mut [[f64; 4]; 32]) {
        let mut am = [[f64::NAN; 16]; 16];
        let mut bm = [[f64::NAN; 8]; 16];
        for lane in 0..32 {
            let (g, t) = (lane / 4, lane % 4);
            for h in 0..2 {
                am[g][2 * t + h] = fa[lane][0][h];
                am[g + 8][2 * t + h] = fa[lane][1][h];
                am[g][2 * t + 8 + h] = fa[lane][2][h];
                am[g + 8][2 * t + 8 + h] = fa[lane][3][h];
                bm[2 * t + h][g] = fb[lane][0][h];
                bm[2 * t + 8 + h][g] = fb[lane][1][h];
            }
        }
        let d = |r: usize, c: usize| (0..16).map(|k| am[r][k] * bm[k][c]).sum::<f64>();
        for (lane, acc) in acc.iter_mut().enumerate() {
            let (g, t) = (lane / 4, lane % 4);
            acc[0] += d(g, 2 * t);
            acc[1] += d(g, 2 * t + 1);
            acc[2] += d(g + 8, 2 * t);
            acc[3] += d(g + 8, 2 * t + 1);
        }
    }

    /// One block of `implicit_gemm_mma`: returns each lane's (m, n, sum).
    fn mma_block(pass: Pass, g: &IgGeom, tile: Tile, (bx, by, bz): (u32, u32, u32), a: &[f64], b: &[f64]) -> Vec<(u32, u32, f64)> {
        let Tile { bm, bn } = tile;
        let (warps_m, warps_n) = Engine::warps(tile);
        let threads = Engine::TensorCore.threads(tile);
        let (wm, wn) = (bm / warps_m, bn / warps_n);
        let (mt, nt) = (wm / 16, wn / 8);
        let ld = MMA_BK + MMA_PAD;
        let (a_loads, b_loads, b_row_step) = (bm * MMA_BK / threads, bn * MMA_BK / threads, threads / bn);
        let (m0, n0) = (by * bm as u32, bx * bn as u32);
        let k_begin = bz * g.k_per_split;
        let k_end = g.gk.min(k_begin + g.k_per_split);
        let cols: Vec<Col> = (0..threads).map(|tid| col(pass, g, n0 + (tid % bn) as u32)).collect();
        // acc[warp][i][j][lane][r]
        let mut acc = vec![vec![vec![[[0.0f64; 4]; 32]; nt]; mt]; warps_m * warps_n];
        let mut k0 = k_begin;
        while k0 < k_end {
            let table = k_table(pass, g, MMA_BK, k0, k_end);
            // __syncthreads()
            let mut a_s = vec![f64::NAN; bm * ld];
            let mut b_s = vec![f64::NAN; bn * ld];
            for tid in 0..threads {
                for l in 0..a_loads {
                    let i = tid + l * threads;
                    let (mm, kk) = (i / MMA_BK, i % MMA_BK);
                    a_s[mm * ld + kk] = load(a, a_offset(pass, g, m0 + mm as u32, &table[kk]));
                }
                let (b_col, b_row) = (tid % bn, tid / bn);
                for l in 0..b_loads {
                    let kk = b_row + l * b_row_step;
                    b_s[b_col * ld + kk] = load(b, b_offset(pass, g, &cols[tid], &table[kk]));
                }
            }
            // __syncthreads()
            for (warp, acc) in acc.iter_mut().enumerate() {
                let (warp_m, warp_n) = (warp / warps_n, warp % warps_n);
                for kk in (0..MMA_BK).step_by(16) {
                    let pair = |v: &[f64], at: usize| [v[at], v[at + 1]];
                    let mut fa = vec![[[[0.0; 2]; 4]; 32]; mt];
                    let mut fb = vec![[[[0.0; 2]; 2]; 32]; nt];
                    for lane in 0..32 {
                        let (lg, lt) = (lane / 4, lane % 4);
                        for (i, fa) in fa.iter_mut().enumerate() {
                            let r0 = (warp_m * wm + i * 16 + lg) * ld + kk + 2 * lt;
                            fa[lane] = [pair(&a_s, r0), pair(&a_s, r0 + 8 * ld), pair(&a_s, r0 + 8), pair(&a_s, r0 + 8 * ld + 8)];
                        }
                        for (j, fb) in fb.iter_mut().enumerate() {
                            let c0 = (warp_n * wn + j * 8 + lg) * ld + kk + 2 * lt;
                            fb[lane] = [pair(&b_s, c0), pair(&b_s, c0 + 8)];
                        }
                    }
                    for i in 0..mt {
                        for j in 0..nt {
                            mma_m16n8k16(&fa[i], &fb[j], &mut acc[i][j]);
                        }
                    }
                }
            }
            k0 += MMA_BK as u32;
        }
        let mut cells = vec![];
        for (warp, acc) in acc.iter().enumerate() {
            let (warp_m, warp_n) = (warp / warps_n, warp % warps_n);
            for lane in 0..32 {
                let (lg, lt) = (lane / 4, lane % 4);
                for i in 0..mt {
                    for half in 0..2 {
                        let mi = m0 + (warp_m * wm + i * 16 + lg + 8 * half) as u32;
                        for j in 0..nt {
                            for e in 0..2 {
                                let ni = n0 + (warp_n * wn + j * 8 + 2 * lt + e) as u32;
                                cells.push((mi, ni, acc[i][j][lane][2 * half + e]));
                            }
                        }
                    }
                }
            }
        }
        cells
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // ---- naive convolutions in f64, straight from the definitions ----

    fn x_at(p: &Conv2dParams, b: usize, c: usize, y: usize, x: usize) -> usize {
        ((b * p.in_channels + c) * p.in_h + y) * p.in_w + x
    }
    fn y_at(p: &Conv2dParams, b: usize, c: usize, y: usize, x: usize) -> usize {
        ((b * p.out_channels + c) * p.out_h() + y) * p.out_w() + x
    }
    fn w_at(p: &Conv2dParams, co: usize, ci: usize, ky: usize, kx: usize) -> usize {
        ((co * p.in_channels + ci) * p.kernel_h + ky) * p.kernel_w + kx
    }

    /// Calls `f(b, co, oy, ox, ci, ky, kx, x index)` for every tap that reads inside the image.
    fn each_tap(p: &Conv2dParams, mut f: impl FnMut(usize, usize, usize, usize, usize, usize, usize, usize)) {
        for b in 0..p.batch {
            for co in 0..p.out_channels {
                for oy in 0..p.out_h() {
                    for ox in 0..p.out_w() {
                        for ci in 0..p.in_channels {
                            for ky in 0..p.kernel_h {
                                for kx in 0..p.kernel_w {
                                    let iy = (oy * p.stride + ky) as isize - p.padding as isize;
                                    let ix = (ox * p.stride + kx) as isize - p.padding as isize;
                                    if iy >= 0 && ix >= 0 && (iy as usize) < p.in_h && (ix as usize) < p.in_w {
                                        f(b, co, oy, ox, ci, ky, kx, x_at(p, b, ci, iy as usize, ix as usize));
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn naive_forward(p: &Conv2dParams, x: &[f64], w: &[f64], bias: &[f64]) -> Vec<f64> {
        let mut y = vec![0.0; p.batch * p.out_channels * p.out_h() * p.out_w()];
        for b in 0..p.batch {
            for co in 0..p.out_channels {
                for oy in 0..p.out_h() {
                    for ox in 0..p.out_w() {
                        y[y_at(p, b, co, oy, ox)] = bias[co];
                    }
                }
            }
        }
        each_tap(p, |b, co, oy, ox, ci, ky, kx, xi| y[y_at(p, b, co, oy, ox)] += w[w_at(p, co, ci, ky, kx)] * x[xi]);
        y
    }

    fn naive_grad_input(p: &Conv2dParams, g: &[f64], w: &[f64]) -> Vec<f64> {
        let mut dx = vec![0.0; p.batch * p.in_channels * p.in_h * p.in_w];
        each_tap(p, |b, co, oy, ox, ci, ky, kx, xi| dx[xi] += w[w_at(p, co, ci, ky, kx)] * g[y_at(p, b, co, oy, ox)]);
        dx
    }

    fn naive_grad_weight(p: &Conv2dParams, x: &[f64], g: &[f64]) -> Vec<f64> {
        let mut dw = vec![0.0; p.out_channels * p.in_channels * p.kernel_h * p.kernel_w];
        each_tap(p, |b, co, oy, ox, ci, ky, kx, xi| dw[w_at(p, co, ci, ky, kx)] += x[xi] * g[y_at(p, b, co, oy, ox)]);
        dw
    }

    /// Small integers, so that every sum is exact in f64 whatever its order
    /// and results compare with `==`.
    fn ints(n: usize) -> impl Strategy<Value = Vec<f64>> {
        prop::collection::vec((-4i32..5).prop_map(f64::from), n)
    }

    /// Shapes with odd sizes, channel counts that are not multiples of 8,
    /// strides 1 and 2 and paddings 0 to 2, with the data for all passes.
    fn conv_case() -> impl Strategy<Value = (Conv2dParams, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>)> {
        (1usize..4, 1usize..7, 1usize..7, 1usize..10, 1usize..10, 1usize..4, 1usize..4, 1usize..3, 0usize..3)
            .prop_filter("kernel larger than the padded image", |&(_, _, _, h, w, kh, kw, _, pad)| {
                kh <= h + 2 * pad && kw <= w + 2 * pad
            })
            .prop_flat_map(|(batch, cin, cout, h, w, kh, kw, stride, padding)| {
                let p = Conv2dParams { batch, in_channels: cin, out_channels: cout, in_h: h, in_w: w, kernel_h: kh, kernel_w: kw, stride, padding };
                let ylen = batch * cout * p.out_h() * p.out_w();
                (Just(p), ints(batch * cin * h * w), ints(cout * cin * kh * kw), ints(cout), ints(ylen))
            })
    }

    /// An engine and one of its tiles.
    fn engine_tile() -> impl Strategy<Value = (Engine, Tile)> {
        prop::sample::select(vec![Engine::Fma, Engine::TensorCore])
            .prop_flat_map(|e| (Just(e), prop::sample::select(e.tiles().to_vec())))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The emulated kernels equal the naive convolutions exactly, for
        /// both engines, every tile and (grad weight) split count.
        #[test]
        fn emulated_kernels_match_naive_convolution((p, x, w, bias, g) in conv_case(), (engine, tile) in engine_tile(), splits in 1usize..5) {
            let run = |pass: Pass, a: &[f64], b: &[f64], bias: Option<&[f64]>, splits: usize| {
                let (m, n, k) = pass.gemm(&p);
                emulation::run(pass, &p, &plan_for(engine, m, n, k, tile, splits), a, b, bias)
            };
            prop_assert_eq!(run(Pass::Forward, &w, &x, Some(&bias), 1), naive_forward(&p, &x, &w, &bias));
            prop_assert_eq!(run(Pass::GradInput, &w, &g, None, 1), naive_grad_input(&p, &g, &w));
            prop_assert_eq!(run(Pass::GradWeight, &g, &x, None, splits), naive_grad_weight(&p, &x, &g));
        }

        /// A plan covers the product exactly: every row, column and K index
        /// falls in one block and one split, and no split is empty.
        #[test]
        fn plans_cover_the_product(
            m in 1usize..5000, n in 1usize..100_000, k in 0usize..100_000, grad_weight in any::<bool>(),
            engine in prop::sample::select(vec![Engine::Fma, Engine::TensorCore]),
        ) {
            let pass = if grad_weight { Pass::GradWeight } else { Pass::Forward };
            let plan = plan(engine, pass, m, n, k);
            prop_assert!(engine.tiles().contains(&plan.tile));
            prop_assert_eq!(plan.engine, engine);
            // Every thread's loads are whole: tiles divide evenly among threads.
            let threads = engine.threads(plan.tile);
            prop_assert_eq!(plan.tile.bm * engine.k_step() % threads, 0);
            prop_assert_eq!(threads % plan.tile.bn, 0);
            let (gx, gy, splits) = plan.grid;
            prop_assert!(gx * plan.tile.bn >= n && (gx - 1) * plan.tile.bn < n);
            prop_assert!(gy * plan.tile.bm >= m && (gy - 1) * plan.tile.bm < m);
            prop_assert_eq!(plan.k_per_split % engine.k_step(), 0);
            prop_assert!(splits * plan.k_per_split >= k);
            prop_assert!(splits == 1 || (splits - 1) * plan.k_per_split < k);
            if !grad_weight { prop_assert_eq!(splits, 1); }
        }
    }

    #[test]
    fn tiles_follow_the_layer_shape() {
        let fma = Engine::Fma;
        // A wide layer (128 channels, 16 images of 64x64) fills the GPU with 128x128 tiles.
        assert_eq!(choose_tile(fma, 128, 16 * 64 * 64), Tile { bm: 128, bn: 128 });
        assert_eq!(choose_tile(fma, 128, 4 * 64 * 64), Tile { bm: 64, bn: 64 });
        // Few output channels never get a tile mostly empty of rows.
        assert_eq!(choose_tile(fma, 3, 1 << 20), Tile { bm: 32, bn: 32 });
        assert_eq!(choose_tile(fma, 40, 1 << 20), Tile { bm: 64, bn: 64 });
        // A small product gets the smallest tile, for more blocks.
        assert_eq!(choose_tile(fma, 256, 4 * 8 * 8), Tile { bm: 32, bn: 32 });
        assert_eq!(choose_tile(Engine::TensorCore, 256, 4 * 8 * 8), Tile { bm: 64, bn: 64 });
        // The grad weight of a 160x160 layer splits its long K.
        let plan = plan(fma, Pass::GradWeight, 64, 64 * 9, 8 * 160 * 160);
        assert!(plan.grid.2 > 1, "{plan:?}");
    }

    #[test]
    fn tensor_cores_only_for_half_types_on_ampere_and_newer() {
        let (turing, ampere, hopper) = (ComputeCapability::new(7, 5), AMPERE, ComputeCapability::new(9, 0));
        for dtype in [DType::F16, DType::BF16] {
            assert_eq!(Engine::for_dtype(dtype, turing), Engine::Fma);
            assert_eq!(Engine::for_dtype(dtype, ampere), Engine::TensorCore);
            assert_eq!(Engine::for_dtype(dtype, hopper), Engine::TensorCore);
        }
        for dtype in [DType::F32, DType::F64] {
            assert_eq!(Engine::for_dtype(dtype, hopper), Engine::Fma);
        }
    }

    #[test]
    fn the_conv_path_variable_is_parsed_strictly() {
        assert_eq!(parse_choice(None), Ok(false));
        assert_eq!(parse_choice(Some("im2col")), Ok(false));
        assert_eq!(parse_choice(Some("implicit")), Ok(true));
        let err = parse_choice(Some("implict")).unwrap_err();
        assert!(err.contains(CONV_PATH_VAR) && err.contains("implict"), "{err}");
    }
}

/// The kernels on a GPU against the CPU backend. Without a GPU each test
/// prints a SKIPPED line and passes, unless `PETAL_REQUIRE_CUDA=1`.
#[cfg(test)]
mod gpu_tests {
    use super::*;
    use crate::backend::BackendStorage;
    use crate::cpu::CpuStorage;
    use crate::Shape;
    use proptest::prelude::*;

    fn values(n: usize, seed: u64, dtype: DType) -> CpuStorage {
        let v = (0..n as u64).map(|i| crate::rng::uniform_at(seed, 0, i, -2.0, 2.0)).collect();
        CpuStorage::F64(v).cast(dtype).unwrap()
    }

    fn f64s(s: &CpuStorage) -> Vec<f64> {
        match s.cast(DType::F64).unwrap() {
            CpuStorage::F64(v) => v,
            _ => unreachable!(),
        }
    }

    /// |gpu - cpu| <= tol * (1 + |cpu|) element by element, for a GPU result
    /// in `dtype`. The CPU backend has no f16/bf16 convolution, so for those
    /// the reference is f32 on the same (rounded) inputs; both accumulate in
    /// f32, so they differ by the output's rounding to 16 bits.
    fn close(what: &str, dtype: DType, gpu: &CudaStorage, cpu: &CpuStorage) -> std::result::Result<(), String> {
        let tol = match dtype {
            DType::F64 => 1e-10,
            DType::F32 => 1e-5,
            DType::F16 => 4e-3,
            _ => 2e-2,
        };
        let (g, c) = (f64s(&gpu.to_cpu().unwrap()), f64s(cpu));
        if g.len() != c.len() {
            return Err(format!("{what}: {} values on the GPU, {} on the CPU", g.len(), c.len()));
        }
        for (i, (a, b)) in g.iter().zip(&c).enumerate() {
            // Written so that a NaN on either side fails.
            let within = (a - b).abs() <= tol * (1.0 + b.abs());
            if !within {
                return Err(format!("{what} ({dtype}): element {i} is {a} on the GPU, {b} on the CPU"));
            }
        }
        Ok(())
    }

    /// All three passes of `p` on the GPU (with `forced` plans, or the
    /// planned ones) against the CPU backend.
    fn check(dev: &CudaDevice, p: &Conv2dParams, dtype: DType, seed: u64, forced: Option<(Tile, usize)>) -> std::result::Result<(), String> {
        let (oh, ow) = (p.out_h(), p.out_w());
        let xdims = [p.batch, p.in_channels, p.in_h, p.in_w];
        // The input sits one element into its storage, to exercise offsets.
        let xl = Layout::new(Shape::from(xdims), Shape::from(xdims).contiguous_strides(), 1);
        let wl = Layout::contiguous(Shape::from([p.out_channels, p.in_channels, p.kernel_h, p.kernel_w]));
        let bl = Layout::contiguous(Shape::from([p.out_channels]));
        let gl = Layout::contiguous(Shape::from([p.batch, p.out_channels, oh, ow]));
        let x = values(xl.elem_count() + 1, seed, dtype);
        let w = values(wl.elem_count(), seed ^ 1, dtype);
        let bias = values(p.out_channels, seed ^ 2, dtype);
        let g = values(gl.elem_count(), seed ^ 3, dtype);
        let up = |c: &CpuStorage| dev.from_cpu(c).unwrap();
        let (gx, gw, gb, gg) = (up(&x), up(&w), up(&bias), up(&g));
        // The CPU computes f16 and bf16 in f32 (exactly the rounded inputs).
        let ref_dtype = if matches!(dtype, DType::F16 | DType::BF16) { DType::F32 } else { dtype };
        let wide = |c: &CpuStorage| c.cast(ref_dtype).unwrap();
        let (x, w, bias, g) = (wide(&x), wide(&w), wide(&bias), wide(&g));
        let y = conv2d_forced(&gx, &xl, &gw, &wl, Some((&gb, &bl)), p, forced).map_err(|e| e.to_string())?;
        close("forward", dtype, &y, &x.conv2d(&xl, &w, &wl, Some((&bias, &bl)), p).unwrap())?;
        let y = conv2d_forced(&gx, &xl, &gw, &wl, None, p, forced).map_err(|e| e.to_string())?;
        close("forward without bias", dtype, &y, &x.conv2d(&xl, &w, &wl, None, p).unwrap())?;
        let dx = conv2d_backward_input_forced(&gg, &gl, &gw, &wl, p, forced).map_err(|e| e.to_string())?;
        close("grad input", dtype, &dx, &g.conv2d_backward_input(&gl, &w, &wl, p).unwrap())?;
        let dw = conv2d_backward_weight_forced(&gx, &xl, &gg, &gl, p, forced).map_err(|e| e.to_string())?;
        close("grad weight", dtype, &dw, &x.conv2d_backward_weight(&xl, &g, &gl, p).unwrap())?;
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

        /// Small random shapes, every tile, several K splits, every float
        /// dtype the GPU has (f16 and bf16 on tensor cores from Ampere on).
        #[test]
        fn implicit_conv_agrees_with_cpu(
            batch in 1usize..4, cin in 1usize..7, cout in 1usize..7,
            h in 1usize..12, w in 1usize..12, kh in 1usize..4, kw in 1usize..4,
            stride in 1usize..3, padding in 0usize..3,
            tile_index in 0usize..3, splits in 1usize..5,
            dtype in prop::sample::select(vec![DType::F32, DType::F64, DType::F16, DType::BF16]),
            seed in any::<u64>(),
        ) {
            let Some(dev) = super::super::device_for_tests() else { return Ok(()) };
            prop_assume!(kh <= h + 2 * padding && kw <= w + 2 * padding);
            prop_assume!(dev.check_dtype(dtype).is_ok());
            let p = Conv2dParams { batch, in_channels: cin, out_channels: cout, in_h: h, in_w: w, kernel_h: kh, kernel_w: kw, stride, padding };
            // One of the tiles of the engine this dtype runs on here.
            let tiles = Engine::for_dtype(dtype, dev.compute_capability()).tiles();
            let tile = tiles[tile_index % tiles.len()];
            let r = check(&dev, &p, dtype, seed, Some((tile, splits)));
            prop_assert!(r.is_ok(), "{:?} tile {:?} splits {}: {}", p, tile, splits, r.unwrap_err());
        }
    }

    /// Layer shapes of the diffusion U-Net, with the plans `plan` picks
    /// (128x128 tiles for the wide ones, K splits for grad weight), in f32
    /// and, where the GPU has bf16, on tensor cores.
    #[test]
    fn implicit_conv_agrees_with_cpu_on_unet_layers() {
        let Some(dev) = super::super::device_for_tests() else { return };
        let conv = |batch, cin, cout, hw, k, stride, padding| Conv2dParams {
            batch,
            in_channels: cin,
            out_channels: cout,
            in_h: hw,
            in_w: hw,
            kernel_h: k,
            kernel_w: k,
            stride,
            padding,
        };
        let layers = [
            conv(9, 32, 128, 64, 3, 1, 1),  // 128x128 tiles forward
            conv(4, 64, 64, 40, 3, 2, 1),   // a downsampling conv
            conv(2, 3, 64, 80, 3, 1, 1),    // the first conv (K = 27)
            conv(2, 64, 3, 80, 3, 1, 1),    // the last conv (M = 3)
            conv(4, 96, 48, 20, 1, 1, 0),   // a 1x1 skip projection
        ];
        for (i, p) in layers.iter().enumerate() {
            for dtype in [DType::F32, DType::BF16] {
                if dev.check_dtype(dtype).is_err() {
                    eprintln!("{dtype} skipped: {} has no {dtype}", dev.name());
                    continue;
                }
                let engine = Engine::for_dtype(dtype, dev.compute_capability());
                let plan_of = |pass: Pass| {
                    let (m, n, k) = pass.gemm(p);
                    plan(engine, pass, m, n, k)
                };
                eprintln!("{p:?} {dtype}: forward {:?}, grad weight {:?}", plan_of(Pass::Forward), plan_of(Pass::GradWeight));
                if let Err(e) = check(&dev, p, dtype, 7 + i as u64, None) {
                    panic!("{p:?}: {e}");
                }
            }
        }
    }
}
