//! The parameter store: every trainable tensor of a model, under a dotted
//! hierarchical name.
//!
//! Layers receive a [`Path`] (a position in the name tree) and register their
//! parameters below it, so a model built as
//! `Linear::new(&root.pp("time_mlp").pp(0), ..)` owns `time_mlp.0.weight` and
//! `time_mlp.0.bias`: exactly PyTorch's `state_dict` names for the same tree.
//! Initial values come from the store's seeded counter-based generator, in
//! creation order, so a model built twice from the same seed is identical.
//!
//! Beside the parameters a store holds *buffers*: state a layer keeps but no
//! optimizer trains, such as batch norm's running statistics. They are part
//! of the checkpoint (PyTorch's `state_dict` holds them too) but not of
//! [`ParamStore::named`], so optimizers and EMA never see them.

use crate::{NnError, Result};
use autograd::Var;
use std::collections::BTreeMap;
use std::fmt::Display;
use std::sync::{Arc, Mutex, MutexGuard};
use tensor::{DType, Device, Rng, Shape, Tensor};

/// How a fresh parameter is filled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// PyTorch's default for Linear and Conv2d weights: `kaiming_uniform_`
    /// with `a = sqrt(5)`, i.e. uniform in `±gain * sqrt(3 / fan_in)` with
    /// `gain = sqrt(2 / (1 + a²))`, which works out to `±1/sqrt(fan_in)`.
    KaimingUniform {
        fan_in: usize,
    },
    /// Uniform in `[-bound, bound)`.
    Uniform {
        bound: f64,
    },
    Const(f64),
    /// Normal with mean 0.
    Normal {
        std: f64,
    },
}

impl Init {
    /// The half-width of PyTorch's default Linear/Conv2d initialisation.
    pub fn kaiming_uniform_bound(fan_in: usize) -> f64 {
        let a = 5f64.sqrt();
        let gain = (2.0 / (1.0 + a * a)).sqrt();
        gain * (3.0 / fan_in as f64).sqrt()
    }

    fn make(self, shape: Shape, dtype: DType, device: &Device, rng: &mut Rng) -> Result<Tensor> {
        Ok(match self {
            Init::KaimingUniform { fan_in } => {
                if fan_in == 0 {
                    return Err(NnError::bad("Init::KaimingUniform", "fan_in must be positive"));
                }
                let b = Init::kaiming_uniform_bound(fan_in);
                Tensor::rand(-b, b, shape, dtype, device, rng)?
            }
            Init::Uniform { bound } => Tensor::rand(-bound, bound, shape, dtype, device, rng)?,
            Init::Const(v) => Tensor::full(v, shape, dtype, device)?,
            Init::Normal { std } => Tensor::randn(0.0, std, shape, dtype, device, rng)?,
        })
    }
}

struct Inner {
    device: Device,
    dtype: DType,
    rng: Rng,
    params: BTreeMap<String, Var>,
    buffers: BTreeMap<String, Tensor>,
}

/// All parameters of a model. Cloning gives another handle to the same store.
///
/// ```
/// use nn::{Init, Linear, ParamStore};
/// use nn::autograd::tensor::{DType, Device, Rng};
///
/// let store = ParamStore::new(Device::Cpu, DType::F32, Rng::new(0));
/// let root = store.root();
/// let _encoder = Linear::new(&root.pp("encoder").pp(0), 4, 8, true)?;
/// let _scale = root.pp("head").param("scale", [8], Init::Const(1.0))?;
/// let names: Vec<String> = store.named().into_iter().map(|(name, _)| name).collect();
/// assert_eq!(names, ["encoder.0.bias", "encoder.0.weight", "head.scale"]);
/// assert_eq!(store.num_params(), 8 * 4 + 8 + 8);
/// # Ok::<(), nn::NnError>(())
/// ```
#[derive(Clone)]
pub struct ParamStore(Arc<Mutex<Inner>>);

