//! A group coordinator over a replicated `__consumer_offsets` partition follows its broker's
//! leadership: a JoinGroup waiting on it is answered NOT_COORDINATOR when the broker stops
//! leading, calls are refused meanwhile, and when the broker leads again (in a later term) the
//! coordinator is loaded afresh from the log, with what was committed before. Replication is
//! stood in for by a [`StandIn`] that tells the shard who leads, as the test sets it, and
//! appends the coordinator's records while leading. A cluster broker that does not run the
//! partition's replica (yet) refuses group calls with NOT_COORDINATOR.

use std::cell::{Cell, OnceCell};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use engine::batch::CheckedBatch;
use engine::catalog::OFFSETS_TOPIC;
use engine::log::PartitionLog;
use engine::shard::{
    AppendPending, Appended, ClientAccess, Durability, PartitionId, Runtime, RuntimeConfig,
    ShardContext,
};
use engine::{JournalConfig, LogConfig, LogError};
use futures::future::LocalBoxFuture;
use net::groups::shard::{
    DescribeGroup, FetchOffsets, GroupsConfig, OffsetsLog, ReplicatedOffsetsLog, ShardGroups,
};
use net::groups::{
    GroupConfig, GroupError, GroupProtocol, GroupState, JoinGroup, OffsetCommit,
    OffsetCommitPartition, TopicPartition,
};

/// A replica that leads while `term` is set (its log then holds an entry of the term at
/// once), appending straight to its log (once the test opened it), and follows broker 2
/// otherwise. The coordinators append through it as through a replica in a cluster.
struct StandIn {
    context: ShardContext,
    partition: PartitionId,
    log: OnceCell<Rc<PartitionLog>>,
    term: Cell<Option<u64>>,
}

impl StandIn {
    /// Leads in `term` (`None`: follows broker 2), and tells the shard so.
    fn lead(&self, term: Option<u64>) {
        self.term.set(term);
        let access = match term {
            Some(term) => ClientAccess::Leader {
                term,
                term_committed_at: 0,
            },
            None => ClientAccess::Follower { leader: Some(2) },
        };
        self.context.set_client_access(&self.partition, access);
    }

    fn submit_append(&self, batch: BytesMut) -> AppendPending {
        let (Some(_), Some(log)) = (self.term.get(), self.log.get().cloned()) else {
            return Box::pin(async { Err(LogError::NotLeader { leader: Some(2) }) });
        };
        Box::pin(async move {
            let batch = CheckedBatch::produced(batch, log.config().batch_bytes_max)?;
            let receipt = log.append_checked(batch, 0).await?;
            log.wait_durable(&receipt).await?;
            Ok(Appended {
                base_offset: receipt.base_offset,
                last_offset: receipt.last_offset,
                log_start_offset: log.log_start_offset(),
            })
        })
    }
}

impl OffsetsLog for StandIn {
    fn submit<'a>(
        &'a self,
        _context: &'a ShardContext,
        _partition: &'a PartitionId,
        batch: BytesMut,
        _durability: Durability,
    ) -> LocalBoxFuture<'a, AppendPending> {
        Box::pin(std::future::ready(self.submit_append(batch)))
    }
}

fn config(dir: &std::path::Path) -> RuntimeConfig {
    RuntimeConfig {
        shard_count: 1,
        cpus: None,
        data_dir: dir.to_path_buf(),
        log_config: LogConfig::default(),
        resources: Default::default(),
        topic_log_config: None,
        mesh_ring_capacity: 4,
        outbound_queue_capacity: 2,
        retention_check_interval: Duration::from_secs(300),
        cleaner_check_interval: Duration::from_secs(300),
        replicated_partitions: Some(Default::default()),
        journal: Some(JournalConfig::small()),
        record_rewrite: None,
    }
}

fn groups_config() -> GroupsConfig {
    GroupsConfig {
        offsets_partitions: 1,
        coordinator: GroupConfig {
            // A first JoinGroup waits this long for more members: it is still waiting when
            // leadership moves.
            initial_rebalance_delay_ms: 60_000,
            ..GroupConfig::default()
        },
    }
}

fn commit(group_id: &str, offset: i64) -> OffsetCommit {
    OffsetCommit {
        api_version: net::groups::OFFSET_COMMIT_MEMBER_EPOCH_VERSION,
        group_id: group_id.into(),
        generation_id: -1,
        member_id: String::new(),
        group_instance_id: None,
        partitions: vec![OffsetCommitPartition {
            partition: topic_partition(),
            offset,
            leader_epoch: -1,
            metadata: None,
        }],
    }
}

fn fetch(group_id: &str) -> FetchOffsets {
    FetchOffsets {
        group_id: group_id.into(),
        partitions: Some(vec![topic_partition()]),
        member: None,
        require_stable: false,
    }
}

fn topic_partition() -> TopicPartition {
    TopicPartition {
        topic: "orders".into(),
        partition: 0,
    }
}

fn join(group_id: &str) -> JoinGroup {
    JoinGroup {
        group_id: group_id.into(),
        member_id: String::new(),
        group_instance_id: None,
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 10_000,
        protocol_type: "consumer".into(),
        protocols: vec![GroupProtocol {
            name: "range".into(),
            metadata: Default::default(),
        }],
        require_known_member_id: false,
    }
}

