//! Everything else on `Tensor`: creation, random tensors (determinism and
//! statistics), dtype conversions, index_select/index_add, the fused
//! optimizer updates, assign, Display, and the tensor-level wrappers of the
//! image ops (conv2d, pooling, upsampling, group norm): their shape
//! handling, non-contiguous inputs and error messages.

mod common;

use common::*;
use proptest::prelude::*;
use tensor::{AdamStep, DType, Fusion, Rng, Tensor};

fn dtype_of(f64_: bool) -> DType {
    if f64_ {
        DType::F64
    } else {
        DType::F32
    }
}

// ---- creation -----------------------------------------------------------

#[test]
fn creation_fills_shapes_and_dtypes() {
    for dtype in [DType::F32, DType::F64, DType::F16, DType::BF16, DType::U32] {
        let z = Tensor::zeros([2, 3], dtype, &CPU).unwrap();
        assert_eq!((z.dims(), z.dtype(), z.is_contiguous()), (&[2usize, 3][..], dtype, true));
        assert_eq!(z.to_f64_vec().unwrap(), vec![0.0; 6]);
        assert_eq!(Tensor::ones([4], dtype, &CPU).unwrap().to_f64_vec().unwrap(), vec![1.0; 4]);
        // 2.5 is exact in every float dtype; u32 truncates it.
        let want = if dtype == DType::U32 { 2.0 } else { 2.5 };
        assert_eq!(Tensor::full(2.5, [3, 1], dtype, &CPU).unwrap().to_f64_vec().unwrap(), vec![want; 3]);
        let s = Tensor::scalar(7.0, dtype, &CPU).unwrap();
        assert_eq!((s.rank(), s.elem_count(), s.to_scalar().unwrap()), (0, 1, 7.0));
        assert_eq!(z.ones_like().unwrap().to_f64_vec().unwrap(), vec![1.0; 6]);
        assert_eq!(z.ones_like().unwrap().zeros_like().unwrap().dtype(), dtype);
    }
    let v = Tensor::from_vec(vec![1u32, 2, 3, 4, 5, 6], [3, 2], &CPU).unwrap();
    assert_eq!(v.to_vec::<u32>().unwrap(), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(err_text(v.to_vec::<f32>()), "to_vec: dtypes u32 and f32 differ; convert one with to_dtype");
    assert_eq!(err_text(Tensor::from_vec(vec![1.0f32; 5], [2, 3], &CPU)), "from_vec: 5 values do not fill shape [2, 3]");
    assert_eq!(err_text(Tensor::from_slice(&[1.0f64; 2], (), &CPU)), "from_vec: 2 values do not fill shape []");
    assert_eq!(err_text(v.to_scalar()), "to_scalar: needs exactly one element (shape [3, 2])");
}

#[test]
fn arange_follows_numpy() {
    let a = |s, e, st| Tensor::arange(s, e, st, &CPU).unwrap().to_f64_vec().unwrap();
    assert_eq!(a(0.0, 5.0, 1.0), vec![0.0, 1.0, 2.0, 3.0, 4.0]);
    assert_eq!(a(1.0, 2.0, 0.25), vec![1.0, 1.25, 1.5, 1.75]);
    assert_eq!(a(3.0, 0.0, -1.0), vec![3.0, 2.0, 1.0]);
    assert_eq!(a(0.0, 1.0, 0.3).len(), 4); // 0, 0.3, 0.6, 0.9
    assert!(a(5.0, 0.0, 1.0).is_empty());
    let t = Tensor::arange(0.0, 3.0, 1.0, &CPU).unwrap();
    assert_eq!((t.dims(), t.dtype()), (&[3usize][..], DType::F32));
    assert_eq!(err_text(Tensor::arange(0.0, 1.0, 0.0, &CPU)), "arange: step must be finite and nonzero, got 0");
    assert_eq!(err_text(Tensor::arange(0.0, 1.0, f64::NAN, &CPU)), "arange: step must be finite and nonzero, got NaN");
}

// ---- random tensors -----------------------------------------------------

#[test]
fn random_tensors_are_deterministic_per_seed() {
    let shape = [300, 400]; // 120_000 elements: the parallel path
    for dtype in [DType::F32, DType::F64] {
        let draw = |seed| {
            let mut rng = Rng::new(seed);
            let u = Tensor::rand(-1.0, 2.0, shape, dtype, &CPU, &mut rng).unwrap().to_f64_vec().unwrap();
            let n = Tensor::randn(0.0, 1.0, shape, dtype, &CPU, &mut rng).unwrap().to_f64_vec().unwrap();
            let b = Tensor::bernoulli(0.3, shape, dtype, &CPU, &mut rng).unwrap().to_f64_vec().unwrap();
            (u, n, b, rng)
        };
        let (u1, n1, b1, r1) = draw(42);
        let (u2, n2, b2, r2) = draw(42);
        assert!(u1 == u2 && n1 == n2 && b1 == b2 && r1 == r2, "same seed, same numbers");
        // Each draw advances the counter by its element count.
        assert_eq!(r1.counter, 3 * 120_000);
        let (u3, n3, ..) = draw(43);
        assert!(u1 != u3 && n1 != n3);
    }
}

/// Uniform draws stay in [lo, hi) in every float dtype, although rounding a
/// draw just under hi to bf16 or f16 often gives hi itself (about one draw
/// in 500 for bf16 on [0, 1)), and they still reach the top of the range.
#[test]
fn uniform_draws_stay_below_hi_in_every_dtype() {
    for dtype in [DType::F32, DType::F64, DType::F16, DType::BF16] {
        for (lo, hi) in [(0.0, 1.0), (-1.0, 1.0), (-3.0, -2.0), (1.0, 2.0)] {
            let mut rng = Rng::new(11);
            let u = Tensor::rand(lo, hi, [100_000], dtype, &CPU, &mut rng).unwrap().to_f64_vec().unwrap();
            let (min, max) = u.iter().fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
            assert!(min >= lo && max < hi, "{dtype:?} [{lo}, {hi}): values span [{min}, {max}]");
            assert!(max > hi - (hi - lo) * 0.05, "{dtype:?} [{lo}, {hi}): max {max} is far below hi");
        }
    }
}

/// The counter-based stream does not depend on the thread count.
#[test]
fn random_tensors_do_not_depend_on_thread_count() {
    let pool = |n| rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap();
    let (one, two) = (pool(1), pool(2));
    let draw = || {
        let mut rng = Rng::new(7);
        let n = Tensor::randn(1.0, 2.0, [100_000], DType::F32, &CPU, &mut rng).unwrap().to_vec::<f32>().unwrap();
        let u = Tensor::rand(0.0, 1.0, [70_000], DType::F64, &CPU, &mut rng).unwrap().to_vec::<f64>().unwrap();
        (n, u)
    };
    assert_eq!(one.install(draw), two.install(draw));
    assert_eq!(one.install(draw), draw());
}

/// Two consecutive draws of n1 and n2 values equal one draw of n1 + n2:
/// element i is a pure function of (key, counter + i).
#[test]
fn random_stream_is_counter_based() {
    let mut a = Rng::new(11);
    let x = Tensor::rand(0.0, 1.0, [1000], DType::F64, &CPU, &mut a).unwrap().to_f64_vec().unwrap();
    let y = Tensor::rand(0.0, 1.0, [2, 5], DType::F64, &CPU, &mut a).unwrap().to_f64_vec().unwrap();
    let mut b = Rng::new(11);
    let xy = Tensor::rand(0.0, 1.0, [1010], DType::F64, &CPU, &mut b).unwrap().to_f64_vec().unwrap();
    assert_eq!([x, y].concat(), xy);
    for (i, &v) in xy.iter().enumerate().step_by(97) {
        assert_eq!(v, tensor::rng::uniform_at(11, 0, i as u64, 0.0, 1.0));
    }
}

#[test]
fn random_statistics() {
    let n = 200_000;
    let mut rng = Rng::new(2024);
    let x = Tensor::randn(2.0, 3.0, [n], DType::F64, &CPU, &mut rng).unwrap().to_f64_vec().unwrap();
    let mean = x.iter().sum::<f64>() / n as f64;
    let std = (x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
    // Standard error of the mean: 3 / sqrt(n) = 0.0067; of the std about
    // 3 / sqrt(2n) = 0.0047. Allow 5 of each.
    assert!((mean - 2.0).abs() < 0.034, "mean {mean}");
    assert!((std - 3.0).abs() < 0.024, "std {std}");
    // About 68.3% within one sigma.
    let within = x.iter().filter(|v| (*v - 2.0).abs() < 3.0).count() as f64 / n as f64;
    assert!((within - 0.6827).abs() < 0.01, "within 1 sigma: {within}");

    let u = Tensor::rand(-1.0, 3.0, [n], DType::F32, &CPU, &mut rng).unwrap().to_f64_vec().unwrap();
    assert!(u.iter().all(|&v| (-1.0..3.0).contains(&v)), "rand stays in [lo, hi)");
    let umean = u.iter().sum::<f64>() / n as f64;
    // sd of U(-1, 3) is 4/sqrt(12) = 1.155; se = 0.0026; allow 5.
    assert!((umean - 1.0).abs() < 0.013, "uniform mean {umean}");

    for p in [0.0, 0.05, 0.3, 0.5, 1.0] {
        let b = Tensor::bernoulli(p, [n], DType::F32, &CPU, &mut rng).unwrap().to_f64_vec().unwrap();
        assert!(b.iter().all(|&v| v == 0.0 || v == 1.0));
        let freq = b.iter().sum::<f64>() / n as f64;
        // se = sqrt(p(1-p)/n) <= 0.0012; allow 0.006 (5 se).
        assert!((freq - p).abs() < 0.006, "bernoulli({p}) frequency {freq}");
    }
    assert_eq!(err_text(Tensor::bernoulli(1.5, [2], DType::F32, &CPU, &mut rng)), "bernoulli: probability 1.5 is outside [0, 1]");
}

// ---- dtype conversions ----------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn to_dtype_round_trips((dims, vals) in shaped_values_in(shape(), -300.0, 300.0), kind in 0..VIEW_KINDS) {
        let x64 = non_contiguous(&vals, &dims, DType::F64, kind);
        let f32s = x64.to_dtype(DType::F32).unwrap();
        prop_assert!(f32s.is_contiguous());
        // f64 -> f32 is one rounding (exactly `as f32`); f32 -> f64 -> f32 is exact.
        let want32: Vec<f64> = vals.iter().map(|&v| round_to(DType::F32, v)).collect();
        prop_assert_eq!(f32s.to_f64_vec().unwrap(), want32.clone());
        prop_assert_eq!(f32s.to_dtype(DType::F64).unwrap().to_dtype(DType::F32).unwrap().to_f64_vec().unwrap(), want32.clone());
        // f16 keeps 11 significant bits (relative error <= 2^-11 in the
        // normal range, which [-300, 300] stays in apart from |x| < 6e-5,
        // covered by atol 6e-8); bf16 keeps 8 (<= 2^-8).
        let h = non_contiguous(&want32, &dims, DType::F32, kind).to_dtype(DType::F16).unwrap();
        let hv = h.to_f64_vec().unwrap();
        assert_close(&hv, &want32, 1.0 / 2048.0, 6e-8);
        let want16: Vec<f64> = want32.iter().map(|&v| half::f16::from_f32(v as f32).to_f64()).collect();
        prop_assert_eq!(&hv, &want16);
        let b = x64.to_dtype(DType::BF16).unwrap();
        let bv = b.to_f64_vec().unwrap();
        assert_close(&bv, &vals, 1.0 / 256.0, 0.0);
        let want_bf: Vec<f64> = vals.iter().map(|&v| half::bf16::from_f64(v).to_f64()).collect();
        prop_assert_eq!(&bv, &want_bf);
        // Widening and back is exact for every half type.
        for (t, w) in [(&h, &hv), (&b, &bv)] {
            for via in [DType::F32, DType::F64] {
                prop_assert_eq!(&t.to_dtype(via).unwrap().to_dtype(t.dtype()).unwrap().to_f64_vec().unwrap(), w);
            }
        }
        // bf16 -> f16 -> f32: one rounding to f16 of a bf16 value.
        let bh = b.to_dtype(DType::F16).unwrap().to_f64_vec().unwrap();
        let want_bh: Vec<f64> = bv.iter().map(|&v| half::f16::from_f64(v).to_f64()).collect();
        prop_assert_eq!(bh, want_bh);
        // u32: truncation toward zero, negatives to 0; back to f32 exactly.
        let u = x64.to_dtype(DType::U32).unwrap();
        let want_u: Vec<f64> = vals.iter().map(|&v| v.max(0.0).trunc()).collect();
        prop_assert_eq!(u.to_f64_vec().unwrap(), want_u.clone());
        prop_assert_eq!(u.to_dtype(DType::F32).unwrap().to_f64_vec().unwrap(), want_u);
    }
}

