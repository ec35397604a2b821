//! Behaviour of a partition log through its public API: appends, reads, group commit, rolls,
//! retention, deletion, truncation and reopening.

mod common;

use std::rc::Rc;

use bytes::BytesMut;
use common::*;
use engine::batch::{self, BatchError};
use engine::config::CleanupPolicy;
use engine::{LogConfig, LogError, PartitionLog, ReadData};

#[test]
fn appends_get_contiguous_offsets_and_read_back_exactly() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), small_config(), system_clock())
            .await
            .unwrap();
        let mut expected = Vec::new();
        for tag in 0..200u64 {
            let records = 1 + (tag as usize % 5);
            let batch = tagged_batch(tag, records, 100, 1_000);
            let receipt = log.append(batch.clone(), 3).await.unwrap();
            assert_eq!(
                receipt.last_offset - receipt.base_offset + 1,
                records as u64
            );
            expected.push(as_stored(batch, receipt.base_offset, 3));
        }
        log.sync().await.unwrap();
        assert!(log.segment_count() > 3, "16 KiB segments rolled");
        assert_eq!(read_all(&log, 0, 1).await, expected, "one batch per read");
        assert_eq!(read_all(&log, 0, 5000).await, expected, "several per read");
        // A read from inside a batch starts with the batch holding the offset.
        let slice = log.read(2, 1, u64::MAX).await.unwrap();
        let first = split_batches(&slice.data.to_vec().unwrap()).remove(0);
        let header = batch::BatchHeader::parse(&first).unwrap();
        assert!(header.base_offset <= 2 && header.last_offset() >= 2);
        assert_eq!(header.leader_epoch, 3);
    });
}

#[test]
fn reads_respect_the_end_bound_the_byte_limit_and_the_range() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), small_config(), system_clock())
            .await
            .unwrap();
        for tag in 0..10 {
            log.append(tagged_batch(tag, 2, 100, 0), 0).await.unwrap();
        }
        log.sync().await.unwrap();
        // Offsets 0..20, two per batch.
        let slice = log.read(0, 1 << 20, 6).await.unwrap();
        assert_eq!(
            slice.offset_next, 6,
            "batches ending at or past the bound are withheld"
        );
        assert!(matches!(
            log.read(6, 1 << 20, 6).await.unwrap().data,
            ReadData::Empty
        ));
        let slice = log.read(0, 1, u64::MAX).await.unwrap();
        assert_eq!(
            slice.offset_next, 2,
            "an oversized first batch still comes whole"
        );
        assert!(matches!(
            log.read(20, 100, u64::MAX).await.unwrap().data,
            ReadData::Empty
        ));
        assert!(matches!(
            log.read(21, 100, u64::MAX).await,
            Err(LogError::OffsetOutOfRange { offset: 21, .. })
        ));
    });
}

#[test]
fn tail_reads_come_from_memory_and_cold_reads_from_the_file() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            tail_cache_bytes_max: 2048,
            ..small_config()
        };
        let log = PartitionLog::open(dir.path(), config, system_clock())
            .await
            .unwrap();
        for tag in 0..100 {
            log.append(tagged_batch(tag, 1, 200, 0), 0).await.unwrap();
        }
        log.sync().await.unwrap();
        assert!(log.tail_cache_bytes() <= 2048, "cache bounded once written");
        let tail = log.read(99, 1 << 20, u64::MAX).await.unwrap();
        assert!(matches!(tail.data, ReadData::Memory(_)));
        let cold = log.read(0, 1 << 20, u64::MAX).await.unwrap();
        assert!(
            matches!(cold.data, ReadData::File(_)),
            "sealed data is sent from the file"
        );
    });
}

#[test]
fn a_rejected_batch_leaves_the_log_unchanged() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), small_config(), system_clock())
            .await
            .unwrap();
        log.append_durable(tagged_batch(1, 1, 10, 0), 0)
            .await
            .unwrap();
        let mut corrupt = tagged_batch(2, 1, 10, 0);
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        assert!(matches!(
            log.append(corrupt, 0).await,
            Err(LogError::InvalidBatch(BatchError::CrcMismatch { .. }))
        ));
        let oversized = tagged_batch(3, 1, 70 * 1024, 0);
        assert!(matches!(
            log.append(oversized, 0).await,
            Err(LogError::InvalidBatch(BatchError::TooLarge { .. }))
        ));
        assert!(matches!(
            log.append(BytesMut::from(&[0u8; 30][..]), 0).await,
            Err(LogError::InvalidBatch(BatchError::TooShort { .. }))
        ));
        assert_eq!(log.log_end_offset(), 1);
        let receipt = log
            .append_durable(tagged_batch(4, 1, 10, 0), 0)
            .await
            .unwrap();
        assert_eq!(receipt.base_offset, 1, "the next good batch follows on");
        assert_eq!(read_all(&log, 0, 1 << 20).await.len(), 2);
    });
}

