//! Transactions through the log's public API: the last stable offset stops at the oldest open
//! transaction, reads report the aborted transactions of what they return, markers from fenced
//! producers or coordinators are refused, and all of it survives a clean restart, a crash (the
//! segments' `.txnindex` files and the producer snapshot), a truncation, retention and
//! compaction (which removes aborted records and never cleans past the last stable offset).

mod common;

use std::path::Path;

use bytes::BytesMut;
use common::*;
use engine::batch::{build, encode_transaction_marker, BatchHeader, TransactionMarker};
use engine::{AbortedTransaction, LogConfig, LogError, PartitionLog};

async fn open(dir: &Path, config: LogConfig) -> PartitionLog {
    PartitionLog::open(dir, config, system_clock())
        .await
        .unwrap()
}

/// A transactional batch of `records` records of `producer_id`, values naming it and `tag`,
/// each with its own key (or `key` for all, for compaction).
fn transactional_batch(
    producer_id: i64,
    sequence: i32,
    records: usize,
    key: Option<&str>,
    tag: &str,
) -> BytesMut {
    let records: Vec<build::TestRecord> = (0..records)
        .map(|index| build::TestRecord {
            key: Some(
                key.map_or_else(|| format!("{tag}-{index}"), str::to_owned)
                    .into_bytes(),
            ),
            value: format!("{tag}-{index}").into_bytes(),
            timestamp_ms: 1_000,
        })
        .collect();
    let fields =
        build::ProducerFields::idempotent(producer_id, 0, sequence).with_transaction_bits(false);
    BytesMut::from(&build::batch_from(&records, fields)[..])
}

/// Appends a marker as the broker writes one (a stored batch); returns its offset.
async fn end_transaction(
    log: &PartitionLog,
    producer_id: i64,
    coordinator_epoch: i32,
    committed: bool,
) -> Result<u64, LogError> {
    write_marker(
        log,
        TransactionMarker {
            producer_id,
            producer_epoch: 0,
            coordinator_epoch,
            committed,
        },
    )
    .await
}

async fn write_marker(log: &PartitionLog, marker: TransactionMarker) -> Result<u64, LogError> {
    let bytes = BytesMut::from(&encode_transaction_marker(&marker, 1_000)[..]);
    let batch = engine::batch::CheckedBatch::stored(bytes, usize::MAX).unwrap();
    Ok(log.append_checked(batch, 0).await?.base_offset)
}

/// Every batch below `offset_end`, from `offset`, as (producer id, first offset, is control).
async fn batches_below(log: &PartitionLog, offset: u64, offset_end: u64) -> Vec<(i64, i64, bool)> {
    let slice = log.read(offset, 1 << 20, offset_end).await.unwrap();
    split_batches(&slice.data.to_vec().unwrap())
        .iter()
        .map(|bytes| {
            let header = BatchHeader::parse(bytes).unwrap();
            (header.producer_id, header.base_offset, header.is_control())
        })
        .collect()
}

/// Every batch in the log, as (producer id, first offset, is control).
async fn all_batches(log: &PartitionLog) -> Vec<(i64, i64, bool)> {
    read_all(log, log.log_start_offset(), 1 << 20)
        .await
        .iter()
        .map(|bytes| {
            let header = BatchHeader::parse(bytes).unwrap();
            (header.producer_id, header.base_offset, header.is_control())
        })
        .collect()
}

fn aborted(
    producer_id: i64,
    first_offset: u64,
    last_offset: u64,
    stable: u64,
) -> AbortedTransaction {
    AbortedTransaction {
        producer_id,
        first_offset,
        last_offset,
        last_stable_offset: stable,
    }
}

/// Producer 7 aborts [0, 2] at 4 while 8's transaction (from 3) stays open; 7's next
/// transaction [5, 6] commits at 7; 8 aborts at 8. Returns the log end (9).
async fn write_history(log: &PartitionLog) -> u64 {
    log.append(transactional_batch(7, 0, 3, None, "a"), 0)
        .await
        .unwrap(); // 0..=2
    log.append(transactional_batch(8, 0, 1, None, "b"), 0)
        .await
        .unwrap(); // 3
    assert_eq!(log.last_stable_offset(), 0);
    assert_eq!(end_transaction(log, 7, 0, false).await.unwrap(), 4);
    log.append(transactional_batch(7, 3, 2, None, "c"), 0)
        .await
        .unwrap(); // 5..=6
    assert_eq!(end_transaction(log, 7, 0, true).await.unwrap(), 7);
    log.sync().await.unwrap();
    assert_eq!(log.last_stable_offset(), 3, "8's transaction is still open");
    assert_eq!(end_transaction(log, 8, 0, false).await.unwrap(), 8);
    log.sync().await.unwrap();
    log.log_end_offset()
}

