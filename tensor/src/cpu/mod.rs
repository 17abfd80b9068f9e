//! The CPU backend: flat `Vec`s plus kernels written over slices.
//!
//! One file per op family, each the twin of the CUDA file of the same name
//! (`cpu/conv.rs` and `cuda/conv.rs` + `cuda/conv.cu`); `backend.rs` maps
//! the `BackendStorage` trait onto them. Strided inputs are walked with
//! `strided::StridedRows`, and work is split across threads with rayon once
//! it is large enough to pay.

mod allocator;
mod backend;
pub mod conv;
pub mod conv_direct;
pub mod conv_fused;
mod copy;
mod elementwise;
pub mod float;
pub mod group_norm;
pub mod group_norm_modulated;
mod index_select;
mod kept;
mod memory;
pub mod matmul;
mod optim;
pub mod pool;
mod random;
mod reduce;
mod simd;
mod strided;
mod threads;
mod transpose;
pub mod upsample;
pub mod winograd;
pub mod winograd4;

pub use allocator::{keep_freed_memory, HugePageHeap};
pub use threads::run_on_pool;
pub(crate) use memory::memory_info;

use crate::backend::BackendStorage;
use crate::{DType, Error, Layout, Result};
use half::{bf16, f16};

/// Below this many elements, threads cost more than they save.
pub(crate) const PARALLEL_THRESHOLD: usize = 1 << 15;

/// The host: every `CpuStorage` lives here, so there is nothing to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuDevice;

#[derive(Debug, Clone, PartialEq)]
pub enum CpuStorage {
    F32(Vec<f32>),
    F64(Vec<f64>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    U32(Vec<u32>),
}

pub(crate) fn unsupported(op: &'static str, got: DType) -> Error {
    Error::UnsupportedDType { op, got, hint: "; compute in f32 or f64 (to_dtype)" }
}

fn check_same(op: &'static str, a: &CpuStorage, b: &CpuStorage) -> Result<()> {
    if a.dtype() != b.dtype() {
        return Err(Error::DTypeMismatch { op, lhs: a.dtype(), rhs: b.dtype() });
    }
    Ok(())
}

impl CpuStorage {
    pub fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F64(_) => DType::F64,
            CpuStorage::F16(_) => DType::F16,
            CpuStorage::BF16(_) => DType::BF16,
            CpuStorage::U32(_) => DType::U32,
        }
    }

    /// The elements of `layout` as f64, for printing and tests.
    pub fn to_f64_vec(&self, layout: &Layout) -> Vec<f64> {
        match self.copy_strided(layout).and_then(|s| s.cast(DType::F64)) {
            Ok(CpuStorage::F64(v)) => v,
            _ => unreachable!("every dtype converts to f64"),
        }
    }

    pub fn as_f32(&self) -> Option<&[f32]> {
        match self {
            CpuStorage::F32(v) => Some(v),
            _ => None,
        }
    }
}
