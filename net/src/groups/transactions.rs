//! Where a transaction's marker meets the groups: the marker writer hands a marker for a
//! `__consumer_offsets` partition to the partition's group coordinator rather than to its log,
//! since the coordinator must append it in order with its own records and then commit or drop
//! the offsets the transaction committed in the partition's groups (`transactional`).

use std::rc::Rc;

use engine::batch::TransactionMarker;
use kafka_protocol::ResponseError;

use crate::broker::Broker;
use crate::groups::shard::CompleteTransaction;
use crate::groups::GroupError;
use crate::transactions::markers::MarkerError;

/// Appends `marker` to `__consumer_offsets` partition `offsets_partition` (through its
/// coordinator's log, on its owning shard: the log on a broker alone, the partition's replica
/// in a cluster) and, once it is durable, commits or drops the offsets the transaction
/// committed in the groups of that partition. Refused as a partition's marker write is: a
/// broker that does not lead the partition answers NOT_LEADER_OR_FOLLOWER, one loading it
/// COORDINATOR_LOAD_IN_PROGRESS (the writer retries both), a marker of a fenced producer
/// epoch INVALID_PRODUCER_EPOCH, one of a fenced coordinator TRANSACTION_COORDINATOR_FENCED.
pub async fn complete_transaction(
    broker: &Rc<Broker>,
    offsets_partition: i32,
    marker: TransactionMarker,
) -> Result<(), MarkerError> {
    let partition = u32::try_from(offsets_partition)
        .ok()
        .filter(|&partition| partition < broker.groups.config().offsets_partitions)
        .ok_or_else(|| MarkerError {
            code: ResponseError::UnknownTopicOrPartition.code(),
            message: format!("__consumer_offsets has no partition {offsets_partition}"),
        })?;
    let result = broker
        .groups
        .call(partition, CompleteTransaction { marker })
        .await;
    result.map_err(|error| {
        let code = match error {
            GroupError::NotCoordinator => ResponseError::NotLeaderOrFollower.code(),
            error => error.code(),
        };
        MarkerError {
            code,
            message: format!(
                "transaction marker for __consumer_offsets-{offsets_partition}: {error}"
            ),
        }
    })
}
