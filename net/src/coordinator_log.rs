//! What the coordinators that keep their state in a compacted internal topic share (the group
//! coordinators in `__consumer_offsets`, the transaction coordinators in
//! `__transaction_state`): which partition holds a key, the topic's creation on a broker
//! alone, running a call on the shard that owns a partition, whether this shard may run a
//! partition's coordinator (and in which Raft term), loading the coordinators of the
//! partitions it owns (at start on a broker alone; as leadership moves in a cluster), reading a
//! partition back at load, and the batch a change's records are appended as. Each
//! coordinator's own driver (`groups::shard`, `transactions::shard`) keeps its state machine,
//! its requests and its timers.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use engine::batch::{self, BatchHeader, PlainRecord, ProducerFields, TransactionMarker};
use engine::catalog::{Catalog, CatalogError};
use engine::shard::{ClientAccess, PartitionId, ShardContext};
use engine::LogError;
use futures::future::{select, LocalBoxFuture};

/// Longest a read of an internal partition at load may be.
const LOAD_READ_BYTES: usize = 1 << 20;

/// How often a cluster's shard compares the coordinators it runs with the leadership of their
/// partitions (a fifth of the shortest Raft election timeout: a takeover is noticed well
/// within the time clients take to find the new coordinator).
const LEADERSHIP_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// The partition of an internal topic that holds `key` (a group id, a transactional id):
/// Java's `String.hashCode` of the key, made non-negative, modulo the partition count, as
/// Kafka places groups and transactional ids.
pub fn partition_for_key(key: &str, partitions: u32) -> u32 {
    assert!(
        partitions > 0,
        "an internal topic has at least one partition"
    );
    let hash = key.encode_utf16().fold(0i32, |hash, unit| {
        hash.wrapping_mul(31).wrapping_add(i32::from(unit))
    });
    // Kafka's Utils.abs: Integer.MIN_VALUE maps to 0.
    let hash = if hash == i32::MIN { 0 } else { hash.abs() };
    hash as u32 % partitions
}

/// Creates internal topic `name` with `partitions` partitions and `configs` unless it exists,
/// and returns the partition count the topic has: if it existed, its own (changing it would
/// move every key away from its records). On a broker alone; in a cluster the controller
/// creates the internal topics.
pub fn prepare_internal_topic(
    catalog: &Catalog,
    name: &str,
    partitions: u32,
    configs: BTreeMap<String, String>,
) -> Result<u32, CatalogError> {
    if let Some(topic) = catalog.topics().get(name) {
        return Ok(topic.partitions);
    }
    catalog.create_topic(name, i64::from(partitions), configs, false)?;
    Ok(partitions)
}

/// Runs `run` on the shard that owns `partition`: here at once, or posted there with
/// [`ShardContext::call_on`], which runs it on arrival and sends its answer back over the mesh.
/// `call_on` counts nothing in flight (an upper layer's call may wait on other brokers); a
/// coordinator's call is counted on both shards, as the engine counts its own forwarded calls,
/// so that the shutdown drain waits for it. `closed`: the answer if the owner stopped without
/// answering (only at shutdown).
pub async fn on_owning_shard<Answer, Run>(
    context: &ShardContext,
    partition: &PartitionId,
    closed: Answer,
    run: Run,
) -> Answer
where
    Answer: Send + 'static,
    Run: FnOnce() -> LocalBoxFuture<'static, Answer> + Send + 'static,
{
    let owner = context.owner_of(partition);
    if owner == context.shard_id() {
        return run().await;
    }
    let _in_flight = context.work_in_flight();
    let answer = context
        .call_on(owner, move |context| {
            let in_flight = context.work_in_flight();
            Box::pin(async move {
                let _in_flight = in_flight;
                run().await
            })
        })
        .await;
    answer.unwrap_or(closed)
}

/// Why this broker does not run a partition's coordinator right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotServing {
    /// Another broker leads the partition (or none does).
    NotCoordinator,
    /// This broker leads it but has not committed an entry of its term yet.
    LoadInProgress,
}