#[test]
fn concurrent_durable_appends_share_flushes_and_syncs() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes_max: 1 << 30,
            ..small_config()
        };
        let log = Rc::new(
            PartitionLog::open(dir.path(), config, system_clock())
                .await
                .unwrap(),
        );
        let appenders = 64;
        let rounds = 20;
        let tasks: Vec<_> = (0..appenders)
            .map(|appender| {
                let log = log.clone();
                glommio::spawn_local(async move {
                    for round in 0..rounds {
                        let batch = tagged_batch(appender * 1000 + round, 1, 1024, 0);
                        log.append_durable(batch, 0).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await;
        }
        let stats = log.stats();
        let appends = appenders * rounds;
        assert_eq!(log.durable_end_offset(), appends);
        assert!(
            stats.syncs * 8 <= appends,
            "{appends} durable appends took {} syncs: group commit should share them",
            stats.syncs
        );
        assert!(
            stats.syncs <= stats.flushes,
            "never more syncs ({}) than flushes ({})",
            stats.syncs,
            stats.flushes
        );
    });
}

#[test]
fn acks_one_style_appends_are_written_without_a_sync() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), small_config(), system_clock())
            .await
            .unwrap();
        let receipt = log.append(tagged_batch(1, 1, 10, 0), 0).await.unwrap();
        log.wait_written(&receipt).await.unwrap();
        assert_eq!(log.written_end_offset(), 1);
        assert_eq!(log.stats().syncs, 0, "nobody asked for durability");
        log.wait_durable(&receipt).await.unwrap();
        assert_eq!(log.stats().syncs, 1, "a later durability wait syncs");
        assert_eq!(log.durable_end_offset(), 1);
        log.append_durable(tagged_batch(2, 1, 10, 0), 0)
            .await
            .unwrap();
        assert_eq!(
            log.stats().syncs,
            2,
            "a lone durable append costs exactly one sync"
        );
    });
}

#[test]
fn segments_roll_by_age() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let (clock, dyn_clock) = manual_clock(1_000_000);
        let config = LogConfig {
            segment_bytes_max: 1 << 20,
            segment_age_ms_max: Some(60_000),
            ..small_config()
        };
        let log = PartitionLog::open(dir.path(), config, dyn_clock)
            .await
            .unwrap();
        log.append(tagged_batch(1, 1, 10, 0), 0).await.unwrap();
        clock.advance_ms(59_999);
        log.append(tagged_batch(2, 1, 10, 0), 0).await.unwrap();
        assert_eq!(log.segment_count(), 1);
        clock.advance_ms(1);
        log.append(tagged_batch(3, 1, 10, 0), 0).await.unwrap();
        assert_eq!(log.segment_base_offsets(), vec![0, 2]);
        log.sync().await.unwrap();
        assert_eq!(read_all(&log, 0, 1 << 20).await.len(), 3);
    });
}

#[test]
fn retention_by_size_and_by_time_deletes_whole_old_segments_only() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let (clock, dyn_clock) = manual_clock(10_000_000);
        let config = LogConfig {
            retention_bytes_max: Some(40 * 1024),
            retention_age_ms_max: Some(3_600_000),
            ..small_config()
        };
        let log = PartitionLog::open(dir.path(), config, dyn_clock)
            .await
            .unwrap();
        for tag in 0..400u64 {
            // Record timestamps: the first 200 batches an hour and more in the past.
            let timestamp_ms = if tag < 200 { 5_000_000 } else { 9_999_000 };
            log.append(tagged_batch(tag, 1, 300, timestamp_ms), 0)
                .await
                .unwrap();
        }
        log.sync().await.unwrap();
        let size_before = log.size_bytes();
        let deleted = log.enforce_retention().await.unwrap();
        assert!(deleted > 0);
        assert!(log.size_bytes() < size_before);
        assert!(
            log.size_bytes() <= 40 * 1024 + 16 * 1024,
            "within one segment of the bound"
        );
        let start = log.log_start_offset();
        assert_eq!(
            start,
            log.segment_base_offsets()[0],
            "start moved to a segment base"
        );
        assert!(start >= 200, "every expired batch is gone");
        assert!(matches!(
            log.read(start - 1, 100, u64::MAX).await,
            Err(LogError::OffsetOutOfRange { .. })
        ));
        assert_eq!(
            read_all(&log, start, 1 << 20).await.len() as u64,
            400 - start
        );
        // Nothing left to delete: the active segment is never removed.
        clock.advance_ms(100_000_000);
        log.enforce_retention().await.unwrap();
        assert_eq!(log.segment_count(), 1);
        assert_eq!(log.log_start_offset(), log.segment_base_offsets()[0]);
        assert!(dir.path().read_dir().unwrap().count() >= 1);
    });
}

