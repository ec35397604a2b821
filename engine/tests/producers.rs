//! Idempotent producers through the log's public API: a retried batch is answered with its
//! original offsets and not written twice, a sequence gap or a fenced epoch is refused with
//! nothing written, and all of it survives a clean restart, a crash and a truncation.

mod common;

use std::path::Path;

use bytes::BytesMut;
use common::*;
use engine::batch::{build, BatchError, BatchHeader, CheckedBatch};
use engine::{LogConfig, LogError, PartitionLog};

async fn open(dir: &Path, config: LogConfig) -> PartitionLog {
    PartitionLog::open(dir, config, system_clock())
        .await
        .unwrap()
}

/// Appends a batch that must be accepted as new; returns its base offset.
async fn append_new(log: &PartitionLog, batch: BytesMut) -> u64 {
    let receipt = log.append(batch, 0).await.unwrap();
    assert!(
        !receipt.duplicate,
        "expected a new batch at {}",
        receipt.base_offset
    );
    receipt.base_offset
}

/// Appends a retry that must be recognised: checks it gets `[base, last]` back, that the log
/// did not grow, and that its waits complete.
async fn append_retry(log: &PartitionLog, batch: BytesMut, base: u64, last: u64) {
    let end = log.log_end_offset();
    let receipt = log.append(batch, 0).await.unwrap();
    assert!(
        receipt.duplicate,
        "expected a duplicate of [{base}, {last}]"
    );
    assert_eq!((receipt.base_offset, receipt.last_offset), (base, last));
    assert_eq!(log.log_end_offset(), end, "a duplicate appends nothing");
    log.wait_written(&receipt).await.unwrap();
    log.wait_durable(&receipt).await.unwrap();
    assert!(log.durable_end_offset() > last, "the original is durable");
}

#[test]
fn a_retry_gets_the_original_offsets_and_the_log_does_not_grow() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), small_config()).await;
        // Retried at once, while the original is still queued for the flusher.
        let first = log.append(producer_batch(7, 0, 0, 3), 0).await.unwrap();
        append_retry(&log, producer_batch(7, 0, 0, 3), 0, 2).await;
        assert!(!first.duplicate);
        assert_eq!(append_new(&log, producer_batch(7, 0, 3, 2)).await, 3);
        assert_eq!(append_new(&log, tagged_batch(1, 1, 10, 0)).await, 5);
        assert_eq!(append_new(&log, producer_batch(8, 0, 0, 1)).await, 6);
        log.sync().await.unwrap();
        // Retried after the original is durable, and not only the latest batch.
        append_retry(&log, producer_batch(7, 0, 0, 3), 0, 2).await;
        append_retry(&log, producer_batch(7, 0, 3, 2), 3, 4).await;
        append_retry(&log, producer_batch(8, 0, 0, 1), 6, 6).await;
        let stored = read_all(&log, 0, 1 << 20).await;
        assert_eq!(stored.len(), 4, "each batch once");
        let sequences: Vec<(i64, i32)> = stored
            .iter()
            .map(|b| {
                let header = BatchHeader::parse(b).unwrap();
                (header.producer_id, header.base_sequence)
            })
            .collect();
        assert_eq!(sequences, vec![(7, 0), (7, 3), (-1, -1), (8, 0)]);
        // The producer continues where it left off.
        assert_eq!(append_new(&log, producer_batch(7, 0, 5, 1)).await, 7);
    });
}

#[test]
fn a_sequence_gap_is_refused_and_nothing_is_written() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), small_config()).await;
        append_new(&log, producer_batch(3, 2, 0, 2)).await;
        let result = log.append(producer_batch(3, 2, 5, 1), 0).await;
        assert_eq!(
            result.unwrap_err(),
            LogError::OutOfOrderSequence {
                producer_id: 3,
                expected: 2,
                received: 5
            }
        );
        let message = LogError::OutOfOrderSequence {
            producer_id: 3,
            expected: 2,
            received: 5,
        }
        .to_string();
        assert!(message.contains("expected sequence 2") && message.contains("received 5"));
        log.sync().await.unwrap();
        assert_eq!(log.log_end_offset(), 2);
        assert_eq!(read_all(&log, 0, 1 << 20).await.len(), 1);
        assert_eq!(append_new(&log, producer_batch(3, 2, 2, 1)).await, 2);
    });
}

