//! Few-step samplers, and one entry point that samples any checkpoint with
//! the sampler its objective allows.
//!
//! - DPM-Solver++(2M) (Lu et al., 2022) for `eps` and `v` models: the
//!   probability-flow ODE solved in the log signal-to-noise ratio
//!   `lambda = log(a / s)`, from the network's clean-image predictions, with a
//!   second-order correction from the previous prediction. Its first-order
//!   step is exactly DDIM; 10 to 25 steps give what DDIM gives in 50 to 100.
//! - Euler and Heun for `flow` models: `dx/dt = v(x, t)` integrated from
//!   `t = 1` (noise) down to `t = 0` (images). Heun averages the velocity at
//!   both ends of each step (two network calls per step, the last step only
//!   one).
//!
//! Like `diffusion.rs`, the solvers see the network only as a closure.

use crate::diffusion::{ddim_steps, sample_ddim, sample_ddpm, Schedule, T};
use crate::guidance::{guided_prediction, Labels};
use crate::model::Model;
use crate::objective::Objective;
use anyhow::{bail, Result};
use tensor::{Rng, Tensor};

/// The network's clean-image prediction for images `x` at steps `t`.
pub type CleanPredictor<'a> = dyn FnMut(&Tensor, &[u32]) -> tensor::Result<Tensor> + 'a;
/// The flow velocity for images `x` at steps `t` (`t = (k + 1) / T`).
pub type Velocity<'a> = dyn FnMut(&Tensor, &[u32]) -> tensor::Result<Tensor> + 'a;

/// Every sampler petal has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sampler {
    /// Ancestral DDPM over all 1000 steps (eps and v models).
    Ddpm,
    /// Deterministic DDIM (eps and v models).
    Ddim,
    /// DPM-Solver++(2M) (eps and v models).
    #[value(name = "dpm++")]
    DpmSolver,
    /// Euler steps of the flow ODE (flow models).
    Euler,
    /// Heun steps of the flow ODE (flow models).
    Heun,
}

impl Sampler {
    /// The name `--sampler` takes.
    pub fn name(self) -> &'static str {
        match self {
            Sampler::Ddpm => "ddpm",
            Sampler::Ddim => "ddim",
            Sampler::DpmSolver => "dpm++",
            Sampler::Euler => "euler",
            Sampler::Heun => "heun",
        }
    }

    /// The sampler used when none is asked for: the seed's DDIM for `eps`
    /// and `v` models, Heun for flow models.
    pub fn default_for(objective: Objective) -> Sampler {
        match objective {
            Objective::Eps | Objective::V => Sampler::Ddim,
            Objective::Flow => Sampler::Heun,
        }
    }

    /// Whether this sampler can sample a model trained with `objective`.
    pub fn supports(self, objective: Objective) -> bool {
        matches!(
            (self, objective),
            (Sampler::Ddpm | Sampler::Ddim | Sampler::DpmSolver, Objective::Eps | Objective::V) | (Sampler::Euler | Sampler::Heun, Objective::Flow)
        )
    }

    /// The steps this sampler takes when asked for `steps` (the calls of
    /// its `on_step`). Heun calls the network twice in every step but the last.
    pub fn step_count(self, total: usize, steps: usize) -> usize {
        match self {
            Sampler::Ddpm => total,
            Sampler::Ddim | Sampler::DpmSolver => ddim_steps(total, steps).len(),
            Sampler::Euler | Sampler::Heun => flow_grid(total, steps).len() - 1,
        }
    }
}

impl std::fmt::Display for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Sampler::Ddpm => "DDPM",
            Sampler::Ddim => "DDIM",
            Sampler::DpmSolver => "DPM-Solver++(2M)",
            Sampler::Euler => "Euler",
            Sampler::Heun => "Heun",
        })
    }
}

/// One step of first-order DPM-Solver++ from noise level `(a, s)` to
/// `(a_next, s_next)`, given the clean-image prediction `d`:
/// `x_next = (s_next / s) x - a_next (exp(-h) - 1) d`, `h = lambda_next - lambda`.
/// (Equal to DDIM; at `s_next = 0` it lands on `d`.)
pub fn dpm_first_order(x: &Tensor, d: &Tensor, (a, s): (f64, f64), (a_next, s_next): (f64, f64)) -> tensor::Result<Tensor> {
    if s_next == 0.0 {
        return Ok(d.clone());
    }
    let h = (a_next / s_next).ln() - (a / s).ln();
    x.mul_scalar(s_next / s)?.sub(&d.mul_scalar(a_next * ((-h).exp() - 1.0))?)
}

