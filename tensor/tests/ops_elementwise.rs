//! Property tests of the elementwise ops (unary, scalar forms, broadcasting
//! binary ops, comparisons, where_cond) against f64 loop references, on f32
//! and f64, with contiguous and non-contiguous inputs.

mod common;

use common::*;
use proptest::prelude::*;
use tensor::{DType, Tensor};

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The input transform that keeps an op in its domain (the references take
/// the transformed, dtype-rounded values).
#[derive(Clone, Copy, Debug)]
enum Domain {
    Any,
    /// |x| + 0.1: log, sqrt, powf.
    Positive,
    /// sign(x) * (|x| + 0.1): recip.
    AwayFromZero,
}

type UnaryCase = (&'static str, Domain, fn(&Tensor) -> tensor::Result<Tensor>, fn(f64) -> f64);

fn unary_cases() -> Vec<UnaryCase> {
    vec![
        ("neg", Domain::Any, |t| t.neg(), |x| -x),
        ("exp", Domain::Any, |t| t.exp(), f64::exp),
        ("log", Domain::Positive, |t| t.log(), f64::ln),
        ("sqrt", Domain::Positive, |t| t.sqrt(), f64::sqrt),
        ("sqr", Domain::Any, |t| t.sqr(), |x| x * x),
        ("recip", Domain::AwayFromZero, |t| t.recip(), |x| 1.0 / x),
        ("tanh", Domain::Any, |t| t.tanh(), f64::tanh),
        ("sigmoid", Domain::Any, |t| t.sigmoid(), sigmoid),
        ("silu", Domain::Any, |t| t.silu(), |x| x * sigmoid(x)),
        ("relu", Domain::Any, |t| t.relu(), |x| x.max(0.0)),
        ("abs", Domain::Any, |t| t.abs(), f64::abs),
        ("sin", Domain::Any, |t| t.sin(), f64::sin),
        ("cos", Domain::Any, |t| t.cos(), f64::cos),
    ]
}

fn in_domain(d: Domain, x: f64) -> f64 {
    match d {
        Domain::Any => x,
        Domain::Positive => x.abs() + 0.1,
        Domain::AwayFromZero => x.signum() * (x.abs() + 0.1),
    }
}

fn dtype_of(f64_: bool) -> DType {
    if f64_ {
        DType::F64
    } else {
        DType::F32
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Every named unary op, on every view kind, both float dtypes.
    #[test]
    fn unary_ops_match_reference((dims, vals) in shaped_values(), kind in 0..VIEW_KINDS, f64_ in any::<bool>()) {
        let dtype = dtype_of(f64_);
        // f32: the kernels are libm calls in f32, accurate to a few ulps:
        // rtol 1e-5 and atol 1e-6 (sin/cos near their zeros). f64: 1e-12.
        let (rtol, atol) = tol(dtype);
        for (name, domain, op, reference) in unary_cases() {
            let input = Nd::new(&dims, vals.iter().map(|&x| in_domain(domain, x)).collect()).round(dtype);
            let x = non_contiguous_of(&input, dtype, kind);
            let got = op(&x).unwrap();
            prop_assert!(got.is_contiguous(), "{name}: output must be contiguous");
            prop_assert_eq!(got.dtype(), dtype);
            let want = input.map(reference);
            let g = got.to_f64_vec().unwrap();
            for (i, (&g, &w)) in g.iter().zip(&want.data).enumerate() {
                prop_assert!((g - w).abs() <= atol + rtol * w.abs(), "{name}[{i}] ({dtype}, view {kind}): got {g}, want {w}");
            }
            prop_assert_eq!(got.dims(), dims.as_slice());
        }
    }

    /// powf, clamp, affine and the scalar forms with random parameters.
    #[test]
    fn parameterised_unary_ops_match_reference(
        (dims, vals) in shaped_values(),
        kind in 0..VIEW_KINDS,
        f64_ in any::<bool>(),
        e in -2.0f64..2.5,
        (lo, width) in (-2.0f64..1.0, 0.0f64..2.0),
        (mul, add) in (-3.0f64..3.0, -3.0f64..3.0),
        s in prop_oneof![-4.0f64..-0.5, 0.5f64..4.0],
    ) {
        let dtype = dtype_of(f64_);
        let (rtol, atol) = tol(dtype);
        let input = Nd::new(&dims, vals.clone()).round(dtype);
        let x = non_contiguous_of(&input, dtype, kind);
        let hi = lo + width;
        // Parameters are converted to the dtype by the kernel.
        let p = |v: f64| round_to(dtype, v);

        // Exact ops (a max/min of two representable values): tolerance 0.
        assert_tensor_close(&x.clamp(lo, hi).unwrap(), &input.map(|v| v.max(p(lo)).min(p(hi))), 0.0, 0.0);
        assert_tensor_close(&x.maximum_scalar(s).unwrap(), &input.map(|v| v.max(p(s))), 0.0, 0.0);
        assert_tensor_close(&x.minimum_scalar(s).unwrap(), &input.map(|v| v.min(p(s))), 0.0, 0.0);

        // One multiply and one add in the dtype: the error is relative to the
        // size of the terms, not of the (possibly cancelling) result, so atol
        // scales with 3|mul| + |add| + |s|.
        let scale = 3.0 * mul.abs() + add.abs() + s.abs() + 1.0;
        let a = atol * scale;
        assert_tensor_close(&x.affine(mul, add).unwrap(), &input.map(|v| v * mul + add), rtol, a);
        assert_tensor_close(&x.add_scalar(s).unwrap(), &input.map(|v| v + s), rtol, a);
        assert_tensor_close(&x.sub_scalar(s).unwrap(), &input.map(|v| v - s), rtol, a);
        assert_tensor_close(&x.mul_scalar(s).unwrap(), &input.map(|v| v * s), rtol, a);
        // div_scalar multiplies by 1/s: one more rounding than a division.
        assert_tensor_close(&x.div_scalar(s).unwrap(), &input.map(|v| v / s), rtol, a);

        // powf on positive bases; f32 powf is good to a few ulps (rtol 1e-5).
        let pos = input.map(|v| round_to(dtype, v.abs() + 0.1));
        let xp = non_contiguous_of(&pos, dtype, kind);
        assert_tensor_close(&xp.powf(e).unwrap(), &pos.map(|v| v.powf(p(e))), rtol, atol);
    }

    /// Unary ops read broadcast (stride-0) inputs correctly.
    #[test]
    fn unary_on_broadcast_input((out, small, _) in broadcast_pair(), f64_ in any::<bool>()) {
        let dtype = dtype_of(f64_);
        let n: usize = small.iter().product();
        let small_nd = Nd::new(&small, (0..n).map(|i| i as f64 * 0.37 - 1.0).collect()).round(dtype);
        let x = tensor_of(&small_nd, dtype).broadcast_as(out.clone()).unwrap();
        let want = Nd::from_fn(&out, |i| small_nd.at_broadcast(i).tanh());
        let (rtol, atol) = tol(dtype);
        assert_tensor_close(&x.tanh().unwrap(), &want, rtol, atol);
    }

    /// add/sub/mul/div/maximum/minimum with NumPy broadcasting.
    #[test]
    fn binary_ops_broadcast_like_numpy(
        (out, sa, sb) in broadcast_pair(),
        seed in any::<u64>(),
        (ka, kb) in (0..VIEW_KINDS, 0..VIEW_KINDS),
        f64_ in any::<bool>(),
        swap in any::<bool>(),
    ) {
        let dtype = dtype_of(f64_);
        let mut rng = tensor::Rng::new(seed);
        let (sa, sb) = if swap { (sb, sa) } else { (sa, sb) };
        let na: usize = sa.iter().product();
        let nb: usize = sb.iter().product();
        let a = Nd::new(&sa, (0..na).map(|_| rng.next_f64() * 6.0 - 3.0).collect()).round(dtype);
        // Divisors kept away from zero: sign * [0.5, 3.5).
        let b = Nd::new(&sb, (0..nb).map(|_| {
            let u = rng.next_f64() * 6.0 - 3.0;
            u.signum() * (u.abs() + 0.5)
        }).collect()).round(dtype);
        let (ta, tb) = (non_contiguous_of(&a, dtype, ka), non_contiguous_of(&b, dtype, kb));
        // Inputs are exact in the dtype, so each result is one correctly
        // rounded operation: rtol = 1 ulp-ish (1e-6 for f32, 1e-15 for f64).
        let rtol = if f64_ { 1e-15 } else { 1e-6 };
        type Case = (&'static str, fn(&Tensor, &Tensor) -> tensor::Result<Tensor>, fn(f64, f64) -> f64);
        let cases: [Case; 6] = [
            ("add", |x, y| x.add(y), |x, y| x + y),
            ("sub", |x, y| x.sub(y), |x, y| x - y),
            ("mul", |x, y| x.mul(y), |x, y| x * y),
            ("div", |x, y| x.div(y), |x, y| x / y),
            ("maximum", |x, y| x.maximum(y), f64::max),
            ("minimum", |x, y| x.minimum(y), f64::min),
        ];
        for (name, op, reference) in cases {
            let got = op(&ta, &tb).unwrap();
            let want = a.zip(&b, &out, reference).round(dtype);
            prop_assert_eq!(got.dims(), out.as_slice(), "{} shape", name);
            let g = got.to_f64_vec().unwrap();
            for (i, (&g, &w)) in g.iter().zip(&want.data).enumerate() {
                prop_assert!((g - w).abs() <= rtol * w.abs(), "{name}[{i}] {sa:?} vs {sb:?} ({dtype}): got {g}, want {w}");
            }
        }
    }

    /// eq..ge give 1/0 in the input dtype, broadcasting; ties are common.
    #[test]
    fn comparisons_match_reference(
        (out, sa, sb) in broadcast_pair(),
        (va, vb) in (tied_values(1296), tied_values(1296)),
        (ka, kb) in (0..VIEW_KINDS, 0..VIEW_KINDS),
        f64_ in any::<bool>(),
    ) {
        let dtype = dtype_of(f64_);
        let a = Nd::new(&sa, va[..sa.iter().product()].to_vec());
        let b = Nd::new(&sb, vb[..sb.iter().product()].to_vec());
        let (ta, tb) = (non_contiguous_of(&a, dtype, ka), non_contiguous_of(&b, dtype, kb));
        type Case = (&'static str, fn(&Tensor, &Tensor) -> tensor::Result<Tensor>, fn(&f64, &f64) -> bool);
        let cases: [Case; 6] = [
            ("eq", |x, y| x.eq(y), |x, y| x == y),
            ("ne", |x, y| x.ne(y), |x, y| x != y),
            ("lt", |x, y| x.lt(y), |x, y| x < y),
            ("le", |x, y| x.le(y), |x, y| x <= y),
            ("gt", |x, y| x.gt(y), |x, y| x > y),
            ("ge", |x, y| x.ge(y), |x, y| x >= y),
        ];
        for (name, op, reference) in cases {
            let got = op(&ta, &tb).unwrap();
            prop_assert_eq!(got.dtype(), dtype);
            let want = a.zip(&b, &out, |x, y| if reference(&x, &y) { 1.0 } else { 0.0 });
            prop_assert_eq!(got.dims(), out.as_slice(), "{} shape", name);
            // Exact: 0 or 1.
            prop_assert_eq!(got.to_f64_vec().unwrap(), want.data, "{}", name);
        }
    }

    /// where_cond broadcasts mask, on_true and on_false together.
    #[test]
    fn where_cond_broadcasts_three_ways(
        out in shape(),
        drops in (0..=4usize, 0..=4usize, 0..=4usize),
        masks in (any::<u8>(), any::<u8>(), any::<u8>()),
        mask_vals in tied_values(1296),
        kinds in (0..VIEW_KINDS, 0..VIEW_KINDS, 0..VIEW_KINDS),
        f64_ in any::<bool>(),
    ) {
        let dtype = dtype_of(f64_);
        let sm = squashed(&out, drops.0, masks.0);
        let st = squashed(&out, drops.1, masks.1);
        let sf = squashed(&out, drops.2, masks.2);
        let full = broadcast_shapes(&broadcast_shapes(&sm, &st).unwrap(), &sf).unwrap();
        // Mask: nonzero values (including negatives) count as true.
        let m = Nd::new(&sm, mask_vals[..sm.iter().product()].to_vec());
        let t = Nd::from_fn(&st, |i| 100.0 + i.iter().fold(0.0, |a, &x| a * 7.0 + x as f64));
        let f = Nd::from_fn(&sf, |i| -100.0 - i.iter().fold(0.0, |a, &x| a * 5.0 + x as f64));
        let got = non_contiguous_of(&m, dtype, kinds.0)
            .where_cond(&non_contiguous_of(&t, dtype, kinds.1), &non_contiguous_of(&f, dtype, kinds.2))
            .unwrap();
        let want = Nd::from_fn(&full, |i| if m.at_broadcast(i) != 0.0 { t.at_broadcast(i) } else { f.at_broadcast(i) });
        // Exact: values are copied.
        assert_tensor_close(&got, &want, 0.0, 0.0);
    }

    /// Shapes that do not broadcast give an error naming the op and both shapes.
    #[test]
    fn incompatible_shapes_name_both_shapes(
        base in shape_rank(1..=4),
        pos in any::<prop::sample::Index>(),
        (x, y) in (2usize..=6, 2usize..=6),
        drop in 0..=3usize,
    ) {
        prop_assume!(x != y);
        let d = pos.index(base.len());
        let mut sa = base.clone();
        sa[d] = x;
        let mut sb = base.clone();
        sb[d] = y;
        let sb = sb[drop.min(d)..].to_vec();
        let a = Tensor::zeros(sa.clone(), DType::F32, &CPU).unwrap();
        let b = Tensor::zeros(sb.clone(), DType::F32, &CPU).unwrap();
        let shapes = |op: &str| format!("{op}: shapes {sa:?} and {sb:?} are incompatible");
        prop_assert_eq!(err_text(a.add(&b)), shapes("add"));
        prop_assert_eq!(err_text(a.sub(&b)), shapes("sub"));
        prop_assert_eq!(err_text(a.mul(&b)), shapes("mul"));
        prop_assert_eq!(err_text(a.div(&b)), shapes("div"));
        prop_assert_eq!(err_text(a.maximum(&b)), shapes("maximum"));
        prop_assert_eq!(err_text(a.minimum(&b)), shapes("minimum"));
        prop_assert_eq!(err_text(a.eq(&b)), shapes("eq"));
        prop_assert_eq!(err_text(a.ge(&b)), shapes("ge"));
        let msg = err_text(a.where_cond(&b, &a));
        prop_assert!(msg.starts_with("where_cond: shapes") && msg.contains(&format!("{sa:?}")) && msg.contains(&format!("{sb:?}")), "{}", msg);
    }
}

#[test]
fn dtype_mismatch_is_an_error() {
    let a = Tensor::zeros([2], DType::F32, &CPU).unwrap();
    let b = Tensor::zeros([2], DType::F64, &CPU).unwrap();
    assert_eq!(err_text(a.add(&b)), "add: dtypes f32 and f64 differ; convert one with to_dtype");
    assert!(err_text(a.lt(&b)).contains("dtypes f32 and f64 differ"));
}

#[test]
fn clamp_rejects_inverted_bounds() {
    let a = Tensor::zeros([2], DType::F32, &CPU).unwrap();
    assert_eq!(err_text(a.clamp(1.0, -1.0)), "clamp: lower bound 1 is above upper bound -1");
}

#[test]
fn unary_ops_refuse_integer_tensors() {
    let a = Tensor::zeros([2], DType::U32, &CPU).unwrap();
    assert!(err_text(a.exp()).contains("dtype u32 not supported"));
}

#[test]
fn maximum_and_minimum_propagate_nan() {
    let a = Tensor::from_vec(vec![f32::NAN, 1.0, 2.0], [3], &CPU).unwrap();
    let b = Tensor::from_vec(vec![0.0f32, f32::NAN, 1.0], [3], &CPU).unwrap();
    let mx = a.maximum(&b).unwrap().to_vec::<f32>().unwrap();
    let mn = a.minimum(&b).unwrap().to_vec::<f32>().unwrap();
    assert!(mx[0].is_nan() && mx[1].is_nan() && mx[2] == 2.0, "{mx:?}");
    assert!(mn[0].is_nan() && mn[1].is_nan() && mn[2] == 1.0, "{mn:?}");
}

/// relu, clamp and the scalar bounds keep a NaN (PyTorch's rule) in both
/// float dtypes, and treat infinities as ordinary values.
#[test]
fn bounds_propagate_nan() {
    for dtype in [DType::F32, DType::F64] {
        let x = Tensor::from_vec(vec![f64::NAN, -1.0, 2.0, f64::INFINITY, f64::NEG_INFINITY], [5], &CPU)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let cases: [(&str, Tensor, [f64; 5]); 4] = [
            ("relu", x.relu().unwrap(), [f64::NAN, 0.0, 2.0, f64::INFINITY, 0.0]),
            ("clamp", x.clamp(-0.5, 0.5).unwrap(), [f64::NAN, -0.5, 0.5, 0.5, -0.5]),
            ("maximum_scalar", x.maximum_scalar(0.0).unwrap(), [f64::NAN, 0.0, 2.0, f64::INFINITY, 0.0]),
            ("minimum_scalar", x.minimum_scalar(0.0).unwrap(), [f64::NAN, -1.0, 0.0, 0.0, f64::NEG_INFINITY]),
        ];
        for (name, got, want) in cases {
            let got = got.to_f64_vec().unwrap();
            let same = got.iter().zip(&want).all(|(g, w)| (g.is_nan() && w.is_nan()) || g == w);
            assert!(same, "{name} {dtype:?}: got {got:?}, want {want:?}");
        }
    }
}

/// Big enough to take the parallel paths (2^15 elements and more), with a
/// broadcast operand and a transposed one.
#[test]
fn large_broadcast_binary_matches_reference() {
    let (r, c) = (300, 150);
    let a = Nd::from_fn(&[r, c], |i| ((i[0] * 31 + i[1] * 7) % 97) as f64 / 10.0 - 4.0);
    let b = Nd::from_fn(&[c], |i| i[0] as f64 * 0.25 - 2.0);
    let got = tensor_of(&a, DType::F32).add(&tensor_of(&b, DType::F32)).unwrap();
    // Exact inputs, one rounding: rtol 1e-6.
    assert_tensor_close(&got, &a.zip(&b, &[r, c], |x, y| x + y).round(DType::F32), 1e-6, 0.0);

    let at = non_contiguous_of(&a, DType::F32, 1); // permuted view
    let got = at.mul(&tensor_of(&b, DType::F32).unsqueeze(0).unwrap()).unwrap();
    assert_tensor_close(&got, &a.zip(&b, &[r, c], |x, y| x * y).round(DType::F32), 1e-6, 0.0);

    let got = at.exp().unwrap();
    // f32 exp: rtol 1e-5.
    assert_tensor_close(&got, &a.map(f64::exp), 1e-5, 0.0);
}