// ---- index_select / index_add ------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn index_select_and_index_add_match_reference(
        (dims, vals) in shaped_values_in(shape_rank(1..=4), -3.0, 3.0),
        dim in any::<prop::sample::Index>(),
        picks in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        kind in 0..VIEW_KINDS,
        f64_ in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let dtype = dtype_of(f64_);
        let dim = dim.index(dims.len());
        let x = Nd::new(&dims, vals).round(dtype);
        let t = non_contiguous_of(&x, dtype, kind);
        // Random indices, repeats likely (dims are small).
        // An empty dim has no valid index: select nothing from it.
        let idx: Vec<u32> = if dims[dim] == 0 { vec![] } else { picks.iter().map(|p| p.index(dims[dim]) as u32).collect() };
        let it = Tensor::from_vec(idx.clone(), idx.len(), &CPU).unwrap();
        let mut out_dims = dims.clone();
        out_dims[dim] = idx.len();

        let sel = t.index_select(&it, dim).unwrap();
        let want = Nd::from_fn(&out_dims, |i| {
            let mut j = i.to_vec();
            j[dim] = idx[i[dim]] as usize;
            x.at(&j)
        });
        assert_tensor_close(&sel, &want, 0.0, 0.0); // exact: a copy

        // index_add: repeated indices accumulate.
        let mut rng = Rng::new(seed);
        let src = Nd::new(&out_dims, (0..out_dims.iter().product()).map(|_| rng.next_f64()).collect()).round(dtype);
        let mut want = x.clone();
        for i in 0..src.data.len() {
            let mut j = unravel(i, &out_dims);
            j[dim] = idx[j[dim]] as usize;
            let o = ravel(&j, &dims);
            want.data[o] += src.data[i];
        }
        let got = t.index_add(dim, &it, &non_contiguous_of(&src, dtype, kind.wrapping_add(1))).unwrap();
        prop_assert!(!got.same_storage(&t), "index_add returns a new tensor");
        // Up to 8 additions in the dtype: rtol 1e-5 for f32 (values O(1)).
        let (rtol, atol) = if f64_ { (1e-12, 1e-12) } else { (1e-5, 1e-5) };
        assert_tensor_close(&got, &want, rtol, atol);
        // The input is untouched.
        assert_tensor_close(&t, &x, 0.0, 0.0);

        // Non-contiguous indices work too.
        if !idx.is_empty() {
            let rev: Vec<u32> = idx.iter().rev().copied().collect();
            let strided = Tensor::from_vec(rev.iter().flat_map(|&i| [i, 999]).collect::<Vec<u32>>(), [rev.len(), 2], &CPU)
                .unwrap().narrow(1, 0, 1).unwrap().squeeze(1).unwrap();
            let sel2 = t.index_select(&strided, dim).unwrap();
            let want2 = Nd::from_fn(&out_dims, |i| {
                let mut j = i.to_vec();
                j[dim] = rev[i[dim]] as usize;
                x.at(&j)
            });
            assert_tensor_close(&sel2, &want2, 0.0, 0.0);
        }
    }
}