/// The second-order combination of DPM-Solver++(2M): with `r = h_prev / h`,
/// `D = (1 + 1/(2r)) d - 1/(2r) d_prev`, the prediction extrapolated to the
/// middle of the step.
pub fn dpm_2m_prediction(d: &Tensor, d_prev: &Tensor, h: f64, h_prev: f64) -> tensor::Result<Tensor> {
    let r = h_prev / h;
    d.mul_scalar(1.0 + 0.5 / r)?.sub(&d_prev.mul_scalar(0.5 / r)?)
}

/// DPM-Solver++(2M) over the DDIM steps of `k` (e.g. 900, 800, ..., 0 for
/// k = 10), ending at the clean image. The first and last steps are first
/// order, as in the paper's multistep algorithm.
pub fn sample_dpm_solver(
    schedule: &Schedule,
    x: Tensor,
    k: usize,
    predict_x0: &mut CleanPredictor<'_>,
    on_step: &mut dyn FnMut(usize, &Tensor),
) -> tensor::Result<Tensor> {
    let n = x.dims()[0];
    let steps = ddim_steps(schedule.steps(), k);
    let lambda = |(a, s): (f64, f64)| (a / s).ln();
    let mut x = x;
    let mut previous: Option<(Tensor, f64)> = None;
    for (i, &t) in steps.iter().enumerate() {
        let next = steps.get(i + 1).map_or(-1, |&t| t as isize);
        let (cur, nxt) = (schedule.levels(t as isize), schedule.levels(next));
        let d = predict_x0(&x, &vec![t as u32; n])?.clamp(-1.0, 1.0)?;
        let last = nxt.1 == 0.0;
        let h = if last { f64::INFINITY } else { lambda(nxt) - lambda(cur) };
        x = match (&previous, last) {
            (Some((d_prev, h_prev)), false) => dpm_first_order(&x, &dpm_2m_prediction(&d, d_prev, h, *h_prev)?, cur, nxt)?,
            _ => dpm_first_order(&x, &d, cur, nxt)?,
        };
        previous = Some((d, h));
        on_step(t, &x);
    }
    Ok(x)
}

/// The flow-time grid of a `k`-step flow sampler, as multiples `j` of `1/T`
/// (`t = j / T`), from `T` (noise) down to 0: `round(T i / k)` for
/// `i = k, ..., 0`, without repeats.
pub fn flow_grid(total: usize, k: usize) -> Vec<usize> {
    let k = k.clamp(1, total);
    let mut grid: Vec<usize> = (0..=k).rev().map(|i| ((total * i) as f64 / k as f64).round() as usize).collect();
    grid.dedup();
    grid
}

/// One Euler step of `dx/dt = v` from `t` to `t_next`: `x + (t_next - t) v`.
pub fn euler_step(x: &Tensor, v: &Tensor, t: f64, t_next: f64) -> tensor::Result<Tensor> {
    x.add(&v.mul_scalar(t_next - t)?)
}

/// Flow sampling from `t = 1` to `t = 0` on [`flow_grid`]; with `heun`, each
/// step but the last (which would ask for the velocity at `t = 0`, outside
/// the network's range) averages the velocities at both ends.
pub fn sample_flow(x: Tensor, k: usize, heun: bool, velocity: &mut Velocity<'_>, on_step: &mut dyn FnMut(usize, &Tensor)) -> tensor::Result<Tensor> {
    let n = x.dims()[0];
    let grid = flow_grid(T, k);
    let step_of = |j: usize| vec![(j - 1) as u32; n];
    let mut x = x;
    for pair in grid.windows(2) {
        let (j, j_next) = (pair[0], pair[1]);
        let (t, t_next) = (j as f64 / T as f64, j_next as f64 / T as f64);
        let v = velocity(&x, &step_of(j))?;
        let euler = euler_step(&x, &v, t, t_next)?;
        x = if heun && j_next > 0 {
            let v_next = velocity(&euler, &step_of(j_next))?;
            euler_step(&x, &v.add(&v_next)?.mul_scalar(0.5)?, t, t_next)?
        } else {
            euler
        };
        on_step(j_next, &x);
    }
    Ok(x)
}

/// How to sample: which sampler, how many steps, which classes, how much
/// guidance.
#[derive(Debug, Clone)]
pub struct SampleSpec {
    pub sampler: Sampler,
    /// Sampling steps (DDPM always runs all of them).
    pub steps: usize,
    pub labels: Labels,
    /// Classifier-free guidance weight: 1 is the conditional model as
    /// trained, 0 the unconditional one, above 1 pushes towards the class.
    pub guidance: f64,
}

