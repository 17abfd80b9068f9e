//! A storage is one flat buffer on one device; it dispatches every op to
//! the device's `BackendStorage` implementation.
//!
//! Live storage bytes are counted globally (`live_bytes`), so tests and
//! benchmarks can check that training does not leak memory.

use crate::backend::BackendStorage;
use crate::cpu::CpuStorage;
use crate::cuda::CudaStorage;
use crate::{DType, Device, Error, Result};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

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
}

impl StorageCell {
    pub fn new(storage: Storage) -> Self {
        let bytes = storage.len() * storage.dtype().size_in_bytes();
        let now = LIVE_BYTES.fetch_add(bytes, Ordering::Relaxed) + bytes;
        PEAK_BYTES.fetch_max(now, Ordering::Relaxed);
        StorageCell { storage: RwLock::new(storage), bytes }
    }
    pub fn read(&self) -> RwLockReadGuard<'_, Storage> {
        self.storage.read().unwrap_or_else(|e| e.into_inner())
    }
    pub fn write(&self) -> RwLockWriteGuard<'_, Storage> {
        self.storage.write().unwrap_or_else(|e| e.into_inner())
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
            Storage::Cuda(s) => BackendStorage::dtype(s),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Storage::Cpu(s) => BackendStorage::len(s),
            Storage::Cuda(s) => BackendStorage::len(s),
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
            Device::Cpu => Storage::Cpu(CpuStorage::full(n, dtype, value)),
            Device::Cuda(d) => Storage::Cuda(d.full(n, dtype, value)?),
        })
    }

    pub fn rand_uniform(device: &Device, n: usize, dtype: DType, key: u64, start: u64, lo: f64, hi: f64) -> Result<Storage> {
        Ok(match device {
            Device::Cpu => Storage::Cpu(CpuStorage::rand_uniform(n, dtype, key, start, lo, hi)?),
            Device::Cuda(d) => Storage::Cuda(d.rand_uniform(n, dtype, key, start, lo, hi)?),
        })
    }

    pub fn rand_normal(device: &Device, n: usize, dtype: DType, key: u64, start: u64, mean: f64, std: f64) -> Result<Storage> {
        Ok(match device {
            Device::Cpu => Storage::Cpu(CpuStorage::rand_normal(n, dtype, key, start, mean, std)?),
            Device::Cuda(d) => Storage::Cuda(d.rand_normal(n, dtype, key, start, mean, std)?),
        })
    }

    /// A copy of this storage on `device`.
    pub fn to_device(&self, device: &Device) -> Result<Storage> {
        Ok(match (self, device) {
            (Storage::Cpu(s), Device::Cpu) => Storage::Cpu(s.clone()),
            (Storage::Cpu(s), Device::Cuda(d)) => Storage::Cuda(d.from_cpu(s)?),
            (Storage::Cuda(s), Device::Cpu) => Storage::Cpu(s.to_cpu()?),
            (Storage::Cuda(s), Device::Cuda(d)) => Storage::Cuda(d.from_cpu(&s.to_cpu()?)?),
        })
    }

    /// The CPU storage, copying from the device when needed.
    pub fn to_cpu(&self) -> Result<std::borrow::Cow<'_, CpuStorage>> {
        Ok(match self {
            Storage::Cpu(s) => std::borrow::Cow::Borrowed(s),
            Storage::Cuda(s) => std::borrow::Cow::Owned(s.to_cpu()?),
        })
    }
}

pub(crate) fn device_mismatch(op: &'static str, a: &Storage, b: &Storage) -> Error {
    Error::DeviceMismatch { op, lhs: a.device().to_string(), rhs: b.device().to_string() }
}

/// Calls the same `BackendStorage` method on whichever backend holds the
/// operands, after checking they share a device.
macro_rules! dispatch {
    ($op:literal, $s:expr, |$x:ident| $body:expr) => {
        match $s {
            $crate::storage::Storage::Cpu($x) => $crate::storage::Storage::Cpu($body?),
            $crate::storage::Storage::Cuda($x) => $crate::storage::Storage::Cuda($body?),
        }
    };
    ($op:literal, $a:expr, $b:expr, |$x:ident, $y:ident| $body:expr) => {
        match ($a, $b) {
            ($crate::storage::Storage::Cpu($x), $crate::storage::Storage::Cpu($y)) => $crate::storage::Storage::Cpu($body?),
            ($crate::storage::Storage::Cuda($x), $crate::storage::Storage::Cuda($y)) => $crate::storage::Storage::Cuda($body?),
            (a, b) => return Err($crate::storage::device_mismatch($op, a, b)),
        }
    };
    ($op:literal, $a:expr, $b:expr, $c:expr, |$x:ident, $y:ident, $z:ident| $body:expr) => {
        match ($a, $b, $c) {
            ($crate::storage::Storage::Cpu($x), $crate::storage::Storage::Cpu($y), $crate::storage::Storage::Cpu($z)) => {
                $crate::storage::Storage::Cpu($body?)
            }
            ($crate::storage::Storage::Cuda($x), $crate::storage::Storage::Cuda($y), $crate::storage::Storage::Cuda($z)) => {
                $crate::storage::Storage::Cuda($body?)
            }
            (a, b, _) => return Err($crate::storage::device_mismatch($op, a, b)),
        }
    };
}
pub(crate) use dispatch;