#[test]
fn a_changed_config_applies_to_the_open_log_from_the_next_use_on() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let (clock, dyn_clock) = manual_clock(10_000_000);
        let log = PartitionLog::open(dir.path(), small_config(), dyn_clock)
            .await
            .unwrap();
        log.append(tagged_batch(0, 1, 2_000, 1_000), 0)
            .await
            .unwrap();

        // The largest batch: from the next append on.
        log.set_config(LogConfig {
            batch_bytes_max: 1_000,
            ..small_config()
        })
        .unwrap();
        assert_eq!(log.config().batch_bytes_max, 1_000);
        assert!(matches!(
            log.append(tagged_batch(1, 1, 2_000, 1_000), 0).await,
            Err(LogError::InvalidBatch(BatchError::TooLarge { .. }))
        ));
        // A configuration that does not hold together is refused and changes nothing.
        assert!(matches!(
            log.set_config(LogConfig {
                segment_bytes_max: 10,
                ..small_config()
            }),
            Err(LogError::InvalidConfig(_))
        ));
        assert_eq!(log.config().batch_bytes_max, 1_000);

        // The segment size: from the next roll on (small_config's 16 KiB would hold them all).
        log.set_config(LogConfig {
            segment_bytes_max: 1_024,
            ..small_config()
        })
        .unwrap();
        for tag in 2..6 {
            log.append(tagged_batch(tag, 1, 2_000, 1_000), 0)
                .await
                .unwrap();
        }
        log.sync().await.unwrap();
        assert_eq!(log.segment_count(), 5, "a segment per batch");

        // Retention: only while the cleanup policy includes deletion.
        clock.advance_ms(1_000_000);
        let expiring = |cleanup_policy| LogConfig {
            segment_bytes_max: 1_024,
            retention_age_ms_max: Some(1),
            cleanup_policy,
            ..small_config()
        };
        log.set_config(expiring(CleanupPolicy::Compact)).unwrap();
        assert_eq!(log.enforce_retention().await.unwrap(), 0, "compact only");
        log.set_config(expiring(CleanupPolicy::CompactAndDelete))
            .unwrap();
        assert_eq!(log.enforce_retention().await.unwrap(), 4);
        assert_eq!(log.log_start_offset(), 4);
        log.close().await.unwrap();
    });
}

#[test]
#[should_panic(expected = "an open log's memory bounds do not change")]
fn an_open_log_refuses_new_memory_bounds() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), small_config(), system_clock())
            .await
            .unwrap();
        let _ = log.set_config(LogConfig {
            tail_cache_bytes_max: 1 << 20,
            ..small_config()
        });
    });
}

#[test]
fn delete_up_to_moves_the_start_and_survives_a_reopen() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), small_config(), system_clock())
            .await
            .unwrap();
        for tag in 0..300 {
            log.append(tagged_batch(tag, 1, 100, 0), 0).await.unwrap();
        }
        log.delete_up_to(150).await.unwrap();
        assert_eq!(log.log_start_offset(), 150);
        assert!(log.segment_base_offsets()[0] <= 150);
        assert!(
            log.segment_base_offsets()[0] > 0,
            "wholly deleted segments are gone"
        );
        assert!(matches!(
            log.read(149, 100, u64::MAX).await,
            Err(LogError::OffsetOutOfRange { .. })
        ));
        assert!(matches!(
            log.delete_up_to(301).await,
            Err(LogError::OffsetOutOfRange { .. })
        ));
        log.close().await.unwrap();
        let log = PartitionLog::open(dir.path(), small_config(), system_clock())
            .await
            .unwrap();
        assert_eq!(log.log_start_offset(), 150);
        assert_eq!(read_all(&log, 150, 1 << 20).await.len(), 150);
    });
}

