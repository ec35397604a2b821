//! The consumer-group coordinator on its shard: the driver of the pure state machine in
//! [`crate::groups`].
//!
//! Groups are spread over the partitions of the internal `__consumer_offsets` topic by a hash of
//! the group id, and each partition's coordinator lives on the shard that owns the partition,
//! like any other partition's log. A group request is a [`GroupRequest`] routed to that
//! shard, so one group's requests are all handled by one thread, in arrival order, without
//! locks.
//!
//! A coordinator is loaded on its first request by reading its partition's log from the start
//! (keeping only the latest record of each key, as compaction would) and replaying it. Every
//! call changes the state at once (no await between reading and changing it), then appends the
//! records it produced to the log and waits until they are durable before anyone hears of the
//! change: the caller's answer and the answers of requests that were waiting for it (a
//! JoinGroup until the join phase ends, a SyncGroup until the leader's assignment). If the
//! append fails, the coordinator is unloaded: its waiting requests and the caller are told
//! COORDINATOR_NOT_AVAILABLE, and the next request rebuilds it from what the log holds.
//!
//! A timer task per loaded coordinator sleeps until its next deadline (session, rebalance and
//! sync timeouts, offset retention) or until a call changes the deadlines, and ticks it.
//!
//! In a cluster `__consumer_offsets` is replicated like any topic, and a partition's
//! coordinator runs only on the broker that leads it, as in Kafka: its appends resolve once a
//! majority has them, and elsewhere group calls are refused with NOT_COORDINATOR. A new
//! leader loads the coordinator once it has committed an entry of its term (so the log up to
//! the high-water mark holds everything its predecessors committed; until then calls get
//! COORDINATOR_LOAD_IN_PROGRESS), and a coordinator is unloaded as soon as its broker stops
//! leading in the term it was loaded in: a task per shard checks every
//! [`LEADERSHIP_CHECK_INTERVAL`], and every call checks before it runs.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::channel::oneshot;
use futures::future::{select, Either, LocalBoxFuture};

use super::calls::ShardCall;
use super::replicated::Leadership;
use super::{Durability, PartitionId, ShardContext};
use crate::batch::{self, BatchHeader, PlainRecord};
use crate::catalog::{Catalog, CatalogError, OFFSETS_TOPIC};
use crate::error::LogError;
use crate::groups::{
    CommittedOffset, Completion, Effects, GroupConfig, GroupCoordinator, GroupDescription,
    GroupError, GroupRecord, GroupState, JoinGroup, JoinOutcome, JoinResponse, LeaveResults,
    LeavingMember, ListedGroup, OffsetCommit, PartitionResults, SyncGroup, SyncOutcome,
    SyncResponse, Ticket, TopicPartition,
};
use crate::waiters::Waiters;

/// The `__consumer_offsets` partition that holds `group_id`: Java's `String.hashCode` of the
/// id, made non-negative, modulo the partition count, as Kafka places groups.
pub fn offsets_partition_for(group_id: &str, partitions: u32) -> u32 {
    assert!(
        partitions > 0,
        "__consumer_offsets has at least one partition"
    );
    let hash = group_id.encode_utf16().fold(0i32, |hash, unit| {
        hash.wrapping_mul(31).wrapping_add(i32::from(unit))
    });
    // Kafka's Utils.abs: Integer.MIN_VALUE maps to 0.
    let hash = if hash == i32::MIN { 0 } else { hash.abs() };
    hash as u32 % partitions
}

/// The groups' settings on every shard.
#[derive(Debug, Clone)]
pub struct GroupsConfig {
    /// Partitions of `__consumer_offsets` (fixed once the topic exists).
    pub offsets_partitions: u32,
    pub coordinator: GroupConfig,
}

impl Default for GroupsConfig {
    fn default() -> GroupsConfig {
        GroupsConfig {
            // Redpanda's default; Kafka's is 50. Partitions cost nothing until a group uses one.
            offsets_partitions: 16,
            coordinator: GroupConfig::default(),
        }
    }
}

