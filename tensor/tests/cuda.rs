//! The CUDA backend must compute what the CPU backend computes.
//!
//! Every test here builds random inputs (shapes, strided and broadcast
//! views, values) with proptest, runs the same `BackendStorage` call on a
//! `CpuStorage` and on a `CudaStorage` holding the same data, and compares
//! the results after `to_cpu()`. The CPU backend is the reference: it is
//! simpler and is itself tested against naive loops.
//!
//! Without a GPU each test prints "SKIPPED: no CUDA device" and passes,
//! unless `PETAL_REQUIRE_CUDA=1` is set (the GPU run sets it), in which case
//! a missing device is a failure.

use proptest::prelude::*;
use tensor::backend::{AdamStep, BackendStorage, BinaryOp, CmpOp, MatmulDims, ReduceOp, UnaryOp};
use tensor::backend::Conv2dParams;
use tensor::backend::GroupNormParams;
use tensor::backend::Pool2dParams;
use tensor::cpu::{CpuDevice, CpuStorage};
use tensor::cuda::{CudaDevice, CudaStorage};
use tensor::{DType, Layout, Shape};

/// The GPU, or None (after one loud message) when there is none.
fn gpu() -> Option<CudaDevice> {
    tensor::cuda::device_for_tests()
}

macro_rules! need_gpu {
    () => {
        match gpu() {
            Some(d) => d,
            None => return Ok(()),
        }
    };
}

fn cfg() -> ProptestConfig {
    ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() }
}

// ---------- data ----------

/// `n` values in [-2, 2) from a seed; `quantum` > 0 rounds them to multiples
/// of it (so comparisons and maxima have ties).
fn values(n: usize, seed: u64, quantum: f64) -> Vec<f64> {
    (0..n as u64)
        .map(|i| {
            let v = tensor::rng::uniform_at(seed, 0, i, -2.0, 2.0);
            if quantum > 0.0 {
                (v / quantum).round() * quantum
            } else {
                v
            }
        })
        .collect()
}

fn cpu_of(v: &[f64], dtype: DType) -> CpuStorage {
    CpuStorage::F64(v.to_vec()).cast(dtype).unwrap()
}

fn up(dev: &CudaDevice, c: &CpuStorage) -> CudaStorage {
    dev.from_cpu(c).unwrap()
}

fn f64s(s: &CpuStorage) -> Vec<f64> {
    s.cast(DType::F64).map(|c| match c {
        CpuStorage::F64(v) => v,
        _ => unreachable!(),
    })
    .unwrap()
}

/// Compares element by element: |a - b| <= tol * (1 + |b|); NaNs must match.
fn assert_close(what: &str, got: &CpuStorage, want: &CpuStorage, tol: f64) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.dtype(), want.dtype(), "{}: dtype", what);
    let (g, w) = (f64s(got), f64s(want));
    prop_assert_eq!(g.len(), w.len(), "{}: length", what);
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let ok = (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= tol * (1.0 + b.abs());
        prop_assert!(ok, "{}: element {} is {} on CUDA, {} on CPU", what, i, a, b);
    }
    Ok(())
}

fn tol(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => 1e-10,
        DType::F32 => 2e-5,
        _ => 1e-2,
    }
}

// ---------- strided views ----------

/// How to build a view of a given shape that is not a plain contiguous
/// tensor: a window (offset by `start`, with `extra` room) of a bigger
/// tensor, permuted by `perm`, with the `bcast` dims broadcast from size 1.
#[derive(Debug, Clone)]
struct ViewSpec {
    perm: Vec<usize>,
    extra: Vec<usize>,
    bcast: Vec<bool>,
}

fn view_spec(rank: usize, allow_bcast: bool) -> impl Strategy<Value = ViewSpec> {
    let perm = Just((0..rank).collect::<Vec<_>>()).prop_shuffle();
    let extra = prop::collection::vec(0usize..3, rank);
    let bcast = prop::collection::vec(prop::bool::weighted(if allow_bcast { 0.25 } else { 0.0 }), rank);
    (perm, extra, bcast).prop_map(|(perm, extra, bcast)| ViewSpec { perm, extra, bcast })
}

/// A layout of `shape` following `spec`, and the storage length it needs.
fn make_view(shape: &[usize], spec: &ViewSpec) -> (Layout, usize) {
    let r = shape.len();
    // Dims before the permutation: q[perm[i]] = shape[i] (1 where broadcast).
    let mut q = vec![0; r];
    for i in 0..r {
        q[spec.perm[i]] = if spec.bcast[i] { 1 } else { shape[i] };
    }
    let base: Vec<usize> = (0..r).map(|d| q[d] + spec.extra[d]).collect();
    let mut l = Layout::contiguous(Shape::from(base.clone()));
    for (d, (&len, &extra)) in q.iter().zip(&spec.extra).enumerate() {
        l = l.narrow(d, extra / 2, len);
    }
    let l = l.permute(&spec.perm).broadcast_to(&Shape::from(shape.to_vec()));
    (l, base.iter().product::<usize>().max(1))
}

