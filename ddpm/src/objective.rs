//! What the network learns to predict, and how each training example is
//! weighted.
//!
//! Every objective mixes a clean image `x0` with standard noise `eps` as
//! `x_t = a x0 + s eps`, one noise level `(a, s)` per image, and trains the
//! network to output one of three things:
//!
//! - `eps` (the seed recipe): the noise itself, on the DDPM schedule
//!   (`a = sqrt(ab_t)`, `s = sqrt(1 - ab_t)`).
//! - `v`: the "velocity" `a eps - s x0`, on the same schedule. Its size stays
//!   about 1 at every step, so neither the nearly clean nor the nearly pure
//!   noise end dominates the loss.
//! - `flow` (flow matching, rectified flow): the straight path
//!   `x_t = (1 - t) x0 + t eps` (`a = 1 - t`, `s = t`) and its velocity
//!   `dx_t/dt = eps - x0`. Sampling integrates that velocity from `t = 1`
//!   (pure noise) to `t = 0` with a few Euler or Heun steps.
//!
//! The network always takes an integer step `k` in `0..T` for its time
//! embedding. For `eps` and `v` it is the DDPM step; for `flow` it stands
//! for `t = (k + 1) / T`, so `t` runs over `1/T ..= 1`.
//!
//! Min-SNR-gamma weighting (Hang et al., 2023) caps how much the easy,
//! nearly clean steps count: the loss of an image whose signal-to-noise
//! ratio is `snr = (a / s)^2` is weighted as if it were an `x0` loss with
//! weight `min(snr, gamma)`, converted to the objective's own units.

use crate::diffusion::{Schedule, T};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use tensor::{Result, Tensor};

/// What the network predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// The noise (the seed recipe).
    #[default]
    Eps,
    /// The velocity `a eps - s x0` on the DDPM schedule.
    V,
    /// Flow matching: the velocity `eps - x0` of `x_t = (1 - t) x0 + t eps`.
    Flow,
}

impl Objective {
    pub const ALL: [Objective; 3] = [Objective::Eps, Objective::V, Objective::Flow];

