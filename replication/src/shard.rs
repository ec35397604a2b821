//! Replication on one shard of a broker: the shard's inter-broker transport, the partition
//! replicas the shard owns, their logical clock, and the routing of peers' messages to them.
//!
//! Every shard runs one [`ShardReplication`]. Its transport binds the broker's RPC address
//! (SO_REUSEPORT: the kernel spreads peers' connections over the shards) and opens one
//! connection to each peer broker, so a peer's message for a partition may arrive on any shard;
//! it is handed to the owning shard over the mesh ([`ShardContext::deliver`]) when that is
//! another one. Each replica is registered with the shard ([`ShardContext::register_replicated`])
//! so producer batches for it go through its Raft group and followers refuse clients.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use engine::shard::{PartitionId, ShardContext};

use crate::message::{Message, NodeId};
use crate::replica::{Outbox, PartitionReplica, ReplicaConfig, ReplicaError};
use crate::transport::{Received, Transport, TransportConfig, TransportError};

/// A Raft message of one partition's group, as it travels between brokers.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PartitionMessage {
    pub topic: String,
    pub partition: u32,
    pub message: Message,
}

/// "I lead these partitions in these terms": what each broker tells the others now and then,
/// so that every broker can name every partition's leader in Metadata, hosted or not.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct LeaderReport {
    pub topic: String,
    pub partition: u32,
    pub term: u64,
}

/// Everything brokers' shards say to each other.
#[derive(Debug, Clone, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum BrokerWire {
    Partition(PartitionMessage),
    Leaders(Vec<LeaderReport>),
}

/// Who leads each partition as far as this broker knows: its own replicas' view, and what
/// other brokers reported (the report of the highest term wins). Shared by the broker's
/// shards.
#[derive(Debug, Default)]
pub struct LeaderTable {
    leaders: RwLock<HashMap<PartitionId, (NodeId, u64)>>,
}

impl LeaderTable {
    /// Records that `leader` leads `partition` in `term`, unless a later term is known.
    pub fn report(&self, partition: &PartitionId, leader: NodeId, term: u64) {
        let mut leaders = self
            .leaders
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match leaders.get(partition) {
            Some((_, known)) if *known > term => {}
            Some(current) if *current == (leader, term) => {}
            _ => {
                leaders.insert(partition.clone(), (leader, term));
            }
        }
    }

    /// `partition`'s leader and its term, if known.
    pub fn leader(&self, partition: &PartitionId) -> Option<(NodeId, u64)> {
        self.leaders
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(partition)
            .copied()
    }

    /// Forgets a deleted topic's partitions.
    pub fn forget_topic(&self, topic: &str) {
        self.leaders
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
        }
    }
}

/// One shard's replication: see the module documentation.
pub struct ShardReplication {
    context: ShardContext,
    config: ReplicationConfig,
    transport: Rc<Transport<BrokerWire>>,
    replicas: Rc<RefCell<HashMap<PartitionId, PartitionReplica>>>,
    leaders: Arc<LeaderTable>,
}

/// A delivered message: who sent it, what it says, and the batches it carries.
type Delivered = (NodeId, Message, Bytes);

/// Ticks between two reports of the partitions a shard leads to the other brokers.
const LEADER_REPORT_INTERVAL_TICKS: u64 = 50;

impl ShardReplication {
    /// Starts the shard's transport, the delivery of peers' messages to its replicas and their
    /// clock (until the shard shuts down). `leaders` is the broker's table, shared by its
    /// shards.
    pub fn start(
        context: ShardContext,
        config: ReplicationConfig,
        leaders: Arc<LeaderTable>,
    ) -> Result<Rc<ShardReplication>, TransportError> {
        let replicas: Rc<RefCell<HashMap<PartitionId, PartitionReplica>>> = Default::default();
        let transport_config = TransportConfig::new(
            config.cluster_id.clone(),
            config.node_id,
            context.shard_id() as u32,
            config.rpc_listen,
            config.peers.clone(),
        );
        let transport = Rc::new(Transport::start(transport_config, {
            let (context, replicas, leaders) = (context.clone(), replicas.clone(), leaders.clone());
            move |received: Received<BrokerWire>| match received.message {
                BrokerWire::Partition(message) => {
                    let partition = PartitionId::new(message.topic, message.partition);
                    let delivered: Delivered =
                        (received.from_node, message.message, received.payload);
                    if context.owner_of(&partition) == context.shard_id() {
                        deliver_locally(&replicas, &partition, delivered);
                    } else {
                        let context = context.clone();
                        glommio::spawn_local(async move {
                            context.deliver(partition, Box::new(delivered)).await
                        })
                        .detach();
                    }
                }
                BrokerWire::Leaders(reports) => {
                    for report in reports {
                        let partition = PartitionId::new(report.topic, report.partition);
                        leaders.report(&partition, received.from_node, report.term);
                    }
                }
            }
        })?);
        context.set_delivery_handler({
            let replicas = replicas.clone();
            Box::new(move |partition, message| {
                if let Ok(delivered) = message.downcast::<Delivered>() {
                    deliver_locally(&replicas, &partition, *delivered);
                }
            })
        });
        let replication = Rc::new(ShardReplication {
            context: context.clone(),
            config,
            transport,
            replicas,
            leaders,
        });
        glommio::spawn_local({
            let replication = replication.clone();
            async move {
                let tick = replication.config.tick;
                let ticking = replication.clone();
                let mut ticks = 0u64;
                context
                    .every(tick, move || {
                        ticks += 1;
                        ticking.tick(ticks.is_multiple_of(LEADER_REPORT_INTERVAL_TICKS));
                        std::future::ready(())
                    })
                    .await;
                replication.stop().await;
            }
        })
        .detach();
        Ok(replication)
    }

