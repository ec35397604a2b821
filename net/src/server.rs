//! The Kafka listener of one shard. Every shard binds the same address (glommio sets
//! SO_REUSEPORT), so the kernel spreads connections over the shards; each connection is served
//! on the shard that accepted it. The accept loop ends when shutdown is requested, which is how
//! the broker stops accepting before it drains. Beside it, each shard publishes a snapshot of
//! the state it owns for the metrics endpoint.

use std::net::SocketAddr;

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use engine::catalog::Catalog;
use engine::shard::listen::bind;
use engine::shard::ShardContext;

use futures::future::{select, Either};
use glommio::net::TcpListener;

use crate::broker::{Broker, BrokerConfig};
use crate::cluster::ClusterView;
use crate::connection::{serve_connection, ConnectionConfig};
use crate::metrics::{MetricsRegistry, ShardSnapshot};

/// What every shard's broker is built from.
#[derive(Clone)]
pub struct ShardSetup {
    pub catalog: Arc<Catalog>,
    pub broker: BrokerConfig,
    pub metrics: MetricsRegistry,
    /// How often each shard publishes its [`ShardSnapshot`] (how stale the partition metrics
    /// may be).
    pub metrics_snapshot_interval: Duration,
    pub listen: SocketAddr,
    pub connection: ConnectionConfig,
}

/// One shard's part of the broker: builds its [`Broker`] (one of a cluster when `cluster` is
/// given), binds `setup.listen`, says how that
/// went through `bound` (the caller prints "listening" only once every shard has bound), then
/// serves connections until shutdown is requested. Returns at once if the bind failed.
pub async fn serve_shard(
    context: ShardContext,
    setup: ShardSetup,
    cluster: Option<Rc<dyn ClusterView>>,
    bound: impl FnOnce(std::io::Result<()>),
) {
    let metrics = setup.metrics.shard(context.shard_id());
    let broker = Broker::new(context, setup.catalog, setup.broker, metrics, cluster);
    match bind(setup.listen) {
        Ok(listener) => {
            bound(Ok(()));
            glommio::spawn_local(publish_snapshots(
                broker.clone(),
                setup.metrics_snapshot_interval,
            ))
            .detach();
            accept_until_shutdown(broker, listener, setup.connection).await
        }
        Err(error) => bound(Err(error)),
    }
}

/// Accepts connections on `listener` until shutdown is requested, serving each on this shard.
pub async fn accept_until_shutdown(
    broker: Rc<Broker>,
    listener: TcpListener,
    config: ConnectionConfig,
) {
    loop {
        let accepted = {
            let accept = std::pin::pin!(listener.accept());
            let shutdown = std::pin::pin!(broker.context.shutdown_requested());
            match select(accept, shutdown).await {
                Either::Left((accepted, _)) => accepted,
                Either::Right(((), _)) => return,
            }
        };
        let stream = match accepted {
            Ok(stream) => stream,
            Err(error) => {
                // Out of descriptors and the like: say so, keep accepting.
                eprintln!("ferrite: accepting a connection failed: {error}");
                continue;
            }
        };
        let peer = match stream.peer_addr() {
            Ok(peer) => peer,
            Err(_) => continue,
        };
        let _ = stream.set_nodelay(true);
        glommio::spawn_local(serve_connection(stream, peer, broker.clone(), config)).detach();
    }
}

/// Publishes this shard's [`ShardSnapshot`] for the metrics endpoint every `interval` until
/// shutdown is requested, and has the metrics forget topics that no longer exist.
async fn publish_snapshots(broker: Rc<Broker>, interval: Duration) {
    let publish = || {
        let snapshot = ShardSnapshot {
            partitions: broker.context.partition_stats(),
            groups: broker.context.group_stats(),
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
