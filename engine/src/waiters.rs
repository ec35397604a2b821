//! Tasks of one shard waiting for a state change: they register, and whoever changes the
//! state wakes them all to re-check. Single-threaded (a shard's tasks), so a `RefCell` suffices.

use std::cell::RefCell;
use std::future::poll_fn;
use std::task::{Poll, Waker};

#[derive(Default)]
pub(crate) struct Waiters {
    wakers: RefCell<Vec<Waker>>,
}

impl Waiters {
    /// Wakes `waker` at the next [`Waiters::wake_all`].
    pub fn register(&self, waker: &Waker) {
        self.wakers.borrow_mut().push(waker.clone());
    }

    /// Wakes every registered task (each re-checks what it waits for).
    pub fn wake_all(&self) {
        for waker in std::mem::take(&mut *self.wakers.borrow_mut()) {
            waker.wake();
        }
    }

    /// Resolves once `condition` holds, re-checking it after every [`Waiters::wake_all`].
    pub async fn until(&self, condition: impl Fn() -> bool) {
        poll_fn(|context| {
            if condition() {
                Poll::Ready(())
            } else {
                self.register(context.waker());
                Poll::Pending
            }
        })
        .await
    }
}
