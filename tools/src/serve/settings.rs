//! `ferrite serve`: starts the shards and their Kafka listeners, and stops them cleanly on
//! SIGINT/SIGTERM.
//!
//! Every setting has an embedded default, can be set in a TOML file (`--config FILE`, keys
//! named as the flags: `listen = "127.0.0.1:9092"`, `default-partitions = 3`), and can be set
//! on the command line, which wins over the file.
//!
//! Exit codes: 0 after a clean shutdown; 1 if the broker failed while running; 2 if it could
//! not start (bad flags or config file, address in use, unwritable data directory, …); 130 on
//! a second signal.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::catalog::{Catalog, OFFSETS_TOPIC};
use engine::data_dir_lock::DataDirLock;
use engine::resources::{ResourceLimits, OPEN_FILES_MIN};
use engine::shard::listen::{retry_while_in_use, ListenReservation, IN_USE_WAIT};
use engine::shard::{prepare_offsets_topic, GroupsConfig, Runtime, RuntimeConfig, TopicLogConfig};
use engine::{JournalConfig, LogConfig};
use net::broker::BrokerConfig;
use net::connection::{ConnectionConfig, IDLE_MAX_DEFAULT};
use net::connection_limits::ConnectionLimits;
use net::handover::HandoverRule;
use net::metrics::MetricsRegistry;
use net::server::ShardSetup;
use serde::Deserialize;

use ferrite_replication::cluster::{
    start_shard, ClusterSettings, ClusterStart, ClusterState, CLUSTER_ID,
};
use ferrite_replication::controller::VOTERS_DEFAULT_COUNT;

use crate::descriptors;
use crate::metrics;

/// Where metrics are served unless told otherwise (the design's command-line contract).
const DEFAULT_METRICS_LISTEN: ([u8; 4], u16) = ([127, 0, 0, 1], 9644);

/// The flags; every one may also come from the config file.
#[derive(clap::Args, Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Arguments {
    /// A TOML file with any of these settings (the flags win over it).
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Kafka listener address [default: 127.0.0.1:9092]. Port 0 picks a free port.
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<SocketAddr>,
    /// The address clients are told to connect to (Metadata) [default: the listen address].
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Option<String>,
    /// Where partitions are stored [default: ./ferrite-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Number of shards, one pinned per core [default: every core].
    #[arg(long, value_name = "N")]
    cores: Option<usize>,
    /// The CPUs the shards are pinned to, one shard each, e.g. `1` or `0,1` (Seastar's
    /// --cpuset; for several brokers on one machine) [default: 0 up to --cores].
    #[arg(long, value_name = "CPU,...", value_delimiter = ',')]
    #[serde(default)]
    cpuset: Vec<usize>,
    /// Serve Prometheus metrics over HTTP at /metrics on this address [default:
    /// 127.0.0.1:9644; if that default is taken, the broker runs without metrics and says so].
    #[arg(long, value_name = "HOST:PORT")]
    metrics_listen: Option<SocketAddr>,
    /// Partitions of a topic created without a count (auto-created, or CreateTopics -1)
    /// [default: 1].
    #[arg(long, value_name = "N")]
    default_partitions: Option<u32>,
    /// Create topics on their first Metadata or Produce request [default: true].
    #[arg(long, value_name = "BOOL")]
    auto_create_topics: Option<bool>,
    /// Largest record batch accepted, in bytes (Kafka's message.max.bytes) [default: 1048588].
    #[arg(long, value_name = "BYTES")]
    max_message_bytes: Option<usize>,
    /// Segment size at which a partition rolls to a new segment file [default: 1 GiB].
    #[arg(long, value_name = "BYTES")]
    segment_bytes: Option<u64>,
    /// Size of each of the 4 files of every shard's journal, where the small appends of all
    /// the shard's partitions are made durable together (`<data-dir>/journal/`, written once
    /// with zeros); 0 turns the journal off: every append is written and synced in its
    /// partition's segment [default: 33554432].
    #[arg(long, value_name = "BYTES")]
    journal_file_bytes: Option<u64>,
    /// How long a partition keeps its data, by its timestamps; -1 keeps it forever (Kafka's
    /// log.retention.ms, the default of every topic's retention.ms) [default: 604800000].
    #[arg(long, value_name = "MS", allow_negative_numbers = true)]
    retention_ms: Option<i64>,
    /// How large a partition's log may grow before its oldest segments go; -1 is no limit
    /// (Kafka's log.retention.bytes, the default of every topic's retention.bytes)
    /// [default: -1].
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true)]
    retention_bytes: Option<i64>,
    /// The broker-wide default of any topic setting, by its topic-level name (e.g.
    /// `cleanup.policy=compact`, `delete.retention.ms=3600000`, `segment.ms=600000`; every key
    /// `ferrite topic describe --all-configs` lists); repeatable. Topics' own settings override
    /// it. In the config file: `topic-default = ["segment.ms=600000"]`. Applied after the
    /// dedicated flags above.
    #[arg(long = "topic-default", value_name = "KEY=VALUE")]
    #[serde(default)]
    topic_default: Vec<String>,
    /// Partitions of the internal `__consumer_offsets` topic, used when it is first created
    /// (later starts keep the count it has) [default: 16].
    #[arg(long, value_name = "N")]
    offsets_partitions: Option<u32>,
    /// How long the first rebalance of an empty group waits for more members to join
    /// (Kafka's group.initial.rebalance.delay.ms) [default: 3000].
    #[arg(long, value_name = "MS")]
    group_initial_rebalance_delay_ms: Option<i64>,
    /// How often each shard looks for compacted partitions due a cleaning (Kafka's
    /// log.cleaner.backoff.ms) [default: 15000].
    #[arg(long, value_name = "MS")]
    log_cleaner_interval_ms: Option<u64>,
    /// Bytes per second one cleaning may read plus write, so compaction's I/O leaves room for
    /// produce latency (Kafka's log.cleaner.io.max.bytes.per.second) [default: unlimited].
    #[arg(long, value_name = "BYTES")]
    log_cleaner_io_max_bytes_per_second: Option<u64>,
    /// Client connections open at once, over every shard; more wait in the listen backlog
    /// until one closes (Kafka's max.connections) [default: a quarter of the file descriptor
    /// limit].
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Client connections from one address; more are closed at once (Kafka's
    /// max.connections.per.ip) [default: unlimited].
    #[arg(long, value_name = "N")]
    max_connections_per_ip: Option<usize>,
    /// Descriptors of data files (segments, partition directories) the broker keeps open, over
    /// every shard; beyond it the least recently used are closed and reopened when needed, so
    /// the partition count does not set the descriptors a broker needs [default: 4000].
    #[arg(long, value_name = "N")]
    open_files_max: Option<usize>,
    /// The largest space reserved (fallocate) at a time ahead of a partition's segment writes
    /// behind the journal (synced direct writes never reserve), for partitions written
    /// steadily (reservations start at 1 MiB and double with the write rate); 0 never
    /// (Redpanda's segment_fallocation_step) [default: 0].
    #[arg(long, value_name = "BYTES")]
    segment_fallocation_step: Option<u64>,
    /// Space reserved ahead of writes and not yet written, over every partition of the broker;
    /// a reservation beyond it is not made [default: 512 MiB].
    #[arg(long, value_name = "BYTES")]
    preallocated_bytes_max: Option<u64>,
    /// Memory of every partition's tail cache together (recent batches kept for consumers
    /// following the tail); beyond it the least recently written partitions' cached batches
    /// go [default: 128 MiB].
    #[arg(long, value_name = "BYTES")]
    tail_cache_bytes_max: Option<usize>,
    /// Close a connection after this long without a request (Kafka's
    /// connections.max.idle.ms); -1 never [default: 600000].
    #[arg(long, value_name = "MS", allow_negative_numbers = true)]
    connections_max_idle_ms: Option<i64>,
    /// Move a client connection to the shard (core) owning the partitions nearly all its
    /// produce and fetch requests name, so that they stop crossing between cores (the kernel
    /// puts each connection on an arbitrary shard); false keeps every connection on the shard
    /// that accepted it [default: true].
    #[arg(long, value_name = "BOOL")]
    connection_handover: Option<bool>,
    /// This broker's id in a cluster (with --peers).
    #[arg(long, value_name = "N")]
    node_id: Option<u64>,
    /// Every broker of the cluster as ID@HOST:PORT (their inter-broker addresses), this one
    /// included, e.g. `1@127.0.0.1:9192,2@127.0.0.1:9193,3@127.0.0.1:9194`; the same list on
    /// every broker. Without it the broker runs alone.
    #[arg(long, value_name = "ID@HOST:PORT,...")]
    peers: Option<String>,
    /// The inter-broker listener [default: this broker's address in --peers].
    #[arg(long, value_name = "HOST:PORT")]
    rpc_listen: Option<SocketAddr>,
    /// Replicas of each partition of an auto-created topic (and of CreateTopics with -1)
    /// [default: 3, or the number of brokers if fewer].
    #[arg(long, value_name = "N")]
    default_replication_factor: Option<u16>,
    /// How many brokers are controller voters (the Raft group of the metadata log): the N
    /// lowest node ids of --peers; the other brokers follow the log as observers. The same
    /// on every broker [default: 3, or the number of brokers if fewer].
    #[arg(long, value_name = "N")]
    controller_voters: Option<usize>,
    /// How often each partition leader checks whether to hand leadership back to its
    /// preferred replica (the first in its replica list) once that one is in sync: Kafka's
    /// leader.imbalance.check.interval.seconds with auto.leader.rebalance.enable; 0 never
    /// [default: 300].
    #[arg(long, value_name = "S")]
    leader_imbalance_check_interval_s: Option<u64>,
}

