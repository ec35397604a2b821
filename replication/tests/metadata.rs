//! Properties of the metadata log: its encoding, the even spread of new partitions over
//! brokers and shards, and that applying any records is total, deterministic and
//! reproducible from a snapshot, and that no two producer-id blocks applied share an id.

use std::collections::BTreeMap;

use engine::LogConfig;
use ferrite_replication::metadata::{
    decode, encode, plan_create_partitions, plan_create_topic, Applied, BrokerRegistration,
    ListenerEndpoint, MetadataImage, MetadataRecord, NewTopic, PartitionAssignment,
    ProducerIdBlock, Replica,
};
use ferrite_replication::NodeId;
use proptest::prelude::*;

/// Small pools of names and ids, so that random records collide with one another (stale
/// creations, deletions of what exists, reassignments of real partitions).
fn topic_name() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "c", "orders"]).prop_map(str::to_owned)
}

fn node_id() -> impl Strategy<Value = NodeId> {
    0u64..6
}

fn config_pair() -> impl Strategy<Value = (String, String)> {
    (
        prop::sample::select(vec!["retention.ms", "segment.ms", "cleanup.policy"]),
        "[a-z0-9]{0,4}",
    )
        .prop_map(|(key, value)| (key.to_owned(), value))
}

fn replicas() -> impl Strategy<Value = Vec<Replica>> {
    // Duplicates and empty sets included: apply must treat them as stale, not panic.
    prop::collection::vec(
        (node_id(), 0u32..5).prop_map(|(node_id, shard)| Replica { node_id, shard }),
        0..4,
    )
}

fn assignments() -> impl Strategy<Value = Vec<PartitionAssignment>> {
    prop::collection::vec((0u32..6, replicas()), 0..5).prop_map(|parts| {
        parts
            .into_iter()
            .map(|(partition, replicas)| PartitionAssignment {
                partition,
                replicas,
            })
            .collect()
    })
}

fn record() -> impl Strategy<Value = MetadataRecord> {
    prop_oneof![
        (node_id(), 0u64..3, "[a-z.]{0,8}", any::<u16>(), 0u32..4).prop_map(
            |(node_id, incarnation, host, kafka_port, shard_count)| {
                MetadataRecord::RegisterBroker(Box::new(BrokerRegistration {
                    node_id,
                    incarnation,
                    rpc_address: format!("{host}:{}", kafka_port.wrapping_add(1)),
                    endpoints: vec![ListenerEndpoint {
                        listener: Some("PLAINTEXT".to_owned()),
                        host,
                        port: kafka_port,
                    }],
                    shard_count,
                }))
            }
        ),
        node_id().prop_map(|node_id| MetadataRecord::FenceBroker { node_id }),
        node_id().prop_map(|node_id| MetadataRecord::UnfenceBroker { node_id }),
        (
            topic_name(),
            0u8..4,
            prop::collection::vec(config_pair(), 0..3),
            assignments()
        )
            .prop_map(|(name, id, configs, mut partitions)| {
                // Mostly well numbered, so that creations do happen.
                if id != 0 {
                    for (number, partition) in (0u32..).zip(partitions.iter_mut()) {
                        partition.partition = number;
                    }
                }
                MetadataRecord::CreateTopic {
                    name,
                    topic_id: [id; 16],
                    configs,
                    partitions,
                }
            }),
        topic_name().prop_map(|name| MetadataRecord::DeleteTopic { name }),
        (
            topic_name(),
            prop::collection::vec(config_pair(), 0..3),
            prop::collection::vec(config_pair().prop_map(|(key, _)| key), 0..2)
        )
            .prop_map(|(name, set, delete)| MetadataRecord::AlterTopicConfigs {
                name,
                set,
                delete
            }),
        (topic_name(), 0u32..6, replicas()).prop_map(|(topic, partition, replicas)| {
            MetadataRecord::ReassignPartition {
                topic,
                partition,
                replicas,
            }
        }),
        (topic_name(), 0u32..6, replicas()).prop_map(|(topic, partition, replicas)| {
            MetadataRecord::CompleteReassignment {
                topic,
                partition,
                replicas,
            }
        }),
        (topic_name(), assignments())
            .prop_map(|(topic, new)| MetadataRecord::CreatePartitions { topic, new }),
        (
            node_id(),
            0u64..3,
            // Blocks that follow, overlap, leave gaps, overflow or are empty.
            prop_oneof![
                (0i64..12).prop_map(|step| step * 500),
                Just(-1),
                Just(i64::MAX - 10)
            ],
            prop::sample::select(vec![0u32, 500, 1_000])
        )
            .prop_map(|(node_id, incarnation, first_id, size)| {
                MetadataRecord::AllocateProducerIds(ProducerIdBlock {
                    node_id,
                    incarnation,
                    first_id,
                    size,
                })
            }),
    ]
}

