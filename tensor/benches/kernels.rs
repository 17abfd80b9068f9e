//! Throughput of the CPU compute kernels: GEMM, convolution (forward, both
//! backwards, and the sum of the three), group norm, pooling and upsampling.
//!
//! A plain binary (`harness = false`): each case is warmed up, then timed
//! several times, and the median is printed, which shrugs off the odd
//! scheduling hiccup on a shared machine better than the mean.
//!
//! Run with `cargo bench -p tensor --bench kernels [-- FILTER]`; a FILTER
//! argument keeps only the cases whose name contains it.

use std::hint::black_box;
use std::time::Instant;

use tensor::backend::{Conv2dParams, GroupNormParams, Pool2dParams};
use tensor::cpu::conv;
use tensor::cpu::group_norm;
use tensor::cpu::matmul;
use tensor::cpu::pool;
use tensor::cpu::upsample;
use tensor::cpu::conv_direct;
use tensor::cpu::winograd;
use tensor::cpu::winograd4;

/// (median, best) seconds per call of `f`, after warm-up, over 3..50 timed
/// calls (fewer when a single call is slow, so the whole run stays short).
/// The best shows the kernel's speed when the machine is shared and noisy.
fn time<R>(mut f: impl FnMut() -> R) -> (f64, f64) {
    let start = Instant::now();
    black_box(f());
    let first = start.elapsed().as_secs_f64();
    black_box(f());
    let reps = ((1.5 / first.max(1e-6)) as usize).clamp(3, 50);
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (times[times.len() / 2], times[0])
}

/// Deterministic pseudo-random values in [-1, 1) (no rand dependency needed).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

struct Bench {
    filter: Option<String>,
}

