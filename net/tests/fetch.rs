//! Fetch end to end over TCP, across shards (two shards, so most partitions live on the shard
//! that did not accept the connection): long polls woken by produces on either shard, the
//! partition and response limits (KIP-74), file ranges spliced past the tail cache, and each
//! partition's own error beside the others' data.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{
    create_topic, fetch, fetch_request, name, partitions_by_shard, produce, stamped, Client,
    TestBroker,
};
use engine::batch::build::batch_of;
use engine::LogConfig;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;

#[test]
fn a_waiting_fetch_is_woken_by_a_produce_not_by_its_timeout() {
    let broker = TestBroker::start(2, LogConfig::default());
    let mut consumer = broker.connect();
    assert_eq!(create_topic(&mut consumer, "ticks", 2), 0);
    for partition in 0..2 {
        let started = Instant::now();
        consumer.send(
            ApiKey::Fetch,
            12,
            &fetch_request("ticks", partition, 0, 20_000),
        );
        let mut producer = broker.connect();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            produce(&mut producer, "ticks", partition, batch_of(1, 10, 5)).0,
            0
        );
        let (_, response): (i32, FetchResponse) = consumer.receive(ApiKey::Fetch, 12);
        let data = &response.responses[0].partitions[0];
        assert_eq!(data.high_watermark, 1);
        assert!(!data.records.as_ref().unwrap().is_empty());
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "answered when the data came, not after max_wait_ms"
        );
    }
    // Data below min_bytes: the fetch waits for more until max_wait_ms, then answers with
    // what there is.
    let started = Instant::now();
    let request = fetch_request("ticks", 0, 0, 300).with_min_bytes(1 << 20);
    let response: FetchResponse = consumer.call(ApiKey::Fetch, 12, &request);
    assert!(!response.responses[0].partitions[0]
        .records
        .as_ref()
        .unwrap()
        .is_empty());
    assert!(started.elapsed() >= Duration::from_millis(250));
    // Nothing arrives: the fetch waits its max_wait_ms, then answers empty.
    let started = Instant::now();
    let (error, high_watermark, records) = fetch(&mut consumer, "ticks", 0, 1, 300);
    assert_eq!((error, high_watermark), (0, 1));
    assert!(records.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[test]
fn data_past_the_tail_cache_is_spliced_from_the_segment_file() {
    let log = LogConfig {
        tail_cache_bytes_max: 64 << 10,
        ..LogConfig::default()
    };
    let broker = TestBroker::start(2, log);
    let mut client = broker.connect();
    assert_eq!(create_topic(&mut client, "bulk", 1), 0);
    let mut expected = Vec::new();
    for index in 0..64 {
        let batch = batch_of(4, 2_000, index);
        let (error, base_offset) = produce(&mut client, "bulk", 0, batch.clone());
        assert_eq!(error, 0);
        expected.extend(stamped(batch, base_offset));
    }
    let mut received = Vec::new();
    let mut offset = 0;
    while offset < 256 {
        let (error, _, records) = fetch(&mut client, "bulk", 0, offset, 0);
        assert_eq!(error, 0);
        let mut cursor = &records[..];
        while cursor.len() >= 61 {
            let header = engine::batch::BatchHeader::parse(cursor).unwrap();
            offset = header.last_offset() + 1;
            cursor = &cursor[header.size_bytes as usize..];
        }
        received.extend_from_slice(&records);
    }
    assert_eq!(received, expected, "every byte, in order");
    let text = broker.metrics.render();
    let spliced: u64 = text
        .lines()
        .filter(|line| line.starts_with("ferrite_bytes_spliced_total{"))
        .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(
        spliced > 256 << 10,
        "old batches left by splice, not memory: {spliced} bytes"
    );
}

#[test]
fn a_fetch_waiting_on_a_deleted_topic_does_not_bring_it_back() {
    let broker = TestBroker::start(2, LogConfig::default());
    let mut admin = broker.connect();
    let mut consumer = broker.connect();
    assert_eq!(create_topic(&mut admin, "doomed", 2), 0);
    for partition in 0..2 {
        consumer.send(
            ApiKey::Fetch,
            12,
            &fetch_request("doomed", partition, 0, 1_000),
        );
    }
    let delete = DeleteTopicsRequest::default().with_topic_names(vec![name("doomed")]);
    let response: DeleteTopicsResponse = admin.call(ApiKey::DeleteTopics, 5, &delete);
    assert_eq!(response.responses[0].error_code, 0);
    for _ in 0..2 {
        let (_, response): (i32, FetchResponse) = consumer.receive(ApiKey::Fetch, 12);
        let error = response.responses[0].partitions[0].error_code;
        assert!(
            error == 3 || error == 0,
            "unknown topic (or empty, if answered first): {error}"
        );
    }
    // Once both waits are over, nothing may have re-created the partitions.
    let (error, _, _) = fetch(&mut consumer, "doomed", 0, 0, 0);
    assert_eq!(error, 3);
    for partition in 0..2 {
        let dir = broker.data.path().join(format!("doomed-{partition}"));
        assert!(!dir.exists(), "{} came back", dir.display());
    }
}

/// A consumer of many partitions spread over both shards, fetching them all in each request
/// under tight limits, gets every batch of every partition exactly once, in order, each
/// response within the partition and response limits (only a lone first batch may exceed
/// them); the producer's requests carry a batch for every partition at once.
#[test]
fn a_fetch_of_many_partitions_across_shards_gets_each_partitions_batches_in_order_within_its_limits(
) {
    const PARTITIONS_MANY: i32 = 8;
    const PARTITION_BYTES_MAX: usize = 5_000;
    const RESPONSE_BYTES_MAX: usize = 12_000;
    let log = LogConfig {
        // Older batches come from the segment files (spliced), newer ones from memory.
        tail_cache_bytes_max: 16 << 10,
        ..LogConfig::default()
    };
    let broker = TestBroker::start(2, log);
    let mut client = broker.connect();
    assert_eq!(create_topic(&mut client, "fanout", PARTITIONS_MANY), 0);
    let mut produced: Vec<Vec<u8>> = vec![Vec::new(); PARTITIONS_MANY as usize];
    let mut offsets = vec![0i64; PARTITIONS_MANY as usize];
    for round in 0..24usize {
        let batches: Vec<Vec<u8>> = (0..PARTITIONS_MANY as usize)
            .map(|partition| {
                let records = 1 + (round + partition) % 3;
                let value_bytes = 100 + ((round * 5 + partition * 3) % 7) * 400;
                batch_of(records, value_bytes, round as i64)
            })
            .collect();
        let request = ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(5_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(name("fanout"))
                .with_partition_data(
                    batches
                        .iter()
                        .enumerate()
                        .map(|(partition, batch)| {
                            PartitionProduceData::default()
                                .with_index(partition as i32)
                                .with_records(Some(Bytes::from(batch.clone())))
                        })
                        .collect(),
                )]);
        let response: ProduceResponse = client.call(ApiKey::Produce, 9, &request);
        let answers = &response.responses[0].partition_responses;
        assert_eq!(answers.len(), PARTITIONS_MANY as usize);
        for (partition, (answer, batch)) in answers.iter().zip(batches).enumerate() {
            assert_eq!(answer.index, partition as i32);
            assert_eq!(
                (answer.error_code, answer.base_offset),
                (0, offsets[partition]),
                "round {round}, partition {partition}"
            );
            let records = engine::batch::BatchHeader::parse(&batch)
                .unwrap()
                .records_count;
            produced[partition].extend(stamped(batch, offsets[partition]));
            offsets[partition] += i64::from(records);
        }
    }

    let mut consumed: Vec<Vec<u8>> = vec![Vec::new(); PARTITIONS_MANY as usize];
    let mut positions = vec![0i64; PARTITIONS_MANY as usize];
    let started = Instant::now();
    while positions != offsets {
        assert!(
            started.elapsed() < common::DEADLINE,
            "the consumer stopped progressing"
        );
        let request = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(RESPONSE_BYTES_MAX as i32)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(name("fanout"))
                .with_partitions(
                    positions
                        .iter()
                        .enumerate()
                        .map(|(partition, &offset)| {
                            FetchPartition::default()
                                .with_partition(partition as i32)
                                .with_fetch_offset(offset)
                                .with_partition_max_bytes(PARTITION_BYTES_MAX as i32)
                        })
                        .collect(),
                )]);
        let response: FetchResponse = client.call(ApiKey::Fetch, 12, &request);
        let answers = &response.responses[0].partitions;
        assert_eq!(answers.len(), PARTITIONS_MANY as usize);
        let mut response_bytes = 0;
        for answer in answers {
            let partition = answer.partition_index as usize;
            assert_eq!(answer.error_code, 0);
            assert_eq!(answer.high_watermark, offsets[partition]);
            let records = answer.records.clone().unwrap_or_default();
            let mut batches = 0;
            let mut cursor = &records[..];
            while !cursor.is_empty() {
                let header = engine::batch::BatchHeader::parse(cursor).unwrap();
                assert_eq!(
                    header.base_offset, positions[partition],
                    "whole batches, in order"
                );
                positions[partition] = header.last_offset() + 1;
                cursor = &cursor[header.size_bytes as usize..];
                batches += 1;
            }
            let lone_first_batch = batches == 1 && response_bytes == 0;
            assert!(
                records.len() <= PARTITION_BYTES_MAX || lone_first_batch,
                "partition {partition}: {} bytes",
                records.len()
            );
            response_bytes += records.len();
            assert!(
                response_bytes <= RESPONSE_BYTES_MAX || lone_first_batch,
                "{response_bytes} bytes in the response"
            );
            consumed[partition].extend_from_slice(&records);
        }
        assert!(
            response_bytes > 0,
            "every fetch returns something until the end"
        );
    }
    assert_eq!(
        consumed, produced,
        "every byte of every partition, in order"
    );
}

