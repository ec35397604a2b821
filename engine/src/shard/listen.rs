//! Listening sockets that every shard of a broker binds at the same address (SO_REUSEPORT: the
//! kernel spreads incoming connections over the shards). Both listeners of a broker work this
//! way, the Kafka listener (`net`) and the inter-broker listener (`replication`), so the socket
//! options and the start-up reservation live here, beside the shard runtime that defines what a
//! shard is, rather than twice.

use std::net::SocketAddr;

use glommio::net::TcpListener;

/// Binds one shard's listener: SO_REUSEPORT, so every shard binds the same address, and
/// SO_REUSEADDR, which accepted connections inherit, so that a restarted broker can bind again
/// at once although its old connections linger in TIME-WAIT (as Kafka's acceptor does;
/// glommio's own `bind` sets only the first).
pub fn bind(listen: SocketAddr) -> std::io::Result<TcpListener> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let socket = reusable_socket(listen)?;
    socket.set_reuse_port(true)?;
    socket.bind(&listen.into())?;
    socket.listen(1024)?;
    // SAFETY: a listening socket we own, handed over whole to glommio.
    Ok(unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) })
}

/// A TCP socket for `listen`'s address family with SO_REUSEADDR set (before any bind, as std's
/// `TcpListener::bind` does): a restarted broker's old connections in TIME-WAIT must not keep
/// it from its port.
fn reusable_socket(listen: SocketAddr) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if listen.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    Ok(socket)
}

/// A listen address held for the shards until they have bound it. Binding first without
/// SO_REUSEPORT makes a port someone else holds a clear start-up error (and resolves port 0 to
/// a free port); SO_REUSEPORT is set only afterwards, so the shards' sockets can join it. The
/// socket never listens, so it takes no connections; while it exists the kernel does not hand
/// the port out to anyone binding port 0 (a probe dropped before the shards bound let a
/// parallel test's broker take the port in between).
pub struct ListenReservation {
    socket: socket2::Socket,
    address: SocketAddr,
}

impl ListenReservation {
    pub fn new(listen: SocketAddr) -> std::io::Result<ListenReservation> {
        let socket = reusable_socket(listen)?;
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
