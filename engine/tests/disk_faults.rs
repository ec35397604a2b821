//! Disk faults injected into a partition log's file I/O (`log::injected_faults`, built only with
//! the `fault-injection` feature): a failed segment write and a failed `fdatasync`, on a log a
//! single broker appends to and on one a follower copies its leader into.
//!
//! What must hold: nothing is acknowledged that a failure may have lost (after a failed
//! `fdatasync`, nothing past the last good sync, whatever a later sync says); what was
//! acknowledged stays readable and survives a crash; the tail cache and the idempotent
//! producers' table describe the log as it is after the failure; a follower's next batch is
//! refused, not taken for a gap the leader's cleaner left; and the log goes on once the fault
//! clears (by itself after a failed write, through `clear_fault` after a failed sync).

mod common;

use std::path::Path;

use common::*;
use engine::log::injected_faults::{arm, armed, IoOperation};
use engine::{LogConfig, LogError, PartitionLog};

/// Small segments, and a tail cache big enough to hold every batch of a test, so reads are
/// served from memory and must agree with the files.
fn config() -> LogConfig {
    LogConfig {
        tail_cache_bytes_max: 1 << 20,
        ..small_config()
    }
}

/// Appends `count` batches tagged from `first_tag`, each acknowledged as durable; returns them
/// as stored.
async fn append_durably(log: &PartitionLog, first_tag: u64, count: u64) -> Vec<Vec<u8>> {
    let mut stored = Vec::new();
    for tag in first_tag..first_tag + count {
        let batch = tagged_batch(tag, 2, 100, 0);
        let receipt = log.append_durable(batch.clone(), 0).await.unwrap();
        stored.push(as_stored(batch, receipt.base_offset, 0));
    }
    stored
}

/// Reopens the log in `dir` after a crash (no clean close) and returns every batch it holds.
async fn after_a_crash(log: PartitionLog, dir: &Path) -> (PartitionLog, Vec<Vec<u8>>) {
    drop(log);
    let log = PartitionLog::open(dir, config(), system_clock())
        .await
        .unwrap();
    let batches = read_all(&log, 0, 1 << 20).await;
    (log, batches)
}

#[test]
fn a_failed_write_fails_its_flush_and_the_log_goes_on_from_the_written_end() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), config(), system_clock())
            .await
            .unwrap();
        let mut acknowledged = append_durably(&log, 0, 5).await;
        let end_before = log.log_end_offset();

        arm(dir.path(), IoOperation::Write, libc::EIO, Some(1)).unwrap();
        // One flush: an idempotent producer's batch and a plain one, neither written.
        let producer = log.append(producer_batch(7, 0, 0, 3), 0).await.unwrap();
        let plain = log.append(tagged_batch(100, 2, 100, 0), 0).await.unwrap();
        assert!(matches!(
            log.wait_durable(&producer).await,
            Err(LogError::Io { .. })
        ));
        assert!(log.wait_written(&plain).await.is_err());
        assert!(!armed(dir.path()), "the fault fired");
        assert_eq!(
            log.log_end_offset(),
            end_before,
            "rolled back to the written end"
        );
        assert!(log.fault().is_some(), "the failed write is reported");
        assert_eq!(
            read_all(&log, 0, 1 << 20).await,
            acknowledged,
            "the tail cache lost what was never written"
        );

        // The log numbers the next batch itself, at the end as it is now: the producer's retry
        // is appended again, not answered as a duplicate of a batch that is not there.
        let retry = log
            .append_durable(producer_batch(7, 0, 0, 3), 0)
            .await
            .unwrap();
        assert!(!retry.duplicate);
        assert_eq!(retry.base_offset, end_before);
        assert!(log.fault().is_none(), "an append clears a failed write");
        acknowledged.push(as_stored(producer_batch(7, 0, 0, 3), end_before, 0));
        acknowledged.extend(append_durably(&log, 200, 3).await);

        // The failed write reached the file (the fault replaced its result); nothing of it
        // comes back after a crash.
        let (log, recovered) = after_a_crash(log, dir.path()).await;
        assert_eq!(recovered, acknowledged);
        log.close().await.unwrap();
    });
}

