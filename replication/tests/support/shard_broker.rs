//! A broker inside the test process, as `ferrite serve` runs one in a cluster: an engine
//! runtime of [`SHARDS`] shards with its own data directory, serving partitions only through
//! their replicas, running replication over the real transport and hosting the given
//! partitions with every peer a voter. Shard 0 takes the test's commands, as a connection on
//! any shard would (the partition may be on the other shard), and runs each with the test's
//! handler, which gets the shard's context and its replication (producer batches go through
//! the latter, as in `ferrite serve`). (`net`'s group tests include this file, and start their
//! coordinators on every shard with the `on_shard` hook.)

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use engine::shard::{PartitionId, Runtime, RuntimeConfig, ShardContext};
use engine::LogConfig;
use ferrite_replication::shard::{LeaderTable, ReplicationConfig, ShardReplication};
use ferrite_replication::votes::RecoveredVotes;
use ferrite_replication::NodeId;

pub const SHARDS: usize = 2;

pub struct ShardBroker<Command> {
    runtime: Option<Runtime>,
    commands: mpsc::Sender<Command>,
    /// Who leads what, as this broker knows it.
    pub leaders: Arc<LeaderTable>,
}

fn runtime_config(dir: &Path) -> RuntimeConfig {
    RuntimeConfig {
        shard_count: SHARDS,
        cpus: None,
        data_dir: dir.to_path_buf(),
        log_config: LogConfig::default(),
        resources: Default::default(),
        topic_log_config: None,
        mesh_ring_capacity: 64,
        outbound_queue_capacity: 64,
        retention_check_interval: Duration::from_secs(300),
        cleaner_check_interval: Duration::from_secs(300),
        replicated_partitions: Some(Default::default()),
        // Small journal files, so that tests go round the ring.
        journal: Some(engine::JournalConfig::small()),
        record_rewrite: None,
    }
}

impl<Command: Send + 'static> ShardBroker<Command> {
    /// Starts broker `node_id` of the cluster `peers` in `dir`, hosting `partitions` (their
    /// directories made here), runs `on_shard` first on every shard, and has `handle` run each
    /// command sent to it.
    pub fn start<OnShard, Handle, Handled>(
        node_id: NodeId,
        dir: PathBuf,
        peers: BTreeMap<NodeId, SocketAddr>,
        partitions: Vec<PartitionId>,
        on_shard: OnShard,
        handle: Handle,
    ) -> ShardBroker<Command>
    where
        OnShard: Fn(&ShardContext) + Send + Sync + Clone + 'static,
        Handle: Fn(ShardContext, Rc<ShardReplication>, Command) -> Handled
            + Send
            + Sync
            + Clone
            + 'static,
        Handled: Future<Output = ()> + 'static,
    {
        for partition in &partitions {
            partition.create_directory(&dir).unwrap();
        }
        let (commands, received) = mpsc::channel::<Command>();
        let received = Arc::new(Mutex::new(received));
        let leaders = Arc::new(LeaderTable::default());
        let table = leaders.clone();
        let votes = RecoveredVotes::recover(&dir).unwrap();
        let runtime = Runtime::start(runtime_config(&dir), move |context| {
            on_shard(&context);
            let peers = peers.clone();
            let partitions = partitions.clone();
            let received = received.clone();
            let leaders = table.clone();
            let handle = handle.clone();
            let votes = votes.clone();
            async move {
                let mut config =
                    ReplicationConfig::new("test", node_id, peers[&node_id], peers.clone());
                config.votes = Some(votes);
                let replication =
                    ShardReplication::start(context.clone(), config, leaders).unwrap();
                for partition in partitions {
                    if context.owner_of(&partition) == context.shard_id() {
                        replication
                            .host(partition, peers.keys().copied().collect())
                            .await
                            .unwrap();
                    }
                }
                if context.shard_id() != 0 {
                    return context.shutdown_requested().await;
                }
                while !context.is_shutting_down() {
                    glommio::timer::sleep(Duration::from_millis(5)).await;
                    let next = received.lock().unwrap().try_recv();
                    let Ok(command) = next else { continue };
                    glommio::spawn_local(handle(context.clone(), replication.clone(), command))
                        .detach();
                }
            }
        })
        .unwrap();
        ShardBroker {
            runtime: Some(runtime),
            commands,
            leaders,
        }
    }

    /// Hands `command` to shard 0 (its handler answers through whatever the command holds).
    pub fn send(&self, command: Command) {
        self.commands.send(command).unwrap();
    }

    pub fn stop(mut self) {
        let runtime = self.runtime.take().unwrap();
        runtime.shutdown_handle().trigger();
        runtime.join().expect("a clean stop");
    }
}
