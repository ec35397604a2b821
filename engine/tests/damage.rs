//! Damage in the middle of a log (a flipped byte in a sealed segment, a missing segment file):
//! reopening keeps every batch outside the damaged range, refuses reads of the damaged range
//! with `LogError::Damaged`, reports it, and goes on taking appends; the damage is found again
//! at every open until an operator repairs the log.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use engine::batch::BatchHeader;
use engine::{LogConfig, LogError, PartitionLog};

/// The issue's scenario: 1 MiB segments, 20 000 records in batches of 10 (five segments).
const RECORDS: u64 = 20_000;
const RECORDS_PER_BATCH: usize = 10;
const VALUE_BYTES: usize = 200;

fn issue_config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 1 << 20,
        ..small_config()
    }
}

/// Appends the scenario's batches durably and closes the log cleanly. Returns each batch as
/// stored.
async fn write_and_close(dir: &Path, config: LogConfig) -> Vec<Vec<u8>> {
    let log = PartitionLog::open(dir, config, system_clock())
        .await
        .unwrap();
    let mut stored = Vec::new();
    for tag in 0..RECORDS / RECORDS_PER_BATCH as u64 {
        let batch = tagged_batch(tag, RECORDS_PER_BATCH, VALUE_BYTES, 1_000 + tag as i64);
        let receipt = log.append_durable(batch.clone(), 3).await.unwrap();
        stored.push(as_stored(batch, receipt.base_offset, 3));
    }
    log.close().await.unwrap();
    stored
}

/// The issue's scenario on disk: the log written and closed cleanly, then one byte 100 bytes
/// before the end of its second segment flipped (inside a record of its last batch, not in a
/// batch header). Returns the stored batches, the segment files and the damaged batch's index.
async fn flipped_near_the_end_of_the_second_segment(
    dir: &Path,
) -> (Vec<Vec<u8>>, Vec<PathBuf>, usize) {
    let stored = write_and_close(dir, issue_config()).await;
    let logs = segment_logs(dir);
    assert_eq!(logs.len(), 5, "the scenario spans five segments");
    let flipped_at = std::fs::metadata(&logs[1]).unwrap().len() - 100;
    flip_byte(&logs[1], flipped_at);
    let damaged = batch_at_byte(&stored, base_offset_of(&logs[1]), flipped_at);
    (stored, logs, damaged)
}

fn segment_logs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

fn base_offset_of(path: &Path) -> u64 {
    path.file_stem().unwrap().to_str().unwrap().parse().unwrap()
}

/// Flips one byte of `path` at `position`.
fn flip_byte(path: &Path, position: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[position as usize] ^= 0x5a;
    std::fs::write(path, &bytes).unwrap();
}

/// The stored batch that holds byte `position` of the segment starting at `base_offset`.
fn batch_at_byte(stored: &[Vec<u8>], base_offset: u64, position: u64) -> usize {
    let first = stored
        .iter()
        .position(|b| BatchHeader::parse(b).unwrap().base_offset as u64 == base_offset)
        .unwrap();
    let mut start = 0u64;
    for (index, batch) in stored.iter().enumerate().skip(first) {
        if position < start + batch.len() as u64 {
            return index;
        }
        start += batch.len() as u64;
    }
    panic!("byte {position} is past the segment's batches");
}

fn offsets_of(batch: &[u8]) -> (u64, u64) {
    let header = BatchHeader::parse(batch).unwrap();
    (header.base_offset as u64, header.last_offset() as u64 + 1)
}

/// Every batch readable from `from`, stopping at a damaged range: the batches and the error.
/// (Also stops at a gap that runs to the log end, which reads as nothing.)
async fn read_until_damaged(log: &PartitionLog, from: u64) -> (Vec<Vec<u8>>, Option<LogError>) {
    let mut out = Vec::new();
    let mut offset = from;
    while offset < log.log_end_offset() {
        match log.read(offset, 64 << 10, u64::MAX).await {
            Ok(slice) if matches!(slice.data, engine::ReadData::Empty) => break,
            Ok(slice) => {
                let bytes = slice.data.to_vec().unwrap();
                out.extend(split_batches(&bytes));
                assert!(slice.offset_next > offset, "a read moves forward");
                offset = slice.offset_next;
            }
            Err(error) => return (out, Some(error)),
        }
    }
    (out, None)
}

