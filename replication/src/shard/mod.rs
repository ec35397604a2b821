//! Replication on one shard of a broker: the shard's inter-broker transport, the partition
//! replicas the shard owns, their logical clock, and the routing of peers' messages to them.
//!
//! Every shard runs one [`ShardReplication`]. Its transport binds the broker's RPC address
//! (SO_REUSEPORT: the kernel spreads peers' connections over the shards) and opens one
//! connection to each peer broker, so a peer's message for a partition may arrive on any shard;
//! it is posted to the owning shard over the mesh ([`ShardContext::post`], a closure over the
//! typed messages, one per owning shard and frame) when that is another one, and controller
//! and hosting calls go to their shard with [`ShardContext::call_on`], answered over the mesh.
//! Producer batches reach the replicas the same way, down from the Kafka handlers: routed to the
//! owning shard, one mesh call per owning shard and request (`produce`). Each replica tells its
//! shard who may serve its partition's clients whenever that changes
//! ([`ShardContext::set_client_access`], data the engine reads, so followers refuse clients
//! without the engine calling up here).
//!
//! The unit of bookkeeping is the shard and the broker pair, not the partition, so that a shard
//! with thousands of idle replicas costs little more than one with a few:
//! - Time: the shard's clock ticks every 10 ms, but a replica runs only at the ticks it asked
//!   for ([`crate::replica::Schedule`]: a timer wheel of the shard's replicas). Between them it
//!   costs nothing; its Raft core is brought up to date in one step when it runs or is handed
//!   anything.
//! - Who leads: a replica tells the shard when its role, term or leader changes, and the shard
//!   writes the changes of a tick into the broker's [`LeaderTable`] together (a broker's death
//!   moves a thousand leaderships within a second or so).
//! - Traffic: every partition message one shard has for one peer within one executor turn
//!   travels as one frame naming each topic once ([`Coalescer`]); a partition's `Durable`
//!   reports in it collapse into the latest (a follower's journal sync makes a whole
//!   answer's batches durable at once, and each reports). Followers' idle fetches are
//!   held at the leader until the shard's next fetch round (every `fetch_wait_ticks`) and all
//!   answered in one turn, so the next fetches come back together too: idle, each broker pair
//!   exchanges one frame each way per round, whatever the partition count (Kafka's replica
//!   fetcher sends one Fetch per broker pair; Redpanda coalesces heartbeats per node pair).
//!
//! Files: this one (the shard's replication: start, routing, hosting, the tick), `produce`
//! (producers' batches to the replicas), `wire` (what brokers' shards say to each other),
//! `leaders` (the broker's [`LeaderTable`]), `registry` (the shard's replicas and their timers),
//! `coalescer` (a turn's partition messages per peer, one frame each).
//!
//! Besides partitions, controller messages and requests go to the shard that owns
//! `__cluster_metadata-0`, where the controller runs; one wire type (`wire`) carries partition
//! messages, controller messages, leader reports and calls between brokers (transaction
//! markers, transactional produces' verifications: served, and their answers routed, by the
//! cluster's `PeerCalls`, which the shard is given at its start).

mod coalescer;
mod leaders;
mod produce;
mod registry;
mod wire;

pub use coalescer::{Coalescer, CoalescerStats};
pub use leaders::LeaderTable;
pub use wire::{BrokerWire, LeaderReport, PartitionMessage};

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use engine::shard::{PartitionId, ShardContext};

use coalescer::{batch_count, message_kind, PartitionOutbox};
use registry::{Registry, ReplicaSlot, ShardTimers};
use wire::ControllerOutbox;

use crate::cluster::{PeerCalls, PeerWire};
use crate::controller::{
    Controller, ControllerError, ControllerRequest, ControllerWire, WireOutbox, METADATA_TOPIC,
};
use crate::message::{Index, Message, NodeId};
use crate::node::RoleKind;
use crate::replica::{report_term_limit, PartitionReplica, ReplicaConfig, ReplicaError};
use crate::stats::{MessageKind, ReplicationStats};
use crate::transport::peer_auth::{ClusterIdentity, ClusterSecret};
use crate::transport::{Received, Transport, TransportConfig, TransportError};
use crate::votes::{RecoveredVotes, VoteLog};
use crate::wheel::TimerWheel;

