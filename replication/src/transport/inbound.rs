//! The shard's listener and the connections peers opened to it. Each connection must begin with
//! a hello of our cluster and protocol version (within `handshake_timeout`); then every frame
//! is a message, validated and handed to the handler with who sent it. A connection is read by
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
use futures::AsyncReadExt;
use glommio::net::{TcpListener, TcpStream};
use rkyv::util::AlignedVec;

use super::frame::{self, Frame, FrameError, FrameKind, WireMessage};
use super::handshake::{self, HandshakeError, Hello};
use super::lifecycle::Lifecycle;
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
enum InboundEnd {
    /// The peer closed it between frames, or the transport is closing.
    Closed,
    /// A protocol error: the connection is closed for it.
    Refused(String),
    Io(std::io::Error),
}

impl From<FrameError> for InboundEnd {
    fn from(error: FrameError) -> InboundEnd {
        InboundEnd::Refused(error.to_string())
    }
}

impl From<HandshakeError> for InboundEnd {
    fn from(error: HandshakeError) -> InboundEnd {
        InboundEnd::Refused(error.to_string())
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
    let end = read_messages(stream, config, handler, lifecycle, &mut caller).await;
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
        InboundEnd::Io(error) => {
            log_rate_limited!("ferrite: transport: the connection from {who} failed: {error}")
        }
    }
}

async fn read_messages<M: WireMessage>(
    mut stream: TcpStream,
    config: &TransportConfig,
    handler: &Handler<M>,
    lifecycle: &Lifecycle,
    caller: &mut Option<Hello>,
) -> InboundEnd {
    let mut reader = FrameReader::new(config);
    let mut aligned = AlignedVec::new();
    let hello_frame = {
        let first = std::pin::pin!(reader.next_frame(&mut stream, lifecycle));
        let deadline = std::pin::pin!(glommio::timer::sleep(config.handshake_timeout));
        match select(first, deadline).await {
            Either::Left((Ok(Some(frame)), _)) => frame,
            Either::Left((Ok(None), _)) => return InboundEnd::Closed,
            Either::Left((Err(end), _)) => return end,
            Either::Right(((), _)) => {
                return InboundEnd::Refused(format!(
                    "no hello within {:?}",
                    config.handshake_timeout
                ))
            }
        }
    };
    let hello = match handshake::accept(&hello_frame, &config.cluster_id, &mut aligned) {
        Ok(hello) => caller.insert(hello),
        Err(error) => return error.into(),
    };
    loop {
        let frame = match reader.next_frame(&mut stream, lifecycle).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return InboundEnd::Closed,
            Err(end) => return end,
        };
        if frame.kind != FrameKind::Message {
            return InboundEnd::Refused(format!("a {:?} frame after the hello", frame.kind));
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

/// Frames read off one connection: what has arrived but not yet formed a frame, and the read
/// chunk.
struct FrameReader {
    received: BytesMut,
    chunk: Vec<u8>,
    frame_bytes_max: usize,
}

impl FrameReader {
    fn new(config: &TransportConfig) -> FrameReader {
        FrameReader {
            received: BytesMut::new(),
            chunk: vec![0u8; config.read_chunk_bytes],
            frame_bytes_max: config.frame_bytes_max,
        }
    }

    /// The next frame; `Ok(None)` when the peer closed between frames or the transport closes.
    async fn next_frame(
        &mut self,
        stream: &mut TcpStream,
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