/// Kafka's leader.imbalance.check.interval.seconds.
const LEADER_IMBALANCE_CHECK_INTERVAL_DEFAULT_S: u64 = 300;

/// Parses `--peers`: `ID@HOST:PORT` entries separated by commas, each id once.
fn parse_peers(peers: &str) -> Result<BTreeMap<u64, SocketAddr>, String> {
    let mut parsed = BTreeMap::new();
    for entry in peers
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
    {
        let (id, address) = entry
            .split_once('@')
            .ok_or_else(|| format!("--peers {entry}: expected ID@HOST:PORT"))?;
        let id: u64 = id
            .parse()
            .ok()
            .filter(|id| *id > 0 && *id <= i32::MAX as u64)
            .ok_or_else(|| format!("--peers {entry}: '{id}' is not a node id (1 or more)"))?;
        let address: SocketAddr = address
            .parse()
            .map_err(|_| format!("--peers {entry}: '{address}' is not HOST:PORT"))?;
        if parsed.insert(id, address).is_some() {
            return Err(format!("--peers names node {id} twice"));
        }
    }
    if parsed.is_empty() {
        return Err("--peers names no broker".into());
    }
    Ok(parsed)
}

/// Every setting resolved: flags over file over defaults.
#[derive(Debug)]
struct Settings {
    listen: SocketAddr,
    advertise: Option<String>,
    data_dir: PathBuf,
    cores: Option<usize>,
    /// Empty: CPUs 0 up to the shard count.
    cpuset: Vec<usize>,
    /// `None`: the default address, given up with a warning if it is taken.
    metrics_listen: Option<SocketAddr>,
    default_partitions: u32,
    auto_create_topics: bool,
    log: LogConfig,
    groups: GroupsConfig,
    /// `None`: the runtime's default.
    cleaner_check_interval: Option<Duration>,
    /// `None`: no journal (`--journal-file-bytes 0`).
    journal: Option<JournalConfig>,
    /// `None`: the broker runs alone.
    cluster: Option<ClusterSettings>,
    /// `None`: a quarter of the descriptor limit ([`descriptors::default_connections_max`]).
    connections_max: Option<usize>,
    /// `None`: no limit.
    connections_per_ip_max: Option<usize>,
    /// `None`: idle connections stay open.
    connection_idle_max: Option<Duration>,
    /// Whether connections move to the shard their data requests go to.
    connection_handover: bool,
    /// The resource bounds of the whole broker, shared out among the shards.
    resources: BrokerResources,
}

