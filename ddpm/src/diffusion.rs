//! Denoising diffusion: the noise schedule, the forward (noising) process
//! used in training, and the two samplers of the spec.
//!
//! Everything here is written against a `denoiser` closure (noisy images and
//! steps in, predicted noise out), so the math reads on its own, separate
//! from the network.

use tensor::{DType, Device, Result, Rng, Tensor};

/// Number of diffusion steps.
pub const T: usize = 1000;

/// The linear beta schedule and its running products, in f64.
///
/// ```
/// use ddpm::diffusion::Schedule;
/// use tensor::{DType, Device, Tensor};
///
/// let s = Schedule::default(); // 1000 steps, beta from 1e-4 to 0.02
/// assert_eq!(s.steps(), 1000);
/// assert!(s.alpha_bar(0) > 0.9998 && s.alpha_bar(999) < 1e-4); // the signal fades to noise
/// // x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) noise
/// let x0 = Tensor::ones([2, 3, 4, 4], DType::F32, &Device::Cpu)?;
/// let noise = Tensor::zeros([2, 3, 4, 4], DType::F32, &Device::Cpu)?;
/// let xt = s.add_noise(&x0, &noise, &[0, 999])?.to_vec::<f32>()?;
/// assert!((xt[0] as f64 - s.alpha_bar(0).sqrt()).abs() < 1e-6);
/// assert!((xt[48] as f64 - s.alpha_bar(999).sqrt()).abs() < 1e-6);
/// # Ok::<(), tensor::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Schedule {
    pub betas: Vec<f64>,
    /// ab_t = prod_{s <= t} (1 - beta_s)
    pub alpha_bars: Vec<f64>,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule::linear(1e-4, 0.02, T)
    }
}

impl Schedule {
    pub fn linear(beta_start: f64, beta_end: f64, steps: usize) -> Schedule {
        let betas: Vec<f64> = (0..steps)
            .map(|i| beta_start + (beta_end - beta_start) * i as f64 / (steps - 1).max(1) as f64)
            .collect();
        let mut alpha_bars = Vec::with_capacity(steps);
        let mut acc = 1.0;
        for &b in &betas {
            acc *= 1.0 - b;
            alpha_bars.push(acc);
        }
        Schedule { betas, alpha_bars }
    }

    pub fn steps(&self) -> usize {
        self.betas.len()
    }

    /// ab_t, with ab = 1 below step zero.
    pub fn alpha_bar(&self, t: isize) -> f64 {
        if t < 0 {
            1.0
        } else {
            self.alpha_bars[t as usize]
        }
    }

    /// The signal and noise scales `(sqrt(ab_t), sqrt(1 - ab_t))` of step
    /// `t` (`(1, 0)` below step zero: the clean image).
    pub fn levels(&self, t: isize) -> (f64, f64) {
        let ab = self.alpha_bar(t);
        (ab.sqrt(), (1.0 - ab).sqrt())
    }

    /// x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) noise, with one t per image.
    pub fn add_noise(&self, x0: &Tensor, noise: &Tensor, t: &[u32]) -> Result<Tensor> {
        let (a, b): (Vec<f64>, Vec<f64>) = t.iter().map(|&t| self.levels(t as isize)).unzip();
        let per_image = |v: Vec<f64>| Tensor::from_vec(v, [t.len(), 1, 1, 1], x0.device())?.to_dtype(x0.dtype());
        x0.mul(&per_image(a)?)?.add(&noise.mul(&per_image(b)?)?)
    }
}

/// Uniform steps in 0..T, one per image.
pub fn sample_steps(n: usize, steps: usize, rng: &mut Rng) -> Vec<u32> {
    (0..n).map(|_| rng.below(steps as u64) as u32).collect()
}

/// The network's view of the sampler: predicted noise for images `x` at
/// steps `t` (one per image).
pub type Denoiser<'a> = dyn FnMut(&Tensor, &[u32]) -> Result<Tensor> + 'a;

/// x0 = clip((x - sqrt(1 - ab) eps) / sqrt(ab), -1, 1)
fn predict_x0(x: &Tensor, eps: &Tensor, ab: f64) -> Result<Tensor> {
    x.sub(&eps.mul_scalar((1.0 - ab).sqrt())?)?.div_scalar(ab.sqrt())?.clamp(-1.0, 1.0)
}

/// Ancestral DDPM over every step, from the starting noise `x`.
/// `on_step(t, x)` sees the images after each step (for progress and strips).
pub fn sample_ddpm(
    schedule: &Schedule,
    x: Tensor,
    denoiser: &mut Denoiser<'_>,
    rng: &mut Rng,
    on_step: &mut dyn FnMut(usize, &Tensor),
) -> Result<Tensor> {
    let n = x.dims()[0];
    let mut x = x;
    for t in (0..schedule.steps()).rev() {
        let eps = denoiser(&x, &vec![t as u32; n])?;
        let (ab, ab_prev, beta) = (schedule.alpha_bar(t as isize), schedule.alpha_bar(t as isize - 1), schedule.betas[t]);
        let x0 = predict_x0(&x, &eps, ab)?;
        let c0 = ab_prev.sqrt() * beta / (1.0 - ab);
        let ct = (1.0 - beta).sqrt() * (1.0 - ab_prev) / (1.0 - ab);
        let mean = x0.mul_scalar(c0)?.add(&x.mul_scalar(ct)?)?;
        x = if t > 0 {
            let z = Tensor::randn(0.0, 1.0, x.shape().clone(), x.dtype(), x.device(), rng)?;
            mean.add(&z.mul_scalar(beta.sqrt())?)?
        } else {
            mean
        };
        on_step(t, &x);
    }
    Ok(x)
}

