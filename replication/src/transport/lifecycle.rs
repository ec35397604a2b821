//! What all of a transport's tasks share: the signal that it is closing, the count of its live
//! tasks (so closing can wait until none is left: no task outlives the transport or holds a
//! socket after it), and its counters.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::task::{Poll, Waker};

use futures::channel::oneshot;
use futures::future::{select, Either, Shared};
use futures::FutureExt;

pub struct Lifecycle {
    /// Dropped to close: every clone of `closed` then resolves.
    close: RefCell<Option<oneshot::Sender<()>>>,
    closed: Shared<oneshot::Receiver<()>>,
    tasks_live: Cell<usize>,
    /// The task waiting in [`Lifecycle::tasks_ended`].
    tasks_ended_waker: RefCell<Option<Waker>>,
    pub counters: Counters,
}

impl Lifecycle {
    pub fn new() -> Rc<Lifecycle> {
        let (close, closed) = oneshot::channel();
        Rc::new(Lifecycle {
            close: RefCell::new(Some(close)),
            closed: closed.shared(),
            tasks_live: Cell::new(0),
            tasks_ended_waker: RefCell::new(None),
            counters: Counters::default(),
        })
    }

    /// Resolves once the transport is closing.
    pub fn closed(&self) -> impl Future<Output = ()> + Unpin + 'static {
        self.closed.clone().map(|_| ())
    }

    pub fn is_closed(&self) -> bool {
        self.close.borrow().is_none()
    }

    /// Tells every task to end (they drop their sockets as they do).
    pub fn signal_close(&self) {
        self.close.borrow_mut().take();
    }

    /// Runs `task` on this executor, counted as live until it returns.
    pub fn spawn(self: &Rc<Self>, task: impl Future<Output = ()> + 'static) {
        self.tasks_live.set(self.tasks_live.get() + 1);
        let guard = TaskGuard(self.clone());
        glommio::spawn_local(async move {
            let _guard = guard;
            task.await
        })
        .detach();
    }

    /// Runs `future` unless the transport closes first (`None` then).
    pub async fn unless_closed<F: Future>(&self, future: F) -> Option<F::Output> {
        let future = std::pin::pin!(future);
        match select(future, self.closed()).await {
            Either::Left((output, _)) => Some(output),
            Either::Right(((), _)) => None,
        }
    }

    /// Resolves once every task spawned through [`Lifecycle::spawn`] has returned.
    pub async fn tasks_ended(&self) {
        std::future::poll_fn(|context| {
            if self.tasks_live.get() == 0 {
                Poll::Ready(())
            } else {
                *self.tasks_ended_waker.borrow_mut() = Some(context.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

struct TaskGuard(Rc<Lifecycle>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        let lifecycle = &self.0;
        let live = lifecycle.tasks_live.get();
        assert!(live > 0, "a task ends once");
        lifecycle.tasks_live.set(live - 1);
        if live == 1 {
            if let Some(waker) = lifecycle.tasks_ended_waker.borrow_mut().take() {
                waker.wake();
            }
        }
    }
}

/// What a transport has done since it started (for metrics and tests).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TransportStats {
    /// Message frames written to a peer's socket (which does not mean the peer read them).
    pub messages_sent: u64,
    /// Messages dropped unsent: the oldest of a full peer queue, or those being written when
    /// the connection failed.
    pub messages_dropped: u64,
    /// Outbound connections established (the first to each peer, then every reconnection).
    pub connections_opened: u64,
    /// Outbound connection attempts that failed.
    pub connect_failures: u64,
    /// Messages received and handed to the handler.
    pub messages_received: u64,
    /// Inbound connections closed for a protocol error (bad frame, header or hello), or
    /// refused for being over the limit.
    pub connections_refused: u64,
    /// Connections (either way) whose peer failed to prove the cluster's secret; counted in
    /// `connections_refused` too when inbound.
    pub authentication_failures: u64,
}

#[derive(Default)]
pub struct Counters {
    stats: Cell<TransportStats>,
}

impl Counters {
    pub fn get(&self) -> TransportStats {
        self.stats.get()
    }

    pub fn update(&self, change: impl FnOnce(&mut TransportStats)) {
        let mut stats = self.stats.get();
        change(&mut stats);
        self.stats.set(stats);
    }
}
