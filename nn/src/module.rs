//! The `Module` trait every layer implements, the per-call context that
//! carries train/eval mode and randomness, and `Sequential`.

use crate::Result;
use autograd::Var;
use tensor::Rng;

/// What a forward pass needs besides its input: whether it is training
/// (dropout active) and the generator dropout draws from.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub train: bool,
    pub rng: Rng,
}

impl Ctx {
    /// Training mode: dropout masks come from `rng`, which advances.
    pub fn train(rng: Rng) -> Ctx {
        Ctx { train: true, rng }
    }

    /// Evaluation mode: dropout is the identity and nothing random happens.
    pub fn eval() -> Ctx {
        Ctx { train: false, rng: Rng::new(0) }
    }
}

/// A layer is anything that maps a `Var` to a `Var`:
/// ```
/// use nn::{Ctx, Module};
/// use nn::autograd::{tensor::{Device, Tensor}, Var};
///
/// struct Tanh;
/// impl Module for Tanh {
///     fn forward(&self, x: &Var, _ctx: &mut Ctx) -> nn::Result<Var> {
///         Ok(x.tanh()?)
///     }
/// }
/// let x = Var::constant(Tensor::from_vec(vec![0.0f32], 1, &Device::Cpu)?);
/// assert_eq!(Tanh.forward(&x, &mut Ctx::eval())?.tensor().to_vec::<f32>()?, vec![0.0]);
/// # Ok::<(), nn::NnError>(())
/// ```
pub trait Module {
    fn forward(&self, x: &Var, ctx: &mut Ctx) -> Result<Var>;
}

impl<M: Module + ?Sized> Module for Box<M> {
    fn forward(&self, x: &Var, ctx: &mut Ctx) -> Result<Var> {
        (**self).forward(x, ctx)
    }
}

/// Modules applied one after another.
///
/// ```
/// use nn::{Ctx, Linear, Module, ParamStore, Sequential, SiLU};
/// use nn::autograd::{tensor::{DType, Device, Rng, Tensor}, Var};
///
/// let store = ParamStore::new(Device::Cpu, DType::F32, Rng::new(0));
/// let root = store.root();
/// let mlp = Sequential::new().with(Linear::new(&root.pp(0), 2, 16, true)?).with(SiLU).with(Linear::new(&root.pp(2), 16, 1, true)?);
/// let x = Var::constant(Tensor::zeros([8, 2], DType::F32, &Device::Cpu)?);
/// assert_eq!(mlp.forward(&x, &mut Ctx::eval())?.dims(), &[8, 1]);
/// assert_eq!(mlp.len(), 3);
/// # Ok::<(), nn::NnError>(())
/// ```
#[derive(Default)]
pub struct Sequential {
    layers: Vec<Box<dyn Module>>,
}

impl Sequential {
    pub fn new() -> Sequential {
        Sequential::default()
    }

    /// Appends a layer (builder style).
    pub fn with(mut self, layer: impl Module + 'static) -> Sequential {
        self.layers.push(Box::new(layer));
        self
    }

    pub fn push(&mut self, layer: impl Module + 'static) {
        self.layers.push(Box::new(layer));
    }

    pub fn len(&self) -> usize {
        self.layers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

impl Module for Sequential {
    fn forward(&self, x: &Var, ctx: &mut Ctx) -> Result<Var> {
        let mut x = x.clone();
        for layer in &self.layers {
            x = layer.forward(&x, ctx)?;
        }
        Ok(x)
    }
}
