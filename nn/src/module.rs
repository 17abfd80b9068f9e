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

pub trait Module {
    fn forward(&self, x: &Var, ctx: &mut Ctx) -> Result<Var>;
}

impl<M: Module + ?Sized> Module for Box<M> {
    fn forward(&self, x: &Var, ctx: &mut Ctx) -> Result<Var> {
        (**self).forward(x, ctx)
    }
}

/// Modules applied one after another.
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
