//! Connection handover: a connection whose partition requests nearly all go to one other shard
//! moves to that shard, so that they stop crossing the mesh.
//!
//! Why: every shard accepts on the Kafka port (SO_REUSEPORT), so the kernel puts each
//! connection on an arbitrary shard, and a produce or fetch for a partition another shard owns
//! crosses the mesh there and back: a message, a wake-up of the owner, the answer's trip back.
//! One producer to one partition at 20 MiB/s cost the broker ~1.1 cores when its connection sat
//! on the other shard of two and ~0.6 on the owner (issue 16); which one was the kernel's coin
//! flip, so the same benchmark's p99 swung between ~2 ms and 20+ ms from run to run.
//!
//! The rule ([`HandoverRule`], per connection, [`Routing`]): the shards owning the partitions
//! of its data requests (a produce request's batches, a fetch's partitions; not group, offset
//! or metadata requests) are counted in windows of `window_partitions`; when at least
//! `to_one_shard_min` of a window (that share of a window one request of many partitions
//! overfilled) went to one other shard, and the connection has not moved (nor tried to) for
//! `interval_min`, it moves there. A connection whose partitions spread over
//! the shards stays where it is, and one cannot move more often than once per `interval_min`,
//! nor move back unless its traffic changed.
//!
//! How it moves, at a request boundary (`connection.rs`): the reader stops starting requests;
//! the connection's long polls are answered at once with what they have ([`Draining`]), as at
//! shutdown; once every request it started was answered and its reply written, the socket, the
//! bytes read but not yet started, the connection's limits slot, its idle clock and its security
//! (listener, principal, SASL authentication) ([`Carried`])
//! go to the other shard over the mesh ([`hand_over`]), which serves the connection from then
//! on (`connection::adopt`). Requests are started in order on one shard, then in order on the other,
//! none twice: their replies leave in order, and a partition's appends keep the order they were
//! sent in (those before the move were answered, so assigned, before any after it starts). A
//! drain longer than `drain_max` (a JoinGroup waiting for a rebalance) gives the move up.
//!
//! The socket travels as a duplicate of its descriptor: glommio's stream cannot give its own
//! away. Its reads and writes are non-blocking system calls and io_uring only polls it for
//! readiness, so dropping the old stream once the duplicate is on its way (which cancels those
//! polls; nothing was being read or written) takes no bytes from the connection. If the
//! descriptor cannot be duplicated (EMFILE) or the other shard cannot be reached (shutdown),
//! the connection stays where it is.

use std::cell::Cell;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use engine::log_rate_limited;
use engine::shard::{PartitionId, ShardContext};
use engine::waiters::Waiters;
use glommio::net::TcpStream;
use kafka_protocol::messages::RequestKind;

use crate::connection_limits::ConnectionSlot;
use crate::listener::ConnectionSecurity;

/// When a connection moves to another shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandoverRule {
    /// Partitions of data requests (a produce request's batches, a fetch's partitions) judged
    /// together.
    pub window_partitions: u32,
    /// Of a window, how many must be owned by one other shard for the connection to move
    /// there.
    pub to_one_shard_min: u32,
    /// The least time between two moves (or attempts) of one connection.
    pub interval_min: Duration,
    /// The longest a move waits for the connection's requests in flight to be answered; past
    /// it the move is given up and the connection carries on where it is.
    pub drain_max: Duration,
}

impl Default for HandoverRule {
    /// 30 of 32: a librdkafka producer to one partition at linger.ms=0 sends a request per
    /// batch, so it moves within its first few milliseconds; a client whose partitions spread
    /// over two shards never comes near. 10 s between moves bounds what a client whose traffic
    /// keeps changing sides costs (a drain each time). 1 s of drain covers an acks=all commit
    /// of a loaded cluster many times over.
    fn default() -> Self {
        HandoverRule {
            window_partitions: 32,
            to_one_shard_min: 30,
            interval_min: Duration::from_secs(10),
            drain_max: Duration::from_secs(1),
        }
    }
}

/// Where one connection's recent data requests went, on the shard serving it now.
pub struct Routing {
    /// `None`: handover is off (or there is no other shard).
    rule: Option<HandoverRule>,
    shard_here: usize,
    /// Partitions of the current window, by owning shard.
    owners: Vec<u32>,
    counted: u32,
    /// When the connection last moved or tried to.
    moved_at: Option<Instant>,
    draining: Rc<Draining>,
}