/// A broker of two shards with `topic` of six partitions: a client, and the partitions by
/// owning shard ([`partitions_by_shard`]).
fn broker_with_topic_on_both_shards(topic: &str) -> (TestBroker, Client, [Vec<i32>; 2]) {
    let broker = TestBroker::start(2, LogConfig::default());
    let mut client = broker.connect();
    assert_eq!(create_topic(&mut client, topic, 6), 0);
    (broker, client, partitions_by_shard(topic, 6))
}

/// A fetch (v12) of `partitions` of `topic`, each `(partition, fetch offset)` with the same
/// partition limit, in this order.
fn fetch_partitions(
    topic: &str,
    partitions: &[(i32, i64)],
    partition_bytes_max: i32,
    response_bytes_max: i32,
    min_bytes: i32,
    max_wait_ms: i32,
) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(response_bytes_max)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(
                partitions
                    .iter()
                    .map(|&(partition, offset)| {
                        FetchPartition::default()
                            .with_partition(partition)
                            .with_fetch_offset(offset)
                            .with_partition_max_bytes(partition_bytes_max)
                    })
                    .collect(),
            )])
}

/// Each answered partition of a one-topic fetch: (partition, error code, high-water mark,
/// records), in the response's order.
fn answered(response: &FetchResponse) -> Vec<(i32, i16, i64, Bytes)> {
    response.responses[0]
        .partitions
        .iter()
        .map(|data| {
            (
                data.partition_index,
                data.error_code,
                data.high_watermark,
                data.records.clone().unwrap_or_default(),
            )
        })
        .collect()
}