/// The DDIM steps for K sampling steps: k * (T / K) for k = K-1 down to 0.
///
/// ```
/// assert_eq!(ddpm::diffusion::ddim_steps(1000, 4), vec![750, 500, 250, 0]);
/// ```
pub fn ddim_steps(total: usize, k: usize) -> Vec<usize> {
    let stride = (total / k.max(1)).max(1);
    (0..k.min(total)).rev().map(|i| i * stride).collect()
}

/// Deterministic DDIM (eta = 0) in `k` steps.
///
/// With a denoiser that always predicts zero noise: the visited steps, and
/// the last step returns the guess of x0, clipped to `[-1, 1]`:
/// ```
/// use ddpm::diffusion::{sample_ddim, Schedule};
/// use tensor::{Device, Tensor};
///
/// let x = Tensor::from_vec(vec![0.5f32, -2.0], [1, 2, 1, 1], &Device::Cpu)?;
/// let mut zero_noise = |x: &Tensor, _t: &[u32]| x.zeros_like();
/// let mut seen = Vec::new();
/// let out = sample_ddim(&Schedule::default(), x, 10, &mut zero_noise, &mut |t, _| seen.push(t))?;
/// assert_eq!(seen, vec![900, 800, 700, 600, 500, 400, 300, 200, 100, 0]);
/// let v = out.to_vec::<f32>()?;
/// assert!(v[0] > 0.0 && v[1] < 0.0 && v.iter().all(|x| x.abs() <= 1.0));
/// # Ok::<(), tensor::Error>(())
/// ```
pub fn sample_ddim(
    schedule: &Schedule,
    x: Tensor,
    k: usize,
    denoiser: &mut Denoiser<'_>,
    on_step: &mut dyn FnMut(usize, &Tensor),
) -> Result<Tensor> {
    let n = x.dims()[0];
    let stride = (schedule.steps() / k.max(1)).max(1);
    let mut x = x;
    for t in ddim_steps(schedule.steps(), k) {
        let eps = denoiser(&x, &vec![t as u32; n])?;
        let (ab, ab_prev) = (schedule.alpha_bar(t as isize), schedule.alpha_bar(t as isize - stride as isize));
        let x0 = predict_x0(&x, &eps, ab)?;
        let eps = x.sub(&x0.mul_scalar(ab.sqrt())?)?.div_scalar((1.0 - ab).sqrt())?;
        x = x0.mul_scalar(ab_prev.sqrt())?.add(&eps.mul_scalar((1.0 - ab_prev).sqrt())?)?;
        on_step(t, &x);
    }
    Ok(x)
}

/// Standard normal starting noise for `n` images of `size` pixels.
pub fn initial_noise(n: usize, size: usize, device: &Device, rng: &mut Rng) -> Result<Tensor> {
    Tensor::randn(0.0, 1.0, [n, 3, size, size], DType::F32, device, rng)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_matches_the_spec() {
        let s = Schedule::default();
        assert_eq!(s.steps(), 1000);
        assert!((s.betas[0] - 1e-4).abs() < 1e-15);
        assert!((s.betas[999] - 0.02).abs() < 1e-15);
        let direct: f64 = s.betas[..10].iter().map(|b| 1.0 - b).product();
        assert!((s.alpha_bars[9] - direct).abs() < 1e-15);
        assert_eq!(s.alpha_bar(-1), 1.0);
    }

    #[test]
    fn ddim_steps_follow_the_integer_stride() {
        assert_eq!(ddim_steps(1000, 10), vec![900, 800, 700, 600, 500, 400, 300, 200, 100, 0]);
        assert_eq!(ddim_steps(1000, 3), vec![666, 333, 0]);
    }

    #[test]
    fn a_perfect_denoiser_recovers_the_image() {
        // With eps known exactly, DDIM lands on x0 whatever the schedule.
        let s = Schedule::default();
        let dev = Device::Cpu;
        let mut rng = Rng::new(1);
        let x0 = Tensor::rand(-0.9, 0.9, [2, 3, 4, 4], DType::F64, &dev, &mut rng).unwrap();
        let noise = Tensor::randn(0.0, 1.0, [2, 3, 4, 4], DType::F64, &dev, &mut rng).unwrap();
        let xt = s.add_noise(&x0, &noise, &[999, 999]).unwrap();
        let mut oracle = |x: &Tensor, t: &[u32]| {
            let ab = s.alpha_bars[t[0] as usize];
            x.sub(&x0.mul_scalar(ab.sqrt())?)?.div_scalar((1.0 - ab).sqrt())
        };
        let out = sample_ddim(&s, xt, 10, &mut oracle, &mut |_, _| {}).unwrap();
        let err = out.sub(&x0).unwrap().abs().unwrap().max(&[0, 1, 2, 3], false).unwrap().to_scalar().unwrap();
        assert!(err < 1e-9, "max error {err}");
    }
}
