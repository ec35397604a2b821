//! The Kafka listeners of one shard. Every shard binds every listener's address
//! (`crate::listener`: PLAINTEXT, SSL, …; `engine::shard::listen::bind` sets SO_REUSEPORT, and
//! SO_REUSEADDR so a restarted broker binds at once while its old connections linger in
//! TIME-WAIT), so the kernel spreads connections over
//! the shards; each connection is served on the shard that accepted it, unless its data requests go
//! to another shard, which it then moves to (`crate::handover`; each shard serves those handed to
//! it; a TLS connection, after its handshake in the accept loop, stays where it was accepted).
//! The accept loop ends when shutdown is requested, which is how the broker stops accepting
//! before it drains. It holds to the broker's connection limits ([`ConnectionLimits`]: at
//! `max.connections` it stops accepting until a connection closes, over `max.connections.per.ip` it
//! closes the new connection, as Kafka's acceptor does) and pauses while descriptors run out
//! ([`AcceptPacing`]). Beside it, each shard publishes a snapshot of the state it owns for the
//! metrics endpoint.
//!
//! [`serve_shard`] is the one place `ferrite serve` and the test harness start a shard, from the
//! shared [`ShardSetup`]. At `max.connections` the acceptor looks again for a free slot every 10
//! ms. The snapshot (the open partitions' offsets, sizes, health and damage, the commit cycle's
//! `CommitStats`, the replicas' `ReplicationStats`, the loaded groups) is published every `metrics_snapshot_interval`
//! (1 s in `ferrite serve`).

use std::net::SocketAddr;

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use engine::acls::Acls;
use engine::catalog::Catalog;
use engine::credentials::Credentials;
use engine::log_rate_limited;
use engine::shard::listen::{bind, AcceptPacing};
use engine::shard::ShardContext;
use ferrite_replication::cluster::ShardCluster;

use futures::future::{select, Either};
use glommio::net::TcpListener;

use crate::broker::{Broker, BrokerConfig};
use crate::cluster::Cluster;
use crate::connection::{
    adopt_handed_over, serve_connection, serve_tls_connection, ConnectionConfig,
};
use crate::connection_limits::{ConnectionLimits, ConnectionSlot, Refusal};
use crate::groups::shard::{LocalOffsetsLog, OffsetsLog, ReplicatedOffsetsLog, ShardGroups};
use crate::listener::{ConnectionSecurity, ListenerAddress, ListenerName};
use crate::metrics::{MetricsRegistry, ShardSnapshot};
use crate::quotas::QuotaUsage;
use crate::tls::{principal_of, TlsServer};
use crate::transactions::{ShardTransactions, TransactionsConfig};

/// What every shard's broker is built from.
#[derive(Clone)]
pub struct ShardSetup {
    pub catalog: Arc<Catalog>,
    /// The users' SCRAM credentials (the data directory's, or the cluster image's).
    pub credentials: Arc<Credentials>,
    /// The client quotas and their usage, shared by every shard.
    pub quotas: Arc<QuotaUsage>,
    /// The ACLs (the data directory's, or the cluster image's).
    pub acls: Arc<Acls>,
    pub broker: BrokerConfig,
    pub metrics: MetricsRegistry,
    /// How often each shard publishes its [`ShardSnapshot`] (how stale the partition metrics
    /// may be).
    pub metrics_snapshot_interval: Duration,
    /// The listeners every shard binds, each at an address reserved for it.
    pub listeners: Vec<ListenerAddress>,
    /// What the SSL and SASL_SSL listeners handshake with (required when there is one).
    pub tls: Option<Arc<TlsServer>>,
    pub connection: ConnectionConfig,
    /// `max.connections` and `max.connections.per.ip`, shared by every shard.
    pub limits: Arc<ConnectionLimits>,
    /// The transaction coordinators' settings.
    pub transactions: TransactionsConfig,
}

/// How often a shard at `max.connections` looks again whether a connection closed (on any
/// shard: a close on another thread wakes nothing here).
const SLOT_RECHECK_INTERVAL: Duration = Duration::from_millis(10);

