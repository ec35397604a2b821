//! One client connection, pipelined: a reader decodes requests and starts each in arrival
//! order (so a connection's appends keep their order), then queues the rest of its handling;
//! a writer awaits the queued replies strictly in request order (Kafka clients rely on it) and
//! writes them, splicing file ranges straight from the segment files; the replies that are
//! ready together (a commit answers many pipelined produce requests at once) go out in one
//! gathered `sendmsg`. What is in flight is bounded in
//! requests and in bytes, so a client that sends faster than it reads answers stops being read.
//!
//! Bounds: 1 024 requests and 64 MiB in flight by default ([`ConnectionConfig`]). The depth is that
//! high because librdkafka (without idempotence) keeps a produce request per partition batch in
//! flight without limit: with a depth below a client's request rate times a cluster's acks=all
//! latency, requests wait unread in the socket and the client's own queue grows while the broker's
//! latency looks fine. The queue of started requests grows on demand, so an idle connection holds
//! no room for it; the reader yields once its time slice is used up, so a backlog of a thousand
//! requests does not hold up the shard's other work (its Raft traffic included).
//!
//! Reading without copying: frames up to a read chunk (64 KiB) are cut out of one shared buffer; a
//! longer one (a produce request of large batches) is read straight into a zeroed (`calloc`) buffer
//! of exactly its size, so its bytes are neither copied on the way in nor regrown, and Produce
//! hands a request's only batch of 64 KiB or more to the engine in that buffer (the request, whose
//! strings are slices of the frame, is dropped first). What is still copied is counted in
//! `ferrite_produce_bytes_copied_total`.
//!
//! Writing together: the replies that are ready together, and each reply's memory parts (a fetch's
//! partition headers and in-memory batches), go out in one non-blocking `sendmsg` of up to 1 MiB
//! (`send_gathered`), file ranges spliced (`send_file`). Why: librdkafka sends a produce request
//! per partition batch, and one journal sync answers dozens of them at once; a `sendmsg`, and a
//! client wake-up, per reply would multiply the system calls by that many.
//!
//! Bad input ends this connection only, with a log line saying why (rate-limited: any client
//! can send bad input over and over); the shard and every other connection carry on. A
//! connection with nothing read, nothing in flight and nothing written for
//! `connections.max.idle.ms` is closed, as Kafka closes idle connections. At shutdown the
//! reader stops reading, the writer finishes what was already started, and the connection
//! closes; it counts as work in flight until then, so the shard's drain waits for those
//! answers.
//!
//! A connection whose data requests nearly all name partitions of one other shard moves there
//! at a request boundary (`crate::handover`): the reader stops starting requests, waits until
//! every one it started was answered and written, and hands the socket with the bytes it read
//! but did not start to that shard, which serves the connection from then on ([`adopt`]).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use futures::future::{select, Either};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, FutureExt};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpStream;
use glommio::sync::{Semaphore, StaticPermit};
use glommio::task::JoinHandle;

use engine::log_rate_limited;
use engine::shard::{InFlight, ShardContext};

use crate::broker::{Broker, Reply, ResponsePart};
use crate::connection_limits::ConnectionSlot;
use crate::frame::{frame_bytes, take_frame, FRAME_LENGTH_BYTES};
use crate::handover::{self, Carried, HandoverRule, Routing};
use crate::listener::ConnectionSecurity;
use crate::quotas::ConnectionThrottle;
use crate::send_file::Splicer;
use crate::send_gathered::send_all;

/// Bounds of one connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionConfig {
    /// Largest request frame accepted (Kafka's `socket.request.max.bytes`, 100 MiB).
    pub frame_bytes_max: usize,
    /// Bytes read from the socket at a time.
    pub read_chunk_bytes: usize,
    /// Requests started but not yet answered, per connection. It caps a connection's
    /// throughput at `pipeline_depth` requests per reply latency, so it must cover a client's
    /// request rate times the acks=all latency of a cluster (see the default).
    pub pipeline_depth: usize,
    /// Request bytes started but not yet answered, per connection (a single larger request
    /// still goes through, alone).
    pub pipeline_bytes_max: usize,
    /// A connection without a byte read or written for this long, and no request in flight,
    /// is closed (Kafka's `connections.max.idle.ms`); `None`: never.
    pub idle_max: Option<Duration>,
    /// When a connection moves to the shard its data requests go to (`crate::handover`);
    /// `None`: connections stay on the shard that accepted them.
    pub handover: Option<HandoverRule>,
}

