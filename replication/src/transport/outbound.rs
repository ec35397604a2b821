//! This shard's connection to one peer broker: a bounded queue of encoded frames, drained by
//! one writer task that owns the socket. Sending never waits: while the peer is slow or
//! unreachable the queue keeps the newest frames and drops the oldest (Raft resends what
//! matters, and a stale heartbeat is worth less than a fresh one), counting each drop.
//!
//! The writer connects when it first has something to send, runs the connector's side of the
//! handshake (hello, then the acceptor's challenge checked and our proof sent, all within
//! `handshake_timeout`; an acceptor that fails to prove it holds the cluster's secret is
//! dropped as any broken connection), then writes whatever has queued up, several frames per
//! write. It notices a connection is gone when a write fails
//! or the peer closes its end (the peer never writes to us, so anything the socket reads is an
//! end), and then reconnects, waiting per [`Backoff`] before each attempt: a peer that accepts
//! and at once refuses us is redialled ever more slowly too. The back-off starts over once a
//! connection has lasted `backoff_max`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use engine::log_rate_limited;
use futures::future::{select, Either};
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt};
use glommio::net::TcpStream;

use rkyv::util::AlignedVec;

use super::backoff::Backoff;
use super::frame::{FrameKind, OutboundFrame};
use super::handshake::{self, Hello, Own};
use super::inbound::FrameReader;
use super::lifecycle::Lifecycle;
use super::peer_auth::new_nonce;
use super::TransportConfig;

/// Payloads up to this size are copied beside their frame's head into the one buffer a write
/// sends (a copy is cheaper than a system call); larger ones are written from where they are.
const PAYLOAD_COPY_BYTES_MAX: usize = 16 << 10;

/// The queue of frames to one peer and the writer's wake-up.
pub struct PeerQueue {
    frames: RefCell<VecDeque<OutboundFrame>>,
    queued_bytes: Cell<usize>,
    frames_max: usize,
    bytes_max: usize,
    writer_waker: RefCell<Option<Waker>>,
}

impl PeerQueue {
    pub fn new(frames_max: usize, bytes_max: usize) -> PeerQueue {
        assert!(frames_max > 0 && bytes_max > 0);
        PeerQueue {
            frames: RefCell::new(VecDeque::new()),
            queued_bytes: Cell::new(0),
            frames_max,
            bytes_max,
            writer_waker: RefCell::new(None),
        }
    }

    /// Queues `frame`, first dropping the oldest frames it would not fit beside; returns how
    /// many were dropped.
    pub fn push(&self, frame: OutboundFrame) -> u64 {
        assert!(
            frame.wire_bytes() <= self.bytes_max,
            "a frame fits an empty queue"
        );
        let mut frames = self.frames.borrow_mut();
        let mut dropped = 0;
        while frames.len() >= self.frames_max
            || self.queued_bytes.get() + frame.wire_bytes() > self.bytes_max
        {
            let oldest = frames
                .pop_front()
                .expect("a non-empty queue is over its bound");
            self.queued_bytes
                .set(self.queued_bytes.get() - oldest.wire_bytes());
            dropped += 1;
        }
        self.queued_bytes
            .set(self.queued_bytes.get() + frame.wire_bytes());
        frames.push_back(frame);
        if let Some(waker) = self.writer_waker.borrow_mut().take() {
            waker.wake();
        }
        dropped
    }

    /// The oldest frames, as many as fit `bytes_max` together (at least one if any is queued).
    fn take(&self, bytes_max: usize) -> Vec<OutboundFrame> {
        let mut frames = self.frames.borrow_mut();
        let mut taken: Vec<OutboundFrame> = Vec::new();
        let mut taken_bytes = 0;
        while let Some(frame) = frames.front() {
            if !taken.is_empty() && taken_bytes + frame.wire_bytes() > bytes_max {
                break;
            }
            taken_bytes += frame.wire_bytes();
            taken.push(frames.pop_front().expect("the front frame"));
        }
        self.queued_bytes.set(self.queued_bytes.get() - taken_bytes);
        taken
    }

