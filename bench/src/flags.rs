//! The load generator's flags. The names in the command-line contract (DESIGN.md) are fixed:
//! scripts depend on them. The struct is serialised whole into every result, so a result file
//! says exactly how it was produced.

use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::error::BenchError;
use crate::keys::KeyDistribution;
use crate::payload::HEADER_BYTES;

#[derive(Args, Serialize, Debug, Clone)]
pub struct RunFlags {
    /// The broker to bootstrap from.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// Topic to produce to and consume from; created if missing.
    #[arg(long, value_name = "T", default_value = "ferrite-bench")]
    pub topic: String,
    /// Partitions of the topic. Messages go round-robin over them. An existing topic must have
    /// exactly this many.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub partitions: u32,
    /// Independent producers (each its own librdkafka client and sending thread), sharing the
    /// rate: producer p of N sends messages p, p+N, p+2N, ... of the timetable.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub producers: u32,
    /// Consumers (each its own librdkafka client and thread); consumer c of M is assigned the
    /// partitions p with p mod M = c (assignment, no consumer group), or, with
    /// --consumer-group, the members of each group. At most --partitions.
    #[arg(long, value_name = "M", default_value_t = 1)]
    pub consumers: u32,
    /// Consume as the members of consumer group NAME (subscribe, group coordination, committed
    /// offsets) instead of by assignment; the clock starts once every partition is assigned.
    #[arg(long, value_name = "NAME")]
    pub consumer_group: Option<String>,
    /// Independent consumer groups, NAME-0 ... NAME-(N-1), each with --consumers members and
    /// each reading every message (fan-out). Needs --consumer-group.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        requires = "consumer_group"
    )]
    pub consumer_groups: u32,
    /// How a group's partitions are shared among its members (librdkafka's
    /// partition.assignment.strategy). Needs --consumer-group.
    #[arg(long, value_enum, default_value_t = AssignmentStrategy::Range, requires = "consumer_group")]
    pub assignment_strategy: AssignmentStrategy,
    /// Message keys: `none` (no key; the messages go round-robin over the partitions) or
    /// `uniform:K` (an 8-byte key drawn uniformly from K keys; librdkafka's partitioner, set
    /// with `--producer-config partitioner=...`, places it).
    #[arg(long, value_name = "none|uniform:K", default_value = "none")]
    pub key_distribution: KeyDistribution,
    /// Replication factor when the topic is created.
    #[arg(long, value_name = "R", default_value_t = 1)]
    pub replication_factor: u16,
    /// Size of every message value, in bytes (at least 24: the header the consumer reads).
    #[arg(long, value_name = "B", default_value_t = 1024)]
    pub message_bytes: usize,
    /// Target messages per second, sent on a fixed timetable (open loop); 0 = as fast as
    /// possible.
    #[arg(long, value_name = "MSGS_PER_S", default_value_t = 0)]
    pub rate: u64,
    /// Length of the measured part of the run, after the warm-up, in seconds.
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    pub duration_s: f64,
    /// Seconds of load before measuring starts (connections, batching and the broker settle).
    #[arg(long, value_name = "W", default_value_t = 2.0)]
    pub warmup_s: f64,
    /// Producer acknowledgements: 0 (none), 1 (leader written), all (every in-sync replica;
    /// on a single Ferrite node: durable after fdatasync).
    #[arg(long, value_enum, default_value_t = Acks::All)]
    pub acks: Acks,
    /// Turn on the idempotent producer (enable.idempotence; needs --acks all).
    #[arg(long)]
    pub idempotence: bool,
    /// Produce in transactions: each producer is a transactional producer (librdkafka's
    /// `transactional.id`: ID, or ID-p for producer p of several) that commits every
    /// --transaction-messages of its messages; the commits' latency is reported. Needs
    /// --acks all (the producer is idempotent).
    #[arg(long, value_name = "ID")]
    pub transactional_id: Option<String>,
    /// Messages in each of a producer's transactions (its last one may hold fewer). Needs
    /// --transactional-id.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 100,
        requires = "transactional_id"
    )]
    pub transaction_messages: u64,
    /// What the consumers read (librdkafka's `isolation.level`): every message
    /// (`read_uncommitted`, Kafka's default) or only committed transactions' and plain ones
    /// (`read_committed`).
    #[arg(long, value_enum, default_value_t = IsolationLevel::ReadUncommitted)]
    pub isolation_level: IsolationLevel,
    /// librdkafka linger.ms: how long a partition's batch may wait for more messages.
    #[arg(long, value_name = "MS", default_value_t = 5.0)]
    pub linger_ms: f64,
    /// librdkafka batch.size: the most bytes in one partition's batch.
    #[arg(long, value_name = "BYTES", default_value_t = 1_000_000)]
    pub batch_bytes: u64,
    /// How often the producer's librdkafka reports its statistics (`statistics.interval.ms`),
    /// from which the result splits the ack latency into the client's own queue and the broker
    /// round trip (`producer_latency_split`); 0: not asked.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub client_stats_interval_ms: u64,
    /// A librdkafka setting for every client of the run (admin, producers, consumers), e.g.
    /// `security.protocol=sasl_ssl` (repeatable; the producer and consumer settings come after).
    #[arg(long, value_name = "KEY=VALUE", value_parser = key_value)]
    #[serde(serialize_with = "serialize_redacted")]
    pub client_config: Vec<(String, String)>,
    /// Any other librdkafka producer setting, e.g. `compression.type=lz4` (repeatable; applied
    /// last, so it overrides the flags above).
    #[arg(long, value_name = "KEY=VALUE", value_parser = key_value)]
    #[serde(serialize_with = "serialize_redacted")]
    pub producer_config: Vec<(String, String)>,
    /// Any librdkafka consumer setting, e.g. `fetch.wait.max.ms=100` (repeatable).
    #[arg(long, value_name = "KEY=VALUE", value_parser = key_value)]
    #[serde(serialize_with = "serialize_redacted")]
    pub consumer_config: Vec<(String, String)>,
    /// Once every message is acknowledged, how long the consumer may go without receiving a new
    /// one before the run ends with whatever it has (missing messages are then reported).
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    pub drain_timeout_s: f64,
    /// Deadline for creating the topic and finding its leaders, for the consumer groups to
    /// assign every partition, and for the final flush.
    #[arg(long, value_name = "S", default_value_t = 30.0)]
    pub setup_timeout_s: f64,
    /// Delete the topic once the run is over (peak runs write gigabytes).
    #[arg(long)]
    pub delete_topic: bool,
    /// Write the JSON result here (otherwise to stdout).
    #[arg(long, value_name = "FILE")]
    pub json: Option<std::path::PathBuf>,
    /// Read flags from this TOML file first (keys are the flags' names: `partitions = 16`,
    /// `message-bytes = 1024`); flags given on the command line override it.
    #[arg(long, value_name = "FILE")]
    pub workload: Option<std::path::PathBuf>,
}