/// The broker's resource bounds, over every shard (each shard gets an equal share).
#[derive(Debug, Clone, PartialEq, Eq)]
struct BrokerResources {
    open_files_max: usize,
    preallocated_bytes_max: u64,
    tail_cache_bytes_max: usize,
}

impl Default for BrokerResources {
    /// Data files at 3 584 keep the whole broker under 4 096 descriptors of files: the cache may
    /// pass its bound by the files in use (per shard up to 32 lazy segment writes and 64 logs
    /// opening or closing, and reads in flight; 10 000 partitions at a bound of 4 000 measured
    /// 4 120), and the rest are the journals, standard streams, the catalog and state files
    /// being written; sockets apart.
    fn default() -> Self {
        BrokerResources {
            open_files_max: 3584,
            preallocated_bytes_max: 512 << 20,
            tail_cache_bytes_max: 128 << 20,
        }
    }
}

impl BrokerResources {
    /// One shard's share among `shards`.
    fn per_shard(&self, shards: usize) -> Result<ResourceLimits, String> {
        let limits = ResourceLimits {
            open_files_max: self.open_files_max / shards,
            preallocated_bytes_max: self.preallocated_bytes_max / shards as u64,
            tail_cache_bytes_max: self.tail_cache_bytes_max / shards,
        };
        limits.validate().map_err(|_| {
            format!(
                "--open-files-max must be at least {} with {shards} shard(s)",
                OPEN_FILES_MIN * shards
            )
        })?;
        Ok(limits)
    }
}

impl Arguments {
    fn resolve(self) -> Result<Settings, String> {
        let file = match &self.config {
            Some(path) => read_config_file(path)?,
            None => Arguments::default(),
        };
        let mut log = LogConfig::default();
        if let Some(bytes) = self.max_message_bytes.or(file.max_message_bytes) {
            log.batch_bytes_max = bytes;
        }
        if let Some(bytes) = self.segment_bytes.or(file.segment_bytes) {
            log.segment_bytes_max = bytes;
        }
        if let Some(ms) = self.retention_ms.or(file.retention_ms) {
            log.retention_age_ms_max = retention_limit("--retention-ms", ms)?;
        }
        if let Some(bytes) = self.retention_bytes.or(file.retention_bytes) {
            log.retention_bytes_max = retention_limit("--retention-bytes", bytes)?;
        }
        if let Some(step) = self
            .segment_fallocation_step
            .or(file.segment_fallocation_step)
        {
            log.preallocate_bytes = step;
        }
        if let Some(rate) = self
            .log_cleaner_io_max_bytes_per_second
            .or(file.log_cleaner_io_max_bytes_per_second)
        {
            if rate == 0 {
                return Err("--log-cleaner-io-max-bytes-per-second must be at least 1".into());
            }
            log.cleaner_io_bytes_per_second_max = Some(rate);
        }
        let topic_defaults = if self.topic_default.is_empty() {
            file.topic_default
        } else {
            self.topic_default
        };
        log = apply_topic_defaults(log, &topic_defaults)?;
        log.validate()
            .map_err(|message| format!("invalid log settings: {message}"))?;
        let default_partitions = self
            .default_partitions
            .or(file.default_partitions)
            .unwrap_or(1);
        if default_partitions == 0 {
            return Err("--default-partitions must be at least 1".into());
        }
        let mut groups = GroupsConfig::default();
        if let Some(partitions) = self.offsets_partitions.or(file.offsets_partitions) {
            if partitions == 0 || partitions > engine::catalog::PARTITIONS_MAX {
                return Err(format!(
                    "--offsets-partitions must be between 1 and {}",
                    engine::catalog::PARTITIONS_MAX
                ));
            }
            groups.offsets_partitions = partitions;
        }
        if let Some(delay_ms) = self
            .group_initial_rebalance_delay_ms
            .or(file.group_initial_rebalance_delay_ms)
        {
            if delay_ms < 0 {
                return Err("--group-initial-rebalance-delay-ms must not be negative".into());
            }
            groups.coordinator.initial_rebalance_delay_ms = delay_ms;
        }
        let journal = match self.journal_file_bytes.or(file.journal_file_bytes) {
            Some(0) => None,
            file_bytes => {
                let mut journal = JournalConfig::default();
                if let Some(file_bytes) = file_bytes {
                    journal.file_bytes = file_bytes;
                    // A write of the cycle stays well inside a file of a small journal.
                    journal.write_bytes_max = journal
                        .write_bytes_max
                        .min((file_bytes / 4) as usize / 4096 * 4096);
                    journal.bypass_bytes = journal.bypass_bytes.min(journal.write_bytes_max);
                }
                journal
                    .validate()
                    .map_err(|error| format!("--journal-file-bytes: {error}"))?;
                Some(journal)
            }
        };
        let cleaner_check_interval = match self
            .log_cleaner_interval_ms
            .or(file.log_cleaner_interval_ms)
        {
            Some(0) => return Err("--log-cleaner-interval-ms must be at least 1".into()),
            interval_ms => interval_ms.map(Duration::from_millis),
        };
        let cluster = match (self.node_id.or(file.node_id), self.peers.or(file.peers)) {
            (None, None) => None,
            (Some(_), None) => return Err("--node-id needs --peers (the cluster's brokers)".into()),
            (None, Some(_)) => return Err("--peers needs --node-id (this broker's id)".into()),
            (Some(node_id), Some(peers)) => {
                let peers = parse_peers(&peers)?;
                let Some(own) = peers.get(&node_id).copied() else {
                    return Err(format!(
                        "--peers does not name this broker (--node-id {node_id})"
                    ));
                };
                let controller_voters = self
                    .controller_voters
                    .or(file.controller_voters)
                    .unwrap_or(VOTERS_DEFAULT_COUNT.min(peers.len()));
                if controller_voters == 0 || controller_voters > peers.len() {
                    return Err(format!(
                        "--controller-voters must be between 1 and {} (the brokers in --peers)",
                        peers.len()
                    ));
                }
                let brokers = u16::try_from(peers.len()).unwrap_or(u16::MAX);
                let default_replication_factor = self
                    .default_replication_factor
                    .or(file.default_replication_factor)
                    .unwrap_or(brokers.min(3));
                if default_replication_factor == 0 || default_replication_factor > brokers {
                    return Err(format!(
                        "--default-replication-factor must be between 1 and {brokers} (the \
                         brokers in --peers)"
                    ));
                }
                let leader_imbalance_check_interval = match self
                    .leader_imbalance_check_interval_s
                    .or(file.leader_imbalance_check_interval_s)
                    .unwrap_or(LEADER_IMBALANCE_CHECK_INTERVAL_DEFAULT_S)
                {
                    0 => None,
                    seconds => Some(Duration::from_secs(seconds)),
                };
                Some(ClusterSettings {
                    node_id,
                    rpc_listen: self.rpc_listen.or(file.rpc_listen).unwrap_or(own),
                    peers,
                    default_replication_factor,
                    controller_voters,
                    leader_imbalance_check_interval,
                })
            }
        };
        let connections_max = self.max_connections.or(file.max_connections);
        if connections_max == Some(0) {
            return Err("--max-connections must be at least 1".into());
        }
        let connections_per_ip_max = self.max_connections_per_ip.or(file.max_connections_per_ip);
        if connections_per_ip_max == Some(0) {
            return Err("--max-connections-per-ip must be at least 1".into());
        }
        let connection_idle_max = match self
            .connections_max_idle_ms
            .or(file.connections_max_idle_ms)
        {
            None => Some(IDLE_MAX_DEFAULT),
            Some(-1) => None,
            Some(ms) if ms > 0 => Some(Duration::from_millis(ms as u64)),
            Some(_) => {
                return Err("--connections-max-idle-ms must be -1 (never) or at least 1".into())
            }
        };
        let defaults = BrokerResources::default();
        let resources = BrokerResources {
            open_files_max: self
                .open_files_max
                .or(file.open_files_max)
                .unwrap_or(defaults.open_files_max),
            preallocated_bytes_max: self
                .preallocated_bytes_max
                .or(file.preallocated_bytes_max)
                .unwrap_or(defaults.preallocated_bytes_max),
            tail_cache_bytes_max: self
                .tail_cache_bytes_max
                .or(file.tail_cache_bytes_max)
                .unwrap_or(defaults.tail_cache_bytes_max),
        };
        Ok(Settings {
            resources,
            cluster,
            connections_max,
            connections_per_ip_max,
            connection_idle_max,
            connection_handover: self
                .connection_handover
                .or(file.connection_handover)
                .unwrap_or(true),
            listen: self
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9092))),
            advertise: self.advertise.or(file.advertise),
            data_dir: self
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("./ferrite-data")),
            cores: self.cores.or(file.cores),
            cpuset: if self.cpuset.is_empty() {
                file.cpuset
            } else {
                self.cpuset
            },
            metrics_listen: self.metrics_listen.or(file.metrics_listen),
            default_partitions,
            auto_create_topics: self
                .auto_create_topics
                .or(file.auto_create_topics)
                .unwrap_or(true),
            log,
            groups,
            cleaner_check_interval,
            journal,
        })
    }
}