/// What every shard of a broker is configured with.
#[derive(Debug, Clone)]
pub struct ReplicationConfig {
    /// The cluster's id, shared by the broker's shards (empty until known; see
    /// `transport::peer_auth`).
    pub cluster_id: ClusterIdentity,
    /// The cluster's shared secret every peer must prove it holds; `None`: the inter-broker
    /// port believes any caller.
    pub secret: Option<ClusterSecret>,
    pub node_id: NodeId,
    /// The inter-broker listener every shard binds (already resolved if it was port 0).
    pub rpc_listen: SocketAddr,
    /// Every broker's RPC address, this one's included.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// The replicas' logical clock.
    pub tick: Duration,
    pub election_timeout_ticks_min: u64,
    pub begin_epoch_interval_ticks: u64,
    pub fetch_timeout_ticks: u64,
    pub fetch_wait_ticks: u64,
    pub fetch_bytes_max: usize,
    /// How often a partition leader checks whether to hand leadership back to the preferred
    /// replica; 0: never.
    pub preferred_leader_check_ticks: u64,
    /// The votes earlier runs recorded in the data directory's vote logs: with them, each
    /// shard keeps its replicas' terms and votes in a vote log of its own (see `votes`);
    /// without, in each replica's `raft-state.json`.
    pub votes: Option<Arc<RecoveredVotes>>,
}

impl ReplicationConfig {
    /// Settings for a broker: ticks of 10 ms, elections after 0.5-1 s of silence (Redpanda's
    /// default is 1.5 s, Kafka KRaft's 1 s), fetches held up to 200 ms.
    pub fn new(
        cluster_id: impl Into<ClusterIdentity>,
        node_id: NodeId,
        rpc_listen: SocketAddr,
        peers: BTreeMap<NodeId, SocketAddr>,
    ) -> ReplicationConfig {
        ReplicationConfig {
            cluster_id: cluster_id.into(),
            secret: None,
            node_id,
            rpc_listen,
            peers,
            tick: Duration::from_millis(10),
            election_timeout_ticks_min: 50,
            begin_epoch_interval_ticks: 10,
            fetch_timeout_ticks: 30,
            // Below the fetch timeout: a held fetch is answered before the follower resends.
            fetch_wait_ticks: 20,
            fetch_bytes_max: 1 << 20,
            // Kafka's leader.imbalance.check.interval.seconds: 300.
            preferred_leader_check_ticks: 30_000,
            votes: None,
        }
    }
}

/// One shard's replication: see the module documentation.
pub struct ShardReplication {
    context: ShardContext,
    config: ReplicationConfig,
    transport: Rc<Transport<BrokerWire>>,
    /// Every replica's messages to peers go through it.
    coalescer: Rc<Coalescer>,
    replicas: RefCell<Registry>,
    /// The replicas' clock and timer wheel.
    timers: Rc<ShardTimers>,
    /// The slots of the replicas that lead (for the leader reports).
    leading: RefCell<BTreeSet<u32>>,
    /// The slots of the replicas a reassignment moves (their completion is reported).
    moving: RefCell<BTreeSet<u32>>,
    leaders: Arc<LeaderTable>,
    /// Where the shard's replicas record their terms and votes, if not in their state files.
    votes: Option<Rc<VoteLog>>,
    /// The broker's controller, on the shard that runs it.
    controller: RefCell<Option<Controller>>,
    /// The shard's transaction-marker traffic, once the cluster started on the shard.
    calls: RefCell<Option<Rc<PeerCalls>>>,
    /// The partitions whose completed move is being reported to the controller.
    completing: RefCell<HashSet<PartitionId>>,
    /// This value itself, for the tasks its handlers spawn.
    this: RefCell<Weak<ShardReplication>>,
}