fn shape_strategy(max_rank: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..6, 1..=max_rank)
}

fn float_dtype() -> impl Strategy<Value = DType> {
    prop::sample::select(vec![DType::F32, DType::F64])
}

fn unary_ops() -> Vec<UnaryOp> {
    vec![
        UnaryOp::Neg,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Sqrt,
        UnaryOp::Sqr,
        UnaryOp::Recip,
        UnaryOp::Tanh,
        UnaryOp::Sigmoid,
        UnaryOp::Silu,
        UnaryOp::Relu,
        UnaryOp::Abs,
        UnaryOp::Sin,
        UnaryOp::Cos,
        UnaryOp::Powf(1.7),
        UnaryOp::Powf(2.0),
        UnaryOp::Clamp(-0.5, 0.75),
        UnaryOp::Affine { mul: -1.5, add: 0.25 },
        UnaryOp::MaxScalar(0.3),
        UnaryOp::MinScalar(-0.2),
        UnaryOp::SiluGrad,
        UnaryOp::Step,
    ]
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn copy_and_cast_agree(
        (shape, spec) in shape_strategy(4).prop_flat_map(|s| { let r = s.len(); (Just(s), view_spec(r, true)) }),
        from in prop::sample::select(vec![DType::F32, DType::F64, DType::F16, DType::BF16, DType::U32]),
        to in prop::sample::select(vec![DType::F32, DType::F64, DType::F16, DType::BF16, DType::U32]),
        seed in any::<u64>(),
    ) {
        let dev = need_gpu!();
        let (l, len) = make_view(&shape, &spec);
        let src = cpu_of(&values(len, seed, 0.0).iter().map(|v| v * 3.0 + 3.0).collect::<Vec<_>>(), from);
        let g = up(&dev, &src);
        assert_close("copy_strided", &g.copy_strided(&l).unwrap().to_cpu().unwrap(), &src.copy_strided(&l).unwrap(), 0.0)?;
        // f64 -> f16/bf16 rounds twice on the GPU (via f32): allow one ulp.
        let t = if matches!(to, DType::F16 | DType::BF16) && from == DType::F64 { 1e-2 } else { 0.0 };
        assert_close("to_dtype", &g.to_dtype(&l, to).unwrap().to_cpu().unwrap(), &src.to_dtype(&l, to).unwrap(), t)?;
    }

    #[test]
    fn copy_into_agrees(
        (shape, ds, ss) in shape_strategy(4).prop_flat_map(|s| { let r = s.len(); (Just(s), view_spec(r, false), view_spec(r, true)) }),
        dtype in float_dtype(),
        seed in any::<u64>(),
    ) {
        let dev = need_gpu!();
        let (dl, dlen) = make_view(&shape, &ds);
        let (sl, slen) = make_view(&shape, &ss);
        let mut dst = cpu_of(&values(dlen, seed, 0.0), dtype);
        let src = cpu_of(&values(slen, seed ^ 1, 0.0), dtype);
        let mut gdst = up(&dev, &dst);
        gdst.copy_into(&dl, &up(&dev, &src), &sl).unwrap();
        dst.copy_into(&dl, &src, &sl).unwrap();
        assert_close("copy_into", &gdst.to_cpu().unwrap(), &dst, 0.0)?;
    }

    #[test]
    fn unary_agrees(
        (shape, spec) in shape_strategy(4).prop_flat_map(|s| { let r = s.len(); (Just(s), view_spec(r, true)) }),
        op in prop::sample::select(unary_ops()),
        dtype in float_dtype(),
        seed in any::<u64>(),
    ) {
        let dev = need_gpu!();
        let (l, len) = make_view(&shape, &spec);
        let x = cpu_of(&values(len, seed, 0.0), dtype);
        let got = up(&dev, &x).unary(&l, op).unwrap().to_cpu().unwrap();
        assert_close(&format!("{op:?}"), &got, &x.unary(&l, op).unwrap(), tol(dtype))?;
    }

    #[test]
    fn binary_cmp_where_agree(
        (shape, a_spec, b_spec, m_spec) in shape_strategy(4).prop_flat_map(|s| {
            let r = s.len();
            (Just(s), view_spec(r, true), view_spec(r, true), view_spec(r, true))
        }),
        op in prop::sample::select(vec![BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Maximum, BinaryOp::Minimum]),
        cmp in prop::sample::select(vec![CmpOp::Eq, CmpOp::Ne, CmpOp::Lt, CmpOp::Le, CmpOp::Gt, CmpOp::Ge]),
        dtype in float_dtype(),
        seed in any::<u64>(),
    ) {
        let dev = need_gpu!();
        let (al, alen) = make_view(&shape, &a_spec);
        let (bl, blen) = make_view(&shape, &b_spec);
        let (ml, mlen) = make_view(&shape, &m_spec);
        // Quantised values, so that comparisons see ties.
        let a = cpu_of(&values(alen, seed, 0.5), dtype);
        let b = cpu_of(&values(blen, seed ^ 7, 0.5), dtype);
        let m = cpu_of(&values(mlen, seed ^ 9, 1.0), dtype);
        let (ga, gb, gm) = (up(&dev, &a), up(&dev, &b), up(&dev, &m));
        assert_close(&format!("{op:?}"), &ga.binary(&al, &gb, &bl, op).unwrap().to_cpu().unwrap(), &a.binary(&al, &b, &bl, op).unwrap(), tol(dtype))?;
        assert_close(&format!("{cmp:?}"), &ga.cmp(&al, &gb, &bl, cmp).unwrap().to_cpu().unwrap(), &a.cmp(&al, &b, &bl, cmp).unwrap(), 0.0)?;
        assert_close("where", &gm.where_cond(&ml, &ga, &al, &gb, &bl).unwrap().to_cpu().unwrap(), &m.where_cond(&ml, &a, &al, &b, &bl).unwrap(), 0.0)?;
    }

    #[test]
    fn reduce_agrees(
        (shape, spec, axes_mask) in shape_strategy(4).prop_flat_map(|s| {
            let r = s.len();
            (Just(s), view_spec(r, true), prop::collection::vec(any::<bool>(), r))
        }),
        op in prop::sample::select(vec![ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min, ReduceOp::ArgMax]),
        dtype in float_dtype(),
        quantum in prop::sample::select(vec![0.0, 0.5]),
        seed in any::<u64>(),
    ) {
        let dev = need_gpu!();
        let (l, len) = make_view(&shape, &spec);
        let mut axes: Vec<usize> = (0..shape.len()).filter(|&d| axes_mask[d]).collect();
        if axes.is_empty() { axes.push(0); }
        let x = cpu_of(&values(len, seed, quantum), dtype);
        let got = up(&dev, &x).reduce(&l, &axes, op).unwrap().to_cpu().unwrap();
        let t = if op == ReduceOp::Sum { tol(dtype) } else { 0.0 };
        assert_close(&format!("{op:?} over {axes:?}"), &got, &x.reduce(&l, &axes, op).unwrap(), t)?;
    }

    #[test]
    fn long_reductions_agree(
        rows in 1usize..4,
        len in prop::sample::select(vec![1000usize, 5000, 70_000, 300_000]),
        op in prop::sample::select(vec![ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min, ReduceOp::ArgMax]),
        over_rows in any::<bool>(),
        seed in any::<u64>(),
    ) {
        // Long rows take the block and split-block paths of the CUDA reduction.
        let dev = need_gpu!();
        let x = cpu_of(&values(rows * len, seed, 0.0), DType::F32);
        let l = Layout::contiguous(Shape::from([rows, len]));
        let axes = if over_rows { vec![0, 1] } else { vec![1] };
        let got = up(&dev, &x).reduce(&l, &axes, op).unwrap().to_cpu().unwrap();
        let t = if op == ReduceOp::Sum { 1e-5 } else { 0.0 };
        assert_close(&format!("{op:?}"), &got, &x.reduce(&l, &axes, op).unwrap(), t)?;
    }

    #[test]
    fn matmul_agrees(
        batch in 1usize..4, m in 1usize..10, k in 1usize..10, n in 1usize..10,
        a_t in any::<bool>(), b_t in any::<bool>(), a_bcast in any::<bool>(), b_odd in any::<bool>(),
        dtype in float_dtype(),
        seed in any::<u64>(),
    ) {
        let dev = need_gpu!();
        // lhs [batch, m, k]: maybe stored transposed, maybe one matrix broadcast over the batch.
        let a_batches = if a_bcast { 1 } else { batch };
        let a_len = a_batches * m * k + 1;
        let al = {
            let base = if a_t { Layout::new(Shape::from([a_batches, m, k]), vec![m * k, 1, m], 1) }
                       else { Layout::new(Shape::from([a_batches, m, k]), vec![m * k, k, 1], 1) };
            base.broadcast_to(&Shape::from([batch, m, k]))
        };
        // rhs [batch, k, n]: maybe transposed, or a strided non-BLAS view (every other column).
        let (bl, b_len) = if b_odd {
            (Layout::new(Shape::from([batch, k, n]), vec![k * 2 * n, 2 * n, 2], 0), batch * k * 2 * n)
        } else if b_t {
            (Layout::new(Shape::from([batch, k, n]), vec![k * n, 1, k], 0), batch * k * n)
        } else {
            (Layout::new(Shape::from([batch, k, n]), vec![k * n, n, 1], 0), batch * k * n)
        };
        let a = cpu_of(&values(a_len, seed, 0.0), dtype);
        let b = cpu_of(&values(b_len, seed ^ 3, 0.0), dtype);
        let dims = MatmulDims { batch, m, k, n };
        let got = up(&dev, &a).matmul(&al, &up(&dev, &b), &bl, dims).unwrap().to_cpu().unwrap();
        assert_close("matmul", &got, &a.matmul(&al, &b, &bl, dims).unwrap(), tol(dtype) * 10.0)?;
    }

    #[test]
    fn conv2d_agrees(
        batch in 1usize..4, cin in 1usize..4, cout in 1usize..4,
        h in 1usize..9, w in 1usize..9, kh in 1usize..4, kw in 1usize..4,
        stride in 1usize..4, padding in 0usize..3,
        with_bias in any::<bool>(),
        dtype in float_dtype(),
        seed in any::<u64>(),
    ) {
        let dev = need_gpu!();
        prop_assume!(h + 2 * padding >= kh && w + 2 * padding >= kw);
        let p = Conv2dParams { batch, in_channels: cin, out_channels: cout, in_h: h, in_w: w, kernel_h: kh, kernel_w: kw, stride, padding };
        let (oh, ow) = (p.out_h(), p.out_w());
        // Inputs sit one element into their storage, to exercise offsets.
        let xl = Layout::new(Shape::from([batch, cin, h, w]), Shape::from([batch, cin, h, w]).contiguous_strides(), 1);
        let wl = Layout::contiguous(Shape::from([cout, cin, kh, kw]));
        let bl = Layout::contiguous(Shape::from([cout]));
        let gl = Layout::contiguous(Shape::from([batch, cout, oh, ow]));
        let x = cpu_of(&values(batch * cin * h * w + 1, seed, 0.0), dtype);
        let wt = cpu_of(&values(cout * cin * kh * kw, seed ^ 1, 0.0), dtype);
        let bias = cpu_of(&values(cout, seed ^ 2, 0.0), dtype);
        let g = cpu_of(&values(batch * cout * oh * ow, seed ^ 4, 0.0), dtype);
        let (gx, gw, gb, gg) = (up(&dev, &x), up(&dev, &wt), up(&dev, &bias), up(&dev, &g));
        let t = tol(dtype) * 10.0;
        let gbias = with_bias.then_some((&gb, &bl));
        let cbias = with_bias.then_some((&bias, &bl));
        assert_close("conv2d", &gx.conv2d(&xl, &gw, &wl, gbias, &p).unwrap().to_cpu().unwrap(), &x.conv2d(&xl, &wt, &wl, cbias, &p).unwrap(), t)?;
        assert_close("conv2d grad input", &gg.conv2d_backward_input(&gl, &gw, &wl, &p).unwrap().to_cpu().unwrap(), &g.conv2d_backward_input(&gl, &wt, &wl, &p).unwrap(), t)?;
        assert_close("conv2d grad weight", &gx.conv2d_backward_weight(&xl, &gg, &gl, &p).unwrap().to_cpu().unwrap(), &x.conv2d_backward_weight(&xl, &g, &gl, &p).unwrap(), t)?;
    }

    #[test]
    fn pooling_agrees(
        batch in 1usize..3, channels in 1usize..4, h in 1usize..10, w in 1usize..10,
        kernel in 1usize..4, stride in 1usize..4,
        dtype in float_dtype(),
        seed in any::<u64>(),
    ) {
        let dev = need_gpu!();
        prop_assume!(kernel <= h && kernel <= w);
        let p = Pool2dParams { batch, channels, in_h: h, in_w: w, kernel, stride };
        let xl = Layout::contiguous(Shape::from([batch, channels, h, w]));
        let gl = Layout::contiguous(Shape::from([batch, channels, p.out_h(), p.out_w()]));
        // Quantised input: windows with tied maxima test the first-max rule.
        let x = cpu_of(&values(xl.elem_count(), seed, 0.5), dtype);
        let g = cpu_of(&values(gl.elem_count(), seed ^ 5, 0.0), dtype);
        let (gx, gg) = (up(&dev, &x), up(&dev, &g));
        let t = tol(dtype);
        assert_close("avg_pool2d", &gx.avg_pool2d(&xl, &p).unwrap().to_cpu().unwrap(), &x.avg_pool2d(&xl, &p).unwrap(), t)?;
        assert_close("avg_pool2d backward", &gg.avg_pool2d_backward(&gl, &p).unwrap().to_cpu().unwrap(), &g.avg_pool2d_backward(&gl, &p).unwrap(), t)?;
        assert_close("max_pool2d", &gx.max_pool2d(&xl, &p).unwrap().to_cpu().unwrap(), &x.max_pool2d(&xl, &p).unwrap(), 0.0)?;
        assert_close("max_pool2d backward", &gx.max_pool2d_backward(&xl, &gg, &gl, &p).unwrap().to_cpu().unwrap(), &x.max_pool2d_backward(&xl, &g, &gl, &p).unwrap(), t)?;
    }

    #[test]
    fn upsample_agrees(
        batch in 1usize..3, channels in 1usize..4, h in 1usize..7, w in 1usize..7, sh in 1usize..4, sw in 1usize..4,
        dtype in float_dtype(),
        seed in any::<u64>(),
    ) {
        let dev = need_gpu!();
        let d = (batch, channels, h, w);
        let xl = Layout::contiguous(Shape::from([batch, channels, h, w]));
        let gl = Layout::contiguous(Shape::from([batch, channels, h * sh, w * sw]));
        let x = cpu_of(&values(xl.elem_count(), seed, 0.0), dtype);
        let g = cpu_of(&values(gl.elem_count(), seed ^ 6, 0.0), dtype);
        assert_close("upsample", &up(&dev, &x).upsample_nearest2d(&xl, d, (sh, sw)).unwrap().to_cpu().unwrap(), &x.upsample_nearest2d(&xl, d, (sh, sw)).unwrap(), 0.0)?;
        assert_close("upsample backward", &up(&dev, &g).upsample_nearest2d_backward(&gl, d, (sh, sw)).unwrap().to_cpu().unwrap(), &g.upsample_nearest2d_backward(&gl, d, (sh, sw)).unwrap(), tol(dtype))?;
    }

    #[test]
    fn group_norm_agrees(
        batch in 1usize..4, groups in 1usize..4, cpg in 1usize..4, spatial in 1usize..40,
        offset in prop::sample::select(vec![0.0f64, 8.0]),
        dtype in float_dtype(),
        seed in any::<u64>(),
    ) {
        let dev = need_gpu!();
        let channels = groups * cpg;
        let p = GroupNormParams { batch, channels, spatial, groups, eps: 1e-5 };
        let n = batch * channels * spatial;
        let xl = Layout::contiguous(Shape::from([batch, channels, spatial]));
        let cl = Layout::contiguous(Shape::from([channels]));
        let x = cpu_of(&values(n, seed, 0.0).iter().map(|v| v + offset).collect::<Vec<_>>(), dtype);
        let gamma = cpu_of(&values(channels, seed ^ 1, 0.0), dtype);
        let beta = cpu_of(&values(channels, seed ^ 2, 0.0), dtype);
        let dy = cpu_of(&values(n, seed ^ 3, 0.0), dtype);
        let (gx, gg, gb, gdy) = (up(&dev, &x), up(&dev, &gamma), up(&dev, &beta), up(&dev, &dy));
        let (y, mean, rstd) = x.group_norm(&xl, &gamma, &cl, &beta, &cl, &p).unwrap();
        let (gy, gmean, grstd) = gx.group_norm(&xl, &gg, &cl, &gb, &cl, &p).unwrap();
        let t = tol(dtype) * 10.0;
        assert_close("group_norm y", &gy.to_cpu().unwrap(), &y, t)?;
        assert_close("group_norm mean", &gmean.to_cpu().unwrap(), &mean, t)?;
        assert_close("group_norm rstd", &grstd.to_cpu().unwrap(), &rstd, t)?;
        let (dx, dg, db) = x.group_norm_backward(&gamma, &mean, &rstd, &dy, &p).unwrap();
        let (gdx, gdg, gdb) = gx.group_norm_backward(&gg, &gmean, &grstd, &gdy, &p).unwrap();
        assert_close("group_norm dx", &gdx.to_cpu().unwrap(), &dx, t * 10.0)?;
        assert_close("group_norm dgamma", &gdg.to_cpu().unwrap(), &dg, t * 10.0)?;
        assert_close("group_norm dbeta", &gdb.to_cpu().unwrap(), &db, t)?;
    }

    #[test]
    fn group_norm_silu_agrees(
        batch in 1usize..4, groups in 1usize..4, cpg in 1usize..4, spatial in 1usize..40,
        offset in prop::sample::select(vec![0.0f64, 8.0]),
        dtype in float_dtype(),
        seed in any::<u64>(),
    ) {
        let dev = need_gpu!();
        let channels = groups * cpg;
        let p = GroupNormParams { batch, channels, spatial, groups, eps: 1e-5 };
        let n = batch * channels * spatial;
        let xl = Layout::contiguous(Shape::from([batch, channels, spatial]));
        let cl = Layout::contiguous(Shape::from([channels]));
        let x = cpu_of(&values(n, seed, 0.0).iter().map(|v| v + offset).collect::<Vec<_>>(), dtype);
        let gamma = cpu_of(&values(channels, seed ^ 1, 0.0), dtype);
        let beta = cpu_of(&values(channels, seed ^ 2, 0.0), dtype);
        let dy = cpu_of(&values(n, seed ^ 3, 0.0), dtype);
        let (gx, gg, gb, gdy) = (up(&dev, &x), up(&dev, &gamma), up(&dev, &beta), up(&dev, &dy));
        let (y, mean, rstd) = x.group_norm_silu(&xl, &gamma, &cl, &beta, &cl, &p).unwrap();
        let (gy, gmean, grstd) = gx.group_norm_silu(&xl, &gg, &cl, &gb, &cl, &p).unwrap();
        let t = tol(dtype) * 10.0;
        assert_close("group_norm_silu y", &gy.to_cpu().unwrap(), &y, t)?;
        assert_close("group_norm_silu mean", &gmean.to_cpu().unwrap(), &mean, t)?;
        assert_close("group_norm_silu rstd", &grstd.to_cpu().unwrap(), &rstd, t)?;
        let (dx, dg, db) = x.group_norm_silu_backward(&gamma, &beta, &mean, &rstd, &dy, &p).unwrap();
        let (gdx, gdg, gdb) = gx.group_norm_silu_backward(&gg, &gb, &gmean, &grstd, &gdy, &p).unwrap();
        assert_close("group_norm_silu dx", &gdx.to_cpu().unwrap(), &dx, t * 10.0)?;
        assert_close("group_norm_silu dgamma", &gdg.to_cpu().unwrap(), &dg, t * 10.0)?;
        assert_close("group_norm_silu dbeta", &gdb.to_cpu().unwrap(), &db, t * 10.0)?;
    }

    #[test]
    fn index_select_and_add_agree(
        dims in prop::collection::vec(1usize..5, 1..4),
        dim_pick in any::<prop::sample::Index>(),
        n_idx in 1usize..7,
        dtype in float_dtype(),
        seed in any::<u64>(),
    ) {
        let dev = need_gpu!();
        let dim = dim_pick.index(dims.len());
        let l = Layout::contiguous(Shape::from(dims.clone()));
        let idx: Vec<u32> = values(n_idx, seed ^ 8, 0.0).iter().map(|v| (((v + 2.0) / 4.0) * dims[dim] as f64) as u32 % dims[dim] as u32).collect();
        let il = Layout::contiguous(Shape::from([n_idx]));
        let ic = CpuStorage::U32(idx);
        let x = cpu_of(&values(l.elem_count(), seed, 0.0), dtype);
        let got = up(&dev, &x).index_select(&l, &up(&dev, &ic), &il, dim).unwrap().to_cpu().unwrap();
        assert_close("index_select", &got, &x.index_select(&l, &ic, &il, dim).unwrap(), 0.0)?;
        let mut sdims = dims.clone();
        sdims[dim] = n_idx;
        let sl = Layout::contiguous(Shape::from(sdims));
        let src = cpu_of(&values(sl.elem_count(), seed ^ 11, 0.0), dtype);
        let mut dst = x.clone();
        let mut gdst = up(&dev, &x);
        dst.index_add(&dims, &ic, &il, &src, &sl, dim).unwrap();
        gdst.index_add(&dims, &up(&dev, &ic), &il, &up(&dev, &src), &sl, dim).unwrap();
        assert_close("index_add", &gdst.to_cpu().unwrap(), &dst, tol(dtype))?;
    }

    #[test]
    fn optimizer_updates_agree(
        n in 1usize..3000,
        lr in 1e-4f64..1e-1, wd in prop::sample::select(vec![0.0, 0.01]), dd in prop::sample::select(vec![0.0, 0.1]),
        t in 1i32..50,
        dtype in float_dtype(),
        seed in any::<u64>(),
    ) {
        let dev = need_gpu!();
        let (b1, b2) = (0.9f64, 0.999f64);
        let step = AdamStep { lr, beta1: b1, beta2: b2, eps: 1e-8, weight_decay: wd, decoupled_decay: dd, bias_correction1: 1.0 - b1.powi(t), bias_correction2: 1.0 - b2.powi(t) };
        let mut p = cpu_of(&values(n, seed, 0.0), dtype);
        let g = cpu_of(&values(n, seed ^ 1, 0.0), dtype);
        let mut m = cpu_of(&values(n, seed ^ 2, 0.0).iter().map(|v| v * 0.1).collect::<Vec<_>>(), dtype);
        let mut v = cpu_of(&values(n, seed ^ 3, 0.0).iter().map(|v| v.abs() * 0.01).collect::<Vec<_>>(), dtype);
        let (mut gp, gg, mut gm, mut gv) = (up(&dev, &p), up(&dev, &g), up(&dev, &m), up(&dev, &v));
        p.adam_update(&g, &mut m, &mut v, &step).unwrap();
        gp.adam_update(&gg, &mut gm, &mut gv, &step).unwrap();
        assert_close("adam p", &gp.to_cpu().unwrap(), &p, tol(dtype))?;
        assert_close("adam m", &gm.to_cpu().unwrap(), &m, tol(dtype))?;
        assert_close("adam v", &gv.to_cpu().unwrap(), &v, tol(dtype))?;
        p.ema_update(&g, 0.99).unwrap();
        gp.ema_update(&gg, 0.99).unwrap();
        assert_close("ema", &gp.to_cpu().unwrap(), &p, tol(dtype))?;
    }

    #[test]
    fn random_fills_agree(
        n in 1usize..5000,
        key in any::<u64>(), start in any::<u64>(),
        dtype in prop::sample::select(vec![DType::F32, DType::F64, DType::F16, DType::BF16]),
    ) {
        let dev = need_gpu!();
        let t = match dtype { DType::F64 => 1e-12, DType::F32 => 1e-6, _ => 1e-2 };
        let got = dev.rand_uniform(n, dtype, key, start, -1.0, 3.0).unwrap().to_cpu().unwrap();
        assert_close("rand_uniform", &got, &CpuStorage::rand_uniform(&CpuDevice, n, dtype, key, start, -1.0, 3.0).unwrap(), t)?;
        let got = dev.rand_normal(n, dtype, key, start, 0.5, 2.0).unwrap().to_cpu().unwrap();
        assert_close("rand_normal", &got, &CpuStorage::rand_normal(&CpuDevice, n, dtype, key, start, 0.5, 2.0).unwrap(), t)?;
    }
}

