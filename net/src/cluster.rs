//! The cluster in Kafka's terms: what a broker that is one of several knows and asks beyond its
//! own logs (the other brokers, where each partition's replicas are and who leads it, the
//! controller that creates and deletes topics), as the Kafka handlers use it. The control plane
//! itself is `ferrite_replication::cluster`, below this crate; this wrapper only turns its typed
//! refusals into Kafka error codes, through [`crate::errors::cluster_error_code`], so that the
//! handlers answer with a code and a message as for every other failure. A broker running
//! alone has no cluster, and answers as the only broker.
//!
//! `Broker::cluster` holds it (`None` for a broker alone). Produce hands it the batches (the
//! partitions' Raft replicas take them; their refusals are the engine's `LogError`s, which the
//! handler maps as on a broker alone). Metadata, CreateTopics, DeleteTopics,
//! CreatePartitions, the config changes, auto-creation, FindCoordinator, InitProducerId, the
//! partition reassignments and a transaction's markers (`transactions::markers`) use it. The handlers check what they can before asking (a bad config
//! value gets the same INVALID_CONFIG message as on a single broker); an auto-created topic is
//! answered LEADER_NOT_AVAILABLE while the controller creates it, as Kafka does; and Metadata
//! names the answering broker as the controller (`handlers::metadata` says why).

use std::collections::BTreeMap;
use std::rc::Rc;

use bytes::BytesMut;
use engine::batch::TransactionMarker;
use engine::credentials::CredentialChange;
use engine::quotas::QuotaChange;
use engine::shard::{AppendKind, AppendPending, Durability, PartitionId};
use ferrite_replication::cluster::{
    ClusterChangeError, OffsetsMarkerWriter, ShardCluster, TransactionVerification,
    TransactionVerifier, VerificationOutcome,
};
use ferrite_replication::stats::ReplicationStats;
use futures::future::LocalBoxFuture;

pub use ferrite_replication::cluster::{ClusterBroker, PartitionMove, PartitionPlacement};

use crate::errors::{cluster_error_code, marker_refusal_code};
use crate::listener::ListenerName;

/// A refused or failed cluster change, with the Kafka error code to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterError {
    pub code: i16,
    pub message: String,
}

impl From<ClusterChangeError> for ClusterError {
    fn from(error: ClusterChangeError) -> ClusterError {
        ClusterError {
            code: cluster_error_code(&error),
            message: error.to_string(),
        }
    }
}

/// One shard's cluster, for the handlers (see the module documentation).
pub struct Cluster {
    shard: Rc<ShardCluster>,
}

type Change = LocalBoxFuture<'static, Result<(), ClusterError>>;

/// `change` with its refusal in Kafka's terms.
fn answered(change: LocalBoxFuture<'static, Result<(), ClusterChangeError>>) -> Change {
    Box::pin(async move { Ok(change.await?) })
}

impl Cluster {
    pub fn new(shard: Rc<ShardCluster>) -> Cluster {
        Cluster { shard }
    }

    /// See [`ShardCluster::brokers`].
    pub fn brokers(&self, listener: &ListenerName) -> Option<Vec<ClusterBroker>> {
        self.shard.brokers(listener.as_str())
    }

    /// See [`ShardCluster::placement`].
    pub fn placement(&self, topic: &str, partition: u32) -> Option<PartitionPlacement> {
        self.shard.placement(topic, partition)
    }

    /// See [`ShardCluster::group_coordinator`].
    pub fn group_coordinator(
        &self,
        offsets_partition: u32,
        listener: &ListenerName,
    ) -> Option<ClusterBroker> {
        self.shard
            .group_coordinator(offsets_partition, listener.as_str())
    }

    /// See [`ShardCluster::transaction_coordinator`].
    pub fn transaction_coordinator(
        &self,
        state_partition: u32,
        listener: &ListenerName,
    ) -> Option<ClusterBroker> {
        self.shard
            .transaction_coordinator(state_partition, listener.as_str())
    }

