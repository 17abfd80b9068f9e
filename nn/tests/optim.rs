//! Optimizers against PyTorch's update rules written out in f64, gradient
//! clipping, the weight average and the learning-rate schedules.

use autograd::Var;
use nn::*;
use tensor::{DType, Device, Rng, Tensor};

const A: [f64; 4] = [1.0, 0.5, 2.0, 0.1];
const C: [f64; 4] = [0.3, -1.0, 0.7, 2.0];
const P0: [f64; 4] = [0.5, -0.25, 1.5, -2.0];

fn t(v: &[f64]) -> Tensor {
    Tensor::from_vec(v.to_vec(), v.len(), &Device::Cpu).unwrap()
}

/// A store with one parameter `w` = P0.
fn one_param() -> (ParamStore, Var) {
    let s = ParamStore::new(Device::Cpu, DType::F64, Rng::new(0));
    let w = s.root().param("w", [4], Init::Const(0.0)).unwrap();
    w.tensor().assign(&t(&P0)).unwrap();
    (s, w)
}

/// loss = sum(A p² / 2 + C p), so dloss/dp = A p + C.
fn grads_of(w: &Var) -> autograd::Grads {
    let (a, c) = (Var::constant(t(&A)), Var::constant(t(&C)));
    let loss = w.sqr().unwrap().mul(&a).unwrap().mul_scalar(0.5).unwrap().add(&w.mul(&c).unwrap()).unwrap().sum_all().unwrap();
    loss.backward().unwrap()
}

fn grad_ref(p: &[f64]) -> Vec<f64> {
    p.iter().zip(A.iter().zip(C)).map(|(p, (a, c))| a * p + c).collect()
}

fn assert_close(got: &[f64], want: &[f64], step: usize) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-13 * (1.0 + w.abs()), "step {step}, element {i}: {g} vs {w}");
    }
}

/// torch.optim.Adam / AdamW (amsgrad=False, maximize=False), in f64.
fn adam_reference(cfg: AdamConfig, steps: usize) -> Vec<Vec<f64>> {
    let mut p = P0.to_vec();
    let (mut m, mut v) = (vec![0.0; 4], vec![0.0; 4]);
    let mut out = Vec::new();
    for step in 1..=steps {
        let mut g = grad_ref(&p);
        if cfg.decoupled_weight_decay {
            p.iter_mut().for_each(|p| *p *= 1.0 - cfg.lr * cfg.weight_decay);
        } else {
            g.iter_mut().zip(&p).for_each(|(g, p)| *g += cfg.weight_decay * p);
        }
        let bc1 = 1.0 - cfg.beta1.powi(step as i32);
        let bc2 = 1.0 - cfg.beta2.powi(step as i32);
        for i in 0..4 {
            m[i] = cfg.beta1 * m[i] + (1.0 - cfg.beta1) * g[i];
            v[i] = cfg.beta2 * v[i] + (1.0 - cfg.beta2) * g[i] * g[i];
            let denom = v[i].sqrt() / bc2.sqrt() + cfg.eps;
            p[i] -= cfg.lr / bc1 * m[i] / denom;
        }
        out.push(p.clone());
    }
    out
}

fn run_adam(cfg: AdamConfig, steps: usize) -> Vec<Vec<f64>> {
    let (s, w) = one_param();
    let mut opt = Adam::new(&s, cfg).unwrap();
    (0..steps)
        .map(|_| {
            opt.step(&grads_of(&w)).unwrap();
            w.tensor().to_f64_vec().unwrap()
        })
        .collect()
}

#[test]
fn adam_matches_pytorch_formula() {
    for cfg in [AdamConfig::adam(0.1), AdamConfig { weight_decay: 0.05, eps: 1e-3, beta1: 0.8, ..AdamConfig::adam(0.05) }] {
        let (got, want) = (run_adam(cfg, 5), adam_reference(cfg, 5));
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_close(g, w, k + 1);
        }
    }
}

#[test]
fn adamw_matches_pytorch_formula() {
    let cfg = AdamConfig { weight_decay: 0.1, ..AdamConfig::adamw(0.1) };
    assert!(cfg.decoupled_weight_decay);
    assert_eq!(AdamConfig::adamw(1e-3).weight_decay, 0.01);
    let (got, want) = (run_adam(cfg, 5), adam_reference(cfg, 5));
    for (k, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_close(g, w, k + 1);
    }
    // Decoupled decay really differs from the L2 form.
    let l2 = adam_reference(AdamConfig { decoupled_weight_decay: false, ..cfg }, 5);
    assert!((l2[4][0] - want[4][0]).abs() > 1e-6);
}

