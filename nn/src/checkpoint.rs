//! Checkpoints as safetensors files.
//!
//! One file holds a whole training run's state:
//! - the model weights under their plain names (`down.0.0.conv1.weight`),
//!   so that a PyTorch `state_dict` saved with `safetensors.torch.save_file`
//!   loads here, and ours there, with no conversion;
//! - the optimizer buffers under `optim.` (`optim.<param>.m`,
//!   `optim.<param>.v`), its step count in the metadata (`optim.step`);
//! - the EMA weights under `ema.` (`ema.<param>`);
//! - run metadata as strings in the safetensors `__metadata__` map (config
//!   JSON, epoch, step, generator states as decimal strings).
//!
//! Files are written atomically (a `.tmp` sibling, fsync, rename), and any
//! problem reading one (missing, truncated, corrupt, unexpected names or
//! shapes) is an error that names the file.

use crate::optim::{Ema, OptimState, Optimizer};
use crate::{NnError, ParamStore, Result};
use safetensors::{Dtype, SafeTensors, View};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;
use std::path::{Path, PathBuf};
use tensor::{DType, Device, Rng, Tensor};

const OPTIM: &str = "optim.";
const EMA: &str = "ema.";
const OPTIM_STEP: &str = "optim.step";

/// Everything a training run needs to resume.
#[derive(Clone, Default)]
pub struct Checkpoint {
    /// Model weights by parameter name (a PyTorch `state_dict`).
    pub model: BTreeMap<String, Tensor>,
    pub optim: Option<OptimState>,
    /// EMA weights by parameter name.
    pub ema: Option<BTreeMap<String, Tensor>>,
    /// Free-form string metadata (keys starting with `optim.` are reserved).
    pub metadata: BTreeMap<String, String>,
    /// The file this checkpoint was loaded from; errors name it.
    pub path: Option<PathBuf>,
}

/// What a non-strict load skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Parameters of the model the checkpoint has no tensor for.
    pub missing: Vec<String>,
    /// Tensors of the checkpoint the model has no parameter for.
    pub unexpected: Vec<String>,
}

impl Checkpoint {
    /// The model weights of `store` (live tensors: save before training on).
    pub fn new(store: &ParamStore) -> Checkpoint {
        Checkpoint { model: store.tensors(), ..Default::default() }
    }

    pub fn with_optimizer(mut self, opt: &dyn Optimizer) -> Checkpoint {
        self.optim = Some(opt.state());
        self
    }

    pub fn with_ema(mut self, ema: &Ema) -> Checkpoint {
        self.ema = Some(ema.named().into_iter().collect());
        self
    }

    pub fn set_meta(&mut self, key: impl Into<String>, value: impl Display) {
        self.metadata.insert(key.into(), value.to_string());
    }

    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    /// A metadata value parsed as an integer.
    pub fn meta_u64(&self, key: &str) -> Result<Option<u64>> {
        match self.meta(key) {
            None => Ok(None),
            Some(s) => s.parse().map(Some).map_err(|_| self.error(format!("metadata `{key}` = {s:?} is not an unsigned integer"))),
        }
    }

    /// Stores a generator's state as `<name>.key` and `<name>.counter`.
    pub fn set_rng(&mut self, name: &str, rng: &Rng) {
        self.set_meta(format!("{name}.key"), rng.key);
        self.set_meta(format!("{name}.counter"), rng.counter);
    }

    /// The generator stored by `set_rng(name, ..)`, if any.
    pub fn rng(&self, name: &str) -> Result<Option<Rng>> {
        match (self.meta_u64(&format!("{name}.key"))?, self.meta_u64(&format!("{name}.counter"))?) {
            (Some(key), Some(counter)) => Ok(Some(Rng { key, counter })),
            (None, None) => Ok(None),
            _ => Err(self.error(format!("metadata has only half of generator `{name}` (key and counter go together)"))),
        }
    }