/// The settings `__consumer_offsets` is made with (Kafka's): compacted, so the log keeps each
/// group's and each committed offset's latest record (and its tombstone for a while), which is
/// all a coordinator's load needs; compaction alone, so retention never deletes the groups'
/// state; segments of Kafka's `offsets.topic.segment.bytes`.
const OFFSETS_TOPIC_CONFIGS: [(&str, &str); 2] = [
    ("cleanup.policy", "compact"),
    ("segment.bytes", "104857600"),
];

/// The configuration overrides `__consumer_offsets` is created with (see
/// [`OFFSETS_TOPIC_CONFIGS`]): by [`prepare_offsets_topic`] on a broker alone, through the
/// controller in a cluster.
pub fn offsets_topic_configs() -> BTreeMap<String, String> {
    OFFSETS_TOPIC_CONFIGS
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

/// Creates `__consumer_offsets` with `config.offsets_partitions` partitions and
/// [`OFFSETS_TOPIC_CONFIGS`] if it does not exist yet; if it does, `config` takes the
/// partition count it has (changing it would move groups away from their records), and a
/// topic made by a version that did not compact it (retention off instead) is made compacted.
pub fn prepare_offsets_topic(
    catalog: &Catalog,
    config: &mut GroupsConfig,
) -> Result<(), CatalogError> {
    if let Some(topic) = catalog.topics().get(OFFSETS_TOPIC) {
        config.offsets_partitions = topic.partitions;
        if topic.configs.get("cleanup.policy").map(String::as_str) != Some("compact") {
            catalog.alter_internal_topic_configs(OFFSETS_TOPIC, |current| {
                let mut configs = current.clone();
                configs.extend(
                    offsets_topic_configs()
                        .into_iter()
                        .filter(|(name, _)| name == "cleanup.policy"),
                );
                Ok(configs)
            })?;
        }
        return Ok(());
    }
    catalog.create_topic(
        OFFSETS_TOPIC,
        i64::from(config.offsets_partitions),
        offsets_topic_configs(),
        false,
    )?;
    Ok(())
}

/// One group request, as the coordinator takes it.
#[derive(Debug)]
pub enum GroupCall {
    Join(JoinGroup),
    Sync(SyncGroup),
    Heartbeat {
        group_id: String,
        generation_id: i32,
        member_id: String,
        group_instance_id: Option<String>,
    },
    Leave {
        group_id: String,
        members: Vec<LeavingMember>,
    },
    CommitOffsets(OffsetCommit),
    /// `partitions: None`: every partition the group committed.
    FetchOffsets {
        group_id: String,
        partitions: Option<Vec<TopicPartition>>,
    },
    DeleteOffsets {
        group_id: String,
        partitions: Vec<TopicPartition>,
    },
    Describe {
        group_id: String,
    },
    /// Every group of the partition, optionally only those in one of `states`.
    List {
        states: Vec<GroupState>,
    },
    Delete {
        group_id: String,
    },
}

/// The coordinator's answer to a [`GroupCall`], variant for variant.
#[derive(Debug)]
pub enum GroupReply {
    Join(JoinResponse),
    Sync(SyncResponse),
    Heartbeat(Result<(), GroupError>),
    Leave(LeaveResults),
    CommitOffsets(PartitionResults),
    FetchOffsets(Result<Vec<(TopicPartition, Option<CommittedOffset>)>, GroupError>),
    DeleteOffsets(PartitionResults),
    Describe(Result<GroupDescription, GroupError>),
    List(Result<Vec<ListedGroup>, GroupError>),
    Delete(Result<(), GroupError>),
}

impl GroupCall {
    /// The answer that refuses this call as a whole with `error`.
    pub fn refused(&self, error: GroupError) -> GroupReply {
        match self {
            GroupCall::Join(join) => {
                GroupReply::Join(JoinResponse::error(error, join.member_id.clone()))
            }
            GroupCall::Sync(_) => GroupReply::Sync(SyncResponse::error(error)),
            GroupCall::Heartbeat { .. } => GroupReply::Heartbeat(Err(error)),
            GroupCall::Leave { .. } => GroupReply::Leave(Err(error)),
            GroupCall::CommitOffsets(_) => GroupReply::CommitOffsets(Err(error)),
            GroupCall::FetchOffsets { .. } => GroupReply::FetchOffsets(Err(error)),
            GroupCall::DeleteOffsets { .. } => GroupReply::DeleteOffsets(Err(error)),
            GroupCall::Describe { .. } => GroupReply::Describe(Err(error)),
            GroupCall::List { .. } => GroupReply::List(Err(error)),
            GroupCall::Delete { .. } => GroupReply::Delete(Err(error)),
        }
    }
}

/// A group's numbers for the metrics endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStats {
    pub group_id: String,
    pub state: GroupState,
    pub members: usize,
    pub offsets: Vec<(TopicPartition, i64)>,
}

