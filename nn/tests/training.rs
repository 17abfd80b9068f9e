//! End to end: small networks built from the layers learn simple tasks.

use autograd::Var;
use nn::*;
use tensor::{DType, Device, Rng, Tensor};

struct Tanh;
impl Module for Tanh {
    fn forward(&self, x: &Var, _ctx: &mut Ctx) -> Result<Var> {
        Ok(x.tanh()?)
    }
}

#[test]
fn mlp_learns_xor() {
    let s = ParamStore::new(Device::Cpu, DType::F32, Rng::new(7));
    let root = s.root();
    let mlp = Sequential::new().with(Linear::new(&root.pp(0), 2, 8, true).unwrap()).with(Tanh).with(Linear::new(&root.pp(2), 8, 1, true).unwrap());
    let x = Var::constant(Tensor::from_vec(vec![0f32, 0., 0., 1., 1., 0., 1., 1.], [4, 2], &Device::Cpu).unwrap());
    let y = Var::constant(Tensor::from_vec(vec![0f32, 1., 1., 0.], [4, 1], &Device::Cpu).unwrap());
    let mut opt = Adam::new(&s, AdamConfig::adam(0.05)).unwrap();
    let mut loss = f64::INFINITY;
    for step in 0..300 {
        let l = mlp.forward(&x, &mut Ctx::eval()).unwrap().mse(&y).unwrap();
        loss = l.tensor().to_scalar().unwrap();
        if loss < 0.01 {
            eprintln!("XOR learned at step {step}");
            break;
        }
        opt.step(&l.backward().unwrap()).unwrap();
    }
    assert!(loss < 0.01, "loss {loss} after 300 steps");
}

/// `n` noisy 8x8 images of period-2 stripes, horizontal (label -1) or
/// vertical (label +1), with random phase.
fn stripes(n: usize, rng: &mut Rng) -> (Var, Var, Vec<f32>) {
    let noise = Tensor::randn(0.0, 0.6, [n, 1, 8, 8], DType::F32, &Device::Cpu, rng).unwrap().to_vec::<f32>().unwrap();
    let (mut px, mut labels) = (Vec::with_capacity(n * 64), Vec::with_capacity(n));
    for i in 0..n {
        let vertical = rng.below(2) == 1;
        let phase = rng.below(2) as usize;
        for r in 0..8 {
            for c in 0..8 {
                let k = if vertical { c } else { r };
                px.push(if (k + phase).is_multiple_of(2) { 1.0 } else { -1.0 } + noise[i * 64 + r * 8 + c]);
            }
        }
        labels.push(if vertical { 1.0 } else { -1.0 });
    }
    let x = Var::constant(Tensor::from_vec(px, [n, 1, 8, 8], &Device::Cpu).unwrap());
    let y = Var::constant(Tensor::from_vec(labels.clone(), [n, 1], &Device::Cpu).unwrap());
    (x, y, labels)
}

struct Cnn {
    features: Sequential,
    head: Linear,
}

impl Cnn {
    fn new(p: &Path) -> Cnn {
        let features = Sequential::new()
            .with(Conv2d::new(&p.pp("conv1"), 1, 4, 3, Conv2dConfig::padded(1)).unwrap())
            .with(GroupNorm::new(&p.pp("norm"), 2, 4).unwrap())
            .with(SiLU)
            .with(MaxPool2d::new(2))
            .with(Conv2d::new(&p.pp("conv2"), 4, 8, 3, Conv2dConfig::padded(1)).unwrap())
            .with(SiLU)
            .with(Dropout::new(0.1).unwrap())
            .with(AvgPool2d::new(4));
        Cnn { features, head: Linear::new(&p.pp("head"), 8, 1, true).unwrap() }
    }
}

impl Module for Cnn {
    fn forward(&self, x: &Var, ctx: &mut Ctx) -> Result<Var> {
        let f = self.features.forward(x, ctx)?;
        let n = f.dims()[0];
        self.head.forward(&f.reshape([n, 8])?, ctx)
    }
}

#[test]
fn cnn_tells_horizontal_from_vertical_stripes() {
    let s = ParamStore::new(Device::Cpu, DType::F32, Rng::new(3));
    let net = Cnn::new(&s.root());
    let mut opt = Adam::new(&s, AdamConfig::adam(0.02)).unwrap();
    let mut data_rng = Rng::new(100);
    let mut ctx = Ctx::train(Rng::new(5));
    for _ in 0..150 {
        let (x, y, _) = stripes(32, &mut data_rng);
        let loss = net.forward(&x, &mut ctx).unwrap().mse(&y).unwrap();
        opt.step(&loss.backward().unwrap()).unwrap();
    }
    let (x, _, labels) = stripes(400, &mut Rng::new(999));
    let out = autograd::no_grad(|| net.forward(&x, &mut Ctx::eval())).unwrap().tensor().to_vec::<f32>().unwrap();
    let correct = out.iter().zip(&labels).filter(|(o, l)| o.signum() == l.signum()).count();
    let acc = correct as f64 / labels.len() as f64;
    eprintln!("stripes accuracy {acc}");
    assert!(acc > 0.95, "accuracy {acc}");
}