#[test]
fn an_old_epoch_is_refused_and_a_new_epoch_starts_at_zero() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), small_config()).await;
        append_new(&log, producer_batch(5, 1, 0, 1)).await;
        append_new(&log, producer_batch(5, 1, 1, 1)).await;
        assert!(matches!(
            log.append(producer_batch(5, 2, 2, 1), 0).await,
            Err(LogError::OutOfOrderSequence {
                expected: 0,
                received: 2,
                ..
            })
        ));
        assert_eq!(append_new(&log, producer_batch(5, 2, 0, 1)).await, 2);
        for (sequence, _) in [(2, "a zombie's next batch"), (0, "a zombie's retry")] {
            assert_eq!(
                log.append(producer_batch(5, 1, sequence, 1), 0)
                    .await
                    .unwrap_err(),
                LogError::InvalidProducerEpoch {
                    producer_id: 5,
                    current: 2,
                    received: 1
                }
            );
        }
        assert_eq!(log.log_end_offset(), 3);
        append_retry(&log, producer_batch(5, 2, 0, 1), 2, 2).await;
    });
}

#[test]
fn retries_are_recognised_after_a_clean_restart() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), small_config()).await;
        for sequence in 0..4 {
            append_new(&log, producer_batch(1, 0, sequence * 2, 2)).await;
        }
        log.close().await.unwrap();
        assert!(dir.path().join("producer-state").exists());
        let log = open(dir.path(), small_config()).await;
        append_retry(&log, producer_batch(1, 0, 6, 2), 6, 7).await;
        assert!(matches!(
            log.append(producer_batch(1, 0, 9, 1), 0).await,
            Err(LogError::OutOfOrderSequence { expected: 8, .. })
        ));
        assert_eq!(append_new(&log, producer_batch(1, 0, 8, 1)).await, 8);
    });
}

#[test]
fn retries_are_recognised_after_a_crash() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), small_config()).await;
        append_new(&log, producer_batch(1, 0, 0, 1)).await;
        log.append_durable(producer_batch(2, 0, 0, 3), 0)
            .await
            .unwrap();
        drop(log);
        let log = open(dir.path(), small_config()).await;
        append_retry(&log, producer_batch(1, 0, 0, 1), 0, 0).await;
        append_retry(&log, producer_batch(2, 0, 0, 3), 1, 3).await;
        assert_eq!(append_new(&log, producer_batch(2, 0, 3, 1)).await, 4);
    });
}

#[test]
fn a_crash_after_a_clean_restart_continues_the_snapshot_with_the_scanned_tail() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes_max: 1 << 20,
            ..small_config()
        };
        let log = open(dir.path(), config.clone()).await;
        append_new(&log, producer_batch(1, 0, 0, 1)).await;
        log.close().await.unwrap();
        let log = open(dir.path(), config.clone()).await;
        append_new(&log, producer_batch(2, 0, 0, 1)).await;
        log.append_durable(producer_batch(1, 0, 1, 1), 0)
            .await
            .unwrap();
        drop(log);
        let log = open(dir.path(), config).await;
        append_retry(&log, producer_batch(1, 0, 0, 1), 0, 0).await;
        append_retry(&log, producer_batch(1, 0, 1, 1), 2, 2).await;
        append_retry(&log, producer_batch(2, 0, 0, 1), 1, 1).await;
    });
}

#[test]
fn a_crash_remembers_producers_from_sealed_segments() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), small_config()).await;
        append_new(&log, producer_batch(1, 0, 0, 1)).await;
        append_new(&log, producer_batch(1, 0, 1, 1)).await;
        // Enough other traffic to roll several 16 KiB segments.
        for tag in 0..100 {
            append_new(&log, tagged_batch(tag, 2, 300, 0)).await;
        }
        log.sync().await.unwrap();
        assert!(log.segment_count() > 2);
        drop(log);
        let log = open(dir.path(), small_config()).await;
        append_retry(&log, producer_batch(1, 0, 1, 1), 1, 1).await;
        assert!(matches!(
            log.append(producer_batch(1, 0, 3, 1), 0).await,
            Err(LogError::OutOfOrderSequence { expected: 2, .. })
        ));
    });
}

