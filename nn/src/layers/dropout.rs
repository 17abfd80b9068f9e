//! Inverted dropout: in training, zeroes each element with probability `p`
//! and scales the rest by 1/(1-p); in evaluation, the identity.

use crate::{Ctx, Module, NnError, Result};
use autograd::Var;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dropout {
    pub p: f64,
}

impl Dropout {
    pub fn new(p: f64) -> Result<Dropout> {
        if !(0.0..1.0).contains(&p) {
            return Err(NnError::bad("Dropout", format!("probability must be in [0, 1), got {p}")));
        }
        Ok(Dropout { p })
    }
}

impl Module for Dropout {
    fn forward(&self, x: &Var, ctx: &mut Ctx) -> Result<Var> {
        if ctx.train && self.p > 0.0 {
            Ok(x.dropout(self.p, &mut ctx.rng)?)
        } else {
            Ok(x.clone())
        }
    }
}
