//! One shard's view of the cluster, for the Kafka handlers: the live brokers, where each
//! partition's replicas are and who leads it, which broker coordinates a group, and the changes
//! a client asks of the controller (each answered once this broker shows its effect, so that
//! the client's next request here sees it).
//!
//! Leaders come from the broker's `LeaderTable`, and the ISR from the in-sync voters leaders put
//! in their reports. In a cluster `ferrite serve` does not make `__consumer_offsets` locally: it
//! keeps the partition count an earlier start mirrored, and a broker started with another
//! `--offsets-partitions` coordinates no groups (and says so once), since it would look for
//! groups in the wrong partitions.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use engine::acls::AclChange;
use engine::catalog::{
    offsets_topic_configs, transaction_state_topic_configs, Catalog, OFFSETS_TOPIC,
    TRANSACTION_STATE_TOPIC,
};
use engine::credentials::CredentialChange;
use engine::quotas::QuotaChange;
use engine::shard::{AppendKind, AppendPending, Durability, PartitionId};
use futures::future::LocalBoxFuture;

use super::peer_calls::PeerCalls;
use super::{
    kafka_node_id, ClusterBroker, ClusterChangeError, ClusterState, PartitionMove,
    PartitionPlacement,
};
use crate::controller::{ConfigChange, ConfigOperation, ControllerError, ControllerRequest};
use crate::metadata::{BrokerRegistration, MetadataImage, MetadataRecord, PlanError, Replica};
use crate::shard::ShardReplication;
use crate::stats::ReplicationStats;
use crate::NodeId;

/// How long a topic change may take to reach this broker's catalog once committed.
const CATALOG_WAIT: Duration = Duration::from_secs(30);
/// How often a change is looked for while waiting for it to show here.
const SHOWN_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Replicas of each partition of an internal topic (Kafka's `offsets.topic.replication.factor`
/// and `transaction.state.log.replication.factor`), or as many as the cluster has brokers if
/// fewer.
const INTERNAL_TOPIC_REPLICATION_FACTOR: usize = 3;

/// The internal topics the cluster makes on first use, each with its coordinators: groups in
/// `__consumer_offsets`, transactions in `__transaction_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InternalTopic {
    Offsets = 0,
    TransactionState = 1,
}

impl InternalTopic {
    pub fn name(self) -> &'static str {
        match self {
            InternalTopic::Offsets => OFFSETS_TOPIC,
            InternalTopic::TransactionState => TRANSACTION_STATE_TOPIC,
        }
    }

    fn configs(self) -> BTreeMap<String, String> {
        match self {
            InternalTopic::Offsets => offsets_topic_configs(),
            InternalTopic::TransactionState => transaction_state_topic_configs(),
        }
    }

    /// The flag this broker's `--offsets-partitions` or `--transaction-state-partitions`
    /// names the count with.
    fn partitions_flag(self) -> &'static str {
        match self {
            InternalTopic::Offsets => "--offsets-partitions",
            InternalTopic::TransactionState => "--transaction-state-partitions",
        }
    }
}

/// See the module documentation. One per shard.
pub struct ShardCluster {
    pub(super) state: Arc<ClusterState>,
    pub(super) replication: Rc<ShardReplication>,
    pub(super) catalog: Arc<Catalog>,
    /// This broker's partition counts of its internal topics (by [`InternalTopic`]), by which
    /// it places groups and transactional ids.
    pub(super) internal_partitions: [u32; 2],
    /// Whether this shard said once that a topic's count differs from this broker's.
    pub(super) internal_partitions_mismatch_reported: [Cell<bool>; 2],
    /// This run of the broker, as it registered (see [`ShardCluster::brokers`]).
    pub(super) incarnation: u64,
    /// The shard's calls to and from other brokers: markers, verifications (`peer_calls`).
    pub(super) calls: Rc<PeerCalls>,
}

