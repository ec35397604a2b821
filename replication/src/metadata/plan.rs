//! The controller's decisions: pure functions of a [`MetadataImage`] that check an admin
//! request the way Kafka does and say which records to propose for it. The controller leader
//! runs them on its image and proposes the records; they take effect on every broker when
//! committed and applied. An empty list means there is nothing to change.
//!
//! Topic names, partition counts and topic configs are checked by the same functions as on a
//! single broker (`engine::catalog`, `engine::topic_config`), so both refuse the same requests.
//! Between planning and commit another proposal may have changed the image; applying is total
//! (a record that no longer fits is stale and changes nothing), so a plan never needs a lock.

use std::collections::BTreeMap;

use engine::catalog::{is_internal_topic, validate_partition_count, validate_topic_name};
use engine::{topic_config, LogConfig};
use thiserror::Error;

use super::assignment::Placement;
use super::image::{MetadataImage, Reassignment};
use super::records::{MetadataRecord, ProducerIdBlock, Replica};
use crate::NodeId;

/// Why a request is refused; each names the Kafka error code the broker answers with.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PlanError {
    /// TOPIC_ALREADY_EXISTS
    #[error("topic '{0}' already exists")]
    TopicAlreadyExists(String),
    /// UNKNOWN_TOPIC_OR_PARTITION
    #[error("topic '{topic}' has no partition {partition}")]
    UnknownPartition { topic: String, partition: u32 },
    /// UNKNOWN_TOPIC_OR_PARTITION
    #[error("topic '{0}' does not exist")]
    UnknownTopic(String),
    /// INVALID_TOPIC_EXCEPTION: a bad name, or an internal topic clients may not change.
    #[error("{0}")]
    InvalidTopic(String),
    /// INVALID_PARTITIONS
    #[error("{0}")]
    InvalidPartitions(String),
    /// INVALID_REPLICATION_FACTOR
    #[error("replication factor {requested} is not between 1 and the {live_brokers} live brokers")]
    InvalidReplicationFactor { requested: i64, live_brokers: usize },
    /// INVALID_REPLICA_ASSIGNMENT
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    /// INVALID_CONFIG
    #[error("{0}")]
    InvalidConfig(String),
    /// NO_REASSIGNMENT_IN_PROGRESS: a cancellation of a partition that is not being moved.
    #[error("partition {partition} of topic '{topic}' is not being moved")]
    NoReassignmentInProgress { topic: String, partition: u32 },
    /// UNKNOWN_SERVER_ERROR: the caller's fresh topic id is taken (it should draw another).
    #[error("topic id {0:02x?} is in use")]
    TopicIdInUse([u8; 16]),
    /// STALE_BROKER_EPOCH: the broker run asking is not the one registered (its registration
    /// is not committed yet, or the broker restarted since).
    #[error("broker {node_id} run {incarnation} is not the registered one")]
    StaleBrokerEpoch { node_id: NodeId, incarnation: u64 },
    /// UNKNOWN_SERVER_ERROR: no block of producer ids fits below `i64::MAX` any more.
    #[error("every producer id has been handed out")]
    ProducerIdsExhausted,
}

/// A CreateTopics request for one topic, its defaults (-1) already resolved by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    /// A fresh random id: plans draw no randomness of their own.
    pub topic_id: [u8; 16],
    pub partitions: i32,
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
}