/// A coordinator loaded at most once, on first use, by whichever request gets there first.
type CoordinatorSlot = Rc<futures::lock::Mutex<Option<Rc<LoadedCoordinator>>>>;

/// This shard's coordinators, by `__consumer_offsets` partition.
#[derive(Default)]
pub(super) struct Coordinators {
    slots: RefCell<HashMap<u32, CoordinatorSlot>>,
}

/// One partition's coordinator and the requests waiting on it.
struct LoadedCoordinator {
    partition: PartitionId,
    /// The Raft term its broker leads the partition in (`None`: not replicated).
    term: Option<u64>,
    state: RefCell<GroupCoordinator>,
    /// Where each pending JoinGroup or SyncGroup gets its answer.
    waiting: RefCell<HashMap<Ticket, oneshot::Sender<Completion>>>,
    /// Bumped by every call, so the timer task re-reads the next deadline.
    changes: Cell<u64>,
    changed: Waiters,
    /// Why it was unloaded (an append failed, its broker stopped leading); its slot no
    /// longer holds it.
    unloaded: Cell<Option<GroupError>>,
}

/// How a call's own answer arrives: now, or when its ticket completes.
enum Answer {
    Now(GroupReply),
    Later(oneshot::Receiver<Completion>),
}

/// Longest a batch of group records read at load may be.
const LOAD_READ_BYTES: usize = 1 << 20;

/// How often a cluster's shard compares the coordinators it runs with the leadership of their
/// partitions (a fifth of the shortest Raft election timeout: a takeover is noticed well
/// within the time clients take to find the new coordinator).
const LEADERSHIP_CHECK_INTERVAL: Duration = Duration::from_millis(100);

impl ShardContext {
    /// Runs a group call against the coordinator of `__consumer_offsets` partition
    /// `offsets_partition` (see [`offsets_partition_for`]), on whichever shard owns it.
    pub async fn group_call(&self, offsets_partition: u32, call: GroupCall) -> GroupReply {
        let partition = PartitionId::new(OFFSETS_TOPIC, offsets_partition);
        self.dispatch(&partition.clone(), GroupRequest { partition, call })
            .await
    }

    /// The groups of every coordinator this shard has loaded, for the metrics endpoint.
    pub fn group_stats(&self) -> Vec<GroupStats> {
        let slots: Vec<CoordinatorSlot> = self
            .coordinators()
            .slots
            .borrow()
            .values()
            .cloned()
            .collect();
        let mut stats = Vec::new();
        for slot in slots {
            // A slot being loaded is skipped; it shows up at the next collection.
            let Some(guard) = slot.try_lock() else {
                continue;
            };
            let Some(coordinator) = guard.as_ref() else {
                continue;
            };
            let state = coordinator.state.borrow();
            for listed in state.list_groups(&[]) {
                let description = state.describe_group(&listed.group_id);
                let offsets = state
                    .fetch_offsets(&listed.group_id, None)
                    .into_iter()
                    .filter_map(|(partition, committed)| {
                        committed.map(|committed| (partition, committed.offset))
                    })
                    .collect();
                stats.push(GroupStats {
                    group_id: listed.group_id,
                    state: listed.state,
                    members: description.members.len(),
                    offsets,
                });
            }
        }
        stats
    }

