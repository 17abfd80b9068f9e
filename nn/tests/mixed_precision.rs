//! Mixed precision on the CPU: `Precision`, the dynamic `LossScaler`
//! (growth, backoff, skipped steps, checkpoint metadata), and the layers'
//! cast of their f32 parameters to the input's dtype.
//!
//! The CPU backend has no f16/bf16 kernels, so the layer tests use an f64
//! input against f32 parameters: the same code path (a differentiable cast
//! of the parameters, gradients back in f32) as f16 on a GPU.

use autograd::Var;
use nn::*;
use tensor::{DType, Device, Rng, Tensor};

fn t32(v: &[f32]) -> Tensor {
    Tensor::from_vec(v.to_vec(), v.len(), &Device::Cpu).unwrap()
}

/// A store with one f32 parameter `w` = [1, 2, 3, 4].
fn store() -> (ParamStore, Var) {
    let s = ParamStore::new(Device::Cpu, DType::F32, Rng::new(0));
    let w = s.root().param("w", [4], Init::Const(0.0)).unwrap();
    w.tensor().assign(&t32(&[1.0, 2.0, 3.0, 4.0])).unwrap();
    (s, w)
}

/// Gradients of `sum(c * w)` under the scaler: c * scale.
fn scaled_grads(scaler: &LossScaler, w: &Var, c: &[f32]) -> autograd::Grads {
    let loss = w.mul(&Var::constant(t32(c))).unwrap().sum_all().unwrap();
    scaler.scale(&loss).unwrap().backward().unwrap()
}

#[test]
fn precision_parses_and_prints() {
    for (s, p) in [("f32", Precision::F32), ("bf16", Precision::Bf16), ("f16", Precision::F16)] {
        assert_eq!(s.parse::<Precision>().unwrap(), p);
        assert_eq!(p.to_string(), s);
    }
    assert_eq!(Precision::default(), Precision::F32);
    assert_eq!(Precision::Bf16.dtype(), DType::BF16);
    assert_eq!(Precision::F16.dtype(), DType::F16);
    assert!(Precision::F16.needs_loss_scaling() && !Precision::Bf16.needs_loss_scaling() && !Precision::F32.needs_loss_scaling());
    let err = "fp8".parse::<Precision>().unwrap_err();
    assert!(err.contains("f32, bf16, f16"), "{err}");
}

#[test]
fn mixed_precision_on_the_cpu_is_a_clear_error() {
    Precision::F32.check_device(&Device::Cpu).unwrap();
    for p in [Precision::Bf16, Precision::F16] {
        let msg = p.check_device(&Device::Cpu).unwrap_err().to_string();
        assert!(msg.contains("mixed precision needs a CUDA device; the CPU backend computes in f32/f64"), "{msg}");
    }
}

#[test]
fn scaler_starts_at_2_pow_16_and_scales_the_loss() {
    let scaler = LossScaler::new();
    assert_eq!(scaler.get_scale(), 65536.0);
    assert_eq!(scaler.growth_tracker(), 0);
    let (_, w) = store();
    let loss = w.sum_all().unwrap();
    assert_eq!(scaler.scale(&loss).unwrap().tensor().to_scalar().unwrap(), 10.0 * 65536.0);
}

#[test]
fn unscale_divides_in_place_and_reports_finite() {
    let (s, w) = store();
    let scaler = LossScaler::new();
    let c = [0.5f32, -1.0, 1e-6, 3.0];
    let mut grads = scaled_grads(&scaler, &w, &c);
    assert_eq!(grads.get(&w).unwrap().to_vec::<f32>().unwrap()[0], 0.5 * 65536.0);
    assert!(scaler.unscale_and_check(&s, &mut grads).unwrap());
    // The scale is a power of two: unscaling is exact.
    assert_eq!(grads.get(&w).unwrap().to_vec::<f32>().unwrap(), c.to_vec());
}

#[test]
fn inf_or_nan_gradients_are_found() {
    let (s, w) = store();
    let scaler = LossScaler::new();
    for bad in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
        let mut grads = scaled_grads(&scaler, &w, &[1.0, 2.0, 3.0, 4.0]);
        // Inject an overflow, as an f16 product beyond 65504 would give.
        grads.get(&w).unwrap().assign(&t32(&[1.0, bad, 3.0, 4.0])).unwrap();
        assert!(!scaler.unscale_and_check(&s, &mut grads).unwrap(), "{bad} not found");
    }
    // Finite but huge values whose f32 sum overflows are still finite.
    let mut grads = scaled_grads(&scaler, &w, &[1.0, 2.0, 3.0, 4.0]);
    grads.get(&w).unwrap().assign(&t32(&[f32::MAX, f32::MAX, f32::MAX, f32::MAX])).unwrap();
    let scaler_one = LossScaler::with_config(LossScalerConfig { init_scale: 1.0, ..Default::default() }).unwrap();
    assert!(scaler_one.unscale_and_check(&s, &mut grads).unwrap());
}

