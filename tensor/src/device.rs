//! Where a tensor lives.

use crate::cuda::CudaDevice;
use crate::Result;
use std::fmt;

#[derive(Clone, Debug, PartialEq)]
pub enum Device {
    Cpu,
    Cuda(CudaDevice),
}

impl Device {
    /// The CUDA device `ordinal`, or an error that says what is missing
    /// (driver library, device). Never panics.
    pub fn cuda(ordinal: usize) -> Result<Device> {
        Ok(Device::Cuda(CudaDevice::new(ordinal)?))
    }

    /// The first CUDA device if there is one, else the CPU together with the
    /// reason no GPU could be used, so callers can tell the user.
    pub fn cuda_or_cpu() -> (Device, Option<String>) {
        match Device::cuda(0) {
            Ok(d) => (d, None),
            Err(e) => (Device::Cpu, Some(e.to_string())),
        }
    }

    /// How much memory this device has free and in all: `MemAvailable` and
    /// `MemTotal` of `/proc/meminfo` for the CPU, the driver's count for a
    /// GPU. An error (never a panic) where the answer cannot be had, e.g.
    /// on a system without `/proc/meminfo`.
    pub fn memory_info(&self) -> Result<MemoryInfo> {
        match self {
            Device::Cpu => crate::cpu::memory_info(),
            Device::Cuda(d) => d.memory_info(),
        }
    }

    pub fn is_cpu(&self) -> bool {
        matches!(self, Device::Cpu)
    }

    pub fn is_cuda(&self) -> bool {
        matches!(self, Device::Cuda(_))
    }
}

/// A device's memory in bytes, as its owner (the kernel, the GPU driver)
/// counts it: what is free for new allocations, and the whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryInfo {
    pub free_bytes: u64,
    pub total_bytes: u64,
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(d) => write!(f, "cuda:{}", d.ordinal()),
        }
    }
}
