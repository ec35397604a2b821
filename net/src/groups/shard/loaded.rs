//! One `__consumer_offsets` partition's coordinator as its shard holds it: the state machine,
//! the requests waiting on it, and how it is rebuilt from the partition's log and written back
//! to it.
//!
//! A load reads the compacted log as any other, skips control batches (Raft's own entries in a
//! cluster) other than transaction markers, and feeds the records and markers to a
//! [`LogReplay`] (which says what a transaction's records become). A call's records are appended as one uncompressed batch (transactional, with
//! the producer's id and epoch, for a transaction's), a transaction's marker as its control
//! batch.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use engine::batch::{self, BatchHeader, PlainRecord, ProducerFields};
use engine::shard::{PartitionId, ShardContext};
use engine::waiters::Waiters;
use engine::LogError;
use futures::channel::oneshot;

use crate::groups::{
    Completion, Effects, GroupConfig, GroupCoordinator, GroupError, GroupRecord, JoinResponse,
    LogReplay, SyncResponse, Ticket, TransactionProducer,
};

/// Longest a batch of group records read at load may be.
const LOAD_READ_BYTES: usize = 1 << 20;

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

/// Why a coordinator could not be loaded.
#[derive(Debug, thiserror::Error)]
pub(super) enum LoadError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("its log holds {0}")]
    Malformed(&'static str),
    #[error("its records do not replay: {0}")]
    Replay(String),
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
        let log = context.partition_log(partition).await?;
        let end = log.high_watermark();
        let mut offset = log.log_start_offset();
        let mut replay = LogReplay::default();
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
                    let marker = batch::read_transaction_marker(batch_bytes)
                        .map_err(|_| LoadError::Malformed("a malformed transaction marker"))?;
                    // Otherwise Raft's own entries (leader changes, voter sets) in a cluster.
                    if let Some(marker) = marker {
                        replay.marker(&marker);
                    }
                    continue;
                }
                for record in batch::plain_records(batch_bytes)
                    .map_err(|_| LoadError::Malformed("a batch it did not write"))?
                {
                    let record = record.map_err(|_| LoadError::Malformed("a malformed record"))?;
                    let Some(key) = record.key else {
                        return Err(LoadError::Malformed("a record without a key"));
                    };
                    let record = GroupRecord {
                        key: Bytes::copy_from_slice(key),
                        value: record.value.map(Bytes::copy_from_slice),
                    };
                    if header.is_transactional() {
                        let producer = TransactionProducer {
                            producer_id: header.producer_id,
                            producer_epoch: header.producer_epoch,
                        };
                        replay.transactional(producer, record);
                    } else {
                        replay.plain(record);
                    }
                }
            }
            if slice.offset_next <= offset {
                return Err(LoadError::Malformed("a read that did not advance"));
            }
            offset = slice.offset_next;
        }
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

/// The batch that makes `effects` durable, stamped `now_ms`: its transaction's marker, or
/// its records as one uncompressed batch (a transactional one for a transaction's offsets,
/// with the producer's id and epoch); `None` if there is nothing to write.
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
    let plain: Vec<PlainRecord<'_>> = effects
        .records
        .iter()
        .map(|record| PlainRecord {
            offset: 0,
            timestamp_ms: now_ms,
            key: Some(&record.key),
            value: record.value.as_deref(),
        })
        .collect();
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
    Some(BytesMut::from(&batch::encode_plain(&plain, producer)[..]))
}

/// Member ids must not repeat across restarts: seed their generator from the clock and the
/// partition.
fn member_id_seed(partition: u32, now_ms: i64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    (now_ms as u64).rotate_left(20) ^ u64::from(nanos) ^ (u64::from(partition) << 48)
}
