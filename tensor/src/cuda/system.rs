//! What this machine offers the CUDA backend, asked one piece at a time so
//! that a missing piece is named instead of stopping the questions: the
//! three libraries (where each was found, which version), the driver, and
//! each GPU. `ddpm doctor` prints it; nothing here panics, even with no
//! NVIDIA software installed at all.
//!
//! cudarc loads each library by trying a list of file names (for CUDA 13
//! builds: `libX.so`, `libX.so.13`, then `libX.so.12`, ...); the path it
//! settled on is read back from `/proc/self/maps` once the library is loaded.

use super::arch::ComputeCapability;
use super::compile;
use crate::{Error, Result};
use cudarc::driver::result as drv;
use cudarc::driver::sys::CUdevice_attribute;
use std::path::PathBuf;

/// One of the shared libraries the backend loads.
#[derive(Clone, Debug)]
pub struct Library {
    /// The file name stem, e.g. `libcublas`.
    pub name: &'static str,
    /// Where the dynamic loader found it; `None` when it is not installed
    /// (or the path cannot be read back on this system).
    pub path: Option<PathBuf>,
    /// True when the library loads.
    pub loaded: bool,
    /// Its version as text, e.g. `13.0` for NVRTC; `None` when unknown.
    pub version: Option<String>,
}

/// One GPU as the driver describes it.
#[derive(Clone, Debug)]
pub struct Gpu {
    pub ordinal: usize,
    pub name: String,
    pub capability: ComputeCapability,
    pub total_memory_bytes: usize,
}

/// The path of the loaded shared object whose file name starts with `stem.so`.
fn loaded_path(stem: &str) -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let wanted = format!("/{stem}.so");
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| path.contains(&wanted))
        .map(PathBuf::from)
}

/// The NVIDIA kernel driver's release, e.g. `580.95.05`, where Linux says.
fn kernel_driver_release() -> Option<String> {
    let text = std::fs::read_to_string("/sys/module/nvidia/version").ok()?;
    Some(text.trim().to_string()).filter(|s| !s.is_empty())
}

/// libcuda, libnvrtc and libcublas, in that order, each loaded if it can be.
pub fn libraries() -> Vec<Library> {
    // SAFETY: `is_culib_present` only tries to dlopen; `culib` is called only
    // when that succeeded, so it cannot panic, and keeps the library loaded.
    let cuda = unsafe { cudarc::driver::sys::is_culib_present() };
    if cuda {
        unsafe { cudarc::driver::sys::culib() };
    }
    let nvrtc = compile::nvrtc_available();
    if nvrtc {
        unsafe { cudarc::nvrtc::sys::culib() };
    }
    let cublas = unsafe { cudarc::cublas::sys::is_culib_present() };
    if cublas {
        unsafe { cudarc::cublas::sys::culib() };
    }
    vec![
        Library {
            name: "libcuda",
            path: cuda.then(|| loaded_path("libcuda")).flatten(),
            loaded: cuda,
            version: cuda.then(driver_description).and_then(|r| r.ok()),
        },
        Library {
            name: "libnvrtc",
            path: nvrtc.then(|| loaded_path("libnvrtc")).flatten(),
            loaded: nvrtc,
            version: nvrtc.then(compile::nvrtc_version).and_then(|r| r.ok()).map(|(a, b)| format!("NVRTC {a}.{b}")),
        },
        Library {
            name: "libcublas",
            path: cublas.then(|| loaded_path("libcublas")).flatten(),
            loaded: cublas,
            version: cublas.then(cublas_version).flatten().map(|[a, b, c]| format!("cuBLAS {a}.{b}.{c}")),
        },
    ]
}

/// The CUDA version the driver supports, e.g. (13, 0). Needs libcuda.
pub fn driver_cuda_version() -> Result<(u32, u32)> {
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(Error::Cuda("libcuda.so not found: no NVIDIA driver on this machine".into()));
    }
    let mut v = 0;
    // SAFETY: the library is present; the driver writes one int.
    unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) }
        .result()
        .map_err(|e| Error::Cuda(format!("asking the driver for its version: {}", super::describe(&e))))?;
    Ok(((v / 1000) as u32, ((v % 1000) / 10) as u32))
}

/// "driver 580.95.05, CUDA 13.0", as much of it as is known.
fn driver_description() -> Result<String> {
    let (major, minor) = driver_cuda_version()?;
    Ok(match kernel_driver_release() {
        Some(release) => format!("driver {release}, CUDA {major}.{minor}"),
        None => format!("driver for CUDA {major}.{minor}"),
    })
}

fn cublas_version() -> Option<[i32; 3]> {
    use cudarc::cublas::sys::{cublasGetProperty, cublasStatus_t, libraryPropertyType};
    let mut parts = [0; 3];
    let kinds = [libraryPropertyType::MAJOR_VERSION, libraryPropertyType::MINOR_VERSION, libraryPropertyType::PATCH_LEVEL];
    for (kind, part) in kinds.into_iter().zip(parts.iter_mut()) {
        // SAFETY: the library is present; cuBLAS writes one int.
        if unsafe { cublasGetProperty(kind, part) } != cublasStatus_t::CUBLAS_STATUS_SUCCESS {
            return None;
        }
    }
    Some(parts)
}

/// What to install for a driver of CUDA major version 12.
pub const CUDA12_LIBRARIES: &str = "pip install nvidia-cuda-nvrtc-cu12==12.8.93 nvidia-cublas-cu12 and put their \
     nvidia/cuda_nvrtc/lib and nvidia/cublas/lib directories on LD_LIBRARY_PATH, with no cu13 directory on it";

