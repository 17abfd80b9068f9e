//! The seam between the tensor front end and the devices.
//!
//! `Tensor` methods (in `ops/`) check shapes and build layouts; then they
//! call one method of `BackendStorage`, which the CPU storage (`cpu/`) and
//! the CUDA storage (`cuda/`) implement. This file holds everything both
//! sides agree on: the op descriptions (`UnaryOp`, `Conv2dParams`, ...) and
//! the trait itself.
//!
//! Adding a device means implementing this trait for its storage, then
//! giving it one variant in `Device` (device.rs) and in `Storage`, and one
//! arm in each of `Storage`'s constructors and in `dispatch!` (storage.rs).
//! Nothing in `ops/` or `tensor.rs` names a device.
//!
//! Conventions every implementation follows:
//! - Inputs come with a `Layout` (any strides, any offset) unless the method
//!   says it takes contiguous data; contiguous inputs still carry an offset,
//!   which is where their first element sits.
//! - Outputs are fresh, contiguous storages.
//! - Binary and ternary ops receive layouts already broadcast to one shape.
//! - A few methods have default bodies built from the others; a backend
//!   overrides them when it has a faster, fused kernel (the CPU does for
//!   `silu_backward`, `dropout`, `add_assign` and `cat`).

use crate::cpu::CpuStorage;
use crate::{DType, Error, Layout, Result, Shape};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UnaryOp {
    Neg,
    Exp,
    Log,
    Sqrt,
    Sqr,
    Recip,
    Tanh,
    Sigmoid,
    Silu,
    Relu,
    Abs,
    Sin,
    Cos,
    /// x^e
    Powf(f64),
    /// min(max(x, lo), hi)
    Clamp(f64, f64),
    /// x * mul + add: the scalar forms of add, sub, mul and div.
    Affine { mul: f64, add: f64 },
    /// max(x, s) and min(x, s)
    MaxScalar(f64),
    MinScalar(f64),
    /// d silu / dx, used by the backward pass
    SiluGrad,
    /// 1 where x > 0, else 0: the ReLU backward mask
    Step,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Maximum,
    Minimum,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    Max,
    Min,
    /// Index of the first maximum, as u32.
    ArgMax,
}

impl UnaryOp {
    /// How the op travels to a kernel that takes it as data: its number
    /// (`U_*` in cuda/elementwise.cu) and up to two scalar parameters.
    pub fn code(self) -> (u32, f64, f64) {
        match self {
            UnaryOp::Neg => (0, 0.0, 0.0),
            UnaryOp::Exp => (1, 0.0, 0.0),
            UnaryOp::Log => (2, 0.0, 0.0),
            UnaryOp::Sqrt => (3, 0.0, 0.0),
            UnaryOp::Sqr => (4, 0.0, 0.0),
            UnaryOp::Recip => (5, 0.0, 0.0),
            UnaryOp::Tanh => (6, 0.0, 0.0),
            UnaryOp::Sigmoid => (7, 0.0, 0.0),
            UnaryOp::Silu => (8, 0.0, 0.0),
            UnaryOp::Relu => (9, 0.0, 0.0),
            UnaryOp::Abs => (10, 0.0, 0.0),
            UnaryOp::Sin => (11, 0.0, 0.0),
            UnaryOp::Cos => (12, 0.0, 0.0),
            UnaryOp::Powf(e) => (13, e, 0.0),
            UnaryOp::Clamp(lo, hi) => (14, lo, hi),
            UnaryOp::Affine { mul, add } => (15, mul, add),
            UnaryOp::MaxScalar(s) => (16, s, 0.0),
            UnaryOp::MinScalar(s) => (17, s, 0.0),
            UnaryOp::SiluGrad => (18, 0.0, 0.0),
            UnaryOp::Step => (19, 0.0, 0.0),
        }
    }
}

impl BinaryOp {
    /// The op's number in the kernels (`B_*` in cuda/elementwise.cu).
    pub fn code(self) -> u32 {
        match self {
            BinaryOp::Add => 0,
            BinaryOp::Sub => 1,
            BinaryOp::Mul => 2,
            BinaryOp::Div => 3,
            BinaryOp::Maximum => 4,
            BinaryOp::Minimum => 5,
        }
    }
}

