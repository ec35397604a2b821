//! The shard's commit cycle with its journal: many partitions' small appends share one journal
//! write and sync; large ones go to their segments; batches reach the segments later; the ring
//! goes round; and a crash of the shard (its `Committer` and every log dropped, mid-cycle)
//! loses nothing acknowledged and duplicates nothing once `replay_journals` has run, whatever
//! was cut, reset, deleted or removed before it.

mod common;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::BytesMut;
use common::*;
use engine::batch::BatchHeader;
use engine::journal::shard_journal_dir;
use engine::log::replay_journals;
use engine::{Committer, JournalConfig, LogConfig, LogError, PartitionLog, ReplayedLogs};

/// A shard: its commit cycle with a journal, and `partitions` logs `t-0`.. in `data`.
struct Shard {
    committer: Committer,
    logs: Vec<Rc<PartitionLog>>,
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 64 * 1024,
        tail_cache_bytes_max: 0,
        ..small_config()
    }
}

async fn open_shard(data: &Path, partitions: usize, journal: JournalConfig) -> Shard {
    open_shard_after(data, partitions, journal, &ReplayedLogs::default()).await
}

/// [`open_shard`] as the shards open their logs at start-up, after a replay that closed
/// `replayed`.
async fn open_shard_after(
    data: &Path,
    partitions: usize,
    journal: JournalConfig,
    replayed: &ReplayedLogs,
) -> Shard {
    let committer = Committer::with_journal(&shard_journal_dir(data, 0), 0, journal)
        .await
        .unwrap();
    let mut logs = Vec::new();
    for partition in 0..partitions {
        let dir = data.join(format!("t-{partition}"));
        let log =
            PartitionLog::open_in_after_replay(&committer, dir, config(), system_clock(), replayed)
                .await
                .unwrap();
        logs.push(Rc::new(log));
    }
    Shard { committer, logs }
}

/// A clean shutdown of the shard: every log closed, then the journal released.
async fn close(shard: Shard) {
    let Shard { committer, logs } = shard;
    for log in logs {
        Rc::into_inner(log)
            .unwrap()
            .close_at_shutdown()
            .await
            .unwrap();
    }
    committer.close().await.unwrap();
}

/// The clean-shutdown markers of the partitions `t-0`.. `t-{partitions - 1}`: the log end each
/// holds, if there is one.
fn markers(data: &Path, partitions: usize) -> Vec<Option<u64>> {
    (0..partitions)
        .map(|partition| {
            let marker = data.join(format!("t-{partition}")).join("clean-shutdown");
            std::fs::read_to_string(marker)
                .ok()
                .map(|text| text.parse().unwrap())
        })
        .collect()
}

/// A crash of the whole shard: the cycle stops wherever it is, the logs go without a close.
fn crash(shard: Shard) {
    let Shard { committer, logs } = shard;
    drop(committer);
    drop(logs);
}

/// What a restart does before the shard opens its logs.
async fn replay(data: &Path) -> engine::ReplayReport {
    replayed(data).await.report
}

/// [`replay`], with the logs it closed, for the shard's first opens.
async fn replayed(data: &Path) -> engine::Replayed {
    replay_journals(data, &|_| config(), system_clock())
        .await
        .unwrap()
}

/// Every batch of partition `partition`, each a valid batch, offsets contiguous.
async fn contents(data: &Path, partition: usize) -> Vec<Vec<u8>> {
    let log = PartitionLog::open(
        data.join(format!("t-{partition}")),
        config(),
        system_clock(),
    )
    .await
    .unwrap();
    let batches = read_all(&log, 0, 1 << 20).await;
    log.close().await.unwrap();
    batches
}

/// Appends `count` batches of `records` records of `value_bytes` to the shard's partitions in
/// turn, each acknowledged as durable; per partition, the batches as stored.
async fn append_round_robin(
    shard: &Shard,
    count: u64,
    records: usize,
    value_bytes: usize,
) -> Vec<Vec<Vec<u8>>> {
    let partitions = shard.logs.len();
    let mut acknowledged: Vec<Vec<Vec<u8>>> = vec![Vec::new(); partitions];
    for tag in 0..count {
        let partition = tag as usize % partitions;
        let batch = tagged_batch(tag, records, value_bytes, 0);
        let receipt = shard.logs[partition]
            .append_durable(batch.clone(), 0)
            .await
            .unwrap();
        acknowledged[partition].push(as_stored(batch, receipt.base_offset, 0));
    }
    acknowledged
}

