//! A caching allocator for device memory.
//!
//! `cuMemAlloc` and `cuMemFree` are slow (tens to hundreds of microseconds,
//! and `cuMemFree` waits for the whole device), while a training step
//! allocates and frees hundreds of tensors of the same few sizes. So freed
//! blocks are not returned to the driver: they go into a free list keyed by
//! their (rounded) size, and the next request of that size takes one back.
//! After the first step a training loop allocates nothing from the driver.
//!
//! Sizes are rounded so that nearly-equal requests share a list: up to
//! 1 MiB to a multiple of 512 bytes, above that to one of 8 steps per power
//! of two (at most 12.5% waste).
//!
//! Reusing a block right after it is freed is safe because every kernel and
//! copy of a device runs on that device's one stream: work that still reads
//! the old contents was enqueued before any work that writes new contents.
//! (This is the argument PyTorch's allocator makes per stream.)
//!
//! When the driver runs out of memory the allocator waits for the device,
//! hands every cached block back, and tries once more.

use cudarc::driver::sys::{CUdeviceptr, CUresult};
use cudarc::driver::{result, CudaContext, DriverError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Byte counts of one device's allocator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Bytes in blocks that storages hold right now (rounded sizes).
    pub in_use: usize,
    /// Bytes in freed blocks kept for reuse.
    pub cached: usize,
    /// The highest `in_use` seen.
    pub peak_in_use: usize,
    /// Calls that had to go to the driver (`cuMemAlloc`).
    pub driver_allocs: u64,
    /// Calls served from the cache.
    pub cache_hits: u64,
}

impl MemoryStats {
    /// Bytes the allocator holds from the driver: in use plus cached.
    pub fn reserved(&self) -> usize {
        self.in_use + self.cached
    }
}

/// Rounds a request up to its size class.
pub fn round_size(bytes: usize) -> usize {
    const SMALL: usize = 1 << 20;
    if bytes <= SMALL {
        return bytes.div_ceil(512).max(1) * 512;
    }
    let step = bytes.next_power_of_two() / 16;
    bytes.div_ceil(step) * step
}

#[derive(Default)]
struct State {
    free: HashMap<usize, Vec<CUdeviceptr>>,
    stats: MemoryStats,
}

pub(crate) struct CachingAllocator {
    ctx: Arc<CudaContext>,
    state: Mutex<State>,
}

/// A block of device memory; dropping it returns it to the cache.
pub(crate) struct DeviceBuffer {
    ptr: CUdeviceptr,
    bytes: usize,
    owner: Arc<CachingAllocator>,
}

impl DeviceBuffer {
    /// The device address of the first byte (0 for an empty buffer).
    pub fn ptr(&self) -> CUdeviceptr {
        self.ptr
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.owner.release(self.ptr, self.bytes);
        }
    }
}

impl std::fmt::Debug for DeviceBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceBuffer({:#x}, {} bytes)", self.ptr, self.bytes)
    }
}

impl CachingAllocator {
    pub fn new(ctx: Arc<CudaContext>) -> Arc<Self> {
        Arc::new(CachingAllocator { ctx, state: Mutex::new(State::default()) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A block of at least `bytes` bytes, contents undefined.
    pub fn alloc(self: &Arc<Self>, bytes: usize) -> Result<DeviceBuffer, DriverError> {
        if bytes == 0 {
            return Ok(DeviceBuffer { ptr: 0, bytes: 0, owner: self.clone() });
        }
        let size = round_size(bytes);
        {
            let mut st = self.lock();
            if let Some(ptr) = st.free.get_mut(&size).and_then(|list| list.pop()) {
                st.stats.cached -= size;
                st.stats.in_use += size;
                st.stats.peak_in_use = st.stats.peak_in_use.max(st.stats.in_use);
                st.stats.cache_hits += 1;
                return Ok(DeviceBuffer { ptr, bytes: size, owner: self.clone() });
            }
        }
        self.ctx.bind_to_thread()?;
        if super::profile::enabled() {
            super::profile::mark(|| "cuMemAlloc".into(), || {
                let _ = self.ctx.synchronize();
            });
        }
        let ptr = match unsafe { result::malloc_sync(size) } {
            Ok(p) => p,
            Err(DriverError(CUresult::CUDA_ERROR_OUT_OF_MEMORY)) => {
                self.empty_cache()?;
                unsafe { result::malloc_sync(size) }?
            }
            Err(e) => return Err(e),
        };
        let mut st = self.lock();
        st.stats.in_use += size;
        st.stats.peak_in_use = st.stats.peak_in_use.max(st.stats.in_use);
        st.stats.driver_allocs += 1;
        Ok(DeviceBuffer { ptr, bytes: size, owner: self.clone() })
    }

    fn release(&self, ptr: CUdeviceptr, size: usize) {
        let mut st = self.lock();
        st.stats.in_use -= size;
        st.stats.cached += size;
        st.free.entry(size).or_default().push(ptr);
    }

    /// Waits for the device, then returns every cached block to the driver.
    pub fn empty_cache(&self) -> Result<(), DriverError> {
        self.ctx.bind_to_thread()?;
        // A cached block may still be read by enqueued work; finish it first.
        self.ctx.synchronize()?;
        let mut st = self.lock();
        for (size, list) in st.free.drain().collect::<Vec<_>>() {
            for ptr in list {
                unsafe { result::free_sync(ptr) }?;
                st.stats.cached -= size;
            }
        }
        Ok(())
    }

    pub fn stats(&self) -> MemoryStats {
        self.lock().stats
    }

    pub fn reset_peak(&self) {
        let mut st = self.lock();
        st.stats.peak_in_use = st.stats.in_use;
    }
}

impl Drop for CachingAllocator {
    fn drop(&mut self) {
        // Every buffer holds an Arc to us, so none is in use any more.
        let _ = self.ctx.bind_to_thread().and_then(|_| self.ctx.synchronize());
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        for list in st.free.values() {
            for &ptr in list {
                let _ = unsafe { result::free_sync(ptr) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::round_size;

    #[test]
    fn sizes_round_to_classes() {
        assert_eq!(round_size(1), 512);
        assert_eq!(round_size(512), 512);
        assert_eq!(round_size(513), 1024);
        assert_eq!(round_size(1 << 20), 1 << 20);
        // Just above 1 MiB: steps of 2 MiB / 16 = 128 KiB.
        assert_eq!(round_size((1 << 20) + 1), (1 << 20) + (128 << 10));
        for bytes in [3_000_000usize, 77_777_777, 1 << 30] {
            let r = round_size(bytes);
            assert!(r >= bytes && (r - bytes) as f64 <= bytes as f64 * 0.125, "{bytes} -> {r}");
        }
    }
}
