//! Offsets committed inside a transaction (TxnOffsetCommit, KIP-98): a consume-transform-produce
//! loop commits its input's offsets in the same transaction as its output, so they must become
//! visible exactly when the output does. Until the transaction's marker reaches the group's
//! `__consumer_offsets` partition they are pending, per producer id (one open transaction per
//! producer), and OffsetFetch does not return them; the COMMIT marker makes them the group's
//! committed offsets, the ABORT marker drops them. As Kafka's `OffsetMetadataManager`
//! (`pendingTransactionalOffsets`, `replayEndTransactionMarker`).
//!
//! Their records are Kafka's offset records in a transactional batch carrying the producer's
//! id and epoch ([`Effects::transaction`]); the marker is the transaction's control batch
//! ([`Effects::marker`]), appended by the coordinator itself so that it lands in the
//! partition's order with the coordinator's own records. A load from the log replays the same
//! rules ([`LogReplay`](super::LogReplay)): a transaction's offsets wait for its marker, an
//! aborted one's are dropped, and the offsets of a transaction still open at the log's end
//! come back pending.
//!
//! Kafka keeps the most recent commit of a partition whatever the order of the outcomes (its
//! record's place in the log decides): a plain commit or a deletion that comes after a
//! transaction's offset supersedes it, and so does a later transaction's offset once that one
//! commits (the earlier transaction's commit then leaves the partition alone); a load tells the
//! same by the records' order in the log.
//!
//! Cost: a plain commit or deletion looks at every open transaction (O(open transactions));
//! their number is bounded by the transactional producers using the partition's groups.

use std::collections::BTreeMap;

use engine::batch::TransactionMarker;

use super::group::{ClassicGroup, CommittedOffset, TopicPartition};
use super::offsets::{store_commits, OffsetCommitPartition, PartitionResults};
use super::record::{decode_transactional_offset, RecordError};
use super::{Effects, GroupCoordinator, GroupError, GroupRecord};

/// A TxnOffsetCommit request.
#[derive(Debug, Clone)]
pub struct TxnOffsetCommit {
    pub group_id: String,
    pub producer: TransactionProducer,
    /// -1 (versions 0 to 2, or a producer outside group management): the member is not
    /// checked.
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub partitions: Vec<OffsetCommitPartition>,
}

/// The producer whose transaction some records belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransactionProducer {
    pub producer_id: i64,
    pub producer_epoch: i16,
}

/// One producer's open transaction, as the coordinator of one partition sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OpenTransaction {
    producer_epoch: i16,
    /// By group and partition: the offset the transaction commits, or `None` where a later
    /// commit superseded it.
    offsets: BTreeMap<String, BTreeMap<TopicPartition, Option<PendingOffset>>>,
}

/// An offset a transaction commits, with its record's place among the transactions' offset
/// records (their order in the log).
#[derive(Debug, Clone, PartialEq, Eq)]
struct PendingOffset {
    place: u64,
    committed: CommittedOffset,
}

/// The open transactions of a coordinator's groups, by producer id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct OpenTransactions {
    by_producer: BTreeMap<i64, OpenTransaction>,
    /// The place of the latest transaction's offset record (see [`PendingOffset`]).
    place_last: u64,
}

impl OpenTransactions {
    /// Notes `committed` as `producer`'s offset of `partition` in `group_id` (`None`: one
    /// superseded already, at a load).
    fn add(
        &mut self,
        producer: TransactionProducer,
        group_id: &str,
        partition: TopicPartition,
        committed: Option<CommittedOffset>,
    ) {
        let transaction = self
            .by_producer
            .entry(producer.producer_id)
            .or_insert_with(|| OpenTransaction {
                producer_epoch: producer.producer_epoch,
                offsets: BTreeMap::new(),
            });
        transaction.producer_epoch = transaction.producer_epoch.max(producer.producer_epoch);
        self.place_last += 1;
        let place = self.place_last;
        transaction
            .offsets
            .entry(group_id.to_owned())
            .or_default()
            .insert(
                partition,
                committed.map(|committed| PendingOffset { place, committed }),
            );
    }