#[test]
fn index_errors() {
    let t = Tensor::zeros([3, 4], DType::F32, &CPU).unwrap();
    let bad = Tensor::from_vec(vec![0u32, 3], [2], &CPU).unwrap();
    assert_eq!(err_text(t.index_select(&bad, 0)), "index_select: index 3 is out of range for a dim of size 3");
    let src = Tensor::zeros([2, 4], DType::F32, &CPU).unwrap();
    assert_eq!(err_text(t.index_add(0, &bad, &src)), "index_add: index 3 is out of range for a dim of size 3");
    let fidx = Tensor::zeros([2], DType::F32, &CPU).unwrap();
    assert_eq!(err_text(t.index_select(&fidx, 0)), "index_select: dtype f32 not supported here; indices must be u32");
    let idx2 = Tensor::zeros([2, 1], DType::U32, &CPU).unwrap();
    assert_eq!(err_text(t.index_select(&idx2, 0)), "index_select: indices must have rank 1 (shape [2, 1])");
    let ok = Tensor::from_vec(vec![0u32, 2], [2], &CPU).unwrap();
    assert_eq!(err_text(t.index_add(0, &ok, &t)), "index_add: shapes [3, 4] and [3, 4] are incompatible");
    assert_eq!(err_text(t.index_select(&ok, 2)), "index_select: dim 2 out of range for rank 2 (shape [3, 4])");
}

// ---- optimizer updates --------------------------------------------------

fn adam_step(t: i32, weight_decay: f64, decoupled_decay: f64) -> AdamStep {
    let (beta1, beta2) = (0.9, 0.999);
    AdamStep {
        lr: 1e-2,
        beta1,
        beta2,
        eps: 1e-8,
        weight_decay,
        decoupled_decay,
        bias_correction1: 1.0 - beta1.powi(t),
        bias_correction2: 1.0 - beta2.powi(t),
    }
}

/// PyTorch's Adam (L2 `weight_decay`) and AdamW (`decoupled_decay`) step,
/// written out for one element.
fn adam_ref(p: &mut f64, g: f64, m: &mut f64, v: &mut f64, s: &AdamStep) {
    let g = g + s.weight_decay * *p;
    *p *= 1.0 - s.lr * s.decoupled_decay;
    *m = s.beta1 * *m + (1.0 - s.beta1) * g;
    *v = s.beta2 * *v + (1.0 - s.beta2) * g * g;
    // torch: denom = sqrt(v) / sqrt(bc2) + eps; p -= lr / bc1 * m / denom
    let denom = v.sqrt() / s.bias_correction2.sqrt() + s.eps;
    *p -= s.lr / s.bias_correction1 * *m / denom;
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn adam_and_ema_match_hand_computation(
        (dims, vals) in shaped_values(),
        f64_ in any::<bool>(),
        decay in (0.0f64..0.1, 0.0f64..0.1),
        ema in 0.5f64..1.0,
        seed in any::<u64>(),
    ) {
        let dtype = dtype_of(f64_);
        let mut rng = Rng::new(seed);
        let n = vals.len();
        let mut p: Vec<f64> = vals.iter().map(|&v| round_to(dtype, v)).collect();
        let (mut m, mut v) = (vec![0.0; n], vec![0.0; n]);
        let tp = tensor(&p, &dims, dtype);
        let holder = tp.clone();
        let (tm, tv) = (Tensor::zeros(dims.clone(), dtype, &CPU).unwrap(), Tensor::zeros(dims.clone(), dtype, &CPU).unwrap());
        for step in 1..=4 {
            let g: Vec<f64> = (0..n).map(|_| round_to(dtype, rng.next_f64() * 2.0 - 1.0)).collect();
            let s = adam_step(step, decay.0, decay.1);
            // The gradient may be any view.
            tp.adam_update_(&non_contiguous(&g, &dims, dtype, step as u8), &tm, &tv, &s).unwrap();
            for i in 0..n {
                adam_ref(&mut p[i], g[i], &mut m[i], &mut v[i], &s);
            }
        }
        // f32: four steps of a dozen flops on O(1) values; the update is
        // lr-sized, so atol 1e-5 on p, m, v. f64: 1e-12.
        let (rtol, atol) = if f64_ { (1e-12, 1e-12) } else { (1e-5, 1e-5) };
        assert_close(&holder.to_f64_vec().unwrap(), &p, rtol, atol);
        assert_close(&tm.to_f64_vec().unwrap(), &m, rtol, atol);
        assert_close(&tv.to_f64_vec().unwrap(), &v, rtol, atol);

        // ema: avg = d * avg + (1 - d) * src; f32 atol 1e-6 on O(1) values.
        let src: Vec<f64> = (0..n).map(|_| round_to(dtype, rng.next_f64())).collect();
        tp.ema_update_(&non_contiguous(&src, &dims, dtype, 2), ema).unwrap();
        let want: Vec<f64> = p.iter().zip(&src).map(|(&a, &s)| ema * a + (1.0 - ema) * s).collect();
        let (rtol, atol) = if f64_ { (1e-12, 1e-12) } else { (1e-6, 1e-6) };
        assert_close(&holder.to_f64_vec().unwrap(), &want, rtol, atol);
    }
}

#[test]
fn in_place_updates_refuse_views_and_bad_shapes() {
    let base = Tensor::zeros([4, 3], DType::F32, &CPU).unwrap();
    let view = base.narrow(0, 1, 2).unwrap();
    let z = || Tensor::zeros([2, 3], DType::F32, &CPU).unwrap();
    let s = adam_step(1, 0.0, 0.0);
    assert_eq!(err_text(view.adam_update_(&z(), &z(), &z(), &s)), "adam_update_: in-place updates need tensors that own their whole storage");
    assert_eq!(err_text(view.ema_update_(&z(), 0.9)), "ema_update_: in-place updates need tensors that own their whole storage");
    assert_eq!(err_text(z().adam_update_(&base, &z(), &z(), &s)), "adam_update_: shapes [2, 3] and [4, 3] are incompatible");
    assert_eq!(err_text(z().ema_update_(&base, 0.9)), "ema_update_: shapes [2, 3] and [4, 3] are incompatible");
}

/// Aliased arguments used to deadlock (a read lock on the gradient, then
/// write locks on the rest, of one storage): each pairing now returns an
/// error that names both roles, and nothing is updated.
#[test]
fn adam_refuses_aliased_arguments() {
    let z = || Tensor::zeros([2, 3], DType::F32, &CPU).unwrap();
    let s = adam_step(1, 0.0, 0.0);
    let (p, g, m, v) = (z(), z(), z(), z());
    let shared = |a: &str, b: &str| format!("adam_update_: the {a} and the {b} share one storage; each needs its own");
    assert_eq!(err_text(p.adam_update_(&p, &m, &v, &s)), shared("parameter", "gradient"));
    assert_eq!(err_text(p.adam_update_(&g, &p, &v, &s)), shared("parameter", "m"));
    assert_eq!(err_text(p.adam_update_(&g, &m, &p, &s)), shared("parameter", "v"));
    assert_eq!(err_text(p.adam_update_(&m, &m, &v, &s)), shared("gradient", "m"));
    assert_eq!(err_text(p.adam_update_(&v, &m, &v, &s)), shared("gradient", "v"));
    assert_eq!(err_text(p.adam_update_(&g, &m, &m, &s)), shared("m", "v"));
    // A view of the same storage counts too (reshape shares it).
    assert_eq!(err_text(p.adam_update_(&g, &m, &m.reshape([3, 2]).unwrap().reshape([2, 3]).unwrap(), &s)), shared("m", "v"));
    // A gradient that is a transposed view of the parameter is copied
    // first (kernels read whole buffers), so it does not alias.
    let sq = || Tensor::zeros([3, 3], DType::F32, &CPU).unwrap();
    let q = sq();
    q.adam_update_(&q.t().unwrap(), &sq(), &sq(), &s).unwrap();
    p.adam_update_(&g, &m, &v, &s).unwrap();
}

