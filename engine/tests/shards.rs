//! Several shards, partitions spread over them, appends and reads forwarded across the mesh:
//! every partition's log ends up exactly what was sent to it, and shutdown closes every log
//! cleanly.

mod common;

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::Duration;

use common::shards::*;
use common::*;
use engine::batch::BatchHeader;
use engine::shard::{owner_shard, Durability, PartitionId, Runtime, RuntimeConfig};
use engine::PartitionLog;

#[test]
fn forwarded_appends_and_reads_land_exactly_on_the_owning_shards_logs() {
    let dir = tempfile::tempdir().unwrap();
    create_partitions(dir.path(), "orders", PARTITIONS);
    let (report, reports) = mpsc::channel::<(usize, Vec<String>)>();
    let runtime = Runtime::start(config(dir.path()), move |context| {
        let report = report.clone();
        async move {
            let shard = context.shard_id();
            let mut problems = Vec::new();
            // Every shard writes to every partition; most appends cross the mesh.
            let writers: Vec<_> = (0..PARTITIONS)
                .map(|partition| {
                    let context = context.clone();
                    glommio::spawn_local(async move {
                        let id = PartitionId::new("orders", partition);
                        let mut previous = None;
                        for sequence in 0..BATCHES_PER_SHARD_AND_PARTITION {
                            let durability = match sequence % 3 {
                                0 => Durability::Assigned,
                                1 => Durability::Written,
                                _ => Durability::Durable,
                            };
                            let batch = tagged_batch(tag(shard, partition, sequence), 2, 30, 0);
                            let appended = context
                                .append(id.clone(), batch, durability)
                                .await
                                .expect("append");
                            assert_eq!(appended.last_offset, appended.base_offset + 1);
                            assert!(previous.is_none_or(|p| appended.base_offset > p));
                            previous = Some(appended.last_offset);
                        }
                    })
                })
                .collect();
            for writer in writers {
                writer.await;
            }
            // Read back (through the owner) until this shard's own batches are all seen.
            for partition in 0..PARTITIONS {
                let id = PartitionId::new("orders", partition);
                let mut offset = 0;
                let mut mine = Vec::new();
                let deadline = std::time::Instant::now() + Duration::from_secs(30);
                while (mine.len() as u64) < BATCHES_PER_SHARD_AND_PARTITION {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "reads did not catch up"
                    );
                    let read = context.read(id.clone(), offset, 4096).await.expect("read");
                    for batch in split_batches(&read.data.to_vec().expect("bytes")) {
                        let tag = tag_of(&batch);
                        if tag >> 40 == shard as u64 {
                            mine.push(tag & 0xfffff);
                        }
                    }
                    if read.offset_next == offset {
                        // Nothing visible yet past `offset`: wait for the owner's flusher.
                        context
                            .wait_for_data(
                                vec![(id.clone(), offset)],
                                engine::shard::IsolationLevel::ReadUncommitted,
                                1_000,
                            )
                            .await;
                    }
                    offset = read.offset_next;
                }
                let expected: Vec<u64> = (0..BATCHES_PER_SHARD_AND_PARTITION).collect();
                if mine != expected {
                    problems.push(format!("partition {partition}: read back {mine:?}"));
                }
            }
            report.send((shard, problems)).unwrap();
            context.shutdown_requested().await;
        }
    })
    .unwrap();
    let mut finished = BTreeMap::new();
    for _ in 0..SHARDS {
        let (shard, problems) = reports.recv_timeout(Duration::from_secs(60)).unwrap();
        assert!(problems.is_empty(), "shard {shard}: {problems:?}");
        finished.insert(shard, ());
    }
    assert_eq!(finished.len(), SHARDS);
    runtime.shutdown_handle().trigger();
    runtime.join().unwrap();

    // Each partition: opened only by its owner, closed cleanly, holding exactly every shard's
    // batches, each shard's in the order it sent them.
    for partition in 0..PARTITIONS {
        let id = PartitionId::new("orders", partition);
        let partition_dir = dir.path().join(id.directory_name());
        assert!(
            partition_dir.join("clean-shutdown").exists(),
            "{id:?} closed cleanly"
        );
        let batches = run({
            let partition_dir = partition_dir.clone();
            async move {
                let log = PartitionLog::open(&partition_dir, small_config(), system_clock())
                    .await
                    .unwrap();
                read_all(&log, 0, 1 << 20).await
            }
        });
        assert_eq!(
            batches.len() as u64,
            SHARDS as u64 * BATCHES_PER_SHARD_AND_PARTITION
        );
        let mut per_shard: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for batch in &batches {
            let header = BatchHeader::parse(batch).unwrap();
            assert_eq!(header.leader_epoch, engine::log::SINGLE_BROKER_EPOCH);
            let tag = tag_of(batch);
            assert_eq!(
                (tag >> 20) & 0xfffff,
                u64::from(partition),
                "right partition"
            );
            per_shard.entry(tag >> 40).or_default().push(tag & 0xfffff);
        }
        for (shard, sequences) in per_shard {
            let expected: Vec<u64> = (0..BATCHES_PER_SHARD_AND_PARTITION).collect();
            assert_eq!(sequences, expected, "shard {shard}'s batches in order");
        }
    }
    // Every partition directory belongs to the shard the ownership function names; the
    // function spreads the six partitions over all three shards.
    let owners: Vec<usize> = (0..PARTITIONS)
        .map(|p| owner_shard(&PartitionId::new("orders", p), SHARDS))
        .collect();
    for shard in 0..SHARDS {
        assert!(owners.contains(&shard));
    }
}

