//! The CUDA backend: device handle, device storage, and the kernels.
//!
//! Everything CUDA goes through `cudarc` with dynamic loading, so the crate
//! builds and its CPU side runs on machines with no NVIDIA software at all;
//! `CudaDevice::new` checks that each library can be loaded *before* the first
//! call into it (cudarc panics on a missing library) and turns every problem
//! into an `Error::Cuda` that names what is missing.
//!
//! Design, in short:
//! - One `CudaDevice` per GPU per process (a registry hands out clones), so
//!   every tensor on GPU 0 shares one stream. All work is enqueued on that
//!   stream, in order; the host waits only when it reads data back
//!   (`to_cpu`) or asks to (`synchronize`).
//! - `CudaStorage` is an untyped device buffer plus its dtype. Buffers come
//!   from a caching allocator (`allocator.rs`), so steady-state training does
//!   no `cuMemAlloc`.
//! - Kernels are CUDA C in `.cu` files next to the Rust that launches them,
//!   compiled by NVRTC on first use for the GPU's own architecture
//!   (`compile.rs`); which GPUs run, in which dtypes, is in `arch.rs`. Kernel arguments are raw
//!   device addresses with the layout offset already applied, plus small
//!   `#[repr(C)]` structs (shapes, strides) passed by value.
//! - Matrix products (matmul, and conv2d after im2col) run on cuBLAS.
//!   `PETAL_CUDA_CONV=implicit` (read once) switches conv2d and its two
//!   backward passes to implicit-GEMM kernels that never build the im2col
//!   columns (`conv_implicit.rs`); they are new and not the default.

mod allocator;
pub mod arch;
pub mod profile;
mod backend;
pub mod compile;
mod conv;
mod conv_implicit;
mod copy;
mod elementwise;
mod group_norm;
mod index_select;
mod strided;
mod matmul;
mod optim;
mod pool;
mod random;
mod reduce;
pub mod system;
mod upsample;

#[cfg(test)]
mod tests;

pub use allocator::MemoryStats;
pub use arch::ComputeCapability;
pub use compile::{all_kernel_sources, compile, nvrtc_archs, nvrtc_available, nvrtc_version, KernelCode, Target};

use crate::cpu::CpuStorage;
use crate::{DType, Error, Result};
use allocator::{CachingAllocator, DeviceBuffer};
use cudarc::cublas::CudaBlas;
use cudarc::driver::sys::CUresult;
use cudarc::driver::{result as drv, CudaContext, CudaFunction, CudaModule, CudaStream, DriverError, LaunchConfig};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// A CUDA GPU. Cloning is cheap (an `Arc`); clones share the stream, the
/// cuBLAS handle, the loaded kernels and the memory cache.
#[derive(Clone)]
pub struct CudaDevice {
    inner: Arc<DeviceInner>,
}

struct DeviceInner {
    ordinal: usize,
    name: String,
    capability: ComputeCapability,
    /// What the kernels are compiled to for this GPU (`compile.rs`).
    target: Target,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: Mutex<CudaBlas>,
    allocator: Arc<CachingAllocator>,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<String, CudaFunction>>,
    tf32: AtomicBool,
}

/// A driver error as text: its name and NVIDIA's description.
pub(crate) fn describe(e: &DriverError) -> String {
    let name = e.error_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|_| format!("{:?}", e.0));
    match e.error_string() {
        Ok(s) => format!("{name} ({})", s.to_string_lossy()),
        Err(_) => name,
    }
}

/// `.ctx("what")` turns a cudarc error into `Error::Cuda("what: ...")`.
pub(crate) trait CudaResultExt<T> {
    fn ctx(self, what: &str) -> Result<T>;
}
impl<T> CudaResultExt<T> for std::result::Result<T, DriverError> {
    fn ctx(self, what: &str) -> Result<T> {
        self.map_err(|e| Error::Cuda(format!("{what}: {}", describe(&e))))
    }
}
impl<T> CudaResultExt<T> for std::result::Result<T, cudarc::cublas::result::CublasError> {
    fn ctx(self, what: &str) -> Result<T> {
        self.map_err(|e| Error::Cuda(format!("{what}: cuBLAS {e:?}")))
    }
}