    /// A plain commit or a deletion of `partition` in `group_id` came after every open
    /// transaction's offset of it: none of them will replace it.
    pub(super) fn supersede(&mut self, group_id: &str, partition: &TopicPartition) {
        self.supersede_before(group_id, partition, u64::MAX);
    }

    /// A transaction's offset of `partition` in `group_id`, placed at `place`, is committed:
    /// the open transactions' offsets of it placed before it will not replace it.
    fn supersede_before(&mut self, group_id: &str, partition: &TopicPartition, place: u64) {
        for transaction in self.by_producer.values_mut() {
            if let Some(pending) = transaction
                .offsets
                .get_mut(group_id)
                .and_then(|offsets| offsets.get_mut(partition))
            {
                if pending
                    .as_ref()
                    .is_some_and(|pending| pending.place < place)
                {
                    *pending = None;
                }
            }
        }
    }

    /// The partitions of `group_id` some open transaction commits an offset of.
    pub(super) fn partitions_of(&self, group_id: &str) -> Vec<TopicPartition> {
        let mut partitions: Vec<TopicPartition> = self
            .by_producer
            .values()
            .filter_map(|transaction| transaction.offsets.get(group_id))
            .flat_map(|offsets| offsets.keys().cloned())
            .collect();
        partitions.sort_unstable();
        partitions.dedup();
        partitions
    }

    /// Whether an open transaction commits an offset of `partition` in `group_id`.
    pub(super) fn is_pending(&self, group_id: &str, partition: &TopicPartition) -> bool {
        self.by_producer.values().any(|transaction| {
            transaction
                .offsets
                .get(group_id)
                .is_some_and(|offsets| offsets.contains_key(partition))
        })
    }

    /// The groups some open transaction commits an offset in (one not superseded).
    pub(super) fn committing_groups(&self) -> impl Iterator<Item = &str> {
        self.by_producer
            .values()
            .flat_map(|transaction| &transaction.offsets)
            .filter(|(_, offsets)| offsets.values().any(Option::is_some))
            .map(|(group_id, _)| group_id.as_str())
    }

    /// Whether an open transaction commits offsets in `group_id` (its offsets do not expire
    /// and it is not removed meanwhile, as in Kafka).
    pub(super) fn involves(&self, group_id: &str) -> bool {
        self.by_producer
            .values()
            .any(|transaction| transaction.offsets.contains_key(group_id))
    }
}

impl GroupCoordinator {
    /// TxnOffsetCommit: the member checked as OffsetCommit checks it, with Kafka's
    /// allowances for transactions (no member before version 3, no check of a rebalance in
    /// progress), then the offsets kept pending in the producer's transaction and returned
    /// as records of its transactional batch. A group that does not exist is created (empty)
    /// by a commit without generation, as a simple commit creates it.
    pub fn commit_transactional_offsets(
        &mut self,
        request: &TxnOffsetCommit,
        now_ms: i64,
    ) -> (PartitionResults, Effects) {
        let mut effects = Effects::default();
        let results = self.commit_transactional(request, now_ms, &mut effects);
        if !effects.records.is_empty() {
            effects.transaction = Some(request.producer);
        }
        (results, effects)
    }

    fn commit_transactional(
        &mut self,
        request: &TxnOffsetCommit,
        now_ms: i64,
        effects: &mut Effects,
    ) -> PartitionResults {
        if request.group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        let producer = request.producer;
        if let Some(open) = self
            .open_transactions
            .by_producer
            .get(&producer.producer_id)
        {
            if producer.producer_epoch < open.producer_epoch {
                return Err(GroupError::InvalidProducerEpoch);
            }
        }
        self.check_committing_member(
            &request.group_id,
            request.generation_id,
            &request.member_id,
            request.group_instance_id.as_deref(),
            None,
            now_ms,
        )?;
        let mut pending = BTreeMap::new();
        let results = store_commits(
            &self.config,
            &request.group_id,
            &mut pending,
            &request.partitions,
            now_ms,
            effects,
        );
        for (partition, committed) in pending {
            self.open_transactions
                .add(producer, &request.group_id, partition, Some(committed));
        }
        Ok(results)
    }