impl CmpOp {
    /// The op's number in the kernels (`C_*` in cuda/elementwise.cu).
    pub fn code(self) -> u32 {
        match self {
            CmpOp::Eq => 0,
            CmpOp::Ne => 1,
            CmpOp::Lt => 2,
            CmpOp::Le => 3,
            CmpOp::Gt => 4,
            CmpOp::Ge => 5,
        }
    }
}

/// A batched matrix product: `batch` products of [m, k] @ [k, n]. Each
/// operand's layout is [batch, rows, cols] (batch stride 0 when broadcast).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatmulDims {
    pub batch: usize,
    pub m: usize,
    pub k: usize,
    pub n: usize,
}

/// Hyper-parameters of one Adam/AdamW step, bias corrections included.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamStep {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// L2 penalty added to the gradient (Adam's `weight_decay`).
    pub weight_decay: f64,
    /// Decoupled decay applied to the parameter (AdamW's `weight_decay`).
    pub decoupled_decay: f64,
    /// 1 - beta1^t and 1 - beta2^t for the step t being taken.
    pub bias_correction1: f64,
    pub bias_correction2: f64,
}

/// A 2-D convolution of [batch, in_channels, in_h, in_w] by
/// [out_channels, in_channels, kernel_h, kernel_w], checked by
/// `conv2d_params` (kernel at least 1x1 and no larger than the padded input).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dParams {
    pub batch: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride: usize,
    pub padding: usize,
}

impl Conv2dParams {
    pub fn out_h(&self) -> usize {
        (self.in_h + 2 * self.padding - self.kernel_h) / self.stride + 1
    }

    pub fn out_w(&self) -> usize {
        (self.in_w + 2 * self.padding - self.kernel_w) / self.stride + 1
    }

    /// Multiply-adds counted as two flops: `2*N*Cout*Cin*kh*kw*OH*OW`.
    pub fn flops(&self) -> f64 {
        let patch = self.in_channels * self.kernel_h * self.kernel_w;
        2.0 * (self.batch * self.out_channels * patch * self.out_h() * self.out_w()) as f64
    }
}

/// A square pooling window of `kernel` moved by `stride` over
/// [batch, channels, in_h, in_w]; windows never hang off the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool2dParams {
    pub batch: usize,
    pub channels: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub kernel: usize,
    pub stride: usize,
}

impl Pool2dParams {
    /// `(in - kernel) / stride + 1`: windows never hang off the edge.
    pub fn out_h(&self) -> usize {
        (self.in_h - self.kernel) / self.stride + 1
    }

    pub fn out_w(&self) -> usize {
        (self.in_w - self.kernel) / self.stride + 1
    }
}

/// Group normalisation of [batch, channels, spatial...]: channels split
/// into `groups` equal groups, each normalised over its channels and the
/// spatial positions of one image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupNormParams {
    pub batch: usize,
    pub channels: usize,
    /// H*W
    pub spatial: usize,
    pub groups: usize,
    pub eps: f64,
}

/// A storage and the layout to read it through.
pub type Operand<'a, S> = (&'a S, &'a Layout);

/// The operands `BackendStorage::conv2d_fused` folds around a convolution,
/// each contiguous and in the input's dtype.
pub struct ConvFusion<'a, S> {
    /// `[Cout]`, added to the output.
    pub bias: Option<Operand<'a, S>>,
    /// `(scale, shift)`, `[N, Cin]` each: the convolution reads `input * scale + shift`.
    pub input_affine: Option<(Operand<'a, S>, Operand<'a, S>)>,
    /// SiLU on the input, after the affine.
    pub input_silu: bool,
    /// `[N, Cout, OH, OW]`, added to the output after the bias.
    pub residual: Option<Operand<'a, S>>,
    /// Also return the output's per-channel moments.
    pub moments: bool,
    /// The filters as `prepare_conv_weight` rearranged them, where the
    /// backend asked for that (`conv_weight_arrangement`).
    pub prepared_weight: Option<&'a S>,
}

/// One backend's storage: a flat buffer of one dtype on one device.
pub trait BackendStorage: Sized {
    /// What says where a new storage goes: `CpuDevice`, `CudaDevice`.
    type Device;

    // ---- creation and transfer ------------------------------------------

