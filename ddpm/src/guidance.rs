//! Class conditioning with classifier-free guidance (Ho & Salimans, 2022).
//!
//! A class-conditional U-Net learns a table of class embeddings
//! (`class_emb.weight`, one row per class plus one for the *null* class)
//! and adds the row of each image's class to its time embedding. During
//! training a fraction of the labels (10 to 20%) is replaced by the null
//! class, so the same network also learns the unconditional model. At
//! sampling time the two predictions are mixed:
//!
//! `guided = uncond + w (cond - uncond)`
//!
//! `w = 1` is the conditional model as trained, `w = 0` the unconditional
//! one, and `w > 1` exaggerates what makes the class that class (sharper,
//! less varied samples). Both ends are computed with one network call and no
//! arithmetic, so they are exactly those models.

use crate::unet::UNet;
use crate::train::to_tensor_error;
use anyhow::{bail, Result};
use tensor::{Rng, Tensor};

/// The classes to sample.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Labels {
    /// The unconditional model (the null class of a conditional one).
    #[default]
    Unconditional,
    /// One class index per image.
    Classes(Vec<u32>),
}

impl Labels {
    /// `n` images all of class `class`.
    pub fn all(class: u32, n: usize) -> Labels {
        Labels::Classes(vec![class; n])
    }

    /// `n` classes drawn uniformly from `0..num_classes`.
    pub fn random(n: usize, num_classes: usize, rng: &mut Rng) -> Labels {
        Labels::Classes((0..n).map(|_| rng.below(num_classes as u64) as u32).collect())
    }

    /// The labels `sample --class` asks for, for `n` images in a grid of
    /// `ceil(sqrt(n))` columns of a model with classes `names`: `None` is
    /// unconditional; a class folder name (`5`) or label index (`#4`) gives
    /// every image that class; `random` one drawn class per image; `rows`
    /// one class per grid row, spread over all the classes.
    pub fn from_flag(class: Option<&str>, names: &[String], n: usize, rng: &mut Rng) -> Result<Labels> {
        let Some(class) = class else { return Ok(Labels::Unconditional) };
        if names.is_empty() {
            bail!("--class {class}: this checkpoint is unconditional (trained without classes)");
        }
        let cols = (n as f64).sqrt().ceil() as usize;
        Ok(match class {
            "random" => Labels::random(n, names.len(), rng),
            "rows" => {
                let rows = n.div_ceil(cols.max(1));
                Labels::Classes((0..n).map(|i| ((i / cols) * names.len() / rows.max(1)) as u32).collect())
            }
            _ => {
                let index = match class.strip_prefix('#') {
                    Some(i) => i.parse::<usize>().ok().filter(|&i| i < names.len()),
                    None => names.iter().position(|c| c == class),
                };
                let Some(index) = index else {
                    let shown = if names.len() > 12 { format!("{}, ... {}", names[..10].join(", "), names[names.len() - 1]) } else { names.join(", ") };
                    bail!("--class {class}: not a class of this checkpoint; its {} classes are {shown} (or #0..#{}, random, rows)", names.len(), names.len() - 1)
                };
                Labels::all(index as u32, n)
            }
        })
    }

    /// Refuses labels that do not fit a batch of `n` images or a model with
    /// `num_classes` classes (0 for an unconditional model).
    pub fn check(&self, n: usize, num_classes: usize) -> Result<()> {
        let Labels::Classes(labels) = self else { return Ok(()) };
        if num_classes == 0 {
            bail!("this checkpoint is unconditional (trained without classes): it cannot sample a --class");
        }
        if labels.len() != n {
            bail!("{} class labels for {n} images", labels.len());
        }
        if let Some(bad) = labels.iter().find(|&&l| l as usize >= num_classes) {
            bail!("class {bad} is out of range: this model knows classes 0..{}", num_classes - 1);
        }
        Ok(())
    }
}

/// Replaces each label by the null class `num_classes` with probability
/// `p_drop` (one draw per label from `rng`, in order).
pub fn drop_labels(labels: &[u32], num_classes: usize, p_drop: f64, rng: &mut Rng) -> Vec<u32> {
    labels.iter().map(|&l| if rng.next_f64() < p_drop { num_classes as u32 } else { l }).collect()
}

