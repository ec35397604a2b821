//! The inter-broker transport: how one shard of a broker talks to the other brokers.
//!
//! Each shard has a [`Transport`] of its own, with its own listener socket on the broker's RPC
//! address (every shard binds it with SO_REUSEPORT, as the Kafka listener does, and the kernel
//! spreads incoming connections over them) and one outbound connection to each peer broker, so
//! there is one connection per broker pair per shard in each direction and no state shared
//! between shards. Connections carry traffic one way: a shard writes on the connections it
//! opened and reads on those it accepted.
//!
//! Generic over the message type `M`: any rkyv-archivable type ([`WireMessage`]), validated on
//! receive before any field is trusted, with an optional raw payload beside it (record batches
//! travel as stored, never re-encoded). The framing is in [`frame`], the handshake that opens
//! each connection (who calls, and the proof that it holds the cluster's secret) in
//! [`handshake`], the secret, the proofs and the cluster id in [`peer_auth`].
//!
//! [`Transport::send`] never waits: a message is encoded and queued for its peer's writer task,
//! and a peer that is down or slow costs the oldest queued messages (counted), never memory
//! beyond the queue's bound nor a stalled caller. Raft is built for lost messages.
//!
//! Must be created and used on a glommio executor (it spawns its tasks there); it lives on that
//! thread. Its tasks run until [`Transport::close`] (or until it is dropped, which signals the
//! same without waiting).
//!
//! The listener's socket options and the start-up reservation of its address are
//! `engine::shard::listen`'s, shared with the Kafka listener, and its accept loop pauses while
//! descriptors or kernel memory run out (`AcceptPacing`), as the Kafka listener's does: retrying
//! at once would spin.

mod backoff;
pub mod frame;
pub mod handshake;
mod inbound;
mod lifecycle;
mod outbound;
pub mod peer_auth;

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use engine::shard::listen::bind;
use thiserror::Error;

pub use frame::{FrameError, WireMessage};
pub use inbound::{Handler, Received};
pub use lifecycle::TransportStats;

use frame::{FrameKind, FRAME_LENGTH_BYTES};
use lifecycle::Lifecycle;
use outbound::PeerQueue;
use peer_auth::{ClusterIdentity, ClusterSecret};

/// One shard's transport settings.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Connections from brokers of another cluster are refused (either side may not know the
    /// id yet: see `peer_auth`).
    pub cluster_id: ClusterIdentity,
    /// With a secret, every connection's peer must prove it holds it; without, any peer is
    /// believed.
    pub secret: Option<ClusterSecret>,
    /// This broker.
    pub node_id: u64,
    /// This shard of the broker (said in each hello, so receivers know the sending shard).
    pub shard: u32,
    /// The broker's RPC address; every shard binds it.
    pub listen: SocketAddr,
    /// Every broker of the cluster by node id (this one's entry, if any, is ignored).
    pub peers: BTreeMap<u64, SocketAddr>,
    /// Largest frame accepted or sent, counted after its length field.
    pub frame_bytes_max: usize,
    /// Messages queued per peer; beyond it the oldest are dropped.
    pub queue_frames_max: usize,
    /// Bytes queued per peer (frames whole); beyond it the oldest are dropped. At least one
    /// frame of `frame_bytes_max`.
    pub queue_bytes_max: usize,
    /// Queued frames are gathered into writes of up to this many bytes (a larger frame goes
    /// alone).
    pub write_coalesce_bytes_max: usize,
    /// Bytes read from a socket at a time.
    pub read_chunk_bytes: usize,
    pub connect_timeout: Duration,
    /// An outbound connection whose data the peer has not acknowledged for this long is
    /// broken and made anew (TCP_USER_TIMEOUT).
    pub unacknowledged_timeout: Duration,
    /// An inbound connection that has not said hello by then is closed.
    pub handshake_timeout: Duration,
    /// The first wait before reconnecting to a peer; it doubles per failure up to
    /// `backoff_max`, and starts over once a connection has lasted `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Inbound connections open at once; more are closed at once (each broker opens one per
    /// shard, so a few per peer broker is plenty).
    pub inbound_connections_max: usize,
    /// Seeds the reconnection jitter (with the peer's node id and this shard).
    pub jitter_seed: u64,
}

impl TransportConfig {
    /// The settings for shard `shard` of broker `node_id`, with the default bounds: frames
    /// of a 64 MiB batch plus its header, 4096 messages or 128 MiB queued per peer.
    pub fn new(
        cluster_id: impl Into<ClusterIdentity>,
        node_id: u64,
        shard: u32,
        listen: SocketAddr,
        peers: BTreeMap<u64, SocketAddr>,
    ) -> TransportConfig {
        TransportConfig {
            cluster_id: cluster_id.into(),
            secret: None,
            node_id,
            shard,
            listen,
            peers,
            frame_bytes_max: (64 << 20) + (1 << 20),
            queue_frames_max: 4096,
            queue_bytes_max: 128 << 20,
            write_coalesce_bytes_max: 1 << 20,
            read_chunk_bytes: 64 << 10,
            connect_timeout: Duration::from_secs(1),
            unacknowledged_timeout: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_secs(1),
            inbound_connections_max: 1024,
            jitter_seed: node_id,
        }
    }

