//! `Tensor`: shared storage plus a layout.
//!
//! Cloning a tensor is cheap (an `Arc`), and so are views: `reshape`,
//! `permute`, `narrow`, `broadcast_as`, `squeeze`... build a new layout over
//! the same storage. Ops never mutate their inputs; the few in-place methods
//! (optimizer updates) say so in their names.

use crate::backend::BackendStorage;
use crate::rng::Rng;
use crate::storage::{dispatch, Storage, StorageCell};
use crate::{DType, Device, Error, Layout, Result, Shape, WithDType};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Identifies a tensor (not its storage): views get ids of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(usize);

impl TensorId {
    fn fresh() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(1);
        TensorId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// An n-dimensional array: storage shared by every view of it, and a layout
/// (shape, strides, offset) saying where each element sits.
/// ```
/// use tensor::{Device, Tensor};
///
/// let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3], &Device::Cpu)?;
/// assert_eq!(t.layout().strides(), &[3, 1]); // row-major: the next row is 3 elements on
/// let tt = t.t()?; // a view: same storage, strides swapped
/// assert!(tt.same_storage(&t) && !tt.is_contiguous());
/// assert_eq!(tt.layout().strides(), &[1, 3]);
/// assert_eq!(tt.to_vec::<f32>()?, vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
/// # Ok::<(), tensor::Error>(())
/// ```
#[derive(Clone)]
pub struct Tensor(Arc<TensorInner>);

struct TensorInner {
    id: TensorId,
    storage: Arc<StorageCell>,
    layout: Layout,
    dtype: DType,
    device: Device,
}

impl Tensor {
    /// Wraps a fresh contiguous storage of `shape`.
    pub(crate) fn from_storage(storage: Storage, shape: impl Into<Shape>) -> Tensor {
        let (dtype, device) = (storage.dtype(), storage.device());
        let layout = Layout::contiguous(shape.into());
        debug_assert!(layout.elem_count() <= storage.len());
        Tensor(Arc::new(TensorInner { id: TensorId::fresh(), storage: Arc::new(StorageCell::new(storage)), layout, dtype, device }))
    }

    /// A view of the same storage through another layout.
    pub(crate) fn with_layout(&self, layout: Layout) -> Tensor {
        Tensor(Arc::new(TensorInner {
            id: TensorId::fresh(),
            storage: self.0.storage.clone(),
            layout,
            dtype: self.0.dtype,
            device: self.0.device.clone(),
        }))
    }

    pub(crate) fn storage(&self) -> std::sync::RwLockReadGuard<'_, Storage> {
        self.0.storage.read()
    }