fn libraries_present() -> Result<()> {
    // SAFETY: these only try to dlopen the libraries.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(Error::Cuda(
            "libcuda.so not found: no NVIDIA driver on this machine (the CUDA backend needs the driver's \
             libcuda.so; use the CPU device here)"
                .into(),
        ));
    }
    if !compile::nvrtc_available() {
        return Err(Error::Cuda(compile::NVRTC_MISSING.into()));
    }
    if !unsafe { cudarc::cublas::sys::is_culib_present() } {
        return Err(Error::Cuda(
            "libcublas not found (libcublas.so.13 or .12): the CUDA backend needs cuBLAS for matrix products; \
             install it (`pip install nvidia-cublas` for a driver 580 or newer, `pip install nvidia-cublas-cu12` \
             for drivers 525 to 575) and put its lib directory (nvidia/cu13/lib or nvidia/cublas/lib) on \
             LD_LIBRARY_PATH"
                .into(),
        ));
    }
    Ok(())
}

/// True when a CUDA device can be used: the libraries load and the driver
/// reports at least one GPU. Never panics.
pub fn cuda_is_available() -> bool {
    libraries_present().is_ok() && CudaContext::device_count().map(|n| n > 0).unwrap_or(false)
}

/// The first GPU for a test that needs one, or `None` after printing a loud
/// "SKIPPED" line saying why. On GPU machines `PETAL_REQUIRE_CUDA=1` turns a
/// missing device into a failure instead, so a broken setup cannot pass as
/// a skip.
pub fn device_for_tests() -> Option<CudaDevice> {
    match CudaDevice::new(0) {
        Ok(d) => Some(d),
        Err(e) => {
            if std::env::var("PETAL_REQUIRE_CUDA").as_deref() == Ok("1") {
                panic!("PETAL_REQUIRE_CUDA=1 but the CUDA device cannot be opened: {e}");
            }
            eprintln!("SKIPPED: no CUDA device ({e})");
            None
        }
    }
}

impl CudaDevice {
    /// The GPU `ordinal`, opened once per process (later calls return a
    /// clone). Fails with a message naming what is missing: the driver
    /// library, NVRTC, cuBLAS, or a GPU.
    pub fn new(ordinal: usize) -> Result<CudaDevice> {
        static DEVICES: OnceLock<Mutex<HashMap<usize, CudaDevice>>> = OnceLock::new();
        let registry = DEVICES.get_or_init(|| Mutex::new(HashMap::new()));
        let mut devices = registry.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = devices.get(&ordinal) {
            return Ok(d.clone());
        }
        let device = Self::open(ordinal)?;
        devices.insert(ordinal, device.clone());
        Ok(device)
    }

    fn open(ordinal: usize) -> Result<CudaDevice> {
        libraries_present()?;
        system::check_library_versions()?;
        let ctx = CudaContext::new(ordinal).map_err(|e| match e.0 {
            CUresult::CUDA_ERROR_NO_DEVICE => Error::Cuda(
                "no CUDA device: the NVIDIA driver is installed but reports no GPU (CUDA_ERROR_NO_DEVICE)".into(),
            ),
            CUresult::CUDA_ERROR_INVALID_DEVICE => {
                let count = CudaContext::device_count().unwrap_or(0);
                Error::Cuda(format!("no CUDA device {ordinal}: this machine has {count} GPU(s)"))
            }
            CUresult::CUDA_ERROR_STUB_LIBRARY => Error::Cuda(
                "the libcuda.so found is the toolkit's stub, not a real NVIDIA driver (CUDA_ERROR_STUB_LIBRARY)".into(),
            ),
            CUresult::CUDA_ERROR_SYSTEM_DRIVER_MISMATCH => Error::Cuda(
                "libcuda.so does not match the loaded NVIDIA kernel driver (CUDA_ERROR_SYSTEM_DRIVER_MISMATCH)".into(),
            ),
            _ => Error::Cuda(format!("opening CUDA device {ordinal}: {}", describe(&e))),
        })?;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let (major, minor) = ctx.compute_capability().ctx("reading the GPU's compute capability")?;
        let capability = ComputeCapability::new(major as u32, minor as u32);
        arch::check_supported(&name, capability)?;
        let target = compile::target_for(capability, &compile::nvrtc_archs()?)?;
        let stream = ctx.new_stream().ctx("creating a CUDA stream")?;
        let blas = CudaBlas::new(stream.clone()).ctx("creating the cuBLAS handle")?;
        let allocator = CachingAllocator::new(ctx.clone());
        Ok(CudaDevice {
            inner: Arc::new(DeviceInner {
                ordinal,
                name,
                capability,
                target,
                ctx,
                stream,
                blas: Mutex::new(blas),
                allocator,
                modules: Mutex::new(HashMap::new()),
                functions: Mutex::new(HashMap::new()),
                tf32: AtomicBool::new(false),
            }),
        })
    }

