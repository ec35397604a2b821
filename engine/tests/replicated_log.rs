//! What a partition log offers replication: the leader epochs of its offsets (kept across
//! restarts, crashes and truncations), appends of another replica's batches with their offsets
//! and epochs kept (gaps included), and a high-water mark replication sets.

mod common;

use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use common::*;
use engine::batch::{BatchError, CheckedBatch};
use engine::{EpochRun, LogConfig, LogError, PartitionLog};

fn runs(pairs: &[(i32, u64)]) -> Vec<EpochRun> {
    pairs
        .iter()
        .map(|&(epoch, start_offset)| EpochRun {
            epoch,
            start_offset,
        })
        .collect()
}

#[test]
fn epochs_are_recorded_kept_across_a_restart_and_never_go_back() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), small_config(), system_clock())
            .await
            .unwrap();
        assert_eq!(log.epochs().runs(), &[]);
        for (tag, epoch) in [(0, 1), (1, 1), (2, 3), (3, 3), (4, 4)] {
            log.append(tagged_batch(tag, 2, 10, 0), epoch)
                .await
                .unwrap();
        }
        assert_eq!(log.epochs().runs(), runs(&[(1, 0), (3, 4), (4, 8)]));
        assert_eq!(log.epochs().epoch_at(5), Some(3));
        assert_eq!(log.epochs().end_of_epoch(2, 10), Some((1, 4)));
        let refused = log.append(tagged_batch(9, 1, 10, 0), 3).await;
        assert!(
            matches!(
                refused,
                Err(LogError::StaleLeaderEpoch {
                    epoch: 3,
                    latest: 4
                })
            ),
            "{refused:?}"
        );
        assert_eq!(log.log_end_offset(), 10, "a refused batch is not written");
        log.close().await.unwrap();

        let log = PartitionLog::open(dir.path(), small_config(), system_clock())
            .await
            .unwrap();
        assert_eq!(log.epochs().runs(), runs(&[(1, 0), (3, 4), (4, 8)]));
        // A new leader overrules the uncommitted tail from offset 6 (the second batch of epoch 3
        // and epoch 4's), and the log continues there with epoch 5.
        assert_eq!(log.truncate(6).await.unwrap(), 6);
        assert_eq!(log.epochs().runs(), runs(&[(1, 0), (3, 4)]));
        log.append(tagged_batch(5, 1, 10, 0), 5).await.unwrap();
        log.close().await.unwrap();
        let log = PartitionLog::open(dir.path(), small_config(), system_clock())
            .await
            .unwrap();
        assert_eq!(log.epochs().runs(), runs(&[(1, 0), (3, 4), (5, 6)]));
        log.close().await.unwrap();
    });
}

#[test]
fn an_epoch_whose_batches_a_crash_lost_is_not_claimed_for_later_batches() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), small_config(), system_clock())
            .await
            .unwrap();
        log.append_durable(tagged_batch(0, 2, 10, 0), 1)
            .await
            .unwrap();
        // Epoch 7's first batch: the epochs file names it before the append returns, but the
        // batch is only queued, and the log is dropped (a crash) with no await in between, so
        // the flusher never writes it.
        log.append(tagged_batch(1, 2, 10, 0), 7).await.unwrap();
        assert_eq!(log.log_end_offset(), 4);
        drop(log);

        let log = PartitionLog::open(dir.path(), small_config(), system_clock())
            .await
            .unwrap();
        assert_eq!(log.log_end_offset(), 2, "the unwritten batch is gone");
        assert_eq!(log.epochs().runs(), runs(&[(1, 0)]), "and so is epoch 7");
        // Offset 2 is now written in epoch 1 (copied from a leader whose log has epoch 1 there);
        // after a restart the epochs must say 1, not the lost 7.
        log.append_durable(tagged_batch(2, 1, 10, 0), 1)
            .await
            .unwrap();
        drop(log);
        let log = PartitionLog::open(dir.path(), small_config(), system_clock())
            .await
            .unwrap();
        assert_eq!(log.epochs().runs(), runs(&[(1, 0)]));
        log.close().await.unwrap();
    });
}

