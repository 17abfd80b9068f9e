//! Property tests of the reductions (sum, mean, max, min, argmax, var), the
//! softmax family and sum_to, over random axis subsets, on contiguous and
//! non-contiguous inputs, against f64 loop references.

mod common;

use common::*;
use proptest::prelude::*;
use tensor::{DType, Shape, Tensor};

/// The axes whose bit is set in `mask`, in a scrambled order with one
/// repeated (the ops sort and de-duplicate them).
fn axes_of(rank: usize, mask: u8, scramble: bool) -> Vec<usize> {
    let mut axes: Vec<usize> = (0..rank).filter(|d| mask >> d & 1 == 1).collect();
    if scramble && !axes.is_empty() {
        axes.reverse();
        axes.push(axes[0]);
    }
    axes
}

/// Reduces `x` over `axes` by folding `f` from `init`, keeping reduced dims
/// as size 1 when `keepdim`.
fn reduce_ref(x: &Nd, axes: &[usize], keepdim: bool, init: f64, f: impl Fn(f64, f64) -> f64) -> Nd {
    let kept: Vec<usize> = x.dims.iter().enumerate().map(|(d, &n)| if axes.contains(&d) { 1 } else { n }).collect();
    let mut out = Nd::new(&kept, vec![init; kept.iter().product()]);
    for i in 0..x.data.len() {
        let idx: Vec<usize> = unravel(i, &x.dims).iter().enumerate().map(|(d, &v)| if axes.contains(&d) { 0 } else { v }).collect();
        let o = ravel(&idx, &kept);
        out.data[o] = f(out.data[o], x.data[i]);
    }
    if !keepdim {
        out.dims = x.dims.iter().enumerate().filter(|(d, _)| !axes.contains(d)).map(|(_, &n)| n).collect();
    }
    out
}