#[test]
fn backoff_halves_the_scale_and_restarts_the_count() {
    let mut scaler = LossScaler::new();
    for _ in 0..5 {
        scaler.update(false);
    }
    assert_eq!(scaler.growth_tracker(), 5);
    scaler.update(true);
    assert_eq!(scaler.get_scale(), 32768.0);
    assert_eq!(scaler.growth_tracker(), 0);
    scaler.update(true);
    assert_eq!(scaler.get_scale(), 16384.0);
}

#[test]
fn scale_doubles_after_2000_consecutive_finite_steps() {
    let mut scaler = LossScaler::new();
    for _ in 0..1999 {
        scaler.update(false);
    }
    assert_eq!(scaler.get_scale(), 65536.0);
    scaler.update(false);
    assert_eq!(scaler.get_scale(), 131072.0);
    assert_eq!(scaler.growth_tracker(), 0);
    // An overflow in the middle restarts the count of the next 2000.
    for _ in 0..1000 {
        scaler.update(false);
    }
    scaler.update(true);
    assert_eq!(scaler.get_scale(), 65536.0);
    for _ in 0..1999 {
        scaler.update(false);
    }
    assert_eq!(scaler.get_scale(), 65536.0);
    scaler.update(false);
    assert_eq!(scaler.get_scale(), 131072.0);
}

#[test]
fn custom_config_is_validated_and_used() {
    assert!(LossScaler::with_config(LossScalerConfig { growth_factor: 1.0, ..Default::default() }).is_err());
    assert!(LossScaler::with_config(LossScalerConfig { backoff_factor: 1.5, ..Default::default() }).is_err());
    assert!(LossScaler::with_config(LossScalerConfig { growth_interval: 0, ..Default::default() }).is_err());
    assert!(LossScaler::with_config(LossScalerConfig { init_scale: f64::INFINITY, ..Default::default() }).is_err());
    let cfg = LossScalerConfig { init_scale: 8.0, growth_factor: 4.0, backoff_factor: 0.25, growth_interval: 3 };
    let mut scaler = LossScaler::with_config(cfg).unwrap();
    for _ in 0..3 {
        scaler.update(false);
    }
    assert_eq!(scaler.get_scale(), 32.0);
    scaler.update(true);
    assert_eq!(scaler.get_scale(), 8.0);
}

#[test]
fn a_step_with_inf_gradients_is_skipped() {
    let (s, w) = store();
    let mut opt = Sgd::new(&s, SgdConfig::new(0.5)).unwrap();
    let mut scaler = LossScaler::new();

    // Overflow: no update, scale halved.
    let mut grads = scaled_grads(&scaler, &w, &[1.0, 1.0, 1.0, 1.0]);
    grads.get(&w).unwrap().assign(&t32(&[1.0, f32::INFINITY, 1.0, 1.0])).unwrap();
    assert!(!scaler.step(&mut opt, &s, &mut grads).unwrap());
    assert_eq!(w.tensor().to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
    assert_eq!(scaler.get_scale(), 32768.0);

    // Finite: the update uses the unscaled gradient, w -= 0.5 * c.
    let mut grads = scaled_grads(&scaler, &w, &[2.0, -2.0, 4.0, 0.0]);
    assert!(scaler.step(&mut opt, &s, &mut grads).unwrap());
    assert_eq!(w.tensor().to_vec::<f32>().unwrap(), vec![0.0, 3.0, 1.0, 4.0]);
    assert_eq!((scaler.get_scale(), scaler.growth_tracker()), (32768.0, 1));
}

#[test]
fn scaler_state_round_trips_through_a_checkpoint() {
    let (s, _) = store();
    let mut scaler = LossScaler::new();
    scaler.update(true);
    scaler.update(true);
    for _ in 0..7 {
        scaler.update(false);
    }
    let mut ck = Checkpoint::new(&s);
    scaler.save_meta(&mut ck);
    let path = std::env::temp_dir().join(format!("petal-mp-scaler-{}.safetensors", std::process::id()));
    save_checkpoint(&path, &ck).unwrap();
    let loaded = load_checkpoint(&path).unwrap();
    let _ = std::fs::remove_file(&path);

    let mut restored = LossScaler::new();
    assert!(restored.load_meta(&loaded).unwrap());
    assert_eq!(restored, scaler);
    assert_eq!((restored.get_scale(), restored.growth_tracker()), (16384.0, 7));

    // No state: nothing changes; half a state or a bad scale: an error.
    let mut fresh = LossScaler::new();
    assert!(!fresh.load_meta(&Checkpoint::new(&s)).unwrap());
    assert_eq!(fresh, LossScaler::new());
    let mut half = Checkpoint::new(&s);
    half.set_meta("loss_scaler.scale", 2.0);
    assert!(fresh.load_meta(&half).is_err());
    half.set_meta("loss_scaler.growth_tracker", 1);
    half.set_meta("loss_scaler.scale", "-1");
    assert!(fresh.load_meta(&half).is_err());
}

// ---- layers: compute in the input's dtype, gradients to the f32 params ----

fn f32_store() -> ParamStore {
    ParamStore::new(Device::Cpu, DType::F32, Rng::new(3))
}

fn randn(shape: &[usize], dtype: DType, seed: u64) -> Tensor {
    Tensor::randn(0.0, 1.0, shape, dtype, &Device::Cpu, &mut Rng::new(seed)).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.to_f64_vec().unwrap(), b.to_f64_vec().unwrap());
    a.iter().zip(&b).fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
}