/// Larger convolutions than the property test draws, with DDPM-like shapes,
/// so the chunked im2col path and the pointwise path run at realistic size.
#[test]
fn realistic_convolutions_agree() {
    let Some(dev) = gpu() else { return };
    for (n, c, co, hw, k, s, pad) in [(4, 32, 64, 32, 3, 1, 1), (2, 64, 64, 16, 1, 1, 0), (3, 16, 8, 17, 3, 2, 1)] {
        let p = Conv2dParams { batch: n, in_channels: c, out_channels: co, in_h: hw, in_w: hw, kernel_h: k, kernel_w: k, stride: s, padding: pad };
        let xl = Layout::contiguous(Shape::from([n, c, hw, hw]));
        let wl = Layout::contiguous(Shape::from([co, c, k, k]));
        let gl = Layout::contiguous(Shape::from([n, co, p.out_h(), p.out_w()]));
        let x = cpu_of(&values(xl.elem_count(), 1, 0.0), DType::F32);
        let w = cpu_of(&values(wl.elem_count(), 2, 0.0), DType::F32);
        let g = cpu_of(&values(gl.elem_count(), 3, 0.0), DType::F32);
        let (gx, gw, gg) = (up(&dev, &x), up(&dev, &w), up(&dev, &g));
        let check = |what: &str, a: CudaStorage, b: CpuStorage| {
            let (a, b) = (f64s(&a.to_cpu().unwrap()), f64s(&b));
            let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let err = a.iter().zip(&b).fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
            assert!(err <= 1e-4 * scale.max(1.0), "{what} {p:?}: max error {err} (scale {scale})");
        };
        check("conv2d", gx.conv2d(&xl, &gw, &wl, None, &p).unwrap(), x.conv2d(&xl, &w, &wl, None, &p).unwrap());
        check("grad input", gg.conv2d_backward_input(&gl, &gw, &wl, &p).unwrap(), g.conv2d_backward_input(&gl, &w, &wl, &p).unwrap());
        check("grad weight", gx.conv2d_backward_weight(&xl, &gg, &gl, &p).unwrap(), x.conv2d_backward_weight(&xl, &g, &gl, &p).unwrap());
    }
}

