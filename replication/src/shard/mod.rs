//! Replication on one shard of a broker: the shard's inter-broker transport, the partition
//! replicas the shard owns, their logical clock, and the routing of peers' messages to them.
//!
//! Every shard runs one [`ShardReplication`]. Its transport binds the broker's RPC address
//! (SO_REUSEPORT: the kernel spreads peers' connections over the shards) and opens one
//! connection to each peer broker, so a peer's message for a partition may arrive on any shard;
//! it is handed to the owning shard over the mesh ([`ShardContext::deliver`]) when that is
//! another one. Each replica is registered with the shard ([`ShardContext::register_replicated`])
//! so producer batches for it go through its Raft group and followers refuse clients.
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

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use engine::shard::replicated::{MessageKind, ReplicationStats};
use engine::shard::{PartitionId, ShardContext};

use crate::controller::{
    Controller, ControllerError, ControllerRequest, ControllerWire, WireOutbox, METADATA_TOPIC,
};
use crate::message::{Index, Message, NodeId, TermLimit, TERM_MAX};
use crate::node::RoleKind;
use crate::replica::{
    report_term_limit, Outbox, PartitionReplica, ReplicaConfig, ReplicaError, ReplicaEvent,
    Schedule,
};
use crate::transport::{Received, Transport, TransportConfig, TransportError};
use crate::votes::{RecoveredVotes, VoteLog};
use crate::wheel::TimerWheel;

/// A Raft message of one partition's group, as it travels between brokers: its topic is the
/// frame's `topics[topic]`, and its batches (if any) are the next `payload_bytes` of the
/// frame's payload.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PartitionMessage {
    pub topic: u32,
    pub partition: u32,
    pub message: Message,
    pub payload_bytes: u32,
}

/// "I lead these partitions in these terms": what each broker tells the others now and then,
/// so that every broker can name every partition's leader in Metadata, hosted or not.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct LeaderReport {
    pub topic: String,
    pub partition: u32,
    pub term: u64,
    /// The leader's in-sync voters (what Metadata lists as the ISR).
    pub in_sync: Vec<NodeId>,
}

/// Everything brokers' shards say to each other.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum BrokerWire {
    /// Every partition message one shard had for one peer in one turn (see [`Coalescer`]),
    /// each topic named once.
    Partitions {
        topics: Vec<String>,
        messages: Vec<PartitionMessage>,
    },
    Controller(ControllerWire),
    Leaders(Vec<LeaderReport>),
}

/// The controller's messages, on the shard's transport.
struct ControllerOutbox(Rc<Transport<BrokerWire>>);

impl WireOutbox for ControllerOutbox {
    fn send(&self, to: NodeId, wire: ControllerWire, payload: Bytes) {
        // Losses are retried by the controller, as the network's.
        let _ = self.0.send(to, &BrokerWire::Controller(wire), payload);
    }
}

/// Who leads each partition as far as this broker knows: its own replicas' view, and what
/// other brokers reported (the report of the highest term wins). Shared by the broker's
/// shards.
///
/// It also keeps the latest term it knows of for a partition whose leader it no longer
/// knows: a client is told of partition leaders with their epoch (the term) and ignores any
/// later answer with an older one (librdkafka does), so a broker that can only guess at a
/// leader must still give the term it knows, or its guess is thrown away.
#[derive(Debug, Default)]
pub struct LeaderTable {
    leaders: RwLock<HashMap<PartitionId, KnownLeader>>,
    /// The in-sync voters a leader reported, with its term.
    in_sync: RwLock<HashMap<PartitionId, (u64, Vec<NodeId>)>>,
}

/// The latest term known for a partition and its leader in that term, if known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KnownLeader {
    leader: Option<NodeId>,
    term: u64,
}

fn report_leader(
    leaders: &mut HashMap<PartitionId, KnownLeader>,
    partition: &PartitionId,
    leader: NodeId,
    term: u64,
) {
    let reported = KnownLeader {
        leader: Some(leader),
        term,
    };
    match leaders.get(partition) {
        Some(known) if known.term > term || *known == reported => {}
        _ => {
            leaders.insert(partition.clone(), reported);
        }
    }
}

