//! Nearest-neighbour upsampling by an integer factor (NCHW).

use crate::{Ctx, Module, Result};
use autograd::Var;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpsampleNearest2d {
    pub scale: usize,
}

impl UpsampleNearest2d {
    pub fn new(scale: usize) -> UpsampleNearest2d {
        UpsampleNearest2d { scale }
    }
}

impl Module for UpsampleNearest2d {
    fn forward(&self, x: &Var, _ctx: &mut Ctx) -> Result<Var> {
        Ok(x.upsample_nearest2d(self.scale, self.scale)?)
    }
}
