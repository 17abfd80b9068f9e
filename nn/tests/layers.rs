//! Each layer against a direct computation, initialisation statistics and
//! parameter naming.

use autograd::Var;
use nn::*;
use tensor::{DType, Device, Rng, Tensor};

fn store(seed: u64) -> ParamStore {
    ParamStore::new(Device::Cpu, DType::F64, Rng::new(seed))
}

fn input(dims: &[usize], seed: u64) -> Var {
    let t = Tensor::randn(0.0, 1.0, dims.to_vec(), DType::F64, &Device::Cpu, &mut Rng::new(seed)).unwrap();
    Var::constant(t)
}

fn close(a: &[f64], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len(), "lengths differ");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "element {i}: {x} vs {y}");
    }
}

#[test]
fn linear_matches_explicit_loop() {
    let s = store(1);
    let lin = Linear::new(&s.root().pp("fc"), 5, 3, true).unwrap();
    let x = input(&[2, 4, 5], 2); // extra batch dim
    let y = lin.forward(&x, &mut Ctx::eval()).unwrap();
    assert_eq!(y.dims(), &[2, 4, 3]);
    let (w, b, xv) = (lin.weight.tensor().to_f64_vec().unwrap(), lin.bias.as_ref().unwrap().tensor().to_f64_vec().unwrap(), x.tensor().to_f64_vec().unwrap());
    let mut want = Vec::new();
    for r in 0..8 {
        for o in 0..3 {
            want.push(b[o] + (0..5).map(|i| xv[r * 5 + i] * w[o * 5 + i]).sum::<f64>());
        }
    }
    close(&y.tensor().to_f64_vec().unwrap(), &want, 1e-12);

    // Rank 1 input, no bias.
    let nb = Linear::new(&s.root().pp("nb"), 5, 2, false).unwrap();
    assert!(nb.bias.is_none() && s.get("nb.bias").is_none());
    let x1 = input(&[5], 3);
    let y1 = nb.forward(&x1, &mut Ctx::eval()).unwrap();
    assert_eq!(y1.dims(), &[2]);
}

#[test]
fn linear_gradients_flow_to_weight_and_bias() {
    let s = store(1);
    let lin = Linear::new(&s.root(), 3, 2, true).unwrap();
    let x = input(&[4, 3], 5);
    let loss = lin.forward(&x, &mut Ctx::eval()).unwrap().sum_all().unwrap();
    let g = loss.backward().unwrap();
    // d(sum)/db = batch size; d(sum)/dW[o, i] = sum over rows of x[:, i].
    assert_eq!(g.get(&lin.bias.clone().unwrap()).unwrap().to_f64_vec().unwrap(), vec![4.0, 4.0]);
    let xv = x.tensor().to_f64_vec().unwrap();
    let col: Vec<f64> = (0..3).map(|i| (0..4).map(|r| xv[r * 3 + i]).sum()).collect();
    let gw = g.get(&lin.weight).unwrap().to_f64_vec().unwrap();
    close(&gw, &[col.clone(), col].concat(), 1e-12);
}

