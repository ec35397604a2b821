//! The controller of one broker: its member of the Raft group that holds the metadata log,
//! the image it applies that log to, and the requests it makes of (or, leading, decides for)
//! the cluster. It runs on one shard of the broker.
//!
//! Why: every broker must agree on which brokers are alive and where each partition lives
//! (KRaft's controller quorum). The decisions are the pure `plan_*` functions of
//! [`crate::metadata`]; this module is the I/O around them:
//! - **The log**: the internal partition `__cluster_metadata-0`, opened in every broker's data
//!   directory like any partition and replicated by a [`PartitionReplica`] whose voters are
//!   the controller voters (the [`VOTERS_DEFAULT_COUNT`] lowest node ids by default). The
//!   other brokers' replicas are observers (see `RaftNode`): they fetch the log from the
//!   leader, which counts them for nothing, and find a new leader themselves after a change,
//!   so a cluster may have any number of brokers while elections and commits involve only the
//!   voters (KRaft's controller quorum and its observers). An entry is one record batch whose
//!   one record is a batch of [`MetadataRecord`]s (`apply`).
//! - **Apply**: on every broker, voter or observer, a task applies committed entries (up to the log's high-water mark) to the
//!   [`MetadataImage`] in log order; [`Controller::wait_applied`] waits for an index. After a
//!   restart the image starts empty and is rebuilt from the log as the commit point is learnt
//!   again (the log is never compacted yet, so it holds everything).
//! - **Requests** ([`Controller::request`], `forward`): any broker can ask; a broker that does
//!   not lead forwards to the leader over the transport and retries on a timeout or a
//!   `NotLeader` answer until `request_timeout`. The leader (`leader`) decides one request at a
//!   time: it waits until its image has applied its whole log (so a new leader plans against
//!   everything earlier leaders committed), plans, proposes with acks=all and answers with the
//!   entry's index once committed and applied. A retry after a lost answer is decided again
//!   (a topic created by the first attempt makes the retry TOPIC_ALREADY_EXISTS, as in Kafka).
//! - **Liveness**: every broker registers at start (a new incarnation, fenced until heard
//!   from) and heartbeats at once, then every `heartbeat_interval`; the leader notes heartbeats
//!   in memory, runs [`crate::metadata::plan_liveness`] at once on a fenced broker's heartbeat
//!   and every `liveness_check_interval`. A new leader
//!   counts every broker of its image as heard from when it takes over, so none is fenced for
//!   the silence of the election.
//!
//! - **Producer ids** (`producer_ids`): the controller's shard keeps the broker's
//!   [`ProducerIdPool`] supplied with blocks of producer ids committed to the log for this run
//!   (KIP-730), asking for the next one before the current runs out.
//!
//! A broker that is not a voter never leads, so its requests are always forwarded; otherwise it
//! is a controller like any other.
//!
//! [`ControllerWire`] carries all of it; [`Controller::receive`] is the one routing function.

mod apply;
mod forward;
mod leader;
mod producer_ids;
mod wire;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use engine::catalog::partition_directory_name;
use engine::waiters::Waiters;
use engine::{LogConfig, LogError, PartitionLog, SystemClock};
use futures::channel::oneshot;
use futures::future::{select, Either};

use crate::message::{Index, Message, NodeId};
use crate::metadata::{BrokerRegistration, MetadataImage, MetadataRecord, PlanError};
use crate::replica::{Outbox, PartitionReplica, ReplicaConfig, ReplicaError};
use crate::transport::Transport;
use crate::{RoleKind, SplitMix64};
pub use producer_ids::ProducerIdPool;
pub use wire::{
    ConfigChange, ConfigOperation, ControllerRequest, ControllerWire, Outcome, WirePlanError,
};

/// The internal topic of the metadata log (one partition, 0).
pub const METADATA_TOPIC: &str = engine::catalog::CLUSTER_METADATA_TOPIC;
/// How many brokers are controller voters unless configured otherwise.
pub const VOTERS_DEFAULT_COUNT: usize = 3;

/// Where the controller's messages go: the inter-broker transport (or a test's network).
/// Sending never waits; a message may be lost (everything here retries).
pub trait WireOutbox {
    fn send(&self, to: NodeId, wire: ControllerWire, payload: Bytes);
}

impl WireOutbox for Transport<ControllerWire> {
    fn send(&self, to: NodeId, wire: ControllerWire, payload: Bytes) {
        // A full queue drops the oldest message, an unknown peer this one: both are losses
        // the senders retry after.
        let _ = Transport::send(self, to, &wire, payload);
    }
}

/// The metadata group's Raft messages, wrapped for the controller's wire.
struct RaftOutbox(Rc<dyn WireOutbox>);