/// Reads the log from `stored[first]` on: every batch before `refused` (batch indexes into
/// `stored`) comes back, then the read of `refused` is refused with exactly their offsets, and
/// every batch after them comes back with nothing refused.
async fn assert_only_refused(
    log: &PartitionLog,
    stored: &[Vec<u8>],
    first: usize,
    refused: std::ops::Range<usize>,
) {
    let (start, end) = (
        offsets_of(&stored[refused.start]).0,
        offsets_of(&stored[refused.end - 1]).1,
    );
    let (before, error) = read_until_damaged(log, offsets_of(&stored[first]).0).await;
    assert!(
        before == stored[first..refused.start],
        "every batch before the damage"
    );
    match error {
        Some(LogError::Damaged {
            start_offset,
            end_offset,
            ..
        }) => assert_eq!((start_offset, end_offset), (start, end)),
        other => panic!("a read of the damaged range is refused, not {other:?}"),
    }
    let (after, error) = read_until_damaged(log, end).await;
    assert!(
        error.is_none(),
        "nothing after the damaged range is refused"
    );
    assert!(
        after == stored[refused.end..],
        "every batch after the damage"
    );
}

/// The batch in the middle of the segment file `log`: its index in `stored`, and where it
/// starts in the file.
fn batch_in_the_middle(stored: &[Vec<u8>], log: &Path) -> (usize, u64) {
    let base = base_offset_of(log);
    let middle = std::fs::metadata(log).unwrap().len() / 2;
    let damaged = batch_at_byte(stored, base, middle);
    let first_in_segment = stored.iter().position(|b| offsets_of(b).0 == base).unwrap();
    let start = stored[first_in_segment..damaged]
        .iter()
        .map(|b| b.len() as u64)
        .sum();
    (damaged, start)
}

#[test]
fn a_flipped_byte_near_the_end_of_a_sealed_segment_loses_only_its_batch() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let (stored, logs, damaged) = flipped_near_the_end_of_the_second_segment(dir.path()).await;
        // As after a crash.
        std::fs::remove_file(dir.path().join("clean-shutdown")).unwrap();
        let (damaged_start, damaged_end) = offsets_of(&stored[damaged]);

        let log = PartitionLog::open(dir.path(), issue_config(), system_clock())
            .await
            .unwrap();
        assert_eq!(
            log.segment_count(),
            5,
            "no segment after the damage is dropped"
        );
        assert_eq!(
            log.log_end_offset(),
            RECORDS,
            "the log end stays where it was"
        );

        assert_only_refused(&log, &stored, 0, damaged..damaged + 1).await;
        let ranges = log.damaged_ranges();
        assert_eq!(ranges.len(), 1, "{ranges:?}");
        assert_eq!(ranges[0].segment_base_offset, base_offset_of(&logs[1]));
        assert_eq!(log.damaged_offsets(), damaged_end - damaged_start);

        let receipt = log
            .append_durable(tagged_batch(99_999, 2, 5, 0), 3)
            .await
            .unwrap();
        assert_eq!(receipt.base_offset, RECORDS, "appends go on at the log end");
        log.close().await.unwrap();

        // A clean close does not make the damage go away: the next open finds it again.
        let log = PartitionLog::open(dir.path(), issue_config(), system_clock())
            .await
            .unwrap();
        assert_eq!(log.damaged_ranges().len(), 1);
        assert!(matches!(
            log.read(damaged_start, 1 << 20, u64::MAX).await,
            Err(LogError::Damaged { .. })
        ));
        log.close().await.unwrap();
    });
}

#[test]
fn a_missing_segment_file_is_damage_and_the_segments_after_it_stay() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let stored = write_and_close(dir.path(), issue_config()).await;
        let logs = segment_logs(dir.path());
        std::fs::remove_file(&logs[2]).unwrap();
        std::fs::remove_file(dir.path().join("clean-shutdown")).unwrap();
        let (lost_from, lost_to) = (base_offset_of(&logs[2]), base_offset_of(&logs[3]));

        let log = PartitionLog::open(dir.path(), issue_config(), system_clock())
            .await
            .unwrap();
        assert_eq!(
            log.segment_count(),
            4,
            "only the missing segment is missing"
        );
        let ranges = log.damaged_ranges();
        assert_eq!(ranges.len(), 1, "{ranges:?}");
        assert_eq!(
            (
                ranges[0].start_offset,
                ranges[0].end_offset,
                ranges[0].length_bytes
            ),
            (lost_from, lost_to, 0)
        );
        let lost = |b: &Vec<u8>| (lost_from..lost_to).contains(&offsets_of(b).0);
        let first_lost = stored.iter().position(lost).unwrap();
        let after_lost = first_lost + stored.iter().filter(|b| lost(b)).count();
        assert_only_refused(&log, &stored, 0, first_lost..after_lost).await;
        log.close().await.unwrap();
    });
}