/// A peer's partition message that arrived on a shard other than its partition's owner, on its
/// way there: who sent it, what it says, the batches.
struct RoutedMessage {
    partition: PartitionId,
    from: NodeId,
    message: Message,
    payload: Bytes,
}

thread_local! {
    /// This shard's replication: what work other shards post here ([`ShardContext::post`] runs
    /// a closure on this shard's thread) finds the typed state it is for through it, as
    /// Seastar's `sharded<T>::local()` finds a shard's instance of a service.
    static THIS_SHARD: RefCell<Weak<ShardReplication>> = const { RefCell::new(Weak::new()) };
}

/// How a partition is hosted: the voters its group starts with if it is new here, the voters
/// a reassignment moves it to, if one runs, and the replica that should lead when it can.
pub struct Hosting {
    pub voters: Vec<NodeId>,
    pub target: Option<Vec<NodeId>>,
    pub preferred_leader: Option<NodeId>,
}

/// Ticks between two reports of the partitions a shard leads to the other brokers.
const LEADER_REPORT_INTERVAL_TICKS: u64 = 50;

/// The partition whose owning shard runs the broker's controller.
fn controller_partition() -> PartitionId {
    PartitionId::new(METADATA_TOPIC, 0)
}

impl ShardReplication {
    /// Starts the shard's transport, the delivery of peers' messages to its replicas and their
    /// clock (until the shard shuts down). `leaders` is the broker's table, shared by its
    /// shards.
    pub fn start(
        context: ShardContext,
        config: ReplicationConfig,
        leaders: Arc<LeaderTable>,
    ) -> Result<Rc<ShardReplication>, TransportError> {
        let mut transport_config = TransportConfig::new(
            config.cluster_id.clone(),
            config.node_id,
            context.shard_id() as u32,
            config.rpc_listen,
            config.peers.clone(),
        );
        transport_config.secret = config.secret.clone();
        // The transport starts first (its listener may fail); it reaches the replication it
        // feeds through this slot, filled once that exists.
        let slot: Rc<RefCell<Weak<ShardReplication>>> = Default::default();
        let transport = Rc::new(Transport::start(transport_config, {
            let slot = slot.clone();
            move |received: Received<BrokerWire>| {
                let replication = slot.borrow().upgrade();
                if let Some(replication) = replication {
                    replication.on_wire(received);
                }
            }
        })?);
        let votes = config.votes.clone().and_then(|recovered| {
            VoteLog::create(recovered, context.shard_id())
                .map_err(|error| {
                    eprintln!(
                        "ferrite: cannot start shard {}'s vote log ({error}); its replicas \
                         record their votes in their raft-state.json",
                        context.shard_id()
                    )
                })
                .ok()
        });
        let replication = Rc::new(ShardReplication {
            context: context.clone(),
            votes,
            config,
            coalescer: Coalescer::new(transport.clone(), Rc::default()),
            transport,
            replicas: RefCell::new(Registry::default()),
            timers: Rc::new(ShardTimers {
                clock: Rc::new(Cell::new(0)),
                wheel: RefCell::new(TimerWheel::new(0)),
                changed: RefCell::new(Vec::new()),
                due: RefCell::new(Vec::new()),
            }),
            leading: RefCell::new(BTreeSet::new()),
            moving: RefCell::new(BTreeSet::new()),
            leaders,
            controller: RefCell::new(None),
            calls: RefCell::new(None),
            completing: RefCell::new(HashSet::new()),
            this: RefCell::new(Weak::new()),
        });
        *slot.borrow_mut() = Rc::downgrade(&replication);
        *replication.this.borrow_mut() = Rc::downgrade(&replication);
        THIS_SHARD.with(|this| {
            assert!(
                this.borrow().upgrade().is_none(),
                "one replication runs per shard"
            );
            *this.borrow_mut() = Rc::downgrade(&replication);
        });
        glommio::spawn_local({
            let replication = replication.clone();
            async move {
                let tick = replication.config.tick;
                let ticking = replication.clone();
                // `every` sleeps a tick after each run of the work: the next run is due then.
                let mut due = Instant::now() + tick;
                context
                    .every(tick, move || {
                        ticking.note_tick_lateness(due.elapsed());
                        ticking.tick();
                        due = Instant::now() + tick;
                        std::future::ready(())
                    })
                    .await;
                replication.stop().await;
            }
        })
        .detach();
        Ok(replication)
    }