/// Kafka's `connections.max.idle.ms` default: 10 minutes.
pub const IDLE_MAX_DEFAULT: Duration = Duration::from_secs(600);

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            frame_bytes_max: 100 << 20,
            read_chunk_bytes: 64 << 10,
            // librdkafka sends one produce request per partition batch and, without
            // idempotence, keeps up to a million in flight, so at linger.ms=0 a connection
            // carries about one request per message per partition (~7 000 a second per broker
            // at 16 partitions and 20 MiB/s over three leaders). At 64 and the ~10 ms of an
            // RF=3 acks=all commit on a loaded machine that was ~6 400 a second at best: the
            // rest waited unread in the socket (a megabyte of Recv-Q), the client's queue grew
            // without bound and its p99 reached seconds (issue 16). 1 024 covers 100 000
            // requests a second at 10 ms; the bytes budget below still bounds the memory.
            pipeline_depth: 1024,
            pipeline_bytes_max: 64 << 20,
            idle_max: Some(IDLE_MAX_DEFAULT),
            handover: Some(HandoverRule::default()),
        }
    }
}

/// Why a connection ended.
#[derive(Debug)]
enum ConnectionEnd {
    /// The client closed it, or the broker is shutting down.
    Closed,
    /// Idle for longer than `idle_max`.
    Idle,
    /// The client sent something we close connections for.
    BadInput(String),
    /// Reading or writing the socket failed.
    Io(std::io::Error),
}

/// A started request: its handling runs as a task of its own, which the writer awaits in
/// order, and its admission, held until its reply is written.
type Started = (JoinHandle<Result<Reply, String>>, Admission);

/// What holds a started request against the connection's bounds: one of its `pipeline_depth`
/// places and the request's bytes of its `pipeline_bytes_max`. (The queue to the writer grows
/// on demand up to `pipeline_depth`, so an idle connection holds no room for it.)
struct Admission {
    _place: StaticPermit,
    _bytes: StaticPermit,
}

/// When the connection last read or wrote a byte.
type LastActivity = Rc<std::cell::Cell<Instant>>;

/// Serves `stream`, accepted on this shard, until it ends, and logs why if it was not the
/// client closing it. `slot` counts it against the broker's connection limits until then;
/// `security` says which listener accepted it.
pub async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    security: ConnectionSecurity,
    broker: Rc<Broker>,
    config: ConnectionConfig,
    slot: ConnectionSlot,
) {
    let in_flight = broker.context.work_in_flight();
    broker.metrics.connection_accepted();
    let carried = Carried::accepted(peer, slot, security);
    serve(stream, carried, broker, config, in_flight).await
}

thread_local! {
    /// The broker this shard serves and its connections' bounds, which connections other
    /// shards hand over here are served with (weakly held: the broker is the shard's, gone
    /// only at its end, which closes them): a handover is a closure run on this shard's
    /// thread, and this is how it finds the shard's broker, as replication finds its shard's.
    static SERVING_HERE: RefCell<Option<(Weak<Broker>, ConnectionConfig)>> =
        const { RefCell::new(None) };
}

/// Makes `broker` the one that serves, with `config`, the connections other shards hand over to
/// this shard.
pub fn adopt_handed_over(broker: &Rc<Broker>, config: ConnectionConfig) {
    SERVING_HERE.with(|serving| *serving.borrow_mut() = Some((Rc::downgrade(broker), config)));
}