fn segment_bytes_on_disk(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".log"))
        .map(|entry| entry.metadata().unwrap().len())
        .sum()
}

#[test]
fn small_appends_of_many_partitions_share_one_durable_journal_write() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let shard = open_shard(dir.path(), 16, small_journal()).await;
        let mut first_round = shard.committer.stats();
        for round in 0..5u64 {
            let receipts: Vec<_> = {
                let mut receipts = Vec::new();
                for (partition, log) in shard.logs.iter().enumerate() {
                    let batch = tagged_batch(round * 100 + partition as u64, 2, 50, 0);
                    receipts.push((log.clone(), log.append(batch, 0).await.unwrap()));
                }
                receipts
            };
            for (log, receipt) in &receipts {
                log.wait_durable(receipt).await.unwrap();
            }
            if round == 0 {
                // A fresh log records its first epoch before its first append, which spreads
                // the first round over several cycles; the rounds after it are the measure.
                first_round = shard.committer.stats();
            }
        }
        let stats = shard.committer.stats();
        assert_eq!(
            stats.journal_batches, 80,
            "every small append went to the journal"
        );
        assert_eq!(
            (
                stats.journal_writes - first_round.journal_writes,
                stats.journal_durable_writes - first_round.journal_durable_writes,
                stats.journal_syncs - first_round.journal_syncs
            ),
            (4, 4, 0),
            "one durable journal write (RWF_DSYNC) and no fdatasync for 16 partitions' appends: \
             {stats:?}"
        );
        assert_eq!(stats.direct_writes, 0);
        for log in &shard.logs {
            assert_eq!(
                log.stats().syncs,
                0,
                "no segment was synced for a small append"
            );
            assert_eq!(log.durable_end_offset(), 10);
        }
        for log in shard.logs.iter() {
            assert_eq!(read_all(log, 0, 1 << 20).await.len(), 5);
        }
        crash(shard);
    });
}

#[test]
fn acks_one_appends_are_written_to_the_journal_without_a_sync() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let shard = open_shard(dir.path(), 4, small_journal()).await;
        for tag in 0..20u64 {
            let log = &shard.logs[tag as usize % 4];
            let receipt = log.append(tagged_batch(tag, 1, 30, 0), 0).await.unwrap();
            log.wait_written(&receipt).await.unwrap();
        }
        let stats = shard.committer.stats();
        assert_eq!(stats.journal_batches, 20);
        assert_eq!(stats.journal_syncs, 0, "nobody asked for durability");
        // Now someone does: one journal sync covers every partition.
        for log in &shard.logs {
            log.sync().await.unwrap();
        }
        assert!(shard.committer.stats().journal_syncs >= 1);
        assert!(shard.committer.stats().journal_syncs <= 4);
        crash(shard);
    });
}

/// A durable append whose journal write comes after an acks=1 write still unsynced gets a
/// write and an `fdatasync`, which makes both durable; a write that was its own sync would have
/// promised nothing of the earlier one.
#[test]
fn a_durable_append_behind_an_unsynced_journal_write_is_synced_with_it() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let shard = open_shard(dir.path(), 2, small_journal()).await;
        let (unsynced, durable) = (&shard.logs[0], &shard.logs[1]);
        let receipt = unsynced.append(tagged_batch(0, 1, 30, 0), 0).await.unwrap();
        unsynced.wait_written(&receipt).await.unwrap();
        assert_eq!(
            unsynced.durable_end_offset(),
            0,
            "acks=1: written, not synced"
        );
        let before = shard.committer.stats();

        let receipt = durable.append(tagged_batch(1, 1, 30, 0), 0).await.unwrap();
        durable.wait_durable(&receipt).await.unwrap();
        let stats = shard.committer.stats();
        assert_eq!(
            (
                stats.journal_writes - before.journal_writes,
                stats.journal_durable_writes - before.journal_durable_writes,
                stats.journal_syncs - before.journal_syncs,
            ),
            (1, 0, 1),
            "a plain write and an fdatasync: {stats:?}"
        );
        assert_eq!(durable.durable_end_offset(), 1);
        assert_eq!(unsynced.durable_end_offset(), 1, "the sync covered it too");
        crash(shard);
    });
}

