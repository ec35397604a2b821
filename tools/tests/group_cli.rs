//! `ferrite group list|describe|reset-offsets` as a script runs them, against a real `ferrite
//! serve`: offsets committed with `reset-offsets` itself (a simple commit), and an active member
//! made by speaking JoinGroup and SyncGroup to the broker directly, as a consumer would.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiVersionsRequest, ApiVersionsResponse, ConsumerProtocolAssignment,
    ConsumerProtocolSubscription, GroupId, JoinGroupRequest, RequestHeader, ResponseHeader,
    SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use serde_json::{json, Value};

use common::cli::{admin_fails, admin_ok, ferrite, now_ms};
use common::Broker;

/// Kafka's MEMBER_ID_REQUIRED: a first JoinGroup is told its member id and must join again.
const MEMBER_ID_REQUIRED: i16 = 79;

/// Writes `count` messages to one partition.
fn produce(broker: &Broker, topic: &str, partition: i32, count: usize, label: &str) {
    let lines: String = (0..count).map(|i| format!("{label}-{i}\n")).collect();
    admin_ok(
        broker,
        &[
            "produce",
            "--topic",
            topic,
            "--partition",
            &partition.to_string(),
        ],
        lines.as_bytes(),
    );
}

fn create_topic(broker: &Broker, topic: &str, partitions: i32) {
    admin_ok(
        broker,
        &[
            "topic",
            "create",
            topic,
            "--partitions",
            &partitions.to_string(),
        ],
        b"",
    );
}

fn describe_json(broker: &Broker, group: &str) -> Value {
    let printed = admin_ok(broker, &["group", "describe", group, "--json"], b"");
    let mut groups: Vec<Value> = serde_json::from_str(&printed).unwrap();
    assert_eq!(groups.len(), 1, "{printed}");
    groups.remove(0)
}

/// (committed, log end, lag) of each listed partition, by "topic-partition".
fn positions(group: &Value) -> Vec<(String, Value, Value, Value)> {
    group["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                format!("{}-{}", row["topic"].as_str().unwrap(), row["partition"]),
                row["committed_offset"].clone(),
                row["log_end_offset"].clone(),
                row["lag"].clone(),
            )
        })
        .collect()
}

fn row(
    partition: &str,
    committed: Value,
    log_end: Value,
    lag: Value,
) -> (String, Value, Value, Value) {
    (partition.to_string(), committed, log_end, lag)
}

#[test]
fn help_texts_end_with_the_exit_codes() {
    for command in ["list", "describe", "reset-offsets"] {
        let outcome = ferrite(&["group", command, "--help"], b"");
        assert_eq!(outcome.code, Some(0), "{command}: {outcome:?}");
        let last_paragraph = outcome.stdout.trim_end().rsplit("\n\n").next().unwrap();
        assert!(
            last_paragraph.starts_with("Exit codes: 0 success")
                && last_paragraph.contains("; 2 usage error"),
            "{command}: {outcome:?}"
        );
    }
    let reset = ferrite(&["group", "reset-offsets", "--help"], b"").stdout;
    assert!(reset.contains("the group has active members"), "{reset}");
}

