//! Writing a transaction's markers (Kafka's WriteTxnMarkers): the COMMIT or ABORT control batch
//! a transaction coordinator appends to every partition of a transaction, each answered once it
//! is durable (committed, in a cluster).
//!
//! A `__consumer_offsets` partition ends the transaction's offset commits in its groups: its
//! marker goes through the groups' coordinator there (`groups::transactions`). Every other
//! partition gets the marker as a batch the broker writes itself (checked as a stored batch, not
//! as a producer's, since no producer may send a control batch): on a broker alone, appended by
//! the shard that owns the partition and answered after the journal's sync, as an acks=all
//! produce; in a cluster, at each partition's leader, through its Raft replica, answered once
//! committed (`ferrite_replication::cluster::markers`, which also carries the markers for
//! partitions led by other brokers, one request per broker).
//!
//! Each partition's error is a Kafka code, as Kafka's `WriteTxnMarkersResponse` carries it
//! (NOT_LEADER_OR_FOLLOWER, UNKNOWN_TOPIC_OR_PARTITION, NOT_ENOUGH_REPLICAS, REQUEST_TIMED_OUT,
//! KAFKA_STORAGE_ERROR, INVALID_PRODUCER_EPOCH ...): the coordinator retries what is retriable
//! and forgets a partition whose topic is gone.

use std::rc::Rc;

use bytes::BytesMut;
use engine::batch::{encode_transaction_marker, TransactionMarker};
use engine::catalog::OFFSETS_TOPIC;
use engine::shard::{AppendKind, Durability, PartitionId, UnreplicatedLogs};
use futures::future::join_all;

use crate::broker::Broker;
use crate::errors::log_error_code;
use crate::groups::transactions::complete_transaction;

/// One marker for some partitions of one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerWrite {
    pub marker: TransactionMarker,
    /// (topic, partition) pairs; `__consumer_offsets` partitions among them end the
    /// transaction's offset commits in their groups.
    pub partitions: Vec<(String, i32)>,
}

/// Why one partition's marker was not written: the Kafka error code the coordinator acts on
/// (it retries NOT_LEADER_OR_FOLLOWER and the like, and forgets a partition whose topic is
/// gone, as Kafka's `TransactionMarkerRequestCompletionHandler`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerError {
    pub code: i16,
    pub message: String,
}

/// Writes `write.marker` to each of `write.partitions`; one result per partition, in order,
/// once every marker is durable or refused.
pub async fn write_markers(
    broker: &Rc<Broker>,
    write: MarkerWrite,
) -> Vec<((String, i32), Result<(), MarkerError>)> {
    let MarkerWrite { marker, partitions } = write;
    let mut results: Vec<Option<Result<(), MarkerError>>> = vec![None; partitions.len()];
    let mut offsets: Vec<(usize, i32)> = Vec::new();
    let mut logs: Vec<(usize, PartitionId)> = Vec::new();
    for (position, (topic, partition)) in partitions.iter().enumerate() {
        match u32::try_from(*partition) {
            Err(_) => {
                results[position] = Some(Err(MarkerError {
                    code: kafka_protocol::ResponseError::UnknownTopicOrPartition.code(),
                    message: format!("no partition {partition} of {topic}"),
                }))
            }
            Ok(_) if topic == OFFSETS_TOPIC => offsets.push((position, *partition)),
            Ok(number) => logs.push((position, PartitionId::new(topic.clone(), number))),
        }
    }
    let offsets_completed = join_all(
        offsets
            .iter()
            .map(|(_, partition)| complete_transaction(broker, *partition, marker)),
    );
    let (positions, logs): (Vec<usize>, Vec<PartitionId>) = logs.into_iter().unzip();
    let logs_written = write_to_logs(broker, marker, logs);
    let (offsets_completed, logs_written) =
        futures::future::join(offsets_completed, logs_written).await;
    let completed = offsets
        .iter()
        .map(|(position, _)| *position)
        .zip(offsets_completed);
    for (position, result) in completed.chain(positions.into_iter().zip(logs_written)) {
        results[position] = Some(result);
    }
    partitions
        .into_iter()
        .zip(results)
        .map(|(partition, result)| (partition, result.expect("every partition has its result")))
        .collect()
}

/// Writes `marker` to `partitions` (none of `__consumer_offsets`): at their leaders in a
/// cluster, else through the shards that own them here. One result per partition, in order.
async fn write_to_logs(
    broker: &Rc<Broker>,
    marker: TransactionMarker,
    partitions: Vec<PartitionId>,
) -> Vec<Result<(), MarkerError>> {
    if partitions.is_empty() {
        return Vec::new();
    }
    if let Some(cluster) = &broker.cluster {
        let outcomes = cluster.write_markers(marker, partitions).await;
        return outcomes
            .into_iter()
            .map(|outcome| {
                outcome.map_err(|error| MarkerError {
                    code: error.code,
                    message: error.message,
                })
            })
            .collect();
    }
    let batch = encode_transaction_marker(&marker, broker.context.now_ms());
    let appends = partitions
        .into_iter()
        .map(|partition| (partition, BytesMut::from(&batch[..])))
        .collect();
    let pending = broker
        .context
        .submit_appends_through::<UnreplicatedLogs>(
            appends,
            AppendKind::BrokerWritten,
            Durability::Durable,
        )
        .await;
    join_all(pending)
        .await
        .into_iter()
        .map(|appended| {
            appended.map(|_| ()).map_err(|error| MarkerError {
                code: log_error_code(&error),
                message: error.to_string(),
            })
        })
        .collect()
}
