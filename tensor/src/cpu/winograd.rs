//! 3x3 stride-1 convolutions by Winograd's minimal filtering, F(2x2, 3x3).
//!
//! A direct 3x3 convolution spends 9 multiplies per output and input
//! channel. Winograd's algorithm computes a 2x2 block of outputs from a 4x4
//! block of input with 16 multiplies instead of 36 (2.25x fewer), because
//! the input tile `d` and the filter `g` are first moved into a space where
//! the convolution is an elementwise product (Lavin & Gray, 2015):
//!
//! ```text
//! Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A
//! ```
//!
//! with small constant matrices of 0, ±1 and ±½. Across channels the
//! elementwise products become matrix products: for each of the 16
//! positions `e` of the transformed tile, `M[e] = U[e] @ V[e]`, with
//! `U[e]` the transformed filters `[Cout, Cin]` and `V[e]` the transformed
//! input tiles `[Cin, tiles]`. So one convolution is an input transform,
//! 16 GEMMs with a quarter of the columns of im2col's one, and an output
//! transform. The transforms are a few additions per value and stream
//! through memory; the GEMMs still carry nearly all the time.
//!
//! The two backward passes follow from the same algebra:
//! - grad input is itself a 3x3 stride-1 convolution of the output gradient
//!   with the filters flipped and their channel axes swapped (padding
//!   `2 - p`), so it reuses the forward path;
//! - grad weight transforms the output gradient with `A` (the adjoint of the
//!   output transform), forms `dU[e] = dM[e] @ V[e]ᵀ` summed over tiles, and
//!   folds `dU` back to 3x3 with `Gᵀ dU G`.
//!
//! Layouts, chosen so every loop that runs in parallel owns whole slices:
//! `V` and the grad-weight `dM` are `[channel][16][tiles]` (one channel's 16
//! planes together, written by one worker); `U`, the forward `M` and `dU`
//! are `[16][rows][cols]` (one GEMM's operand or result per position).
//! The GEMMs read the other layout through strides, which `gemm` takes as is.
//!
//! Rounding: the transforms add a few terms of similar size, so f32 results
//! differ from a direct convolution by a few times its own rounding error
//! (the tests bound it at 4e-5 of the sum of |terms|; the `kernels` bench
//! prints the error on U-Net shapes).
//!
//! There is no CUDA twin: the GPU convolutions are `cuda/conv.rs`.

use rayon::prelude::*;

use super::conv::sized;
use super::float::Float;
use super::matmul::{gemm, MatRef};
use crate::backend::Conv2dParams;
use crate::switch::EnvSwitch;

/// Positions of a transformed 4x4 tile.
const E: usize = 16;

/// Fewer channels than this make the 16 GEMMs too thin to gain over im2col
/// (the first layer, 3 -> 32, stays direct).
const MIN_CHANNELS: usize = 16;

/// Keep one chunk's transformed input and output within roughly this many
/// elements, so they stay in the outer caches between the three phases.
const MAX_CHUNK_ELEMS: usize = 1 << 22;

static ENABLED: EnvSwitch = EnvSwitch::new("PETAL_WINOGRAD");

/// Whether 3x3 stride-1 convolutions use Winograd: only when the environment
/// says `PETAL_WINOGRAD=1`, or `set_enabled(true)` was called. Off by
/// default: its transformed data streams through memory between the
/// phases, and a whole U-Net step on 2 threads was no faster with it
/// (BENCHMARKS.md). `winograd4.rs` keeps that data in cache and is the
/// default on CPUs with AVX2 or AVX-512.
pub fn enabled() -> bool {
    ENABLED.is_on()
}

/// Switches Winograd on or off for the whole process (benchmarks, and runs
/// that compare both paths).
pub fn set_enabled(on: bool) {
    ENABLED.set(on);
}

/// Whether the forward pass and the weight gradient of `p` take this path.
pub fn applies(p: &Conv2dParams) -> bool {
    p.kernel_h == 3
        && p.kernel_w == 3
        && p.stride == 1
        && p.in_channels >= MIN_CHANNELS
        && p.out_channels >= MIN_CHANNELS
        && p.batch > 0
        && p.in_h + 2 * p.padding >= 3
        && p.in_w + 2 * p.padding >= 3
        && enabled()
}

/// Whether the input gradient of `p` takes this path: it is a forward
/// convolution with padding `2 - p`, so the padding must be at most 2.
pub fn applies_backward_input(p: &Conv2dParams) -> bool {
    applies(p) && p.padding <= 2
}

