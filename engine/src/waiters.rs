//! Tasks of one shard waiting for a state change: each waiting future holds a slot, and
//! whoever changes the state wakes every slot's task to re-check. Single-threaded (a shard's
//! tasks), so a `RefCell` suffices.
//!
//! A future keeps one slot for its whole life and gives it back when it is dropped, whether
//! it completed or not, so waiting costs memory only while someone waits: a future dropped by a
//! `select` (a connection that re-arms its shutdown watch on every read, say) leaves nothing
//! behind, and re-polling a waiting future replaces its waker instead of adding a clone.
//!
//! Wake-ups are kept to the tasks concerned: shutdown watchers sit in `Waiters` of their own, woken
//! only by shutdown. Some glommio futures (accept, DMA I/O) keep a clone of the waker per poll, and
//! a task's waker count is 16 bits, so a task that also awaits such a future must not be re-polled
//! by every unrelated event; `engine/tests/shards.rs` guards it.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
pub struct Waiters {
    slots: RefCell<Slots>,
}

/// Occupied slots hold the waker of their future's last pending poll (or `None` once woken);
/// `free` lists the vacant ones.
#[derive(Default)]
struct Slots {
    wakers: Vec<Option<Waker>>,
    occupied: Vec<bool>,
    free: Vec<usize>,
}

impl Slots {
    fn take_slot(&mut self) -> usize {
        match self.free.pop() {
            Some(key) => {
                self.occupied[key] = true;
                key
            }
            None => {
                self.wakers.push(None);
                self.occupied.push(true);
                self.wakers.len() - 1
            }
        }
    }

    fn release(&mut self, key: usize) {
        assert!(self.occupied[key], "a waiter slot is released once");
        self.occupied[key] = false;
        self.wakers[key] = None;
        self.free.push(key);
    }
}

impl Waiters {
    /// Wakes every waiting task (each re-checks what it waits for).
    pub fn wake_all(&self) {
        let wakers: Vec<Waker> = self
            .slots
            .borrow_mut()
            .wakers
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        for waker in wakers {
            waker.wake();
        }
    }

    /// Resolves once `condition` holds, re-checking it after every [`Waiters::wake_all`].
    pub async fn until(&self, condition: impl Fn() -> bool + Unpin) {
        self.wait_for(|| condition().then_some(())).await
    }

    /// Resolves with the first `Some` that `check` returns, calling it at the first poll and
    /// after every [`Waiters::wake_all`].
    pub fn wait_for<T, F: FnMut() -> Option<T> + Unpin>(&self, check: F) -> WaitFor<'_, F> {
        WaitFor {
            waiters: self,
            check,
            slot: None,
        }
    }

    /// Futures waiting right now (tests check that dropped ones left nothing behind).
    #[cfg(test)]
    fn waiting(&self) -> usize {
        let slots = self.slots.borrow();
        slots.occupied.len() - slots.free.len()
    }
}

/// The future of [`Waiters::wait_for`].
pub struct WaitFor<'a, F> {
    waiters: &'a Waiters,
    check: F,
    slot: Option<usize>,
}

impl<T, F: FnMut() -> Option<T> + Unpin> Future for WaitFor<'_, F> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<T> {
        let this = self.get_mut();
        if let Some(value) = (this.check)() {
            if let Some(key) = this.slot.take() {
                this.waiters.slots.borrow_mut().release(key);
            }
            return Poll::Ready(value);
        }
        let mut slots = this.waiters.slots.borrow_mut();
        let key = *this.slot.get_or_insert_with(|| slots.take_slot());
        let waker = &mut slots.wakers[key];
        if !waker
            .as_ref()
            .is_some_and(|old| old.will_wake(context.waker()))
        {
            *waker = Some(context.waker().clone());
        }
        Poll::Pending
    }
}

impl<F> Drop for WaitFor<'_, F> {
    fn drop(&mut self) {
        if let Some(key) = self.slot.take() {
            self.waiters.slots.borrow_mut().release(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::sync::Arc;
    use std::task::Wake;

    struct CountingWaker(std::sync::atomic::AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn dropped_and_repolled_waits_leave_nothing_behind() {
        let waiters = Waiters::default();
        let counter = Arc::new(CountingWaker(Default::default()));
        let waker = Waker::from(counter.clone());
        let mut context = Context::from_waker(&waker);
        let ready = Cell::new(false);
        for _ in 0..100_000 {
            // What a select that re-creates its wait on every turn does.
            let mut wait = std::pin::pin!(waiters.until(|| ready.get()));
            assert!(wait.as_mut().poll(&mut context).is_pending());
            assert!(wait.as_mut().poll(&mut context).is_pending());
        }
        assert_eq!(waiters.waiting(), 0);
        assert_eq!(Arc::strong_count(&counter), 2, "no waker clones kept");

        let mut wait = std::pin::pin!(waiters.until(|| ready.get()));
        assert!(wait.as_mut().poll(&mut context).is_pending());
        assert_eq!(waiters.waiting(), 1);
        ready.set(true);
        waiters.wake_all();
        assert_eq!(counter.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(wait.as_mut().poll(&mut context).is_ready());
        assert_eq!(waiters.waiting(), 0);
    }
}
