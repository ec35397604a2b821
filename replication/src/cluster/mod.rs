//! `ferrite serve` as one broker of several: what the broker's shards share about the cluster
//! (the metadata image the controller applied, who leads each partition), the view of it the
//! Kafka handlers use ([`net::cluster::ClusterView`]), and the task that keeps this broker in
//! step with the metadata log: its catalog mirrors the log's topics (ids and configs included)
//! and its shards run a replica of every partition the log places on this broker.
//!
//! Consumer groups: `__consumer_offsets` is a replicated topic like any other, created through
//! the controller on the first FindCoordinator that finds it missing (as Kafka does), with
//! Kafka's `offsets.topic.replication.factor` of 3 (fewer in a smaller cluster) and only once
//! that many brokers are live (a topic made with fewer replicas would stay so). A group's
//! coordinator is the leader of its partition (see `engine::shard::coordinator`).

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use engine::catalog::{is_internal_topic, Catalog, CatalogError, OFFSETS_TOPIC};
use engine::shard::{offsets_topic_configs, PartitionId, ReplicaPlacement, ShardContext};
use ferrite_replication::controller::{
    ConfigChange, ConfigOperation, Controller, ControllerConfig, ControllerError,
    ControllerRequest, ProducerIdPool, METADATA_TOPIC,
};
use ferrite_replication::metadata::{BrokerRegistration, MetadataImage, PlanError, Replica};
use ferrite_replication::shard::{Hosting, LeaderTable, ReplicationConfig, ShardReplication};
use ferrite_replication::NodeId;
use futures::future::LocalBoxFuture;
use kafka_protocol::ResponseError;
use net::cluster::{ClusterBroker, ClusterError, ClusterView, PartitionMove, PartitionPlacement};
use net::metrics::MetricsRegistry;

use crate::serve::ClusterSettings;

/// Brokers of another cluster are refused on the inter-broker listener.
const CLUSTER_ID: &str = "ferrite";
/// How often the controller's shard looks for newly applied metadata.
const SYNC_INTERVAL: Duration = Duration::from_millis(20);
/// How long a topic change may take to reach this broker's catalog once committed.
const CATALOG_WAIT: Duration = Duration::from_secs(30);
/// Replicas of each `__consumer_offsets` partition (Kafka's `offsets.topic.replication.factor`),
/// or as many as the cluster has brokers if fewer.
const OFFSETS_REPLICATION_FACTOR: usize = 3;

/// What every shard of the broker shares about the cluster.
pub struct Membership {
    pub settings: ClusterSettings,
    /// The metadata as last applied by this broker's controller.
    image: RwLock<Arc<MetadataImage>>,
    pub leaders: Arc<LeaderTable>,
    /// The shard of each of this broker's replicas, as the metadata log places them (the
    /// shards route by it).
    pub placement: Arc<ReplicaPlacement>,
    /// A shard is asking the controller for `__consumer_offsets` (one request at a time).
    offsets_topic_requested: AtomicBool,
    /// This run's producer ids, from blocks the controller committed for it (its shard keeps
    /// the pool supplied).
    producer_ids: Arc<ProducerIdPool>,
}

impl Membership {
    pub fn new(settings: ClusterSettings) -> Arc<Membership> {
        Arc::new(Membership {
            settings,
            image: RwLock::new(Arc::new(MetadataImage::default())),
            leaders: Arc::new(LeaderTable::default()),
            placement: Arc::default(),
            offsets_topic_requested: AtomicBool::new(false),
            producer_ids: Arc::default(),
        })
    }