/// A log in `dir` (small segments, so several) with 300 batches of 2 records appended and
/// synced, and the batches as stored.
async fn open_with_300_batches(dir: &std::path::Path) -> (PartitionLog, Vec<Vec<u8>>) {
    let log = PartitionLog::open(dir, small_config(), system_clock())
        .await
        .unwrap();
    let mut stored = Vec::new();
    for tag in 0..300u64 {
        let batch = tagged_batch(tag, 2, 60, 0);
        let receipt = log.append(batch.clone(), 1).await.unwrap();
        stored.push(as_stored(batch, receipt.base_offset, 1));
    }
    log.sync().await.unwrap();
    (log, stored)
}

#[test]
fn truncation_cuts_at_a_batch_and_appends_continue_from_there() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let (log, mut stored) = open_with_300_batches(dir.path()).await;
        let segments_before = log.segment_count();
        // Offset 401 is inside the batch at 400: the cut goes to 400.
        assert_eq!(log.truncate(401).await.unwrap(), 400);
        assert_eq!(log.log_end_offset(), 400);
        assert!(log.segment_count() < segments_before);
        stored.truncate(200);
        assert_eq!(read_all(&log, 0, 4096).await, stored);
        // A segment's first batch: the whole segment goes.
        let second_segment = log.segment_base_offsets()[1];
        assert_eq!(log.truncate(second_segment).await.unwrap(), second_segment);
        stored.truncate(second_segment as usize / 2);
        assert_eq!(log.segment_count(), 1);
        for tag in 1000..1100u64 {
            let batch = tagged_batch(tag, 2, 60, 0);
            let receipt = log.append(batch.clone(), 2).await.unwrap();
            stored.push(as_stored(batch, receipt.base_offset, 2));
        }
        log.sync().await.unwrap();
        assert_eq!(read_all(&log, 0, 4096).await, stored);
        log.close().await.unwrap();
        let log = PartitionLog::open(dir.path(), small_config(), system_clock())
            .await
            .unwrap();
        assert_eq!(
            read_all(&log, 0, 4096).await,
            stored,
            "and the same after a reopen"
        );
    });
}

#[test]
fn truncation_to_zero_empties_the_log() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), small_config(), system_clock())
            .await
            .unwrap();
        for tag in 0..100 {
            log.append(tagged_batch(tag, 1, 200, 0), 0).await.unwrap();
        }
        assert_eq!(log.truncate(0).await.unwrap(), 0);
        assert_eq!(log.size_bytes(), 0);
        let receipt = log
            .append_durable(tagged_batch(7, 1, 10, 0), 0)
            .await
            .unwrap();
        assert_eq!(receipt.base_offset, 0);
        assert_eq!(read_all(&log, 0, 1 << 20).await.len(), 1);
    });
}

#[test]
fn timestamps_find_the_first_record_at_or_after() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), small_config(), system_clock())
            .await
            .unwrap();
        // Batch n has records at 10_000 + 10n, 10_000 + 10n + 1, 10_000 + 10n + 2.
        for tag in 0..300i64 {
            log.append(tagged_batch(tag as u64, 3, 50, 10_000 + 10 * tag), 0)
                .await
                .unwrap();
        }
        for &(timestamp_ms, expected) in &[
            (0, Some(0)),
            (10_000, Some(0)),
            (10_001, Some(1)),
            (10_003, Some(3)),
            (10_012, Some(5)),
            (12_990, Some(897)),
            (12_991, Some(898)),
            (12_992, Some(899)),
            (12_993, None),
        ] {
            let found = log.offset_for_timestamp(timestamp_ms).await.unwrap();
            assert_eq!(
                found.map(|found| found.offset),
                expected,
                "timestamp {timestamp_ms} before the flush"
            );
            if let Some(found) = found {
                // The record's own timestamp comes back with it.
                let offset = found.offset as i64;
                assert_eq!(found.timestamp_ms, 10_000 + 10 * (offset / 3) + offset % 3);
            }
        }
        let offset_at = |found: Option<engine::OffsetAtTime>| found.map(|found| found.offset);
        log.sync().await.unwrap();
        assert_eq!(
            offset_at(log.offset_for_timestamp(11_500).await.unwrap()),
            Some(450)
        );
        log.close().await.unwrap();
        let log = PartitionLog::open(dir.path(), small_config(), system_clock())
            .await
            .unwrap();
        assert_eq!(
            offset_at(log.offset_for_timestamp(11_500).await.unwrap()),
            Some(450)
        );
        assert_eq!(
            offset_at(log.offset_for_timestamp(12_992).await.unwrap()),
            Some(899)
        );
    });
}

