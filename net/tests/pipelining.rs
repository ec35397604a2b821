//! A connection's requests pipelined end to end over TCP, across shards: answers in request
//! order whatever order their work finishes in, and hundreds of requests read and started
//! behind one that waits.

mod common;

use std::time::{Duration, Instant};

use common::{create_topic, fetch, fetch_request, produce_request, stamped, TestBroker};
use engine::batch::build::batch_of;
use engine::LogConfig;
use kafka_protocol::messages::*;

#[test]
fn pipelined_produce_and_fetch_across_shards_keep_order_and_bytes() {
    let broker = TestBroker::start(2, LogConfig::default());
    let mut client = broker.connect();
    assert_eq!(create_topic(&mut client, "orders", 4), 0);
    assert_eq!(
        create_topic(&mut client, "orders", 4),
        36,
        "TOPIC_ALREADY_EXISTS"
    );

    // Twenty requests sent before reading any answer: answered in order, offsets in order.
    let mut sent = Vec::new();
    let mut batches = vec![Vec::new(); 4];
    for request in 0..20 {
        let partition = request % 4;
        let batch = batch_of(3, 100 + request as usize, 1_000 + request as i64);
        batches[partition as usize].push(batch.clone());
        let acks = if request % 2 == 0 { -1 } else { 1 };
        sent.push(client.send(
            ApiKey::Produce,
            9,
            &produce_request("orders", partition, batch, acks),
        ));
    }
    for (request, correlation_id) in sent.into_iter().enumerate() {
        let (received, response): (i32, ProduceResponse) = client.receive(ApiKey::Produce, 9);
        assert_eq!(received, correlation_id);
        let answer = &response.responses[0].partition_responses[0];
        assert_eq!(answer.error_code, 0);
        assert_eq!(
            answer.base_offset,
            (request / 4) as i64 * 3,
            "request {request}"
        );
    }
    for partition in 0..4 {
        let (error, high_watermark, records) = fetch(&mut client, "orders", partition, 0, 1_000);
        assert_eq!((error, high_watermark), (0, 15));
        let expected: Vec<u8> = batches[partition as usize]
            .iter()
            .enumerate()
            .flat_map(|(index, batch)| stamped(batch.clone(), index as i64 * 3))
            .collect();
        assert_eq!(&records[..], &expected[..], "partition {partition}");
    }
}

/// librdkafka sends a produce request per partition batch and keeps as many in flight as it
/// likes; a broker that stops reading a connection after a few dozen unanswered requests caps
/// that connection at so many requests per reply latency (issue 16: with a cluster's acks=all
/// latency the client's queue grew without bound). Here a long-poll fetch heads the
/// connection, and the produce that would answer it comes 300 requests later: it must be read
/// and started while the fetch still waits.
#[test]
fn a_connection_keeps_reading_hundreds_of_requests_behind_a_waiting_one() {
    let broker = TestBroker::start(1, LogConfig::default());
    let mut client = broker.connect();
    assert_eq!(create_topic(&mut client, "deep", 1), 0);
    let started = Instant::now();
    let max_wait = Duration::from_secs(20);
    client.send(
        ApiKey::Fetch,
        12,
        &fetch_request("deep", 0, 0, max_wait.as_millis() as i32),
    );
    let between = 300;
    for _ in 0..between {
        client.send(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    }
    client.send(
        ApiKey::Produce,
        9,
        &produce_request("deep", 0, batch_of(1, 10, 5), 1),
    );
    let (_, response): (i32, FetchResponse) = client.receive(ApiKey::Fetch, 12);
    let data = &response.responses[0].partitions[0];
    assert_eq!(data.high_watermark, 1);
    assert!(!data.records.as_ref().unwrap().is_empty());
    assert!(
        started.elapsed() < max_wait / 2,
        "the fetch was answered by the produce behind it, not by its max_wait_ms ({:?})",
        started.elapsed()
    );
    for _ in 0..between {
        let (_, versions): (i32, ApiVersionsResponse) = client.receive(ApiKey::ApiVersions, 3);
        assert_eq!(versions.error_code, 0);
    }
    let (_, produced): (i32, ProduceResponse) = client.receive(ApiKey::Produce, 9);
    assert_eq!(produced.responses[0].partition_responses[0].error_code, 0);
}
