//! Elementwise math on tensors: unary maps, scalar forms, broadcasting
//! binary ops, comparisons and `where`.

use crate::backend::{BackendStorage, BinaryOp, CmpOp, UnaryOp};
use crate::storage::dispatch;
use crate::storage::Storage;
use crate::{DType, Device, Error, Result, Rng, Shape, Tensor};

macro_rules! unary_methods {
    ($($name:ident => $op:ident),* $(,)?) => {
        $(
            pub fn $name(&self) -> Result<Tensor> {
                self.unary(UnaryOp::$op)
            }
        )*
    };
}

macro_rules! binary_methods {
    ($($name:ident => $op:ident),* $(,)?) => {
        $(
            /// Elementwise, with NumPy broadcasting.
            pub fn $name(&self, rhs: &Tensor) -> Result<Tensor> {
                self.binary(rhs, BinaryOp::$op, stringify!($name))
            }
        )*
    };
}

macro_rules! cmp_methods {
    ($($name:ident => $op:ident),* $(,)?) => {
        $(
            /// 1 where the comparison holds, else 0 (same dtype), broadcasting.
            pub fn $name(&self, rhs: &Tensor) -> Result<Tensor> {
                let (a, b) = self.broadcast_pair(rhs, stringify!($name))?;
                let out = dispatch!("comparison", &*a.storage(), &*b.storage(), |x, y| x.cmp(a.layout(), y, b.layout(), CmpOp::$op));
                Ok(Tensor::from_storage(out, a.shape()))
            }
        )*
    };
}

impl Tensor {
    pub fn unary(&self, op: UnaryOp) -> Result<Tensor> {
        let out = dispatch!("unary", &*self.storage(), |s| s.unary(self.layout(), op));
        Ok(Tensor::from_storage(out, self.shape()))
    }

    unary_methods! {
        neg => Neg, exp => Exp, log => Log, sqrt => Sqrt, sqr => Sqr, recip => Recip,
        tanh => Tanh, sigmoid => Sigmoid, silu => Silu, relu => Relu, abs => Abs,
        sin => Sin, cos => Cos,
    }

    /// The gradient of silu at `self` given the output gradient `grad`:
    /// `grad * silu'(self)`, fused into one pass where the backend can.
    pub fn silu_backward(&self, grad: &Tensor) -> Result<Tensor> {
        if self.shape() == grad.shape() && self.dtype() == grad.dtype() {
            let out = dispatch!("silu_backward", &*self.storage(), &*grad.storage(), |x, g| x.silu_backward(self.layout(), g, grad.layout()));
            return Ok(Tensor::from_storage(out, self.shape()));
        }
        grad.mul(&self.unary(UnaryOp::SiluGrad)?)
    }

    /// Inverted dropout: returns `(self * mask, mask)`, where `mask` is
    /// `1 / (1 - p)` with probability `1 - p`, else 0 (0 everywhere when
    /// `p == 1`). The mask is `bernoulli(1 - p, ..) * scale` drawn from
    /// `rng`, value for value; backends with a fused kernel make it in one
    /// pass with the product instead of through f64 draws, a comparison
    /// and casts.
    pub fn dropout(&self, p: f64, rng: &mut Rng) -> Result<(Tensor, Tensor)> {
        let scale = dropout_scale("dropout", p)?;
        // The same counters `bernoulli` would reserve, taken back if the
        // backend has no fused kernel for this dtype.
        let saved = *rng;
        let start = rng.reserve(self.elem_count() as u64);
        let fused = dispatch!("dropout", (&*self.storage()), |x; wrap| x
            .dropout(self.layout(), 1.0 - p, scale, rng.key, start)?
            .map(|(out, mask)| (wrap(out), wrap(mask))));
        if let Some((out, mask)) = fused {
            return Ok((Tensor::from_storage(out, self.shape()), Tensor::from_storage(mask, self.shape())));
        }
        *rng = saved;
        let keep = Tensor::bernoulli(1.0 - p, self.shape(), self.dtype(), self.device(), rng)?;
        let mask = keep.mul_scalar(scale)?;
        Ok((self.mul(&mask)?, mask))
    }