    /// Loads the coordinator of every `__consumer_offsets` partition this shard owns, so that
    /// groups and their offsets are known (to metrics, ListGroups) from start-up rather than
    /// from their first request, as a Kafka coordinator loads its partitions when it takes
    /// them over. Partitions whose directory does not exist (no offsets topic) are skipped.
    /// In a cluster, where this depends on leadership, starts
    /// [`follow_offsets_leadership`](Self::follow_offsets_leadership) instead.
    pub(super) async fn load_owned_coordinators(&self) {
        if self.partitions_replicated() {
            let context = self.clone();
            glommio::spawn_local(async move { context.follow_offsets_leadership().await }).detach();
            return;
        }
        for index in 0..self.groups_config().offsets_partitions {
            let partition = PartitionId::new(OFFSETS_TOPIC, index);
            if self.owner_of(&partition) != self.shard_id()
                || self.is_shutting_down()
                || !self.data_dir().join(partition.directory_name()).is_dir()
            {
                continue;
            }
            // A failed load is reported by `coordinator`.
            let _ = self.coordinator(&partition).await;
        }
    }

    /// In a cluster, until shutdown: loads the coordinator of each `__consumer_offsets`
    /// partition this shard runs as soon as its broker leads it (and is ready to), as a Kafka
    /// broker loads a partition's groups when it takes it over, and unloads those whose
    /// broker stopped leading in their term, so their waiting calls hear NOT_COORDINATOR.
    async fn follow_offsets_leadership(&self) {
        while !self.is_shutting_down() {
            for index in 0..self.groups_config().offsets_partitions {
                let partition = PartitionId::new(OFFSETS_TOPIC, index);
                if self.owner_of(&partition) != self.shard_id() {
                    continue;
                }
                let term = self.coordinator_term(&partition);
                match (self.loaded_coordinator(&partition), term) {
                    (Some(loaded), Ok(term)) if loaded.term == term => {}
                    (Some(loaded), _) => {
                        self.unload_coordinator(&loaded, GroupError::NotCoordinator)
                    }
                    // A failed load is reported by `coordinator`, and retried next time.
                    (None, Ok(Some(_))) => drop(self.coordinator(&partition).await),
                    (None, _) => {}
                }
            }
            let pause = std::pin::pin!(glommio::timer::sleep(LEADERSHIP_CHECK_INTERVAL));
            let shutdown = std::pin::pin!(self.shutdown_requested());
            select(pause, shutdown).await;
        }
    }

    /// The term of the coordinator `partition` may run in here: `None` where it is not
    /// replicated (a broker alone); in a cluster, refused unless this broker leads it and has
    /// committed an entry of its term.
    fn coordinator_term(&self, partition: &PartitionId) -> Result<Option<u64>, GroupError> {
        let Some(replicated) = self.replicated(partition) else {
            return match self.partitions_replicated() {
                true => Err(GroupError::NotCoordinator),
                false => Ok(None),
            };
        };
        match (replicated.leading_term(), replicated.leadership()) {
            (Some(term), _) => Ok(Some(term)),
            (None, Leadership::Local) => Err(GroupError::CoordinatorLoadInProgress),
            (None, Leadership::Remote(_)) => Err(GroupError::NotCoordinator),
        }
    }

    /// The coordinator of `partition` if one is loaded and not being loaded right now.
    fn loaded_coordinator(&self, partition: &PartitionId) -> Option<Rc<LoadedCoordinator>> {
        let slot = self
            .coordinators()
            .slots
            .borrow()
            .get(&partition.partition)
            .cloned()?;
        let loaded = slot.try_lock()?;
        loaded.clone()
    }