#[test]
fn a_failed_sync_acknowledges_nothing_queued_behind_it_and_the_log_refuses_appends() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), config(), system_clock())
            .await
            .unwrap();
        let acknowledged = append_durably(&log, 0, 5).await;
        let durable_before = log.durable_end_offset();

        arm(dir.path(), IoOperation::Sync, libc::EIO, Some(1)).unwrap();
        let first = log.append(tagged_batch(100, 2, 100, 0), 0).await.unwrap();
        log.wait_written(&first).await.unwrap();
        // Ask for the sync and let the flusher start it; then queue more while it runs.
        let syncs_before = log.stats().syncs;
        let log = std::rc::Rc::new(log);
        let first_durable = glommio::spawn_local({
            let log = log.clone();
            async move { log.wait_durable(&first).await }
        });
        while log.stats().syncs == syncs_before {
            glommio::executor().yield_now().await;
        }
        let queued = log.append(tagged_batch(101, 2, 100, 0), 0).await.unwrap();
        assert!(
            first_durable.await.is_err(),
            "the failed sync acknowledges nothing"
        );
        assert!(
            log.wait_durable(&queued).await.is_err(),
            "a batch queued behind a failed sync is not acknowledged by a later one"
        );
        assert!(log.wait_written(&queued).await.is_err(), "nor written");
        assert_eq!(log.durable_end_offset(), durable_before);
        assert!(matches!(
            log.append_durable(tagged_batch(102, 2, 100, 0), 0).await,
            Err(LogError::Io { .. })
        ));
        assert!(log.sync().await.is_err());
        assert!(log.fault().is_some());

        // A restart: everything acknowledged is there; the queued batch never was.
        let log = std::rc::Rc::into_inner(log).unwrap();
        let (log, recovered) = after_a_crash(log, dir.path()).await;
        assert_eq!(recovered[..acknowledged.len()], acknowledged[..]);
        assert!(
            recovered.len() <= acknowledged.len() + 1,
            "at most the batch whose sync failed"
        );
        log.close().await.unwrap();
    });
}

#[test]
fn a_failed_sync_while_sealing_a_segment_fails_the_log() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), config(), system_clock())
            .await
            .unwrap();
        append_durably(&log, 0, 1).await;
        // Written, not synced, until the active segment is nearly full.
        let segments = log.segment_count();
        let mut tag = 1;
        while log.size_bytes() + 2_000 < config().segment_bytes_max {
            let receipt = log.append(tagged_batch(tag, 4, 200, 0), 0).await.unwrap();
            log.wait_written(&receipt).await.unwrap();
            tag += 1;
        }
        arm(dir.path(), IoOperation::Sync, libc::EIO, Some(1)).unwrap();
        // This one rolls: the full segment is sealed (trimmed, synced) before it is written.
        let rolling = log.append(tagged_batch(tag, 8, 400, 0), 0).await.unwrap();
        assert_eq!(
            log.segment_count(),
            segments + 1,
            "the batch rolled the log"
        );
        assert!(log.wait_durable(&rolling).await.is_err());
        assert!(!armed(dir.path()), "the sealing sync failed");
        // A second sync may well succeed, and say nothing of what the first one lost.
        assert!(
            log.append_durable(tagged_batch(tag + 1, 2, 100, 0), 0)
                .await
                .is_err(),
            "nothing is acknowledged after a failed sync"
        );
        assert!(log.fault().is_some());
    });
}

#[test]
fn clear_fault_cuts_the_log_back_to_its_last_good_sync_and_it_goes_on() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), config(), system_clock())
            .await
            .unwrap();
        let mut acknowledged = append_durably(&log, 0, 4).await;
        let last_good_sync = log.durable_end_offset();
        // Written but never durable: the producer's batch and a plain one.
        let producer = log.append(producer_batch(9, 0, 0, 2), 0).await.unwrap();
        log.wait_written(&producer).await.unwrap();
        arm(dir.path(), IoOperation::Sync, libc::EIO, Some(1)).unwrap();
        assert!(log.wait_durable(&producer).await.is_err());
        assert!(log.fault().is_some());

        log.clear_fault().await.unwrap();
        assert!(log.fault().is_none());
        assert_eq!(
            log.log_end_offset(),
            last_good_sync,
            "cut back to the last good sync"
        );
        assert_eq!(log.durable_end_offset(), last_good_sync);
        assert_eq!(read_all(&log, 0, 1 << 20).await, acknowledged);
        // The producer's batch is gone from its table too: its retry is appended, once.
        let retry = log
            .append_durable(producer_batch(9, 0, 0, 2), 0)
            .await
            .unwrap();
        assert!(!retry.duplicate);
        assert_eq!(retry.base_offset, last_good_sync);
        acknowledged.push(as_stored(producer_batch(9, 0, 0, 2), last_good_sync, 0));
        acknowledged.extend(append_durably(&log, 50, 3).await);
        let (log, recovered) = after_a_crash(log, dir.path()).await;
        assert_eq!(recovered, acknowledged);
        log.close().await.unwrap();
    });
}