/// Samples `model` from the starting noise `x` as `spec` says, whatever the
/// model's objective and conditioning. `rng` feeds the DDPM sampler's noise.
pub fn generate(model: &Model, x: Tensor, spec: &SampleSpec, rng: &mut Rng, on_step: &mut dyn FnMut(usize, &Tensor)) -> Result<Tensor> {
    let objective = model.objective;
    if !spec.sampler.supports(objective) {
        bail!(
            "--sampler {} cannot sample a model trained with the {objective} objective; use {}",
            spec.sampler.name(),
            match objective {
                Objective::Flow => "euler or heun",
                _ => "ddpm, ddim or dpm++",
            }
        );
    }
    let schedule = Schedule::default();
    let n = x.dims()[0];
    spec.labels.check(n, model.unet.num_classes())?;
    let mut predict = |x: &Tensor, t: &[u32]| guided_prediction(&model.unet, x, t, &spec.labels, spec.guidance);
    // eps and v models: the DDPM/DDIM samplers want the noise, DPM-Solver++ the clean image.
    let mut as_noise = |x: &Tensor, t: &[u32]| {
        let pred = predict(x, t)?;
        let (a, s) = objective.levels(&schedule, t[0]);
        Ok(objective.split(x, &pred, a, s)?.1)
    };
    let out = match spec.sampler {
        Sampler::Ddpm => sample_ddpm(&schedule, x, &mut as_noise, rng, on_step)?,
        Sampler::Ddim => sample_ddim(&schedule, x, spec.steps, &mut as_noise, on_step)?,
        Sampler::DpmSolver => {
            let mut as_clean = |x: &Tensor, t: &[u32]| {
                let pred = predict(x, t)?;
                let (a, s) = objective.levels(&schedule, t[0]);
                Ok(objective.split(x, &pred, a, s)?.0)
            };
            sample_dpm_solver(&schedule, x, spec.steps, &mut as_clean, on_step)?
        }
        Sampler::Euler | Sampler::Heun => sample_flow(x, spec.steps, spec.sampler == Sampler::Heun, &mut predict, on_step)?.clamp(-1.0, 1.0)?,
    };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tensor::{DType, Device};

    fn scalar(v: f64) -> Tensor {
        Tensor::from_vec(vec![v], [1, 1, 1, 1], &Device::Cpu).unwrap()
    }

    fn value(t: &Tensor) -> f64 {
        t.to_vec::<f64>().unwrap()[0]
    }

    fn max_abs(t: &Tensor) -> f64 {
        t.to_vec::<f64>().unwrap().iter().fold(0.0f64, |m, v| m.max(v.abs()))
    }

    /// The first-order step is DDIM's update written in (a, s):
    /// `a_next x0 + s_next (x - a x0) / s`.
    #[test]
    fn the_first_order_step_is_ddim() {
        let (x, d) = (0.7, -0.3);
        let ((a, s), (an, sn)) = ((0.6f64, 0.8f64), (0.8f64, 0.6f64));
        let got = value(&dpm_first_order(&scalar(x), &scalar(d), (a, s), (an, sn)).unwrap());
        let ddim = an * d + sn * (x - a * d) / s;
        assert!((got - ddim).abs() < 1e-12, "{got} vs {ddim}");
        assert_eq!(value(&dpm_first_order(&scalar(x), &scalar(d), (a, s), (1.0, 0.0)).unwrap()), d);
    }

    #[test]
    fn the_second_order_prediction_matches_its_closed_form() {
        let (d, d_prev, h, h_prev) = (0.4, -0.2, 0.5, 0.25);
        let r = h_prev / h;
        let want = (1.0 + 1.0 / (2.0 * r)) * d - d_prev / (2.0 * r);
        let got = value(&dpm_2m_prediction(&scalar(d), &scalar(d_prev), h, h_prev).unwrap());
        assert!((got - want).abs() < 1e-12);
        // Equal predictions need no correction.
        assert!((value(&dpm_2m_prediction(&scalar(d), &scalar(d), h, h_prev).unwrap()) - d).abs() < 1e-12);
    }

    /// A known clean image is a fixed point of the solver: it lands exactly
    /// on it, whatever the number of steps.
    #[test]
    fn dpm_solver_with_a_perfect_denoiser_recovers_the_image() {
        let s = Schedule::default();
        let mut rng = Rng::new(5);
        let x0 = Tensor::rand(-0.9, 0.9, [2, 3, 4, 4], DType::F64, &Device::Cpu, &mut rng).unwrap();
        let xt = Tensor::randn(0.0, 1.0, [2, 3, 4, 4], DType::F64, &Device::Cpu, &mut rng).unwrap();
        for k in [1, 4, 20] {
            let mut calls = 0;
            let mut oracle = |_: &Tensor, _: &[u32]| {
                calls += 1;
                Ok(x0.clone())
            };
            let out = sample_dpm_solver(&s, xt.clone(), k, &mut oracle, &mut |_, _| {}).unwrap();
            assert!(max_abs(&out.sub(&x0).unwrap()) < 1e-9);
            assert_eq!(calls, k);
        }
    }

    /// `generate` drives a flow model with the flow samplers only, calling
    /// the network once per Euler step and twice per Heun step but the last.
    #[test]
    fn generate_picks_the_solver_of_the_objective() {
        let mut config = crate::config::Preset::Tiny.config();
        config.dropout = 0.0;
        let mut model = Model::new(&config, &Device::Cpu, 1).unwrap();
        model.objective = Objective::Flow;
        let noise = Tensor::randn(0.0, 1.0, [1, 3, 32, 32], DType::F32, &Device::Cpu, &mut Rng::new(2)).unwrap();
        let spec = |sampler| SampleSpec { sampler, steps: 3, labels: Labels::Unconditional, guidance: 1.0 };
        for sampler in [Sampler::Euler, Sampler::Heun] {
            let mut steps = Vec::new();
            let out = generate(&model, noise.clone(), &spec(sampler), &mut Rng::new(0), &mut |t, _| steps.push(t)).unwrap();
            assert_eq!(steps, vec![667, 333, 0]);
            assert_eq!(out.dims(), [1, 3, 32, 32]);
            assert!(out.to_vec::<f32>().unwrap().iter().all(|v| v.abs() <= 1.0));
        }
        let err = generate(&model, noise, &spec(Sampler::Ddim), &mut Rng::new(0), &mut |_, _| {}).unwrap_err().to_string();
        assert!(err.contains("--sampler ddim cannot sample") && err.contains("euler or heun"), "{err}");
        assert_eq!(Sampler::default_for(Objective::Flow), Sampler::Heun);
        assert_eq!(Sampler::default_for(Objective::V), Sampler::Ddim);
    }

    #[test]
    fn flow_grids_run_from_noise_to_data() {
        assert_eq!(flow_grid(1000, 4), vec![1000, 750, 500, 250, 0]);
        assert_eq!(flow_grid(1000, 3), vec![1000, 667, 333, 0]);
        assert_eq!(flow_grid(10, 50), (0..=10).rev().collect::<Vec<_>>());
        assert_eq!(Sampler::Heun.step_count(1000, 4), 4);
        assert_eq!(Sampler::Ddpm.step_count(1000, 4), 1000);
    }

    #[test]
    fn euler_and_heun_steps_match_their_closed_forms() {
        // dx/dt = x from t = 1 to t = 0.5: Euler x(1 - 0.5); Heun averages x and the Euler point.
        let got = value(&euler_step(&scalar(2.0), &scalar(2.0), 1.0, 0.5).unwrap());
        assert_eq!(got, 1.0);
        let mut velocity = |x: &Tensor, _: &[u32]| Ok(x.clone());
        let heun = value(&sample_flow(scalar(2.0), 2, true, &mut velocity, &mut |_, _| {}).unwrap());
        // Step 1 (Heun, t 1 -> 0.5): 2 - 0.5 (2 + 1)/2 = 1.25; step 2 (Euler, t 0.5 -> 0): 1.25 - 0.5 * 1.25.
        assert!((heun - 0.625).abs() < 1e-12, "{heun}");
    }

    /// Data N(mu, sd^2) per pixel, noise N(0, 1): the exact marginal velocity
    /// `E[eps - x0 | x_t]` is linear in `x_t`, and Euler steps along it carry
    /// standard noise to the data distribution.
    #[test]
    fn flow_euler_with_the_exact_velocity_recovers_a_gaussian() {
        let (mu, sd) = (0.5f64, 0.3f64);
        let mut velocity = |x: &Tensor, k: &[u32]| {
            let t = crate::objective::flow_time(k[0]);
            let mean = (1.0 - t) * mu;
            let var = (1.0 - t).powi(2) * sd * sd + t * t;
            // E[eps | x] = t (x - mean) / var; E[x0 | x] = mu + (1 - t) sd^2 (x - mean) / var.
            x.add_scalar(-mean)?.mul_scalar((t - (1.0 - t) * sd * sd) / var)?.add_scalar(-mu)
        };
        let noise = Tensor::randn(0.0, 1.0, [4000, 1, 2, 2], DType::F64, &Device::Cpu, &mut Rng::new(9)).unwrap();
        let out = sample_flow(noise, 200, false, &mut velocity, &mut |_, _| {}).unwrap().to_vec::<f64>().unwrap();
        let n = out.len() as f64;
        let mean = out.iter().sum::<f64>() / n;
        let std = (out.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!((mean - mu).abs() < 0.02, "mean {mean}");
        assert!((std - sd).abs() < 0.02, "std {std}");
    }
}