/// A long poll over partitions of both shards, whichever shard took the connection: data on
/// one shard below `min_bytes` does not end it; a produce to a partition of the other shard
/// that brings the total to `min_bytes` does, long before `max_wait_ms`, and the answer holds
/// both partitions' data. Then, with `min_bytes` never reached, the fetch answers at
/// `max_wait_ms` with what both shards have.
#[test]
fn a_long_poll_across_shards_waits_for_min_bytes_and_is_woken_by_either_shards_produce() {
    let (broker, mut consumer, [shard_0, shard_1]) = broker_with_topic_on_both_shards("polls");
    let mut producer = broker.connect();
    // Each order: the first batch to one shard's partition, the second (which completes
    // min_bytes) to the other's.
    for (round, (first, second)) in [(shard_0[0], shard_1[0]), (shard_1[1], shard_0[1])]
        .into_iter()
        .enumerate()
    {
        let first_batch = batch_of(2, 300, round as i64);
        let second_batch = batch_of(3, 300, round as i64);
        let offsets = [(first, 0), (second, 0)];
        let min_bytes = (first_batch.len() + 1) as i32;
        let started = Instant::now();
        consumer.send(
            ApiKey::Fetch,
            12,
            &fetch_partitions("polls", &offsets, 1 << 20, 1 << 20, min_bytes, 20_000),
        );
        assert_eq!(
            produce(&mut producer, "polls", first, first_batch.clone()),
            (0, 0)
        );
        assert_eq!(
            produce(&mut producer, "polls", second, second_batch.clone()),
            (0, 0)
        );
        let (_, response): (i32, FetchResponse) = consumer.receive(ApiKey::Fetch, 12);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "round {round}: answered when min_bytes was reached, not at max_wait_ms"
        );
        assert_eq!(
            answered(&response),
            vec![
                (first, 0, 2, Bytes::from(stamped(first_batch, 0))),
                (second, 0, 3, Bytes::from(stamped(second_batch, 0))),
            ],
            "round {round}: both shards' data, not only the first batch"
        );
    }
    // min_bytes beyond what both shards have: the answer comes at max_wait_ms, with it all.
    let started = Instant::now();
    let offsets = [(shard_0[0], 0), (shard_1[0], 0), (shard_0[2], 0)];
    let response: FetchResponse = consumer.call(
        ApiKey::Fetch,
        12,
        &fetch_partitions("polls", &offsets, 1 << 20, 1 << 20, 1 << 20, 300),
    );
    assert!(started.elapsed() >= Duration::from_millis(250));
    let answers = answered(&response);
    assert_eq!(
        answers
            .iter()
            .map(|(partition, error, high_watermark, records)| (
                *partition,
                *error,
                *high_watermark,
                records.is_empty()
            ))
            .collect::<Vec<_>>(),
        vec![
            (shard_0[0], 0, 2, false),
            (shard_1[0], 0, 3, false),
            (shard_0[2], 0, 0, true)
        ]
    );
}