    /// A peer's message, on whichever shard's connection it came.
    fn on_wire(&self, received: Received<BrokerWire>) {
        let from = received.from_node;
        match received.message {
            BrokerWire::Partitions { topics, messages } => {
                // Most messages are for replicas of this shard, found with each topic looked up
                // once per frame, and handed over directly.
                let local: Vec<Option<PartitionReplica>> = {
                    let replicas = self.replicas.borrow();
                    let by_topic: Vec<_> = topics
                        .iter()
                        .map(|topic| replicas.slots_by_topic.get(topic.as_str()))
                        .collect();
                    messages
                        .iter()
                        .map(|message| {
                            let partitions = by_topic.get(message.topic as usize)?.as_ref()?;
                            let slot = partitions.get(&message.partition)?;
                            replicas.at(*slot).map(|(_, replica)| replica.clone())
                        })
                        .collect()
                };
                let mut payload = received.payload;
                // Per owning shard, the frame's messages for replicas that run there: one post
                // per shard, whatever the number of messages.
                let mut elsewhere: Vec<Vec<RoutedMessage>> = Vec::new();
                {
                    let mut counts = self.coalescer.counts.borrow_mut();
                    for message in &messages {
                        let kind = match message.message {
                            Message::FetchResponse { .. } if message.payload_bytes > 0 => {
                                MessageKind::FetchEntries
                            }
                            ref other => message_kind(other, &Bytes::new()),
                        };
                        counts.received[kind as usize] += 1;
                    }
                    counts.batches_received += batch_count(&payload);
                }
                for (message, replica) in messages.into_iter().zip(local) {
                    let bytes = message.payload_bytes as usize;
                    let Some(topic) = topics.get(message.topic as usize) else {
                        return; // a peer's garbage, dropped like a loss
                    };
                    if bytes > payload.len() {
                        return; // lengths that do not add up: the same
                    }
                    let batches = payload.split_to(bytes);
                    match replica {
                        Some(replica) => replica.receive(from, message.message, batches),
                        None => {
                            let partition = PartitionId::new(topic.clone(), message.partition);
                            let owner = self.context.owner_of(&partition);
                            // Owned here but not hosted (yet, or any more): dropped like a lost
                            // message; the sender retries.
                            if owner != self.context.shard_id() {
                                if elsewhere.is_empty() {
                                    elsewhere.resize_with(self.context.shard_count(), Vec::new);
                                }
                                elsewhere[owner].push(RoutedMessage {
                                    partition,
                                    from,
                                    message: message.message,
                                    payload: batches,
                                });
                            }
                        }
                    }
                }
                for (owner, messages) in elsewhere.into_iter().enumerate() {
                    if !messages.is_empty() {
                        self.context.post(owner, move |_| {
                            if let Some(replication) = ShardReplication::on_this_shard() {
                                replication.receive_routed(messages);
                            }
                        });
                    }
                }
            }
            BrokerWire::Controller(wire) => {
                let payload = received.payload;
                let owner = self.context.owner_of(&controller_partition());
                if owner == self.context.shard_id() {
                    self.receive_controller_wire(from, wire, payload);
                } else {
                    self.context.post(owner, move |_| {
                        if let Some(replication) = ShardReplication::on_this_shard() {
                            replication.receive_controller_wire(from, wire, payload);
                        }
                    });
                }
            }
            BrokerWire::Leaders(reports) => {
                for report in reports {
                    if let Some(limit) = self.leaders.note_report(from, report) {
                        report_term_limit(&"a leader report", limit);
                    }
                }
            }
            BrokerWire::Calls(wire) => {
                // Before the cluster started here: dropped like a loss; the sender retries.
                if let Some(calls) = self.peer_calls() {
                    calls.receive(from, wire);
                }
            }
        }
    }

