//! Starting the shards and stopping them cleanly.
//!
//! [`Runtime::start`] first replays the journals a crash left in the data directory (every
//! shard's, before any shard runs: a partition's records may be in the journal of a shard that
//! no longer owns it; the logs it closed are handed to the shards' first opens, which read
//! them as cleanly closed: `ReplayedLogs`) and prepares each shard's journal, then builds the
//! mesh (every ring
//! allocated before any executor runs), then starts one glommio executor per shard, pinned to
//! its CPU when CPUs are given. Each shard has one commit cycle ([`Committer`]) for all its
//! partition logs, with its journal. On each shard
//! it starts a writer task per peer (the only owner of the mesh `Sender` to that peer, fed by a
//! bounded local queue so any task may send), a reader task per peer (`calls.rs`: calls are
//! served in tasks of their own; replies complete the waiting caller; posts run on arrival;
//! connections handed over go to the shard's connection handler), the retention timer, the log
//! cleaner (in its own low-priority task queue), the start-up load of the partition logs the
//! shard owns (whose end [`ShardContext::owned_partitions_opened`] signals, for the layers
//! above that read their logs from the start), and the caller's `shard_main`.
//!
//! The journals of shards this run does not have are removed once replayed (the shard count
//! may have changed). A mesh writer stages everything already queued and publishes it at once
//! (one release store and at most one doorbell per run, not per message); a full ring
//! back-pressures the tasks that send (they wait on the bounded local queue) instead of
//! dropping messages or blocking the reactor.
//!
//! Shutdown (first SIGINT/SIGTERM, or [`ShutdownHandle::trigger`]) rings a bell on every shard.
//! Each shard then:
//! 1. lets `shard_main` finish (it stops accepting work when `shutdown_requested` resolves),
//! 2. waits until nothing it forwarded or is serving is in flight,
//! 3. tells every peer it is drained (it will send no more requests),
//! 4. keeps serving peers until every peer said the same and nothing is in flight, then
//!    waits until its mesh writer tasks published everything queued (its `Drained` included:
//!    the tasks stop with the shard),
//! 5. closes every partition log it owns (write, `fdatasync`, indexes, clean-shutdown marker),
//!    then releases its journal: a journal with no live file is the shard's clean shutdown.
//!
//! Step 4 waits for the writers because they stop with the shard: a shard whose drain and close
//! never yielded would otherwise leave its own `Drained` queued, and its peer would wait for it
//! forever. Step 5 closes the logs many at a time, so their syncs overlap.
//!
//! A second signal exits the process at once with status 130.

use std::future::Future;
use std::io::Write;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{AsyncReadExt, FutureExt, StreamExt};
use glommio::channels::local_channel;
use glommio::{LocalExecutorBuilder, Placement};
use thiserror::Error;

use super::calls::MeshMessage;
use super::context::ShardContext;
use super::placement::ReplicaPlacement;
use super::shutdown::MeshWriters;
use crate::clock::SystemClock;
use crate::config::LogConfig;
use crate::error::LogError;
use crate::journal::{self, JournalConfig, JOURNAL_DIRECTORY};
use crate::log::{replay_journals, Committer, RecordRewrite, Replayed, ReplayedLogs};
use crate::mesh::{Mesh, MeshShard};
use crate::resources::{self, ResourceLimits};

/// How the shards are laid out and what their partitions look like.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub shard_count: usize,
    /// Pin shard `i` to CPU `cpus[i]`; `None` leaves the threads unpinned (tests, or more
    /// shards than cores).
    pub cpus: Option<Vec<usize>>,
    /// Partition `t-p` lives in `data_dir/t-p/`.
    pub data_dir: PathBuf,
    /// The broker's log configuration, for every topic without a `topic_log_config`.
    pub log_config: LogConfig,
    /// The bounds each shard holds its partition logs to together (descriptors, preallocated
    /// space, tail-cache memory): per shard, not per partition.
    pub resources: ResourceLimits,
    /// A topic's log configuration (the broker's with the topic's overrides), asked for when a
    /// partition's log is opened; `None`: every topic uses `log_config`.
    pub topic_log_config: Option<TopicLogConfig>,
    /// Messages each mesh ring holds (a power of two); a full ring makes senders wait.
    pub mesh_ring_capacity: usize,
    /// Messages queued per peer on a shard before its tasks wait to send.
    pub outbound_queue_capacity: usize,
    /// How often each shard applies the retention limits to its partitions (Kafka's
    /// `log.retention.check.interval.ms`, 5 minutes).
    pub retention_check_interval: Duration,
    /// How often each shard looks for compacted partitions due a cleaning (Kafka's
    /// `log.cleaner.backoff.ms`, 15 seconds).
    pub cleaner_check_interval: Duration,
    /// A broker of a cluster (`Some`): every partition is replicated (the internal topics'
    /// too), runs on the shard this placement gives it, and is not served where this broker
    /// holds no replica of it (yet): after a restart the logs are on disk before the metadata
    /// log says which replicas to run, and a produce taken into such a log would be
    /// acknowledged without the other replicas. Its logs are opened by the replicas, not at
    /// start-up.
    pub replicated_partitions: Option<Arc<ReplicaPlacement>>,
    /// Each shard's journal (`data_dir/journal/shard-N`), where small appends of all its
    /// partitions are committed together; `None`: every write goes to the segments directly.
    pub journal: Option<JournalConfig>,
    /// A one-time rewrite of a topic's records in a format a layer above changed (the group
    /// coordinator's `__consumer_offsets`), run on each of its partitions when its log is
    /// opened, before anyone reads it ([`RecordRewrite`]); `None`: logs open as they are.
    pub record_rewrite: Option<Arc<dyn RecordRewrite>>,
}

