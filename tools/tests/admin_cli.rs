//! The admin commands (`ferrite topic|produce|consume`) as a script runs them: the built binary
//! against a real `ferrite serve`, judged by exit code, standard output and standard error.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::cli::{admin_fails, admin_ok, ferrite, now_ms};
use common::{Broker, DEADLINE};

#[test]
fn without_a_broker_every_command_says_what_to_do() {
    // A port nothing listens on: bound, never listening, so connections are refused, and held
    // so nobody else can listen there while the test runs.
    let free =
        engine::shard::listen::ListenReservation::new("127.0.0.1:0".parse().unwrap()).unwrap();
    let address = free.address().to_string();
    let commands: [&[&str]; 7] = [
        &["topic", "list"],
        &["topic", "create", "t"],
        &["produce", "--topic", "t"],
        &["consume", "--topic", "t"],
        &["group", "list"],
        &["group", "describe", "g"],
        &[
            "group",
            "reset-offsets",
            "g",
            "--topic",
            "t",
            "--to-earliest",
        ],
    ];
    for command in commands {
        let mut args = command.to_vec();
        args.extend(["--bootstrap", &address]);
        let outcome = ferrite(&args, b"a line\n");
        assert_eq!(outcome.code, Some(1), "{command:?}: {outcome:?}");
        assert!(
            outcome.stderr.contains(&format!(
                "cannot connect to {address}: connection refused — is `ferrite serve` running"
            )),
            "{command:?}: {outcome:?}"
        );
        assert_eq!(outcome.stdout, "");
    }
}

#[test]
fn bad_flags_are_usage_errors() {
    let cases: [(&[&str], &str); 14] = [
        (&["topic", "create"], "<NAME>"),
        (
            &["topic", "create", "t", "--partitions", "0"],
            "--partitions",
        ),
        (
            &["topic", "create", "t", "--config", "retention.ms"],
            "KEY=VALUE",
        ),
        (&["topic", "frobnicate"], "unrecognized subcommand"),
        (&["produce"], "--topic"),
        (&["produce", "--topic", "t", "--acks", "2"], "--acks"),
        (
            &["produce", "--topic", "t", "--compression", "brotli"],
            "--compression",
        ),
        (&["consume", "--topic", "t", "--from", "nowhere"], "--from"),
        (
            &[
                "consume",
                "--topic",
                "t",
                "--from",
                "5",
                "--from-timestamp",
                "1",
            ],
            "cannot be used with",
        ),
        (&["group", "describe"], "<GROUPS>"),
        (
            &["group", "reset-offsets", "g", "--topic", "t"],
            "--to-earliest",
        ),
        (
            &[
                "group",
                "reset-offsets",
                "g",
                "--topic",
                "t",
                "--to-earliest",
                "--to-offset",
                "3",
            ],
            "cannot be used with",
        ),
        (&["group", "reset-offsets", "g", "--to-latest"], "--topic"),
        (
            &[
                "group",
                "reset-offsets",
                "g",
                "--topic",
                "t",
                "--to-timestamp",
                "yesterday",
            ],
            "--to-timestamp",
        ),
    ];
    for (args, wanted) in cases {
        let outcome = ferrite(args, b"");
        assert_eq!(outcome.code, Some(2), "{args:?}: {outcome:?}");
        assert!(outcome.stderr.contains(wanted), "{args:?}: {outcome:?}");
        assert_eq!(outcome.stdout, "");
    }
}