/// How the output is cut into 2x2 tiles.
#[derive(Debug, Clone, Copy)]
struct Tiling {
    /// Tile rows and columns of one image.
    rows: usize,
    cols: usize,
    /// Images per chunk (one round of transforms and GEMMs).
    chunk: usize,
}

impl Tiling {
    fn new(p: &Conv2dParams) -> Tiling {
        let rows = p.out_h().div_ceil(2);
        let cols = p.out_w().div_ceil(2);
        let per_image = (p.in_channels + p.out_channels) * E * rows * cols;
        let chunk = (MAX_CHUNK_ELEMS / per_image.max(1)).clamp(1, p.batch.max(1));
        Tiling { rows, cols, chunk }
    }

    fn per_image(&self) -> usize {
        self.rows * self.cols
    }
}

/// `U = G g Gᵀ` for every filter, as `[16][Cout][Cin]`.
fn transform_weights<T: Float>(cout: usize, cin: usize, weight: &[T]) -> Vec<T> {
    let half = T::from_f64(0.5);
    let mut u = vec![T::ZERO; E * cout * cin];
    for (f, g) in weight.chunks_exact(9).enumerate() {
        // Rows: t = G g (4x3), then columns: G t (4x4 after transposition).
        let mut t = [[T::ZERO; 3]; 4];
        for j in 0..3 {
            let (g0, g1, g2) = (g[j], g[3 + j], g[6 + j]);
            t[0][j] = g0;
            t[1][j] = (g0 + g1 + g2) * half;
            t[2][j] = (g0 - g1 + g2) * half;
            t[3][j] = g2;
        }
        for (i, row) in t.iter().enumerate() {
            let [r0, r1, r2] = *row;
            let out = [r0, (r0 + r1 + r2) * half, (r0 - r1 + r2) * half, r2];
            for (j, &v) in out.iter().enumerate() {
                u[(i * 4 + j) * cout * cin + f] = v;
            }
        }
    }
    u
}

/// Copies one `h x w` plane into a zeroed `(2*rows + 2) x (2*cols + 2)`
/// buffer at offset `pad`, so every tile reads in bounds: the padding and
/// the overhang of the last tiles read zeros.
fn pad_plane<T: Float>(plane: &[T], h: usize, w: usize, pad: usize, tiling: &Tiling, buf: &mut [T]) {
    let pw = 2 * tiling.cols + 2;
    buf.fill(T::ZERO);
    for (y, row) in plane.chunks_exact(w).enumerate().take(h) {
        let py = y + pad;
        if py >= 2 * tiling.rows + 2 {
            break;
        }
        let n = w.min(pw.saturating_sub(pad));
        buf[py * pw + pad..][..n].copy_from_slice(&row[..n]);
    }
}

/// `V = Bᵀ d B` for every tile of a chunk of images, as `[Cin][16][P]`.
///
/// Worked a row of tiles at a time, so that every loop runs along
/// contiguous memory: `Bᵀ` combines four padded input rows over their whole
/// width, then `B` combines columns, writing one run of tiles of each of
/// the 16 planes.
fn transform_input<T: Float>(p: &Conv2dParams, tiling: &Tiling, x: &[T], v: &mut [T]) {
    let images = x.len() / (p.in_channels * p.in_h * p.in_w);
    let tiles = tiling.per_image();
    let big_p = images * tiles;
    let (h, w, cols) = (p.in_h, p.in_w, tiling.cols);
    let pw = 2 * cols + 2;
    let padded_len = (2 * tiling.rows + 2) * pw;
    v.par_chunks_mut(E * big_p)
        .enumerate()
        .for_each_init(
            || (Vec::new(), Vec::new()),
            |(buf, rows), (c, vc)| {
                let buf = sized(buf, padded_len);
                let rows = sized(rows, 4 * pw);
                for b in 0..images {
                    let plane = &x[(b * p.in_channels + c) * h * w..][..h * w];
                    pad_plane(plane, h, w, p.padding, tiling, buf);
                    for ty in 0..tiling.rows {
                        let d = &buf[2 * ty * pw..][..4 * pw];
                        let (d0, d1, d2, d3) = (&d[..pw], &d[pw..2 * pw], &d[2 * pw..3 * pw], &d[3 * pw..]);
                        let (t0, rest) = rows.split_at_mut(pw);
                        let (t1, rest) = rest.split_at_mut(pw);
                        let (t2, t3) = rest.split_at_mut(pw);
                        for x in 0..pw {
                            t0[x] = d0[x] - d2[x];
                            t1[x] = d1[x] + d2[x];
                            t2[x] = d2[x] - d1[x];
                            t3[x] = d1[x] - d3[x];
                        }
                        let start = b * tiles + ty * cols;
                        for (i, t) in rows.chunks_exact(pw).enumerate() {
                            // Column offsets 0..3 of tile tx are t[2tx..2tx+4].
                            let at = |k: usize| t[k..].iter().step_by(2);
                            let run = |j: usize| (i * 4 + j) * big_p + start;
                            let o = run(0);
                            vc[o..o + cols].iter_mut().zip(at(0).zip(at(2))).for_each(|(o, (&a, &b))| *o = a - b);
                            let o = run(1);
                            vc[o..o + cols].iter_mut().zip(at(1).zip(at(2))).for_each(|(o, (&a, &b))| *o = a + b);
                            let o = run(2);
                            vc[o..o + cols].iter_mut().zip(at(2).zip(at(1))).for_each(|(o, (&a, &b))| *o = a - b);
                            let o = run(3);
                            vc[o..o + cols].iter_mut().zip(at(1).zip(at(3))).for_each(|(o, (&a, &b))| *o = a - b);
                        }
                    }
                }
            },
        );
}