    pub fn ordinal(&self) -> usize {
        self.inner.ordinal
    }

    /// The GPU's name as the driver reports it.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The GPU's architecture, e.g. 8.9 for an RTX 4090.
    pub fn compute_capability(&self) -> ComputeCapability {
        self.inner.capability
    }

    /// What the kernels are compiled to here: a cubin for this exact
    /// architecture, or PTX where NVRTC is older than the GPU.
    pub fn kernel_target(&self) -> Target {
        self.inner.target
    }

    /// Refuses a dtype this GPU cannot compute with (bf16 before Ampere),
    /// with a message naming the GPU. Every device allocation checks it.
    pub fn check_dtype(&self, dtype: DType) -> Result<()> {
        arch::check_dtype(&self.inner.name, self.inner.capability, dtype)
    }

    /// Waits until all work enqueued on this device has finished.
    pub fn synchronize(&self) -> Result<()> {
        self.bind()?;
        self.inner.stream.synchronize().ctx("synchronizing the CUDA stream")
    }

    /// Bytes in use, cached and at peak in this device's allocator.
    pub fn memory_stats(&self) -> MemoryStats {
        self.inner.allocator.stats()
    }

    /// Starts a new peak measurement at the current use.
    pub fn reset_peak_memory(&self) {
        self.inner.allocator.reset_peak()
    }

    /// Free and total memory of this GPU as the driver counts them. Blocks
    /// that petal's own allocator caches (`memory_stats().cached`) count as
    /// used here, since the driver cannot see that petal would reuse them.
    pub fn memory_info(&self) -> Result<crate::MemoryInfo> {
        // cuMemGetInfo answers for the context current on this thread.
        self.bind()?;
        let (free, total) = drv::mem_get_info().ctx("asking the GPU for its free memory")?;
        Ok(crate::MemoryInfo { free_bytes: free as u64, total_bytes: total as u64 })
    }

    /// Hands every cached (free) block back to the driver.
    pub fn empty_cache(&self) -> Result<()> {
        self.inner.allocator.empty_cache().ctx("freeing cached device memory")
    }

    /// Lets f32 matrix products use TF32 tensor cores (about 10 mantissa
    /// bits in the products, much faster). Off by default. Refused on GPUs
    /// older than Ampere, which have no TF32.
    pub fn set_tf32(&self, on: bool) -> Result<()> {
        if on {
            arch::check_tf32(&self.inner.name, self.inner.capability)?;
        }
        self.inner.tf32.store(on, Ordering::Relaxed);
        Ok(())
    }

    pub fn tf32(&self) -> bool {
        self.inner.tf32.load(Ordering::Relaxed)
    }

    // ---- construction of storages ----

    /// Uninitialised storage of `n` elements.
    pub(crate) fn alloc(&self, n: usize, dtype: DType) -> Result<CudaStorage> {
        self.check_dtype(dtype)?;
        let buf = self.inner.allocator.alloc(n * dtype.size_in_bytes()).ctx("allocating device memory")?;
        Ok(CudaStorage { buf, dtype, len: n, device: self.clone() })
    }

    pub fn zeros(&self, n: usize, dtype: DType) -> Result<CudaStorage> {
        let s = self.alloc(n, dtype)?;
        if n > 0 {
            self.bind()?;
            // SAFETY: the buffer holds n * size bytes.
            unsafe { drv::memset_d8_async(s.ptr(), 0, n * dtype.size_in_bytes(), self.cu_stream()) }
                .ctx("zeroing device memory")?;
        }
        Ok(s)
    }