#[test]
fn large_pending_runs_go_straight_to_their_segment() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let shard = open_shard(dir.path(), 1, small_journal()).await;
        let log = &shard.logs[0];
        // Larger than the journal's bypass: written once, to the segment, and synced there.
        let big = tagged_batch(1, 1, 20 * 1024, 0);
        let receipt = log.append_durable(big, 0).await.unwrap();
        assert_eq!(receipt.base_offset, 0);
        let stats = shard.committer.stats();
        assert_eq!(stats.journal_batches, 0);
        assert_eq!(stats.direct_writes, 1);
        assert_eq!(log.stats().syncs, 1);
        assert!(segment_bytes_on_disk(&dir.path().join("t-0")) >= 20 * 1024);
        crash(shard);
    });
}

#[test]
fn acks_one_appends_go_back_to_the_journal_after_a_large_one_went_to_the_segment() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let shard = open_shard(dir.path(), 1, small_journal()).await;
        let log = &shard.logs[0];
        // Past the bypass and acks=1: written to the segment, and nobody asks for its sync.
        let big = tagged_batch(1, 1, 20 * 1024, 0);
        let receipt = log.append(big, 0).await.unwrap();
        log.wait_written(&receipt).await.unwrap();
        assert_eq!(shard.committer.stats().direct_writes, 1);
        // Small acks=1 appends after it: the journal takes them again (the segment written
        // directly is synced once first), not one extending segment write each.
        for tag in 2..12u64 {
            let receipt = log.append(tagged_batch(tag, 1, 30, 0), 0).await.unwrap();
            log.wait_written(&receipt).await.unwrap();
        }
        let stats = shard.committer.stats();
        assert_eq!(stats.direct_writes, 1, "{stats:?}");
        assert_eq!(stats.journal_batches, 10, "{stats:?}");
        assert_eq!(read_all(log, 0, 1 << 20).await.len(), 11);
        crash(shard);
    });
}

#[test]
fn journaled_batches_reach_their_segments_once_enough_gather_and_the_ring_goes_round() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let shard = open_shard(dir.path(), 3, small_journal()).await;
        // About 1.5 MiB through a ring of 4 files of 256 KiB.
        let acknowledged = append_round_robin(&shard, 1500, 1, 900).await;
        let stats = shard.committer.stats();
        assert_eq!(stats.journal_batches, 1500);
        assert!(
            stats.segment_writes > 0,
            "journaled batches were written later: {stats:?}"
        );
        assert!(stats.files_released >= 4, "the ring went round: {stats:?}");
        for (partition, log) in shard.logs.iter().enumerate() {
            assert_eq!(read_all(log, 0, 1 << 20).await, acknowledged[partition]);
            assert!(
                segment_bytes_on_disk(&dir.path().join(format!("t-{partition}"))) > 200 * 1024,
                "most of the partition is in its segments"
            );
        }
        crash(shard);
        replay(dir.path()).await;
        for (partition, expected) in acknowledged.iter().enumerate() {
            assert_eq!(&contents(dir.path(), partition).await, expected);
        }
    });
}

#[test]
fn a_crash_keeps_every_acknowledged_batch_and_replay_writes_it_once() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let shard = open_shard(dir.path(), 4, small_journal()).await;
        let acknowledged = append_round_robin(&shard, 40, 2, 100).await;
        // Still only in the journal: the segments lack them.
        assert!(segment_bytes_on_disk(&dir.path().join("t-0")) < 2000);
        crash(shard);
        let report = replay(dir.path()).await;
        assert_eq!(report.batches_appended, 40);
        // Its time per phase is reported (the start-up line prints it): the logs and the
        // `syncfs` did work here.
        assert!(report.phases.logs > std::time::Duration::ZERO);
        assert!(report.phases.sync > std::time::Duration::ZERO);
        for (partition, expected) in acknowledged.iter().enumerate() {
            assert_eq!(&contents(dir.path(), partition).await, expected);
        }
        // Replay released the journal: a second one finds nothing.
        let again = replay(dir.path()).await;
        assert_eq!(again.batches_appended + again.batches_present, 0);
        // And the shard starts again on it and goes on where the logs end.
        let shard = open_shard(dir.path(), 4, small_journal()).await;
        let receipt = shard.logs[0]
            .append_durable(tagged_batch(99, 1, 10, 0), 0)
            .await
            .unwrap();
        assert_eq!(receipt.base_offset, 20);
        crash(shard);
        replay(dir.path()).await;
        assert_eq!(contents(dir.path(), 0).await.len(), 11);
    });
}