/// A 0x0 (or 0xk) kernel is refused up front, not by a kernel's assert.
#[test]
fn conv2d_refuses_an_empty_kernel() {
    let x = Tensor::zeros([1, 2, 4, 4], DType::F32, &CPU).unwrap();
    for (kh, kw) in [(0, 0), (0, 3), (3, 0)] {
        let w = Tensor::zeros([3, 2, kh, kw], DType::F32, &CPU).unwrap();
        let want = format!("conv2d: the kernel is {kh}x{kw}; it must be at least 1x1 (shape [3, 2, {kh}, {kw}])");
        assert_eq!(err_text(x.conv2d(&w, None, 1, 0)), want);
        assert_eq!(err_text(x.conv2d(&w, None, 1, 1)), want);
        assert_eq!(err_text(tensor::conv2d_params(&[1, 2, 4, 4], &[3, 2, kh, kw], 1, 0)), want);
        let g = Tensor::zeros([1, 3, 4, 4], DType::F32, &CPU).unwrap();
        assert_eq!(err_text(g.conv2d_backward_input(&w, &[1, 2, 4, 4], 1, 0)), want);
        assert_eq!(err_text(x.conv2d_backward_weight(&g, &[3, 2, kh, kw], 1, 0)), want);
    }
}

// ---- assign ---------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Assigning into a window of a tensor writes exactly that window; every
    /// view of the storage sees it.
    #[test]
    fn assign_writes_through_views(
        (dims, vals) in shaped_values_in(shape_rank(1..=4), -3.0, 3.0),
        picks in (any::<prop::sample::Index>(), any::<prop::sample::Index>(), any::<prop::sample::Index>()),
        kind in 0..VIEW_KINDS,
    ) {
        let x = Nd::new(&dims, vals).round(DType::F32);
        let t = tensor_of(&x, DType::F32);
        let alias = t.clone();
        let dim = picks.0.index(dims.len());
        // An empty dim has one window, the empty one at 0.
        let (start, len) = match dims[dim] {
            0 => (0, 0),
            size => {
                let start = picks.1.index(size);
                (start, picks.2.index(size - start) + 1)
            }
        };
        let mut wd = dims.clone();
        wd[dim] = len;
        let src = Nd::from_fn(&wd, |i| 100.0 + ravel(i, &wd) as f64);
        t.narrow(dim, start, len).unwrap().assign(&non_contiguous_of(&src, DType::F32, kind)).unwrap();
        let want = Nd::from_fn(&dims, |i| {
            if i[dim] >= start && i[dim] < start + len {
                let mut j = i.to_vec();
                j[dim] -= start;
                src.at(&j)
            } else {
                x.at(i)
            }
        });
        assert_tensor_close(&alias, &want, 0.0, 0.0);

        // Overlapping source and destination in one storage: the source is
        // read as it was before the write.
        if dims[dim] >= 2 {
            let n = dims[dim] - 1;
            let before = Nd::new(&dims, alias.to_f64_vec().unwrap());
            t.narrow(dim, 1, n).unwrap().assign(&t.narrow(dim, 0, n).unwrap()).unwrap();
            let want = Nd::from_fn(&dims, |i| {
                let mut j = i.to_vec();
                if i[dim] >= 1 {
                    j[dim] -= 1;
                }
                before.at(&j)
            });
            assert_tensor_close(&t, &want, 0.0, 0.0);
        }
    }
}

#[test]
fn assign_errors() {
    let t = Tensor::zeros([2, 3], DType::F32, &CPU).unwrap();
    let u = Tensor::zeros([3, 2], DType::F32, &CPU).unwrap();
    assert_eq!(err_text(t.assign(&u)), "assign: shapes [2, 3] and [3, 2] are incompatible");
    let w = Tensor::zeros([2, 3], DType::F64, &CPU).unwrap();
    assert!(err_text(t.assign(&w)).contains("dtypes f32 and f64 differ"));
}

// ---- Display --------------------------------------------------------------

#[test]
fn display_small_tensors_exactly() {
    let t = Tensor::from_vec(vec![1.0f32, -2.5, 3.0], [3], &CPU).unwrap();
    assert_eq!(t.to_string(), "tensor([ 1.0000, -2.5000,  3.0000], shape=[3], dtype=f32, device=cpu)");
    let s = Tensor::scalar(1.5, DType::F64, &CPU).unwrap();
    assert_eq!(s.to_string(), "tensor(1.5000, shape=[], dtype=f64, device=cpu)");
    let u = Tensor::from_vec(vec![3u32, 14, 159], [3], &CPU).unwrap();
    assert_eq!(u.to_string(), "tensor([  3,  14, 159], shape=[3], dtype=u32, device=cpu)");
    let t3 = Tensor::arange(1.0, 9.0, 1.0, &CPU).unwrap().reshape([2, 2, 2]).unwrap();
    assert_eq!(
        t3.to_string(),
        "tensor([[[1.0000, 2.0000],\n         [3.0000, 4.0000]],\n\n        [[5.0000, 6.0000],\n         [7.0000, 8.0000]]], shape=[2, 2, 2], dtype=f32, device=cpu)"
    );
    // A transposed view prints in its own (logical) order.
    let tt = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3], &CPU).unwrap().t().unwrap();
    assert_eq!(tt.to_string(), "tensor([[1.0000, 4.0000],\n        [2.0000, 5.0000],\n        [3.0000, 6.0000]], shape=[3, 2], dtype=f32, device=cpu)");
    // Tiny and huge magnitudes switch to scientific notation.
    let e = Tensor::from_vec(vec![1e-5f64, 0.0, 2e6], [3], &CPU).unwrap();
    assert_eq!(e.to_string(), "tensor([1.0000e-5,    0.0000,  2.0000e6], shape=[3], dtype=f64, device=cpu)");
    assert_eq!(format!("{t:?}"), "Tensor[[3]; f32; cpu]");
}

#[test]
fn display_summarises_big_tensors() {
    let t = Tensor::arange(0.0, 5000.0, 1.0, &CPU).unwrap();
    assert_eq!(
        t.to_string(),
        "tensor([   0.0000,    1.0000,    2.0000, ..., 4997.0000, 4998.0000, 4999.0000], shape=[5000], dtype=f32, device=cpu)"
    );
    let m = Tensor::arange(0.0, 1600.0, 1.0, &CPU).unwrap().reshape([40, 40]).unwrap();
    let s = m.to_string();
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines.len(), 7, "3 rows, ..., 3 rows:\n{s}");
    assert_eq!(lines[0], "tensor([[   0.0000,    1.0000,    2.0000, ...,   37.0000,   38.0000,   39.0000],");
    assert_eq!(lines[3], "        ...,");
    assert!(lines[6].starts_with("        [1560.0000, 1561.0000, 1562.0000, ..., 1597.0000, 1598.0000, 1599.0000]]"), "{}", lines[6]);
    assert!(lines[6].ends_with("shape=[40, 40], dtype=f32, device=cpu)"));
    // At the threshold (1000 elements) nothing is elided.
    let full = Tensor::zeros([1000], DType::F32, &CPU).unwrap().to_string();
    assert!(!full.contains("..."));
}

// ---- image op wrappers ----------------------------------------------------

