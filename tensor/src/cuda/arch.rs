//! Which GPUs the CUDA backend runs on, and what each of them can do.
//!
//! A GPU's *compute capability* `major.minor` names its architecture:
//! 7.5 Turing (T4, RTX 20xx), 8.0 Ampere (A100), 8.6 Ampere (RTX 30xx),
//! 8.9 Ada (RTX 40xx, L4), 9.0 Hopper (H100, H200), 10.0 Blackwell (B200),
//! 12.0 Blackwell (RTX 50xx). The kernels are compiled for exactly the
//! architecture of the GPU that opens (`compile.rs`), so everything here is a
//! plain rule on that number:
//!
//! - supported: 7.5 up to 12.x. Older GPUs are refused because NVRTC 13 no
//!   longer targets them; newer ones because nothing has been tried there.
//! - f32, f64, f16 and u32 run on every supported GPU (f16 arithmetic is
//!   done in f32 by the kernels; cuBLAS has f16 GEMMs since Volta).
//! - bf16 needs 8.0 or newer: cuBLAS has no bf16 GEMM before Ampere.
//! - TF32 needs 8.0 or newer: it is an Ampere tensor-core format.
//!
//! A refusal names the GPU and says what it can do instead, so the user
//! learns it when the device opens or the precision is chosen, not halfway
//! through a run.

use crate::{DType, Error, Result};
use std::fmt;

/// A GPU architecture, as its compute capability `major.minor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ComputeCapability {
    pub major: u32,
    pub minor: u32,
}

/// The oldest architecture the backend runs on (Turing).
pub const OLDEST: ComputeCapability = ComputeCapability::new(7, 5);
/// The newest major version the backend runs on (Blackwell, 12.x).
pub const NEWEST_MAJOR: u32 = 12;
/// The oldest architecture with bf16 GEMMs and TF32 tensor cores (Ampere).
pub const AMPERE: ComputeCapability = ComputeCapability::new(8, 0);

/// The architectures the kernel compile test covers: one of each family.
pub const TESTED_ARCHS: [ComputeCapability; 7] = [
    ComputeCapability::new(7, 5),
    ComputeCapability::new(8, 0),
    ComputeCapability::new(8, 6),
    ComputeCapability::new(8, 9),
    ComputeCapability::new(9, 0),
    ComputeCapability::new(10, 0),
    ComputeCapability::new(12, 0),
];

impl ComputeCapability {
    pub const fn new(major: u32, minor: u32) -> Self {
        ComputeCapability { major, minor }
    }

    /// The number NVRTC and nvcc use: 8.9 -> 89, 12.0 -> 120.
    pub fn number(self) -> u32 {
        self.major * 10 + self.minor
    }

    /// From NVRTC's number (89 -> 8.9).
    pub fn from_number(n: u32) -> Self {
        Self::new(n / 10, n % 10)
    }

    /// The real architecture, for a cubin: `sm_89`.
    pub fn sm(self) -> String {
        format!("sm_{}", self.number())
    }

    /// The virtual architecture, for PTX: `compute_89`.
    pub fn compute(self) -> String {
        format!("compute_{}", self.number())
    }

    /// True when the backend runs on this architecture at all.
    pub fn is_supported(self) -> bool {
        self >= OLDEST && self.major <= NEWEST_MAJOR
    }

    /// True when cuBLAS has bf16 matrix products here.
    pub fn has_bf16(self) -> bool {
        self >= AMPERE
    }

    /// True when f32 products may use TF32 tensor cores here.
    pub fn has_tf32(self) -> bool {
        self >= AMPERE
    }

    /// The dtypes this architecture computes with, for messages.
    pub fn dtypes(self) -> &'static str {
        if self.has_bf16() {
            "f32, f64, f16, bf16 and u32, and TF32 matrix products"
        } else {
            "f32, f64, f16 and u32 (no bf16, no TF32: those need compute capability 8.0 or newer)"
        }
    }
}

impl fmt::Display for ComputeCapability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Refuses a GPU the backend does not run on, naming it.
pub fn check_supported(gpu: &str, cc: ComputeCapability) -> Result<()> {
    if cc.is_supported() {
        return Ok(());
    }
    let why = if cc < OLDEST {
        "older than Turing; the kernels are compiled with NVRTC 13, which no longer targets it"
    } else {
        "newer than any architecture petal has been built for"
    };
    Err(Error::Cuda(format!(
        "{gpu} (compute capability {cc}, {}) is not supported: {why}. petal's CUDA backend runs on compute \
         capability {OLDEST} (Turing: T4, RTX 20xx) up to {NEWEST_MAJOR}.x (Blackwell: RTX 50xx); use the CPU device here",
        cc.sm()
    )))
}