/// `Y = Aᵀ M A` plus the bias, from `M` as `[16][Cout][P]`, into the NCHW
/// output of the chunk. A row of tiles at a time: `A` combines the 16
/// planes' runs into four (two output rows, even and odd columns), which
/// are then interleaved into the two output rows.
fn transform_output<T: Float>(
    p: &Conv2dParams,
    tiling: &Tiling,
    m: &[T],
    bias: Option<&[T]>,
    y: &mut [T],
) {
    let (oh, ow, cout, cols) = (p.out_h(), p.out_w(), p.out_channels, tiling.cols);
    let tiles = tiling.per_image();
    let big_p = y.len() / (cout * oh * ow) * tiles;
    y.par_chunks_mut(oh * ow).enumerate().for_each_init(Vec::new, |scratch, (plane_index, plane)| {
        let (b, co) = (plane_index / cout, plane_index % cout);
        let bv = bias.map_or(T::ZERO, |bias| bias[co]);
        // s[i][j] = row i of M combined over columns with A (j = 0, 1).
        let s = sized(scratch, 8 * cols);
        for ty in 0..tiling.rows {
            let start = co * big_p + b * tiles + ty * cols;
            let run = |e: usize| &m[e * cout * big_p + start..][..cols];
            for (i, si) in s.chunks_exact_mut(2 * cols).enumerate() {
                let (s0, s1) = si.split_at_mut(cols);
                let (m0, m1, m2, m3) = (run(4 * i), run(4 * i + 1), run(4 * i + 2), run(4 * i + 3));
                for x in 0..cols {
                    s0[x] = m0[x] + m1[x] + m2[x];
                    s1[x] = m1[x] - m2[x] - m3[x];
                }
            }
            let row = |i: usize, j: usize| &s[(2 * i + j) * cols..][..cols];
            for dy in 0..2 {
                let oy = 2 * ty + dy;
                if oy >= oh {
                    break;
                }
                let out = &mut plane[oy * ow..][..ow];
                for j in 0..2 {
                    let (a, b, c) = if dy == 0 { (row(0, j), row(1, j), row(2, j)) } else { (row(1, j), row(2, j), row(3, j)) };
                    for (x, o) in out.iter_mut().skip(j).step_by(2).enumerate() {
                        *o = if dy == 0 { a[x] + b[x] + c[x] } else { a[x] - b[x] - c[x] } + bv;
                    }
                }
            }
        }
    });
}

/// The `e`-th plane of a `[channel][16][P]` matrix, as a `[channel, P]` operand.
fn plane<T>(data: &[T], e: usize, big_p: usize) -> MatRef<'_, T> {
    MatRef {
        data,
        offset: e * big_p,
        row_stride: (E * big_p) as isize,
        col_stride: 1,
    }
}

/// input [N,Cin,H,W], weight [Cout,Cin,3,3], bias [Cout] -> [N,Cout,OH,OW],
/// for stride 1 and any padding.
pub fn conv2d<T: Float>(p: &Conv2dParams, input: &[T], weight: &[T], bias: Option<&[T]>) -> Vec<T> {
    conv2d_tiled(p, &Tiling::new(p), input, weight, bias)
}

