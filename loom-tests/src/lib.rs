//! Loom models of Ferrite's lock-free code: the shard mesh's SPSC ring (`tests/ring.rs`).
//!
//! The models need `engine` built under `--cfg loom` (loom's atomics in place of `std`'s, and
//! the shard runtime left out), a configuration of the whole build rather than a feature (a
//! feature must only add, and would be unified into every other crate's build), so this crate
//! is empty without it. Run it on its own target directory:
//! `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p ferrite-loom-tests --release`.
//!
//! The library holds what the models share: a [`Semaphore`], the loom-friendly stand-in for the
//! doorbell that wakes a sleeping shard in production.
#![cfg(loom)]

use engine::mesh::Notify;
use loom::sync::{Condvar, Mutex};

/// Most preemptions loom explores per execution unless `LOOM_MAX_PREEMPTIONS` says otherwise.
/// Every model also passes with 4 (about ten seconds in release); 3 keeps the run near two
/// seconds while going one preemption deeper than the 2 at which a sleep/wake model first
/// showed something (a loom false alarm on an RMW, which the ring's one-writer sleep word
/// now avoids; see `engine::mesh::ring`).
pub const PREEMPTIONS_MAX: usize = 3;

/// Checks `model` under every interleaving loom explores, with the preemption bound defaulting to
/// [`PREEMPTIONS_MAX`].
pub fn check(model: impl Fn() + Send + Sync + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(PREEMPTIONS_MAX);
    }
    builder.check(model);
}

/// A binary semaphore: `notify` raises it, [`Semaphore::wait`] waits for it to be raised and
/// lowers it. Like the doorbell, a notify that comes before the wait is not lost, and extra
/// notifies collapse into one. A lost wake-up leaves `wait` blocked forever, which loom reports
/// as a deadlock.
pub struct Semaphore {
    raised: Mutex<bool>,
    condvar: Condvar,
}

impl Semaphore {
    pub fn new() -> Self {
        Self {
            raised: Mutex::new(false),
            condvar: Condvar::new(),
        }
    }

    /// Waits until raised, then lowers it.
    pub fn wait(&self) {
        let mut raised = self
            .raised
            .lock()
            .expect("no model panics while holding it");
        while !*raised {
            raised = self
                .condvar
                .wait(raised)
                .expect("no model panics while holding it");
        }
        *raised = false;
    }
}

impl Default for Semaphore {
    fn default() -> Self {
        Self::new()
    }
}

impl Notify for Semaphore {
    fn notify(&self) {
        *self
            .raised
            .lock()
            .expect("no model panics while holding it") = true;
        self.condvar.notify_one();
    }
}