#[test]
fn a_clean_close_and_reopen_keeps_everything_and_rescans_nothing_twice() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), small_config(), system_clock())
            .await
            .unwrap();
        let mut stored = Vec::new();
        for tag in 0..150u64 {
            let batch = tagged_batch(tag, 3, 40, 0);
            let receipt = log.append(batch.clone(), 0).await.unwrap();
            stored.push(as_stored(batch, receipt.base_offset, 0));
        }
        log.close().await.unwrap();
        assert!(dir.path().join("clean-shutdown").exists());
        let log = PartitionLog::open(dir.path(), small_config(), system_clock())
            .await
            .unwrap();
        assert_eq!(log.log_end_offset(), 450);
        assert_eq!(read_all(&log, 0, 3000).await, stored);
        assert!(
            dir.path().join("clean-shutdown").exists(),
            "the marker stays while the files are as the close left them"
        );
        let receipt = log
            .append_durable(tagged_batch(9, 1, 1, 0), 0)
            .await
            .unwrap();
        assert_eq!(receipt.base_offset, 450);
        assert!(
            !dir.path().join("clean-shutdown").exists(),
            "the first change removes the marker, before it reaches the files"
        );
        // A crash now: the next open must not trust the last segment.
        drop(log);
        let log = PartitionLog::open(dir.path(), small_config(), system_clock())
            .await
            .unwrap();
        assert_eq!(log.log_end_offset(), 451);
    });
}

#[test]
fn a_log_unchanged_since_a_clean_open_closes_without_touching_its_files() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), small_config(), system_clock())
            .await
            .unwrap();
        for tag in 0..20u64 {
            log.append(tagged_batch(tag, 3, 40, 0), 0).await.unwrap();
        }
        log.close().await.unwrap();
        let listing = |dir: &std::path::Path| {
            let mut files: Vec<(String, std::time::SystemTime, u64)> = std::fs::read_dir(dir)
                .unwrap()
                .map(|entry| {
                    let entry = entry.unwrap();
                    let metadata = entry.metadata().unwrap();
                    (
                        entry.file_name().into_string().unwrap(),
                        metadata.modified().unwrap(),
                        metadata.len(),
                    )
                })
                .collect();
            files.sort();
            files
        };
        let closed = listing(dir.path());
        let log = PartitionLog::open(dir.path(), small_config(), system_clock())
            .await
            .unwrap();
        assert_eq!(log.log_end_offset(), 60);
        log.read(0, 1 << 20, 60).await.unwrap();
        log.close().await.unwrap();
        assert_eq!(
            listing(dir.path()),
            closed,
            "opened, read and closed: every file as it was"
        );
    });
}

#[test]
fn an_invalid_configuration_is_refused_with_its_reason() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            unflushed_bytes_max: 1,
            ..LogConfig::default()
        };
        match PartitionLog::open(dir.path(), config, system_clock()).await {
            Err(LogError::InvalidConfig(reason)) => assert!(reason.contains("unflushed")),
            other => panic!("expected InvalidConfig, got {:?}", other.map(|_| ())),
        }
    });
}

/// A cut back into a sealed segment makes it the active one again, with the index files its
/// seal wrote, which describe batches now cut off: a close of the (small) active segment
/// removes them, so the next open scans the segment rather than trust them, even when the log
/// was reopened since the seal (its open saw no index files of its active segment then).
#[test]
fn a_close_after_a_cut_into_a_sealed_segment_removes_its_index_files() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let (log, mut stored) = open_with_300_batches(dir.path()).await;
        let second_segment = log.segment_base_offsets()[1];
        let indexes = ["index", "timeindex"]
            .map(|extension| dir.path().join(format!("{:020}.{extension}", 0)));
        assert!(
            indexes.iter().all(|path| path.exists()),
            "the first segment's seal wrote them"
        );
        // Reopened: this log never wrote them, its open saw none for its active segment.
        log.close().await.unwrap();
        let log = PartitionLog::open(dir.path(), small_config(), system_clock())
            .await
            .unwrap();
        assert_eq!(log.truncate(second_segment).await.unwrap(), second_segment);
        assert_eq!(log.segment_count(), 1);
        stored.truncate(second_segment as usize / 2);
        log.close().await.unwrap();
        for path in &indexes {
            assert!(!path.exists(), "{} left by the close", path.display());
        }
        let log = PartitionLog::open(dir.path(), small_config(), system_clock())
            .await
            .unwrap();
        assert_eq!(read_all(&log, 0, 4096).await, stored);
        log.close().await.unwrap();
    });
}
