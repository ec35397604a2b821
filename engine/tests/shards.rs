//! Several shards, partitions spread over them, appends and reads forwarded across the mesh:
//! every partition's log ends up exactly what was sent to it, and shutdown closes every log
//! cleanly.

mod common;

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use engine::batch::BatchHeader;
use engine::shard::{owner_shard, Durability, PartitionId, Runtime, RuntimeConfig};
use engine::PartitionLog;

const SHARDS: usize = 3;
const PARTITIONS: u32 = 6;
const BATCHES_PER_SHARD_AND_PARTITION: u64 = 40;

fn config(dir: &std::path::Path) -> RuntimeConfig {
    RuntimeConfig {
        shard_count: SHARDS,
        cpus: None,
        data_dir: dir.to_path_buf(),
        log_config: small_config(),
        resources: Default::default(),
        topic_log_config: None,
        // Small rings and queues so that back-pressure is exercised.
        mesh_ring_capacity: 4,
        outbound_queue_capacity: 2,
        retention_check_interval: std::time::Duration::from_secs(300),
        cleaner_check_interval: std::time::Duration::from_secs(300),
        groups: engine::shard::GroupsConfig::default(),
        replicated_partitions: None,
        journal: Some(small_journal()),
    }
}

/// Makes partitions 0..`count` of `topic` exist, as creating the topic would.
fn create_partitions(dir: &std::path::Path, topic: &str, count: u32) {
    for partition in 0..count {
        PartitionId::new(topic, partition)
            .create_directory(dir)
            .unwrap();
    }
}

/// The tag of a batch written by `shard` to `partition`, `sequence`-th.
fn tag(shard: usize, partition: u32, sequence: u64) -> u64 {
    (shard as u64) << 40 | u64::from(partition) << 20 | sequence
}

fn tag_of(batch: &[u8]) -> u64 {
    // The first record's key is "k{tag}-0" (see `tagged_batch`); records follow the header.
    let records = &batch[engine::batch::BATCH_HEADER_BYTES..];
    for start in 0..records.len() {
        if records[start] != b'k' {
            continue;
        }
        let digits: Vec<u8> = records[start + 1..]
            .iter()
            .copied()
            .take_while(u8::is_ascii_digit)
            .collect();
        if !digits.is_empty() && records.get(start + 1 + digits.len()) == Some(&b'-') {
            return String::from_utf8(digits).unwrap().parse().unwrap();
        }
    }
    panic!("no tagged key in the batch")
}

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
                            .wait_for_data(vec![(id.clone(), offset)], 1_000)
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
                    .list_offset(partition.clone(), engine::shard::OffsetQuery::Earliest)
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
                    .list_offset(id.clone(), engine::shard::OffsetQuery::Latest)
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
/// (a restarted broker whose metadata log has not placed it yet), a produce, a read or a
/// listing is refused with NotLeader and leaves the log as it was; so is the internal
/// consumer-offsets topic, whose group calls get NOT_COORDINATOR.
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
                        .list_offset(orders, engine::shard::OffsetQuery::Latest)
                        .await;
                    let offsets = context
                        .append(
                            PartitionId::new(engine::catalog::OFFSETS_TOPIC, 0),
                            tagged_batch(2, 1, 10, 0),
                            Durability::Durable,
                        )
                        .await;
                    let described = context
                        .group_call(
                            0,
                            engine::shard::GroupCall::Describe {
                                group_id: "billing".into(),
                            },
                        )
                        .await;
                    report
                        .send((
                            format!("{appended:?}"),
                            format!("{:?}", read.err()),
                            format!("{:?}", listed.err()),
                            format!("{offsets:?}"),
                            format!("{described:?}"),
                        ))
                        .unwrap();
                }
                context.shutdown_requested().await;
            }
        },
    )
    .unwrap();
    let (appended, read, listed, offsets, described) =
        reports.recv_timeout(Duration::from_secs(60)).unwrap();
    runtime.shutdown_handle().trigger();
    runtime.join().expect("no shard aborted");
    let refused = "Some(NotLeader { leader: None })";
    assert_eq!(appended, "Err(NotLeader { leader: None })");
    assert_eq!(read, refused);
    assert_eq!(listed, refused);
    assert_eq!(offsets, "Err(NotLeader { leader: None })");
    assert_eq!(described, "Describe(Err(NotCoordinator))");
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

