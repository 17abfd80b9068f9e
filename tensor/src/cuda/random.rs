//! Philox random fills on the GPU (kernels in `random.cu`), producing the
//! streams of `rng.rs`: element i depends only on (key, start + i).
//!
//! CPU twin: `cpu/random.rs`.

use super::elementwise::float_only;
use super::{check_u32, launch_cfg, CudaDevice, CudaResultExt, CudaStorage};
use crate::{DType, Result};
use cudarc::driver::PushKernelArg;

/// Runs `{kernel}_{dtype}` with its two parameters (lo/hi or mean/std).
#[allow(clippy::too_many_arguments)]
fn fill(dev: &CudaDevice, kernel: &str, n: usize, dtype: DType, key: u64, start: u64, a: f64, b: f64) -> Result<CudaStorage> {
    float_only("random fill", dtype)?;
    let out = dev.alloc(n, dtype)?;
    if n == 0 {
        return Ok(out);
    }
    let n32 = check_u32("random fill", n)?;
    let f = dev.func("random", &format!("{kernel}_{}", dtype.name()))?;
    let op = out.ptr();
    let mut lb = dev.stream().launch_builder(&f);
    lb.arg(&op).arg(&n32).arg(&key).arg(&start).arg(&a).arg(&b);
    // SAFETY: writes n elements of `dtype`.
    unsafe { lb.launch(launch_cfg(n)) }.ctx("random fill kernel")?;
    Ok(out)
}

pub(crate) fn uniform(dev: &CudaDevice, n: usize, dtype: DType, key: u64, start: u64, lo: f64, hi: f64) -> Result<CudaStorage> {
    fill(dev, "rand_uniform", n, dtype, key, start, lo, hi)
}

pub(crate) fn normal(dev: &CudaDevice, n: usize, dtype: DType, key: u64, start: u64, mean: f64, std: f64) -> Result<CudaStorage> {
    fill(dev, "rand_normal", n, dtype, key, start, mean, std)
}

/// Dropout of the `n` contiguous elements of `x` from `offset`: (x * mask,
/// mask) with mask = `scale` where the Philox draw for counter `start + i` is
/// below `keep`, else 0 (the CPU backend's streams, bit for bit).
#[allow(clippy::too_many_arguments)]
pub(crate) fn dropout(x: &CudaStorage, offset: usize, n: usize, keep: f64, scale: f64, key: u64, start: u64) -> Result<(CudaStorage, CudaStorage)> {
    float_only("dropout", x.dtype)?;
    let dev = x.device();
    let (out, mask) = (dev.alloc(n, x.dtype)?, dev.alloc(n, x.dtype)?);
    if n == 0 {
        return Ok((out, mask));
    }
    let n32 = check_u32("dropout", n)?;
    let threshold = crate::rng::keep_threshold(keep);
    let f = dev.func("random", &format!("dropout_{}", x.dtype.name()))?;
    let (xp, op, mp) = (x.ptr_at(offset), out.ptr(), mask.ptr());
    let mut lb = dev.stream().launch_builder(&f);
    lb.arg(&xp).arg(&op).arg(&mp).arg(&n32).arg(&key).arg(&start).arg(&threshold).arg(&scale);
    // SAFETY: x holds n elements from offset; out and mask hold n each.
    unsafe { lb.launch(launch_cfg(n)) }.ctx("dropout kernel")?;
    Ok((out, mask))
}

/// The raw Philox words for counters start..start+n (4 per counter), for tests.
#[cfg(test)]
pub(crate) fn philox_words(dev: &CudaDevice, n: usize, key: u64, start: u64) -> Result<Vec<u32>> {
    let out = dev.alloc(4 * n, DType::U32)?;
    let n32 = check_u32("philox", n)?;
    let f = dev.func("random", "philox_words")?;
    let op = out.ptr();
    let mut lb = dev.stream().launch_builder(&f);
    lb.arg(&op).arg(&n32).arg(&key).arg(&start);
    // SAFETY: writes 4n u32 words.
    unsafe { lb.launch(launch_cfg(n)) }.ctx("philox kernel")?;
    match out.to_cpu()? {
        crate::cpu::CpuStorage::U32(v) => Ok(v),
        _ => unreachable!(),
    }
}
