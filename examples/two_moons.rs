//! A small network learns to tell two interleaved half-moons apart.
//!
//! Generates the classic two-moons dataset, trains a two-hidden-layer MLP
//! with Adam on the logistic loss, prints its accuracy on fresh points,
//! and paints its decision boundary into a PNG. A minute of reading, a few
//! seconds of running:
//!
//! ```sh
//! cargo run -p ddpm --release --example two_moons                 # writes two_moons.png
//! cargo run -p ddpm --release --example two_moons -- boundary.png
//! ```

use anyhow::Result;
use autograd::{no_grad, Var};
use nn::{Adam, AdamConfig, Ctx, Linear, Module, Optimizer, ParamStore, Path};
use tensor::{DType, Device, Rng, Tensor};

/// `n` points, half on each moon, with Gaussian noise of `noise`. Returns
/// the points `[n, 2]` (row-major x, y pairs) and their labels, +1 for the
/// upper moon and -1 for the lower one.
pub fn two_moons(n: usize, noise: f64, rng: &mut Rng) -> Result<(Vec<f32>, Vec<f32>)> {
    let jitter = Tensor::randn(0.0, noise, [n, 2], DType::F64, &Device::Cpu, rng)?.to_vec::<f64>()?;
    let (mut points, mut labels) = (Vec::with_capacity(2 * n), Vec::with_capacity(n));
    for i in 0..n {
        let t = std::f64::consts::PI * rng.next_f64();
        let upper = i % 2 == 0;
        // The upper moon is the top half of the unit circle; the lower one
        // is the same arc flipped and shifted so the two interlock.
        let (x, y) = if upper { (t.cos(), t.sin()) } else { (1.0 - t.cos(), 0.5 - t.sin()) };
        points.push((x + jitter[2 * i]) as f32);
        points.push((y + jitter[2 * i + 1]) as f32);
        labels.push(if upper { 1.0 } else { -1.0 });
    }
    Ok((points, labels))
}

/// 2 -> 16 -> 16 -> 1, tanh between layers. The output is a logit: the
/// model says "upper moon" when it is positive.
pub struct Mlp {
    layers: [Linear; 3],
}

impl Mlp {
    pub fn new(path: &Path) -> Result<Mlp> {
        Ok(Mlp { layers: [Linear::new(&path.pp(0), 2, 16, true)?, Linear::new(&path.pp(1), 16, 16, true)?, Linear::new(&path.pp(2), 16, 1, true)?] })
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Var, ctx: &mut Ctx) -> nn::Result<Var> {
        let h = self.layers[0].forward(x, ctx)?.tanh()?;
        let h = self.layers[1].forward(&h, ctx)?.tanh()?;
        self.layers[2].forward(&h, ctx)
    }
}

/// The logistic loss, `mean(log(1 + exp(-label * logit)))`: small when the
/// logit has the label's sign and a large magnitude.
fn logistic_loss(logits: &Var, labels: &Var) -> Result<Var> {
    Ok(logits.mul(labels)?.neg()?.exp()?.add_scalar(1.0)?.log()?.mean_all()?)
}

/// The fraction of `labels` whose sign the logits get right.
pub fn accuracy(model: &Mlp, points: &[f32], labels: &[f32]) -> Result<f64> {
    let logits = predict(model, points)?;
    let right = logits.iter().zip(labels).filter(|(l, y)| (**l > 0.0) == (**y > 0.0)).count();
    Ok(right as f64 / labels.len() as f64)
}

/// The model's logits for `points` (`[n, 2]` row-major), without a tape.
pub fn predict(model: &Mlp, points: &[f32]) -> Result<Vec<f32>> {
    let x = Var::constant(Tensor::from_slice(points, [points.len() / 2, 2], &Device::Cpu)?);
    let logits = no_grad(|| model.forward(&x, &mut Ctx::eval()))?;
    Ok(logits.tensor().to_vec::<f32>()?)
}