    /// Runs `call` on this shard's coordinator of `partition`.
    async fn group_call_local(&self, partition: &PartitionId, call: GroupCall) -> GroupReply {
        let coordinator = match self.coordinator(partition).await {
            Ok(coordinator) => coordinator,
            Err(error) => return call.refused(error),
        };
        let now_ms = self.now_ms();
        // The call is consumed below; its refusals are made while it is at hand.
        let not_available = call.refused(GroupError::CoordinatorNotAvailable);
        let not_coordinator = call.refused(GroupError::NotCoordinator);
        let refusal = move |reason: GroupError| match reason {
            GroupError::NotCoordinator => not_coordinator,
            _ => not_available,
        };
        let (answer, effects) = coordinator.apply(call, now_ms);
        coordinator.changes.set(coordinator.changes.get() + 1);
        coordinator.changed.wake_all();
        if let Err(reason) = self.settle(&coordinator, effects).await {
            return refusal(reason);
        }
        match answer {
            Answer::Now(reply) => reply,
            Answer::Later(receiver) => {
                let shutdown = std::pin::pin!(self.shutdown_requested());
                match select(receiver, shutdown).await {
                    Either::Left((Ok(completion), _)) => match completion {
                        Completion::Join(_, response) => GroupReply::Join(response),
                        Completion::Sync(_, response) => GroupReply::Sync(response),
                    },
                    // Unloaded, or the broker is stopping: the client finds the coordinator
                    // again and retries.
                    Either::Left((Err(oneshot::Canceled), _)) | Either::Right(_) => refusal(
                        coordinator
                            .unloaded
                            .get()
                            .unwrap_or(GroupError::CoordinatorNotAvailable),
                    ),
                }
            }
        }
    }

    /// Makes `effects` durable (in a cluster: committed by a majority), then answers the
    /// requests they complete. Refused (and the coordinator unloaded) when the append failed:
    /// NOT_COORDINATOR if this broker stopped leading first.
    async fn settle(
        &self,
        coordinator: &Rc<LoadedCoordinator>,
        effects: Effects,
    ) -> Result<(), GroupError> {
        if !effects.records.is_empty() {
            let batch = encode_records(&effects.records, self.now_ms());
            let appended = self
                .submit_local_append(&coordinator.partition, batch, Durability::Durable)
                .await
                .await;
            if let Err(error) = appended {
                let reason = match error {
                    LogError::NotLeader { .. } => GroupError::NotCoordinator,
                    error => {
                        crate::log_rate_limited!(
                            "ferrite: cannot persist group state to {}, unloading its \
                             coordinator: {error}",
                            coordinator.partition.directory_name()
                        );
                        GroupError::CoordinatorNotAvailable
                    }
                };
                self.unload_coordinator(coordinator, reason);
                return Err(reason);
            }
        }
        for completion in effects.completions {
            let waiting = coordinator
                .waiting
                .borrow_mut()
                .remove(&completion.ticket());
            if let Some(reply) = waiting {
                // The requester may have gone (its connection closed): nothing to answer.
                let _ = reply.send(completion);
            }
        }
        Ok(())
    }

    /// The coordinator of `partition` (which this shard owns), loaded on first use and, in a
    /// cluster, again in each term this broker leads it. A failed load is reported here.
    async fn coordinator(
        &self,
        partition: &PartitionId,
    ) -> Result<Rc<LoadedCoordinator>, GroupError> {
        let term = self.coordinator_term(partition)?;
        let slot = self
            .coordinators()
            .slots
            .borrow_mut()
            .entry(partition.partition)
            .or_default()
            .clone();
        let mut loaded = slot.lock().await;
        if let Some(coordinator) = loaded.clone() {
            if coordinator.term == term {
                return Ok(coordinator);
            }
            // Leadership moved away and back since: another leader may have changed the groups.
            coordinator.retire(GroupError::NotCoordinator);
            *loaded = None;
        }
        let coordinator = match self.load_coordinator(partition, term).await {
            Ok(coordinator) => Rc::new(coordinator),
            Err(error) => {
                crate::log_rate_limited!(
                    "ferrite: cannot load the group coordinator of {}: {error}",
                    partition.directory_name()
                );
                return Err(GroupError::CoordinatorNotAvailable);
            }
        };
        if self.coordinator_term(partition)? != term {
            // Leadership moved while the log was read.
            return Err(GroupError::NotCoordinator);
        }
        *loaded = Some(coordinator.clone());
        self.spawn_coordinator_timer(coordinator.clone());
        Ok(coordinator)
    }