/// Serves, on this shard, a connection another shard handed over (`stream`, with what it
/// `carried`), if a broker serves connections here ([`adopt_handed_over`]); else it is closed.
pub fn adopt(context: &ShardContext, stream: TcpStream, carried: Carried) {
    let serving = SERVING_HERE.with(|serving| serving.borrow().clone());
    let Some((broker, config)) = serving else {
        log_rate_limited!(
            "ferrite: shard {} closes a connection handed to it: it serves no connections",
            context.shard_id()
        );
        return;
    };
    let Some(broker) = broker.upgrade() else {
        return;
    };
    // Counted before this returns, so the shard's drain cannot miss it.
    let in_flight = broker.context.work_in_flight();
    glommio::spawn_local(serve(stream, carried, broker, config, in_flight)).detach();
}

/// Serves the connection on this shard until it ends or moves to another; `in_flight` counts
/// it for the shard's shutdown drain meanwhile.
async fn serve(
    mut stream: TcpStream,
    mut carried: Carried,
    broker: Rc<Broker>,
    config: ConnectionConfig,
    in_flight: InFlight,
) {
    let _in_flight = in_flight;
    let _open = broker.metrics.connection_open();
    let peer = carried.peer;
    let ends = loop {
        match serve_here(stream, &mut carried, &broker, config).await {
            Served::Ended(ends) => break ends,
            Served::Moving { to, stream: moving } => {
                match handover::hand_over(&broker.context, to, moving, carried).await {
                    Ok(()) => {
                        broker.metrics.connection_moved();
                        return;
                    }
                    // It stays: served here again, from the bytes it had read.
                    Err((kept, kept_carried)) => {
                        stream = kept;
                        carried = kept_carried;
                    }
                }
            }
        }
    };
    report_ends(&broker, peer, ends);
}

/// Serves `stream`, a TLS connection accepted on this shard whose handshake is done, until it
/// ends, as [`serve_connection`] serves a plaintext one. It stays on this shard (a TLS
/// session's state lives in this process's memory, not in the socket the handover moves), and
/// its file ranges are read into memory and encrypted rather than spliced.
pub async fn serve_tls_connection(
    stream: futures_rustls::server::TlsStream<TcpStream>,
    peer: SocketAddr,
    security: ConnectionSecurity,
    broker: Rc<Broker>,
    config: ConnectionConfig,
    slot: ConnectionSlot,
) {
    let _in_flight = broker.context.work_in_flight();
    broker.metrics.connection_accepted();
    let _open = broker.metrics.connection_tls_open();
    let mut carried = Carried::accepted(peer, slot, security);
    let (reader, writer) = AsyncReadExt::split(stream);
    let config = ConnectionConfig {
        handover: None,
        ..config
    };
    let (read_end, write_end, _) =
        run_connection(reader, writer, Wire::Tls, &mut carried, &broker, config).await;
    let read_end = match read_end {
        ReadEnd::Ended(end) => end,
        ReadEnd::Moving(_) => ConnectionEnd::Closed,
    };
    let write_end = write_end.map_or(ConnectionEnd::Closed, |(end, _)| end);
    report_ends(&broker, peer, [read_end, write_end]);
}

/// Counts and logs (rate-limited) why a connection from `peer` ended, unless the client closed
/// it.
fn report_ends(broker: &Broker, peer: SocketAddr, ends: [ConnectionEnd; 2]) {
    for end in ends {
        match end {
            ConnectionEnd::Closed => {}
            ConnectionEnd::Idle => broker.metrics.connection_closed_idle(),
            ConnectionEnd::BadInput(reason) => {
                broker.metrics.connection_closed_for_bad_input();
                log_rate_limited!("ferrite: closing the connection from {peer}: {reason}")
            }
            ConnectionEnd::Io(error) => {
                log_rate_limited!("ferrite: connection from {peer} failed: {error}")
            }
        }
    }
}

/// How serving a connection on this shard stopped.
enum Served {
    /// The reader's end and the writer's.
    Ended([ConnectionEnd; 2]),
    /// Every request started here was answered and written: the connection moves to shard
    /// `to`.
    Moving { to: usize, stream: TcpStream },
}

/// What made the reader stop.
enum ReadEnd {
    Ended(ConnectionEnd),
    /// Every request it started was answered and written; move to this shard.
    Moving(usize),
}

