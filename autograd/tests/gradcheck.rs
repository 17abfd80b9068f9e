//! Every backward rule against central finite differences, in f64, over
//! random shapes and values (proptest). The checker contracts each output
//! with fixed random weights (see `autograd::gradcheck`).

use autograd::tensor::{Device, Result, Rng, Tensor};
use autograd::{check_gradients, Var};
use proptest::prelude::*;

mod common;
use common::{arb, check, distinct, t, EPS, TOL};

/// Values in ±[0.05, 2] that stay away from the kinks of relu, abs (0) and
/// of clamp(-0.5, 0.5), by much more than the finite-difference step.
fn kink_free(dims: Vec<usize>) -> impl Strategy<Value = Tensor> {
    let n = dims.iter().product::<usize>();
    prop::collection::vec((0.05f64..2.0, any::<bool>()), n).prop_map(move |v| {
        let data = v.into_iter().map(|(m, neg)| {
            let m = if (m - 0.5).abs() < 0.05 { m + 0.1 } else { m };
            if neg {
                -m
            } else {
                m
            }
        });
        t(data.collect(), &dims)
    })
}

fn small_2d() -> impl Strategy<Value = Vec<usize>> {
    (1usize..4, 1usize..5).prop_map(|(a, b)| vec![a, b])
}