/// A shutdown closes a log another task still holds (a long poll, a coordinator's task that
/// outlived the drain) like any other: its batches reach its synced segments and its later
/// appends are refused, so the journal, released whole once every log closed, needs none of its
/// records, whether the holder lets go before the release or after it. The shutdown once only
/// synced such a log: when the holder let go before the release, the release took the only copy
/// of its acknowledged batches (a transaction coordinator's records, lost across a clean
/// restart).
#[test]
fn a_log_still_held_at_shutdown_keeps_every_acknowledged_batch_whenever_its_holder_lets_go() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let shard = open_shard(dir.path(), 2, small_journal()).await;
        let acknowledged = append_round_robin(&shard, 10, 2, 100).await;
        let Shard { committer, logs } = shard;
        let held: Vec<Rc<PartitionLog>> = logs.clone();
        for log in &logs {
            log.close_at_shutdown().await.unwrap();
        }
        drop(logs);
        assert!(matches!(
            held[1].append_durable(tagged_batch(99, 1, 10, 0), 0).await,
            Err(LogError::Closed)
        ));
        let mut held = held.into_iter();
        let (let_go_before, let_go_after) = (held.next(), held.next());
        drop(let_go_before);
        committer.close().await.unwrap();
        drop(let_go_after);
        let report = replay(dir.path()).await;
        assert_eq!(
            report.batches_appended + report.batches_present,
            0,
            "released"
        );
        assert_eq!(markers(dir.path(), 2), vec![Some(10), Some(10)]);
        for (partition, expected) in acknowledged.iter().enumerate() {
            assert_eq!(&contents(dir.path(), partition).await, expected);
        }
    });
}

/// Polls `future` at most `polls` times, then drops it where it stands, as a kill would stop
/// it: `None` unless it finished first.
async fn poll_at_most<F: std::future::Future>(future: F, polls: usize) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut polls_left = polls;
    std::future::poll_fn(|context| {
        if polls_left == 0 {
            return std::task::Poll::Ready(None);
        }
        polls_left -= 1;
        future.as_mut().poll(context).map(Some)
    })
    .await
}

/// Replay defers every sync of the logs it writes to one `syncfs`, then releases the
/// journal; it leaves each log closed but writes no marker (it hands the shard what a marker
/// would say). A second crash anywhere in a replay (the replay dropped after a number of polls,
/// with writes in flight), then a full replay, keeps every acknowledged batch, once.
#[test]
fn a_crash_during_replay_loses_nothing_and_replay_leaves_the_logs_closed() {
    for polls in [1usize, 3, 10, 30, 100, 300, 1000] {
        run(async move {
            let dir = tempfile::tempdir().unwrap();
            let shard = open_shard(dir.path(), 8, small_journal()).await;
            let acknowledged = append_round_robin(&shard, 48, 2, 100).await;
            crash(shard);
            let interrupted = poll_at_most(
                replay_journals(dir.path(), &|_| config(), system_clock()),
                polls,
            )
            .await;
            let finished = interrupted.map(Result::unwrap).is_some();
            let report = replay(dir.path()).await;
            if !finished {
                assert_eq!(report.batches_appended + report.batches_present, 48);
            }
            for (partition, expected) in acknowledged.iter().enumerate() {
                let partition_dir = dir.path().join(format!("t-{partition}"));
                assert!(
                    !partition_dir.join("clean-shutdown").exists(),
                    "polls {polls}: partition {partition} has a marker replay did not vouch for"
                );
                assert_eq!(
                    &contents(dir.path(), partition).await,
                    expected,
                    "polls {polls}: partition {partition}"
                );
            }
            let again = replay(dir.path()).await;
            assert_eq!(again.batches_appended + again.batches_present, 0);
        });
    }
}