impl Bench {
    fn wants(&self, name: &str) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|f| name.contains(f.as_str()))
    }

    fn report(&self, name: &str, (median, best): (f64, f64), amount: f64, unit: &str) {
        println!(
            "{name:<48} {:>9.3} ms {:>8.1} {unit:<7} (best {:>6.1})",
            median * 1e3,
            amount / median / 1e9,
            amount / best / 1e9
        );
    }

    fn matmul(&self, n: usize) {
        let name = format!("matmul {n}x{n}x{n} f32");
        if !self.wants(&name) {
            return;
        }
        let (a, b) = (values(n * n, 1), values(n * n, 2));
        let mut c = vec![0.0f32; n * n];
        let threads = rayon::current_num_threads();
        let m = |d: &'static [f32]| matmul::MatRef {
            data: d,
            offset: 0,
            row_stride: n as isize,
            col_stride: 1,
        };
        let (a, b): (&'static [f32], &'static [f32]) = (a.leak(), b.leak());
        let t = time(|| matmul::gemm(n, n, n, m(a), m(b), &mut c, false, threads));
        self.report(&name, t, 2.0 * (n * n * n) as f64, "GFLOP/s");
    }

    /// Stride-1 shapes run through each path that takes them: im2col, the
    /// direct kernel and (3x3 only) Winograd; Winograd's f32 error against
    /// an f64 direct convolution is printed too.
    fn conv(&self, label: &str, p: Conv2dParams, all_passes: bool) {
        winograd::set_enabled(true);
        let by_winograd = winograd::applies(&p);
        winograd::set_enabled(false);
        let by_winograd4 = winograd4::applies(&p);
        winograd4::set_disabled(true);
        let direct = conv_direct::applies(&p);
        if !by_winograd && !direct {
            self.conv_path(label, p, all_passes);
            winograd4::set_disabled(false);
            return;
        }
        conv_direct::set_disabled(true);
        self.conv_path(&format!("{label} im2col"), p, all_passes);
        conv_direct::set_disabled(false);
        if direct {
            let isa = conv_direct::isa().unwrap_or("none");
            self.conv_path(&format!("{label} direct {isa}"), p, all_passes);
            if isa == "avx512" {
                conv_direct::set_avx512_disabled(true);
                self.conv_path(&format!("{label} direct avx2"), p, all_passes);
                conv_direct::set_avx512_disabled(false);
            }
        }
        winograd4::set_disabled(false);
        if by_winograd4 {
            let isa = conv_direct::isa().unwrap_or("none");
            self.conv_path(&format!("{label} winograd4 {isa}"), p, all_passes);
        } else if all_passes && winograd4::applies_backward_weight(&p) {
            // Maps too small for its forward pass (8x8) still take its weight gradient.
            let name = format!("conv {label} winograd4 {} backward_weight", conv_direct::isa().unwrap_or("none"));
            if self.wants(&name) {
                let x = values(p.batch * p.in_channels * p.in_h * p.in_w, 3);
                let g = values(p.batch * p.out_channels * p.out_h() * p.out_w(), 6);
                self.report(&name, time(|| conv::conv2d_backward_weight(&p, &x, &g)), p.flops(), "GFLOP/s");
            }
        }
        if winograd4::applies_backward_weight(&p) && self.wants(&format!("conv {label} winograd4 backward_weight error")) {
            let x = values(p.batch * p.in_channels * p.in_h * p.in_w, 3);
            let g = values(p.batch * p.out_channels * p.out_h() * p.out_w(), 6);
            let wide = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<f64>>();
            let exact = conv::conv2d_backward_weight(&p, &wide(&x), &wide(&g));
            let f4 = conv::conv2d_backward_weight(&p, &x, &g);
            winograd4::set_disabled(true);
            let direct = conv::conv2d_backward_weight(&p, &x, &g);
            winograd4::set_disabled(false);
            let scale = exact.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let err = |got: &[f32]| got.iter().zip(&exact).fold(0.0f64, |m, (&a, b)| m.max((a as f64 - b).abs())) / scale;
            println!("conv {label} backward_weight: max |f32 - f64| / max |dw|: winograd4 {:.2e}, direct {:.2e}", err(&f4), err(&direct));
        }
        if !by_winograd {
            return;
        }
        winograd::set_enabled(true);
        self.conv_path(&format!("{label} winograd"), p, all_passes);
        if self.wants(&format!("conv {label} winograd error")) {
            let x = values(p.batch * p.in_channels * p.in_h * p.in_w, 3);
            let w = values(p.out_channels * p.in_channels * 9, 4);
            let fast = conv::conv2d(&p, &x, &w, None);
            winograd::set_enabled(false);
            let wide = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<f64>>();
            let exact = conv::conv2d(&p, &wide(&x), &wide(&w), None);
            winograd4::set_disabled(true);
            let direct = conv::conv2d(&p, &x, &w, None);
            winograd4::set_disabled(false);
            let f4 = conv::conv2d(&p, &x, &w, None);
            winograd::set_enabled(true);
            let scale = exact.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let err = |got: &[f32]| got.iter().zip(&exact).fold(0.0f64, |m, (&a, b)| m.max((a as f64 - b).abs())) / scale;
            println!(
                "conv {label}: max |f32 - f64 direct| / max |y|: winograd {:.2e}, winograd4 {:.2e}, direct or im2col {:.2e}",
                err(&fast),
                err(&f4),
                err(&direct)
            );
        }
    }

    fn conv_path(&self, label: &str, p: Conv2dParams, all_passes: bool) {
        let x = values(p.batch * p.in_channels * p.in_h * p.in_w, 3);
        let w = values(p.out_channels * p.in_channels * p.kernel_h * p.kernel_w, 4);
        let b = values(p.out_channels, 5);
        let g = values(p.batch * p.out_channels * p.out_h() * p.out_w(), 6);
        let flops = p.flops();
        let fwd = format!("conv {label} forward");
        if self.wants(&fwd) {
            self.report(
                &fwd,
                time(|| conv::conv2d(&p, &x, &w, Some(&b))),
                flops,
                "GFLOP/s",
            );
        }
        if all_passes {
            let name = format!("conv {label} backward_input");
            if self.wants(&name) {
                self.report(
                    &name,
                    time(|| conv::conv2d_backward_input(&p, &g, &w)),
                    flops,
                    "GFLOP/s",
                );
            }
            let name = format!("conv {label} backward_weight");
            if self.wants(&name) {
                self.report(
                    &name,
                    time(|| conv::conv2d_backward_weight(&p, &x, &g)),
                    flops,
                    "GFLOP/s",
                );
            }
        }
        let name = format!("conv {label} fwd+bwd");
        if self.wants(&name) {
            let t = time(|| {
                let y = conv::conv2d(&p, &x, &w, Some(&b));
                let dx = conv::conv2d_backward_input(&p, &g, &w);
                let dw = conv::conv2d_backward_weight(&p, &x, &g);
                (y, dx, dw)
            });
            self.report(&name, t, 3.0 * flops, "GFLOP/s");
        }
    }

    fn group_norm(&self, n: usize, c: usize, hw: usize, groups: usize) {
        let p = GroupNormParams {
            batch: n,
            channels: c,
            spatial: hw * hw,
            groups,
            eps: 1e-5,
        };
        let len = n * c * hw * hw;
        let x = values(len, 7);
        let g = values(len, 8);
        let gamma = values(c, 9);
        let beta = values(c, 10);
        let bytes = (len * 4) as f64;
        let name = format!("group_norm [{n},{c},{hw},{hw}] g{groups} forward");
        if self.wants(&name) {
            // Bytes that must move: read x, write y.
            self.report(
                &name,
                time(|| group_norm::group_norm(&p, &x, &gamma, &beta)),
                2.0 * bytes,
                "GB/s",
            );
        }
        let name = format!("group_norm [{n},{c},{hw},{hw}] g{groups} backward");
        if self.wants(&name) {
            let (_, mean, rstd) = group_norm::group_norm(&p, &x, &gamma, &beta);
            // Read x and dy, write dx.
            let t = time(|| group_norm::group_norm_backward(&p, &x, &gamma, &mean, &rstd, &g));
            self.report(&name, t, 3.0 * bytes, "GB/s");
        }
    }

    /// GroupNorm followed by SiLU, as the U-Net runs it: the fused op
    /// against group norm and then a separate SiLU pass (whose backward
    /// reads the kept normalised tensor), through the public `Tensor` API.
    /// GB/s counts the bytes the fused op must move.
    fn group_norm_silu(&self, n: usize, c: usize, hw: usize, groups: usize) {
        use tensor::{Device, Tensor};
        let shape = [n, c, hw, hw];
        let len = n * c * hw * hw;
        let bytes = (len * 4) as f64;
        let dev = Device::Cpu;
        let x = Tensor::from_vec(values(len, 31), shape, &dev).unwrap();
        let dy = Tensor::from_vec(values(len, 32), shape, &dev).unwrap();
        let gamma = Tensor::from_vec(values(c, 33), c, &dev).unwrap();
        let beta = Tensor::from_vec(values(c, 34), c, &dev).unwrap();
        let eps = 1e-5;
        let name = format!("group_norm+silu [{n},{c},{hw},{hw}] g{groups} fwd fused");
        if self.wants(&name) {
            self.report(&name, time(|| x.group_norm_silu(groups, &gamma, &beta, eps).unwrap()), 2.0 * bytes, "GB/s");
        }
        let name = format!("group_norm+silu [{n},{c},{hw},{hw}] g{groups} fwd apart");
        if self.wants(&name) {
            self.report(&name, time(|| x.group_norm(groups, &gamma, &beta, eps).unwrap().0.silu().unwrap()), 2.0 * bytes, "GB/s");
        }
        let (pre, mean, rstd) = x.group_norm(groups, &gamma, &beta, eps).unwrap();
        let name = format!("group_norm+silu [{n},{c},{hw},{hw}] g{groups} bwd fused");
        if self.wants(&name) {
            let t = time(|| x.group_norm_silu_backward(&gamma, &beta, &mean, &rstd, &dy, groups, eps).unwrap());
            self.report(&name, t, 3.0 * bytes, "GB/s");
        }
        let name = format!("group_norm+silu [{n},{c},{hw},{hw}] g{groups} bwd apart");
        if self.wants(&name) {
            let t = time(|| {
                let d_pre = pre.silu_backward(&dy).unwrap();
                x.group_norm_backward(&gamma, &mean, &rstd, &d_pre, groups, eps).unwrap()
            });
            self.report(&name, t, 3.0 * bytes, "GB/s");
        }
    }

    fn pool_and_upsample(&self, n: usize, c: usize, hw: usize) {
        let p = Pool2dParams {
            batch: n,
            channels: c,
            in_h: hw,
            in_w: hw,
            kernel: 2,
            stride: 2,
        };
        let len = n * c * hw * hw;
        let x = values(len, 11);
        let g = values(len / 4, 12);
        let bytes = (len * 4) as f64;
        let name = format!("max_pool2d 2x2 [{n},{c},{hw},{hw}] forward");
        if self.wants(&name) {
            self.report(
                &name,
                time(|| pool::max_pool2d(&p, &x)),
                1.25 * bytes,
                "GB/s",
            );
        }
        let name = format!("max_pool2d 2x2 [{n},{c},{hw},{hw}] backward");
        if self.wants(&name) {
            self.report(
                &name,
                time(|| pool::max_pool2d_backward(&p, &x, &g)),
                2.25 * bytes,
                "GB/s",
            );
        }
        let name = format!("avg_pool2d 2x2 [{n},{c},{hw},{hw}] forward");
        if self.wants(&name) {
            self.report(
                &name,
                time(|| pool::avg_pool2d(&p, &x)),
                1.25 * bytes,
                "GB/s",
            );
        }
        let h = hw / 2;
        let name = format!("upsample x2 [{n},{c},{h},{h}] forward");
        if self.wants(&name) {
            self.report(
                &name,
                time(|| upsample::upsample_nearest2d(n, c, h, h, 2, 2, &g)),
                1.25 * bytes,
                "GB/s",
            );
        }
        let name = format!("upsample x2 [{n},{c},{h},{h}] backward");
        if self.wants(&name) {
            self.report(
                &name,
                time(|| upsample::upsample_nearest2d_backward(n, c, h, h, 2, 2, &x)),
                1.25 * bytes,
                "GB/s",
            );
        }
    }
}