/// Trains a fresh model for `steps` full-batch Adam steps on 400 points;
/// returns it with its accuracy on 1000 points it never saw.
pub fn train(steps: usize, seed: u64) -> Result<(Mlp, f64)> {
    let mut rng = Rng::new(seed);
    let (points, labels) = two_moons(400, 0.1, &mut rng)?;
    let x = Var::constant(Tensor::from_slice(&points, [400, 2], &Device::Cpu)?);
    let y = Var::constant(Tensor::from_slice(&labels, [400, 1], &Device::Cpu)?);

    let store = ParamStore::new(Device::Cpu, DType::F32, rng.fork());
    let model = Mlp::new(&store.root())?;
    let mut opt = Adam::new(&store, AdamConfig::adam(0.02))?;
    for step in 0..steps {
        let loss = logistic_loss(&model.forward(&x, &mut Ctx::eval())?, &y)?;
        if step % 100 == 0 {
            println!("step {step:4}  loss {:.4}", loss.tensor().to_scalar()?);
        }
        opt.step(&loss.backward()?)?;
    }

    let (test_points, test_labels) = two_moons(1000, 0.1, &mut rng)?;
    let acc = accuracy(&model, &test_points, &test_labels)?;
    Ok((model, acc))
}

/// Paints the plane `[-1.5, 2.5] x [-1, 1.5]` by the model's answer (blue:
/// upper moon, orange: lower, a white line where it is unsure) and draws
/// `points` on top in their true colours. `width` pixels wide.
pub fn render(model: &Mlp, points: &[f32], labels: &[f32], width: u32) -> Result<image::RgbImage> {
    let (x0, x1, y0, y1) = (-1.5f32, 2.5f32, -1.0f32, 1.5f32);
    let height = (width as f32 * (y1 - y0) / (x1 - x0)).round() as u32;
    let to_plane = |px: u32, py: u32| (x0 + (px as f32 + 0.5) / width as f32 * (x1 - x0), y1 - (py as f32 + 0.5) / height as f32 * (y1 - y0));

    // One batched forward pass over every pixel centre.
    let mut grid = Vec::with_capacity((2 * width * height) as usize);
    for py in 0..height {
        for px in 0..width {
            let (x, y) = to_plane(px, py);
            grid.extend([x, y]);
        }
    }
    let logits = predict(model, &grid)?;

    let (blue, orange) = ([40.0f32, 90.0, 200.0], [230.0f32, 130.0, 30.0]);
    let mut img = image::RgbImage::from_fn(width, height, |px, py| {
        let p = 1.0 / (1.0 + (-logits[(py * width + px) as usize]).exp()); // P(upper moon)
        let tint: [f32; 3] = std::array::from_fn(|c| p * blue[c] + (1.0 - p) * orange[c]);
        // Pale background; a white line where the model is near 50/50.
        let pale = if (p - 0.5).abs() < 0.04 { 0.1 } else { 0.35 };
        image::Rgb(tint.map(|v| (255.0 - pale * (255.0 - v)).round() as u8))
    });
    for (xy, label) in points.chunks(2).zip(labels) {
        let px = ((xy[0] - x0) / (x1 - x0) * width as f32) as i64;
        let py = ((y1 - xy[1]) / (y1 - y0) * height as f32) as i64;
        let colour = if *label > 0.0 { blue } else { orange };
        for (dx, dy) in (-1..=1).flat_map(|dx| (-1..=1).map(move |dy| (dx, dy))) {
            let (qx, qy) = (px + dx, py + dy);
            if qx >= 0 && qy >= 0 && (qx as u32) < width && (qy as u32) < height {
                img.put_pixel(qx as u32, qy as u32, image::Rgb(colour.map(|v| v as u8)));
            }
        }
    }
    Ok(img)
}

fn main() -> Result<()> {
    let (model, acc) = train(500, 0)?;
    println!("accuracy on 1000 unseen points: {:.1}%", 100.0 * acc);

    let out = std::env::args().nth(1).unwrap_or_else(|| "two_moons.png".into());
    let (points, labels) = two_moons(200, 0.1, &mut Rng::new(1))?;
    render(&model, &points, &labels, 480)?.save(&out).map_err(|e| anyhow::anyhow!("writing {out}: {e}"))?;
    println!("wrote the decision boundary to {out}");
    Ok(())
}
