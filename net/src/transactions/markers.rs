//! Writing a transaction's markers (Kafka's WriteTxnMarkers): the COMMIT or ABORT control batch
//! a transaction coordinator appends to every partition of a transaction, each answered once it
//! is durable (committed, in a cluster).
//!
//! INTERIM (session of 2026-12-07): the interface the coordinator calls; the routing to the
//! partitions' owners and leaders is being written on branch `txn-markers`.

use std::rc::Rc;

use engine::batch::TransactionMarker;

use crate::broker::Broker;

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

/// Writes `write.marker` to each of `write.partitions`; one result per partition, in order.
pub async fn write_markers(
    broker: &Rc<Broker>,
    write: MarkerWrite,
) -> Vec<((String, i32), Result<(), MarkerError>)> {
    let _ = broker;
    write
        .partitions
        .into_iter()
        .map(|partition| {
            let error = MarkerError {
                code: kafka_protocol::ResponseError::UnknownServerError.code(),
                message: "transaction markers are not written yet".into(),
            };
            (partition, Err(error))
        })
        .collect()
}
