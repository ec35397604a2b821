//! The consumer-group coordinators on one shard: the driver of the pure state machine in
//! [`crate::groups`], over the logs of the `__consumer_offsets` partitions the shard owns.
//!
//! Groups are spread over the partitions of the internal `__consumer_offsets` topic by a hash of
//! the group id ([`offsets_partition_for`](super::offsets_partition_for)), and each partition's
//! coordinator lives on the shard that owns the partition, like any other partition's log. A
//! group request ([`GroupRequest`], one type per kind, each with its answer's type) runs on that
//! shard: here, or posted there with [`ShardContext::call_on`], which runs it on arrival and
//! sends its answer back over the mesh; there it finds the shard's [`ShardGroups`] through a
//! thread-local, as Seastar's `sharded<T>::local()` finds a shard's instance of a service (and
//! replication's `ShardReplication` its own). So one group's requests are all handled by one
//! thread, in arrival order, without locks, and the engine knows nothing of groups. A request
//! counts as work in flight on both shards while it runs, as the engine counts its own calls,
//! so the shutdown drain waits for it.
//!
//! A coordinator is loaded on its first request by reading its partition's log from the start
//! and replaying it (`loaded`), and at start-up, once the shard has opened its partitions, for
//! every partition the shard owns. Every call changes the state at once (no await between
//! reading and changing it), then appends the records it produced to the log and waits until
//! they are durable before anyone hears of the change: the caller's answer and the answers of
//! requests that were waiting for it (a JoinGroup until the join phase ends, a SyncGroup until
//! the leader's assignment). If the append fails, the coordinator is unloaded: its waiting
//! requests and the caller are told COORDINATOR_NOT_AVAILABLE, and the next request rebuilds it
//! from what the log holds. Waiting requests are answered at shutdown, so the drain never waits
//! on a client.
//!
//! A timer task per loaded coordinator sleeps until its next deadline (session, rebalance and
//! sync timeouts, offset retention) or until a call changes the deadlines, and ticks it.
//!
//! In a cluster `__consumer_offsets` is replicated like any topic, and a partition's
//! coordinator runs only on the broker that leads it, as in Kafka (`leadership`): its appends
//! resolve once a majority has them, and elsewhere group calls are refused with
//! NOT_COORDINATOR. A new leader loads the coordinator once it has committed an entry of its
//! term (so the log up to the high-water mark holds everything its predecessors committed;
//! until then calls get COORDINATOR_LOAD_IN_PROGRESS), and a coordinator is unloaded as soon as
//! its broker stops leading in the term it was loaded in (an append refused with `NotLeader`
//! too: its waiters hear NOT_COORDINATOR and find the coordinator again).
//!
//! Files: this one (the shard's coordinators: start, routing, a call's run), `requests` (the
//! request types), `loaded` (one loaded coordinator: its load, its waiting requests),
//! `leadership` (which coordinators may run here in a cluster), `offsets_log` (where their
//! records go: the shard's log, or the partition's replica in a cluster).

mod leadership;
mod loaded;
mod offsets_log;
mod requests;

pub use offsets_log::{LocalOffsetsLog, OffsetsLog, ReplicatedOffsetsLog};

pub use requests::{
    CompleteTransaction, ConsumerGroupHeartbeat, DeleteGroup, DeleteOffsets, DescribeConsumerGroup,
    DescribeGroup, FetchOffsets, FetchedOffsets, GroupRequest, Heartbeat, LeaveGroup, ListGroups,
    Outcome,
};

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::time::Duration;

use engine::catalog::OFFSETS_TOPIC;
use engine::shard::{Durability, PartitionId, ShardContext};
use engine::LogError;
use futures::channel::oneshot;
use futures::future::{select, Either};

use loaded::{encode_effects, LoadedCoordinator};

use crate::coordinator_log::{load_owned_coordinators, on_owning_shard};

use super::{offsets_partition_for, Effects, GroupConfig, GroupError, GroupState, TopicPartition};

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

