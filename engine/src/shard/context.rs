//! What a shard's tasks hold: [`ShardContext`], through which they append to and read from any
//! partition. The owner's log is used directly when this shard owns the partition; otherwise
//! the request is forwarded over the mesh and the caller waits for the owner's response.
//! Connections handed from shard to shard travel the same mesh (`hand_over`).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use std::future::Future;
use std::time::Duration;

use bytes::BytesMut;
use futures::channel::oneshot;
use futures::future::{join_all, select, select_all, LocalBoxFuture, Shared};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use glommio::channels::local_channel::LocalSender;

use super::{
    owner_shard, Appended, Durability, ListedOffset, MeshMessage, OffsetQuery, PartitionId,
    PartitionRead, PartitionStats, ReadMany, SendableData, SendableRead, ShardRequest,
    ShardResponse,
};
use crate::batch::CheckedBatch;
use crate::clock::Clock;
use crate::config::LogConfig;
use crate::error::LogError;
use crate::log::{Committer, PartitionLog, ReadData, ReplayedLogs};
use crate::waiters::Waiters;

use super::coordinator::{Coordinators, GroupsConfig};
use super::placement::PlacementView;
use super::replicated::{DeliveryHandler, Leadership, ReplicatedPartition, ReplicationStats};
use super::runtime::{RuntimeConfig, TopicLogConfig};
use super::{ConnectionHandler, ConnectionHandover, Delivery};

/// An append that has its place in the partition's order; resolves as its durability says.
pub type AppendPending = LocalBoxFuture<'static, Result<Appended, LogError>>;

/// The answers of one shard to a request's appends, each taken by its batch's wait.
type AppendAnswers = Rc<RefCell<Vec<Option<Result<Appended, LogError>>>>>;

/// One owning shard's part of [`ShardContext::submit_appends`]: the batches' positions in the
/// request, and the batches, in the request's order.
#[derive(Default)]
struct OwnedAppends {
    positions: Vec<usize>,
    appends: Vec<(PartitionId, BytesMut)>,
}

/// A partition log opened at most once, on first use, by whichever task gets there first.
type PartitionSlot = Rc<futures::lock::Mutex<Option<Rc<PartitionLog>>>>;

/// Partition logs a shard opens at once at start-up, and closes at once at shutdown: enough to
/// keep the disk busy with the reads of recovery and the syncs of closing (which io_uring runs
/// concurrently, and the filesystem commits together), few enough that their files (three
/// descriptors each while in use) stay well within the shard's share of `--open-files-max`.
/// Redpanda bounds the same (`storage_max_concurrent_replay`, its close flushes).
const PARTITIONS_OPENING_MAX: usize = 64;
const PARTITIONS_CLOSING_MAX: usize = 64;

/// A shard's handle to its partitions and to the other shards. Cheap to clone; lives on (and
/// only on) the shard's executor thread.
#[derive(Clone)]
pub struct ShardContext {
    state: Rc<ShardState>,
}