/// Runs the plaintext connection's reader and writer on this shard, from `carried.unread` on,
/// and keeps `carried` up to date (what it read but did not start, its idle clock, its last
/// move).
async fn serve_here(
    stream: TcpStream,
    carried: &mut Carried,
    broker: &Rc<Broker>,
    config: ConnectionConfig,
) -> Served {
    let socket_fd = stream.as_raw_fd();
    let (reader, writer) = stream.split();
    let (read_end, write_end, reader) = run_connection(
        reader,
        writer,
        Wire::Socket(socket_fd),
        carried,
        broker,
        config,
    )
    .await;
    match (read_end, write_end) {
        (ReadEnd::Moving(to), Some((ConnectionEnd::Closed, writer))) => Served::Moving {
            to,
            stream: reader
                .reunite(writer)
                .expect("the two halves of one stream"),
        },
        (ReadEnd::Moving(_), write_end) => Served::Ended([
            ConnectionEnd::Closed,
            write_end.map_or(ConnectionEnd::Closed, |(end, _)| end),
        ]),
        (ReadEnd::Ended(read_end), write_end) => Served::Ended([
            read_end,
            write_end.map_or(ConnectionEnd::Closed, |(end, _)| end),
        ]),
    }
}

/// How a connection's replies reach its socket.
#[derive(Debug, Clone, Copy)]
enum Wire {
    /// Plaintext on the socket with this descriptor: memory parts in gathered `sendmsg` calls,
    /// file ranges spliced.
    Socket(RawFd),
    /// Through rustls: every byte is written through the writer, file ranges read into memory
    /// first.
    Tls,
}

/// Runs a connection's reader (on `reader`) and writer (a task writing to `writer` over
/// `wire`) until the reader stops; returns why it stopped, the writer's end (with the writer
/// back) and the reader.
async fn run_connection<R: AsyncRead + Unpin, W: AsyncWrite + Unpin + 'static>(
    mut reader: R,
    writer: W,
    wire: Wire,
    carried: &mut Carried,
    broker: &Rc<Broker>,
    config: ConnectionConfig,
) -> (ReadEnd, Option<(ConnectionEnd, W)>, R) {
    let (queue, queued) = local_channel::new_unbounded();
    let activity: LastActivity = Rc::new(std::cell::Cell::new(carried.last_activity));
    let writing = glommio::spawn_local(write_replies(
        queued,
        writer,
        wire,
        broker.clone(),
        activity.clone(),
    ))
    .detach();
    let mut routing = Routing::new(config.handover, &broker.context, carried.moved_at);
    let pipeline = Pipeline {
        peer: carried.peer,
        queue,
        broker,
        config,
        places: Rc::new(Semaphore::new(config.pipeline_depth as u64)),
        budget: Rc::new(Semaphore::new(config.pipeline_bytes_max as u64)),
        throttle: Rc::default(),
    };
    let read_end = read_requests(
        &mut reader,
        &mut carried.unread,
        &mut carried.security,
        pipeline,
        &activity,
        &mut routing,
    )
    .await;
    carried.moved_at = routing.moved_at();
    // The queue's sender went with the pipeline: the writer finishes what was started, then
    // returns.
    let write_end = writing.await;
    carried.last_activity = activity.get();
    (read_end, write_end, reader)
}

/// Resolves when the reader must stop waiting for bytes: shutdown (`Closed`), or `idle_max`
/// passed since the last activity with no request in flight (`Idle`).
async fn stop_reading(
    broker: &Broker,
    idle_max: Option<Duration>,
    activity: &LastActivity,
    in_flight: impl Fn() -> bool,
) -> ConnectionEnd {
    let idle = async {
        let Some(idle_max) = idle_max else {
            return std::future::pending().await;
        };
        loop {
            let idle_for = activity.get().elapsed();
            if idle_for >= idle_max && !in_flight() {
                return ConnectionEnd::Idle;
            }
            // A request in flight keeps the connection: look again one period later (its
            // reply, when written, moves the last activity on).
            glommio::timer::sleep(idle_max.checked_sub(idle_for).unwrap_or(idle_max)).await;
        }
    };
    let idle = std::pin::pin!(idle);
    let shutdown = std::pin::pin!(broker.context.shutdown_requested());
    match select(idle, shutdown).await {
        Either::Left((end, _)) => end,
        Either::Right(((), _)) => ConnectionEnd::Closed,
    }
}

