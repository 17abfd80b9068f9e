//! The same training on the GPU as on the CPU, and checkpoints moving
//! between devices. Skips (passing) on machines without CUDA.

use autograd::Var;
use nn::*;
use tensor::{DType, Device, Rng, Tensor};

fn gpu() -> Option<Device> {
    tensor::cuda::device_for_tests().map(Device::Cuda)
}

fn model(s: &ParamStore) -> Sequential {
    let r = s.root();
    Sequential::new()
        .with(Conv2d::new(&r.pp("conv"), 2, 4, 3, Conv2dConfig::padded(1)).unwrap())
        .with(GroupNorm::new(&r.pp("norm"), 2, 4).unwrap())
        .with(SiLU)
        .with(AvgPool2d::new(2))
        .with(UpsampleNearest2d::new(2))
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    a.to_f64_vec().unwrap().iter().zip(b.to_f64_vec().unwrap()).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

#[test]
fn training_on_gpu_matches_cpu() {
    let Some(dev) = gpu() else { return };
    let run = |device: &Device| {
        let s = ParamStore::new(device.clone(), DType::F32, Rng::new(3));
        let net = model(&s);
        let mut opt = Adam::new(&s, AdamConfig::adamw(1e-2)).unwrap();
        let mut ema = Ema::new(&s, 0.9).unwrap();
        let x = Tensor::randn(0.0, 1.0, [2, 2, 4, 4], DType::F32, &Device::Cpu, &mut Rng::new(1)).unwrap().to_device(device).unwrap();
        for _ in 0..3 {
            let y = net.forward(&Var::constant(x.clone()), &mut Ctx::eval()).unwrap();
            let loss = y.sqr().unwrap().mean_all().unwrap();
            let mut g = loss.backward().unwrap();
            clip_grad_norm(&s, &mut g, 0.5).unwrap();
            opt.step(&g).unwrap();
            ema.update(&s).unwrap();
        }
        (s, ema)
    };
    let (cpu, cpu_ema) = run(&Device::Cpu);
    let (gpu, gpu_ema) = run(&dev);
    for ((name, a), (_, b)) in cpu.tensors().iter().zip(gpu.tensors().iter()) {
        assert!(b.device().is_cuda());
        let d = max_diff(a, b);
        assert!(d < 1e-4, "{name}: CPU and GPU differ by {d}");
    }
    for ((name, a), (_, b)) in cpu_ema.named().iter().zip(gpu_ema.named().iter()) {
        assert!(max_diff(a, b) < 1e-4, "ema {name}");
    }
}

#[test]
fn checkpoints_move_between_devices() {
    let Some(dev) = gpu() else { return };
    let dir = std::env::temp_dir().join(format!("petal-nn-cuda-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gpu.safetensors");
    let s = ParamStore::new(dev.clone(), DType::F32, Rng::new(5));
    let _net = model(&s);
    let opt = Adam::new(&s, AdamConfig::default()).unwrap();
    save_checkpoint(&path, &Checkpoint::new(&s).with_optimizer(&opt)).unwrap();
    let cpu = ParamStore::new(Device::Cpu, DType::F32, Rng::new(6));
    let _net2 = model(&cpu);
    let ck = load_checkpoint(&path).unwrap();
    ck.load_into(&cpu, true).unwrap();
    for ((name, a), (_, b)) in s.tensors().iter().zip(cpu.tensors().iter()) {
        assert_eq!(max_diff(a, b), 0.0, "{name}");
    }
    // And back onto the GPU.
    let back = ParamStore::new(dev, DType::F32, Rng::new(7));
    let _net3 = model(&back);
    ck.load_into(&back, true).unwrap();
    assert!(back.tensors().values().all(|t| t.device().is_cuda()));
    assert_eq!(max_diff(&back.tensors()["conv.weight"], &s.tensors()["conv.weight"]), 0.0);
    std::fs::remove_dir_all(dir).unwrap();
}