    /// The scaled mask `dropout` would draw for a tensor of `shape`, the
    /// same counters and the same values, without applying it: `1 / (1 -
    /// p)` where an element is kept, else 0. For ops that apply the mask as
    /// they write their output (`group_norm_silu_modulated`).
    pub fn dropout_mask(p: f64, shape: impl Into<Shape>, dtype: DType, device: &Device, rng: &mut Rng) -> Result<Tensor> {
        let scale = dropout_scale("dropout_mask", p)?;
        let shape = shape.into();
        let saved = *rng;
        let start = rng.reserve(shape.elem_count() as u64);
        if let Some(mask) = Storage::dropout_mask(device, shape.elem_count(), dtype, 1.0 - p, scale, rng.key, start)? {
            return Ok(Tensor::from_storage(mask, shape));
        }
        // No kernel for the mask alone: `dropout`'s own (fused where the
        // backend has one), applied to ones.
        *rng = saved;
        Ok(Tensor::ones(shape, dtype, device)?.dropout(p, rng)?.1)
    }

    pub fn powf(&self, exponent: f64) -> Result<Tensor> {
        self.unary(UnaryOp::Powf(exponent))
    }

    pub fn clamp(&self, lo: f64, hi: f64) -> Result<Tensor> {
        if lo > hi {
            return Err(Error::BadArgument { op: "clamp", msg: format!("lower bound {lo} is above upper bound {hi}") });
        }
        self.unary(UnaryOp::Clamp(lo, hi))
    }

    /// `self * mul + add` in one pass.
    pub fn affine(&self, mul: f64, add: f64) -> Result<Tensor> {
        self.unary(UnaryOp::Affine { mul, add })
    }
    pub fn add_scalar(&self, s: f64) -> Result<Tensor> {
        self.affine(1.0, s)
    }
    pub fn sub_scalar(&self, s: f64) -> Result<Tensor> {
        self.affine(1.0, -s)
    }
    pub fn mul_scalar(&self, s: f64) -> Result<Tensor> {
        self.affine(s, 0.0)
    }
    pub fn div_scalar(&self, s: f64) -> Result<Tensor> {
        self.affine(1.0 / s, 0.0)
    }
    pub fn maximum_scalar(&self, s: f64) -> Result<Tensor> {
        self.unary(UnaryOp::MaxScalar(s))
    }
    pub fn minimum_scalar(&self, s: f64) -> Result<Tensor> {
        self.unary(UnaryOp::MinScalar(s))
    }

    /// Both operands viewed at their common broadcast shape.
    pub(crate) fn broadcast_pair(&self, rhs: &Tensor, op: &'static str) -> Result<(Tensor, Tensor)> {
        if self.dtype() != rhs.dtype() {
            return Err(Error::DTypeMismatch { op, lhs: self.dtype(), rhs: rhs.dtype() });
        }
        if self.shape() == rhs.shape() {
            return Ok((self.clone(), rhs.clone()));
        }
        let shape = self.shape().broadcast_with(rhs.shape(), op)?;
        Ok((self.broadcast_as(shape.clone())?, rhs.broadcast_as(shape)?))
    }

    fn binary(&self, rhs: &Tensor, op: BinaryOp, name: &'static str) -> Result<Tensor> {
        let (a, b) = self.broadcast_pair(rhs, name)?;
        let out = dispatch!("binary", &*a.storage(), &*b.storage(), |x, y| x.binary(a.layout(), y, b.layout(), op));
        Ok(Tensor::from_storage(out, a.shape()))
    }

    binary_methods! { add => Add, sub => Sub, mul => Mul, div => Div, maximum => Maximum, minimum => Minimum }

    cmp_methods! { eq => Eq, ne => Ne, lt => Lt, le => Le, gt => Gt, ge => Ge }

    /// `on_true` where `self` (the mask) is nonzero, else `on_false`; all
    /// three broadcast together.
    pub fn where_cond(&self, on_true: &Tensor, on_false: &Tensor) -> Result<Tensor> {
        let shape = self.shape().broadcast_with(on_true.shape(), "where_cond")?.broadcast_with(on_false.shape(), "where_cond")?;
        let (m, t, f) = (self.broadcast_as(shape.clone())?, on_true.broadcast_as(shape.clone())?, on_false.broadcast_as(shape.clone())?);
        let out = dispatch!("where_cond", &*m.storage(), &*t.storage(), &*f.storage(), |ms, ts, fs| ms.where_cond(
            m.layout(),
            ts,
            t.layout(),
            fs,
            f.layout()
        ));
        Ok(Tensor::from_storage(out, shape))
    }
}

/// The scale of inverted dropout's kept elements, `1 / (1 - p)` (0 when
/// `p == 1`: nothing is kept), or an error naming `op` when `p` is not a
/// probability.
fn dropout_scale(op: &'static str, p: f64) -> Result<f64> {
    if !(0.0..=1.0).contains(&p) {
        return Err(Error::BadArgument { op, msg: format!("probability {p} is outside [0, 1]") });
    }
    Ok(if p < 1.0 { 1.0 / (1.0 - p) } else { 0.0 })
}
