//! Setting the topic up before the clock starts: created with the requested partitions if
//! missing, every partition led by a broker, and the consumer positioned at each partition's
//! end (read with ListOffsets, so no message produced afterwards can be skipped, which
//! "latest" resolved lazily by a consumer could do).

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::client::{self, Diagnostics, PlainContext};
use crate::error::BenchError;
use crate::flags::RunFlags;

/// How often the metadata is asked again while partitions have no leader yet.
const METADATA_RETRY: Duration = Duration::from_millis(100);

fn admin_client(flags: &RunFlags) -> Result<AdminClient<PlainContext>, BenchError> {
    client::config(flags, &[])
        .create_with_context(PlainContext(Diagnostics::new("admin")))
        .map_err(BenchError::kafka("cannot create the admin client"))
}

fn admin_options(timeout: Duration) -> AdminOptions {
    AdminOptions::new()
        .request_timeout(Some(timeout))
        .operation_timeout(Some(timeout))
}

/// Creates the topic unless it exists. Returns whether it was created.
pub fn create_if_missing(flags: &RunFlags, timeout: Duration) -> Result<bool, BenchError> {
    let admin = admin_client(flags)?;
    let partitions = i32::try_from(flags.partitions).expect("checked with the flags");
    let replication = i32::from(flags.replication_factor);
    let topic = NewTopic::new(
        &flags.topic,
        partitions,
        TopicReplication::Fixed(replication),
    );
    let results =
        futures::executor::block_on(admin.create_topics([&topic], &admin_options(timeout)))
            .map_err(BenchError::kafka("CreateTopics failed"))?;
    let mut created = false;
    for result in results {
        match result {
            Ok(_) => created = true,
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => {
                return Err(BenchError::Topic {
                    topic: flags.topic.clone(),
                    reason: format!("CreateTopics answered {code}"),
                })
            }
        }
    }
    Ok(created)
}

/// Deletes the topic (`--delete-topic`: long runs write gigabytes).
pub fn delete(flags: &RunFlags, timeout: Duration) -> Result<(), BenchError> {
    let admin = admin_client(flags)?;
    let topics = [flags.topic.as_str()];
    let results =
        futures::executor::block_on(admin.delete_topics(&topics, &admin_options(timeout)))
            .map_err(BenchError::kafka("DeleteTopics failed"))?;
    match results.into_iter().find_map(Result::err) {
        Some((_, code)) => Err(BenchError::Topic {
            topic: flags.topic.clone(),
            reason: format!("DeleteTopics answered {code}"),
        }),
        None => Ok(()),
    }
}

/// Waits until the metadata shows the topic with exactly `partitions` partitions, each with a
/// leader. A topic with another partition count is an error: the run would not be the one
/// asked for.
pub fn wait_for_leaders(
    consumer: &BaseConsumer<PlainContext>,
    topic: &str,
    partitions: u32,
    deadline: Instant,
) -> Result<(), BenchError> {
    let failure = |reason: String| BenchError::Topic {
        topic: topic.to_string(),
        reason,
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let metadata = consumer
            .fetch_metadata(Some(topic), left)
            .map_err(BenchError::kafka("Metadata failed"))?;
        let state = match metadata.topics().iter().find(|entry| entry.name() == topic) {
            None => "absent from the metadata".to_string(),
            Some(entry) if entry.error().is_some() => {
                format!("metadata error {:?}", entry.error())
            }
            Some(entry) => {
                let found = entry.partitions().len();
                if found != 0 && found != partitions as usize {
                    return Err(failure(format!(
                        "exists with {found} partitions, not the {partitions} asked for \
                         (delete it or use another --topic)"
                    )));
                }
                let leaderless = entry
                    .partitions()
                    .iter()
                    .filter(|partition| partition.leader() < 0)
                    .count();
                if found == partitions as usize && leaderless == 0 {
                    return Ok(());
                }
                format!("{found} partitions, {leaderless} without a leader")
            }
        };
        if Instant::now() + METADATA_RETRY > deadline {
            return Err(failure(format!("not ready in time: {state}")));
        }
        std::thread::sleep(METADATA_RETRY);
    }
}

/// Every partition of `topic` at its current end offset (its high watermark).
pub fn end_offsets(
    consumer: &BaseConsumer<PlainContext>,
    topic: &str,
    partitions: u32,
    deadline: Instant,
) -> Result<TopicPartitionList, BenchError> {
    let mut assignment = TopicPartitionList::new();
    for partition in 0..i32::try_from(partitions).expect("checked with the flags") {
        let high = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match consumer.fetch_watermarks(topic, partition, left) {
                Ok((_, high)) => break high,
                // A leader moving or still being elected: asked again, as clients do.
                Err(error)
                    if is_leadership_moving(&error)
                        && Instant::now() + METADATA_RETRY < deadline =>
                {
                    std::thread::sleep(METADATA_RETRY);
                }
                Err(error) => {
                    return Err(BenchError::kafka(format!(
                        "ListOffsets of {topic}-{partition} failed"
                    ))(error))
                }
            }
        };
        assignment
            .add_partition_offset(topic, partition, Offset::Offset(high))
            .map_err(BenchError::kafka("cannot build the assignment"))?;
    }
    Ok(assignment)
}
/// Whether `error` is a partition's leadership moving (or not yet settled), which passes.
fn is_leadership_moving(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::UnknownTopicOrPartition
        )
    )
}

/// `assignment` split between `consumers`: consumer c gets the partitions p with
/// p mod consumers = c, each from the same offset.
pub fn split_assignment(
    assignment: &TopicPartitionList,
    consumers: u32,
) -> Result<Vec<TopicPartitionList>, BenchError> {
    assert!(consumers > 0, "checked with the flags");
    let mut parts: Vec<TopicPartitionList> =
        (0..consumers).map(|_| TopicPartitionList::new()).collect();
    for element in assignment.elements() {
        let consumer = element.partition().unsigned_abs() % consumers;
        parts[consumer as usize]
            .add_partition_offset(element.topic(), element.partition(), element.offset())
            .map_err(BenchError::kafka("cannot build the assignment"))?;
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_partitions_are_split_between_the_consumers() {
        let mut assignment = TopicPartitionList::new();
        for partition in 0..5 {
            assignment
                .add_partition_offset("t", partition, Offset::Offset(100 + i64::from(partition)))
                .unwrap();
        }
        let parts = split_assignment(&assignment, 2).unwrap();
        let owned = |part: &TopicPartitionList| {
            part.elements()
                .iter()
                .map(|element| (element.partition(), element.offset()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            owned(&parts[0]),
            [
                (0, Offset::Offset(100)),
                (2, Offset::Offset(102)),
                (4, Offset::Offset(104))
            ]
        );
        assert_eq!(
            owned(&parts[1]),
            [(1, Offset::Offset(101)), (3, Offset::Offset(103))]
        );
    }
}