#[test]
fn a_follower_s_next_batch_after_a_failed_write_is_refused_not_taken_for_a_gap() {
    run(async {
        let leader_dir = tempfile::tempdir().unwrap();
        let follower_dir = tempfile::tempdir().unwrap();
        let (leader, batches) = leader_log(leader_dir.path(), config(), 12, |_| 1).await;
        let follower = PartitionLog::open(follower_dir.path(), config(), system_clock())
            .await
            .unwrap();
        for bytes in &batches[..6] {
            follower.append_replicated(stored(bytes)).await.unwrap();
        }
        follower.sync().await.unwrap();
        let end_before = follower.log_end_offset();

        arm(
            follower_dir.path(),
            IoOperation::Write,
            libc::ENOSPC,
            Some(1),
        )
        .unwrap();
        let lost = follower
            .append_replicated(stored(&batches[6]))
            .await
            .unwrap();
        assert!(matches!(
            follower.wait_written(&lost).await,
            Err(LogError::DiskFull { .. })
        ));
        assert_eq!(follower.log_end_offset(), end_before);
        // The next batch was numbered for the end that is gone: refused, not a gap.
        assert!(matches!(
            follower.append_replicated(stored(&batches[7])).await,
            Err(LogError::DiskFull { .. })
        ));
        assert!(
            !follower_dir.path().join("compacted-end-offset").exists(),
            "no gap was recorded"
        );
        assert_eq!(follower.log_end_offset(), end_before);

        // Once the owner has heard of it, the copy goes on from where the log ends.
        follower.clear_fault().await.unwrap();
        for bytes in &batches[6..] {
            follower.append_replicated(stored(bytes)).await.unwrap();
        }
        follower.sync().await.unwrap();
        assert_eq!(read_all(&follower, 0, 1 << 20).await, batches);
        let (follower, recovered) = after_a_crash(follower, follower_dir.path()).await;
        assert_eq!(recovered, batches);
        follower.close().await.unwrap();
        leader.close().await.unwrap();
    });
}

/// A shard's commit cycle with a journal, and two logs `t-0` and `t-1` in `data`.
async fn journaled_shard(data: &Path) -> (engine::Committer, PartitionLog, PartitionLog) {
    let committer = engine::Committer::with_journal(
        &engine::journal::shard_journal_dir(data, 0),
        0,
        small_journal(),
    )
    .await
    .unwrap();
    let first = PartitionLog::open_in(&committer, data.join("t-0"), config(), system_clock())
        .await
        .unwrap();
    let second = PartitionLog::open_in(&committer, data.join("t-1"), config(), system_clock())
        .await
        .unwrap();
    (committer, first, second)
}

/// The shard crashes (its cycle and logs dropped), restarts (replay), and the log `name`
/// is read back whole.
async fn replayed(data: &Path, name: &str) -> Vec<Vec<u8>> {
    engine::log::replay_journals(data, &|_| config(), system_clock())
        .await
        .unwrap();
    let log = PartitionLog::open(data.join(name), config(), system_clock())
        .await
        .unwrap();
    let batches = read_all(&log, 0, 1 << 20).await;
    log.close().await.unwrap();
    batches
}