    /// Rebuilds a coordinator from its partition's log: the latest record of each key, in the
    /// order they were written.
    async fn load_coordinator(
        &self,
        partition: &PartitionId,
        term: Option<u64>,
    ) -> Result<LoadedCoordinator, LoadError> {
        let log = self.partition_log(partition).await?;
        let end = log.high_watermark();
        let mut offset = log.log_start_offset();
        let mut latest: HashMap<Bytes, (u64, Option<Bytes>)> = HashMap::new();
        let mut sequence = 0u64;
        while offset < end {
            let slice = log.read(offset, LOAD_READ_BYTES, end).await?;
            let bytes = slice.data.to_vec()?;
            let mut rest = &bytes[..];
            while let Some(header) = BatchHeader::parse(rest) {
                let size = header.size_bytes as usize;
                let Some(batch_bytes) = rest.get(..size) else {
                    return Err(LoadError::Malformed("a truncated batch"));
                };
                rest = &rest[size..];
                if header.is_control() {
                    // Raft's own entries (leader changes, voter sets) in a cluster.
                    continue;
                }
                for record in batch::plain_records(batch_bytes)
                    .map_err(|_| LoadError::Malformed("a batch it did not write"))?
                {
                    let record = record.map_err(|_| LoadError::Malformed("a malformed record"))?;
                    let Some(key) = record.key else {
                        return Err(LoadError::Malformed("a record without a key"));
                    };
                    sequence += 1;
                    latest.insert(
                        Bytes::copy_from_slice(key),
                        (sequence, record.value.map(Bytes::copy_from_slice)),
                    );
                }
            }
            if slice.offset_next <= offset {
                return Err(LoadError::Malformed("a read that did not advance"));
            }
            offset = slice.offset_next;
        }
        let mut records: Vec<(u64, GroupRecord)> = latest
            .into_iter()
            .map(|(key, (sequence, value))| (sequence, GroupRecord { key, value }))
            .collect();
        records.sort_unstable_by_key(|(sequence, _)| *sequence);
        let now_ms = self.now_ms();
        let seed = member_id_seed(partition.partition, now_ms);
        let state = GroupCoordinator::replay(
            self.groups_config().coordinator.clone(),
            seed,
            records.iter().map(|(_, record)| record),
            now_ms,
        )
        .map_err(|error| LoadError::Replay(error.to_string()))?;
        Ok(LoadedCoordinator {
            partition: partition.clone(),
            term,
            state: RefCell::new(state),
            waiting: RefCell::new(HashMap::new()),
            changes: Cell::new(0),
            changed: Waiters::default(),
            unloaded: Cell::new(None),
        })
    }

    /// Ticks `coordinator` at its deadlines until it is unloaded or the shard shuts down.
    fn spawn_coordinator_timer(&self, coordinator: Rc<LoadedCoordinator>) {
        let context = self.clone();
        glommio::spawn_local(async move {
            while coordinator.unloaded.get().is_none() && !context.is_shutting_down() {
                let deadline_ms = coordinator.state.borrow().next_deadline_ms();
                let wait_ms = deadline_ms.saturating_sub(context.now_ms()).max(0) as u64;
                let seen = coordinator.changes.get();
                let timer = std::pin::pin!(glommio::timer::sleep(Duration::from_millis(wait_ms)));
                let changed = std::pin::pin!(coordinator
                    .changed
                    .until(|| coordinator.changes.get() != seen));
                let shutdown = std::pin::pin!(context.shutdown_requested());
                if let Either::Right(_) = select(timer, select(changed, shutdown)).await {
                    continue;
                }
                let now_ms = context.now_ms();
                if now_ms < deadline_ms || coordinator.unloaded.get().is_some() {
                    continue;
                }
                let _in_flight = context.enter_in_flight();
                let effects = coordinator.state.borrow_mut().tick(now_ms);
                // A failure unloads the coordinator, which ends this loop.
                let _ = context.settle(&coordinator, effects).await;
            }
        })
        .detach();
    }