    /// Copies the model weights into `store`'s parameters (converting dtype
    /// and device). Nothing is written unless the whole load succeeds.
    ///
    /// A tensor whose shape differs from its parameter's is always an error;
    /// missing and unexpected names are errors when `strict`, otherwise they
    /// are reported back. The error lists every problem and names the file.
    pub fn load_into(&self, store: &ParamStore, strict: bool) -> Result<LoadReport> {
        let (mut report, mut misshaped, mut todo) = (LoadReport::default(), Vec::new(), Vec::new());
        let live = store.tensors();
        for (name, p) in &live {
            match self.model.get(name) {
                None => report.missing.push(name.clone()),
                Some(t) if t.dims() != p.dims() => misshaped.push((name.clone(), p.dims().to_vec(), t.dims().to_vec())),
                Some(t) => todo.push((p, t)),
            }
        }
        report.unexpected = self.model.keys().filter(|k| !live.contains_key(*k)).cloned().collect();
        if !misshaped.is_empty() || (strict && !(report.missing.is_empty() && report.unexpected.is_empty())) {
            return Err(NnError::Mismatch { origin: self.origin("model weights"), missing: report.missing, unexpected: report.unexpected, misshaped });
        }
        for (p, t) in todo {
            p.assign(&t.to_dtype(p.dtype())?.to_device(p.device())?)?;
        }
        Ok(report)
    }

    /// Restores an optimizer's state (strict).
    pub fn load_optimizer(&self, opt: &mut dyn Optimizer) -> Result<()> {
        let state = self.optim.as_ref().ok_or_else(|| self.error("holds no optimizer state"))?;
        opt.load_state(state).map_err(|e| self.rename_origin(e, "optimizer state"))
    }

    /// Restores EMA weights (strict).
    pub fn load_ema(&self, ema: &mut Ema) -> Result<()> {
        let weights = self.ema.as_ref().ok_or_else(|| self.error("holds no EMA weights"))?;
        ema.load(weights).map_err(|e| self.rename_origin(e, "EMA weights"))
    }

    fn file(&self) -> PathBuf {
        self.path.clone().unwrap_or_else(|| PathBuf::from("<in memory>"))
    }

    fn origin(&self, part: &str) -> String {
        format!("checkpoint {} ({part})", self.file().display())
    }

    fn error(&self, msg: impl Into<String>) -> NnError {
        NnError::Checkpoint { path: self.file(), msg: msg.into() }
    }

    fn rename_origin(&self, e: NnError, part: &str) -> NnError {
        match e {
            NnError::Mismatch { missing, unexpected, misshaped, .. } => NnError::Mismatch { origin: self.origin(part), missing, unexpected, misshaped },
            NnError::Tensor(e) => self.error(format!("{part}: {e}")),
            other => other,
        }
    }
}

// ---- writing ----------------------------------------------------------------