fn conv2d_tiled<T: Float>(p: &Conv2dParams, tiling: &Tiling, input: &[T], weight: &[T], bias: Option<&[T]>) -> Vec<T> {
    assert!(p.kernel_h == 3 && p.kernel_w == 3 && p.stride == 1, "Winograd F(2,3) needs a 3x3 stride-1 convolution");
    let (cin, cout) = (p.in_channels, p.out_channels);
    let in_image = cin * p.in_h * p.in_w;
    let out_image = cout * p.out_h() * p.out_w();
    assert_eq!(input.len(), p.batch * in_image);
    assert_eq!(weight.len(), cout * cin * 9);
    let mut out = vec![T::ZERO; p.batch * out_image];
    if out.is_empty() {
        return out;
    }
    if cin == 0 {
        if let Some(b) = bias {
            for (plane, &bv) in out.chunks_exact_mut(p.out_h() * p.out_w()).zip(b.iter().cycle()) {
                plane.fill(bv);
            }
        }
        return out;
    }
    let u = transform_weights(cout, cin, weight);
    let (mut v, mut m) = (Vec::new(), Vec::new());
    for (x, y) in input.chunks(tiling.chunk * in_image).zip(out.chunks_mut(tiling.chunk * out_image)) {
        let big_p = x.len() / in_image * tiling.per_image();
        let v = sized(&mut v, cin * E * big_p);
        transform_input(p, tiling, x, v);
        let m = sized(&mut m, E * cout * big_p);
        let v = &*v;
        m.par_chunks_mut(cout * big_p).enumerate().for_each(|(e, me)| {
            let ue = MatRef { data: &u[e * cout * cin..][..cout * cin], offset: 0, row_stride: cin as isize, col_stride: 1 };
            gemm(cout, big_p, cin, ue, plane(v, e, big_p), me, false, 1);
        });
        transform_output(p, tiling, m, bias, y);
    }
    out
}

/// grad_out [N,Cout,OH,OW], weight -> grad_input [N,Cin,H,W]: the forward
/// convolution of the output gradient with the flipped, channel-swapped
/// filters at padding `2 - p` (needs `p <= 2`).
pub fn conv2d_backward_input<T: Float>(p: &Conv2dParams, grad_out: &[T], weight: &[T]) -> Vec<T> {
    assert!(p.padding <= 2, "the Winograd input gradient needs padding <= 2");
    let (cin, cout) = (p.in_channels, p.out_channels);
    let mut flipped = vec![T::ZERO; weight.len()];
    for co in 0..cout {
        for ci in 0..cin {
            let src = &weight[(co * cin + ci) * 9..][..9];
            let dst = &mut flipped[(ci * cout + co) * 9..][..9];
            for (d, &s) in dst.iter_mut().zip(src.iter().rev()) {
                *d = s;
            }
        }
    }
    let transposed = Conv2dParams {
        batch: p.batch,
        in_channels: cout,
        out_channels: cin,
        in_h: p.out_h(),
        in_w: p.out_w(),
        kernel_h: 3,
        kernel_w: 3,
        stride: 1,
        padding: 2 - p.padding,
    };
    debug_assert_eq!((transposed.out_h(), transposed.out_w()), (p.in_h, p.in_w));
    conv2d(&transposed, grad_out, &flipped, None)
}

/// input, grad_out -> grad_weight [Cout,Cin,3,3].
pub fn conv2d_backward_weight<T: Float>(p: &Conv2dParams, input: &[T], grad_out: &[T]) -> Vec<T> {
    conv2d_backward_weight_tiled(p, &Tiling::new(p), input, grad_out)
}