    /// Forgets `coordinator` (an append failed, or its broker stopped leading): its waiting
    /// requests are dropped (their callers answer `reason`) and the next request reloads it
    /// from the log.
    fn unload_coordinator(&self, coordinator: &Rc<LoadedCoordinator>, reason: GroupError) {
        if coordinator.retire(reason) {
            self.coordinators()
                .slots
                .borrow_mut()
                .remove(&coordinator.partition.partition);
        }
    }
}

impl LoadedCoordinator {
    /// Marks it unloaded for `reason` and drops its waiting requests; `false` if it already
    /// was.
    fn retire(&self, reason: GroupError) -> bool {
        if self.unloaded.get().is_some() {
            return false;
        }
        self.unloaded.set(Some(reason));
        self.waiting.borrow_mut().clear();
        self.changed.wake_all();
        true
    }

    /// Runs `call` against the state (no await: nothing else sees a half-made change).
    fn apply(&self, call: GroupCall, now_ms: i64) -> (Answer, Effects) {
        let mut state = self.state.borrow_mut();
        match call {
            GroupCall::Join(request) => {
                let (outcome, effects) = state.join_group(&request, now_ms);
                let answer = match outcome {
                    JoinOutcome::Done(response) => Answer::Now(GroupReply::Join(response)),
                    JoinOutcome::Pending(ticket) => self.wait_for(ticket),
                };
                (answer, effects)
            }
            GroupCall::Sync(request) => {
                let (outcome, effects) = state.sync_group(&request, now_ms);
                let answer = match outcome {
                    SyncOutcome::Done(response) => Answer::Now(GroupReply::Sync(response)),
                    SyncOutcome::Pending(ticket) => self.wait_for(ticket),
                };
                (answer, effects)
            }
            GroupCall::Heartbeat {
                group_id,
                generation_id,
                member_id,
                group_instance_id,
            } => {
                let result = state.heartbeat(
                    &group_id,
                    generation_id,
                    &member_id,
                    group_instance_id.as_deref(),
                    now_ms,
                );
                (
                    Answer::Now(GroupReply::Heartbeat(result)),
                    Effects::default(),
                )
            }
            GroupCall::Leave { group_id, members } => {
                let (results, effects) = state.leave_group(&group_id, &members, now_ms);
                (Answer::Now(GroupReply::Leave(results)), effects)
            }
            GroupCall::CommitOffsets(request) => {
                let (results, effects) = state.commit_offsets(&request, now_ms);
                (Answer::Now(GroupReply::CommitOffsets(results)), effects)
            }
            GroupCall::FetchOffsets {
                group_id,
                partitions,
            } => {
                let offsets = state.fetch_offsets(&group_id, partitions.as_deref());
                (
                    Answer::Now(GroupReply::FetchOffsets(Ok(offsets))),
                    Effects::default(),
                )
            }
            GroupCall::DeleteOffsets {
                group_id,
                partitions,
            } => {
                let (results, effects) = state.delete_offsets(&group_id, &partitions);
                (Answer::Now(GroupReply::DeleteOffsets(results)), effects)
            }
            GroupCall::Describe { group_id } => (
                Answer::Now(GroupReply::Describe(Ok(state.describe_group(&group_id)))),
                Effects::default(),
            ),
            GroupCall::List { states } => (
                Answer::Now(GroupReply::List(Ok(state.list_groups(&states)))),
                Effects::default(),
            ),
            GroupCall::Delete { group_id } => {
                let (mut results, effects) = state.delete_groups(&[group_id]);
                let result = results.pop().map_or(Ok(()), |(_, result)| result);
                (Answer::Now(GroupReply::Delete(result)), effects)
            }
        }
    }