fn count(x: &Nd, axes: &[usize]) -> f64 {
    axes.iter().map(|&a| x.dims[a]).product::<usize>() as f64
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

    #[test]
    fn sum_mean_max_min_over_axis_subsets(
        (dims, vals) in shaped_values(),
        mask in any::<u8>(),
        keepdim in any::<bool>(),
        scramble in any::<bool>(),
        kind in 0..VIEW_KINDS,
        f64_ in any::<bool>(),
    ) {
        let dtype = dtype_of(f64_);
        let x = Nd::new(&dims, vals).round(dtype);
        let t = non_contiguous_of(&x, dtype, kind);
        let axes = axes_of(dims.len(), mask, scramble);
        let mut sorted = axes.clone();
        sorted.sort_unstable();
        sorted.dedup();

        // Sums accumulate in f64 and round once: rtol 1e-6 (f32) plus an
        // atol for cancellation of 1e-9; f64 1e-12.
        let (rtol, atol) = if f64_ { (1e-12, 1e-12) } else { (1e-6, 1e-9) };
        let sum = reduce_ref(&x, &sorted, keepdim, 0.0, |a, b| a + b);
        assert_tensor_close(&t.sum(&axes, keepdim).unwrap(), &sum, rtol, atol);
        // mean = sum * (1/n): two more roundings, same tolerance.
        let n = count(&x, &sorted);
        assert_tensor_close(&t.mean(&axes, keepdim).unwrap(), &sum.map(|s| s / n), rtol, atol);
        // max/min pick an element: exact.
        assert_tensor_close(&t.max(&axes, keepdim).unwrap(), &reduce_ref(&x, &sorted, keepdim, f64::NEG_INFINITY, f64::max), 0.0, 0.0);
        assert_tensor_close(&t.min(&axes, keepdim).unwrap(), &reduce_ref(&x, &sorted, keepdim, f64::INFINITY, f64::min), 0.0, 0.0);
    }

    /// Population variance, built from mean, sub, sqr: f32 rtol 1e-5 and
    /// atol 1e-5 (values are O(1), so the variance is O(1)).
    #[test]
    fn var_is_population_variance(
        (dims, vals) in shaped_values(),
        mask in any::<u8>(),
        keepdim in any::<bool>(),
        kind in 0..VIEW_KINDS,
        f64_ in any::<bool>(),
    ) {
        let dtype = dtype_of(f64_);
        let x = Nd::new(&dims, vals).round(dtype);
        let t = non_contiguous_of(&x, dtype, kind);
        let axes = axes_of(dims.len(), mask, false);
        let n = count(&x, &axes);
        let mean = reduce_ref(&x, &axes, true, 0.0, |a, b| a + b).map(|s| s / n);
        let dev2 = Nd::from_fn(&dims, |i| (x.at(i) - mean.at_broadcast(i)).powi(2));
        let want = reduce_ref(&dev2, &axes, keepdim, 0.0, |a, b| a + b).map(|s| s / n);
        let (rtol, atol) = if f64_ { (1e-12, 1e-12) } else { (1e-5, 1e-5) };
        assert_tensor_close(&t.var(&axes, keepdim).unwrap(), &want, rtol, atol);
    }

    #[test]
    fn sum_all_and_mean_all_are_rank_0(
        (dims, vals) in shaped_values(),
        kind in 0..VIEW_KINDS,
        f64_ in any::<bool>(),
    ) {
        let dtype = dtype_of(f64_);
        let x = Nd::new(&dims, vals).round(dtype);
        let t = non_contiguous_of(&x, dtype, kind);
        let s: f64 = x.data.iter().sum();
        let (rtol, atol) = if f64_ { (1e-12, 1e-12) } else { (1e-6, 1e-9) };
        let got = t.sum_all().unwrap();
        prop_assert_eq!(got.rank(), 0);
        assert_close(&[got.to_scalar().unwrap()], &[s], rtol, atol);
        let got = t.mean_all().unwrap();
        prop_assert_eq!(got.rank(), 0);
        assert_close(&[got.to_scalar().unwrap()], &[s / x.data.len() as f64], rtol, atol);
    }

    /// argmax returns the index (u32) of the FIRST maximum; values are drawn
    /// with many ties.
    #[test]
    fn argmax_picks_the_first_max(
        dims in shape_rank(1..=4),
        vals in tied_values(1296),
        axis in any::<prop::sample::Index>(),
        keepdim in any::<bool>(),
        kind in 0..VIEW_KINDS,
        f64_ in any::<bool>(),
    ) {
        let dtype = dtype_of(f64_);
        let x = Nd::new(&dims, vals[..dims.iter().product()].to_vec());
        let axis = axis.index(dims.len());
        let got = non_contiguous_of(&x, dtype, kind).argmax(axis, keepdim).unwrap();
        prop_assert_eq!(got.dtype(), DType::U32);
        let mut kept = dims.clone();
        kept[axis] = 1;
        let want = Nd::from_fn(&kept, |i| {
            let mut j = i.to_vec();
            let mut best = 0;
            for k in 0..dims[axis] {
                j[axis] = k;
                let v = x.at(&j);
                j[axis] = best;
                if v > x.at(&j) {
                    best = k;
                }
            }
            best as f64
        });
        let mut want_dims = kept.clone();
        if !keepdim {
            want_dims.remove(axis);
        }
        prop_assert_eq!(got.dims(), want_dims.as_slice());
        prop_assert_eq!(got.to_f64_vec().unwrap(), want.data);
    }

    /// softmax rows are positive and sum to 1; both match the reference.
    #[test]
    fn softmax_and_log_softmax_match_reference(
        dims in shape_rank(1..=4),
        vals in values(1296, -8.0, 8.0),
        dim in any::<prop::sample::Index>(),
        kind in 0..VIEW_KINDS,
        f64_ in any::<bool>(),
    ) {
        let dtype = dtype_of(f64_);
        let x = Nd::new(&dims, vals[..dims.iter().product()].to_vec()).round(dtype);
        let dim = dim.index(dims.len());
        let t = non_contiguous_of(&x, dtype, kind);
        let lse = Nd::from_fn(&dims, |i| {
            let mut j = i.to_vec();
            let m = (0..dims[dim]).map(|k| { j[dim] = k; x.at(&j) }).fold(f64::NEG_INFINITY, f64::max);
            m + (0..dims[dim]).map(|k| { j[dim] = k; (x.at(&j) - m).exp() }).sum::<f64>().ln()
        });
        let want_log = Nd::from_fn(&dims, |i| x.at(i) - lse.at(i));
        // f32: exp/log/sum in f32 over O(10) values: rtol 1e-5, atol 1e-6 for
        // probabilities, atol 1e-5 for log-probabilities (|values| <= ~20).
        let (rtol, patol, latol) = if f64_ { (1e-12, 1e-14, 1e-12) } else { (1e-5, 1e-6, 1e-5) };
        let sm = t.softmax(dim).unwrap();
        assert_tensor_close(&sm, &want_log.map(f64::exp), rtol, patol);
        assert_tensor_close(&t.log_softmax(dim).unwrap(), &want_log, rtol, latol);
        // Rows sum to 1 within 1e-5 (f32) / 1e-12 (f64); an empty row has
        // nothing to normalise and sums to 0.
        let sums = sm.sum(&[dim], false).unwrap().to_f64_vec().unwrap();
        let (tol1, row_sum) = (if f64_ { 1e-12 } else { 1e-5 }, if dims[dim] == 0 { 0.0 } else { 1.0 });
        prop_assert!(sums.iter().all(|s| (s - row_sum).abs() <= tol1), "row sums {:?}", sums);
        prop_assert!(sm.to_f64_vec().unwrap().iter().all(|&p| p >= 0.0));
    }

    /// sum_to undoes a broadcast: every element of the big tensor lands on
    /// the small-shape element it was broadcast from.
    #[test]
    fn sum_to_undoes_broadcasting(
        (out, small, _) in broadcast_pair(),
        vals in values(1296, -3.0, 3.0),
        kind in 0..VIEW_KINDS,
        f64_ in any::<bool>(),
    ) {
        let dtype = dtype_of(f64_);
        let x = Nd::new(&out, vals[..out.iter().product()].to_vec()).round(dtype);
        let got = non_contiguous_of(&x, dtype, kind).sum_to(&Shape::from(small.clone())).unwrap();
        let mut want = Nd::new(&small, vec![0.0; small.iter().product()]);
        let extra = out.len() - small.len();
        for i in 0..x.data.len() {
            let idx = unravel(i, &out);
            let own: Vec<usize> = small.iter().enumerate().map(|(d, &n)| if n == 1 { 0 } else { idx[extra + d] }).collect();
            let o = ravel(&own, &small);
            want.data[o] += x.data[i];
        }
        // One f64 accumulation, one rounding: as for sum.
        let (rtol, atol) = if f64_ { (1e-12, 1e-12) } else { (1e-6, 1e-9) };
        assert_tensor_close(&got, &want, rtol, atol);
    }
}