#[test]
fn topics_are_created_listed_described_and_deleted() {
    let broker = Broker::start();
    let created = admin_ok(
        &broker,
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "3",
            "--config",
            "retention.ms=3600000",
        ],
        b"",
    );
    assert_eq!(created, "created topic orders with 3 partition(s)\n");
    admin_ok(&broker, &["topic", "create", "audit"], b"");
    assert_eq!(
        admin_ok(&broker, &["topic", "list"], b""),
        "audit\norders\n"
    );
    assert_eq!(
        admin_ok(&broker, &["topic", "list", "--include-internal"], b""),
        "__consumer_offsets\n__transaction_state\naudit\norders\n"
    );
    admin_fails(
        &broker,
        &["topic", "create", "orders"],
        b"",
        1,
        "topic orders: TOPIC_ALREADY_EXISTS (Kafka error 36)",
    );

    let described = admin_ok(&broker, &["topic", "describe", "orders"], b"");
    let lines: Vec<&str> = described.lines().collect();
    assert_eq!(
        lines[0], "topic orders partitions 3 replication-factor 1",
        "{described}"
    );
    for partition in 0..3 {
        let line = lines[1 + partition];
        assert!(
            line.starts_with(&format!("  partition {partition} leader "))
                && line.ends_with(" log-start 0 high-water 0"),
            "{described}"
        );
    }
    assert!(
        lines.contains(&"  config retention.ms=3600000"),
        "{described}"
    );

    assert_eq!(
        admin_ok(&broker, &["topic", "delete", "orders"], b""),
        "deleted topic orders\n"
    );
    assert_eq!(admin_ok(&broker, &["topic", "list"], b""), "audit\n");
    // Several topics: each is handled, each failure reported, and the exit code says so.
    let outcome = admin_fails(
        &broker,
        &["topic", "describe", "audit", "orders"],
        b"",
        1,
        "topic orders: UNKNOWN_TOPIC_OR_PARTITION (Kafka error 3)",
    );
    assert!(
        outcome.stdout.starts_with("topic audit partitions 1 "),
        "{outcome:?}"
    );
    admin_fails(
        &broker,
        &["topic", "delete", "orders"],
        b"",
        1,
        "UNKNOWN_TOPIC_OR_PARTITION",
    );
}

#[test]
fn topic_settings_are_altered_and_described() {
    let broker = Broker::start();
    admin_ok(
        &broker,
        &[
            "topic",
            "create",
            "orders",
            "--config",
            "retention.ms=3600000",
            "--config",
            "segment.ms=600000",
        ],
        b"",
    );
    let altered = admin_ok(
        &broker,
        &[
            "topic",
            "alter",
            "orders",
            "--set",
            "retention.bytes=1048576",
            "--set",
            "max.message.bytes=2000",
            "--delete",
            "segment.ms",
            "--append",
            "cleanup.policy=delete",
        ],
        b"",
    );
    assert_eq!(altered, "altered topic orders\n");
    let described = admin_ok(&broker, &["topic", "describe", "orders"], b"");
    let configs: Vec<&str> = described
        .lines()
        .filter(|line| line.starts_with("  config "))
        .collect();
    assert_eq!(
        configs,
        vec![
            "  config cleanup.policy=delete",
            "  config max.message.bytes=2000",
            "  config retention.bytes=1048576",
            "  config retention.ms=3600000",
        ],
        "{described}"
    );
    let every = admin_ok(
        &broker,
        &["topic", "describe", "orders", "--all-configs"],
        b"",
    );
    assert!(
        every.contains("  config segment.ms=604800000 source default"),
        "{every}"
    );
    assert!(
        every.contains("  config max.message.bytes=2000 source topic"),
        "{every}"
    );
    assert!(
        every.contains("  config min.cleanable.dirty.ratio=0.5 source default"),
        "{every}"
    );

    // The new limit is in effect for the next batch.
    admin_fails(
        &broker,
        &["produce", "--topic", "orders"],
        "x".repeat(3_000).as_bytes(),
        1,
        "MESSAGE_TOO_LARGE",
    );
    assert_eq!(
        admin_ok(
            &broker,
            &[
                "topic",
                "alter",
                "orders",
                "--set",
                "retention.ms=60000",
                "--validate-only"
            ],
            b""
        ),
        "the changes to topic orders are valid (nothing was changed)\n"
    );
    admin_fails(
        &broker,
        &["topic", "alter", "orders", "--set", "retention.ms=soon"],
        b"",
        1,
        "topic orders: INVALID_CONFIG (Kafka error 40): invalid value 'soon' for topic config \
         'retention.ms': expected a whole number of at least -1",
    );
    admin_fails(
        &broker,
        &["topic", "alter", "nowhere", "--delete", "retention.ms"],
        b"",
        1,
        "topic nowhere: UNKNOWN_TOPIC_OR_PARTITION (Kafka error 3)",
    );
    let unchanged = admin_ok(&broker, &["topic", "describe", "orders"], b"");
    assert!(
        unchanged.contains("  config retention.ms=3600000\n"),
        "neither the check nor the refused change altered anything: {unchanged}"
    );
    admin_fails(&broker, &["topic", "alter", "orders"], b"", 2, "--set");
    let help = ferrite(&["topic", "alter", "--help"], b"");
    assert_eq!(help.code, Some(0));
    assert!(
        help.stdout
            .trim_end()
            .ends_with("2 usage error (bad flags or input)."),
        "{}",
        help.stdout
    );
}