fn conv2d_backward_weight_tiled<T: Float>(p: &Conv2dParams, tiling: &Tiling, input: &[T], grad_out: &[T]) -> Vec<T> {
    assert!(p.kernel_h == 3 && p.kernel_w == 3 && p.stride == 1, "Winograd F(2,3) needs a 3x3 stride-1 convolution");
    let (cin, cout) = (p.in_channels, p.out_channels);
    let (oh, ow) = (p.out_h(), p.out_w());
    let in_image = cin * p.in_h * p.in_w;
    let out_image = cout * oh * ow;
    assert_eq!(input.len(), p.batch * in_image);
    assert_eq!(grad_out.len(), p.batch * out_image);
    let len = cout * cin * 9;
    if len == 0 || p.batch == 0 || oh * ow == 0 {
        return vec![T::ZERO; len];
    }
    let (tiles, cols) = (tiling.per_image(), tiling.cols);
    let mut du = vec![T::ZERO; E * cout * cin];
    let (mut v, mut dm) = (Vec::new(), Vec::new());
    for (round, (x, g)) in input.chunks(tiling.chunk * in_image).zip(grad_out.chunks(tiling.chunk * out_image)).enumerate() {
        let images = x.len() / in_image;
        let big_p = images * tiles;
        let v = sized(&mut v, cin * E * big_p);
        transform_input(p, tiling, x, v);
        // dM = A dY Aᵀ per tile, as [Cout][16][P], a row of tiles at a time.
        let dm = sized(&mut dm, cout * E * big_p);
        dm.par_chunks_mut(E * big_p).enumerate().for_each_init(Vec::new, |scratch, (co, dmc)| {
            // Two output-gradient rows, zero past the edge, then the column
            // combinations of one tile column offset j for both rows.
            let buf = sized(scratch, 6 * cols);
            let (rows, comb) = buf.split_at_mut(4 * cols);
            for b in 0..images {
                let plane = &g[(b * cout + co) * oh * ow..][..oh * ow];
                for ty in 0..tiling.rows {
                    for (r, row) in rows.chunks_exact_mut(2 * cols).enumerate() {
                        let oy = 2 * ty + r;
                        row.fill(T::ZERO);
                        if oy < oh {
                            row[..ow].copy_from_slice(&plane[oy * ow..][..ow]);
                        }
                    }
                    let (g0, g1) = rows.split_at(2 * cols);
                    let start = b * tiles + ty * cols;
                    for j in 0..4 {
                        // A's rows applied along x: [a, a + b, a - b, -b] of (a, b) = columns (2tx, 2tx+1).
                        let spread = |q: &[T]| match j {
                            0 => q[0],
                            1 => q[0] + q[1],
                            2 => q[0] - q[1],
                            _ => -q[1],
                        };
                        let (c0, c1) = comb.split_at_mut(cols);
                        c0.iter_mut().zip(g0.chunks_exact(2)).for_each(|(c, q)| *c = spread(q));
                        c1.iter_mut().zip(g1.chunks_exact(2)).for_each(|(c, q)| *c = spread(q));
                        // ... and along y.
                        let run = |i: usize| (i * 4 + j) * big_p + start;
                        dmc[run(0)..][..cols].copy_from_slice(c0);
                        dmc[run(1)..][..cols].iter_mut().zip(c0.iter().zip(c1.iter())).for_each(|(o, (&a, &b))| *o = a + b);
                        dmc[run(2)..][..cols].iter_mut().zip(c0.iter().zip(c1.iter())).for_each(|(o, (&a, &b))| *o = a - b);
                        dmc[run(3)..][..cols].iter_mut().zip(c1.iter()).for_each(|(o, &b)| *o = -b);
                    }
                }
            }
        });
        // dU[e] (+)= dM[e] @ V[e]ᵀ, the sum over this chunk's tiles.
        let (v, dm) = (&*v, &*dm);
        du.par_chunks_mut(cout * cin).enumerate().for_each(|(e, due)| {
            let vt = MatRef { data: v, offset: e * big_p, row_stride: 1, col_stride: (E * big_p) as isize };
            gemm(cout, cin, big_p, plane(dm, e, big_p), vt, due, round > 0, 1);
        });
    }
    // dW = Gᵀ dU G for every filter.
    let half = T::from_f64(0.5);
    let fold = |u: [T; 4]| [u[0] + (u[1] + u[2]) * half, (u[1] - u[2]) * half, (u[1] + u[2]) * half + u[3]];
    let mut dw = vec![T::ZERO; len];
    for (f, out) in dw.chunks_exact_mut(9).enumerate() {
        let mut rows = [[T::ZERO; 3]; 4];
        for (i, row) in rows.iter_mut().enumerate() {
            let u = [0, 1, 2, 3].map(|j| du[(i * 4 + j) * cout * cin + f]);
            *row = fold(u);
        }
        for l in 0..3 {
            let col = fold([rows[0][l], rows[1][l], rows[2][l], rows[3][l]]);
            for k in 0..3 {
                out[k * 3 + l] = col[k];
            }
        }
    }
    dw
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::conv::tests::{conv3x3_case, naive_backward, naive_forward, to32};
    use proptest::prelude::*;

    /// Any 3x3 stride-1 shape, including ones `applies` would send to im2col
    /// (few channels, 1x1 outputs, odd sizes), padding 0 to 2.
    fn case() -> impl Strategy<Value = (Conv2dParams, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>)> {
        conv3x3_case((1usize..4, 1usize..6, 1usize..6, 1usize..10, 1usize..10, 0usize..3))
    }

    /// f64 must agree to 1e-10 and f32 to 4e-5 of the sum of |terms| (the
    /// transforms add a few rounding steps to the direct convolution's).
    fn close<T: Float>(got: &[T], want: &[f64], mag: &[f64], tol: f64) -> Result<(), TestCaseError> {
        prop_assert_eq!(got.len(), want.len());
        for (i, ((&g, &w), &m)) in got.iter().zip(want).zip(mag).enumerate() {
            prop_assert!((g.to_f64() - w).abs() <= tol * (m + 1.0), "at {}: {} vs {} (mag {})", i, g, w, m);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn forward_matches_naive((p, x, w, b, _g) in case(), use_bias in any::<bool>()) {
            let bias = use_bias.then_some(&b[..]);
            let (want, mag) = naive_forward(&p, &x, &w, bias);
            close(&conv2d(&p, &x, &w, bias), &want, &mag, 1e-10)?;
            let b32 = to32(&b);
            close(&conv2d(&p, &to32(&x), &to32(&w), use_bias.then_some(&b32[..])), &want, &mag, 4e-5)?;
        }

        #[test]
        fn backward_input_matches_naive((p, x, w, _b, g) in case()) {
            let [(want, mag), _] = naive_backward(&p, &x, &w, &g);
            close(&conv2d_backward_input(&p, &g, &w), &want, &mag, 1e-10)?;
            close(&conv2d_backward_input(&p, &to32(&g), &to32(&w)), &want, &mag, 4e-5)?;
        }

        #[test]
        fn backward_weight_matches_naive((p, x, w, _b, g) in case()) {
            let [_, (want, mag)] = naive_backward(&p, &x, &w, &g);
            close(&conv2d_backward_weight(&p, &x, &g), &want, &mag, 1e-10)?;
            close(&conv2d_backward_weight(&p, &to32(&x), &to32(&g)), &want, &mag, 4e-5)?;
        }
    }

    /// Several chunks of images: the weight gradient sums across rounds, and
    /// the forward pass writes each round's images in place.
    #[test]
    fn many_chunks_match_naive() {
        let p = Conv2dParams { batch: 5, in_channels: 16, out_channels: 17, in_h: 13, in_w: 11, kernel_h: 3, kernel_w: 3, stride: 1, padding: 1 };
        let tiling = Tiling { chunk: 2, ..Tiling::new(&p) };
        let fill = |n: usize, s: f64| (0..n).map(|i| (i as f64 * s).sin() * 2.0).collect::<Vec<f64>>();
        let x = fill(p.batch * 16 * 13 * 11, 0.37);
        let w = fill(17 * 16 * 9, 0.91);
        let g = fill(p.batch * 17 * 13 * 11, 0.53);
        let (want, mag) = naive_forward(&p, &x, &w, None);
        close(&conv2d_tiled(&p, &tiling, &x, &w, None), &want, &mag, 1e-10).unwrap();
        let [_, (want_dw, mag_dw)] = naive_backward(&p, &x, &w, &g);
        close(&conv2d_backward_weight_tiled(&p, &tiling, &x, &g), &want_dw, &mag_dw, 1e-10).unwrap();
    }

    #[test]
    fn applies_only_to_wide_3x3_stride_1() {
        let p = Conv2dParams { batch: 2, in_channels: 64, out_channels: 64, in_h: 8, in_w: 8, kernel_h: 3, kernel_w: 3, stride: 1, padding: 1 };
        set_enabled(true);
        assert!(applies(&p) && applies_backward_input(&p));
        assert!(!applies(&Conv2dParams { stride: 2, ..p }));
        assert!(!applies(&Conv2dParams { kernel_h: 1, kernel_w: 1, padding: 0, ..p }));
        assert!(!applies(&Conv2dParams { in_channels: 3, ..p }));
        assert!(applies(&Conv2dParams { padding: 3, ..p }) && !applies_backward_input(&Conv2dParams { padding: 3, ..p }));
    }
}
