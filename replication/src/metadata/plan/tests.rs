//! The planning functions' tests: each admin request planned against an image, checked as
//! Kafka checks it, and its records applied to see what every broker would end up with.

use super::*;
use crate::metadata::records::{BrokerRegistration, ListenerEndpoint};

/// Brokers 1..=count, live, with `shards` shards each.
fn cluster(count: u64, shards: u32) -> MetadataImage {
    let mut image = MetadataImage::default();
    for node_id in 1..=count {
        let registration = BrokerRegistration {
            node_id,
            incarnation: 1,
            endpoints: vec![ListenerEndpoint {
                listener: Some("PLAINTEXT".to_owned()),
                host: "localhost".to_owned(),
                port: 9000 + node_id as u16,
            }],
            rpc_address: format!("localhost:{}", 9100 + node_id),
            shard_count: shards,
        };
        image.apply(1, &MetadataRecord::RegisterBroker(Box::new(registration)));
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
        let records = plan_allocate_producer_ids(&image, node_id, 1, 1_000).expect("registered");
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