/// One consumed line of `consume --offsets --keyed`.
#[derive(Debug, PartialEq, Eq)]
struct Consumed {
    partition: i32,
    offset: i64,
    key: String,
    value: String,
}

fn parse_consumed(stdout: &str) -> Vec<Consumed> {
    stdout
        .lines()
        .map(|line| {
            let mut fields = line.splitn(4, '\t');
            let mut next = || fields.next().unwrap_or_else(|| panic!("{line:?}"));
            Consumed {
                partition: next().parse().unwrap(),
                offset: next().parse().unwrap(),
                key: next().to_string(),
                value: next().to_string(),
            }
        })
        .collect()
}

#[test]
fn keyed_lines_round_trip_with_every_codec() {
    let broker = Broker::start();
    // Keys whose partitions (of 4) the Java client's murmur2 vectors fix.
    let known = [
        ("21", 0),
        ("foobar", 2),
        ("abc", 3),
        ("a-little-bit-long-string", 0),
    ];
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("codec-{codec}");
        admin_ok(
            &broker,
            &["topic", "create", &topic, "--partitions", "4"],
            b"",
        );
        let mut input: Vec<(String, String)> = known
            .iter()
            .map(|(key, _)| (key.to_string(), format!("known key via {codec}")))
            .collect();
        input.extend((0..300).map(|i| {
            (
                format!("key-{}", i % 17),
                format!("value {i}\tvia {codec} ✓"),
            )
        }));
        input.push(("empty-value".to_string(), String::new()));
        let lines: String = input
            .iter()
            .map(|(key, value)| format!("{key}\t{value}\n"))
            .collect();
        let produced = admin_ok(
            &broker,
            &[
                "produce",
                "--topic",
                &topic,
                "--keyed",
                "--compression",
                codec,
                "--batch-messages",
                "40",
            ],
            lines.as_bytes(),
        );
        assert_eq!(produced, "", "silent on success");

        let consumed = parse_consumed(&admin_ok(
            &broker,
            &[
                "consume",
                "--topic",
                &topic,
                "--from",
                "beginning",
                "--exit-at-end",
                "--keyed",
                "--offsets",
            ],
            b"",
        ));
        assert_eq!(consumed.len(), input.len(), "{codec}");
        let mut partition_of_key = BTreeMap::new();
        for record in &consumed {
            let partition = *partition_of_key
                .entry(record.key.clone())
                .or_insert(record.partition);
            assert_eq!(
                partition, record.partition,
                "{codec}: key {} in one partition",
                record.key
            );
        }
        for (key, partition) in known {
            assert_eq!(partition_of_key[key], partition, "{codec}: key {key}");
        }
        // Per partition: offsets from 0 without gaps, and the lines in the order written.
        for partition in 0..4 {
            let read: Vec<&Consumed> = consumed
                .iter()
                .filter(|record| record.partition == partition)
                .collect();
            let offsets: Vec<i64> = read.iter().map(|record| record.offset).collect();
            assert_eq!(
                offsets,
                (0..read.len() as i64).collect::<Vec<_>>(),
                "{codec}"
            );
            let expected: Vec<&(String, String)> = input
                .iter()
                .filter(|(key, _)| partition_of_key[key] == partition)
                .collect();
            let read_pairs: Vec<(String, String)> = read
                .iter()
                .map(|record| (record.key.clone(), record.value.clone()))
                .collect();
            assert_eq!(read_pairs.iter().collect::<Vec<_>>(), expected, "{codec}");
        }
    }
}