#[test]
fn a_damaged_snapshot_is_ignored_and_the_active_segment_rebuilds_the_state() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes_max: 1 << 20,
            ..small_config()
        };
        let log = open(dir.path(), config.clone()).await;
        for sequence in 0..3 {
            append_new(&log, producer_batch(4, 0, sequence, 1)).await;
        }
        log.close().await.unwrap();
        let snapshot = dir.path().join("producer-state");
        let mut bytes = std::fs::read(&snapshot).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&snapshot, &bytes).unwrap();
        let log = open(dir.path(), config).await;
        assert!(!snapshot.exists(), "the damaged snapshot is deleted");
        append_retry(&log, producer_batch(4, 0, 2, 1), 2, 2).await;
        assert_eq!(append_new(&log, producer_batch(4, 0, 3, 1)).await, 3);
    });
}

#[test]
fn truncation_forgets_the_batches_it_removes() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), small_config()).await;
        for sequence in 0..4 {
            append_new(&log, producer_batch(1, 0, sequence, 1)).await;
        }
        append_new(&log, producer_batch(2, 0, 0, 1)).await;
        log.close().await.unwrap();
        let log = open(dir.path(), small_config()).await;
        assert_eq!(log.truncate(2).await.unwrap(), 2);
        // The snapshot that described the truncated batches was replaced by one of the table
        // as the cut left it (the retries below, after a crash too, show what it holds).
        assert!(dir.path().join("producer-state").exists());
        append_retry(&log, producer_batch(1, 0, 1, 1), 1, 1).await;
        // Sequence 2 is gone with its batch: the retry is new data at the new end.
        assert_eq!(append_new(&log, producer_batch(1, 0, 2, 1)).await, 2);
        // Producer 2 lost its only batch and is unknown again: any sequence goes.
        assert_eq!(append_new(&log, producer_batch(2, 0, 7, 1)).await, 3);
        log.sync().await.unwrap();
        drop(log);
        // A crash after the truncation rebuilds the same state.
        let log = open(dir.path(), small_config()).await;
        append_retry(&log, producer_batch(1, 0, 2, 1), 2, 2).await;
        append_retry(&log, producer_batch(2, 0, 7, 1), 3, 3).await;
    });
}

#[test]
fn batches_without_sequence_state_are_appended_as_they_come() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), small_config()).await;
        let plain = tagged_batch(1, 1, 10, 0);
        assert_eq!(append_new(&log, plain.clone()).await, 0);
        assert_eq!(
            append_new(&log, plain).await,
            1,
            "no producer id: no dedupe"
        );
        let record = build::TestRecord {
            key: None,
            value: b"marker".to_vec(),
            timestamp_ms: 0,
        };
        // Control batches (transaction markers) are the broker's to write, never a producer's.
        let control = build::ProducerFields::idempotent(9, 0, -1).with_transaction_bits(true);
        let control = BytesMut::from(&build::batch_from(&[record], control)[..]);
        assert!(matches!(
            log.append(control.clone(), 0).await,
            Err(LogError::InvalidBatch(BatchError::ControlBatch))
        ));
        let control = CheckedBatch::stored(control, usize::MAX).unwrap();
        for base_offset in [2, 3] {
            let receipt = log.append_checked(control.clone(), 0).await.unwrap();
            assert_eq!(
                (receipt.base_offset, receipt.duplicate),
                (base_offset, false)
            );
        }
        assert!(matches!(
            log.append(producer_batch(9, 0, -3, 1), 0).await,
            Err(LogError::InvalidBatch(BatchError::InvalidSequence { .. }))
        ));
        assert_eq!(log.producer_count(), 0);
        log.close().await.unwrap();
        let log = open(dir.path(), small_config()).await;
        assert_eq!(log.log_end_offset(), 4);
    });
}

#[test]
fn the_number_of_producers_remembered_is_bounded() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            producers_max: 3,
            ..small_config()
        };
        let log = open(dir.path(), config.clone()).await;
        for producer_id in 0..5 {
            append_new(&log, producer_batch(producer_id, 0, 0, 1)).await;
        }
        assert_eq!(log.producer_count(), 3);
        // Producer 0 was evicted: its retry is taken for new data, as for any unknown producer.
        append_new(&log, producer_batch(0, 0, 0, 1)).await;
        append_retry(&log, producer_batch(4, 0, 0, 1), 4, 4).await;
        log.close().await.unwrap();
        let log = open(dir.path(), config).await;
        assert_eq!(log.producer_count(), 3);
    });
}