/// Naive cross-correlation with zero padding.
fn conv_ref(x: &Nd, w: &Nd, b: Option<&Nd>, stride: usize, pad: usize) -> Nd {
    let (n, c, h, wd) = (x.dims[0], x.dims[1], x.dims[2], x.dims[3]);
    let (o, kh, kw) = (w.dims[0], w.dims[2], w.dims[3]);
    let (oh, ow) = ((h + 2 * pad - kh) / stride + 1, (wd + 2 * pad - kw) / stride + 1);
    Nd::from_fn(&[n, o, oh, ow], |i| {
        let mut acc = b.map_or(0.0, |b| b.data[i[1]]);
        for ci in 0..c {
            for ky in 0..kh {
                for kx in 0..kw {
                    let (y, xx) = ((i[2] * stride + ky) as isize - pad as isize, (i[3] * stride + kx) as isize - pad as isize);
                    if y >= 0 && xx >= 0 && (y as usize) < h && (xx as usize) < wd {
                        acc += x.at(&[i[0], ci, y as usize, xx as usize]) * w.at(&[i[1], ci, ky, kx]);
                    }
                }
            }
        }
        acc
    })
}

fn rand_nd(dims: &[usize], rng: &mut Rng) -> Nd {
    Nd::new(dims, (0..dims.iter().product()).map(|_| rng.next_f64() * 2.0 - 1.0).collect())
}

/// The dot product <a, b> of two arrays of one shape.
fn dot(a: &Nd, b: &Nd) -> f64 {
    a.data.iter().zip(&b.data).map(|(x, y)| x * y).sum()
}

/// A batch or channel count in 1..=max, and now and then 0 (empty tensors).
fn sometimes_zero(max: usize) -> impl Strategy<Value = usize> {
    prop_oneof![1 => Just(0usize), 4 => 1usize..=max]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// conv2d and its two backward wrappers (checked as adjoints of the
    /// reference: <conv(x, w), g> = <x, dx(g)> = <w, dw(x, g)>), in f64 to
    /// 1e-10 and f32 to 1e-4 relative to the magnitude of the terms.
    #[test]
    fn conv2d_wrappers(
        (n, c, o) in (sometimes_zero(2), sometimes_zero(3), sometimes_zero(3)),
        (h, w) in (3usize..=7, 3usize..=7),
        (kh, kw) in (1usize..=3, 1usize..=3),
        (stride, pad) in (1usize..=2, 0usize..=1),
        kinds in (0..VIEW_KINDS, 0..VIEW_KINDS),
        with_bias in any::<bool>(),
        f64_ in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let dtype = dtype_of(f64_);
        let mut rng = Rng::new(seed);
        let x = rand_nd(&[n, c, h, w], &mut rng).round(dtype);
        let wt = rand_nd(&[o, c, kh, kw], &mut rng).round(dtype);
        let b = rand_nd(&[o], &mut rng).round(dtype);
        let bias = with_bias.then(|| non_contiguous_of(&b, dtype, kinds.0));
        let (tx, tw) = (non_contiguous_of(&x, dtype, kinds.0), non_contiguous_of(&wt, dtype, kinds.1));
        let y = tx.conv2d(&tw, bias.as_ref(), stride, pad).unwrap();
        let want = conv_ref(&x, &wt, with_bias.then_some(&b), stride, pad);
        // Each output sums c*kh*kw <= 27 products of values in [-1, 1].
        let (rtol, atol) = if f64_ { (1e-12, 1e-12) } else { (1e-5, 3e-5) };
        assert_tensor_close(&y, &want, rtol, atol);

        let g = rand_nd(&want.dims, &mut rng).round(dtype);
        let tg = non_contiguous_of(&g, dtype, kinds.1);
        let dx = tg.conv2d_backward_input(&tw, &[n, c, h, w], stride, pad).unwrap();
        let dw = tx.conv2d_backward_weight(&tg, &[o, c, kh, kw], stride, pad).unwrap();
        prop_assert_eq!(dx.dims(), &[n, c, h, w][..]);
        prop_assert_eq!(dw.dims(), &[o, c, kh, kw][..]);
        let no_bias = conv_ref(&x, &wt, None, stride, pad);
        let lhs = dot(&no_bias, &g);
        let scale: f64 = no_bias.data.len() as f64 * 27.0;
        let tol = if f64_ { 1e-10 } else { 1e-4 } * scale;
        let rx = dot(&x, &Nd::new(&[n, c, h, w], dx.to_f64_vec().unwrap()));
        let rw = dot(&wt, &Nd::new(&[o, c, kh, kw], dw.to_f64_vec().unwrap()));
        prop_assert!((lhs - rx).abs() <= tol, "<conv, g> = {} but <x, dx> = {}", lhs, rx);
        prop_assert!((lhs - rw).abs() <= tol, "<conv, g> = {} but <w, dw> = {}", lhs, rw);
    }

    /// Pooling and upsampling wrappers on strided inputs.
    #[test]
    fn pool_and_upsample_wrappers(
        (n, c) in (sometimes_zero(2), sometimes_zero(3)),
        (h, w) in (2usize..=7, 2usize..=7),
        kernel in 1usize..=3,
        stride in 1usize..=3,
        (sh, sw) in (1usize..=3, 1usize..=3),
        kind in 0..VIEW_KINDS,
        f64_ in any::<bool>(),
        vals in tied_values(2 * 3 * 7 * 7),
    ) {
        prop_assume!(kernel <= h && kernel <= w);
        let dtype = dtype_of(f64_);
        let x = Nd::new(&[n, c, h, w], vals[..n * c * h * w].to_vec());
        let t = non_contiguous_of(&x, dtype, kind);
        let (oh, ow) = ((h - kernel) / stride + 1, (w - kernel) / stride + 1);
        let window = |i: &[usize]| -> Vec<(usize, usize)> {
            (0..kernel * kernel).map(|k| (i[2] * stride + k / kernel, i[3] * stride + k % kernel)).collect()
        };
        let avg = Nd::from_fn(&[n, c, oh, ow], |i| window(i).iter().map(|&(y, xx)| x.at(&[i[0], i[1], y, xx])).sum::<f64>() / (kernel * kernel) as f64);
        let max = Nd::from_fn(&[n, c, oh, ow], |i| window(i).iter().map(|&(y, xx)| x.at(&[i[0], i[1], y, xx])).fold(f64::NEG_INFINITY, f64::max));
        // Values are multiples of 1/2: sums are exact; the average divides
        // once (rtol 1e-6 for f32).
        assert_tensor_close(&t.avg_pool2d(kernel, stride).unwrap(), &avg, 1e-6, 0.0);
        assert_tensor_close(&t.max_pool2d(kernel, stride).unwrap(), &max, 0.0, 0.0);

        // Backward: avg spreads g / k^2 over each window, max sends g to the
        // first max of each window (row-major); overlaps accumulate.
        let g = Nd::from_fn(&[n, c, oh, ow], |i| 1.0 + ravel(i, &[n, c, oh, ow]) as f64);
        let tg = non_contiguous_of(&g, dtype, kind.wrapping_add(2));
        let mut davg = Nd::new(&[n, c, h, w], vec![0.0; n * c * h * w]);
        let mut dmax = davg.clone();
        for i in 0..g.data.len() {
            let oi = unravel(i, &g.dims);
            let win = window(&oi);
            for &(y, xx) in &win {
                davg.data[ravel(&[oi[0], oi[1], y, xx], &[n, c, h, w])] += g.data[i] / (kernel * kernel) as f64;
            }
            let first = win.iter().copied().find(|&(y, xx)| x.at(&[oi[0], oi[1], y, xx]) == max.data[i]).unwrap();
            dmax.data[ravel(&[oi[0], oi[1], first.0, first.1], &[n, c, h, w])] += g.data[i];
        }
        let (rtol, atol) = tol(dtype);
        assert_tensor_close(&tg.avg_pool2d_backward(&[n, c, h, w], kernel, stride).unwrap(), &davg, rtol, atol * 100.0);
        assert_tensor_close(&t.max_pool2d_backward(&tg, kernel, stride).unwrap(), &dmax, 0.0, 0.0);

        // Nearest upsampling repeats each pixel sh x sw times; its backward
        // sums each block (exact for these values).
        let up = Nd::from_fn(&[n, c, h * sh, w * sw], |i| x.at(&[i[0], i[1], i[2] / sh, i[3] / sw]));
        let tu = t.upsample_nearest2d(sh, sw).unwrap();
        assert_tensor_close(&tu, &up, 0.0, 0.0);
        let back = Nd::from_fn(&[n, c, h, w], |i| (sh * sw) as f64 * x.at(i));
        assert_tensor_close(&non_contiguous_of(&up, dtype, kind).upsample_nearest2d_backward(sh, sw).unwrap(), &back, 0.0, 0.0);
    }

    /// group_norm against the two-pass reference; its backward against the
    /// closed forms for gamma/beta and a finite difference for x.
    #[test]
    fn group_norm_wrappers(
        n in 1usize..=2,
        (groups, per_group) in (1usize..=3, 1usize..=3),
        spatial in shape_rank(0..=2),
        kind in 0..VIEW_KINDS,
        f64_ in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let dtype = dtype_of(f64_);
        let c = groups * per_group;
        let mut dims = vec![n, c];
        dims.extend(&spatial);
        let hw: usize = spatial.iter().product();
        let mut rng = Rng::new(seed);
        let x = rand_nd(&dims, &mut rng).map(|v| 3.0 * v + 1.0).round(dtype);
        let gamma = rand_nd(&[c], &mut rng).round(dtype);
        let beta = rand_nd(&[c], &mut rng).round(dtype);
        let eps = 1e-5;
        let forward = |x: &Nd| -> (Nd, Vec<f64>, Vec<f64>) {
            let (mut means, mut rstds) = (vec![], vec![]);
            let mut y = x.clone();
            let len = per_group * hw;
            for b in 0..n {
                for g in 0..groups {
                    let start = (b * c + g * per_group) * hw;
                    let s = &x.data[start..start + len];
                    // An empty group (no spatial positions) reports mean 0
                    // and variance 0, as both backends define it.
                    let mean = if len == 0 { 0.0 } else { s.iter().sum::<f64>() / len as f64 };
                    let var = if len == 0 { 0.0 } else { s.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / len as f64 };
                    let rstd = 1.0 / (var + eps).sqrt();
                    for (k, v) in s.iter().enumerate() {
                        let ch = g * per_group + k / hw;
                        y.data[start + k] = (v - mean) * rstd * gamma.data[ch] + beta.data[ch];
                    }
                    means.push(mean);
                    rstds.push(rstd);
                }
            }
            (y, means, rstds)
        };
        let (want_y, want_mean, want_rstd) = forward(&x);
        let tx = non_contiguous_of(&x, dtype, kind);
        let (y, mean, rstd) = tx.group_norm(groups, &tensor_of(&gamma, dtype), &tensor_of(&beta, dtype), eps).unwrap();
        // f32: statistics in f64, then one fused multiply-add in f32 per
        // element, y = x * a + b with a = rstd * gamma and b = beta - mean * a.
        // rstd reaches 1/sqrt(eps) ~ 316 for a (near-)constant group, and then
        // x * a and b nearly cancel: the rounding error is a few ulps of
        // |x| * rstd * |gamma|, far above y's own size. atol 1e-4 on y (values
        // O(1..10)) or 4 ulps of that product, whichever is larger; rtol 1e-5.
        let largest = |v: &[f64]| v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let cancelled = largest(&x.data) * largest(&want_rstd) * largest(&gamma.data);
        let (rtol, atol) = if f64_ { (1e-10, 1e-10) } else { (1e-5, 1e-4f64.max(4.0 * f32::EPSILON as f64 * cancelled)) };
        assert_tensor_close(&y, &want_y, rtol, atol);
        let atol = if f64_ { 1e-10 } else { 1e-4 };
        assert_tensor_close(&mean, &Nd::new(&[n, groups], want_mean), rtol, atol);
        assert_tensor_close(&rstd, &Nd::new(&[n, groups], want_rstd.clone()), rtol, atol);

        let dy = rand_nd(&dims, &mut rng).round(dtype);
        let (dx, dg, db) = tx.group_norm_backward(&tensor_of(&gamma, dtype), &mean, &rstd, &non_contiguous_of(&dy, dtype, kind.wrapping_add(1)), groups, eps).unwrap();
        // d beta_c = sum dy over (n, spatial); d gamma_c = sum dy * xhat.
        let xhat = Nd::from_fn(&dims, |i| (want_y.at(i) - beta.data[i[1]]) / gamma.data[i[1]]);
        let per_channel = |f: &dyn Fn(&[usize]) -> f64| -> Nd {
            let mut out = vec![0.0; c];
            for i in 0..dy.data.len() {
                let idx = unravel(i, &dims);
                out[idx[1]] += f(&idx);
            }
            Nd::new(&[c], out)
        };
        let want_db = per_channel(&|i| dy.at(i));
        let want_dg = per_channel(&|i| dy.at(i) * xhat.at(i));
        let (rtol, atol) = if f64_ { (1e-8, 1e-8) } else { (1e-4, 1e-3) };
        assert_tensor_close(&db, &want_db, rtol, atol);
        assert_tensor_close(&dg, &want_dg, rtol, atol);
        // dx by central differences of L(x) = <y(x), dy> in f64 (step 1e-6,
        // truncation error ~1e-10); only checked on f64 tensors, where the
        // kernel's own error is far below that.
        if f64_ {
            let loss = |x: &Nd| dot(&forward(x).0, &dy);
            let got = dx.to_f64_vec().unwrap();
            for i in (0..x.data.len()).step_by(3) {
                let (mut xp, mut xm) = (x.clone(), x.clone());
                xp.data[i] += 1e-6;
                xm.data[i] -= 1e-6;
                let fd = (loss(&xp) - loss(&xm)) / 2e-6;
                prop_assert!((got[i] - fd).abs() <= 1e-5 * (1.0 + fd.abs()), "dx[{}] = {} but finite difference {}", i, got[i], fd);
            }
        } else {
            prop_assert_eq!(dx.dims(), dims.as_slice());
        }
    }
}