    /// Ready when a frame is queued; otherwise remembers the writer's waker.
    fn poll_has_frames(&self, context: &mut std::task::Context<'_>) -> Poll<()> {
        if self.frames.borrow().is_empty() {
            *self.writer_waker.borrow_mut() = Some(context.waker().clone());
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }
}

/// What woke a writer.
enum Wake<Read> {
    Closing,
    Frames,
    PeerEnded(Read),
}

/// Waits until a frame is queued, the transport closes, or (with a connection) the peer's end
/// of it says something, which is always its end.
async fn next_wake<Read: Future + Unpin>(
    queue: &PeerQueue,
    lifecycle: &Lifecycle,
    mut peer_end: Option<&mut Read>,
) -> Wake<Read::Output> {
    let mut closed = lifecycle.closed();
    std::future::poll_fn(|context| {
        if closed.poll_unpin(context).is_ready() {
            return Poll::Ready(Wake::Closing);
        }
        if let Some(read) = peer_end.as_mut() {
            if let Poll::Ready(result) = read.poll_unpin(context) {
                return Poll::Ready(Wake::PeerEnded(result));
            }
        }
        queue.poll_has_frames(context).map(|()| Wake::Frames)
    })
    .await
}

/// How a connection ended.
enum ConnectionEnd {
    Closing,
    Broken(String),
}

/// The writer task of the connection to `peer_node` at `address`: runs until the transport
/// closes.
pub async fn drive_peer(
    peer_node: u64,
    address: SocketAddr,
    queue: Rc<PeerQueue>,
    config: Rc<TransportConfig>,
    lifecycle: Rc<Lifecycle>,
) {
    let seed = config.jitter_seed ^ peer_node.rotate_left(32) ^ u64::from(config.shard);
    let mut backoff = Backoff::new(config.backoff_min, config.backoff_max, seed);
    let mut wait_before_connect: Option<Duration> = None;
    // An outage (from a failure until a connection lasts `backoff_max`) is logged once.
    let mut outage_logged = false;
    loop {
        match next_wake(&queue, &lifecycle, None::<&mut std::future::Pending<()>>).await {
            Wake::Closing => return,
            Wake::Frames | Wake::PeerEnded(()) => {}
        }
        if let Some(wait) = wait_before_connect.take() {
            if lifecycle
                .unless_closed(glommio::timer::sleep(wait))
                .await
                .is_none()
            {
                return;
            }
        }
        let connecting = TcpStream::connect_timeout(address, config.connect_timeout);
        let stream = match lifecycle.unless_closed(connecting).await {
            None => return,
            Some(Ok(stream)) => stream,
            Some(Err(error)) => {
                lifecycle
                    .counters
                    .update(|stats| stats.connect_failures += 1);
                if !std::mem::replace(&mut outage_logged, true) {
                    log_rate_limited!(
                        "ferrite: transport: cannot connect to node {peer_node} at {address}: \
                         {error}; retrying with back-off"
                    );
                }
                wait_before_connect = Some(backoff.next_delay());
                continue;
            }
        };
        lifecycle
            .counters
            .update(|stats| stats.connections_opened += 1);
        // Data the peer has not acknowledged within this time breaks the connection (Linux's
        // TCP_USER_TIMEOUT), so a peer cut off by the network is noticed and reconnected to
        // after the cut instead of the old connection waiting out TCP's retransmission
        // back-off (tens of seconds). Best effort: without it the connection still works.
        let _ = socket2::SockRef::from(&stream)
            .set_tcp_user_timeout(Some(config.unacknowledged_timeout));
        let opened = Instant::now();
        match write_connection(stream, peer_node, &queue, &config, &lifecycle).await {
            ConnectionEnd::Closing => return,
            ConnectionEnd::Broken(reason) => {
                if opened.elapsed() >= config.backoff_max {
                    backoff.reset();
                    outage_logged = false;
                }
                if !std::mem::replace(&mut outage_logged, true) {
                    log_rate_limited!(
                        "ferrite: transport: connection to node {peer_node} at {address} \
                         ended: {reason}; reconnecting"
                    );
                }
                wait_before_connect = Some(backoff.next_delay());
            }
        }
    }
}

/// Runs the handshake on `stream` to `peer_node`, then writes queued frames until the
/// connection ends or the transport closes.
async fn write_connection(
    stream: TcpStream,
    peer_node: u64,
    queue: &PeerQueue,
    config: &TransportConfig,
    lifecycle: &Lifecycle,
) -> ConnectionEnd {
    // Small frames must not wait for the acknowledgement of earlier ones (Nagle).
    if let Err(error) = stream.set_nodelay(true) {
        return ConnectionEnd::Broken(format!("cannot set TCP_NODELAY: {error}"));
    }
    let (mut reader, mut writer) = stream.split();
    let handshake_end = {
        let handshake = std::pin::pin!(lifecycle.unless_closed(handshake(
            &mut reader,
            &mut writer,
            peer_node,
            config,
            lifecycle
        )));
        let deadline = std::pin::pin!(glommio::timer::sleep(config.handshake_timeout));
        match select(handshake, deadline).await {
            Either::Left((None, _)) => Some(ConnectionEnd::Closing),
            Either::Left((Some(Ok(())), _)) => None,
            Either::Left((Some(Err(reason)), _)) => Some(ConnectionEnd::Broken(reason)),
            Either::Right(((), _)) => Some(ConnectionEnd::Broken(format!(
                "no answer to our hello within {:?}",
                config.handshake_timeout
            ))),
        }
    };
    if let Some(end) = handshake_end {
        return end;
    }
    let mut probe = [0u8; 1];
    let mut peer_end = reader.read(&mut probe);
    loop {
        match next_wake(queue, lifecycle, Some(&mut peer_end)).await {
            Wake::Closing => return ConnectionEnd::Closing,
            Wake::PeerEnded(Ok(0)) => return ConnectionEnd::Broken("closed by the peer".into()),
            Wake::PeerEnded(Ok(_)) => {
                return ConnectionEnd::Broken("the peer wrote to a send-only connection".into())
            }
            Wake::PeerEnded(Err(error)) => return ConnectionEnd::Broken(error.to_string()),
            Wake::Frames => {}
        }
        let frames = queue.take(config.write_coalesce_bytes_max);
        let count = frames.len() as u64;
        // A peer that stopped reading (a stopped process) must not hold up closing.
        match lifecycle
            .unless_closed(write_frames(&mut writer, frames))
            .await
        {
            None => return ConnectionEnd::Closing,
            Some(Ok(())) => lifecycle
                .counters
                .update(|stats| stats.messages_sent += count),
            Some(Err(error)) => {
                lifecycle
                    .counters
                    .update(|stats| stats.messages_dropped += count);
                return ConnectionEnd::Broken(error.to_string());
            }
        }
    }
}

/// The connector's side of the handshake: hello, the acceptor's challenge checked, our proof.
async fn handshake<Read: futures::AsyncRead + Unpin, Write: futures::AsyncWrite + Unpin>(
    reader: &mut Read,
    writer: &mut Write,
    peer_node: u64,
    config: &TransportConfig,
    lifecycle: &Lifecycle,
) -> Result<(), String> {
    let nonce = new_nonce().map_err(|error| format!("no random nonce: {error}"))?;
    let cluster_id = config.cluster_id.get();
    let own = Own {
        node_id: config.node_id,
        cluster_id: &cluster_id,
        secret: config.secret.as_ref(),
        nonce,
    };
    let hello = Hello {
        cluster_id: cluster_id.to_string(),
        node_id: config.node_id,
        shard: config.shard,
        nonce,
    };
    let frame =
        handshake::encode(&hello, config.frame_bytes_max).map_err(|error| error.to_string())?;
    write_frames(writer, vec![frame])
        .await
        .map_err(|error| error.to_string())?;
    let mut frames = FrameReader::new(config);
    let challenge = match frames.next_frame(reader, lifecycle).await {
        Ok(Some(frame)) => frame,
        Ok(None) => return Err("closed by the peer before its challenge".to_string()),
        Err(end) => return Err(end.reason()),
    };
    if frames.has_buffered() {
        return Err("the peer wrote more than its challenge".to_string());
    }
    let mut aligned = AlignedVec::new();
    let proof =
        handshake::answer(&own, &hello, peer_node, &challenge, &mut aligned).map_err(|error| {
            if error.is_authentication() {
                lifecycle
                    .counters
                    .update(|stats| stats.authentication_failures += 1);
            }
            error.to_string()
        })?;
    let frame = handshake::encode_frame(FrameKind::Proof, &proof, config.frame_bytes_max)
        .map_err(|error| error.to_string())?;
    write_frames(writer, vec![frame])
        .await
        .map_err(|error| error.to_string())
}

/// Writes `frames` in order, gathering heads and small payloads into as few writes as fit.
async fn write_frames<W: futures::AsyncWrite + Unpin>(
    writer: &mut W,
    frames: Vec<OutboundFrame>,
) -> std::io::Result<()> {
    let mut gathered = BytesMut::new();
    for frame in frames {
        gathered.extend_from_slice(&frame.head);
        if frame.payload.len() <= PAYLOAD_COPY_BYTES_MAX {
            gathered.extend_from_slice(&frame.payload);
        } else {
            write_gathered(writer, &mut gathered).await?;
            writer.write_all(&frame.payload).await?;
        }
    }
    write_gathered(writer, &mut gathered).await
}

async fn write_gathered<W: futures::AsyncWrite + Unpin>(
    writer: &mut W,
    gathered: &mut BytesMut,
) -> std::io::Result<()> {
    if !gathered.is_empty() {
        writer.write_all(gathered).await?;
        gathered.clear();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn frame(bytes: usize) -> OutboundFrame {
        OutboundFrame {
            head: Bytes::from(vec![0u8; 9]),
            payload: Bytes::from(vec![1u8; bytes - 9]),
        }
    }

    #[test]
    fn a_full_queue_drops_its_oldest_frames() {
        let queue = PeerQueue::new(3, 1000);
        for _ in 0..3 {
            assert_eq!(queue.push(frame(100)), 0);
        }
        assert_eq!(queue.push(frame(100)), 1, "over the frame bound");
        assert_eq!(queue.push(frame(950)), 3, "over the byte bound");
        let taken = queue.take(usize::MAX);
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].wire_bytes(), 950);
        assert_eq!(queue.queued_bytes.get(), 0);
    }

    #[test]
    fn takes_as_many_frames_as_fit_a_write_but_always_one() {
        let queue = PeerQueue::new(10, 10_000);
        for bytes in [100, 100, 100, 5000] {
            queue.push(frame(bytes));
        }
        assert_eq!(queue.take(250).len(), 2);
        assert_eq!(queue.take(250).len(), 1);
        assert_eq!(
            queue.take(250).len(),
            1,
            "a frame larger than a write goes alone"
        );
        assert!(queue.take(250).is_empty());
    }
}