/// Reads and starts requests from `received` (bytes read before, the start of a frame or
/// whole ones) on, until the connection ends or moves to another shard. Frames are bounded by
/// `frame_bytes_max`, or far less before SASL authentication on a SASL listener.
async fn read_requests<R: AsyncRead + Unpin>(
    reader: &mut R,
    received: &mut BytesMut,
    security: &mut ConnectionSecurity,
    pipeline: Pipeline<'_>,
    activity: &LastActivity,
    routing: &mut Routing,
) -> ReadEnd {
    let config = pipeline.config;
    let mut chunk = vec![0u8; config.read_chunk_bytes];
    let waiting = Waiting {
        broker: pipeline.broker,
        config,
        activity,
        budget: &pipeline.budget,
    };
    loop {
        let frame_bytes_max = loop {
            let frame_bytes_max = security
                .authentication
                .frame_bytes_max(config.frame_bytes_max, Instant::now());
            let frame = match take_frame(received, frame_bytes_max) {
                Ok(Some(frame)) => frame.freeze(),
                Ok(None) => break frame_bytes_max,
                Err(error) => return ReadEnd::Ended(ConnectionEnd::BadInput(error.to_string())),
            };
            if let Err(end) = pipeline.start(frame, security, routing).await {
                return ReadEnd::Ended(end);
            }
        };
        // A request boundary with every request read so far started: where the connection may
        // move to the shard its requests go to.
        if let Some(to) = routing.destination(Instant::now()) {
            match pipeline.drain(routing).await {
                Drain::Done => return ReadEnd::Moving(to),
                Drain::GivenUp => {}
                Drain::Shutdown => return ReadEnd::Ended(ConnectionEnd::Closed),
            }
        }
        // A frame longer than a read chunk (a produce request of large batches) is read
        // straight into a buffer of its own, sized once: no copy out of `chunk`, no regrowth,
        // and its batches own their bytes (the produce handler hands them on without a copy).
        match frame_bytes(received, frame_bytes_max) {
            Ok(Some(frame_end)) if frame_end > config.read_chunk_bytes => {
                let frame = match read_own_frame(reader, &waiting, received, frame_end).await {
                    Ok(frame) => frame,
                    Err(end) => return ReadEnd::Ended(end),
                };
                if let Err(end) = pipeline.start(frame, security, routing).await {
                    return ReadEnd::Ended(end);
                }
                continue;
            }
            Ok(_) => {}
            Err(error) => return ReadEnd::Ended(ConnectionEnd::BadInput(error.to_string())),
        }
        match waiting.read(reader, &mut chunk).await {
            Ok(0) if received.is_empty() => return ReadEnd::Ended(ConnectionEnd::Closed),
            Ok(0) => {
                return ReadEnd::Ended(ConnectionEnd::BadInput(format!(
                    "closed in the middle of a frame ({} bytes of it received)",
                    received.len()
                )))
            }
            Ok(read) => received.extend_from_slice(&chunk[..read]),
            Err(end) => return ReadEnd::Ended(end),
        }
    }
}

/// What a read waits on besides the socket: shutdown, and the idle limit.
struct Waiting<'a> {
    broker: &'a Broker,
    config: ConnectionConfig,
    activity: &'a LastActivity,
    budget: &'a Semaphore,
}

impl Waiting<'_> {
    /// One read into `buffer`, or why the reader must stop instead.
    async fn read<R: AsyncRead + Unpin>(
        &self,
        reader: &mut R,
        buffer: &mut [u8],
    ) -> Result<usize, ConnectionEnd> {
        let read = std::pin::pin!(reader.read(buffer));
        // Every permit back: no request started and not yet answered.
        let in_flight = || self.budget.available() < self.config.pipeline_bytes_max as u64;
        let stop = std::pin::pin!(stop_reading(
            self.broker,
            self.config.idle_max,
            self.activity,
            in_flight
        ));
        match select(read, stop).await {
            Either::Left((Ok(read), _)) => {
                self.activity.set(Instant::now());
                self.broker.metrics.bytes_received(read as u64);
                Ok(read)
            }
            Either::Left((Err(error), _)) => Err(ConnectionEnd::Io(error)),
            Either::Right((end, _)) => Err(end),
        }
    }
}

