//! 2-D convolution (NCHW, weight [Cout, Cin, kh, kw]) as im2col + cuBLAS.
//!
//! Unfolding every receptive field into a column ("im2col", `conv.cu`) turns
//! the convolution of one image into one matrix product,
//! `y[b] = W [Cout, K] @ cols[b] [K, OH*OW]` with `K = Cin*kh*kw`, and the
//! output is already NCHW. The images of a chunk are one strided-batched
//! GEMM. The backward passes are the transposed products:
//! - grad input: `cols[b] = W^T @ grad[b]`, then `col2im` folds the columns
//!   back onto the image (adding where receptive fields overlap);
//! - grad weight: `dW = sum_b grad[b] @ cols[b]^T`. Here the columns of a
//!   chunk are laid side by side, [K, imgs*OH*OW], and the gradient is
//!   permuted to [Cout, imgs*OH*OW], so the sum over images happens inside
//!   one wide GEMM (small feature maps would make per-image GEMMs tiny).
//!
//! Pointwise convolutions (1x1, stride 1, no padding) skip the unfold in the
//! forward and grad-input passes: the image itself is the column matrix.
//! The unfolded matrix is built a chunk of images at a time, so its scratch
//! memory stays under `MAX_COL_BYTES` whatever the batch size.
//!
//! `PETAL_CUDA_CONV=implicit` replaces all three passes with the implicit
//! GEMM kernels of `conv_implicit.rs`, which never build the columns; this
//! file stays the default and the reference.
//!
//! CPU twin: `cpu/conv.rs`.

use super::conv_implicit;
use super::elementwise::{float_only, same_dtype};
use super::matmul::{gemm, MatRef};
use super::{check_u32, launch_cfg, CudaDevice, CudaResultExt, CudaStorage};
use crate::backend::Conv2dParams;
use crate::{DType, Error, Layout, Result, Shape};
use cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};

const MAX_COL_BYTES: usize = 256 << 20;

/// Matches `struct ConvGeom` in conv.cu.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct ConvGeom {
    nb: u32,
    c: u32,
    h: u32,
    w: u32,
    kh: u32,
    kw: u32,
    stride: u32,
    pad: u32,
    oh: u32,
    ow: u32,
    col_img: u32,
    col_row: u32,
}
// SAFETY: plain `#[repr(C)]` integers.
unsafe impl DeviceRepr for ConvGeom {}

/// Shorthands for the sizes every pass uses.
struct Dims {
    n: usize,
    c: usize,
    oc: usize,
    hw: usize,
    ohw: usize,
    k: usize,
}

fn dims(p: &Conv2dParams) -> Dims {
    Dims {
        n: p.batch,
        c: p.in_channels,
        oc: p.out_channels,
        hw: p.in_h * p.in_w,
        ohw: p.out_h() * p.out_w(),
        k: p.in_channels * p.kernel_h * p.kernel_w,
    }
}

pub(super) fn check_params(p: &Conv2dParams) -> Result<()> {
    let ok = p.stride >= 1
        && p.kernel_h >= 1
        && p.kernel_w >= 1
        && p.in_h + 2 * p.padding >= p.kernel_h
        && p.in_w + 2 * p.padding >= p.kernel_w;
    if !ok {
        return Err(Error::BadArgument { op: "conv2d", msg: format!("invalid parameters {p:?}") });
    }
    Ok(())
}

pub(super) fn contiguous(op: &'static str, l: &Layout) -> Result<()> {
    if !l.is_contiguous() {
        return Err(Error::BadShape { op, shape: l.shape().clone(), msg: "expects a contiguous input".into() });
    }
    Ok(())
}

fn is_pointwise(p: &Conv2dParams) -> bool {
    p.kernel_h == 1 && p.kernel_w == 1 && p.stride == 1 && p.padding == 0
}

/// Images per chunk so that `per_image` bytes of scratch each stay under the cap.
fn chunk_images(n: usize, per_image: usize) -> usize {
    (MAX_COL_BYTES / per_image.max(1)).clamp(1, n.max(1))
}

fn geom(p: &Conv2dParams, nb: usize, col_img: usize, col_row: usize) -> Result<ConvGeom> {
    let u = |v: usize| check_u32("conv2d", v);
    Ok(ConvGeom {
        nb: u(nb)?,
        c: u(p.in_channels)?,
        h: u(p.in_h)?,
        w: u(p.in_w)?,
        kh: u(p.kernel_h)?,
        kw: u(p.kernel_w)?,
        stride: u(p.stride)?,
        pad: u(p.padding)?,
        oh: u(p.out_h())?,
        ow: u(p.out_w())?,
        col_img: u(col_img)?,
        col_row: u(col_row)?,
    })
}