/// Replay closes the logs it replays but creates no marker file for them (one per partition
/// after the `syncfs` took as long as the replay of the logs at 10 000 partitions): the shard's
/// first open of each takes what the marker would say from replay, and owes the marker to the
/// log's close, which writes it (nothing else, if the files did not change), so that the start
/// after a clean shutdown opens every log as cleanly closed again.
#[test]
fn replay_writes_no_markers_and_the_first_open_after_it_owes_them_to_its_close() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let shard = open_shard(dir.path(), 4, small_journal()).await;
        let mut acknowledged = append_round_robin(&shard, 40, 2, 100).await;
        crash(shard);
        let replayed = replayed(dir.path()).await;
        assert_eq!(replayed.report.batches_appended, 40);
        assert_eq!(replayed.logs.len(), 4);
        assert_eq!(markers(dir.path(), 4), vec![None; 4]);
        let shard = open_shard_after(dir.path(), 4, small_journal(), &replayed.logs).await;
        assert!(
            replayed.logs.is_empty(),
            "each first open takes its log's entry"
        );
        for (partition, expected) in acknowledged.iter().enumerate() {
            assert_eq!(
                &read_all(&shard.logs[partition], 0, 1 << 20).await,
                expected
            );
        }
        // One log changes (a journaled append), the others not.
        let batch = tagged_batch(100, 2, 100, 0);
        let receipt = shard.logs[1]
            .append_durable(batch.clone(), 0)
            .await
            .unwrap();
        acknowledged[1].push(as_stored(batch, receipt.base_offset, 0));
        close(shard).await;
        assert_eq!(
            markers(dir.path(), 4),
            vec![Some(20), Some(22), Some(20), Some(20)]
        );
        assert_eq!(replay(dir.path()).await.batches_appended, 0);
        for (partition, expected) in acknowledged.iter().enumerate() {
            assert_eq!(&contents(dir.path(), partition).await, expected);
        }
    });
}

/// The journal's files as they are now, to put back later: what a crash before the journal's
/// release, or in the middle of it, leaves of them.
fn journal_files(data: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(shard_journal_dir(data, 0))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    files.sort();
    files
}

/// A crash at each point of a restart after a crash, then another restart (replay, the shard's
/// opens): after replay's `syncfs` and before the journal's release (every journal file left
/// unreleased), in the middle of the release (one file left unreleased), after it and before
/// the shard's opens, which replay's hand-off dies with, and after those opens with some logs
/// changed since and others not. Every acknowledged batch is read back, once.
#[test]
fn a_crash_at_any_point_of_a_restart_that_replayed_loses_nothing() {
    let files = small_journal().files;
    let unreleased: Vec<Vec<usize>> = std::iter::once((0..files).collect())
        .chain((0..files).map(|file| vec![file]))
        .chain(std::iter::once(Vec::new()))
        .collect();
    let mut journal_files_live_max = 0;
    for unreleased in unreleased {
        let live = run(async move {
            let dir = tempfile::tempdir().unwrap();
            let shard = open_shard(dir.path(), 8, small_journal()).await;
            // Over one journal file's worth: the crash leaves two files live.
            let mut acknowledged = append_round_robin(&shard, 48, 2, 3000).await;
            crash(shard);
            let journal = journal_files(dir.path());
            let live = journal
                .iter()
                .filter(|(_, bytes)| bytes[..8].iter().any(|&byte| byte != 0))
                .count();
            let first = replayed(dir.path()).await;
            assert_eq!(first.report.partitions, 8);
            for &file in &unreleased {
                std::fs::write(&journal[file].0, &journal[file].1).unwrap();
            }
            // The crash: what replay handed over goes with the process.
            drop(first);
            let second = replayed(dir.path()).await;
            let context = format!("journal files {unreleased:?} left unreleased");
            assert_eq!(second.report.batches_appended, 0, "{context}");
            let shard = open_shard_after(dir.path(), 8, small_journal(), &second.logs).await;
            for (partition, expected) in acknowledged.iter().enumerate() {
                let batches = read_all(&shard.logs[partition], 0, 1 << 20).await;
                assert_eq!(&batches, expected, "{context}: partition {partition}");
            }
            for partition in (0..8).step_by(2) {
                let batch = tagged_batch(100 + partition as u64, 1, 100, 0);
                let receipt = shard.logs[partition]
                    .append_durable(batch.clone(), 0)
                    .await
                    .unwrap();
                acknowledged[partition].push(as_stored(batch, receipt.base_offset, 0));
            }
            crash(shard);
            let third = replayed(dir.path()).await;
            assert_eq!(third.report.batches_appended, 4, "{context}");
            let shard = open_shard_after(dir.path(), 8, small_journal(), &third.logs).await;
            for (partition, expected) in acknowledged.iter().enumerate() {
                let batches = read_all(&shard.logs[partition], 0, 1 << 20).await;
                assert_eq!(
                    &batches, expected,
                    "{context}: partition {partition}, third start"
                );
            }
            close(shard).await;
            assert!(markers(dir.path(), 8).iter().all(Option::is_some));
            live
        });
        journal_files_live_max = journal_files_live_max.max(live);
    }
    assert!(
        journal_files_live_max >= 2,
        "a crash in the middle of a release needs two files"
    );
}