/// Reads the rest of the frame whose first bytes are all of `received` (`frame_end` bytes with
/// its length prefix) into a buffer of exactly that size, and returns its body. The buffer
/// starts zeroed (`calloc`: fresh pages cost no pass), so reads go straight into it.
async fn read_own_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    waiting: &Waiting<'_>,
    received: &mut BytesMut,
    frame_end: usize,
) -> Result<Bytes, ConnectionEnd> {
    let mut frame = BytesMut::zeroed(frame_end);
    let mut filled = received.len();
    frame[..filled].copy_from_slice(received);
    received.clear();
    while filled < frame_end {
        match waiting.read(reader, &mut frame[filled..]).await? {
            0 => {
                return Err(ConnectionEnd::BadInput(format!(
                    "closed in the middle of a frame ({filled} bytes of it received)"
                )))
            }
            read => filled += read,
        }
    }
    frame.advance(FRAME_LENGTH_BYTES);
    Ok(frame.freeze())
}

/// Where the reader starts requests: the queue to the writer, and the connection's bounds.
struct Pipeline<'a> {
    peer: SocketAddr,
    queue: LocalSender<Started>,
    broker: &'a Rc<Broker>,
    config: ConnectionConfig,
    /// One unit per request started and not yet answered and written (`pipeline_depth`).
    places: Rc<Semaphore>,
    /// The bytes of those requests (`pipeline_bytes_max`).
    budget: Rc<Semaphore>,
    /// The connection's mute while its client is over a quota (KIP-219).
    throttle: Rc<ConnectionThrottle>,
}

/// How a drain before a move ended.
enum Drain {
    /// Every request started was answered and its reply written.
    Done,
    /// Not within the rule's `drain_max`: the connection stays.
    GivenUp,
    Shutdown,
}

impl Pipeline<'_> {
    /// Starts one request (in arrival order) once the connection's bounds admit it, and queues
    /// the rest of its handling for the writer; ends the connection after it if its SASL
    /// authentication failed (the writer still sends the answer).
    async fn start(
        &self,
        frame: Bytes,
        security: &mut ConnectionSecurity,
        routing: &mut Routing,
    ) -> Result<(), ConnectionEnd> {
        self.wait_out_throttle().await?;
        let bytes = frame.len().min(self.config.pipeline_bytes_max) as u64;
        let Ok(place) = self.places.acquire_static_permit(1).await else {
            return Err(ConnectionEnd::Closed);
        };
        let Ok(held_bytes) = self.budget.acquire_static_permit(bytes).await else {
            return Err(ConnectionEnd::Closed);
        };
        let admission = Admission {
            _place: place,
            _bytes: held_bytes,
        };
        let pending = self
            .broker
            .start(frame, self.peer, security, routing, &self.throttle)
            .await
            .map_err(ConnectionEnd::BadInput)?;
        let started = glommio::spawn_local(pending).detach();
        if self.queue.send((started, admission)).await.is_err() {
            // The writer stopped (the socket failed); it says why.
            return Err(ConnectionEnd::Closed);
        }
        if let Some(reason) = security.authentication.take_closing() {
            return Err(ConnectionEnd::BadInput(reason));
        }
        // A backlog of a thousand requests starts without awaiting anything: give the shard's
        // other work (replication, commits, other connections) its turn once the time slice is
        // over.
        glommio::yield_if_needed().await;
        Ok(())
    }

    /// Starts no request while the connection is muted for its client's quota (KIP-219: the
    /// broker reads nothing more from it until the throttle time has passed).
    async fn wait_out_throttle(&self) -> Result<(), ConnectionEnd> {
        let remaining = self.throttle.remaining(Instant::now());
        if remaining.is_zero() {
            return Ok(());
        }
        let waited = std::pin::pin!(glommio::timer::sleep(remaining));
        let shutdown = std::pin::pin!(self.broker.context.shutdown_requested());
        match select(waited, shutdown).await {
            Either::Left(_) => Ok(()),
            Either::Right(_) => Err(ConnectionEnd::Closed),
        }
    }

    /// Waits until every request started was answered and its reply written (every place
    /// free again), with the connection's long polls told to answer at once, for at most the
    /// rule's `drain_max`.
    async fn drain(&self, routing: &Routing) -> Drain {
        let draining = routing.draining();
        draining.start();
        let depth = self.config.pipeline_depth as u64;
        let every_place = std::pin::pin!(self.places.acquire_permit(depth));
        let give_up = std::pin::pin!(glommio::timer::sleep(routing.drain_max()));
        let shutdown = std::pin::pin!(self.broker.context.shutdown_requested());
        let drain = match select(every_place, select(give_up, shutdown)).await {
            Either::Left((Ok(_every_place), _)) => Drain::Done,
            // The semaphore is never closed.
            Either::Left((Err(_), _)) => Drain::GivenUp,
            Either::Right((Either::Left(_), _)) => Drain::GivenUp,
            Either::Right((Either::Right(_), _)) => Drain::Shutdown,
        };
        draining.stop();
        drain
    }
}

