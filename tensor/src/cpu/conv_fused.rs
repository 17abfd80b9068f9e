//! The CPU's inference convolution with its neighbours folded in, and
//! per-channel moments (see `ops/fused.rs` for what and why).
//!
//! Where the direct convolution or Winograd F(4x4) runs (f32, stride 1,
//! maps wide enough), the input transform happens in the copy into their
//! padded planes or bands and the residual and moments in their output
//! writes, so the fused work costs no pass of its own. Elsewhere (1x1,
//! strided and small maps, Winograd F(2x2), f64) one pass transforms the
//! input into a temporary, the convolution runs on its usual path, and one
//! pass adds the residual and takes the moments: still fewer passes, and
//! fewer tensors, than the ops one by one.
//!
//! Moments are sums and sums of squares in f64. A group norm's variance
//! `E[x^2] - E[x]^2` from them loses about `2^-52 * (mean / std)^2` of
//! itself to cancellation, nothing for activations.

use rayon::prelude::*;

use super::allocator::zeros;
use super::conv;
use super::conv_direct::{self, Folded};
use super::float::Float;
use super::group_norm::{affine_row, shifted_sums};
use super::winograd;
use super::winograd4;
use crate::backend::Conv2dParams;

/// The operands of one fused convolution, as contiguous slices.
pub struct FusedArgs<'a, T> {
    pub bias: Option<&'a [T]>,
    /// `(scale, shift)`, `[N*Cin]` each.
    pub input_affine: Option<(&'a [T], &'a [T])>,
    pub input_silu: bool,
    /// `[N,Cout,OH,OW]`.
    pub residual: Option<&'a [T]>,
    pub moments: bool,
    /// The filters as `winograd4::prepare_weights` transformed them.
    pub prepared_weight: Option<&'a [T]>,
}

/// Returns the output `[N,Cout,OH,OW]` and, if asked for, its moments
/// `[N,Cout,2]`.
pub fn conv2d_fused<T: Float>(p: &Conv2dParams, input: &[T], weight: &[T], f: &FusedArgs<T>) -> (Vec<T>, Option<Vec<f64>>) {
    if !winograd::applies(p) && (winograd4::applies(p) || conv_direct::applies(p)) {
        if let Some(done) = folded_in_kernel(p, input, weight, f) {
            return done;
        }
    }

    let transformed;
    let hw = p.in_h * p.in_w;
    // (An empty plane, all padding, has nothing to transform.)
    let x = if (f.input_affine.is_some() || f.input_silu) && hw > 0 {
        let mut t = zeros(input.len());
        t.par_chunks_mut(hw).zip(input.par_chunks(hw)).enumerate().with_min_len(planes_per_task(hw)).for_each(|(plane, (dst, src))| {
            let (scale, shift) = f.input_affine.map_or((T::ONE, T::ZERO), |(scale, shift)| (scale[plane], shift[plane]));
            affine_row(dst, src, scale, shift, f.input_silu);
        });
        transformed = t;
        &transformed[..]
    } else {
        input
    };
    let mut out = conv::conv2d(p, x, weight, f.bias);
    let ohw = p.out_h() * p.out_w();
    if f.residual.is_none() && !f.moments {
        return (out, None);
    }
    let sums: Vec<(f64, f64)> = out
        .par_chunks_mut(ohw)
        .enumerate()
        .with_min_len(planes_per_task(ohw))
        .map(|(plane, o)| {
            if let Some(residual) = f.residual {
                o.iter_mut().zip(&residual[plane * ohw..]).for_each(|(o, &r)| *o += r);
            }
            if f.moments {
                shifted_sums(o, 0.0)
            } else {
                (0.0, 0.0)
            }
        })
        .collect();
    let moments = f.moments.then(|| sums.into_iter().flat_map(|(s, q)| [s, q]).collect());
    (out, moments)
}

