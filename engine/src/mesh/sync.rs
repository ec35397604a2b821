//! The synchronisation primitives the ring is written against, so that one body of code runs both
//! in production and under loom's model checker.
//!
//! With the `loom` feature every name here is loom's: atomics and fences whose every permitted
//! interleaving and reordering loom explores, an `Arc` whose leaks it reports, and an `UnsafeCell`
//! that records each access so that two unsynchronised accesses to a ring slot fail the model.
//! Without it they are the `std` types at zero cost; `UnsafeCell` is a thin wrapper giving the
//! `std` cell loom's closure-based API, which is the only shape both can share.

#[cfg(feature = "loom")]
pub(crate) use loom::{
    cell::UnsafeCell,
    sync::{
        atomic::{fence, AtomicUsize, Ordering},
        Arc,
    },
};

#[cfg(not(feature = "loom"))]
pub(crate) use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

/// The two halves of a Dekker-style hand-off (a store, a barrier, a load of the other side's
/// word) where one side runs rarely (going to sleep) and the other on every message (checking
/// for a sleeper).
///
/// In production the rare side pays for both: `barrier_heavy` is `membarrier(2)` with
/// `MEMBARRIER_CMD_PRIVATE_EXPEDITED`, which makes every running thread of the process execute
/// a full memory barrier before it returns, so the frequent side's `barrier_light` only has to
/// stop the compiler from reordering (the asymmetric-fence technique of liburcu and folly).
/// Where the kernel refuses `membarrier` both halves fall back to a `SeqCst` fence.
///
/// Under loom both are `SeqCst` fences: loom checks the hand-off with symmetric fences, and
/// `membarrier`'s guarantee (a full barrier on the other thread at some point during the call)
/// is at least as strong as that thread's own fence.
#[cfg(feature = "loom")]
pub(crate) fn barrier_light() {
    fence(Ordering::SeqCst);
}

#[cfg(feature = "loom")]
pub(crate) fn barrier_heavy() {
    fence(Ordering::SeqCst);
}

/// Nothing to prepare under loom.
#[cfg(feature = "loom")]
pub(crate) fn prepare_barriers() {}

#[cfg(not(feature = "loom"))]
mod asymmetric {
    use std::sync::atomic::{compiler_fence, fence, AtomicBool, Ordering};
    use std::sync::Once;

    // From <linux/membarrier.h>.
    const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
    const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

    static REGISTER: Once = Once::new();
    /// Set once, before any ring is handed to another thread, and never changed after.
    static MEMBARRIER_READY: AtomicBool = AtomicBool::new(false);

    /// Registers the process for expedited private membarriers (once). Called when a ring is
    /// created, which happens before the ring reaches another thread.
    pub(crate) fn prepare_barriers() {
        REGISTER.call_once(|| {
            // SAFETY: a plain system call with integer arguments.
            let registered = unsafe {
                libc::syscall(
                    libc::SYS_membarrier,
                    MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
                    0,
                    0,
                )
            };
            MEMBARRIER_READY.store(registered == 0, Ordering::SeqCst);
        });
    }

    pub(crate) fn barrier_light() {
        if MEMBARRIER_READY.load(Ordering::Relaxed) {
            compiler_fence(Ordering::SeqCst);
        } else {
            fence(Ordering::SeqCst);
        }
    }

    pub(crate) fn barrier_heavy() {
        if MEMBARRIER_READY.load(Ordering::Relaxed) {
            // SAFETY: a plain system call with integer arguments.
            let result = unsafe {
                libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0)
            };
            assert_eq!(result, 0, "membarrier failed after registering");
        } else {
            fence(Ordering::SeqCst);
        }
    }
}

#[cfg(not(feature = "loom"))]
pub(crate) use asymmetric::{barrier_heavy, barrier_light, prepare_barriers};

/// `std::cell::UnsafeCell` behind loom's `with_mut` API (loom's cell has no `get`).
#[cfg(not(feature = "loom"))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(feature = "loom"))]
impl<T> UnsafeCell<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(std::cell::UnsafeCell::new(value))
    }

    /// Hands `f` a raw pointer to the contents; the caller upholds aliasing as with
    /// `std::cell::UnsafeCell::get`.
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}
