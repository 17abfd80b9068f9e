//! The U-Net against an independent PyTorch implementation of the same
//! spec: activations, output, loss, every parameter gradient and DDIM
//! samples must match the fixtures in `shared/fixtures/tiny` within the
//! tolerances stated in their README.

mod common;

use autograd::Var;
use ddpm::config::Preset;
use ddpm::diffusion::{sample_ddim, Schedule};
use ddpm::unet::{Activations, UNet};
use nn::{Ctx, ParamStore};
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::PathBuf;
use tensor::{DType, Device, Rng, Tensor};

/// The fixtures folder, or None (skip) without it; see `common::fixtures`.
fn fixtures() -> Option<PathBuf> {
    common::fixtures()
}

/// Every tensor of a safetensors file: floats as f32 tensors, integers as
/// plain u32 lists.
fn read_case(path: &PathBuf) -> (BTreeMap<String, Tensor>, BTreeMap<String, Vec<u32>>) {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (mut floats, mut ints) = (BTreeMap::new(), BTreeMap::new());
    for (name, view) in st.tensors() {
        match view.dtype() {
            Dtype::F32 => {
                let data: Vec<f32> = view.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
                floats.insert(name, Tensor::from_vec(data, view.shape().to_vec(), &Device::Cpu).unwrap());
            }
            Dtype::I64 => {
                let data = view.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32).collect();
                ints.insert(name, data);
            }
            other => panic!("unexpected dtype {other:?} for {name}"),
        }
    }
    (floats, ints)
}

fn rel_err(got: &Tensor, want: &Tensor) -> f64 {
    assert_eq!(got.dims(), want.dims(), "shape mismatch");
    let (g, w) = (got.to_f64_vec().unwrap(), want.to_f64_vec().unwrap());
    let diff: f64 = g.iter().zip(&w).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt();
    let norm: f64 = w.iter().map(|b| b * b).sum::<f64>().sqrt();
    diff / norm.max(1e-30)
}

fn tiny_model(dir: &PathBuf, device: &Device) -> (ParamStore, UNet) {
    let store = ParamStore::new(device.clone(), DType::F32, Rng::new(0));
    let model = UNet::new(&store.root(), &Preset::Tiny.config()).unwrap();
    let ck = nn::load_checkpoint(dir.join("weights.safetensors")).unwrap();
    ck.load_into(&store, true).unwrap();
    (store, model)
}

#[test]
fn unet_matches_pytorch_fixtures() {
    check_unet_against_fixtures(&Device::Cpu);
}

/// The same check with every tensor on a CUDA GPU (f32, no TF32): skipped,
/// saying so, without one.
#[test]
fn unet_matches_pytorch_fixtures_on_cuda() {
    if let Some(gpu) = tensor::cuda::device_for_tests() {
        check_unet_against_fixtures(&Device::Cuda(gpu));
    }
}

fn check_unet_against_fixtures(device: &Device) {
    let Some(dir) = fixtures() else { return };
    let (store, model) = tiny_model(&dir, device);
    let (case, ints) = read_case(&dir.join("case.safetensors"));
    let case: BTreeMap<String, Tensor> = case.into_iter().map(|(k, v)| (k, v.to_device(device).unwrap())).collect();
    let t = &ints["t"];

    let mut acts = Activations::default();
    let eps = model.forward_with_activations(&Var::constant(case["x"].clone()), t, &mut Ctx::eval(), Some(&mut acts)).unwrap();

    // Activations, eps and loss: relative error under 1e-4.
    let mut checks = vec![
        ("act.time_features", acts.time_features.unwrap()),
        ("act.time_emb", acts.time_emb.unwrap()),
        ("act.middle", acts.middle.unwrap()),
        ("eps", eps.clone()),
    ];
    checks.extend(acts.down.into_iter().enumerate().map(|(i, v)| (["act.down.0", "act.down.1", "act.down.2"][i], v)));
    checks.extend(acts.up.into_iter().enumerate().map(|(k, v)| (["act.up.0", "act.up.1", "act.up.2"][k], v)));
    for (name, got) in &checks {
        let err = rel_err(got.tensor(), &case[*name]);
        assert!(err < 1e-4, "{name}: relative error {err:.3e}");
    }
    let loss = eps.mse(&Var::constant(case["noise"].clone())).unwrap();
    let err = rel_err(&loss.tensor().reshape([1]).unwrap(), &case["loss"]);
    assert!(err < 1e-4, "loss: relative error {err:.3e}");

    // Every parameter gradient: relative error under 1e-3.
    let grads = loss.backward().unwrap();
    let mut checked = 0;
    for (name, param) in store.named() {
        let want = case.get(&format!("grad.{name}")).unwrap_or_else(|| panic!("fixture lacks grad.{name}"));
        let got = grads.get(&param).unwrap_or_else(|| panic!("no gradient for {name}"));
        let err = rel_err(got, want);
        assert!(err < 1e-3, "grad.{name}: relative error {err:.3e}");
        checked += 1;
    }
    assert_eq!(checked, case.keys().filter(|k| k.starts_with("grad.")).count());
}

/// `predict` runs without a tape, so on the CPU it takes the fused
/// inference path (norms, time modulation and skips folded into the
/// convolutions): the same noise prediction as PyTorch's.
#[test]
fn fused_prediction_matches_pytorch() {
    let Some(dir) = fixtures() else { return };
    let (_store, model) = tiny_model(&dir, &Device::Cpu);
    let (case, ints) = read_case(&dir.join("case.safetensors"));
    let eps = model.predict(&case["x"], &ints["t"]).unwrap();
    let err = rel_err(&eps, &case["eps"]);
    assert!(err < 1e-4, "eps: relative error {err:.3e}");
    let plain = model.forward(&Var::constant(case["x"].clone()), &ints["t"], &mut Ctx::eval()).unwrap();
    let err = rel_err(&eps, plain.tensor());
    assert!(err < 1e-5, "fused against plain path: relative error {err:.3e}");
}

#[test]
fn ddim_samples_match_pytorch() {
    let Some(dir) = fixtures() else { return };
    let (_store, model) = tiny_model(&dir, &Device::Cpu);
    let (case, _) = read_case(&dir.join("case.safetensors"));
    let mut denoise = |x: &Tensor, t: &[u32]| model.predict(x, t).map_err(|e| tensor::Error::BadArgument { op: "unet", msg: e.to_string() });
    let samples = sample_ddim(&Schedule::default(), case["ddim.noise"].clone(), 10, &mut denoise, &mut |_, _| {}).unwrap();
    let err = rel_err(&samples, &case["ddim.samples"]);
    assert!(err < 1e-4, "ddim samples: relative error {err:.3e}");
}