    /// `n` copies of `value`, converted to `dtype`.
    fn full(device: &Self::Device, n: usize, dtype: DType, value: f64) -> Result<Self>;
    /// Uniform [lo, hi) values: element i is `rng::uniform_at(key, start, i, lo, hi)`.
    #[allow(clippy::too_many_arguments)]
    fn rand_uniform(device: &Self::Device, n: usize, dtype: DType, key: u64, start: u64, lo: f64, hi: f64) -> Result<Self>;
    /// Normal values: element i is `mean + std * rng::normal_at(key, start, i)`.
    #[allow(clippy::too_many_arguments)]
    fn rand_normal(device: &Self::Device, n: usize, dtype: DType, key: u64, start: u64, mean: f64, std: f64) -> Result<Self>;
    /// A copy of a host storage on `device`.
    fn from_cpu(device: &Self::Device, cpu: &CpuStorage) -> Result<Self>;
    /// A copy of the whole storage on the host.
    fn to_cpu(&self) -> Result<CpuStorage>;
    /// The device this storage lives on.
    fn device(&self) -> Self::Device;

    fn dtype(&self) -> DType;
    /// Number of elements held.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn to_dtype(&self, layout: &Layout, dtype: DType) -> Result<Self>;
    /// The elements of `layout`, gathered into a contiguous storage.
    fn copy_strided(&self, layout: &Layout) -> Result<Self>;
    /// Writes the elements of `src` (seen through `src_layout`) into the
    /// positions of `self` given by `dst_layout`; both layouts have one shape.
    fn copy_into(&mut self, dst_layout: &Layout, src: &Self, src_layout: &Layout) -> Result<()>;

    fn unary(&self, layout: &Layout, op: UnaryOp) -> Result<Self>;
    fn binary(&self, layout: &Layout, rhs: &Self, rhs_layout: &Layout, op: BinaryOp) -> Result<Self>;
    /// 1 where the comparison holds, else 0, in the inputs' dtype.
    fn cmp(&self, layout: &Layout, rhs: &Self, rhs_layout: &Layout, op: CmpOp) -> Result<Self>;
    /// `self` is the mask (nonzero = take `on_true`).
    fn where_cond(
        &self,
        layout: &Layout,
        on_true: &Self,
        true_layout: &Layout,
        on_false: &Self,
        false_layout: &Layout,
    ) -> Result<Self>;
    /// Reduces over `axes` (sorted, unique); the output keeps the other dims
    /// in order, contiguous, as if `keepdim` were true.
    fn reduce(&self, layout: &Layout, axes: &[usize], op: ReduceOp) -> Result<Self>;

    fn matmul(&self, layout: &Layout, rhs: &Self, rhs_layout: &Layout, dims: MatmulDims) -> Result<Self>;

