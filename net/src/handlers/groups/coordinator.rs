//! Reaching a group's coordinator: the `__consumer_offsets` partition a group id maps to, and
//! the call to that partition's coordinator on whichever shard owns it (see `engine::shard`).
//! Every group API goes through here, and FindCoordinator names the leader of the same
//! partition, so where a client is sent and where its calls run cannot disagree.

use engine::groups::GroupError;
use engine::shard::{offsets_partition_for, GroupCall, GroupReply};

use crate::broker::Broker;
use crate::errors::NONE;

/// The code of one item of a coordinator's answer (a member, a partition, a group).
pub(super) fn error_code(result: &Result<(), GroupError>) -> i16 {
    result.as_ref().err().map_or(NONE, |error| error.code())
}

/// The `__consumer_offsets` partition of `group_id`.
pub(crate) fn offsets_partition(broker: &Broker, group_id: &str) -> u32 {
    offsets_partition_for(group_id, broker.context.groups_config().offsets_partitions)
}

/// Runs `call` on the coordinator of `group_id`.
pub(super) async fn call(broker: &Broker, group_id: &str, call: GroupCall) -> GroupReply {
    let partition = offsets_partition(broker, group_id);
    broker.context.group_call(partition, call).await
}