    pub(crate) fn storage_mut(&self) -> std::sync::RwLockWriteGuard<'_, Storage> {
        self.0.storage.write()
    }

    /// Drops what is kept alongside this tensor's storage for reuse (on the
    /// CPU, a convolution weight's Winograd-transformed filters, which
    /// `conv2d_fused` prepares once and keeps until the weights are
    /// written), giving its memory back; it is made again when next needed.
    pub fn forget_derived(&self) {
        self.0.storage.forget_derived();
    }

    /// The cell holding this tensor's storage, for values derived from it.
    pub(crate) fn storage_cell(&self) -> &StorageCell {
        &self.0.storage
    }

    // ---- creation -------------------------------------------------------

    pub fn full(value: f64, shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        Ok(Tensor::from_storage(Storage::full(device, shape.elem_count(), dtype, value)?, shape))
    }

    pub fn zeros(shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
        Tensor::full(0.0, shape, dtype, device)
    }

    pub fn ones(shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
        Tensor::full(1.0, shape, dtype, device)
    }

    pub fn zeros_like(&self) -> Result<Tensor> {
        Tensor::zeros(self.shape(), self.dtype(), self.device())
    }

    pub fn ones_like(&self) -> Result<Tensor> {
        Tensor::ones(self.shape(), self.dtype(), self.device())
    }

    /// `data` laid out row-major as `shape`.
    pub fn from_vec<T: WithDType>(data: Vec<T>, shape: impl Into<Shape>, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        if data.len() != shape.elem_count() {
            return Err(Error::DataLength { op: "from_vec", len: data.len(), shape });
        }
        Ok(Tensor::from_storage(Storage::from_cpu(device, T::into_storage(data))?, shape))
    }

    pub fn from_slice<T: WithDType>(data: &[T], shape: impl Into<Shape>, device: &Device) -> Result<Tensor> {
        Tensor::from_vec(data.to_vec(), shape, device)
    }

    /// A rank-0 tensor.
    pub fn scalar(value: f64, dtype: DType, device: &Device) -> Result<Tensor> {
        Tensor::full(value, (), dtype, device)
    }

    /// `start, start + step, ...` below `end`, as f32.
    pub fn arange(start: f64, end: f64, step: f64, device: &Device) -> Result<Tensor> {
        if step == 0.0 || !step.is_finite() {
            return Err(Error::BadArgument { op: "arange", msg: format!("step must be finite and nonzero, got {step}") });
        }
        let n = ((end - start) / step).ceil().max(0.0) as usize;
        let data: Vec<f32> = (0..n).map(|i| (start + i as f64 * step) as f32).collect();
        Tensor::from_vec(data, n, device)
    }

    /// Uniform values in [lo, hi), drawn from `rng` (advancing it).
    pub fn rand(lo: f64, hi: f64, shape: impl Into<Shape>, dtype: DType, device: &Device, rng: &mut Rng) -> Result<Tensor> {
        let shape = shape.into();
        let n = shape.elem_count();
        let start = rng.reserve(n as u64);
        Ok(Tensor::from_storage(Storage::rand_uniform(device, n, dtype, rng.key, start, lo, hi)?, shape))
    }

    /// Normal values with the given mean and standard deviation.
    pub fn randn(mean: f64, std: f64, shape: impl Into<Shape>, dtype: DType, device: &Device, rng: &mut Rng) -> Result<Tensor> {
        let shape = shape.into();
        let n = shape.elem_count();
        let start = rng.reserve(n as u64);
        Ok(Tensor::from_storage(Storage::rand_normal(device, n, dtype, rng.key, start, mean, std)?, shape))
    }

    /// 1 with probability `p`, else 0.
    pub fn bernoulli(p: f64, shape: impl Into<Shape>, dtype: DType, device: &Device, rng: &mut Rng) -> Result<Tensor> {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::BadArgument { op: "bernoulli", msg: format!("probability {p} is outside [0, 1]") });
        }
        // Compare in f64: a uniform draw rounded to a narrower dtype can
        // reach 1.0 (so bernoulli(1) would drop elements), and f16/bf16 have
        // no comparison kernels.
        let u = Tensor::rand(0.0, 1.0, shape, DType::F64, device, rng)?;
        u.lt(&Tensor::scalar(p, DType::F64, device)?)?.to_dtype(dtype)
    }

    // ---- accessors ------------------------------------------------------

    pub fn id(&self) -> TensorId {
        self.0.id
    }
    pub fn layout(&self) -> &Layout {
        &self.0.layout
    }
    pub fn shape(&self) -> &Shape {
        self.0.layout.shape()
    }
    pub fn dims(&self) -> &[usize] {
        self.0.layout.dims()
    }
    pub fn rank(&self) -> usize {
        self.dims().len()
    }
    pub fn dim(&self, d: usize) -> Result<usize> {
        self.check_dim("dim", d)?;
        Ok(self.dims()[d])
    }
    pub fn elem_count(&self) -> usize {
        self.0.layout.elem_count()
    }
    pub fn dtype(&self) -> DType {
        self.0.dtype
    }
    pub fn device(&self) -> &Device {
        &self.0.device
    }
    pub fn is_contiguous(&self) -> bool {
        self.0.layout.is_contiguous()
    }
    /// True when both tensors view the same storage.
    pub fn same_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0.storage, &other.0.storage)
    }

    pub(crate) fn check_dim(&self, op: &'static str, d: usize) -> Result<()> {
        if d >= self.rank() {
            return Err(Error::BadShape { op, shape: self.shape().clone(), msg: format!("dim {d} out of range for rank {}", self.rank()) });
        }
        Ok(())
    }

    /// The elements in row-major order, copied to the host.
    pub fn to_vec<T: WithDType>(&self) -> Result<Vec<T>> {
        if self.dtype() != T::DTYPE {
            return Err(Error::DTypeMismatch { op: "to_vec", lhs: self.dtype(), rhs: T::DTYPE });
        }
        let storage = self.storage();
        let cpu = storage.to_cpu()?;
        let contiguous = cpu.copy_strided(self.layout())?;
        Ok(T::slice_of(&contiguous).expect("dtype checked above").to_vec())
    }

    /// The elements as f64 whatever the dtype: for tests and printing.
    pub fn to_f64_vec(&self) -> Result<Vec<f64>> {
        let storage = self.storage();
        let cpu = storage.to_cpu()?;
        Ok(cpu.to_f64_vec(self.layout()))
    }

    /// The single value of a one-element tensor.
    pub fn to_scalar(&self) -> Result<f64> {
        if self.elem_count() != 1 {
            return Err(Error::BadShape { op: "to_scalar", shape: self.shape().clone(), msg: "needs exactly one element".into() });
        }
        Ok(self.to_f64_vec()?[0])
    }

    // ---- conversions ----------------------------------------------------

    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        let out = dispatch!("to_dtype", &*self.storage(), |s| s.to_dtype(self.layout(), dtype));
        Ok(Tensor::from_storage(out, self.shape()))
    }

    pub fn to_device(&self, device: &Device) -> Result<Tensor> {
        if device == self.device() {
            return Ok(self.clone());
        }
        let contiguous = self.contiguous()?;
        let moved = contiguous.storage().to_device(device)?;
        let t = Tensor::from_storage(moved, self.shape());
        // A contiguous view with an offset needs its window of the new storage.
        let offset = contiguous.layout().offset();
        Ok(if offset == 0 { t } else { t.with_layout(Layout::new(self.shape().clone(), self.shape().contiguous_strides(), offset)) })
    }

    /// This tensor, or a contiguous copy of it when its layout has gaps or
    /// a different order.
    pub fn contiguous(&self) -> Result<Tensor> {
        if self.is_contiguous() {
            return Ok(self.clone());
        }
        let out = dispatch!("contiguous", &*self.storage(), |s| s.copy_strided(self.layout()));
        Ok(Tensor::from_storage(out, self.shape()))
    }

    /// A deep copy that shares nothing with `self`.
    pub fn copy(&self) -> Result<Tensor> {
        let out = dispatch!("copy", &*self.storage(), |s| s.copy_strided(self.layout()));
        Ok(Tensor::from_storage(out, self.shape()))
    }

    /// True when this tensor is its storage, element for element (in
    /// order, from the start, nothing more): what kernels that read or
    /// write whole buffers need.
    pub(crate) fn covers_storage(&self) -> bool {
        self.is_contiguous() && self.layout().offset() == 0 && self.storage().len() == self.elem_count()
    }

    /// This tensor if it covers its storage, else a copy that does.
    pub(crate) fn whole(&self) -> Result<Tensor> {
        if self.covers_storage() {
            Ok(self.clone())
        } else {
            self.copy()
        }
    }

    // ---- in place -------------------------------------------------------

    /// Overwrites this tensor's elements with `src`'s (same shape, dtype and
    /// device). Every view of the same storage sees the change.
    pub fn assign(&self, src: &Tensor) -> Result<()> {
        if src.shape() != self.shape() {
            return Err(Error::ShapeMismatch { op: "assign", lhs: self.shape().clone(), rhs: src.shape().clone() });
        }
        if self.same_storage(src) {
            let copy = src.copy()?;
            return self.assign(&copy);
        }
        let src_storage = src.storage();
        let mut dst = self.storage_mut();
        dispatch!("assign", (&mut *dst, &*src_storage), |d, s; _wrap| d.copy_into(self.layout(), s, src.layout()))
    }
}