/// Raw little-endian bytes of one tensor, in a safetensors dtype.
struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Raw {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn to_raw(t: &Tensor) -> Result<Raw> {
    fn bytes<T, const N: usize>(v: Vec<T>, f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
        v.into_iter().flat_map(f).collect()
    }
    let (dtype, data) = match t.dtype() {
        DType::F32 => (Dtype::F32, bytes(t.to_vec::<f32>()?, f32::to_le_bytes)),
        DType::F64 => (Dtype::F64, bytes(t.to_vec::<f64>()?, f64::to_le_bytes)),
        DType::U32 => (Dtype::U32, bytes(t.to_vec::<u32>()?, u32::to_le_bytes)),
        // Widening to f32 is exact, so narrowing back is too.
        DType::F16 => (Dtype::F16, bytes(t.to_dtype(DType::F32)?.to_vec::<f32>()?, |x| f32_to_f16(x).to_le_bytes())),
        DType::BF16 => (Dtype::BF16, bytes(t.to_dtype(DType::F32)?.to_vec::<f32>()?, |x| f32_to_bf16(x).to_le_bytes())),
    };
    Ok(Raw { dtype, shape: t.dims().to_vec(), data })
}

/// Writes `ck` to `path` atomically: the data goes to `<path>.tmp` in the
/// same directory, is flushed to disk, then renamed over `path`.
///
/// ```
/// use nn::{load_checkpoint, save_checkpoint, Checkpoint, Init, ParamStore};
/// use nn::autograd::tensor::{DType, Device, Rng};
///
/// let store = ParamStore::new(Device::Cpu, DType::F32, Rng::new(0));
/// store.root().pp("layer").param("weight", [2, 2], Init::Normal { std: 1.0 })?;
/// let mut ck = Checkpoint::new(&store);
/// ck.set_meta("epoch", 3);
/// let path = std::env::temp_dir().join(format!("petal-doc-{}.safetensors", std::process::id()));
/// save_checkpoint(&path, &ck)?;
///
/// let fresh = ParamStore::new(Device::Cpu, DType::F32, Rng::new(1));
/// fresh.root().pp("layer").param("weight", [2, 2], Init::Const(0.0))?;
/// let loaded = load_checkpoint(&path)?;
/// loaded.load_into(&fresh, true)?;
/// assert_eq!(loaded.meta("epoch"), Some("3"));
/// assert_eq!(fresh.tensors()["layer.weight"].to_vec::<f32>()?, store.tensors()["layer.weight"].to_vec::<f32>()?);
/// std::fs::remove_file(&path).ok();
/// # Ok::<(), nn::NnError>(())
/// ```
pub fn save_checkpoint(path: impl AsRef<Path>, ck: &Checkpoint) -> Result<()> {
    let path = path.as_ref();
    let fail = |msg: String| NnError::Checkpoint { path: path.to_path_buf(), msg };
    let io = |source: std::io::Error| NnError::Io { path: path.to_path_buf(), source };

    let mut entries: Vec<(String, Raw)> = Vec::new();
    for (name, t) in &ck.model {
        if name.starts_with(OPTIM) || name.starts_with(EMA) {
            return Err(fail(format!("model tensor `{name}` uses a reserved prefix (`{OPTIM}` or `{EMA}`)")));
        }
        entries.push((name.clone(), to_raw(t)?));
    }
    let mut meta: HashMap<String, String> = ck.metadata.iter().filter(|(k, _)| !k.starts_with(OPTIM)).map(|(k, v)| (k.clone(), v.clone())).collect();
    meta.entry("format".into()).or_insert_with(|| "pt".into());
    if let Some(opt) = &ck.optim {
        for (name, t) in &opt.tensors {
            entries.push((format!("{OPTIM}{name}"), to_raw(t)?));
        }
        meta.insert(OPTIM_STEP.into(), opt.step.to_string());
        for (name, s) in &opt.param_steps {
            meta.insert(format!("{OPTIM_STEP}.{name}"), s.to_string());
        }
    }
    if let Some(ema) = &ck.ema {
        for (name, t) in ema {
            entries.push((format!("{EMA}{name}"), to_raw(t)?));
        }
    }

    let file_name = path.file_name().ok_or_else(|| fail("is not a file path".into()))?;
    let mut tmp_name = file_name.to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let written = safetensors::serialize_to_file(entries.iter().map(|(k, r)| (k.as_str(), r)), Some(meta), &tmp)
        .map_err(|e| match e {
            safetensors::SafeTensorError::IoError(e) => io(e),
            e => fail(format!("cannot serialise: {e}")),
        })
        .and_then(|()| std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(io));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return written;
    }
    // Make the rename itself durable (best effort: not every platform can
    // open a directory).
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

// ---- reading ----------------------------------------------------------------

fn from_raw(dtype: Dtype, shape: &[usize], data: &[u8]) -> std::result::Result<Tensor, String> {
    fn values<T, const N: usize>(data: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
        data.chunks_exact(N).map(|c| f(c.try_into().expect("chunks are N bytes"))).collect()
    }
    let size = match dtype {
        Dtype::F64 => 8,
        Dtype::F32 | Dtype::U32 => 4,
        Dtype::F16 | Dtype::BF16 => 2,
        other => return Err(format!("dtype {other} is not supported (use f32, f64, f16, bf16 or u32)")),
    };
    let n = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    if n.and_then(|n| n.checked_mul(size)) != Some(data.len()) {
        return Err(format!("holds {} bytes, which do not fit shape {shape:?} of {dtype}", data.len()));
    }
    let dev = Device::Cpu;
    let shape = shape.to_vec();
    let t = match dtype {
        Dtype::F64 => Tensor::from_vec(values(data, f64::from_le_bytes), shape, &dev),
        Dtype::F32 => Tensor::from_vec(values(data, f32::from_le_bytes), shape, &dev),
        Dtype::U32 => Tensor::from_vec(values(data, u32::from_le_bytes), shape, &dev),
        Dtype::F16 => Tensor::from_vec(values(data, |b| f16_to_f32(u16::from_le_bytes(b))), shape, &dev).and_then(|t| t.to_dtype(DType::F16)),
        Dtype::BF16 => Tensor::from_vec(values(data, |b| bf16_to_f32(u16::from_le_bytes(b))), shape, &dev).and_then(|t| t.to_dtype(DType::BF16)),
        _ => unreachable!("filtered above"),
    };
    t.map_err(|e| e.to_string())
}

/// Reads a checkpoint (tensors land on the CPU in the file's dtypes; loading
/// them into a store converts them).
pub fn load_checkpoint(path: impl AsRef<Path>) -> Result<Checkpoint> {
    let path = path.as_ref();
    let fail = |msg: String| NnError::Checkpoint { path: path.to_path_buf(), msg };
    let bytes = std::fs::read(path).map_err(|source| NnError::Io { path: path.to_path_buf(), source })?;
    let invalid = |e: safetensors::SafeTensorError| fail(format!("not a valid safetensors file, it may be truncated or corrupt ({e})"));
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(invalid)?;
    let file = SafeTensors::deserialize(&bytes).map_err(invalid)?;

    let mut ck = Checkpoint { path: Some(path.to_path_buf()), ..Default::default() };
    let mut optim_tensors = BTreeMap::new();
    let mut ema = BTreeMap::new();
    for (name, view) in file.iter() {
        let t = from_raw(view.dtype(), view.shape(), view.data()).map_err(|msg| fail(format!("tensor `{name}`: {msg}")))?;
        if let Some(rest) = name.strip_prefix(OPTIM) {
            optim_tensors.insert(rest.to_string(), t);
        } else if let Some(rest) = name.strip_prefix(EMA) {
            ema.insert(rest.to_string(), t);
        } else {
            ck.model.insert(name.to_string(), t);
        }
    }
    let mut param_steps = BTreeMap::new();
    let mut step = None;
    for (k, v) in header.metadata().clone().unwrap_or_default() {
        let parse = |v: &str| v.parse::<u64>().map_err(|_| fail(format!("metadata `{k}` = {v:?} is not an unsigned integer")));
        if k == OPTIM_STEP {
            step = Some(parse(&v)?);
        } else if let Some(name) = k.strip_prefix(OPTIM_STEP).and_then(|r| r.strip_prefix('.')) {
            param_steps.insert(name.to_string(), parse(&v)?);
        } else {
            ck.metadata.insert(k, v);
        }
    }
    if step.is_some() || !optim_tensors.is_empty() {
        ck.optim = Some(OptimState { step: step.unwrap_or(0), param_steps, tensors: optim_tensors });
    }
    if !ema.is_empty() {
        ck.ema = Some(ema);
    }
    Ok(ck)
}

// ---- half-precision bits (exact for values that came from f16/bf16) --------

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let mant = (h & 0x3ff) as u32;
    let bits = match exp {
        0 if mant == 0 => sign,
        // Subnormal: mant * 2^-24, exact in f32.
        0 => {
            let v = mant as f32 * 2f32.powi(-24);
            return if sign != 0 { -v } else { v };
        }
        31 => sign | 0x7f80_0000 | (mant << 13),
        _ => sign | ((exp + 112) << 23) | (mant << 13),
    };
    f32::from_bits(bits)
}

