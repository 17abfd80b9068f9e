//! Tests of the CUDA backend that need its internals or no GPU at all.
//!
//! - `nvrtc_compiles_every_kernel_for_every_arch` needs only libnvrtc: CI
//!   installs it (see `.ci/run`) and sets `PETAL_REQUIRE_NVRTC=1`, so a
//!   kernel that does not compile for any of Turing to Blackwell fails the
//!   build on machines without a GPU.
//! - `cuda_device_errors_without_gpu` checks that a machine without a GPU
//!   gets an error that says what is missing, not a panic;
//!   `gpu_memory_is_an_answer_or_an_error` does the same for `memory_info`.
//! - The rest need a GPU and skip (loudly) without one, unless
//!   `PETAL_REQUIRE_CUDA=1`. The CPU-agreement tests of every kernel live in
//!   `tensor/tests/cuda.rs`.

use super::*;

fn gpu() -> Option<CudaDevice> {
    super::device_for_tests()
}

/// True when NVRTC can be used here; otherwise prints why the test skips,
/// or fails when CI asked for NVRTC (`PETAL_REQUIRE_NVRTC=1`).
fn nvrtc_or_skip() -> bool {
    if nvrtc_available() {
        return true;
    }
    if std::env::var("PETAL_REQUIRE_NVRTC").as_deref() == Ok("1") {
        panic!("PETAL_REQUIRE_NVRTC=1 but libnvrtc cannot be loaded; {}", compile::NVRTC_MISSING);
    }
    eprintln!("\n**********************************************************");
    eprintln!("SKIPPED: libnvrtc not found (see .ci/run)");
    eprintln!("**********************************************************\n");
    false
}