    // The image kernels take contiguous NCHW inputs (offset in the layout).
    fn conv2d(&self, layout: &Layout, weight: &Self, weight_layout: &Layout, bias: Option<(&Self, &Layout)>, p: &Conv2dParams) -> Result<Self>;
    fn conv2d_backward_input(&self, grad_layout: &Layout, weight: &Self, weight_layout: &Layout, p: &Conv2dParams) -> Result<Self>;
    fn conv2d_backward_weight(&self, layout: &Layout, grad_out: &Self, grad_layout: &Layout, p: &Conv2dParams) -> Result<Self>;
    fn avg_pool2d(&self, layout: &Layout, p: &Pool2dParams) -> Result<Self>;
    fn avg_pool2d_backward(&self, grad_layout: &Layout, p: &Pool2dParams) -> Result<Self>;
    fn max_pool2d(&self, layout: &Layout, p: &Pool2dParams) -> Result<Self>;
    fn max_pool2d_backward(&self, layout: &Layout, grad_out: &Self, grad_layout: &Layout, p: &Pool2dParams) -> Result<Self>;
    /// dims = (batch, channels, in_h, in_w), integer scales.
    fn upsample_nearest2d(&self, layout: &Layout, dims: (usize, usize, usize, usize), scale: (usize, usize)) -> Result<Self>;
    fn upsample_nearest2d_backward(&self, grad_layout: &Layout, dims: (usize, usize, usize, usize), scale: (usize, usize)) -> Result<Self>;
    /// Returns (y, mean [N*G], rstd [N*G]).
    fn group_norm(&self, layout: &Layout, gamma: &Self, gamma_layout: &Layout, beta: &Self, beta_layout: &Layout, p: &GroupNormParams) -> Result<(Self, Self, Self)>;
    /// Returns (grad_x, grad_gamma, grad_beta); all inputs contiguous from offset 0.
    fn group_norm_backward(&self, gamma: &Self, mean: &Self, rstd: &Self, grad_y: &Self, p: &GroupNormParams) -> Result<(Self, Self, Self)>;
    /// `silu(group_norm(x))` in one pass (the U-Net follows every group
    /// norm with a SiLU). Returns (y, mean, rstd) as `group_norm` does.
    fn group_norm_silu(&self, layout: &Layout, gamma: &Self, gamma_layout: &Layout, beta: &Self, beta_layout: &Layout, p: &GroupNormParams) -> Result<(Self, Self, Self)>;
    /// The backward of `group_norm_silu`: (grad_x, grad_gamma, grad_beta).
    /// The SiLU's input is rebuilt from x, gamma, beta and the statistics,
    /// so the forward keeps no pre-activation. All inputs contiguous from offset 0.
    #[allow(clippy::too_many_arguments)]
    fn group_norm_silu_backward(&self, gamma: &Self, beta: &Self, mean: &Self, rstd: &Self, grad_y: &Self, p: &GroupNormParams) -> Result<(Self, Self, Self)>;
    /// `silu(group_norm(x * scale + shift))` without the modulated tensor,
    /// `scale` and `shift` `[N, C]`, times `mask` (a dropout mask as large
    /// as x) where given: (y, mean, rstd), the statistics those of `x *
    /// scale + shift`. `None` (the default) when this backend has no fused
    /// kernel for this dtype: the front end then composes the op. All
    /// inputs contiguous from offset 0.
    #[allow(clippy::too_many_arguments)]
    fn group_norm_silu_modulated(&self, _scale: &Self, _shift: &Self, _gamma: &Self, _beta: &Self, _mask: Option<&Self>, _p: &GroupNormParams) -> Result<Option<(Self, Self, Self)>> {
        Ok(None)
    }
    /// Its backward: (grad_x, grad_scale, grad_shift, grad_gamma,
    /// grad_beta), or `None` as above. All inputs contiguous from offset 0.
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn group_norm_silu_modulated_backward(
        &self,
        _scale: &Self,
        _shift: &Self,
        _gamma: &Self,
        _beta: &Self,
        _mean: &Self,
        _rstd: &Self,
        _grad_y: &Self,
        _mask: Option<&Self>,
        _p: &GroupNormParams,
    ) -> Result<Option<(Self, Self, Self, Self, Self)>> {
        Ok(None)
    }

    /// Picks slices along `dim` of `self` (contiguous, shape `dims`) at the u32 `indices` (contiguous).
    fn index_select(&self, layout: &Layout, indices: &Self, indices_layout: &Layout, dim: usize) -> Result<Self>;
    /// `self[.., indices[i], ..] += src[.., i, ..]` along `dim`, in place; `self` contiguous with shape `dims`.
    fn index_add(&mut self, dims: &[usize], indices: &Self, indices_layout: &Layout, src: &Self, src_layout: &Layout, dim: usize) -> Result<()>;

    /// In-place fused optimizer updates over whole contiguous buffers.
    fn adam_update(&mut self, grad: &Self, m: &mut Self, v: &mut Self, step: &AdamStep) -> Result<()>;
    /// `self = decay * self + (1 - decay) * src`
    fn ema_update(&mut self, src: &Self, decay: f64) -> Result<()>;

    // ---- fused fast paths, with plain defaults ---------------------------

    /// `grad * silu'(self)`, the input gradient of silu; both layouts have
    /// one shape and dtype. The default runs two kernels (silu' into a
    /// temporary, then the product); a backend may fuse them into one pass.
    fn silu_backward(&self, layout: &Layout, grad: &Self, grad_layout: &Layout) -> Result<Self> {
        let slope = self.unary(layout, UnaryOp::SiluGrad)?;
        grad.binary(grad_layout, &slope, &Layout::contiguous(layout.shape().clone()), BinaryOp::Mul)
    }