type UnaryFn = fn(&Var) -> Result<Var>;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(14))]

    #[test]
    fn unary_ops(x in small_2d().prop_flat_map(kink_free)) {
        let positive = x.abs().unwrap();
        let ops: &[(&str, UnaryFn, bool)] = &[
            ("neg", |v| v.neg(), false),
            ("exp", |v| v.exp(), false),
            ("log", |v| v.log(), true),
            ("sqrt", |v| v.sqrt(), true),
            ("sqr", |v| v.sqr(), false),
            ("tanh", |v| v.tanh(), false),
            ("sigmoid", |v| v.sigmoid(), false),
            ("silu", |v| v.silu(), false),
            ("relu", |v| v.relu(), false),
            ("abs", |v| v.abs(), false),
            ("sin", |v| v.sin(), false),
            ("cos", |v| v.cos(), false),
            ("powf", |v| v.powf(2.5), true),
            ("powf_neg", |v| v.powf(-1.5), true),
            ("powf_int", |v| v.powf(3.0), false),
            ("clamp", |v| v.clamp(-0.5, 0.5), false),
            ("add_scalar", |v| v.add_scalar(0.7), false),
            ("mul_scalar", |v| v.mul_scalar(-1.3), false),
            ("affine", |v| v.affine(2.5, -0.25), false),
        ];
        for (name, op, needs_positive) in ops {
            let input = if *needs_positive { &positive } else { &x };
            check(name, |v| op(&v[0]), std::slice::from_ref(input))?;
        }
    }

    #[test]
    fn binary_ops_broadcast(
        (a, b) in (1usize..4, 1usize..4, 0usize..5).prop_flat_map(|(m, n, case)| {
            let bdims = match case { 0 => vec![m, n], 1 => vec![1, n], 2 => vec![n], 3 => vec![m, 1], _ => vec![] };
            (arb(vec![m, n], -2.0, 2.0), arb(bdims, 0.5, 2.0))
        })
    ) {
        check("add", |v| v[0].add(&v[1]), &[a.clone(), b.clone()])?;
        check("add (rhs broadcast on the left)", |v| v[1].add(&v[0]), &[a.clone(), b.clone()])?;
        check("sub", |v| v[0].sub(&v[1]), &[a.clone(), b.clone()])?;
        check("sub (swapped)", |v| v[1].sub(&v[0]), &[a.clone(), b.clone()])?;
        check("mul", |v| v[0].mul(&v[1]), &[a.clone(), b.clone()])?;
        check("div", |v| v[0].div(&v[1]), &[a.clone(), b.clone()])?;
        check("div (by the full-size input)", |v| v[1].div(&v[0].sqr()?.add_scalar(0.5)?), &[a, b])?;
    }

    #[test]
    fn reductions(
        x in (1usize..4, 1usize..4, 1usize..4).prop_flat_map(|(a, b, c)| arb(vec![a, b, c], -2.0, 2.0)),
        axes in prop::sample::subsequence(vec![0usize, 1, 2], 1..=3),
        keepdim in any::<bool>(),
        target in prop::collection::vec(-2.0f64..2.0, 27),
    ) {
        check("sum", |v| v[0].sum(&axes, keepdim), std::slice::from_ref(&x))?;
        check("mean", |v| v[0].mean(&axes, keepdim), std::slice::from_ref(&x))?;
        check("sum_all", |v| v[0].sum_all(), std::slice::from_ref(&x))?;
        check("mean_all", |v| v[0].mean_all(), std::slice::from_ref(&x))?;
        let target = t(target[..x.elem_count()].to_vec(), x.dims());
        check("mse", |v| v[0].mse(&v[1]), &[x, target])?;
    }

    #[test]
    fn matmul(
        (a, b) in (1usize..4, 1usize..4, 1usize..4, 1usize..3, 0usize..4).prop_flat_map(|(m, k, n, batch, case)| {
            let (ad, bd) = match case {
                0 => (vec![m, k], vec![k, n]),
                1 => (vec![batch, m, k], vec![k, n]),
                2 => (vec![m, k], vec![batch, k, n]),
                _ => (vec![batch, 1, m, k], vec![2, k, n]),
            };
            (arb(ad, -2.0, 2.0), arb(bd, -2.0, 2.0))
        })
    ) {
        check("matmul", |v| v[0].matmul(&v[1]), &[a.clone(), b.clone()])?;
        // (ab)^T = b^T a^T, from strided views; and a non-contiguous gradient.
        let last2 = |v: &Var| v.transpose(v.dims().len() - 2, v.dims().len() - 1);
        check("matmul of transposed views", |v| last2(&v[1])?.matmul(&last2(&v[0])?), &[a.clone(), b.clone()])?;
        check("matmul then transpose", |v| last2(&v[0].matmul(&v[1])?)?.sqr(), &[a, b])?;
    }

    #[test]
    fn conv2d(
        (x, w, b, stride, padding) in (1usize..3, 1usize..4, 1usize..4, 3usize..6, 3usize..6, 1usize..4, 1usize..3, 0usize..2)
            .prop_flat_map(|(n, c, o, h, wd, k, stride, padding)| {
                (arb(vec![n, c, h, wd], -2.0, 2.0), arb(vec![o, c, k, k], -1.0, 1.0), arb(vec![o], -1.0, 1.0), Just(stride), Just(padding))
            })
    ) {
        check("conv2d", |v| v[0].conv2d(&v[1], Some(&v[2]), stride, padding), &[x.clone(), w.clone(), b])?;
        check("conv2d without bias", |v| v[0].conv2d(&v[1], None, stride, padding), &[x, w])?;
    }

    #[test]
    fn conv2d_add(
        (x, w, b, r, stride, padding) in (1usize..3, 1usize..4, 1usize..4, 3usize..6, 3usize..6, 1usize..4, 1usize..3, 0usize..2)
            .prop_flat_map(|(n, c, o, h, wd, k, stride, padding)| {
                let (oh, ow) = ((h + 2 * padding - k) / stride + 1, (wd + 2 * padding - k) / stride + 1);
                (arb(vec![n, c, h, wd], -2.0, 2.0), arb(vec![o, c, k, k], -1.0, 1.0), arb(vec![o], -1.0, 1.0), arb(vec![n, o, oh, ow], -2.0, 2.0), Just(stride), Just(padding))
            })
    ) {
        check("conv2d_add", |v| v[0].conv2d_add(&v[1], Some(&v[2]), stride, padding, &v[3]), &[x.clone(), w.clone(), b, r.clone()])?;
        check("conv2d_add without bias", |v| v[0].conv2d_add(&v[1], None, stride, padding, &v[2]), &[x, w, r])?;
    }

    #[test]
    fn pools_and_upsampling(
        (x, kernel, stride, sh, sw) in (1usize..3, 1usize..3, 2usize..6, 2usize..6, 1usize..3, 1usize..3, 1usize..4, 1usize..4)
            .prop_flat_map(|(n, c, h, w, k, s, sh, sw)| (distinct(vec![n, c, h, w]), Just(k), Just(s), Just(sh), Just(sw)))
    ) {
        check("avg_pool2d", |v| v[0].avg_pool2d(kernel, stride), std::slice::from_ref(&x))?;
        check("max_pool2d", |v| v[0].max_pool2d(kernel, stride), std::slice::from_ref(&x))?;
        check("upsample_nearest2d", |v| v[0].upsample_nearest2d(sh, sw), std::slice::from_ref(&x))?;
    }

    #[test]
    fn group_norm(
        (x, gamma, beta, groups) in (1usize..3, 1usize..3, 1usize..3, 1usize..4, 1usize..4)
            .prop_flat_map(|(n, groups, per_group, h, w)| {
                let c = groups * per_group;
                // Groups of at least 4 values: with 2, the output is ±1 whatever
                // x is, and the x gradient (through eps only) is ~0.
                let spatial = if per_group * h * w < 4 { w + 2 } else { w };
                (arb(vec![n, c, h, spatial], -2.0, 2.0), arb(vec![c], 0.5, 1.5), arb(vec![c], -1.0, 1.0), Just(groups))
            })
    ) {
        check("group_norm", |v| v[0].group_norm(groups, &v[1], &v[2], 1e-5), &[x.clone(), gamma.clone(), beta.clone()])?;
        // The fused op against the composition it replaces, whose parts are
        // each checked against finite differences in this file. A direct
        // finite-difference check of the fused op is ill-conditioned here:
        // with 3 values a group's x gradient can be nearly zero, and the
        // check's relative error then measures rounding (it failed at 1.3e-6
        // on such a group, with the composition failing identically).
        let grads = |fused: bool| -> Vec<Vec<f64>> {
            let vars: Vec<Var> = [&x, &gamma, &beta].iter().map(|t| Var::param((*t).clone())).collect();
            let y = if fused {
                vars[0].group_norm_silu(groups, &vars[1], &vars[2], 1e-5).unwrap()
            } else {
                vars[0].group_norm(groups, &vars[1], &vars[2], 1e-5).unwrap().silu().unwrap()
            };
            let g = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            vars.iter().map(|v| g.get(v).unwrap().to_vec::<f64>().unwrap()).collect()
        };
        for (which, (fused, apart)) in ["x", "gamma", "beta"].iter().zip(grads(true).iter().zip(grads(false).iter())) {
            for (a, b) in fused.iter().zip(apart) {
                prop_assert!((a - b).abs() <= 1e-10 * (1.0 + b.abs()), "group_norm_silu d{which}: {a} against {b} composed");
            }
        }
    }

    #[test]
    fn group_norm_silu_modulated(
        (x, scale, shift, gamma, beta, groups, seed) in (1usize..3, 1usize..3, 1usize..3, 1usize..4, 2usize..4, prop::option::of(any::<u64>()))
            .prop_flat_map(|(n, groups, per_group, h, w, seed)| {
                let c = groups * per_group;
                (
                    arb(vec![n, c, h, w], -2.0, 2.0),
                    arb(vec![n, c], -1.5, 2.5),
                    arb(vec![n, c], -1.0, 1.0),
                    arb(vec![c], 0.5, 1.5),
                    arb(vec![c], -1.0, 1.0),
                    Just(groups),
                    Just(seed),
                )
            })
    ) {
        // The fused op against the composition it replaces (product, sum,
        // `group_norm_silu`, and the dropout mask where there is one), every
        // part of which is checked above.
        let mask = seed.map(|seed| Tensor::dropout_mask(0.3, x.dims(), x.dtype(), x.device(), &mut Rng::new(seed)).unwrap());
        let (n, c) = (x.dims()[0], x.dims()[1]);
        let inputs = [&x, &scale, &shift, &gamma, &beta];
        let grads = |fused: bool| -> Vec<Vec<f64>> {
            let v: Vec<Var> = inputs.iter().map(|t| Var::param((*t).clone())).collect();
            let y = if fused {
                v[0].group_norm_silu_modulated(groups, &v[1], &v[2], &v[3], &v[4], 1e-5, mask.as_ref()).unwrap()
            } else {
                let z = v[0].mul(&v[1].reshape([n, c, 1, 1]).unwrap()).unwrap().add(&v[2].reshape([n, c, 1, 1]).unwrap()).unwrap();
                let y = z.group_norm_silu(groups, &v[3], &v[4], 1e-5).unwrap();
                match &mask {
                    Some(m) => y.mul(&Var::constant(m.clone())).unwrap(),
                    None => y,
                }
            };
            let g = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            v.iter().map(|v| g.get(v).unwrap().to_vec::<f64>().unwrap()).collect()
        };
        for (which, (fused, apart)) in ["x", "scale", "shift", "gamma", "beta"].iter().zip(grads(true).iter().zip(grads(false).iter())) {
            for (a, b) in fused.iter().zip(apart) {
                prop_assert!((a - b).abs() <= 1e-9 * (1.0 + b.abs()), "group_norm_silu_modulated d{which}: {a} against {b} composed");
            }
        }
        // The tensor crate's composed fallback (what backends without the
        // fused kernel run) against its fused kernel, forward and backward.
        let (y, mean, rstd) = x.group_norm_silu_modulated(groups, &scale, &shift, &gamma, &beta, 1e-5, mask.as_ref()).unwrap();
        let (y2, mean2, rstd2) = x.group_norm_silu_modulated_composed(groups, &scale, &shift, &gamma, &beta, 1e-5, mask.as_ref()).unwrap();
        for (a, b) in [(&y, &y2), (&mean, &mean2), (&rstd, &rstd2)] {
            for (a, b) in a.to_vec::<f64>().unwrap().iter().zip(b.to_vec::<f64>().unwrap()) {
                prop_assert!((a - b).abs() <= 1e-9 * (1.0 + b.abs()), "forward {a} against {b} composed");
            }
        }
        let upstream = y.mul_scalar(2.0).unwrap();
        let fused = x.group_norm_silu_modulated_backward(&scale, &shift, &gamma, &beta, &mean, &rstd, &upstream, groups, 1e-5, mask.as_ref()).unwrap();
        let apart = x.group_norm_silu_modulated_backward_composed(&scale, &shift, &gamma, &beta, &mean, &rstd, &upstream, groups, 1e-5, mask.as_ref()).unwrap();
        for (a, b) in [(&fused.0, &apart.0), (&fused.1, &apart.1), (&fused.2, &apart.2), (&fused.3, &apart.3), (&fused.4, &apart.4)] {
            prop_assert_eq!(a.dims(), b.dims());
            for (a, b) in a.to_vec::<f64>().unwrap().iter().zip(b.to_vec::<f64>().unwrap()) {
                prop_assert!((a - b).abs() <= 1e-9 * (1.0 + b.abs()), "backward {a} against {b} composed");
            }
        }
    }

    #[test]
    fn batch_norm(
        (x, gamma, beta) in (1usize..4, 1usize..4, 1usize..3, 1usize..4)
            .prop_flat_map(|(n, c, h, w)| {
                // At least 4 values per channel, for the reason given for group norm.
                let w = if n * h * w < 4 { w + 3 } else { w };
                (arb(vec![n, c, h, w], -2.0, 2.0), arb(vec![c], 0.5, 1.5), arb(vec![c], -1.0, 1.0))
            })
    ) {
        check("batch_norm", |v| Ok(v[0].batch_norm(&v[1], &v[2], 1e-5)?.0), &[x, gamma, beta])?;
    }

    /// Forward values and batch statistics against a plain f64 loop.
    #[test]
    fn batch_norm_matches_reference(
        (x, gamma, beta) in (1usize..4, 1usize..5, 1usize..4, 1usize..4)
            .prop_flat_map(|(n, c, h, w)| (arb(vec![n, c, h, w], -3.0, 3.0), arb(vec![c], 0.5, 1.5), arb(vec![c], -1.0, 1.0)))
    ) {
        let eps = 1e-5;
        let (y, mean, var) = Var::constant(x.clone()).batch_norm(&Var::constant(gamma.clone()), &Var::constant(beta.clone()), eps).unwrap();
        let (d, xs, gs, bs) = (x.dims().to_vec(), x.to_vec::<f64>().unwrap(), gamma.to_vec::<f64>().unwrap(), beta.to_vec::<f64>().unwrap());
        let (n, c, hw) = (d[0], d[1], d[2] * d[3]);
        let (ys, ms, vs) = (y.tensor().to_vec::<f64>().unwrap(), mean.to_vec::<f64>().unwrap(), var.to_vec::<f64>().unwrap());
        for ch in 0..c {
            let vals: Vec<f64> = (0..n).flat_map(|i| xs[(i * c + ch) * hw..][..hw].to_vec()).collect();
            let m = vals.iter().sum::<f64>() / vals.len() as f64;
            let v = vals.iter().map(|a| (a - m) * (a - m)).sum::<f64>() / vals.len() as f64;
            prop_assert!((ms[ch] - m).abs() < 1e-9 && (vs[ch] - v).abs() < 1e-9, "channel {ch}: stats ({}, {}) against ({m}, {v})", ms[ch], vs[ch]);
            for i in 0..n {
                for p in 0..hw {
                    let at = (i * c + ch) * hw + p;
                    let want = (xs[at] - m) / (v + eps).sqrt() * gs[ch] + bs[ch];
                    prop_assert!((ys[at] - want).abs() < 1e-9, "y[{at}] = {} against {want}", ys[at]);
                }
            }
        }
    }

    #[test]
    fn index_select(
        (table, indices, dim) in (1usize..5, 1usize..4, 1usize..6, 0usize..2).prop_flat_map(|(rows, cols, k, dim)| {
            let len = if dim == 0 { rows } else { cols };
            (arb(vec![rows, cols], -2.0, 2.0), prop::collection::vec(0..len as u32, k), Just(dim))
        })
    ) {
        // Repeated indices are likely: their gradients must add up.
        let idx = Tensor::from_vec(indices.clone(), indices.len(), &Device::Cpu).unwrap();
        check("index_select", |v| v[0].index_select(&idx, dim), &[table])?;
    }

    #[test]
    fn dropout(x in small_2d().prop_flat_map(|d| arb(d, -2.0, 2.0)), p in 0.1f64..0.7, seed in any::<u64>()) {
        // The same seed on every evaluation gives the same mask.
        check("dropout", |v| v[0].dropout(p, &mut Rng::new(seed)), &[x])?;
    }

    #[test]
    fn views(
        x in (1usize..4, 1usize..4, 1usize..4).prop_flat_map(|(a, b, c)| arb(vec![a, b, c], -2.0, 2.0)),
        y in (1usize..4).prop_flat_map(|k| arb(vec![k], -2.0, 2.0)),
        start_frac in 0.0f64..1.0,
    ) {
        let d = x.dims().to_vec();
        let n: usize = d.iter().product();
        check("reshape", |v| v[0].reshape(vec![n]), std::slice::from_ref(&x))?;
        check("reshape then nonlinear", |v| v[0].reshape(vec![d[2], d[0] * d[1]])?.sqr(), std::slice::from_ref(&x))?;
        check("permute", |v| v[0].permute(&[2, 0, 1])?.sqr(), std::slice::from_ref(&x))?;
        check("transpose", |v| v[0].transpose(0, 2)?.exp(), std::slice::from_ref(&x))?;
        let start = ((d[1] as f64 * start_frac) as usize).min(d[1] - 1);
        let len = d[1] - start;
        check("narrow", |v| v[0].narrow(1, start, len)?.sqr(), std::slice::from_ref(&x))?;
        check("broadcast_as", |v| v[0].broadcast_as(vec![2, d[0], d[1], d[2]])?.sin(), std::slice::from_ref(&x))?;
        check("broadcast_as size-1 dim", |v| v[0].narrow(2, 0, 1)?.broadcast_as(vec![d[0], d[1], 3])?.sqr(), std::slice::from_ref(&x))?;
        check("unsqueeze", |v| v[0].unsqueeze(1)?.sqr(), std::slice::from_ref(&x))?;
        check("squeeze", |v| v[0].unsqueeze(3)?.squeeze(3)?.sqr(), std::slice::from_ref(&x))?;
        check("cat", |v| Var::cat(&[&v[0], &v[1].sqr()?, &v[0]], 2), &[x.clone(), t(vec![0.5; d[0] * d[1] * 2], &[d[0], d[1], 2])])?;
        check("cat of broadcast", |v| Var::cat(&[&v[1].broadcast_as(vec![d[0], d[1], y.dims()[0]])?, &v[0]], 2), &[x.clone(), y.clone()])?;
        check("split", |v| {
            let pieces = v[0].split(&[start, len], 1)?;
            pieces[1].sqr()?.sum(&[1], false)?.add(&pieces[0].sum(&[1], false)?)
        }, std::slice::from_ref(&x))?;
        check("chunk", |v| {
            let pieces = v[0].chunk(2, 2)?;
            let mut acc = pieces[0].exp()?.sum(&[2], false)?;
            for p in &pieces[1..] {
                acc = acc.mul(&p.sum(&[2], false)?)?;
            }
            Ok(acc)
        }, std::slice::from_ref(&x))?;
    }

    #[test]
    fn composition_conv_groupnorm_silu_conv(
        inputs in (1usize..3, 1usize..3, 3usize..5, 3usize..5).prop_flat_map(|(n, c, h, w)| {
            (
                arb(vec![n, c, h, w], -2.0, 2.0),
                arb(vec![4, c, 3, 3], -0.5, 0.5),
                arb(vec![4], -0.5, 0.5),
                arb(vec![4], 0.5, 1.5),
                arb(vec![4], -0.5, 0.5),
                arb(vec![2, 4, 3, 3], -0.5, 0.5),
            )
        })
    ) {
        let (x, w1, b1, gamma, beta, w2) = inputs;
        check(
            "conv -> group_norm -> silu -> conv",
            |v| v[0].conv2d(&v[1], Some(&v[2]), 1, 1)?.group_norm(2, &v[3], &v[4], 1e-5)?.silu()?.conv2d(&v[5], None, 1, 1),
            &[x, w1, b1, gamma, beta, w2],
        )?;
    }
}