#[test]
fn conv2d_matches_direct_convolution() {
    let s = store(2);
    let conv = Conv2d::new(&s.root().pp("c"), 2, 3, 3, Conv2dConfig { stride: 2, padding: 1, bias: true }).unwrap();
    let x = input(&[1, 2, 5, 5], 7);
    let y = conv.forward(&x, &mut Ctx::eval()).unwrap();
    assert_eq!(y.dims(), &[1, 3, 3, 3]);
    let (w, b, xv) = (conv.weight.tensor().to_f64_vec().unwrap(), conv.bias.as_ref().unwrap().tensor().to_f64_vec().unwrap(), x.tensor().to_f64_vec().unwrap());
    let mut want = Vec::new();
    for o in 0..3 {
        for oy in 0..3 {
            for ox in 0..3 {
                let mut acc = b[o];
                for c in 0..2 {
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let (iy, ix) = ((oy * 2 + ky) as isize - 1, (ox * 2 + kx) as isize - 1);
                            if (0..5).contains(&iy) && (0..5).contains(&ix) {
                                acc += w[((o * 2 + c) * 3 + ky) * 3 + kx] * xv[(c * 5 + iy as usize) * 5 + ix as usize];
                            }
                        }
                    }
                }
                want.push(acc);
            }
        }
    }
    close(&y.tensor().to_f64_vec().unwrap(), &want, 1e-12);

    // Without bias: same as the tensor op.
    let nb = Conv2d::new(&s.root().pp("nb"), 2, 4, 1, Conv2dConfig { bias: false, ..Default::default() }).unwrap();
    let y = nb.forward(&x, &mut Ctx::eval()).unwrap();
    let direct = x.tensor().conv2d(nb.weight.tensor(), None, 1, 0).unwrap();
    assert_eq!(y.tensor(), &direct);
}

#[test]
fn group_norm_matches_hand_computed_statistics() {
    let s = store(3);
    let gn = GroupNorm::new(&s.root().pp("norm"), 2, 4).unwrap();
    assert_eq!(gn.weight.tensor().to_f64_vec().unwrap(), vec![1.0; 4]);
    assert_eq!(gn.bias.tensor().to_f64_vec().unwrap(), vec![0.0; 4]);
    // A non-trivial gain and bias.
    gn.weight.tensor().assign(&Tensor::from_vec(vec![1.0f64, 2.0, -1.0, 0.5], 4, &Device::Cpu).unwrap()).unwrap();
    gn.bias.tensor().assign(&Tensor::from_vec(vec![0.0f64, 1.0, 0.5, -2.0], 4, &Device::Cpu).unwrap()).unwrap();
    let x = input(&[2, 4, 3, 3], 9).affine(3.0, 1.0).unwrap();
    let y = gn.forward(&x, &mut Ctx::eval()).unwrap().tensor().to_f64_vec().unwrap();
    let xv = x.tensor().to_f64_vec().unwrap();
    let (g, b) = (gn.weight.tensor().to_f64_vec().unwrap(), gn.bias.tensor().to_f64_vec().unwrap());
    let mut want = vec![0.0; xv.len()];
    for n in 0..2 {
        for grp in 0..2 {
            let start = (n * 4 + grp * 2) * 9;
            let vals = &xv[start..start + 18];
            let mean = vals.iter().sum::<f64>() / 18.0;
            let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 18.0;
            for (k, v) in vals.iter().enumerate() {
                let c = grp * 2 + k / 9;
                want[start + k] = (v - mean) / (var + 1e-5).sqrt() * g[c] + b[c];
            }
        }
    }
    close(&y, &want, 1e-10);
    assert!(GroupNorm::new(&s.root().pp("bad"), 3, 4).is_err());
}

/// `inference_affine` turns moments into the group norm as one
/// multiply-add per channel: with and without a modulation `z = y * a + b`
/// folded in, against the norm of z computed the ordinary way.
#[test]
fn group_norm_inference_affine_is_the_norm() {
    let s = store(5);
    let gn = GroupNorm::new(&s.root().pp("norm"), 2, 6).unwrap();
    gn.weight.tensor().assign(&input(&[6], 1).tensor().affine(0.5, 1.0).unwrap()).unwrap();
    gn.bias.tensor().assign(&input(&[6], 2).tensor().clone()).unwrap();
    let y = input(&[3, 6, 4, 5], 3).affine(2.0, 0.7).unwrap();
    let (a, b) = (input(&[3, 6], 4).tensor().affine(0.3, 1.0).unwrap(), input(&[3, 6], 6).tensor().clone());
    let expand = |t: &Tensor| t.reshape([3, 6, 1, 1]).unwrap();
    let apply = |(scale, shift): (Tensor, Tensor)| y.tensor().mul(&expand(&scale)).unwrap().add(&expand(&shift)).unwrap().to_f64_vec().unwrap();

    let moments = y.tensor().channel_moments().unwrap();
    let plain = gn.forward(&y, &mut Ctx::eval()).unwrap().tensor().to_f64_vec().unwrap();
    close(&apply(gn.inference_affine(&moments, 20, None, DType::F64).unwrap()), &plain, 1e-10);

    let z = Var::constant(y.tensor().mul(&expand(&a)).unwrap().add(&expand(&b)).unwrap());
    let modulated = gn.forward(&z, &mut Ctx::eval()).unwrap().tensor().to_f64_vec().unwrap();
    close(&apply(gn.inference_affine(&moments, 20, Some((&a, &b)), DType::F64).unwrap()), &modulated, 1e-10);

    let wrong = Tensor::zeros([3, 5, 2], DType::F64, &Device::Cpu).unwrap();
    assert!(gn.inference_affine(&wrong, 20, None, DType::F64).is_err());
}

