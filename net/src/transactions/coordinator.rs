//! The transaction coordinator of one `__transaction_state` partition, as a pure, deterministic
//! state machine (Kafka's `TransactionCoordinator`, `TransactionMetadata` and
//! `TransactionStateManager`, for clients of transaction versions 0 and 1: EndTxn up to v4).
//! No I/O, no clock: the driver (`shard`) calls one method per request with the current time
//! and a fresh producer id where one may be needed, and gets back the answer plus [`Effects`]:
//! records to append to the partition (durable before the answer is sent) and markers to
//! write, after which it reports [`TransactionCoordinator::complete_markers`].
//!
//! A call changes the state at once: there is no "pending transition" as in Kafka, because a
//! failed append unloads the coordinator, which the next request rebuilds from the log
//! ([`TransactionCoordinator::replay`]). A transaction between its PrepareCommit/PrepareAbort
//! and its markers being written is what Kafka's pending state guards: every call on it answers
//! CONCURRENT_TRANSACTIONS until it completes.
//!
//! # Invariants (checked by [`TransactionCoordinator::check_invariants`])
//! No id is Dead or PrepareEpochFence between calls (expiry removes the id, a fence goes
//! straight to PrepareAbort); an Empty or Complete transaction has no partitions; an Ongoing or
//! Prepare one has some and a start time.

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;

use super::record::{decode_key, decode_value, encode_key, encode_value, TransactionRecordError};
use super::state::{
    TransactionError, TransactionMetadata, TransactionPartition, TransactionState,
    NO_PRODUCER_EPOCH,
};

/// The longest transactional id (its record's string has an int16 length).
pub const TRANSACTIONAL_ID_BYTES_MAX: usize = i16::MAX as usize;

/// The coordinator's settings (Kafka's names in brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionConfig {
    /// The longest `transaction.timeout.ms` a producer may ask for
    /// (`transaction.max.timeout.ms`, 15 minutes).
    pub timeout_max_ms: i32,
    /// How long an id without an open transaction is kept after its last use
    /// (`transactional.id.expiration.ms`, 7 days).
    pub id_expiration_ms: i64,
    /// How often open transactions are checked for their timeout and ids for expiry
    /// (`transaction.abort.timed.out.transaction.cleanup.interval.ms`, 10 s).
    pub check_interval_ms: i64,
}

impl Default for TransactionConfig {
    fn default() -> TransactionConfig {
        TransactionConfig {
            timeout_max_ms: 900_000,
            id_expiration_ms: 7 * 24 * 60 * 60 * 1000,
            check_interval_ms: 10_000,
        }
    }
}

/// One record of `__transaction_state`: a transactional id's key, and its state or a tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionRecord {
    pub key: Bytes,
    pub value: Option<Bytes>,
}

impl TransactionRecord {
    fn of(metadata: &TransactionMetadata) -> TransactionRecord {
        TransactionRecord {
            key: encode_key(&metadata.transactional_id),
            value: Some(encode_value(metadata)),
        }
    }
}

/// The markers one transaction needs on its partitions, with the producer id and epoch they
/// carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerJob {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub committed: bool,
    pub partitions: Vec<TransactionPartition>,
}

/// What a call leaves the driver to do, in order: append the records, then start the markers.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Effects {
    pub records: Vec<TransactionRecord>,
    pub markers: Vec<MarkerJob>,
}

/// A producer id and epoch.
pub type ProducerIdAndEpoch = (i64, i16);

/// InitProducerId with a transactional id.
#[derive(Debug, Clone)]
pub struct InitProducerId {
    pub transactional_id: String,
    pub timeout_ms: i32,
    /// KIP-360: the producer id and epoch the producer had (version 3 and later).
    pub expected: Option<ProducerIdAndEpoch>,
    /// A producer id never handed out, used if the id is new or its epochs are exhausted.
    pub fresh_producer_id: i64,
}

/// One listed transaction (ListTransactions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedTransaction {
    pub transactional_id: String,
    pub producer_id: i64,
    pub state: TransactionState,
}