/// Every new partition of a single broker starts in epoch 0, which an absent epochs file
/// already says: its first append must not write and sync a file (twice, with its directory)
/// before it is taken. With 4 096 new partitions those writes held the first append of each
/// for seconds (issue 16). The file appears with the second epoch, and one that exists is
/// kept true when a truncation takes the log back to epoch 0 alone.
#[test]
fn new_partitions_of_epoch_0_write_no_epochs_file_and_keep_their_epochs_across_a_crash() {
    const PARTITIONS: usize = 64;
    run(async {
        let dirs: Vec<_> = (0..PARTITIONS)
            .map(|_| tempfile::tempdir().unwrap())
            .collect();
        let epochs_files = || {
            dirs.iter()
                .filter(|dir| dir.path().join("leader-epochs").exists())
                .count()
        };
        let mut logs = Vec::new();
        for dir in &dirs {
            let log = PartitionLog::open(dir.path(), small_config(), system_clock())
                .await
                .unwrap();
            log.append_durable(tagged_batch(0, 2, 10, 0), 0)
                .await
                .unwrap();
            logs.push(log);
        }
        assert_eq!(epochs_files(), 0, "epochs files written for epoch 0");
        drop(logs); // a crash

        let mut logs = Vec::new();
        for dir in &dirs {
            let log = PartitionLog::open(dir.path(), small_config(), system_clock())
                .await
                .unwrap();
            assert_eq!(log.log_end_offset(), 2);
            assert_eq!(log.epochs().runs(), runs(&[(0, 0)]));
            logs.push(log);
        }
        // A second epoch is written down before its batch, and survives a crash.
        logs[0]
            .append_durable(tagged_batch(1, 2, 10, 0), 3)
            .await
            .unwrap();
        assert_eq!(epochs_files(), 1);
        drop(logs);
        let log = PartitionLog::open(dirs[0].path(), small_config(), system_clock())
            .await
            .unwrap();
        assert_eq!(log.epochs().runs(), runs(&[(0, 0), (3, 2)]));
        // Cut back to epoch 0 alone: the file exists, so it is rewritten, not left naming
        // epoch 3 for the epoch-0 batches appended next.
        assert_eq!(log.truncate(2).await.unwrap(), 2);
        log.append_durable(tagged_batch(2, 2, 10, 0), 0)
            .await
            .unwrap();
        drop(log);
        let log = PartitionLog::open(dirs[0].path(), small_config(), system_clock())
            .await
            .unwrap();
        assert_eq!(log.log_end_offset(), 4);
        assert_eq!(log.epochs().runs(), runs(&[(0, 0)]));
        assert_eq!(log.epochs().epoch_at(3), Some(0));
        log.close().await.unwrap();
    });
}

#[test]
fn a_log_from_before_epochs_were_kept_reads_as_epoch_0() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), small_config(), system_clock())
            .await
            .unwrap();
        for tag in 0..3 {
            log.append(tagged_batch(tag, 1, 10, 0), 0).await.unwrap();
        }
        log.close().await.unwrap();
        // Only epoch 0 from the start: nothing was written, as before epochs were kept.
        assert!(!dir.path().join("leader-epochs").exists());
        let log = PartitionLog::open(dir.path(), small_config(), system_clock())
            .await
            .unwrap();
        assert_eq!(log.epochs().runs(), runs(&[(0, 0)]));
        log.append(tagged_batch(3, 1, 10, 0), 2).await.unwrap();
        assert_eq!(log.epochs().runs(), runs(&[(0, 0), (2, 3)]));
        log.close().await.unwrap();
    });
}