#[test]
fn image_wrappers_reject_bad_shapes() {
    let z = |d: &[usize]| Tensor::zeros(d.to_vec(), DType::F32, &CPU).unwrap();
    let x = z(&[1, 2, 5, 5]);
    assert_eq!(err_text(z(&[2, 5, 5]).conv2d(&z(&[3, 2, 3, 3]), None, 1, 0)), "conv2d: shapes [2, 5, 5] and [3, 2, 3, 3] are incompatible");
    assert_eq!(err_text(x.conv2d(&z(&[3, 4, 3, 3]), None, 1, 0)), "conv2d: shapes [1, 2, 5, 5] and [3, 4, 3, 3] are incompatible");
    assert_eq!(err_text(x.conv2d(&z(&[3, 2, 6, 3]), None, 1, 0)), "conv2d: shapes [1, 2, 5, 5] and [3, 2, 6, 3] are incompatible");
    assert_eq!(err_text(x.conv2d(&z(&[3, 2, 3, 3]), None, 0, 0)), "conv2d: shapes [1, 2, 5, 5] and [3, 2, 3, 3] are incompatible");
    assert_eq!(err_text(x.conv2d(&z(&[3, 2, 3, 3]), Some(&z(&[2])), 1, 0)), "conv2d bias: shapes [2] and [3] are incompatible");
    let w64 = Tensor::zeros([3, 2, 3, 3], DType::F64, &CPU).unwrap();
    assert_eq!(err_text(x.conv2d(&w64, None, 1, 0)), "conv2d: dtypes f32 and f64 differ; convert one with to_dtype");
    assert_eq!(
        err_text(z(&[1, 3, 2, 2]).conv2d_backward_input(&z(&[3, 2, 3, 3]), &[1, 2, 5, 5], 1, 0)),
        "conv2d_backward_input: shapes [1, 3, 2, 2] and [1, 3, 3, 3] are incompatible"
    );
    assert_eq!(
        err_text(x.conv2d_backward_weight(&z(&[1, 3, 4, 3]), &[3, 2, 3, 3], 1, 0)),
        "conv2d_backward_weight: shapes [1, 3, 4, 3] and [1, 3, 3, 3] are incompatible"
    );

    assert_eq!(err_text(z(&[2, 5, 5]).avg_pool2d(2, 2)), "avg_pool2d: expected 4 dims [N, C, H, W] (shape [2, 5, 5])");
    assert_eq!(err_text(x.max_pool2d(6, 1)), "max_pool2d: kernel 6 with stride 1 does not fit (shape [1, 2, 5, 5])");
    assert_eq!(err_text(x.max_pool2d(2, 0)), "max_pool2d: kernel 2 with stride 0 does not fit (shape [1, 2, 5, 5])");
    assert_eq!(err_text(z(&[1, 2, 3, 3]).avg_pool2d_backward(&[1, 2, 5, 5], 2, 2)), "avg_pool2d_backward: shapes [1, 2, 3, 3] and [1, 2, 2, 2] are incompatible");
    assert_eq!(err_text(x.max_pool2d_backward(&z(&[1, 2, 3, 3]), 2, 2)), "max_pool2d_backward: shapes [1, 2, 3, 3] and [1, 2, 2, 2] are incompatible");

    assert_eq!(err_text(z(&[5, 5]).upsample_nearest2d(2, 2)), "upsample_nearest2d: expected 4 dims [N, C, H, W] (shape [5, 5])");
    assert_eq!(err_text(x.upsample_nearest2d(0, 2)), "upsample_nearest2d: scale factors must be positive");
    assert_eq!(err_text(x.upsample_nearest2d_backward(2, 2)), "upsample_nearest2d_backward: not divisible by scales 2x2 (shape [1, 2, 5, 5])");

    let x = z(&[2, 6, 4]);
    let (g6, b6) = (z(&[6]), z(&[6]));
    assert_eq!(err_text(x.group_norm(4, &g6, &b6, 1e-5)), "group_norm: 6 channels do not split into 4 groups (shape [2, 6, 4])");
    assert_eq!(err_text(x.group_norm(0, &g6, &b6, 1e-5)), "group_norm: 6 channels do not split into 0 groups (shape [2, 6, 4])");
    assert_eq!(err_text(z(&[6]).group_norm(1, &g6, &b6, 1e-5)), "group_norm: expected [N, C, ...] (shape [6])");
    assert_eq!(err_text(x.group_norm(2, &z(&[3]), &b6, 1e-5)), "group_norm gamma: shapes [3] and [6] are incompatible");
    assert_eq!(err_text(x.group_norm(2, &g6, &z(&[6, 1]), 1e-5)), "group_norm beta: shapes [6, 1] and [6] are incompatible");
    let (_, m, r) = x.group_norm(2, &g6, &b6, 1e-5).unwrap();
    assert_eq!(err_text(x.group_norm_backward(&g6, &m, &r, &z(&[2, 6, 5]), 2, 1e-5)), "group_norm_backward: shapes [2, 6, 5] and [2, 6, 4] are incompatible");
    assert_eq!(err_text(x.group_norm_backward(&g6, &z(&[2, 3]), &r, &x, 2, 1e-5)), "group_norm_backward mean: shapes [2, 3] and [2, 2] are incompatible");
    assert_eq!(err_text(x.group_norm_silu(4, &g6, &b6, 1e-5)), "group_norm_silu: 6 channels do not split into 4 groups (shape [2, 6, 4])");
    assert_eq!(err_text(x.group_norm_silu(2, &g6, &z(&[5]), 1e-5)), "group_norm_silu beta: shapes [5] and [6] are incompatible");
    assert_eq!(err_text(x.group_norm_silu_backward(&g6, &z(&[4]), &m, &r, &x, 2, 1e-5)), "group_norm_silu_backward beta: shapes [4] and [6] are incompatible");
    assert_eq!(err_text(x.group_norm_silu_backward(&g6, &b6, &m, &z(&[2]), &x, 2, 1e-5)), "group_norm_silu_backward rstd: shapes [2] and [2, 2] are incompatible");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// The fused group_norm_silu is silu(group_norm(x)), and its backward
    /// the group norm backward of dy * silu'(z), on views of f64 tensors
    /// (the kernels themselves are checked against f64 references and
    /// finite differences in cpu/group_norm.rs).
    #[test]
    fn group_norm_silu_is_silu_of_group_norm(
        n in 1usize..=2,
        (groups, per_group) in (1usize..=3, 1usize..=3),
        spatial in shape_rank(0..=2),
        kind in 0..VIEW_KINDS,
        seed in any::<u64>(),
    ) {
        let c = groups * per_group;
        let mut dims = vec![n, c];
        dims.extend(&spatial);
        let mut rng = Rng::new(seed);
        let x = non_contiguous_of(&rand_nd(&dims, &mut rng).map(|v| 3.0 * v + 1.0), DType::F64, kind);
        let gamma = tensor_of(&rand_nd(&[c], &mut rng), DType::F64);
        let beta = tensor_of(&rand_nd(&[c], &mut rng), DType::F64);
        let dy = tensor_of(&rand_nd(&dims, &mut rng), DType::F64);
        let close = |a: &Tensor, b: &Tensor| -> Result<(), TestCaseError> {
            prop_assert_eq!(a.dims(), b.dims());
            for (u, v) in a.to_f64_vec().unwrap().iter().zip(b.to_f64_vec().unwrap()) {
                prop_assert!((u - v).abs() <= 1e-9 * (1.0 + v.abs()), "{} vs {}", u, v);
            }
            Ok(())
        };
        let (y, mean, rstd) = x.group_norm_silu(groups, &gamma, &beta, 1e-5).unwrap();
        let (z, mean0, rstd0) = x.group_norm(groups, &gamma, &beta, 1e-5).unwrap();
        close(&y, &z.silu().unwrap())?;
        close(&mean, &mean0)?;
        close(&rstd, &rstd0)?;
        let (dx, dg, db) = x.group_norm_silu_backward(&gamma, &beta, &mean, &rstd, &dy, groups, 1e-5).unwrap();
        let dz = z.silu_backward(&dy).unwrap();
        let (dx0, dg0, db0) = x.group_norm_backward(&gamma, &mean, &rstd, &dz, groups, 1e-5).unwrap();
        close(&dx, &dx0)?;
        close(&dg, &dg0)?;
        close(&db, &db0)?;
    }
}