#[test]
fn a_damaged_length_field_is_stepped_over_to_the_next_valid_batch() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let stored = write_and_close(dir.path(), issue_config()).await;
        let logs = segment_logs(dir.path());
        // The batch in the middle of the third segment: its length field's top byte.
        let (damaged, batch_start) = batch_in_the_middle(&stored, &logs[2]);
        flip_byte(&logs[2], batch_start + 8);
        std::fs::remove_file(dir.path().join("clean-shutdown")).unwrap();
        // The third segment's index is gone too: the open scans it in full.
        std::fs::remove_file(logs[2].with_extension("index")).unwrap();

        let log = PartitionLog::open(dir.path(), issue_config(), system_clock())
            .await
            .unwrap();
        let ranges = log.damaged_ranges();
        assert_eq!(ranges.len(), 1, "{ranges:?}");
        assert_eq!(
            (ranges[0].start_offset, ranges[0].end_offset),
            offsets_of(&stored[damaged])
        );
        assert_eq!(ranges[0].position, batch_start);
        assert_only_refused(&log, &stored, 0, damaged..damaged + 1).await;
        log.close().await.unwrap();
    });
}

#[test]
fn damage_a_read_meets_is_recorded_refused_and_found_again_at_the_next_open() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let stored = write_and_close(dir.path(), issue_config()).await;
        let logs = segment_logs(dir.path());
        // A record in the middle of a sealed segment: after a clean close only the batches
        // after a segment's last index entry are checked at open, so this one is not.
        let base = base_offset_of(&logs[1]);
        let middle = std::fs::metadata(&logs[1]).unwrap().len() / 2;
        flip_byte(&logs[1], middle);
        let damaged = batch_at_byte(&stored, base, middle);
        let (damaged_start, damaged_end) = offsets_of(&stored[damaged]);

        let log = PartitionLog::open(dir.path(), issue_config(), system_clock())
            .await
            .unwrap();
        assert!(log.damaged_ranges().is_empty(), "not looked at when opened");
        // A follower's read checks every batch's CRC: the good ones before the damaged batch
        // come back, the read starting at it is refused.
        let before = log
            .read_verified(damaged_start - 20, 1 << 20, u64::MAX)
            .await
            .unwrap();
        let returned = split_batches(&before);
        assert_eq!(offsets_of(returned.last().unwrap()).1, damaged_start);
        match log.read_verified(damaged_start, 1 << 20, u64::MAX).await {
            Err(LogError::Damaged {
                start_offset,
                end_offset,
                ..
            }) => assert_eq!((start_offset, end_offset), (damaged_start, damaged_end)),
            other => panic!("the damaged batch is refused, not {other:?}"),
        }
        assert_eq!(log.damage_found(), 1);
        assert!(
            matches!(
                log.read(damaged_start + 3, 1 << 20, u64::MAX).await,
                Err(LogError::Damaged { .. })
            ),
            "every read of the range is refused from now on"
        );
        assert_only_refused(&log, &stored, 0, damaged..damaged + 1).await;
        // A search by time steps over the damaged batch.
        let first_after_ms = 1_000 + (damaged as i64 + 1) + RECORDS_PER_BATCH as i64;
        let found = log
            .offset_for_timestamp(first_after_ms)
            .await
            .unwrap()
            .unwrap();
        assert!(found.offset >= damaged_end, "{found:?}");
        log.close().await.unwrap();

        let log = PartitionLog::open(dir.path(), issue_config(), system_clock())
            .await
            .unwrap();
        let ranges = log.damaged_ranges();
        assert_eq!(ranges.len(), 1, "found again when opened: {ranges:?}");
        assert_eq!(
            (ranges[0].start_offset, ranges[0].end_offset),
            (damaged_start, damaged_end)
        );
        log.close().await.unwrap();
    });
}