/// The composition again, ending in the loss a training step uses, and with
/// a fan-out (the activation is used twice).
#[test]
fn composition_with_fan_out_and_mse() {
    let mut rng = Rng::new(7);
    let mut r = |dims: &[usize], s: f64| Tensor::randn(0.0, s, dims.to_vec(), autograd::tensor::DType::F64, &Device::Cpu, &mut rng).unwrap();
    let inputs = [r(&[2, 3, 5, 5], 1.0), r(&[4, 3, 3, 3], 0.4), r(&[4], 0.3), r(&[4], 1.0), r(&[4], 0.3), r(&[3, 4, 3, 3], 0.4), r(&[2, 3, 5, 5], 1.0)];
    let err = check_gradients(
        |v| {
            let h = v[0].conv2d(&v[1], Some(&v[2]), 1, 1)?.group_norm(2, &v[3], &v[4], 1e-5)?.silu()?;
            let h = h.add(&h.mul(&h)?)?; // fan-out
            h.conv2d(&v[5], None, 1, 1)?.mse(&v[6])
        },
        &inputs,
        EPS,
    )
    .unwrap();
    assert!(err < TOL, "relative error {err:e}");
}

/// `conv2d_add` in f32 on a residual block's shapes (3x3 on 8x8 maps with
/// 32 channels and a 1x1 skip, where the CPU's fast kernels add the
/// residual as they write): the same values and gradients, bit for bit, as
/// `conv2d` followed by `add`, which add in the same order.
#[test]
fn conv2d_add_is_conv2d_then_add_in_f32() {
    use autograd::tensor::DType;
    let mut rng = Rng::new(11);
    let mut r = |dims: &[usize], s: f64| Tensor::randn(0.0, s, dims.to_vec(), DType::F32, &Device::Cpu, &mut rng).unwrap();
    let inputs = [r(&[3, 32, 8, 8], 1.0), r(&[32, 32, 3, 3], 0.1), r(&[32], 0.1), r(&[3, 16, 8, 8], 1.0), r(&[32, 16, 1, 1], 0.3)];
    let run = |fused: bool| -> Vec<Vec<f32>> {
        let v: Vec<Var> = inputs.iter().map(|t| Var::param(t.clone())).collect();
        let skip = v[3].conv2d(&v[4], None, 1, 0).unwrap();
        let y = if fused {
            v[0].conv2d_add(&v[1], Some(&v[2]), 1, 1, &skip).unwrap()
        } else {
            v[0].conv2d(&v[1], Some(&v[2]), 1, 1).unwrap().add(&skip).unwrap()
        };
        let mut out = vec![y.tensor().to_vec::<f32>().unwrap()];
        let g = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        out.extend(v.iter().map(|v| g.get(v).unwrap().to_vec::<f32>().unwrap()));
        out
    };
    for (which, (fused, apart)) in ["y", "dx", "dw", "db", "dskip_x", "dskip_w"].iter().zip(run(true).iter().zip(run(false).iter())) {
        assert_eq!(fused, apart, "conv2d_add: {which} differs from conv2d then add");
    }
}
