//! The shard's listener and the connections peers opened to it. Each connection must begin with
//! the handshake (`handshake`, all of it within `handshake_timeout`): a hello of our cluster
//! and protocol version from a node of our `--peers`, coming from that node's configured
//! address, answered with our challenge, then the peer's proof that it holds the cluster's
//! secret (when one is configured). Only then is a message read: every frame after it is one,
//! validated and handed to the handler with who sent it. A connection is read by
//! one task, so its messages reach the handler in the order they were sent.
//!
//! Anything wrong (a bad length, kind, header or hello, a frame cut short) closes that
//! connection only, with one log line saying why (rate-limited, as every line a peer can cause
//! over and over); the listener and every other connection
//! carry on, and the sender reconnects with back-off.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use engine::log_rate_limited;
use engine::shard::listen::AcceptPacing;
use futures::future::{select, Either};
use futures::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use rkyv::util::AlignedVec;

use super::frame::{self, Frame, FrameError, FrameKind, WireMessage};
use super::handshake::{self, HandshakeError, Hello, Own};
use super::lifecycle::Lifecycle;
use super::peer_auth::new_nonce;
use super::TransportConfig;

/// A message from a peer, as handed to the transport's handler.
#[derive(Debug, Clone, PartialEq)]
pub struct Received<M> {
    /// The broker that sent it (its hello's node id).
    pub from_node: u64,
    /// The sending broker's shard whose connection carried it.
    pub from_shard: u32,
    pub message: M,
    /// The frame's raw bytes after the header (record batches), empty if none were sent.
    pub payload: Bytes,
}

/// What the transport calls for every message received, on the shard's thread, in each
/// connection's order. It must not block; work that waits belongs in a task of its own.
pub type Handler<M> = Rc<dyn Fn(Received<M>)>;

/// Why an inbound connection ended.
pub(super) enum InboundEnd {
    /// The peer closed it between frames, or the transport is closing.
    Closed,
    /// A protocol error: the connection is closed for it.
    Refused(String),
    /// The peer did not prove it holds the cluster's secret.
    Unauthenticated(String),
    Io(std::io::Error),
}

impl InboundEnd {
    /// Why the connection ended, for a log line of the side that opened it.
    pub(super) fn reason(self) -> String {
        match self {
            InboundEnd::Closed => "closed by the peer".to_string(),
            InboundEnd::Refused(reason) | InboundEnd::Unauthenticated(reason) => reason,
            InboundEnd::Io(error) => error.to_string(),
        }
    }
}

impl From<FrameError> for InboundEnd {
    fn from(error: FrameError) -> InboundEnd {
        InboundEnd::Refused(error.to_string())
    }
}

impl From<HandshakeError> for InboundEnd {
    fn from(error: HandshakeError) -> InboundEnd {
        match error.is_authentication() {
            true => InboundEnd::Unauthenticated(error.to_string()),
            false => InboundEnd::Refused(error.to_string()),
        }
    }
}

/// Accepts connections until the transport closes, each served by a task of its own.
pub async fn accept_connections<M: WireMessage>(
    listener: TcpListener,
    config: Rc<TransportConfig>,
    handler: Handler<M>,
    lifecycle: Rc<Lifecycle>,
) {
    let open = Rc::new(Cell::new(0usize));
    let mut pacing = AcceptPacing::default();
    loop {
        let stream = match lifecycle.unless_closed(listener.accept()).await {
            None => return,
            Some(Ok(stream)) => {
                pacing.accepted();
                stream
            }
            Some(Err(error)) => {
                match pacing.failed(&error) {
                    // Out of descriptors and the like: pause, or this loop spins.
                    Some(pause) => {
                        log_rate_limited!(
                            "ferrite: transport: accepting a connection failed: {error}; \
                             accepting again in {} ms",
                            pause.as_millis()
                        );
                        if lifecycle
                            .unless_closed(glommio::timer::sleep(pause))
                            .await
                            .is_none()
                        {
                            return;
                        }
                    }
                    None => log_rate_limited!(
                        "ferrite: transport: accepting a connection failed: {error}"
                    ),
                }
                continue;
            }
        };
        let Ok(peer) = stream.peer_addr() else {
            continue;
        };
        if open.get() >= config.inbound_connections_max {
            lifecycle
                .counters
                .update(|stats| stats.connections_refused += 1);
            log_rate_limited!(
                "ferrite: transport: refusing the connection from {peer}: {} connections are open",
                open.get()
            );
            continue;
        }
        open.set(open.get() + 1);
        let open = open.clone();
        let (config, handler, task_lifecycle) =
            (config.clone(), handler.clone(), lifecycle.clone());
        lifecycle.spawn(async move {
            serve_connection(stream, peer, &config, &handler, &task_lifecycle).await;
            open.set(open.get() - 1);
        });
    }
}