    fn image(&self) -> Arc<MetadataImage> {
        self.image
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// One shard's [`ClusterView`].
pub struct ShardClusterView {
    pub membership: Arc<Membership>,
    pub replication: Rc<ShardReplication>,
    pub catalog: Arc<Catalog>,
    /// This broker's partition count of `__consumer_offsets`, by which it places groups.
    pub offsets_partitions: u32,
    /// Whether this shard said once that the topic's count differs from `offsets_partitions`.
    offsets_partitions_mismatch_reported: Cell<bool>,
    /// This broker, as clients reach it.
    pub own: ClusterBroker,
}

fn node(id: NodeId) -> i32 {
    i32::try_from(id).unwrap_or(i32::MAX)
}

/// Where clients reach a registered broker.
fn client_address(broker: &BrokerRegistration) -> ClusterBroker {
    ClusterBroker {
        node_id: node(broker.node_id),
        host: broker.kafka_host.clone(),
        port: i32::from(broker.kafka_port),
    }
}

/// The Kafka error code a client gets for a controller's answer.
fn refused(error: ControllerError) -> ClusterError {
    let code = match &error {
        ControllerError::Refused(plan) => match plan {
            PlanError::TopicAlreadyExists(_) => ResponseError::TopicAlreadyExists,
            PlanError::UnknownTopic(_) | PlanError::UnknownPartition { .. } => {
                ResponseError::UnknownTopicOrPartition
            }
            PlanError::InvalidTopic(_) | PlanError::TopicIdInUse(_) => {
                ResponseError::InvalidTopicException
            }
            PlanError::StaleBrokerEpoch { .. } => ResponseError::StaleBrokerEpoch,
            PlanError::ProducerIdsExhausted => ResponseError::UnknownServerError,
            PlanError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
            PlanError::InvalidReplicationFactor { .. } => ResponseError::InvalidReplicationFactor,
            PlanError::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
            PlanError::InvalidConfig(_) => ResponseError::InvalidConfig,
            PlanError::NoReassignmentInProgress { .. } => ResponseError::NoReassignmentInProgress,
        },
        ControllerError::Timeout(_) => ResponseError::RequestTimedOut,
        ControllerError::Failed(_) | ControllerError::Stopped(_) => ResponseError::NotController,
    }
    .code();
    ClusterError {
        code,
        message: error.to_string(),
    }
}

impl ShardClusterView {
    /// Asks the controller for `__consumer_offsets`, in the background, unless a request is
    /// under way or too few brokers are live for its replication factor yet.
    fn request_offsets_topic(&self, image: &MetadataImage) {
        let replication_factor = self
            .membership
            .settings
            .peers
            .len()
            .min(OFFSETS_REPLICATION_FACTOR);
        if image.live_brokers().count() < replication_factor
            || self
                .membership
                .offsets_topic_requested
                .swap(true, Ordering::AcqRel)
        {
            return;
        }
        let creating = self.create_topic(
            OFFSETS_TOPIC.to_owned(),
            self.offsets_partitions,
            u16::try_from(replication_factor).ok(),
            offsets_topic_configs(),
        );
        let membership = self.membership.clone();
        glommio::spawn_local(async move {
            match creating.await {
                Ok(()) => {}
                Err(error) if error.code == ResponseError::TopicAlreadyExists.code() => {}
                Err(error) => {
                    engine::log_rate_limited!(
                        "ferrite: cannot create {OFFSETS_TOPIC}: {}",
                        error.message
                    )
                }
            }
            membership
                .offsets_topic_requested
                .store(false, Ordering::Release);
        })
        .detach();
    }

    /// Sends `request` to the controller and waits until this broker's catalog shows its
    /// effect (`done`).
    fn change(
        &self,
        request: ControllerRequest,
        done: impl Fn(&Catalog) -> bool + 'static,
    ) -> LocalBoxFuture<'static, Result<(), ClusterError>> {
        let replication = self.replication.clone();
        let catalog = self.catalog.clone();
        Box::pin(async move {
            replication.ask_controller(request).await.map_err(refused)?;
            shown_here(|| done(&catalog)).await
        })
    }
}

/// Waits until this broker shows a committed change (`shown`), for up to [`CATALOG_WAIT`].
async fn shown_here(shown: impl Fn() -> bool) -> Result<(), ClusterError> {
    let deadline = std::time::Instant::now() + CATALOG_WAIT;
    while !shown() {
        if std::time::Instant::now() > deadline {
            return Err(ClusterError {
                code: ResponseError::RequestTimedOut.code(),
                message: "the change was committed but has not reached this broker yet".into(),
            });
        }
        glommio::timer::sleep(SYNC_INTERVAL).await;
    }
    Ok(())
}

impl ClusterView for ShardClusterView {
    fn brokers(&self) -> Vec<ClusterBroker> {
        let mut brokers: Vec<ClusterBroker> = self
            .membership
            .image()
            .live_brokers()
            .map(client_address)
            .collect();
        // Before any registration is applied here (just started) the broker answers clients
        // all the same: they must see at least the one they talk to (librdkafka refuses a
        // Metadata answer without brokers or topics). Otherwise the list is the live brokers
        // of the image, those a topic's replicas may go to: a client that waits for N brokers
        // to be listed may then create a topic of N replicas.
        if brokers.is_empty() {
            brokers.push(self.own.clone());
        }
        brokers
    }