/// Where clients of the listener named `listener` reach a registered broker; `None` if it has
/// no such listener (Kafka leaves such a broker out of their answers too).
fn client_address(broker: &BrokerRegistration, listener: &str) -> Option<ClusterBroker> {
    let endpoint = broker.endpoint_for(listener)?;
    Some(ClusterBroker {
        node_id: kafka_node_id(broker.node_id),
        host: endpoint.host.clone(),
        port: i32::from(endpoint.port),
    })
}

/// Waits until this broker shows a committed change (`shown`), for up to [`CATALOG_WAIT`].
async fn shown_here(shown: impl Fn() -> bool) -> Result<(), ClusterChangeError> {
    let deadline = Instant::now() + CATALOG_WAIT;
    while !shown() {
        if Instant::now() > deadline {
            return Err(ClusterChangeError::NotShownHere);
        }
        glommio::timer::sleep(SHOWN_POLL_INTERVAL).await;
    }
    Ok(())
}

impl ShardCluster {
    /// The shared state of the broker this shard belongs to.
    pub fn state(&self) -> &Arc<ClusterState> {
        &self.state
    }

    /// Submits a produce request's batches (checked as `kind` says: a producer's, verified or
    /// not) to their partitions' Raft replicas (see
    /// [`ShardReplication::submit_appends`]): one wait per batch, in the request's order, each
    /// with its place in its partition's order by the time this returns.
    pub async fn submit_appends(
        &self,
        appends: Vec<(PartitionId, BytesMut)>,
        kind: AppendKind,
        durability: Durability,
    ) -> Vec<AppendPending> {
        self.replication
            .submit_appends(appends, kind, durability)
            .await
    }

    /// What this shard's replicas sent and received so far, and how long their writes took.
    pub fn replication_stats(&self) -> ReplicationStats {
        self.replication.replication_stats()
    }

    /// The live brokers, once this run of the broker is live in its image; `None` before.
    /// A restarted broker applies its metadata log again from the start, through images where
    /// live brokers are missing (not yet registered, or fenced by an earlier failure), and
    /// until its own registration is applied it cannot tell a current image from an old one.
    /// Clients take a broker missing from a Metadata answer for one removed from the cluster
    /// (librdkafka 2.11+ destroys its handle, and a coordinator request waiting on that handle
    /// never completes), so an answer from such an image would mislead them: Kafka's brokers
    /// open their listeners only once caught up. From then on the list is the live brokers of
    /// the image, those a topic's replicas may go to: a client that waits for N brokers to be
    /// listed may then create a topic of N replicas.
    /// `listener`: the name of the listener whose addresses the client is told.
    pub fn brokers(&self, listener: &str) -> Option<Vec<ClusterBroker>> {
        let image = self.state.image();
        if !image.is_live_run(self.state.settings.node_id, self.incarnation) {
            return None;
        }
        Some(
            image
                .live_brokers()
                .filter_map(|broker| client_address(broker, listener))
                .collect(),
        )
    }

    /// Where a partition lives; `None` if the metadata has no such partition.
    pub fn placement(&self, topic: &str, partition: u32) -> Option<PartitionPlacement> {
        let image = self.state.image();
        let replicas: Vec<i32> = image
            .topic(topic)?
            .replicas(partition)?
            .iter()
            .map(|replica| kafka_node_id(replica.node_id))
            .collect();
        let partition = PartitionId::new(topic, partition);
        let leaders = &self.state.leaders;
        // The leader's in-sync voters once it reported them; all replicas until then.
        let in_sync = match leaders.in_sync(&partition) {
            Some(voters) => voters.into_iter().map(kafka_node_id).collect(),
            None => replicas.clone(),
        };
        // No leader known here after there was one (an election, or this broker is cut off
        // from the others): name another replica rather than none. A client asks it, and is
        // either right or told NOT_LEADER by a broker that (on the majority side) knows the
        // leader; answering LEADER_NOT_AVAILABLE instead would keep a client that talks only
        // to this broker (as librdkafka's sparse connections do) asking it again and again.
        // The guess carries the latest term known here: librdkafka ignores an answer with an
        // older leader epoch than the one it has, and would stay with the deposed leader. A
        // new partition's first election (term 0) has no leader yet: LEADER_NOT_AVAILABLE,
        // and clients wait for one.
        let own = kafka_node_id(self.state.settings.node_id);
        let (term, leader) = leaders.latest_term(&partition).unwrap_or((0, None));
        let leader = match leader {
            Some(leader) => Some(kafka_node_id(leader)),
            None if term == 0 => None,
            None => replicas.iter().copied().find(|replica| *replica != own),
        };
        Some(PartitionPlacement {
            leader,
            leader_epoch: i32::try_from(term).unwrap_or(i32::MAX),
            in_sync,
            replicas,
        })
    }

