//! The image's tests: records applied in log order, stale ones changing nothing, and a
//! snapshot rebuilding the same image.

use super::*;
use crate::metadata::records::ListenerEndpoint;

fn registration(node_id: NodeId, incarnation: u64) -> BrokerRegistration {
    BrokerRegistration {
        node_id,
        incarnation,
        endpoints: vec![ListenerEndpoint {
            listener: Some("PLAINTEXT".to_owned()),
            host: format!("broker-{node_id}"),
            port: 9092,
        }],
        rpc_address: format!("broker-{node_id}:9093"),
        shard_count: 2,
    }
}

fn replica(node_id: NodeId, shard: u32) -> Replica {
    Replica { node_id, shard }
}

fn create(name: &str, id: u8, partitions: Vec<Vec<Replica>>) -> MetadataRecord {
    MetadataRecord::CreateTopic {
        name: name.to_owned(),
        topic_id: [id; 16],
        configs: vec![("retention.ms".to_owned(), "1000".to_owned())],
        partitions: (0u32..)
            .zip(partitions)
            .map(|(partition, replicas)| PartitionAssignment {
                partition,
                replicas,
            })
            .collect(),
    }
}

#[test]
fn brokers_register_fenced_and_fencing_follows_their_runs() {
    let mut image = MetadataImage::default();
    let first_run = registration(1, 10);
    let register = MetadataRecord::RegisterBroker(Box::new(first_run.clone()));
    assert_eq!(image.apply(1, &register), Applied::Changed);
    assert!(image.broker(1).is_some_and(|broker| broker.fenced));
    assert_eq!(image.live_brokers().count(), 0);
    assert!(image.has_run(1, 10) && !image.is_live_run(1, 10));

    let unfence = MetadataRecord::UnfenceBroker { node_id: 1 };
    assert_eq!(image.apply(2, &unfence), Applied::Changed);
    assert_eq!(image.live_brokers().collect::<Vec<_>>(), vec![&first_run]);
    assert!(image.is_live_run(1, 10));
    assert!(matches!(image.apply(2, &unfence), Applied::Stale(_)));
    // The same run registering again stays live; a new run starts fenced.
    assert_eq!(image.apply(3, &register), Applied::Changed);
    assert_eq!(image.live_brokers().count(), 1);
    let restarted = MetadataRecord::RegisterBroker(Box::new(registration(1, 11)));
    assert!(!image.has_run(1, 11) && !image.is_live_run(1, 11));
    assert_eq!(image.apply(4, &restarted), Applied::Changed);
    assert_eq!(image.live_brokers().count(), 0);
    // The new run is registered but fenced until heard from; the old one is gone.
    assert!(image.has_run(1, 11) && !image.is_live_run(1, 11));
    assert!(!image.has_run(1, 10) && !image.is_live_run(1, 10));

    assert_eq!(image.apply(5, &unfence), Applied::Changed);
    assert!(image.is_live_run(1, 11));
    let fence = MetadataRecord::FenceBroker { node_id: 1 };
    assert_eq!(image.apply(6, &fence), Applied::Changed);
    assert_eq!(image.live_brokers().count(), 0);
    assert!(image.has_run(1, 11) && !image.is_live_run(1, 11));
    assert!(matches!(
        image.apply(7, &MetadataRecord::FenceBroker { node_id: 9 }),
        Applied::Stale(_)
    ));
    let shardless = BrokerRegistration {
        shard_count: 0,
        ..registration(2, 1)
    };
    assert!(matches!(
        image.apply(8, &MetadataRecord::RegisterBroker(Box::new(shardless))),
        Applied::Stale(_)
    ));
    assert!(image.broker(2).is_none());
    assert_eq!(image.last_applied_index(), 8);
}

#[test]
fn topics_are_created_once_and_deleted() {
    let mut image = MetadataImage::default();
    let orders = create("orders", 1, vec![vec![replica(1, 0), replica(2, 1)]]);
    assert_eq!(image.apply(1, &orders), Applied::Changed);
    let topic = image.topic("orders").expect("created");
    assert_eq!(topic.preferred_leader(0), Some(replica(1, 0)));
    assert_eq!(topic.preferred_leader(1), None);
    assert_eq!(
        topic.configs.get("retention.ms").map(String::as_str),
        Some("1000")
    );
    assert_eq!(
        image.topic_by_id(&[1; 16]).map(|(name, _)| name),
        Some("orders")
    );

    // A stale creation (same name, or another name with the same id) changes nothing.
    let again = create("orders", 2, vec![vec![replica(3, 0)]]);
    assert!(matches!(image.apply(2, &again), Applied::Stale(_)));
    let same_id = create("other", 1, vec![vec![replica(3, 0)]]);
    assert!(matches!(image.apply(2, &same_id), Applied::Stale(_)));
    assert_eq!(image.topics().count(), 1);

    let delete = MetadataRecord::DeleteTopic {
        name: "orders".to_owned(),
    };
    assert_eq!(image.apply(3, &delete), Applied::Changed);
    assert!(image.topic("orders").is_none());
    assert!(matches!(image.apply(4, &delete), Applied::Stale(_)));
}