/// One `__transaction_state` partition's transactional ids.
#[derive(Debug)]
pub struct TransactionCoordinator {
    config: TransactionConfig,
    transactions: HashMap<String, TransactionMetadata>,
    next_check_ms: i64,
}

impl TransactionCoordinator {
    pub fn new(config: TransactionConfig, now_ms: i64) -> TransactionCoordinator {
        let next_check_ms = now_ms.saturating_add(config.check_interval_ms);
        TransactionCoordinator {
            config,
            transactions: HashMap::new(),
            next_check_ms,
        }
    }

    /// Rebuilds a coordinator from the latest record of each key, in log order, and returns
    /// the markers of the transactions that were being ended (Kafka resumes them on load).
    pub fn replay<'a>(
        config: TransactionConfig,
        records: impl IntoIterator<Item = &'a TransactionRecord>,
        now_ms: i64,
    ) -> Result<(TransactionCoordinator, Vec<MarkerJob>), TransactionRecordError> {
        let mut coordinator = TransactionCoordinator::new(config, now_ms);
        for record in records {
            let transactional_id = decode_key(&record.key)?;
            match &record.value {
                Some(value) => {
                    let metadata = decode_value(&transactional_id, value)?;
                    coordinator.transactions.insert(transactional_id, metadata);
                }
                None => {
                    coordinator.transactions.remove(&transactional_id);
                }
            }
        }
        // A Dead record is an expiry whose tombstone never followed.
        coordinator
            .transactions
            .retain(|_, metadata| metadata.state != TransactionState::Dead);
        let markers = coordinator
            .transactions
            .values()
            .filter_map(|metadata| match metadata.state {
                TransactionState::PrepareCommit => Some(marker_job(metadata, true)),
                TransactionState::PrepareAbort => Some(marker_job(metadata, false)),
                _ => None,
            })
            .collect();
        Ok((coordinator, markers))
    }

    /// When [`tick`](Self::tick) next has work.
    pub fn next_deadline_ms(&self) -> i64 {
        self.next_check_ms
    }

    /// Aborts the open transactions that outlived their timeout (with an epoch bump, which
    /// fences their producer, as Kafka's `abortTimedOutTransactions`) and forgets the ids
    /// unused for `id_expiration_ms` (a tombstone each).
    pub fn tick(&mut self, now_ms: i64) -> Effects {
        let mut effects = Effects::default();
        if now_ms < self.next_check_ms {
            return effects;
        }
        self.next_check_ms = now_ms.saturating_add(self.config.check_interval_ms);
        let expiration_ms = self.config.id_expiration_ms;
        let mut expired = Vec::new();
        for metadata in self.transactions.values_mut() {
            match metadata.state {
                TransactionState::Ongoing
                    if metadata
                        .start_ms
                        .saturating_add(i64::from(metadata.timeout_ms))
                        < now_ms =>
                {
                    fence_and_abort(metadata, now_ms, &mut effects);
                }
                state
                    if state.is_complete()
                        && metadata.last_update_ms.saturating_add(expiration_ms) <= now_ms =>
                {
                    expired.push(metadata.transactional_id.clone());
                }
                _ => {}
            }
        }
        expired.sort_unstable();
        for transactional_id in expired {
            self.transactions.remove(&transactional_id);
            effects.records.push(TransactionRecord {
                key: encode_key(&transactional_id),
                value: None,
            });
        }
        effects
    }

    /// InitProducerId with a transactional id: the id's producer id and a new epoch, which
    /// fences every older producer of the id. An open transaction is aborted first (with a
    /// bumped epoch) and the caller told CONCURRENT_TRANSACTIONS, to retry once it is.
    pub fn init_producer_id(
        &mut self,
        request: &InitProducerId,
        now_ms: i64,
    ) -> (Result<ProducerIdAndEpoch, TransactionError>, Effects) {
        let mut effects = Effects::default();
        // Its record holds it in an int16-length string; a flexible request's may be longer.
        if request.transactional_id.is_empty()
            || request.transactional_id.len() > TRANSACTIONAL_ID_BYTES_MAX
        {
            return (Err(TransactionError::InvalidRequest), effects);
        }
        if request.timeout_ms <= 0 || request.timeout_ms > self.config.timeout_max_ms {
            return (Err(TransactionError::InvalidTransactionTimeout), effects);
        }
        let mut metadata = match self.transactions.get(&request.transactional_id) {
            Some(metadata) => metadata.clone(),
            None => TransactionMetadata::new(
                request.transactional_id.clone(),
                request.fresh_producer_id,
                request.timeout_ms,
                now_ms,
            ),
        };
        if let Some((producer_id, epoch)) = request.expected {
            // KIP-360: a producer recovering may name its id and epoch; anyone else's is fenced.
            let valid = metadata.producer_epoch == NO_PRODUCER_EPOCH
                || producer_id == metadata.producer_id
                || (producer_id == metadata.previous_producer_id
                    && TransactionMetadata::is_epoch_exhausted(epoch));
            if !valid {
                return (Err(TransactionError::ProducerFenced), effects);
            }
        }
        match metadata.state {
            TransactionState::PrepareCommit | TransactionState::PrepareAbort => {
                return (Err(TransactionError::ConcurrentTransactions), effects);
            }
            TransactionState::Ongoing => {
                // Kafka never hands out this epoch: the client retries and gets the next one.
                fence_and_abort(&mut metadata, now_ms, &mut effects);
                self.transactions
                    .insert(metadata.transactional_id.clone(), metadata);
                return (Err(TransactionError::ConcurrentTransactions), effects);
            }
            TransactionState::Empty
            | TransactionState::CompleteCommit
            | TransactionState::CompleteAbort => {}
            TransactionState::Dead | TransactionState::PrepareEpochFence => {
                unreachable!("no transaction rests in {:?}", metadata.state)
            }
        }
        let expected_epoch = request.expected.map(|(_, epoch)| epoch);
        if TransactionMetadata::is_epoch_exhausted(metadata.producer_epoch)
            && expected_epoch.is_none_or(|epoch| epoch == metadata.producer_epoch)
        {
            // The epochs of this producer id are used up: a new producer id, from epoch 0.
            metadata.last_producer_epoch = match expected_epoch {
                Some(_) => metadata.producer_epoch,
                None => NO_PRODUCER_EPOCH,
            };
            metadata.previous_producer_id = metadata.producer_id;
            metadata.producer_id = request.fresh_producer_id;
            metadata.producer_epoch = 0;
        } else {
            let bumped = metadata.producer_epoch + 1;
            match expected_epoch {
                None => {
                    metadata.last_producer_epoch = NO_PRODUCER_EPOCH;
                    metadata.producer_epoch = bumped;
                }
                Some(epoch)
                    if metadata.producer_epoch == NO_PRODUCER_EPOCH
                        || epoch == metadata.producer_epoch =>
                {
                    metadata.last_producer_epoch = metadata.producer_epoch;
                    metadata.producer_epoch = bumped;
                }
                // A retry of the call that bumped it: the same epoch again.
                Some(epoch) if epoch == metadata.last_producer_epoch => {}
                Some(_) => return (Err(TransactionError::ProducerFenced), effects),
            }
        }
        metadata.timeout_ms = request.timeout_ms;
        metadata.state = TransactionState::Empty;
        metadata.partitions.clear();
        metadata.start_ms = -1;
        metadata.last_update_ms = now_ms;
        let answer = (metadata.producer_id, metadata.producer_epoch);
        effects.records.push(TransactionRecord::of(&metadata));
        self.transactions
            .insert(metadata.transactional_id.clone(), metadata);
        (Ok(answer), effects)
    }

    /// The id's metadata if `producer_id` and `producer_epoch` are its producer's.
    fn producer_metadata(
        &mut self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
    ) -> Result<&mut TransactionMetadata, TransactionError> {
        if transactional_id.is_empty() {
            return Err(TransactionError::InvalidRequest);
        }
        let metadata = self
            .transactions
            .get_mut(transactional_id)
            .ok_or(TransactionError::InvalidProducerIdMapping)?;
        if metadata.producer_id != producer_id {
            return Err(TransactionError::InvalidProducerIdMapping);
        }
        if metadata.producer_epoch != producer_epoch {
            return Err(TransactionError::ProducerFenced);
        }
        Ok(metadata)
    }

    /// AddPartitionsToTxn (and AddOffsetsToTxn, with the group's `__consumer_offsets`
    /// partition): the partitions join the transaction, which opens if it was not.
    pub fn add_partitions(
        &mut self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[TransactionPartition],
        now_ms: i64,
    ) -> (Result<(), TransactionError>, Effects) {
        let mut effects = Effects::default();
        let metadata = match self.producer_metadata(transactional_id, producer_id, producer_epoch) {
            Ok(metadata) => metadata,
            Err(error) => return (Err(error), effects),
        };
        match metadata.state {
            TransactionState::PrepareCommit | TransactionState::PrepareAbort => {
                return (Err(TransactionError::ConcurrentTransactions), effects)
            }
            TransactionState::Ongoing
                if partitions
                    .iter()
                    .all(|partition| metadata.partitions.contains(partition)) =>
            {
                return (Ok(()), effects)
            }
            // Nothing to open a transaction with.
            _ if partitions.is_empty() => return (Ok(()), effects),
            TransactionState::Ongoing => {}
            _ => metadata.start_ms = now_ms,
        }
        metadata.partitions.extend(partitions.iter().cloned());
        metadata.state = TransactionState::Ongoing;
        metadata.last_update_ms = now_ms;
        effects.records.push(TransactionRecord::of(metadata));
        (Ok(()), effects)
    }

    /// AddPartitionsToTxn with `verify_only` (KIP-890): whether each partition is in the
    /// transaction, changing nothing.
    pub fn verify_partitions(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[TransactionPartition],
    ) -> Vec<(TransactionPartition, Result<(), TransactionError>)> {
        let checked = (|| {
            if transactional_id.is_empty() {
                return Err(TransactionError::InvalidRequest);
            }
            let metadata = self
                .transactions
                .get(transactional_id)
                .ok_or(TransactionError::InvalidProducerIdMapping)?;
            if metadata.producer_id != producer_id {
                return Err(TransactionError::InvalidProducerIdMapping);
            }
            if metadata.producer_epoch != producer_epoch {
                return Err(TransactionError::ProducerFenced);
            }
            if matches!(
                metadata.state,
                TransactionState::PrepareCommit | TransactionState::PrepareAbort
            ) {
                return Err(TransactionError::ConcurrentTransactions);
            }
            Ok(metadata)
        })();
        partitions
            .iter()
            .map(|partition| {
                let result =
                    checked.and_then(|metadata| match metadata.partitions.contains(partition) {
                        true => Ok(()),
                        false => Err(TransactionError::TransactionAbortable),
                    });
                (partition.clone(), result)
            })
            .collect()
    }

    /// EndTxn: the transaction's PrepareCommit or PrepareAbort is recorded and its markers
    /// started; the caller is answered once the record is durable. A retry of an end that
    /// completed is answered as it was.
    pub fn end_transaction(
        &mut self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        now_ms: i64,
    ) -> (Result<(), TransactionError>, Effects) {
        let mut effects = Effects::default();
        let metadata = match self.producer_metadata(transactional_id, producer_id, producer_epoch) {
            Ok(metadata) => metadata,
            Err(error) => return (Err(error), effects),
        };
        let result = match (metadata.state, commit) {
            (TransactionState::Ongoing, _) => {
                metadata.state = match commit {
                    true => TransactionState::PrepareCommit,
                    false => TransactionState::PrepareAbort,
                };
                metadata.last_update_ms = now_ms;
                effects.records.push(TransactionRecord::of(metadata));
                effects.markers.push(marker_job(metadata, commit));
                Ok(())
            }
            (TransactionState::CompleteCommit, true) | (TransactionState::CompleteAbort, false) => {
                Ok(())
            }
            (TransactionState::PrepareCommit, true) | (TransactionState::PrepareAbort, false) => {
                Err(TransactionError::ConcurrentTransactions)
            }
            _ => Err(TransactionError::InvalidTxnState),
        };
        (result, effects)
    }

    /// Every marker of `job` is written: the transaction completes (unless it moved on since,
    /// which only a reload can do, and then this is a stale report).
    pub fn complete_markers(&mut self, job: &MarkerJob, now_ms: i64) -> Effects {
        let mut effects = Effects::default();
        let Some(metadata) = self.transactions.get_mut(&job.transactional_id) else {
            return effects;
        };
        let prepared = match job.committed {
            true => TransactionState::PrepareCommit,
            false => TransactionState::PrepareAbort,
        };
        if metadata.state != prepared
            || metadata.producer_id != job.producer_id
            || metadata.producer_epoch != job.producer_epoch
        {
            return effects;
        }
        metadata.state = match job.committed {
            true => TransactionState::CompleteCommit,
            false => TransactionState::CompleteAbort,
        };
        metadata.partitions.clear();
        metadata.last_update_ms = now_ms;
        effects.records.push(TransactionRecord::of(metadata));
        effects
    }

    /// One transactional id's state (DescribeTransactions).
    pub fn describe(
        &self,
        transactional_id: &str,
    ) -> Result<TransactionMetadata, TransactionError> {
        if transactional_id.is_empty() {
            return Err(TransactionError::InvalidRequest);
        }
        self.transactions
            .get(transactional_id)
            .cloned()
            .ok_or(TransactionError::TransactionalIdNotFound)
    }

    /// The transactions in one of `states` (none: any), of one of `producer_ids` (none: any),
    /// running for longer than `duration_min_ms` (negative: any), by id.
    pub fn list(
        &self,
        states: &BTreeSet<TransactionState>,
        producer_ids: &BTreeSet<i64>,
        duration_min_ms: i64,
        now_ms: i64,
    ) -> Vec<ListedTransaction> {
        let mut listed: Vec<ListedTransaction> = self
            .transactions
            .values()
            .filter(|metadata| states.is_empty() || states.contains(&metadata.state))
            .filter(|metadata| {
                producer_ids.is_empty() || producer_ids.contains(&metadata.producer_id)
            })
            // As Kafka: an id without a transaction (start -1) counts as running since ever.
            .filter(|metadata| {
                duration_min_ms < 0 || now_ms.saturating_sub(metadata.start_ms) > duration_min_ms
            })
            .map(|metadata| ListedTransaction {
                transactional_id: metadata.transactional_id.clone(),
                producer_id: metadata.producer_id,
                state: metadata.state,
            })
            .collect();
        listed.sort_unstable_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        listed
    }

    /// Asserts the invariants of the module documentation.
    pub fn check_invariants(&self) {
        for (transactional_id, metadata) in &self.transactions {
            assert_eq!(transactional_id, &metadata.transactional_id);
            match metadata.state {
                TransactionState::Dead | TransactionState::PrepareEpochFence => {
                    panic!("{transactional_id} rests in {:?}", metadata.state)
                }
                state if state.is_complete() => assert!(metadata.partitions.is_empty()),
                _ => assert!(!metadata.partitions.is_empty() && metadata.start_ms >= 0),
            }
        }
    }
}

/// Fences the producer of an open transaction (a bumped epoch, unless it is the last) and
/// aborts the transaction with that epoch (Kafka's `prepareFenceProducerEpoch` followed by
/// the PrepareAbort it leads to).
fn fence_and_abort(metadata: &mut TransactionMetadata, now_ms: i64, effects: &mut Effects) {
    debug_assert_eq!(metadata.state, TransactionState::Ongoing);
    // The last epoch is kept (the next InitProducerId rotates the producer id).
    metadata.producer_epoch = metadata.producer_epoch.saturating_add(1);
    metadata.last_producer_epoch = NO_PRODUCER_EPOCH;
    metadata.state = TransactionState::PrepareAbort;
    metadata.last_update_ms = now_ms;
    effects.records.push(TransactionRecord::of(metadata));
    effects.markers.push(marker_job(metadata, false));
}

fn marker_job(metadata: &TransactionMetadata, committed: bool) -> MarkerJob {
    MarkerJob {
        transactional_id: metadata.transactional_id.clone(),
        producer_id: metadata.producer_id,
        producer_epoch: metadata.producer_epoch,
        committed,
        partitions: metadata.partitions.iter().cloned().collect(),
    }
}

#[cfg(test)]
mod tests;