impl Outbox for RaftOutbox {
    fn send(&self, to: NodeId, message: Message, payload: Bytes) {
        self.0.send(to, ControllerWire::Raft(message), payload);
    }
}

/// One broker's controller settings.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// This broker, as it registers; `incarnation` must differ at every start of the process.
    pub registration: BrokerRegistration,
    /// The metadata group's member: `node_id` is this broker's, `initial_voters` the
    /// controller voters (this broker's replica is an observer unless it is one of them),
    /// `seed` also seeds topic ids and request ids, so give each start its own.
    pub replica: ReplicaConfig,
    /// The broker's data directory; the metadata log is in `__cluster_metadata-0/` under it.
    pub data_dir: PathBuf,
    pub metadata_log_config: LogConfig,
    /// The broker-wide topic defaults new topics' overrides are checked against.
    pub broker_log_config: LogConfig,
    /// Real time per Raft tick (the replica's timeouts are in ticks).
    pub tick_interval: Duration,
    /// How often this broker tells the leader it is alive (Kafka's 2 s).
    pub heartbeat_interval: Duration,
    /// A broker not heard from for longer is fenced (Kafka's `broker.session.timeout.ms`, 9 s).
    pub session_timeout: Duration,
    /// How often the leader looks for brokers to fence or unfence.
    pub liveness_check_interval: Duration,
    /// How long one attempt at the (presumed) leader may take before trying again.
    pub attempt_timeout: Duration,
    /// How long a request keeps trying before it fails (Kafka's `request.timeout.ms`).
    pub request_timeout: Duration,
    /// Requests from other brokers being decided at once; more are dropped (their senders
    /// time out and retry).
    pub served_requests_max: usize,
}

impl ControllerConfig {
    /// Kafka-like defaults for `registration`'s broker in a cluster of `peers` (every broker's
    /// node id, this one's included) whose `voter_count` lowest ids are the controller voters.
    pub fn new(
        registration: BrokerRegistration,
        peers: impl IntoIterator<Item = NodeId>,
        voter_count: usize,
        data_dir: PathBuf,
        seed: u64,
    ) -> ControllerConfig {
        let tick_interval = Duration::from_millis(10);
        ControllerConfig {
            replica: ReplicaConfig {
                node_id: registration.node_id,
                initial_voters: voters_of(peers, voter_count),
                // KRaft's 1 s election timeout, in 10 ms ticks.
                election_timeout_ticks_min: 100,
                begin_epoch_interval_ticks: 20,
                // A follower resends a fetch unanswered for 0.6 s: below the election timeout,
                // above the leader's long poll.
                fetch_timeout_ticks: 60,
                fetch_wait_ticks: 50,
                fetch_bytes_max: 1 << 20,
                seed,
                // Any voter may lead the metadata log.
                preferred_leader_check_ticks: 0,
            },
            registration,
            data_dir,
            metadata_log_config: metadata_log_config(),
            broker_log_config: LogConfig::default(),
            tick_interval,
            heartbeat_interval: Duration::from_secs(2),
            session_timeout: Duration::from_secs(9),
            liveness_check_interval: Duration::from_secs(1),
            attempt_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(30),
            served_requests_max: 1024,
        }
    }

    fn node_id(&self) -> NodeId {
        self.replica.node_id
    }

    fn voters(&self) -> &[NodeId] {
        &self.replica.initial_voters
    }
}

/// The controller voters of a cluster of `peers`: the `voter_count` lowest node ids, in order.
pub fn voters_of(peers: impl IntoIterator<Item = NodeId>, voter_count: usize) -> Vec<NodeId> {
    assert!(voter_count >= 1, "a controller group has a voter");
    let mut peers: Vec<NodeId> = peers.into_iter().collect();
    peers.sort_unstable();
    peers.dedup();
    peers.truncate(voter_count);
    peers
}

/// The metadata log keeps everything (the image is rebuilt from it) in small segments.
pub fn metadata_log_config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 8 << 20,
        segment_age_ms_max: None,
        retention_age_ms_max: None,
        retention_bytes_max: None,
        preallocate_bytes: 1 << 20,
        ..LogConfig::default()
    }
}

/// Why a request was not done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControllerError {
    /// The leader refused it, as Kafka would (the error names the Kafka code).
    #[error(transparent)]
    Refused(#[from] PlanError),
    /// No leader answered within `request_timeout` (Kafka's REQUEST_TIMED_OUT).
    #[error("no controller leader answered within {0:?}")]
    Timeout(Duration),
    /// The leader could not write the change.
    #[error("the controller leader could not write the change: {0}")]
    Failed(String),
    #[error("the controller stopped: {0}")]
    Stopped(String),
}