#[test]
fn a_header_damaged_where_no_open_looks_is_found_by_a_read_that_steps_on_it() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let stored = write_and_close(dir.path(), issue_config()).await;
        let logs = segment_logs(dir.path());
        let (damaged, batch_start) = batch_in_the_middle(&stored, &logs[3]);
        let first_in_segment = stored
            .iter()
            .position(|b| offsets_of(b).0 == base_offset_of(&logs[3]))
            .unwrap();
        flip_byte(&logs[3], batch_start + 8);
        let (damaged_start, damaged_end) = offsets_of(&stored[damaged]);

        let log = PartitionLog::open(dir.path(), issue_config(), system_clock())
            .await
            .unwrap();
        // A read walks batch headers from an index entry to the batch it wants (a client's
        // read goes no further; what it sends is checked by the client's CRC check).
        assert!(matches!(
            log.read(damaged_start, 1 << 20, u64::MAX).await,
            Err(LogError::Damaged { start_offset, end_offset, .. })
                if (start_offset, end_offset) == (damaged_start, damaged_end)
        ));
        // Reads around it, recorded now, stop before it and start after it.
        assert_only_refused(&log, &stored, first_in_segment, damaged..damaged + 1).await;
        log.close().await.unwrap();
    });
}

/// One segment of `count` durable batches, each synced and checkpointed as the recovery
/// point (interval 0) or never checkpointed (an interval no test reaches), then a crash.
async fn crashed_after_checkpoints(dir: &Path, count: u64, interval_ms: u64) -> Vec<Vec<u8>> {
    let config = LogConfig {
        recovery_point_interval_ms: interval_ms,
        ..issue_config()
    };
    let log = PartitionLog::open(dir, config, system_clock())
        .await
        .unwrap();
    let mut stored = Vec::new();
    for tag in 0..count {
        let batch = tagged_batch(tag, RECORDS_PER_BATCH, VALUE_BYTES, 1_000 + tag as i64);
        let receipt = log.append_durable(batch.clone(), 3).await.unwrap();
        stored.push(as_stored(batch, receipt.base_offset, 3));
    }
    drop(log);
    stored
}

fn start_of(stored: &[Vec<u8>], index: usize) -> u64 {
    stored[..index].iter().map(|b| b.len() as u64).sum()
}

#[test]
fn after_a_crash_a_bad_batch_below_the_recovery_point_is_damage_and_above_it_a_torn_tail() {
    run(async {
        for (interval_ms, below_checkpoint) in [(0, true), (u64::MAX, false)] {
            let dir = tempfile::tempdir().unwrap();
            let stored = crashed_after_checkpoints(dir.path(), 100, interval_ms).await;
            let log_file = &segment_logs(dir.path())[0];
            flip_byte(log_file, start_of(&stored, 50) + 100);
            let config = LogConfig {
                recovery_point_interval_ms: interval_ms,
                ..issue_config()
            };
            let log = PartitionLog::open(dir.path(), config, system_clock())
                .await
                .unwrap();
            if below_checkpoint {
                // Synced and checkpointed: the batches after it were acknowledged and stay.
                assert_eq!(log.log_end_offset(), 100 * RECORDS_PER_BATCH as u64);
                assert_only_refused(&log, &stored, 0, 50..51).await;
            } else {
                // Past the recovery point a crash may tear a write: cut there, as Kafka does.
                let (before, error) = read_until_damaged(&log, 0).await;
                assert!(before == stored[..50] && error.is_none());
                assert_eq!(log.log_end_offset(), offsets_of(&stored[50]).0);
                assert!(log.damaged_ranges().is_empty());
            }
            log.close().await.unwrap();
        }
    });
}

