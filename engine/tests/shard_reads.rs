//! Reads across shards: a fetch's partitions read at once (one call per owning shard) get what
//! reading them one after another gets, and a long poll over several shards ends on any one's
//! data and cancels its other waits, even when a partition it holds is removed meanwhile.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::shards::*;
use common::*;
use engine::shard::{owner_shard, Durability, IsolationLevel, PartitionId, Runtime};

/// The reads of a fetch, one per partition, from its offset with its own byte limit.
fn fetch_reads(reads: &[(u32, u64, usize)]) -> Vec<engine::shard::PartitionRead> {
    reads
        .iter()
        .map(
            |&(partition, offset, bytes_max)| engine::shard::PartitionRead {
                partition: PartitionId::new("many", partition),
                offset,
                bytes_max,
                isolation: IsolationLevel::ReadUncommitted,
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
                let wait = std::pin::pin!(context.wait_for_data(
                    waits,
                    IsolationLevel::ReadUncommitted,
                    600_000
                ));
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