/// The arrangement of f32 filters that the fused convolution of `p` would
/// otherwise compute on every call: Winograd F(4x4)'s transformed filters,
/// where it takes that path with them.
pub fn weight_arrangement(p: &Conv2dParams) -> Option<u64> {
    if winograd::applies(p) {
        return None;
    }
    winograd4::weight_arrangement(p)
}

/// `weight` `[Cout, Cin, kh, kw]` arranged as `weight_arrangement(p)` names.
pub fn prepare_weight(p: &Conv2dParams, weight: &[f32]) -> Vec<f32> {
    winograd4::prepare_weights(p, weight)
}

/// The fused form of the direct convolution, or of Winograd F(4x4) where
/// it applies, for f32 (`None` for other types).
fn folded_in_kernel<'a, T: Float>(p: &Conv2dParams, input: &[T], weight: &[T], f: &FusedArgs<'a, T>) -> Option<(Vec<T>, Option<Vec<f64>>)> {
    let mut moments = f.moments.then(|| vec![0.0f64; 2 * p.batch * p.out_channels]);
    let len = p.batch * p.out_channels * p.out_h() * p.out_w();
    // SAFETY: both kernels write every output.
    let out = unsafe { conv::on_f32_unzeroed(p, len, input, weight, |x, w, y| {
        // `on_f32` runs this only for f32, the dtype of every operand.
        let f32s = |v: Option<&'a [T]>| v.map(|v| T::as_f32(v).expect("one dtype"));
        let folded = Folded {
            input_affine: f.input_affine.map(|(scale, shift)| (T::as_f32(scale).expect("one dtype"), T::as_f32(shift).expect("one dtype"))),
            input_silu: f.input_silu,
            residual: f32s(f.residual),
        };
        if winograd4::applies(p) {
            winograd4::conv2d_fused(p, x, w, f32s(f.prepared_weight), f32s(f.bias), &folded, moments.as_deref_mut(), y);
        } else {
            conv_direct::conv2d_fused(p, x, w, f32s(f.bias), &folded, moments.as_deref_mut(), y);
        }
    }) }?;
    Some((out, moments))
}

/// Sum and sum of squares of each of the `planes` planes of `hw` values
/// in `x`, interleaved.
pub fn channel_moments<T: Float>(x: &[T], planes: usize, hw: usize) -> Vec<f64> {
    assert_eq!(x.len(), planes * hw);
    if hw == 0 {
        return vec![0.0; 2 * planes];
    }
    x.par_chunks(hw).with_min_len(planes_per_task(hw)).flat_map_iter(|plane| {
        let (sum, squares) = shifted_sums(plane, 0.0);
        [sum, squares]
    }).collect()
}