/// Round to nearest even, as every hardware conversion does.
fn f32_to_f16(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32;
    let mant = b & 0x7f_ffff;
    if exp == 255 {
        return sign | 0x7c00 | if mant != 0 { 0x200 | (mant >> 13) as u16 } else { 0 };
    }
    let e = exp - 112;
    if e >= 31 {
        return sign | 0x7c00;
    }
    let (kept, rem, half) = if e <= 0 {
        if e < -10 {
            return sign;
        }
        let m = mant | 0x80_0000;
        let shift = (14 - e) as u32;
        (m >> shift, m & ((1 << shift) - 1), 1u32 << (shift - 1))
    } else {
        (((e as u32) << 10) | (mant >> 13), mant & 0x1fff, 0x1000)
    };
    let round_up = rem > half || (rem == half && kept & 1 == 1);
    sign | (kept + round_up as u32) as u16
}

fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

fn f32_to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_conversions_round_trip_every_value() {
        for h in 0..=u16::MAX {
            let x = f16_to_f32(h);
            if x.is_nan() {
                assert!(f16_to_f32(f32_to_f16(x)).is_nan());
            } else {
                assert_eq!(f32_to_f16(x), h, "f16 bits {h:#06x} -> {x}");
            }
            let y = bf16_to_f32(h);
            if !y.is_nan() {
                assert_eq!(f32_to_bf16(y), h);
            }
        }
    }

    #[test]
    fn f16_rounds_to_nearest_even() {
        // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even (1).
        assert_eq!(f32_to_f16(1.0 + 2f32.powi(-11)), 0x3c00);
        assert_eq!(f32_to_f16(1.0 + 3.0 * 2f32.powi(-11)), 0x3c02);
        assert_eq!(f32_to_f16(65520.0), 0x7c00);
        assert_eq!(f32_to_f16(2f32.powi(-24)), 0x0001);
        assert_eq!(f32_to_f16(2f32.powi(-26)), 0x0000);
    }
}