#[test]
fn describe_shows_committed_offsets_log_ends_and_lag() {
    let broker = Broker::start();
    create_topic(&broker, "orders", 3);
    produce(&broker, "orders", 0, 10, "a");
    produce(&broker, "orders", 1, 5, "b");
    admin_fails(
        &broker,
        &["group", "describe", "billing"],
        b"",
        1,
        "group billing does not exist",
    );
    assert_eq!(admin_ok(&broker, &["group", "list"], b""), "");

    for (partition, offset) in [("0", "4"), ("1", "2")] {
        let committed = admin_ok(
            &broker,
            &[
                "group",
                "reset-offsets",
                "billing",
                "--topic",
                "orders",
                "--partition",
                partition,
                "--to-offset",
                offset,
                "--execute",
            ],
            b"",
        );
        assert_eq!(
            committed,
            format!(
                "group billing topic orders committed\n  partition orders-{partition} from - \
                 to {offset}\n"
            )
        );
    }

    assert_eq!(
        admin_ok(&broker, &["group", "describe", "billing"], b""),
        "group billing state Empty protocol-type - protocol - members 0\n\
         \x20 partition orders-0 committed 4 log-end 10 lag 6 member - client-id - host -\n\
         \x20 partition orders-1 committed 2 log-end 5 lag 3 member - client-id - host -\n"
    );
    let described = describe_json(&broker, "billing");
    assert_eq!(described["group"], "billing");
    assert_eq!(described["state"], "Empty");
    assert_eq!(described["members"], json!([]));
    assert_eq!(
        positions(&described),
        [
            row("orders-0", json!(4), json!(10), json!(6)),
            row("orders-1", json!(2), json!(5), json!(3)),
        ]
    );
    assert_eq!(described["partitions"][0]["member_id"], Value::Null);

    // N new messages: the lag grows by exactly N.
    produce(&broker, "orders", 1, 3, "c");
    assert_eq!(
        positions(&describe_json(&broker, "billing"))[1],
        row("orders-1", json!(2), json!(8), json!(6))
    );

    assert_eq!(
        admin_ok(&broker, &["group", "list"], b""),
        "group billing state Empty protocol-type -\n"
    );
    let listed: Value =
        serde_json::from_str(&admin_ok(&broker, &["group", "list", "--json"], b"")).unwrap();
    assert_eq!(
        listed,
        json!([{"group": "billing", "state": "Empty", "protocol_type": ""}])
    );
}

#[test]
fn reset_offsets_prints_the_plan_and_commits_it_only_with_execute() {
    let broker = Broker::start();
    create_topic(&broker, "events", 3);
    produce(&broker, "events", 0, 3, "early");
    produce(&broker, "events", 1, 2, "early");
    produce(&broker, "events", 2, 1, "early");
    // Every later message is stamped after `boundary`, every earlier one before it.
    let boundary = now_ms() + 1;
    while now_ms() <= boundary {
        std::thread::yield_now();
    }
    produce(&broker, "events", 0, 2, "late");
    produce(&broker, "events", 2, 1, "late");

    let reset = |args: &[&str]| {
        let mut all = vec!["group", "reset-offsets", "replay", "--topic", "events"];
        all.extend(args);
        admin_ok(&broker, &all, b"")
    };
    let dry_run = "group replay topic events dry-run (nothing committed; add --execute to \
                   commit)\n";
    assert_eq!(
        reset(&["--to-earliest"]),
        format!(
            "{dry_run}  partition events-0 from - to 0\n  partition events-1 from - to 0\n  \
             partition events-2 from - to 0\n"
        )
    );
    admin_fails(
        &broker,
        &["group", "describe", "replay"],
        b"",
        1,
        "group replay does not exist",
    );

    assert_eq!(
        reset(&["--to-latest", "--execute"]),
        "group replay topic events committed\n  partition events-0 from - to 5\n  partition \
         events-1 from - to 2\n  partition events-2 from - to 2\n"
    );
    let latest = [
        row("events-0", json!(5), json!(5), json!(0)),
        row("events-1", json!(2), json!(2), json!(0)),
        row("events-2", json!(2), json!(2), json!(0)),
    ];
    assert_eq!(positions(&describe_json(&broker, "replay")), latest);

    assert_eq!(
        reset(&["--to-earliest"]),
        format!(
            "{dry_run}  partition events-0 from 5 to 0\n  partition events-1 from 2 to 0\n  \
             partition events-2 from 2 to 0\n"
        )
    );
    assert_eq!(
        positions(&describe_json(&broker, "replay")),
        latest,
        "a dry run commits nothing"
    );

    // The first message at or after the boundary; events-1 has none, so its end.
    assert_eq!(
        reset(&["--to-timestamp", &boundary.to_string(), "--execute"]),
        "group replay topic events committed\n  partition events-0 from 5 to 3\n  partition \
         events-1 from 2 to 2\n  partition events-2 from 2 to 1\n"
    );
    // Beyond the log end: the log end.
    assert_eq!(
        reset(&["--to-offset", "99", "--partition", "2", "--execute"]),
        "group replay topic events committed\n  partition events-2 from 1 to 2\n"
    );
    assert_eq!(
        reset(&["--to-earliest", "--partition", "1", "--execute"]),
        "group replay topic events committed\n  partition events-1 from 2 to 0\n"
    );
    assert_eq!(
        positions(&describe_json(&broker, "replay")),
        [
            row("events-0", json!(3), json!(5), json!(2)),
            row("events-1", json!(0), json!(2), json!(2)),
            row("events-2", json!(2), json!(2), json!(0)),
        ]
    );

    admin_fails(
        &broker,
        &[
            "group",
            "reset-offsets",
            "replay",
            "--topic",
            "events",
            "--partition",
            "7",
            "--to-earliest",
        ],
        b"",
        1,
        "topic events has no partition 7",
    );
    admin_fails(
        &broker,
        &[
            "group",
            "reset-offsets",
            "replay",
            "--topic",
            "missing",
            "--to-earliest",
        ],
        b"",
        1,
        "topic missing: UNKNOWN_TOPIC_OR_PARTITION",
    );
}

