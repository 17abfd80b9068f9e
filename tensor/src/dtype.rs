//! Element types. f32 is the working type, f64 serves references and
//! gradient checks, f16/bf16 are storage types for mixed precision, and u32
//! holds indices (embedding lookups, argmax results).

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F64,
    F16,
    BF16,
    U32,
}

impl DType {
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 | DType::U32 => 4,
            DType::F64 => 8,
            DType::F16 | DType::BF16 => 2,
        }
    }

    pub fn is_float(self) -> bool {
        !matches!(self, DType::U32)
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::U32 => "u32",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Rust element types that can fill a tensor directly (`Tensor::from_vec`).
pub trait WithDType: Copy + Send + Sync + 'static {
    const DTYPE: DType;
    fn into_storage(data: Vec<Self>) -> crate::cpu::CpuStorage;
    fn slice_of(storage: &crate::cpu::CpuStorage) -> Option<&[Self]>;
}

macro_rules! with_dtype {
    ($t:ty, $variant:ident) => {
        impl WithDType for $t {
            const DTYPE: DType = DType::$variant;
            fn into_storage(data: Vec<Self>) -> crate::cpu::CpuStorage {
                crate::cpu::CpuStorage::$variant(data)
            }
            fn slice_of(storage: &crate::cpu::CpuStorage) -> Option<&[Self]> {
                match storage {
                    crate::cpu::CpuStorage::$variant(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
with_dtype!(f32, F32);
with_dtype!(f64, F64);
with_dtype!(half::f16, F16);
with_dtype!(half::bf16, BF16);
with_dtype!(u32, U32);