/// A replayed partition whose directory is emptied and made again before its first open (its
/// topic deleted and created again at once) opens empty: what replay handed over was about the
/// files it closed, which are gone.
#[test]
fn a_directory_made_again_before_its_first_open_ignores_what_replay_handed_over() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let shard = open_shard(dir.path(), 2, small_journal()).await;
        append_round_robin(&shard, 4, 1, 100).await;
        crash(shard);
        let replayed = replayed(dir.path()).await;
        assert_eq!(replayed.logs.len(), 2);
        let partition_dir = dir.path().join("t-0");
        std::fs::remove_dir_all(&partition_dir).unwrap();
        std::fs::create_dir(&partition_dir).unwrap();
        let shard = open_shard_after(dir.path(), 2, small_journal(), &replayed.logs).await;
        assert_eq!(shard.logs[0].log_end_offset(), 0);
        assert_eq!(shard.logs[1].log_end_offset(), 2);
        close(shard).await;
        assert_eq!(markers(dir.path(), 2), vec![Some(0), Some(2)]);
    });
}

/// Per partition, the acknowledged batches: base offset and bytes.
type Acknowledged = Vec<(u64, Vec<u8>)>;

/// A crash at many points of the cycle: appenders to journal-path and direct-path partitions
/// run concurrently, and the shard is dropped after the `stop_after`-th acknowledgement, with
/// writes and syncs in flight. After replay every acknowledged batch is there, once, at its
/// offset; what was never acknowledged may be there or not, but only after every acknowledged
/// batch of its partition.
#[test]
fn a_crash_anywhere_in_the_cycle_loses_nothing_acknowledged_and_duplicates_nothing() {
    for stop_after in [1usize, 7, 23, 60, 111, 170] {
        run(async move {
            let dir = tempfile::tempdir().unwrap();
            let shard = open_shard(dir.path(), 6, small_journal()).await;
            let acknowledged: Rc<RefCell<Vec<Acknowledged>>> =
                Rc::new(RefCell::new(vec![Vec::new(); 6]));
            let acks = Rc::new(std::cell::Cell::new(0usize));
            let mut tasks = Vec::new();
            for partition in 0..6usize {
                let log = shard.logs[partition].clone();
                let (acknowledged, acks) = (acknowledged.clone(), acks.clone());
                tasks.push(glommio::spawn_local(async move {
                    for round in 0..60u64 {
                        let tag = partition as u64 * 1000 + round;
                        // Partitions 4 and 5 append batches past the journal's bypass now and
                        // then: the direct path, mixed with journaled ones.
                        let value_bytes = if partition >= 4 && round % 3 == 0 {
                            20 * 1024
                        } else {
                            100 + (round as usize * 37) % 900
                        };
                        let batch = tagged_batch(tag, 1 + round as usize % 3, value_bytes, 0);
                        let Ok(receipt) = log.append(batch.clone(), 0).await else {
                            return;
                        };
                        if log.wait_durable(&receipt).await.is_err() {
                            return;
                        }
                        acknowledged.borrow_mut()[partition].push((
                            receipt.base_offset,
                            as_stored(batch, receipt.base_offset, 0),
                        ));
                        acks.set(acks.get() + 1);
                    }
                }));
            }
            while acks.get() < stop_after {
                glommio::executor().yield_now().await;
            }
            // The appenders hold the logs too: they go with the shard.
            let Shard { committer, logs } = shard;
            drop(committer);
            drop(tasks);
            drop(logs);
            replay(dir.path()).await;
            let acknowledged = acknowledged.borrow().clone();
            for (partition, expected) in acknowledged.iter().enumerate() {
                let recovered = contents(dir.path(), partition).await;
                assert!(
                    recovered.len() >= expected.len(),
                    "stop after {stop_after}: partition {partition} lost acknowledged batches \
                     ({} of {})",
                    recovered.len(),
                    expected.len()
                );
                for (index, (base_offset, bytes)) in expected.iter().enumerate() {
                    let header = BatchHeader::parse(&recovered[index]).unwrap();
                    assert_eq!(header.base_offset as u64, *base_offset);
                    assert!(
                        &recovered[index] == bytes,
                        "stop after {stop_after}: partition {partition} batch {index} differs"
                    );
                }
                let mut tags: Vec<Vec<u8>> =
                    recovered.iter().map(|bytes| bytes[61..].to_vec()).collect();
                let count = tags.len();
                tags.sort();
                tags.dedup();
                assert_eq!(tags.len(), count, "stop after {stop_after}: a batch twice");
            }
        });
    }
}