fn history_aborted() -> Vec<AbortedTransaction> {
    vec![aborted(7, 0, 4, 3), aborted(8, 3, 8, 9)]
}

#[test]
fn read_committed_stops_at_the_oldest_open_transaction_and_lists_the_aborted_ones() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), small_config()).await;
        log.append(transactional_batch(7, 0, 2, None, "a"), 0)
            .await
            .unwrap(); // 0..=1
        log.append(tagged_batch(1, 1, 10, 0), 0).await.unwrap(); // 2
        log.sync().await.unwrap();
        assert_eq!(log.high_watermark(), 3);
        assert_eq!(
            log.last_stable_offset(),
            0,
            "the open transaction starts at 0"
        );
        assert!(batches_below(&log, 0, log.last_stable_offset())
            .await
            .is_empty());
        assert_eq!(log.open_transactions(), vec![(7, 0)]);
        // A read_committed waiter wakes when the marker makes the offsets stable.
        let waiting = log.wait_for_stable_offset_above(0);
        assert_eq!(end_transaction(&log, 7, 0, false).await.unwrap(), 3);
        log.sync().await.unwrap();
        waiting.await;
        assert_eq!(log.last_stable_offset(), 4);
        assert_eq!(
            batches_below(&log, 0, 4).await,
            vec![(7, 0, false), (-1, 2, false), (7, 3, true)]
        );
        assert_eq!(log.aborted_transactions(0, 4), vec![aborted(7, 0, 3, 4)]);
        assert_eq!(log.aborted_transactions(2, 3), vec![aborted(7, 0, 3, 4)]);
        assert!(
            log.aborted_transactions(4, 10).is_empty(),
            "after the marker"
        );
    });
}

#[test]
fn markers_from_a_fenced_coordinator_are_refused_and_leave_the_log_unchanged() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), small_config()).await;
        log.append(transactional_batch(7, 0, 1, None, "a"), 0)
            .await
            .unwrap();
        end_transaction(&log, 7, 3, true).await.unwrap();
        log.append(transactional_batch(7, 1, 1, None, "b"), 0)
            .await
            .unwrap();
        let end = log.log_end_offset();
        assert!(matches!(
            end_transaction(&log, 7, 2, false).await,
            Err(LogError::TransactionCoordinatorFenced {
                current: 3,
                received: 2,
                ..
            })
        ));
        assert_eq!(log.log_end_offset(), end);
        assert_eq!(log.open_transactions(), vec![(7, 2)]);
        // A plain batch of a producer in a transaction is refused too.
        assert!(matches!(
            log.append(producer_batch(7, 0, 2, 1), 0).await,
            Err(LogError::InvalidTransactionState { .. })
        ));
    });
}

#[test]
fn transactions_survive_a_clean_restart_a_crash_and_a_truncation() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        // Segments of a few batches: the history spans several, its index entries too.
        let config = LogConfig {
            segment_bytes_max: 160,
            ..small_config()
        };
        let log = open(dir.path(), config.clone()).await;
        let end = write_history(&log).await;
        assert!(log.segment_count() > 2, "the history spans segments");
        assert_eq!(log.aborted_transactions(0, end), history_aborted());
        // 9's transaction stays open across the restarts.
        log.append(transactional_batch(9, 0, 1, None, "d"), 0)
            .await
            .unwrap();
        log.sync().await.unwrap();
        let end = log.log_end_offset();
        log.close().await.unwrap();

        let log = open(dir.path(), config.clone()).await;
        assert_eq!(
            log.aborted_transactions(0, end),
            history_aborted(),
            "clean restart"
        );
        assert_eq!(log.last_stable_offset(), 9);
        // A crash (no close): the sealed segments' indexes and the scan of the last one.
        log.append(transactional_batch(10, 0, 1, None, "e"), 0)
            .await
            .unwrap();
        end_transaction(&log, 10, 0, false).await.unwrap();
        log.sync().await.unwrap();
        let end = log.log_end_offset();
        drop(log);
        let log = open(dir.path(), config.clone()).await;
        let mut expected = history_aborted();
        expected.push(aborted(10, 10, 11, 9));
        assert_eq!(log.aborted_transactions(0, end), expected, "after a crash");
        assert_eq!(log.open_transactions(), vec![(9, 9)]);
        // A cut that removes 10's marker opens its transaction again; one that removes 7's
        // second transaction's marker (7) reopens it from 5 and drops 8's abort entry.
        log.truncate(11).await.unwrap();
        assert_eq!(log.open_transactions(), vec![(9, 9), (10, 10)]);
        assert_eq!(log.aborted_transactions(0, 20), history_aborted());
        log.truncate(7).await.unwrap();
        assert_eq!(log.open_transactions(), vec![(8, 3), (7, 5)]);
        assert_eq!(log.last_stable_offset(), 3, "8's transaction is open again");
        assert_eq!(log.aborted_transactions(0, 20), vec![aborted(7, 0, 4, 3)]);
        // What replaces the cut is indexed afresh, and a crash keeps it.
        assert_eq!(end_transaction(&log, 7, 0, false).await.unwrap(), 7);
        log.sync().await.unwrap();
        drop(log);
        let log = open(dir.path(), config).await;
        assert_eq!(
            log.aborted_transactions(0, 20),
            vec![aborted(7, 0, 4, 3), aborted(7, 5, 7, 3)]
        );
        assert_eq!(log.last_stable_offset(), 3);
        log.close().await.unwrap();
    });
}

