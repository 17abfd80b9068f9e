//! Run-time compilation of the CUDA C kernels with NVRTC.
//!
//! Kernels ship as `.cu` source embedded in the binary (`include_str!`) and
//! are compiled on first use, once per process and architecture, for exactly
//! the GPU that opened (`arch.rs`): to a cubin (`-arch=sm_89`), machine code
//! the driver loads as is, with no JIT step and no question of whether the
//! driver understands the PTX version NVRTC wrote. Only when this NVRTC is
//! older than the GPU (it does not list the GPU's `sm_XY`) does it fall back
//! to PTX for the newest `compute_XY` it knows below the GPU, which the
//! driver then JIT-compiles. This keeps the build free of any CUDA toolkit
//! (no nvcc), so `cargo build` works on any machine, and lets CI compile
//! every kernel for every architecture with nothing but libnvrtc.
//!
//! NVRTC has no CUDA headers, so each source is prefixed with `common.cuh`
//! (element types, conversions, index helpers) and a `#line` directive, so
//! that NVRTC's error messages still point into the right `.cu` file.

use super::arch::ComputeCapability;
use crate::{Error, Result};
use cudarc::nvrtc::{result as nvrtc, sys, Ptx};
use std::collections::HashMap;
use std::ffi::{c_char, c_int, CStr, CString};
use std::fmt;
use std::sync::{Mutex, OnceLock};

/// The prelude pasted in front of every kernel source.
pub const PRELUDE: &str = include_str!("common.cuh");

/// Every kernel source of the backend, by module name.
pub fn all_kernel_sources() -> &'static [(&'static str, &'static str)] {
    &[
        ("copy", include_str!("copy.cu")),
        ("elementwise", include_str!("elementwise.cu")),
        ("reduce", include_str!("reduce.cu")),
        ("conv", include_str!("conv.cu")),
        ("conv_implicit", include_str!("conv_implicit.cu")),
        ("pool", include_str!("pool.cu")),
        ("upsample", include_str!("upsample.cu")),
        ("group_norm", include_str!("group_norm.cu")),
        ("index_select", include_str!("index_select.cu")),
        ("optim", include_str!("optim.cu")),
        ("random", include_str!("random.cu")),
    ]
}

/// The source of module `name`.
pub(crate) fn kernel_source(name: &str) -> Result<&'static str> {
    all_kernel_sources()
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, src)| *src)
        .ok_or_else(|| Error::Cuda(format!("no kernel source named {name:?}")))
}

/// True when libnvrtc can be loaded (checked without panicking).
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to dlopen the library.
    unsafe { sys::is_culib_present() }
}

pub(crate) const NVRTC_MISSING: &str = "libnvrtc not found (libnvrtc.so.13 or .12): the CUDA backend compiles its \
     kernels at run time with NVRTC; install it (`pip install nvidia-cuda-nvrtc==13.0.88` for a driver 580 or newer, \
     `pip install nvidia-cuda-nvrtc-cu12==12.8.93` for drivers 525 to 575) and put its lib directory \
     (nvidia/cu13/lib or nvidia/cuda_nvrtc/lib) on LD_LIBRARY_PATH";

fn require_nvrtc() -> Result<()> {
    if nvrtc_available() {
        Ok(())
    } else {
        Err(Error::Cuda(NVRTC_MISSING.to_string()))
    }
}

/// The version of the loaded NVRTC, e.g. (13, 0).
pub fn nvrtc_version() -> Result<(i32, i32)> {
    require_nvrtc()?;
    let (mut major, mut minor): (c_int, c_int) = (0, 0);
    // SAFETY: NVRTC writes two ints.
    unsafe { sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| Error::Cuda(format!("asking NVRTC for its version: {e:?}")))?;
    Ok((major, minor))
}

/// The real architectures the loaded NVRTC can write cubins for, oldest first.
pub fn nvrtc_archs() -> Result<Vec<ComputeCapability>> {
    require_nvrtc()?;
    let err = |e| Error::Cuda(format!("asking NVRTC for its architectures: {e:?}"));
    let mut count: c_int = 0;
    // SAFETY: NVRTC writes one int, then `count` ints.
    unsafe { sys::nvrtcGetNumSupportedArchs(&mut count) }.result().map_err(err)?;
    let mut numbers = vec![0 as c_int; count.max(0) as usize];
    unsafe { sys::nvrtcGetSupportedArchs(numbers.as_mut_ptr()) }.result().map_err(err)?;
    let mut archs: Vec<_> = numbers.into_iter().map(|n| ComputeCapability::from_number(n as u32)).collect();
    archs.sort();
    Ok(archs)
}

/// What a kernel module is compiled to for one GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// Machine code for exactly this architecture (`-arch=sm_XY`).
    Cubin(ComputeCapability),
    /// PTX for this virtual architecture (`-arch=compute_XY`), JIT-compiled
    /// by the driver for the GPU it runs on (same or newer).
    Ptx(ComputeCapability),
}

impl Target {
    /// NVRTC's `-arch` value.
    pub fn arch_flag(self) -> String {
        match self {
            Target::Cubin(cc) => cc.sm(),
            Target::Ptx(cc) => cc.compute(),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Cubin(cc) => write!(f, "cubin for {}", cc.sm()),
            Target::Ptx(cc) => write!(f, "PTX for {}", cc.compute()),
        }
    }
}