#[derive(ValueEnum, Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    #[value(name = "0")]
    #[serde(rename = "0")]
    None,
    #[value(name = "1")]
    #[serde(rename = "1")]
    Leader,
    #[value(name = "all")]
    #[serde(rename = "all")]
    All,
}

impl Acks {
    /// The value of librdkafka's `acks` setting.
    pub fn config_value(self) -> &'static str {
        match self {
            Acks::None => "0",
            Acks::Leader => "1",
            Acks::All => "all",
        }
    }
}

/// What a consumer reads of transactions (librdkafka's `isolation.level`).
#[derive(ValueEnum, Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsolationLevel {
    #[value(name = "read_uncommitted")]
    #[serde(rename = "read_uncommitted")]
    ReadUncommitted,
    #[value(name = "read_committed")]
    #[serde(rename = "read_committed")]
    ReadCommitted,
}

impl IsolationLevel {
    /// The value of librdkafka's `isolation.level` setting.
    pub fn config_value(self) -> &'static str {
        match self {
            IsolationLevel::ReadUncommitted => "read_uncommitted",
            IsolationLevel::ReadCommitted => "read_committed",
        }
    }
}

/// The most messages in one transaction (far beyond any sensible run).
pub const TRANSACTION_MESSAGES_MAX: u64 = 1_000_000_000;