/// Per-channel mean and biased variance over N, H, W of x [N, C, H, W].
fn channel_stats(x: &[f64], dims: [usize; 4]) -> Vec<(f64, f64)> {
    let [n, c, h, w] = dims;
    (0..c)
        .map(|ch| {
            let vals: Vec<f64> = (0..n).flat_map(|i| x[(i * c + ch) * h * w..][..h * w].to_vec()).collect();
            let mean = vals.iter().sum::<f64>() / vals.len() as f64;
            (mean, vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / vals.len() as f64)
        })
        .collect()
}

#[test]
fn batch_norm_trains_on_batch_statistics_and_evaluates_on_running_ones() {
    let s = store(4);
    let bn = BatchNorm2d::new(&s.root().pp("bn"), 3).unwrap();
    bn.weight.tensor().assign(&Tensor::from_vec(vec![1.0f64, 2.0, -0.5], 3, &Device::Cpu).unwrap()).unwrap();
    bn.bias.tensor().assign(&Tensor::from_vec(vec![0.0f64, 1.0, 0.25], 3, &Device::Cpu).unwrap()).unwrap();
    let dims = [2, 3, 2, 3];
    let x = input(&dims, 5).affine(2.0, 0.5).unwrap();
    let xv = x.tensor().to_f64_vec().unwrap();
    let (g, b) = (bn.weight.tensor().to_f64_vec().unwrap(), bn.bias.tensor().to_f64_vec().unwrap());
    let stats = channel_stats(&xv, dims);
    let count = 12.0;

    // Training: the batch's own statistics, folded into the running ones
    // with momentum 0.1 (the variance unbiased, as PyTorch keeps it).
    let y = bn.forward(&x, &mut Ctx::train(Rng::new(0))).unwrap().tensor().to_f64_vec().unwrap();
    let want: Vec<f64> = (0..xv.len()).map(|i| {
        let ch = (i / 6) % 3;
        (xv[i] - stats[ch].0) / (stats[ch].1 + 1e-5).sqrt() * g[ch] + b[ch]
    }).collect();
    close(&y, &want, 1e-10);
    let rm: Vec<f64> = stats.iter().map(|s| 0.1 * s.0).collect();
    let rv: Vec<f64> = stats.iter().map(|s| 0.9 + 0.1 * s.1 * count / (count - 1.0)).collect();
    close(&bn.running_mean.to_f64_vec().unwrap(), &rm, 1e-10);
    close(&bn.running_var.to_f64_vec().unwrap(), &rv, 1e-10);

    // Evaluation: the running statistics, and training leaves them alone.
    let y = bn.forward(&x, &mut Ctx::eval()).unwrap().tensor().to_f64_vec().unwrap();
    let want: Vec<f64> = (0..xv.len()).map(|i| {
        let ch = (i / 6) % 3;
        (xv[i] - rm[ch]) / (rv[ch] + 1e-5).sqrt() * g[ch] + b[ch]
    }).collect();
    close(&y, &want, 1e-10);
    close(&bn.running_mean.to_f64_vec().unwrap(), &rm, 1e-10);

    // Gradients reach weight and bias; buffers are state, not parameters.
    let grads = bn.forward(&x, &mut Ctx::train(Rng::new(0))).unwrap().sqr().unwrap().sum_all().unwrap().backward().unwrap();
    assert!(grads.get(&bn.weight).is_some() && grads.get(&bn.bias).is_some());
    let params: Vec<String> = s.named().into_iter().map(|(n, _)| n).collect();
    assert_eq!(params, ["bn.bias", "bn.weight"]);
    assert_eq!(s.num_params(), 6);
    let state: Vec<String> = s.tensors().into_keys().collect();
    assert_eq!(state, ["bn.bias", "bn.running_mean", "bn.running_var", "bn.weight"]);

    let err = bn.forward(&input(&[2, 4, 2, 2], 1), &mut Ctx::eval()).err().unwrap().to_string();
    assert!(err.contains("[2, 4, 2, 2]") && err.contains("[N, 3, H, W]"), "{err}");
    assert!(s.root().pp("bn").param("running_mean", [3], Init::Const(0.0)).is_err(), "a buffer's name is taken");
}