/// Every kernel module compiles to a cubin for every architecture the
/// backend supports, from Turing to Blackwell. Needs NVRTC, not a GPU.
#[test]
fn nvrtc_compiles_every_kernel_for_every_arch() {
    if !nvrtc_or_skip() {
        return;
    }
    let (major, minor) = nvrtc_version().unwrap();
    let known = nvrtc_archs().unwrap();
    eprintln!("NVRTC {major}.{minor}");
    for arch in arch::TESTED_ARCHS {
        assert!(known.contains(&arch), "NVRTC {major}.{minor} cannot target {} (it knows {known:?})", arch.sm());
    }
    // One thread per architecture (NVRTC is thread-safe): 70 compiles.
    let results: Vec<(ComputeCapability, Vec<String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = arch::TESTED_ARCHS
            .into_iter()
            .map(|arch| {
                scope.spawn(move || {
                    let mut failures = Vec::new();
                    for (name, src) in all_kernel_sources() {
                        match compile(name, src, Target::Cubin(arch)) {
                            Ok(KernelCode::Cubin(elf)) if elf.starts_with(b"\x7fELF") => {}
                            Ok(other) => failures.push(format!("{name}.cu for {}: not a cubin: {other:?}", arch.sm())),
                            Err(e) => failures.push(e.to_string()),
                        }
                    }
                    (arch, failures)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a compile thread panicked")).collect()
    });
    let mut failures = Vec::new();
    for (arch, failed) in results {
        let ok = all_kernel_sources().len() - failed.len();
        eprintln!("{}: {ok} modules ok{}", arch.sm(), if failed.is_empty() { String::new() } else { format!(", {} failed", failed.len()) });
        failures.extend(failed);
    }
    assert!(failures.is_empty(), "kernels failed to compile:\n{}", failures.join("\n\n"));
}

/// Every implicit-GEMM conv kernel the host may launch is in the cubin
/// (the tensor-core ones exist only from sm_80 on, behind an `#if`), so a
/// misspelt name or a wrong arch guard fails here, not on a GPU.
#[test]
fn conv_implicit_kernels_exist_where_the_host_asks_for_them() {
    if !nvrtc_or_skip() {
        return;
    }
    let (name, src) = *all_kernel_sources().iter().find(|(n, _)| *n == "conv_implicit").unwrap();
    for arch in [ComputeCapability::new(7, 5), ComputeCapability::new(8, 0)] {
        let KernelCode::Cubin(elf) = compile(name, src, Target::Cubin(arch)).unwrap() else { panic!("not a cubin") };
        let has = |symbol: &str| elf.windows(symbol.len() + 1).any(|w| &w[..symbol.len()] == symbol.as_bytes() && w[symbol.len()] == 0);
        assert!(has("igemm_fwd_32x32_f32") && !has("igemm_fwd_32x32_f3"), "the symbol search is broken");
        let wanted = conv_implicit::kernels_for(arch);
        for kernel in &wanted {
            assert!(has(kernel), "{kernel} is missing from conv_implicit.cu for {}", arch.sm());
        }
        let mma = wanted.iter().filter(|k| k.starts_with("igemm_mma_")).count();
        assert_eq!(mma > 0, arch >= arch::AMPERE, "{} asks for {mma} tensor-core kernels", arch.sm());
        // Turing's cubin has no tensor-core kernels at all.
        if arch < arch::AMPERE {
            assert!(!has("igemm_mma_fwd_64x64_f16"), "sm_75 compiled a tensor-core kernel");
        }
    }
}

/// The fallback for a GPU newer than NVRTC: PTX text for a virtual architecture.
#[test]
fn nvrtc_writes_ptx_for_the_fallback() {
    if !nvrtc_or_skip() {
        return;
    }
    let (name, src) = all_kernel_sources()[0];
    let code = compile(name, src, Target::Ptx(ComputeCapability::new(7, 5))).unwrap();
    let KernelCode::Ptx(text) = code else { panic!("{code:?} is not PTX") };
    assert!(text.contains(".target sm_75"), "{}", &text[..text.len().min(400)]);
}

#[test]
fn nvrtc_errors_name_the_file_and_carry_the_log() {
    if !nvrtc_available() {
        eprintln!("SKIPPED: libnvrtc not found (see .ci/run)");
        return;
    }
    let broken = "extern \"C\" __global__ void k() { this is not C++; }";
    let err = compile("broken", broken, Target::Cubin(ComputeCapability::new(8, 9))).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("broken.cu"), "{msg}");
    assert!(msg.contains("sm_89"), "{msg}");
    assert!(msg.contains("error"), "{msg}");
}

#[test]
fn cuda_device_errors_without_gpu() {
    match CudaDevice::new(0) {
        Ok(dev) => {
            // A GPU machine: the device opened, so it must also be reported available.
            assert!(cuda_is_available(), "{dev:?} opened but cuda_is_available() is false");
        }
        Err(e) => {
            let msg = e.to_string();
            let names_cause = ["libcuda.so", "libnvrtc", "libcublas", "no CUDA device", "driver"]
                .iter()
                .any(|needle| msg.contains(needle));
            assert!(names_cause, "the error does not say what is missing: {msg}");
            assert!(!cuda_is_available());
            // Asking again gives the same answer, still without panicking.
            assert!(CudaDevice::new(0).is_err());
        }
    }
}

/// Asking a CUDA device for its memory is an error without a GPU (the
/// device cannot be opened), never a panic; with one, the driver's total
/// agrees with what `system::gpus` reports.
#[test]
fn gpu_memory_is_an_answer_or_an_error() {
    match crate::Device::cuda(0).and_then(|d| d.memory_info()) {
        Ok(m) => {
            assert!(0 < m.free_bytes && m.free_bytes <= m.total_bytes, "{m:?}");
            let gpu0 = &system::gpus().unwrap()[0];
            assert_eq!(m.total_bytes, gpu0.total_memory_bytes as u64, "{gpu0:?}");
        }
        Err(e) => {
            assert!(CudaDevice::new(0).is_err(), "the GPU opened but its memory could not be read: {e}");
            eprintln!("SKIPPED the GPU half: no CUDA device ({e})");
        }
    }
}

#[test]
fn philox_matches_rng_rs_bit_for_bit() {
    let Some(dev) = gpu() else { return };
    for (key, start) in [(0u64, 0u64), (7, 123_456_789), (u64::MAX, u64::MAX - 3)] {
        let words = random::philox_words(&dev, 100, key, start).unwrap();
        for i in 0..100u64 {
            let want = crate::rng::philox4x32(key, start.wrapping_add(i));
            assert_eq!(&words[4 * i as usize..4 * i as usize + 4], &want, "key {key} counter {}", start.wrapping_add(i));
        }
    }
}

#[test]
fn allocator_reuses_freed_blocks() {
    let Some(dev) = gpu() else { return };
    // A private allocator: the device's own is shared with the tests that
    // run beside this one, so its counts move under our feet.
    let allocator = CachingAllocator::new(dev.inner.ctx.clone());
    let sizes = [4096usize, 20_480, 4 << 20];
    // Warm: one block of each size, then free them.
    for bytes in sizes {
        drop(allocator.alloc(bytes).unwrap());
    }
    let before = allocator.stats();
    assert_eq!(before.driver_allocs, 3);
    for _ in 0..10 {
        for bytes in sizes {
            // A slightly different request of the same size class reuses the block too.
            drop(allocator.alloc(bytes - 100).unwrap());
        }
    }
    let after = allocator.stats();
    assert_eq!(after.driver_allocs, before.driver_allocs, "steady state must not call cuMemAlloc: {after:?}");
    assert_eq!(after.cache_hits, before.cache_hits + 30);
    assert_eq!(after.in_use, 0);
    // Two blocks alive at once need two driver blocks.
    let (a, b) = (allocator.alloc(4000).unwrap(), allocator.alloc(4000).unwrap());
    assert_ne!(a.ptr(), b.ptr());
    assert_eq!(allocator.stats().driver_allocs, 4);
    drop((a, b));
    allocator.empty_cache().unwrap();
    assert_eq!(allocator.stats().cached, 0);
}

#[test]
fn storages_round_trip_every_dtype() {
    let Some(dev) = gpu() else { return };
    let cases = vec![
        CpuStorage::F32(vec![1.5, -2.0, 3.25]),
        CpuStorage::F64(vec![1e-300, -2.0, 3.25]),
        CpuStorage::F16(vec![half::f16::from_f32(0.5), half::f16::from_f32(-7.0)]),
        CpuStorage::BF16(vec![half::bf16::from_f32(0.5), half::bf16::from_f32(-7.0)]),
        CpuStorage::U32(vec![0, 1, u32::MAX]),
        CpuStorage::F32(vec![]),
    ];
    for c in cases {
        assert_eq!(dev.from_cpu(&c).unwrap().to_cpu().unwrap(), c);
    }
    let f = dev.full(5, DType::BF16, 2.5).unwrap().to_cpu().unwrap();
    assert_eq!(f, CpuStorage::BF16(vec![half::bf16::from_f32(2.5); 5]));
}