/// A retention flag's value: -1 is no limit.
fn retention_limit(flag: &str, value: i64) -> Result<Option<u64>, String> {
    match value {
        -1 => Ok(None),
        limit => u64::try_from(limit)
            .map(Some)
            .map_err(|_| format!("{flag} must be -1 (no limit) or at least 0")),
    }
}

/// The broker's log configuration with each `KEY=VALUE` of `--topic-default` applied, checked
/// as a topic's settings are (the same keys, kinds and messages).
fn apply_topic_defaults(log: LogConfig, defaults: &[String]) -> Result<LogConfig, String> {
    let mut settings = std::collections::BTreeMap::new();
    for default in defaults {
        let (name, value) = default
            .split_once('=')
            .ok_or_else(|| format!("--topic-default {default}: expected KEY=VALUE"))?;
        if settings.insert(name.to_owned(), value.to_owned()).is_some() {
            return Err(format!("--topic-default {name} is given twice"));
        }
    }
    engine::topic_config::validate(&log, &settings)
        .map_err(|message| format!("--topic-default: {message}"))?;
    Ok(engine::topic_config::apply(&log, &settings))
}

fn read_config_file(path: &Path) -> Result<Arguments, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read the config file {}: {error}", path.display()))?;
    toml::from_str(&text).map_err(|error| format!("config file {}: {error}", path.display()))
}

