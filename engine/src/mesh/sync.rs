//! The synchronisation primitives the ring is written against, so that one body of code runs both
//! in production and under loom's model checker.
//!
//! Under `--cfg loom` every name here is loom's: atomics and fences whose every permitted
//! interleaving and reordering loom explores, an `Arc` whose leaks it reports, and an `UnsafeCell`
//! that records each access so that two unsynchronised accesses to a ring slot fail the model.
//! Without it they are the `std` types at zero cost; `UnsafeCell` is a thin wrapper giving the
//! `std` cell loom's closure-based API, which is the only shape both can share.

#[cfg(loom)]
pub(crate) use loom::{
    cell::UnsafeCell,
    sync::{
        atomic::{fence, AtomicUsize, Ordering},
        Arc,
    },
};

#[cfg(not(loom))]
pub(crate) use std::sync::{
    atomic::{fence, AtomicUsize, Ordering},
    Arc,
};

/// `std::cell::UnsafeCell` behind loom's `with_mut` API (loom's cell has no `get`).
#[cfg(not(loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
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