#[test]
fn compaction_removes_aborted_records_and_keeps_open_transactions_whole() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes_max: 160,
            ..small_config()
        };
        let log = open(dir.path(), config.clone()).await;
        // Key k: committed "old" (0), then an aborted "new" (2) that must not shadow it.
        log.append(transactional_batch(7, 0, 1, Some("k"), "old"), 0)
            .await
            .unwrap(); // 0
        end_transaction(&log, 7, 0, true).await.unwrap(); // 1
        log.append(transactional_batch(7, 1, 1, Some("k"), "new"), 0)
            .await
            .unwrap(); // 2
        end_transaction(&log, 7, 0, false).await.unwrap(); // 3
                                                           // An open transaction of 8 at 4: nothing from there on is cleaned.
        log.append(transactional_batch(8, 0, 1, Some("k"), "open"), 0)
            .await
            .unwrap(); // 4
        for tag in 0..6 {
            log.append(tagged_batch(100 + tag, 1, 40, 0), 0)
                .await
                .unwrap();
        }
        log.sync().await.unwrap();
        assert_eq!(log.last_stable_offset(), 4);
        let segments = log.segment_base_offsets();
        assert!(segments.len() > 3, "several segments: {segments:?}");
        log.clean(i64::MAX / 2).await.unwrap();
        let kept = all_batches(&log).await;
        assert!(
            kept.contains(&(7, 0, false)),
            "the committed record stays: {kept:?}"
        );
        assert!(
            !kept.contains(&(7, 2, false)),
            "the aborted record goes: {kept:?}"
        );
        assert!(kept.contains(&(7, 3, true)), "markers stay: {kept:?}");
        assert!(
            kept.contains(&(8, 4, false)),
            "the open transaction stays: {kept:?}"
        );
        assert_eq!(log.aborted_transactions(0, 20), vec![aborted(7, 2, 3, 4)]);
        log.close().await.unwrap();
        let log = open(dir.path(), config).await;
        assert_eq!(
            log.aborted_transactions(0, 20),
            vec![aborted(7, 2, 3, 4)],
            "the cleaned segment's index was written"
        );
        log.close().await.unwrap();
    });
}

#[test]
fn retention_drops_the_entries_of_deleted_segments_and_the_stable_offset_follows_the_start() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes_max: 160,
            ..small_config()
        };
        let log = open(dir.path(), config).await;
        let end = write_history(&log).await;
        // 9's transaction opens at 9 and stays open.
        log.append(transactional_batch(9, 0, 1, None, "d"), 0)
            .await
            .unwrap();
        for tag in 0..4 {
            log.append(tagged_batch(tag, 1, 40, 0), 0).await.unwrap();
        }
        log.sync().await.unwrap();
        assert_eq!(log.last_stable_offset(), end);
        log.delete_up_to(end + 2).await.unwrap();
        assert!(log.log_start_offset() > end);
        assert_eq!(
            log.last_stable_offset(),
            log.log_start_offset(),
            "an open transaction whose start is gone holds back nothing before the start"
        );
        assert!(
            log.aborted_transactions(0, log.log_end_offset()).is_empty(),
            "the entries went with their segments"
        );
        log.close().await.unwrap();
    });
}

