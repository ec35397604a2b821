//! One `__consumer_offsets` partition's coordinator as its shard holds it: the state machine,
//! the requests waiting on it, and how it is rebuilt from the partition's log and written back
//! to it.
//!
//! A load replays the latest record of every key, in offset order
//! ([`read_latest_records`]); a call's records are appended as one uncompressed batch.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use bytes::BytesMut;
use engine::shard::{PartitionId, ShardContext};
use engine::waiters::Waiters;
use futures::channel::oneshot;

use crate::coordinator_log::read_latest_records;
pub(super) use crate::coordinator_log::LoadError;
use crate::groups::{
    Completion, GroupConfig, GroupCoordinator, GroupError, GroupRecord, JoinResponse, SyncResponse,
    Ticket,
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
        let records: Vec<GroupRecord> = read_latest_records(context, partition)
            .await?
            .into_iter()
            .map(|record| GroupRecord {
                key: record.key,
                value: record.value,
            })
            .collect();
        let now_ms = context.now_ms();
        let seed = member_id_seed(partition.partition, now_ms);
        let state = GroupCoordinator::replay(config.clone(), seed, records.iter(), now_ms)
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

/// One uncompressed batch of `records`, stamped `now_ms`.
pub(super) fn encode_records(records: &[GroupRecord], now_ms: i64) -> BytesMut {
    let records = records
        .iter()
        .map(|record| (&record.key[..], record.value.as_deref()));
    crate::coordinator_log::encode_records(records, now_ms)
}

/// Member ids must not repeat across restarts: seed their generator from the clock and the
/// partition.
fn member_id_seed(partition: u32, now_ms: i64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    (now_ms as u64).rotate_left(20) ^ u64::from(nanos) ^ (u64::from(partition) << 48)
}