#[test]
fn consume_starts_at_an_offset_or_a_timestamp_and_long_polls() {
    let broker = Broker::start();
    admin_ok(&broker, &["topic", "create", "events"], b"");
    let verbose = admin_ok(
        &broker,
        &["produce", "--topic", "events", "--acks", "1", "--verbose"],
        b"first-0\nfirst-1\nfirst-2\nfirst-3\nfirst-4\n",
    );
    assert_eq!(verbose, "partition 0 base-offset 0 messages 5\n");
    // Every later message is stamped after `boundary`, every earlier one before it.
    let boundary = now_ms() + 1;
    while now_ms() <= boundary {
        std::thread::yield_now();
    }
    admin_ok(
        &broker,
        &["produce", "--topic", "events", "--acks", "0"],
        b"second-0\nsecond-1\nsecond-2\n",
    );
    // acks=0 returns before the broker has the messages: wait until it shows them.
    let deadline = Instant::now() + DEADLINE;
    while !admin_ok(&broker, &["topic", "describe", "events"], b"").contains("high-water 8") {
        assert!(
            Instant::now() < deadline,
            "the acks=0 messages never arrived"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let consume = |extra: &[&str]| {
        let mut args = vec!["consume", "--topic", "events"];
        args.extend(extra);
        admin_ok(&broker, &args, b"")
    };
    assert_eq!(
        consume(&["--from", "3", "--exit-at-end"]),
        "first-3\nfirst-4\nsecond-0\nsecond-1\nsecond-2\n"
    );
    assert_eq!(
        consume(&["--from-timestamp", &boundary.to_string(), "--exit-at-end"]),
        "second-0\nsecond-1\nsecond-2\n"
    );
    assert_eq!(
        consume(&[
            "--from-timestamp",
            &(now_ms() + 60_000).to_string(),
            "--exit-at-end"
        ]),
        "",
        "no message that late: start at the end"
    );
    assert_eq!(consume(&["--from", "end", "--exit-at-end"]), "");
    assert_eq!(
        consume(&["--from", "beginning", "--count", "2"]),
        "first-0\nfirst-1\n"
    );
    assert_eq!(
        consume(&[
            "--partition",
            "0",
            "--from",
            "6",
            "--exit-at-end",
            "--offsets"
        ]),
        "0\t6\tsecond-1\n0\t7\tsecond-2\n"
    );

    // Without --exit-at-end it waits for messages that are not written yet.
    let bootstrap = broker.bootstrap();
    let waiting = std::thread::spawn(move || {
        ferrite(
            &[
                "consume",
                "--topic",
                "events",
                "--from",
                "8",
                "--count",
                "2",
                "--bootstrap",
                &bootstrap,
            ],
            b"",
        )
    });
    admin_ok(
        &broker,
        &["produce", "--topic", "events"],
        b"third-0\nthird-1\n",
    );
    let waited = waiting.join().unwrap();
    assert_eq!(waited.code, Some(0), "{waited:?}");
    assert_eq!(waited.stdout, "third-0\nthird-1\n");

    admin_fails(
        &broker,
        &[
            "consume", "--topic", "events", "--from", "100", "--count", "1",
        ],
        b"",
        1,
        "partition events-0: OFFSET_OUT_OF_RANGE (Kafka error 1)",
    );
    admin_fails(
        &broker,
        &["consume", "--topic", "events", "--partition", "5"],
        b"",
        1,
        "topic events has no partition 5",
    );
}

#[test]
fn unknown_topics_and_lines_without_a_key_are_reported() {
    let broker = Broker::start();
    for command in [
        &["produce", "--topic", "missing"][..],
        &["consume", "--topic", "missing"],
        &["topic", "describe", "missing"],
    ] {
        admin_fails(
            &broker,
            command,
            b"a line\n",
            1,
            "topic missing: UNKNOWN_TOPIC_OR_PARTITION (Kafka error 3)",
        );
    }
    assert_eq!(
        admin_ok(&broker, &["topic", "list"], b""),
        "",
        "nothing was auto-created"
    );

    admin_ok(&broker, &["topic", "create", "lines"], b"");
    admin_fails(
        &broker,
        &["produce", "--topic", "lines", "--keyed"],
        b"a\t1\nno tab here\nb\t2\n",
        2,
        "line 2 has no TAB",
    );
    assert_eq!(
        admin_ok(
            &broker,
            &[
                "consume",
                "--topic",
                "lines",
                "--from",
                "beginning",
                "--exit-at-end",
                "--keyed"
            ],
            b""
        ),
        "a\t1\n",
        "the lines before the bad one were sent"
    );
}