/// The half-precision kernels, against the CPU backend's f32 results
/// (the CPU backend computes these ops in f32/f64 only).
#[test]
fn half_precision_ops_track_f32() {
    let Some(dev) = gpu() else { return };
    let n = 4096;
    let l = Layout::contiguous(Shape::from([64, 64]));
    let x32 = cpu_of(&values(n, 5, 0.0), DType::F32);
    for half in [DType::F16, DType::BF16] {
        let gx = up(&dev, &x32).to_dtype(&l, half).unwrap();
        let cases: Vec<(&str, CudaStorage, CpuStorage)> = vec![
            ("silu", gx.unary(&l, UnaryOp::Silu).unwrap(), x32.unary(&l, UnaryOp::Silu).unwrap()),
            ("mul", gx.binary(&l, &gx, &l, BinaryOp::Mul).unwrap(), x32.binary(&l, &x32, &l, BinaryOp::Mul).unwrap()),
            ("sum", gx.reduce(&l, &[1], ReduceOp::Sum).unwrap(), x32.reduce(&l, &[1], ReduceOp::Sum).unwrap()),
            ("matmul", gx.matmul(&Layout::contiguous(Shape::from([1, 64, 64])), &gx, &Layout::contiguous(Shape::from([1, 64, 64])), MatmulDims { batch: 1, m: 64, k: 64, n: 64 }).unwrap(),
                x32.matmul(&Layout::contiguous(Shape::from([1, 64, 64])), &x32, &Layout::contiguous(Shape::from([1, 64, 64])), MatmulDims { batch: 1, m: 64, k: 64, n: 64 }).unwrap()),
        ];
        for (what, got, want) in cases {
            let (a, b) = (f64s(&got.to_cpu().unwrap()), f64s(&want));
            let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            let err = a.iter().zip(&b).fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
            let tol = if half == DType::BF16 { 0.03 } else { 0.01 };
            assert!(err <= tol * scale, "{half} {what}: max error {err} (scale {scale})");
        }
    }
}