#[test]
fn a_follower_copies_its_leaders_batches_exactly_gaps_and_epochs_included() {
    run(async {
        let leader_dir = tempfile::tempdir().unwrap();
        let follower_dir = tempfile::tempdir().unwrap();
        let (leader, stored) = leader_log(leader_dir.path(), small_config(), 40, |tag| {
            1 + (tag / 15) as i32
        })
        .await;
        let follower = PartitionLog::open(follower_dir.path(), small_config(), system_clock())
            .await
            .unwrap();
        // The first half as the leader has it; then a gap (as the leader's cleaner leaves one):
        // the batch after the gap keeps its offset.
        let half = stored.len() / 2;
        for bytes in &stored[..half] {
            follower
                .append_replicated(self::stored(bytes))
                .await
                .unwrap();
        }
        let below = follower
            .append_replicated(self::stored(&stored[half - 1]))
            .await;
        assert!(
            matches!(below, Err(LogError::BelowLogEnd { .. })),
            "{below:?}"
        );
        let mut corrupt = BytesMut::from(&stored[half][..]);
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        assert!(matches!(
            CheckedBatch::stored(corrupt, usize::MAX),
            Err(BatchError::CrcMismatch { .. })
        ));
        for bytes in &stored[half + 1..] {
            follower
                .append_replicated(self::stored(bytes))
                .await
                .unwrap();
        }
        let mut expected = stored.clone();
        expected.remove(half);
        assert_eq!(follower.log_end_offset(), leader.log_end_offset());
        assert_eq!(follower.epochs(), leader.epochs());
        follower.sync().await.unwrap();
        assert_eq!(read_all(&follower, 0, 1 << 20).await, expected);
        // A crash (no clean close): recovery keeps the gap and everything after it.
        drop(follower);
        let follower = PartitionLog::open(follower_dir.path(), small_config(), system_clock())
            .await
            .unwrap();
        assert_eq!(read_all(&follower, 0, 1 << 20).await, expected);
        assert_eq!(follower.epochs(), leader.epochs());
        follower.close().await.unwrap();
        leader.close().await.unwrap();
    });
}

#[test]
fn a_follower_copies_a_gap_while_its_tail_cache_holds_the_batches_before_it() {
    run(async {
        let leader_dir = tempfile::tempdir().unwrap();
        let follower_dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            tail_cache_bytes_max: 1 << 20,
            ..small_config()
        };
        let (leader, mut kept) = leader_log(leader_dir.path(), config.clone(), 10, |_| 1).await;
        // The leader's cleaner removed a whole batch: the follower copies the rest, gap kept.
        kept.remove(4);
        let follower = PartitionLog::open(follower_dir.path(), config, system_clock())
            .await
            .unwrap();
        for bytes in &kept {
            follower.append_replicated(stored(bytes)).await.unwrap();
        }
        assert_eq!(read_all(&follower, 0, 1 << 20).await, kept, "from memory");
        follower.sync().await.unwrap();
        assert!(follower.tail_cache_bytes() > 0);
        follower.close().await.unwrap();
        leader.close().await.unwrap();
    });
}

#[test]
fn readers_see_a_replicated_log_up_to_the_high_watermark_replication_sets() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let log = Rc::new(
            PartitionLog::open(dir.path(), small_config(), system_clock())
                .await
                .unwrap(),
        );
        for tag in 0..4 {
            log.append(tagged_batch(tag, 2, 10, 0), 1).await.unwrap();
        }
        log.sync().await.unwrap();
        assert_eq!(log.high_watermark(), 8, "unreplicated: the written end");
        log.set_replicated_high_watermark(0);
        assert_eq!(log.high_watermark(), 0);
        let waiter = glommio::spawn_local({
            let log = log.clone();
            async move { log.wait_for_high_watermark_above(3).await }
        });
        log.set_replicated_high_watermark(2);
        assert_eq!(log.high_watermark(), 2);
        log.set_replicated_high_watermark(1);
        assert_eq!(log.high_watermark(), 2, "it never moves back by itself");
        log.set_replicated_high_watermark(6);
        glommio::timer::timeout(Duration::from_secs(10), async {
            waiter.await;
            Ok(())
        })
        .await
        .expect("the waiting reader is woken");
        log.set_replicated_high_watermark(100);
        assert_eq!(log.high_watermark(), 8, "never above the log");
        log.truncate(4).await.unwrap();
        assert_eq!(
            log.high_watermark(),
            4,
            "a truncation takes it back with the log"
        );
        let log = Rc::into_inner(log).unwrap();
        log.close().await.unwrap();
    });
}

