//! What brokers' shards say to each other over the inter-broker transport: partition
//! messages in coalesced frames, the controller's messages, leader reports, and calls between
//! brokers (transaction markers for partition leaders to write, transactional produces to
//! verify with their coordinator).

use std::rc::Rc;

use bytes::Bytes;

use crate::cluster::PeerWire;
use crate::controller::{ControllerWire, WireOutbox};
use crate::message::{Message, NodeId};
use crate::transport::Transport;

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
    Calls(PeerWire),
}

/// The controller's messages, on the shard's transport.
pub(super) struct ControllerOutbox(pub(super) Rc<Transport<BrokerWire>>);

impl WireOutbox for ControllerOutbox {
    fn send(&self, to: NodeId, wire: ControllerWire, payload: Bytes) {
        // Losses are retried by the controller, as the network's.
        let _ = self.0.send(to, &BrokerWire::Controller(wire), payload);
    }
}