#[test]
fn malformed_assignments_are_stale() {
    let mut image = MetadataImage::default();
    let twice = create("a", 1, vec![vec![replica(1, 0), replica(1, 1)]]);
    let empty = create("a", 1, vec![vec![]]);
    let none = create("a", 1, vec![]);
    let gap = MetadataRecord::CreateTopic {
        name: "a".to_owned(),
        topic_id: [1; 16],
        configs: vec![],
        partitions: vec![PartitionAssignment {
            partition: 1,
            replicas: vec![replica(1, 0)],
        }],
    };
    for record in [twice, empty, none, gap] {
        assert!(
            matches!(image.apply(1, &record), Applied::Stale(_)),
            "{record:?}"
        );
    }
    assert_eq!(
        image,
        MetadataImage {
            last_applied_index: 1,
            ..MetadataImage::default()
        }
    );
}

#[test]
fn configs_are_set_then_deleted() {
    let mut image = MetadataImage::default();
    image.apply(1, &create("orders", 1, vec![vec![replica(1, 0)]]));
    let alter = MetadataRecord::AlterTopicConfigs {
        name: "orders".to_owned(),
        set: vec![("segment.ms".to_owned(), "5".to_owned())],
        delete: vec!["retention.ms".to_owned()],
    };
    assert_eq!(image.apply(2, &alter), Applied::Changed);
    let configs = &image.topic("orders").expect("created").configs;
    assert_eq!(
        configs.iter().collect::<Vec<_>>(),
        vec![(&"segment.ms".to_owned(), &"5".to_owned())]
    );
    let missing = MetadataRecord::AlterTopicConfigs {
        name: "missing".to_owned(),
        set: vec![],
        delete: vec![],
    };
    assert!(matches!(image.apply(3, &missing), Applied::Stale(_)));
}

#[test]
fn partitions_are_reassigned_and_added_in_order() {
    let mut image = MetadataImage::default();
    image.apply(1, &create("orders", 1, vec![vec![replica(1, 0)]]));
    let reassign = |partition, replicas| MetadataRecord::ReassignPartition {
        topic: "orders".to_owned(),
        partition,
        replicas,
    };
    let moved = vec![replica(2, 1), replica(3, 0)];
    assert_eq!(
        image.apply(2, &reassign(0, moved.clone())),
        Applied::Changed
    );
    let complete = MetadataRecord::CompleteReassignment {
        topic: "orders".to_owned(),
        partition: 0,
        replicas: moved.clone(),
    };
    assert_eq!(image.apply(2, &complete), Applied::Changed);
    assert_eq!(
        image.topic("orders").and_then(|t| t.replicas(0)),
        Some(&moved[..])
    );
    assert!(matches!(
        image.apply(3, &reassign(1, moved.clone())),
        Applied::Stale(_)
    ));
    assert!(matches!(
        image.apply(3, &reassign(0, vec![])),
        Applied::Stale(_)
    ));

    let grow = |partition| MetadataRecord::CreatePartitions {
        topic: "orders".to_owned(),
        new: vec![PartitionAssignment {
            partition,
            replicas: vec![replica(1, 1)],
        }],
    };
    // Partition 2 before 1 does not fit; 1 does, once.
    assert!(matches!(image.apply(4, &grow(2)), Applied::Stale(_)));
    assert_eq!(image.apply(4, &grow(1)), Applied::Changed);
    assert!(matches!(image.apply(5, &grow(1)), Applied::Stale(_)));
    assert_eq!(image.topic("orders").map(|t| t.partitions.len()), Some(2));

    let hosted: Vec<(&str, u32)> = image.hosted_partitions(1, 1).collect();
    assert_eq!(hosted, vec![("orders", 1)]);
    assert_eq!(
        image.hosted_partitions(2, 1).collect::<Vec<_>>(),
        vec![("orders", 0)]
    );
    assert_eq!(image.hosted_partitions(2, 0).count(), 0);
}