// ---- empty tensors --------------------------------------------------------

/// Tensors with a zero-size dim go through every op family without
/// panicking ("nothing here panics on user input").
#[test]
fn zero_size_dims_are_handled() {
    let z = |d: &[usize]| Tensor::zeros(d.to_vec(), DType::F32, &CPU).unwrap();
    let e = z(&[0, 3]);
    assert_eq!(e.exp().unwrap().dims(), &[0, 3]);
    assert_eq!(e.add(&z(&[3])).unwrap().dims(), &[0, 3]);
    assert_eq!(e.t().unwrap().contiguous().unwrap().dims(), &[3, 0]);
    assert_eq!(e.sum(&[0], false).unwrap().to_f64_vec().unwrap(), vec![0.0; 3]);
    assert_eq!(e.sum(&[1], false).unwrap().dims(), &[0]);
    assert_eq!(e.sum_all().unwrap().to_scalar().unwrap(), 0.0);
    assert_eq!(e.matmul(&z(&[3, 2])).unwrap().dims(), &[0, 2]);
    assert_eq!(z(&[2, 0]).matmul(&z(&[0, 4])).unwrap().to_f64_vec().unwrap(), vec![0.0; 8]);
    assert_eq!(Tensor::cat(&[&z(&[2, 3]), &e, &z(&[1, 3])], 0).unwrap().dims(), &[3, 3]);
    assert_eq!(z(&[4, 3]).narrow(0, 4, 0).unwrap().to_f64_vec().unwrap(), Vec::<f64>::new());
    assert_eq!(e.to_string(), "tensor([], shape=[0, 3], dtype=f32, device=cpu)");
    let none = Tensor::from_vec(Vec::<u32>::new(), 0, &CPU).unwrap();
    assert_eq!(z(&[3, 2]).index_select(&none, 0).unwrap().dims(), &[0, 2]);
}