/// A 2-D launch over `planes` (image, channel) planes of `pixels` each (see
/// conv.cu): a block as wide as a plane needs (whole warps, at most 256
/// threads), one block row per plane up to the grid's limit.
fn planes_cfg(planes: usize, pixels: usize) -> LaunchConfig {
    let threads = pixels.div_ceil(32).clamp(1, 8) as u32 * 32;
    let blocks_x = pixels.div_ceil(threads as usize).clamp(1, 1 << 16) as u32;
    let blocks_y = planes.clamp(1, 65_535) as u32;
    LaunchConfig { grid_dim: (blocks_x, blocks_y, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 }
}

/// Unfolds `g.nb` images at `x` into `col`.
fn im2col(dev: &CudaDevice, dtype: DType, x: u64, col: u64, g: &ConvGeom, p: &Conv2dParams) -> Result<()> {
    let planes = g.nb as usize * p.in_channels;
    check_u32("conv2d", planes * p.kernel_h * p.kernel_w * p.out_h() * p.out_w())?;
    let f = dev.func("conv", &format!("im2col_{}", dtype.name()))?;
    let mut b = dev.stream().launch_builder(&f);
    b.arg(&x).arg(&col).arg(g);
    // SAFETY: x holds nb images, col holds nb*K*OHW elements at the strides in g.
    unsafe { b.launch(planes_cfg(planes, p.out_h() * p.out_w())) }.ctx("im2col kernel").map(|_| ())
}

/// Folds the columns of `g.nb` images back into images at `x`.
fn col2im(dev: &CudaDevice, dtype: DType, col: u64, x: u64, g: &ConvGeom, p: &Conv2dParams) -> Result<()> {
    let planes = g.nb as usize * p.in_channels;
    check_u32("conv2d", planes * p.in_h * p.in_w)?;
    let f = dev.func("conv", &format!("col2im_{}", dtype.name()))?;
    let mut b = dev.stream().launch_builder(&f);
    b.arg(&col).arg(&x).arg(g);
    // SAFETY: as for im2col, in the other direction.
    unsafe { b.launch(planes_cfg(planes, p.in_h * p.in_w)) }.ctx("col2im kernel").map(|_| ())
}

pub(crate) fn conv2d(
    x: &CudaStorage,
    xl: &Layout,
    w: &CudaStorage,
    wl: &Layout,
    bias: Option<(&CudaStorage, &Layout)>,
    p: &Conv2dParams,
) -> Result<CudaStorage> {
    if conv_implicit::selected()? {
        return conv_implicit::conv2d(x, xl, w, wl, bias, p);
    }
    same_dtype("conv2d", x, w)?;
    float_only("conv2d", x.dtype)?;
    check_params(p)?;
    contiguous("conv2d", xl)?;
    contiguous("conv2d", wl)?;
    let (dev, dt, d) = (x.device(), x.dtype, dims(p));
    let out = dev.alloc(d.n * d.oc * d.ohw, dt)?;
    if out.len == 0 {
        return Ok(out);
    }
    if d.k == 0 {
        dev.zero_bytes(out.ptr(), out.len * dt.size_in_bytes())?;
    }
    let wm = MatRef { ptr: w.ptr_at(wl.offset()), rs: d.k, cs: 1, batch_stride: 0 };
    if d.k > 0 && is_pointwise(p) {
        let xm = MatRef { ptr: x.ptr_at(xl.offset()), rs: d.hw, cs: 1, batch_stride: d.c * d.hw };
        gemm(dev, dt, d.n, (d.oc, d.ohw, d.k), wm, xm, out.ptr(), d.oc * d.ohw, 0.0)?;
    } else if d.k > 0 {
        let size = dt.size_in_bytes();
        let nb = chunk_images(d.n, d.k * d.ohw * size);
        let col = dev.scratch(nb * d.k * d.ohw * size)?;
        for start in (0..d.n).step_by(nb) {
            let cnt = nb.min(d.n - start);
            let g = geom(p, cnt, d.k * d.ohw, d.ohw)?;
            im2col(dev, dt, x.ptr_at(xl.offset() + start * d.c * d.hw), col.ptr(), &g, p)?;
            let cm = MatRef { ptr: col.ptr(), rs: d.ohw, cs: 1, batch_stride: d.k * d.ohw };
            let y = out.ptr_at(start * d.oc * d.ohw);
            gemm(dev, dt, cnt, (d.oc, d.ohw, d.k), wm, cm, y, d.oc * d.ohw, 0.0)?;
        }
    }
    if let Some((b, bl)) = bias {
        same_dtype("conv2d", x, b)?;
        contiguous("conv2d", bl)?;
        let n = out.len;
        let (n32, c32, hw32) = (check_u32("conv2d", n)?, check_u32("conv2d", d.oc)?, check_u32("conv2d", d.ohw)?);
        let f = dev.func("conv", &format!("add_bias_{}", dt.name()))?;
        let (yp, bp) = (out.ptr(), b.ptr_at(bl.offset()));
        let mut lb = dev.stream().launch_builder(&f);
        lb.arg(&yp).arg(&bp).arg(&c32).arg(&hw32).arg(&n32);
        // SAFETY: y holds n elements, bias holds Cout.
        unsafe { lb.launch(launch_cfg(n)) }.ctx("conv bias kernel")?;
    }
    Ok(out)
}

pub(crate) fn conv2d_backward_input(
    g: &CudaStorage,
    gl: &Layout,
    w: &CudaStorage,
    wl: &Layout,
    p: &Conv2dParams,
) -> Result<CudaStorage> {
    if conv_implicit::selected()? {
        return conv_implicit::conv2d_backward_input(g, gl, w, wl, p);
    }
    same_dtype("conv2d backward", g, w)?;
    float_only("conv2d backward", g.dtype)?;
    check_params(p)?;
    contiguous("conv2d backward", gl)?;
    contiguous("conv2d backward", wl)?;
    let (dev, dt, d) = (g.device(), g.dtype, dims(p));
    let dx = dev.alloc(d.n * d.c * d.hw, dt)?;
    if dx.len == 0 {
        return Ok(dx);
    }
    if d.oc == 0 || d.ohw == 0 {
        dev.zero_bytes(dx.ptr(), dx.len * dt.size_in_bytes())?;
        return Ok(dx);
    }
    // W^T [K, Cout] read straight from W [Cout, K].
    let wt = MatRef { ptr: w.ptr_at(wl.offset()), rs: 1, cs: d.k, batch_stride: 0 };
    if is_pointwise(p) {
        let gm = MatRef { ptr: g.ptr_at(gl.offset()), rs: d.ohw, cs: 1, batch_stride: d.oc * d.ohw };
        gemm(dev, dt, d.n, (d.k, d.ohw, d.oc), wt, gm, dx.ptr(), d.c * d.hw, 0.0)?;
        return Ok(dx);
    }
    let size = dt.size_in_bytes();
    let nb = chunk_images(d.n, d.k * d.ohw * size);
    let col = dev.scratch(nb * d.k * d.ohw * size)?;
    for start in (0..d.n).step_by(nb) {
        let cnt = nb.min(d.n - start);
        let gm = MatRef { ptr: g.ptr_at(gl.offset() + start * d.oc * d.ohw), rs: d.ohw, cs: 1, batch_stride: d.oc * d.ohw };
        gemm(dev, dt, cnt, (d.k, d.ohw, d.oc), wt, gm, col.ptr(), d.k * d.ohw, 0.0)?;
        let geo = geom(p, cnt, d.k * d.ohw, d.ohw)?;
        col2im(dev, dt, col.ptr(), dx.ptr_at(start * d.c * d.hw), &geo, p)?;
    }
    Ok(dx)
}

pub(crate) fn conv2d_backward_weight(
    x: &CudaStorage,
    xl: &Layout,
    g: &CudaStorage,
    gl: &Layout,
    p: &Conv2dParams,
) -> Result<CudaStorage> {
    if conv_implicit::selected()? {
        return conv_implicit::conv2d_backward_weight(x, xl, g, gl, p);
    }
    same_dtype("conv2d backward", x, g)?;
    float_only("conv2d backward", x.dtype)?;
    check_params(p)?;
    contiguous("conv2d backward", xl)?;
    contiguous("conv2d backward", gl)?;
    let (dev, dt, d) = (x.device(), x.dtype, dims(p));
    let dw = dev.alloc(d.oc * d.k, dt)?;
    if dw.len == 0 {
        return Ok(dw);
    }
    if d.n == 0 || d.ohw == 0 {
        dev.zero_bytes(dw.ptr(), dw.len * dt.size_in_bytes())?;
        return Ok(dw);
    }
    let size = dt.size_in_bytes();
    let nb = chunk_images(d.n, (d.k + d.oc) * d.ohw * size);
    let col = dev.scratch(nb * d.k * d.ohw * size)?;
    for (i, start) in (0..d.n).step_by(nb).enumerate() {
        let cnt = nb.min(d.n - start);
        let wide = cnt * d.ohw;
        // Columns of the chunk side by side: [K, cnt*OHW].
        let geo = geom(p, cnt, d.ohw, wide)?;
        im2col(dev, dt, x.ptr_at(xl.offset() + start * d.c * d.hw), col.ptr(), &geo, p)?;
        // The chunk's gradient as [Cout, cnt*OHW] (a permuted copy unless cnt == 1).
        let g_off = gl.offset() + start * d.oc * d.ohw;
        let permuted;
        let gm = if cnt == 1 {
            MatRef { ptr: g.ptr_at(g_off), rs: d.ohw, cs: 1, batch_stride: 0 }
        } else {
            let view = Layout::new(Shape::from([d.oc, cnt, d.ohw]), vec![d.ohw, d.oc * d.ohw, 1], g_off);
            permuted = super::copy::cast(g, &view, dt)?;
            MatRef { ptr: permuted.ptr(), rs: wide, cs: 1, batch_stride: 0 }
        };
        // cols^T [cnt*OHW, K] read from cols [K, cnt*OHW].
        let ct = MatRef { ptr: col.ptr(), rs: 1, cs: wide, batch_stride: 0 };
        let beta = if i == 0 { 0.0 } else { 1.0 };
        gemm(dev, dt, 1, (d.oc, d.k, wide), gm, ct, dw.ptr(), 0, beta)?;
    }
    Ok(dw)
}
