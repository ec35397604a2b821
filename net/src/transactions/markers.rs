//! Writing a transaction's markers (Kafka's WriteTxnMarkers): the COMMIT or ABORT control batch
//! a transaction coordinator appends to every partition of a transaction, each answered once it
//! is durable (committed, in a cluster).
//!
//! A partition gets the marker as a batch the broker writes itself (checked as a stored batch,
//! not as a producer's, since no producer may send a control batch): on a broker alone,
//! appended by the shard that owns the partition and answered after the journal's sync, as an
//! acks=all produce; in a cluster, at each partition's leader, through its Raft replica,
//! answered once committed (`ferrite_replication::cluster::markers`, which also carries the
//! markers for partitions led by other brokers, one request per broker).
//!
//! A `__consumer_offsets` partition also ends the transaction's offset commits in its groups:
//! its marker goes through the groups' coordinator of the partition
//! (`groups::transactions::complete_transaction`), on a broker alone directly, in a cluster at
//! the partition's leader, which the cluster hands it to ([`serve_offsets_markers`] gives each
//! shard's cluster the way there).
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
use ferrite_replication::cluster::MarkerRefusal;
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

/// Has this shard's cluster (if the broker is one of several) hand the markers for the
/// `__consumer_offsets` partitions this broker leads to their groups' coordinators, here. Each
/// shard's [`Broker`] calls it once, when made.
pub fn serve_offsets_markers(broker: &Rc<Broker>) {
    let Some(cluster) = &broker.cluster else {
        return;
    };
    // The cluster lives in the broker: the writer must not keep it alive.
    let weak = Rc::downgrade(broker);
    cluster.set_offsets_marker_writer(Rc::new(move |partition, marker| {
        let broker = weak.upgrade();
        Box::pin(async move {
            let Some(broker) = broker else {
                return Err(MarkerRefusal::NotLeader { leader_hint: None });
            };
            let Ok(partition) = i32::try_from(partition) else {
                return Err(MarkerRefusal::UnknownPartition);
            };
            complete_transaction(&broker, partition, marker)
                .await
                .map_err(|error| MarkerRefusal::GroupCoordinator {
                    code: error.code,
                    message: error.message,
                })
        })
    }));
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
            // In a cluster the leader's cluster hands it over (see `serve_offsets_markers`).
            Ok(_) if topic == OFFSETS_TOPIC && broker.cluster.is_none() => {
                offsets.push((position, *partition))
            }
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

/// Writes `marker` to `partitions`: at their leaders in a cluster, else (none of
/// `__consumer_offsets` then) through the shards that own them here. One result per
/// partition, in order.
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