/// Serves one inbound connection until it ends, and logs why if it was not a clean close.
async fn serve_connection<M: WireMessage>(
    stream: TcpStream,
    peer: SocketAddr,
    config: &TransportConfig,
    handler: &Handler<M>,
    lifecycle: &Lifecycle,
) {
    let mut caller: Option<Hello> = None;
    let end = read_messages(stream, peer, config, handler, lifecycle, &mut caller).await;
    let who = match &caller {
        Some(hello) => format!("{peer} (node {} shard {})", hello.node_id, hello.shard),
        None => peer.to_string(),
    };
    match end {
        InboundEnd::Closed => {}
        InboundEnd::Refused(reason) => {
            lifecycle
                .counters
                .update(|stats| stats.connections_refused += 1);
            log_rate_limited!("ferrite: transport: closing the connection from {who}: {reason}");
        }
        InboundEnd::Unauthenticated(reason) => {
            lifecycle.counters.update(|stats| {
                stats.connections_refused += 1;
                stats.authentication_failures += 1;
            });
            log_rate_limited!(
                "ferrite: transport: refusing the connection from {who}, which claims to be a \
                 broker of this cluster: {reason}"
            );
        }
        InboundEnd::Io(error) => {
            log_rate_limited!("ferrite: transport: the connection from {who} failed: {error}")
        }
    }
}

async fn read_messages<M: WireMessage>(
    mut stream: TcpStream,
    peer: SocketAddr,
    config: &TransportConfig,
    handler: &Handler<M>,
    lifecycle: &Lifecycle,
    caller: &mut Option<Hello>,
) -> InboundEnd {
    let mut reader = FrameReader::new(config);
    let mut aligned = AlignedVec::new();
    let handshake_end = {
        let handshake = std::pin::pin!(handshake(
            &mut stream,
            &mut reader,
            peer,
            config,
            lifecycle,
            &mut aligned,
            caller,
        ));
        let deadline = std::pin::pin!(glommio::timer::sleep(config.handshake_timeout));
        match select(handshake, deadline).await {
            Either::Left((end, _)) => end,
            Either::Right(((), _)) => Some(InboundEnd::Refused(format!(
                "no complete handshake within {:?}",
                config.handshake_timeout
            ))),
        }
    };
    if let Some(end) = handshake_end {
        return end;
    }
    let Some(hello) = caller.as_ref() else {
        return InboundEnd::Refused("the handshake named no caller".to_string());
    };
    loop {
        let frame = match reader.next_frame(&mut stream, lifecycle).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return InboundEnd::Closed,
            Err(end) => return end,
        };
        if frame.kind != FrameKind::Message {
            return InboundEnd::Refused(format!("a {:?} frame after the handshake", frame.kind));
        }
        let message: M = match frame::decode_header(&frame.header, &mut aligned) {
            Ok(message) => message,
            Err(error) => return error.into(),
        };
        lifecycle
            .counters
            .update(|stats| stats.messages_received += 1);
        handler(Received {
            from_node: hello.node_id,
            from_shard: hello.shard,
            message,
            payload: frame.payload,
        });
    }
}

