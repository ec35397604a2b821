//! A broker's part in the cluster, above Raft and below the Kafka protocol: what the broker's
//! shards share about the cluster (the metadata image the controller applied, who leads each
//! partition), each shard's view of it for the Kafka handlers ([`ShardCluster`]: brokers,
//! partition placement and leaders, group coordinators, producers' batches (to the partitions'
//! replicas, `crate::shard::produce`), transaction markers (to the partitions' leaders,
//! `markers`), transactional produces verified with their coordinator (`verification`), both
//! carried between brokers as calls (`peer_calls`), and changes asked of the controller),
//! and the task that keeps this broker in step with the metadata log
//! (`metadata_follower`): its catalog mirrors the log's topics (ids and configs included)
//! and its shards run a replica of every partition the log places on this broker.
//!
//! It lives here rather than in the `ferrite` binary so that a request flows one way (the
//! Kafka handlers in `net` call down into it, it calls down into Raft and storage) and so
//! that it is tested in-process (`tests/control_plane.rs`). It answers in typed errors
//! ([`ClusterChangeError`]); `net` turns them into Kafka error codes, in its one table.
//!
//! Consumer groups: `__consumer_offsets` is a replicated topic like any other, created through
//! the controller on the first FindCoordinator that finds it missing (as Kafka does), with
//! Kafka's `offsets.topic.replication.factor` of 3 (fewer in a smaller cluster) and only once
//! that many brokers are live (a topic made with fewer replicas would stay so). A group's
//! coordinator is the leader of its partition (see `net::groups::shard`).

mod markers;
mod metadata_follower;
mod peer_calls;
mod shard_cluster;
mod start;
mod verification;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use engine::acls::{AclTable, Acls};
use engine::credentials::{CredentialTable, Credentials};
use engine::quotas::{ClientQuotas, QuotaTable};
use engine::shard::ReplicaPlacement;

use crate::controller::{ControllerError, ProducerIdPool};
use crate::metadata::MetadataImage;
use crate::shard::LeaderTable;
use crate::transport::peer_auth::{ClusterIdentity, ClusterSecret};
use crate::NodeId;

pub use markers::{
    MarkerConfig, MarkerOutcome, MarkerRefusal, OffsetsMarkerWriter, WireMarker, WireOutcome,
};
pub(crate) use peer_calls::PeerCalls;
pub use peer_calls::{PeerAnswer, PeerCall, PeerWire};
pub use shard_cluster::ShardCluster;
pub use start::{new_incarnation, start_shard, ClusterStart, ControllerLeaderObserver};
pub use verification::{
    TransactionVerification, TransactionVerifier, VerificationConfig, VerificationOutcome,
    VerificationRefusal, WireVerified,
};

/// How this broker takes part in a cluster (from `ferrite serve`'s flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    pub node_id: NodeId,
    pub peers: BTreeMap<NodeId, SocketAddr>,
    pub rpc_listen: SocketAddr,
    pub default_replication_factor: u16,
    /// The controller voters are this many lowest node ids of `peers`.
    pub controller_voters: usize,
    /// How often a partition leader hands leadership back to its preferred replica; `None`:
    /// never.
    pub leader_imbalance_check_interval: Option<Duration>,
    /// The secret every peer must prove it holds (`--cluster-secret-file`); `None`: the
    /// inter-broker port believes any caller.
    pub secret: Option<ClusterSecret>,
}

/// A broker as clients see it in Metadata (Kafka's broker ids are `i32`; `ferrite serve`
/// takes no node id above `i32::MAX`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterBroker {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
}

/// A partition's replicas and leader, as this broker knows them now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionPlacement {
    /// `None` while no leader is known (clients retry: LEADER_NOT_AVAILABLE).
    pub leader: Option<i32>,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    /// The replicas that are caught up (Kafka's ISR); in a Raft group, those the leader
    /// counts towards commit.
    pub in_sync: Vec<i32>,
}

/// A partition being moved to other brokers, as ListPartitionReassignments shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMove {
    pub topic: String,
    pub partition: u32,
    /// Every broker involved: the target's, then those still leaving.
    pub replicas: Vec<i32>,
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

/// A refused or failed cluster change.
#[derive(Debug, thiserror::Error)]
pub enum ClusterChangeError {
    /// The controller refused the change, or no controller leader took it.
    #[error(transparent)]
    Controller(#[from] ControllerError),
    /// A reassignment named a negative broker id.
    #[error("broker ids are not negative")]
    NegativeBrokerId,
    /// Committed, but this broker did not show it within the wait.
    #[error("the change was committed but has not reached this broker yet")]
    NotShownHere,
}

/// What every shard of the broker shares about the cluster.
pub struct ClusterState {
    pub settings: ClusterSettings,
    /// The metadata as last applied by this broker's controller (published by the metadata
    /// follower, read by every shard).
    image: ArcSwap<MetadataImage>,
    pub leaders: Arc<LeaderTable>,
    /// The shard of each of this broker's replicas, as the metadata log places them (the
    /// shards route by it).
    pub placement: Arc<ReplicaPlacement>,
    /// A shard is asking the controller for an internal topic (one request at a time per
    /// topic, by `shard_cluster::InternalTopic`).
    internal_topic_requested: [AtomicBool; 2],
    /// This run's producer ids, from blocks the controller committed for it (its shard keeps
    /// the pool supplied).
    producer_ids: Arc<ProducerIdPool>,
    /// The users' SCRAM credentials as the image last applied has them (the metadata follower
    /// publishes them before the image), which SASL authenticates against.
    pub credentials: Arc<Credentials>,
    /// The client quotas as the image last applied has them (the metadata follower publishes
    /// them before the image), which every shard enforces.
    pub quotas: Arc<ClientQuotas>,
    /// The cluster's id as this broker knows it (empty until stored or adopted; see
    /// `crate::cluster_id`): said in its hellos, checked in its peers', answered in Metadata.
    pub cluster_id: ClusterIdentity,
    /// The ACLs as the image last applied has them (published as the credentials are), which
    /// requests are authorized against.
    pub acls: Arc<Acls>,
}

impl ClusterState {
    pub fn new(settings: ClusterSettings) -> Arc<ClusterState> {
        Arc::new(ClusterState {
            settings,
            image: ArcSwap::from_pointee(MetadataImage::default()),
            leaders: Arc::new(LeaderTable::default()),
            placement: Arc::default(),
            internal_topic_requested: Default::default(),
            producer_ids: Arc::default(),
            credentials: Arc::new(Credentials::in_memory(CredentialTable::new())),
            quotas: Arc::new(ClientQuotas::in_memory(QuotaTable::new())),
            cluster_id: ClusterIdentity::new(""),
            acls: Arc::new(Acls::in_memory(AclTable::new())),
        })
    }

    /// The metadata as last applied here.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.load_full()
    }
}

/// A node id as Kafka clients see it.
fn kafka_node_id(id: NodeId) -> i32 {
    i32::try_from(id).unwrap_or(i32::MAX)
}