/// Creates a topic, its partitions spread over the live brokers (see `assignment`).
/// `broker_log_config` holds the broker-wide defaults the topic's overrides are checked with.
pub fn plan_create_topic(
    image: &MetadataImage,
    broker_log_config: &LogConfig,
    topic: &NewTopic,
) -> Result<Vec<MetadataRecord>, PlanError> {
    validate_topic_name(&topic.name).map_err(|error| PlanError::InvalidTopic(error.to_string()))?;
    if image.topic(&topic.name).is_some() {
        return Err(PlanError::TopicAlreadyExists(topic.name.clone()));
    }
    let partitions = validate_partition_count(i64::from(topic.partitions))
        .map_err(|error| PlanError::InvalidPartitions(error.to_string()))?;
    let mut placement = Placement::of(image);
    let replication_factor =
        checked_replication_factor(i64::from(topic.replication_factor), &placement)?;
    topic_config::validate(broker_log_config, &topic.configs).map_err(PlanError::InvalidConfig)?;
    if image.topic_by_id(&topic.topic_id).is_some() {
        return Err(PlanError::TopicIdInUse(topic.topic_id));
    }
    Ok(vec![MetadataRecord::CreateTopic {
        name: topic.name.clone(),
        topic_id: topic.topic_id,
        configs: topic.configs.clone().into_iter().collect(),
        partitions: placement.assign(0..partitions, replication_factor),
    }])
}

pub fn plan_delete_topic(
    image: &MetadataImage,
    name: &str,
) -> Result<Vec<MetadataRecord>, PlanError> {
    changeable_topic(image, name)?;
    Ok(vec![MetadataRecord::DeleteTopic {
        name: name.to_owned(),
    }])
}

/// Grows a topic to `count` partitions (Kafka never shrinks one); the new ones get as many
/// replicas as its partition 0 has, spread as a new topic's are.
pub fn plan_create_partitions(
    image: &MetadataImage,
    name: &str,
    count: i32,
) -> Result<Vec<MetadataRecord>, PlanError> {
    let topic = changeable_topic(image, name)?;
    let count = validate_partition_count(i64::from(count))
        .map_err(|error| PlanError::InvalidPartitions(error.to_string()))?;
    let current = topic.partitions.len();
    let current = u32::try_from(current)
        .ok()
        .filter(|&current| current < count)
        .ok_or_else(|| {
            PlanError::InvalidPartitions(format!(
                "topic '{name}' already has {current} partitions; the count can only grow"
            ))
        })?;
    let mut placement = Placement::of(image);
    let replicas = topic.replicas(0).map_or(1, <[Replica]>::len);
    let replication_factor = checked_replication_factor(replicas as i64, &placement)?;
    Ok(vec![MetadataRecord::CreatePartitions {
        topic: name.to_owned(),
        new: placement.assign(current..count, replication_factor),
    }])
}

/// Moves a partition to the brokers `node_ids` (the first becomes its preferred leader), or
/// changes the target of its move under way. A broker that hosts the partition already keeps
/// its shard; one that does not must be live (it has to catch up before it can vote) and gets
/// its least-loaded shard.
pub fn plan_reassign(
    image: &MetadataImage,
    topic: &str,
    partition: u32,
    node_ids: &[NodeId],
) -> Result<Vec<MetadataRecord>, PlanError> {
    let (current, running) = partition_state(image, topic, partition)?;
    if node_ids.is_empty() {
        return Err(PlanError::InvalidReplicaAssignment(
            "a partition needs at least one replica".to_owned(),
        ));
    }
    let mut placement = Placement::of(image);
    let mut replicas: Vec<Replica> = Vec::with_capacity(node_ids.len());
    for (position, &node_id) in node_ids.iter().enumerate() {
        if replicas.iter().any(|replica| replica.node_id == node_id) {
            return Err(PlanError::InvalidReplicaAssignment(format!(
                "broker {node_id} is named twice"
            )));
        }
        let kept = current.iter().find(|replica| replica.node_id == node_id);
        let replica = match (kept, image.broker(node_id)) {
            (Some(kept), _) => *kept,
            (None, Some(broker)) if broker.fenced => {
                return Err(PlanError::InvalidReplicaAssignment(format!(
                    "broker {node_id} is fenced"
                )))
            }
            (None, _) => placement.place_on(node_id, position == 0).ok_or_else(|| {
                PlanError::InvalidReplicaAssignment(format!("broker {node_id} is not registered"))
            })?,
        };
        replicas.push(replica);
    }
    let target = running.map_or(current, |running| running.target.as_slice());
    if replicas == target {
        return Ok(vec![]);
    }
    Ok(vec![MetadataRecord::ReassignPartition {
        topic: topic.to_owned(),
        partition,
        replicas,
    }])
}