/// The network's output for `x` at steps `t`, guided towards `labels` with
/// weight `w` (see the module comment).
pub fn guided_prediction(unet: &UNet, x: &Tensor, t: &[u32], labels: &Labels, w: f64) -> tensor::Result<Tensor> {
    let predict = |labels: Option<&[u32]>| unet.predict_with_labels(x, t, labels).map_err(to_tensor_error);
    match labels {
        Labels::Unconditional => predict(None),
        Labels::Classes(l) if w == 1.0 => predict(Some(l)),
        Labels::Classes(_) if w == 0.0 => predict(None),
        Labels::Classes(l) => {
            let cond = predict(Some(l))?;
            let uncond = predict(None)?;
            uncond.add(&cond.sub(&uncond)?.mul_scalar(w)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Preset;
    use crate::model::Model;
    use tensor::{DType, Device};

    fn conditional_model() -> Model {
        let mut config = Preset::Tiny.config();
        config.num_classes = 3;
        config.dropout = 0.0;
        let model = Model::new(&config, &Device::Cpu, 11).unwrap();
        // One row per class plus the null row; drawn N(0, 1), so classes differ.
        let table = model.store.get("class_emb.weight").unwrap();
        assert_eq!(table.dims(), [4, 128]);
        model
    }

    fn images() -> Tensor {
        Tensor::randn(0.0, 1.0, [2, 3, 32, 32], DType::F32, &Device::Cpu, &mut Rng::new(3)).unwrap()
    }

    fn same(a: &Tensor, b: &Tensor) -> bool {
        a.to_vec::<f32>().unwrap() == b.to_vec::<f32>().unwrap()
    }

    #[test]
    fn weight_one_is_exactly_the_conditional_model_and_zero_the_unconditional() {
        let model = conditional_model();
        let (x, t) = (images(), [10u32, 900]);
        let labels = Labels::Classes(vec![0, 2]);
        let cond = model.unet.predict_with_labels(&x, &t, Some(&[0, 2])).unwrap();
        let uncond = model.unet.predict_with_labels(&x, &t, None).unwrap();
        assert!(!same(&cond, &uncond), "the classes must change the prediction");
        assert!(same(&guided_prediction(&model.unet, &x, &t, &labels, 1.0).unwrap(), &cond));
        assert!(same(&guided_prediction(&model.unet, &x, &t, &labels, 0.0).unwrap(), &uncond));
        assert!(same(&guided_prediction(&model.unet, &x, &t, &Labels::Unconditional, 3.0).unwrap(), &uncond));
        // The null class is the unconditional model, and so is the plain forward pass.
        let null = model.unet.predict_with_labels(&x, &t, Some(&[3, 3])).unwrap();
        assert!(same(&null, &uncond));
        assert!(same(&model.unet.predict(&x, &t).unwrap(), &uncond));
        // Other weights extrapolate: uncond + w (cond - uncond).
        let guided = guided_prediction(&model.unet, &x, &t, &labels, 3.0).unwrap().to_vec::<f32>().unwrap();
        let (c, u) = (cond.to_vec::<f32>().unwrap(), uncond.to_vec::<f32>().unwrap());
        for i in 0..guided.len() {
            assert!((guided[i] - (u[i] + 3.0 * (c[i] - u[i]))).abs() < 1e-5);
        }
    }

    #[test]
    fn sampling_the_null_class_is_exactly_unconditional_sampling() {
        use crate::sampler::{generate, SampleSpec, Sampler};
        let model = conditional_model();
        let spec = |labels| SampleSpec { sampler: Sampler::DpmSolver, steps: 3, labels, guidance: 1.0 };
        let noise = images();
        let null = generate(&model, noise.clone(), &spec(Labels::all(3, 2)), &mut Rng::new(0), &mut |_, _| {});
        // The null class is not a class a user can ask for...
        assert!(null.unwrap_err().to_string().contains("out of range"));
        // ...but unconditional sampling runs the null class through the network.
        let uncond = generate(&model, noise.clone(), &spec(Labels::Unconditional), &mut Rng::new(0), &mut |_, _| {}).unwrap();
        let mut by_hand = |x: &Tensor, t: &[u32]| {
            let pred = model.unet.predict_with_labels(x, t, Some(&[3, 3])).map_err(to_tensor_error)?;
            let (a, s) = model.objective.levels(&crate::diffusion::Schedule::default(), t[0]);
            Ok(model.objective.split(x, &pred, a, s)?.0)
        };
        let want = crate::sampler::sample_dpm_solver(&crate::diffusion::Schedule::default(), noise, 3, &mut by_hand, &mut |_, _| {}).unwrap();
        assert!(same(&uncond, &want));
    }

    #[test]
    fn class_flags_name_folders_indices_rows_or_random() {
        let names: Vec<String> = ["1", "2", "10", "11"].iter().map(|s| s.to_string()).collect();
        let rng = &mut Rng::new(0);
        assert_eq!(Labels::from_flag(None, &names, 4, rng).unwrap(), Labels::Unconditional);
        assert_eq!(Labels::from_flag(Some("10"), &names, 2, rng).unwrap(), Labels::Classes(vec![2, 2]));
        assert_eq!(Labels::from_flag(Some("#3"), &names, 1, rng).unwrap(), Labels::Classes(vec![3]));
        assert_eq!(Labels::from_flag(Some("rows"), &names, 4, rng).unwrap(), Labels::Classes(vec![0, 0, 2, 2]));
        let Labels::Classes(random) = Labels::from_flag(Some("random"), &names, 50, rng).unwrap() else { panic!() };
        assert!(random.iter().all(|&l| l < 4) && random.iter().any(|&l| l != random[0]));
        let err = Labels::from_flag(Some("7"), &names, 1, rng).unwrap_err().to_string();
        assert!(err.contains("--class 7") && err.contains("1, 2, 10, 11"), "{err}");
        assert!(Labels::from_flag(Some("#4"), &names, 1, rng).is_err());
        assert!(Labels::from_flag(Some("1"), &[], 1, rng).unwrap_err().to_string().contains("unconditional"));
    }

    #[test]
    fn bad_labels_are_clear_errors() {
        assert!(Labels::all(0, 2).check(2, 0).unwrap_err().to_string().contains("unconditional"));
        assert!(Labels::all(5, 2).check(2, 5).unwrap_err().to_string().contains("class 5 is out of range"));
        assert!(Labels::all(1, 3).check(2, 5).is_err());
        assert!(Labels::Unconditional.check(2, 0).is_ok());
    }

    #[test]
    fn dropping_labels_uses_the_null_class_at_about_the_asked_rate() {
        let labels: Vec<u32> = (0..10_000).map(|i| i % 7).collect();
        let dropped = drop_labels(&labels, 7, 0.15, &mut Rng::new(1));
        let nulls = dropped.iter().filter(|&&l| l == 7).count();
        assert!((1300..1700).contains(&nulls), "{nulls}");
        assert!(dropped.iter().zip(&labels).all(|(d, l)| d == l || *d == 7));
        assert_eq!(drop_labels(&labels, 7, 0.0, &mut Rng::new(1)), labels);
    }
}
