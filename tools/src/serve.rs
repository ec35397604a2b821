//! `ferrite serve`: resolves the settings (`settings`), then starts the shards, their Kafka
//! listeners and, with `--peers`, the broker's part in the cluster
//! (`ferrite_replication::cluster`), and stops them cleanly on SIGINT/SIGTERM.
//!
//! A start, in order: resolve the settings; raise the soft descriptor limit to the hard one
//! (`descriptors`); take the data directory's lock; open the catalog; start the metrics
//! endpoint (a tiny_http thread; when the default address is taken the broker runs without
//! metrics and says so); raise the memlock limit where it may; start the runtime (one pinned
//! shard per core, or the CPUs `--cpuset` names, so several brokers can share a machine); have
//! every shard start its group coordinators (`net::groups::shard`) and bind the Kafka listener,
//! and print the one start-up line only once all are listening, so a supervisor or test that
//! waits for it can connect at once; and install the signal handling. Every bind of the
//! start-up waits up to `engine::shard::listen::IN_USE_WAIT` in all for an address a broker
//! killed a moment ago still holds.
//!
//! Exit codes: 0 after a clean shutdown; 1 if the broker failed while running; 2 if it could
//! not start (bad flags or config file, address in use, unwritable data directory, …); 130 on
//! a second signal.

mod settings;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::acls::Acls;
use engine::catalog::{Catalog, OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC};
use engine::credentials::Credentials;
use engine::data_dir_lock::DataDirLock;
use engine::quotas::ClientQuotas;
use engine::shard::listen::{retry_while_in_use, ListenReservation, IN_USE_WAIT};
use engine::shard::{Runtime, RuntimeConfig, TopicLogConfig};
use ferrite_replication::cluster::{
    new_incarnation, start_shard, ClusterStart, ClusterState, MarkerConfig, VerificationConfig,
};
use ferrite_replication::cluster_id;
use ferrite_replication::metadata::ListenerEndpoint;
use ferrite_replication::transport::peer_auth::ClusterIdentity;
use net::broker::BrokerConfig;
use net::connection::ConnectionConfig;
use net::connection_limits::ConnectionLimits;
use net::groups::shard::{LocalOffsetsLog, OffsetsLog, ReplicatedOffsetsLog, ShardGroups};
use net::groups::{prepare_offsets_topic, LegacyRecordConversion};
use net::handover::HandoverRule;
use net::listener::{Endpoint, ListenerAddress};
use net::metrics::MetricsRegistry;
use net::quotas::QuotaUsage;
use net::server::ShardSetup;
use net::tls::TlsServer;
use net::transactions::prepare_transaction_state_topic;

use crate::descriptors;
use crate::metrics;
pub use settings::Arguments;