impl Routing {
    /// A connection served by `context`'s shard, which last moved (or tried to) at `moved_at`.
    pub fn new(
        rule: Option<HandoverRule>,
        context: &ShardContext,
        moved_at: Option<Instant>,
    ) -> Routing {
        let shard_count = context.shard_count();
        Routing {
            rule: rule.filter(|_| shard_count > 1),
            shard_here: context.shard_id(),
            owners: vec![0; shard_count],
            counted: 0,
            moved_at,
            draining: Rc::default(),
        }
    }

    /// Counts a data request's partition (`partition` of `topic`) by its owning shard.
    fn count(&mut self, context: &ShardContext, topic: &str, partition: i32) {
        // A negative index names no partition; the request is refused, and counts nowhere.
        let Ok(partition) = u32::try_from(partition) else {
            return;
        };
        let owner = context.owner_of(&PartitionId::new(topic, partition));
        self.owners[owner] += 1;
        self.counted += 1;
    }

    /// Counts the partitions of `body` if it is a data request (Produce, Fetch).
    pub fn count_request(&mut self, context: &ShardContext, body: &RequestKind) {
        if self.rule.is_none() {
            return;
        }
        match body {
            RequestKind::Produce(produce) => {
                for topic in &produce.topic_data {
                    for partition in &topic.partition_data {
                        self.count(context, &topic.name.0, partition.index);
                    }
                }
            }
            RequestKind::Fetch(fetch) => {
                for topic in &fetch.topics {
                    for partition in &topic.partitions {
                        self.count(context, &topic.topic.0, partition.partition);
                    }
                }
            }
            _ => {}
        }
    }

    /// The shard to move to, if the window just completed says so; a window is judged once.
    /// Counts the move as made (`now`), so a move given up waits `interval_min` as well.
    pub fn destination(&mut self, now: Instant) -> Option<usize> {
        let rule = self.rule?;
        if self.counted < rule.window_partitions {
            return None;
        }
        let counted = self.counted;
        let (shard, &count) = self
            .owners
            .iter()
            .enumerate()
            .max_by_key(|(_, count)| **count)
            .expect("a broker has at least one shard");
        self.owners.fill(0);
        self.counted = 0;
        let recently = self
            .moved_at
            .is_some_and(|moved_at| now.saturating_duration_since(moved_at) < rule.interval_min);
        // A request of many partitions can fill a window past its size: the share is what
        // counts.
        let nearly_all = u64::from(count) * u64::from(rule.window_partitions)
            >= u64::from(rule.to_one_shard_min) * u64::from(counted);
        if shard == self.shard_here || !nearly_all || recently {
            return None;
        }
        self.moved_at = Some(now);
        Some(shard)
    }

    /// The longest a move waits for the connection's requests in flight.
    pub fn drain_max(&self) -> Duration {
        self.rule.map_or(Duration::ZERO, |rule| rule.drain_max)
    }

    pub fn moved_at(&self) -> Option<Instant> {
        self.moved_at
    }

    /// What the connection's long polls watch.
    pub fn draining(&self) -> Rc<Draining> {
        self.draining.clone()
    }
}

/// Tells a connection's long polls to answer now with what they have: the connection is about
/// to move, and moves only once every request it started has been answered.
#[derive(Default)]
pub struct Draining {
    started: Cell<bool>,
    waiters: Waiters,
}

impl Draining {
    pub fn is_started(&self) -> bool {
        self.started.get()
    }

    /// Resolves once a drain starts (at once if one is under way).
    pub async fn started(&self) {
        self.waiters.until(|| self.started.get()).await
    }

    pub fn start(&self) {
        self.started.set(true);
        self.waiters.wake_all();
    }

    /// The move was given up: long polls wait as usual again.
    pub fn stop(&self) {
        self.started.set(false);
    }
}

/// What travels with a connection's socket from shard to shard.
pub struct Carried {
    pub peer: SocketAddr,
    /// The connection's place in the broker's connection limits (shared by every shard).
    pub slot: ConnectionSlot,
    /// Its listener and principal.
    pub security: ConnectionSecurity,
    /// Bytes read from the socket and not yet started as requests: the rest of a frame, or
    /// whole frames read together with the last one started.
    pub unread: BytesMut,
    /// When the connection last read or wrote a byte (its idle clock).
    pub last_activity: Instant,
    /// When it last moved or tried to.
    pub moved_at: Option<Instant>,
}

