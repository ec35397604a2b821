//! Per-partition answers in the request's order, for the group APIs that answer each partition
//! on its own (OffsetCommit, OffsetDelete): their response types differ, their shape does not.

use std::collections::BTreeMap;

use kafka_protocol::messages::TopicName;

use crate::errors::NONE;
use crate::groups::TopicPartition;

/// A per-partition answer for each requested topic, in the request's order: each partition
/// with its code from `codes` (absent: no error), built with `partition` and `topic`.
pub(super) fn answer_partitions<Topic, Partition>(
    topics: impl Iterator<Item = (TopicName, Vec<i32>)>,
    codes: &BTreeMap<TopicPartition, i16>,
    partition: impl Fn(i32, i16) -> Partition,
    topic: impl Fn(TopicName, Vec<Partition>) -> Topic,
) -> Vec<Topic> {
    topics
        .map(|(name, indexes)| {
            let partitions = indexes
                .into_iter()
                .map(|index| {
                    let key = TopicPartition {
                        topic: name.0.to_string(),
                        partition: index,
                    };
                    partition(index, codes.get(&key).copied().unwrap_or(NONE))
                })
                .collect();
            topic(name, partitions)
        })
        .collect()
}