    /// `n` copies of `value` (converted to `dtype` as the CPU backend does).
    pub fn full(&self, n: usize, dtype: DType, value: f64) -> Result<CudaStorage> {
        if value == 0.0 && !value.is_sign_negative() {
            return self.zeros(n, dtype);
        }
        copy::fill(self, n, dtype, value)
    }

    /// Copies a host storage to this device.
    pub fn from_cpu(&self, cpu: &CpuStorage) -> Result<CudaStorage> {
        fn upload<T>(dev: &CudaDevice, data: &[T], dtype: DType) -> Result<CudaStorage> {
            let s = dev.alloc(data.len(), dtype)?;
            if !data.is_empty() {
                dev.bind()?;
                // SAFETY: the buffer holds data.len() elements of T. A copy from
                // pageable host memory returns only once the data has been
                // staged, so `data` may be freed right after.
                unsafe { drv::memcpy_htod_async(s.ptr(), data, dev.cu_stream()) }.ctx("copying to the GPU")?;
            }
            Ok(s)
        }
        match cpu {
            CpuStorage::F32(v) => upload(self, v, DType::F32),
            CpuStorage::F64(v) => upload(self, v, DType::F64),
            CpuStorage::F16(v) => upload(self, v, DType::F16),
            CpuStorage::BF16(v) => upload(self, v, DType::BF16),
            CpuStorage::U32(v) => upload(self, v, DType::U32),
        }
    }

    /// Uniform [lo, hi) values: element i is `rng::uniform_at(key, start, i, lo, hi)`.
    pub fn rand_uniform(&self, n: usize, dtype: DType, key: u64, start: u64, lo: f64, hi: f64) -> Result<CudaStorage> {
        random::uniform(self, n, dtype, key, start, lo, hi)
    }

    /// Normal values: element i is `mean + std * rng::normal_at(key, start, i)`.
    pub fn rand_normal(&self, n: usize, dtype: DType, key: u64, start: u64, mean: f64, std: f64) -> Result<CudaStorage> {
        random::normal(self, n, dtype, key, start, mean, std)
    }

    // ---- plumbing for the kernel modules ----

    fn bind(&self) -> Result<()> {
        self.inner.ctx.bind_to_thread().ctx("binding the CUDA context")
    }

    pub(crate) fn stream(&self) -> &Arc<CudaStream> {
        &self.inner.stream
    }

    fn cu_stream(&self) -> cudarc::driver::sys::CUstream {
        self.inner.stream.cu_stream()
    }

    pub(crate) fn blas(&self) -> std::sync::MutexGuard<'_, CudaBlas> {
        self.inner.blas.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Raw device memory for scratch space (im2col columns, partial sums).
    pub(crate) fn scratch(&self, bytes: usize) -> Result<DeviceBuffer> {
        self.inner.allocator.alloc(bytes).ctx("allocating device scratch memory")
    }

    /// Kernel `name` from source module `module`, compiled and loaded on first use.
    pub(crate) fn func(&self, module: &'static str, name: &str) -> Result<CudaFunction> {
        self.profile_mark(|| format!("{module}::{name}"));
        if let Some(f) = self.inner.functions.lock().unwrap_or_else(|e| e.into_inner()).get(name) {
            return Ok(f.clone());
        }
        let module_handle = {
            let mut modules = self.inner.modules.lock().unwrap_or_else(|e| e.into_inner());
            match modules.get(module) {
                Some(m) => m.clone(),
                None => {
                    let code = compile::cached(module, self.inner.target)?;
                    let what = format!("loading the kernels of {module}.cu ({})", self.inner.target);
                    let m = self.inner.ctx.load_module(code.to_cudarc()).ctx(&what)?;
                    modules.insert(module, m.clone());
                    m
                }
            }
        };
        let f = module_handle.load_function(name).ctx(&format!("finding kernel {name} in {module}.cu"))?;
        self.inner.functions.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), f.clone());
        Ok(f)
    }

    /// Opens a new profiler label (see `profile.rs`) when profiling is on.
    pub(crate) fn profile_mark(&self, label: impl FnOnce() -> String) {
        if profile::enabled() {
            profile::mark(label, || {
                let _ = self.inner.stream.synchronize();
            });
        }
    }

    /// Device-to-device copy of `bytes` bytes, in stream order.
    pub(crate) fn copy_bytes(&self, dst: u64, src: u64, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        self.profile_mark(|| "memcpy device to device".into());
        self.bind()?;
        // SAFETY: callers pass addresses inside live buffers with `bytes` to spare.
        unsafe { drv::memcpy_dtod_async(dst, src, bytes, self.cu_stream()) }.ctx("device-to-device copy")
    }

    /// Zeroes `bytes` bytes at `dst`, in stream order.
    pub(crate) fn zero_bytes(&self, dst: u64, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        self.profile_mark(|| "memset zero".into());
        self.bind()?;
        // SAFETY: as for copy_bytes.
        unsafe { drv::memset_d8_async(dst, 0, bytes, self.cu_stream()) }.ctx("zeroing device memory")
    }

    /// Reads `n` values of T at `src` back to the host (waits for the device).
    pub(crate) fn read_back<T: Default + Clone>(&self, src: u64, n: usize) -> Result<Vec<T>> {
        let mut out = vec![T::default(); n];
        if n > 0 {
            self.profile_mark(|| "copy to host".into());
            self.bind()?;
            // SAFETY: `src` holds n values of T; we synchronize before `out` is used.
            unsafe { drv::memcpy_dtoh_async(&mut out, src, self.cu_stream()) }.ctx("copying from the GPU")?;
            self.inner.stream.synchronize().ctx("waiting for the GPU")?;
        }
        Ok(out)
    }
}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaDevice({}: {})", self.inner.ordinal, self.inner.name)
    }
}

