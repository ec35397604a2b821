//! The transaction coordinators on one shard: the driver of the pure state machine in
//! [`super::coordinator`], over the logs of the `__transaction_state` partitions the shard
//! owns, as `groups::shard` drives the group coordinators (and sharing with it what
//! `coordinator_log` holds: leadership, the load, the batch format).
//!
//! A transactional id's coordinator is that of its `__transaction_state` partition
//! ([`transaction_state_partition_for`](super::topic::transaction_state_partition_for)), on the
//! shard that owns the partition; a request runs there (posted with [`ShardContext::call_on`]
//! from other shards), so one partition's transactions are handled by one thread without locks.
//! A call changes the state at once, then appends its records and waits until they are durable
//! (in a cluster: committed) before it answers; a failed append unloads the coordinator, and
//! the next request reloads it from the log. Markers are written after the PrepareCommit or
//! PrepareAbort is durable, by a task per transaction that retries each partition until it is
//! done (Kafka's `TransactionMarkerChannelManager`), then records CompleteCommit or
//! CompleteAbort. A load resumes the markers of every transaction left prepared. A timer per
//! coordinator aborts the transactions that outlived their timeout and expires idle ids.
//!
//! In a cluster a partition's coordinator runs only where it is led, in the term it is led in
//! (the coordinator epoch its markers carry), loaded as soon as the broker leads it and
//! unloaded as soon as it stops.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use engine::batch::TransactionMarker;
use engine::catalog::TRANSACTION_STATE_TOPIC;
use engine::shard::{Durability, PartitionId, ShardContext};
use engine::waiters::Waiters;
use engine::LogError;
use futures::future::{select, LocalBoxFuture};
use kafka_protocol::ResponseError;

use super::coordinator::{Effects, MarkerJob, TransactionConfig, TransactionCoordinator};
use super::markers::{write_markers, MarkerWrite};
use super::state::{TransactionError, TransactionPartition};
use super::topic::transaction_state_partition_for;
use crate::broker::Broker;
use crate::coordinator_log::{
    coordinator_term, encode_records, load_owned_coordinators, on_owning_shard,
    read_latest_records, NotServing, PartitionCoordinators,
};
use crate::groups::shard::OffsetsLog;

pub use super::requests::TransactionRequest;

/// How long a marker write waits before it retries the partitions that failed (Kafka's
/// `retry.backoff.ms` for the marker channel).
const MARKER_RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// How long a request answered CONCURRENT_TRANSACTIONS (its id's previous transaction is still
/// being ended: the next transaction's AddPartitionsToTxn, an InitProducerId while an abort
/// completes, a Produce's verification) is held for the markers to be written, then tried again, instead of answered at
/// once. Kafka answers at once; librdkafka then waits a fixed 20 ms before it retries, which in
/// a cluster (markers committed by Raft at each partition's leader) cost a transactional
/// producer 20 ms in most transactions and capped it near 3.5 MiB/s at 100 messages per
/// transaction. Well below clients' request timeouts (30 s).
const CONCURRENT_HOLD_MAX: Duration = Duration::from_secs(2);

/// Requests held that way at once per coordinator; beyond it they are answered at once.
const CONCURRENT_HELD_MAX: usize = 1024;

/// The transactions' settings on every shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionsConfig {
    /// Partitions of `__transaction_state` (fixed once the topic exists).
    pub state_partitions: u32,
    pub coordinator: TransactionConfig,
    /// Whether a transactional produce that would open its producer's transaction on a
    /// partition is verified with the coordinator first (KIP-890; `super::verification`).
    pub partition_verification: bool,
}

impl Default for TransactionsConfig {
    fn default() -> TransactionsConfig {
        TransactionsConfig {
            // As our `__consumer_offsets`; Kafka's is 50.
            state_partitions: 16,
            coordinator: TransactionConfig::default(),
            // Kafka's transaction.partition.verification.enable.
            partition_verification: true,
        }
    }
}