    /// One tick of every replica; notes who leads what, and (`report`) tells the other
    /// brokers what this shard leads.
    fn tick(&self, report: bool) {
        let replicas: Vec<(PartitionId, PartitionReplica)> = self
            .replicas
            .borrow()
            .iter()
            .map(|(partition, replica)| (partition.clone(), replica.clone()))
            .collect();
        let mut led = Vec::new();
        for (partition, replica) in replicas {
            replica.tick();
            if let Some(leader) = replica.leader() {
                self.leaders.report(&partition, leader, replica.term());
                if leader == self.config.node_id {
                    led.push(LeaderReport {
                        topic: partition.topic.clone(),
                        partition: partition.partition,
                        term: replica.term(),
                    });
                }
            }
        }
        if report && !led.is_empty() {
            for peer in self
                .config
                .peers
                .keys()
                .filter(|peer| **peer != self.config.node_id)
            {
                let _ = self
                    .transport
                    .send(*peer, &BrokerWire::Leaders(led.clone()), Bytes::new());
            }
        }
    }

    /// The broker's table of partition leaders.
    pub fn leaders(&self) -> &Arc<LeaderTable> {
        &self.leaders
    }

    /// Runs this broker's member of `partition`'s group (its log directory must exist; the
    /// shard must own it) with `voters` as the group's voters if it is new here.
    pub async fn host(
        &self,
        partition: PartitionId,
        voters: Vec<NodeId>,
    ) -> Result<PartitionReplica, ReplicaError> {
        if let Some(replica) = self.replicas.borrow().get(&partition) {
            return Ok(replica.clone());
        }
        let log = self.context.partition_log(&partition).await?;
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
        };
        let outbox = Rc::new(PartitionOutbox {
            transport: self.transport.clone(),
            topic: partition.topic.clone(),
            partition: partition.partition,
        });
        let replica = PartitionReplica::open(config, dir, log, outbox)?;
        self.context
            .register_replicated(partition.clone(), Rc::new(replica.clone()));
        self.replicas
            .borrow_mut()
            .insert(partition, replica.clone());
        Ok(replica)
    }

    /// The replica of `partition` on this shard, if it runs here.
    pub fn replica(&self, partition: &PartitionId) -> Option<PartitionReplica> {
        self.replicas.borrow().get(partition).cloned()
    }

    /// Stops every replica and the transport (the shard is shutting down).
    async fn stop(&self) {
        let replicas: Vec<(PartitionId, PartitionReplica)> =
            self.replicas.borrow_mut().drain().collect();
        for (partition, replica) in replicas {
            self.context.unregister_replicated(&partition);
            replica.stop("the shard is shutting down");
        }
        self.transport.close().await;
    }
}

fn deliver_locally(
    replicas: &RefCell<HashMap<PartitionId, PartitionReplica>>,
    partition: &PartitionId,
    (from, message, payload): Delivered,
) {
    // Not hosted (yet, or any more): dropped like a lost message; the sender retries.
    let replica = replicas.borrow().get(partition).cloned();
    if let Some(replica) = replica {
        replica.receive(from, message, payload);
    }
}

/// Election timeouts differ per broker, partition and start.
fn replica_seed(node_id: NodeId, partition: &PartitionId) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (node_id, partition, std::process::id()).hash(&mut hasher);
    hasher.finish()
}

struct PartitionOutbox {
    transport: Rc<Transport<BrokerWire>>,
    topic: String,
    partition: u32,
}

impl Outbox for PartitionOutbox {
    fn send(&self, to: NodeId, message: Message, payload: Bytes) {
        let message = BrokerWire::Partition(PartitionMessage {
            topic: self.topic.clone(),
            partition: self.partition,
            message,
        });
        // A full queue or a closed transport loses the message, as the network may.
        let _ = self.transport.send(to, &message, payload);
    }
}