/// Memory bytes of replies gathered into one `sendmsg` at most: beyond it the writer sends what
/// it has before taking the next ready reply. A reply larger than this still goes out whole.
const COALESCED_REPLY_BYTES_MAX: usize = 1 << 20;

/// Writes the replies of the requests `queued`, in order, until the queue's sender is gone and
/// every reply was written (or writing fails); gives `writer` back with why it stopped.
async fn write_replies<W: AsyncWrite + Unpin>(
    queued: LocalReceiver<Started>,
    mut writer: W,
    wire: Wire,
    broker: Rc<Broker>,
    activity: LastActivity,
) -> (ConnectionEnd, W) {
    let end = write_replies_to(queued, &mut writer, wire, broker, activity).await;
    (end, writer)
}

async fn write_replies_to<W: AsyncWrite + Unpin>(
    queued: LocalReceiver<Started>,
    writer: &mut W,
    wire: Wire,
    broker: Rc<Broker>,
    activity: LastActivity,
) -> ConnectionEnd {
    let mut sending = Sending {
        wire,
        splicer: None,
        memory: Vec::new(),
        memory_bytes: 0,
        io_vectors: Vec::new(),
    };
    // The admissions of replies queued but not yet sent: they count against the connection's
    // bounds until they are on the socket.
    let mut admissions = Vec::with_capacity(1);
    // A request taken from the queue whose reply was not ready yet: the next to await.
    let mut next: Option<Started> = None;
    loop {
        let started = match next.take() {
            Some(started) => started,
            None => match queued.recv().await {
                Some(started) => started,
                None => return ConnectionEnd::Closed,
            },
        };
        let (mut handle, admission) = started;
        let mut reply = (&mut handle).await;
        admissions.push(admission);
        // Every reply that is ready now goes out with this one, in one `sendmsg`: one durable
        // commit answers many pipelined requests at once (a produce request per partition
        // batch, as librdkafka sends them), and a system call and a client wake-up per reply
        // cost more than the reply.
        loop {
            match reply {
                Some(Ok(reply)) => {
                    if let Err(error) = sending.queue(writer, reply, &broker).await {
                        return ConnectionEnd::Io(error);
                    }
                }
                Some(Err(reason)) => return ConnectionEnd::BadInput(reason),
                // The task was cancelled: only at executor teardown.
                None => return ConnectionEnd::Closed,
            }
            if sending.memory_bytes >= COALESCED_REPLY_BYTES_MAX {
                break;
            }
            // Polled once, not awaited: a reply that is not ready waits for the next round.
            let Some(Some((mut handle, admission))) = queued.recv().now_or_never() else {
                break;
            };
            match (&mut handle).now_or_never() {
                Some(ready) => {
                    reply = ready;
                    admissions.push(admission);
                }
                None => {
                    next = Some((handle, admission));
                    break;
                }
            }
        }
        if let Err(error) = sending.send_memory(writer, &broker).await {
            return ConnectionEnd::Io(error);
        }
        admissions.clear();
        activity.set(Instant::now());
    }
}