fn forget_stale_leader(
    leaders: &mut HashMap<PartitionId, KnownLeader>,
    partition: &PartitionId,
    own: NodeId,
    term: u64,
) {
    match leaders.get_mut(partition) {
        Some(known) => {
            if known.leader == Some(own) || known.term < term {
                *known = KnownLeader {
                    leader: None,
                    term: known.term.max(term),
                };
            }
        }
        None => {
            leaders.insert(partition.clone(), KnownLeader { leader: None, term });
        }
    }
}

impl LeaderTable {
    /// Records that `leader` leads `partition` in `term`, unless a later term is known.
    pub fn report(&self, partition: &PartitionId, leader: NodeId, term: u64) {
        report_leader(&mut self.write_leaders(), partition, leader, term);
    }

    /// This broker's replica of `partition` knows of no leader in its `term`: an entry naming
    /// this broker (`own`: it does not lead) or an older term is stale, and its leader goes
    /// (the term stays), so Metadata does not send clients to a deposed leader, such as a
    /// leader cut off from the others that stepped down.
    pub fn forget_stale(&self, partition: &PartitionId, own: NodeId, term: u64) {
        forget_stale_leader(&mut self.write_leaders(), partition, own, term);
    }

    /// What this broker's replicas (`own` is this broker) now know of their partitions'
    /// leaders, `(partition, leader, term)`, written together under one lock: a known leader
    /// as [`LeaderTable::report`], none as [`LeaderTable::forget_stale`].
    pub fn note_own<'a>(
        &self,
        own: NodeId,
        views: impl IntoIterator<Item = (&'a PartitionId, Option<NodeId>, u64)>,
    ) {
        let mut leaders = self.write_leaders();
        for (partition, leader, term) in views {
            match leader {
                Some(leader) => report_leader(&mut leaders, partition, leader, term),
                None => forget_stale_leader(&mut leaders, partition, own, term),
            }
        }
    }