/// librdkafka's `partition.assignment.strategy`: the assignor a group's leader runs.
#[derive(ValueEnum, Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum AssignmentStrategy {
    /// Consecutive partitions to each member (Kafka's and librdkafka's first default).
    Range,
    /// Partitions dealt out one by one.
    Roundrobin,
    /// Incremental rebalancing (KIP-429): members keep their partitions through a rebalance
    /// and give up only those that move, in a second round.
    CooperativeSticky,
}

impl AssignmentStrategy {
    /// The value of librdkafka's `partition.assignment.strategy` setting.
    pub fn config_value(self) -> &'static str {
        match self {
            AssignmentStrategy::Range => "range",
            AssignmentStrategy::Roundrobin => "roundrobin",
            AssignmentStrategy::CooperativeSticky => "cooperative-sticky",
        }
    }
}

/// The most consumer groups one run may have (each has --consumers clients and threads).
pub const CONSUMER_GROUPS_MAX: u32 = 64;

impl RunFlags {
    /// Checks what clap cannot: the combinations and ranges the run relies on.
    pub fn check(&self) -> Result<(), BenchError> {
        let fail = |reason: String| Err(BenchError::Flags(reason));
        if self.message_bytes < HEADER_BYTES {
            return fail(format!(
                "--message-bytes must be at least {HEADER_BYTES} (the header every message carries)"
            ));
        }
        if self.partitions == 0 || i32::try_from(self.partitions).is_err() {
            return fail("--partitions must be between 1 and 2^31-1".into());
        }
        if !(1..=1024).contains(&self.producers) {
            return fail("--producers must be between 1 and 1024".into());
        }
        if self.consumers == 0 || self.consumers > self.partitions {
            return fail(format!(
                "--consumers must be between 1 and --partitions ({}): each consumer is assigned \
                 at least one partition",
                self.partitions
            ));
        }
        if !(1..=CONSUMER_GROUPS_MAX).contains(&self.consumer_groups) {
            return fail(format!(
                "--consumer-groups must be between 1 and {CONSUMER_GROUPS_MAX}"
            ));
        }
        if self.consumer_group.as_deref() == Some("") {
            return fail("--consumer-group needs a name".into());
        }
        if self.replication_factor == 0 || i16::try_from(self.replication_factor).is_err() {
            return fail("--replication-factor must be between 1 and 32767".into());
        }
        for (name, value, zero_allowed) in [
            ("--duration-s", self.duration_s, false),
            ("--warmup-s", self.warmup_s, true),
            ("--drain-timeout-s", self.drain_timeout_s, true),
            ("--setup-timeout-s", self.setup_timeout_s, false),
            ("--linger-ms", self.linger_ms, true),
        ] {
            // Under a million: far beyond any sensible run, and safe to turn into a Duration.
            let in_range = (0.0..1e6).contains(&value) && (zero_allowed || value > 0.0);
            if !in_range {
                return fail(format!("{name} {value} is out of range"));
            }
        }
        if self.idempotence && self.acks != Acks::All {
            return fail("--idempotence needs --acks all (Kafka's rule)".into());
        }
        if let Some(id) = &self.transactional_id {
            if id.is_empty() {
                return fail("--transactional-id needs an id".into());
            }
            if self.acks != Acks::All {
                return fail("--transactional-id needs --acks all (Kafka's rule)".into());
            }
        }
        if !(1..=TRANSACTION_MESSAGES_MAX).contains(&self.transaction_messages) {
            return fail(format!(
                "--transaction-messages must be between 1 and {TRANSACTION_MESSAGES_MAX}"
            ));
        }
        Ok(())
    }