/// Kafka's rule for markers under compaction (KIP-534): a marker goes `delete_retention_ms`
/// after no record of its transaction is left, never while one is; an ABORT marker's index
/// entry goes with its data, so no entry outlives its marker.
#[test]
fn compaction_removes_a_marker_once_its_transaction_has_no_data_and_the_horizon_passed() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let retention_ms = 1_000;
        let config = LogConfig {
            segment_bytes_max: 160,
            delete_retention_ms: retention_ms,
            ..small_config()
        };
        let log = open(dir.path(), config.clone()).await;
        log.append(transactional_batch(7, 0, 1, Some("k"), "v1"), 0)
            .await
            .unwrap(); // 0
        assert_eq!(end_transaction(&log, 7, 0, true).await.unwrap(), 1);
        log.append(transactional_batch(7, 1, 1, Some("k"), "aborted"), 0)
            .await
            .unwrap(); // 2
        assert_eq!(end_transaction(&log, 7, 0, false).await.unwrap(), 3);
        log.append(transactional_batch(8, 0, 1, Some("k"), "v2"), 0)
            .await
            .unwrap(); // 4: supersedes 0
        assert_eq!(end_transaction(&log, 8, 0, true).await.unwrap(), 5);
        for tag in 0..6 {
            log.append(tagged_batch(100 + tag, 1, 40, 0), 0)
                .await
                .unwrap();
        }
        log.sync().await.unwrap();
        let control_batches = |batches: Vec<(i64, i64, bool)>| -> Vec<i64> {
            batches
                .into_iter()
                .filter(|&(_, _, control)| control)
                .map(|(_, offset, _)| offset)
                .collect()
        };
        let now_ms = 1_000_000;
        // First cleaning: 0 (superseded) and 2 (aborted) go. Their markers stay: this cleaning
        // met their transactions' records (Kafka's rule), and 3 keeps its index entry.
        log.clean(now_ms).await.unwrap();
        let kept = all_batches(&log).await;
        assert!(!kept.contains(&(7, 0, false)) && !kept.contains(&(7, 2, false)));
        assert!(kept.contains(&(8, 4, false)), "{kept:?}");
        assert_eq!(control_batches(kept), vec![1, 3, 5]);
        assert_eq!(log.aborted_transactions(0, 20), vec![aborted(7, 2, 3, 4)]);
        let horizon_of = |offset: i64, batches: Vec<Vec<u8>>| {
            batches
                .iter()
                .map(|bytes| BatchHeader::parse(bytes).unwrap())
                .find(|header| header.base_offset == offset)
                .and_then(|header| header.delete_horizon_ms())
        };
        assert_eq!(horizon_of(1, read_all(&log, 0, 1 << 20).await), None);
        // Second: 1's and 3's transactions have no data left: stamped with the delete horizon,
        // not removed; 3's entry goes (nothing to skip). 5's record (4) is still there.
        log.clean(now_ms + 1).await.unwrap();
        assert_eq!(control_batches(all_batches(&log).await), vec![1, 3, 5]);
        assert!(log.aborted_transactions(0, 20).is_empty());
        let horizon_ms = now_ms + 1 + retention_ms as i64;
        for offset in [1, 3] {
            let batches = read_all(&log, 0, 1 << 20).await;
            assert_eq!(horizon_of(offset, batches), Some(horizon_ms));
        }
        assert_eq!(horizon_of(5, read_all(&log, 0, 1 << 20).await), None);
        // Before the horizon they stay; at it they go, and 5 stays with its record.
        log.clean(horizon_ms - 1).await.unwrap();
        assert_eq!(control_batches(all_batches(&log).await), vec![1, 3, 5]);
        log.clean(horizon_ms).await.unwrap();
        let kept = all_batches(&log).await;
        assert_eq!(control_batches(kept.clone()), vec![5]);
        assert!(kept.contains(&(8, 4, false)), "{kept:?}");
        log.close().await.unwrap();
        let log = open(dir.path(), config).await;
        assert_eq!(control_batches(all_batches(&log).await), vec![5]);
        assert!(log.aborted_transactions(0, 20).is_empty());
        assert_eq!(log.last_stable_offset(), log.high_watermark());
        log.close().await.unwrap();
    });
}