#[test]
fn reductions_reject_bad_axes() {
    let t = Tensor::zeros([2, 3], DType::F32, &CPU).unwrap();
    assert_eq!(err_text(t.sum(&[2], false)), "sum: axis 2 out of range (shape [2, 3])");
    assert_eq!(err_text(t.max(&[0, 7], true)), "max: axis 7 out of range (shape [2, 3])");
    assert_eq!(err_text(t.mean(&[5], true)), "mean: axis 5 out of range (shape [2, 3])");
    assert_eq!(err_text(t.argmax(2, true)), "argmax: axis 2 out of range (shape [2, 3])");
    assert!(err_text(t.softmax(2)).contains("out of range"));
    let msg = err_text(t.sum_to(&Shape::from([4, 3])));
    assert_eq!(msg, "sum_to: shapes [2, 3] and [4, 3] are incompatible");
    assert_eq!(err_text(t.sum_to(&Shape::from([1, 2, 3]))), "sum_to: shapes [2, 3] and [1, 2, 3] are incompatible");
}

#[test]
fn max_and_min_propagate_nan() {
    let t = Tensor::from_vec(vec![1.0f32, f32::NAN, 3.0, 0.0, 5.0, -1.0], [2, 3], &CPU).unwrap();
    let mx = t.max(&[1], false).unwrap().to_vec::<f32>().unwrap();
    let mn = t.min(&[1], false).unwrap().to_vec::<f32>().unwrap();
    assert!(mx[0].is_nan() && mx[1] == 5.0, "{mx:?}");
    assert!(mn[0].is_nan() && mn[1] == -1.0, "{mn:?}");
}

/// Large enough for the parallel row split, and a sum whose f32
/// accumulation would drift: 100_000 copies of 0.1 sum to 10_000 within
/// 1e-6 relative only because the kernel accumulates in f64.
#[test]
fn large_sums_accumulate_in_f64() {
    let t = Tensor::full(0.1, [100_000], DType::F32, &CPU).unwrap();
    let s = t.sum_all().unwrap().to_scalar().unwrap();
    let want = 100_000.0 * (0.1f32 as f64);
    assert_close(&[s], &[want], 1e-6, 0.0);

    let x = Nd::from_fn(&[400, 300], |i| ((i[0] * 13 + i[1] * 5) % 31) as f64 - 15.0);
    let t = non_contiguous_of(&x, DType::F32, 1);
    // Integer-valued data: sums are exact.
    assert_tensor_close(&t.sum(&[0], false).unwrap(), &reduce_ref(&x, &[0], false, 0.0, |a, b| a + b), 0.0, 0.0);
    assert_tensor_close(&t.sum(&[1], true).unwrap(), &reduce_ref(&x, &[1], true, 0.0, |a, b| a + b), 0.0, 0.0);
}
