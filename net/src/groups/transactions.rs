//! Offsets committed inside a transaction (TxnOffsetCommit): pending in their group until the
//! transaction's marker reaches the group's `__consumer_offsets` partition, then committed or
//! dropped.
//!
//! INTERIM (session of 2026-12-07): the interface the marker writer calls; written on branch
//! `txn-offsets`.

use std::rc::Rc;

use engine::batch::TransactionMarker;

use crate::broker::Broker;
use crate::transactions::markers::MarkerError;

/// Appends `marker` to `__consumer_offsets` partition `offsets_partition` (through its
/// coordinator's log, on its owning shard) and, once it is durable, commits or drops the
/// offsets the transaction committed in the groups of that partition.
pub async fn complete_transaction(
    broker: &Rc<Broker>,
    offsets_partition: i32,
    marker: TransactionMarker,
) -> Result<(), MarkerError> {
    let _ = (broker, offsets_partition, marker);
    Err(MarkerError {
        code: kafka_protocol::ResponseError::UnknownServerError.code(),
        message: "transactional offset commits are not written yet".into(),
    })
}