#[test]
fn a_failed_journal_write_fails_every_append_in_it_and_none_of_it_comes_back() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let (committer, first, second) = journaled_shard(dir.path()).await;
        let mut acknowledged = append_durably(&first, 0, 3).await;
        let acknowledged_second = append_durably(&second, 0, 3).await;
        let end_before = first.log_end_offset();

        arm(
            &dir.path().join("t-0"),
            IoOperation::Write,
            libc::EIO,
            Some(1),
        )
        .unwrap();
        // One journal write carries both logs' appends: the fault armed for one fails it.
        let lost = first.append(tagged_batch(50, 2, 100, 0), 0).await.unwrap();
        let lost_too = second.append(tagged_batch(51, 2, 100, 0), 0).await.unwrap();
        assert!(matches!(
            first.wait_durable(&lost).await,
            Err(LogError::Io { .. })
        ));
        assert!(second.wait_written(&lost_too).await.is_err());
        assert!(!armed(&dir.path().join("t-0")), "the fault fired");
        assert_eq!(first.log_end_offset(), end_before, "rolled back");
        assert!(first.fault().is_some() && second.fault().is_some());
        assert_eq!(read_all(&first, 0, 1 << 20).await, acknowledged);

        // The log goes on at the same offsets.
        acknowledged.extend(append_durably(&first, 100, 2).await);
        assert!(first.fault().is_none());
        // The failed write was zeroed on disk: a crash does not bring it back.
        drop(committer);
        drop((first, second));
        assert_eq!(replayed(dir.path(), "t-0").await, acknowledged);
        assert_eq!(replayed(dir.path(), "t-1").await, acknowledged_second);
    });
}

#[test]
fn a_failed_journal_sync_fails_every_log_with_records_in_it() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let (committer, first, second) = journaled_shard(dir.path()).await;
        let acknowledged = append_durably(&first, 0, 3).await;
        let acknowledged_second = append_durably(&second, 0, 3).await;
        let durable_before = (first.durable_end_offset(), second.durable_end_offset());

        arm(
            &dir.path().join("t-1"),
            IoOperation::Sync,
            libc::EIO,
            Some(1),
        )
        .unwrap();
        let unlucky = first.append(tagged_batch(50, 2, 100, 0), 0).await.unwrap();
        let armed_one = second.append(tagged_batch(51, 2, 100, 0), 0).await.unwrap();
        assert!(first.wait_durable(&unlucky).await.is_err());
        assert!(second.wait_durable(&armed_one).await.is_err());
        assert!(!armed(&dir.path().join("t-1")), "the fault fired");
        assert_eq!(
            (first.durable_end_offset(), second.durable_end_offset()),
            durable_before,
            "nothing past the last good sync is durable"
        );
        // Both logs are failed: nothing more is acknowledged, whatever a later sync says.
        for log in [&first, &second] {
            assert!(log.fault().is_some());
            assert!(log
                .append_durable(tagged_batch(60, 1, 10, 0), 0)
                .await
                .is_err());
        }
        drop(committer);
        drop((first, second));
        for (name, expected) in [("t-0", &acknowledged), ("t-1", &acknowledged_second)] {
            let recovered = replayed(dir.path(), name).await;
            assert_eq!(recovered[..expected.len()], expected[..]);
            assert!(
                recovered.len() <= expected.len() + 1,
                "at most the batch whose sync failed"
            );
        }
    });
}

#[test]
fn clear_fault_after_a_failed_journal_sync_keeps_what_the_journal_made_durable() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let (committer, first, second) = journaled_shard(dir.path()).await;
        // Durable in the journal only: not yet in the segment.
        let mut acknowledged = append_durably(&first, 0, 4).await;
        let last_good_sync = first.durable_end_offset();
        // Written to the journal, never durable.
        let written = first.append(tagged_batch(40, 2, 100, 0), 0).await.unwrap();
        first.wait_written(&written).await.unwrap();
        arm(
            &dir.path().join("t-0"),
            IoOperation::Sync,
            libc::EIO,
            Some(1),
        )
        .unwrap();
        assert!(first.wait_durable(&written).await.is_err());
        assert!(first.fault().is_some());

        first.clear_fault().await.unwrap();
        assert_eq!(
            first.log_end_offset(),
            last_good_sync,
            "cut back to the last good sync"
        );
        assert_eq!(read_all(&first, 0, 1 << 20).await, acknowledged);
        acknowledged.extend(append_durably(&first, 50, 3).await);
        assert_eq!(read_all(&first, 0, 1 << 20).await, acknowledged);
        drop(committer);
        drop((first, second));
        assert_eq!(replayed(dir.path(), "t-0").await, acknowledged);
    });
}
