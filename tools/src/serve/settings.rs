//! `ferrite serve`'s settings: every one has an embedded default, can be set in a TOML file
//! (`--config FILE`, keys named as the flags: `listeners = "PLAINTEXT://127.0.0.1:9092"`,
//! `default-partitions = 3`), and can be set on the command line, which wins over the file.
//! [`Arguments::resolve`] checks them all before anything starts, so a bad flag is an exit
//! code 2 with a message, never a half-started broker.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use engine::resources::{ResourceLimits, OPEN_FILES_MIN};
use engine::{JournalConfig, LogConfig};
use ferrite_replication::cluster::ClusterSettings;
use ferrite_replication::controller::VOTERS_DEFAULT_COUNT;
use ferrite_replication::transport::peer_auth::ClusterSecret;
use net::authorizer::{parse_super_users, AuthorizerConfig};
use net::connection::IDLE_MAX_DEFAULT;
use net::groups::consumer::AssignorKind;
use net::groups::shard::GroupsConfig;
use net::listener::{parse_endpoints, Endpoint, ListenerName};
use net::sasl::{SaslConfig, SaslMechanism};
use net::tls::{ClientAuth, TlsFiles};
use net::transactions::TransactionsConfig;
use serde::Deserialize;

/// The flags; every one may also come from the config file.
#[derive(clap::Args, Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Arguments {
    /// A TOML file with any of these settings (the flags win over it).
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Kafka listener address, a shorthand for `--listeners PLAINTEXT://HOST:PORT`
    /// [default: 127.0.0.1:9092]. Port 0 picks a free port.
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "listeners")]
    listen: Option<SocketAddr>,
    /// The address clients are told to connect to (Metadata), a shorthand for
    /// `--advertised-listeners PLAINTEXT://HOST:PORT` [default: the listen address].
    #[arg(
        long,
        value_name = "HOST:PORT",
        conflicts_with = "advertised_listeners"
    )]
    advertise: Option<String>,
    /// Kafka listeners, Kafka's way: `NAME://HOST:PORT,...`, each name a security protocol
    /// (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL); an empty HOST is every interface, port 0 a
    /// free port [default: PLAINTEXT://127.0.0.1:9092].
    #[arg(long, value_name = "NAME://HOST:PORT,...")]
    listeners: Option<String>,
    /// The addresses clients are told to connect to, per listener, in the same form; a client
    /// is told those of the listener it came in on [default: each listener's own address].
    #[arg(long, value_name = "NAME://HOST:PORT,...")]
    advertised_listeners: Option<String>,
    /// PEM file of the SSL and SASL_SSL listeners' certificate, then its chain; read again on
    /// SIGHUP.
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM file of the certificate's private key; read again on SIGHUP.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// PEM file of the CA certificates client certificates must chain to (mutual TLS).
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Whether TLS clients must present a certificate signed by --tls-ca: none, requested
    /// (served as User:ANONYMOUS without one) or required [default: none]. A client
    /// certificate's principal is `User:` and its subject (`User:CN=client,O=example`).
    #[arg(long, value_name = "none|requested|required")]
    tls_client_auth: Option<String>,
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
    /// Partitions of the internal `__transaction_state` topic, used when it is first created
    /// (later starts keep the count it has) [default: 16].
    #[arg(long, value_name = "N")]
    transaction_state_partitions: Option<u32>,
    /// The longest transaction timeout a transactional producer may ask for (Kafka's
    /// transaction.max.timeout.ms; longer is refused with INVALID_TRANSACTION_TIMEOUT)
    /// [default: 900000].
    #[arg(long, value_name = "MS")]
    transaction_max_timeout_ms: Option<i32>,
    /// How often each transaction coordinator aborts the transactions that outlived their
    /// timeout and forgets idle transactional ids (Kafka's
    /// transaction.abort.timed.out.transaction.cleanup.interval.ms) [default: 10000].
    #[arg(long, value_name = "MS")]
    transaction_timeout_check_interval_ms: Option<i64>,
    /// Before a transactional producer's batch opens its transaction on a partition, ask the
    /// transaction coordinator that the partition is in the transaction, so that a late batch
    /// of a hung producer is refused (KIP-890; Kafka's
    /// transaction.partition.verification.enable) [default: true].
    #[arg(long, value_name = "BOOL")]
    transaction_partition_verification_enable: Option<bool>,
    /// How long the first rebalance of an empty group waits for more members to join
    /// (Kafka's group.initial.rebalance.delay.ms) [default: 3000].
    #[arg(long, value_name = "MS")]
    group_initial_rebalance_delay_ms: Option<i64>,
    /// How long a member of a consumer-protocol group (KIP-848) may go without a heartbeat
    /// before its partitions go to the others (Kafka's group.consumer.session.timeout.ms)
    /// [default: 45000].
    #[arg(long, value_name = "MS")]
    group_consumer_session_timeout_ms: Option<i32>,
    /// How often members of a consumer-protocol group heartbeat (Kafka's
    /// group.consumer.heartbeat.interval.ms) [default: 5000].
    #[arg(long, value_name = "MS")]
    group_consumer_heartbeat_interval_ms: Option<i32>,
    /// The server-side assignors of consumer-protocol groups, the first the default, of
    /// `uniform` and `range` (Kafka's group.consumer.assignors) [default: uniform,range].
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    #[serde(default)]
    group_consumer_assignors: Vec<String>,
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
    /// The SASL mechanisms SASL listeners accept, of PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512
    /// (Kafka's sasl.enabled.mechanisms) [default: SCRAM-SHA-256,SCRAM-SHA-512,PLAIN].
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    #[serde(default)]
    sasl_mechanisms: Vec<String>,
    /// How long a SASL session lasts before the client must re-authenticate on its
    /// connection (KIP-368, Kafka's connections.max.reauth.ms); 0 for the connection's life
    /// [default: 0].
    #[arg(long, value_name = "MS")]
    connections_max_reauth_ms: Option<u64>,
    /// `acl`: authorize every request against the ACLs (CreateAcls, `ferrite acl`), as Kafka's
    /// StandardAuthorizer does; `none`: allow everything, as Kafka without an authorizer
    /// [default: none].
    #[arg(long, value_name = "NAME")]
    authorizer: Option<String>,
    /// Principals allowed everything with `--authorizer acl`, e.g. `User:admin,User:ops`
    /// (Kafka's super.users).
    #[arg(long, value_name = "PRINCIPALS")]
    super_users: Option<String>,
    /// With `--authorizer acl`, allow everyone on a resource no ACL names (Kafka's
    /// allow.everyone.if.no.acl.found) [default: false].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    allow_everyone_if_no_acl_found: Option<bool>,
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
    /// A file holding the cluster's shared secret (at least 32 bytes, e.g. `openssl rand
    /// -base64 48`), the same on every broker: brokers prove to each other that they hold it
    /// before anything else crosses the inter-broker port, and refuse a peer that does not.
    /// Without it that port believes any caller (a warning says so at start).
    #[arg(long, value_name = "FILE")]
    cluster_secret_file: Option<PathBuf>,
}