/// One partition's loaded coordinator.
struct LoadedTransactions {
    partition: PartitionId,
    /// The Raft term its broker leads the partition in (`None`: not replicated).
    term: Option<u64>,
    state: RefCell<TransactionCoordinator>,
    unloaded: Cell<bool>,
    /// Transactions completed (markers written) since loading, and those waiting for the next:
    /// requests held by CONCURRENT_TRANSACTIONS (`CONCURRENT_HOLD_MAX`); also woken when the
    /// coordinator is unloaded.
    completions: Cell<u64>,
    completion_waiters: Waiters,
    held: Cell<usize>,
}

impl LoadedTransactions {
    /// Waits, up to `until`, until a transaction completes after `seen` completions or the
    /// coordinator is unloaded.
    async fn completion_after(&self, seen: u64, until: Instant) {
        let completed = self
            .completion_waiters
            .until(|| self.completions.get() != seen || self.unloaded.get());
        let timeout = glommio::timer::sleep(until.saturating_duration_since(Instant::now()));
        select(std::pin::pin!(completed), std::pin::pin!(timeout)).await;
    }

    fn completed(&self) {
        self.completions.set(self.completions.get() + 1);
        self.completion_waiters.wake_all();
    }

    /// The epoch markers carry (Kafka's coordinator epoch: the partition's leader epoch; 0 on
    /// a broker alone).
    fn coordinator_epoch(&self) -> i32 {
        self.term
            .map_or(0, |term| i32::try_from(term).unwrap_or(i32::MAX))
    }
}

/// Counts one request held for a completion while it lives (dropped with the request too).
struct HeldRequest<'a>(&'a LoadedTransactions);

impl<'a> HeldRequest<'a> {
    fn enter(coordinator: &'a LoadedTransactions) -> HeldRequest<'a> {
        coordinator.held.set(coordinator.held.get() + 1);
        HeldRequest(coordinator)
    }
}

impl Drop for HeldRequest<'_> {
    fn drop(&mut self) {
        self.0.held.set(self.0.held.get() - 1);
    }
}

type Slot = Rc<futures::lock::Mutex<Option<Rc<LoadedTransactions>>>>;

/// One shard's transaction coordinators, by `__transaction_state` partition. Lives on (and
/// only on) the shard's thread.
pub struct ShardTransactions {
    context: ShardContext,
    config: TransactionsConfig,
    log: Rc<dyn OffsetsLog>,
    /// The shard's broker, which marker writes go through (set once it exists).
    broker: RefCell<Weak<Broker>>,
    slots: RefCell<HashMap<u32, Slot>>,
}

thread_local! {
    static THIS_SHARD: RefCell<Option<Weak<ShardTransactions>>> = const { RefCell::new(None) };
}

impl ShardTransactions {
    /// Starts the shard's transaction coordinators (call it once per shard, before the shard
    /// takes requests); `log` is where their records go, as for the groups. Once the shard
    /// has opened its partitions, the coordinators of its `__transaction_state` partitions are
    /// loaded (in a cluster: followed as their leadership moves), which resumes their markers.
    ///
    /// # Panics
    ///
    /// If the shard's transactions were started already.
    pub fn start(
        context: &ShardContext,
        config: TransactionsConfig,
        log: Rc<dyn OffsetsLog>,
    ) -> Rc<ShardTransactions> {
        assert!(config.state_partitions > 0);
        let transactions = Rc::new(ShardTransactions {
            context: context.clone(),
            config,
            log,
            broker: RefCell::new(Weak::new()),
            slots: RefCell::default(),
        });
        THIS_SHARD.with(|this| {
            let mut this = this.borrow_mut();
            assert!(this.is_none(), "a shard's transactions start once");
            *this = Some(Rc::downgrade(&transactions));
        });
        let loading = transactions.clone();
        glommio::spawn_local(async move {
            let context = loading.context.clone();
            context.owned_partitions_opened().await;
            let partitions = loading.config.state_partitions;
            load_owned_coordinators(loading, &context, TRANSACTION_STATE_TOPIC, partitions).await;
        })
        .detach();
        transactions
    }