    fn write_leaders(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<PartitionId, KnownLeader>> {
        self.leaders
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What broker `from` reported of a partition it leads; refused if its term does not fit
    /// a Kafka leader epoch (Metadata would name it as epoch `i32::MAX`, and clients would
    /// ignore every true answer after it).
    pub fn note_report(&self, from: NodeId, report: LeaderReport) -> Option<TermLimit> {
        if report.term > TERM_MAX {
            return Some(TermLimit::PeerTerm {
                from,
                term: report.term,
            });
        }
        let partition = PartitionId::new(report.topic, report.partition);
        self.report(&partition, from, report.term);
        self.report_in_sync(&partition, report.term, &report.in_sync);
        None
    }

    /// `partition`'s leader and its term, if known.
    pub fn leader(&self, partition: &PartitionId) -> Option<(NodeId, u64)> {
        let known = self.latest(partition)?;
        Some((known.leader?, known.term))
    }

    /// The latest term this broker knows of for `partition` and its leader in it, if known
    /// (a term without a leader: an election, or the leader known to be deposed).
    pub fn latest_term(&self, partition: &PartitionId) -> Option<(u64, Option<NodeId>)> {
        let known = self.latest(partition)?;
        Some((known.term, known.leader))
    }

    fn latest(&self, partition: &PartitionId) -> Option<KnownLeader> {
        self.leaders
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(partition)
            .copied()
    }

    /// Records the in-sync voters of `partition`'s leader in `term`, unless a later term's
    /// are known.
    pub fn report_in_sync(&self, partition: &PartitionId, term: u64, in_sync: &[NodeId]) {
        let mut known = self
            .in_sync
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match known.get(partition) {
            Some((known_term, _)) if *known_term > term => {}
            Some((known_term, voters)) if *known_term == term && voters == in_sync => {}
            _ => {
                known.insert(partition.clone(), (term, in_sync.to_vec()));
            }
        }
    }

    /// `partition`'s in-sync voters, if its current leader (as known here) reported them.
    pub fn in_sync(&self, partition: &PartitionId) -> Option<Vec<NodeId>> {
        let (_, term) = self.leader(partition)?;
        self.in_sync
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(partition)
            .filter(|(reported_term, _)| *reported_term == term)
            .map(|(_, in_sync)| in_sync.clone())
    }

    /// Forgets a deleted topic's partitions.
    pub fn forget_topic(&self, topic: &str) {
        self.leaders
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .retain(|partition, _| partition.topic != topic);
        self.in_sync
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .retain(|partition, _| partition.topic != topic);
    }
}

/// What every shard of a broker is configured with.
#[derive(Debug, Clone)]
pub struct ReplicationConfig {
    pub cluster_id: String,
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
        cluster_id: impl Into<String>,
        node_id: NodeId,
        rpc_listen: SocketAddr,
        peers: BTreeMap<NodeId, SocketAddr>,
    ) -> ReplicationConfig {
        ReplicationConfig {
            cluster_id: cluster_id.into(),
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
    static THIS_SHARD: RefCell<Weak<ShardReplication>> = RefCell::new(Weak::new());
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

/// The replicas a shard runs: by topic and partition (the wire names them with a `&str`, so no
/// `PartitionId` is built per message), and by slot (what the timer wheel names).
#[derive(Default)]
struct Registry {
    slots_by_topic: HashMap<String, HashMap<u32, u32>>,
    slots: Vec<Option<(PartitionId, PartitionReplica)>>,
    free_slots: Vec<u32>,
}

impl Registry {
    fn slot_of(&self, topic: &str, partition: u32) -> Option<u32> {
        self.slots_by_topic.get(topic)?.get(&partition).copied()
    }

    fn get(&self, topic: &str, partition: u32) -> Option<&PartitionReplica> {
        let slot = self.slot_of(topic, partition)?;
        self.at(slot).map(|(_, replica)| replica)
    }

    fn at(&self, slot: u32) -> Option<&(PartitionId, PartitionReplica)> {
        self.slots.get(slot as usize)?.as_ref()
    }

    /// A slot for a replica about to open.
    fn reserve(&mut self) -> u32 {
        self.free_slots.pop().unwrap_or_else(|| {
            self.slots.push(None);
            u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 replicas per shard")
        })
    }

    fn fill(&mut self, slot: u32, partition: PartitionId, replica: PartitionReplica) {
        self.slots_by_topic
            .entry(partition.topic.clone())
            .or_default()
            .insert(partition.partition, slot);
        self.slots[slot as usize] = Some((partition, replica));
    }

    fn release(&mut self, slot: u32) {
        self.slots[slot as usize] = None;
        self.free_slots.push(slot);
    }

    fn remove(&mut self, partition: &PartitionId) -> Option<(u32, PartitionReplica)> {
        let partitions = self.slots_by_topic.get_mut(&partition.topic)?;
        let slot = partitions.remove(&partition.partition)?;
        if partitions.is_empty() {
            self.slots_by_topic.remove(&partition.topic);
        }
        let (_, replica) = self.slots[slot as usize].take()?;
        self.free_slots.push(slot);
        Some((slot, replica))
    }

    fn drain(&mut self) -> Vec<(PartitionId, PartitionReplica)> {
        self.slots_by_topic.clear();
        self.free_slots.clear();
        self.slots.drain(..).flatten().collect()
    }
}

/// The clock of a shard's replicas, the timer wheel of their due ticks, and the replicas whose
/// leadership changed since the shard last looked (shared with each replica's [`ReplicaSlot`]).
struct ShardTimers {
    clock: Rc<Cell<u64>>,
    wheel: RefCell<TimerWheel>,
    changed: RefCell<Vec<u32>>,
    /// The buffer of the replicas due at a tick.
    due: RefCell<Vec<u32>>,
}

/// A replica's [`Schedule`]: its slot in the shard's timers.
struct ReplicaSlot {
    timers: Rc<ShardTimers>,
    slot: u32,
}

impl Schedule for ReplicaSlot {
    fn wake_at(&self, tick: u64) {
        self.timers.wheel.borrow_mut().schedule(tick, self.slot);
    }

    fn leadership_changed(&self) {
        self.timers.changed.borrow_mut().push(self.slot);
    }
}

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
        let transport_config = TransportConfig::new(
            config.cluster_id.clone(),
            config.node_id,
            context.shard_id() as u32,
            config.rpc_listen,
            config.peers.clone(),
        );
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
            coalescer: Coalescer::new(transport.clone(), context.replication_counts()),
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
                context
                    .every(tick, move || {
                        ticking.tick();
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
        }
    }

    /// This shard's replication, while it runs.
    fn on_this_shard() -> Option<Rc<ShardReplication>> {
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
            self.context.unregister_replicated(partition);
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
        self.context
            .register_replicated(partition.clone(), Rc::new(replica.clone()));
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
        let replicas = self.replicas.borrow_mut().drain();
        self.leading.borrow_mut().clear();
        self.moving.borrow_mut().clear();
        for (partition, replica) in replicas {
            self.context.unregister_replicated(&partition);
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

/// Partition messages for each peer broker, gathered during one turn of the shard's executor
/// and sent as one frame when the turn ends, each topic named once in it: the fetches, answers
/// and announcements that a tick (or a fetch round) of many partitions produces travel to each
/// broker together, as Kafka's replica fetcher sends one Fetch per broker pair and Redpanda
/// coalesces heartbeats per node. A frame is sent early once its batches reach
/// [`COALESCED_PAYLOAD_BYTES_MAX`].
pub struct Coalescer {
    transport: Rc<Transport<BrokerWire>>,
    /// The shard's replication counts (`ShardContext::replication_counts`).
    counts: Rc<RefCell<ReplicationStats>>,
    pending: RefCell<BTreeMap<NodeId, PendingFrame>>,
    /// Messages in the last frame sent (the capacity the next one starts with).
    messages_last: Cell<usize>,
    flush_scheduled: Cell<bool>,
    stats: Cell<CoalescerStats>,
}

/// One peer's frame being gathered.
#[derive(Default)]
struct PendingFrame {
    topics: Vec<String>,
    topic_positions: HashMap<Rc<str>, u32>,
    /// The topic of the last message and its position (a round's messages for one topic
    /// mostly come one after another).
    last_topic: Option<(Rc<str>, u32)>,
    messages: Vec<PartitionMessage>,
    batches: BytesMut,
    /// Per (topic position, partition), where in `messages` its last message sits, if that is
    /// a `Durable` report: a newer report replaces it rather than follow it.
    last_durable: HashMap<(u32, u32), usize>,
}

impl PendingFrame {
    /// The position of `topic` in the frame's topic list, added if new.
    fn topic_position(&mut self, topic: &Rc<str>) -> u32 {
        if let Some((last, position)) = &self.last_topic {
            if Rc::ptr_eq(last, topic) {
                return *position;
            }
        }
        let position = match self.topic_positions.get(&**topic) {
            Some(position) => *position,
            None => {
                let position = u32::try_from(self.topics.len()).unwrap_or(u32::MAX);
                self.topics.push(topic.to_string());
                self.topic_positions.insert(topic.clone(), position);
                position
            }
        };
        self.last_topic = Some((topic.clone(), position));
        position
    }
}

/// Bytes of batches one coalesced frame carries before it is sent without waiting for the
/// turn's end (well below the transport's frame limit).
const COALESCED_PAYLOAD_BYTES_MAX: usize = 8 << 20;

/// What coalescing saved: partition messages queued, frames sent for them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoalescerStats {
    pub messages: u64,
    pub frames: u64,
}

impl Coalescer {
    fn new(
        transport: Rc<Transport<BrokerWire>>,
        counts: Rc<RefCell<ReplicationStats>>,
    ) -> Rc<Coalescer> {
        Rc::new(Coalescer {
            transport,
            counts,
            pending: RefCell::new(BTreeMap::new()),
            messages_last: Cell::new(0),
            flush_scheduled: Cell::new(false),
            stats: Cell::new(CoalescerStats::default()),
        })
    }

    fn queue(
        self: &Rc<Self>,
        to: NodeId,
        topic: &Rc<str>,
        partition: u32,
        message: Message,
        payload: Bytes,
    ) {
        let mut stats = self.stats.get();
        stats.messages += 1;
        self.stats.set(stats);
        {
            let mut counts = self.counts.borrow_mut();
            counts.sent[message_kind(&message, &payload) as usize] += 1;
            counts.batches_sent += batch_count(&payload);
        }
        let full = {
            let mut pending = self.pending.borrow_mut();
            let frame = pending.entry(to).or_insert_with(|| PendingFrame {
                // As many as the last frame to this peer held: no regrowth per round.
                messages: Vec::with_capacity(self.messages_last.get().min(1 << 14)),
                ..PendingFrame::default()
            });
            let topic = frame.topic_position(topic);
            let key = (topic, partition);
            let is_durable = matches!(message, Message::Durable { .. });
            // A follower's storage completes a whole journal write's batches at once and
            // reports each: a later report in the same frame says all the earlier one did
            // (reports are answered by nothing), so the leader steps one, not dozens.
            let replaces = is_durable
                .then(|| frame.last_durable.get(&key).copied())
                .flatten();
            if let Some(position) = replaces {
                frame.messages[position].message = message;
            } else {
                if is_durable {
                    frame.last_durable.insert(key, frame.messages.len());
                } else {
                    frame.last_durable.remove(&key);
                }
                frame.messages.push(PartitionMessage {
                    topic,
                    partition,
                    message,
                    payload_bytes: u32::try_from(payload.len()).unwrap_or(u32::MAX),
                });
                frame.batches.extend_from_slice(&payload);
            }
            frame.batches.len() >= COALESCED_PAYLOAD_BYTES_MAX
        };
        if full {
            self.send(to);
        } else if !self.flush_scheduled.replace(true) {
            let coalescer = self.clone();
            glommio::spawn_local(async move {
                // glommio runs a spawned task at once up to its first await: step aside so the
                // rest of this turn's messages join the frame.
                YieldOnce::default().await;
                coalescer.flush_scheduled.set(false);
                let peers: Vec<NodeId> = coalescer.pending.borrow().keys().copied().collect();
                for peer in peers {
                    coalescer.send(peer);
                }
            })
            .detach();
        }
    }

    fn send(&self, to: NodeId) {
        let Some(frame) = self.pending.borrow_mut().remove(&to) else {
            return;
        };
        let mut stats = self.stats.get();
        stats.frames += 1;
        self.stats.set(stats);
        self.counts.borrow_mut().frames_sent += 1;
        self.messages_last.set(frame.messages.len());
        let wire = BrokerWire::Partitions {
            topics: frame.topics,
            messages: frame.messages,
        };
        // A full queue or a closed transport loses the messages, as the network may.
        let _ = self.transport.send(to, &wire, frame.batches.freeze());
    }
}

/// What kind of message `message` is, for the metrics.
fn message_kind(message: &Message, payload: &Bytes) -> MessageKind {
    match message {
        Message::Fetch { .. } => MessageKind::Fetch,
        Message::FetchResponse { .. } if !payload.is_empty() => MessageKind::FetchEntries,
        Message::FetchResponse { .. } => MessageKind::FetchAnswer,
        Message::Durable { .. } => MessageKind::Durable,
        _ => MessageKind::Other,
    }
}

/// How many whole record batches `payload` holds (each: base offset, then its length).
fn batch_count(payload: &[u8]) -> u64 {
    const LENGTH_END: usize = 12; // base offset (8 bytes), batch length (4)
    let mut count = 0;
    let mut rest = payload;
    while let Some(length) = rest.get(8..LENGTH_END) {
        let length = i32::from_be_bytes([length[0], length[1], length[2], length[3]]);
        let Some(next) = usize::try_from(length)
            .ok()
            .and_then(|length| rest.get(LENGTH_END + length..))
        else {
            break;
        };
        count += 1;
        rest = next;
    }
    count
}

/// Pending once (waking itself), then ready: lets the tasks already scheduled run first.
#[derive(Default)]
struct YieldOnce {
    yielded: bool,
}

impl std::future::Future for YieldOnce {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.yielded {
            return std::task::Poll::Ready(());
        }
        self.yielded = true;
        context.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

struct PartitionOutbox {
    coalescer: Rc<Coalescer>,
    topic: Rc<str>,
    partition: u32,
}

impl Outbox for PartitionOutbox {
    fn send(&self, to: NodeId, message: Message, payload: Bytes) {
        self.coalescer
            .queue(to, &self.topic, self.partition, message, payload);
    }

    fn note(&self, event: ReplicaEvent) {
        let mut counts = self.coalescer.counts.borrow_mut();
        match event {
            ReplicaEvent::FetchHeld => counts.fetches_held += 1,
            ReplicaEvent::FetchFloorWait => counts.fetch_floor_waits += 1,
            ReplicaEvent::Stage(stage, elapsed) => counts.observe(stage, elapsed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::FetchResult;
    use engine::shard::listen::ListenReservation;

    fn fetch_response(commit_index: u64) -> Message {
        Message::FetchResponse {
            term: 1,
            leader: 1,
            commit_index,
            fetch_index: 1,
            last_fetched_term: 0,
            result: FetchResult::Entries {
                entries: Vec::new(),
            },
        }
    }

    #[test]
    fn the_leader_table_keeps_the_latest_term_and_drops_what_a_replica_knows_is_stale() {
        let table = LeaderTable::default();
        let partition = PartitionId::new("t", 0);
        table.report(&partition, 2, 5);
        table.report(&partition, 3, 4);
        assert_eq!(
            table.leader(&partition),
            Some((2, 5)),
            "an older term's report loses"
        );
        // Broker 1's replica, in term 5 and knowing no leader, does not contradict node 2.
        table.forget_stale(&partition, 1, 5);
        assert_eq!(table.leader(&partition), Some((2, 5)));
        // Broker 2's own replica stepped down (cut off): it knows it does not lead, and
        // still knows term 5 is the latest.
        table.forget_stale(&partition, 2, 5);
        assert_eq!(table.leader(&partition), None);
        assert_eq!(table.latest_term(&partition), Some((5, None)));
        table.report(&partition, 3, 4);
        assert_eq!(table.leader(&partition), None, "term 4 is over");
        table.report(&partition, 3, 6);
        assert_eq!(table.leader(&partition), Some((3, 6)));
        // A replica already in term 7 knows term 6's leader is gone.
        table.forget_stale(&partition, 1, 7);
        assert_eq!(table.leader(&partition), None);
        assert_eq!(table.latest_term(&partition), Some((7, None)));
        let past_max = LeaderReport {
            topic: "t".into(),
            partition: 0,
            term: TERM_MAX + 1,
            in_sync: vec![3],
        };
        assert_eq!(
            table.note_report(3, past_max),
            Some(TermLimit::PeerTerm {
                from: 3,
                term: TERM_MAX + 1
            })
        );
        assert_eq!(
            table.latest_term(&partition),
            Some((7, None)),
            "a term past the last leader epoch is refused"
        );
        let unknown = PartitionId::new("t", 1);
        assert_eq!(table.latest_term(&unknown), None);
        table.forget_stale(&unknown, 1, 3);
        assert_eq!(table.leader(&unknown), None);
        assert_eq!(table.latest_term(&unknown), Some((3, None)));
    }

    /// A coalesced frame as the receiver got it: its topics, messages and their batches.
    type ReceivedFrame = (Vec<String>, Vec<PartitionMessage>, Bytes);

    /// Node 1's transport sending to node 2's, which keeps the partition frames it receives.
    #[allow(clippy::type_complexity)]
    fn node_1_to_node_2() -> (
        Rc<Transport<BrokerWire>>,
        Transport<BrokerWire>,
        Rc<RefCell<Vec<ReceivedFrame>>>,
        Vec<ListenReservation>,
    ) {
        let reservations: Vec<ListenReservation> = (0..2)
            .map(|_| ListenReservation::new("127.0.0.1:0".parse().unwrap()).unwrap())
            .collect();
        let peers: BTreeMap<NodeId, SocketAddr> = [
            (1, reservations[0].address()),
            (2, reservations[1].address()),
        ]
        .into_iter()
        .collect();
        let received: Rc<RefCell<Vec<ReceivedFrame>>> = Default::default();
        let receiver = Transport::<BrokerWire>::start(
            TransportConfig::new("test", 2, 0, peers[&2], peers.clone()),
            {
                let received = received.clone();
                move |frame: Received<BrokerWire>| {
                    if let BrokerWire::Partitions { topics, messages } = frame.message {
                        received
                            .borrow_mut()
                            .push((topics, messages, frame.payload));
                    }
                }
            },
        )
        .unwrap();
        let sender = Rc::new(
            Transport::<BrokerWire>::start(
                TransportConfig::new("test", 1, 0, peers[&1], peers.clone()),
                |_| {},
            )
            .unwrap(),
        );
        (sender, receiver, received, reservations)
    }

    /// Waits (20 s at most) until node 2 received a frame.
    async fn first_frame(received: &RefCell<Vec<ReceivedFrame>>) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while received.borrow().is_empty() {
            assert!(std::time::Instant::now() < deadline, "nothing arrived");
            glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    fn durable(durable_index: u64) -> Message {
        Message::Durable {
            term: 1,
            fetch_index: 10,
            last_fetched_term: 1,
            durable_index,
        }
    }

    #[test]
    fn a_turns_durable_reports_of_one_partition_travel_as_the_latest_one() {
        glommio::LocalExecutor::default().run(async {
            let (sender, receiver, received, _reservations) = node_1_to_node_2();
            let counts: Rc<RefCell<ReplicationStats>> = Rc::default();
            let coalescer = Coalescer::new(sender.clone(), counts.clone());
            let t: Rc<str> = Rc::from("t");
            // One journal sync made 40 batches of partition 0 durable, each reported; partition
            // 1 reported once, then fetched, then reported again (kept in that order).
            for index in 1..=40 {
                coalescer.queue(2, &t, 0, durable(index), Bytes::new());
            }
            coalescer.queue(2, &t, 1, durable(5), Bytes::new());
            let fetch = Message::Fetch {
                term: 1,
                fetch_index: 10,
                last_fetched_term: 1,
                durable_index: 5,
            };
            coalescer.queue(2, &t, 1, fetch.clone(), Bytes::new());
            coalescer.queue(2, &t, 1, durable(6), Bytes::new());
            coalescer.queue(2, &t, 1, durable(7), Bytes::new());
            first_frame(&received).await;
            let (_, messages, _) = received.borrow_mut().remove(0);
            let sent: Vec<(u32, Message)> = messages
                .into_iter()
                .map(|message| (message.partition, message.message))
                .collect();
            assert_eq!(
                sent,
                [
                    (0, durable(40)),
                    (1, durable(5)),
                    (1, fetch),
                    (1, durable(7)),
                ]
            );
            // Every report the replicas made is counted, one frame carried them.
            let (durable_sent, frames_sent) = {
                let counts = counts.borrow();
                (
                    counts.sent[MessageKind::Durable as usize],
                    counts.frames_sent,
                )
            };
            assert_eq!(durable_sent, 43);
            assert_eq!(frames_sent, 1);
            sender.close().await;
            receiver.close().await;
        });
    }

    #[test]
    fn one_turns_messages_to_a_peer_travel_in_one_frame_with_their_batches() {
        glommio::LocalExecutor::default().run(async {
            let (sender, receiver, received, _reservations) = node_1_to_node_2();
            let coalescer = Coalescer::new(sender.clone(), Rc::default());
            let (t, u): (Rc<str>, Rc<str>) = (Rc::from("t"), Rc::from("u"));
            for (topic, partition, batches) in [
                (&t, 0u32, &b"abc"[..]),
                (&u, 1, &b""[..]),
                (&t, 2, &b"defgh"[..]),
            ] {
                let message = fetch_response(u64::from(partition));
                coalescer.queue(2, topic, partition, message, Bytes::from_static(batches));
            }
            first_frame(&received).await;
            let (topics, messages, payload) = received.borrow_mut().remove(0);
            assert_eq!(topics, ["t", "u"], "each topic named once");
            let named: Vec<(u32, u32, u32)> = messages
                .iter()
                .map(|message| (message.topic, message.partition, message.payload_bytes))
                .collect();
            assert_eq!(named, [(0, 0, 3), (1, 1, 0), (0, 2, 5)]);
            assert_eq!(&payload[..], b"abcdefgh");
            assert_eq!(
                coalescer.stats.get(),
                CoalescerStats {
                    messages: 3,
                    frames: 1
                }
            );
            sender.close().await;
            receiver.close().await;
        });
    }
}