    /// The broker that coordinates the groups of `__consumer_offsets` partition
    /// `offsets_partition`: the partition's leader; `None` while it has none known (or the
    /// topic is still being created, which the first call starts), which clients retry
    /// (COORDINATOR_NOT_AVAILABLE).
    pub fn group_coordinator(
        &self,
        offsets_partition: u32,
        listener: &str,
    ) -> Option<ClusterBroker> {
        self.internal_coordinator(InternalTopic::Offsets, offsets_partition, listener)
    }

    /// The broker that coordinates the transactional ids of `__transaction_state` partition
    /// `state_partition`, as [`group_coordinator`](Self::group_coordinator) for groups.
    pub fn transaction_coordinator(
        &self,
        state_partition: u32,
        listener: &str,
    ) -> Option<ClusterBroker> {
        self.internal_coordinator(InternalTopic::TransactionState, state_partition, listener)
    }

    fn internal_coordinator(
        &self,
        internal: InternalTopic,
        index: u32,
        listener: &str,
    ) -> Option<ClusterBroker> {
        let image = self.state.image();
        let name = internal.name();
        let Some(topic) = image.topic(name) else {
            self.request_internal_topic(internal, &image);
            return None;
        };
        let partitions = self.internal_partitions[internal as usize];
        if topic.partitions.len() != partitions as usize {
            // Keys would be looked for in the wrong partitions.
            if !self.internal_partitions_mismatch_reported[internal as usize].replace(true) {
                eprintln!(
                    "ferrite: {name} has {} partitions, but this broker was started with \
                 {} {partitions}; it coordinates none of them",
                    topic.partitions.len(),
                    internal.partitions_flag(),
                );
            }
            return None;
        }
        let partition = PartitionId::new(name, index);
        let (leader, _) = self.state.leaders.leader(&partition)?;
        let coordinator = image
            .live_brokers()
            .find(|broker| broker.node_id == leader)?;
        client_address(coordinator, listener)
    }

