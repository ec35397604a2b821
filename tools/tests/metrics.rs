//! The metrics endpoint of a real `ferrite serve`, read as Prometheus would read it, while a
//! client produces and fetches over the Kafka protocol: the numbers must be the exact ones the
//! client can work out for itself, a consumer group's lag included.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use engine::batch::build::batch_of;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, FetchRequest, FetchResponse, GroupId,
    OffsetCommitRequest, OffsetCommitResponse, ProduceRequest, ProduceResponse, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use common::{Broker, DEADLINE};

const TOPIC: &str = "metered";

/// Sends one request in `version` and returns its response.
fn call<Response: Decodable>(
    stream: &mut TcpStream,
    api_key: ApiKey,
    version: i16,
    request: &impl Encodable,
) -> Response {
    let mut body = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("metrics-test")))
        .encode(&mut body, api_key.request_header_version(version))
        .unwrap();
    request.encode(&mut body, version).unwrap();
    stream
        .write_all(&(body.len() as i32).to_be_bytes())
        .unwrap();
    stream.write_all(&body).unwrap();
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).unwrap();
    let mut frame = vec![0u8; i32::from_be_bytes(length) as usize];
    stream.read_exact(&mut frame).unwrap();
    let mut frame = Bytes::from(frame);
    let header =
        ResponseHeader::decode(&mut frame, api_key.response_header_version(version)).unwrap();
    assert_eq!(header.correlation_id, 7);
    Response::decode(&mut frame, version).unwrap()
}

fn topic_name() -> TopicName {
    TopicName(StrBytes::from_static_str(TOPIC))
}

/// Appends `batch` to `partition` (acks=all) and returns its base offset.
fn produce(stream: &mut TcpStream, partition: i32, batch: Vec<u8>) -> i64 {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name())
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(Bytes::from(batch)))])]);
    let response: ProduceResponse = call(stream, ApiKey::Produce, 9, &request);
    let answer = &response.responses[0].partition_responses[0];
    assert_eq!(answer.error_code, 0);
    answer.base_offset
}

/// Every record batch byte of `partition` from offset 0 (there are far fewer than the limits).
fn fetch_all(stream: &mut TcpStream, partition: i32) -> Bytes {
    let request = FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(0)
        .with_max_bytes(64 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic_name())
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(0)
                .with_partition_max_bytes(64 << 20)])]);
    let response: FetchResponse = call(stream, ApiKey::Fetch, 12, &request);
    let data = &response.responses[0].partitions[0];
    assert_eq!(data.error_code, 0);
    data.records.clone().unwrap_or_default()
}

/// Labels a series must have, as (label, value) pairs.
type Labels<'a> = &'a [(&'a str, &'a str)];

/// The sum of the samples named `name` whose labels include every one of `labels`
/// (`None` if there is none).
fn sum(text: &str, name: &str, labels: Labels) -> Option<f64> {
    let mut values = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (sample_name, sample_labels) = series.split_once('{').unwrap_or((series, ""));
            let wanted = sample_name == name
                && labels
                    .iter()
                    .all(|(label, value)| sample_labels.contains(&format!("{label}=\"{value}\"")));
            wanted.then(|| value.parse::<f64>().unwrap())
        })
        .peekable();
    values.peek()?;
    Some(values.sum())
}

