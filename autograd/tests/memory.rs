//! Training must not leak: after every step, live storage is back to the
//! level after the first one, exactly. One test in this file on purpose:
//! `tensor::live_bytes` is global and tests in one binary run in parallel.

use autograd::tensor::{live_bytes, DType, Device, Rng, Tensor};
use autograd::{no_grad, Var};

#[test]
fn training_steps_do_not_leak_and_backward_frees_the_tape() {
    let dev = Device::Cpu;
    let mut rng = Rng::new(42);
    let mut randn = |dims: &[usize], std: f64| Tensor::randn(0.0, std, dims.to_vec(), DType::F32, &dev, &mut rng).unwrap();
    let w1 = Var::param(randn(&[8, 3, 3, 3], 0.2));
    let b1 = Var::param(Tensor::zeros(8, DType::F32, &dev).unwrap());
    let gamma = Var::param(Tensor::ones(8, DType::F32, &dev).unwrap());
    let beta = Var::param(Tensor::zeros(8, DType::F32, &dev).unwrap());
    let w2 = Var::param(randn(&[3, 8, 3, 3], 0.1));
    let params = [&w1, &b1, &gamma, &beta, &w2];
    let x = Var::constant(randn(&[4, 3, 8, 8], 1.0));
    let target = Var::constant(randn(&[4, 3, 8, 8], 0.5));
    let lr = 0.05;

    let before_forward = live_bytes();
    let mut after_first = None;
    let mut losses = Vec::new();
    for step in 0..30 {
        let loss = x
            .conv2d(&w1, Some(&b1), 1, 1)
            .unwrap()
            .group_norm(4, &gamma, &beta, 1e-5)
            .unwrap()
            .silu()
            .unwrap()
            .conv2d(&w2, None, 1, 1)
            .unwrap()
            .mse(&target)
            .unwrap();
        assert!(live_bytes() > before_forward, "the forward pass keeps its activations");
        let grads = loss.backward().unwrap();
        assert_eq!(grads.len(), params.len());
        if step == 0 {
            // The tape is gone: with the gradients dropped, only the loss
            // value itself is left of the whole step.
            let grad_bytes: usize = params.iter().map(|p| grads.get(p).unwrap().elem_count() * 4).sum();
            assert_eq!(live_bytes(), before_forward + grad_bytes + 4);
            assert_eq!(loss.tape_summary().lines().count(), 1, "{}", loss.tape_summary());
        }
        no_grad(|| {
            for p in params {
                let g = grads.get(p).unwrap();
                p.tensor().assign(&p.tensor().sub(&g.mul_scalar(lr).unwrap()).unwrap()).unwrap();
            }
        });
        losses.push(loss.tensor().to_scalar().unwrap());
        drop(grads);
        drop(loss);
        let now = live_bytes();
        match after_first {
            None => {
                assert_eq!(now, before_forward, "a step must leave nothing behind");
                after_first = Some(now);
            }
            Some(level) => assert_eq!(now, level, "step {step} leaked {} bytes", now as i64 - level as i64),
        }
    }
    assert!(losses[29] < losses[0], "training should reduce the loss: {losses:?}");
}