/// Kafka's `truncateAndReload`: a cut takes back what the cut batches did to the producers, an
/// epoch they raised (by a batch or a marker) included, so a retry of a kept batch is still a
/// duplicate and the producer's next batch is not fenced by an epoch that is gone.
#[test]
fn truncation_rolls_back_the_epochs_and_sequences_the_cut_batches_gave() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path(), small_config()).await;
        log.append(producer_batch(5, 0, 0, 1), 0).await.unwrap(); // 0
        log.append(producer_batch(5, 0, 1, 1), 0).await.unwrap(); // 1
        log.append(transactional_batch(6, 0, 1, None, "t"), 0)
            .await
            .unwrap(); // 2
        log.append(producer_batch(5, 1, 0, 1), 0).await.unwrap(); // 3: a new epoch
                                                                  // The coordinator fences 6 with a bumped epoch: its ABORT marker.
        let marker = TransactionMarker {
            producer_id: 6,
            producer_epoch: 1,
            coordinator_epoch: 0,
            committed: false,
        };
        assert_eq!(write_marker(&log, marker).await.unwrap(), 4);
        log.sync().await.unwrap();
        assert_eq!(log.truncate(3).await.unwrap(), 3);
        // 5 is back at epoch 0: its retry of the batch at 1 is a duplicate.
        let retry = log.append(producer_batch(5, 0, 1, 1), 0).await.unwrap();
        assert!(retry.duplicate, "{retry:?}");
        assert_eq!(retry.base_offset, 1);
        // 6 is back at epoch 0 in its open transaction: its next batch goes in.
        assert_eq!(log.open_transactions(), vec![(6, 2)]);
        let next = log
            .append(transactional_batch(6, 1, 1, None, "u"), 0)
            .await
            .unwrap();
        assert_eq!((next.base_offset, next.duplicate), (3, false));
        log.sync().await.unwrap();
        // And the state survives a crash (the snapshot written at the cut, then the scan).
        drop(log);
        let log = open(dir.path(), small_config()).await;
        let retry = log.append(producer_batch(5, 0, 1, 1), 0).await.unwrap();
        assert_eq!((retry.base_offset, retry.duplicate), (1, true));
        assert_eq!(log.open_transactions(), vec![(6, 2)]);
        log.close().await.unwrap();
    });
}

/// The `.txnindex` files of `dir`, by name, with their sizes.
fn transaction_indexes(dir: &Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut found: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "txnindex"))
        .map(|path| {
            let size = std::fs::metadata(&path).unwrap().len();
            (path, size)
        })
        .collect();
    found.sort();
    found
}

/// Kafka's recovery of a segment whose indexes are lost: a sealed segment's `.txnindex` that a
/// crash or an operator removed, or that was cut short, is rebuilt from the segment's markers
/// with the transactions' starts from the segments before (here: data and markers in
/// different segments), and written back.
#[test]
fn a_lost_or_cut_transaction_index_is_rebuilt_by_recovery() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes_max: 160,
            ..small_config()
        };
        let log = open(dir.path(), config.clone()).await;
        let end = write_history(&log).await;
        for tag in 0..2 {
            log.append(tagged_batch(tag, 1, 40, 0), 0).await.unwrap();
        }
        log.sync().await.unwrap();
        log.close().await.unwrap();
        let with_entries: Vec<_> = transaction_indexes(dir.path())
            .into_iter()
            .filter(|(_, size)| *size > 0)
            .collect();
        assert_eq!(with_entries.len(), 2, "{with_entries:?}");
        std::fs::remove_file(&with_entries[0].0).unwrap();
        let cut = std::fs::OpenOptions::new()
            .write(true)
            .open(&with_entries[1].0)
            .unwrap();
        cut.set_len(20).unwrap();
        drop(cut);
        let log = open(dir.path(), config.clone()).await;
        assert_eq!(log.aborted_transactions(0, end), history_aborted());
        // Rebuilt on disk: the next open reads them.
        log.close().await.unwrap();
        for (path, size) in &with_entries {
            assert_eq!(
                std::fs::metadata(path).unwrap().len(),
                34,
                "{path:?} {size}"
            );
        }
        // Lost with the segment's other indexes (a crash between a seal's data and its index
        // files): rebuilt too.
        let (first, _) = &with_entries[0];
        for extension in ["txnindex", "index", "timeindex"] {
            std::fs::remove_file(first.with_extension(extension)).unwrap();
        }
        let log = open(dir.path(), config).await;
        assert_eq!(log.aborted_transactions(0, end), history_aborted());
        log.close().await.unwrap();
    });
}