/// Cancels a partition's move (Kafka's reassignment to null): it goes back to the replicas it
/// had before, the same way it was going forward.
pub fn plan_cancel_reassignment(
    image: &MetadataImage,
    topic: &str,
    partition: u32,
) -> Result<Vec<MetadataRecord>, PlanError> {
    let running = partition_state(image, topic, partition)?.1.ok_or_else(|| {
        PlanError::NoReassignmentInProgress {
            topic: topic.to_owned(),
            partition,
        }
    })?;
    if running.target == running.original {
        return Ok(vec![]);
    }
    Ok(vec![MetadataRecord::ReassignPartition {
        topic: topic.to_owned(),
        partition,
        replicas: running.original.clone(),
    }])
}

/// Completes a partition's move once its Raft group's committed voters (as its leader reports
/// them) are the target's brokers. Nothing to do if they are not (any more): the leader's view
/// or the request is behind, and the leader asks again while the move runs.
pub fn plan_complete_reassignment(
    image: &MetadataImage,
    topic: &str,
    partition: u32,
    voters: &[NodeId],
) -> Result<Vec<MetadataRecord>, PlanError> {
    let Some(running) = partition_state(image, topic, partition)?.1 else {
        return Ok(vec![]);
    };
    let mut target: Vec<NodeId> = running.target.iter().map(|r| r.node_id).collect();
    let mut voters = voters.to_vec();
    target.sort_unstable();
    voters.sort_unstable();
    if target != voters {
        return Ok(vec![]);
    }
    Ok(vec![MetadataRecord::CompleteReassignment {
        topic: topic.to_owned(),
        partition,
        replicas: running.target.clone(),
    }])
}

/// A partition's replicas now and its move under way, if any.
fn partition_state<'image>(
    image: &'image MetadataImage,
    topic: &str,
    partition: u32,
) -> Result<(&'image [Replica], Option<&'image Reassignment>), PlanError> {
    let found = image
        .topic(topic)
        .ok_or_else(|| PlanError::UnknownTopic(topic.to_owned()))?;
    let replicas = found
        .replicas(partition)
        .ok_or_else(|| PlanError::UnknownPartition {
            topic: topic.to_owned(),
            partition,
        })?;
    Ok((replicas, found.reassignments.get(&partition)))
}