impl ParamStore {
    /// An empty store whose parameters will live on `device` as `dtype`,
    /// initialised from `rng`.
    pub fn new(device: Device, dtype: DType, rng: Rng) -> ParamStore {
        ParamStore(Arc::new(Mutex::new(Inner { device, dtype, rng, params: BTreeMap::new(), buffers: BTreeMap::new() })))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The top of the name tree.
    pub fn root(&self) -> Path {
        Path { store: self.clone(), prefix: String::new() }
    }

    /// Every parameter with its full name, sorted by name.
    pub fn named(&self) -> Vec<(String, Var)> {
        self.lock().params.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// The parameter and buffer values by name (a PyTorch `state_dict`);
    /// the tensors are the live ones, not copies.
    pub fn tensors(&self) -> BTreeMap<String, Tensor> {
        let inner = self.lock();
        let params = inner.params.iter().map(|(k, v)| (k.clone(), v.tensor().clone()));
        params.chain(inner.buffers.iter().map(|(k, t)| (k.clone(), t.clone()))).collect()
    }

    /// The parameter called `name` (buffers are not parameters).
    pub fn get(&self, name: &str) -> Option<Var> {
        self.lock().params.get(name).cloned()
    }

    /// Number of parameter tensors.
    pub fn len(&self) -> usize {
        self.lock().params.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Total number of scalar parameters (what PyTorch users sum with
    /// `p.numel()`).
    pub fn num_params(&self) -> usize {
        self.lock().params.values().map(|v| v.tensor().elem_count()).sum()
    }

    pub fn device(&self) -> Device {
        self.lock().device.clone()
    }

    pub fn dtype(&self) -> DType {
        self.lock().dtype
    }

    /// A fresh value for the new name `name` (parameter or buffer).
    fn fresh_value(&self, name: &str, shape: Shape, init: Init) -> Result<Tensor> {
        let mut inner = self.lock();
        if name.is_empty() {
            return Err(NnError::bad("ParamStore", "a parameter needs a name"));
        }
        if inner.params.contains_key(name) || inner.buffers.contains_key(name) {
            return Err(NnError::DuplicateParam(name.to_string()));
        }
        let Inner { device, dtype, rng, .. } = &mut *inner;
        init.make(shape, *dtype, device, rng)
    }

    fn register_param(&self, name: String, shape: Shape, init: Init) -> Result<Var> {
        let var = Var::param(self.fresh_value(&name, shape, init)?);
        self.lock().params.insert(name, var.clone());
        Ok(var)
    }

    fn register_buffer(&self, name: String, shape: Shape, init: Init) -> Result<Tensor> {
        let value = self.fresh_value(&name, shape, init)?;
        self.lock().buffers.insert(name, value.clone());
        Ok(value)
    }
}

/// A position in a store's name tree, e.g. `down.0.1`.
#[derive(Clone)]
pub struct Path {
    store: ParamStore,
    prefix: String,
}

impl Path {
    /// The child path `self.name` (`name` may be a string or an index).
    pub fn pp(&self, name: impl Display) -> Path {
        Path { store: self.store.clone(), prefix: self.join(name) }
    }

    /// The full dotted name of this path ("" at the root).
    pub fn name(&self) -> &str {
        &self.prefix
    }

    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    /// Registers a new parameter `self.name`, filled by `init`; fails if
    /// the name is taken.
    pub fn param(&self, name: impl Display, shape: impl Into<Shape>, init: Init) -> Result<Var> {
        self.store.register_param(self.join(name), shape.into(), init)
    }

    /// Registers a new buffer `self.name`: a tensor that is saved and
    /// loaded with the model but not trained. Its owner updates it in place
    /// (`Tensor::assign`).
    pub fn buffer(&self, name: impl Display, shape: impl Into<Shape>, init: Init) -> Result<Tensor> {
        self.store.register_buffer(self.join(name), shape.into(), init)
    }

    fn join(&self, name: impl Display) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }
}