pub(super) struct ShardState {
    shard_id: usize,
    shard_count: usize,
    data_dir: PathBuf,
    log_config: LogConfig,
    topic_log_config: Option<TopicLogConfig>,
    groups_config: GroupsConfig,
    /// See [`RuntimeConfig::replicated_partitions`].
    replicated_partitions: Option<PlacementView>,
    clock: Rc<dyn Clock>,
    /// The shard's commit cycle, which every partition log of the shard is opened with.
    committer: Committer,
    /// The logs start-up's journal replay closed, which their first open reads as closed
    /// cleanly (shared by the shards: any of them may own one).
    replayed_logs: Arc<ReplayedLogs>,
    partitions: RefCell<HashMap<PartitionId, PartitionSlot>>,
    /// The group coordinators of the `__consumer_offsets` partitions this shard owns.
    coordinators: Coordinators,
    /// Per peer shard (`None` at our own index): the queue its mesh writer task drains.
    outbound: Vec<Option<LocalSender<MeshMessage>>>,
    /// What the mesh writer tasks took from those queues and have not yet published.
    mesh_writers: Rc<MeshWriters>,
    pending: RefCell<HashMap<u64, oneshot::Sender<ShardResponse>>>,
    request_id_next: Cell<u64>,
    /// Requests this shard forwarded and awaits, plus peers' requests it is serving.
    in_flight: Cell<usize>,
    /// Requests forwarded to each shard over the mesh since the start (0 at our own index).
    mesh_requests_sent: Vec<Cell<u64>>,
    shutdown_requested: Cell<bool>,
    drained_peers: Cell<usize>,
    /// Tasks waiting for shutdown to be requested (woken only then: a task that also awaits
    /// glommio I/O must not be re-polled by every unrelated state change, since some glommio
    /// futures keep a waker clone per poll).
    shutdown_waiters: Waiters,
    /// The shutdown drain's own waits (in-flight work reaching zero, peers drained).
    drain_waiters: Waiters,
    /// The partitions this shard owns whose log replication runs.
    replicated: RefCell<HashMap<PartitionId, Rc<dyn ReplicatedPartition>>>,
    /// Where messages delivered to this shard's partitions go.
    delivery: RefCell<Option<DeliveryHandler>>,
    /// Where connections other shards hand to this one go.
    connection_handler: RefCell<Option<ConnectionHandler>>,
    /// What the shard's replicas did, for the metrics (counted by replication).
    replication_stats: Rc<RefCell<ReplicationStats>>,
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
                groups_config: config.groups.clone(),
                replicated_partitions: config.replicated_partitions.clone().map(PlacementView::new),
                clock,
                committer,
                replayed_logs,
                partitions: RefCell::new(HashMap::new()),
                coordinators: Coordinators::default(),
                outbound,
                mesh_writers,
                pending: RefCell::new(HashMap::new()),
                request_id_next: Cell::new(0),
                in_flight: Cell::new(0),
                mesh_requests_sent: (0..config.shard_count).map(|_| Cell::new(0)).collect(),
                shutdown_requested: Cell::new(false),
                drained_peers: Cell::new(0),
                shutdown_waiters: Waiters::default(),
                drain_waiters: Waiters::default(),
                replicated: RefCell::new(HashMap::new()),
                delivery: RefCell::new(None),
                connection_handler: RefCell::new(None),
                replication_stats: Rc::default(),
            }),
        }
    }

    pub fn shard_id(&self) -> usize {
        self.state.shard_id
    }

    pub fn shard_count(&self) -> usize {
        self.state.shard_count
    }

    /// The `__consumer_offsets` partitions and the coordinators' settings.
    pub fn groups_config(&self) -> &GroupsConfig {
        &self.state.groups_config
    }

    pub(super) fn data_dir(&self) -> &std::path::Path {
        &self.state.data_dir
    }

    pub(super) fn coordinators(&self) -> &Coordinators {
        &self.state.coordinators
    }

    pub(super) fn now_ms(&self) -> i64 {
        self.state.clock.now_ms()
    }

    /// The shard that owns `partition`: in a cluster, where the metadata log placed its
    /// replica here (if it did, on a shard this broker has); otherwise [`owner_shard`].
    pub fn owner_of(&self, partition: &PartitionId) -> usize {
        self.placed_shard(partition)
            .unwrap_or_else(|| owner_shard(partition, self.state.shard_count))
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
    /// consumer-offsets topic's included.
    pub(super) fn partitions_replicated(&self) -> bool {
        self.state.replicated_partitions.is_some()
    }

    /// Appends `batch` to `partition` (opening its log on first use) and waits as `durability`
    /// says, forwarding to the owning shard when that is another one.
    pub async fn append(
        &self,
        partition: PartitionId,
        batch: BytesMut,
        durability: Durability,
    ) -> Result<Appended, LogError> {
        self.submit_append(partition, batch, durability).await.await
    }

    /// Appends in two steps. The returned future resolves as `durability` says; by the time
    /// this returns, the batch already has its place in the partition's order (its offsets,
    /// or its place in the FIFO queue to the owning shard, which assigns offsets in the order
    /// it receives batches). A connection submits its requests' appends one after the other
    /// and awaits them concurrently: pipelined produce requests keep their order, which the
    /// idempotent producer's sequence numbers rely on.
    pub async fn submit_append(
        &self,
        partition: PartitionId,
        batch: BytesMut,
        durability: Durability,
    ) -> AppendPending {
        self.submit_appends(vec![(partition, batch)], durability)
            .await
            .pop()
            .expect("one append submitted, one answer")
    }

    /// [`ShardContext::submit_append`] for several batches at once (a produce request's), in
    /// their order, with one mesh message per owning shard rather than one per batch: a
    /// request's appends to one shard get their offsets there in this order, before that shard
    /// reads its next message. Returns one wait per batch, in the same order.
    pub async fn submit_appends(
        &self,
        appends: Vec<(PartitionId, BytesMut)>,
        durability: Durability,
    ) -> Vec<AppendPending> {
        let shard_id = self.state.shard_id;
        let mut pending: Vec<Option<AppendPending>> = appends.iter().map(|_| None).collect();
        let mut by_owner: Vec<OwnedAppends> = (0..self.state.shard_count)
            .map(|_| OwnedAppends::default())
            .collect();
        for (position, (partition, batch)) in appends.into_iter().enumerate() {
            let owner = &mut by_owner[self.owner_of(&partition)];
            owner.positions.push(position);
            owner.appends.push((partition, batch));
        }
        for (owner, OwnedAppends { positions, appends }) in by_owner.into_iter().enumerate() {
            if appends.is_empty() {
                continue;
            }
            if owner == shard_id {
                let submitted = self.submit_local_appends(appends, durability).await;
                for (position, append) in positions.into_iter().zip(submitted) {
                    pending[position] = Some(append);
                }
                continue;
            }
            let count = appends.len();
            let request = ShardRequest::Append {
                appends,
                durability,
            };
            let answer = self.forward(owner, request).await;
            if let [position] = positions[..] {
                // One batch (librdkafka sends a produce request per partition batch): its wait
                // is the answer itself, without sharing it.
                pending[position] = Some(Box::pin(async move {
                    match answer.await {
                        ShardResponse::Appended(mut results) => {
                            assert_eq!(results.len(), 1, "one result per append");
                            results.pop().expect("checked: one result")
                        }
                        other => unreachable!("an append is answered with {other:?}"),
                    }
                }));
                continue;
            }
            // One answer for the shard's batches, which each batch's wait takes its part of.
            let answers = async move {
                match answer.await {
                    ShardResponse::Appended(results) => {
                        assert_eq!(results.len(), count, "one result per append");
                        Rc::new(RefCell::new(results.into_iter().map(Some).collect()))
                    }
                    other => unreachable!("an append is answered with {other:?}"),
                }
            }
            .boxed_local()
            .shared();
            for (index, position) in positions.into_iter().enumerate() {
                let answers: Shared<LocalBoxFuture<'static, AppendAnswers>> = answers.clone();
                pending[position] = Some(Box::pin(async move {
                    let answers = answers.await;
                    let result = answers.borrow_mut()[index].take();
                    result.expect("each append's result is taken once")
                }));
            }
        }
        pending
            .into_iter()
            .map(|append| append.expect("every append was submitted"))
            .collect()
    }

    /// [`ShardContext::submit_local_append`] for each of `appends` in turn.
    pub(super) async fn submit_local_appends(
        &self,
        appends: Vec<(PartitionId, BytesMut)>,
        durability: Durability,
    ) -> Vec<AppendPending> {
        let mut pending = Vec::with_capacity(appends.len());
        for (partition, batch) in appends {
            pending.push(
                self.submit_local_append(&partition, batch, durability)
                    .await,
            );
        }
        pending
    }

    /// Reads whole batches of `partition` from `offset` below its high-water mark (see
    /// [`PartitionLog::read`]), with the partition's bounds.
    pub async fn read(
        &self,
        partition: PartitionId,
        offset: u64,
        bytes_max: usize,
    ) -> Result<SendableRead, LogError> {
        let request = ShardRequest::Read {
            partition,
            offset,
            bytes_max,
        };
        match self.dispatch(request).await {
            ShardResponse::Read(result) => result,
            other => unreachable!("a read is answered with {other:?}"),
        }
    }

    /// Reads every partition of `reads` with one request per owning shard, with the results
    /// Kafka's fetch gets reading them one after the other in this order, sharing `bytes_max`:
    /// until a read has returned data, a read returns at least one batch; each later one only
    /// whole batches that fit both its own `bytes_max` and the room the earlier ones left
    /// (nothing rather than an oversized batch); once no room is left a read returns its
    /// partition's offsets only. Errors (an offset out of range) are reported either way.
    ///
    /// Each owner reads its partitions in turn, concurrently with the others, each up to its
    /// own `bytes_max` (or the whole budget), and stops reading data once what it read fills
    /// the budget (so a consumer far behind costs each shard at most about one budget of
    /// reads). The results are then taken in order against the shared budget: a read is kept
    /// if it fits the room left, and read again with that room when it does not (or when its
    /// owner had stopped before it) and reads came before it; so a second round trip happens
    /// only where the budget binds, for a consumer that is behind, never for one that keeps
    /// up.
    pub async fn read_many(
        &self,
        reads: &[PartitionRead],
        bytes_max: u64,
    ) -> Vec<Result<SendableRead, LogError>> {
        let shard_id = self.state.shard_id;
        // Per shard: the positions in `reads` of the partitions it owns.
        let mut positions: Vec<Vec<usize>> = vec![Vec::new(); self.state.shard_count];
        for (position, read) in reads.iter().enumerate() {
            positions[self.owner_of(&read.partition)].push(position);
        }
        let mut answers = Vec::new();
        for (owner, owned) in positions.iter().enumerate() {
            if owner == shard_id || owned.is_empty() {
                continue;
            }
            let request = ShardRequest::ReadMany {
                reads: owned
                    .iter()
                    .map(|&position| reads[position].clone())
                    .collect(),
                bytes_max,
            };
            let answer = self.forward(owner, request).await;
            answers.push((
                owned,
                Box::pin(async move {
                    match answer.await {
                        ShardResponse::ReadMany(read) => read,
                        other => unreachable!("a read of many is answered with {other:?}"),
                    }
                }) as LocalBoxFuture<'_, _>,
            ));
        }
        // The local reads run while the peers read theirs.
        let local = &positions[shard_id];
        if !local.is_empty() {
            let local_reads = local.iter().map(|&position| &reads[position]);
            answers.push((
                local,
                Box::pin(self.read_many_local(local_reads, bytes_max)),
            ));
        }
        // Per read: its owner's result, and whether the owner read its data.
        let mut results: Vec<Option<(Result<SendableRead, LogError>, bool)>> =
            reads.iter().map(|_| None).collect();
        for (owned, answer) in answers {
            let answered = answer.await;
            assert_eq!(answered.results.len(), owned.len(), "one result per read");
            for (index, (&position, result)) in owned.iter().zip(answered.results).enumerate() {
                results[position] = Some((result, index < answered.read_count));
            }
        }
        let mut used = 0u64;
        let mut merged = Vec::with_capacity(reads.len());
        for (read, result) in reads.iter().zip(results) {
            let (mut result, data_read) = result.expect("every read was sent to its owner");
            if let Ok(answer) = &mut result {
                let remaining = bytes_max.saturating_sub(used);
                let limit = read_limit(read.bytes_max, remaining);
                if used > 0 && remaining == 0 {
                    answer.drop_data(read.offset);
                } else if !data_read || (used > 0 && answer.data.length() > limit as u64) {
                    // Its owner stopped reading, or had more room than the reads before this
                    // one left: read it as a read in turn would have been.
                    result = self
                        .read(read.partition.clone(), read.offset, limit)
                        .await
                        .map(|again| again.within_budget(read.offset, used, limit));
                }
            }
            if let Ok(answer) = &result {
                used += answer.data.length();
            }
            merged.push(result);
        }
        merged
    }

    /// Resolves once the high-water mark of any partition of `waits` is above its offset,
    /// after `timeout_ms`, or at shutdown, whichever is first: a fetch's long poll, with one
    /// wait per owning shard. The waits on other shards are cancelled when this resolves or
    /// is dropped.
    pub async fn wait_for_data(&self, waits: Vec<(PartitionId, u64)>, timeout_ms: u64) {
        let shard_id = self.state.shard_id;
        let mut by_owner: Vec<Vec<(PartitionId, u64)>> = vec![Vec::new(); self.state.shard_count];
        for (partition, offset) in waits {
            by_owner[self.owner_of(&partition)].push((partition, offset));
        }
        let local = std::mem::take(&mut by_owner[shard_id]);
        let mut pending: Vec<LocalBoxFuture<'_, ()>> = Vec::new();
        for (owner, waits) in by_owner.into_iter().enumerate() {
            if waits.is_empty() {
                continue;
            }
            let request = ShardRequest::WaitForData { waits, timeout_ms };
            let answer = self.forward(owner, request).await;
            pending.push(Box::pin(answer.map(drop)));
        }
        if !local.is_empty() {
            pending.push(Box::pin(self.wait_for_data_local(local, timeout_ms)));
        }
        if pending.is_empty() {
            return;
        }
        select_all(pending).await;
    }

    /// Answers a ListOffsets query for `partition`.
    pub async fn list_offset(
        &self,
        partition: PartitionId,
        query: OffsetQuery,
    ) -> Result<ListedOffset, LogError> {
        match self
            .dispatch(ShardRequest::ListOffset { partition, query })
            .await
        {
            ShardResponse::ListedOffset(result) => result,
            other => unreachable!("a ListOffsets query is answered with {other:?}"),
        }
    }

    /// Deletes the records of `partition` below `offset` (`None`: the high-water mark);
    /// returns the new log start offset.
    pub async fn delete_records(
        &self,
        partition: PartitionId,
        offset: Option<u64>,
    ) -> Result<u64, LogError> {
        match self
            .dispatch(ShardRequest::DeleteRecords { partition, offset })
            .await
        {
            ShardResponse::RecordsDeleted(result) => result,
            other => unreachable!("a record deletion is answered with {other:?}"),
        }
    }

    /// Closes `partition`'s log and deletes its directory.
    pub async fn remove_partition(&self, partition: PartitionId) -> Result<(), LogError> {
        match self.dispatch(ShardRequest::Remove { partition }).await {
            ShardResponse::Removed(result) => result,
            other => unreachable!("a removal is answered with {other:?}"),
        }
    }

    /// Brings `partition`'s log, if open, up to its topic's configuration as the catalog has
    /// it now (after the topic's configs were altered there). Reading the catalog on the owning
    /// shard, rather than taking a configuration from the caller, means concurrent alterations
    /// cannot leave an older one in effect.
    pub async fn reload_log_config(&self, partition: PartitionId) -> Result<(), LogError> {
        match self
            .dispatch(ShardRequest::ReloadConfig { partition })
            .await
        {
            ShardResponse::ConfigReloaded(result) => result,
            other => unreachable!("a configuration reload is answered with {other:?}"),
        }
    }

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

    pub(super) async fn dispatch(&self, request: ShardRequest) -> ShardResponse {
        let partition = request
            .partition()
            .expect("requests about several partitions are sent to each owner by the caller");
        let owner = self.owner_of(partition);
        if owner == self.state.shard_id {
            return self.handle_local(request).await;
        }
        self.forward(owner, request).await.await
    }

    /// Queues `request` to the owning shard; the returned future resolves with its answer.
    /// Dropping it before then cancels a long poll ([`ShardRequest::WaitForData`]) on the
    /// owner; any other request runs to its end there, and its answer is ignored.
    async fn forward(
        &self,
        owner: usize,
        request: ShardRequest,
    ) -> impl Future<Output = ShardResponse> + 'static {
        // What to answer if the owner goes away before answering (only during shutdown).
        let closed = ShardResponse::closed(&request);
        let cancellable = matches!(request, ShardRequest::WaitForData { .. });
        let id = self.state.request_id_next.get();
        self.state.request_id_next.set(id + 1);
        let (reply, response) = oneshot::channel();
        self.state.pending.borrow_mut().insert(id, reply);
        let in_flight = InFlight::enter(self);
        let sender = self.outbound_to(owner);
        let sent_to_owner = &self.state.mesh_requests_sent[owner];
        sent_to_owner.set(sent_to_owner.get() + 1);
        let sent = sender
            .send(MeshMessage::Request { id, request })
            .await
            .is_ok();
        if !sent {
            self.state.pending.borrow_mut().remove(&id);
        }
        let mut cancel = (sent && cancellable).then(|| CancelOnDrop {
            context: Some(self.clone()),
            owner,
            id,
        });
        async move {
            let _in_flight = in_flight;
            if !sent {
                return closed;
            }
            let response = response.await.unwrap_or(closed);
            if let Some(cancel) = &mut cancel {
                cancel.disarm();
            }
            response
        }
    }

    /// Runs `request` against this shard's own log for the partition.
    pub(super) async fn handle_local(&self, request: ShardRequest) -> ShardResponse {
        match request {
            ShardRequest::Append {
                appends,
                durability,
            } => {
                let pending = self.submit_local_appends(appends, durability).await;
                ShardResponse::Appended(join_all(pending).await)
            }
            ShardRequest::Read {
                partition,
                offset,
                bytes_max,
            } => ShardResponse::Read(self.read_local(&partition, offset, bytes_max).await),
            ShardRequest::ReadMany { reads, bytes_max } => {
                ShardResponse::ReadMany(self.read_many_local(reads.iter(), bytes_max).await)
            }
            ShardRequest::WaitForData { waits, timeout_ms } => {
                self.wait_for_data_local(waits, timeout_ms).await;
                ShardResponse::DataReady
            }
            ShardRequest::ListOffset { partition, query } => {
                ShardResponse::ListedOffset(self.list_offset_local(&partition, query).await)
            }
            ShardRequest::DeleteRecords { partition, offset } => {
                ShardResponse::RecordsDeleted(self.delete_records_local(&partition, offset).await)
            }
            ShardRequest::Remove { partition } => {
                ShardResponse::Removed(self.remove_local(&partition).await)
            }
            ShardRequest::ReloadConfig { partition } => {
                ShardResponse::ConfigReloaded(self.reload_config_local(&partition).await)
            }
            ShardRequest::Group { partition, call } => {
                ShardResponse::Group(self.group_call_local(&partition, call).await)
            }
            ShardRequest::Deliver { partition, message } => {
                if let Some(handler) = &*self.state.delivery.borrow() {
                    handler(partition, message.0);
                }
                ShardResponse::Delivered
            }
        }
    }

    /// Makes `partition` (owned by this shard) a replicated one: producer batches go to
    /// `replicated`, and clients are served only where this broker leads.
    pub fn register_replicated(
        &self,
        partition: PartitionId,
        replicated: Rc<dyn ReplicatedPartition>,
    ) {
        assert_eq!(self.owner_of(&partition), self.state.shard_id);
        self.state
            .replicated
            .borrow_mut()
            .insert(partition, replicated);
    }

    pub fn unregister_replicated(&self, partition: &PartitionId) {
        self.state.replicated.borrow_mut().remove(partition);
    }

    pub(super) fn replicated(
        &self,
        partition: &PartitionId,
    ) -> Option<Rc<dyn ReplicatedPartition>> {
        self.state.replicated.borrow().get(partition).cloned()
    }

    /// Refuses client work on a replicated partition this broker does not lead, and in a
    /// cluster on one whose replica it does not run (yet).
    fn check_leading(&self, partition: &PartitionId) -> Result<(), LogError> {
        match self
            .replicated(partition)
            .map(|replicated| replicated.leadership())
        {
            Some(Leadership::Local) => Ok(()),
            Some(Leadership::Remote(leader)) => Err(LogError::NotLeader { leader }),
            None if self.partitions_replicated() => Err(LogError::NotLeader { leader: None }),
            None => Ok(()),
        }
    }

    /// Sets what this shard does with messages delivered to its partitions.
    pub fn set_delivery_handler(&self, handler: DeliveryHandler) {
        *self.state.delivery.borrow_mut() = Some(handler);
    }

    /// Requests this shard forwarded to each shard over the mesh since the start, by shard
    /// (0 at its own index): what serving partitions that live elsewhere cost it.
    pub fn mesh_requests_sent(&self) -> Vec<u64> {
        self.state
            .mesh_requests_sent
            .iter()
            .map(Cell::get)
            .collect()
    }

    /// Sets what this shard does with a connection another shard hands to it.
    pub fn set_connection_handler(&self, handler: ConnectionHandler) {
        *self.state.connection_handler.borrow_mut() = Some(handler);
    }

    /// Hands `connection` to shard `to`, whose connection handler takes it (fire-and-forget:
    /// the mesh is FIFO, so it reaches `to` before this shard's `Drained`, and `to` closes it
    /// if its own shutdown was requested by then). Gives it back, untouched, when it cannot be
    /// sent: this shard's shutdown was requested, or the queue to `to` is closed (only at the
    /// very end of a shutdown).
    pub async fn hand_over(
        &self,
        to: usize,
        connection: ConnectionHandover,
    ) -> Result<(), ConnectionHandover> {
        assert!(
            to != self.state.shard_id && to < self.state.shard_count,
            "a connection is handed to another shard of this broker"
        );
        if self.is_shutting_down() {
            return Err(connection);
        }
        let sender = self.outbound_to(to);
        let refused = match sender.send(MeshMessage::Handover(connection)).await {
            Ok(()) => return Ok(()),
            Err(glommio::GlommioError::Closed(glommio::ResourceType::Channel(message))) => message,
            // `send` waits for room, and nothing runs between its wait and its push.
            Err(error) => unreachable!("a local channel's send failed with {error:?}"),
        };
        match refused {
            MeshMessage::Handover(connection) => Err(connection),
            other => unreachable!("a handover was sent, {other:?} came back"),
        }
    }

    /// Takes a connection another shard handed over: to the connection handler, unless this
    /// shard's shutdown was requested (it may have told its peers it drained, and the
    /// connection's requests could need them) or there is no handler; dropped, it is closed.
    pub(super) fn adopt_connection(&self, connection: ConnectionHandover) {
        if self.is_shutting_down() {
            return;
        }
        match &*self.state.connection_handler.borrow() {
            Some(handler) => handler(connection),
            None => crate::log_rate_limited!(
                "ferrite: shard {} closes a connection handed to it: it serves no connections",
                self.state.shard_id
            ),
        }
    }

    /// Hands `message` to the delivery handler of the shard owning `partition` (this one, or
    /// another over the mesh). Dropped if that shard has no handler.
    pub async fn deliver(&self, partition: PartitionId, message: Box<dyn std::any::Any + Send>) {
        let request = ShardRequest::Deliver {
            partition,
            message: Delivery(message),
        };
        let _ = self.dispatch(request).await;
    }

    /// Checks the batch (the one check of a producer's batch, [`CheckedBatch::produced`],
    /// against the partition's `max.message.bytes`), then has it numbered: by the partition's
    /// Raft group when it is replicated, else by this shard's log (nothing else can append in
    /// between: no await separates the sequence checks from the assignment). Returns the wait
    /// for `durability`. The check comes before either, so a batch the log would refuse never
    /// reaches a Raft core, and a broker alone, a leader and a follower refuse it alike.
    pub(super) async fn submit_local_append(
        &self,
        partition: &PartitionId,
        batch: BytesMut,
        durability: Durability,
    ) -> AppendPending {
        let refused = |error: LogError| -> AppendPending { Box::pin(async move { Err(error) }) };
        let replicated = self.replicated(partition);
        if replicated.is_none() {
            if let Err(error) = self.check_leading(partition) {
                return refused(error);
            }
        }
        // A replicated partition's replica holds its log open: this only looks it up.
        let log = match self.partition_log(partition).await {
            Ok(log) => log,
            Err(error) => return refused(error),
        };
        let batch = match CheckedBatch::produced(batch, log.config().batch_bytes_max) {
            Ok(batch) => batch,
            Err(error) => return refused(error.into()),
        };
        if let Some(replicated) = replicated {
            return replicated.submit_append(batch, durability);
        }
        // A single copy is one in-sync replica (as Kafka counts a partition of replication
        // factor 1).
        let min_insync_replicas = log.config().min_insync_replicas;
        if durability == Durability::Durable && min_insync_replicas > 1 {
            return refused(LogError::NotEnoughReplicas {
                in_sync: 1,
                required: min_insync_replicas,
            });
        }
        let assigned = log
            .append_checked(batch, crate::log::SINGLE_BROKER_EPOCH)
            .await;
        Box::pin(async move {
            let receipt = assigned?;
            match durability {
                Durability::Assigned => {}
                Durability::Written => log.wait_written(&receipt).await?,
                Durability::Durable => log.wait_durable(&receipt).await?,
            }
            Ok(Appended {
                base_offset: receipt.base_offset,
                last_offset: receipt.last_offset,
                log_start_offset: log.log_start_offset(),
            })
        })
    }

    async fn read_local(
        &self,
        partition: &PartitionId,
        offset: u64,
        bytes_max: usize,
    ) -> Result<SendableRead, LogError> {
        self.check_leading(partition)?;
        let log = self.partition_log(partition).await?;
        let high_watermark = log.high_watermark();
        let slice = log.read(offset, bytes_max, high_watermark).await?;
        let data = match slice.data {
            ReadData::Empty => SendableData::Empty,
            ReadData::Memory(batches) => SendableData::Memory(batches),
            ReadData::File(range) => SendableData::File {
                file: range.descriptor(),
                position: range.position,
                length: range.length,
            },
        };
        Ok(SendableRead {
            data,
            offset_next: slice.offset_next,
            log_start_offset: log.log_start_offset(),
            high_watermark,
        })
    }

    /// This shard's part of [`ShardContext::read_many`]: its reads in turn, each up to its own
    /// `bytes_max` and `bytes_max` in all, until what they returned fills `bytes_max`; the
    /// reads after that return their partition's offsets only (or its error).
    async fn read_many_local(
        &self,
        reads: impl Iterator<Item = &PartitionRead>,
        bytes_max: u64,
    ) -> ReadMany {
        let mut used = 0u64;
        let mut results = Vec::with_capacity(reads.size_hint().0);
        let mut read_count = 0;
        for read in reads {
            // A budget of 0 still lets the first data through, as Kafka's does.
            let result = if used == 0 || used < bytes_max {
                read_count += 1;
                let limit = read_limit(read.bytes_max, bytes_max);
                self.read_local(&read.partition, read.offset, limit).await
            } else {
                // The least a read can read, for the offsets and errors only.
                self.read_local(&read.partition, read.offset, 1)
                    .await
                    .map(|mut answer| {
                        answer.drop_data(read.offset);
                        answer
                    })
            };
            if let Ok(answer) = &result {
                used += answer.data.length();
            }
            results.push(result);
        }
        ReadMany {
            results,
            read_count,
        }
    }

    async fn wait_for_data_local(&self, waits: Vec<(PartitionId, u64)>, timeout_ms: u64) {
        let mut logs = Vec::with_capacity(waits.len());
        for (partition, offset) in &waits {
            if self.check_leading(partition).is_err() {
                return; // the fetch's next read reports it
            }
            let Ok(log) = self.partition_log(partition).await else {
                // The fetch's next read reports the error.
                return;
            };
            logs.push((log, *offset));
        }
        // Only the waits whose log woke the task are polled again, not all of them: a long
        // poll over thousands of partitions costs per wake-up what woke it.
        let mut waiting: FuturesUnordered<_> = logs
            .iter()
            .map(|(log, offset)| log.wait_for_high_watermark_above(*offset))
            .collect();
        let data = waiting.next();
        let timeout = std::pin::pin!(glommio::timer::sleep(Duration::from_millis(timeout_ms)));
        let shutdown = std::pin::pin!(self.shutdown_requested());
        select(data, select(timeout, shutdown)).await;
    }

    async fn list_offset_local(
        &self,
        partition: &PartitionId,
        query: OffsetQuery,
    ) -> Result<ListedOffset, LogError> {
        self.check_leading(partition)?;
        let log = self.partition_log(partition).await?;
        let high_watermark = log.high_watermark();
        let (offset, timestamp_ms) = match query {
            OffsetQuery::Earliest => (Some(log.log_start_offset()), None),
            OffsetQuery::Latest => (Some(high_watermark), None),
            OffsetQuery::Timestamp(timestamp_ms) => {
                match log.offset_for_timestamp(timestamp_ms).await? {
                    Some(found) => (Some(found.offset), Some(found.timestamp_ms)),
                    None => (None, None),
                }
            }
        };
        Ok(ListedOffset {
            offset,
            timestamp_ms,
            log_start_offset: log.log_start_offset(),
            high_watermark,
        })
    }

    async fn delete_records_local(
        &self,
        partition: &PartitionId,
        offset: Option<u64>,
    ) -> Result<u64, LogError> {
        self.check_leading(partition)?;
        let log = self.partition_log(partition).await?;
        let high_watermark = log.high_watermark();
        let offset = offset.unwrap_or(high_watermark);
        if offset > high_watermark {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: log.log_start_offset(),
                log_end_offset: high_watermark,
            });
        }
        log.delete_up_to(offset).await?;
        Ok(log.log_start_offset())
    }

    async fn remove_local(&self, partition: &PartitionId) -> Result<(), LogError> {
        let slot = self.state.partitions.borrow_mut().remove(partition);
        if let Some(slot) = slot {
            if let Some(log) = slot.lock().await.take() {
                // A task still holding the log (a long poll, the cleaner) keeps its
                // descriptors and reads what they still see; a cleaning of it stops, and the
                // log closes under it, so none of its writes comes after the files are gone.
                log.stop_cleaning();
                log.close_while_held().await?;
            }
        }
        let dir = self.state.data_dir.join(partition.directory_name());
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(LogError::io("deleting a partition directory", error)),
        }
    }

    async fn reload_config_local(&self, partition: &PartitionId) -> Result<(), LogError> {
        let slot = self.state.partitions.borrow().get(partition).cloned();
        let Some(slot) = slot else {
            return Ok(());
        };
        // Waits for an open in progress, which may have read the configuration before the
        // alteration.
        let opened = slot.lock().await;
        match opened.as_ref() {
            Some(log) => log.set_config(self.log_config_for(&partition.topic)),
            None => Ok(()),
        }
    }

    /// The log configuration of `topic`'s partitions: the broker's with the topic's overrides,
    /// as the catalog has them now.
    fn log_config_for(&self, topic: &str) -> LogConfig {
        match &self.state.topic_log_config {
            Some(topic_log_config) => topic_log_config.for_topic(topic),
            None => self.state.log_config.clone(),
        }
    }

    /// The partition's log, opened (and recovered) on first use; its directory must exist.
    /// Only on the owning shard.
    pub async fn partition_log(
        &self,
        partition: &PartitionId,
    ) -> Result<Rc<PartitionLog>, LogError> {
        if self.owner_of(partition) != self.state.shard_id {
            // Only the owning shard opens a partition. In a cluster the owner changes when the
            // metadata log places a replica here or takes it away, and a request may have been
            // sent to the old owner: the client asks again.
            assert!(
                self.partitions_replicated(),
                "only the owning shard opens a partition"
            );
            return Err(LogError::NotLeader { leader: None });
        }
        // Looked up before it is inserted, so the common case clones no name.
        let known = self.state.partitions.borrow().get(partition).cloned();
        let slot = known.unwrap_or_else(|| {
            self.state
                .partitions
                .borrow_mut()
                .entry(partition.clone())
                .or_default()
                .clone()
        });
        let mut opened = slot.lock().await;
        if let Some(log) = opened.as_ref() {
            return Ok(log.clone());
        }
        // Only the catalog creates partition directories (with their topic): a request that
        // races a topic's deletion must not bring the partition back.
        let dir = self.state.data_dir.join(partition.directory_name());
        if !dir.is_dir() {
            return Err(LogError::UnknownPartition(partition.directory_name()));
        }
        let log_config = self.log_config_for(&partition.topic);
        let log = Rc::new(
            PartitionLog::open_in_after_replay(
                &self.state.committer,
                dir,
                log_config,
                self.state.clock.clone(),
                &self.state.replayed_logs,
            )
            .await?,
        );
        *opened = Some(log.clone());
        Ok(log)
    }

    /// Where the shard's replicas count what they did (see [`ReplicationStats`]).
    pub fn replication_counts(&self) -> Rc<RefCell<ReplicationStats>> {
        self.state.replication_stats.clone()
    }

    /// What the shard's replicas did so far.
    pub fn replication_stats(&self) -> ReplicationStats {
        self.state.replication_stats.borrow().clone()
    }

    /// Offsets and size of every partition log this shard has open, read without waiting (a
    /// log being opened right now is left out until it is). Partitions nobody used since the
    /// shard started are not open, so not listed.
    pub fn partition_stats(&self) -> Vec<PartitionStats> {
        self.state
            .partitions
            .borrow()
            .iter()
            .filter_map(|(partition, slot)| {
                let opened = slot.try_lock()?;
                let log = opened.as_ref()?;
                let replica_fault = self
                    .replicated(partition)
                    .and_then(|replicated| replicated.fault());
                Some(PartitionStats {
                    partition: partition.clone(),
                    log_start_offset: log.log_start_offset(),
                    high_watermark: log.high_watermark(),
                    size_bytes: log.size_bytes(),
                    segment_count: log.segment_count(),
                    healthy: log.fault().is_none() && replica_fault.is_none(),
                    damaged_offsets: log.damaged_offsets(),
                    damage_found: log.damage_found(),
                })
            })
            .collect()
    }

    /// Opens (recovering) the log of every partition this shard owns that has a directory
    /// under the data directory, as a broker loads its logs at start-up: retention, metrics
    /// and consumer lag then cover partitions nobody has asked for since the start. Returns
    /// how many were opened; a log that fails to open is reported and left for its first
    /// request to retry.
    pub async fn open_owned_partitions(&self) -> usize {
        if self.partitions_replicated() {
            // A cluster's replicas open their own logs, on the shards the metadata log puts
            // them on, once it has.
            return 0;
        }
        let entries = match std::fs::read_dir(&self.state.data_dir) {
            Ok(entries) => entries,
            Err(error) => {
                eprintln!(
                    "ferrite: cannot list the data directory {}: {error}",
                    self.state.data_dir.display()
                );
                return 0;
            }
        };
        let mut owned: Vec<PartitionId> = entries
            .filter_map(Result::ok)
            .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                let (topic, partition) = name.rsplit_once('-')?;
                let partition = PartitionId::new(topic, partition.parse().ok()?);
                (partition.directory_name() == name
                    && partition.topic != crate::catalog::CLUSTER_METADATA_TOPIC)
                    .then_some(partition)
            })
            .filter(|partition| self.owner_of(partition) == self.state.shard_id)
            .collect();
        owned.sort();
        let opened = Cell::new(0);
        futures::stream::iter(owned)
            .for_each_concurrent(PARTITIONS_OPENING_MAX, |partition| {
                let opened = &opened;
                async move {
                    if self.is_shutting_down() {
                        return;
                    }
                    match self.partition_log(&partition).await {
                        Ok(_) => opened.set(opened.get() + 1),
                        Err(error) => eprintln!(
                            "ferrite: cannot open {} at start-up: {error}",
                            partition.directory_name()
                        ),
                    }
                }
            })
            .await;
        opened.get()
    }

    /// Every partition log this shard has open (waiting for opens in progress).
    pub(super) async fn open_logs(&self) -> Vec<(PartitionId, Rc<PartitionLog>)> {
        let slots: Vec<(PartitionId, PartitionSlot)> = self
            .state
            .partitions
            .borrow()
            .iter()
            .map(|(partition, slot)| (partition.clone(), slot.clone()))
            .collect();
        let mut logs = Vec::with_capacity(slots.len());
        for (partition, slot) in slots {
            if let Some(log) = slot.lock().await.clone() {
                logs.push((partition, log));
            }
        }
        logs
    }

    /// Applies the retention limits to every partition log this shard has open: whole
    /// sealed segments past the age or size limit are deleted. Returns how many were.
    pub async fn enforce_retention(&self) -> usize {
        let mut deleted = 0;
        for (partition, log) in self.open_logs().await {
            match log.enforce_retention().await {
                Ok(segments) => deleted += segments,
                Err(LogError::Closed) => {}
                Err(error) => eprintln!(
                    "ferrite: retention of {} failed: {error}",
                    partition.directory_name()
                ),
            }
        }
        deleted
    }

    // ----- used by the runtime -----

    /// The queue to `peer`'s mesh writer task.
    fn outbound_to(&self, peer: usize) -> &LocalSender<MeshMessage> {
        self.state.outbound[peer]
            .as_ref()
            .expect("a peer shard has an outbound queue")
    }

    pub(super) async fn send_to_peer(&self, peer: usize, message: MeshMessage) {
        let sender = self.outbound_to(peer);
        // Fails only once the runtime closed the queue at the very end of shutdown.
        let _ = sender.send(message).await;
    }

    pub(super) fn complete(&self, id: u64, response: ShardResponse) {
        if let Some(reply) = self.state.pending.borrow_mut().remove(&id) {
            let _ = reply.send(response);
        }
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

    /// At shutdown: closes every partition log this shard opened (write, `fdatasync`, indexes,
    /// clean marker; no Forget record each, the journal is released whole afterwards),
    /// [`PARTITIONS_CLOSING_MAX`] at a time; a log nobody changed since a clean open costs
    /// nothing. Returns the first error; closes the rest regardless.
    pub(super) async fn close_partitions(&self) -> Result<(), LogError> {
        let slots: Vec<PartitionSlot> = self
            .state
            .partitions
            .borrow_mut()
            .drain()
            .map(|(_, slot)| slot)
            .collect();
        let first_error = RefCell::new(None);
        futures::stream::iter(slots)
            .for_each_concurrent(PARTITIONS_CLOSING_MAX, |slot| {
                let first_error = &first_error;
                async move {
                    let Some(log) = slot.lock().await.take() else {
                        return;
                    };
                    let result = match Rc::try_unwrap(log) {
                        Ok(log) => log.close_at_shutdown().await,
                        // Still referenced by a task that outlived the drain: make it durable at
                        // least.
                        Err(log) => log.sync().await,
                    };
                    if let Err(error) = result {
                        first_error.borrow_mut().get_or_insert(error);
                    }
                }
            })
            .await;
        first_error.into_inner().map_or(Ok(()), Err)
    }

    /// After every partition log closed: the shard's journal holds nothing (its clean
    /// shutdown). Logs still open (a task outlived the drain) keep their journal records.
    pub(super) async fn close_committer(&self) -> Result<(), LogError> {
        self.state.committer.close().await
    }

    /// The shard's commit cycle's counters.
    pub fn commit_stats(&self) -> crate::log::CommitStats {
        self.state.committer.stats()
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
    staging: Cell<usize>,
    published: Waiters,
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

/// What the room left in a [`ShardContext::read_many`] budget allows one read: at most its
/// own `bytes_max` and the room, and at least one byte, so that the read returns one whole
/// batch when nothing came before it (a log read returns at least one).
fn read_limit(bytes_max: usize, remaining: u64) -> usize {
    (bytes_max as u64).min(remaining).max(1) as usize
}

impl SendableRead {
    /// Keeps the offsets but not the batches (no room for them in a shared budget).
    fn drop_data(&mut self, offset: u64) {
        self.data = SendableData::Empty;
        self.offset_next = offset;
    }

    /// This read (made with `limit`, [`read_limit`]) as a read in turn keeps it, `used` bytes
    /// of a shared budget already taken: a first batch larger than the limit is kept while
    /// nothing came before it, never after (Kafka's fetch: "min one message" only until a
    /// partition returned data).
    fn within_budget(mut self, offset: u64, used: u64, limit: usize) -> SendableRead {
        if used > 0 && self.data.length() > limit as u64 {
            self.drop_data(offset);
        }
        self
    }
}

/// Tells the owner of a long poll ([`ShardRequest::WaitForData`]) that nobody waits for it any
/// more when dropped before its answer came: the owner stops waiting, and its wait stops
/// holding the partitions' wake-ups and a task.
struct CancelOnDrop {
    /// `None` once answered: nothing left to cancel.
    context: Option<ShardContext>,
    owner: usize,
    id: u64,
}

impl CancelOnDrop {
    fn disarm(&mut self) {
        self.context = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(context) = self.context.take() else {
            return;
        };
        context.state.pending.borrow_mut().remove(&self.id);
        let sender = context.outbound_to(self.owner);
        // A full queue: send it once there is room. (A closed one: the owner is gone, and its
        // waits with it.)
        if let Err(glommio::GlommioError::WouldBlock(glommio::ResourceType::Channel(message))) =
            sender.try_send(MeshMessage::Cancel { id: self.id })
        {
            let context = context.clone();
            let owner = self.owner;
            glommio::spawn_local(async move { context.send_to_peer(owner, message).await })
                .detach();
        }
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
