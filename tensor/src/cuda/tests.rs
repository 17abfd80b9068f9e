//! Tests of the CUDA backend that need its internals or no GPU at all.
//!
//! - `nvrtc_compiles_every_kernel` needs only libnvrtc: CI installs it (see
//!   `.ci/run`) and sets `PETAL_REQUIRE_NVRTC=1`, so a kernel that does not
//!   compile fails the build on machines without a GPU.
//! - `cuda_device_errors_without_gpu` checks that a machine without a GPU
//!   gets an error that says what is missing, not a panic.
//! - The rest need a GPU and skip (loudly) without one, unless
//!   `PETAL_REQUIRE_CUDA=1`. The CPU-agreement tests of every kernel live in
//!   `tensor/tests/cuda.rs`.

use super::*;

fn gpu() -> Option<CudaDevice> {
    super::device_for_tests()
}

#[test]
fn nvrtc_compiles_every_kernel() {
    if !nvrtc_available() {
        if std::env::var("PETAL_REQUIRE_NVRTC").as_deref() == Ok("1") {
            panic!("PETAL_REQUIRE_NVRTC=1 but libnvrtc cannot be loaded; {}", compile::NVRTC_MISSING);
        }
        eprintln!("\n**********************************************************");
        eprintln!("SKIPPED: libnvrtc not found (see .ci/run)");
        eprintln!("**********************************************************\n");
        return;
    }
    let mut failures = Vec::new();
    for (name, src) in all_kernel_sources() {
        match compile_ptx(name, src) {
            Ok(ptx) => assert!(!ptx.to_src().is_empty(), "{name}.cu produced empty PTX"),
            Err(e) => failures.push(e.to_string()),
        }
    }
    assert!(failures.is_empty(), "kernels failed to compile:\n{}", failures.join("\n\n"));
}

#[test]
fn nvrtc_errors_name_the_file_and_carry_the_log() {
    if !nvrtc_available() {
        eprintln!("SKIPPED: libnvrtc not found (see .ci/run)");
        return;
    }
    let err = compile_ptx("broken", "extern \"C\" __global__ void k() { this is not C++; }").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("broken.cu"), "{msg}");
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