#[test]
fn a_move_involves_old_and_new_replicas_until_it_completes() {
    let mut image = MetadataImage::default();
    let original = vec![replica(1, 0), replica(2, 0)];
    image.apply(1, &create("orders", 1, vec![original.clone()]));
    let reassign = |replicas: &[Replica]| MetadataRecord::ReassignPartition {
        topic: "orders".to_owned(),
        partition: 0,
        replicas: replicas.to_vec(),
    };
    let complete = |replicas: &[Replica]| MetadataRecord::CompleteReassignment {
        topic: "orders".to_owned(),
        partition: 0,
        replicas: replicas.to_vec(),
    };
    let state = |image: &MetadataImage| {
        let topic = image.topic("orders").expect("exists");
        (
            topic.partitions[0].clone(),
            topic.reassignments.get(&0).cloned(),
        )
    };
    let target = vec![replica(2, 0), replica(3, 1)];
    assert_eq!(image.apply(2, &reassign(&target)), Applied::Changed);
    let (replicas, moving) = state(&image);
    // The target first, then the broker leaving: all three host the group meanwhile.
    assert_eq!(replicas, vec![replica(2, 0), replica(3, 1), replica(1, 0)]);
    let moving = moving.expect("under way");
    assert_eq!(moving.original, original);
    assert_eq!(moving.adding().collect::<Vec<_>>(), vec![&replica(3, 1)]);
    assert_eq!(
        moving.removing(&replicas).collect::<Vec<_>>(),
        vec![&replica(1, 0)]
    );
    // The same target again, or a completion to anything else, changes nothing.
    assert!(matches!(
        image.apply(3, &reassign(&target)),
        Applied::Stale(_)
    ));
    assert!(matches!(
        image.apply(3, &complete(&original)),
        Applied::Stale(_)
    ));

    // A snapshot taken mid-move rebuilds it exactly.
    let rebuilt = MetadataImage::from_snapshot(3, &image.to_records());
    assert_eq!(rebuilt, image);

    // Retargeted to broker 4: 3 stays involved (it may be a voter by now).
    let retarget = vec![replica(4, 0), replica(2, 0)];
    assert_eq!(image.apply(4, &reassign(&retarget)), Applied::Changed);
    let (replicas, moving) = state(&image);
    assert_eq!(
        replicas,
        vec![replica(4, 0), replica(2, 0), replica(3, 1), replica(1, 0)]
    );
    assert_eq!(moving.map(|moving| moving.original), Some(original.clone()));
    assert_eq!(MetadataImage::from_snapshot(4, &image.to_records()), image);

    // Cancelled (moved back to the original), then completed there.
    assert_eq!(image.apply(5, &reassign(&original)), Applied::Changed);
    assert_eq!(MetadataImage::from_snapshot(5, &image.to_records()), image);
    assert!(matches!(
        image.apply(6, &complete(&retarget)),
        Applied::Stale(_)
    ));
    assert_eq!(image.apply(6, &complete(&original)), Applied::Changed);
    assert_eq!(state(&image), (original, None));
    assert!(matches!(
        image.apply(7, &complete(&target)),
        Applied::Stale(_)
    ));
}

#[test]
fn a_snapshot_rebuilds_the_image() {
    let mut image = MetadataImage::default();
    image.apply(
        1,
        &MetadataRecord::RegisterBroker(Box::new(registration(1, 1))),
    );
    image.apply(
        1,
        &MetadataRecord::RegisterBroker(Box::new(registration(2, 1))),
    );
    image.apply(2, &MetadataRecord::UnfenceBroker { node_id: 2 });
    image.apply(
        3,
        &create("orders", 1, vec![vec![replica(2, 0)], vec![replica(1, 1)]]),
    );
    let rebuilt = MetadataImage::from_snapshot(3, &image.to_records());
    assert_eq!(rebuilt, image);
}

fn block(node_id: NodeId, incarnation: u64, first_id: i64, size: u32) -> MetadataRecord {
    MetadataRecord::AllocateProducerIds(ProducerIdBlock {
        node_id,
        incarnation,
        first_id,
        size,
    })
}