impl PartialEq for CudaDevice {
    fn eq(&self, other: &Self) -> bool {
        self.inner.ordinal == other.inner.ordinal && self.inner.ctx.cu_ctx() == other.inner.ctx.cu_ctx()
    }
}
impl Eq for CudaDevice {}

/// Threads per block of the elementwise kernels.
pub(crate) const BLOCK: u32 = 256;

/// A 1-D launch over `n` items for a grid-stride kernel: enough blocks to
/// fill the GPU many times over, capped (the loop covers the rest).
pub(crate) fn launch_cfg(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(BLOCK as usize).clamp(1, 1 << 16) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
}

/// Element counts and offsets are 32-bit inside the kernels (faster index
/// arithmetic); this refuses anything larger, with a clear message.
pub(crate) fn check_u32(op: &'static str, n: usize) -> Result<u32> {
    if n > (i32::MAX as usize) {
        return Err(Error::BadArgument {
            op,
            msg: format!("{n} elements exceed the CUDA backend's 32-bit indexing limit (2^31)"),
        });
    }
    Ok(n as u32)
}

/// A flat buffer of one dtype on one GPU.
pub struct CudaStorage {
    buf: DeviceBuffer,
    dtype: DType,
    len: usize,
    device: CudaDevice,
}

impl CudaStorage {
    pub fn device(&self) -> &CudaDevice {
        &self.device
    }

    /// Copies the whole storage to the host (waits for the device).
    pub fn to_cpu(&self) -> Result<CpuStorage> {
        let (d, p, n) = (&self.device, self.ptr(), self.len);
        Ok(match self.dtype {
            DType::F32 => CpuStorage::F32(d.read_back(p, n)?),
            DType::F64 => CpuStorage::F64(d.read_back(p, n)?),
            DType::F16 => CpuStorage::F16(d.read_back(p, n)?),
            DType::BF16 => CpuStorage::BF16(d.read_back(p, n)?),
            DType::U32 => CpuStorage::U32(d.read_back(p, n)?),
        })
    }

    /// A copy of the whole storage on the same device.
    pub fn try_clone(&self) -> Result<CudaStorage> {
        let out = self.device.alloc(self.len, self.dtype)?;
        self.device.copy_bytes(out.ptr(), self.ptr(), self.len * self.dtype.size_in_bytes())?;
        Ok(out)
    }

    /// Device address of element 0.
    pub(crate) fn ptr(&self) -> u64 {
        self.buf.ptr()
    }

    /// Device address of element `offset`.
    pub(crate) fn ptr_at(&self, offset: usize) -> u64 {
        self.buf.ptr() + (offset * self.dtype.size_in_bytes()) as u64
    }
}

impl std::fmt::Debug for CudaStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaStorage({} x {} on cuda:{})", self.len, self.dtype, self.device.ordinal())
    }
}
