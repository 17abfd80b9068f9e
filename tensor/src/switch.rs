//! A process-wide on/off switch read from an environment variable: on when
//! the variable is `1` at the first question, off otherwise; code may also
//! set it. After the first read, asking costs one relaxed atomic load,
//! cheap enough for a hot path.

use std::sync::atomic::{AtomicU8, Ordering};

pub struct EnvSwitch {
    var: &'static str,
    /// 0: not yet read, 1: on, 2: off.
    state: AtomicU8,
}

impl EnvSwitch {
    /// A switch read from the environment variable `var` when first asked.
    pub const fn new(var: &'static str) -> EnvSwitch {
        EnvSwitch { var, state: AtomicU8::new(0) }
    }

    /// Whether the switch is on. Inlined: kernels ask before every row,
    /// and after the first call it is one load.
    #[inline]
    pub fn is_on(&self) -> bool {
        match self.state.load(Ordering::Relaxed) {
            1 => true,
            2 => false,
            _ => self.read_environment(),
        }
    }

    #[cold]
    fn read_environment(&self) -> bool {
        let on = std::env::var(self.var).as_deref() == Ok("1");
        self.set(on);
        on
    }

    /// Sets the switch, whatever the environment says.
    pub fn set(&self, on: bool) {
        self.state.store(if on { 1 } else { 2 }, Ordering::Relaxed);
    }
}