    /// Makes `calls` the shard's calls between brokers, which from now on get the call
    /// messages peers send here.
    pub(crate) fn attach_peer_calls(&self, calls: Rc<PeerCalls>) {
        *self.calls.borrow_mut() = Some(calls);
    }

    /// The shard's calls between brokers, once attached.
    pub(crate) fn peer_calls(&self) -> Option<Rc<PeerCalls>> {
        self.calls.borrow().clone()
    }

    /// Sends a call message to broker `to` (lost like any message if its queue overflows or
    /// it is not a peer: the requester's timeout covers it).
    pub(crate) fn send_calls(&self, to: NodeId, wire: PeerWire) {
        let _ = self
            .transport
            .send(to, &BrokerWire::Calls(wire), Bytes::new());
    }

    /// The shard this replication runs on.
    pub(crate) fn context(&self) -> &ShardContext {
        &self.context
    }

    /// This broker.
    pub(crate) fn node_id(&self) -> NodeId {
        self.config.node_id
    }

    /// This shard's replication, while it runs: what work that runs on a shard (a peer's
    /// post, a group coordinator's append) finds it through.
    pub fn on_this_shard() -> Option<Rc<ShardReplication>> {
        THIS_SHARD.with(|this| this.borrow().upgrade())
    }

    /// Peers' partition messages another shard routed here, the owner of their partitions.
    fn receive_routed(&self, messages: Vec<RoutedMessage>) {
        for routed in messages {
            // Not hosted (yet, or any more): dropped like a lost message; the sender retries.
            if let Some(replica) = self.replica(&routed.partition) {
                replica.receive(routed.from, routed.message, routed.payload);
            }
        }
    }

    /// A peer's message for the broker's controller, on the controller's shard.
    fn receive_controller_wire(&self, from: NodeId, wire: ControllerWire, payload: Bytes) {
        if let Some(controller) = &*self.controller.borrow() {
            controller.receive(from, wire, payload);
        }
    }

    fn clone_rc(&self) -> Option<Rc<ShardReplication>> {
        self.this.borrow().upgrade()
    }

    /// Makes this shard the one that runs the broker's controller (the owner of the metadata
    /// partition), which from now on gets the controller messages peers send.
    pub fn attach_controller(&self, controller: Controller) {
        assert_eq!(
            self.context.owner_of(&controller_partition()),
            self.context.shard_id(),
            "the controller runs on the metadata partition's shard"
        );
        *self.controller.borrow_mut() = Some(controller);
    }

    /// Where the controller's messages to other brokers go: this shard's transport.
    pub fn controller_outbox(&self) -> Rc<dyn WireOutbox> {
        Rc::new(ControllerOutbox(self.transport.clone()))
    }

    /// Asks the broker's controller (on its shard) to make a change; resolves with the index of
    /// the committed metadata entry.
    pub async fn ask_controller(
        &self,
        request: ControllerRequest,
    ) -> Result<Index, ControllerError> {
        let owner = self.context.owner_of(&controller_partition());
        self.context
            .call_on(owner, move |_| {
                let controller = ShardReplication::on_this_shard()
                    .and_then(|replication| replication.controller.borrow().clone());
                Box::pin(async move {
                    match controller {
                        Some(controller) => controller.request(request).await,
                        None => Err(ControllerError::Stopped(
                            "no controller on this shard".into(),
                        )),
                    }
                })
            })
            .await
            .unwrap_or_else(|| {
                Err(ControllerError::Stopped(
                    "the controller's shard stopped".into(),
                ))
            })
    }