#[test]
fn a_replica_truncating_at_the_damage_drops_it_and_appends_go_on_there() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let (stored, _, damaged) = flipped_near_the_end_of_the_second_segment(dir.path()).await;
        let (damaged_start, _) = offsets_of(&stored[damaged]);
        let log = PartitionLog::open(dir.path(), issue_config(), system_clock())
            .await
            .unwrap();
        assert_eq!(log.first_damaged_offset(), Some(damaged_start));
        assert_eq!(
            log.truncate(damaged_start + 1).await.unwrap(),
            damaged_start
        );
        assert!(log.damaged_ranges().is_empty());
        assert_eq!(log.log_end_offset(), damaged_start);
        assert_eq!(
            log.damage_found(),
            1,
            "the counter remembers what was found"
        );
        let replacement = as_stored(
            tagged_batch(7, RECORDS_PER_BATCH, VALUE_BYTES, 5),
            damaged_start,
            3,
        );
        log.append_replicated(common::stored(&replacement))
            .await
            .unwrap();
        log.sync().await.unwrap();
        let all = read_all(&log, 0, 1 << 20).await;
        assert_eq!(&all[..damaged], &stored[..damaged]);
        assert_eq!(all[damaged], replacement);
        log.close().await.unwrap();
        let log = PartitionLog::open(dir.path(), issue_config(), system_clock())
            .await
            .unwrap();
        assert!(log.damaged_ranges().is_empty());
        assert_eq!(read_all(&log, 0, 1 << 20).await.len(), damaged + 1);
        log.close().await.unwrap();
    });
}

#[test]
fn repair_drops_the_damaged_range_for_good_and_the_rest_reads_through_the_gap() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let (stored, _, damaged) = flipped_near_the_end_of_the_second_segment(dir.path()).await;

        let dropped = engine::log::repair(dir.path(), issue_config(), system_clock())
            .await
            .unwrap();
        assert_eq!(dropped.len(), 1);
        assert_eq!(
            (dropped[0].start_offset, dropped[0].end_offset),
            offsets_of(&stored[damaged])
        );
        let log = PartitionLog::open(dir.path(), issue_config(), system_clock())
            .await
            .unwrap();
        assert!(log.damaged_ranges().is_empty());
        assert_eq!(log.log_end_offset(), RECORDS);
        let mut expected = stored.clone();
        expected.remove(damaged);
        assert!(read_all(&log, 0, 1 << 20).await == expected);
        log.close().await.unwrap();
        assert!(
            engine::log::repair(dir.path(), issue_config(), system_clock())
                .await
                .unwrap()
                .is_empty(),
            "nothing left to repair"
        );
    });
}

#[test]
fn repair_of_damage_that_runs_to_the_end_of_the_last_segment_keeps_the_log_end() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let stored = crashed_after_checkpoints(dir.path(), 100, 0).await;
        let log_file = &segment_logs(dir.path())[0];
        // Zeros from batch 97 on: nothing valid follows, and all of it was checkpointed.
        let mut bytes = std::fs::read(log_file).unwrap();
        let from = start_of(&stored, 97) as usize;
        bytes[from..].fill(0);
        std::fs::write(log_file, &bytes).unwrap();
        let end = 100 * RECORDS_PER_BATCH as u64;
        let config = LogConfig {
            recovery_point_interval_ms: 0,
            ..issue_config()
        };
        let log = PartitionLog::open(dir.path(), config.clone(), system_clock())
            .await
            .unwrap();
        assert_eq!(
            log.log_end_offset(),
            end,
            "checkpointed offsets are not handed out again"
        );
        let ranges = log.damaged_ranges();
        assert_eq!(
            (ranges[0].start_offset, ranges[0].end_offset),
            (offsets_of(&stored[97]).0, end)
        );
        log.close().await.unwrap();

        engine::log::repair(dir.path(), config.clone(), system_clock())
            .await
            .unwrap();
        let log = PartitionLog::open(dir.path(), config, system_clock())
            .await
            .unwrap();
        assert!(log.damaged_ranges().is_empty());
        assert_eq!(log.log_end_offset(), end);
        let (kept, error) = read_until_damaged(&log, 0).await;
        assert!(error.is_none());
        assert!(kept == stored[..97]);
        let receipt = log
            .append_durable(tagged_batch(1, 1, 1, 0), 3)
            .await
            .unwrap();
        assert_eq!(receipt.base_offset, end);
        // A reader in the dropped range is given the next batch after it.
        let slice = log
            .read(offsets_of(&stored[97]).0, 1 << 20, u64::MAX)
            .await
            .unwrap();
        let batches = split_batches(&slice.data.to_vec().unwrap());
        assert_eq!(offsets_of(&batches[0]).0, end);
        log.close().await.unwrap();
    });
}
