//! What a shard's tasks hold: [`ShardContext`], through which they append to and read from any
//! partition, and reach the other shards. The operations live beside it, one concern a file:
//! `append.rs` (producer batches), `read.rs` (reads and long polls), `offsets.rs` (offset
//! queries and record deletion), `logs.rs` (the shard's partition logs: opening, configuration,
//! retention, removal, closing), `replicated.rs` (who may serve a replicated partition's
//! clients, as replication says),
//! `handover.rs` (connections moving between shards), `shutdown.rs` (the drain), and
//! `calls.rs` (how work and answers travel the mesh). Each operation runs on the owner's log
//! directly when this shard owns the partition, and is forwarded over the mesh otherwise.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use glommio::channels::local_channel::LocalSender;

use super::calls::MeshMessage;
use super::logs::PartitionSlot;
use super::placement::ReplicaPlacement;
use super::replicated::ClientAccess;
use super::runtime::{RuntimeConfig, TopicLogConfig};
use super::shutdown::MeshWriters;
use super::{owner_shard, PartitionId};
use crate::clock::Clock;
use crate::config::LogConfig;
use crate::log::{Committer, RecordRewrite, ReplayedLogs};
use crate::waiters::Waiters;

pub use super::append::AppendPending;
pub use super::shutdown::InFlight;

/// A shard's handle to its partitions and to the other shards. Cheap to clone; lives on (and
/// only on) the shard's executor thread.
#[derive(Clone)]
pub struct ShardContext {
    pub(super) state: Rc<ShardState>,
}

pub(super) struct ShardState {
    pub(super) shard_id: usize,
    pub(super) shard_count: usize,
    pub(super) data_dir: PathBuf,
    pub(super) log_config: LogConfig,
    pub(super) topic_log_config: Option<TopicLogConfig>,
    /// See [`RuntimeConfig::record_rewrite`].
    pub(super) record_rewrite: Option<Arc<dyn RecordRewrite>>,
    /// See [`RuntimeConfig::replicated_partitions`].
    pub(super) replicated_partitions: Option<Arc<ReplicaPlacement>>,
    pub(super) clock: Rc<dyn Clock>,
    /// The shard's commit cycle, which every partition log of the shard is opened with.
    pub(super) committer: Committer,
    /// The logs start-up's journal replay closed, which their first open reads as closed
    /// cleanly (shared by the shards: any of them may own one).
    pub(super) replayed_logs: Arc<ReplayedLogs>,
    pub(super) partitions: RefCell<HashMap<PartitionId, PartitionSlot>>,
    /// Whether the start-up open of the partitions this shard owns finished (see
    /// [`ShardContext::owned_partitions_opened`]), and who waits for it.
    pub(super) owned_partitions_opened: Cell<bool>,
    pub(super) owned_partitions_opened_waiters: Waiters,
    /// Per peer shard (`None` at our own index): the queue its mesh writer task drains.
    pub(super) outbound: Vec<Option<LocalSender<MeshMessage>>>,
    /// What the mesh writer tasks took from those queues and have not yet published.
    pub(super) mesh_writers: Rc<MeshWriters>,
    /// The id of this shard's next call to a peer (see `calls.rs`).
    pub(super) call_id_next: Cell<u64>,
    /// Requests this shard forwarded and awaits, plus peers' requests it is serving.
    pub(super) in_flight: Cell<usize>,
    /// Calls and posts sent to each shard over the mesh since the start (0 at our own index).
    pub(super) mesh_requests_sent: Vec<Cell<u64>>,
    pub(super) shutdown_requested: Cell<bool>,
    pub(super) drained_peers: Cell<usize>,
    /// Tasks waiting for shutdown to be requested (woken only then: a task that also awaits
    /// glommio I/O must not be re-polled by every unrelated state change, since some glommio
    /// futures keep a waker clone per poll).
    pub(super) shutdown_waiters: Waiters,
    /// The shutdown drain's own waits (in-flight work reaching zero, peers drained).
    pub(super) drain_waiters: Waiters,
    /// Who may serve the clients of the partitions this shard owns whose replica replication
    /// runs here, as replication last said.
    pub(super) client_access: RefCell<HashMap<PartitionId, ClientAccess>>,
}

