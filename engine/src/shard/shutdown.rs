//! The shutdown drain's bookkeeping on one shard: whether shutdown was requested, the work in
//! flight it waits for ([`InFlight`]), the peers that said they drained, and what the mesh
//! writer tasks still have to publish (the sequence itself is in `runtime.rs`).

use std::cell::Cell;
use std::future::Future;
use std::time::Duration;

use futures::future::select;

use super::context::{ShardContext, ShardState};
use crate::waiters::Waiters;

impl ShardContext {
    /// Resolves once shutdown was requested (a signal or [`super::ShutdownHandle`]): tasks
    /// that accept new work stop accepting then.
    pub async fn shutdown_requested(&self) {
        let state = &self.state;
        state
            .shutdown_waiters
            .until(|| state.shutdown_requested.get())
            .await
    }

    pub fn is_shutting_down(&self) -> bool {
        self.state.shutdown_requested.get()
    }

    /// Runs `work` every `interval` until shutdown is requested: the shard's periodic chores
    /// (retention, the cleaner, the metrics snapshot). Each run counts as work in flight, so
    /// the shutdown drain waits for one under way. What a run returns (a count) is dropped.
    pub async fn every<Work, Run>(&self, interval: Duration, mut work: Work)
    where
        Work: FnMut() -> Run,
        Run: Future,
    {
        loop {
            let tick = std::pin::pin!(glommio::timer::sleep(interval));
            let shutdown = std::pin::pin!(self.shutdown_requested());
            if let futures::future::Either::Right(_) = select(tick, shutdown).await {
                return;
            }
            let _in_flight = self.work_in_flight();
            work().await;
        }
    }

    /// Units of work in flight on this shard: requests it forwarded and awaits, peers'
    /// requests it serves, and what counts itself with [`ShardContext::work_in_flight`]; what
    /// the shutdown drain waits for.
    pub fn work_in_flight_count(&self) -> usize {
        self.state.in_flight.get()
    }

    /// Counts as work in flight while it lives, so that the shutdown drain waits for it
    /// (a connection finishing the requests it already read).
    pub fn work_in_flight(&self) -> InFlight {
        InFlight::enter(self)
    }

    pub(super) fn peer_drained(&self) {
        let state = &self.state;
        state.drained_peers.set(state.drained_peers.get() + 1);
        assert!(state.drained_peers.get() < state.shard_count);
        state.drain_waiters.wake_all();
    }

    pub(super) fn request_shutdown(&self) {
        self.state.shutdown_requested.set(true);
        self.state.shutdown_waiters.wake_all();
        self.state.drain_waiters.wake_all();
    }

    pub(super) async fn wait_for_no_work_in_flight(&self) {
        self.wait_until(|state| state.in_flight.get() == 0).await
    }

    /// Waits until every message queued for a peer was published to its ring. At shutdown,
    /// once every peer drained: the writer tasks stop with the shard's executor, and a shard
    /// whose drain and close ran to the end without yielding left its own `Drained` queued,
    /// unpublished, so its peer waited for it forever (seen when closing the logs took the
    /// late shard seconds: 10 000 partitions replayed after a crash, each writing its marker).
    pub(super) async fn wait_for_outbound_published(&self) {
        let writers = &self.state.mesh_writers;
        writers
            .published
            .until(|| {
                writers.staging.get() == 0
                    && self
                        .state
                        .outbound
                        .iter()
                        .flatten()
                        .all(|queue| queue.len() == 0)
            })
            .await
    }

    pub(super) async fn wait_for_every_peer_drained(&self) {
        self.wait_until(|state| {
            state.drained_peers.get() + 1 == state.shard_count && state.in_flight.get() == 0
        })
        .await
    }

    pub(super) fn enter_in_flight(&self) -> InFlight {
        InFlight::enter(self)
    }

    async fn wait_until(&self, condition: impl Fn(&ShardState) -> bool) {
        self.state
            .drain_waiters
            .until(|| condition(&self.state))
            .await
    }
}

/// The shard's mesh writer tasks (one per peer, `runtime.rs`): how many messages they took
/// from their queues and have not yet published.
#[derive(Default)]
pub(super) struct MeshWriters {
    pub(super) staging: Cell<usize>,
    pub(super) published: Waiters,
}

impl MeshWriters {
    /// A writer took a message from its queue.
    pub(super) fn took(&self) {
        self.staging.set(self.staging.get() + 1);
    }

    /// A writer published `count` messages it took.
    pub(super) fn published(&self, count: usize) {
        let staging = self.staging.get();
        assert!(count <= staging, "a writer publishes only what it took");
        self.staging.set(staging - count);
        self.published.wake_all();
    }
}

/// Counts one unit of work in flight for the shutdown drain while it lives.
#[must_use = "the work counts as in flight only while this lives"]
pub struct InFlight {
    context: ShardContext,
}

impl InFlight {
    fn enter(context: &ShardContext) -> InFlight {
        let in_flight = &context.state.in_flight;
        in_flight.set(in_flight.get() + 1);
        InFlight {
            context: context.clone(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let state = &self.context.state;
        state.in_flight.set(state.in_flight.get() - 1);
        if state.in_flight.get() == 0 {
            state.drain_waiters.wake_all();
        }
    }
}