/// The term the coordinator of `partition` (owned by `context`'s shard) may run in here:
/// `None` where it is not replicated (a broker alone); in a cluster, refused unless this broker
/// leads it and has committed an entry of its term (so its log holds everything earlier
/// leaders committed).
pub fn coordinator_term(
    context: &ShardContext,
    partition: &PartitionId,
) -> Result<Option<u64>, NotServing> {
    let Some(access) = context.client_access(partition) else {
        return match context.partitions_replicated() {
            true => Err(NotServing::NotCoordinator),
            false => Ok(None),
        };
    };
    match (context.leading_term(partition), access) {
        (Some(term), _) => Ok(Some(term)),
        (None, ClientAccess::Leader { .. }) => Err(NotServing::LoadInProgress),
        (None, _) => Err(NotServing::NotCoordinator),
    }
}

/// One shard's coordinators of an internal topic's partitions, as [`load_owned_coordinators`]
/// loads and unloads them.
pub trait PartitionCoordinators: 'static {
    /// The term the coordinator of `partition` was loaded in (`Some(None)`: not replicated),
    /// if one is loaded and not being loaded right now.
    fn loaded_term(&self, partition: &PartitionId) -> Option<Option<u64>>;

    /// Unloads the coordinator of `partition`: its broker stopped leading it in that term, and
    /// its waiting calls hear NOT_COORDINATOR.
    fn unload(&self, partition: &PartitionId);

    /// Loads the coordinator of `partition`; a failure is reported there (and retried at the
    /// next check, in a cluster).
    fn load(self: Rc<Self>, partition: PartitionId) -> LocalBoxFuture<'static, ()>;
}

/// Loads the coordinator of every partition of `topic` (of `partitions`) this shard owns, so
/// that what they hold is known (and what they must finish resumes) from start-up rather than
/// from a first request, as a Kafka coordinator loads its partitions when it takes them over.
/// On a broker alone: once, skipping partitions whose directory does not exist (resolves when
/// done). In a cluster, where this depends on leadership: starts a task that follows it until
/// shutdown ([`follow_leadership`]) and resolves at once.
pub async fn load_owned_coordinators<Coordinators: PartitionCoordinators>(
    coordinators: Rc<Coordinators>,
    context: &ShardContext,
    topic: &'static str,
    partitions: u32,
) {
    if context.partitions_replicated() {
        glommio::spawn_local(follow_leadership(
            coordinators,
            context.clone(),
            topic,
            partitions,
        ))
        .detach();
        return;
    }
    for index in 0..partitions {
        let partition = PartitionId::new(topic, index);
        if context.owner_of(&partition) != context.shard_id()
            || context.is_shutting_down()
            || !context.data_dir().join(partition.directory_name()).is_dir()
        {
            continue;
        }
        coordinators.clone().load(partition).await;
    }
}

/// In a cluster, until shutdown: loads the coordinator of each partition of `topic` this shard
/// owns as soon as its broker leads it (and is ready to), and unloads those whose broker
/// stopped leading in the term they were loaded in.
async fn follow_leadership<Coordinators: PartitionCoordinators>(
    coordinators: Rc<Coordinators>,
    context: ShardContext,
    topic: &'static str,
    partitions: u32,
) {
    while !context.is_shutting_down() {
        for index in 0..partitions {
            let partition = PartitionId::new(topic, index);
            if context.owner_of(&partition) != context.shard_id() {
                continue;
            }
            let term = coordinator_term(&context, &partition);
            match (coordinators.loaded_term(&partition), term) {
                (Some(loaded), Ok(term)) if loaded == term => {}
                (Some(_), _) => coordinators.unload(&partition),
                (None, Ok(Some(_))) => coordinators.clone().load(partition).await,
                (None, _) => {}
            }
        }
        let pause = std::pin::pin!(glommio::timer::sleep(LEADERSHIP_CHECK_INTERVAL));
        let shutdown = std::pin::pin!(context.shutdown_requested());
        select(pause, shutdown).await;
    }
}