impl RuntimeConfig {
    /// One shard pinned to each CPU the process may use.
    pub fn one_shard_per_cpu(data_dir: impl Into<PathBuf>) -> RuntimeConfig {
        let cpus: Vec<usize> =
            (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
        RuntimeConfig {
            shard_count: cpus.len(),
            cpus: Some(cpus),
            data_dir: data_dir.into(),
            log_config: LogConfig::default(),
            resources: ResourceLimits::default(),
            topic_log_config: None,
            mesh_ring_capacity: 1024,
            outbound_queue_capacity: 1024,
            retention_check_interval: Duration::from_secs(300),
            cleaner_check_interval: Duration::from_secs(15),
            replicated_partitions: None,
            journal: Some(JournalConfig::default()),
            record_rewrite: None,
        }
    }
}

#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error("cannot start shard {shard}: {message}")]
    Start { shard: usize, message: String },
    #[error("shard {shard} stopped abnormally: {message}")]
    Crashed { shard: usize, message: String },
    #[error("shard {shard} could not close partition {partition}: {error}")]
    ClosePartition {
        shard: usize,
        partition: String,
        error: LogError,
    },
    #[error("shard {shard} could not close its journal: {error}")]
    CloseJournal { shard: usize, error: LogError },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// A topic's log configuration by topic name. Called from every shard's thread.
#[derive(Clone)]
pub struct TopicLogConfig(Arc<dyn Fn(&str) -> LogConfig + Send + Sync>);

impl TopicLogConfig {
    pub fn new(for_topic: impl Fn(&str) -> LogConfig + Send + Sync + 'static) -> TopicLogConfig {
        TopicLogConfig(Arc::new(for_topic))
    }

    /// The broker's configuration with each topic's overrides from `catalog` applied.
    pub fn from_catalog(catalog: Arc<crate::catalog::Catalog>, broker: LogConfig) -> Self {
        TopicLogConfig::new(move |topic| match catalog.topics().get(topic) {
            Some(topic) => crate::topic_config::apply(&broker, &topic.configs),
            None => broker.clone(),
        })
    }

    pub fn for_topic(&self, topic: &str) -> LogConfig {
        (self.0)(topic)
    }
}

impl std::fmt::Debug for TopicLogConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("TopicLogConfig(..)")
    }
}

/// Starts the shutdown sequence from any thread. Cloneable; `Send + Sync`.
#[derive(Clone)]
pub struct ShutdownHandle {
    shared: Arc<ShutdownShared>,
}

struct ShutdownShared {
    triggered: AtomicBool,
    /// The write end of each shard's shutdown bell.
    bells: Vec<UnixStream>,
}

impl ShutdownHandle {
    /// Asks every shard to shut down; later calls do nothing.
    pub fn trigger(&self) {
        if self.shared.triggered.swap(true, Ordering::SeqCst) {
            return;
        }
        for mut bell in &self.shared.bells {
            // Non-blocking; a full socket already holds a byte, which is all the shard needs.
            let _ = bell.write(&[1]);
        }
    }

    /// The first SIGINT or SIGTERM triggers shutdown; a second exits at once (status 130).
    pub fn install_signal_handlers(&self) -> Result<(), RuntimeError> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
            .map_err(RuntimeError::Signals)?;
        let handle = self.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let mut received = 0;
                for _ in signals.forever() {
                    received += 1;
                    if received == 1 {
                        handle.trigger();
                    } else {
                        std::process::exit(130);
                    }
                }
            })
            .map_err(RuntimeError::Signals)?;
        Ok(())
    }
}

/// The running shards.
pub struct Runtime {
    shutdown: ShutdownHandle,
    executors: Vec<glommio::ExecutorJoinHandle<Result<(), RuntimeError>>>,
}