#[test]
fn a_truncation_is_not_undone_by_replay() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let shard = open_shard(dir.path(), 2, small_journal()).await;
        let mut kept = Vec::new();
        for tag in 0..10u64 {
            let batch = tagged_batch(tag, 1, 100, 0);
            let receipt = shard.logs[0]
                .append_durable(batch.clone(), 0)
                .await
                .unwrap();
            if tag < 4 {
                kept.push(as_stored(batch, receipt.base_offset, 0));
            }
            // The other partition keeps the journal busy with records of its own.
            shard.logs[1]
                .append_durable(tagged_batch(tag, 1, 100, 0), 0)
                .await
                .unwrap();
        }
        // A Raft follower overruled: offsets 4.. go, nothing is appended after the cut.
        assert_eq!(shard.logs[0].truncate(4).await.unwrap(), 4);
        crash(shard);
        replay(dir.path()).await;
        assert_eq!(contents(dir.path(), 0).await, kept);
        assert_eq!(contents(dir.path(), 1).await.len(), 10);

        // Cut, then new batches at the same offsets: the new ones, once.
        let shard = open_shard(dir.path(), 1, small_journal()).await;
        let log = &shard.logs[0];
        for tag in 10..14u64 {
            log.append_durable(tagged_batch(tag, 1, 100, 0), 0)
                .await
                .unwrap();
        }
        assert_eq!(log.truncate(6).await.unwrap(), 6);
        let batch = tagged_batch(20, 1, 100, 0);
        let receipt = log.append_durable(batch.clone(), 0).await.unwrap();
        assert_eq!(receipt.base_offset, 6);
        let expected_tail = as_stored(batch, 6, 0);
        crash(shard);
        replay(dir.path()).await;
        let recovered = contents(dir.path(), 0).await;
        assert_eq!(recovered.len(), 7);
        assert_eq!(recovered[..4], kept[..]);
        assert_eq!(recovered[6], expected_tail);
    });
}

#[test]
fn a_reset_and_deleted_records_are_not_undone_by_replay() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let shard = open_shard(dir.path(), 2, small_journal()).await;
        for tag in 0..8u64 {
            for log in &shard.logs {
                log.append_durable(tagged_batch(tag, 1, 100, 0), 0)
                    .await
                    .unwrap();
            }
        }
        // Partition 0 starts over, empty, at offset 3 (below its end: what it held from 3 on
        // must not come back); partition 1's records below 5 are deleted.
        shard.logs[0].reset_to(3, 0).await.unwrap();
        shard.logs[1].delete_up_to(5).await.unwrap();
        crash(shard);
        replay(dir.path()).await;
        let log = PartitionLog::open(dir.path().join("t-0"), config(), system_clock())
            .await
            .unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (3, 3));
        log.close().await.unwrap();
        let log = PartitionLog::open(dir.path().join("t-1"), config(), system_clock())
            .await
            .unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (5, 8));
        assert_eq!(read_all(&log, 5, 1 << 20).await.len(), 3);
        log.close().await.unwrap();
    });
}