    /// The `transactional.id` of producer `producer` of the run (`None`: not transactional):
    /// the id itself with one producer, the id and the producer's number with several (each
    /// producer needs its own, or they would fence each other).
    pub fn transactional_id_of(&self, producer: u32) -> Option<String> {
        let id = self.transactional_id.as_ref()?;
        Some(match self.producers {
            1 => id.clone(),
            _ => format!("{id}-{producer}"),
        })
    }
}

fn key_value(argument: &str) -> Result<(String, String), String> {
    match argument.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {argument:?}")),
    }
}

/// librdkafka settings as a result file shows them: a secret's value (a password, a private
/// key) replaced, since results are shared and kept.
fn serialize_redacted<S: serde::Serializer>(
    settings: &[(String, String)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let is_secret = |key: &str| {
        ["password", "secret", "key.pem", "jaas"]
            .iter()
            .any(|word| key.contains(word))
    };
    serializer.collect_seq(settings.iter().map(|(key, value)| {
        let shown = if is_secret(key) {
            "(redacted)"
        } else {
            value.as_str()
        };
        (key.as_str(), shown)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        flags: RunFlags,
    }

    fn parse(arguments: &[&str]) -> Result<RunFlags, String> {
        let command = Command::try_parse_from(["ferrite-bench"].iter().chain(arguments))
            .map_err(|error| error.to_string())?;
        command.flags.check().map_err(|error| error.to_string())?;
        Ok(command.flags)
    }

    #[test]
    fn the_contract_flags_parse() {
        let flags = parse(&[
            "--bootstrap",
            "h:1",
            "--topic",
            "t",
            "--partitions",
            "3",
            "--message-bytes",
            "100",
            "--rate",
            "5000",
            "--duration-s",
            "2",
            "--warmup-s",
            "0.5",
            "--acks",
            "1",
            "--json",
            "out.json",
        ])
        .unwrap();
        assert_eq!(flags.bootstrap, "h:1");
        assert_eq!(flags.partitions, 3);
        assert_eq!(flags.rate, 5000);
        assert_eq!(flags.acks, Acks::Leader);
        assert_eq!(
            flags.json.as_deref(),
            Some(std::path::Path::new("out.json"))
        );
        for (text, acks) in [("0", Acks::None), ("1", Acks::Leader), ("all", Acks::All)] {
            assert_eq!(parse(&["--acks", text]).unwrap().acks, acks);
        }
    }

    #[test]
    fn impossible_combinations_are_refused() {
        assert!(parse(&["--message-bytes", "23"]).is_err());
        assert!(parse(&["--partitions", "0"]).is_err());
        assert!(parse(&["--producers", "0"]).is_err());
        assert!(parse(&["--key-distribution", "uniform:0"]).is_err());
        assert_eq!(
            parse(&["--key-distribution", "uniform:16"])
                .unwrap()
                .key_distribution,
            KeyDistribution::Uniform(16)
        );
        assert!(parse(&["--consumers", "0"]).is_err());
        assert!(parse(&["--partitions", "2", "--consumers", "3"]).is_err());
        assert!(parse(&["--partitions", "3", "--consumers", "3", "--producers", "4"]).is_ok());
        assert!(parse(&["--duration-s", "0"]).is_err());
        assert!(parse(&["--warmup-s", "-1"]).is_err());
        assert!(parse(&["--acks", "2"]).is_err());
        assert!(parse(&["--idempotence", "--acks", "1"]).is_err());
        assert!(parse(&["--producer-config", "novalue"]).is_err());
    }

    #[test]
    fn group_flags_need_a_group() {
        let flags = parse(&["--partitions", "4", "--consumers", "2"]).unwrap();
        assert_eq!(flags.consumer_group, None);
        assert_eq!(flags.consumer_groups, 1);
        assert_eq!(flags.assignment_strategy, AssignmentStrategy::Range);
        let flags = parse(&[
            "--consumer-group",
            "g",
            "--consumer-groups",
            "3",
            "--assignment-strategy",
            "cooperative-sticky",
        ])
        .unwrap();
        assert_eq!(flags.consumer_group.as_deref(), Some("g"));
        assert_eq!(flags.consumer_groups, 3);
        assert_eq!(
            flags.assignment_strategy.config_value(),
            "cooperative-sticky"
        );
        for strategy in ["range", "roundrobin", "cooperative-sticky"] {
            let flags =
                parse(&["--consumer-group", "g", "--assignment-strategy", strategy]).unwrap();
            assert_eq!(flags.assignment_strategy.config_value(), strategy);
        }
        assert!(parse(&["--consumer-groups", "2"]).is_err());
        assert!(parse(&["--assignment-strategy", "roundrobin"]).is_err());
        assert!(parse(&["--consumer-group", "g", "--assignment-strategy", "sticky"]).is_err());
        assert!(parse(&["--consumer-group", "g", "--consumer-groups", "0"]).is_err());
        assert!(parse(&["--consumer-group", "g", "--consumer-groups", "65"]).is_err());
        assert!(parse(&["--consumer-group", ""]).is_err());
    }

    #[test]
    fn transaction_flags_need_an_id_and_acks_all() {
        let flags = parse(&[]).unwrap();
        assert_eq!(flags.transactional_id_of(0), None);
        assert_eq!(flags.isolation_level, IsolationLevel::ReadUncommitted);
        let flags = parse(&[
            "--transactional-id",
            "tx",
            "--transaction-messages",
            "50",
            "--isolation-level",
            "read_committed",
        ])
        .unwrap();
        assert_eq!(flags.transaction_messages, 50);
        assert_eq!(flags.transactional_id_of(0).as_deref(), Some("tx"));
        assert_eq!(flags.isolation_level.config_value(), "read_committed");
        let flags = parse(&["--transactional-id", "tx", "--producers", "3"]).unwrap();
        assert_eq!(flags.transaction_messages, 100, "the default");
        assert_eq!(flags.transactional_id_of(2).as_deref(), Some("tx-2"));
        assert!(parse(&["--transaction-messages", "10"]).is_err());
        assert!(parse(&["--transactional-id", "tx", "--transaction-messages", "0"]).is_err());
        assert!(parse(&["--transactional-id", "tx", "--acks", "1"]).is_err());
        assert!(parse(&["--transactional-id", ""]).is_err());
        assert!(parse(&["--isolation-level", "read_stale"]).is_err());
    }

    #[test]
    fn a_result_shows_every_setting_but_the_secrets() {
        let flags = parse(&[
            "--client-config",
            "security.protocol=sasl_ssl",
            "--client-config",
            "sasl.password=hunter2",
            "--producer-config",
            "ssl.key.password=hunter3",
        ])
        .unwrap();
        let shown = serde_json::to_string(&flags).unwrap();
        assert!(shown.contains("sasl_ssl"), "{shown}");
        assert!(!shown.contains("hunter"), "{shown}");
        assert_eq!(
            flags.client_config[1].1, "hunter2",
            "the client gets the real value"
        );
    }

    #[test]
    fn extra_librdkafka_settings_are_kept_in_order() {
        let flags = parse(&[
            "--producer-config",
            "compression.type=lz4",
            "--producer-config",
            "a=b=c",
        ])
        .unwrap();
        assert_eq!(
            flags.producer_config,
            vec![
                ("compression.type".to_string(), "lz4".to_string()),
                ("a".to_string(), "b=c".to_string())
            ]
        );
    }
}
