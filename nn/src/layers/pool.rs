//! Average and max pooling over NCHW images (no padding).

use crate::{Ctx, Module, Result};
use autograd::Var;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AvgPool2d {
    pub kernel: usize,
    pub stride: usize,
}

impl AvgPool2d {
    /// Stride defaults to the kernel size, as in PyTorch.
    pub fn new(kernel: usize) -> AvgPool2d {
        AvgPool2d { kernel, stride: kernel }
    }
}

impl Module for AvgPool2d {
    fn forward(&self, x: &Var, _ctx: &mut Ctx) -> Result<Var> {
        Ok(x.avg_pool2d(self.kernel, self.stride)?)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPool2d {
    pub kernel: usize,
    pub stride: usize,
}

impl MaxPool2d {
    pub fn new(kernel: usize) -> MaxPool2d {
        MaxPool2d { kernel, stride: kernel }
    }
}

impl Module for MaxPool2d {
    fn forward(&self, x: &Var, _ctx: &mut Ctx) -> Result<Var> {
        Ok(x.max_pool2d(self.kernel, self.stride)?)
    }
}