#[test]
fn adam_on_f32_stays_close_to_f64_reference() {
    let s = ParamStore::new(Device::Cpu, DType::F32, Rng::new(0));
    let w = s.root().param("w", [4], Init::Const(0.0)).unwrap();
    w.tensor().assign(&t(&P0).to_dtype(DType::F32).unwrap()).unwrap();
    let mut opt = Adam::new(&s, AdamConfig::adam(0.1)).unwrap();
    for _ in 0..3 {
        let (a, c) = (Var::constant(t(&A).to_dtype(DType::F32).unwrap()), Var::constant(t(&C).to_dtype(DType::F32).unwrap()));
        let loss = w.sqr().unwrap().mul(&a).unwrap().mul_scalar(0.5).unwrap().add(&w.mul(&c).unwrap()).unwrap().sum_all().unwrap();
        opt.step(&loss.backward().unwrap()).unwrap();
    }
    let want = &adam_reference(AdamConfig::adam(0.1), 3)[2];
    for (g, w) in w.tensor().to_f64_vec().unwrap().iter().zip(want) {
        assert!((g - w).abs() < 1e-5, "{g} vs {w}");
    }
}

#[test]
fn parameters_without_gradient_are_skipped_and_keep_their_own_step() {
    let s = ParamStore::new(Device::Cpu, DType::F64, Rng::new(0));
    let a = s.root().param("a", [4], Init::Const(0.0)).unwrap();
    let b = s.root().param("b", [4], Init::Const(0.0)).unwrap();
    for v in [&a, &b] {
        v.tensor().assign(&t(&P0)).unwrap();
    }
    let cfg = AdamConfig::adam(0.1);
    let mut opt = Adam::new(&s, cfg).unwrap();
    opt.step(&grads_of(&a)).unwrap(); // b has no gradient: untouched
    assert_eq!(b.tensor().to_f64_vec().unwrap(), P0.to_vec());
    opt.step(&grads_of(&b)).unwrap(); // b's first step: bias correction for t = 1
    assert_close(&b.tensor().to_f64_vec().unwrap(), &adam_reference(cfg, 1)[0], 1);
    assert_close(&a.tensor().to_f64_vec().unwrap(), &adam_reference(cfg, 1)[0], 1);
    let st = opt.state();
    assert_eq!(st.step, 2);
    assert_eq!(st.param_steps.get("b"), Some(&1));
    assert_eq!(st.param_steps.get("a"), Some(&1));
    assert!(st.tensors.contains_key("a.m") && st.tensors.contains_key("b.v"));
}

#[test]
fn sgd_momentum_matches_pytorch_formula() {
    for (momentum, nesterov, wd) in [(0.0, false, 0.0), (0.9, false, 0.0), (0.9, true, 0.0), (0.5, false, 0.1)] {
        let cfg = SgdConfig { lr: 0.05, momentum, weight_decay: wd, nesterov };
        let (s, w) = one_param();
        let mut opt = Sgd::new(&s, cfg).unwrap();
        let mut p = P0.to_vec();
        let mut buf: Option<Vec<f64>> = None;
        for step in 1..=4 {
            opt.step(&grads_of(&w)).unwrap();
            // torch.optim.SGD, dampening 0:
            let g: Vec<f64> = grad_ref(&p).iter().zip(&p).map(|(g, p)| g + wd * p).collect();
            let d = if momentum != 0.0 {
                let b: Vec<f64> = match &buf {
                    None => g.clone(),
                    Some(b) => b.iter().zip(&g).map(|(b, g)| momentum * b + g).collect(),
                };
                let d = if nesterov { g.iter().zip(&b).map(|(g, b)| g + momentum * b).collect() } else { b.clone() };
                buf = Some(b);
                d
            } else {
                g
            };
            p.iter_mut().zip(&d).for_each(|(p, d)| *p -= cfg.lr * d);
            assert_close(&w.tensor().to_f64_vec().unwrap(), &p, step);
        }
        assert_eq!(opt.state().tensors.len(), if momentum != 0.0 { 1 } else { 0 });
    }
    let (s, _) = one_param();
    assert!(Sgd::new(&s, SgdConfig { nesterov: true, ..SgdConfig::new(0.1) }).is_err());
}

#[test]
fn set_lr_changes_the_step() {
    let (s, w) = one_param();
    let mut opt = Sgd::new(&s, SgdConfig::new(0.1)).unwrap();
    opt.set_lr(0.0);
    assert_eq!(opt.lr(), 0.0);
    opt.step(&grads_of(&w)).unwrap();
    assert_eq!(w.tensor().to_f64_vec().unwrap(), P0.to_vec());
}