/// Where metrics are served unless told otherwise (the design's command-line contract).
const DEFAULT_METRICS_LISTEN: ([u8; 4], u16) = ([127, 0, 0, 1], 9644);

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
    // Every shard binds with SO_REUSEPORT; reserve each listener's address first, so that a
    // taken port is a clear start-up error rather than a shard failing later, and port 0 (tests
    // use it) becomes one free port that stays ours until every shard has bound it.
    // A broker killed a moment ago may still hold these addresses (see `listen`): every bind
    // of the start-up waits for them, together at most this long.
    let in_use_deadline = Instant::now() + IN_USE_WAIT;
    let listeners = match reserve_listeners(&settings.listeners, in_use_deadline) {
        Ok(listeners) => listeners,
        Err(message) => {
            eprintln!("ferrite serve: {message}");
            return ExitCode::from(2);
        }
    };
    let advertised = match advertised_endpoints(&listeners, &settings.advertised) {
        Ok(advertised) => advertised,
        Err(message) => {
            eprintln!("ferrite serve: {message}");
            return ExitCode::from(2);
        }
    };
    let tls = match settings.tls.clone().map(TlsServer::load).transpose() {
        Ok(tls) => tls.map(Arc::new),
        Err(error) => {
            eprintln!("ferrite serve: TLS: {error}");
            return ExitCode::from(2);
        }
    };
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
    // A data directory of a Ferrite that wrote its own format to `__consumer_offsets` gets
    // Kafka's, once, as each partition opens.
    config.record_rewrite = Some(Arc::new(LegacyRecordConversion));
    let mut groups_config = settings.groups.clone();
    match (&settings.cluster, catalog.topics().get(OFFSETS_TOPIC)) {
        // In a cluster the topic is made through the controller (see
        // `ferrite_replication::cluster`) and mirrored here; the count it was mirrored with at an
        // earlier start is kept.
        (Some(_), Some(topic)) => groups_config.offsets_partitions = topic.partitions,
        (Some(_), None) => {}
        (None, _) => match prepare_offsets_topic(&catalog, groups_config.offsets_partitions) {
            Ok(partitions) => groups_config.offsets_partitions = partitions,
            Err(error) => {
                eprintln!("ferrite serve: cannot create {OFFSETS_TOPIC}: {error}");
                return ExitCode::from(2);
            }
        },
    }
    let mut transactions_config = settings.transactions.clone();
    match (
        &settings.cluster,
        catalog.topics().get(TRANSACTION_STATE_TOPIC),
    ) {
        (Some(_), Some(topic)) => transactions_config.state_partitions = topic.partitions,
        (Some(_), None) => {}
        (None, _) => {
            match prepare_transaction_state_topic(&catalog, transactions_config.state_partitions) {
                Ok(partitions) => transactions_config.state_partitions = partitions,
                Err(error) => {
                    eprintln!("ferrite serve: cannot create {TRANSACTION_STATE_TOPIC}: {error}");
                    return ExitCode::from(2);
                }
            }
        }
    }
    if let Some(interval) = settings.cleaner_check_interval {
        config.cleaner_check_interval = interval;
    }
    config.shard_count = cores;
    config.journal = settings.journal.clone();
    let cluster_state = settings.cluster.clone().map(ClusterState::new);
    let cluster_id = match (&cluster_state, cluster_id::read_stored(&settings.data_dir)) {
        (_, Err(error)) => {
            eprintln!("ferrite serve: {error}");
            return ExitCode::from(2);
        }
        // A cluster's brokers take its id from the metadata log until they have stored it
        // (see `ferrite_replication::cluster_id`).
        (Some(state), Ok(stored)) => {
            if let Some(stored) = stored {
                state.cluster_id.adopt(&stored);
            }
            if state.settings.secret.is_none() {
                eprintln!(
                    "ferrite serve: warning: no --cluster-secret-file: the inter-broker port \
                     {} believes anyone who reaches it; see the README's \"Securing a cluster\"",
                    state.settings.rpc_listen
                );
            }
            state.cluster_id.clone()
        }
        (None, Ok(stored)) => {
            match stored.map_or_else(|| cluster_id::stored_or_new(&settings.data_dir), Ok) {
                Ok(id) => ClusterIdentity::new(id),
                Err(error) => {
                    eprintln!("ferrite serve: {error}");
                    return ExitCode::from(2);
                }
            }
        }
    };
    config.replicated_partitions = cluster_state.as_ref().map(|state| state.placement.clone());
    // A broker alone keeps them in its data directory; a cluster's follow the metadata log.
    let credentials = match &cluster_state {
        Some(state) => state.credentials.clone(),
        None => match Credentials::open(&settings.data_dir) {
            Ok(credentials) => Arc::new(credentials),
            Err(error) => {
                eprintln!("ferrite serve: {error}");
                return ExitCode::from(2);
            }
        },
    };
    // A broker alone keeps them in its data directory; a cluster's follow the metadata log.
    let quotas = match &cluster_state {
        Some(state) => state.quotas.clone(),
        None => match ClientQuotas::open(&settings.data_dir) {
            Ok(quotas) => Arc::new(quotas),
            Err(error) => {
                eprintln!("ferrite serve: {error}");
                return ExitCode::from(2);
            }
        },
    };
    let acls = match &cluster_state {
        Some(state) => state.acls.clone(),
        None => match Acls::open(&settings.data_dir) {
            Ok(acls) => Arc::new(acls),
            Err(error) => {
                eprintln!("ferrite serve: {error}");
                return ExitCode::from(2);
            }
        },
    };
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
        advertised: advertised.clone(),
        cluster_id,
        auto_create_topics: settings.auto_create_topics,
        default_partitions: settings.default_partitions,
        fetch_wait_ms_max: 30_000,
        log: settings.log.clone(),
        sasl: settings.sasl.clone(),
        authorizer: settings.authorizer.clone(),
    };
    // Each shard reports once its listener is bound, so "listening" is printed only when
    // every shard accepts connections.
    let (bound, bound_shards) = std::sync::mpsc::channel::<()>();
    let setup = ShardSetup {
        catalog,
        credentials,
        quotas: Arc::new(QuotaUsage::new(quotas)),
        acls,
        broker: broker_config,
        metrics: registry,
        metrics_snapshot_interval: Duration::from_secs(1),
        listeners: listeners
            .iter()
            .map(|(listener, _)| listener.clone())
            .collect(),
        tls: tls.clone(),
        connection: ConnectionConfig {
            idle_max: settings.connection_idle_max,
            handover: settings.connection_handover.then(HandoverRule::default),
            ..ConnectionConfig::default()
        },
        limits: Arc::new(ConnectionLimits::new(
            connections_max,
            settings.connections_per_ip_max,
        )),
        transactions: transactions_config,
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
        endpoints: advertised
            .iter()
            .map(|endpoint| ListenerEndpoint {
                listener: Some(endpoint.name.as_str().to_owned()),
                host: endpoint.host.clone(),
                port: endpoint.port,
            })
            .collect(),
        shard_count: cores as u32,
        incarnation: new_incarnation(),
        broker_log_config: settings.log.clone(),
        controller_leader_observed: Arc::new(move |leader| {
            controller_leader_metrics.controller_leader_observed(leader)
        }),
        offsets_partitions: groups_config.offsets_partitions,
        transaction_state_partitions: setup.transactions.state_partitions,
        markers: MarkerConfig::default(),
        verification: VerificationConfig::default(),
    });
    let runtime = match Runtime::start(config, move |context| {
        let bound = bound.clone();
        let setup = setup.clone();
        let cluster_start = cluster_start.clone();
        // First, so that peers' group requests find this shard's coordinators.
        let offsets_log: Rc<dyn OffsetsLog> = if cluster_start.is_some() {
            Rc::new(ReplicatedOffsetsLog)
        } else {
            Rc::new(LocalOffsetsLog)
        };
        let groups = ShardGroups::start(&context, groups_config.clone(), offsets_log);
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
            net::server::serve_shard(context, setup, cluster, groups, move |result| {
                if let Err(error) = result {
                    eprintln!("ferrite serve: cannot listen: {error}");
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
    let listening = listening_note(&listeners, &advertised);
    drop(listeners);
    drop(rpc_reservation);
    if let Err(error) = runtime.shutdown_handle().install_signal_handlers() {
        eprintln!("ferrite serve: {error}");
        return ExitCode::from(2);
    }
    if let Some(tls) = tls {
        if let Err(error) = reload_tls_on_sighup(tls) {
            eprintln!("ferrite serve: cannot handle SIGHUP: {error}");
            return ExitCode::from(2);
        }
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
        "ferrite: listening on {listening}, data in {}, \
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

/// Reads the TLS files again on every SIGHUP (a thread of its own): new handshakes use them,
/// open connections keep theirs; a file that does not load leaves the configuration as it was.
fn reload_tls_on_sighup(tls: Arc<TlsServer>) -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])?;
    std::thread::Builder::new()
        .name("tls-reload".into())
        .spawn(move || {
            for _ in signals.forever() {
                match tls.reload() {
                    Ok(()) => eprintln!(
                        "ferrite: SIGHUP: TLS certificates reloaded; new connections use them"
                    ),
                    Err(error) => eprintln!(
                        "ferrite: SIGHUP: TLS certificates not reloaded, the previous ones stay \
                         in use: {error}"
                    ),
                }
            }
        })?;
    Ok(())
}

/// Reserves the address of every listener (see `ListenReservation`): the listener as the shards
/// bind it, with its reservation, held until they have.
fn reserve_listeners(
    endpoints: &[Endpoint],
    in_use_deadline: Instant,
) -> Result<Vec<(ListenerAddress, ListenReservation)>, String> {
    endpoints
        .iter()
        .map(|endpoint| {
            let address = endpoint
                .bind_address()
                .map_err(|error| format!("--listeners {error}"))?;
            let what = format!("Kafka listener {}", endpoint.name);
            let reservation = retry_while_in_use(address, &what, in_use_deadline, || {
                ListenReservation::new(address)
            })
            .map_err(|error| format!("cannot listen on {endpoint}: {error}"))?;
            let listener = ListenerAddress {
                name: endpoint.name.clone(),
                address: reservation.address(),
            };
            Ok((listener, reservation))
        })
        .collect()
}

/// Every listener's advertised address: the one given, else where it listens (which must then
/// be an address clients can connect to).
fn advertised_endpoints<R>(
    listeners: &[(ListenerAddress, R)],
    given: &[Endpoint],
) -> Result<Vec<Endpoint>, String> {
    listeners
        .iter()
        .map(|(listener, _)| {
            if let Some(endpoint) = given.iter().find(|endpoint| endpoint.name == listener.name) {
                return Ok(endpoint.clone());
            }
            if listener.address.ip().is_unspecified() {
                return Err(format!(
                    "listening on {} ({}) but clients cannot connect to that address; say \
                     where they can with --advertised-listeners {}://HOST:PORT (or --advertise \
                     HOST:PORT for --listen)",
                    listener.address, listener.name, listener.name
                ));
            }
            Ok(Endpoint {
                name: listener.name.clone(),
                host: listener.address.ip().to_string(),
                port: listener.address.port(),
            })
        })
        .collect()
}

/// What the start-up line says of the listeners: the first one's address first (scripts and
/// tests read it there), then its name and advertised address, then each other listener's.
fn listening_note<R>(listeners: &[(ListenerAddress, R)], advertised: &[Endpoint]) -> String {
    let describe = |(listener, _): &(ListenerAddress, R), endpoint: &Endpoint| {
        let host = match endpoint.host.contains(':') {
            true => format!("[{}]", endpoint.host),
            false => endpoint.host.clone(),
        };
        format!(
            "{} (Kafka {}, advertised as {host}:{})",
            listener.address, listener.name, endpoint.port
        )
    };
    let mut described = listeners
        .iter()
        .zip(advertised)
        .map(|(listener, endpoint)| describe(listener, endpoint));
    let first = described.next().unwrap_or_default();
    let others: Vec<String> = described.collect();
    if others.is_empty() {
        first
    } else {
        format!("{first}, and on {}", others.join(", "))
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
}