/// Splits `host:port` into its parts (the host is kept as written: clients resolve it).
fn parse_advertised(advertise: &str) -> Result<(String, i32), String> {
    let (host, port) = advertise
        .rsplit_once(':')
        .ok_or_else(|| format!("--advertise {advertise}: expected HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("--advertise {advertise}: '{port}' is not a port"))?;
    if host.is_empty() || port == 0 {
        return Err(format!("--advertise {advertise}: expected HOST:PORT"));
    }
    Ok((host.trim_matches(['[', ']']).to_owned(), i32::from(port)))
}

pub fn run(arguments: Arguments) -> ExitCode {
    let settings = match arguments.resolve() {
        Ok(settings) => settings,
        Err(message) => {
            eprintln!("ferrite serve: {message}");
            return ExitCode::from(2);
        }
    };
    let cores_available = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cores = match (settings.cores, settings.cpuset.len()) {
        (cores, 0) => cores.unwrap_or(cores_available),
        (None, pinned) => pinned,
        (Some(cores), pinned) if cores == pinned => cores,
        (Some(cores), pinned) => {
            eprintln!("ferrite serve: --cores {cores} but --cpuset names {pinned} CPUs");
            return ExitCode::from(2);
        }
    };
    if cores == 0 || cores > cores_available {
        eprintln!("ferrite serve: --cores must be between 1 and {cores_available}");
        return ExitCode::from(2);
    }
    if let Some(cpu) = settings.cpuset.iter().find(|cpu| **cpu >= cores_available) {
        eprintln!(
            "ferrite serve: --cpuset names CPU {cpu}; this machine has 0 to {}",
            cores_available - 1
        );
        return ExitCode::from(2);
    }
    let resources = match settings.resources.per_shard(cores) {
        Ok(resources) => resources,
        Err(message) => {
            eprintln!("ferrite serve: {message}");
            return ExitCode::from(2);
        }
    };
    let descriptor_limit = match descriptors::raise_limit() {
        Ok(limit) => limit,
        Err(error) => {
            eprintln!("ferrite serve: cannot read the file descriptor limit: {error}");
            return ExitCode::from(2);
        }
    };
    let connections_max = settings
        .connections_max
        .unwrap_or_else(|| descriptors::default_connections_max(descriptor_limit));
    if let Err(error) = std::fs::create_dir_all(&settings.data_dir) {
        eprintln!(
            "ferrite serve: cannot create the data directory {}: {error}",
            settings.data_dir.display()
        );
        return ExitCode::from(2);
    }
    // Held until the process ends: a second broker on the same directory would destroy both.
    let _data_dir_lock = match DataDirLock::take(&settings.data_dir) {
        Ok(lock) => lock,
        Err(error) => {
            eprintln!("ferrite serve: {error}");
            return ExitCode::from(2);
        }
    };
    // Every shard binds with SO_REUSEPORT; reserve the address first, so that a taken port is
    // a clear start-up error rather than a shard failing later, and port 0 (tests use it)
    // becomes one free port that stays ours until every shard has bound it.
    // A broker killed a moment ago may still hold these addresses (see `listen`): every bind
    // of the start-up waits for them, together at most this long.
    let in_use_deadline = Instant::now() + IN_USE_WAIT;
    let reservation =
        match retry_while_in_use(settings.listen, "Kafka listener", in_use_deadline, || {
            ListenReservation::new(settings.listen)
        }) {
            Ok(reservation) => reservation,
            Err(error) => {
                eprintln!(
                    "ferrite serve: cannot listen on {}: {error}",
                    settings.listen
                );
                return ExitCode::from(2);
            }
        };
    let listen = reservation.address();
    let advertised = settings
        .advertise
        .clone()
        .unwrap_or_else(|| listen.to_string());
    let (advertised_host, advertised_port) = match parse_advertised(&advertised) {
        Ok(parts) => parts,
        Err(message) => {
            eprintln!("ferrite serve: {message}");
            return ExitCode::from(2);
        }
    };
    if advertised_host == "0.0.0.0" || advertised_host == "::" {
        eprintln!(
            "ferrite serve: listening on {listen} but clients cannot connect to that address; \
             say where they can with --advertise HOST:PORT"
        );
        return ExitCode::from(2);
    }
    let catalog = match Catalog::open(&settings.data_dir) {
        Ok(catalog) => Arc::new(catalog),
        Err(error) => {
            eprintln!("ferrite serve: {error}");
            return ExitCode::from(2);
        }
    };
    let registry = MetricsRegistry::new(cores);
    let serve_metrics = |address: SocketAddr| {
        let listener = retry_while_in_use(address, "metrics", in_use_deadline, || {
            std::net::TcpListener::bind(address)
        })?;
        metrics::serve(listener, registry.clone())
    };
    let metrics_address = match settings.metrics_listen {
        Some(address) => match serve_metrics(address) {
            Ok(bound) => Some(bound),
            Err(error) => {
                eprintln!("ferrite serve: cannot serve metrics on {address}: {error}");
                return ExitCode::from(2);
            }
        },
        None => match serve_metrics(DEFAULT_METRICS_LISTEN.into()) {
            Ok(bound) => Some(bound),
            Err(error) => {
                eprintln!(
                    "ferrite serve: no metrics endpoint: the default {} is taken ({error}); \
                     choose one with --metrics-listen HOST:PORT",
                    SocketAddr::from(DEFAULT_METRICS_LISTEN)
                );
                None
            }
        },
    };
    raise_memlock_limit();
    let mut config = RuntimeConfig::one_shard_per_cpu(&settings.data_dir);
    config.groups = settings.groups.clone();
    match (&settings.cluster, catalog.topics().get(OFFSETS_TOPIC)) {
        // In a cluster the topic is made through the controller (see `ferrite_replication::cluster`) and
        // mirrored here; the count it was mirrored with at an earlier start is kept.
        (Some(_), Some(topic)) => config.groups.offsets_partitions = topic.partitions,
        (Some(_), None) => {}
        (None, _) => {
            if let Err(error) = prepare_offsets_topic(&catalog, &mut config.groups) {
                eprintln!("ferrite serve: cannot create {OFFSETS_TOPIC}: {error}");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(interval) = settings.cleaner_check_interval {
        config.cleaner_check_interval = interval;
    }
    config.shard_count = cores;
    config.journal = settings.journal.clone();
    let cluster_state = settings.cluster.clone().map(ClusterState::new);
    config.replicated_partitions = cluster_state.as_ref().map(|state| state.placement.clone());
    config.cpus = Some(if settings.cpuset.is_empty() {
        (0..cores).collect()
    } else {
        settings.cpuset.clone()
    });
    config.log_config = settings.log.clone();
    config.resources = resources;
    config.topic_log_config = Some(TopicLogConfig::from_catalog(
        catalog.clone(),
        settings.log.clone(),
    ));
    let broker_config = BrokerConfig {
        node_id: settings
            .cluster
            .as_ref()
            .map_or(0, |cluster| cluster.node_id as i32),
        advertised_host,
        advertised_port,
        cluster_id: CLUSTER_ID.into(),
        auto_create_topics: settings.auto_create_topics,
        default_partitions: settings.default_partitions,
        fetch_wait_ms_max: 30_000,
        log: settings.log.clone(),
    };
    // Each shard reports once its listener is bound, so "listening" is printed only when
    // every shard accepts connections.
    let (bound, bound_shards) = std::sync::mpsc::channel::<()>();
    let setup = ShardSetup {
        catalog,
        broker: broker_config,
        metrics: registry,
        metrics_snapshot_interval: Duration::from_secs(1),
        listen,
        connection: ConnectionConfig {
            idle_max: settings.connection_idle_max,
            handover: settings.connection_handover.then(HandoverRule::default),
            ..ConnectionConfig::default()
        },
        limits: Arc::new(ConnectionLimits::new(
            connections_max,
            settings.connections_per_ip_max,
        )),
    };
    // The inter-broker listener, held like the Kafka one until every shard has bound it.
    let rpc_reservation = match &settings.cluster {
        Some(cluster) => match retry_while_in_use(
            cluster.rpc_listen,
            "inter-broker listener",
            in_use_deadline,
            || ListenReservation::new(cluster.rpc_listen),
        ) {
            Ok(reservation) => Some(reservation),
            Err(error) => {
                eprintln!(
                    "ferrite serve: cannot listen on {} (--rpc-listen): {error}",
                    cluster.rpc_listen
                );
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let votes = match cluster_state
        .as_ref()
        .map(|_| ferrite_replication::votes::RecoveredVotes::recover(&settings.data_dir))
        .transpose()
    {
        Ok(votes) => votes,
        Err(error) => {
            eprintln!(
                "ferrite serve: cannot recover the Raft vote logs in {}: {error}",
                settings.data_dir.display()
            );
            return ExitCode::from(2);
        }
    };
    let controller_leader_metrics = setup.metrics.clone();
    let cluster_start = cluster_state.zip(votes).map(|(state, votes)| ClusterStart {
        state,
        votes,
        catalog: setup.catalog.clone(),
        data_dir: settings.data_dir.clone(),
        kafka_host: setup.broker.advertised_host.clone(),
        kafka_port: u16::try_from(setup.broker.advertised_port).unwrap_or(0),
        shard_count: cores as u32,
        incarnation: incarnation(),
        broker_log_config: settings.log.clone(),
        controller_leader_observed: Arc::new(move |leader| {
            controller_leader_metrics.controller_leader_observed(leader)
        }),
    });
    let runtime = match Runtime::start(config, move |context| {
        let bound = bound.clone();
        let setup = setup.clone();
        let cluster_start = cluster_start.clone();
        async move {
            let cluster = match &cluster_start {
                Some(start) => match start_shard(&context, start).await {
                    Ok(view) => Some(view),
                    Err(message) => {
                        eprintln!("ferrite serve: {message}");
                        std::process::exit(2);
                    }
                },
                None => None,
            };
            net::server::serve_shard(context, setup, cluster, move |result| {
                if let Err(error) = result {
                    eprintln!("ferrite serve: cannot listen on {listen}: {error}");
                    std::process::exit(2);
                }
                let _ = bound.send(());
            })
            .await
        }
    }) {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ferrite serve: {error}");
            return ExitCode::from(2);
        }
    };
    for _ in 0..cores {
        if bound_shards.recv().is_err() {
            // Say why: the shard that stopped returned its error (a journal it could not
            // open on a full disk, say), which the others' shutdown lets `join` hand over.
            runtime.shutdown_handle().trigger();
            match runtime.join() {
                Err(error) => eprintln!("ferrite serve: {error}"),
                Ok(()) => eprintln!("ferrite serve: a shard stopped before it was listening"),
            }
            return ExitCode::from(1);
        }
    }
    drop(reservation);
    drop(rpc_reservation);
    if let Err(error) = runtime.shutdown_handle().install_signal_handlers() {
        eprintln!("ferrite serve: {error}");
        return ExitCode::from(2);
    }
    let metrics_note = metrics_address
        .map(|address| format!(", metrics on http://{address}/metrics"))
        .unwrap_or_default();
    let descriptors_note = descriptors_note(
        descriptor_limit,
        connections_max,
        &descriptors::Estimate {
            open_files_max: settings.resources.open_files_max as u64,
            journal_files: settings
                .journal
                .as_ref()
                .map_or(0, |journal| journal.files as u64)
                * cores as u64,
            shards: cores as u64,
        },
    );
    println!(
        "ferrite: listening on {listen} (Kafka, advertised as {advertised}), data in {}, \
         {cores} shard(s){metrics_note}{descriptors_note}",
        settings.data_dir.display()
    );
    match runtime.join() {
        Ok(()) => {
            println!("ferrite: stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("ferrite serve: {error}");
            ExitCode::from(1)
        }
    }
}

/// What the start-up line says about descriptors: nothing while `limit` covers what the broker
/// needs, else the limit, the estimate and how to raise it.
fn descriptors_note(
    limit: u64,
    connections_max: usize,
    estimate: &descriptors::Estimate,
) -> String {
    let needed = estimate.needed(connections_max);
    if limit >= needed {
        return String::new();
    }
    format!(
        "; file descriptor limit {limit} is below the {needed} this broker may need \
         ({connections_max} connections at {} each, {} data files (--open-files-max), {} \
         shards): raise it (`ulimit -n`, LimitNOFILE= in a systemd unit) or lower \
         --max-connections or --open-files-max",
        descriptors::PER_CONNECTION,
        estimate.open_files_max,
        estimate.shards
    )
}

/// A number different at every start of the process: the controller tells a restarted broker
/// from a repeated registration by it.
fn incarnation() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 48)
}

/// glommio registers 10 MiB of I/O memory per shard when the memlock limit allows; raise the
/// limit if we may (root, or a hard limit above the soft one), else say what it costs and how
/// to raise it. glommio falls back to unregistered buffers either way.
fn raise_memlock_limit() {
    let wanted = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain system calls on a local struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &wanted) } == 0 {
        return;
    }
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: as above.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut current) } == 0 {
        current.rlim_cur = current.rlim_max;
        // SAFETY: as above.
        unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &current) };
    }
    eprintln!(
        "ferrite serve: the locked-memory limit stays at {} KiB; glommio uses unregistered \
         buffers where its 10 MiB per shard do not fit (a little slower I/O). To raise it: \
         `ulimit -l unlimited` as root, or LimitMEMLOCK=infinity in a systemd unit.",
        current.rlim_cur / 1024
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_is_named_by_node_id_and_peers_and_checked() {
        let cluster = |node_id: Option<u64>, peers: Option<&str>, factor: Option<u16>| {
            Arguments {
                node_id,
                peers: peers.map(str::to_owned),
                default_replication_factor: factor,
                ..Arguments::default()
            }
            .resolve()
            .map(|settings| settings.cluster)
        };
        let three = "1@127.0.0.1:9192, 2@127.0.0.1:9193,3@127.0.0.1:9194";
        let settings = cluster(Some(2), Some(three), None).unwrap().unwrap();
        assert_eq!(settings.node_id, 2);
        assert_eq!(settings.peers.len(), 3);
        assert_eq!(
            settings.rpc_listen,
            "127.0.0.1:9193".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(settings.default_replication_factor, 3);
        let alone = cluster(Some(1), Some("1@127.0.0.1:9192"), None)
            .unwrap()
            .unwrap();
        assert_eq!(alone.default_replication_factor, 1);
        assert!(
            cluster(None, None, None).unwrap().is_none(),
            "a broker alone"
        );
        for (node_id, peers, factor, wanted) in [
            (Some(1), None, None, "needs --peers"),
            (None, Some(three), None, "needs --node-id"),
            (Some(4), Some(three), None, "does not name this broker"),
            (Some(1), Some("1@127.0.0.1:1,1@127.0.0.1:2"), None, "twice"),
            (
                Some(1),
                Some("1:127.0.0.1:1"),
                None,
                "expected ID@HOST:PORT",
            ),
            (Some(1), Some("0@127.0.0.1:1"), None, "not a node id"),
            (Some(1), Some("1@nowhere"), None, "not HOST:PORT"),
            (Some(1), Some(three), Some(4), "between 1 and 3"),
            (Some(1), Some(FIVE), Some(6), "between 1 and 5"),
        ] {
            let error = cluster(node_id, peers, factor).unwrap_err();
            assert!(error.contains(wanted), "{error} (wanted {wanted:?})");
        }
    }

    const FIVE: &str = "1@127.0.0.1:1,2@127.0.0.1:2,3@127.0.0.1:3,4@127.0.0.1:4,5@127.0.0.1:5";

    #[test]
    fn a_cluster_of_five_has_three_controller_voters_unless_told_and_any_replication_factor() {
        let cluster = |voters: Option<usize>, factor: Option<u16>| {
            Arguments {
                node_id: Some(4),
                peers: Some(FIVE.to_owned()),
                controller_voters: voters,
                default_replication_factor: factor,
                ..Arguments::default()
            }
            .resolve()
            .map(|settings| settings.cluster.expect("a cluster"))
        };
        let settings = cluster(None, None).unwrap();
        assert_eq!(settings.peers.len(), 5);
        assert_eq!(settings.controller_voters, VOTERS_DEFAULT_COUNT);
        assert_eq!(settings.default_replication_factor, 3);
        assert_eq!(
            settings.leader_imbalance_check_interval,
            Some(Duration::from_secs(300)),
            "Kafka's default"
        );
        let settings = cluster(Some(5), Some(5)).unwrap();
        assert_eq!(settings.controller_voters, 5);
        assert_eq!(settings.default_replication_factor, 5);
        assert_eq!(cluster(Some(1), None).unwrap().controller_voters, 1);
        for voters in [0, 6] {
            let error = cluster(Some(voters), None).unwrap_err();
            assert!(
                error.contains("--controller-voters must be between 1 and 5"),
                "{error}"
            );
        }
        let two = Arguments {
            node_id: Some(1),
            peers: Some("1@127.0.0.1:1,2@127.0.0.1:2".to_owned()),
            ..Arguments::default()
        };
        let two = two.resolve().unwrap().cluster.unwrap();
        assert_eq!(two.controller_voters, 2, "every broker when fewer than 3");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ferrite.toml");
        std::fs::write(
            &file,
            format!(
                "node-id = 5\npeers = \"{FIVE}\"\ncontroller-voters = 1\n\
                 leader-imbalance-check-interval-s = 0\n"
            ),
        )
        .unwrap();
        let from_file = Arguments {
            config: Some(file),
            ..Arguments::default()
        };
        let from_file = from_file.resolve().unwrap().cluster.unwrap();
        assert_eq!(from_file.controller_voters, 1);
        assert_eq!(from_file.leader_imbalance_check_interval, None, "0: never");
    }

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ferrite.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\ndefault-partitions = 4\nauto-create-topics = false\n",
        )
        .unwrap();
        let arguments = Arguments {
            config: Some(file.clone()),
            default_partitions: Some(6),
            ..Arguments::default()
        };
        let settings = arguments.resolve().unwrap();
        assert_eq!(
            settings.listen,
            "127.0.0.1:9000".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(settings.default_partitions, 6, "the flag wins");
        assert!(!settings.auto_create_topics, "from the file");
        assert_eq!(
            settings.data_dir,
            PathBuf::from("./ferrite-data"),
            "default"
        );

        std::fs::write(&file, "listen = 5\n").unwrap();
        let error = Arguments {
            config: Some(file.clone()),
            ..Arguments::default()
        }
        .resolve()
        .unwrap_err();
        assert!(error.contains("ferrite.toml"), "{error}");
        std::fs::write(&file, "lisen = \"127.0.0.1:1\"\n").unwrap();
        let error = Arguments {
            config: Some(file),
            ..Arguments::default()
        }
        .resolve()
        .unwrap_err();
        assert!(error.contains("lisen"), "a typo is named: {error}");
    }

    #[test]
    fn retention_flags_set_the_topics_defaults() {
        let settings = Arguments {
            retention_ms: Some(-1),
            retention_bytes: Some(1 << 30),
            ..Arguments::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(settings.log.retention_age_ms_max, None);
        assert_eq!(settings.log.retention_bytes_max, Some(1 << 30));
        let error = Arguments {
            retention_ms: Some(-2),
            ..Arguments::default()
        }
        .resolve()
        .unwrap_err();
        assert!(error.contains("--retention-ms must be -1"), "{error}");
    }

    #[test]
    fn topic_defaults_set_any_topic_setting_and_are_checked_as_topic_settings_are() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ferrite.toml");
        std::fs::write(&file, "topic-default = [\"segment.ms=600000\"]\n").unwrap();
        let settings = Arguments {
            topic_default: vec![
                "cleanup.policy=compact,delete".into(),
                "delete.retention.ms=3600000".into(),
            ],
            config: Some(file.clone()),
            ..Arguments::default()
        }
        .resolve()
        .unwrap();
        assert!(settings.log.cleanup_policy.compacts() && settings.log.cleanup_policy.deletes());
        assert_eq!(settings.log.delete_retention_ms, 3_600_000);
        assert_eq!(
            settings.log.segment_age_ms_max,
            LogConfig::default().segment_age_ms_max,
            "the flags replace the file's list"
        );
        let from_file = Arguments {
            config: Some(file),
            ..Arguments::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(from_file.log.segment_age_ms_max, Some(600_000));
        for (given, wanted) in [
            ("retention.ms", "expected KEY=VALUE"),
            ("min.cleanable.dirty.ratio=2", "min.cleanable.dirty.ratio"),
            ("no.such.key=1", "no.such.key"),
        ] {
            let error = Arguments {
                topic_default: vec![given.into()],
                ..Arguments::default()
            }
            .resolve()
            .unwrap_err();
            assert!(error.contains(wanted), "{given}: {error}");
        }
    }

    #[test]
    fn the_cleaner_interval_is_set_in_milliseconds_and_never_zero() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ferrite.toml");
        std::fs::write(&file, "log-cleaner-interval-ms = 250\n").unwrap();
        let settings = Arguments {
            config: Some(file),
            ..Arguments::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(
            settings.cleaner_check_interval,
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            Arguments::default()
                .resolve()
                .unwrap()
                .cleaner_check_interval,
            None,
            "the runtime's default"
        );
        let error = Arguments {
            log_cleaner_interval_ms: Some(0),
            ..Arguments::default()
        }
        .resolve()
        .unwrap_err();
        assert!(error.contains("--log-cleaner-interval-ms"), "{error}");
    }

    #[test]
    fn resource_bounds_are_the_brokers_and_shared_out_among_its_shards() {
        let defaults = Arguments::default().resolve().unwrap();
        assert_eq!(
            defaults.resources.per_shard(2).unwrap(),
            ResourceLimits::default(),
            "the engine's defaults are one shard's share of a two-shard broker"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ferrite.toml");
        std::fs::write(
            &file,
            "open-files-max = 1000\nsegment-fallocation-step = 8388608\n\
             preallocated-bytes-max = 4194304\n",
        )
        .unwrap();
        let settings = Arguments {
            config: Some(file),
            tail_cache_bytes_max: Some(1 << 20),
            ..Arguments::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(settings.log.preallocate_bytes, 8 << 20);
        assert_eq!(
            settings.resources.per_shard(4).unwrap(),
            ResourceLimits {
                open_files_max: 250,
                preallocated_bytes_max: 1 << 20,
                tail_cache_bytes_max: 256 << 10,
            }
        );
        let too_few = BrokerResources {
            open_files_max: OPEN_FILES_MIN * 2 - 1,
            ..BrokerResources::default()
        };
        let error = too_few.per_shard(2).unwrap_err();
        assert!(
            error.contains("--open-files-max must be at least"),
            "{error}"
        );
    }

    #[test]
    fn connection_limits_come_from_flags_or_the_file_with_kafkas_defaults() {
        let defaults = Arguments::default().resolve().unwrap();
        assert_eq!(defaults.connections_max, None, "from the descriptor limit");
        assert_eq!(defaults.connections_per_ip_max, None, "unlimited, as Kafka");
        assert_eq!(defaults.connection_idle_max, Some(Duration::from_secs(600)));
        assert!(defaults.connection_handover, "on unless turned off");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ferrite.toml");
        std::fs::write(
            &file,
            "max-connections = 1000\nmax-connections-per-ip = 10\nconnections-max-idle-ms = -1\n\
             connection-handover = false\n",
        )
        .unwrap();
        let settings = Arguments {
            config: Some(file),
            max_connections_per_ip: Some(20),
            ..Arguments::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(settings.connections_max, Some(1000));
        assert_eq!(settings.connections_per_ip_max, Some(20), "the flag wins");
        assert_eq!(settings.connection_idle_max, None, "-1: never");
        assert!(!settings.connection_handover, "turned off in the file");

        for (arguments, wanted) in [
            (
                Arguments {
                    max_connections: Some(0),
                    ..Arguments::default()
                },
                "--max-connections",
            ),
            (
                Arguments {
                    max_connections_per_ip: Some(0),
                    ..Arguments::default()
                },
                "--max-connections-per-ip",
            ),
            (
                Arguments {
                    connections_max_idle_ms: Some(0),
                    ..Arguments::default()
                },
                "--connections-max-idle-ms",
            ),
        ] {
            let error = arguments.resolve().unwrap_err();
            assert!(error.contains(wanted), "{error}");
        }
    }

    #[test]
    fn the_start_up_line_names_a_descriptor_limit_below_the_estimate() {
        let estimate = descriptors::Estimate {
            open_files_max: 4000,
            journal_files: 8,
            shards: 2,
        };
        let needed = estimate.needed(1000);
        assert_eq!(descriptors_note(needed, 1000, &estimate), "");
        let note = descriptors_note(needed - 1, 1000, &estimate);
        assert!(
            note.contains(&format!(
                "file descriptor limit {} is below the {needed}",
                needed - 1
            )),
            "{note}"
        );
        assert!(
            note.contains("4000 data files (--open-files-max)"),
            "{note}"
        );
    }

    #[test]
    fn advertised_addresses_are_host_and_port() {
        assert_eq!(
            parse_advertised("broker.example:9093"),
            Ok(("broker.example".into(), 9093))
        );
        assert_eq!(parse_advertised("[::1]:9092"), Ok(("::1".into(), 9092)));
        assert!(parse_advertised("nohost").is_err());
        assert!(parse_advertised("h:0").is_err());
        assert!(parse_advertised("h:99999").is_err());
    }
}