impl Bench {
    /// Elementwise ops through the public `Tensor` API (output allocation
    /// included, as in a training step), in GB/s of bytes read + written,
    /// next to a plain memcpy of the same size: the reference for how near
    /// memory bandwidth an elementwise op (or group norm, above) runs.
    fn elementwise(&self, n: usize, c: usize, hw: usize) {
        use tensor::{Device, Tensor};
        let len = n * c * hw * hw;
        let bytes = (len * 4) as f64;
        let shape = [n, c, hw, hw];
        let dev = Device::Cpu;
        let x = Tensor::from_vec(values(len, 21), shape, &dev).unwrap();
        let y = Tensor::from_vec(values(len, 22), shape, &dev).unwrap();
        let s = Tensor::from_vec(values(n * c, 23), [n, c, 1, 1], &dev).unwrap();
        let src = values(len, 24);
        let name = format!("memcpy {} MiB into a reused buffer", len * 4 >> 20);
        if self.wants(&name) {
            let mut dst = vec![0.0f32; len];
            self.report(&name, time(|| dst.copy_from_slice(black_box(&src))), 2.0 * bytes, "GB/s");
        }
        let name = format!("memcpy {} MiB into a fresh Vec", len * 4 >> 20);
        if self.wants(&name) {
            self.report(&name, time(|| black_box(&src).to_vec()), 2.0 * bytes, "GB/s");
        }
        let name = format!("add [{n},{c},{hw},{hw}] + same");
        if self.wants(&name) {
            self.report(&name, time(|| x.add(&y).unwrap()), 3.0 * bytes, "GB/s");
        }
        let name = format!("dropout 0.1 [{n},{c},{hw},{hw}]");
        if self.wants(&name) {
            // The mask's Philox draws are most of it; bytes: x read, mask and output written.
            let mut rng = tensor::Rng::new(0);
            self.report(&name, time(|| x.dropout(0.1, &mut rng).unwrap()), 3.0 * bytes, "GB/s");
        }
        let name = format!("silu [{n},{c},{hw},{hw}]");
        if self.wants(&name) {
            self.report(&name, time(|| x.silu().unwrap()), 2.0 * bytes, "GB/s");
        }
        let name = format!("silu backward [{n},{c},{hw},{hw}]");
        if self.wants(&name) {
            self.report(&name, time(|| x.silu_backward(&y).unwrap()), 3.0 * bytes, "GB/s");
        }
        let name = format!("mul [{n},{c},{hw},{hw}] * [{n},{c},1,1]");
        if self.wants(&name) {
            self.report(&name, time(|| x.mul(&s).unwrap()), 2.0 * bytes, "GB/s");
        }
    }
}

