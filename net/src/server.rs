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
use engine::shard::ShardContext;

use futures::future::{select, Either};
use glommio::net::TcpListener;

use crate::broker::{Broker, BrokerConfig};
use crate::connection::{serve_connection, ConnectionConfig};
use crate::metrics::{MetricsRegistry, ShardSnapshot};

/// Binds this shard's listener: SO_REUSEPORT, so every shard binds the same address, and
/// SO_REUSEADDR, which accepted connections inherit, so that a restarted broker can bind again
/// at once although its old connections linger in TIME-WAIT (as Kafka's acceptor does;
/// glommio's own `bind` sets only the first).
pub fn bind(listen: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::os::fd::{FromRawFd, IntoRawFd};
    let domain = if listen.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&listen.into())?;
    socket.listen(1024)?;
    // SAFETY: a listening socket we own, handed over whole to glommio.
    Ok(unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) })
}

/// A listen address held for the shards until they have bound it. Binding first without
/// SO_REUSEPORT (with SO_REUSEADDR, as every listener) makes a port someone else holds a clear
/// start-up error (and resolves port 0 to a free port); SO_REUSEPORT is set only afterwards, so the shards' sockets can join it. The
/// socket never listens, so it takes no connections; while it exists the kernel does not hand the
/// port out to anyone binding port 0 (a probe dropped before the shards bound let a parallel test's broker
/// take the port in between).
pub struct ListenReservation {
    socket: socket2::Socket,
    address: SocketAddr,
}

impl ListenReservation {
    pub fn new(listen: SocketAddr) -> std::io::Result<ListenReservation> {
        use socket2::{Domain, Protocol, Socket, Type};
        let domain = if listen.is_ipv6() {
            Domain::IPV6
        } else {
            Domain::IPV4
        };
        let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
        // SO_REUSEADDR before the bind, as std's `TcpListener::bind` does: a restarted broker's
        // old connections in TIME-WAIT must not keep it from its port.
        socket.set_reuse_address(true)?;
        socket.bind(&listen.into())?;
        socket.set_reuse_port(true)?;
        let address = socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| std::io::Error::other("the bound address is not an IP address"))?;
        Ok(ListenReservation { socket, address })
    }

    /// The reserved address, with port 0 resolved.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl std::fmt::Debug for ListenReservation {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ListenReservation")
            .field("address", &self.address)
            .field("fd", &std::os::fd::AsRawFd::as_raw_fd(&self.socket))
            .finish()
    }
}

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

/// One shard's part of the broker: builds its [`Broker`], binds `setup.listen`, says how that
/// went through `bound` (the caller prints "listening" only once every shard has bound), then
/// serves connections until shutdown is requested. Returns at once if the bind failed.
pub async fn serve_shard(
    context: ShardContext,
    setup: ShardSetup,
    bound: impl FnOnce(std::io::Result<()>),
) {
    let metrics = setup.metrics.shard(context.shard_id());
    let broker = Broker::new(context, setup.catalog, setup.broker, metrics);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A port whose last connection the server closed first (so it sits in TIME-WAIT, as after
    /// a broker is killed) can be reserved again at once.
    fn port_in_time_wait() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let mut client = std::net::TcpStream::connect(address).unwrap();
        let (server_side, _) = listener.accept().unwrap();
        drop(server_side);
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).unwrap();
        address
    }

    /// A bind with neither SO_REUSEADDR nor SO_REUSEPORT: succeeds only on a port nobody holds.
    fn plain_bind(address: SocketAddr) -> std::io::Result<()> {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        socket.bind(&address.into())
    }

    #[test]
    fn a_reserved_port_is_refused_to_others_and_shared_with_the_shards() {
        glommio::LocalExecutor::default().run(async {
            let reservation = ListenReservation::new(port_in_time_wait()).unwrap();
            let address = reservation.address();
            assert!(
                plain_bind(address).is_err(),
                "a reserved port is not free (the kernel hands out only free ones for port 0)"
            );
            let listener = bind(address).unwrap();
            let mut client = std::net::TcpStream::connect(address).unwrap();
            let mut accepted = listener.accept().await.unwrap();
            client.write_all(b"ping").unwrap();
            let mut received = [0u8; 4];
            futures::AsyncReadExt::read_exact(&mut accepted, &mut received)
                .await
                .unwrap();
            assert_eq!(&received, b"ping", "connections reach the shard's listener");
            drop(reservation);
            assert!(
                plain_bind(address).is_err(),
                "the shard's listener keeps the port after the reservation is gone"
            );
        });
    }

    #[test]
    fn a_port_someone_listens_on_cannot_be_reserved() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let error = ListenReservation::new(taken.local_addr().unwrap()).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse);
    }
}