/// The target for a GPU of capability `gpu` given the architectures NVRTC
/// knows (`nvrtc_archs`): a cubin when NVRTC knows the GPU, else PTX for the
/// newest architecture it knows below the GPU.
pub fn target_for(gpu: ComputeCapability, known: &[ComputeCapability]) -> Result<Target> {
    if known.contains(&gpu) {
        return Ok(Target::Cubin(gpu));
    }
    match known.iter().copied().filter(|a| *a <= gpu).max() {
        Some(older) => Ok(Target::Ptx(older)),
        None => Err(Error::Cuda(format!(
            "this NVRTC cannot compile for compute capability {gpu} or anything older (it knows {}); \
             install NVRTC 13 (`pip install nvidia-cuda-nvrtc==13.0.88`)",
            known.iter().map(|a| a.sm()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// A compiled kernel module, ready for `CudaContext::load_module`.
#[derive(Clone, Debug)]
pub enum KernelCode {
    /// An ELF image of machine code (starts with `\x7fELF`).
    Cubin(Vec<u8>),
    /// PTX assembly text.
    Ptx(String),
}

impl KernelCode {
    /// The form cudarc loads; the driver tells a cubin from PTX by itself.
    pub fn to_cudarc(&self) -> Ptx {
        match self {
            KernelCode::Cubin(bytes) => Ptx::from_binary(bytes.clone()),
            KernelCode::Ptx(text) => Ptx::from_src(text.clone()),
        }
    }
}

/// Destroys an NVRTC program when dropped, also on the error paths.
struct Program(sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: the program was created by `create_program` and is destroyed once.
        let _ = unsafe { nvrtc::destroy_program(self.0) };
    }
}

/// Compiles one kernel source (without the prelude; it is added here) for
/// `target`. The result loads with `CudaContext::load_module`. Errors carry
/// the file name, the target and NVRTC's log.
pub fn compile(name: &str, src: &str, target: Target) -> Result<KernelCode> {
    require_nvrtc()?;
    let failed = |what: &str, e: nvrtc::NvrtcError| Error::Cuda(format!("NVRTC failed to {what} {name}.cu ({target}): {e:?}"));
    let full = CString::new(format!("{PRELUDE}\n#line 1 \"{name}.cu\"\n{src}"))
        .map_err(|_| Error::Cuda(format!("{name}.cu contains a NUL byte")))?;
    let file = CString::new(format!("{name}.cu")).map_err(|_| Error::Cuda(format!("bad kernel name {name:?}")))?;
    let prog = Program(nvrtc::create_program(&full, Some(&file)).map_err(|e| failed("create a program for", e))?);
    let options = [format!("--gpu-architecture={}", target.arch_flag())];
    // SAFETY: `prog` is a live program; `full` and `file` outlive it.
    if let Err(e) = unsafe { nvrtc::compile_program(prog.0, &options) } {
        // SAFETY: as above; the log is a NUL-terminated string.
        let log = unsafe { nvrtc::get_program_log(prog.0) }
            .map(|raw| unsafe { CStr::from_ptr(raw.as_ptr()) }.to_string_lossy().into_owned())
            .unwrap_or_else(|_| format!("{e:?} (no log)"));
        return Err(Error::Cuda(format!("NVRTC failed to compile {name}.cu ({target}):\n{log}")));
    }
    match target {
        Target::Cubin(_) => {
            let mut size = 0usize;
            // SAFETY: NVRTC writes the size, then that many bytes.
            unsafe { sys::nvrtcGetCUBINSize(prog.0, &mut size) }.result().map_err(|e| failed("size the cubin of", e))?;
            let mut cubin = vec![0u8; size];
            unsafe { sys::nvrtcGetCUBIN(prog.0, cubin.as_mut_ptr() as *mut c_char) }
                .result()
                .map_err(|e| failed("read the cubin of", e))?;
            if cubin.is_empty() {
                return Err(Error::Cuda(format!("NVRTC wrote an empty cubin for {name}.cu ({target})")));
            }
            Ok(KernelCode::Cubin(cubin))
        }
        Target::Ptx(_) => {
            // SAFETY: `prog` compiled successfully; the PTX is NUL-terminated.
            let ptx = unsafe { nvrtc::get_ptx(prog.0) }.map_err(|e| failed("read the PTX of", e))?;
            let text = unsafe { CStr::from_ptr(ptx.as_ptr()) }.to_string_lossy().into_owned();
            Ok(KernelCode::Ptx(text))
        }
    }
}

/// Module `name` compiled for `target`, on the first request in this process
/// for that pair.
pub(crate) fn cached(name: &str, target: Target) -> Result<KernelCode> {
    static CACHE: OnceLock<Mutex<HashMap<(String, Target), KernelCode>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    // The lock is held while compiling so that two threads never compile the
    // same module twice; compiles happen once per module and target.
    let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
    let key = (name.to_string(), target);
    if let Some(code) = map.get(&key) {
        return Ok(code.clone());
    }
    let code = compile(name, kernel_source(name)?, target)?;
    map.insert(key, code.clone());
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(major: u32, minor: u32) -> ComputeCapability {
        ComputeCapability::new(major, minor)
    }

    #[test]
    fn a_known_gpu_gets_a_cubin_and_a_newer_one_ptx() {
        let known = [cc(7, 5), cc(8, 0), cc(8, 6), cc(8, 9), cc(9, 0)];
        assert_eq!(target_for(cc(8, 9), &known).unwrap(), Target::Cubin(cc(8, 9)));
        assert_eq!(target_for(cc(12, 0), &known).unwrap(), Target::Ptx(cc(9, 0)));
        assert_eq!(target_for(cc(8, 7), &known).unwrap(), Target::Ptx(cc(8, 6)));
        assert_eq!(Target::Cubin(cc(8, 9)).arch_flag(), "sm_89");
        assert_eq!(Target::Ptx(cc(9, 0)).arch_flag(), "compute_90");
        let msg = target_for(cc(7, 0), &known).unwrap_err().to_string();
        assert!(msg.contains("7.0") && msg.contains("sm_75"), "{msg}");
    }
}