/// One shard's group coordinators, by `__consumer_offsets` partition: see the module
/// documentation. Lives on (and only on) the shard's thread, as long as its executor.
pub struct ShardGroups {
    context: ShardContext,
    config: GroupsConfig,
    log: Rc<dyn OffsetsLog>,
    slots: RefCell<HashMap<u32, CoordinatorSlot>>,
}

thread_local! {
    /// This shard's groups, for the requests other shards post here.
    static THIS_SHARD: RefCell<Option<Weak<ShardGroups>>> = const { RefCell::new(None) };
}

impl ShardGroups {
    /// Starts the shard's groups: from now on group requests for the partitions this shard
    /// owns are served here, and once the shard has opened its partitions the coordinators of
    /// its `__consumer_offsets` partitions are loaded (in a cluster: followed as their
    /// leadership moves). Call it on every shard, first thing, before the shard takes
    /// requests. `log` is where the coordinators' records go ([`LocalOffsetsLog`] on a broker
    /// alone, [`ReplicatedOffsetsLog`] in a cluster).
    ///
    /// # Panics
    ///
    /// If the shard's groups were started already.
    pub fn start(
        context: &ShardContext,
        config: GroupsConfig,
        log: Rc<dyn OffsetsLog>,
    ) -> Rc<ShardGroups> {
        let groups = Rc::new(ShardGroups {
            context: context.clone(),
            config,
            log,
            slots: RefCell::default(),
        });
        THIS_SHARD.with(|this| {
            let mut this = this.borrow_mut();
            assert!(this.is_none(), "a shard's groups start once");
            *this = Some(Rc::downgrade(&groups));
        });
        let loading = groups.clone();
        // Counted in flight from now: a shutdown requested during the start-up waits for it.
        let in_flight = context.work_in_flight();
        glommio::spawn_local(async move {
            loading.context.owned_partitions_opened().await;
            let partitions = loading.config.offsets_partitions;
            let context = loading.context.clone();
            load_owned_coordinators(loading, &context, OFFSETS_TOPIC, partitions).await;
            drop(in_flight);
            // The shard's groups live as long as its executor, as the mesh readers keep the
            // shard's context: peers' requests may arrive until the very end of the drain.
            std::future::pending::<()>().await
        })
        .detach();
        groups
    }

    /// This shard's groups, once started ([`ShardGroups::start`]).
    pub fn local() -> Option<Rc<ShardGroups>> {
        THIS_SHARD.with(|this| this.borrow().as_ref().and_then(Weak::upgrade))
    }

    /// The groups' settings.
    pub fn config(&self) -> &GroupsConfig {
        &self.config
    }

    /// The `__consumer_offsets` partition of `group_id`.
    pub fn offsets_partition(&self, group_id: &str) -> u32 {
        offsets_partition_for(group_id, self.config.offsets_partitions)
    }

    /// Runs `request` against the coordinator of `__consumer_offsets` partition
    /// `offsets_partition`, on whichever shard owns it.
    pub async fn call<Request: GroupRequest>(
        self: &Rc<Self>,
        offsets_partition: u32,
        request: Request,
    ) -> Request::Answer {
        let partition = PartitionId::new(OFFSETS_TOPIC, offsets_partition);
        let closed = request.refused(GroupError::CoordinatorNotAvailable);
        let owned = partition.clone();
        on_owning_shard(&self.context, &owned, closed, move || {
            Box::pin(async move {
                match ShardGroups::local() {
                    Some(groups) => groups.run(&partition, request).await,
                    // Only while the owner starts: the client retries.
                    None => request.refused(GroupError::CoordinatorLoadInProgress),
                }
            })
        })
        .await
    }

