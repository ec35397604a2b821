//! One `__consumer_offsets` partition's coordinator as its shard holds it: the state machine,
//! the requests waiting on it, and how it is rebuilt from the partition's log and written back
//! to it.
//!
//! A load feeds the partition's records and transaction markers ([`read_entries`]) to a
//! [`LogReplay`] (the latest record of every key, and what a transaction's records become); a
//! call's records are appended as one uncompressed batch (transactional, with the producer's
//! id and epoch, for a transaction's), a transaction's marker as its control batch.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use bytes::BytesMut;
use engine::shard::{PartitionId, ShardContext};
use engine::waiters::Waiters;
use futures::channel::oneshot;

use engine::batch::{self, ProducerFields};

pub(super) use crate::coordinator_log::LoadError;
use crate::coordinator_log::{read_entries, LogEntry};
use crate::groups::{
    Completion, Effects, GroupConfig, GroupCoordinator, GroupError, GroupRecord, JoinResponse,
    LogReplay, SyncResponse, Ticket, TransactionProducer,
};

/// One partition's coordinator and the requests waiting on it.
pub struct LoadedCoordinator {
    pub(super) partition: PartitionId,
    /// The Raft term its broker leads the partition in (`None`: not replicated).
    pub(super) term: Option<u64>,
    pub(super) state: RefCell<GroupCoordinator>,
    /// Where each pending JoinGroup gets its answer.
    joins: RefCell<HashMap<Ticket, oneshot::Sender<JoinResponse>>>,
    /// Where each pending SyncGroup gets its answer.
    syncs: RefCell<HashMap<Ticket, oneshot::Sender<SyncResponse>>>,
    /// Bumped by every call, so the timer task re-reads the next deadline.
    pub(super) changes: Cell<u64>,
    pub(super) changed: Waiters,
    /// Why it was unloaded (an append failed, its broker stopped leading); its slot no
    /// longer holds it.
    pub(super) unloaded: Cell<Option<GroupError>>,
}

impl LoadedCoordinator {
    /// Rebuilds the coordinator of `partition` (owned by `context`'s shard) from its log: the
    /// latest record of each key, in the order they were written.
    pub(super) async fn load(
        context: &ShardContext,
        partition: &PartitionId,
        term: Option<u64>,
        config: &GroupConfig,
    ) -> Result<LoadedCoordinator, LoadError> {
        let mut replay = LogReplay::default();
        read_entries(context, partition, |entry| match entry {
            LogEntry::Marker(marker) => replay.marker(&marker),
            LogEntry::Record {
                record,
                transaction,
            } => {
                let record = GroupRecord {
                    key: record.key,
                    value: record.value,
                };
                match transaction {
                    Some((producer_id, producer_epoch)) => {
                        let producer = TransactionProducer {
                            producer_id,
                            producer_epoch,
                        };
                        replay.transactional(producer, record);
                    }
                    None => replay.plain(record),
                }
            }
        })
        .await?;
        let now_ms = context.now_ms();
        let seed = member_id_seed(partition.partition, now_ms);
        let state = replay
            .replay(config.clone(), seed, now_ms)
            .map_err(|error| LoadError::Replay(error.to_string()))?;
        Ok(LoadedCoordinator {
            partition: partition.clone(),
            term,
            state: RefCell::new(state),
            joins: RefCell::new(HashMap::new()),
            syncs: RefCell::new(HashMap::new()),
            changes: Cell::new(0),
            changed: Waiters::default(),
            unloaded: Cell::new(None),
        })
    }

    /// Marks it unloaded for `reason` and drops its waiting requests; `false` if it already
    /// was.
    pub(super) fn retire(&self, reason: GroupError) -> bool {
        if self.unloaded.get().is_some() {
            return false;
        }
        self.unloaded.set(Some(reason));
        self.joins.borrow_mut().clear();
        self.syncs.borrow_mut().clear();
        self.changed.wake_all();
        true
    }

    /// A call changed the state: the timer task re-reads the next deadline.
    pub(super) fn note_change(&self) {
        self.changes.set(self.changes.get() + 1);
        self.changed.wake_all();
    }

    /// Where the JoinGroup that `ticket` names hears its answer.
    pub(super) fn wait_for_join(&self, ticket: Ticket) -> oneshot::Receiver<JoinResponse> {
        wait_for(&self.joins, ticket)
    }

    /// Where the SyncGroup that `ticket` names hears its answer.
    pub(super) fn wait_for_sync(&self, ticket: Ticket) -> oneshot::Receiver<SyncResponse> {
        wait_for(&self.syncs, ticket)
    }

    /// Answers the waiting requests that `completions` complete.
    pub(super) fn complete(&self, completions: Vec<Completion>) {
        for completion in completions {
            // The requester may have gone (its connection closed): nothing to answer.
            match completion {
                Completion::Join(ticket, response) => {
                    if let Some(reply) = self.joins.borrow_mut().remove(&ticket) {
                        let _ = reply.send(response);
                    }
                }
                Completion::Sync(ticket, response) => {
                    if let Some(reply) = self.syncs.borrow_mut().remove(&ticket) {
                        let _ = reply.send(response);
                    }
                }
            }
        }
    }
}

fn wait_for<Answer>(
    waiting: &RefCell<HashMap<Ticket, oneshot::Sender<Answer>>>,
    ticket: Ticket,
) -> oneshot::Receiver<Answer> {
    let (reply, receiver) = oneshot::channel();
    let previous = waiting.borrow_mut().insert(ticket, reply);
    assert!(previous.is_none(), "tickets are unique");
    receiver
}

/// The batch that makes `effects` durable, stamped `now_ms`: its transaction's marker, or its
/// records as one uncompressed batch (a transactional one for a transaction's offsets, with the
/// producer's id and epoch); `None` if there is nothing to write.
pub(super) fn encode_effects(effects: &Effects, now_ms: i64) -> Option<BytesMut> {
    if let Some(marker) = &effects.marker {
        assert!(effects.records.is_empty(), "a marker is appended alone");
        return Some(BytesMut::from(
            &batch::encode_transaction_marker(marker, now_ms)[..],
        ));
    }
    if effects.records.is_empty() {
        return None;
    }
    let producer = match effects.transaction {
        // No sequence (Kafka writes 0 and its log skips the check for a coordinator's
        // append): the coordinator's batches are not a producer's to deduplicate.
        Some(producer) => ProducerFields {
            producer_id: producer.producer_id,
            producer_epoch: producer.producer_epoch,
            base_sequence: -1,
            attributes: 0,
        }
        .with_transaction_bits(false),
        None => ProducerFields::NONE,
    };
    let records = effects
        .records
        .iter()
        .map(|record| (&record.key[..], record.value.as_deref()));
    Some(crate::coordinator_log::encode_records(
        records, producer, now_ms,
    ))
}

/// Member ids must not repeat across restarts: seed their generator from the clock and the
/// partition.
fn member_id_seed(partition: u32, now_ms: i64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    (now_ms as u64).rotate_left(20) ^ u64::from(nanos) ^ (u64::from(partition) << 48)
}