/// KIP-74 across shards: the first partition that has data returns its first batch whole
/// even when it exceeds both the partition and the response limit; a later partition never
/// returns a batch beyond its limit or the room left, whichever shard owns it; a partition
/// with nothing to return does not use up the "first batch" allowance.
#[test]
fn only_the_first_partition_with_data_may_exceed_the_fetch_limits_whichever_shard_owns_it() {
    let (_broker, mut client, [shard_0, shard_1]) = broker_with_topic_on_both_shards("kip74");
    // One partition of each shard starts with a batch over every limit, another of each
    // shard with small batches.
    let big = batch_of(1, 20_000, 1);
    let small = batch_of(1, 300, 2);
    // Two small batches fit a partition's limit, three the response's.
    let partition_bytes_max = (small.len() * 5 / 2) as i32;
    let response_bytes_max = (small.len() * 7 / 2) as i32;
    assert!(big.len() > response_bytes_max as usize);
    let (big_0, big_1, small_0, small_1, empty) =
        (shard_0[0], shard_1[0], shard_0[1], shard_1[1], shard_0[2]);
    for partition in [big_0, big_1] {
        assert_eq!(
            produce(&mut client, "kip74", partition, big.clone()),
            (0, 0)
        );
    }
    for partition in [small_0, small_1] {
        for offset in 0..4 {
            assert_eq!(
                produce(&mut client, "kip74", partition, small.clone()),
                (0, offset)
            );
        }
    }
    let small_bytes = |count: usize| -> Bytes {
        (0..count)
            .flat_map(|offset| stamped(small.clone(), offset as i64))
            .collect::<Vec<u8>>()
            .into()
    };
    let big_bytes = Bytes::from(stamped(big.clone(), 0));
    let nothing = Bytes::new();
    let fetch_records = |client: &mut Client, order: &[(i32, i64)]| -> Vec<(i32, Bytes)> {
        let request = fetch_partitions(
            "kip74",
            order,
            partition_bytes_max,
            response_bytes_max,
            1,
            0,
        );
        let response: FetchResponse = client.call(ApiKey::Fetch, 12, &request);
        answered(&response)
            .into_iter()
            .map(|(partition, error, _, records)| {
                assert_eq!(error, 0, "partition {partition}");
                (partition, records)
            })
            .collect()
    };
    for (big, small, other_small) in [(big_0, small_1, small_0), (big_1, small_0, small_1)] {
        // The big batch first: returned whole; nothing fits after it.
        assert_eq!(
            fetch_records(&mut client, &[(big, 0), (small, 0)]),
            vec![(big, big_bytes.clone()), (small, nothing.clone())]
        );
        // Small batches first: two fit the partition's limit; the big batch exceeds the
        // room left, so it is not returned.
        assert_eq!(
            fetch_records(&mut client, &[(small, 0), (big, 0)]),
            vec![(small, small_bytes(2)), (big, nothing.clone())]
        );
        // A partition with nothing new first (caught up, or empty): the big batch is still the
        // first data, so it is returned.
        assert_eq!(
            fetch_records(
                &mut client,
                &[(small, 4), (empty, 0), (big, 0), (other_small, 0)]
            ),
            vec![
                (small, nothing.clone()),
                (empty, nothing.clone()),
                (big, big_bytes.clone()),
                (other_small, nothing.clone())
            ]
        );
        // Two small partitions of different shards share the response limit: the second gets
        // only what fits the room the first left (one batch of the two its limit allows).
        assert_eq!(
            fetch_records(&mut client, &[(small, 0), (other_small, 0)]),
            vec![(small, small_bytes(2)), (other_small, small_bytes(1))]
        );
    }
}