    fn placement(&self, topic: &str, partition: u32) -> Option<PartitionPlacement> {
        let image = self.membership.image();
        let replicas: Vec<i32> = image
            .topic(topic)?
            .replicas(partition)?
            .iter()
            .map(|replica| node(replica.node_id))
            .collect();
        let partition = PartitionId::new(topic, partition);
        let leaders = &self.membership.leaders;
        // The leader's in-sync voters once it reported them; all replicas until then.
        let in_sync = match leaders.in_sync(&partition) {
            Some(voters) => voters.into_iter().map(node).collect(),
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
        let own = node(self.membership.settings.node_id);
        let (term, leader) = leaders.latest_term(&partition).unwrap_or((0, None));
        let leader = match leader {
            Some(leader) => Some(node(leader)),
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

    fn group_coordinator(&self, offsets_partition: u32) -> Option<ClusterBroker> {
        let image = self.membership.image();
        let Some(topic) = image.topic(OFFSETS_TOPIC) else {
            self.request_offsets_topic(&image);
            return None;
        };
        if topic.partitions.len() != self.offsets_partitions as usize {
            // Groups would be looked for in the wrong partitions.
            if !self.offsets_partitions_mismatch_reported.replace(true) {
                eprintln!(
                    "ferrite: {OFFSETS_TOPIC} has {} partitions, but this broker was started with \
                 --offsets-partitions {}; it coordinates no groups",
                    topic.partitions.len(),
                    self.offsets_partitions
                );
            }
            return None;
        }
        let partition = PartitionId::new(OFFSETS_TOPIC, offsets_partition);
        let (leader, _) = self.membership.leaders.leader(&partition)?;
        let coordinator = image
            .live_brokers()
            .find(|broker| broker.node_id == leader)
            .map(client_address);
        coordinator
    }

    fn create_topic(
        &self,
        name: String,
        partitions: u32,
        replication_factor: Option<u16>,
        configs: BTreeMap<String, String>,
    ) -> LocalBoxFuture<'static, Result<(), ClusterError>> {
        let replication_factor =
            replication_factor.unwrap_or(self.membership.settings.default_replication_factor);
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

    fn delete_topic(&self, name: String) -> LocalBoxFuture<'static, Result<(), ClusterError>> {
        let request = ControllerRequest::DeleteTopic { name: name.clone() };
        self.change(request, move |catalog| {
            catalog.topics().get(&name).is_none()
        })
    }

    fn create_partitions(
        &self,
        name: String,
        count: u32,
    ) -> LocalBoxFuture<'static, Result<(), ClusterError>> {
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

    fn reassignments(&self) -> Vec<PartitionMove> {
        let image = self.membership.image();
        let nodes = |replicas: &mut dyn Iterator<Item = &Replica>| -> Vec<i32> {
            replicas.map(|replica| node(replica.node_id)).collect()
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

    fn reassign(
        &self,
        topic: String,
        partition: u32,
        replicas: Option<Vec<i32>>,
    ) -> LocalBoxFuture<'static, Result<(), ClusterError>> {
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
                let refusal = ClusterError {
                    code: ResponseError::InvalidReplicaAssignment.code(),
                    message: "broker ids are not negative".into(),
                };
                return Box::pin(std::future::ready(Err(refusal)));
            }
        };
        let request = ControllerRequest::Reassign {
            topic,
            partition,
            replicas,
        };
        let replication = self.replication.clone();
        let membership = self.membership.clone();
        Box::pin(async move {
            let index = replication.ask_controller(request).await.map_err(refused)?;
            // Answered once this broker's image has it, so that a ListPartitionReassignments
            // sent here next shows the move.
            shown_here(|| membership.image().last_applied_index() >= index).await
        })
    }

    fn alter_topic_configs(
        &self,
        name: String,
        configs: BTreeMap<String, String>,
    ) -> LocalBoxFuture<'static, Result<(), ClusterError>> {
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

    fn producer_id(&self) -> Option<i64> {
        self.membership.producer_ids.claim()
    }
}

/// Keeps this broker in step with the metadata log, on the controller's shard, until shutdown:
/// publishes each newly applied image to the shards, mirrors its topics into the catalog, and
/// has the owning shards run this broker's replicas of its partitions (and delete its copies
/// of partitions moved away). `incarnation` is this run's, as the broker registered.
pub async fn follow_metadata(
    context: ShardContext,
    membership: Arc<Membership>,
    controller: Controller,
    replication: Rc<ShardReplication>,
    catalog: Arc<Catalog>,
    metrics: MetricsRegistry,
    incarnation: u64,
) {
    let mut applied = 0;
    let mut hosted = Hosted {
        replicas: BTreeMap::new(),
        incarnation,
        swept: false,
    };
    while !context.is_shutting_down() {
        metrics.controller_leader_observed(controller.leader());
        if controller.applied_index() != applied {
            applied = controller.applied_index();
            let image = Arc::new(controller.image().borrow().clone());
            *membership
                .image
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = image.clone();
            if let Err(error) = mirror(
                &context,
                &membership,
                &image,
                &replication,
                &catalog,
                &mut hosted,
            )
            .await
            {
                engine::log_rate_limited!("ferrite: applying the metadata log: {error}");
            }
        }
        let shutdown = std::pin::pin!(context.shutdown_requested());
        let pause = std::pin::pin!(glommio::timer::sleep(SYNC_INTERVAL));
        futures::future::select(shutdown, pause).await;
    }
}

/// What this broker runs of the metadata log's partitions.
struct Hosted {
    /// The partitions hosted here, with the target voters their replicas were last told.
    replicas: BTreeMap<PartitionId, Option<Vec<NodeId>>>,
    /// This run of the broker, as it registered.
    incarnation: u64,
    /// Whether the copies of partitions placed elsewhere were removed since this broker
    /// started (a move may have completed while it was down, leaving its copy behind).
    swept: bool,
}

impl Hosted {
    /// Whether `image` is at least as new as this run's registration. After a restart the
    /// metadata log is applied again from its start, and an older image may place on this
    /// broker partitions since moved away, or the reverse: copies are deleted or made again
    /// only from an image that has everything committed before this run began.
    fn is_current(&self, image: &MetadataImage, node_id: NodeId) -> bool {
        image
            .broker(node_id)
            .is_some_and(|broker| broker.registration.incarnation == self.incarnation)
    }
}

/// Makes the catalog and the hosted replicas match `image`.
async fn mirror(
    context: &ShardContext,
    membership: &Membership,
    image: &MetadataImage,
    replication: &Rc<ShardReplication>,
    catalog: &Catalog,
    hosted: &mut Hosted,
) -> Result<(), String> {
    let node_id = membership.settings.node_id;
    let current = hosted.is_current(image, node_id);
    // The replicas placed here route to their shards before they start; those taken away
    // keep theirs until they are removed.
    let placed = placement_on(image, node_id);
    let mut during = (*membership.placement.snapshot()).clone();
    during.extend(placed.clone());
    membership.placement.set(during);
    for (name, topic) in image.topics() {
        let existing = catalog.topics().get(name).cloned();
        match existing {
            Some(existing) if existing.id == topic.id => {
                follow_changes(context, catalog, name, &existing, topic).await?
            }
            Some(_) => {
                // Deleted and created again under the same name while this broker was away.
                remove_topic(context, replication, catalog, membership, name, hosted).await?;
                create_topic(catalog, name, topic)?;
            }
            None => create_topic(catalog, name, topic)?,
        }
        for (number, replicas) in (0u32..).zip(&topic.partitions) {
            let partition = PartitionId::new(name, number);
            let node_ids = |replicas: &[Replica]| -> Vec<NodeId> {
                replicas.iter().map(|replica| replica.node_id).collect()
            };
            let involved = node_ids(replicas);
            let moving = topic.reassignments.get(&number);
            if involved.contains(&node_id) {
                let target = moving.map(|moving| node_ids(&moving.target));
                if hosted.replicas.get(&partition) == Some(&target) {
                    continue;
                }
                // A replica new here starts with the group's voters from before the move (it
                // is not one of them, so it cannot campaign) and learns the changes from the
                // leader's log.
                // The first replica is the preferred leader (the first of the target's during
                // a move, as the image lists them).
                let preferred_leader = involved.first().copied();
                let voters = moving.map_or(involved, |moving| node_ids(&moving.original));
                let hosting = Hosting {
                    voters,
                    target: target.clone(),
                    preferred_leader,
                };
                if current && !hosted.replicas.contains_key(&partition) {
                    catalog
                        .restore_partition_directory(name, number)
                        .map_err(|error| format!("hosting {partition:?}: {error}"))?;
                }
                replication
                    .host_anywhere(partition.clone(), hosting)
                    .await
                    .map_err(|error| format!("hosting {partition:?}: {error}"))?;
                hosted.replicas.insert(partition, target);
            } else if current && (hosted.replicas.remove(&partition).is_some() || !hosted.swept) {
                // Moved away: the group goes on without this broker, and its copy goes.
                replication.unhost_anywhere(partition.clone()).await;
                context
                    .remove_partition(partition.clone())
                    .await
                    .map_err(|error| format!("removing {partition:?}: {error}"))?;
            }
        }
    }
    let gone: Vec<String> = catalog
        .topics()
        .iter()
        .map(|topic| topic.name.clone())
        .filter(|name| !is_internal_topic(name) && image.topic(name).is_none())
        .collect();
    for name in gone {
        remove_topic(context, replication, catalog, membership, &name, hosted).await?;
    }
    membership.placement.set(placed);
    hosted.swept |= current;
    Ok(())
}

/// The shard of each replica `image` places on broker `node_id`.
fn placement_on(image: &MetadataImage, node_id: NodeId) -> HashMap<PartitionId, usize> {
    image
        .topics()
        .flat_map(|(name, topic)| {
            (0u32..)
                .zip(&topic.partitions)
                .filter_map(move |(partition, replicas)| {
                    let here = replicas.iter().find(|replica| replica.node_id == node_id)?;
                    let shard = usize::try_from(here.shard).ok()?;
                    Some((PartitionId::new(name, partition), shard))
                })
        })
        .collect()
}

/// Brings a topic this broker has up to the log's: partitions added, configs replaced (and
/// applied to its open logs).
async fn follow_changes(
    context: &ShardContext,
    catalog: &Catalog,
    name: &str,
    existing: &engine::catalog::Topic,
    topic: &ferrite_replication::metadata::TopicImage,
) -> Result<(), String> {
    let count = topic.partitions.len() as u32;
    if count > existing.partitions {
        catalog
            .add_partitions(name, i64::from(count), false)
            .map_err(|error| format!("adding partitions to '{name}': {error}"))?;
    }
    if existing.configs != topic.configs {
        catalog
            .alter_topic_configs(name, false, |_| Ok(topic.configs.clone()))
            .map_err(|error| format!("altering the configs of '{name}': {error}"))?;
        for partition in 0..count {
            context
                .reload_log_config(PartitionId::new(name, partition))
                .await
                .map_err(|error| format!("reloading the configs of '{name}': {error}"))?;
        }
    }
    Ok(())
}

fn create_topic(
    catalog: &Catalog,
    name: &str,
    topic: &ferrite_replication::metadata::TopicImage,
) -> Result<(), String> {
    match catalog.create_topic_as(
        name,
        topic.id,
        topic.partitions.len() as i64,
        topic.configs.clone(),
        false,
    ) {
        Ok(_) | Err(CatalogError::TopicExists(_)) => Ok(()),
        Err(error) => Err(format!("creating topic '{name}': {error}")),
    }
}

async fn remove_topic(
    context: &ShardContext,
    replication: &Rc<ShardReplication>,
    catalog: &Catalog,
    membership: &Membership,
    name: &str,
    hosted: &mut Hosted,
) -> Result<(), String> {
    let topic = match catalog.delete_topic(name) {
        Ok(topic) => topic,
        Err(CatalogError::UnknownTopic(_)) => return Ok(()),
        Err(error) => return Err(format!("deleting topic '{name}': {error}")),
    };
    for partition in 0..topic.partitions {
        let partition = PartitionId::new(name, partition);
        replication.unhost_anywhere(partition.clone()).await;
        hosted.replicas.remove(&partition);
        context
            .remove_partition(partition.clone())
            .await
            .map_err(|error| format!("removing {partition:?}: {error}"))?;
    }
    membership.leaders.forget_topic(name);
    Ok(())
}

/// What each shard needs to join the cluster (cloned to every shard).
#[derive(Clone)]
pub struct ClusterStart {
    pub membership: Arc<Membership>,
    pub catalog: Arc<Catalog>,
    pub data_dir: std::path::PathBuf,
    /// The Raft votes earlier runs recorded (each shard keeps its replicas' votes in a vote
    /// log of its own).
    pub votes: Arc<ferrite_replication::votes::RecoveredVotes>,
    /// Where clients reach this broker, as it registers.
    pub kafka_host: String,
    pub kafka_port: u16,
    pub shard_count: u32,
    /// Different at every start of the process (the controller tells restarts apart by it).
    pub incarnation: u64,
    pub broker_log_config: engine::LogConfig,
    /// Where the broker reports the controller leader it knows.
    pub metrics: MetricsRegistry,
}

/// Joins the cluster on this shard: starts its replication (transport, replicas, clock) and,
/// on the metadata partition's shard, the broker's controller and the task that follows the
/// metadata log. Returns the shard's view of the cluster for the Kafka handlers.
pub async fn start_shard(
    context: &ShardContext,
    start: &ClusterStart,
) -> Result<Rc<dyn ClusterView>, String> {
    let settings = &start.membership.settings;
    let mut config = ReplicationConfig::new(
        CLUSTER_ID,
        settings.node_id,
        settings.rpc_listen,
        settings.peers.clone(),
    );
    config.votes = Some(start.votes.clone());
    config.preferred_leader_check_ticks = settings
        .leader_imbalance_check_interval
        .map_or(0, |interval| {
            (interval.as_millis() / config.tick.as_millis().max(1)).max(1) as u64
        });
    let replication =
        ShardReplication::start(context.clone(), config, start.membership.leaders.clone())
            .map_err(|error| format!("cannot start the inter-broker listener: {error}"))?;
    let metadata_partition = PartitionId::new(METADATA_TOPIC, 0);
    if context.owner_of(&metadata_partition) == context.shard_id() {
        let registration = BrokerRegistration {
            node_id: settings.node_id,
            incarnation: start.incarnation,
            kafka_host: start.kafka_host.clone(),
            kafka_port: start.kafka_port,
            rpc_address: settings.rpc_listen.to_string(),
            shard_count: start.shard_count,
        };
        let mut config = ControllerConfig::new(
            registration,
            settings.peers.keys().copied(),
            settings.controller_voters,
            start.data_dir.clone(),
            start.incarnation,
        );
        config.broker_log_config = start.broker_log_config.clone();
        let controller = Controller::open(
            config,
            replication.controller_outbox(),
            start.membership.producer_ids.clone(),
        )
        .await
        .map_err(|error| format!("cannot start the controller: {error}"))?;
        replication.attach_controller(controller.clone());
        glommio::spawn_local(follow_metadata(
            context.clone(),
            start.membership.clone(),
            controller,
            replication.clone(),
            start.catalog.clone(),
            start.metrics.clone(),
            start.incarnation,
        ))
        .detach();
    }
    Ok(Rc::new(ShardClusterView {
        membership: start.membership.clone(),
        replication,
        catalog: start.catalog.clone(),
        offsets_partitions: context.groups_config().offsets_partitions,
        offsets_partitions_mismatch_reported: Cell::new(false),
        own: ClusterBroker {
            node_id: node(settings.node_id),
            host: start.kafka_host.clone(),
            port: i32::from(start.kafka_port),
        },
    }))
}