/// Scrapes until `expected` holds (every `(name, labels, value)` summed over matching series),
/// or fails with the last scrape and the first value that did not match.
fn wait_for_metrics(broker: &Broker, expected: &[(&str, Labels, f64)]) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let text = broker.metrics();
        let mismatch = expected
            .iter()
            .find(|(name, labels, value)| sum(&text, name, labels) != Some(*value));
        let Some((name, labels, value)) = mismatch else {
            return;
        };
        assert!(
            Instant::now() < deadline,
            "{name}{labels:?}: wanted {value}, got {:?} in\n{text}",
            sum(&text, name, labels)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn metrics_count_what_clients_produce_and_fetch_per_topic_partition_and_connection() {
    let broker = Broker::start();
    let mut client = broker.connect();
    let create = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(topic_name())
            .with_num_partitions(2)
            .with_replication_factor(1)]);
    let created: CreateTopicsResponse = call(&mut client, ApiKey::CreateTopics, 7, &create);
    assert_eq!(created.topics[0].error_code, 0);

    // Partition 0 gets 3 batches of 4 records, partition 1 gets 2 batches of 5.
    let mut records = [0u64; 2];
    let mut produced = [Vec::new(), Vec::new()];
    let plan: [(i32, usize); 5] = [(0, 4), (1, 5), (0, 4), (1, 5), (0, 4)];
    for (index, &(partition, count)) in plan.iter().enumerate() {
        let batch = batch_of(count, 100 + index, 1_000 * index as i64);
        let base_offset = produce(&mut client, partition, batch.clone());
        assert_eq!(base_offset, records[partition as usize] as i64);
        records[partition as usize] += count as u64;
        produced[partition as usize].push(batch.len() as u64);
    }
    let produced_bytes: u64 = produced.iter().flatten().sum();
    let fetched: Vec<u64> = (0..2)
        .map(|partition| fetch_all(&mut client, partition).len() as u64)
        .collect();
    assert_eq!(fetched, produced.map(|sizes| sizes.iter().sum::<u64>()));

    // A group that read partition 0 up to offset 5 and all of partition 1.
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("auditors")))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(topic_name())
            .with_partitions(
                [(0, 5), (1, records[1] as i64)]
                    .into_iter()
                    .map(|(partition, offset)| {
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(partition)
                            .with_committed_offset(offset)
                    })
                    .collect(),
            )]);
    let committed: OffsetCommitResponse = call(&mut client, ApiKey::OffsetCommit, 8, &commit);
    assert!(committed.topics[0]
        .partitions
        .iter()
        .all(|partition| partition.error_code == 0));

    let topic: Labels = &[("topic", TOPIC)];
    let lag_0: Labels = &[("group", "auditors"), ("topic", TOPIC), ("partition", "0")];
    let lag_1: Labels = &[("group", "auditors"), ("topic", TOPIC), ("partition", "1")];
    let partition_0: Labels = &[("topic", TOPIC), ("partition", "0")];
    let partition_1: Labels = &[("topic", TOPIC), ("partition", "1")];
    let produce_api: Labels = &[("api", "Produce")];
    wait_for_metrics(
        &broker,
        &[
            (
                "ferrite_partition_high_watermark",
                partition_0,
                records[0] as f64,
            ),
            (
                "ferrite_partition_high_watermark",
                partition_1,
                records[1] as f64,
            ),
            ("ferrite_partition_log_start_offset", partition_0, 0.0),
            ("ferrite_partition_segments", partition_1, 1.0),
            ("ferrite_partition_size_bytes", topic, produced_bytes as f64),
            (
                "ferrite_topic_produced_bytes_total",
                topic,
                produced_bytes as f64,
            ),
            ("ferrite_topic_produced_records_total", topic, 22.0),
            ("ferrite_topic_produced_batches_total", topic, 5.0),
            (
                "ferrite_topic_fetched_bytes_total",
                topic,
                produced_bytes as f64,
            ),
            ("ferrite_requests_total", produce_api, 5.0),
            ("ferrite_request_latency_seconds_count", produce_api, 5.0),
            ("ferrite_connections_open", &[], 1.0),
            ("ferrite_group_committed_offset", lag_0, 5.0),
            ("ferrite_group_lag", lag_0, records[0] as f64 - 5.0),
            ("ferrite_group_lag", lag_1, 0.0),
            (
                "ferrite_group_members",
                &[("group", "auditors"), ("state", "Empty")],
                0.0,
            ),
        ],
    );
    let text = broker.metrics();
    let median = sum(
        &text,
        "ferrite_request_latency_seconds",
        &[("api", "Produce"), ("quantile", "0.5")],
    )
    .unwrap();
    let max = sum(&text, "ferrite_request_latency_seconds_max", produce_api).unwrap();
    assert!(
        0.0 < median && median <= max && max < DEADLINE.as_secs_f64(),
        "{text}"
    );

    drop(client);
    wait_for_metrics(
        &broker,
        &[
            ("ferrite_connections_open", &[], 0.0),
            ("ferrite_connections_accepted_total", &[], 1.0),
        ],
    );

    // After a restart, with no client touching anything, the logs and the group are loaded
    // at start-up: offsets and lag are reported as before.
    let broker = broker.restart();
    wait_for_metrics(
        &broker,
        &[
            (
                "ferrite_partition_high_watermark",
                partition_0,
                records[0] as f64,
            ),
            ("ferrite_group_lag", lag_0, records[0] as f64 - 5.0),
            ("ferrite_group_lag", lag_1, 0.0),
        ],
    );
}
