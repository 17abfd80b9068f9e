//! `ddpm doctor`: can this machine train on its GPU, and if not, what to
//! install. It asks one question at a time and keeps going after a failure,
//! so one run lists every missing piece:
//!
//! 1. the three libraries the CUDA backend loads (libcuda from the driver,
//!    libnvrtc to compile the kernels, libcublas for matrix products): where
//!    each was found and its version;
//! 2. each GPU: name, compute capability, memory, and whether petal supports
//!    it (and in which precisions);
//! 3. on GPU 0: a kernel launch (compiled by NVRTC for that GPU) and a cuBLAS
//!    GEMM, both checked against the CPU.
//!
//! Every problem comes with a line saying what to do about it. The command
//! succeeds only when everything works.

use anyhow::{bail, Result};
use tensor::cuda::arch;
use tensor::cuda::system::{self, Library};
use tensor::cuda::CudaDevice;
use tensor::{DType, Device, Tensor};

/// What to install, per library, when it is missing.
fn install_hint(lib: &str) -> &'static str {
    match lib {
        "libcuda" => {
            "install the NVIDIA driver (580 or newer for CUDA 13; 525 or newer with the CUDA 12 libraries); \
             libcuda.so.1 comes with the driver, not with pip"
        }
        "libnvrtc" => {
            "pip install nvidia-cuda-nvrtc==13.0.88 (or nvidia-cuda-nvrtc-cu12 for a CUDA 12 driver) and put its \
             nvidia/cu13/lib (or nvidia/cuda_nvrtc/lib) directory on LD_LIBRARY_PATH"
        }
        _ => {
            "pip install nvidia-cublas (or nvidia-cublas-cu12 for a CUDA 12 driver) and put its nvidia/cu13/lib \
             (or nvidia/cublas/lib) directory on LD_LIBRARY_PATH"
        }
    }
}

fn report_library(lib: &Library, problems: &mut Vec<String>) {
    match (lib.loaded, &lib.path) {
        (true, path) => {
            let at = path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "(path unknown)".into());
            let version = lib.version.as_deref().unwrap_or("version unknown");
            println!("  {:<10} {at} ({version})", lib.name);
        }
        (false, _) => {
            println!("  {:<10} NOT FOUND", lib.name);
            problems.push(format!("{} is missing: {}", lib.name, install_hint(lib.name)));
        }
    }
}

/// A tiny kernel launch and a tiny GEMM on `gpu`, each compared with the CPU.
fn smoke_test(gpu: &CudaDevice) -> (Result<()>, Result<()>) {
    let cpu = Device::Cpu;
    let dev = Device::Cuda(gpu.clone());
    let a: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 2.0).collect();
    let b: Vec<f32> = (0..12).map(|i| 1.0 - i as f32 * 0.25).collect();
    let launch = (|| -> Result<()> {
        let x = Tensor::from_vec(a.clone(), [12], &dev)?;
        let y = x.add_scalar(1.5)?.to_vec::<f32>()?;
        let want: Vec<f32> = a.iter().map(|v| v + 1.5).collect();
        if y != want {
            bail!("the kernel ran but computed {y:?} instead of {want:?}");
        }
        Ok(())
    })();
    let gemm = (|| -> Result<()> {
        let on = |d: &Device| -> Result<Vec<f32>> {
            let x = Tensor::from_vec(a.clone(), [3, 4], d)?;
            let y = Tensor::from_vec(b.clone(), [4, 3], d)?;
            Ok(x.matmul(&y)?.to_vec::<f32>()?)
        };
        let (got, want) = (on(&dev)?, on(&cpu)?);
        if got.iter().zip(&want).any(|(g, w)| (g - w).abs() > 1e-4) {
            bail!("cuBLAS ran but computed {got:?} instead of {want:?}");
        }
        Ok(())
    })();
    (launch, gemm)
}

/// Prints the report; fails (non-zero exit) unless GPU 0 works end to end.
pub fn run() -> Result<()> {
    let mut problems = Vec::new();
    println!("petal CUDA doctor");
    println!("libraries:");
    let libs = system::libraries();
    for lib in &libs {
        report_library(lib, &mut problems);
    }

    println!("GPUs:");
    let mut first_gpu_ok = false;
    if libs[0].loaded {
        match system::gpus() {
            Ok(gpus) if gpus.is_empty() => {
                println!("  none");
                problems.push("the driver reports no GPU: check `nvidia-smi`, and that this container or VM was given the GPU".into());
            }
            Ok(gpus) => {
                for g in &gpus {
                    let cc = g.capability;
                    let gib = g.total_memory_bytes as f64 / (1u64 << 30) as f64;
                    println!("  {}: {}, compute capability {cc} ({}), {gib:.1} GiB", g.ordinal, g.name, cc.sm());
                    match arch::check_supported(&g.name, cc) {
                        Ok(()) => println!("     supported; dtypes: {}", cc.dtypes()),
                        Err(e) => {
                            println!("     NOT SUPPORTED");
                            problems.push(e.to_string());
                        }
                    }
                }
                first_gpu_ok = arch::check_supported(&gpus[0].name, gpus[0].capability).is_ok();
            }
            Err(e) => {
                println!("  cannot list GPUs");
                problems.push(format!("{e}: check `nvidia-smi`; the driver may be broken or not match its kernel module"));
            }
        }
    } else {
        println!("  none: no NVIDIA driver (libcuda.so) on this machine");
    }

    let mut all_libs = libs.iter().all(|l| l.loaded);
    if all_libs {
        if let Err(e) = system::check_library_versions() {
            problems.push(e.to_string());
            all_libs = false;
        }
    }
    if first_gpu_ok && all_libs {
        println!("checks on GPU 0:");
        match CudaDevice::new(0) {
            Ok(gpu) => {
                println!("  opened {} (kernels: {})", gpu.name(), gpu.kernel_target());
                let (launch, gemm) = smoke_test(&gpu);
                for (what, outcome, hint) in [
                    ("kernel launch", launch, "NVRTC compiled a kernel the driver would not run; update the driver, or use the NVRTC that matches it"),
                    ("cuBLAS GEMM", gemm, "cuBLAS did not run; its version must suit the driver (cuBLAS 13 needs driver 580+)"),
                ] {
                    match outcome {
                        Ok(()) => println!("  {what:<14} ok"),
                        Err(e) => {
                            println!("  {what:<14} FAILED");
                            problems.push(format!("{what} on GPU 0 failed: {e:#}; {hint}"));
                        }
                    }
                }
                if gpu.check_dtype(DType::BF16).is_err() {
                    println!("  note: no bf16 or TF32 on this GPU; train with --precision f16 or f32");
                }
            }
            Err(e) => problems.push(format!("opening GPU 0 failed: {e}")),
        }
    } else if !problems.is_empty() {
        println!("checks on GPU 0: not run (fix the problems below first)");
    }

    if problems.is_empty() {
        println!("all good: `ddpm train --device cuda` will use GPU 0");
        return Ok(());
    }
    println!("problems:");
    for p in &problems {
        println!("  - {p}");
    }
    bail!("{} problem(s) keep petal from using a GPU here (see above); the CPU device still works", problems.len())
}