#[test]
fn embedding_looks_up_rows() {
    let s = store(4);
    let emb = Embedding::new(&s.root().pp("emb"), 10, 3).unwrap();
    let idx = Tensor::from_vec(vec![7u32, 0, 7, 2], [2, 2], &Device::Cpu).unwrap();
    let out = emb.lookup(&idx).unwrap();
    assert_eq!(out.dims(), &[2, 2, 3]);
    let w = emb.weight.tensor().to_f64_vec().unwrap();
    let want: Vec<f64> = [7, 0, 7, 2].iter().flat_map(|&r| w[r * 3..r * 3 + 3].to_vec()).collect();
    assert_eq!(out.tensor().to_f64_vec().unwrap(), want);
    // Through the Module trait, and gradients accumulate on repeated rows.
    let out = emb.forward(&Var::constant(idx), &mut Ctx::eval()).unwrap();
    let g = out.sum_all().unwrap().backward().unwrap();
    let gw = g.get(&emb.weight).unwrap().to_f64_vec().unwrap();
    assert_eq!(&gw[21..24], &[2.0; 3]);
    assert_eq!(&gw[0..3], &[1.0; 3]);
    assert_eq!(&gw[3..6], &[0.0; 3]);
}

#[test]
fn sinusoidal_embedding_follows_the_formula() {
    let dim = 8;
    let half = 4;
    let emb = SinusoidalEmbedding::new(dim, DType::F32).unwrap();
    let out = emb.embed(&[0, 500], &Device::Cpu).unwrap();
    assert_eq!(out.dims(), &[2, 8]);
    assert_eq!(out.dtype(), DType::F32);
    let got = out.tensor().to_f64_vec().unwrap();
    // t = 0: sin 0 = 0, cos 0 = 1.
    assert_eq!(&got[..8], &[0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]);
    for k in 0..half {
        let f = (-(10000f64.ln()) * k as f64 / half as f64).exp();
        assert_eq!(got[8 + k], (500.0 * f).sin() as f32 as f64, "sin k={k}");
        assert_eq!(got[8 + half + k], (500.0 * f).cos() as f32 as f64, "cos k={k}");
    }
    // Spot values: f_0 = 1, f_2 = 10000^-0.5 = 0.01.
    assert!((got[8] - 500f64.sin()).abs() < 1e-6);
    assert!((got[10] - 5f64.sin()).abs() < 1e-6);
    // From a u32 tensor, and through the Module trait.
    let t = Tensor::from_vec(vec![0u32, 500], 2, &Device::Cpu).unwrap();
    assert_eq!(emb.embed_tensor(&t).unwrap().tensor(), out.tensor());
    assert_eq!(emb.forward(&Var::constant(t), &mut Ctx::eval()).unwrap().tensor(), out.tensor());
    assert!(SinusoidalEmbedding::new(7, DType::F32).is_err());
}