/// One shard's part of the broker: builds its [`Broker`] (one of a cluster when `cluster` is
/// given; `groups`, the shard's group coordinators, started first), binds every one of
/// `setup.listeners`, says how that went through `bound` (the caller prints "listening" only once
/// every shard has bound), then serves connections on each until shutdown is requested. Returns
/// at once if a bind failed.
pub async fn serve_shard(
    context: ShardContext,
    setup: ShardSetup,
    cluster: Option<Rc<ShardCluster>>,
    groups: Rc<ShardGroups>,
    bound: impl FnOnce(std::io::Result<()>),
) {
    let metrics = setup.metrics.shard(context.shard_id());
    // Their records go where the groups' do: the shard's log, or the partition's replica.
    let state_log: Rc<dyn OffsetsLog> = match &cluster {
        Some(_) => Rc::new(ReplicatedOffsetsLog),
        None => Rc::new(LocalOffsetsLog),
    };
    let transactions = ShardTransactions::start(&context, setup.transactions, state_log);
    let broker = Broker::new(
        context,
        setup.catalog,
        setup.credentials,
        setup.quotas,
        setup.acls,
        setup.broker,
        metrics,
        cluster,
        groups,
        transactions,
    );
    adopt_handed_over(&broker, setup.connection);
    let sockets = setup
        .listeners
        .iter()
        .map(|listener| {
            bind(listener.address).map_err(|error| {
                std::io::Error::new(
                    error.kind(),
                    format!("listener {}, {}: {error}", listener.name, listener.address),
                )
            })
        })
        .collect::<std::io::Result<Vec<_>>>();
    let sockets = match sockets {
        Ok(sockets) => sockets,
        Err(error) => return bound(Err(error)),
    };
    bound(Ok(()));
    glommio::spawn_local(publish_snapshots(
        broker.clone(),
        setup.metrics_snapshot_interval,
    ))
    .detach();
    let accepting = setup
        .listeners
        .iter()
        .zip(sockets)
        .map(|(listener, socket)| {
            let tls = match listener.name.protocol().uses_tls() {
                true => setup.tls.clone(),
                false => None,
            };
            accept_until_shutdown(
                broker.clone(),
                socket,
                listener.name.clone(),
                tls,
                setup.connection,
                setup.limits.clone(),
            )
        });
    futures::future::join_all(accepting).await;
}

/// Accepts connections on `listener`, the socket of the listener named `name`, until shutdown
/// is requested, serving each on this shard within `limits` (after a TLS handshake with `tls`
/// when given).
async fn accept_until_shutdown(
    broker: Rc<Broker>,
    listener: TcpListener,
    name: ListenerName,
    tls: Option<Arc<TlsServer>>,
    config: ConnectionConfig,
    limits: Arc<ConnectionLimits>,
) {
    let mut pacing = AcceptPacing::default();
    loop {
        let Some(accepted) = unless_shutdown(&broker, listener.accept()).await else {
            return;
        };
        let stream = match accepted {
            Ok(stream) => {
                pacing.accepted();
                stream
            }
            Err(error) => {
                broker.metrics.accept_failed();
                match pacing.failed(&error) {
                    Some(pause) => {
                        log_rate_limited!(
                            "ferrite: accepting a connection failed: {error}; accepting again in \
                             {} ms, open connections are still served",
                            pause.as_millis()
                        );
                        if unless_shutdown(&broker, glommio::timer::sleep(pause))
                            .await
                            .is_none()
                        {
                            return;
                        }
                    }
                    None => log_rate_limited!("ferrite: accepting a connection failed: {error}"),
                }
                continue;
            }
        };
        let Ok(peer) = stream.peer_addr() else {
            continue;
        };
        let Some(admitted) = admit(&broker, &limits, peer).await else {
            return;
        };
        // Refused: dropping the stream closes it.
        let Some(slot) = admitted else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let security = ConnectionSecurity::anonymous(name.clone());
        match &tls {
            None => glommio::spawn_local(serve_connection(
                stream,
                peer,
                security,
                broker.clone(),
                config,
                slot,
            ))
            .detach(),
            Some(tls) => glommio::spawn_local(handshake_then_serve(
                tls.acceptor(),
                stream,
                peer,
                security,
                broker.clone(),
                config,
                slot,
            ))
            .detach(),
        };
    }
}

/// Longest a TLS handshake may take before the connection is closed: a client that connects and
/// says nothing holds a connection slot only this long.
const TLS_HANDSHAKE_MAX: Duration = Duration::from_secs(10);

