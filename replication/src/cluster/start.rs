//! Joining the cluster, once per shard: each shard starts its replication (transport, replicas,
//! clock); the metadata partition's shard also opens the broker's controller and starts the
//! metadata follower.
//!
//! The settings come from `ferrite serve` (`--node-id N --peers ID@HOST:PORT,...`, `--rpc-listen`
//! by default this broker's own entry in `--peers`; the first `--controller-voters` node ids
//! vote in the controller). The broker's controller registers it with its advertised Kafka
//! address, heartbeats, and keeps the shared `ProducerIdPool` supplied, which every shard's
//! [`ShardCluster::producer_id`] takes from.

use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use engine::catalog::Catalog;
use engine::credentials::{CredentialChange, Credentials};
use engine::shard::{PartitionId, ShardContext};
use engine::LogConfig;

use super::markers::MarkerConfig;
use super::metadata_follower::follow_metadata;
use super::peer_calls::PeerCalls;
use super::verification::VerificationConfig;
use super::{ClusterState, ShardCluster};
use crate::controller::{Controller, ControllerConfig, ControllerRequest, METADATA_TOPIC};
use crate::metadata::{BrokerRegistration, ListenerEndpoint, MetadataRecord};
use crate::shard::{ReplicationConfig, ShardReplication};
use crate::votes::RecoveredVotes;
use crate::NodeId;

/// Told the controller leader this broker knows (`None`: none), every time the metadata
/// follower looks (the broker's metrics report it).
pub type ControllerLeaderObserver = Arc<dyn Fn(Option<NodeId>) + Send + Sync>;

/// What each shard needs to join the cluster (cloned to every shard).
#[derive(Clone)]
pub struct ClusterStart {
    pub state: Arc<ClusterState>,
    pub catalog: Arc<Catalog>,
    pub data_dir: PathBuf,
    /// The Raft votes earlier runs recorded (each shard keeps its replicas' votes in a vote
    /// log of its own).
    pub votes: Arc<RecoveredVotes>,
    /// Where clients reach this broker, an address per listener, as it registers.
    pub endpoints: Vec<ListenerEndpoint>,
    pub shard_count: u32,
    /// Different at every start of the process (the controller tells restarts apart by it).
    pub incarnation: u64,
    pub broker_log_config: LogConfig,
    pub controller_leader_observed: ControllerLeaderObserver,
    /// The partitions `__consumer_offsets` is made with, and that the groups are spread over.
    pub offsets_partitions: u32,
    /// The partitions `__transaction_state` is made with, and that transactional ids are
    /// spread over.
    pub transaction_state_partitions: u32,
    /// The bounds and waits of transaction markers sent to and served for other brokers (the
    /// waits, and the bound on calls served, hold for verifications too).
    pub markers: MarkerConfig,
    /// The bounds of transactional produces' verifications sent to other brokers.
    pub verification: VerificationConfig,
}

/// A number different at every start of the process, for [`ClusterStart::incarnation`]: the
/// controller tells a restarted broker from a repeated registration by it.
pub fn new_incarnation() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 48)
}

/// How long a broker keeps offering the credentials written offline in its data directory to
/// the controller (it retries while no controller leader is elected).
const BOOTSTRAP_CREDENTIALS_ATTEMPTS_MAX: u32 = 300;
const BOOTSTRAP_CREDENTIALS_RETRY: Duration = Duration::from_secs(1);