    /// [`ShardReplication::host`] on the partition's owning shard, wherever that is, and
    /// tells the replica where a reassignment moves its group (again, if it runs already).
    pub async fn host_anywhere(
        &self,
        partition: PartitionId,
        hosting: Hosting,
    ) -> Result<(), String> {
        self.call_owner(partition, Some(hosting)).await
    }

    /// Stops this broker's replica of `partition` on its owning shard.
    pub async fn unhost_anywhere(&self, partition: PartitionId) {
        let _ = self.call_owner(partition, None).await;
    }

    /// Runs (`Some`) or stops (`None`) this broker's replica of `partition` on its owning
    /// shard.
    async fn call_owner(
        &self,
        partition: PartitionId,
        hosting: Option<Hosting>,
    ) -> Result<(), String> {
        let owner = self.context.owner_of(&partition);
        self.context
            .call_on(owner, move |_| {
                let replication = ShardReplication::on_this_shard();
                Box::pin(async move {
                    let Some(replication) = replication else {
                        return Err("replication stopped".into());
                    };
                    match hosting {
                        Some(hosting) => replication.host_moving(partition, hosting).await,
                        None => {
                            replication.unhost(&partition);
                            Ok(())
                        }
                    }
                })
            })
            .await
            .unwrap_or_else(|| Err("the owning shard stopped".into()))
    }

    /// [`ShardReplication::host`], then where a reassignment moves the group and which replica
    /// should lead.
    async fn host_moving(&self, partition: PartitionId, hosting: Hosting) -> Result<(), String> {
        let Hosting {
            voters,
            target,
            preferred_leader,
        } = hosting;
        let moving = target.is_some();
        let replica = self
            .host(partition.clone(), voters)
            .await
            .map_err(|error| error.to_string())?;
        replica.set_target_voters(target);
        replica.set_preferred_leader(preferred_leader);
        self.note_moving(&partition, moving);
        Ok(())
    }

    /// Stops this broker's replica of `partition` (its topic was deleted, or it was moved
    /// away).
    fn unhost(&self, partition: &PartitionId) {
        let removed = self.replicas.borrow_mut().remove(partition);
        if let Some((slot, replica)) = removed {
            self.leading.borrow_mut().remove(&slot);
            self.moving.borrow_mut().remove(&slot);
            self.context.clear_client_access(partition);
            replica.stop("this broker no longer hosts the partition");
        }
    }

    /// Whether a reassignment moves `partition` (its completion is then watched every tick).
    fn note_moving(&self, partition: &PartitionId, moving: bool) {
        let Some(slot) = self
            .replicas
            .borrow()
            .slot_of(&partition.topic, partition.partition)
        else {
            return;
        };
        let mut watched = self.moving.borrow_mut();
        if moving {
            watched.insert(slot);
        } else {
            watched.remove(&slot);
        }
    }

    /// Tells the controller that the move of `partition` (led here) to `voters` is complete,
    /// unless that report is under way already; repeated on later ticks until the metadata
    /// shows it (the replica's target is cleared then).
    fn report_completed_move(&self, partition: &PartitionId, voters: Vec<NodeId>) {
        if !self.completing.borrow_mut().insert(partition.clone()) {
            return;
        }
        let Some(replication) = self.clone_rc() else {
            return;
        };
        let partition = partition.clone();
        glommio::spawn_local(async move {
            let request = ControllerRequest::CompleteReassignment {
                topic: partition.topic.clone(),
                partition: partition.partition,
                voters,
            };
            // A failure (no controller leader just now) is retried on a later tick.
            let _ = replication.ask_controller(request).await;
            replication.completing.borrow_mut().remove(&partition);
        })
        .detach();
    }

