//! Stopping a training run from outside: Ctrl-C (SIGINT) and SIGTERM, which
//! is what `timeout`, `docker stop` and job schedulers send (and SIGHUP, a
//! closed terminal). Each asks the loop to finish its current step, write a
//! checkpoint and exit cleanly, so a run stopped by any of them continues
//! with `--resume`.
//!
//! The handler runs on its own thread (set up by the `ctrlc` crate), so it
//! may print: it acknowledges the first signal at once. A second signal
//! while the checkpoint is being written waits for it and says so; a second
//! one before the save says that the save is coming; only a third one before
//! the save quits at once, losing the steps since the last checkpoint.
//! Checkpoints are written to a temporary file and renamed, so even that
//! exit never leaves a half-written `last.safetensors`.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Stop signals received so far.
static REQUESTS: AtomicU32 = AtomicU32::new(0);
/// True while a checkpoint is being written.
static SAVING: AtomicBool = AtomicBool::new(false);

/// Installs the handler (once per process; a second call keeps the first).
pub fn install() {
    let _ = ctrlc::set_handler(on_signal);
}

/// Whether a stop signal has arrived.
pub fn stop_requested() -> bool {
    REQUESTS.load(Ordering::SeqCst) > 0
}

/// Marks a checkpoint write: while the guard lives, a further signal waits.
pub struct Saving(());

impl Saving {
    pub fn start() -> Saving {
        SAVING.store(true, Ordering::SeqCst);
        Saving(())
    }
}

impl Drop for Saving {
    fn drop(&mut self) {
        SAVING.store(false, Ordering::SeqCst);
    }
}

fn on_signal() {
    let n = REQUESTS.fetch_add(1, Ordering::SeqCst) + 1;
    let message = what_to_do(n, SAVING.load(Ordering::SeqCst));
    eprintln!("\n{}", message.text());
    if message == Reaction::QuitNow {
        std::process::exit(130);
    }
}

/// What the `n`-th stop signal does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reaction {
    StopAfterStep,
    WaitForSave,
    SaveIsComing,
    QuitNow,
}

fn what_to_do(n: u32, saving: bool) -> Reaction {
    match (n, saving) {
        (1, _) => Reaction::StopAfterStep,
        (_, true) => Reaction::WaitForSave,
        (2, false) => Reaction::SaveIsComing,
        _ => Reaction::QuitNow,
    }
}

impl Reaction {
    fn text(self) -> &'static str {
        match self {
            Reaction::StopAfterStep => "stop requested: finishing the current step, then saving a checkpoint (continue later with --resume)",
            Reaction::WaitForSave => "a checkpoint is being written: waiting for it to finish before exiting",
            Reaction::SaveIsComing => {
                "already stopping: a checkpoint is written right after the current step (a third signal quits without saving)"
            }
            Reaction::QuitNow => "quitting without saving: --resume continues from the last checkpoint written",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_during_the_save_always_waits() {
        assert_eq!(what_to_do(1, false), Reaction::StopAfterStep);
        assert_eq!(what_to_do(1, true), Reaction::StopAfterStep);
        for n in 2..6 {
            assert_eq!(what_to_do(n, true), Reaction::WaitForSave, "signal {n}");
        }
        assert_eq!(what_to_do(2, false), Reaction::SaveIsComing);
        assert_eq!(what_to_do(3, false), Reaction::QuitNow);
    }
}
