//! Reaching a group's coordinator: the `__consumer_offsets` partition a group id maps to, and
//! the request to that partition's coordinator on whichever shard owns it (see
//! [`crate::groups::shard`]). Every group API goes through here, and FindCoordinator names the
//! leader of the same partition, so where a client is sent and where its calls run cannot
//! disagree.

use crate::broker::Broker;
use crate::errors::NONE;
use crate::groups::shard::GroupRequest;
use crate::groups::GroupError;

/// The code of one item of a coordinator's answer (a member, a partition, a group).
pub(super) fn error_code(result: &Result<(), GroupError>) -> i16 {
    result.as_ref().err().map_or(NONE, |error| error.code())
}

/// The `__consumer_offsets` partition of `group_id`.
pub(crate) fn offsets_partition(broker: &Broker, group_id: &str) -> u32 {
    broker.groups.offsets_partition(group_id)
}

/// Runs `request` on the coordinator of `group_id`.
pub(super) async fn call<Request: GroupRequest>(
    broker: &Broker,
    group_id: &str,
    request: Request,
) -> Request::Answer {
    let partition = offsets_partition(broker, group_id);
    broker.groups.call(partition, request).await
}