#[test]
fn a_removed_partition_is_not_replayed_into_a_new_one_of_the_same_name() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let mut shard = open_shard(dir.path(), 2, small_journal()).await;
        for tag in 0..6u64 {
            for log in &shard.logs {
                log.append_durable(tagged_batch(tag, 1, 100, 0), 0)
                    .await
                    .unwrap();
            }
        }
        // The topic is deleted (its log closed, its directory removed) and created again.
        let removed = Rc::into_inner(shard.logs.remove(0)).unwrap();
        removed.close().await.unwrap();
        let partition_dir: PathBuf = dir.path().join("t-0");
        std::fs::remove_dir_all(&partition_dir).unwrap();
        std::fs::create_dir(&partition_dir).unwrap();
        crash(shard);
        replay(dir.path()).await;
        assert!(contents(dir.path(), 0).await.is_empty());
        assert_eq!(contents(dir.path(), 1).await.len(), 6);
    });
}

#[test]
fn a_clean_close_of_the_shard_leaves_an_empty_journal() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let shard = open_shard(dir.path(), 3, small_journal()).await;
        for tag in 0..30u64 {
            shard.logs[tag as usize % 3]
                .append_durable(tagged_batch(tag, 1, 200, 0), 0)
                .await
                .unwrap();
        }
        let Shard { committer, logs } = shard;
        for log in logs {
            Rc::into_inner(log).unwrap().close().await.unwrap();
        }
        committer.close().await.unwrap();
        drop(committer);
        let report = replay(dir.path()).await;
        assert_eq!(report.batches_appended + report.batches_present, 0);
        for partition in 0..3 {
            assert_eq!(contents(dir.path(), partition).await.len(), 10);
        }
    });
}

#[test]
fn a_closed_log_refuses_appends_and_its_shard_goes_on() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let mut shard = open_shard(dir.path(), 2, small_journal()).await;
        shard.logs[0]
            .append_durable(tagged_batch(1, 1, 10, 0), 0)
            .await
            .unwrap();
        let closed = Rc::into_inner(shard.logs.remove(0)).unwrap();
        closed.close().await.unwrap();
        assert_eq!(shard.committer.log_count(), 1);
        let receipt = shard.logs[0]
            .append_durable(BytesMut::from(&tagged_batch(2, 1, 10, 0)[..]), 0)
            .await
            .unwrap();
        assert_eq!(receipt.base_offset, 0);
        assert!(matches!(
            shard.logs[0].append(BytesMut::new(), 0).await,
            Err(LogError::InvalidBatch(_))
        ));
        crash(shard);
    });
}

#[test]
fn replay_rebuilds_the_transactions_of_journaled_batches() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let shard = open_shard(dir.path(), 1, small_journal()).await;
        let log = &shard.logs[0];
        let transactional = |producer_id: i64, sequence: i32| {
            let fields = engine::batch::build::ProducerFields::idempotent(producer_id, 0, sequence)
                .with_transaction_bits(false);
            let record = engine::batch::build::TestRecord {
                key: None,
                value: b"v".to_vec(),
                timestamp_ms: 0,
            };
            BytesMut::from(&engine::batch::build::batch_from(&[record], fields)[..])
        };
        let abort = engine::batch::TransactionMarker {
            producer_id: 7,
            producer_epoch: 0,
            coordinator_epoch: 0,
            committed: false,
        };
        log.append_durable(transactional(7, 0), 0).await.unwrap(); // 0
        log.append_durable(transactional(8, 0), 0).await.unwrap(); // 1
        let marker = BytesMut::from(&engine::batch::encode_transaction_marker(&abort, 0)[..]);
        let marker = engine::batch::CheckedBatch::stored(marker, usize::MAX).unwrap();
        let receipt = log.append_checked(marker, 0).await.unwrap(); // 2
        log.wait_durable(&receipt).await.unwrap();
        assert_eq!(
            shard.committer.stats().direct_writes,
            0,
            "all in the journal"
        );
        crash(shard);
        let replayed = replayed(dir.path()).await;
        assert_eq!(replayed.report.batches_appended, 3, "replay appended them");
        let shard = open_shard_after(dir.path(), 1, small_journal(), &replayed.logs).await;
        let log = &shard.logs[0];
        assert_eq!(log.open_transactions(), vec![(8, 1)]);
        assert_eq!(log.last_stable_offset(), 1);
        assert_eq!(
            log.aborted_transactions(0, 3),
            vec![engine::AbortedTransaction {
                producer_id: 7,
                first_offset: 0,
                last_offset: 2,
                last_stable_offset: 1,
            }]
        );
        close(shard).await;
    });
}