    /// The transaction of `marker`'s producer ends in the groups of this partition: its
    /// offsets become the groups' committed offsets (COMMIT), or are dropped (ABORT). The
    /// effects hold the marker, which the driver appends to the partition: in the log it is
    /// what commits or drops the transaction's records. A marker of an epoch older than the
    /// producer's transaction here is refused (INVALID_PRODUCER_EPOCH), as the log refuses it.
    pub fn complete_transaction(
        &mut self,
        marker: TransactionMarker,
    ) -> Result<Effects, GroupError> {
        if let Some(open) = self.open_transactions.by_producer.get(&marker.producer_id) {
            if marker.producer_epoch < open.producer_epoch {
                return Err(GroupError::InvalidProducerEpoch);
            }
        }
        let ended = self
            .open_transactions
            .by_producer
            .remove(&marker.producer_id);
        if let Some(ended) = ended.filter(|_| marker.committed) {
            for (group_id, offsets) in ended.offsets {
                let offsets: Vec<(TopicPartition, PendingOffset)> = offsets
                    .into_iter()
                    .filter_map(|(partition, pending)| Some((partition, pending?)))
                    .collect();
                for (partition, pending) in &offsets {
                    self.open_transactions
                        .supersede_before(&group_id, partition, pending.place);
                }
                self.materialize(&group_id, offsets);
            }
        }
        Ok(Effects {
            marker: Some(marker),
            ..Effects::default()
        })
    }

    /// Makes a committed transaction's offsets of `group_id` (those not superseded) its
    /// committed offsets, creating the group (empty) if it went meanwhile.
    fn materialize(&mut self, group_id: &str, offsets: Vec<(TopicPartition, PendingOffset)>) {
        if offsets.is_empty() {
            return;
        }
        let group_offsets = match self.consumer_groups.get_mut(group_id) {
            Some(group) => &mut group.offsets,
            None => {
                &mut self
                    .groups
                    .entry(group_id.to_owned())
                    .or_insert_with(|| ClassicGroup::new(group_id.to_owned()))
                    .offsets
            }
        };
        group_offsets.extend(
            offsets
                .into_iter()
                .map(|(partition, pending)| (partition, pending.committed)),
        );
    }

    /// Whether an open transaction commits an offset of `partition` in `group_id` (OffsetFetch
    /// with `require_stable` answers UNSTABLE_OFFSET_COMMIT for it).
    pub fn is_offset_pending(&self, group_id: &str, partition: &TopicPartition) -> bool {
        self.open_transactions.is_pending(group_id, partition)
    }

    /// At a load: `record` (an offset record of `producer`'s transaction, still open at the
    /// log's end) back in its transaction; `superseded` when a later plain commit or deletion
    /// of the partition is in the log. Its group is created (empty) if the log has no other
    /// trace of it, as replaying a plain commit does.
    pub fn restore_transactional_offset(
        &mut self,
        producer: TransactionProducer,
        record: &GroupRecord,
        superseded: bool,
    ) -> Result<(), RecordError> {
        let (group_id, partition, committed) = decode_transactional_offset(record)?;
        if !superseded && !self.consumer_groups.contains_key(&group_id) {
            self.groups
                .entry(group_id.clone())
                .or_insert_with(|| ClassicGroup::new(group_id.clone()));
        }
        self.open_transactions.add(
            producer,
            &group_id,
            partition,
            Some(committed).filter(|_| !superseded),
        );
        Ok(())
    }
}