    fn wait_for(&self, ticket: Ticket) -> Answer {
        let (reply, receiver) = oneshot::channel();
        let previous = self.waiting.borrow_mut().insert(ticket, reply);
        assert!(previous.is_none(), "tickets are unique");
        Answer::Later(receiver)
    }
}

/// Why a coordinator could not be loaded.
#[derive(Debug, thiserror::Error)]
enum LoadError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("its log holds {0}")]
    Malformed(&'static str),
    #[error("its records do not replay: {0}")]
    Replay(String),
}

/// A consumer-group request for the coordinator of a `__consumer_offsets` partition, on the
/// shard that owns it.
pub(super) struct GroupRequest {
    partition: PartitionId,
    call: GroupCall,
}

impl ShardCall for GroupRequest {
    type Answer = GroupReply;

    fn closed(&self) -> Self::Answer {
        self.call.refused(GroupError::CoordinatorNotAvailable)
    }

    async fn accept(self, context: &ShardContext) -> LocalBoxFuture<'static, Self::Answer> {
        let context = context.clone();
        Box::pin(async move { context.group_call_local(&self.partition, self.call).await })
    }
}

/// One uncompressed batch of `records`, stamped `now_ms`.
fn encode_records(records: &[GroupRecord], now_ms: i64) -> BytesMut {
    let plain: Vec<PlainRecord<'_>> = records
        .iter()
        .map(|record| PlainRecord {
            offset: 0,
            timestamp_ms: now_ms,
            key: Some(&record.key),
            value: record.value.as_deref(),
        })
        .collect();
    BytesMut::from(&batch::encode_plain(&plain, batch::ProducerFields::NONE)[..])
}

/// Member ids must not repeat across restarts: seed their generator from the clock and the
/// partition.
fn member_id_seed(partition: u32, now_ms: i64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    (now_ms as u64).rotate_left(20) ^ u64::from(nanos) ^ (u64::from(partition) << 48)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offsets_topic_is_compacted_including_one_made_before_compaction_existed() {
        let configs =
            |catalog: &Catalog| catalog.topics().get(OFFSETS_TOPIC).unwrap().configs.clone();
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        let mut config = GroupsConfig::default();
        prepare_offsets_topic(&catalog, &mut config).unwrap();
        assert_eq!(configs(&catalog)["cleanup.policy"], "compact");

        // What an older version made: retention off instead of compaction.
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        let old = [("retention.ms", "-1"), ("segment.bytes", "104857600")]
            .map(|(name, value)| (name.to_owned(), value.to_owned()));
        catalog
            .create_topic(OFFSETS_TOPIC, 3, old.into_iter().collect(), false)
            .unwrap();
        prepare_offsets_topic(&catalog, &mut config).unwrap();
        assert_eq!(config.offsets_partitions, 3, "the existing count is kept");
        let reopened = Catalog::open(dir.path()).unwrap();
        let configs = configs(&reopened);
        assert_eq!(configs["cleanup.policy"], "compact", "and persisted");
        assert_eq!(configs["retention.ms"], "-1", "the other settings stay");
    }

    #[test]
    fn groups_land_where_kafka_puts_them() {
        // Java: "my-group".hashCode() == -1906497762, and Math.abs of it % 50 == 12.
        assert_eq!(offsets_partition_for("my-group", 50), 12);
        assert_eq!(offsets_partition_for("", 50), 0);
        for partitions in [1, 16, 50] {
            for group in ["a", "orders", "consumer-group-with-a-long-name-ü"] {
                assert!(offsets_partition_for(group, partitions) < partitions);
            }
        }
    }
}