/// How a connection's writer sends replies: on a plaintext socket, each run of memory parts (of
/// one reply or of several ready together) in one gathered call (`send_gathered`), each file
/// range spliced from its segment file (`send_file`); through TLS, the memory parts written
/// and flushed together, each file range read and written a chunk at a time.
struct Sending {
    wire: Wire,
    /// Made on the first file range the connection sends.
    splicer: Option<Splicer>,
    /// The run of memory parts not yet sent.
    memory: Vec<Bytes>,
    /// Their bytes.
    memory_bytes: usize,
    /// Scratch space of the gathered sends.
    io_vectors: Vec<libc::iovec>,
}

impl Sending {
    /// Sends `reply`'s file ranges (and the memory parts before each) and keeps its trailing
    /// memory parts for the next [`Sending::send_memory`].
    async fn queue<W: AsyncWrite + Unpin>(
        &mut self,
        writer: &mut W,
        reply: Reply,
        broker: &Broker,
    ) -> std::io::Result<()> {
        for part in reply {
            match part {
                ResponsePart::Memory(bytes) => {
                    self.memory_bytes += bytes.len();
                    self.memory.push(bytes);
                }
                ResponsePart::File {
                    file,
                    position,
                    length,
                } => {
                    self.send_memory(writer, broker).await?;
                    let socket_fd = match self.wire {
                        Wire::Socket(socket_fd) => socket_fd,
                        Wire::Tls => {
                            broker.metrics.bytes_sent(length, false);
                            copy_file_range(writer, file.file(), position, length).await?;
                            continue;
                        }
                    };
                    broker.metrics.bytes_sent(length, true);
                    let splicer = match &mut self.splicer {
                        Some(splicer) => splicer,
                        None => self.splicer.insert(Splicer::new()?),
                    };
                    splicer
                        .send(socket_fd, writer, &file, position, length)
                        .await?;
                }
            }
        }
        Ok(())
    }

    async fn send_memory<W: AsyncWrite + Unpin>(
        &mut self,
        writer: &mut W,
        broker: &Broker,
    ) -> std::io::Result<()> {
        if self.memory.is_empty() {
            return Ok(());
        }
        broker.metrics.bytes_sent(self.memory_bytes as u64, false);
        let sent = match self.wire {
            Wire::Socket(socket_fd) => {
                send_all(socket_fd, writer, &self.memory, &mut self.io_vectors).await
            }
            Wire::Tls => write_and_flush(writer, &self.memory).await,
        };
        self.memory.clear();
        self.memory_bytes = 0;
        sent
    }
}

/// Bytes of a file range read into memory at a time on a TLS connection (rustls cuts them into
/// records of 16 KiB).
const FILE_COPY_CHUNK_BYTES: usize = 256 << 10;

/// Writes `buffers` through `writer` (rustls: it encrypts them into records) and flushes them
/// onto the socket.
async fn write_and_flush<W: AsyncWrite + Unpin>(
    writer: &mut W,
    buffers: &[Bytes],
) -> std::io::Result<()> {
    for buffer in buffers {
        writer.write_all(buffer).await?;
    }
    writer.flush().await
}

/// Writes `length` bytes of `file` from `position` through `writer`, a chunk at a time: what a
/// TLS connection does instead of a splice. The reads are from the page cache, where a fetch's
/// recent data is, as the splice's are.
async fn copy_file_range<W: AsyncWrite + Unpin>(
    writer: &mut W,
    file: &std::fs::File,
    position: u64,
    length: u64,
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut chunk = vec![0u8; FILE_COPY_CHUNK_BYTES.min(length as usize)];
    let mut copied = 0u64;
    while copied < length {
        let wanted = chunk.len().min((length - copied) as usize);
        file.read_exact_at(&mut chunk[..wanted], position + copied)?;
        writer.write_all(&chunk[..wanted]).await?;
        copied += wanted as u64;
    }
    writer.flush().await
}