/// Replaces a topic's configuration overrides with what `change` makes of the current ones
/// (`Err` says why not: INVALID_CONFIG), as `engine::catalog::Catalog::alter_topic_configs`
/// does on a single broker, and proposes the difference.
pub fn plan_alter_configs(
    image: &MetadataImage,
    broker_log_config: &LogConfig,
    name: &str,
    change: impl FnOnce(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, String>,
) -> Result<Vec<MetadataRecord>, PlanError> {
    let current = &changeable_topic(image, name)?.configs;
    let altered = change(current).map_err(PlanError::InvalidConfig)?;
    topic_config::validate(broker_log_config, &altered).map_err(PlanError::InvalidConfig)?;
    let set: Vec<(String, String)> = altered
        .iter()
        .filter(|&(key, value)| current.get(key) != Some(value))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    let delete: Vec<String> = current
        .keys()
        .filter(|key| !altered.contains_key(*key))
        .cloned()
        .collect();
    if set.is_empty() && delete.is_empty() {
        return Ok(vec![]);
    }
    Ok(vec![MetadataRecord::AlterTopicConfigs {
        name: name.to_owned(),
        set,
        delete,
    }])
}

/// Hands run `incarnation` of broker `node_id` the next `size` producer ids (Kafka's
/// AllocateProducerIds, KIP-730): the block starts where the last one handed out ended, so
/// ids are unique in the cluster for its whole life, whichever broker or run asks. Only the
/// registered run gets one: a run that is not (yet) would take up a block that the image then
/// ties to a run the broker no longer is.
pub fn plan_allocate_producer_ids(
    image: &MetadataImage,
    node_id: NodeId,
    incarnation: u64,
    size: u32,
) -> Result<Vec<MetadataRecord>, PlanError> {
    assert!(size > 0, "a producer id block holds ids");
    let registered = image
        .broker(node_id)
        .is_some_and(|broker| broker.registration.incarnation == incarnation);
    if !registered {
        return Err(PlanError::StaleBrokerEpoch {
            node_id,
            incarnation,
        });
    }
    let block = ProducerIdBlock {
        node_id,
        incarnation,
        first_id: image.producer_id_next(),
        size,
    };
    if block.end_id().is_none() {
        return Err(PlanError::ProducerIdsExhausted);
    }
    Ok(vec![MetadataRecord::AllocateProducerIds(block)])
}

/// Fences the unfenced brokers not heard from for more than `session_timeout_ms` (or never:
/// a new controller leader should count every broker as heard from when it took over), and
/// unfences the fenced ones heard from since. `heartbeats` holds each broker's last heartbeat,
/// in the caller's milliseconds, as is `now_ms`.
pub fn plan_liveness(
    image: &MetadataImage,
    heartbeats: &BTreeMap<NodeId, u64>,
    now_ms: u64,
    session_timeout_ms: u64,
) -> Vec<MetadataRecord> {
    image
        .brokers()
        .filter_map(|broker| {
            let node_id = broker.registration.node_id;
            let alive = heartbeats
                .get(&node_id)
                .is_some_and(|&heard_ms| now_ms.saturating_sub(heard_ms) <= session_timeout_ms);
            match (broker.fenced, alive) {
                (false, false) => Some(MetadataRecord::FenceBroker { node_id }),
                (true, true) => Some(MetadataRecord::UnfenceBroker { node_id }),
                _ => None,
            }
        })
        .collect()
}

fn checked_replication_factor(requested: i64, placement: &Placement) -> Result<usize, PlanError> {
    let live_brokers = placement.live_broker_count();
    usize::try_from(requested)
        .ok()
        .filter(|factor| (1..=live_brokers).contains(factor))
        .ok_or(PlanError::InvalidReplicationFactor {
            requested,
            live_brokers,
        })
}

/// The topic `name`, if it exists and is not internal (clients may not delete, grow or
/// reconfigure the broker's own topics).
fn changeable_topic<'image>(
    image: &'image MetadataImage,
    name: &str,
) -> Result<&'image super::TopicImage, PlanError> {
    if is_internal_topic(name) {
        return Err(PlanError::InvalidTopic(format!(
            "topic '{name}' is internal to the broker"
        )));
    }
    image
        .topic(name)
        .ok_or_else(|| PlanError::UnknownTopic(name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::records::BrokerRegistration;

    /// Brokers 1..=count, live, with `shards` shards each.
    fn cluster(count: u64, shards: u32) -> MetadataImage {
        let mut image = MetadataImage::default();
        for node_id in 1..=count {
            let registration = BrokerRegistration {
                node_id,
                incarnation: 1,
                kafka_host: "localhost".to_owned(),
                kafka_port: 9000 + node_id as u16,
                rpc_address: format!("localhost:{}", 9100 + node_id),
                shard_count: shards,
            };
            image.apply(1, &MetadataRecord::RegisterBroker(registration));
            image.apply(1, &MetadataRecord::UnfenceBroker { node_id });
        }
        image
    }

    fn new_topic(name: &str, partitions: i32, replication_factor: i16) -> NewTopic {
        NewTopic {
            name: name.to_owned(),
            topic_id: [name.len() as u8; 16],
            partitions,
            replication_factor,
            configs: BTreeMap::new(),
        }
    }

    fn apply(image: &mut MetadataImage, records: &[MetadataRecord]) {
        let index = image.last_applied_index() + 1;
        for record in records {
            assert_eq!(image.apply(index, record), super::super::Applied::Changed);
        }
    }

    fn create(image: &mut MetadataImage, topic: &NewTopic) {
        let records = plan_create_topic(image, &LogConfig::default(), topic).expect("valid");
        apply(image, &records);
    }

    #[test]
    fn producer_id_blocks_follow_each_other_and_go_to_registered_runs_only() {
        let mut image = cluster(3, 1);
        let mut handed_out = Vec::new();
        for node_id in [2, 1, 2, 3] {
            let records =
                plan_allocate_producer_ids(&image, node_id, 1, 1_000).expect("registered");
            let [MetadataRecord::AllocateProducerIds(block)] = records.as_slice() else {
                panic!("one block: {records:?}");
            };
            assert_eq!((block.node_id, block.incarnation), (node_id, 1));
            handed_out.push(block.first_id);
            apply(&mut image, &records);
            assert_eq!(image.producer_id_block(node_id), Some(block));
        }
        assert_eq!(handed_out, vec![0, 1_000, 2_000, 3_000]);

        // A run other than the registered one (a restart not registered yet, a broker never
        // registered) gets nothing.
        for (node_id, incarnation) in [(1, 2), (4, 1)] {
            assert_eq!(
                plan_allocate_producer_ids(&image, node_id, incarnation, 1_000),
                Err(PlanError::StaleBrokerEpoch {
                    node_id,
                    incarnation
                })
            );
        }

        let records = [MetadataRecord::AllocateProducerIds(ProducerIdBlock {
            node_id: 1,
            incarnation: 1,
            first_id: i64::MAX - 1_500,
            size: 1_000,
        })];
        apply(&mut image, &records);
        assert_eq!(
            plan_allocate_producer_ids(&image, 1, 1, 1_000),
            Err(PlanError::ProducerIdsExhausted)
        );
    }

    #[test]
    fn a_topic_is_spread_over_brokers_and_shards() {
        let mut image = cluster(3, 2);
        create(&mut image, &new_topic("orders", 6, 2));
        let topic = image.topic("orders").expect("created");
        assert_eq!(topic.partitions.len(), 6);
        for node_id in 1..=3 {
            let leaderships = (0..6)
                .filter(|&partition| {
                    topic.preferred_leader(partition).map(|r| r.node_id) == Some(node_id)
                })
                .count();
            assert_eq!(leaderships, 2, "broker {node_id}");
            for shard in 0..2 {
                assert_eq!(image.hosted_partitions(node_id, shard).count(), 2);
            }
        }
    }

    #[test]
    fn mixed_replication_factors_keep_both_counts_even() {
        // Placing leaders by leadership count alone, this sequence left one broker with more
        // replicas and the other with more leaderships, and the next single-replica
        // partition could not keep both even.
        let mut image = cluster(2, 1);
        let counts = |image: &MetadataImage, node_id| {
            let topics = || image.topics().flat_map(|(_, topic)| &topic.partitions);
            let replicas = topics().flatten().filter(|r| r.node_id == node_id).count();
            let leaders = topics().filter(|set| set[0].node_id == node_id).count();
            (replicas, leaders)
        };
        for (number, (partitions, replication_factor)) in
            [(9, 1), (2, 2), (3, 1)].into_iter().enumerate()
        {
            create(
                &mut image,
                &new_topic(&"t".repeat(number + 1), partitions, replication_factor),
            );
            let (replicas_1, leaders_1) = counts(&image, 1);
            let (replicas_2, leaders_2) = counts(&image, 2);
            assert!(
                replicas_1.abs_diff(replicas_2) <= 1,
                "{replicas_1} and {replicas_2}"
            );
            assert!(
                leaders_1.abs_diff(leaders_2) <= 1,
                "{leaders_1} and {leaders_2}"
            );
        }
    }

    #[test]
    fn create_topic_refusals() {
        let mut image = cluster(2, 1);
        let config = LogConfig::default();
        let refused = |image: &MetadataImage, topic: &NewTopic| {
            plan_create_topic(image, &config, topic).expect_err("refused")
        };
        assert!(matches!(
            refused(&image, &new_topic("a/b", 1, 1)),
            PlanError::InvalidTopic(_)
        ));
        assert!(matches!(
            refused(&image, &new_topic("", 1, 1)),
            PlanError::InvalidTopic(_)
        ));
        assert!(matches!(
            refused(&image, &new_topic("t", 0, 1)),
            PlanError::InvalidPartitions(_)
        ));
        assert_eq!(
            refused(&image, &new_topic("t", 1, 3)),
            PlanError::InvalidReplicationFactor {
                requested: 3,
                live_brokers: 2
            }
        );
        assert!(matches!(
            refused(&image, &new_topic("t", 1, 0)),
            PlanError::InvalidReplicationFactor { .. }
        ));
        let bad_config = NewTopic {
            configs: [("retention.ms".to_owned(), "soon".to_owned())].into(),
            ..new_topic("t", 1, 1)
        };
        assert!(matches!(
            refused(&image, &bad_config),
            PlanError::InvalidConfig(_)
        ));
        let unknown_key = NewTopic {
            configs: [("no.such.key".to_owned(), "1".to_owned())].into(),
            ..new_topic("t", 1, 1)
        };
        assert!(matches!(
            refused(&image, &unknown_key),
            PlanError::InvalidConfig(_)
        ));

        create(&mut image, &new_topic("t", 1, 1));
        assert_eq!(
            refused(&image, &new_topic("t", 1, 1)),
            PlanError::TopicAlreadyExists("t".to_owned())
        );
        // new_topic derives the id from the name's length.
        assert_eq!(
            refused(&image, &new_topic("u", 1, 1)),
            PlanError::TopicIdInUse([1; 16])
        );

        // Fenced brokers do not count.
        apply(&mut image, &[MetadataRecord::FenceBroker { node_id: 2 }]);
        assert!(matches!(
            refused(&image, &new_topic("two", 1, 2)),
            PlanError::InvalidReplicationFactor {
                live_brokers: 1,
                ..
            }
        ));
    }

    #[test]
    fn fenced_brokers_get_no_new_replicas() {
        let mut image = cluster(3, 1);
        apply(&mut image, &[MetadataRecord::FenceBroker { node_id: 2 }]);
        create(&mut image, &new_topic("orders", 8, 2));
        assert_eq!(image.hosted_partitions(2, 0).count(), 0);
        assert_eq!(image.hosted_partitions(1, 0).count(), 8);
        assert_eq!(image.hosted_partitions(3, 0).count(), 8);
    }

    #[test]
    fn delete_topic_refusals() {
        let mut image = cluster(1, 1);
        assert_eq!(
            plan_delete_topic(&image, "t"),
            Err(PlanError::UnknownTopic("t".to_owned()))
        );
        create(&mut image, &new_topic(engine::catalog::OFFSETS_TOPIC, 1, 1));
        assert!(matches!(
            plan_delete_topic(&image, engine::catalog::OFFSETS_TOPIC),
            Err(PlanError::InvalidTopic(_))
        ));
        create(&mut image, &new_topic("t", 1, 1));
        let records = plan_delete_topic(&image, "t").expect("exists");
        apply(&mut image, &records);
        assert!(image.topic("t").is_none());
    }

    #[test]
    fn create_partitions_grows_with_the_topics_replication_factor() {
        let mut image = cluster(3, 1);
        create(&mut image, &new_topic("t", 2, 2));
        assert!(matches!(
            plan_create_partitions(&image, "t", 2),
            Err(PlanError::InvalidPartitions(_))
        ));
        assert!(matches!(
            plan_create_partitions(&image, "t", 1),
            Err(PlanError::InvalidPartitions(_))
        ));
        assert_eq!(
            plan_create_partitions(&image, "u", 3),
            Err(PlanError::UnknownTopic("u".to_owned()))
        );
        let records = plan_create_partitions(&image, "t", 5).expect("grows");
        apply(&mut image, &records);
        let topic = image.topic("t").expect("exists");
        assert_eq!(topic.partitions.len(), 5);
        assert!(topic.partitions.iter().all(|replicas| replicas.len() == 2));

        apply(
            &mut image,
            &[
                MetadataRecord::FenceBroker { node_id: 2 },
                MetadataRecord::FenceBroker { node_id: 3 },
            ],
        );
        assert!(matches!(
            plan_create_partitions(&image, "t", 6),
            Err(PlanError::InvalidReplicationFactor { .. })
        ));
    }

    fn replicas_of(image: &MetadataImage, topic: &str) -> Vec<Replica> {
        image
            .topic(topic)
            .and_then(|t| t.replicas(0))
            .expect("exists")
            .to_vec()
    }

    fn node_ids(replicas: &[Replica]) -> Vec<NodeId> {
        replicas.iter().map(|replica| replica.node_id).collect()
    }

    #[test]
    fn reassignment_keeps_shards_of_brokers_that_stay() {
        let mut image = cluster(3, 4);
        create(&mut image, &new_topic("t", 1, 2));
        let before = replicas_of(&image, "t");
        let staying = before[1];
        let newcomer = (1..=3)
            .find(|node_id| before.iter().all(|r| r.node_id != *node_id))
            .expect("one broker does not host it");
        let target = [staying.node_id, newcomer];
        let records = plan_reassign(&image, "t", 0, &target).expect("valid");
        apply(&mut image, &records);
        let during = replicas_of(&image, "t");
        assert_eq!(during[0], staying);
        assert_eq!(during[1].node_id, newcomer);
        assert!(during[1].shard < 4);
        assert_eq!(during[2], before[0], "the leaving broker stays involved");
        // Asked again while it runs: nothing new.
        assert_eq!(plan_reassign(&image, "t", 0, &target), Ok(vec![]));

        // The leader's voters are not the target yet: nothing to complete.
        let partial = [before[0].node_id, staying.node_id, newcomer];
        assert_eq!(
            plan_complete_reassignment(&image, "t", 0, &partial),
            Ok(vec![])
        );
        let records =
            plan_complete_reassignment(&image, "t", 0, &[newcomer, staying.node_id]).expect("ok");
        apply(&mut image, &records);
        assert_eq!(replicas_of(&image, "t"), during[..2].to_vec());
        assert!(image.topic("t").expect("exists").reassignments.is_empty());
        assert_eq!(plan_reassign(&image, "t", 0, &target), Ok(vec![]));
        assert_eq!(
            plan_complete_reassignment(&image, "t", 0, &target),
            Ok(vec![])
        );
    }

    #[test]
    fn a_cancelled_move_goes_back_to_the_original_replicas() {
        let mut image = cluster(3, 1);
        create(&mut image, &new_topic("t", 1, 1));
        let original = replicas_of(&image, "t");
        assert_eq!(
            plan_cancel_reassignment(&image, "t", 0),
            Err(PlanError::NoReassignmentInProgress {
                topic: "t".to_owned(),
                partition: 0
            })
        );
        let elsewhere = (1..=3)
            .find(|node_id| *node_id != original[0].node_id)
            .expect("another broker");
        let records = plan_reassign(&image, "t", 0, &[elsewhere]).expect("valid");
        apply(&mut image, &records);
        let records = plan_cancel_reassignment(&image, "t", 0).expect("under way");
        apply(&mut image, &records);
        let topic = image.topic("t").expect("exists");
        assert_eq!(topic.reassignments[&0].target, original);
        assert_eq!(
            node_ids(&topic.partitions[0]),
            vec![original[0].node_id, elsewhere]
        );
        // Cancelled already: going back still, nothing new.
        assert_eq!(plan_cancel_reassignment(&image, "t", 0), Ok(vec![]));
        let records = plan_complete_reassignment(&image, "t", 0, &node_ids(&original)).expect("ok");
        apply(&mut image, &records);
        assert_eq!(replicas_of(&image, "t"), original);
    }

    #[test]
    fn reassignment_refusals() {
        let mut image = cluster(3, 1);
        create(&mut image, &new_topic("t", 1, 1));
        let hosting = replicas_of(&image, "t")[0].node_id;
        let fenced = (1..=3).find(|n| *n != hosting).expect("another broker");
        apply(
            &mut image,
            &[MetadataRecord::FenceBroker { node_id: fenced }],
        );
        let refused = |topic: &str, partition, nodes: &[NodeId]| {
            plan_reassign(&image, topic, partition, nodes).expect_err("refused")
        };
        assert_eq!(
            refused("u", 0, &[1]),
            PlanError::UnknownTopic("u".to_owned())
        );
        assert_eq!(
            refused("t", 1, &[1]),
            PlanError::UnknownPartition {
                topic: "t".to_owned(),
                partition: 1
            }
        );
        assert!(matches!(
            plan_cancel_reassignment(&image, "t", 1),
            Err(PlanError::UnknownPartition { .. })
        ));
        assert!(matches!(
            refused("t", 0, &[]),
            PlanError::InvalidReplicaAssignment(_)
        ));
        assert!(matches!(
            refused("t", 0, &[hosting, hosting]),
            PlanError::InvalidReplicaAssignment(_)
        ));
        assert!(matches!(
            refused("t", 0, &[hosting, 7]),
            PlanError::InvalidReplicaAssignment(_)
        ));
        // A fenced broker cannot catch up to join the group.
        assert!(matches!(
            refused("t", 0, &[hosting, fenced]),
            PlanError::InvalidReplicaAssignment(_)
        ));
    }

    #[test]
    fn configs_change_by_difference() {
        let mut image = cluster(1, 1);
        let config = LogConfig::default();
        let topic = NewTopic {
            configs: [
                ("retention.ms".to_owned(), "1000".to_owned()),
                ("segment.ms".to_owned(), "60000".to_owned()),
            ]
            .into(),
            ..new_topic("t", 1, 1)
        };
        create(&mut image, &topic);
        let records = plan_alter_configs(&image, &config, "t", |current| {
            let mut altered = current.clone();
            altered.remove("retention.ms");
            altered.insert("cleanup.policy".to_owned(), "compact".to_owned());
            Ok(altered)
        })
        .expect("valid");
        assert_eq!(
            records,
            vec![MetadataRecord::AlterTopicConfigs {
                name: "t".to_owned(),
                set: vec![("cleanup.policy".to_owned(), "compact".to_owned())],
                delete: vec!["retention.ms".to_owned()],
            }]
        );
        apply(&mut image, &records);
        assert_eq!(
            plan_alter_configs(&image, &config, "t", |current| Ok(current.clone())),
            Ok(vec![])
        );
        assert_eq!(
            plan_alter_configs(&image, &config, "t", |_| Err("no".to_owned())),
            Err(PlanError::InvalidConfig("no".to_owned()))
        );
        assert!(matches!(
            plan_alter_configs(&image, &config, "t", |_| {
                Ok([("segment.bytes".to_owned(), "-5".to_owned())].into())
            }),
            Err(PlanError::InvalidConfig(_))
        ));
        assert_eq!(
            plan_alter_configs(&image, &config, "u", |current| Ok(current.clone())),
            Err(PlanError::UnknownTopic("u".to_owned()))
        );
    }

    #[test]
    fn silent_brokers_are_fenced_and_heard_ones_unfenced() {
        let mut image = cluster(3, 1);
        let timeout_ms = 1000;
        let heartbeats: BTreeMap<NodeId, u64> = [(1, 5_000), (2, 3_900)].into();
        // Broker 2 was last heard 1100 ms ago, broker 3 never.
        let records = plan_liveness(&image, &heartbeats, 5_000, timeout_ms);
        assert_eq!(
            records,
            vec![
                MetadataRecord::FenceBroker { node_id: 2 },
                MetadataRecord::FenceBroker { node_id: 3 },
            ]
        );
        apply(&mut image, &records);
        assert_eq!(
            plan_liveness(&image, &heartbeats, 5_000, timeout_ms),
            vec![]
        );
        // Exactly at the timeout still counts as alive; a heartbeat "from the future" too.
        let heartbeats: BTreeMap<NodeId, u64> = [(1, 4_000), (2, 9_000)].into();
        assert_eq!(
            plan_liveness(&image, &heartbeats, 5_000, timeout_ms),
            vec![MetadataRecord::UnfenceBroker { node_id: 2 }]
        );
    }
}