/// The reads of a fetch, one per partition, from its offset with its own byte limit.
fn fetch_reads(reads: &[(u32, u64, usize)]) -> Vec<engine::shard::PartitionRead> {
    reads
        .iter()
        .map(
            |&(partition, offset, bytes_max)| engine::shard::PartitionRead {
                partition: PartitionId::new("many", partition),
                offset,
                bytes_max,
            },
        )
        .collect()
}

/// A read as the tests compare it: (the batches' bytes, high-water mark, log start offset), or
/// the error's text.
type ReadOutcome = Result<(Vec<u8>, u64, u64), String>;

/// What Kafka's fetch gets reading in turn: each read limited to its own bytes and the room
/// the earlier ones left, at least one batch while nothing came before it, no batch over that
/// limit after it, and the offsets only once no room is left (an offset out of range is an
/// error whatever the room).
async fn read_in_turn(
    context: &engine::shard::ShardContext,
    reads: &[engine::shard::PartitionRead],
    bytes_max: u64,
) -> Vec<ReadOutcome> {
    let mut used = 0u64;
    let mut results = Vec::new();
    for read in reads {
        let remaining = bytes_max.saturating_sub(used);
        let limit = (read.bytes_max as u64).min(remaining).max(1) as usize;
        let result = context
            .read(read.partition.clone(), read.offset, limit)
            .await
            .map(|answer| {
                let mut bytes = answer.data.to_vec().expect("bytes");
                if used > 0 && (remaining == 0 || bytes.len() > limit) {
                    bytes.clear();
                }
                (bytes, answer.high_watermark, answer.log_start_offset)
            });
        if let Ok((bytes, _, _)) = &result {
            used += bytes.len() as u64;
        }
        results.push(result.map_err(|error| error.to_string()));
    }
    results
}

/// A fetch of partitions spread over three shards, read with one request per shard, gets
/// exactly what reading them one after the other gets, whatever the limits: from memory (the
/// tail cache) and from the segment files alike.
#[test]
fn reading_many_partitions_at_once_gets_what_reading_them_in_turn_gets() {
    const PARTITIONS_MANY: u32 = 9;
    for tail_cache_bytes_max in [0, 1 << 20] {
        let dir = tempfile::tempdir().unwrap();
        create_partitions(dir.path(), "many", PARTITIONS_MANY);
        let mut config = config(dir.path());
        config.log_config.tail_cache_bytes_max = tail_cache_bytes_max;
        let (report, reports) = mpsc::channel::<Vec<String>>();
        let runtime = Runtime::start(config, move |context| {
            let report = report.clone();
            async move {
                if context.shard_id() != 0 {
                    return;
                }
                let mut problems = Vec::new();
                // Batches of different sizes, every partition a different count of them, all
                // appended in one go per round (one mesh message per owning shard).
                for round in 0..6u64 {
                    let appends = (0..PARTITIONS_MANY)
                        .filter(|partition| u64::from(*partition) % 3 <= round % 3)
                        .map(|partition| {
                            let records = 1 + (round as usize + partition as usize) % 4;
                            let value_bytes =
                                20 + 90 * ((round as usize * 7 + partition as usize) % 5);
                            let batch =
                                tagged_batch(tag(0, partition, round), records, value_bytes, 0);
                            (PartitionId::new("many", partition), batch)
                        })
                        .collect();
                    for append in context.submit_appends(appends, Durability::Written).await {
                        if let Err(error) = append.await {
                            problems.push(format!("append: {error}"));
                        }
                    }
                }
                let all_bytes = [0usize, 1, 200, 700, 5_000, 1 << 20];
                let budgets = [0u64, 1, 150, 600, 1_500, 4_000, 1 << 30];
                let mut case = 0usize;
                for budget in budgets {
                    for per_partition in all_bytes {
                        for offsets_from in 0..3u64 {
                            case += 1;
                            // Every partition, some twice, one past its end, in a scrambled order.
                            let mut reads: Vec<(u32, u64, usize)> = (0..PARTITIONS_MANY)
                                .map(|partition| {
                                    let partition = (partition * 4 + case as u32) % PARTITIONS_MANY;
                                    let offset = (u64::from(partition) + offsets_from) % 4 * 2;
                                    (partition, offset, per_partition + partition as usize * 37)
                                })
                                .collect();
                            reads.push((reads[0].0, 0, per_partition));
                            reads.push((1, 1_000, per_partition));
                            let reads = fetch_reads(&reads);
                            let expected = read_in_turn(&context, &reads, budget).await;
                            let got: Vec<ReadOutcome> = context
                                .read_many(&reads, budget)
                                .await
                                .into_iter()
                                .map(|result| {
                                    result
                                        .map(|answer| {
                                            (
                                                answer.data.to_vec().expect("bytes"),
                                                answer.high_watermark,
                                                answer.log_start_offset,
                                            )
                                        })
                                        .map_err(|error| error.to_string())
                                })
                                .collect();
                            if got != expected {
                                problems.push(format!(
                                    "budget {budget}, {per_partition} bytes per partition, \
                                     offsets from {offsets_from}: got {:?}, expected {:?}",
                                    summary(&got),
                                    summary(&expected)
                                ));
                            }
                            if expected
                                .iter()
                                .flatten()
                                .all(|(bytes, _, _)| bytes.is_empty())
                                && budget > 1
                                && per_partition > 0
                            {
                                problems.push(format!("case {case} read nothing at all"));
                            }
                        }
                    }
                }
                report.send(problems).unwrap();
            }
        })
        .unwrap();
        let problems = reports.recv_timeout(Duration::from_secs(120)).unwrap();
        assert!(problems.is_empty(), "{problems:#?}");
        runtime.shutdown_handle().trigger();
        runtime.join().unwrap();
    }
}