    pub fn name(self) -> &'static str {
        match self {
            Objective::Eps => "eps",
            Objective::V => "v",
            Objective::Flow => "flow",
        }
    }

    /// The noise level `(a, s)` of step `k` (see the module comment).
    pub fn levels(self, schedule: &Schedule, k: u32) -> (f64, f64) {
        match self {
            Objective::Eps | Objective::V => schedule.levels(k as isize),
            Objective::Flow => {
                let t = flow_time(k);
                (1.0 - t, t)
            }
        }
    }

    /// Signal-to-noise ratio `(a / s)^2` of step `k`.
    pub fn snr(self, schedule: &Schedule, k: u32) -> f64 {
        let (a, s) = self.levels(schedule, k);
        (a / s).powi(2)
    }

    /// The network's input and its training target for clean images `x0`
    /// [N, ...], noise of the same shape, and one step per image.
    pub fn training_pair(self, schedule: &Schedule, x0: &Tensor, noise: &Tensor, steps: &[u32]) -> Result<(Tensor, Tensor)> {
        let (a, s): (Vec<f64>, Vec<f64>) = steps.iter().map(|&k| self.levels(schedule, k)).unzip();
        let a = per_image(a, x0)?;
        let s = per_image(s, x0)?;
        let noisy = x0.mul(&a)?.add(&noise.mul(&s)?)?;
        let target = match self {
            Objective::Eps => noise.clone(),
            Objective::V => noise.mul(&a)?.sub(&x0.mul(&s)?)?,
            Objective::Flow => noise.sub(x0)?,
        };
        Ok((noisy, target))
    }

    /// The min-SNR-gamma weight of one image's mean squared error in this
    /// objective's units: `min(snr, gamma)` on an `x0` error, which is
    /// `min(snr, gamma) / snr` on an `eps` error, `min(snr, gamma) / (snr + 1)`
    /// on a `v` error and `min(snr, gamma) s^2` on a flow velocity error
    /// (the `x0` error is `s` times the velocity error there).
    pub fn min_snr_weight(self, schedule: &Schedule, k: u32, gamma: f64) -> f64 {
        let (_, s) = self.levels(schedule, k);
        let snr = self.snr(schedule, k);
        let capped = snr.min(gamma);
        match self {
            Objective::Eps => capped / snr,
            Objective::V => capped / (snr + 1.0),
            Objective::Flow => capped * s * s,
        }
    }

    /// The clean image and the noise implied by the prediction `pred` for
    /// noisy images `x` at noise level `(a, s)` (the same for every image).
    pub fn split(self, x: &Tensor, pred: &Tensor, a: f64, s: f64) -> Result<(Tensor, Tensor)> {
        match self {
            Objective::Eps => Ok((x.sub(&pred.mul_scalar(s)?)?.div_scalar(a)?, pred.clone())),
            // With a^2 + s^2 = 1: x0 = a x - s v, eps = s x + a v.
            Objective::V => Ok((x.mul_scalar(a)?.sub(&pred.mul_scalar(s)?)?, x.mul_scalar(s)?.add(&pred.mul_scalar(a)?)?)),
            // With a + s = 1: x0 = x - s v, eps = x + a v.
            Objective::Flow => Ok((x.sub(&pred.mul_scalar(s)?)?, x.add(&pred.mul_scalar(a)?)?)),
        }
    }

    /// The noise implied by `pred` at step `k`, one step per image (for the
    /// held-out loss, which compares every objective in noise units).
    pub fn implied_noise(self, schedule: &Schedule, x: &Tensor, pred: &Tensor, steps: &[u32]) -> Result<Tensor> {
        let (a, s): (Vec<f64>, Vec<f64>) = steps.iter().map(|&k| self.levels(schedule, k)).unzip();
        match self {
            Objective::Eps => Ok(pred.clone()),
            Objective::V => x.mul(&per_image(s, x)?)?.add(&pred.mul(&per_image(a, x)?)?),
            Objective::Flow => x.add(&pred.mul(&per_image(a, x)?)?),
        }
    }
}

/// Flow time of network step `k`: `t = (k + 1) / T`.
pub fn flow_time(k: u32) -> f64 {
    (k as f64 + 1.0) / T as f64
}

/// One value per image as an [N, 1, 1, 1] tensor of `like`'s dtype and device.
fn per_image(values: Vec<f64>, like: &Tensor) -> Result<Tensor> {
    let n = values.len();
    Tensor::from_vec(values, [n, 1, 1, 1], like.device())?.to_dtype(like.dtype())
}