#[test]
fn dropout_in_train_and_eval() {
    let d = Dropout::new(0.25).unwrap();
    let x = Var::constant(Tensor::ones([1000], DType::F64, &Device::Cpu).unwrap());
    let eval = d.forward(&x, &mut Ctx::eval()).unwrap();
    assert_eq!(eval.tensor(), x.tensor());

    let mut ctx = Ctx::train(Rng::new(5));
    let y = d.forward(&x, &mut ctx).unwrap().tensor().to_f64_vec().unwrap();
    let zeros = y.iter().filter(|&&v| v == 0.0).count();
    assert!(y.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-12));
    assert!((200..300).contains(&zeros), "{zeros} zeros of 1000");
    assert_ne!(ctx.rng, Rng::new(5), "the context's generator advances");
    // Same generator state, same mask.
    let y2 = d.forward(&x, &mut Ctx::train(Rng::new(5))).unwrap().tensor().to_f64_vec().unwrap();
    assert_eq!(y, y2);
    assert!(Dropout::new(1.0).is_err());
}

#[test]
fn activation_pooling_and_upsampling() {
    let x = input(&[1, 2, 4, 4], 11);
    let xv = x.tensor().to_f64_vec().unwrap();
    let mut ctx = Ctx::eval();
    let silu = SiLU.forward(&x, &mut ctx).unwrap().tensor().to_f64_vec().unwrap();
    close(&silu, &xv.iter().map(|v| v / (1.0 + (-v).exp())).collect::<Vec<_>>(), 1e-12);

    let avg = AvgPool2d::new(2).forward(&x, &mut ctx).unwrap();
    let max = MaxPool2d::new(2).forward(&x, &mut ctx).unwrap();
    assert_eq!(avg.dims(), &[1, 2, 2, 2]);
    let (av, mv) = (avg.tensor().to_f64_vec().unwrap(), max.tensor().to_f64_vec().unwrap());
    for c in 0..2 {
        for oy in 0..2 {
            for ox in 0..2 {
                let w: Vec<f64> = [(0, 0), (0, 1), (1, 0), (1, 1)].iter().map(|(dy, dx)| xv[(c * 4 + oy * 2 + dy) * 4 + ox * 2 + dx]).collect();
                let o = (c * 2 + oy) * 2 + ox;
                assert!((av[o] - w.iter().sum::<f64>() / 4.0).abs() < 1e-12);
                assert_eq!(mv[o], w.iter().cloned().fold(f64::MIN, f64::max));
            }
        }
    }
    let up = UpsampleNearest2d::new(2).forward(&avg, &mut ctx).unwrap();
    assert_eq!(up.dims(), &[1, 2, 4, 4]);
    let upv = up.tensor().to_f64_vec().unwrap();
    for c in 0..2 {
        for y in 0..4 {
            for xx in 0..4 {
                assert_eq!(upv[(c * 4 + y) * 4 + xx], av[(c * 2 + y / 2) * 2 + xx / 2]);
            }
        }
    }
}

#[test]
fn sequential_chains_layers() {
    let s = store(6);
    let root = s.root().pp("mlp");
    let seq = Sequential::new().with(Linear::new(&root.pp(0), 3, 4, true).unwrap()).with(SiLU).with(Linear::new(&root.pp(2), 4, 2, true).unwrap());
    assert_eq!(seq.len(), 3);
    let x = input(&[5, 3], 1);
    let y = seq.forward(&x, &mut Ctx::eval()).unwrap();
    assert_eq!(y.dims(), &[5, 2]);
    let names: Vec<String> = s.named().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["mlp.0.bias", "mlp.0.weight", "mlp.2.bias", "mlp.2.weight"]);
}