#[test]
fn producer_id_blocks_are_handed_out_once_in_increasing_order() {
    let mut image = MetadataImage::default();
    assert_eq!(image.producer_id_next(), 0);
    assert_eq!(image.producer_id_block(1), None);
    assert_eq!(image.apply(1, &block(1, 10, 0, 1_000)), Applied::Changed);
    assert_eq!(image.producer_id_next(), 1_000);
    // The same block again, or one overlapping it, is stale: no id goes out twice.
    for again in [block(1, 10, 0, 1_000), block(2, 5, 999, 1_000)] {
        assert!(
            matches!(image.apply(2, &again), Applied::Stale(_)),
            "{again:?}"
        );
    }
    for malformed in [block(2, 5, 1_000, 0), block(2, 5, i64::MAX - 10, 1_000)] {
        assert!(
            matches!(image.apply(2, &malformed), Applied::Stale(_)),
            "{malformed:?}"
        );
    }
    assert_eq!(image.producer_id_next(), 1_000);
    assert_eq!(image.producer_id_block(2), None);

    assert_eq!(image.apply(3, &block(2, 5, 1_000, 1_000)), Applied::Changed);
    // A broker's new run gets a later block; its latest block is the one it may use.
    assert_eq!(
        image.apply(4, &block(1, 11, 2_000, 1_000)),
        Applied::Changed
    );
    assert_eq!(
        image.producer_id_block(1),
        Some(&ProducerIdBlock {
            node_id: 1,
            incarnation: 11,
            first_id: 2_000,
            size: 1_000
        })
    );
    assert_eq!(
        image.producer_id_block(2).map(|block| block.first_id),
        Some(1_000)
    );
    assert_eq!(image.producer_id_next(), 3_000);
}

#[test]
fn a_snapshot_keeps_the_next_producer_id_and_each_brokers_block() {
    let mut image = MetadataImage::default();
    image.apply(
        1,
        &MetadataRecord::RegisterBroker(Box::new(registration(1, 1))),
    );
    image.apply(
        1,
        &MetadataRecord::RegisterBroker(Box::new(registration(2, 1))),
    );
    // Interleaved: broker 1's latest block is past broker 2's, and broker 3 got one but is
    // not registered (yet, as the image says).
    image.apply(2, &block(1, 1, 0, 1_000));
    image.apply(3, &block(2, 1, 1_000, 1_000));
    image.apply(4, &block(3, 9, 2_000, 500));
    image.apply(5, &block(1, 1, 2_500, 1_000));
    let rebuilt = MetadataImage::from_snapshot(5, &image.to_records());
    assert_eq!(rebuilt, image);
    assert_eq!(rebuilt.producer_id_next(), 3_500);

    // A broker starting from the snapshot refuses every id handed out before it.
    let mut rebuilt = rebuilt;
    assert!(matches!(
        rebuilt.apply(6, &block(2, 2, 3_000, 1_000)),
        Applied::Stale(_)
    ));
    assert_eq!(
        rebuilt.apply(6, &block(2, 2, 3_500, 1_000)),
        Applied::Changed
    );
}

#[test]
#[should_panic(expected = "applied after entry")]
fn entries_are_applied_in_log_order() {
    let mut image = MetadataImage::default();
    image.apply(5, &MetadataRecord::FenceBroker { node_id: 1 });
    image.apply(4, &MetadataRecord::FenceBroker { node_id: 1 });
}

fn credential(user: &str, mechanism: i8, seed: u8) -> MetadataRecord {
    MetadataRecord::UserScramCredential(super::super::records::ScramCredentialRecord {
        user: user.to_owned(),
        mechanism,
        salt: vec![seed; 32],
        iterations: 4096,
        stored_key: vec![seed; 32],
        server_key: vec![seed.wrapping_add(1); 32],
    })
}

#[test]
fn users_credentials_are_set_replaced_removed_and_kept_in_a_snapshot() {
    let mut image = MetadataImage::default();
    assert!(matches!(
        image.apply(1, &credential("alice", 1, 1)),
        Applied::Changed
    ));
    assert!(matches!(
        image.apply(2, &credential("alice", 2, 2)),
        Applied::Changed
    ));
    assert!(matches!(
        image.apply(3, &credential("bob", 1, 3)),
        Applied::Changed
    ));
    assert!(matches!(
        image.apply(4, &credential("alice", 1, 4)),
        Applied::Changed
    ));
    let remove = MetadataRecord::RemoveUserScramCredential {
        user: "bob".to_owned(),
        mechanism: 1,
    };
    assert!(matches!(image.apply(5, &remove), Applied::Changed));
    // A mechanism this broker does not know changes nothing, the same on every broker.
    assert!(matches!(
        image.apply(6, &credential("carol", 3, 5)),
        Applied::Stale(_)
    ));
    let users: Vec<&String> = image.credentials().keys().collect();
    assert_eq!(users, ["alice"], "bob went with his last credential");
    let alice = &image.credentials()["alice"];
    assert_eq!(alice.len(), 2);
    assert_eq!(
        alice[&engine::credentials::ScramMechanism::Sha256].salt,
        vec![4; 32],
        "replaced"
    );
    let rebuilt = MetadataImage::from_snapshot(6, &image.to_records());
    assert_eq!(rebuilt.credentials(), image.credentials());
}

