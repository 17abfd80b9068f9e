//! Learning-rate schedules: the rate to use at optimizer step `step`
//! (counting from 0). Apply with `opt.set_lr(schedule.lr(step))` before
//! each step.

/// ```
/// use nn::{CosineAnnealing, LinearWarmup, LrSchedule};
///
/// // 100 warm-up steps into a cosine decay from 1e-3 to 0 over 1000 steps
/// let schedule = LinearWarmup::wrap(CosineAnnealing { base: 1e-3, min: 0.0, total_steps: 1000 }, 100);
/// assert!((schedule.lr(0) - 1e-5).abs() < 1e-12); // (0 + 1) / 100 of the cosine's value
/// assert!((schedule.lr(500) - 5e-4).abs() < 1e-12); // half way down the cosine
/// assert_eq!(schedule.lr(1000), 0.0);
/// ```
pub trait LrSchedule {
    fn lr(&self, step: u64) -> f64;
}

/// The same rate throughout.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Constant(pub f64);

impl LrSchedule for Constant {
    fn lr(&self, _step: u64) -> f64 {
        self.0
    }
}

/// PyTorch's `CosineAnnealingLR` (closed form):
/// `min + (base - min) (1 + cos(pi step / total_steps)) / 2`,
/// held at `min` once `step >= total_steps`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CosineAnnealing {
    pub base: f64,
    pub min: f64,
    pub total_steps: u64,
}

impl LrSchedule for CosineAnnealing {
    fn lr(&self, step: u64) -> f64 {
        if self.total_steps == 0 || step >= self.total_steps {
            return self.min;
        }
        let progress = step as f64 / self.total_steps as f64;
        self.min + (self.base - self.min) * (1.0 + (std::f64::consts::PI * progress).cos()) / 2.0
    }
}

/// Ramps linearly up to the wrapped schedule over the first `warmup_steps`:
/// `after.lr(step) * (step + 1) / warmup_steps` while `step < warmup_steps`,
/// then `after.lr(step)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearWarmup<S = Constant> {
    pub warmup_steps: u64,
    pub after: S,
}

impl LinearWarmup<Constant> {
    /// Warm-up to the constant rate `base`.
    pub fn new(base: f64, warmup_steps: u64) -> Self {
        LinearWarmup { warmup_steps, after: Constant(base) }
    }
}

impl<S: LrSchedule> LinearWarmup<S> {
    /// Warm-up into another schedule.
    pub fn wrap(after: S, warmup_steps: u64) -> Self {
        LinearWarmup { warmup_steps, after }
    }
}

impl<S: LrSchedule> LrSchedule for LinearWarmup<S> {
    fn lr(&self, step: u64) -> f64 {
        let lr = self.after.lr(step);
        if step < self.warmup_steps {
            lr * (step + 1) as f64 / self.warmup_steps as f64
        } else {
            lr
        }
    }
}

impl LrSchedule for Box<dyn LrSchedule> {
    fn lr(&self, step: u64) -> f64 {
        (**self).lr(step)
    }
}