impl Carried {
    /// A connection just accepted from `peer`: nothing read yet, never moved.
    pub fn accepted(
        peer: SocketAddr,
        slot: ConnectionSlot,
        security: ConnectionSecurity,
    ) -> Carried {
        Carried {
            peer,
            slot,
            security,
            unread: BytesMut::new(),
            last_activity: Instant::now(),
            moved_at: None,
        }
    }
}

/// A connection on its way to another shard.
struct Moving {
    /// A duplicate of the socket's descriptor, the only one left once the sender dropped its
    /// stream.
    socket: OwnedFd,
    carried: Carried,
}

/// Hands the connection (`stream`, with what it `carried`) to shard `to`. Every request it
/// started must have been answered and written, and nothing read since. Gives both back when it
/// cannot: the descriptor could not be duplicated (EMFILE, ENFILE), or `to` cannot be reached
/// (shutdown).
pub async fn hand_over(
    context: &ShardContext,
    to: usize,
    stream: TcpStream,
    carried: Carried,
) -> Result<(), (TcpStream, Carried)> {
    // SAFETY: `stream` owns the descriptor and outlives this borrow.
    let socket = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    let socket = match socket.try_clone_to_owned() {
        Ok(socket) => socket,
        Err(error) => {
            log_rate_limited!(
                "ferrite: the connection from {} stays on shard {}: duplicating its socket \
                 to hand it to shard {to} failed: {error}",
                carried.peer,
                context.shard_id()
            );
            return Err((stream, carried));
        }
    };
    let moving = Moving { socket, carried };
    let handed_over = context.hand_over(to, moving, |context, moving: Moving| {
        // SAFETY: the descriptor is a socket's, duplicated for this handover; nothing else
        // owns it.
        let stream = unsafe { TcpStream::from_raw_fd(moving.socket.into_raw_fd()) };
        crate::connection::adopt(context, stream, moving.carried);
    });
    match handed_over.await {
        // The duplicate is on its way: this shard's stream goes (no read or write of it is
        // under way; dropping it cancels its readiness polls and closes its descriptor only).
        Ok(()) => Ok(()),
        // Dropping the duplicate closes it alone; `stream` still holds the socket.
        Err(moving) => Err((stream, moving.carried)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(rule: HandoverRule, here: usize, owners: &[u32]) -> Routing {
        let counted = owners.iter().sum();
        Routing {
            rule: Some(rule),
            shard_here: here,
            owners: owners.to_vec(),
            counted,
            moved_at: None,
            draining: Default::default(),
        }
    }

    #[test]
    fn a_connection_moves_only_when_nearly_all_of_a_window_went_to_one_other_shard() {
        let rule = HandoverRule::default();
        let now = Instant::now();
        assert_eq!(window(rule, 0, &[0, 32]).destination(now), Some(1));
        assert_eq!(window(rule, 0, &[2, 30]).destination(now), Some(1));
        assert_eq!(window(rule, 0, &[3, 29]).destination(now), None, "spread");
        assert_eq!(window(rule, 0, &[16, 16]).destination(now), None, "spread");
        assert_eq!(
            window(rule, 1, &[0, 32]).destination(now),
            None,
            "here already"
        );
        assert_eq!(
            window(rule, 0, &[0, 20]).destination(now),
            None,
            "window not full"
        );
        assert_eq!(window(rule, 2, &[1, 31, 0]).destination(now), Some(1));
        // One request of many partitions: the share decides, not the count.
        assert_eq!(window(rule, 0, &[400, 600]).destination(now), None);
        assert_eq!(window(rule, 0, &[10, 990]).destination(now), Some(1));
    }

    #[test]
    fn a_connection_moves_at_most_once_per_interval_and_each_window_is_judged_once() {
        let rule = HandoverRule::default();
        let start = Instant::now();
        let mut routing = window(rule, 0, &[0, 32]);
        assert_eq!(routing.destination(start), Some(1));
        assert_eq!(routing.destination(start), None, "the window was judged");
        // Back on shard 0 (say the move was given up): the traffic still says shard 1.
        routing.owners = vec![0, 32];
        routing.counted = 32;
        assert_eq!(routing.destination(start + rule.interval_min / 2), None);
        routing.owners = vec![0, 32];
        routing.counted = 32;
        assert_eq!(routing.destination(start + rule.interval_min), Some(1));
    }
}