/// Why a coordinator could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("its log holds {0}")]
    Malformed(&'static str),
    #[error("its records do not replay: {0}")]
    Replay(String),
}

/// One key's latest record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedRecord {
    pub key: Bytes,
    pub value: Option<Bytes>,
}

/// What a load reads of an internal partition, in the log's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEntry {
    /// A record, with the producer (id, epoch) of the transactional batch it is in, if it is.
    Record {
        record: KeyedRecord,
        transaction: Option<(i64, i16)>,
    },
    /// A transaction's marker.
    Marker(TransactionMarker),
}

/// Every record and transaction marker of `partition` (owned by `context`'s shard) up to its
/// high-water mark, oldest first, handed to `visit`. A compacted log reads as any other (gaps
/// and removed tombstones change nothing); other control batches (Raft's own entries in a
/// cluster) are skipped.
pub async fn read_entries(
    context: &ShardContext,
    partition: &PartitionId,
    mut visit: impl FnMut(LogEntry),
) -> Result<(), LoadError> {
    let log = context.partition_log(partition).await?;
    let end = log.high_watermark();
    let mut offset = log.log_start_offset();
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
                if let Some(marker) = marker {
                    visit(LogEntry::Marker(marker));
                }
                continue;
            }
            let transaction = header
                .is_transactional()
                .then_some((header.producer_id, header.producer_epoch));
            for record in batch::plain_records(batch_bytes)
                .map_err(|_| LoadError::Malformed("a batch it did not write"))?
            {
                let record = record.map_err(|_| LoadError::Malformed("a malformed record"))?;
                let Some(key) = record.key else {
                    return Err(LoadError::Malformed("a record without a key"));
                };
                let record = KeyedRecord {
                    key: Bytes::copy_from_slice(key),
                    value: record.value.map(Bytes::copy_from_slice),
                };
                visit(LogEntry::Record {
                    record,
                    transaction,
                });
            }
        }
        if slice.offset_next <= offset {
            return Err(LoadError::Malformed("a read that did not advance"));
        }
        offset = slice.offset_next;
    }
    Ok(())
}

/// The latest record of each key of `partition` (owned by `context`'s shard), up to its
/// high-water mark, in the order they were written ([`read_entries`]; this coordinator writes
/// no transactions).
pub async fn read_latest_records(
    context: &ShardContext,
    partition: &PartitionId,
) -> Result<Vec<KeyedRecord>, LoadError> {
    let mut latest: std::collections::HashMap<Bytes, (u64, Option<Bytes>)> = Default::default();
    let mut sequence = 0u64;
    read_entries(context, partition, |entry| {
        if let LogEntry::Record { record, .. } = entry {
            sequence += 1;
            latest.insert(record.key, (sequence, record.value));
        }
    })
    .await?;
    let mut records: Vec<(u64, KeyedRecord)> = latest
        .into_iter()
        .map(|(key, (sequence, value))| (sequence, KeyedRecord { key, value }))
        .collect();
    records.sort_unstable_by_key(|(sequence, _)| *sequence);
    Ok(records.into_iter().map(|(_, record)| record).collect())
}

/// One uncompressed batch of `records` (key, value or tombstone), stamped `now_ms`, with the
/// producer fields `producer` (`ProducerFields::NONE` but for a transaction's records).
pub fn encode_records<'a>(
    records: impl IntoIterator<Item = (&'a [u8], Option<&'a [u8]>)>,
    producer: ProducerFields,
    now_ms: i64,
) -> BytesMut {
    let plain: Vec<PlainRecord<'_>> = records
        .into_iter()
        .map(|(key, value)| PlainRecord {
            offset: 0,
            timestamp_ms: now_ms,
            key: Some(key),
            value,
        })
        .collect();
    BytesMut::from(&batch::encode_plain(&plain, producer)[..])
}