/// Enough planes per rayon task that tiny maps do not pay its cost per plane.
fn planes_per_task(plane: usize) -> usize {
    (8192 / plane.max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::super::conv::tests::{close_f32, naive_forward, to32};
    use crate::backend::Conv2dParams;
    use crate::{Device, Fusion, Tensor};
    use proptest::prelude::*;

    /// Which of the fused parts a case asks for.
    #[derive(Debug, Clone, Copy)]
    struct Parts {
        bias: bool,
        affine: bool,
        silu: bool,
        residual: bool,
        moments: bool,
    }

    #[derive(Debug, Clone)]
    struct Case {
        p: Conv2dParams,
        parts: Parts,
        x: Vec<f64>,
        w: Vec<f64>,
        bias: Vec<f64>,
        scale: Vec<f64>,
        shift: Vec<f64>,
        residual: Vec<f64>,
    }

    fn case() -> impl Strategy<Value = Case> {
        let shape = (1usize..3, 1usize..40, 1usize..20, 1usize..9, 1usize..13, prop::sample::select(vec![1usize, 2, 3]), 0usize..3, prop::sample::select(vec![1usize, 1, 2]));
        let parts = (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(bias, affine, silu, residual, moments)| Parts { bias, affine, silu, residual, moments });
        (shape, parts)
            .prop_filter_map("kernel larger than padded input", |((batch, cin, cout, h, w, k, padding, stride), parts)| {
                let p = Conv2dParams { batch, in_channels: cin, out_channels: cout, in_h: h, in_w: w, kernel_h: k, kernel_w: k, stride, padding };
                (h + 2 * padding >= k && w + 2 * padding >= k).then_some((p, parts))
            })
            .prop_flat_map(|(p, parts)| {
                let values = |n: usize| prop::collection::vec(-2.0f64..2.0, n);
                let out = p.batch * p.out_channels * p.out_h() * p.out_w();
                let taps = p.kernel_h * p.kernel_w;
                (
                    Just((p, parts)),
                    values(p.batch * p.in_channels * p.in_h * p.in_w),
                    values(p.out_channels * p.in_channels * taps),
                    values(p.out_channels),
                    values(p.batch * p.in_channels),
                    values(p.batch * p.in_channels),
                    values(out),
                )
            })
            .prop_map(|((p, parts), x, w, bias, scale, shift, residual)| Case { p, parts, x, w, bias, scale, shift, residual })
    }

    /// The fused result in f64 from plain loops: the input transformed
    /// first, the naive convolution, then the residual; with each output's
    /// sum of |terms| for the f32 tolerance.
    fn reference(c: &Case) -> (Vec<f64>, Vec<f64>) {
        let p = &c.p;
        let hw = p.in_h * p.in_w;
        let x: Vec<f64> = c
            .x
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let plane = i / hw;
                let v = if c.parts.affine { v * c.scale[plane] + c.shift[plane] } else { v };
                if c.parts.silu { v / (1.0 + (-v).exp()) } else { v }
            })
            .collect();
        let (mut out, mut mag) = naive_forward(p, &x, &c.w, c.parts.bias.then_some(&c.bias[..]));
        if c.parts.residual {
            for ((o, m), &r) in out.iter_mut().zip(&mut mag).zip(&c.residual) {
                *o += r;
                *m += r.abs();
            }
        }
        (out, mag)
    }

    /// Runs `Tensor::conv2d_fused` (or, with `composed`, the plain-ops
    /// fallback) on the case in `dtype`; returns the output and moments.
    fn run(c: &Case, dtype: crate::DType, composed: bool) -> (Vec<f64>, Option<Vec<f64>>) {
        let p = &c.p;
        let t = |v: &[f64], dims: &[usize]| Tensor::from_vec(v.to_vec(), dims, &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
        let x = t(&c.x, &[p.batch, p.in_channels, p.in_h, p.in_w]);
        let w = t(&c.w, &[p.out_channels, p.in_channels, p.kernel_h, p.kernel_w]);
        let bias = t(&c.bias, &[p.out_channels]);
        let (scale, shift) = (t(&c.scale, &[p.batch, p.in_channels]), t(&c.shift, &[p.batch, p.in_channels]));
        let residual = t(&c.residual, &[p.batch, p.out_channels, p.out_h(), p.out_w()]);
        let f = Fusion {
            bias: c.parts.bias.then_some(&bias),
            input_affine: c.parts.affine.then_some((&scale, &shift)),
            input_silu: c.parts.silu,
            residual: c.parts.residual.then_some(&residual),
            moments: c.parts.moments,
            transient_weight: false,
        };
        let (out, moments) = if composed { x.conv2d_composed(&w, p.stride, p.padding, &f) } else { x.conv2d_fused(&w, p.stride, p.padding, &f) }.unwrap();
        assert_eq!(out.dims(), [p.batch, p.out_channels, p.out_h(), p.out_w()]);
        (out.to_f64_vec().unwrap(), moments.map(|m| m.to_f64_vec().unwrap()))
    }

    /// The moments must be those of the output returned, in f64.
    fn moments_match(out: &[f64], moments: Option<&[f64]>, c: &Case) -> Result<(), TestCaseError> {
        prop_assert_eq!(moments.is_some(), c.parts.moments);
        let Some(moments) = moments else { return Ok(()) };
        let hw = c.p.out_h() * c.p.out_w();
        prop_assert_eq!(moments.len(), 2 * out.len() / hw);
        for (plane, values) in out.chunks(hw).enumerate() {
            let sum: f64 = values.iter().sum();
            let squares: f64 = values.iter().map(|v| v * v).sum();
            let scale = values.iter().map(|v| v.abs()).sum::<f64>() + 1.0;
            prop_assert!((moments[2 * plane] - sum).abs() <= 1e-12 * scale, "plane {}: sum {} vs {}", plane, moments[2 * plane], sum);
            prop_assert!((moments[2 * plane + 1] - squares).abs() <= 1e-12 * scale * scale, "plane {}: squares {} vs {}", plane, moments[2 * plane + 1], squares);
        }
        Ok(())
    }

    fn check(c: &Case, dtype: crate::DType, composed: bool) -> Result<(), TestCaseError> {
        let (want, mag) = reference(c);
        let (got, moments) = run(c, dtype, composed);
        if dtype == crate::DType::F32 {
            close_f32(&to32(&got), &want, &mag)?;
        } else {
            for (i, ((&g, &w), &m)) in got.iter().zip(&want).zip(&mag).enumerate() {
                prop_assert!((g - w).abs() <= 1e-10 * (m + 1.0), "at {}: {} vs {}", i, g, w);
            }
        }
        moments_match(&got, moments.as_deref(), c)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// f32 takes the direct kernels' fused form wherever the shape
        /// allows (see `conv_direct::applies`), the separate passes elsewhere.
        #[test]
        fn fused_f32_matches_naive(c in case()) {
            check(&c, crate::DType::F32, false)?;
        }

        #[test]
        fn fused_f64_matches_naive(c in case()) {
            check(&c, crate::DType::F64, false)?;
        }

        /// The plain-ops fallback of backends without a fused kernel.
        #[test]
        fn composed_matches_naive(c in case()) {
            check(&c, crate::DType::F32, true)?;
        }
    }

    /// One shape the direct kernel surely takes (on CPUs that have it),
    /// with every part fused and input channels across two chunks.
    #[test]
    fn direct_shape_with_everything_fused() {
        let p = Conv2dParams { batch: 2, in_channels: 40, out_channels: 12, in_h: 16, in_w: 16, kernel_h: 3, kernel_w: 3, stride: 1, padding: 1 };
        if !super::conv_direct::applies(&p) {
            eprintln!("SKIPPED: the direct convolution does not run on this CPU; the fused passes around im2col were tested instead");
        }
        let mut rng = crate::Rng::new(7);
        let mut values = |n: usize| Tensor::rand(-2.0, 2.0, [n], crate::DType::F64, &Device::Cpu, &mut rng).unwrap().to_f64_vec().unwrap();
        let out = p.batch * p.out_channels * p.out_h() * p.out_w();
        let c = Case {
            parts: Parts { bias: true, affine: true, silu: true, residual: true, moments: true },
            x: values(p.batch * p.in_channels * p.in_h * p.in_w),
            w: values(p.out_channels * p.in_channels * 9),
            bias: values(p.out_channels),
            scale: values(p.batch * p.in_channels),
            shift: values(p.batch * p.in_channels),
            residual: values(out),
            p,
        };
        check(&c, crate::DType::F32, false).unwrap();
    }

    /// Empty batches and planes made only of padding.
    #[test]
    fn empty_inputs() {
        for (n, h) in [(0, 4), (2, 0)] {
            let x = Tensor::zeros([n, 3, h, 4], crate::DType::F32, &Device::Cpu).unwrap();
            let w = Tensor::ones([2, 3, 1, 1], crate::DType::F32, &Device::Cpu).unwrap();
            let scale = Tensor::ones([n, 3], crate::DType::F32, &Device::Cpu).unwrap();
            let f = Fusion { input_affine: Some((&scale, &scale)), input_silu: true, moments: true, ..Fusion::default() };
            let (y, moments) = x.conv2d_fused(&w, 1, 1, &f).unwrap();
            let plain = x.affine(1.0, 1.0).unwrap().silu().unwrap().conv2d(&w, None, 1, 1).unwrap();
            assert_eq!(y.dims(), plain.dims());
            // Padding is zero after the transform, so the all-padding output is zero.
            assert!(y.to_f64_vec().unwrap().iter().all(|&v| v == 0.0));
            assert_eq!(moments.unwrap().dims(), [n, 2, 2]);
        }
    }

    /// Filters transformed once (Winograd F(4x4) with prepared filters)
    /// are kept with the weights until these are written: a second call
    /// reuses them and gives the same bits, and a call after the weights
    /// change computes with the new ones.
    #[test]
    fn prepared_filters_follow_the_weights() {
        let p = Conv2dParams { batch: 16, in_channels: 33, out_channels: 40, in_h: 8, in_w: 8, kernel_h: 3, kernel_w: 3, stride: 1, padding: 1 };
        if super::weight_arrangement(&p).is_none() {
            println!("prepared_filters_follow_the_weights: skipped, this CPU has no AVX2 + FMA (the F(4x4) path)");
            return;
        }
        let mut rng = crate::Rng::new(3);
        let mut values = |n: usize| (0..n).map(|_| rng.next_f64() * 2.0 - 1.0).collect::<Vec<f64>>();
        let (x, w1, w2) = (values(p.batch * 33 * 64), values(40 * 33 * 9), values(40 * 33 * 9));
        let tensor = |v: &[f64], dims: &[usize]| Tensor::from_vec(to32(v), dims, &Device::Cpu).unwrap();
        let (xt, wt) = (tensor(&x, &[p.batch, 33, 8, 8]), tensor(&w1, &[40, 33, 3, 3]));
        let conv = || xt.conv2d_fused(&wt, 1, 1, &Fusion::default()).unwrap().0.to_f64_vec().unwrap();
        let check = |got: &[f64], w: &[f64]| {
            let (want, mag) = naive_forward(&p, &x, w, None);
            close_f32(&to32(got), &want, &mag).unwrap();
        };
        let first = conv();
        check(&first, &w1);
        assert_eq!(conv(), first, "the kept filters give the same bits");
        wt.assign(&tensor(&w2, &[40, 33, 3, 3])).unwrap();
        let second = conv();
        check(&second, &w2);
        // Given back, they are made again on the next call.
        wt.forget_derived();
        assert_eq!(conv(), second);
    }

    #[test]
    fn channel_moments_of_a_known_tensor() {
        let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, -1.0, 0.0, 0.5, 2.0], [1, 2, 2, 2], &Device::Cpu).unwrap();
        assert_eq!(x.channel_moments().unwrap().to_f64_vec().unwrap(), [10.0, 30.0, 1.5, 5.25]);
        // A strided view is made contiguous first.
        let t = x.transpose(2, 3).unwrap();
        assert_eq!(t.channel_moments().unwrap().dims(), [1, 2, 2]);
        assert!(Tensor::zeros([2, 3], crate::DType::F32, &Device::Cpu).unwrap().channel_moments().is_err());
    }

    #[test]
    fn bad_operands_are_named() {
        let x = Tensor::zeros([2, 3, 5, 5], crate::DType::F32, &Device::Cpu).unwrap();
        let w = Tensor::zeros([4, 3, 3, 3], crate::DType::F32, &Device::Cpu).unwrap();
        let scale = Tensor::zeros([2, 4], crate::DType::F32, &Device::Cpu).unwrap();
        let err = x.conv2d_fused(&w, 1, 1, &Fusion { input_affine: Some((&scale, &scale)), ..Fusion::default() }).unwrap_err().to_string();
        assert!(err.contains("input scale") && err.contains("[2, 3]") && err.contains("[2, 4]"), "{err}");
        let residual = Tensor::zeros([2, 4, 5, 5], crate::DType::F64, &Device::Cpu).unwrap();
        let err = x.conv2d_fused(&w, 1, 1, &Fusion { residual: Some(&residual), ..Fusion::default() }).unwrap_err().to_string();
        assert!(err.contains("residual"), "{err}");
    }
}