    /// The groups of every coordinator this shard has loaded, for the metrics endpoint.
    pub fn stats(&self) -> Vec<GroupStats> {
        let slots: Vec<CoordinatorSlot> = self.slots.borrow().values().cloned().collect();
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

    /// Runs `request` on this shard's coordinator of `partition`.
    async fn run<Request: GroupRequest>(
        self: &Rc<Self>,
        partition: &PartitionId,
        request: Request,
    ) -> Request::Answer {
        let coordinator = match self.coordinator(partition).await {
            Ok(coordinator) => coordinator,
            Err(error) => return request.refused(error),
        };
        let now_ms = self.context.now_ms();
        // The request is consumed below; its refusals are made while it is at hand.
        let not_available = request.refused(GroupError::CoordinatorNotAvailable);
        let not_coordinator = request.refused(GroupError::NotCoordinator);
        let refusal = move |reason: GroupError| match reason {
            GroupError::NotCoordinator => not_coordinator,
            _ => not_available,
        };
        let (outcome, effects) = {
            let mut state = coordinator.state.borrow_mut();
            request.apply(&coordinator, &mut state, now_ms)
        };
        coordinator.note_change();
        if let Err(reason) = self.settle(&coordinator, effects).await {
            return refusal(reason);
        }
        match outcome {
            Outcome::Now(answer) => answer,
            Outcome::Later(receiver) => {
                let shutdown = std::pin::pin!(self.context.shutdown_requested());
                match select(receiver, shutdown).await {
                    Either::Left((Ok(answer), _)) => answer,
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
    /// NOT_COORDINATOR if this broker stopped leading first, INVALID_PRODUCER_EPOCH or
    /// TRANSACTION_COORDINATOR_FENCED if the log refused a fenced producer's batch or a fenced
    /// coordinator's marker (the transaction coordinator then stops writing it).
    async fn settle(
        &self,
        coordinator: &Rc<LoadedCoordinator>,
        effects: Effects,
    ) -> Result<(), GroupError> {
        if let Some(batch) = encode_effects(&effects, self.context.now_ms()) {
            // On the partition's own shard: through its replica in a cluster.
            let appended = self
                .log
                .submit(
                    &self.context,
                    &coordinator.partition,
                    batch,
                    Durability::Durable,
                )
                .await
                .await;
            if let Err(error) = appended {
                let reason = match error {
                    LogError::NotLeader { .. } => GroupError::NotCoordinator,
                    // A transaction's offsets or marker from a fenced producer epoch, which
                    // the partition's producer state refuses: the producer hears it is fenced.
                    LogError::InvalidProducerEpoch { .. } => GroupError::InvalidProducerEpoch,
                    LogError::TransactionCoordinatorFenced { .. } => {
                        GroupError::TransactionCoordinatorFenced
                    }
                    error => {
                        engine::log_rate_limited!(
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
        coordinator.complete(effects.completions);
        Ok(())
    }

    /// The coordinator of `partition` (which this shard owns), loaded on first use and, in a
    /// cluster, again in each term this broker leads it. A failed load is reported here.
    async fn coordinator(
        self: &Rc<Self>,
        partition: &PartitionId,
    ) -> Result<Rc<LoadedCoordinator>, GroupError> {
        let term = self.coordinator_term(partition)?;
        let slot = self
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
        let loading =
            LoadedCoordinator::load(&self.context, partition, term, &self.config.coordinator);
        let coordinator = match loading.await {
            Ok(coordinator) => Rc::new(coordinator),
            Err(error) => {
                engine::log_rate_limited!(
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

    /// Ticks `coordinator` at its deadlines until it is unloaded or the shard shuts down.
    fn spawn_coordinator_timer(self: &Rc<Self>, coordinator: Rc<LoadedCoordinator>) {
        let groups = self.clone();
        glommio::spawn_local(async move {
            let context = &groups.context;
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
                let _in_flight = context.work_in_flight();
                let effects = coordinator.state.borrow_mut().tick(now_ms);
                // A failure unloads the coordinator, which ends this loop.
                let _ = groups.settle(&coordinator, effects).await;
            }
        })
        .detach();
    }

    /// Forgets `coordinator` (an append failed, or its broker stopped leading): its waiting
    /// requests are dropped (their callers answer `reason`) and the next request reloads it
    /// from the log.
    fn unload_coordinator(&self, coordinator: &Rc<LoadedCoordinator>, reason: GroupError) {
        if coordinator.retire(reason) {
            self.slots
                .borrow_mut()
                .remove(&coordinator.partition.partition);
        }
    }
}
