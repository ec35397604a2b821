//! What a broker that is one of several knows and asks beyond its own logs: the other brokers
//! and their addresses, where each partition's replicas are and who leads it, and the
//! controller that creates and deletes topics. `net` answers Kafka requests from it without
//! knowing how it is kept (the metadata log and the partitions' Raft groups, in
//! `replication`); a broker running alone has none, and answers as the only broker.

use std::collections::BTreeMap;

use futures::future::LocalBoxFuture;

/// A broker as clients see it in Metadata.
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

/// A refused or failed cluster change, with the Kafka error code to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterError {
    pub code: i16,
    pub message: String,
}

/// See the module documentation. One per shard.
pub trait ClusterView {
    /// The live brokers.
    fn brokers(&self) -> Vec<ClusterBroker>;

    /// Where a partition lives; `None` if the metadata has no such partition.
    fn placement(&self, topic: &str, partition: u32) -> Option<PartitionPlacement>;

    /// The broker that coordinates the groups of `__consumer_offsets` partition
    /// `offsets_partition`: the partition's leader; `None` while it has none known (or the
    /// topic is still being created), which clients retry (COORDINATOR_NOT_AVAILABLE).
    fn group_coordinator(&self, offsets_partition: u32) -> Option<ClusterBroker>;

    /// Asks the controller for a topic; resolves once this broker's catalog holds it.
    /// `replication_factor: None` takes the cluster's default.
    fn create_topic(
        &self,
        name: String,
        partitions: u32,
        replication_factor: Option<u16>,
        configs: BTreeMap<String, String>,
    ) -> LocalBoxFuture<'static, Result<(), ClusterError>>;

    /// Asks the controller to delete a topic; resolves once this broker has removed it.
    fn delete_topic(&self, name: String) -> LocalBoxFuture<'static, Result<(), ClusterError>>;

    /// Asks the controller to grow a topic to `count` partitions; resolves once this broker's
    /// catalog has them.
    fn create_partitions(
        &self,
        name: String,
        count: u32,
    ) -> LocalBoxFuture<'static, Result<(), ClusterError>>;

    /// The partitions being moved, by topic and partition.
    fn reassignments(&self) -> Vec<PartitionMove>;

    /// Asks the controller to move a partition to the brokers `replicas` (the first its
    /// preferred leader), or (`None`) to cancel its move; resolves once that is committed (the
    /// move itself goes on in the background).
    fn reassign(
        &self,
        topic: String,
        partition: u32,
        replicas: Option<Vec<i32>>,
    ) -> LocalBoxFuture<'static, Result<(), ClusterError>>;

    /// Asks the controller to make `configs` a topic's whole set of overrides; resolves once
    /// this broker's catalog (and its open logs) have them.
    fn alter_topic_configs(
        &self,
        name: String,
        configs: BTreeMap<String, String>,
    ) -> LocalBoxFuture<'static, Result<(), ClusterError>>;

    /// A producer id unique in the cluster for its whole life, from the block the controller
    /// handed this broker; `None` while the broker has none left (it is fetching the next
    /// block, and the client retries).
    fn producer_id(&self) -> Option<i64>;
}
