//! A coarse per-kernel profiler for the CUDA backend, for finding where a
//! training step spends its time on a machine with no profiler tools.
//!
//! With `PETAL_CUDA_PROFILE=1` in the environment, every kernel lookup,
//! matrix product, copy and driver allocation first waits for the device
//! and charges the time since the previous such point to the previous
//! label. Each label's time is therefore its GPU time plus the host time of
//! launching it, measured with the device otherwise idle: far slower
//! overall than a normal run, but the shares are what matter. Without the
//! variable the only cost is one relaxed atomic load per label.

use crate::switch::EnvSwitch;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ENABLED: EnvSwitch = EnvSwitch::new("PETAL_CUDA_PROFILE");

struct State {
    current: Option<(String, Instant)>,
    totals: BTreeMap<String, (Duration, u64)>,
}

static STATE: Mutex<State> = Mutex::new(State { current: None, totals: BTreeMap::new() });

/// True when `PETAL_CUDA_PROFILE=1` was set at the first check.
pub fn enabled() -> bool {
    ENABLED.is_on()
}

/// Closes the running label (after `sync` has waited for the device) and
/// opens `label`. Call only when `enabled()`.
pub(crate) fn mark(label: impl FnOnce() -> String, sync: impl FnOnce()) {
    sync();
    let now = Instant::now();
    let mut st = STATE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((prev, since)) = st.current.take() {
        let entry = st.totals.entry(prev).or_default();
        entry.0 += now - since;
        entry.1 += 1;
    }
    st.current = Some((label(), now));
}

/// Forgets everything measured so far (e.g. after warm-up).
pub fn reset() {
    let mut st = STATE.lock().unwrap_or_else(|e| e.into_inner());
    st.current = None;
    st.totals.clear();
}

/// (label, total time, count), longest first. The label still open when
/// this is called is not included.
pub fn report() -> Vec<(String, Duration, u64)> {
    let st = STATE.lock().unwrap_or_else(|e| e.into_inner());
    let mut rows: Vec<_> = st.totals.iter().map(|(k, (d, n))| (k.clone(), *d, *n)).collect();
    rows.sort_by_key(|row| std::cmp::Reverse(row.1));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each label is charged the time until the next mark, and a label that
    /// is still open is left out. (Only this test marks: the rest of the
    /// suite runs with profiling off.)
    #[test]
    fn marks_charge_the_time_to_the_previous_label() {
        reset();
        let nap = Duration::from_millis(20);
        for label in ["launch a", "launch b", "launch a", "still open"] {
            mark(|| label.to_string(), || {});
            std::thread::sleep(nap);
        }
        let rows = report();
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!((rows[0].0.as_str(), rows[0].2), ("launch a", 2));
        assert_eq!((rows[1].0.as_str(), rows[1].2), ("launch b", 1));
        assert!(rows[0].1 >= 2 * nap && rows[1].1 >= nap);
        reset();
        assert!(report().is_empty());
    }
}
