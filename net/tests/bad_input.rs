//! Bad input over a real connection: each kind gets a Kafka error code or a closed
//! connection, and nothing else: the broker keeps serving other connections, and no partition
//! receives any part of it.

mod common;

use std::io::Write;

use common::{name, produce, Client, TestBroker};
use engine::batch::build::batch_of;
use engine::LogConfig;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

/// A valid Metadata v12 request frame body (header + body), for mangling.
fn metadata_frame() -> Vec<u8> {
    use kafka_protocol::protocol::Encodable;
    let mut bytes = bytes::BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::Metadata as i16)
        .with_request_api_version(12)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("x")))
        .encode(&mut bytes, ApiKey::Metadata.request_header_version(12))
        .unwrap();
    MetadataRequest::default()
        .with_topics(None)
        .encode(&mut bytes, 12)
        .unwrap();
    bytes.to_vec()
}

/// Header of a request with this key and version, no body.
fn header_only(api_key: i16, version: i16) -> Vec<u8> {
    let mut bytes = api_key.to_be_bytes().to_vec();
    bytes.extend_from_slice(&version.to_be_bytes());
    bytes.extend_from_slice(&9i32.to_be_bytes());
    bytes.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
    bytes
}

/// Sends one kind of bad input on a fresh connection.
type BadInput = Box<dyn Fn(&mut Client)>;

#[test]
fn each_kind_of_bad_input_closes_only_its_own_connection() {
    let broker = TestBroker::start(2, LogConfig::default());
    let mut bystander = broker.connect();
    let request = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(name("kept"))
        .with_num_partitions(1)
        .with_replication_factor(1)]);
    let created: CreateTopicsResponse = bystander.call(ApiKey::CreateTopics, 7, &request);
    assert_eq!(created.topics[0].error_code, 0);
    assert_eq!(
        produce(&mut bystander, "kept", 0, batch_of(2, 10, 1)),
        (0, 0)
    );

    let mut lying_count = metadata_frame();
    // Metadata v12 body: compact nullable topics array first; claim two billion topics.
    let body_start = lying_count.len() - 4;
    lying_count.truncate(body_start);
    lying_count.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x07]);
    let mut truncated_body = metadata_frame();
    truncated_body.truncate(truncated_body.len() - 2);
    let cases: Vec<(&str, BadInput)> = vec![
        (
            "a frame above the 100 MiB maximum",
            Box::new(|client: &mut Client| {
                client
                    .stream
                    .write_all(&(200i32 << 20).to_be_bytes())
                    .unwrap();
            }),
        ),
        (
            "a negative length",
            Box::new(|client: &mut Client| {
                client.stream.write_all(&(-5i32).to_be_bytes()).unwrap();
            }),
        ),
        (
            "a frame shorter than a header",
            Box::new(|client: &mut Client| {
                client.send_raw_frame(&[0, 3, 0]);
            }),
        ),
        (
            "an unknown API key",
            Box::new(|client: &mut Client| {
                client.send_raw_frame(&header_only(999, 0));
            }),
        ),
        (
            "an API we do not implement",
            Box::new(|client: &mut Client| {
                client.send_raw_frame(&header_only(ApiKey::JoinGroup as i16, 0));
            }),
        ),
        (
            "a Produce version we do not speak",
            Box::new(|client: &mut Client| {
                client.send_raw_frame(&header_only(ApiKey::Produce as i16, 2));
            }),
        ),
        (
            "an array count far beyond the frame",
            Box::new(move |client: &mut Client| {
                client.send_raw_frame(&lying_count);
            }),
        ),
        (
            "a body cut short",
            Box::new(move |client: &mut Client| {
                client.send_raw_frame(&truncated_body);
            }),
        ),
        (
            "a connection closed mid-frame",
            Box::new(|client: &mut Client| {
                client.stream.write_all(&100i32.to_be_bytes()).unwrap();
                client.stream.write_all(&[0; 10]).unwrap();
                client.stream.shutdown(std::net::Shutdown::Write).unwrap();
            }),
        ),
    ];
    for (what, send) in cases {
        let mut client = broker.connect();
        send(&mut client);
        assert!(
            client.closed_by_broker(),
            "{what}: the connection is closed"
        );
        // Everyone else is still served, and the partition holds exactly what it held.
        let metadata: MetadataResponse = bystander.call(
            ApiKey::Metadata,
            12,
            &MetadataRequest::default().with_topics(None),
        );
        let user_topics = metadata.topics.iter().filter(|topic| !topic.is_internal);
        assert_eq!(user_topics.count(), 1, "{what}");
    }
    assert_eq!(
        produce(&mut bystander, "kept", 0, batch_of(1, 10, 2)),
        (0, 2),
        "nothing partial was appended"
    );
    let text = broker.metrics.render();
    assert!(text.contains("ferrite_connections_closed_bad_input_total"));
}

#[test]
fn a_newer_api_versions_request_gets_the_fallback_answer() {
    let broker = TestBroker::start(1, LogConfig::default());
    let mut client = broker.connect();
    let mut frame = header_only(ApiKey::ApiVersions as i16, 99);
    frame.extend_from_slice(&[0, 0, 0]); // whatever a future version's body holds
    client.send_raw_frame(&frame);
    let (correlation_id, response): (i32, ApiVersionsResponse) =
        client.receive(ApiKey::ApiVersions, 0);
    assert_eq!(correlation_id, 9);
    assert_eq!(response.error_code, 35, "UNSUPPORTED_VERSION");
    let produce = response
        .api_keys
        .iter()
        .find(|entry| entry.api_key == ApiKey::Produce as i16)
        .expect("the table is in the fallback answer");
    assert_eq!((produce.min_version, produce.max_version), (0, 9));
    // The connection stays usable: the client retries with a version we speak.
    let answer: ApiVersionsResponse =
        client.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(answer.error_code, 0);
}

#[test]
fn padding_after_a_request_body_is_ignored_as_kafka_ignores_it() {
    let broker = TestBroker::start(1, LogConfig::default());
    let mut client = broker.connect();
    // librdkafka 2.16's all-topics Metadata v12 carries three bytes after its body.
    let mut frame = metadata_frame();
    frame.extend_from_slice(&[0, 0, 0]);
    client.send_raw_frame(&frame);
    let (correlation_id, response): (i32, MetadataResponse) = client.receive(ApiKey::Metadata, 12);
    assert_eq!(correlation_id, 7);
    assert_eq!(response.brokers.len(), 1);
}