impl Tensor {
    /// `self + other` for two tensors of one shape and dtype. When `self`
    /// is the only handle on its contiguous storage, as a gradient being
    /// accumulated usually is, and the backend can add in place (the CPU
    /// can), the sum is written into that buffer instead of a new one;
    /// otherwise this is `self.add(other)`.
    pub fn add_into(mut self, other: &Tensor) -> Result<Tensor> {
        let fits = self.shape() == other.shape()
            && self.dtype() == other.dtype()
            && self.device() == other.device()
            && other.is_contiguous();
        if fits && self.is_contiguous() && self.layout().offset() == 0 {
            if let Some(inner) = Arc::get_mut(&mut self.0) {
                if let Some(cell) = Arc::get_mut(&mut inner.storage) {
                    let src = other.storage();
                    let mut dst = cell.write();
                    let added = dispatch!("add_into", (&mut *dst, &*src), |d, s; _wrap| d.add_assign(s, other.layout())?);
                    drop(dst);
                    if added {
                        return Ok(self);
                    }
                }
            }
        }
        self.add(other)
    }
}

impl PartialEq for Tensor {
    /// Same shape and same values (as f64); for tests.
    fn eq(&self, other: &Tensor) -> bool {
        self.shape() == other.shape()
            && match (self.to_f64_vec(), other.to_f64_vec()) {
                (Ok(a), Ok(b)) => a == b,
                _ => false,
            }
    }
}
