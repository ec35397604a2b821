//! The broker's metrics, in Prometheus' text format.
//!
//! Each shard owns one [`ShardMetrics`] and is its only writer (`shard`): counters are relaxed
//! atomic adds on its own cache lines; what does not fit in an atomic (an API's latency
//! histogram, the per-topic traffic, the snapshot of the partitions it owns) sits behind a mutex
//! that only the metrics endpoint's thread contends, once per scrape. That thread reads every
//! shard's metrics through the [`MetricsRegistry`] and renders per-shard series, or merges the
//! shards' (latency histograms are merged at scrape time, so a shard never waits for another).
//!
//! Partition offsets and sizes belong to the logs on their owning shard, which publishes a
//! [`ShardSnapshot`] of them every second or so (`server::publish_snapshots`); a scrape renders
//! each shard's latest. Everything derived from several shards' state (a partition's lag
//! against a group's committed offset, say) is worked out in `snapshots`, from the snapshots.
//!
//! One module per kind of state rendered, each owning its families' names and help texts:
//! `counters` (per shard and per topic), `latency`, `snapshots` (partitions and groups),
//! `commit`, `mesh`, `replication`; `exposition` is the text format they all write.
//!
//! Latency quantiles cover two windows of a minute, so they describe recent requests, not the
//! process's life; recording a latency costs tens of nanoseconds whether anyone scrapes or not
//! (`benches/metrics.rs`). Engine state is never read from the metrics thread: it sees only what
//! each owning shard published. The README lists every metric.

mod commit;
mod counters;
mod exposition;
mod latency;
mod mesh;
mod replication;
mod shard;
mod snapshots;
#[cfg(test)]
mod tests;

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

pub use shard::{OpenConnection, ShardMetrics, ShardSnapshot};

use exposition::write_family;

/// Only the shard and the scraper take these locks; a panic while one held it leaves numbers
/// that are still worth reading.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Every shard's metrics, for the endpoint. Cheap to clone.
#[derive(Clone)]
pub struct MetricsRegistry {
    shards: Arc<Vec<Arc<ShardMetrics>>>,
    controller: Arc<ControllerGauge>,
}

/// A cluster's broker's view of the metadata quorum (rendered only once reported).
#[derive(Debug, Default)]
struct ControllerGauge {
    reported: AtomicBool,
    /// The node whose controller leads the metadata log; 0: none known.
    leader: AtomicU64,
}

impl MetricsRegistry {
    pub fn new(shard_count: usize) -> MetricsRegistry {
        MetricsRegistry {
            shards: Arc::new(
                (0..shard_count)
                    .map(|_| Arc::new(ShardMetrics::default()))
                    .collect(),
            ),
            controller: Arc::default(),
        }
    }

    /// The node whose controller leads the metadata log, as this broker knows it now
    /// (`None`: an election, or cut off). Metadata responses name the answering broker as the
    /// controller (it forwards), so this is where an operator sees the real one.
    pub fn controller_leader_observed(&self, leader: Option<u64>) {
        self.controller
            .leader
            .store(leader.unwrap_or(0), Ordering::Relaxed);
        self.controller.reported.store(true, Ordering::Relaxed);
    }

    /// Shard `shard`'s metrics. Panics if `shard` is not below the shard count.
    pub fn shard(&self, shard: usize) -> Arc<ShardMetrics> {
        self.shards[shard].clone()
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.render_at(Instant::now())
    }

    fn render_at(&self, now: Instant) -> String {
        let mut out = String::new();
        if self.controller.reported.load(Ordering::Relaxed) {
            let name = "ferrite_controller_leader";
            write_family(
                &mut out,
                name,
                "gauge",
                "Node id of the broker whose controller leads the metadata log, as this broker \
                 knows it (0: none known).",
            );
            let leader = self.controller.leader.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name} {leader}");
        }
        counters::render_shard_values(&mut out, &self.shards);
        latency::render_latencies(&mut out, &self.shards, now);
        counters::render_topics(&mut out, &self.shards);
        let snapshots: Vec<ShardSnapshot> = self
            .shards
            .iter()
            .map(|shard| lock(&shard.snapshot).clone())
            .collect();
        snapshots::render_snapshots(&mut out, &snapshots);
        commit::render_commit(&mut out, &snapshots);
        mesh::render_mesh(&mut out, &snapshots);
        replication::render_replication(&mut out, &snapshots);
        out
    }
}
