//! Run-time compilation of the CUDA C kernels with NVRTC.
//!
//! Kernels ship as `.cu` source embedded in the binary (`include_str!`) and
//! are compiled on first use, once per process, to PTX for `compute_90`; the
//! driver then JIT-compiles the PTX for whatever GPU it finds. This keeps the
//! build free of any CUDA toolkit (no nvcc), so `cargo build` works on any
//! machine, and lets CI compile every kernel with nothing but libnvrtc.
//!
//! NVRTC has no CUDA headers, so each source is prefixed with `common.cuh`
//! (element types, conversions, index helpers) and a `#line` directive, so
//! that NVRTC's error messages still point into the right `.cu` file.

use crate::{Error, Result};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileError, CompileOptions, Ptx};
use std::collections::HashMap;
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
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

pub(crate) const NVRTC_MISSING: &str = "libnvrtc.so.13 not found: the CUDA backend compiles its kernels at run time \
     with NVRTC; install it (e.g. `pip install nvidia-cuda-nvrtc==13.0.88`, see .ci/run) and put its lib \
     directory on LD_LIBRARY_PATH";

/// Compiles one kernel source (without the prelude; it is added here) to PTX.
/// Errors carry the file name and NVRTC's log.
pub fn compile_ptx(name: &str, src: &str) -> Result<Ptx> {
    if !nvrtc_available() {
        return Err(Error::Cuda(NVRTC_MISSING.to_string()));
    }
    let full = format!("{PRELUDE}\n#line 1 \"{name}.cu\"\n{src}");
    let opts = CompileOptions { arch: Some("compute_90"), name: Some(format!("{name}.cu")), ..Default::default() };
    compile_ptx_with_opts(full, opts).map_err(|e| match e {
        CompileError::CompileError { log, .. } => {
            Error::Cuda(format!("NVRTC failed to compile {name}.cu:\n{}", log.to_string_lossy()))
        }
        other => Error::Cuda(format!("NVRTC failed on {name}.cu: {other:?}")),
    })
}

/// The PTX of module `name`, compiled on the first request in this process.
pub(crate) fn cached_ptx(name: &str) -> Result<Ptx> {
    static CACHE: OnceLock<Mutex<HashMap<String, Ptx>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    // The lock is held while compiling so that two threads never compile the
    // same module twice; compiles happen once per module per process.
    let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(ptx) = map.get(name) {
        return Ok(ptx.clone());
    }
    let ptx = compile_ptx(name, kernel_source(name)?)?;
    map.insert(name.to_string(), ptx.clone());
    Ok(ptx)
}