impl Runtime {
    /// Starts the shards and runs `shard_main` as a task on each. `shard_main` must return
    /// once [`ShardContext::shutdown_requested`] resolves.
    pub fn start<F, Fut>(config: RuntimeConfig, shard_main: F) -> Result<Runtime, RuntimeError>
    where
        F: Fn(ShardContext) -> Fut + Send + Clone + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let shard_count = config.shard_count;
        assert!(shard_count > 0, "a runtime has at least one shard");
        if let Some(cpus) = &config.cpus {
            assert_eq!(cpus.len(), shard_count, "one CPU per shard");
        }
        let start_error = |message: String| RuntimeError::Start { shard: 0, message };
        let replayed_logs =
            Arc::new(prepare_journals(&config).map_err(|error| start_error(error.to_string()))?);
        let mesh = Mesh::<MeshMessage>::new(shard_count, config.mesh_ring_capacity)
            .map_err(|error| start_error(format!("building the mesh: {error}")))?;
        let mut bells = Vec::with_capacity(shard_count);
        let mut bell_listeners = Vec::with_capacity(shard_count);
        for _ in 0..shard_count {
            let (ringer, listener) = UnixStream::pair()
                .map_err(|error| start_error(format!("creating a shutdown bell: {error}")))?;
            ringer
                .set_nonblocking(true)
                .map_err(|error| start_error(format!("creating a shutdown bell: {error}")))?;
            bells.push(ringer);
            bell_listeners.push(listener);
        }
        let shutdown = ShutdownHandle {
            shared: Arc::new(ShutdownShared {
                triggered: AtomicBool::new(false),
                bells,
            }),
        };
        let mut executors = Vec::with_capacity(shard_count);
        for (shard_id, (mesh_shard, bell_listener)) in
            mesh.split().into_iter().zip(bell_listeners).enumerate()
        {
            let placement = match &config.cpus {
                Some(cpus) => Placement::Fixed(cpus[shard_id]),
                None => Placement::Unbound,
            };
            let config = config.clone();
            let shard_main = shard_main.clone();
            let replayed_logs = replayed_logs.clone();
            let executor = LocalExecutorBuilder::new(placement)
                .name(&format!("shard-{shard_id}"))
                .spawn(move || {
                    run_shard(
                        shard_id,
                        config,
                        mesh_shard,
                        bell_listener,
                        replayed_logs,
                        shard_main,
                    )
                })
                .map_err(|error| RuntimeError::Start {
                    shard: shard_id,
                    message: error.to_string(),
                })?;
            executors.push(executor);
        }
        Ok(Runtime {
            shutdown,
            executors,
        })
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Waits for every shard to finish its shutdown; the first failure is returned.
    pub fn join(self) -> Result<(), RuntimeError> {
        let mut first_error = None;
        for (shard, executor) in self.executors.into_iter().enumerate() {
            let result = match executor.join() {
                Ok(result) => result,
                Err(error) => Err(RuntimeError::Crashed {
                    shard,
                    message: error.to_string(),
                }),
            };
            if let Err(error) = result {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Replays every journal in the data directory into its logs and releases it (on a thread
/// of its own, as replay needs a glommio executor), then removes the journals of shards this
/// run does not have. Returns the logs replay closed, for the shards' first opens.
fn prepare_journals(config: &RuntimeConfig) -> Result<ReplayedLogs, LogError> {
    let data_dir = config.data_dir.clone();
    let log_config = config.log_config.clone();
    let topic_log_config = config.topic_log_config.clone();
    let started = std::time::Instant::now();
    let replayed = LocalExecutorBuilder::new(Placement::Unbound)
        .name("journal-replay")
        .spawn(move || async move {
            let config_for = |topic: &str| match &topic_log_config {
                Some(topic_log_config) => topic_log_config.for_topic(topic),
                None => log_config.clone(),
            };
            replay_journals(&data_dir, &config_for, Rc::new(SystemClock)).await
        })
        .map_err(|error| LogError::Corrupt(format!("cannot start the journal replay: {error}")))?
        .join()
        .map_err(|error| LogError::Corrupt(format!("the journal replay stopped: {error}")))??;
    let Replayed {
        report: replayed,
        logs: replayed_logs,
    } = replayed;
    if replayed.batches_appended > 0 || replayed.partitions_with_gap > 0 {
        eprintln!(
            "ferrite: replayed {} batches of {} partitions from the journals ({} already in \
             their logs, {} partitions ended at a batch never acknowledged) in {:.2} s: \
             reading {:.2} s, logs {:.2} s, syncfs {:.2} s, release {:.2} s",
            replayed.batches_appended,
            replayed.partitions,
            replayed.batches_present,
            replayed.partitions_with_gap,
            started.elapsed().as_secs_f64(),
            replayed.phases.read.as_secs_f64(),
            replayed.phases.logs.as_secs_f64(),
            replayed.phases.sync.as_secs_f64(),
            replayed.phases.release.as_secs_f64(),
        );
    }
    let root = config.data_dir.join(JOURNAL_DIRECTORY);
    if let Ok(entries) = std::fs::read_dir(&root) {
        for entry in entries.filter_map(Result::ok) {
            let kept = config.journal.is_some()
                && (0..config.shard_count).any(|shard| {
                    entry.path() == journal::shard_journal_dir(&config.data_dir, shard)
                });
            if !kept {
                std::fs::remove_dir_all(entry.path())
                    .map_err(|error| LogError::io("removing an unused journal", error))?;
            }
        }
    }
    Ok(replayed_logs)
}

async fn run_shard<F, Fut>(
    shard_id: usize,
    config: RuntimeConfig,
    mesh_shard: MeshShard<MeshMessage>,
    bell_listener: UnixStream,
    replayed_logs: Arc<ReplayedLogs>,
    shard_main: F,
) -> Result<(), RuntimeError>
where
    F: Fn(ShardContext) -> Fut,
    Fut: Future<Output = ()> + 'static,
{
    let shard_count = config.shard_count;
    // Before any partition log is opened on this shard.
    resources::install(config.resources.clone());
    let (senders, receivers) = mesh_shard.attach().into_parts();
    let mut outbound: Vec<_> = (0..shard_count).map(|_| None).collect();
    let mesh_writers = Rc::new(MeshWriters::default());
    for mut sender in senders {
        let (queue, queued) = local_channel::new_bounded(config.outbound_queue_capacity);
        outbound[sender.peer_shard_id()] = Some(queue);
        let writers = mesh_writers.clone();
        glommio::spawn_local(async move {
            let mut queued = std::pin::pin!(queued.stream());
            while let Some(message) = queued.next().await {
                writers.took();
                sender.stage(message).await;
                let mut staged = 1;
                // What else is queued already goes out with it: one publish, one wake-up of
                // the peer at most.
                while let Some(Some(message)) = queued.next().now_or_never() {
                    writers.took();
                    sender.stage(message).await;
                    staged += 1;
                }
                sender.publish();
                writers.published(staged);
            }
        })
        .detach();
    }
    let committer = match &config.journal {
        Some(journal_config) => Committer::with_journal(
            &journal::shard_journal_dir(&config.data_dir, shard_id),
            shard_id as u32,
            journal_config.clone(),
        )
        .await
        .map_err(|error| RuntimeError::Start {
            shard: shard_id,
            message: format!("opening the shard's journal: {error}"),
        })?,
        None => Committer::new(),
    };
    let context = ShardContext::new(
        shard_id,
        &config,
        Rc::new(SystemClock),
        outbound,
        committer,
        replayed_logs,
        mesh_writers,
    );

    for receiver in receivers {
        let context = context.clone();
        glommio::spawn_local(async move { context.serve_peer(receiver).await }).detach();
    }
    // SAFETY: the descriptor comes from a `UnixStream` this thread now owns alone.
    let mut bell = unsafe { glommio::net::UnixStream::from_raw_fd(bell_listener.into_raw_fd()) };
    let bell_context = context.clone();
    glommio::spawn_local(async move {
        let mut byte = [0u8; 1];
        // A byte or an error (the ringer is gone): either way, time to stop.
        let _ = bell.read(&mut byte).await;
        bell_context.request_shutdown();
    })
    .detach();

    let retention_context = context.clone();
    let retention_interval = config.retention_check_interval;
    glommio::spawn_local(async move {
        retention_context
            .every(retention_interval, || retention_context.enforce_retention())
            .await
    })
    .detach();
    super::cleaner::start(context.clone(), config.cleaner_check_interval);
    let loading_context = context.clone();
    glommio::spawn_local(async move {
        let _in_flight = loading_context.enter_in_flight();
        loading_context.open_owned_partitions().await;
        loading_context.set_owned_partitions_opened();
    })
    .detach();
    let main_task = glommio::spawn_local(shard_main(context.clone()));
    context.shutdown_requested().await;
    main_task.await;
    context.wait_for_no_work_in_flight().await;
    for peer in (0..shard_count).filter(|&peer| peer != shard_id) {
        context.send_to_peer(peer, MeshMessage::Drained).await;
    }
    context.wait_for_every_peer_drained().await;
    // Our `Drained` reaches the peers before the closes, which may run long without yielding.
    context.wait_for_outbound_published().await;
    context
        .close_partitions()
        .await
        .map_err(|(partition, error)| RuntimeError::ClosePartition {
            shard: shard_id,
            partition: partition.directory_name(),
            error,
        })?;
    context
        .close_committer()
        .await
        .map_err(|error| RuntimeError::CloseJournal {
            shard: shard_id,
            error,
        })
}