    /// This shard's transactions, once started.
    pub fn local() -> Option<Rc<ShardTransactions>> {
        THIS_SHARD.with(|this| this.borrow().as_ref().and_then(Weak::upgrade))
    }

    /// The shard's broker, through which markers are written.
    pub fn attach_broker(&self, broker: &Rc<Broker>) {
        *self.broker.borrow_mut() = Rc::downgrade(broker);
    }

    pub fn config(&self) -> &TransactionsConfig {
        &self.config
    }

    /// The `__transaction_state` partition of `transactional_id`.
    pub fn state_partition(&self, transactional_id: &str) -> u32 {
        transaction_state_partition_for(transactional_id, self.config.state_partitions)
    }

    /// Runs `request` against the coordinator of `__transaction_state` partition
    /// `state_partition`, on whichever shard owns it.
    pub async fn call<Request: TransactionRequest>(
        self: &Rc<Self>,
        state_partition: u32,
        request: Request,
    ) -> Request::Answer {
        let partition = PartitionId::new(TRANSACTION_STATE_TOPIC, state_partition);
        let closed = request.refused(TransactionError::CoordinatorNotAvailable);
        let owned = partition.clone();
        on_owning_shard(&self.context, &owned, closed, move || {
            Box::pin(async move {
                match ShardTransactions::local() {
                    Some(transactions) => transactions.run(&partition, request).await,
                    // Only while the owner starts: the client retries.
                    None => request.refused(TransactionError::CoordinatorLoadInProgress),
                }
            })
        })
        .await
    }

    async fn run<Request: TransactionRequest>(
        self: &Rc<Self>,
        partition: &PartitionId,
        request: Request,
    ) -> Request::Answer {
        let coordinator = match self.coordinator(partition).await {
            Ok(coordinator) => coordinator,
            Err(error) => return request.refused(error),
        };
        let not_available = request.refused(TransactionError::CoordinatorNotAvailable);
        let not_coordinator = request.refused(TransactionError::NotCoordinator);
        let hold_until = Instant::now() + CONCURRENT_HOLD_MAX;
        let (answer, effects) = loop {
            let completions = coordinator.completions.get();
            let (answer, effects) = {
                let mut state = coordinator.state.borrow_mut();
                request.apply(&mut state, self.context.now_ms())
            };
            let hold = Request::is_concurrent(&answer)
                && effects == Effects::default()
                && Instant::now() < hold_until
                && coordinator.held.get() < CONCURRENT_HELD_MAX
                && !coordinator.unloaded.get();
            if !hold {
                break (answer, effects);
            }
            let _held = HeldRequest::enter(&coordinator);
            coordinator.completion_after(completions, hold_until).await;
        };
        match self.settle(&coordinator, effects).await {
            Ok(()) => answer,
            Err(TransactionError::NotCoordinator) => not_coordinator,
            Err(_) => not_available,
        }
    }

