//! The group norm's row loops run compiled for AVX-512 where the CPU has
//! it, else for AVX2: both must give the same bits (no multiply-add is
//! fused differently, and the SiLU's exp is the same sequence of
//! operations). The instruction set is a process-wide switch, so this file
//! holds a single test: no other test thread runs kernels while it flips.

#[cfg(target_arch = "x86_64")]
use tensor::{DType, Device, Rng, Tensor};

#[cfg(target_arch = "x86_64")]
fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec::<f32>().unwrap().iter().map(|v| v.to_bits()).collect()
}

#[cfg(target_arch = "x86_64")]
/// Forward and backward of `group_norm_silu` and `group_norm`, as bits.
fn run_group_norms(shape: [usize; 4], groups: usize) -> Vec<Vec<u32>> {
    let cpu = Device::Cpu;
    let mut rng = Rng::new(7);
    let c = shape[1];
    let x = Tensor::randn(0.5, 2.0, shape, DType::F32, &cpu, &mut rng).unwrap();
    let gamma = Tensor::randn(1.0, 0.5, [c], DType::F32, &cpu, &mut rng).unwrap();
    let beta = Tensor::randn(0.0, 0.5, [c], DType::F32, &cpu, &mut rng).unwrap();
    let dy = Tensor::randn(0.0, 1.0, shape, DType::F32, &cpu, &mut rng).unwrap();
    let (y, mean, rstd) = x.group_norm_silu(groups, &gamma, &beta, 1e-5).unwrap();
    let (dx, dgamma, dbeta) = x.group_norm_silu_backward(&gamma, &beta, &mean, &rstd, &dy, groups, 1e-5).unwrap();
    let (plain, mean, rstd) = x.group_norm(groups, &gamma, &beta, 1e-5).unwrap();
    let (plain_dx, _, _) = x.group_norm_backward(&gamma, &mean, &rstd, &dy, groups, 1e-5).unwrap();
    [y, dx, dgamma, dbeta, plain, plain_dx].iter().map(bits).collect()
}

#[cfg(target_arch = "x86_64")]
#[test]
fn group_norm_rows_give_the_same_bits_with_avx512_and_avx2() {
    if !std::arch::is_x86_feature_detected!("avx512f") {
        eprintln!("SKIPPED: this CPU lacks AVX-512, so there is no second path to compare");
        return;
    }
    // Rows of 35 and 256 values: whole 16-lane vectors, and tails.
    for (shape, groups) in [([3, 12, 7, 5], 4), ([2, 64, 16, 16], 32)] {
        tensor::cpu::conv_direct::set_avx512_disabled(false);
        let wide = run_group_norms(shape, groups);
        tensor::cpu::conv_direct::set_avx512_disabled(true);
        let narrow = run_group_norms(shape, groups);
        tensor::cpu::conv_direct::set_avx512_disabled(false);
        for (i, (a, b)) in wide.iter().zip(&narrow).enumerate() {
            assert!(a == b, "{shape:?}: output {i} differs between AVX-512 and AVX2");
        }
    }
}