/// Refuses a dtype this GPU cannot compute with, naming the GPU.
pub fn check_dtype(gpu: &str, cc: ComputeCapability, dtype: DType) -> Result<()> {
    if dtype == DType::BF16 && !cc.has_bf16() {
        return Err(Error::Cuda(format!(
            "bf16 needs a GPU of compute capability {AMPERE} (Ampere) or newer; {gpu} is {cc} and supports {}. \
             Use f16 mixed precision (`--precision f16`) or f32 instead",
            cc.dtypes()
        )));
    }
    Ok(())
}

/// Refuses TF32 where there are no TF32 tensor cores, naming the GPU.
pub fn check_tf32(gpu: &str, cc: ComputeCapability) -> Result<()> {
    if !cc.has_tf32() {
        return Err(Error::Cuda(format!(
            "TF32 needs a GPU of compute capability {AMPERE} (Ampere) or newer; {gpu} is {cc} and supports {}. \
             Drop --tf32 (f32 products then run in full f32)",
            cc.dtypes()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(major: u32, minor: u32) -> ComputeCapability {
        ComputeCapability::new(major, minor)
    }

    #[test]
    fn names_match_nvrtc_spelling() {
        assert_eq!(cc(8, 9).sm(), "sm_89");
        assert_eq!(cc(12, 0).sm(), "sm_120");
        assert_eq!(cc(7, 5).compute(), "compute_75");
        assert_eq!(cc(10, 0).number(), 100);
        assert_eq!(ComputeCapability::from_number(120), cc(12, 0));
        assert_eq!(ComputeCapability::from_number(89), cc(8, 9));
        assert_eq!(cc(8, 6).to_string(), "8.6");
    }

    #[test]
    fn ordering_is_by_major_then_minor() {
        assert!(cc(7, 5) < cc(8, 0));
        assert!(cc(8, 9) < cc(9, 0));
        assert!(cc(9, 0) < cc(10, 0));
        assert!(cc(10, 3) < cc(12, 0));
    }

    #[test]
    fn turing_to_blackwell_is_supported_and_nothing_else() {
        for arch in TESTED_ARCHS {
            assert!(check_supported("GPU", arch).is_ok(), "{arch}");
        }
        assert!(cc(12, 1).is_supported());
        for old in [cc(5, 2), cc(6, 1), cc(7, 0), cc(7, 2)] {
            let msg = check_supported("Tesla V100", old).unwrap_err().to_string();
            assert!(msg.contains("Tesla V100"), "{msg}");
            assert!(msg.contains(&old.to_string()), "{msg}");
            assert!(msg.contains("7.5"), "names the oldest supported: {msg}");
        }
        let msg = check_supported("Future GPU", cc(13, 0)).unwrap_err().to_string();
        assert!(msg.contains("Future GPU") && msg.contains("newer"), "{msg}");
    }

    #[test]
    fn bf16_and_tf32_need_ampere() {
        let turing = cc(7, 5);
        let msg = check_dtype("Tesla T4", turing, DType::BF16).unwrap_err().to_string();
        assert!(msg.contains("Tesla T4") && msg.contains("7.5") && msg.contains("8.0"), "{msg}");
        assert!(msg.contains("f16"), "suggests what works: {msg}");
        let msg = check_tf32("Tesla T4", turing).unwrap_err().to_string();
        assert!(msg.contains("Tesla T4") && msg.contains("TF32"), "{msg}");
        for arch in TESTED_ARCHS.into_iter().filter(|a| *a >= AMPERE) {
            assert!(check_dtype("GPU", arch, DType::BF16).is_ok(), "{arch}");
            assert!(check_tf32("GPU", arch).is_ok(), "{arch}");
        }
    }

    #[test]
    fn f32_and_f16_run_everywhere() {
        for arch in TESTED_ARCHS {
            for dtype in [DType::F32, DType::F16, DType::F64, DType::U32] {
                assert!(check_dtype("GPU", arch, dtype).is_ok(), "{dtype} on {arch}");
            }
        }
    }
}
