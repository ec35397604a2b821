//! Listening sockets that every shard of a broker binds at the same address (SO_REUSEPORT: the
//! kernel spreads incoming connections over the shards). Both listeners of a broker work this
//! way, the Kafka listener (`net`) and the inter-broker listener (`replication`), so the socket
//! options and the start-up reservation live here, beside the shard runtime that defines what a
//! shard is, rather than twice.
//!
//! A broker restarted at once after SIGKILL finds its own listening sockets still there: the
//! kernel tears a dead process's io_uring instances down asynchronously, after the process is
//! reaped, and the listeners stay in LISTEN, owned by no process, until the accepts pending on
//! them are cancelled (`ss -ltn` shows them for 10-20 ms on an idle machine, longer under
//! load; the metrics listener, which no ring holds, is gone at once). A fresh socket cannot
//! bind a port a LISTEN socket holds, SO_REUSEADDR or not, and joining their SO_REUSEPORT group
//! instead would also join a live broker of the same user on that port. So start-up binds
//! with [`retry_while_in_use`]: a bounded wait, said on stderr, instead of an exit.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

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

/// How long start-up waits for a listen address in use to become free: far longer than a
/// killed predecessor's sockets linger, short enough that a port another process really holds
/// is still a start-up error soon.
pub const IN_USE_WAIT: Duration = Duration::from_secs(5);

/// How often a bind in use is tried again.
const IN_USE_RETRY_INTERVAL: Duration = Duration::from_millis(10);

/// Runs `bind` until it succeeds, fails for another reason than the address being in use, or
/// `deadline` passes; says once on stderr that it waits, for `address` (`what` names the
/// listener). Blocks the calling thread: for start-up, before the shards run.
pub fn retry_while_in_use<T>(
    address: SocketAddr,
    what: &str,
    deadline: Instant,
    mut bind: impl FnMut() -> std::io::Result<T>,
) -> std::io::Result<T> {
    let mut said = false;
    loop {
        match bind() {
            Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => {
                let now = Instant::now();
                if now >= deadline {
                    return Err(std::io::Error::new(
                        error.kind(),
                        format!("{error}, still after waiting for it"),
                    ));
                }
                if !std::mem::replace(&mut said, true) {
                    eprintln!(
                        "ferrite: {address} ({what}) is in use; waiting up to {} s for it to be \
                         free (a broker killed a moment ago holds its listening sockets until \
                         the kernel has torn down its io_uring instances)",
                        deadline.saturating_duration_since(now).as_secs_f32().ceil()
                    );
                }
                std::thread::sleep(IN_USE_RETRY_INTERVAL.min(deadline - now));
            }
            outcome => return outcome,
        }
    }
}

/// How an accept loop (the Kafka listener's, the inter-broker listener's) paces itself after a
/// failed accept. Out of descriptors (EMFILE, ENFILE) or kernel memory (ENOBUFS, ENOMEM), the
/// connection stays in the listen backlog and the next accept fails at once the same way: a
/// loop that retries at once spins a core (and, logging each failure, filled disks). So it
/// pauses, from [`ACCEPT_PAUSE_MIN`] doubling to [`ACCEPT_PAUSE_MAX`], until an accept works;
/// the connections already open are served meanwhile, and the ones waiting in the backlog are
/// taken once descriptors are free again. Other failures (a connection reset before it was
/// accepted) concern one connection: the loop goes on at once.
#[derive(Debug)]
pub struct AcceptPacing {
    pause: Duration,
}

pub const ACCEPT_PAUSE_MIN: Duration = Duration::from_millis(10);
pub const ACCEPT_PAUSE_MAX: Duration = Duration::from_secs(1);

impl Default for AcceptPacing {
    fn default() -> Self {
        AcceptPacing {
            pause: ACCEPT_PAUSE_MIN,
        }
    }
}

impl AcceptPacing {
    /// An accept worked: the next shortage starts with the shortest pause again.
    pub fn accepted(&mut self) {
        self.pause = ACCEPT_PAUSE_MIN;
    }

    /// An accept failed with `error`: how long to pause before the next one, `None` for at
    /// once.
    pub fn failed<T>(&mut self, error: &glommio::GlommioError<T>) -> Option<Duration> {
        let source = match error {
            glommio::GlommioError::IoError(source)
            | glommio::GlommioError::EnhancedIoError { source, .. } => source,
            _ => return None,
        };
        let starved = matches!(
            source.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
        );
        starved.then(|| {
            let pause = self.pause;
            self.pause = (self.pause * 2).min(ACCEPT_PAUSE_MAX);
            pause
        })
    }
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
    fn a_bind_waits_while_the_address_is_in_use_and_no_longer() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = taken.local_addr().unwrap();
        let freed = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(taken);
        });
        let deadline = Instant::now() + IN_USE_WAIT;
        let reservation = retry_while_in_use(address, "test", deadline, || {
            ListenReservation::new(address)
        })
        .expect("bound once the holder let go");
        assert_eq!(reservation.address(), address);
        freed.join().unwrap();

        drop(reservation);
        let listening = std::net::TcpListener::bind(address).unwrap();
        let started = Instant::now();
        let error = retry_while_in_use(
            address,
            "test",
            started + Duration::from_millis(100),
            || ListenReservation::new(address),
        )
        .unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse);
        assert!(error.to_string().contains("still after waiting"), "{error}");
        assert!(
            started.elapsed() < IN_USE_WAIT,
            "the deadline given, not the default"
        );
        drop(listening);
    }

    #[test]
    fn accepts_pause_longer_while_descriptors_run_out_and_not_for_other_failures() {
        let starved = || {
            glommio::GlommioError::<()>::IoError(std::io::Error::from_raw_os_error(libc::EMFILE))
        };
        let mut pacing = AcceptPacing::default();
        let pauses: Vec<Duration> = (0..10).filter_map(|_| pacing.failed(&starved())).collect();
        assert_eq!(pauses.len(), 10);
        assert_eq!(pauses[0], ACCEPT_PAUSE_MIN);
        assert_eq!(pauses[1], ACCEPT_PAUSE_MIN * 2);
        assert_eq!(pauses[9], ACCEPT_PAUSE_MAX);
        let reset = glommio::GlommioError::<()>::IoError(std::io::Error::from_raw_os_error(
            libc::ECONNABORTED,
        ));
        assert_eq!(
            pacing.failed(&reset),
            None,
            "one connection's failure: no pause"
        );
        pacing.accepted();
        assert_eq!(pacing.failed(&starved()), Some(ACCEPT_PAUSE_MIN));
    }

    #[test]
    fn a_port_someone_listens_on_cannot_be_reserved() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let error = ListenReservation::new(taken.local_addr().unwrap()).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse);
    }
}