#[test]
fn each_shard_applies_retention_to_its_partitions_on_a_timer() {
    let dir = tempfile::tempdir().unwrap();
    create_partitions(dir.path(), "old-news", SHARDS as u32);
    let mut config = config(dir.path());
    config.log_config.retention_age_ms_max = Some(60_000);
    config.retention_check_interval = Duration::from_millis(20);
    let (report, reports) = mpsc::channel();
    let runtime = Runtime::start(config, move |context| {
        let report = report.clone();
        async move {
            // Records from 1970: every sealed segment is long past a one-minute retention.
            let partition = PartitionId::new("old-news", context.shard_id() as u32);
            for _ in 0..40 {
                context
                    .append(
                        partition.clone(),
                        bytes::BytesMut::from(&engine::batch::build::batch_of(4, 200, 1)[..]),
                        Durability::Written,
                    )
                    .await
                    .expect("append");
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            let listed = loop {
                let listed = context
                    .list_offset(
                        partition.clone(),
                        engine::shard::OffsetQuery::Earliest,
                        engine::shard::IsolationLevel::ReadUncommitted,
                    )
                    .await
                    .expect("offsets");
                if listed.log_start_offset > 0 || std::time::Instant::now() > deadline {
                    break listed;
                }
                glommio::timer::sleep(Duration::from_millis(10)).await;
            };
            report.send(listed).unwrap();
            context.shutdown_requested().await;
        }
    })
    .unwrap();
    for _ in 0..SHARDS {
        let listed = reports.recv_timeout(Duration::from_secs(60)).unwrap();
        assert!(
            listed.log_start_offset > 0,
            "old segments were deleted: {listed:?}"
        );
        assert_eq!(listed.high_watermark, 160, "the active segment is kept");
    }
    runtime.shutdown_handle().trigger();
    runtime.join().unwrap();
}

#[test]
fn each_shard_opens_its_partitions_at_start_and_reports_their_offsets_and_sizes() {
    let dir = tempfile::tempdir().unwrap();
    create_partitions(dir.path(), "sized", PARTITIONS);
    let batch = engine::batch::build::batch_of(4, 100, 1);
    let batch_bytes = batch.len() as u64;
    let (report, reports) = mpsc::channel();
    let runtime = Runtime::start(config(dir.path()), move |context| {
        let (report, batch) = (report.clone(), batch.clone());
        async move {
            // Partition p gets p batches; the last one is never used, yet opened at start-up.
            for partition in 0..PARTITIONS - 1 {
                let id = PartitionId::new("sized", partition);
                if context.owner_of(&id) != context.shard_id() {
                    continue;
                }
                context
                    .list_offset(
                        id.clone(),
                        engine::shard::OffsetQuery::Latest,
                        engine::shard::IsolationLevel::ReadUncommitted,
                    )
                    .await
                    .expect("opened");
                for _ in 0..partition {
                    context
                        .append(
                            id.clone(),
                            bytes::BytesMut::from(&batch[..]),
                            Durability::Written,
                        )
                        .await
                        .expect("append");
                }
            }
            let owned = (0..PARTITIONS)
                .filter(|&partition| {
                    context.owner_of(&PartitionId::new("sized", partition)) == context.shard_id()
                })
                .count();
            let started = std::time::Instant::now();
            let stats = loop {
                let stats = context.partition_stats();
                if stats.len() == owned || started.elapsed() > Duration::from_secs(30) {
                    break stats;
                }
                glommio::timer::sleep(Duration::from_millis(10)).await;
            };
            report.send(stats).unwrap();
            context.shutdown_requested().await;
        }
    })
    .unwrap();
    let mut listed = Vec::new();
    for _ in 0..SHARDS {
        listed.extend(reports.recv_timeout(Duration::from_secs(60)).unwrap());
    }
    listed.sort_by(|a, b| a.partition.cmp(&b.partition));
    let wanted: Vec<engine::shard::PartitionStats> = (0..PARTITIONS)
        // Partition p got p batches, except the last, which got none.
        .map(|partition| (partition, u64::from(partition % (PARTITIONS - 1))))
        .map(|(partition, batches)| engine::shard::PartitionStats {
            partition: PartitionId::new("sized", partition),
            log_start_offset: 0,
            high_watermark: 4 * batches,
            size_bytes: batch_bytes * batches,
            segment_count: 1,
            healthy: true,
            damaged_offsets: 0,
            damage_found: 0,
            last_stable_offset: 4 * batches,
            open_transactions: 0,
        })
        .collect();
    assert_eq!(listed, wanted);
    runtime.shutdown_handle().trigger();
    runtime.join().unwrap();
}

/// glommio's accept (like its DMA reads) keeps a waker clone per poll, and a task's waker
/// count is 16 bits: a task waiting on accept must not be re-polled by unrelated state changes.
/// This once aborted the broker after ~32k forwarded requests finished while the accept loop
/// watched for shutdown.
#[test]
fn tasks_watching_for_shutdown_are_not_woken_by_every_finished_request() {
    let dir = tempfile::tempdir().unwrap();
    create_partitions(dir.path(), "elsewhere", SHARDS as u32 * 4);
    let (report, reports) = mpsc::channel();
    let runtime = Runtime::start(config(dir.path()), move |context| {
        let report = report.clone();
        async move {
            let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let watcher_context = context.clone();
            let watcher = glommio::spawn_local(async move {
                let accept = std::pin::pin!(listener.accept());
                let shutdown = std::pin::pin!(watcher_context.shutdown_requested());
                futures::future::select(accept, shutdown).await;
            });
            // A partition another shard owns: every read crosses the mesh and back.
            let remote = (0..SHARDS as u32 * 4)
                .map(|partition| PartitionId::new("elsewhere", partition))
                .find(|partition| owner_shard(partition, SHARDS) != context.shard_id())
                .unwrap();
            // Past the 32 767 wake-ups that overflowed a task's waker count; one shard suffices.
            let reads = if context.shard_id() == 0 { 34_000 } else { 0 };
            for _ in 0..reads {
                context.read(remote.clone(), 0, 1024).await.expect("read");
            }
            report.send(()).unwrap();
            context.shutdown_requested().await;
            watcher.await;
        }
    })
    .unwrap();
    for _ in 0..SHARDS {
        reports.recv_timeout(Duration::from_secs(120)).unwrap();
    }
    runtime.shutdown_handle().trigger();
    runtime.join().expect("no shard aborted");
}

#[test]
fn each_shard_compacts_its_compacted_partitions_on_a_timer_and_leaves_the_others_alone() {
    let dir = tempfile::tempdir().unwrap();
    create_partitions(dir.path(), "table", 1);
    create_partitions(dir.path(), "events", 1);
    let mut config = config(dir.path());
    // One shard owns both partitions, so its stats cover both.
    config.shard_count = 1;
    config.cleaner_check_interval = Duration::from_millis(20);
    let broker = config.log_config.clone();
    config.topic_log_config = Some(engine::shard::TopicLogConfig::new(move |topic| {
        let cleanup_policy = match topic {
            "table" => engine::config::CleanupPolicy::Compact,
            _ => engine::config::CleanupPolicy::Delete,
        };
        engine::LogConfig {
            cleanup_policy,
            ..broker.clone()
        }
    }));
    let batch = engine::batch::build::batch_of(4, 200, 1);
    let written_bytes = 40 * batch.len() as u64;
    let (report, reports) = mpsc::channel();
    let runtime = Runtime::start(config, move |context| {
        let (report, batch) = (report.clone(), batch.clone());
        async move {
            // The same 40 batches, each updating the same four keys, to both topics.
            for topic in ["table", "events"] {
                for _ in 0..40 {
                    context
                        .append(
                            PartitionId::new(topic, 0),
                            bytes::BytesMut::from(&batch[..]),
                            Durability::Written,
                        )
                        .await
                        .expect("append");
                }
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            let stats = loop {
                let stats: BTreeMap<String, _> = context
                    .partition_stats()
                    .into_iter()
                    .map(|stats| (stats.partition.topic.clone(), stats))
                    .collect();
                let compacted = stats["table"].size_bytes < stats["events"].size_bytes / 2;
                if compacted || std::time::Instant::now() > deadline {
                    break stats;
                }
                glommio::timer::sleep(Duration::from_millis(10)).await;
            };
            report.send(stats).unwrap();
            context.shutdown_requested().await;
        }
    })
    .unwrap();
    let stats = reports.recv_timeout(Duration::from_secs(60)).unwrap();
    let (table, events) = (&stats["table"], &stats["events"]);
    assert!(
        table.size_bytes < written_bytes / 2,
        "the compacted topic was cleaned by the shard: {table:?}"
    );
    assert_eq!(table.high_watermark, 160, "offsets are kept");
    assert_eq!(events.size_bytes, written_bytes, "delete-only: untouched");
    assert_eq!(events.log_start_offset, 0);
    runtime.shutdown_handle().trigger();
    runtime.join().unwrap();
}

/// A broker of a cluster serves a partition only through its replica: before the replica runs
/// (a restarted broker whose metadata log has not placed it yet), a read or a listing is refused
/// with NotLeader (the internal consumer-offsets topic's group calls get NOT_COORDINATOR: `net`'s
/// `tests/replicated_coordinator.rs`); and a producer's batch that reaches the shard's own
/// append (producer batches go to the replicas, through replication: this would be a routing
/// bug) is refused as such. The log stays as it was.
#[test]
fn a_cluster_broker_refuses_partitions_whose_replica_it_does_not_run() {
    let dir = tempfile::tempdir().unwrap();
    create_partitions(dir.path(), "orders", 1);
    create_partitions(dir.path(), engine::catalog::OFFSETS_TOPIC, 1);
    let (report, reports) = mpsc::channel();
    let runtime = Runtime::start(
        RuntimeConfig {
            replicated_partitions: Some(Default::default()),
            ..config(dir.path())
        },
        move |context| {
            let report = report.clone();
            async move {
                if context.shard_id() == 0 {
                    let orders = PartitionId::new("orders", 0);
                    let appended = context
                        .append(
                            orders.clone(),
                            tagged_batch(1, 1, 10, 0),
                            Durability::Durable,
                        )
                        .await;
                    let read = context.read(orders.clone(), 0, 1024).await;
                    let listed = context
                        .list_offset(
                            orders,
                            engine::shard::OffsetQuery::Latest,
                            engine::shard::IsolationLevel::ReadUncommitted,
                        )
                        .await;
                    let offsets = context
                        .append(
                            PartitionId::new(engine::catalog::OFFSETS_TOPIC, 0),
                            tagged_batch(2, 1, 10, 0),
                            Durability::Durable,
                        )
                        .await;
                    report
                        .send((
                            format!("{appended:?}"),
                            format!("{:?}", read.err()),
                            format!("{:?}", listed.err()),
                            format!("{offsets:?}"),
                        ))
                        .unwrap();
                }
                context.shutdown_requested().await;
            }
        },
    )
    .unwrap();
    let (appended, read, listed, offsets) = reports.recv_timeout(Duration::from_secs(60)).unwrap();
    runtime.shutdown_handle().trigger();
    runtime.join().expect("no shard aborted");
    let refused = "Some(NotLeader { leader: None })";
    assert_eq!(appended, "Err(Replicated)");
    assert_eq!(read, refused);
    assert_eq!(listed, refused);
    assert_eq!(offsets, "Err(Replicated)");
    let batches = run({
        let partition_dir = dir.path().join("orders-0");
        async move {
            let log = PartitionLog::open(&partition_dir, small_config(), system_clock())
                .await
                .unwrap();
            read_all(&log, 0, 1 << 20).await
        }
    });
    assert!(batches.is_empty(), "nothing was written");
}

/// What one shard saw of the connection handover test.
#[derive(Debug, PartialEq, Eq)]
enum HandoverReport {
    /// Shard `by` adopted what shard `from` handed over.
    Adopted { from: usize, by: usize },
    /// What shard `shard` forwarded over the mesh, by shard, after one read of a partition
    /// shard `owner` owns.
    Forwarded {
        shard: usize,
        owner: usize,
        sent: Vec<u64>,
    },
    /// After shutdown was requested, a handover from `shard` came back with this payload.
    GivenBack { shard: usize, payload: usize },
}

/// The mesh carries connections (opaque to the engine) to the other shard, where what adopts
/// them runs; once a shard's shutdown was requested a handover is given
/// back untouched (its peers may have drained). Forwarded requests are counted by destination.
#[test]
fn a_handed_over_connection_is_adopted_on_the_other_shard_and_forwarding_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    create_partitions(dir.path(), "counted", SHARDS as u32 * 2);
    let (report, reports) = mpsc::channel::<HandoverReport>();
    let runtime = Runtime::start(config(dir.path()), move |context| {
        let report = report.clone();
        async move {
            let shard = context.shard_id();
            let next = (shard + 1) % SHARDS;
            let adopted = report.clone();
            let handed_over = context.hand_over(next, shard, move |receiver, from| {
                adopted
                    .send(HandoverReport::Adopted {
                        from,
                        by: receiver.shard_id(),
                    })
                    .unwrap();
            });
            assert!(handed_over.await.is_ok());

            let owner = (shard + 1) % SHARDS;
            let elsewhere = (0..SHARDS as u32 * 2)
                .map(|partition| PartitionId::new("counted", partition))
                .find(|partition| owner_shard(partition, SHARDS) == owner)
                .unwrap();
            context.read(elsewhere, 0, 1024).await.expect("read");
            report
                .send(HandoverReport::Forwarded {
                    shard,
                    owner,
                    sent: context.mesh_requests_sent(),
                })
                .unwrap();

            context.shutdown_requested().await;
            let payload = context
                .hand_over(next, shard, |_, _| {
                    unreachable!("given back, never adopted")
                })
                .await
                .unwrap_err();
            report
                .send(HandoverReport::GivenBack { shard, payload })
                .unwrap();
        }
    })
    .unwrap();
    let mut seen = Vec::new();
    for _ in 0..SHARDS * 2 {
        seen.push(reports.recv_timeout(Duration::from_secs(120)).unwrap());
    }
    runtime.shutdown_handle().trigger();
    for _ in 0..SHARDS {
        seen.push(reports.recv_timeout(Duration::from_secs(120)).unwrap());
    }
    runtime.join().unwrap();
    for shard in 0..SHARDS {
        let next = (shard + 1) % SHARDS;
        assert!(
            seen.contains(&HandoverReport::Adopted {
                from: shard,
                by: next
            }),
            "{seen:?}"
        );
        let mut sent = vec![0; SHARDS];
        sent[next] = 1;
        assert!(
            seen.contains(&HandoverReport::Forwarded {
                shard,
                owner: next,
                sent
            }),
            "{seen:?}"
        );
        assert!(
            seen.contains(&HandoverReport::GivenBack {
                shard,
                payload: shard
            }),
            "{seen:?}"
        );
    }
}