    /// See [`ShardCluster::ensure_offsets_topic`].
    pub fn ensure_offsets_topic(&self) {
        self.shard.ensure_offsets_topic()
    }

    /// See [`ShardCluster::create_topic`].
    pub fn create_topic(
        &self,
        name: String,
        partitions: u32,
        replication_factor: Option<u16>,
        configs: BTreeMap<String, String>,
    ) -> Change {
        answered(
            self.shard
                .create_topic(name, partitions, replication_factor, configs),
        )
    }

    /// See [`ShardCluster::delete_topic`].
    pub fn delete_topic(&self, name: String) -> Change {
        answered(self.shard.delete_topic(name))
    }

    /// See [`ShardCluster::create_partitions`].
    pub fn create_partitions(&self, name: String, count: u32) -> Change {
        answered(self.shard.create_partitions(name, count))
    }

    /// See [`ShardCluster::reassignments`].
    pub fn reassignments(&self) -> Vec<PartitionMove> {
        self.shard.reassignments()
    }

    /// See [`ShardCluster::reassign`].
    pub fn reassign(&self, topic: String, partition: u32, replicas: Option<Vec<i32>>) -> Change {
        answered(self.shard.reassign(topic, partition, replicas))
    }

    /// See [`ShardCluster::alter_topic_configs`].
    pub fn alter_topic_configs(&self, name: String, configs: BTreeMap<String, String>) -> Change {
        answered(self.shard.alter_topic_configs(name, configs))
    }

    /// See [`ShardCluster::alter_credentials`].
    pub fn alter_credentials(&self, changes: Vec<CredentialChange>) -> Change {
        answered(self.shard.alter_credentials(changes))
    }

    /// See [`ShardCluster::alter_client_quotas`].
    pub fn alter_client_quotas(&self, changes: Vec<QuotaChange>) -> Change {
        answered(self.shard.alter_client_quotas(changes))
    }

    /// See [`ShardCluster::alter_acls`].
    pub fn alter_acls(&self, changes: Vec<engine::acls::AclChange>) -> Change {
        answered(self.shard.alter_acls(changes))
    }

    /// See [`ShardCluster::submit_appends`].
    pub async fn submit_appends(
        &self,
        appends: Vec<(PartitionId, BytesMut)>,
        kind: AppendKind,
        durability: Durability,
    ) -> Vec<AppendPending> {
        self.shard.submit_appends(appends, kind, durability).await
    }

    /// See [`ShardCluster::write_markers`]: one outcome per partition, in order, a refusal
    /// with its Kafka code.
    pub async fn write_markers(
        &self,
        marker: TransactionMarker,
        partitions: Vec<PartitionId>,
    ) -> Vec<Result<(), ClusterError>> {
        let outcomes = self.shard.write_markers(marker, partitions).await;
        outcomes
            .into_iter()
            .map(|outcome| {
                outcome.map_err(|refusal| ClusterError {
                    code: marker_refusal_code(&refusal),
                    message: refusal.to_string(),
                })
            })
            .collect()
    }

    /// See [`ShardCluster::set_offsets_marker_writer`].
    pub fn set_offsets_marker_writer(&self, writer: OffsetsMarkerWriter) {
        self.shard.set_offsets_marker_writer(writer)
    }

    /// See [`ShardCluster::verify_transaction`].
    pub async fn verify_transaction(
        &self,
        state_partition: u32,
        verification: TransactionVerification,
    ) -> Vec<VerificationOutcome> {
        self.shard
            .verify_transaction(state_partition, verification)
            .await
    }

    /// See [`ShardCluster::set_transaction_verifier`].
    pub fn set_transaction_verifier(&self, verifier: TransactionVerifier) {
        self.shard.set_transaction_verifier(verifier)
    }

    /// See [`ShardCluster::replication_stats`].
    pub fn replication_stats(&self) -> ReplicationStats {
        self.shard.replication_stats()
    }

    /// See [`ShardCluster::producer_id`].
    pub fn producer_id(&self) -> Option<i64> {
        self.shard.producer_id()
    }
}