fn conv3x3(batch: usize, cin: usize, cout: usize, hw: usize) -> Conv2dParams {
    Conv2dParams {
        batch,
        in_channels: cin,
        out_channels: cout,
        in_h: hw,
        in_w: hw,
        kernel_h: 3,
        kernel_w: 3,
        stride: 1,
        padding: 1,
    }
}

// Large buffers on 2 MiB pages (see `tensor::cpu::HugePageHeap`).
#[global_allocator]
static HEAP: tensor::cpu::HugePageHeap = tensor::cpu::HugePageHeap;

fn main() {
    // `cargo bench` passes `--bench`; anything else is a name filter.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let bench = Bench { filter };
    println!(
        "{} rayon threads; median over repetitions (best in brackets)",
        rayon::current_num_threads()
    );

    bench.matmul(2048);
    bench.conv("3x3 b32 128->128 32x32", conv3x3(32, 128, 128, 32), true);
    // The U-Net's other typical shapes.
    bench.conv("3x3 b32 64->64 64x64", conv3x3(32, 64, 64, 64), true);
    bench.conv("3x3 b32 256->256 16x16", conv3x3(32, 256, 256, 16), true);
    bench.conv("3x3 b32 256->256 8x8", conv3x3(32, 256, 256, 8), true);
    bench.conv("3x3 b32 256->256 4x4", conv3x3(32, 256, 256, 4), true);
    bench.conv("3x3 b32 3->64 64x64", conv3x3(32, 3, 64, 64), false);
    // flowers160's widest maps.
    bench.conv("3x3 b4 96->96 160x160", conv3x3(4, 96, 96, 160), true);
    // The tiny preset's shapes, at the sampling batch (16).
    bench.conv("3x3 b16 32->32 32x32", conv3x3(16, 32, 32, 32), true);
    bench.conv("3x3 b16 64->64 16x16", conv3x3(16, 64, 64, 16), true);
    bench.conv("3x3 b16 64->64 8x8", conv3x3(16, 64, 64, 8), true);
    bench.conv("3x3 b32 64->64 4x4", conv3x3(32, 64, 64, 4), true);
    let pointwise = Conv2dParams {
        kernel_h: 1,
        kernel_w: 1,
        padding: 0,
        ..conv3x3(32, 128, 256, 16)
    };
    bench.conv("1x1 b32 128->256 16x16", pointwise, true);
    // The skip convolutions of the up path, at the sampling batch:
    // flowers64's two widest maps and tiny's.
    let skip = |batch, cin, cout, hw| Conv2dParams { kernel_h: 1, kernel_w: 1, padding: 0, ..conv3x3(batch, cin, cout, hw) };
    bench.conv("1x1 b16 192->64 64x64", skip(16, 192, 64, 64), true);
    bench.conv("1x1 b16 384->128 32x32", skip(16, 384, 128, 32), true);
    bench.conv("1x1 b16 96->32 32x32", skip(16, 96, 32, 32), true);
    bench.conv("1x1 b16 128->64 16x16", skip(16, 128, 64, 16), true);
    // The tiny preset's convolutions whose share of the time is far
    // above their share of the multiplies, at the training batch (32):
    // its first and last layers (3 channels) and its skip convolutions.
    bench.conv("3x3 b32 3->32 32x32", conv3x3(32, 3, 32, 32), true);
    bench.conv("3x3 b32 32->3 32x32", conv3x3(32, 32, 3, 32), true);
    bench.conv("1x1 b32 96->32 32x32", skip(32, 96, 32, 32), true);
    bench.conv("1x1 b32 128->64 16x16", skip(32, 128, 64, 16), true);
    bench.conv("1x1 b32 32->64 16x16", skip(32, 32, 64, 16), true);
    bench.conv("1x1 b32 128->64 8x8", skip(32, 128, 64, 8), true);
    bench.group_norm(32, 128, 32, 32);
    bench.group_norm(32, 256, 8, 32);
    bench.group_norm_silu(32, 64, 32, 32);
    bench.group_norm_silu(32, 128, 16, 32);
    bench.pool_and_upsample(32, 64, 64);
    bench.elementwise(32, 128, 32);
}