fn records() -> impl Strategy<Value = Vec<MetadataRecord>> {
    prop::collection::vec(record(), 0..40)
}

/// Applies `records`, one entry each from index 1.
fn image_of(records: &[MetadataRecord]) -> MetadataImage {
    let mut image = MetadataImage::default();
    for (index, record) in (1u64..).zip(records) {
        image.apply(index, record);
    }
    image
}

fn spread(counts: impl IntoIterator<Item = u64>) -> u64 {
    let counts: Vec<u64> = counts.into_iter().collect();
    counts.iter().max().unwrap_or(&0) - counts.iter().min().unwrap_or(&0)
}

/// Every invariant of the even spread, for a cluster whose brokers are all live.
fn check_even_spread(image: &MetadataImage) {
    let mut replicas: BTreeMap<NodeId, u64> = BTreeMap::new();
    let mut leaders: BTreeMap<NodeId, u64> = BTreeMap::new();
    let mut shards: BTreeMap<NodeId, Vec<u64>> = BTreeMap::new();
    for broker in image.live_brokers() {
        replicas.insert(broker.node_id, 0);
        leaders.insert(broker.node_id, 0);
        shards.insert(broker.node_id, vec![0; broker.shard_count as usize]);
    }
    for (name, topic) in image.topics() {
        for (partition, set) in topic.partitions.iter().enumerate() {
            for (position, replica) in set.iter().enumerate() {
                assert!(
                    set[..position]
                        .iter()
                        .all(|other| other.node_id != replica.node_id),
                    "{name}-{partition}: broker {} twice in {set:?}",
                    replica.node_id
                );
                *replicas.get_mut(&replica.node_id).expect("a live broker") += 1;
                if position == 0 {
                    *leaders.get_mut(&replica.node_id).expect("a live broker") += 1;
                }
                shards.get_mut(&replica.node_id).expect("a live broker")[replica.shard as usize] +=
                    1;
            }
            assert_eq!(
                topic.preferred_leader(partition as u32),
                set.first().copied()
            );
        }
    }
    assert!(
        spread(replicas.values().copied()) <= 1,
        "replicas {replicas:?}"
    );
    // What keeps both counts even as partitions of any replication factor arrive: no broker
    // has fewer replicas and more leaderships than another.
    for (a, b) in replicas
        .keys()
        .flat_map(|a| replicas.keys().map(move |b| (a, b)))
    {
        assert!(
            !(replicas[a] < replicas[b] && leaders[a] > leaders[b]),
            "brokers {a} and {b}: replicas {replicas:?}, leaders {leaders:?}"
        );
    }
    assert!(
        spread(leaders.values().copied()) <= 1,
        "leaders {leaders:?}"
    );
    for (node_id, counts) in &shards {
        assert!(
            spread(counts.iter().copied()) <= 1,
            "broker {node_id}'s shards {counts:?}"
        );
    }
}

/// What a cluster operator does to a growing cluster.
#[derive(Debug, Clone)]
enum Growth {
    CreateTopic {
        partitions: i32,
        replication: u8,
    },
    /// Adds partitions to the topic created `topic` creations ago (modulo how many exist).
    AddPartitions {
        topic: usize,
        extra: i32,
    },
}

fn growth() -> impl Strategy<Value = Growth> {
    prop_oneof![
        3 => (1i32..=24, 1u8..=7).prop_map(|(partitions, replication)| Growth::CreateTopic {
            partitions,
            replication
        }),
        1 => (0usize..8, 1i32..=6).prop_map(|(topic, extra)| Growth::AddPartitions { topic, extra }),
    ]
}