/// Checks `--authorizer`, `--super-users` and `--allow-everyone-if-no-acl-found`.
fn resolve_authorizer(
    name: Option<String>,
    super_users: Option<String>,
    allow_everyone_if_no_acl_found: Option<bool>,
) -> Result<AuthorizerConfig, String> {
    let enabled = match name.as_deref().map(str::trim) {
        None | Some("none") => false,
        Some("acl") => true,
        Some(other) => {
            return Err(format!(
                "--authorizer: unknown authorizer '{other}' (acl, none)"
            ))
        }
    };
    let super_users = parse_super_users(super_users.as_deref().unwrap_or_default())?;
    if !enabled && (!super_users.is_empty() || allow_everyone_if_no_acl_found.is_some()) {
        return Err(
            "--super-users and --allow-everyone-if-no-acl-found need --authorizer acl".into(),
        );
    }
    Ok(AuthorizerConfig {
        enabled,
        super_users,
        allow_everyone_if_no_acl_found: allow_everyone_if_no_acl_found.unwrap_or(false),
    })
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
pub(super) struct Settings {
    /// The Kafka listeners, each name once.
    pub(super) listeners: Vec<Endpoint>,
    /// The advertised addresses given, each of a listener; a listener without one advertises
    /// where it listens.
    pub(super) advertised: Vec<Endpoint>,
    /// What the TLS listeners handshake with; `Some` exactly when there is one.
    pub(super) tls: Option<TlsFiles>,
    pub(super) data_dir: PathBuf,
    pub(super) cores: Option<usize>,
    /// Empty: CPUs 0 up to the shard count.
    pub(super) cpuset: Vec<usize>,
    /// `None`: the default address, given up with a warning if it is taken.
    pub(super) metrics_listen: Option<SocketAddr>,
    pub(super) default_partitions: u32,
    pub(super) auto_create_topics: bool,
    pub(super) log: LogConfig,
    pub(super) groups: GroupsConfig,
    pub(super) transactions: TransactionsConfig,
    /// `None`: the runtime's default.
    pub(super) cleaner_check_interval: Option<Duration>,
    /// `None`: no journal (`--journal-file-bytes 0`).
    pub(super) journal: Option<JournalConfig>,
    /// `None`: the broker runs alone.
    pub(super) cluster: Option<ClusterSettings>,
    /// `None`: a quarter of the descriptor limit ([`descriptors::default_connections_max`]).
    pub(super) connections_max: Option<usize>,
    /// `None`: no limit.
    pub(super) connections_per_ip_max: Option<usize>,
    /// `None`: idle connections stay open.
    pub(super) connection_idle_max: Option<Duration>,
    /// Whether connections move to the shard their data requests go to.
    pub(super) connection_handover: bool,
    /// What SASL listeners accept.
    pub(super) sasl: SaslConfig,
    /// How requests are authorized.
    pub(super) authorizer: AuthorizerConfig,
    /// The resource bounds of the whole broker, shared out among the shards.
    pub(super) resources: BrokerResources,
}

/// The broker's resource bounds, over every shard (each shard gets an equal share).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BrokerResources {
    pub(super) open_files_max: usize,
    pub(super) preallocated_bytes_max: u64,
    pub(super) tail_cache_bytes_max: usize,
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
    pub(super) fn per_shard(&self, shards: usize) -> Result<ResourceLimits, String> {
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
    pub(super) fn resolve(self) -> Result<Settings, String> {
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
        let mut transactions = TransactionsConfig::default();
        if let Some(partitions) = self
            .transaction_state_partitions
            .or(file.transaction_state_partitions)
        {
            if partitions == 0 || partitions > engine::catalog::PARTITIONS_MAX {
                return Err(format!(
                    "--transaction-state-partitions must be between 1 and {}",
                    engine::catalog::PARTITIONS_MAX
                ));
            }
            transactions.state_partitions = partitions;
        }
        if let Some(timeout_ms) = self
            .transaction_max_timeout_ms
            .or(file.transaction_max_timeout_ms)
        {
            if timeout_ms <= 0 {
                return Err("--transaction-max-timeout-ms must be positive".into());
            }
            transactions.coordinator.timeout_max_ms = timeout_ms;
        }
        if let Some(interval_ms) = self
            .transaction_timeout_check_interval_ms
            .or(file.transaction_timeout_check_interval_ms)
        {
            if interval_ms <= 0 {
                return Err("--transaction-timeout-check-interval-ms must be positive".into());
            }
            transactions.coordinator.check_interval_ms = interval_ms;
        }
        if let Some(enable) = self
            .transaction_partition_verification_enable
            .or(file.transaction_partition_verification_enable)
        {
            transactions.partition_verification = enable;
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
        let consumer = &mut groups.coordinator.consumer;
        if let Some(timeout_ms) = self
            .group_consumer_session_timeout_ms
            .or(file.group_consumer_session_timeout_ms)
        {
            consumer.session_timeout_ms = timeout_ms;
        }
        if let Some(interval_ms) = self
            .group_consumer_heartbeat_interval_ms
            .or(file.group_consumer_heartbeat_interval_ms)
        {
            consumer.heartbeat_interval_ms = interval_ms;
        }
        if !(0 < consumer.heartbeat_interval_ms
            && consumer.heartbeat_interval_ms < consumer.session_timeout_ms)
        {
            return Err(
                "--group-consumer-heartbeat-interval-ms must be positive and below \
                        --group-consumer-session-timeout-ms"
                    .into(),
            );
        }
        let assignors = if self.group_consumer_assignors.is_empty() {
            file.group_consumer_assignors
        } else {
            self.group_consumer_assignors
        };
        if !assignors.is_empty() {
            consumer.assignors = assignors
                .iter()
                .map(|name| {
                    AssignorKind::from_name(name.trim()).ok_or_else(|| {
                        format!("--group-consumer-assignors: unknown assignor '{name}' (uniform, range)")
                    })
                })
                .collect::<Result<_, _>>()?;
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
                let secret = match self.cluster_secret_file.or(file.cluster_secret_file) {
                    None => None,
                    Some(path) => Some(
                        ClusterSecret::read_file(&path)
                            .map_err(|error| format!("--cluster-secret-file: {error}"))?,
                    ),
                };
                Some(ClusterSettings {
                    secret,
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
        let sasl_mechanisms = if self.sasl_mechanisms.is_empty() {
            file.sasl_mechanisms
        } else {
            self.sasl_mechanisms
        };
        let mut sasl = SaslConfig::default();
        if !sasl_mechanisms.is_empty() {
            sasl.mechanisms = Vec::with_capacity(sasl_mechanisms.len());
            for name in &sasl_mechanisms {
                let mechanism = SaslMechanism::from_name(name.trim()).ok_or_else(|| {
                    format!(
                        "--sasl-mechanisms: unknown mechanism '{name}' (PLAIN, SCRAM-SHA-256, \
                         SCRAM-SHA-512)"
                    )
                })?;
                if !sasl.mechanisms.contains(&mechanism) {
                    sasl.mechanisms.push(mechanism);
                }
            }
        }
        sasl.reauthentication_max = self
            .connections_max_reauth_ms
            .or(file.connections_max_reauth_ms)
            .filter(|&ms| ms > 0)
            .map(Duration::from_millis);
        let authorizer = resolve_authorizer(
            self.authorizer.or(file.authorizer),
            self.super_users.or(file.super_users),
            self.allow_everyone_if_no_acl_found
                .or(file.allow_everyone_if_no_acl_found),
        )?;
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
        let (listeners, advertised) = resolve_listeners(
            Given {
                listen: self.listen,
                advertise: self.advertise,
                listeners: self.listeners,
                advertised_listeners: self.advertised_listeners,
            },
            Given {
                listen: file.listen,
                advertise: file.advertise,
                listeners: file.listeners,
                advertised_listeners: file.advertised_listeners,
            },
        )?;
        let tls = resolve_tls(
            &listeners,
            self.tls_cert.or(file.tls_cert),
            self.tls_key.or(file.tls_key),
            self.tls_ca.or(file.tls_ca),
            self.tls_client_auth.or(file.tls_client_auth),
        )?;
        Ok(Settings {
            tls,
            resources,
            cluster,
            connections_max,
            connections_per_ip_max,
            connection_idle_max,
            sasl,
            authorizer,
            connection_handover: self
                .connection_handover
                .or(file.connection_handover)
                .unwrap_or(true),
            listeners,
            advertised,
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
            transactions,
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
fn parse_advertised(advertise: &str) -> Result<(String, u16), String> {
    let (host, port) = advertise
        .rsplit_once(':')
        .ok_or_else(|| format!("--advertise {advertise}: expected HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("--advertise {advertise}: '{port}' is not a port"))?;
    if host.is_empty() || port == 0 {
        return Err(format!("--advertise {advertise}: expected HOST:PORT"));
    }
    Ok((host.trim_matches(['[', ']']).to_owned(), port))
}

/// The listener settings of one source (the flags, or the file).
struct Given {
    listen: Option<SocketAddr>,
    advertise: Option<String>,
    listeners: Option<String>,
    advertised_listeners: Option<String>,
}

/// The listeners and the advertised addresses given: from the flags if they name any, else from
/// the file. `--listen`/`--advertise` are the shorthands of one PLAINTEXT listener and cannot be
/// mixed with the lists; every advertised name must be a listener's.
fn resolve_listeners(flags: Given, file: Given) -> Result<(Vec<Endpoint>, Vec<Endpoint>), String> {
    let from_flags = flags.listen.is_some() || flags.listeners.is_some();
    let listeners_given = if from_flags { &flags } else { &file };
    let listeners = match (listeners_given.listen, &listeners_given.listeners) {
        (Some(_), Some(_)) => return Err("--listen and --listeners: give one of them".into()),
        (Some(address), None) => vec![plaintext_endpoint(address.ip().to_string(), address.port())],
        (None, Some(list)) => {
            parse_endpoints(list).map_err(|error| format!("--listeners {error}"))?
        }
        (None, None) => vec![plaintext_endpoint("127.0.0.1".into(), 9092)],
    };
    let advertise = flags.advertise.or(file.advertise);
    let advertised_listeners = flags.advertised_listeners.or(file.advertised_listeners);
    let advertised = match (advertise, advertised_listeners) {
        (Some(_), Some(_)) => {
            return Err("--advertise and --advertised-listeners: give one of them".into())
        }
        (Some(address), None) => {
            let (host, port) = parse_advertised(&address)?;
            vec![plaintext_endpoint(host, port)]
        }
        (None, Some(list)) => {
            parse_endpoints(&list).map_err(|error| format!("--advertised-listeners {error}"))?
        }
        (None, None) => Vec::new(),
    };
    if let Some(stray) = advertised.iter().find(|endpoint| {
        !listeners
            .iter()
            .any(|listener| listener.name == endpoint.name)
    }) {
        return Err(format!(
            "the advertised listener {stray} is not one of the listeners ({})",
            listeners
                .iter()
                .map(|listener| listener.to_string())
                .collect::<Vec<_>>()
                .join(",")
        ));
    }
    if let Some(unroutable) = advertised
        .iter()
        .find(|endpoint| endpoint.host.is_empty() || endpoint.port == 0)
    {
        return Err(format!(
            "--advertised-listeners {unroutable}: clients need a host and a port"
        ));
    }
    Ok((listeners, advertised))
}

/// The TLS files: required (certificate and key) when a listener uses TLS, refused when none
/// does (they would be ignored).
fn resolve_tls(
    listeners: &[Endpoint],
    certificate: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    client_auth: Option<String>,
) -> Result<Option<TlsFiles>, String> {
    let client_auth = client_auth
        .map(|text| text.parse::<ClientAuth>())
        .transpose()
        .map_err(|message| format!("--tls-client-auth {message}"))?
        .unwrap_or_default();
    let tls_listener = listeners
        .iter()
        .find(|listener| listener.protocol().uses_tls());
    match (tls_listener, certificate, key) {
        (Some(_), Some(certificate), Some(key)) => Ok(Some(TlsFiles {
            certificate,
            key,
            client_ca,
            client_auth,
        })),
        (Some(listener), _, _) => Err(format!(
            "the listener {listener} uses TLS: give its certificate and key with --tls-cert FILE \
             --tls-key FILE"
        )),
        (None, None, None) if client_ca.is_none() && client_auth == ClientAuth::None => Ok(None),
        (None, _, _) => Err(
            "--tls-cert, --tls-key, --tls-ca and --tls-client-auth are for SSL and SASL_SSL \
             listeners, and --listeners names none"
                .into(),
        ),
    }
}

fn plaintext_endpoint(host: String, port: u16) -> Endpoint {
    Endpoint {
        name: ListenerName::plaintext(),
        host,
        port,
    }
}

#[cfg(test)]
mod tests;