impl fmt::Display for Objective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Objective {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Objective::ALL.into_iter().find(|o| o.name() == s).ok_or_else(|| format!("unknown objective '{s}'; choose one of eps, v, flow"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tensor::{DType, Device, Rng};

    fn random(shape: [usize; 4], seed: u64) -> Tensor {
        Tensor::randn(0.0, 1.0, shape, DType::F64, &Device::Cpu, &mut Rng::new(seed)).unwrap()
    }

    fn values(t: &Tensor) -> Vec<f64> {
        t.to_vec::<f64>().unwrap()
    }

    /// The target and input of each objective, element by element, against
    /// the closed forms written out with plain f64 arithmetic.
    #[test]
    fn training_pairs_match_their_closed_forms() {
        let schedule = Schedule::default();
        let (x0, noise) = (random([3, 2, 2, 2], 1), random([3, 2, 2, 2], 2));
        let steps = [0u32, 417, 999];
        for objective in Objective::ALL {
            let (noisy, target) = objective.training_pair(&schedule, &x0, &noise, &steps).unwrap();
            let (noisy, target, xs, es) = (values(&noisy), values(&target), values(&x0), values(&noise));
            for (i, (&x, &e)) in xs.iter().zip(&es).enumerate() {
                let k = steps[i / 8];
                let (a, s) = match objective {
                    Objective::Eps | Objective::V => {
                        let ab: f64 = schedule.betas[..=k as usize].iter().map(|b| 1.0 - b).product();
                        (ab.sqrt(), (1.0 - ab).sqrt())
                    }
                    Objective::Flow => (1.0 - (k + 1) as f64 / 1000.0, (k + 1) as f64 / 1000.0),
                };
                let want_target = match objective {
                    Objective::Eps => e,
                    Objective::V => a * e - s * x,
                    Objective::Flow => e - x,
                };
                assert!((noisy[i] - (a * x + s * e)).abs() < 1e-12, "{objective} input {i}");
                assert!((target[i] - want_target).abs() < 1e-12, "{objective} target {i}");
            }
        }
    }

    #[test]
    fn flow_matching_runs_from_data_to_noise() {
        let schedule = Schedule::default();
        assert_eq!(Objective::Flow.levels(&schedule, 999), (0.0, 1.0));
        assert_eq!(Objective::Flow.levels(&schedule, 499), (0.5, 0.5));
        assert!((flow_time(0) - 0.001).abs() < 1e-15);
    }

    /// A perfect prediction splits back into the clean image and the noise.
    #[test]
    fn split_inverts_the_training_pair() {
        let schedule = Schedule::default();
        let (x0, noise) = (random([1, 3, 2, 2], 3), random([1, 3, 2, 2], 4));
        for objective in Objective::ALL {
            for k in [10u32, 500, 990] {
                let (noisy, target) = objective.training_pair(&schedule, &x0, &noise, &[k]).unwrap();
                let (a, s) = objective.levels(&schedule, k);
                let (x0_hat, eps_hat) = objective.split(&noisy, &target, a, s).unwrap();
                let implied = objective.implied_noise(&schedule, &noisy, &target, &[k]).unwrap();
                for (got, want) in [(&x0_hat, &x0), (&eps_hat, &noise), (&implied, &noise)] {
                    let err = values(&got.sub(want).unwrap()).iter().fold(0.0f64, |m, v| m.max(v.abs()));
                    assert!(err < 1e-9, "{objective} at step {k}: error {err}");
                }
            }
        }
    }

    /// Min-SNR weights against their closed forms, and the same weighted x0
    /// error whatever the objective.
    #[test]
    fn min_snr_weights_match_their_closed_forms() {
        let schedule = Schedule::default();
        let gamma = 5.0;
        for k in [0u32, 100, 300, 700, 999] {
            let ab = schedule.alpha_bars[k as usize];
            let snr = ab / (1.0 - ab);
            let eps_w = Objective::Eps.min_snr_weight(&schedule, k, gamma);
            let v_w = Objective::V.min_snr_weight(&schedule, k, gamma);
            assert!((eps_w - snr.min(5.0) / snr).abs() < 1e-12);
            assert!((v_w - snr.min(5.0) / (snr + 1.0)).abs() < 1e-12);
            // An x0 error d is an eps error d * a/s and a v error d / s (a^2 + s^2 = 1).
            let (a, s) = ((ab).sqrt(), (1.0 - ab).sqrt());
            let x0_weighted = snr.min(gamma);
            assert!((eps_w * (a / s).powi(2) - x0_weighted).abs() < 1e-9 * x0_weighted.max(1.0));
            assert!((v_w / (s * s) - x0_weighted).abs() < 1e-9 * x0_weighted.max(1.0));

            let t = (k + 1) as f64 / 1000.0;
            let flow_snr = ((1.0 - t) / t).powi(2);
            let flow_w = Objective::Flow.min_snr_weight(&schedule, k, gamma);
            assert!((flow_w - flow_snr.min(gamma) * t * t).abs() < 1e-12);
        }
        // Below gamma an eps loss is unweighted.
        assert!((Objective::Eps.min_snr_weight(&schedule, 999, gamma) - 1.0).abs() < 1e-12);
    }
}
