//! A storage is one flat buffer on one device; it dispatches every op to
//! the device's `BackendStorage` implementation.
//!
//! Live storage bytes are counted globally (`live_bytes`), so tests and
//! benchmarks can check that training does not leak memory.

use crate::backend::BackendStorage;
use crate::cpu::{CpuDevice, CpuStorage};
use crate::cuda::CudaStorage;
use crate::{DType, Device, Error, Layout, Result};
use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

#[derive(Debug)]
pub enum Storage {
    Cpu(CpuStorage),
    Cuda(CudaStorage),
}

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static PEAK_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Bytes held by all storages alive right now, on every device.
pub fn live_bytes() -> usize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

/// The highest `live_bytes` seen since the last `reset_peak_bytes`.
pub fn peak_bytes() -> usize {
    PEAK_BYTES.load(Ordering::Relaxed)
}

pub fn reset_peak_bytes() {
    PEAK_BYTES.store(live_bytes(), Ordering::Relaxed);
}

/// A storage shared by tensors (views), counted while alive. The lock lets
/// optimizers update parameters in place.
#[derive(Debug)]
pub struct StorageCell {
    storage: RwLock<Storage>,
    bytes: usize,
    /// A value computed from the contents, kept until they are next
    /// written (see `derived`).
    derived: Mutex<Option<(DerivedKey, Arc<Storage>)>>,
}

/// What a derived value was computed from, and how: the backend's name for
/// the computation, and the view of the storage it read.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DerivedKey {
    pub kind: u64,
    pub offset: usize,
    pub dims: Vec<usize>,
}

impl StorageCell {
    pub fn new(storage: Storage) -> Self {
        let bytes = storage.len() * storage.dtype().size_in_bytes();
        let now = LIVE_BYTES.fetch_add(bytes, Ordering::Relaxed) + bytes;
        PEAK_BYTES.fetch_max(now, Ordering::Relaxed);
        StorageCell { storage: RwLock::new(storage), bytes, derived: Mutex::new(None) }
    }
    pub fn read(&self) -> RwLockReadGuard<'_, Storage> {
        self.storage.read().unwrap_or_else(|e| e.into_inner())
    }
    /// Write access, which drops the derived value: it no longer matches.
    pub fn write(&self) -> RwLockWriteGuard<'_, Storage> {
        let guard = self.storage.write().unwrap_or_else(|e| e.into_inner());
        self.forget_derived();
        guard
    }

    /// Drops the derived value, if any, to give its memory back.
    pub(crate) fn forget_derived(&self) {
        *self.derived.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The value derived from these contents as `key` says, computing it
    /// with `derive` (and keeping it) unless it is kept already: e.g. a
    /// convolution's filters transformed once for all the steps of a
    /// sampling run. One value is kept at a time. The caller holds a read
    /// guard from `read` while it asks, so no write can come between the
    /// contents `derive` reads and the value kept.
    pub(crate) fn derived(&self, _read: &RwLockReadGuard<'_, Storage>, key: DerivedKey, derive: impl FnOnce() -> Result<Storage>) -> Result<Arc<Storage>> {
        let slot = || self.derived.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((kept, value)) = slot().as_ref() {
            if *kept == key {
                return Ok(value.clone());
            }
        }
        // Computed without the lock: `derive` may run on the thread pool,
        // whose threads could meanwhile pick up another caller of this.
        let value = Arc::new(derive()?);
        *slot() = Some((key, value.clone()));
        Ok(value)
    }
}