    /// One tick of the shard's clock: runs the replicas due at it, writes the leaderships
    /// that changed into the leader table, follows reassignments to their completion, and
    /// every [`LEADER_REPORT_INTERVAL_TICKS`] tells the other brokers what this shard leads.
    fn tick(&self) {
        let now = self.timers.clock.get() + 1;
        self.timers.clock.set(now);
        // The due list's buffer is kept from tick to tick: a tick allocates nothing.
        let mut due = std::mem::take(&mut *self.timers.due.borrow_mut());
        self.timers.wheel.borrow_mut().expire(now, &mut due);
        for slot in due.drain(..) {
            let replica = self
                .replicas
                .borrow()
                .at(slot)
                .map(|(_, replica)| replica.clone());
            if let Some(replica) = replica {
                replica.run_due();
            }
        }
        *self.timers.due.borrow_mut() = due;
        self.note_leadership_changes();
        let moving: Vec<u32> = self.moving.borrow().iter().copied().collect();
        for slot in moving {
            let hosted = self.replicas.borrow().at(slot).cloned();
            if let Some((partition, replica)) = hosted {
                if let Some(voters) = replica.completed_target() {
                    self.report_completed_move(&partition, voters);
                }
            }
        }
        if now.is_multiple_of(LEADER_REPORT_INTERVAL_TICKS) {
            let leading: Vec<u32> = self.leading.borrow().iter().copied().collect();
            self.report_leaderships(&leading);
        }
    }

    /// Writes what the replicas whose leadership changed now know into the broker's leader
    /// table, all under one lock, keeps the set of those that lead, and tells the other
    /// brokers of the leaderships won.
    fn note_leadership_changes(&self) {
        let mut changed = std::mem::take(&mut *self.timers.changed.borrow_mut());
        if changed.is_empty() {
            return;
        }
        changed.sort_unstable();
        changed.dedup();
        let own = self.config.node_id;
        let mut won = Vec::new();
        {
            let replicas = self.replicas.borrow();
            let mut leading = self.leading.borrow_mut();
            let views: Vec<(&PartitionId, Option<NodeId>, u64)> = changed
                .iter()
                .filter_map(|slot| {
                    let (partition, replica) = replicas.at(*slot)?;
                    let leader = replica.leader();
                    if leader == Some(own) {
                        leading.insert(*slot);
                        won.push(*slot);
                    } else {
                        leading.remove(slot);
                    }
                    Some((partition, leader, replica.term()))
                })
                .collect();
            self.leaders.note_own(own, views);
        }
        // The other brokers hear of a won leadership now, not at the next periodic report
        // (up to `LEADER_REPORT_INTERVAL_TICKS` later): until then a broker without a replica
        // of the partition answers Metadata with LEADER_NOT_AVAILABLE (a new topic's
        // partitions) or the deposed leader (a failover), and its clients wait or retry.
        self.report_leaderships(&won);
    }

    /// Tells the other brokers which of the partitions at `slots` this shard leads, in which
    /// terms, with their in-sync voters (and notes the in-sync voters here).
    fn report_leaderships(&self, slots: &[u32]) {
        let led: Vec<(PartitionId, PartitionReplica)> = {
            let replicas = self.replicas.borrow();
            slots
                .iter()
                .filter_map(|slot| replicas.at(*slot).cloned())
                .collect()
        };
        let mut reports = Vec::with_capacity(led.len());
        for (partition, replica) in led {
            if replica.role() != RoleKind::Leader {
                continue;
            }
            let in_sync = replica.in_sync_voters();
            self.leaders
                .report_in_sync(&partition, replica.term(), &in_sync);
            reports.push(LeaderReport {
                topic: partition.topic,
                partition: partition.partition,
                term: replica.term(),
                in_sync,
            });
        }
        if reports.is_empty() {
            return;
        }
        let reports = BrokerWire::Leaders(reports);
        for peer in self
            .config
            .peers
            .keys()
            .filter(|peer| **peer != self.config.node_id)
        {
            let _ = self.transport.send(*peer, &reports, Bytes::new());
        }
    }

    /// A tick of the clock ran `lateness` after it was due (see
    /// [`ReplicationStats::tick_lateness`]).
    fn note_tick_lateness(&self, lateness: Duration) {
        self.coalescer
            .counts
            .borrow_mut()
            .tick_lateness
            .observe(lateness);
    }