/// Makes the TLS handshake on `stream` (a connection slot held meanwhile), then serves the
/// connection as the client certificate's principal, if it gave one. A failed handshake (a
/// plaintext client, an untrusted or missing certificate where one is required, a timeout)
/// closes the connection with a rate-limited log line.
async fn handshake_then_serve(
    acceptor: futures_rustls::TlsAcceptor,
    stream: glommio::net::TcpStream,
    peer: SocketAddr,
    mut security: ConnectionSecurity,
    broker: Rc<Broker>,
    config: ConnectionConfig,
    slot: ConnectionSlot,
) {
    let handshake = std::pin::pin!(acceptor.accept(stream));
    let timeout = std::pin::pin!(glommio::timer::sleep(TLS_HANDSHAKE_MAX));
    let failure = match unless_shutdown(&broker, select(handshake, timeout)).await {
        None => return,
        Some(Either::Left((Ok(stream), _))) => {
            let certificate = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first());
            if let Some(principal) = certificate.and_then(|der| principal_of(der)) {
                security.principal = principal;
            }
            serve_tls_connection(stream, peer, security, broker, config, slot).await;
            return;
        }
        Some(Either::Left((Err(error), _))) => error.to_string(),
        Some(Either::Right(_)) => {
            format!("no TLS handshake within {} s", TLS_HANDSHAKE_MAX.as_secs())
        }
    };
    broker.metrics.tls_handshake_failed();
    log_rate_limited!(
        "ferrite: TLS handshake with {peer} on listener {} failed: {failure}",
        security.listener
    );
}

/// Counts the connection from `peer` against the broker's limits: waits while
/// `max.connections` are open (as Kafka's acceptor blocks), refuses it (`Some(None)`) if its
/// address has `max.connections.per.ip`. `None`: shutdown was requested meanwhile.
async fn admit(
    broker: &Broker,
    limits: &Arc<ConnectionLimits>,
    peer: SocketAddr,
) -> Option<Option<ConnectionSlot>> {
    let mut waited = false;
    loop {
        match limits.admit(peer.ip()) {
            Ok(slot) => {
                if waited {
                    broker.metrics.connection_delayed();
                }
                return Some(Some(slot));
            }
            Err(Refusal::AddressFull {
                connections_per_ip_max,
            }) => {
                broker.metrics.connection_refused();
                log_rate_limited!(
                    "ferrite: refusing the connection from {peer}: {connections_per_ip_max} \
                     connections from {} are open (--max-connections-per-ip)",
                    peer.ip()
                );
                return Some(None);
            }
            Err(Refusal::BrokerFull { connections_max }) => {
                if !std::mem::replace(&mut waited, true) {
                    log_rate_limited!(
                        "ferrite: {connections_max} client connections are open \
                         (--max-connections): accepting no more until one closes"
                    );
                }
                unless_shutdown(broker, glommio::timer::sleep(SLOT_RECHECK_INTERVAL)).await?;
            }
        }
    }
}

/// `future`'s output, or `None` if shutdown is requested first.
async fn unless_shutdown<F: std::future::Future>(broker: &Broker, future: F) -> Option<F::Output> {
    let future = std::pin::pin!(future);
    let shutdown = std::pin::pin!(broker.context.shutdown_requested());
    match select(future, shutdown).await {
        Either::Left((output, _)) => Some(output),
        Either::Right(((), _)) => None,
    }
}

/// Publishes this shard's [`ShardSnapshot`] for the metrics endpoint every `interval` until
/// shutdown is requested, and has the metrics forget topics that no longer exist.
async fn publish_snapshots(broker: Rc<Broker>, interval: Duration) {
    let publish = || {
        let snapshot = ShardSnapshot {
            partitions: broker.context.partition_stats(),
            groups: broker.groups.stats(),
            replication: broker
                .cluster
                .as_ref()
                .map(Cluster::replication_stats)
                .unwrap_or_default(),
            commit: broker.context.commit_stats(),
            mesh_requests_sent: broker.context.mesh_requests_sent(),
        };
        let topics = broker.catalog.topics();
        broker
            .metrics
            .publish(snapshot, |topic| topics.get(topic).is_some());
    };
    publish();
    broker
        .context
        .every(interval, || {
            publish();
            std::future::ready(())
        })
        .await
}