/// The acceptor's side of the handshake; `None` once the peer proved itself (`caller` then says
/// who it is), else why the connection ends.
async fn handshake(
    stream: &mut TcpStream,
    reader: &mut FrameReader,
    peer: SocketAddr,
    config: &TransportConfig,
    lifecycle: &Lifecycle,
    aligned: &mut AlignedVec,
    caller: &mut Option<Hello>,
) -> Option<InboundEnd> {
    let frame = match reader.next_frame(stream, lifecycle).await {
        Ok(Some(frame)) => frame,
        Ok(None) => return Some(InboundEnd::Closed),
        Err(end) => return Some(end),
    };
    let hello = match handshake::read_hello(&frame, aligned) {
        Ok(hello) => caller.insert(hello),
        Err(error) => return Some(error.into()),
    };
    if let Err(error) = check_claimed_address(config, hello.node_id, peer) {
        return Some(error.into());
    }
    let nonce = match new_nonce() {
        Ok(nonce) => nonce,
        Err(error) => return Some(InboundEnd::Refused(format!("no random nonce: {error}"))),
    };
    let cluster_id = config.cluster_id.get();
    let own = Own {
        node_id: config.node_id,
        cluster_id: &cluster_id,
        secret: config.secret.as_ref(),
        nonce,
    };
    let challenge = match handshake::challenge(&own, hello) {
        Ok(challenge) => challenge,
        Err(error) => return Some(error.into()),
    };
    let frame =
        match handshake::encode_frame(FrameKind::Challenge, &challenge, config.frame_bytes_max) {
            Ok(frame) => frame,
            Err(error) => return Some(error.into()),
        };
    let mut wire = BytesMut::with_capacity(frame.wire_bytes());
    wire.extend_from_slice(&frame.head);
    wire.extend_from_slice(&frame.payload);
    match lifecycle.unless_closed(stream.write_all(&wire)).await {
        None => return Some(InboundEnd::Closed),
        Some(Err(error)) => return Some(InboundEnd::Io(error)),
        Some(Ok(())) => {}
    }
    let frame = match reader.next_frame(stream, lifecycle).await {
        Ok(Some(frame)) => frame,
        // A peer that finds our proof wrong closes here: with a secret, that is a peer
        // that does not hold ours.
        Ok(None) if config.secret.is_some() => {
            return Some(InboundEnd::Unauthenticated(
                "it closed the connection instead of proving it holds the cluster secret (it \
                 may hold another, or refuse our cluster id)"
                    .to_string(),
            ))
        }
        Ok(None) => {
            return Some(InboundEnd::Refused(
                "closed before proving itself (it may have refused our challenge)".to_string(),
            ))
        }
        Err(end) => return Some(end),
    };
    match handshake::check_proof(&own, hello, &challenge, &frame, aligned) {
        Ok(()) => None,
        Err(error) => Some(error.into()),
    }
}

/// Refuses a hello claiming a node id that is not in our `--peers`, or that comes from another
/// address than the one `--peers` gives that node (loopback stands for loopback: brokers on
/// one machine may dial from any of its addresses). With a shared secret every holder could
/// claim any id; this check at least ties the id to where that broker is.
fn check_claimed_address(
    config: &TransportConfig,
    node_id: u64,
    peer: SocketAddr,
) -> Result<(), HandshakeError> {
    let Some(configured) = config.peers.get(&node_id) else {
        return Err(HandshakeError::UnknownNode { node_id });
    };
    let (configured, actual) = (configured.ip().to_canonical(), peer.ip().to_canonical());
    let same_host = configured == actual
        || configured.is_unspecified()
        || (configured.is_loopback() && actual.is_loopback());
    if !same_host {
        return Err(HandshakeError::WrongAddress {
            node_id,
            configured,
            actual,
        });
    }
    Ok(())
}

/// Frames read off one connection: what has arrived but not yet formed a frame, and the read
/// chunk.
pub(super) struct FrameReader {
    received: BytesMut,
    chunk: Vec<u8>,
    frame_bytes_max: usize,
}

impl FrameReader {
    pub(super) fn new(config: &TransportConfig) -> FrameReader {
        FrameReader {
            received: BytesMut::new(),
            chunk: vec![0u8; config.read_chunk_bytes],
            frame_bytes_max: config.frame_bytes_max,
        }
    }

    /// Whether bytes beyond the frames taken have arrived.
    pub(super) fn has_buffered(&self) -> bool {
        !self.received.is_empty()
    }

    /// The next frame; `Ok(None)` when the peer closed between frames or the transport closes.
    pub(super) async fn next_frame<Stream: AsyncRead + Unpin>(
        &mut self,
        stream: &mut Stream,
        lifecycle: &Lifecycle,
    ) -> Result<Option<Frame>, InboundEnd> {
        loop {
            if let Some(frame) = frame::take_frame(&mut self.received, self.frame_bytes_max)? {
                return Ok(Some(frame));
            }
            let Some(read) = lifecycle.unless_closed(stream.read(&mut self.chunk)).await else {
                return Ok(None);
            };
            match read {
                Ok(0) if self.received.is_empty() => return Ok(None),
                Ok(0) => {
                    return Err(InboundEnd::Refused(format!(
                        "closed in the middle of a frame ({} bytes of it received)",
                        self.received.len()
                    )))
                }
                Ok(read) => self.received.extend_from_slice(&self.chunk[..read]),
                Err(error) => return Err(InboundEnd::Io(error)),
            }
        }
    }
}