#[test]
fn clip_grad_norm_scales_only_above_the_limit() {
    let s = ParamStore::new(Device::Cpu, DType::F64, Rng::new(0));
    let a = s.root().param("a", [2], Init::Const(1.0)).unwrap();
    let b = s.root().param("b", [1], Init::Const(1.0)).unwrap();
    let loss = || {
        let ca = Var::constant(t(&[3.0, 0.0]));
        let cb = Var::constant(t(&[4.0]));
        a.mul(&ca).unwrap().sum_all().unwrap().add(&b.mul(&cb).unwrap().sum_all().unwrap()).unwrap()
    };
    // Norm 5 under a limit of 10: untouched.
    let mut g = loss().backward().unwrap();
    assert_eq!(clip_grad_norm(&s, &mut g, 10.0).unwrap(), 5.0);
    assert_eq!(g.get(&a).unwrap().to_f64_vec().unwrap(), vec![3.0, 0.0]);
    // Limit 1: scaled by 1 / (5 + 1e-6).
    let mut g = loss().backward().unwrap();
    assert_eq!(clip_grad_norm(&s, &mut g, 1.0).unwrap(), 5.0);
    let coef = 1.0 / (5.0 + 1e-6);
    assert_close(&g.get(&a).unwrap().to_f64_vec().unwrap(), &[3.0 * coef, 0.0], 0);
    assert_close(&g.get(&b).unwrap().to_f64_vec().unwrap(), &[4.0 * coef], 0);
    // A gradient tensor shared by two parameters is scaled once.
    let mut g = a.add(&b.broadcast_as([2]).unwrap()).unwrap().sum_all().unwrap().backward().unwrap();
    let norm = clip_grad_norm(&s, &mut g, 0.5).unwrap();
    assert!((norm - 6f64.sqrt()).abs() < 1e-12);
    let after: f64 = [g.get(&a).unwrap(), g.get(&b).unwrap()].iter().map(|t| t.to_f64_vec().unwrap().iter().map(|v| v * v).sum::<f64>()).sum();
    assert!((after.sqrt() - 0.5).abs() < 1e-6, "clipped norm {}", after.sqrt());
}

#[test]
fn ema_tracks_the_weights() {
    let (s, w) = one_param();
    let mut ema = Ema::new(&s, 0.9).unwrap();
    let mut shadow = P0.to_vec();
    let mut opt = Sgd::new(&s, SgdConfig::new(0.1)).unwrap();
    for _ in 0..3 {
        opt.step(&grads_of(&w)).unwrap();
        ema.update(&s).unwrap();
        let p = w.tensor().to_f64_vec().unwrap();
        shadow.iter_mut().zip(&p).for_each(|(e, p)| *e = 0.9 * *e + 0.1 * p);
        assert_close(&ema.named()[0].1.to_f64_vec().unwrap(), &shadow, 0);
    }
    assert_eq!(ema.named()[0].0, "w");
    ema.copy_to(&s).unwrap();
    assert_close(&w.tensor().to_f64_vec().unwrap(), &shadow, 0);

    // load: strict about names and shapes.
    let mut bad = std::collections::BTreeMap::new();
    bad.insert("v".to_string(), t(&[1.0]));
    let err = ema.load(&bad).err().unwrap().to_string();
    assert!(err.contains("missing") && err.contains('w') && err.contains("unexpected"), "{err}");
}

#[test]
fn optimizer_state_is_strict_about_names_and_shapes() {
    let (s, w) = one_param();
    let mut opt = Adam::new(&s, AdamConfig::default()).unwrap();
    opt.step(&grads_of(&w)).unwrap();
    let mut st = opt.state();
    st.tensors.remove("w.v");
    st.tensors.insert("nope.m".into(), t(&[0.0]));
    let err = Adam::new(&s, AdamConfig::default()).unwrap().load_state(&st).err().unwrap().to_string();
    assert!(err.contains("w.v") && err.contains("nope.m"), "{err}");
    let mut st = opt.state();
    st.tensors.insert("w.m".into(), t(&[0.0; 3]));
    let err = Adam::new(&s, AdamConfig::default()).unwrap().load_state(&st).err().unwrap().to_string();
    assert!(err.contains("w.m") && err.contains("[4]") && err.contains("[3]"), "{err}");
}

#[test]
fn cosine_schedule_values() {
    let c = CosineAnnealing { base: 1e-3, min: 1e-5, total_steps: 100 };
    let want = |s: f64| 1e-5 + (1e-3 - 1e-5) * (1.0 + (std::f64::consts::PI * s / 100.0).cos()) / 2.0;
    assert_eq!(c.lr(0), 1e-3);
    for s in [1, 25, 50, 75, 99] {
        assert!((c.lr(s) - want(s as f64)).abs() < 1e-18, "step {s}");
    }
    assert!((c.lr(50) - (1e-3 + 1e-5) / 2.0).abs() < 1e-15);
    assert_eq!(c.lr(100), 1e-5);
    assert_eq!(c.lr(1000), 1e-5);
}

#[test]
fn warmup_and_constant_schedules() {
    assert_eq!(Constant(0.1).lr(12345), 0.1);
    let w = LinearWarmup::new(1.0, 4);
    let got: Vec<f64> = (0..6).map(|s| w.lr(s)).collect();
    assert_eq!(got, vec![0.25, 0.5, 0.75, 1.0, 1.0, 1.0]);
    let wc = LinearWarmup::wrap(CosineAnnealing { base: 2.0, min: 0.0, total_steps: 10 }, 2);
    assert_eq!(wc.lr(0), 2.0 * 0.5);
    assert_eq!(wc.lr(5), CosineAnnealing { base: 2.0, min: 0.0, total_steps: 10 }.lr(5));
    let boxed: Box<dyn LrSchedule> = Box::new(wc);
    assert_eq!(boxed.lr(1), wc.lr(1));
}