    fn check(&self) -> Result<(), TransportError> {
        let problem = if self.frame_bytes_max > u32::MAX as usize {
            "frame_bytes_max must fit the 32-bit frame length"
        } else if self.queue_bytes_max < FRAME_LENGTH_BYTES + self.frame_bytes_max {
            "queue_bytes_max must hold a frame of frame_bytes_max"
        } else if self.queue_frames_max == 0 || self.read_chunk_bytes == 0 {
            "queue_frames_max and read_chunk_bytes must be positive"
        } else if self.backoff_min.is_zero() || self.backoff_min > self.backoff_max {
            "backoff_min must be positive and at most backoff_max"
        } else {
            return Ok(());
        };
        Err(TransportError::Config(problem))
    }
}

#[derive(Debug, Error)]
pub enum TransportError {
    #[error("invalid transport configuration: {0}")]
    Config(&'static str),
    #[error("cannot listen on {address}: {error}")]
    Bind {
        address: SocketAddr,
        error: std::io::Error,
    },
}

#[derive(Debug, Error)]
pub enum SendError {
    #[error("node {0} is not a peer of this broker")]
    UnknownPeer(u64),
    #[error("the transport is closed")]
    Closed,
    #[error("{0}")]
    Frame(#[from] FrameError),
}

/// One shard's transport; see the module documentation.
pub struct Transport<M> {
    local_address: SocketAddr,
    peers: BTreeMap<u64, Rc<PeerQueue>>,
    frame_bytes_max: usize,
    lifecycle: Rc<Lifecycle>,
    message: PhantomData<fn(M)>,
}

impl<M: WireMessage> Transport<M> {
    /// Binds `config.listen` and starts the listener and a writer per peer on the current
    /// executor. `handler` is called with every message received (see [`Handler`]).
    pub fn start(
        config: TransportConfig,
        handler: impl Fn(Received<M>) + 'static,
    ) -> Result<Transport<M>, TransportError> {
        config.check()?;
        let listener = bind(config.listen).map_err(|error| TransportError::Bind {
            address: config.listen,
            error,
        })?;
        let local_address = listener
            .local_addr()
            .map_err(|error| TransportError::Bind {
                address: config.listen,
                error: error.into(),
            })?;
        let config = Rc::new(config);
        let lifecycle = Lifecycle::new();
        let handler: Handler<M> = Rc::new(handler);
        lifecycle.spawn(inbound::accept_connections(
            listener,
            config.clone(),
            handler,
            lifecycle.clone(),
        ));
        let mut peers = BTreeMap::new();
        for (&node, &address) in config.peers.iter() {
            if node == config.node_id {
                continue;
            }
            let queue = Rc::new(PeerQueue::new(
                config.queue_frames_max,
                config.queue_bytes_max,
            ));
            lifecycle.spawn(outbound::drive_peer(
                node,
                address,
                queue.clone(),
                config.clone(),
                lifecycle.clone(),
            ));
            peers.insert(node, queue);
        }
        Ok(Transport {
            local_address,
            peers,
            frame_bytes_max: config.frame_bytes_max,
            lifecycle,
            message: PhantomData,
        })
    }

    /// Queues `message` with `payload` for broker `to_node` and returns at once. Delivery is
    /// not promised: the message is lost if the peer stays unreachable while newer messages
    /// push it out of the queue, or if the connection fails while it is being written.
    pub fn send(&self, to_node: u64, message: &M, payload: Bytes) -> Result<(), SendError> {
        if self.lifecycle.is_closed() {
            return Err(SendError::Closed);
        }
        let queue = self
            .peers
            .get(&to_node)
            .ok_or(SendError::UnknownPeer(to_node))?;
        let frame = frame::encode(FrameKind::Message, message, payload, self.frame_bytes_max)?;
        let dropped = queue.push(frame);
        if dropped > 0 {
            self.lifecycle
                .counters
                .update(|stats| stats.messages_dropped += dropped);
        }
        Ok(())
    }
}

impl<M> Transport<M> {
    /// The address the listener is bound to (with port 0 resolved).
    pub fn local_address(&self) -> SocketAddr {
        self.local_address
    }

    pub fn stats(&self) -> TransportStats {
        self.lifecycle.counters.get()
    }

    /// Stops listening, closes every connection and waits until every task of the transport
    /// has ended. Messages still queued are dropped. Later sends fail with
    /// [`SendError::Closed`].
    pub async fn close(&self) {
        self.lifecycle.signal_close();
        self.lifecycle.tasks_ended().await
    }
}

impl<M> Drop for Transport<M> {
    fn drop(&mut self) {
        self.lifecycle.signal_close();
    }
}