#[test]
fn a_group_with_an_active_member_shows_its_owner_and_refuses_a_reset() {
    let broker = Broker::start();
    create_topic(&broker, "orders", 3);
    produce(&broker, "orders", 0, 4, "a");
    admin_ok(
        &broker,
        &[
            "group",
            "reset-offsets",
            "live",
            "--topic",
            "orders",
            "--partition",
            "0",
            "--to-offset",
            "1",
            "--execute",
        ],
        b"",
    );
    let member = Member::join(&broker, "live", "orders", &[0, 1, 2]);

    let described = describe_json(&broker, "live");
    assert_eq!(described["state"], "Stable");
    assert_eq!(described["protocol_type"], "consumer");
    assert_eq!(described["protocol"], "range");
    assert_eq!(described["members"].as_array().unwrap().len(), 1);
    assert_eq!(described["members"][0]["member_id"], member.member_id);
    assert_eq!(described["members"][0]["client_id"], CLIENT_ID);
    assert_eq!(
        described["members"][0]["assignment"],
        json!({"orders": [0, 1, 2]})
    );
    assert_eq!(
        positions(&described),
        [
            row("orders-0", json!(1), json!(4), json!(3)),
            row("orders-1", Value::Null, json!(0), Value::Null),
            row("orders-2", Value::Null, json!(0), Value::Null),
        ]
    );
    let host = described["members"][0]["host"]
        .as_str()
        .unwrap()
        .to_string();
    for partition in described["partitions"].as_array().unwrap() {
        assert_eq!(partition["member_id"], member.member_id);
        assert_eq!(partition["client_id"], CLIENT_ID);
        assert_eq!(partition["host"], host);
    }
    let text = admin_ok(&broker, &["group", "describe", "live"], b"");
    assert!(
        text.starts_with(
            "group live state Stable protocol-type consumer protocol range members 1\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "  partition orders-1 committed - log-end 0 lag - member {} client-id {CLIENT_ID} \
             host {host}\n",
            member.member_id
        )),
        "{text}"
    );
    assert_eq!(
        admin_ok(&broker, &["group", "list"], b""),
        "group live state Stable protocol-type consumer\n"
    );

    for execute in [&[][..], &["--execute"]] {
        let mut args = vec![
            "group",
            "reset-offsets",
            "live",
            "--topic",
            "orders",
            "--to-earliest",
        ];
        args.extend(execute);
        let refused = admin_fails(
            &broker,
            &args,
            b"",
            1,
            &format!(
                "group live is Stable with 1 active member(s): {} (client-id {CLIENT_ID}, host \
                 {host}); offsets can only be reset while the group is empty: stop its \
                 consumers",
                member.member_id
            ),
        );
        assert_eq!(refused.stdout, "");
    }
    assert_eq!(
        positions(&describe_json(&broker, "live"))[0],
        row("orders-0", json!(1), json!(4), json!(3)),
        "nothing was committed"
    );
    drop(member);
}

/// The client id the hand-made member sends.
const CLIENT_ID: &str = "group-test";

/// A consumer-group member made by hand: it joins (becoming the leader, as the only member),
/// assigns itself `partitions` of one topic, and stays a member while its session lasts (30 s,
/// longer than the test; no heartbeats).
struct Member {
    stream: TcpStream,
    correlation_id: i32,
    /// The broker's ApiVersions: (key, max version).
    broker_versions: Vec<(i16, i16)>,
    member_id: String,
}