    /// Makes `effects`' records durable, then starts their markers. Refused (and the
    /// coordinator unloaded) when the append failed.
    async fn settle(
        self: &Rc<Self>,
        coordinator: &Rc<LoadedTransactions>,
        effects: Effects,
    ) -> Result<(), TransactionError> {
        if !effects.records.is_empty() {
            let batch = encode_records(
                effects
                    .records
                    .iter()
                    .map(|record| (&record.key[..], record.value.as_deref())),
                engine::batch::ProducerFields::NONE,
                self.context.now_ms(),
            );
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
                    LogError::NotLeader { .. } => TransactionError::NotCoordinator,
                    error => {
                        engine::log_rate_limited!(
                            "ferrite: cannot persist transaction state to {}, unloading its \
                             coordinator: {error}",
                            coordinator.partition.directory_name()
                        );
                        TransactionError::CoordinatorNotAvailable
                    }
                };
                self.unload_coordinator(coordinator);
                return Err(reason);
            }
        }
        for job in effects.markers {
            glommio::spawn_local(self.clone().write_job_markers(coordinator.clone(), job)).detach();
        }
        Ok(())
    }

    /// Writes `job`'s marker to each of its partitions, retrying those that fail until each is
    /// written or its topic is gone, then records the transaction's completion. Gives up when
    /// the coordinator is unloaded (the next one resumes the markers) or a partition says a
    /// newer producer or coordinator exists.
    async fn write_job_markers(
        self: Rc<Self>,
        coordinator: Rc<LoadedTransactions>,
        job: MarkerJob,
    ) {
        let marker = TransactionMarker {
            producer_id: job.producer_id,
            producer_epoch: job.producer_epoch,
            coordinator_epoch: coordinator.coordinator_epoch(),
            committed: job.committed,
        };
        let mut remaining: Vec<TransactionPartition> = job.partitions.clone();
        while !remaining.is_empty() {
            if coordinator.unloaded.get() || self.context.is_shutting_down() {
                return;
            }
            let broker = self.broker.borrow().upgrade();
            if let Some(broker) = broker {
                let _in_flight = self.context.work_in_flight();
                let write = MarkerWrite {
                    marker,
                    partitions: remaining.clone(),
                };
                let mut retry = Vec::new();
                for (partition, result) in write_markers(&broker, write).await {
                    let Err(error) = result else {
                        continue;
                    };
                    let code = error.code;
                    if code == ResponseError::InvalidProducerEpoch.code()
                        || code == ResponseError::TransactionCoordinatorFenced.code()
                    {
                        engine::log_rate_limited!(
                            "ferrite: the markers of transactional id {} stop: {} refused them \
                             ({})",
                            job.transactional_id,
                            partition.0,
                            error.message
                        );
                        return;
                    }
                    if code == ResponseError::UnknownTopicOrPartition.code()
                        && !partition_exists(&broker, &partition)
                    {
                        // Deleted since it joined the transaction: nothing to end there.
                        continue;
                    }
                    retry.push(partition);
                }
                remaining = retry;
                if remaining.is_empty() {
                    break;
                }
            }
            let pause = std::pin::pin!(glommio::timer::sleep(MARKER_RETRY_BACKOFF));
            let shutdown = std::pin::pin!(self.context.shutdown_requested());
            select(pause, shutdown).await;
        }
        if coordinator.unloaded.get() {
            return;
        }
        // Counted, so that a shutdown's drain waits for this one append instead of closing the
        // log under it (the next coordinator would write the markers again).
        let _in_flight = self.context.work_in_flight();
        let effects = coordinator
            .state
            .borrow_mut()
            .complete_markers(&job, self.context.now_ms());
        // A failure unloads the coordinator; its reload writes the markers again.
        if self.settle(&coordinator, effects).await.is_ok() {
            coordinator.completed();
        }
    }

    /// The coordinator of `partition` (which this shard owns), loaded on first use and, in a
    /// cluster, again in each term this broker leads it.
    async fn coordinator(
        self: &Rc<Self>,
        partition: &PartitionId,
    ) -> Result<Rc<LoadedTransactions>, TransactionError> {
        let term = coordinator_term(&self.context, partition).map_err(refusal)?;
        let slot = self
            .slots
            .borrow_mut()
            .entry(partition.partition)
            .or_default()
            .clone();
        let mut loaded = slot.lock().await;
        if let Some(coordinator) = loaded.clone() {
            if coordinator.term == term && !coordinator.unloaded.get() {
                return Ok(coordinator);
            }
            coordinator.unloaded.set(true);
            coordinator.completion_waiters.wake_all();
            *loaded = None;
        }
        let records = match read_latest_records(&self.context, partition).await {
            Ok(records) => records,
            Err(error) => {
                engine::log_rate_limited!(
                    "ferrite: cannot load the transaction coordinator of {}: {error}",
                    partition.directory_name()
                );
                return Err(TransactionError::CoordinatorNotAvailable);
            }
        };
        let records: Vec<super::coordinator::TransactionRecord> = records
            .into_iter()
            .map(|record| super::coordinator::TransactionRecord {
                key: record.key,
                value: record.value,
            })
            .collect();
        let replayed = TransactionCoordinator::replay(
            self.config.coordinator.clone(),
            &records,
            self.context.now_ms(),
        );
        let (state, markers) = match replayed {
            Ok(replayed) => replayed,
            Err(error) => {
                engine::log_rate_limited!(
                    "ferrite: cannot load the transaction coordinator of {}: {error}",
                    partition.directory_name()
                );
                return Err(TransactionError::CoordinatorNotAvailable);
            }
        };
        if coordinator_term(&self.context, partition).map_err(refusal)? != term {
            return Err(TransactionError::NotCoordinator);
        }
        let coordinator = Rc::new(LoadedTransactions {
            partition: partition.clone(),
            term,
            state: RefCell::new(state),
            unloaded: Cell::new(false),
            completions: Cell::new(0),
            completion_waiters: Waiters::default(),
            held: Cell::new(0),
        });
        *loaded = Some(coordinator.clone());
        glommio::spawn_local(self.clone().tick_until_unloaded(coordinator.clone())).detach();
        for job in markers {
            glommio::spawn_local(self.clone().write_job_markers(coordinator.clone(), job)).detach();
        }
        Ok(coordinator)
    }

    /// Ticks `coordinator` at its deadlines until it is unloaded or the shard shuts down.
    async fn tick_until_unloaded(self: Rc<Self>, coordinator: Rc<LoadedTransactions>) {
        let context = &self.context;
        while !coordinator.unloaded.get() && !context.is_shutting_down() {
            let deadline_ms = coordinator.state.borrow().next_deadline_ms();
            let wait_ms = deadline_ms.saturating_sub(context.now_ms()).max(0) as u64;
            let pause = std::pin::pin!(glommio::timer::sleep(Duration::from_millis(wait_ms)));
            let shutdown = std::pin::pin!(context.shutdown_requested());
            select(pause, shutdown).await;
            if coordinator.unloaded.get() || context.is_shutting_down() {
                return;
            }
            let effects = coordinator.state.borrow_mut().tick(context.now_ms());
            let _ = self.settle(&coordinator, effects).await;
        }
    }

    fn unload_coordinator(&self, coordinator: &Rc<LoadedTransactions>) {
        if coordinator.unloaded.replace(true) {
            return;
        }
        coordinator.completion_waiters.wake_all();
        let partition = coordinator.partition.partition;
        let Some(slot) = self.slots.borrow().get(&partition).cloned() else {
            return;
        };
        // Being loaded again right now: that load replaces it.
        let holds_it = slot.try_lock().is_some_and(|loaded| {
            loaded
                .as_ref()
                .is_some_and(|loaded| Rc::ptr_eq(loaded, coordinator))
        });
        if holds_it {
            self.slots.borrow_mut().remove(&partition);
        }
    }

    fn loaded(&self, partition: &PartitionId) -> Option<Rc<LoadedTransactions>> {
        let slot = self.slots.borrow().get(&partition.partition).cloned()?;
        let loaded = slot.try_lock()?;
        loaded.clone()
    }
}

impl PartitionCoordinators for ShardTransactions {
    fn loaded_term(&self, partition: &PartitionId) -> Option<Option<u64>> {
        self.loaded(partition).map(|loaded| loaded.term)
    }

    fn unload(&self, partition: &PartitionId) {
        if let Some(loaded) = self.loaded(partition) {
            self.unload_coordinator(&loaded);
        }
    }

    fn load(self: Rc<Self>, partition: PartitionId) -> LocalBoxFuture<'static, ()> {
        // A failed load is reported by `coordinator`.
        Box::pin(async move { drop(self.coordinator(&partition).await) })
    }
}

fn refusal(not_serving: NotServing) -> TransactionError {
    match not_serving {
        NotServing::NotCoordinator => TransactionError::NotCoordinator,
        NotServing::LoadInProgress => TransactionError::CoordinatorLoadInProgress,
    }
}

fn partition_exists(broker: &Broker, (topic, partition): &TransactionPartition) -> bool {
    broker
        .catalog
        .topics()
        .get(topic)
        .is_some_and(|topic| u32::try_from(*partition).is_ok_and(|p| p < topic.partitions))
}