/// Refuses CUDA libraries newer than the driver: NVRTC and cuBLAS of CUDA 13
/// need a CUDA 13 driver (580 or newer), those of CUDA 12 a CUDA 12 one (525
/// or newer). cudarc loads whichever major version it finds first, so a
/// mismatch would otherwise surface as an obscure failure at the first kernel
/// or GEMM. Call it only once all three libraries are known to be present.
pub fn check_library_versions() -> Result<()> {
    let driver = driver_cuda_version()?;
    let nvrtc = compile::nvrtc_version()?.0 as u32;
    let cublas = cublas_version().map(|v| v[0] as u32);
    match version_mismatch(driver, nvrtc, cublas) {
        None => Ok(()),
        Some(msg) => Err(Error::Cuda(msg)),
    }
}

/// The complaint about libraries of a newer CUDA major version than the
/// driver (`driver` is its CUDA version, the others are major versions).
fn version_mismatch(driver: (u32, u32), nvrtc: u32, cublas: Option<u32>) -> Option<String> {
    let too_new: Vec<String> = [("libnvrtc", Some(nvrtc)), ("libcublas", cublas)]
        .into_iter()
        .filter_map(|(lib, major)| major.filter(|m| *m > driver.0).map(|m| format!("{lib} is CUDA {m}")))
        .collect();
    if too_new.is_empty() {
        return None;
    }
    let fix = if driver.0 == 12 {
        format!("update the NVIDIA driver to 580 or newer, or use the CUDA 12 libraries: {CUDA12_LIBRARIES}")
    } else {
        "update the NVIDIA driver to 580 or newer (petal needs a driver for CUDA 12 or 13)".to_string()
    };
    Some(format!("the NVIDIA driver supports CUDA {}.{}, but {}: {fix}", driver.0, driver.1, too_new.join(" and ")))
}

/// Every GPU the driver reports, without opening a context on any of them.
pub fn gpus() -> Result<Vec<Gpu>> {
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(Error::Cuda("libcuda.so not found: no NVIDIA driver on this machine".into()));
    }
    let ask = |what: &str, e: drv::DriverError| Error::Cuda(format!("{what}: {}", super::describe(&e)));
    drv::init().map_err(|e| ask("initialising the CUDA driver", e))?;
    let count = drv::device::get_count().map_err(|e| ask("counting GPUs", e))?;
    let mut out = Vec::new();
    for ordinal in 0..count.max(0) {
        let dev = drv::device::get(ordinal).map_err(|e| ask("finding a GPU", e))?;
        // SAFETY: `dev` is a device handle the driver just gave out.
        let attr = |a| unsafe { drv::device::get_attribute(dev, a) }.map_err(|e| ask("reading a GPU attribute", e));
        let major = attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
        let minor = attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
        out.push(Gpu {
            ordinal: ordinal as usize,
            name: drv::device::get_name(dev).map_err(|e| ask("reading a GPU's name", e))?,
            capability: ComputeCapability::new(major as u32, minor as u32),
            // SAFETY: as above.
            total_memory_bytes: unsafe { drv::device::total_mem(dev) }.map_err(|e| ask("reading a GPU's memory", e))?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probing_never_panics_and_reports_all_three_libraries() {
        let libs = libraries();
        let names: Vec<_> = libs.iter().map(|l| l.name).collect();
        assert_eq!(names, ["libcuda", "libnvrtc", "libcublas"]);
        for lib in &libs {
            if let Some(path) = &lib.path {
                assert!(lib.loaded, "{lib:?}");
                assert!(path.to_string_lossy().contains(lib.name), "{lib:?}");
            }
        }
        // Without a driver both questions fail with a message, never a panic.
        if !libs[0].loaded {
            assert!(driver_cuda_version().unwrap_err().to_string().contains("libcuda"));
            assert!(gpus().unwrap_err().to_string().contains("libcuda"));
        }
    }

    #[test]
    fn libraries_newer_than_the_driver_are_named_with_the_fix() {
        assert_eq!(version_mismatch((13, 0), 13, Some(13)), None);
        assert_eq!(version_mismatch((12, 8), 12, Some(12)), None);
        // An older library on a newer driver is fine (the driver is backward compatible).
        assert_eq!(version_mismatch((13, 0), 12, Some(12)), None);
        let msg = version_mismatch((12, 4), 13, Some(12)).unwrap();
        assert!(msg.contains("CUDA 12.4") && msg.contains("libnvrtc is CUDA 13"), "{msg}");
        assert!(!msg.contains("libcublas is"), "{msg}");
        assert!(msg.contains("580") && msg.contains("nvidia-cuda-nvrtc-cu12"), "{msg}");
        let msg = version_mismatch((12, 2), 13, Some(13)).unwrap();
        assert!(msg.contains("libnvrtc is CUDA 13 and libcublas is CUDA 13"), "{msg}");
        let msg = version_mismatch((11, 8), 12, None).unwrap();
        assert!(msg.contains("580"), "{msg}");
    }

    #[test]
    fn nvrtc_is_found_where_it_was_loaded_from() {
        if !compile::nvrtc_available() {
            eprintln!("SKIPPED: libnvrtc not found (see .ci/run)");
            return;
        }
        let nvrtc = libraries().into_iter().find(|l| l.name == "libnvrtc").unwrap();
        let path = nvrtc.path.expect("the loaded libnvrtc appears in /proc/self/maps");
        assert!(path.exists(), "{}", path.display());
        assert!(nvrtc.version.unwrap().starts_with("NVRTC "));
    }
}