#[test]
fn version_0_offsets_never_pass_the_replicated_high_watermark() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), small_config(), system_clock())
            .await
            .unwrap();
        // One segment (16 KiB holds them all) with records stamped 1 000 to 4 001.
        for tag in 0..4 {
            let timestamp_ms = 1_000 * (tag as i64 + 1);
            log.append(tagged_batch(tag, 2, 10, timestamp_ms), 1)
                .await
                .unwrap();
        }
        log.sync().await.unwrap();
        let now_ms = 1_000_000;
        assert_eq!(log.offsets_before(-1, now_ms, 10), vec![8, 0]);
        assert_eq!(log.offsets_before(-1, now_ms, 1), vec![8]);
        assert_eq!(log.offsets_before(-2, now_ms, 10), vec![0]);
        assert_eq!(log.offsets_before(-1, now_ms, 0), Vec::<u64>::new());
        // The segment was last written at 4 001 (its newest record); the log end is now.
        assert_eq!(log.offsets_before(4_001, now_ms, 10), vec![0]);
        assert_eq!(log.offsets_before(4_000, now_ms, 10), Vec::<u64>::new());
        assert_eq!(log.offsets_before(now_ms, now_ms, 10), vec![8, 0]);
        // A consumer is never told of offsets replication has not committed.
        log.set_replicated_high_watermark(3);
        assert_eq!(log.offsets_before(-1, now_ms, 10), vec![3, 0]);
        assert_eq!(log.offsets_before(-1, now_ms, 1), vec![3]);
        log.close().await.unwrap();
    });
}

#[test]
fn a_leader_recognises_a_producers_retry_before_appending_it() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), small_config(), system_clock())
            .await
            .unwrap();
        let first = producer_batch(7, 0, 0, 3);
        let header = engine::batch::validate(&first, usize::MAX).unwrap();
        assert!(log.check_duplicate(&header, None).unwrap().is_none());
        log.append(first.clone(), 1).await.unwrap();
        let retry = log
            .check_duplicate(&header, None)
            .unwrap()
            .expect("a retry");
        assert_eq!((retry.base_offset, retry.last_offset), (0, 2));
        assert!(retry.duplicate);
        let gap = producer_batch(7, 0, 10, 1);
        let header = engine::batch::validate(&gap, usize::MAX).unwrap();
        assert!(matches!(
            log.check_duplicate(&header, None),
            Err(LogError::OutOfOrderSequence { .. })
        ));
        log.close().await.unwrap();
    });
}

#[test]
fn a_follower_told_to_start_over_keeps_nothing_and_knows_the_epoch_before_its_start() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), small_config(), system_clock())
            .await
            .unwrap();
        for tag in 0..5 {
            log.append(tagged_batch(tag, 2, 10, 0), 1).await.unwrap();
        }
        log.reset_to(100, 4).await.unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (100, 100));
        assert_eq!(log.epochs().runs(), runs(&[(4, 99)]));
        assert!(
            log.read(0, 1 << 20, u64::MAX).await.is_err(),
            "nothing below 100"
        );
        let mut copied = stored(&tagged_batch(9, 2, 10, 0));
        copied.assign_offset_and_epoch(100, 5);
        log.append_replicated(copied).await.unwrap();
        log.close().await.unwrap();
        let log = PartitionLog::open(dir.path(), small_config(), system_clock())
            .await
            .unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (100, 102));
        assert_eq!(log.epochs().runs(), runs(&[(4, 99), (5, 100)]));
        log.close().await.unwrap();
    });
}

#[test]
fn a_follower_copies_a_batch_over_a_lowered_batch_limit_and_refuses_one_it_cannot_hold() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        // The topic's max.message.bytes was lowered after the leader took a 100 KiB batch: the
        // follower must still copy it, or it could never follow its leader again.
        let config = engine::LogConfig {
            batch_bytes_max: 1024,
            ..small_config()
        };
        let unflushed_bytes_max = config.unflushed_bytes_max;
        let log = PartitionLog::open(dir.path(), config, system_clock())
            .await
            .unwrap();
        let large = tagged_batch(1, 1, 100 << 10, 0);
        assert!(matches!(
            log.append(large.clone(), 1).await,
            Err(LogError::InvalidBatch(BatchError::TooLarge { .. }))
        ));
        let mut copied = stored(&large);
        copied.assign_offset_and_epoch(0, 1);
        log.append_replicated(copied).await.unwrap();
        assert_eq!(log.log_end_offset(), 1);
        // Beyond what the log holds unwritten it would wait for room forever: refused at once.
        let mut too_large = stored(&tagged_batch(2, 1, unflushed_bytes_max, 0));
        too_large.assign_offset_and_epoch(1, 1);
        let refused = log.append_replicated(too_large).await;
        assert!(
            matches!(
                refused,
                Err(LogError::InvalidBatch(BatchError::TooLarge { limit_bytes, .. }))
                    if limit_bytes == unflushed_bytes_max
            ),
            "{refused:?}"
        );
        assert_eq!(log.log_end_offset(), 1, "nothing of it was placed");
        log.close().await.unwrap();
    });
}