    /// Inverted dropout in one pass: `(x * mask, mask)` where `mask[i]` is
    /// `scale` when element i's uniform draw `rng::uniform_at(key, start, i,
    /// 0, 1)` is below `keep`, else 0. `None` (the default) when this
    /// backend has no fused kernel for this dtype: the front end then draws
    /// the same mask with `bernoulli` and multiplies.
    #[allow(clippy::too_many_arguments)]
    fn dropout(&self, _layout: &Layout, _keep: f64, _scale: f64, _key: u64, _start: u64) -> Result<Option<(Self, Self)>> {
        Ok(None)
    }

    /// The mask alone of `dropout` for `n` elements (the same draws):
    /// `scale` where kept, else 0. `None` (the default) when this backend
    /// has no kernel for this dtype: the front end then draws it with
    /// `bernoulli`.
    #[allow(clippy::too_many_arguments)]
    fn dropout_mask(_device: &Self::Device, _n: usize, _dtype: DType, _keep: f64, _scale: f64, _key: u64, _start: u64) -> Result<Option<Self>> {
        Ok(None)
    }

    /// `self += src` in place, for a contiguous `src` with as many elements
    /// as `self` (gradient accumulation). Returns false, having done
    /// nothing, when the backend cannot (the default): the front end then
    /// adds into a new storage.
    fn add_assign(&mut self, _src: &Self, _src_layout: &Layout) -> Result<bool> {
        Ok(false)
    }

    /// An inference convolution with the work around it folded into its
    /// passes over memory (see `Tensor::conv2d_fused`). Returns the output
    /// and, when `f.moments`, its per-channel sums `[N, C, 2]` in f64. `None`
    /// (the default) when this backend has no fused kernel: the front end
    /// then composes the same result from plain ops.
    fn conv2d_fused(&self, _layout: &Layout, _weight: &Self, _weight_layout: &Layout, _f: &ConvFusion<'_, Self>, _p: &Conv2dParams) -> Result<Option<(Self, Option<Self>)>> {
        Ok(None)
    }

    /// Names the rearrangement of the filters that `conv2d_fused` with `p`
    /// would otherwise compute on every call (e.g. Winograd's transformed
    /// filters), where there is one: the front end then computes it once
    /// with `prepare_conv_weight`, keeps it until the weights change, and
    /// passes it in `ConvFusion::prepared_weight`. The name changes with
    /// anything the rearrangement depends on besides the weights. `None`
    /// (the default): nothing to prepare.
    fn conv_weight_arrangement(&self, _p: &Conv2dParams) -> Option<u64> {
        None
    }

    /// The contiguous filters `[Cout, Cin, kh, kw]` rearranged as
    /// `conv_weight_arrangement(p)` names. Only called where that is `Some`.
    fn prepare_conv_weight(&self, _layout: &Layout, _p: &Conv2dParams) -> Result<Self> {
        Err(Error::BadArgument { op: "prepare_conv_weight", msg: "this backend prepares no filters".into() })
    }

    /// Per (image, channel) of a contiguous `[N, C, H, W]`: the sum and the
    /// sum of squares over H and W, as `[N, C, 2]` f64. `None` (the
    /// default) when this backend has no kernel for it.
    fn channel_moments(&self, _layout: &Layout, _dims: (usize, usize, usize)) -> Result<Option<Self>> {
        Ok(None)
    }

    /// Joins `parts` (one dtype, equal dims except `dim`) along `dim` into a
    /// new contiguous storage. The default zero-fills the output and copies
    /// each part into its window.
    fn cat(parts: &[(&Self, &Layout)], dim: usize) -> Result<Self> {
        let (first, first_layout) = parts[0];
        let mut dims = first_layout.dims().to_vec();
        dims[dim] = parts.iter().map(|(_, l)| l.dims()[dim]).sum();
        let out_layout = Layout::contiguous(Shape::from(dims));
        let mut out = Self::full(&first.device(), out_layout.elem_count(), first.dtype(), 0.0)?;
        let mut start = 0;
        for &(part, layout) in parts {
            let window = out_layout.narrow(dim, start, layout.dims()[dim]);
            out.copy_into(&window, part, layout)?;
            start += layout.dims()[dim];
        }
        Ok(out)
    }
}