/// bernoulli(1) is all ones and bernoulli(0) all zeros in every float
/// dtype: the uniform draw is compared with p before any rounding to a
/// narrow dtype (in f16, about 1 draw in 4096 rounds up to 1.0).
#[test]
fn bernoulli_extremes_are_exact_in_every_float_dtype() {
    let mut rng = Rng::new(99);
    for dtype in [DType::F32, DType::F64, DType::F16, DType::BF16] {
        let ones = Tensor::bernoulli(1.0, [100_000], dtype, &CPU, &mut rng).unwrap();
        assert_eq!(ones.dtype(), dtype);
        assert!(ones.to_f64_vec().unwrap().iter().all(|&v| v == 1.0), "bernoulli(1) in {dtype}");
        let zeros = Tensor::bernoulli(0.0, [100_000], dtype, &CPU, &mut rng).unwrap();
        assert!(zeros.to_f64_vec().unwrap().iter().all(|&v| v == 0.0), "bernoulli(0) in {dtype}");
    }
}

/// Every combination of empty batch, input channels and output channels,
/// on every path a convolution can take (1x1, 3x3 at stride 1 and 2, with
/// and without padding), in both dtypes. The proptest above meets these
/// only now and then; an empty tensor must never reach a kernel's chunking.
#[test]
fn convolutions_of_empty_tensors() {
    let mut rng = Rng::new(7);
    for f64_ in [false, true] {
        let dtype = dtype_of(f64_);
        for (n, c, o) in (0..27).map(|i| (i / 9, i / 3 % 3, i % 3)) {
            for (k, stride, pad, h) in [(1, 1, 0, 5), (3, 1, 1, 8), (3, 1, 0, 6), (3, 2, 1, 7), (2, 1, 0, 4)] {
                let x = rand_nd(&[n, c, h, h], &mut rng).round(dtype);
                let wt = rand_nd(&[o, c, k, k], &mut rng).round(dtype);
                let b = rand_nd(&[o], &mut rng).round(dtype);
                let (tx, tw, tb) = (tensor_of(&x, dtype), tensor_of(&wt, dtype), tensor_of(&b, dtype));
                let y = tx.conv2d(&tw, Some(&tb), stride, pad).unwrap();
                assert_tensor_close(&y, &conv_ref(&x, &wt, Some(&b), stride, pad), 1e-5, 3e-5);
                // The sampling path: every fused part at once.
                let (scale, shift) = (tensor_of(&rand_nd(&[n, c], &mut rng), dtype), tensor_of(&rand_nd(&[n, c], &mut rng), dtype));
                let fusion = Fusion { bias: Some(&tb), input_affine: Some((&scale, &shift)), input_silu: true, residual: Some(&y), moments: true, transient_weight: false };
                let (fused, moments) = tx.conv2d_fused(&tw, stride, pad, &fusion).unwrap();
                let composed = tx.mul(&scale.reshape([n, c, 1, 1]).unwrap()).unwrap().add(&shift.reshape([n, c, 1, 1]).unwrap()).unwrap().silu().unwrap();
                let composed = composed.conv2d(&tw, Some(&tb), stride, pad).unwrap().add(&y).unwrap();
                assert_eq!(fused.dims(), composed.dims());
                assert_eq!(moments.unwrap().dims(), &[n, o, 2][..]);
                let (got, want) = (fused.to_f64_vec().unwrap(), composed.to_f64_vec().unwrap());
                assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() <= 1e-4 * (1.0 + b.abs())), "fused conv of {:?}", (n, c, o, k, stride, pad));
                // The filters rearranged for one call only: the same values.
                let transient = tx.conv2d_fused(&tw, stride, pad, &Fusion { transient_weight: true, ..fusion }).unwrap().0;
                assert_eq!(transient.to_f64_vec().unwrap(), got, "transient filters, {:?}", (n, c, o, k, stride, pad));
                let g = rand_nd(y.dims(), &mut rng).round(dtype);
                let tg = tensor_of(&g, dtype);
                let dx = tg.conv2d_backward_input(&tw, &[n, c, h, h], stride, pad).unwrap();
                let dw = tx.conv2d_backward_weight(&tg, &[o, c, k, k], stride, pad).unwrap();
                assert_eq!(dx.dims(), &[n, c, h, h][..]);
                assert_eq!(dw.dims(), &[o, c, k, k][..]);
                // With an empty side, the gradients are zero wherever they exist.
                if n == 0 || o == 0 {
                    assert!(dx.to_f64_vec().unwrap().iter().all(|&v| v == 0.0), "dx of {:?}", (n, c, o, k, stride, pad));
                }
                if n == 0 || c == 0 || o == 0 {
                    assert!(dw.to_f64_vec().unwrap().iter().all(|&v| v == 0.0), "dw of {:?}", (n, c, o, k, stride, pad));
                }
            }
        }
    }
}

/// `dropout_mask` draws the mask `dropout` applies, value for value, and
/// leaves the generator where `dropout` would, in both dtypes the CPU
/// computes in, at several sizes.
#[test]
fn dropout_mask_is_the_mask_of_dropout() {
    for dtype in [DType::F32, DType::F64] {
        for n in [1usize, 17, 1000, 70_001] {
            let x = Tensor::ones([n], dtype, &CPU).unwrap();
            let (mut a, mut b) = (Rng::new(7), Rng::new(7));
            let (_, want) = x.dropout(0.3, &mut a).unwrap();
            let mask = Tensor::dropout_mask(0.3, [n], dtype, &CPU, &mut b).unwrap();
            assert_eq!(mask.dtype(), dtype);
            assert_eq!(mask.to_f64_vec().unwrap(), want.to_f64_vec().unwrap(), "{dtype} n={n}");
            assert_eq!((a.key, a.counter), (b.key, b.counter), "the generators moved alike");
        }
    }
    let mut rng = Rng::new(0);
    assert_eq!(err_text(Tensor::dropout_mask(1.5, [2], DType::F32, &CPU, &mut rng)), "dropout_mask: probability 1.5 is outside [0, 1]");
}

/// Bad operands of the modulated group norm are errors that name the
/// shapes, never a panic in the kernel.
#[test]
fn modulated_group_norm_names_bad_shapes() {
    let x = Tensor::zeros([2, 4, 3, 3], DType::F32, &CPU).unwrap();
    let (gamma, beta) = (Tensor::ones([4], DType::F32, &CPU).unwrap(), Tensor::zeros([4], DType::F32, &CPU).unwrap());
    let good = Tensor::ones([2, 4], DType::F32, &CPU).unwrap();
    let bad = Tensor::ones([4, 2], DType::F32, &CPU).unwrap();
    let err = err_text(x.group_norm_silu_modulated(2, &bad, &good, &gamma, &beta, 1e-5, None));
    assert!(err.contains("group_norm_silu_modulated scale") && err.contains("[4, 2]") && err.contains("[2, 4]"), "{err}");
    let mask = Tensor::ones([2, 4, 3, 2], DType::F32, &CPU).unwrap();
    let err = err_text(x.group_norm_silu_modulated(2, &good, &good, &gamma, &beta, 1e-5, Some(&mask)));
    assert!(err.contains("group_norm_silu_modulated mask") && err.contains("[2, 4, 3, 2]"), "{err}");
    let err = err_text(x.group_norm_silu_modulated(3, &good, &good, &gamma, &beta, 1e-5, None));
    assert!(err.contains("4 channels do not split into 3 groups"), "{err}");
}
