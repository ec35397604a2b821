//! A broker of a cluster inside the test process, as `ferrite serve --peers` runs one: an
//! engine runtime of [`SHARDS`] shards over its own data directory and catalog, every shard
//! joined to the cluster with [`cluster::start_shard`] (so the metadata partition's shard runs
//! the controller and the metadata follower). Shard 0 runs the test's questions against its
//! [`ShardCluster`] (and its `ShardContext`, for reading the broker's logs), as a Kafka handler
//! on that shard would ask them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use engine::catalog::Catalog;
use engine::shard::{Runtime, RuntimeConfig, ShardContext, TopicLogConfig};
use engine::LogConfig;
use ferrite_replication::cluster::{
    self, ClusterSettings, ClusterStart, ClusterState, MarkerConfig, ShardCluster,
};
use ferrite_replication::cluster_id;
use ferrite_replication::metadata::ListenerEndpoint;
use ferrite_replication::transport::peer_auth::ClusterSecret;
use ferrite_replication::votes::RecoveredVotes;
use ferrite_replication::NodeId;
use futures::future::LocalBoxFuture;

pub const SHARDS: usize = 2;

/// A question for shard 0's cluster view and context; it answers through whatever it holds.
pub type Question =
    Box<dyn FnOnce(Rc<ShardCluster>, ShardContext) -> LocalBoxFuture<'static, ()> + Send>;

pub struct ClusterBroker {
    runtime: Option<Runtime>,
    questions: mpsc::Sender<Question>,
    pub catalog: Arc<Catalog>,
}

impl ClusterBroker {
    /// Starts broker `node_id` of the cluster `peers` in `dir`, with `__consumer_offsets` of
    /// `offsets_partitions` partitions once it is created.
    pub fn start(
        node_id: NodeId,
        dir: PathBuf,
        peers: BTreeMap<NodeId, SocketAddr>,
        offsets_partitions: u32,
    ) -> ClusterBroker {
        ClusterBroker::start_with_secret(node_id, dir, peers, offsets_partitions, None)
    }

    /// [`ClusterBroker::start`] with the cluster's shared secret (`--cluster-secret-file`), and
    /// the cluster id its data directory holds, as `ferrite serve` starts one.
    pub fn start_with_secret(
        node_id: NodeId,
        dir: PathBuf,
        peers: BTreeMap<NodeId, SocketAddr>,
        offsets_partitions: u32,
        secret: Option<ClusterSecret>,
    ) -> ClusterBroker {
        let catalog = Arc::new(Catalog::open(&dir).unwrap());
        let settings = ClusterSettings {
            node_id,
            rpc_listen: peers[&node_id],
            default_replication_factor: u16::try_from(peers.len()).unwrap(),
            controller_voters: peers.len(),
            leader_imbalance_check_interval: None,
            secret,
            peers,
        };
        let state = ClusterState::new(settings);
        if let Some(stored) = cluster_id::read_stored(&dir).unwrap() {
            state.cluster_id.adopt(&stored);
        }
        let start = ClusterStart {
            state: state.clone(),
            catalog: catalog.clone(),
            data_dir: dir.clone(),
            votes: RecoveredVotes::recover(&dir).unwrap(),
            endpoints: vec![ListenerEndpoint {
                listener: Some("PLAINTEXT".to_owned()),
                host: "127.0.0.1".into(),
                port: 9000 + u16::try_from(node_id).unwrap(),
            }],
            shard_count: SHARDS as u32,
            incarnation: node_id,
            broker_log_config: LogConfig::default(),
            controller_leader_observed: Arc::new(|_| {}),
            offsets_partitions,
            transaction_state_partitions: 1,
            // Short, so that a test sees a request to a stopped broker time out.
            markers: MarkerConfig {
                request_timeout: Duration::from_secs(5),
                commit_timeout: Duration::from_secs(4),
                ..MarkerConfig::default()
            },
            verification: Default::default(),
        };
        let config = RuntimeConfig {
            shard_count: SHARDS,
            cpus: None,
            data_dir: dir,
            log_config: LogConfig::default(),
            resources: Default::default(),
            topic_log_config: Some(TopicLogConfig::from_catalog(
                catalog.clone(),
                LogConfig::default(),
            )),
            mesh_ring_capacity: 64,
            outbound_queue_capacity: 64,
            retention_check_interval: Duration::from_secs(300),
            cleaner_check_interval: Duration::from_secs(300),
            replicated_partitions: Some(state.placement.clone()),
            journal: Some(engine::JournalConfig::small()),
            record_rewrite: None,
        };
        let (questions, received) = mpsc::channel::<Question>();
        let received = Arc::new(Mutex::new(received));
        let runtime = Runtime::start(config, move |context| {
            let start = start.clone();
            let received = received.clone();
            async move {
                let view = cluster::start_shard(&context, &start).await.unwrap();
                if context.shard_id() != 0 {
                    return context.shutdown_requested().await;
                }
                while !context.is_shutting_down() {
                    glommio::timer::sleep(Duration::from_millis(5)).await;
                    let next = received.lock().unwrap().try_recv();
                    let Ok(question) = next else { continue };
                    glommio::spawn_local(question(view.clone(), context.clone())).detach();
                }
            }
        })
        .unwrap();
        ClusterBroker {
            runtime: Some(runtime),
            questions,
            catalog,
        }
    }

    /// Asks shard 0's cluster view `question` and waits for its answer.
    pub fn ask<T: Send + 'static>(
        &self,
        question: impl FnOnce(Rc<ShardCluster>) -> LocalBoxFuture<'static, T> + Send + 'static,
    ) -> T {
        self.ask_shard(move |view, _| question(view))
    }

    /// [`ClusterBroker::ask`], with shard 0's context beside its cluster view.
    pub fn ask_shard<T: Send + 'static>(
        &self,
        question: impl FnOnce(Rc<ShardCluster>, ShardContext) -> LocalBoxFuture<'static, T>
            + Send
            + 'static,
    ) -> T {
        let (reply, answer) = mpsc::channel();
        self.questions
            .send(Box::new(move |view, context| {
                Box::pin(async move {
                    let _ = reply.send(question(view, context).await);
                })
            }))
            .unwrap();
        answer.recv_timeout(super::DEADLINE * 2).unwrap()
    }

    /// Asks a question that needs no waiting.
    pub fn look<T: Send + 'static>(
        &self,
        look: impl FnOnce(&ShardCluster) -> T + Send + 'static,
    ) -> T {
        self.ask(move |view| Box::pin(std::future::ready(look(&view))))
    }

    pub fn stop(mut self) {
        let runtime = self.runtime.take().unwrap();
        runtime.shutdown_handle().trigger();
        runtime.join().expect("a clean stop");
    }
}