/// Proposes the users' credentials that `ferrite user set --data-dir` wrote in this broker's
/// data directory before it joined the cluster (as `kafka-storage format --add-scram`), those
/// of a user and mechanism the metadata log does not have yet, then deletes the file: from
/// then on the log is their only home, so a credential deleted or changed online never comes
/// back from the file at a restart.
async fn propose_bootstrapped_credentials(
    context: ShardContext,
    controller: Controller,
    data_dir: PathBuf,
) {
    let table = match Credentials::read_file(&data_dir) {
        Ok(table) if table.is_empty() => return,
        Ok(table) => table,
        Err(error) => {
            eprintln!("ferrite: the credentials written offline are not proposed: {error}");
            return;
        }
    };
    for _ in 0..BOOTSTRAP_CREDENTIALS_ATTEMPTS_MAX {
        if context.is_shutting_down() {
            return;
        }
        let records: Vec<MetadataRecord> = {
            let image = controller.image();
            let image = image.borrow();
            table
                .iter()
                .flat_map(|(user, credentials)| {
                    credentials
                        .iter()
                        .map(move |(&mechanism, credential)| (user, mechanism, credential))
                })
                .filter(|(user, mechanism, _)| {
                    !image
                        .credentials()
                        .get(*user)
                        .is_some_and(|present| present.contains_key(mechanism))
                })
                .map(|(user, mechanism, credential)| {
                    MetadataRecord::of_credential_change(&CredentialChange::Upsert {
                        user: user.clone(),
                        mechanism,
                        credential: credential.clone(),
                    })
                })
                .collect()
        };
        let proposed = match records.is_empty() {
            true => Ok(0),
            false => {
                controller
                    .request(ControllerRequest::AlterCredentials { records })
                    .await
            }
        };
        match proposed {
            Ok(_) => {
                if let Err(error) = engine::published_table::remove_file::<
                    engine::credentials::CredentialsKind,
                >(&data_dir)
                {
                    eprintln!("ferrite: the credentials written offline are in the metadata log, but their file stays: {error}");
                }
                return;
            }
            Err(_) => glommio::timer::sleep(BOOTSTRAP_CREDENTIALS_RETRY).await,
        }
    }
    eprintln!(
        "ferrite: the controller did not take the credentials written offline in {}; they \
         are offered again at the next start",
        data_dir.display()
    );
}

/// Joins the cluster on this shard (see the module documentation). Returns the shard's view
/// of the cluster for the Kafka handlers.
pub async fn start_shard(
    context: &ShardContext,
    start: &ClusterStart,
) -> Result<Rc<ShardCluster>, String> {
    let settings = &start.state.settings;
    let mut config = ReplicationConfig::new(
        start.state.cluster_id.clone(),
        settings.node_id,
        settings.rpc_listen,
        settings.peers.clone(),
    );
    config.votes = Some(start.votes.clone());
    config.secret = settings.secret.clone();
    config.preferred_leader_check_ticks = settings
        .leader_imbalance_check_interval
        .map_or(0, |interval| {
            (interval.as_millis() / config.tick.as_millis().max(1)).max(1) as u64
        });
    let replication = ShardReplication::start(context.clone(), config, start.state.leaders.clone())
        .map_err(|error| format!("cannot start the inter-broker listener: {error}"))?;
    let metadata_partition = PartitionId::new(METADATA_TOPIC, 0);
    if context.owner_of(&metadata_partition) == context.shard_id() {
        let registration = BrokerRegistration {
            node_id: settings.node_id,
            incarnation: start.incarnation,
            endpoints: start.endpoints.clone(),
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
            start.state.producer_ids.clone(),
        )
        .await
        .map_err(|error| format!("cannot start the controller: {error}"))?;
        replication.attach_controller(controller.clone());
        glommio::spawn_local(propose_bootstrapped_credentials(
            context.clone(),
            controller.clone(),
            start.data_dir.clone(),
        ))
        .detach();
        glommio::spawn_local(follow_metadata(
            context.clone(),
            start.clone(),
            controller,
            replication.clone(),
        ))
        .detach();
    }
    let calls = PeerCalls::new(
        start.markers.clone(),
        start.verification.clone(),
        start.state.clone(),
        &replication,
        context.shard_id() as u32,
    );
    replication.attach_peer_calls(calls.clone());
    Ok(Rc::new(ShardCluster {
        state: start.state.clone(),
        replication,
        catalog: start.catalog.clone(),
        internal_partitions: [start.offsets_partitions, start.transaction_state_partitions],
        internal_partitions_mismatch_reported: Default::default(),
        calls,
        incarnation: start.incarnation,
    }))
}