/// Why the controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("the metadata log: {0}")]
    Log(#[from] LogError),
    #[error("the metadata log's replica: {0}")]
    Replica(#[from] ReplicaError),
}

/// One broker's controller; see the module documentation. Cheap to clone; lives on the shard
/// that opened it.
#[derive(Clone)]
pub struct Controller {
    inner: Rc<Inner>,
}

struct Inner {
    config: ControllerConfig,
    /// This broker's member of the metadata group: a voter or an observer.
    replica: PartitionReplica,
    outbox: Rc<dyn WireOutbox>,
    image: Rc<RefCell<MetadataImage>>,
    /// The last index of the metadata log applied to the image (control entries included,
    /// which the image's own `last_applied_index` does not count).
    applied_index: Cell<Index>,
    /// Woken when the applied index moves, at every tick, at stop.
    changes: Waiters,
    stopped: RefCell<Option<String>>,
    started: Instant,
    /// Requests this broker sent to a leader, by request id, until answered or timed out (one
    /// per `request` call in flight).
    pending: RefCell<HashMap<u64, oneshot::Sender<Outcome>>>,
    request_id_next: Cell<u64>,
    served_in_flight: Cell<usize>,
    /// The leader decides one request at a time.
    deciding: futures::lock::Mutex<()>,
    /// When each broker was last heard from (milliseconds since `started`), while leading.
    heartbeats_ms: RefCell<BTreeMap<NodeId, u64>>,
    /// The term in which this broker last took over as leader.
    leading_term: Cell<Option<u64>>,
    topic_ids: RefCell<SplitMix64>,
    /// This run's producer ids, which every shard of the broker takes from.
    producer_ids: Arc<ProducerIdPool>,
}

impl Controller {
    /// Starts this broker's controller on the current shard: opens the metadata log and its
    /// replica (an observer unless this broker is a voter), and starts applying the log,
    /// registering, heartbeating and keeping `producer_ids` supplied.
    pub async fn open(
        config: ControllerConfig,
        outbox: Rc<dyn WireOutbox>,
        producer_ids: Arc<ProducerIdPool>,
    ) -> Result<Controller, OpenError> {
        assert_eq!(
            config.registration.node_id,
            config.node_id(),
            "the controller registers its own broker"
        );
        assert!(!config.voters().is_empty(), "a controller group has voters");
        let dir = config
            .data_dir
            .join(partition_directory_name(METADATA_TOPIC, 0));
        let log = PartitionLog::open(
            &dir,
            config.metadata_log_config.clone(),
            Rc::new(SystemClock),
        )
        .await?;
        let replica = PartitionReplica::open(
            config.replica.clone(),
            dir,
            Rc::new(log),
            Rc::new(RaftOutbox(outbox.clone())),
        )?;
        let mut random = SplitMix64::new(config.replica.seed);
        let request_id_next = random.next_u64();
        let controller = Controller {
            inner: Rc::new(Inner {
                replica,
                outbox,
                image: Default::default(),
                applied_index: Cell::new(0),
                changes: Waiters::default(),
                stopped: RefCell::new(None),
                started: Instant::now(),
                pending: Default::default(),
                request_id_next: Cell::new(request_id_next),
                served_in_flight: Cell::new(0),
                deciding: futures::lock::Mutex::new(()),
                heartbeats_ms: Default::default(),
                leading_term: Cell::new(None),
                topic_ids: RefCell::new(random),
                producer_ids,
                config,
            }),
        };
        let replica = controller.inner.replica.clone();
        glommio::spawn_local(controller.clone().run_ticks(replica.clone())).detach();
        glommio::spawn_local(controller.clone().run_apply(replica)).detach();
        glommio::spawn_local(controller.clone().run_liveness_checks()).detach();
        glommio::spawn_local(controller.clone().run_membership()).detach();
        glommio::spawn_local(controller.clone().run_producer_ids()).detach();
        Ok(controller)
    }

    /// Routes a message of the controller protocol from broker `from`.
    pub fn receive(&self, from: NodeId, wire: ControllerWire, payload: Bytes) {
        match wire {
            ControllerWire::Raft(message) => self.inner.replica.receive(from, message, payload),
            ControllerWire::Request {
                request_id,
                request,
            } => self.serve(from, request_id, request),
            ControllerWire::Response {
                request_id,
                outcome,
            } => self.complete(request_id, outcome),
        }
    }

    /// The metadata as applied so far.
    pub fn image(&self) -> Rc<RefCell<MetadataImage>> {
        self.inner.image.clone()
    }

    /// The last metadata log index applied to the image.
    pub fn applied_index(&self) -> Index {
        self.inner.applied_index.get()
    }

    /// Resolves once the image has applied the entry at `index` (what
    /// [`request`](Self::request) answered).
    pub async fn wait_applied(&self, index: Index) -> Result<(), ControllerError> {
        self.inner
            .changes
            .until(|| self.applied_index() >= index || self.stopped().is_some())
            .await;
        match self.stopped() {
            Some(reason) => Err(ControllerError::Stopped(reason)),
            None => Ok(()),
        }
    }

    /// Whether this broker leads the controller group.
    pub fn is_leader(&self) -> bool {
        self.inner.replica.role() == RoleKind::Leader
    }

    /// The controller leader as far as this broker knows.
    pub fn leader(&self) -> Option<NodeId> {
        self.inner.replica.leader()
    }

    /// Why the controller stopped, if it did.
    pub fn stopped(&self) -> Option<String> {
        self.inner.stopped.borrow().clone()
    }

    /// Stops every task of the controller and its replica; requests fail with
    /// [`ControllerError::Stopped`].
    pub fn stop(&self, reason: &str) {
        {
            let mut stopped = self.inner.stopped.borrow_mut();
            if stopped.is_some() {
                return;
            }
            *stopped = Some(reason.to_owned());
        }
        self.inner.replica.stop(reason);
        self.inner.pending.borrow_mut().clear();
        self.inner.changes.wake_all();
    }

    fn node_id(&self) -> NodeId {
        self.inner.config.node_id()
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.inner.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Drives the replica's logical clock; each tick also wakes waiters that re-check the
    /// replica's role.
    async fn run_ticks(self, replica: PartitionReplica) {
        loop {
            glommio::timer::sleep(self.inner.config.tick_interval).await;
            if self.stopped().is_some() {
                return;
            }
            replica.tick();
            if let Some(reason) = replica.stopped() {
                self.stop(&reason);
            }
            self.inner.changes.wake_all();
        }
    }

    /// Applies committed entries as the high-water mark moves.
    async fn run_apply(self, replica: PartitionReplica) {
        let log = replica.log().clone();
        loop {
            let offset_next = self.applied_index();
            let stopped = self.inner.changes.until(|| self.stopped().is_some());
            let committed = log.wait_for_high_watermark_above(offset_next);
            futures::pin_mut!(stopped, committed);
            if let Either::Left(_) = select(stopped, committed).await {
                return;
            }
            if log.high_watermark() <= offset_next {
                // The wait ends without a new commit only when the log closes or fails. A
                // failed log's replica rebuilds itself from the disk (see `replica`): apply
                // again once it has.
                if log.fault().is_some() {
                    glommio::timer::sleep(self.inner.config.tick_interval).await;
                    continue;
                }
                self.stop("the metadata log closed");
                return;
            }
            let applied =
                apply::apply_committed(&log, &self.inner.image, &self.inner.applied_index).await;
            self.inner.changes.wake_all();
            if let Err(error) = applied {
                self.stop(&format!("cannot apply the metadata log: {error}"));
                return;
            }
        }
    }

    /// Registers this broker, then heartbeats until stopped.
    async fn run_membership(self) {
        let registration =
            ControllerRequest::RegisterBroker(self.inner.config.registration.clone());
        loop {
            match self.request(registration.clone()).await {
                Ok(_) => break,
                Err(ControllerError::Stopped(_)) => return,
                Err(error) => {
                    engine::log_rate_limited!(
                        "controller: registering broker {}: {error}",
                        self.node_id()
                    );
                    glommio::timer::sleep(self.inner.config.heartbeat_interval).await;
                }
            }
        }
        let heartbeat = ControllerRequest::Heartbeat {
            node_id: self.node_id(),
        };
        while self.stopped().is_none() {
            // The first at once: a new run is fenced (left out of every broker's Metadata
            // answers) until the leader hears from it. A missed heartbeat is retried at the
            // next interval.
            let _ = self.request(heartbeat.clone()).await;
            glommio::timer::sleep(self.inner.config.heartbeat_interval).await;
        }
    }
}

/// `future`'s output, or `None` if `duration` passes first (the future is dropped).
pub(crate) async fn within<T>(duration: Duration, future: impl Future<Output = T>) -> Option<T> {
    let timer = glommio::timer::sleep(duration);
    futures::pin_mut!(future, timer);
    match select(future, timer).await {
        Either::Left((output, _)) => Some(output),
        Either::Right(_) => None,
    }
}

/// A fresh topic id: a random (version 4) UUID.
fn random_uuid(random: &mut SplitMix64) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&random.next_u64().to_be_bytes());
    id[8..].copy_from_slice(&random.next_u64().to_be_bytes());
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    id
}

/// Records of the leader's decisions, for [`leader`].
type Planned = Result<Vec<MetadataRecord>, PlanError>;