#[test]
fn init_statistics_follow_pytorch_defaults() {
    let s = ParamStore::new(Device::Cpu, DType::F32, Rng::new(42));
    let lin = Linear::new(&s.root().pp("lin"), 256, 128, true).unwrap();
    let conv = Conv2d::new(&s.root().pp("conv"), 16, 64, 3, Conv2dConfig::padded(1)).unwrap();
    let emb = Embedding::new(&s.root().pp("emb"), 200, 100).unwrap();
    assert!((Init::kaiming_uniform_bound(256) - 1.0 / 16.0).abs() < 1e-15);

    let check_uniform = |v: Vec<f64>, bound: f64| {
        let n = v.len() as f64;
        assert!(v.iter().all(|x| x.abs() <= bound), "bound {bound} exceeded");
        let mean = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.05 * bound, "mean {mean} for bound {bound}");
        // Uniform(-b, b) has variance b²/3.
        assert!((var / (bound * bound / 3.0) - 1.0).abs() < 0.05, "variance {var} for bound {bound}");
        // The extremes get close to the bound.
        assert!(v.iter().cloned().fold(0.0, f64::max) > 0.95 * bound);
    };
    check_uniform(lin.weight.tensor().to_f64_vec().unwrap(), 1.0 / 16.0);
    let conv_bound = 1.0 / (16.0f64 * 9.0).sqrt();
    check_uniform(conv.weight.tensor().to_f64_vec().unwrap(), conv_bound);
    let b = conv.bias.as_ref().unwrap().tensor().to_f64_vec().unwrap();
    assert!(b.iter().all(|x| x.abs() <= conv_bound));
    let lb = lin.bias.as_ref().unwrap().tensor().to_f64_vec().unwrap();
    assert!(lb.iter().all(|x| x.abs() <= 1.0 / 16.0));

    let e = emb.weight.tensor().to_f64_vec().unwrap();
    let mean = e.iter().sum::<f64>() / e.len() as f64;
    let var = e.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / e.len() as f64;
    assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.05, "N(0,1): mean {mean} var {var}");
    assert_eq!(s.num_params(), 256 * 128 + 128 + 16 * 64 * 9 + 64 + 200 * 100);
    assert_eq!(s.len(), 5);
}

#[test]
fn same_seed_same_weights() {
    let build = |seed| {
        let s = store(seed);
        Linear::new(&s.root().pp("a"), 4, 4, true).unwrap();
        Conv2d::new(&s.root().pp("b"), 2, 2, 3, Conv2dConfig::default()).unwrap();
        s.tensors()
    };
    let (a, b, c) = (build(1), build(1), build(2));
    assert!(a.iter().zip(&b).all(|((_, x), (_, y))| x == y));
    assert!(a.iter().zip(&c).any(|((_, x), (_, y))| x != y));
}

#[test]
fn names_follow_the_unet_state_dict() {
    let s = store(0);
    let root = s.root();
    Linear::new(&root.pp("time_mlp").pp(0), 32, 128, true).unwrap();
    let block = root.pp("down").pp(0).pp(1);
    assert_eq!(block.name(), "down.0.1");
    GroupNorm::new(&block.pp("norm1"), 8, 32).unwrap();
    Conv2d::new(&block.pp("conv1"), 32, 64, 3, Conv2dConfig::padded(1)).unwrap();
    for name in ["time_mlp.0.weight", "time_mlp.0.bias", "down.0.1.norm1.weight", "down.0.1.norm1.bias", "down.0.1.conv1.weight", "down.0.1.conv1.bias"] {
        assert!(s.get(name).is_some(), "{name} missing");
    }
    assert_eq!(s.get("down.0.1.conv1.weight").unwrap().dims(), &[64, 32, 3, 3]);
    assert_eq!(s.get("time_mlp.0.weight").unwrap().dims(), &[128, 32]);
    // Registering a name twice is an error that names it.
    let err = Linear::new(&root.pp("time_mlp").pp(0), 32, 128, true).err().unwrap();
    assert!(err.to_string().contains("time_mlp.0.weight"), "{err}");
}