fn quota(user: Option<Option<&str>>, key: &str, value: Option<f64>) -> MetadataRecord {
    MetadataRecord::ClientQuota(Box::new(super::super::records::ClientQuotaRecord {
        user: user.map(|name| name.map(str::to_owned)),
        client_id: None,
        key: key.to_owned(),
        value_bits: value.unwrap_or(0.0).to_bits(),
        remove: value.is_none(),
    }))
}

#[test]
fn client_quotas_are_set_removed_and_kept_in_a_snapshot() {
    use engine::quotas::{EntityName, QuotaEntity, QuotaKey};
    let mut image = MetadataImage::default();
    let alice = QuotaEntity {
        user: Some(EntityName::Named("alice".to_owned())),
        client_id: None,
    };
    let default_user = QuotaEntity {
        user: Some(EntityName::Default),
        client_id: None,
    };
    for (index, record) in [
        quota(Some(Some("alice")), "producer_byte_rate", Some(1024.0)),
        quota(Some(Some("alice")), "consumer_byte_rate", Some(2048.0)),
        quota(Some(None), "request_percentage", Some(12.5)),
        quota(Some(Some("alice")), "consumer_byte_rate", None),
    ]
    .iter()
    .enumerate()
    {
        assert!(matches!(
            image.apply(index as u64 + 1, record),
            Applied::Changed
        ));
    }
    // A key this broker does not know, or an entity of nothing, changes nothing anywhere.
    assert!(matches!(
        image.apply(5, &quota(Some(Some("alice")), "bogus", Some(1.0))),
        Applied::Stale(_)
    ));
    assert!(matches!(
        image.apply(6, &quota(None, "producer_byte_rate", Some(1.0))),
        Applied::Stale(_)
    ));
    assert_eq!(image.quotas().len(), 2);
    assert_eq!(image.quotas()[&alice].len(), 1);
    assert_eq!(image.quotas()[&alice][&QuotaKey::ProducerByteRate], 1024.0);
    assert_eq!(
        image.quotas()[&default_user][&QuotaKey::RequestPercentage],
        12.5
    );
    let rebuilt = MetadataImage::from_snapshot(6, &image.to_records());
    assert_eq!(rebuilt.quotas(), image.quotas());
}

fn acl_record(principal: &str, operation: i8) -> Box<super::super::records::AclRecord> {
    Box::new(super::super::records::AclRecord {
        resource_type: 2,
        resource_name: "orders-".to_owned(),
        pattern_type: 4,
        principal: principal.to_owned(),
        host: "*".to_owned(),
        operation,
        permission: 3,
    })
}

#[test]
fn acls_are_added_removed_and_kept_in_a_snapshot() {
    let mut image = MetadataImage::default();
    let alice = MetadataRecord::AccessControlEntry(acl_record("User:alice", 4));
    let bob = MetadataRecord::AccessControlEntry(acl_record("User:bob", 3));
    assert!(matches!(image.apply(1, &alice), Applied::Changed));
    assert!(matches!(image.apply(2, &bob), Applied::Changed));
    let remove = MetadataRecord::RemoveAccessControlEntry(acl_record("User:bob", 3));
    assert!(matches!(image.apply(3, &remove), Applied::Changed));
    // An operation this broker does not know changes nothing, the same on every broker.
    let unknown = MetadataRecord::AccessControlEntry(acl_record("User:carol", 13));
    assert!(matches!(image.apply(4, &unknown), Applied::Stale(_)));
    let principals: Vec<&str> = image
        .acls()
        .iter()
        .map(|binding| binding.principal.as_str())
        .collect();
    assert_eq!(principals, ["User:alice"]);
    let rebuilt = MetadataImage::from_snapshot(4, &image.to_records());
    assert_eq!(rebuilt.acls(), image.acls());
}
