//! Fused, in-place optimizer updates. They run as one kernel over each
//! parameter instead of a dozen elementwise ops, and write into the
//! parameter's storage so that every holder of the tensor sees the update.

use crate::backend::{AdamStep, BackendStorage};
use crate::storage::dispatch;
use crate::{Error, Result, Tensor};

fn check_whole(op: &'static str, t: &Tensor) -> Result<()> {
    if !t.covers_storage() {
        return Err(Error::BadArgument { op, msg: "in-place updates need tensors that own their whole storage".into() });
    }
    Ok(())
}

impl Tensor {
    /// One Adam/AdamW step on `self` (a parameter) given its gradient and
    /// moment buffers `m` and `v`, all updated in place.
    pub fn adam_update_(&self, grad: &Tensor, m: &Tensor, v: &Tensor, step: &AdamStep) -> Result<()> {
        for t in [grad, m, v] {
            if t.shape() != self.shape() {
                return Err(Error::ShapeMismatch { op: "adam_update_", lhs: self.shape().clone(), rhs: t.shape().clone() });
            }
        }
        for t in [self, m, v] {
            check_whole("adam_update_", t)?;
        }
        let grad = grad.whole()?;
        // Four locks follow (one read, three writes); a storage named twice
        // would wait on itself forever.
        let named = [("parameter", self), ("gradient", &grad), ("m", m), ("v", v)];
        for (i, (a, ta)) in named.iter().enumerate() {
            if let Some((b, _)) = named[i + 1..].iter().find(|(_, tb)| ta.same_storage(tb)) {
                return Err(Error::BadArgument { op: "adam_update_", msg: format!("the {a} and the {b} share one storage; each needs its own") });
            }
        }
        let gs = grad.storage();
        let (mut ps, mut ms, mut vs) = (self.storage_mut(), m.storage_mut(), v.storage_mut());
        dispatch!("adam_update_", (&mut *ps, &*gs, &mut *ms, &mut *vs), |p, g, m, v; _wrap| p.adam_update(g, m, v, step))
    }

    /// `self = decay * self + (1 - decay) * src`, in place.
    pub fn ema_update_(&self, src: &Tensor, decay: f64) -> Result<()> {
        if src.shape() != self.shape() {
            return Err(Error::ShapeMismatch { op: "ema_update_", lhs: self.shape().clone(), rhs: src.shape().clone() });
        }
        check_whole("ema_update_", self)?;
        let src = src.whole()?;
        if self.same_storage(&src) {
            return Ok(());
        }
        let ss = src.storage();
        let mut ds = self.storage_mut();
        dispatch!("ema_update_", (&mut *ds, &*ss), |d, s; _wrap| d.ema_update(s, decay))
    }
}
