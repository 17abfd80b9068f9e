//! Everything that can go wrong in `nn`: tensor errors from below, plus
//! parameter registration and checkpoint problems. Checkpoint errors always
//! name the file they concern.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum NnError {
    #[error(transparent)]
    Tensor(#[from] tensor::Error),

    #[error("parameter `{0}` is already registered")]
    DuplicateParam(String),

    #[error("{what}: {msg}")]
    BadArgument { what: &'static str, msg: String },

    #[error("checkpoint {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },

    /// A checkpoint that cannot be read (corrupt, truncated, unsupported
    /// dtype, bad metadata) or written.
    #[error("checkpoint {}: {msg}", path.display())]
    Checkpoint { path: PathBuf, msg: String },

    /// Loading named tensors into a model, optimizer or EMA whose names or
    /// shapes differ. Lists every problem, not just the first.
    #[error("{}", mismatch_message(.origin, .missing, .unexpected, .misshaped))]
    Mismatch {
        /// Where the tensors came from: a file path, or e.g. "optimizer state".
        origin: String,
        missing: Vec<String>,
        unexpected: Vec<String>,
        /// (name, shape expected by the model, shape found)
        misshaped: Vec<(String, Vec<usize>, Vec<usize>)>,
    },
}

pub type Result<T> = std::result::Result<T, NnError>;

impl NnError {
    pub fn bad(what: &'static str, msg: impl Into<String>) -> NnError {
        NnError::BadArgument { what, msg: msg.into() }
    }
}

fn mismatch_message(origin: &str, missing: &[String], unexpected: &[String], misshaped: &[(String, Vec<usize>, Vec<usize>)]) -> String {
    let mut msg = format!("{origin}: tensors do not match the model");
    if !missing.is_empty() {
        msg += &format!("\n  missing ({}): {}", missing.len(), missing.join(", "));
    }
    if !unexpected.is_empty() {
        msg += &format!("\n  unexpected ({}): {}", unexpected.len(), unexpected.join(", "));
    }
    for (name, want, got) in misshaped {
        msg += &format!("\n  wrong shape: {name}: model has {want:?}, found {got:?}");
    }
    msg
}