/// Through the public `Tensor` API: a tensor moved to the GPU and back is unchanged.
#[test]
fn tensors_round_trip_through_the_gpu() {
    let Some(dev) = gpu() else { return };
    let device = tensor::Device::Cuda(dev);
    let data: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
    let t = tensor::Tensor::from_vec(data.clone(), [2, 3, 4], &device).unwrap();
    assert_eq!(t.to_vec::<f32>().unwrap(), data);
}

proptest! {
    #![proptest_config(cfg())]

    /// The fused CUDA dropout draws the CPU's mask, counter for counter, and
    /// leaves the generator where the CPU leaves it; strided inputs too.
    #[test]
    fn dropout_matches_cpu_bit_for_bit(
        rows in 1usize..40, cols in 1usize..90, transposed in any::<bool>(),
        p in 0.0f64..1.0, double in any::<bool>(), seed in any::<u64>(),
    ) {
        let dev = need_gpu!();
        let dtype = if double { DType::F64 } else { DType::F32 };
        let x = tensor::Tensor::from_vec(values(rows * cols, seed, 0.0), [rows, cols], &tensor::Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let x = if transposed { x.t().unwrap() } else { x };
        let (mut cpu_rng, mut gpu_rng) = (tensor::Rng::new(seed ^ 7), tensor::Rng::new(seed ^ 7));
        let (out, mask) = x.dropout(p, &mut cpu_rng).unwrap();
        let (gout, gmask) = x.to_device(&tensor::Device::Cuda(dev)).unwrap().dropout(p, &mut gpu_rng).unwrap();
        prop_assert_eq!(gmask.to_f64_vec().unwrap(), mask.to_f64_vec().unwrap());
        prop_assert_eq!(gout.to_f64_vec().unwrap(), out.to_f64_vec().unwrap());
        prop_assert_eq!(gpu_rng.counter, cpu_rng.counter);
    }
}

/// Every unary op on NaN, infinities, signed zeros and ordinary values gives
/// what the CPU gives (NaN where the CPU has NaN): the property tests above
/// draw only finite values.
#[test]
fn unary_ops_agree_on_special_values() {
    let Some(dev) = gpu() else { return };
    let special = vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.0, -0.0, 1.0, -1.0, 0.5, -3.0, 1e-30];
    for dtype in [DType::F32, DType::F64] {
        let x = cpu_of(&special, dtype);
        let l = Layout::contiguous(Shape::from(special.len()));
        let gx = up(&dev, &x);
        for op in unary_ops() {
            let got = gx.unary(&l, op).unwrap().to_cpu().unwrap();
            let want = x.unary(&l, op).unwrap();
            assert_close(&format!("{op:?} {dtype:?}"), &got, &want, 1e-5).unwrap();
        }
    }
}

/// On the GPU too, rounding to bf16/f16 never yields hi (see
/// `uniform_draws_stay_below_hi_in_every_dtype` for the CPU).
#[test]
fn uniform_draws_stay_below_hi_on_the_gpu() {
    let Some(dev) = gpu() else { return };
    for dtype in [DType::F32, DType::F64, DType::F16, DType::BF16] {
        for (lo, hi) in [(0.0, 1.0), (-1.0, 1.0), (1.0, 2.0)] {
            let got = f64s(&dev.rand_uniform(100_000, dtype, 11, 0, lo, hi).unwrap().to_cpu().unwrap());
            let (min, max) = got.iter().fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
            assert!(min >= lo && max < hi, "{dtype:?} [{lo}, {hi}): values span [{min}, {max}]");
        }
    }
}