/// The committed offset a FetchOffsets answer gives, or its refusal.
fn committed(
    answer: <FetchOffsets as net::groups::shard::GroupRequest>::Answer,
) -> Result<Option<i64>, GroupError> {
    answer.map(|offsets| {
        offsets
            .into_iter()
            .find_map(|(_, committed)| committed.ok().flatten().map(|committed| committed.offset))
    })
}

/// Waits (up to a deadline) until `group_id` is rebalancing with a member waiting to join.
async fn until_joining(groups: &Rc<ShardGroups>, group_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let describe = DescribeGroup {
            group_id: group_id.into(),
        };
        if let Ok(group) = groups.call(0, describe).await {
            if group.state == GroupState::PreparingRebalance && !group.members.is_empty() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "the JoinGroup never arrived");
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
}

#[derive(Debug)]
struct Seen {
    committed_in_term_1: String,
    waiting_join_after_the_loss: Option<GroupError>,
    fetch_while_following: Result<Option<i64>, GroupError>,
    fetch_in_term_3: Result<Option<i64>, GroupError>,
}

#[test]
fn a_coordinator_follows_the_leadership_of_its_partition() {
    let dir = tempfile::tempdir().unwrap();
    PartitionId::new(OFFSETS_TOPIC, 0)
        .create_directory(dir.path())
        .unwrap();
    let (report, reports) = mpsc::channel();
    let runtime = Runtime::start(config(dir.path()), move |context| {
        let report = report.clone();
        let replica = Rc::new(StandIn {
            context: context.clone(),
            partition: PartitionId::new(OFFSETS_TOPIC, 0),
            log: OnceCell::new(),
            term: Cell::new(None),
        });
        let groups = ShardGroups::start(&context, groups_config(), replica.clone());
        async move {
            let log = context.partition_log(&replica.partition).await.unwrap();
            assert!(replica.log.set(log).is_ok(), "opened once");
            replica.lead(Some(1));
            let committed_in_term_1 = format!("{:?}", groups.call(0, commit("archive", 5)).await);
            let waiting = glommio::spawn_local({
                let groups = groups.clone();
                async move { groups.call(0, join("billing")).await }
            });
            until_joining(&groups, "billing").await;

            replica.lead(None);
            let waiting_join_after_the_loss = waiting.await.error;
            let fetch_while_following = committed(groups.call(0, fetch("archive")).await);

            replica.lead(Some(3));
            let fetch_in_term_3 = committed(groups.call(0, fetch("archive")).await);
            report
                .send(Seen {
                    committed_in_term_1,
                    waiting_join_after_the_loss,
                    fetch_while_following,
                    fetch_in_term_3,
                })
                .unwrap();
            context.shutdown_requested().await;
        }
    })
    .unwrap();
    let seen = reports.recv_timeout(Duration::from_secs(60)).unwrap();
    runtime.shutdown_handle().trigger();
    runtime.join().expect("no shard aborted");
    assert_eq!(
        seen.committed_in_term_1,
        format!(
            "{:?}",
            Ok::<_, GroupError>(vec![(topic_partition(), Ok::<(), GroupError>(()))])
        ),
        "{seen:?}"
    );
    assert_eq!(
        seen.waiting_join_after_the_loss,
        Some(GroupError::NotCoordinator),
        "the waiting JoinGroup is told to find the new coordinator"
    );
    assert_eq!(seen.fetch_while_following, Err(GroupError::NotCoordinator));
    assert_eq!(
        seen.fetch_in_term_3,
        Ok(Some(5)),
        "reloaded from the log when leading again"
    );
}

/// A broker of a cluster serves `__consumer_offsets` only through its replicas, like any
/// partition: before the replica runs (a restarted broker whose metadata log has not placed it
/// yet), group calls get NOT_COORDINATOR.
#[test]
fn a_cluster_broker_refuses_group_calls_where_it_does_not_run_the_replica() {
    let dir = tempfile::tempdir().unwrap();
    PartitionId::new(OFFSETS_TOPIC, 0)
        .create_directory(dir.path())
        .unwrap();
    let (report, reports) = mpsc::channel();
    // Two shards: the partition's may be either, and the call is made on shard 0.
    let two_shards = RuntimeConfig {
        shard_count: 2,
        ..config(dir.path())
    };
    let runtime = Runtime::start(two_shards, move |context| {
        let report = report.clone();
        let groups = ShardGroups::start(&context, groups_config(), Rc::new(ReplicatedOffsetsLog));
        async move {
            if context.shard_id() == 0 {
                let describe = DescribeGroup {
                    group_id: "billing".into(),
                };
                report.send(groups.call(0, describe).await).unwrap();
            }
            context.shutdown_requested().await;
        }
    })
    .unwrap();
    let described = reports.recv_timeout(Duration::from_secs(60)).unwrap();
    runtime.shutdown_handle().trigger();
    runtime.join().expect("no shard aborted");
    assert_eq!(described, Err(GroupError::NotCoordinator));
}
