//! `SiLU(x) = x · sigmoid(x)` (swish).

use crate::{Ctx, Module, Result};
use autograd::Var;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SiLU;

impl Module for SiLU {
    fn forward(&self, x: &Var, _ctx: &mut Ctx) -> Result<Var> {
        Ok(x.silu()?)
    }
}