impl Drop for StorageCell {
    fn drop(&mut self) {
        LIVE_BYTES.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl Storage {
    pub fn dtype(&self) -> DType {
        match self {
            Storage::Cpu(s) => s.dtype(),
            Storage::Cuda(s) => s.dtype(),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Storage::Cpu(s) => s.len(),
            Storage::Cuda(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            Storage::Cuda(s) => Device::Cuda(s.device().clone()),
        }
    }

    pub fn full(device: &Device, n: usize, dtype: DType, value: f64) -> Result<Storage> {
        Ok(match device {
            Device::Cpu => Storage::Cpu(CpuStorage::full(&CpuDevice, n, dtype, value)?),
            Device::Cuda(d) => Storage::Cuda(CudaStorage::full(d, n, dtype, value)?),
        })
    }

    pub fn rand_uniform(device: &Device, n: usize, dtype: DType, key: u64, start: u64, lo: f64, hi: f64) -> Result<Storage> {
        Ok(match device {
            Device::Cpu => Storage::Cpu(CpuStorage::rand_uniform(&CpuDevice, n, dtype, key, start, lo, hi)?),
            Device::Cuda(d) => Storage::Cuda(CudaStorage::rand_uniform(d, n, dtype, key, start, lo, hi)?),
        })
    }

    pub fn rand_normal(device: &Device, n: usize, dtype: DType, key: u64, start: u64, mean: f64, std: f64) -> Result<Storage> {
        Ok(match device {
            Device::Cpu => Storage::Cpu(CpuStorage::rand_normal(&CpuDevice, n, dtype, key, start, mean, std)?),
            Device::Cuda(d) => Storage::Cuda(CudaStorage::rand_normal(d, n, dtype, key, start, mean, std)?),
        })
    }

    /// `BackendStorage::dropout_mask` on `device`.
    #[allow(clippy::too_many_arguments)]
    pub fn dropout_mask(device: &Device, n: usize, dtype: DType, keep: f64, scale: f64, key: u64, start: u64) -> Result<Option<Storage>> {
        Ok(match device {
            Device::Cpu => CpuStorage::dropout_mask(&CpuDevice, n, dtype, keep, scale, key, start)?.map(Storage::Cpu),
            Device::Cuda(d) => CudaStorage::dropout_mask(d, n, dtype, keep, scale, key, start)?.map(Storage::Cuda),
        })
    }

    /// A host storage moved onto `device` (no copy when that is the host).
    pub fn from_cpu(device: &Device, cpu: CpuStorage) -> Result<Storage> {
        Ok(match device {
            Device::Cpu => Storage::Cpu(cpu),
            Device::Cuda(d) => Storage::Cuda(CudaStorage::from_cpu(d, &cpu)?),
        })
    }

    /// A copy of this storage on `device`, by way of the host unless it
    /// already is there.
    pub fn to_device(&self, device: &Device) -> Result<Storage> {
        let host = self.to_cpu()?;
        Ok(match device {
            Device::Cpu => Storage::Cpu(host.into_owned()),
            Device::Cuda(d) => Storage::Cuda(CudaStorage::from_cpu(d, &host)?),
        })
    }

    /// The CPU storage, copying from the device when needed.
    pub fn to_cpu(&self) -> Result<Cow<'_, CpuStorage>> {
        Ok(match self {
            Storage::Cpu(s) => Cow::Borrowed(s),
            Storage::Cuda(s) => Cow::Owned(BackendStorage::to_cpu(s)?),
        })
    }

    /// Joins `parts` along `dim` on whichever backend holds them all.
    pub fn cat(op: &'static str, parts: &[(&Storage, &Layout)], dim: usize) -> Result<Storage> {
        fn all<'a, S>(parts: &[(&'a Storage, &'a Layout)], pick: impl Fn(&'a Storage) -> Option<&'a S>) -> Option<Vec<(&'a S, &'a Layout)>> {
            parts.iter().map(|&(s, l)| pick(s).map(|s| (s, l))).collect()
        }
        let storages: Vec<&Storage> = parts.iter().map(|&(s, _)| s).collect();
        let mismatch = || device_mismatch_among(op, &storages);
        Ok(match parts[0].0 {
            Storage::Cpu(_) => {
                let cpu = all(parts, |s| if let Storage::Cpu(s) = s { Some(s) } else { None }).ok_or_else(mismatch)?;
                Storage::Cpu(CpuStorage::cat(&cpu, dim)?)
            }
            Storage::Cuda(_) => {
                let cuda = all(parts, |s| if let Storage::Cuda(s) = s { Some(s) } else { None }).ok_or_else(mismatch)?;
                Storage::Cuda(CudaStorage::cat(&cuda, dim)?)
            }
        })
    }
}

/// The error for operands on different devices: names the first operand's
/// device and the first that differs from it.
pub(crate) fn device_mismatch_among(op: &'static str, operands: &[&Storage]) -> Error {
    let lhs = operands[0].device();
    let rhs = operands.iter().map(|s| s.device()).find(|d| *d != lhs).unwrap_or_else(|| lhs.clone());
    Error::DeviceMismatch { op, lhs: lhs.to_string(), rhs: rhs.to_string() }
}

/// Runs one `BackendStorage` call on whichever backend holds the operands,
/// after checking that they all share it: the one place where the front
/// end meets the list of backends.
///
/// The short forms bind each operand to a backend storage and wrap the
/// call's result (a backend storage) back into a `Storage`:
///
/// ```text
/// let out = dispatch!("unary", &*x.storage(), |s| s.unary(x.layout(), op));
/// ```
///
/// The general form takes any number of operands in parentheses (shared or
/// `&mut`) and also binds `wrap`, the `Storage` variant of the backend in
/// use, for calls that return something else (a tuple, nothing, a flag):
///
/// ```text
/// let (y, stats) = dispatch!("op", (&*a, &mut *b), |x, y; wrap| {
///     let (y, stats) = x.op(y)?;
///     (wrap(y), wrap(stats))
/// });
/// ```
///
/// Operands on different backends return `Error::DeviceMismatch` from the
/// enclosing function.
macro_rules! dispatch {
    ($op:literal, ($($s:expr),+ $(,)?), |$($x:ident),+ ; $wrap:ident| $body:expr) => {
        match ($($s,)+) {
            ($($crate::storage::Storage::Cpu($x),)+) => {
                let $wrap = $crate::storage::Storage::Cpu;
                $body
            }
            ($($crate::storage::Storage::Cuda($x),)+) => {
                let $wrap = $crate::storage::Storage::Cuda;
                $body
            }
            #[allow(unreachable_patterns)]
            ($($x,)+) => return Err($crate::storage::device_mismatch_among($op, &[$(&*$x),+])),
        }
    };
    ($op:literal, $a:expr, |$x:ident| $body:expr) => {
        $crate::storage::dispatch!($op, ($a), |$x; wrap| wrap($body?))
    };
    ($op:literal, $a:expr, $b:expr, |$x:ident, $y:ident| $body:expr) => {
        $crate::storage::dispatch!($op, ($a, $b), |$x, $y; wrap| wrap($body?))
    };
    ($op:literal, $a:expr, $b:expr, $c:expr, |$x:ident, $y:ident, $z:ident| $body:expr) => {
        $crate::storage::dispatch!($op, ($a, $b, $c), |$x, $y, $z; wrap| wrap($body?))
    };
}
pub(crate) use dispatch;