    /// Asks the controller for a topic; resolves once this broker's catalog holds it.
    /// `replication_factor: None` takes the cluster's default.
    pub fn create_topic(
        &self,
        name: String,
        partitions: u32,
        replication_factor: Option<u16>,
        configs: BTreeMap<String, String>,
    ) -> LocalBoxFuture<'static, Result<(), ClusterChangeError>> {
        let replication_factor =
            replication_factor.unwrap_or(self.state.settings.default_replication_factor);
        let request = ControllerRequest::CreateTopic {
            name: name.clone(),
            partitions: i32::try_from(partitions).unwrap_or(i32::MAX),
            replication_factor: i16::try_from(replication_factor).unwrap_or(i16::MAX),
            configs: configs.into_iter().collect(),
        };
        self.change(request, move |catalog| {
            catalog.topics().get(&name).is_some()
        })
    }

    /// Asks the controller to delete a topic; resolves once this broker has removed it.
    pub fn delete_topic(
        &self,
        name: String,
    ) -> LocalBoxFuture<'static, Result<(), ClusterChangeError>> {
        let request = ControllerRequest::DeleteTopic { name: name.clone() };
        self.change(request, move |catalog| {
            catalog.topics().get(&name).is_none()
        })
    }

    /// Asks the controller to grow a topic to `count` partitions; resolves once this broker's
    /// catalog has them.
    pub fn create_partitions(
        &self,
        name: String,
        count: u32,
    ) -> LocalBoxFuture<'static, Result<(), ClusterChangeError>> {
        let request = ControllerRequest::CreatePartitions {
            name: name.clone(),
            count: i32::try_from(count).unwrap_or(i32::MAX),
        };
        self.change(request, move |catalog| {
            catalog
                .topics()
                .get(&name)
                .is_some_and(|topic| topic.partitions >= count)
        })
    }

    /// The partitions being moved, by topic and partition.
    pub fn reassignments(&self) -> Vec<PartitionMove> {
        let image = self.state.image();
        let nodes = |replicas: &mut dyn Iterator<Item = &Replica>| -> Vec<i32> {
            replicas
                .map(|replica| kafka_node_id(replica.node_id))
                .collect()
        };
        image
            .topics()
            .flat_map(|(name, topic)| {
                topic.reassignments.iter().map(move |(&partition, moving)| {
                    let replicas = topic.replicas(partition).unwrap_or_default();
                    PartitionMove {
                        topic: name.to_owned(),
                        partition,
                        replicas: nodes(&mut replicas.iter()),
                        adding: nodes(&mut moving.adding()),
                        removing: nodes(&mut moving.removing(replicas)),
                    }
                })
            })
            .collect()
    }

    /// Asks the controller to move a partition to the brokers `replicas` (the first its
    /// preferred leader), or (`None`) to cancel its move; resolves once that is committed (the
    /// move itself goes on in the background).
    pub fn reassign(
        &self,
        topic: String,
        partition: u32,
        replicas: Option<Vec<i32>>,
    ) -> LocalBoxFuture<'static, Result<(), ClusterChangeError>> {
        let replicas = match replicas
            .map(|replicas| {
                replicas
                    .into_iter()
                    .map(NodeId::try_from)
                    .collect::<Result<Vec<NodeId>, _>>()
            })
            .transpose()
        {
            Ok(replicas) => replicas,
            Err(_) => {
                return Box::pin(std::future::ready(Err(
                    ClusterChangeError::NegativeBrokerId,
                )))
            }
        };
        let request = ControllerRequest::Reassign {
            topic,
            partition,
            replicas,
        };
        // Answered once this broker's image has it, so that a ListPartitionReassignments sent
        // here next shows the move.
        self.applied_here(request)
    }

    /// Asks the controller to make `configs` a topic's whole set of overrides; resolves once
    /// this broker's catalog (and its open logs) have them.
    pub fn alter_topic_configs(
        &self,
        name: String,
        configs: BTreeMap<String, String>,
    ) -> LocalBoxFuture<'static, Result<(), ClusterChangeError>> {
        // The whole set, as changes from what this broker has now: removed keys deleted, the
        // rest set.
        let current = self
            .catalog
            .topics()
            .get(&name)
            .map(|topic| topic.configs.clone())
            .unwrap_or_default();
        let mut changes: Vec<ConfigChange> = current
            .keys()
            .filter(|key| !configs.contains_key(*key))
            .map(|key| ConfigChange {
                key: key.clone(),
                operation: ConfigOperation::Delete,
                value: None,
            })
            .collect();
        changes.extend(configs.iter().map(|(key, value)| ConfigChange {
            key: key.clone(),
            operation: ConfigOperation::Set,
            value: Some(value.clone()),
        }));
        let request = ControllerRequest::AlterConfigs {
            name: name.clone(),
            changes,
        };
        self.change(request, move |catalog| {
            catalog
                .topics()
                .get(&name)
                .is_some_and(|topic| topic.configs == configs)
        })
    }

    /// Asks the controller to make `changes` to the users' SCRAM credentials; resolves once
    /// this broker authenticates with them.
    pub fn alter_credentials(
        &self,
        changes: Vec<CredentialChange>,
    ) -> LocalBoxFuture<'static, Result<(), ClusterChangeError>> {
        let request = ControllerRequest::AlterCredentials {
            records: changes
                .iter()
                .map(MetadataRecord::of_credential_change)
                .collect(),
        };
        self.applied_here(request)
    }

    /// Asks the controller to make `changes` to the client quotas; resolves once this broker
    /// enforces them.
    pub fn alter_client_quotas(
        &self,
        changes: Vec<QuotaChange>,
    ) -> LocalBoxFuture<'static, Result<(), ClusterChangeError>> {
        let request = ControllerRequest::AlterClientQuotas {
            records: changes
                .iter()
                .map(MetadataRecord::of_quota_change)
                .collect(),
        };
        self.applied_here(request)
    }

    /// Asks the controller to make `changes` to the ACLs; resolves once this broker authorizes
    /// with them.
    pub fn alter_acls(
        &self,
        changes: Vec<AclChange>,
    ) -> LocalBoxFuture<'static, Result<(), ClusterChangeError>> {
        let request = ControllerRequest::AlterAcls {
            records: changes.iter().map(MetadataRecord::of_acl_change).collect(),
        };
        self.applied_here(request)
    }

    /// Asks the controller to apply `request`; resolves once this broker's image holds what it
    /// committed (so the broker that answered acts on it from then on).
    fn applied_here(
        &self,
        request: ControllerRequest,
    ) -> LocalBoxFuture<'static, Result<(), ClusterChangeError>> {
        let replication = self.replication.clone();
        let state = self.state.clone();
        Box::pin(async move {
            let index = replication.ask_controller(request).await?;
            shown_here(|| state.image().last_applied_index() >= index).await
        })
    }

    /// A producer id unique in the cluster for its whole life, from the block the controller
    /// handed this broker; `None` while the broker has none left (it is fetching the next
    /// block, and the client retries).
    pub fn producer_id(&self) -> Option<i64> {
        self.state.producer_ids.claim()
    }

    /// Has the controller create `__consumer_offsets` (with its own partition count,
    /// replication factor and configs, as Kafka creates its internal topics) unless it exists:
    /// for a client that asks for it by name before any group made it, as Sarama-based tools
    /// (Burrow) do at start-up. Created as an ordinary topic instead, it would have
    /// `--default-partitions` partitions and coordinate no group, for good.
    pub fn ensure_offsets_topic(&self) {
        let image = self.state.image();
        if image.topic(OFFSETS_TOPIC).is_none() {
            self.request_internal_topic(InternalTopic::Offsets, &image);
        }
    }

    /// Asks the controller for an internal topic, in the background, unless a request for it
    /// is under way or too few brokers are live for its replication factor yet.
    fn request_internal_topic(&self, internal: InternalTopic, image: &MetadataImage) {
        let replication_factor = self
            .state
            .settings
            .peers
            .len()
            .min(INTERNAL_TOPIC_REPLICATION_FACTOR);
        let requested = &self.state.internal_topic_requested[internal as usize];
        if image.live_brokers().count() < replication_factor
            || requested.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let name = internal.name();
        let creating = self.create_topic(
            name.to_owned(),
            self.internal_partitions[internal as usize],
            u16::try_from(replication_factor).ok(),
            internal.configs(),
        );
        let state = self.state.clone();
        glommio::spawn_local(async move {
            match creating.await {
                Ok(())
                | Err(ClusterChangeError::Controller(ControllerError::Refused(
                    PlanError::TopicAlreadyExists(_),
                ))) => {}
                Err(error) => engine::log_rate_limited!("ferrite: cannot create {name}: {error}"),
            }
            state.internal_topic_requested[internal as usize].store(false, Ordering::Release);
        })
        .detach();
    }

    /// Sends `request` to the controller and waits until this broker's catalog shows its
    /// effect (`done`).
    fn change(
        &self,
        request: ControllerRequest,
        done: impl Fn(&Catalog) -> bool + 'static,
    ) -> LocalBoxFuture<'static, Result<(), ClusterChangeError>> {
        let replication = self.replication.clone();
        let catalog = self.catalog.clone();
        Box::pin(async move {
            replication.ask_controller(request).await?;
            shown_here(|| done(&catalog)).await
        })
    }
}