/// Runs `layer` on x in f32 and in f64 (params f32 both times); the f64 run
/// outputs f64, records `to_dtype` casts (the f32 run does not), and gives
/// f32 parameter gradients equal to the f32 run's, up to f32 rounding.
fn check_layer(store: &ParamStore, layer: &dyn Module, x_shape: &[usize], expect_cast: &str) {
    let x32 = randn(x_shape, DType::F32, 11);
    let run = |x: Tensor| {
        let y = layer.forward(&Var::constant(x), &mut Ctx::eval()).unwrap();
        let tape = y.tape_summary();
        let dtype = y.dtype();
        let w = Var::constant(randn(y.dims(), dtype, 12));
        let loss = y.mul(&w).unwrap().sum_all().unwrap();
        let out = y.tensor().clone();
        (out, tape, loss.backward().unwrap())
    };
    let (y32, tape32, g32) = run(x32.clone());
    let (y64, tape64, g64) = run(x32.to_dtype(DType::F64).unwrap());
    assert_eq!(y32.dtype(), DType::F32);
    assert_eq!(y64.dtype(), DType::F64);
    assert!(!tape32.contains("to_dtype"), "the f32 path must not cast:\n{tape32}");
    assert!(tape64.contains(expect_cast), "expected a {expect_cast} cast:\n{tape64}");
    assert!(max_abs_diff(&y32, &y64) < 1e-4, "outputs differ by {}", max_abs_diff(&y32, &y64));
    for (name, p) in store.named() {
        let (a, b) = (g32.get(&p).unwrap(), g64.get(&p).expect("gradient reaches the f32 parameter"));
        assert_eq!(b.dtype(), DType::F32, "{name}");
        let scale = a.to_f64_vec().unwrap().iter().fold(1.0f64, |m, v| m.max(v.abs()));
        assert!(max_abs_diff(a, b) < 1e-4 * scale, "{name}: gradients differ by {}", max_abs_diff(a, b));
    }
}

#[test]
fn linear_casts_its_params_to_the_input_dtype() {
    let s = f32_store();
    let layer = Linear::new(&s.root().pp("fc"), 5, 3, true).unwrap();
    check_layer(&s, &layer, &[4, 5], "to_dtype");
}

#[test]
fn conv2d_casts_its_params_to_the_input_dtype() {
    let s = f32_store();
    let layer = Conv2d::new(&s.root().pp("conv"), 2, 3, 3, Conv2dConfig::padded(1)).unwrap();
    check_layer(&s, &layer, &[2, 2, 5, 5], "to_dtype");
}

#[test]
fn group_norm_normalises_in_the_params_dtype() {
    let s = f32_store();
    let layer = GroupNorm::new(&s.root().pp("norm"), 2, 4).unwrap();
    // Perturb the affine parameters so their gradients are not trivial.
    layer.weight.tensor().assign(&t32(&[0.5, 1.5, -1.0, 2.0])).unwrap();
    layer.bias.tensor().assign(&t32(&[0.1, 0.0, -0.2, 0.3])).unwrap();
    check_layer(&s, &layer, &[2, 4, 3, 3], "to_dtype");
    // The statistics ran in f32: the input was cast down, the output up.
    let y = layer.forward(&Var::param(randn(&[1, 4, 2, 2], DType::F64, 5)), &mut Ctx::eval()).unwrap();
    let tape = y.tape_summary();
    assert!(tape.contains("group_norm"), "{tape}");
    assert_eq!(tape.matches("to_dtype").count(), 2, "{tape}");
}