impl Member {
    fn join(broker: &Broker, group: &str, topic: &str, partitions: &[i32]) -> Member {
        let mut member = Member {
            stream: broker.connect(),
            correlation_id: 0,
            broker_versions: Vec::new(),
            member_id: String::new(),
        };
        let versions: ApiVersionsResponse = member.send(&ApiVersionsRequest::default(), 0);
        assert_eq!(versions.error_code, 0);
        member.broker_versions = versions
            .api_keys
            .iter()
            .map(|key| (key.api_key, key.max_version))
            .collect();

        let mut subscription = BytesMut::from(&0i16.to_be_bytes()[..]);
        ConsumerProtocolSubscription::default()
            .with_topics(vec![StrBytes::from_string(topic.to_string())])
            .encode(&mut subscription, 0)
            .unwrap();
        let group_id = GroupId(StrBytes::from_string(group.to_string()));
        let version = member.version::<JoinGroupRequest>();
        let joined = loop {
            let request = JoinGroupRequest::default()
                .with_group_id(group_id.clone())
                .with_session_timeout_ms(30_000)
                .with_rebalance_timeout_ms(30_000)
                .with_member_id(StrBytes::from_string(member.member_id.clone()))
                .with_protocol_type(StrBytes::from_static_str("consumer"))
                .with_protocols(vec![JoinGroupRequestProtocol::default()
                    .with_name(StrBytes::from_static_str("range"))
                    .with_metadata(subscription.clone().freeze())]);
            let response = member.send(&request, version);
            member.member_id = response.member_id.to_string();
            if response.error_code == MEMBER_ID_REQUIRED {
                continue;
            }
            assert_eq!(response.error_code, 0, "JoinGroup");
            break response;
        };
        assert_eq!(
            joined.leader.as_str(),
            member.member_id,
            "the only member leads"
        );

        let mut assignment = BytesMut::from(&0i16.to_be_bytes()[..]);
        ConsumerProtocolAssignment::default()
            .with_assigned_partitions(vec![TopicPartition::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(partitions.to_vec())])
            .encode(&mut assignment, 0)
            .unwrap();
        let version = member.version::<SyncGroupRequest>();
        let mut request = SyncGroupRequest::default()
            .with_group_id(group_id)
            .with_generation_id(joined.generation_id)
            .with_member_id(StrBytes::from_string(member.member_id.clone()))
            .with_assignments(vec![SyncGroupRequestAssignment::default()
                .with_member_id(StrBytes::from_string(member.member_id.clone()))
                .with_assignment(assignment.freeze())]);
        // Only version 5 on names the protocol in SyncGroup.
        if version >= 5 {
            request = request
                .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
                .with_protocol_name(Some(StrBytes::from_static_str("range")));
        }
        let synced = member.send(&request, version);
        assert_eq!(synced.error_code, 0, "SyncGroup");
        member
    }

    /// The highest version of `R` both the broker and the crate speak.
    fn version<R: Request>(&self) -> i16 {
        let broker_max = self
            .broker_versions
            .iter()
            .find(|(key, _)| *key == R::KEY)
            .map(|&(_, max)| max)
            .unwrap_or_else(|| panic!("the broker does not speak API {}", R::KEY));
        broker_max.min(R::VERSIONS.max)
    }

    fn send<R: Request>(&mut self, request: &R, version: i16) -> R::Response {
        self.correlation_id += 1;
        let mut frame = BytesMut::from(&[0u8; 4][..]);
        RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)))
            .encode(&mut frame, R::header_version(version))
            .unwrap();
        request.encode(&mut frame, version).unwrap();
        let length = (frame.len() - 4) as i32;
        frame[..4].copy_from_slice(&length.to_be_bytes());
        self.stream.write_all(&frame).unwrap();

        let mut length = [0u8; 4];
        self.stream.read_exact(&mut length).unwrap();
        let mut body = vec![0u8; i32::from_be_bytes(length) as usize];
        self.stream.read_exact(&mut body).unwrap();
        let mut body = Bytes::from(body);
        let header = ResponseHeader::decode(
            &mut body,
            <R::Response as HeaderVersion>::header_version(version),
        )
        .unwrap();
        assert_eq!(header.correlation_id, self.correlation_id);
        R::Response::decode(&mut body, version).unwrap()
    }
}