    /// What the shard's replicas sent and received so far, how long their writes took, and how
    /// late the shard's clock ticked.
    pub fn replication_stats(&self) -> ReplicationStats {
        let transport = self.transport.stats();
        ReplicationStats {
            transport_messages_dropped: transport.messages_dropped,
            transport_connections_refused: transport.connections_refused,
            transport_authentication_failures: transport.authentication_failures,
            ..self.coalescer.counts.borrow().clone()
        }
    }

    /// How many partition messages this shard sent, in how many frames.
    pub fn coalescing(&self) -> CoalescerStats {
        self.coalescer.stats.get()
    }

    /// Runs this broker's member of `partition`'s group (its log directory must exist; the
    /// shard must own it) with `voters` as the group's voters if it is new here.
    pub async fn host(
        &self,
        partition: PartitionId,
        voters: Vec<NodeId>,
    ) -> Result<PartitionReplica, ReplicaError> {
        if let Some(replica) = self.replica(&partition) {
            return Ok(replica);
        }
        let log = self.context.partition_log(&partition).await?;
        // Another call may have hosted it while the log opened.
        if let Some(replica) = self.replica(&partition) {
            return Ok(replica);
        }
        let dir = log.directory().to_path_buf();
        let config = ReplicaConfig {
            node_id: self.config.node_id,
            initial_voters: voters,
            election_timeout_ticks_min: self.config.election_timeout_ticks_min,
            begin_epoch_interval_ticks: self.config.begin_epoch_interval_ticks,
            fetch_timeout_ticks: self.config.fetch_timeout_ticks,
            fetch_wait_ticks: self.config.fetch_wait_ticks,
            fetch_bytes_max: self.config.fetch_bytes_max,
            seed: replica_seed(self.config.node_id, &partition),
            preferred_leader_check_ticks: self.config.preferred_leader_check_ticks,
        };
        let outbox = Rc::new(PartitionOutbox {
            coalescer: self.coalescer.clone(),
            topic: Rc::from(partition.topic.as_str()),
            partition: partition.partition,
        });
        let slot = self.replicas.borrow_mut().reserve();
        let schedule = Rc::new(ReplicaSlot {
            timers: self.timers.clone(),
            slot,
            context: self.context.clone(),
            partition: partition.clone(),
        });
        let clock = self.timers.clock.clone();
        let replica = match PartitionReplica::open_scheduled(
            config,
            dir,
            log,
            outbox,
            clock,
            schedule,
            self.votes.clone(),
        ) {
            Ok(replica) => replica,
            Err(error) => {
                self.replicas.borrow_mut().release(slot);
                return Err(error);
            }
        };
        // From now on the replica tells the shard of every change itself.
        self.context
            .set_client_access(&partition, replica.client_access());
        self.replicas
            .borrow_mut()
            .fill(slot, partition, replica.clone());
        // Its first view of who leads goes into the table at the next tick.
        self.timers.changed.borrow_mut().push(slot);
        Ok(replica)
    }

    /// The replica of `partition` on this shard, if it runs here.
    pub fn replica(&self, partition: &PartitionId) -> Option<PartitionReplica> {
        self.replicas
            .borrow()
            .get(&partition.topic, partition.partition)
            .cloned()
    }

    /// Stops every replica, the controller and the transport (the shard is shutting down).
    async fn stop(&self) {
        if let Some(controller) = self.controller.borrow_mut().take() {
            controller.stop("the broker is shutting down");
        }
        self.calls.borrow_mut().take();
        let replicas = self.replicas.borrow_mut().drain();
        self.leading.borrow_mut().clear();
        self.moving.borrow_mut().clear();
        for (partition, replica) in replicas {
            self.context.clear_client_access(&partition);
            replica.stop("the shard is shutting down");
        }
        self.transport.close().await;
    }
}

/// Election timeouts differ per broker, partition and start.
fn replica_seed(node_id: NodeId, partition: &PartitionId) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (node_id, partition, std::process::id()).hash(&mut hasher);
    hasher.finish()
}