fn registration(node_id: NodeId, shard_count: u32) -> BrokerRegistration {
    BrokerRegistration {
        node_id,
        incarnation: 1,
        endpoints: vec![ListenerEndpoint {
            listener: Some("PLAINTEXT".to_owned()),
            host: format!("broker-{node_id}"),
            port: 9092,
        }],
        rpc_address: format!("broker-{node_id}:9093"),
        shard_count,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn batches_survive_encoding(batch in records()) {
        prop_assert_eq!(decode(&encode(&batch)), Ok(batch));
    }

    #[test]
    fn bad_bytes_never_panic(
        batch in records(),
        garbage in prop::collection::vec(any::<u8>(), 0..512),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        mask in 1u8..=255,
    ) {
        let _ = decode(&garbage);
        let mut framed = vec![1];
        framed.extend_from_slice(&garbage);
        let _ = decode(&framed);
        let encoded = encode(&batch);
        let _ = decode(&encoded[..cut.index(encoded.len() + 1)]);
        let mut flipped = encoded.clone();
        flipped[flip.index(encoded.len())] ^= mask;
        let _ = decode(&flipped);
    }

    #[test]
    fn new_partitions_spread_evenly(
        shard_counts in prop::collection::vec(1u32..=4, 1..=7),
        steps in prop::collection::vec(growth(), 1..12),
    ) {
        let broker_config = LogConfig::default();
        let mut image = MetadataImage::default();
        let mut index = 0;
        let mut apply = |image: &mut MetadataImage, records: Vec<MetadataRecord>| {
            index += 1;
            for record in &records {
                image.apply(index, record);
            }
        };
        // Node ids with gaps, so that nothing depends on their being 0..B.
        for (node_id, &shard_count) in (1u64..).step_by(3).zip(&shard_counts) {
            apply(&mut image, vec![
                MetadataRecord::RegisterBroker(Box::new(registration(node_id, shard_count))),
                MetadataRecord::UnfenceBroker { node_id },
            ]);
        }
        let brokers = shard_counts.len() as u8;
        let mut created: Vec<String> = Vec::new();
        for step in steps {
            let records = match step {
                Growth::CreateTopic { partitions, replication } => {
                    let name = format!("topic-{}", created.len());
                    let topic = NewTopic {
                        name: name.clone(),
                        topic_id: [created.len() as u8 + 1; 16],
                        partitions,
                        replication_factor: i16::from(1 + replication % brokers),
                        configs: BTreeMap::new(),
                    };
                    created.push(name);
                    plan_create_topic(&image, &broker_config, &topic)
                }
                Growth::AddPartitions { topic, extra } => {
                    let Some(name) = created.iter().rev().nth(topic % created.len().max(1)) else {
                        continue;
                    };
                    let count = image.topic(name).expect("created").partitions.len() as i32;
                    plan_create_partitions(&image, name, count + extra)
                }
            };
            let records = records.expect("a valid request");
            let before = image.clone();
            apply(&mut image, records);
            prop_assert_ne!(&before, &image);
            check_even_spread(&image);
        }
    }

    #[test]
    fn applying_anything_is_total_and_snapshots_rebuild_the_image(batch in records()) {
        let image = image_of(&batch);
        let rebuilt = MetadataImage::from_snapshot(image.last_applied_index(), &image.to_records());
        prop_assert_eq!(&rebuilt, &image);
        // And the snapshot survives its own encoding, as it will be stored.
        prop_assert_eq!(decode(&encode(&image.to_records())), Ok(image.to_records()));
    }

    #[test]
    fn producer_id_blocks_that_apply_never_share_an_id(batch in records()) {
        let mut image = MetadataImage::default();
        let mut handed_out: Vec<std::ops::Range<i64>> = Vec::new();
        for (index, record) in (1u64..).zip(&batch) {
            let applied = image.apply(index, record);
            if let (MetadataRecord::AllocateProducerIds(block), Applied::Changed) =
                (record, applied)
            {
                let ids = block.first_id..block.end_id().expect("an applied block fits");
                prop_assert!(ids.start >= 0 && !ids.is_empty());
                for earlier in &handed_out {
                    prop_assert!(ids.start >= earlier.end, "{ids:?} after {earlier:?}");
                }
                prop_assert_eq!(image.producer_id_next(), ids.end);
                handed_out.push(ids);
            }
        }
    }

    #[test]
    fn images_fed_the_same_records_are_equal(batch in records()) {
        let mut first = MetadataImage::default();
        let mut second = MetadataImage::default();
        for (index, record) in (1u64..).zip(&batch) {
            prop_assert_eq!(first.apply(index, record), second.apply(index, record));
            prop_assert_eq!(&first, &second);
        }
    }
}