impl ShardContext {
    pub(super) fn new(
        shard_id: usize,
        config: &RuntimeConfig,
        clock: Rc<dyn Clock>,
        outbound: Vec<Option<LocalSender<MeshMessage>>>,
        committer: Committer,
        replayed_logs: Arc<ReplayedLogs>,
        mesh_writers: Rc<MeshWriters>,
    ) -> Self {
        assert_eq!(outbound.len(), config.shard_count);
        ShardContext {
            state: Rc::new(ShardState {
                shard_id,
                shard_count: config.shard_count,
                data_dir: config.data_dir.clone(),
                log_config: config.log_config.clone(),
                topic_log_config: config.topic_log_config.clone(),
                record_rewrite: config.record_rewrite.clone(),
                replicated_partitions: config.replicated_partitions.clone(),
                clock,
                committer,
                replayed_logs,
                partitions: RefCell::new(HashMap::new()),
                owned_partitions_opened: Cell::new(false),
                owned_partitions_opened_waiters: Waiters::default(),
                outbound,
                mesh_writers,
                call_id_next: Cell::new(0),
                in_flight: Cell::new(0),
                mesh_requests_sent: (0..config.shard_count).map(|_| Cell::new(0)).collect(),
                shutdown_requested: Cell::new(false),
                drained_peers: Cell::new(0),
                shutdown_waiters: Waiters::default(),
                drain_waiters: Waiters::default(),
                client_access: RefCell::new(HashMap::new()),
            }),
        }
    }

    pub fn shard_id(&self) -> usize {
        self.state.shard_id
    }

    pub fn shard_count(&self) -> usize {
        self.state.shard_count
    }

    /// Partition `t-p` lives in `data_dir/t-p/`.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.state.data_dir
    }

    /// The shard's clock, in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        self.state.clock.now_ms()
    }

    /// The shard that owns `partition`: in a cluster, where the metadata log placed its
    /// replica here (if it did, on a shard this broker has); otherwise [`owner_shard`].
    pub fn owner_of(&self, partition: &PartitionId) -> usize {
        self.placed_shard(partition)
            .unwrap_or_else(|| owner_shard(partition, self.state.shard_count))
    }

    /// `items` split by the shard that owns each one's partition (`partition` says which it
    /// is): one part per shard, by shard id, each holding its items in their order with their
    /// positions among `items`.
    pub(super) fn split_by_owner<T>(
        &self,
        items: Vec<T>,
        partition: impl Fn(&T) -> &PartitionId,
    ) -> Vec<OwnedPart<T>> {
        let mut parts: Vec<OwnedPart<T>> = (0..self.state.shard_count)
            .map(|_| OwnedPart {
                positions: Vec::new(),
                items: Vec::new(),
            })
            .collect();
        for (position, item) in items.into_iter().enumerate() {
            let part = &mut parts[self.owner_of(partition(&item))];
            part.positions.push(position);
            part.items.push(item);
        }
        parts
    }

    fn placed_shard(&self, partition: &PartitionId) -> Option<usize> {
        self.state
            .replicated_partitions
            .as_ref()?
            .shard_of(partition)
            .filter(|shard| *shard < self.state.shard_count)
    }

    /// Whether partitions are served only through their replicas (see
    /// [`RuntimeConfig::replicated_partitions`]): in a cluster every partition is, the
    /// internal topics' included.
    pub fn partitions_replicated(&self) -> bool {
        self.state.replicated_partitions.is_some()
    }
    /// Requests this shard forwarded to each shard over the mesh since the start (calls and
    /// posts), by shard (0 at its own index): what serving partitions that live elsewhere cost
    /// it.
    pub fn mesh_requests_sent(&self) -> Vec<u64> {
        self.state
            .mesh_requests_sent
            .iter()
            .map(Cell::get)
            .collect()
    }

    /// The queue to `peer`'s mesh writer task.
    pub(super) fn outbound_to(&self, peer: usize) -> &LocalSender<MeshMessage> {
        self.state.outbound[peer]
            .as_ref()
            .expect("a peer shard has an outbound queue")
    }

    /// The shard's commit cycle's counters.
    pub fn commit_stats(&self) -> crate::log::CommitStats {
        self.state.committer.stats()
    }
}

/// One owning shard's part of a call's items ([`ShardContext::split_by_owner`]): their positions
/// among the call's items, and the items, in the call's order.
pub(super) struct OwnedPart<T> {
    pub(super) positions: Vec<usize>,
    pub(super) items: Vec<T>,
}