/// Bytes per read (or the error), for a readable failure message.
fn summary(results: &[ReadOutcome]) -> Vec<String> {
    results
        .iter()
        .map(|result| match result {
            Ok((bytes, high_watermark, _)) => {
                format!("{} bytes (hw {high_watermark})", bytes.len())
            }
            Err(error) => error.clone(),
        })
        .collect()
}

/// A long poll over partitions of every shard ends when any of them gets data, whichever
/// shard owns it; the waits it left on the other shards are cancelled then, not left to run
/// until their timeout.
#[test]
fn a_long_poll_ends_on_any_shards_data_and_cancels_its_other_waits() {
    let dir = tempfile::tempdir().unwrap();
    create_partitions(dir.path(), "polled", 12);
    let woken = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (report, reports) = mpsc::channel::<(usize, Result<(), String>)>();
    let runtime = Runtime::start(config(dir.path()), move |context| {
        let report = report.clone();
        let woken = woken.clone();
        async move {
            let shard = context.shard_id();
            // One partition of each shard.
            let owned_by = |owner: usize| {
                (0..12)
                    .map(|partition| PartitionId::new("polled", partition))
                    .find(|partition| owner_shard(partition, SHARDS) == owner)
                    .unwrap()
            };
            let outcome = if shard == 0 {
                let waits = (0..SHARDS).map(|owner| (owned_by(owner), 0)).collect();
                let wait = std::pin::pin!(context.wait_for_data(waits, 600_000));
                // Data for shard 2's partition, appended from shard 1 once the wait is under way.
                let started = std::time::Instant::now();
                wait.await;
                woken.store(true, std::sync::atomic::Ordering::SeqCst);
                if started.elapsed() > Duration::from_secs(60) {
                    Err("the wait ended with its timeout, not with the data".to_string())
                } else {
                    Ok(())
                }
            } else {
                if shard == 1 {
                    glommio::timer::sleep(Duration::from_millis(200)).await;
                    let batch = tagged_batch(tag(1, 0, 0), 1, 10, 0);
                    if let Err(error) = context
                        .append(owned_by(2), batch, Durability::Written)
                        .await
                    {
                        report
                            .send((shard, Err(format!("append: {error}"))))
                            .unwrap();
                        return;
                    }
                }
                while !woken.load(std::sync::atomic::Ordering::SeqCst) {
                    glommio::timer::sleep(Duration::from_millis(5)).await;
                }
                // Nothing left in flight here: shard 0's wait on this shard's partition went
                // with the rest of its long poll.
                let deadline = std::time::Instant::now() + Duration::from_secs(30);
                loop {
                    if context.work_in_flight_count() == 0 {
                        break Ok(());
                    }
                    if std::time::Instant::now() > deadline {
                        break Err(format!(
                            "{} units of work still in flight after the long poll ended",
                            context.work_in_flight_count()
                        ));
                    }
                    glommio::timer::sleep(Duration::from_millis(5)).await;
                }
            };
            report.send((shard, outcome)).unwrap();
        }
    })
    .unwrap();
    for _ in 0..SHARDS {
        let (shard, outcome) = reports.recv_timeout(Duration::from_secs(120)).unwrap();
        assert_eq!(outcome, Ok(()), "shard {shard}");
    }
    runtime.shutdown_handle().trigger();
    runtime.join().unwrap();
}