/// A crash in the middle of the cleaner's swap: recovery finishes the swap and rebuilds the
/// swapped segment's `.txnindex` rather than keep the replaced segments' one, whose entry
/// would outlive its marker (removed by the swap) and make a read_committed consumer skip the
/// producer's later, committed transactions.
#[test]
fn a_crash_in_the_cleaners_swap_leaves_no_stale_transaction_index_entry() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let retention_ms = 1_000;
        let config = LogConfig {
            segment_bytes_max: 400,
            delete_retention_ms: retention_ms,
            ..small_config()
        };
        let mut log = open(dir.path(), config.clone()).await;
        log.append(transactional_batch(7, 0, 1, Some("k"), "aborted"), 0)
            .await
            .unwrap(); // 0
        assert_eq!(end_transaction(&log, 7, 0, false).await.unwrap(), 1);
        for tag in 0..8 {
            log.append(tagged_batch(100 + tag, 1, 40, 0), 0)
                .await
                .unwrap();
        }
        log.sync().await.unwrap();
        let now_ms = 1_000_000;
        // The aborted record goes, its marker stays with its entry; the entry is on disk.
        log.clean(now_ms).await.unwrap();
        assert_eq!(log.aborted_transactions(0, 20), vec![aborted(7, 0, 1, 2)]);
        // A crash in each of the next two cleanings (stamp the marker, then remove it), right
        // after the swap's commit point.
        for clean_ms in [now_ms + 1, now_ms + 1 + retention_ms as i64] {
            log.inject_clean_fault(Some(engine::CleanStep::SwapCommitted));
            assert!(log.clean(clean_ms).await.is_err());
            drop(log);
            log = open(dir.path(), config.clone()).await;
            assert!(
                log.aborted_transactions(0, 20).is_empty(),
                "no entry without data to skip"
            );
        }
        assert!(
            !all_batches(&log)
                .await
                .iter()
                .any(|&(_, _, control)| control),
            "the marker went"
        );
        // 7's next transaction commits: nothing tells a consumer to skip it.
        log.append(transactional_batch(7, 1, 1, Some("k"), "committed"), 0)
            .await
            .unwrap();
        end_transaction(&log, 7, 0, true).await.unwrap();
        log.sync().await.unwrap();
        assert!(log
            .aborted_transactions(0, log.last_stable_offset())
            .is_empty());
        log.close().await.unwrap();
    });
}

/// An open transaction whose first batch is segments before the producer snapshot: after a
/// crash or a clean close, with the snapshot as it was written, damaged or lost, the last
/// stable offset comes back at the transaction's start, never past it.
#[test]
fn an_open_transaction_from_an_older_segment_holds_the_stable_offset_after_a_crash() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes_max: 160,
            ..small_config()
        };
        let mut log = open(dir.path(), config.clone()).await;
        log.append(tagged_batch(1, 1, 10, 0), 0).await.unwrap(); // 0
        log.append(transactional_batch(9, 0, 1, None, "open"), 0)
            .await
            .unwrap(); // 1
        for tag in 0..6 {
            log.append(tagged_batch(10 + tag, 1, 40, 0), 0)
                .await
                .unwrap();
        }
        log.sync().await.unwrap();
        assert!(log.segment_base_offsets().len() > 3);
        assert_eq!(log.last_stable_offset(), 1);
        let snapshot = dir.path().join("producer-state");
        for (damage, clean) in [
            ("none", false),
            ("cut", false),
            ("cut", true),
            ("gone", false),
            ("gone", true),
        ] {
            if clean {
                log.close().await.unwrap();
            } else {
                drop(log);
            }
            match damage {
                "cut" => {
                    let bytes = std::fs::read(&snapshot).unwrap();
                    std::fs::write(&snapshot, &bytes[..bytes.len() / 2]).unwrap();
                }
                "gone" => std::fs::remove_file(&snapshot).unwrap(),
                _ => {}
            }
            log = open(dir.path(), config.clone()).await;
            assert_eq!(log.last_stable_offset(), 1, "snapshot damage: {damage}");
            assert_eq!(log.open_transactions(), vec![(9, 1)], "{damage}");
            // A later write in the active segment, so the next crash scans something.
            log.append(tagged_batch(20, 1, 10, 0), 0).await.unwrap();
            log.sync().await.unwrap();
        }
        assert_eq!(
            end_transaction(&log, 9, 0, true).await.unwrap(),
            log.log_end_offset() - 1
        );
        log.sync().await.unwrap();
        assert_eq!(log.last_stable_offset(), log.high_watermark());
        log.close().await.unwrap();
    });
}