/// Each partition of a fetch gets its own error code, the others their data, whichever shard
/// owns them; an error ends a long poll at once (as Kafka answers at once when a partition
/// fails), and read_committed reads the same as read_uncommitted (no transactions, so the
/// last stable offset is the high-water mark).
#[test]
fn a_fetch_reports_each_partitions_error_beside_the_others_data_without_waiting() {
    let (_broker, mut client, [shard_0, shard_1]) = broker_with_topic_on_both_shards("mixed");
    let batch = batch_of(2, 100, 7);
    for &partition in shard_0.iter().chain(&shard_1) {
        assert_eq!(
            produce(&mut client, "mixed", partition, batch.clone()),
            (0, 0)
        );
    }
    let wanted = [
        (shard_0[0], 0),  // data
        (shard_1[0], 5),  // past the end: out of range
        (99, 0),          // no such partition
        (shard_1[1], 0),  // data
        (shard_0[1], -1), // a negative offset: out of range
        (shard_0[2], 2),  // at the end: nothing yet, no error
    ];
    for isolation_level in [0, 1] {
        // min_bytes that the data never reaches, and a long max_wait_ms.
        let mut request = fetch_partitions("mixed", &wanted, 1 << 20, 1 << 20, 1 << 20, 20_000)
            .with_isolation_level(isolation_level);
        request.topics.push(
            FetchTopic::default()
                .with_topic(name("no-such-topic"))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(1 << 20)]),
        );
        let started = Instant::now();
        let response: FetchResponse = client.call(ApiKey::Fetch, 12, &request);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "an error answers at once, not at max_wait_ms"
        );
        let records = Bytes::from(stamped(batch.clone(), 0));
        assert_eq!(
            answered(&response),
            vec![
                (shard_0[0], 0, 2, records.clone()),
                (shard_1[0], 1, -1, Bytes::new()),
                (99, 3, -1, Bytes::new()),
                (shard_1[1], 0, 2, records.clone()),
                (shard_0[1], 1, -1, Bytes::new()),
                (shard_0[2], 0, 2, Bytes::new()),
            ],
            "isolation level {isolation_level}"
        );
        for data in &response.responses[0].partitions {
            assert_eq!(data.last_stable_offset, data.high_watermark);
        }
        let unknown = &response.responses[1];
        assert_eq!(&*unknown.topic.0, "no-such-topic");
        assert_eq!(unknown.partitions[0].error_code, 3);
    }
}