/// Deleting a topic while a task still holds one of its partitions (a consumer's long poll)
/// closes that log all the same, so none of its writes comes after its files are gone (a
/// queued segment write that reopened a file unlinked inside glommio's open aborted the
/// broker, with 4 096 partitions and a consumer long-polling them): an append through the
/// held handle is refused as closed, and the shard's other partitions go on, with few
/// descriptors, through several rounds of the journal.
#[test]
fn a_partition_removed_while_a_long_poll_holds_it_leaves_its_shard_writing() {
    const KEPT: u32 = 12;
    let dir = tempfile::tempdir().unwrap();
    create_partitions(dir.path(), "deleted", 1);
    create_partitions(dir.path(), "kept", KEPT);
    let mut config = config(dir.path());
    config.shard_count = 1;
    config.resources.open_files_max = engine::resources::OPEN_FILES_MIN;
    let (report, reports) = mpsc::channel::<Result<(), String>>();
    let runtime = Runtime::start(config, move |context| {
        let report = report.clone();
        async move {
            let outcome = async {
                let deleted = PartitionId::new("deleted", 0);
                let held = context
                    .partition_log(&deleted)
                    .await
                    .map_err(|error| format!("open: {error}"))?;
                for sequence in 0..5 {
                    let batch = tagged_batch(sequence, 1, 100, 0);
                    context
                        .append(deleted.clone(), batch, Durability::Written)
                        .await
                        .map_err(|error| format!("append before the removal: {error}"))?;
                }
                context
                    .remove_partition(deleted.clone())
                    .await
                    .map_err(|error| format!("removal: {error}"))?;
                // The holder's handle is closed: nothing more is written for the partition.
                match held.append(tagged_batch(5, 1, 100, 0), 0).await {
                    Err(engine::LogError::Closed) => {}
                    other => {
                        return Err(format!("an append through the held log: {other:?}"));
                    }
                }
                // About twice the journal's ring (4 x 256 KiB), over more partitions than the
                // descriptors hold, each append acknowledged as durable.
                for sequence in 0..480u64 {
                    let partition = PartitionId::new("kept", (sequence % u64::from(KEPT)) as u32);
                    let batch = tagged_batch(sequence, 1, 4000, 0);
                    context
                        .append(partition, batch, Durability::Durable)
                        .await
                        .map_err(|error| format!("append {sequence} after the removal: {error}"))?;
                }
                drop(held);
                Ok(())
            };
            report.send(outcome.await).unwrap();
        }
    })
    .unwrap();
    let outcome = reports
        .recv_timeout(Duration::from_secs(120))
        .unwrap_or_else(|_| Err("the shard's appends did not finish within 120 s".into()));
    assert_eq!(outcome, Ok(()));
    assert!(!dir.path().join("deleted-0").exists());
    runtime.shutdown_handle().trigger();
    runtime.join().unwrap();
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
