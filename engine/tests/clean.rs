//! Compaction through the public API: after `clean`, a read from the start yields the latest
//! record of every key (and every record without a key) at its original offset, tombstones
//! older than `delete_retention_ms` are gone, the active segment is untouched, and all of it
//! survives a clean close, a crash, and a crash at every step of the segment swap.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

use bytes::BytesMut;
use common::*;
use engine::batch::{self, BatchHeader, PlainRecord, StoredRecords, BATCH_HEADER_BYTES};
use engine::{codec, CleanStep, LogConfig, LogError, ManualClock, PartitionLog};
use proptest::prelude::*;

/// One record written: `key` None has no key, `value` None is a tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Written {
    offset: u64,
    key: Option<u8>,
    value: Option<Vec<u8>>,
    timestamp_ms: i64,
}

/// A batch to write: its records (key, tombstone?) and its codec.
type BatchPlan = (Vec<(Option<u8>, bool)>, i16);

/// A record as read back: offset, key, value (None: a tombstone).
type ReadRecord = (u64, Option<Vec<u8>>, Option<Vec<u8>>);

/// A record to encode: key, value, timestamp.
type RecordToEncode = (Option<Vec<u8>>, Option<Vec<u8>>, i64);

fn key_bytes(key: u8) -> Vec<u8> {
    format!("key-{key}").into_bytes()
}

/// Encodes the records as one batch compressed with `codec_id`, as a producer would.
fn encode(records: &[RecordToEncode], codec_id: i16) -> BytesMut {
    let plain: Vec<PlainRecord<'_>> = records
        .iter()
        .map(|(key, value, timestamp_ms)| PlainRecord {
            offset: 0,
            timestamp_ms: *timestamp_ms,
            key: key.as_deref(),
            value: value.as_deref(),
        })
        .collect();
    let bytes = batch::encode_plain(&plain, batch::build::ProducerFields::NONE);
    if codec_id == codec::CODEC_NONE {
        return BytesMut::from(&bytes[..]);
    }
    let header = BatchHeader::parse(&bytes).unwrap();
    let section = codec::compress(codec_id, &bytes[BATCH_HEADER_BYTES..]).unwrap();
    let compressed = batch::encode_batch(
        &BatchHeader {
            attributes: header.attributes | codec_id,
            ..header
        },
        &section,
    );
    BytesMut::from(&compressed[..])
}

/// Appends the plan durably; each record's timestamp is `start_ms` plus 10 ms per record.
async fn write_plan(log: &PartitionLog, plan: &[BatchPlan], start_ms: i64) -> Vec<Written> {
    let mut written = Vec::new();
    let mut timestamp_ms = start_ms;
    for (records, codec_id) in plan {
        let mut encoded = Vec::new();
        for (key, tombstone) in records {
            let value = (!tombstone).then(|| format!("value-{timestamp_ms}").into_bytes());
            encoded.push((key.map(key_bytes), value, timestamp_ms));
            timestamp_ms += 10;
        }
        let receipt = log
            .append_durable(encode(&encoded, *codec_id), 0)
            .await
            .unwrap();
        for (index, (_, value, timestamp_ms)) in encoded.into_iter().enumerate() {
            written.push(Written {
                offset: receipt.base_offset + index as u64,
                key: records[index].0,
                value,
                timestamp_ms,
            });
        }
    }
    written
}

/// Every record a read from the log start returns, with offsets checked to increase.
async fn read_records(log: &PartitionLog) -> Vec<ReadRecord> {
    let mut out: Vec<ReadRecord> = Vec::new();
    for batch_bytes in read_all(log, log.log_start_offset(), 700).await {
        let header = BatchHeader::parse(&batch_bytes).unwrap();
        let section = codec::decompress(
            header.compression(),
            &batch_bytes[BATCH_HEADER_BYTES..],
            1 << 20,
        )
        .unwrap();
        for record in StoredRecords::new(&section, header) {
            let record = record.unwrap().record;
            let offset = record.offset as u64;
            assert!(
                offset <= header.last_offset() as u64,
                "a record lies in its batch's offset range"
            );
            if let Some(last) = out.last() {
                assert!(offset > last.0, "offsets increase");
            }
            out.push((
                offset,
                record.key.map(<[u8]>::to_vec),
                record.value.map(<[u8]>::to_vec),
            ));
        }
    }
    out
}

/// What a full cleaning of everything below `range_end` keeps, in offset order.
fn expected_after_clean(
    written: &[Written],
    range_end: u64,
    tombstone_horizon_ms: i64,
) -> Vec<ReadRecord> {
    let mut latest: BTreeMap<u8, u64> = BTreeMap::new();
    for record in written.iter().filter(|r| r.offset < range_end) {
        if let Some(key) = record.key {
            latest.insert(key, record.offset);
        }
    }
    written
        .iter()
        .filter(|record| {
            let Some(key) = record.key else { return true };
            if record.offset >= range_end {
                return true;
            }
            let expired_tombstone =
                record.value.is_none() && record.timestamp_ms < tombstone_horizon_ms;
            latest[&key] == record.offset && !expired_tombstone
        })
        .map(as_read)
        .collect()
}

fn as_read(record: &Written) -> ReadRecord {
    (
        record.offset,
        record.key.map(key_bytes),
        record.value.clone(),
    )
}

/// The state a consumer rebuilds by reading from the start: key → latest value, deleted keys
/// absent.
fn table(records: &[ReadRecord]) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut table = BTreeMap::new();
    for (_, key, value) in records {
        if let Some(key) = key {
            match value {
                Some(value) => table.insert(key.clone(), value.clone()),
                None => table.remove(key),
            };
        }
    }
    table
}

fn clean_config(segment_bytes_max: u64, delete_retention_ms: u64, tail_cache: bool) -> LogConfig {
    LogConfig {
        segment_bytes_max,
        index_interval_bytes: 128,
        delete_retention_ms,
        tail_cache_bytes_max: if tail_cache { 1 << 20 } else { 0 },
        ..small_config()
    }
}

fn plan_strategy(batches: usize) -> impl Strategy<Value = Vec<BatchPlan>> {
    let record = (
        proptest::option::weighted(0.9, 0u8..6),
        proptest::bool::weighted(0.2),
    );
    let batch = (
        proptest::collection::vec(record, 1..4),
        prop_oneof![
            6 => Just(codec::CODEC_NONE),
            1 => Just(codec::CODEC_GZIP),
            1 => Just(codec::CODEC_SNAPPY),
            1 => Just(codec::CODEC_LZ4),
            1 => Just(codec::CODEC_ZSTD),
        ],
    );
    proptest::collection::vec(batch, 1..batches)
}

const START_MS: i64 = 1_000_000;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(proptest_cases(24)))]

    #[test]
    fn cleaning_keeps_exactly_the_latest_of_each_key(
        plan in plan_strategy(120),
        segment_bytes_max in prop_oneof![Just(300u64), Just(700), Just(4096)],
        delete_retention_ms in prop_oneof![Just(0u64), Just(2_000), Just(1_000_000)],
        tail_cache in any::<bool>(),
    ) {
        run(async move {
            let dir = tempfile::tempdir().unwrap();
            let config = clean_config(segment_bytes_max, delete_retention_ms, tail_cache);
            let clock = Rc::new(ManualClock::new(START_MS));
            let log = PartitionLog::open(dir.path(), config.clone(), clock.clone()).await.unwrap();
            let written = write_plan(&log, &plan, START_MS).await;
            let now_ms = START_MS + 10 * written.len() as i64 + 5;
            let active_base = *log.segment_base_offsets().last().unwrap();
            let log_end = log.log_end_offset();
            let expected = expected_after_clean(&written, active_base, now_ms - delete_retention_ms as i64);
            let before = read_records(&log).await;
            prop_assert_eq!(&before, &written.iter().map(as_read).collect::<Vec<_>>());

            let stats = log.clean(now_ms).await.unwrap();
            let after = read_records(&log).await;
            prop_assert_eq!(&after, &expected);
            prop_assert_eq!(stats.records_removed as usize, written.len() - expected.len());
            prop_assert_eq!(log.log_end_offset(), log_end, "offsets are kept");
            prop_assert_eq!(*log.segment_base_offsets().last().unwrap(), active_base, "active segment untouched");
            prop_assert!(stats.segments_after <= stats.segments_before);
            // The consumer's view: latest values of live keys (tombstones read as deletes).
            prop_assert_eq!(table(&after), table(&before));

            let again = log.clean(now_ms).await.unwrap();
            prop_assert_eq!(again.records_removed, 0, "a second cleaning finds nothing");
            prop_assert_eq!(&read_records(&log).await, &expected);

            log.close().await.unwrap();
            let log = PartitionLog::open(dir.path(), config.clone(), clock.clone()).await.unwrap();
            prop_assert_eq!(&read_records(&log).await, &expected, "after a clean close");
            prop_assert_eq!(log.log_end_offset(), log_end);
            drop(log);
            let log = PartitionLog::open(dir.path(), config.clone(), clock.clone()).await.unwrap();
            prop_assert_eq!(&read_records(&log).await, &expected, "after a crash");
            prop_assert_eq!(log.log_end_offset(), log_end);
            let receipt = log.append_durable(tagged_batch(1, 1, 1, now_ms), 0).await.unwrap();
            prop_assert_eq!(receipt.base_offset, log_end, "appends continue at the old end");
            log.close().await.unwrap();
            Ok(())
        })?;
    }

    #[test]
    fn a_crash_at_any_swap_step_leaves_old_or_new_segments(
        plan in plan_strategy(60),
        step in prop_oneof![
            Just(CleanStep::OutputWritten),
            Just(CleanStep::SwapCommitted),
            Just(CleanStep::InputsDeleted),
            Just(CleanStep::SwapInstalled),
        ],
    ) {
        run(async move {
            let dir = tempfile::tempdir().unwrap();
            let config = clean_config(500, 0, false);
            let clock = Rc::new(ManualClock::new(START_MS));
            let log = PartitionLog::open(dir.path(), config.clone(), clock.clone()).await.unwrap();
            let written = write_plan(&log, &plan, START_MS).await;
            let now_ms = START_MS + 10 * written.len() as i64 + 5;
            let active_base = *log.segment_base_offsets().last().unwrap();
            let log_end = log.log_end_offset();
            let original: Vec<_> = written.iter().map(as_read).collect();
            let expected = expected_after_clean(&written, active_base, now_ms);
            log.inject_clean_fault(Some(step));
            let cleaned = log.clean(now_ms).await;
            drop(log); // the crash
            let log = PartitionLog::open(dir.path(), config.clone(), clock.clone()).await.unwrap();
            let recovered = read_records(&log).await;
            prop_assert_eq!(log.log_end_offset(), log_end);
            // Old or new segments: every record still there is the one written at its offset,
            // everything a full cleaning keeps is there, and the consumer's view is intact.
            for record in &recovered {
                prop_assert!(original.contains(record), "{:?} was written", record);
            }
            for record in &expected {
                prop_assert!(recovered.contains(record), "{:?} survives", record);
            }
            prop_assert_eq!(table(&recovered), table(&original));
            if cleaned.is_ok() {
                // Nothing to swap (no group lost anything): the log is as written.
                prop_assert_eq!(&recovered, &original);
            }
            let leftovers: Vec<String> = std::fs::read_dir(dir.path()).unwrap()
                .map(|entry| entry.unwrap().file_name().into_string().unwrap())
                .filter(|name| name.ends_with(".cleaned") || name.ends_with(".swap"))
                .collect();
            prop_assert!(leftovers.is_empty(), "recovery finished the swap: {:?}", leftovers);
            log.clean(now_ms).await.unwrap();
            prop_assert_eq!(&read_records(&log).await, &expected, "a later cleaning completes");
            log.close().await.unwrap();
            Ok(())
        })?;
    }
}

/// Writes `count` single-record batches: keys cycle through `keys`, so every key but the
/// last few is superseded, leaving gaps.
async fn write_cycling(log: &PartitionLog, count: u64, keys: u8) -> Vec<Written> {
    let plan: Vec<BatchPlan> = (0..count)
        .map(|index| (vec![(Some((index % u64::from(keys)) as u8), false)], 0))
        .collect();
    write_plan(log, &plan, START_MS).await
}

fn open_dir(dir: &Path, config: LogConfig) -> impl std::future::Future<Output = PartitionLog> {
    let dir = dir.to_path_buf();
    async move {
        PartitionLog::open(dir, config, Rc::new(ManualClock::new(START_MS)))
            .await
            .unwrap()
    }
}

#[test]
fn reads_inside_gaps_return_the_next_batch() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let log = open_dir(dir.path(), clean_config(400, 0, false)).await;
        // Key 0 at offsets 0, 3, 6, ...; keys 1 and 2 in between: after cleaning only the last
        // three records of the sealed part stay, plus the active segment.
        let written = write_cycling(&log, 60, 3).await;
        let now_ms = START_MS + 10_000;
        let active_base = *log.segment_base_offsets().last().unwrap();
        log.clean(now_ms).await.unwrap();
        let kept: Vec<u64> = read_records(&log).await.iter().map(|r| r.0).collect();
        let expected: Vec<u64> = expected_after_clean(&written, active_base, now_ms)
            .iter()
            .map(|r| r.0)
            .collect();
        assert_eq!(kept, expected);
        let first_kept = kept[0];
        assert!(first_kept > 0, "the front was compacted away");
        // Every offset in a gap reads the batch after it, from the same or a later segment.
        for offset in log.log_start_offset()..log.log_end_offset() {
            let slice = log.read(offset, 1, u64::MAX).await.unwrap();
            let bytes = slice.data.to_vec().unwrap();
            let header = BatchHeader::parse(&bytes).expect("a batch at or after every offset");
            let next_kept = *kept.iter().find(|&&k| k >= offset).unwrap();
            assert_eq!(header.base_offset as u64, next_kept, "read at {offset}");
            assert_eq!(slice.offset_next, next_kept + 1);
        }
        // Timestamp search lands on a kept record.
        let found = log.offset_for_timestamp(START_MS).await.unwrap().unwrap();
        assert_eq!(found.offset, first_kept);
        log.close().await.unwrap();
    });
}

#[test]
fn retention_delete_up_to_and_truncation_work_on_a_cleaned_log() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            retention_bytes_max: Some(600),
            ..clean_config(300, 0, false)
        };
        let log = open_dir(dir.path(), config.clone()).await;
        // Even offsets cycle through 20 keys, odd ones all update key 30: gaps at odd offsets.
        let plan: Vec<BatchPlan> = (0..80u8)
            .map(|index| {
                let key = if index % 2 == 0 { (index / 2) % 20 } else { 30 };
                (vec![(Some(key), false)], 0)
            })
            .collect();
        write_plan(&log, &plan, START_MS).await;
        let now_ms = START_MS + 10_000;
        log.clean(now_ms).await.unwrap();
        let kept: Vec<u64> = read_records(&log).await.iter().map(|r| r.0).collect();

        // DeleteRecords to an offset inside a gap: reads start at the next kept record.
        let gap = (kept[0]..kept[kept.len() - 1])
            .find(|offset| !kept.contains(offset))
            .expect("a gap");
        log.delete_up_to(gap).await.unwrap();
        assert_eq!(log.log_start_offset(), gap);
        let after_delete: Vec<u64> = read_records(&log).await.iter().map(|r| r.0).collect();
        assert_eq!(
            after_delete,
            kept.iter()
                .copied()
                .filter(|&k| k >= gap)
                .collect::<Vec<_>>()
        );

        // Retention by size deletes whole (cleaned) segments from the front.
        let deleted = log.enforce_retention().await.unwrap();
        assert!(deleted > 0);
        assert!(log.size_bytes() <= 600 + 300);
        let retained: Vec<u64> = read_records(&log).await.iter().map(|r| r.0).collect();
        assert!(retained.iter().all(|offset| after_delete.contains(offset)));
        assert_eq!(retained.last(), kept.last());

        // Truncating at an offset inside a gap ends the log there; appends continue from it.
        let end = log.log_end_offset();
        log.truncate(end - 1).await.unwrap();
        assert_eq!(log.log_end_offset(), end - 1);
        let receipt = log
            .append_durable(tagged_batch(7, 1, 1, now_ms), 0)
            .await
            .unwrap();
        assert_eq!(receipt.base_offset, end - 1);
        log.close().await.unwrap();
        let log = open_dir(dir.path(), config).await;
        assert_eq!(log.log_end_offset(), end);
        log.close().await.unwrap();
    });
}

#[test]
fn compaction_lag_and_the_map_bound_limit_what_is_cleaned() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            min_compaction_lag_ms: 1_000,
            ..clean_config(300, 0, false)
        };
        let log = open_dir(dir.path(), config).await;
        write_cycling(&log, 60, 3).await;
        let newest_ms = START_MS + 600;
        // Everything is younger than the lag: nothing is due, nor cleaned.
        assert_eq!(log.cleaning_due(newest_ms), None);
        let stats = log.clean(newest_ms).await.unwrap();
        assert_eq!(stats.records_removed, 0);
        assert_eq!(log.cleaning_due(newest_ms + 1_000), Some(1.0));
        let stats = log.clean(newest_ms + 1_000).await.unwrap();
        assert!(stats.records_removed > 0);
        assert_eq!(log.cleaning_due(newest_ms + 1_000), None, "all clean");
        log.close().await.unwrap();

        // A map that holds only a few keys cleans only the segments whose keys fit.
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            cleaner_map_bytes_max: 4 * (5 + engine::config::CLEANER_MAP_ENTRY_OVERHEAD_BYTES),
            ..clean_config(300, 0, false)
        };
        let log = open_dir(dir.path(), config).await;
        // Each key is written six times in a row, 10 keys in all: a few fit the map.
        let plan: Vec<BatchPlan> = (0..60u8)
            .map(|index| (vec![(Some(index / 6), false)], 0))
            .collect();
        let written = write_plan(&log, &plan, START_MS).await;
        log.clean(START_MS + 10_000).await.unwrap();
        let records = read_records(&log).await;
        assert!(
            records.len() < written.len(),
            "the first segments were cleaned"
        );
        assert!(
            records.iter().filter(|r| r.1 == Some(key_bytes(8))).count() > 1,
            "the segments whose keys did not fit were not"
        );
        assert_eq!(
            table(&records),
            table(&written.iter().map(as_read).collect::<Vec<_>>())
        );
        log.close().await.unwrap();
    });
}

#[test]
fn a_stopped_cleaning_changes_nothing_and_the_next_one_runs() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let log = open_dir(dir.path(), clean_config(300, 0, false)).await;
        write_cycling(&log, 60, 3).await;
        let now_ms = START_MS + 1_000;
        let before = read_records(&log).await;
        let segments_before = log.segment_count();

        log.stop_cleaning();
        assert!(matches!(log.clean(now_ms).await, Err(LogError::Closed)));
        assert_eq!(read_records(&log).await, before, "nothing was rewritten");
        assert_eq!(log.segment_count(), segments_before);
        assert!(log.cleaning_due(now_ms).is_some(), "still dirty");

        let stats = log.clean(now_ms).await.unwrap();
        assert!(
            stats.records_removed > 0,
            "the stop applied to one cleaning only"
        );
        let after = read_records(&log).await;
        assert!(after.len() < before.len());
        assert_eq!(
            table(&after),
            table(&before),
            "every key keeps its latest value"
        );
        log.close().await.unwrap();
    });
}

/// A rewrite that reverses each value starting with `value-` (and tags it), leaving others.
struct ReverseValues {
    rewritten: u64,
}

impl engine::PartitionRecordRewrite for ReverseValues {
    fn rewrite(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Option<engine::RewrittenRecord> {
        let value = value.filter(|value| value.starts_with(b"value-"))?;
        self.rewritten += 1;
        let mut reversed: Vec<u8> = b"new:".to_vec();
        reversed.extend(value.iter().rev());
        Some(engine::RewrittenRecord {
            key: key.map(<[u8]>::to_vec),
            value: Some(reversed),
        })
    }

    fn summary(&self) -> String {
        format!("{} values reversed", self.rewritten)
    }
}

fn reversed(records: &[ReadRecord]) -> Vec<ReadRecord> {
    records
        .iter()
        .map(|(offset, key, value)| {
            let value = value.as_ref().map(|value| {
                let mut reversed = b"new:".to_vec();
                reversed.extend(value.iter().rev());
                reversed
            });
            (*offset, key.clone(), value)
        })
        .collect()
}

/// The batches' offset ranges, epochs and record counts: what a rewrite must not change.
async fn batch_shapes(log: &PartitionLog) -> Vec<(i64, i64, i32, i32, i16)> {
    read_all(log, log.log_start_offset(), 700)
        .await
        .iter()
        .map(|bytes| {
            let header = BatchHeader::parse(bytes).unwrap();
            (
                header.base_offset,
                header.last_offset(),
                header.leader_epoch,
                header.records_count,
                header.compression(),
            )
        })
        .collect()
}

#[test]
fn a_record_rewrite_changes_every_record_in_place_once_and_survives_a_crash_at_every_step() {
    let steps = [
        None,
        Some(CleanStep::OutputWritten),
        Some(CleanStep::SwapCommitted),
        Some(CleanStep::InputsDeleted),
        Some(CleanStep::SwapInstalled),
    ];
    for step in steps {
        let dir = tempfile::tempdir().unwrap();
        run(async move {
            let config = clean_config(400, 1, true);
            let log = open_dir(dir.path(), config.clone()).await;
            // Compressed and plain batches, tombstones, over several segments and the active one.
            let plan: Vec<BatchPlan> = (0..12u8)
                .map(|index| {
                    let records = vec![(Some(index % 4), index % 5 == 4), (None, false)];
                    (records, [codec::CODEC_NONE, 1, 3][usize::from(index % 3)])
                })
                .collect();
            write_plan(&log, &plan, START_MS).await;
            let before = read_records(&log).await;
            let shapes = batch_shapes(&log).await;
            let log_end_offset = log.log_end_offset();
            assert!(log.segment_count() > 2, "the plan spans segments");
            let log = match step {
                None => log,
                Some(step) => {
                    log.inject_clean_fault(Some(step));
                    let mut rewrite = ReverseValues { rewritten: 0 };
                    assert!(log.rewrite_records(&mut rewrite, START_MS).await.is_err());
                    drop(log); // a crash
                    open_dir(dir.path(), config.clone()).await
                }
            };
            let mut rewrite = ReverseValues { rewritten: 0 };
            let stats = log.rewrite_records(&mut rewrite, START_MS).await.unwrap();
            let expected = reversed(&before);
            let changed = expected
                .iter()
                .zip(&before)
                .filter(|(after, before)| after != before)
                .count() as u64;
            assert_eq!(read_records(&log).await, expected, "after {step:?}");
            assert_eq!(
                batch_shapes(&log).await,
                shapes,
                "batches keep their offsets and epochs"
            );
            assert_eq!(log.log_end_offset(), log_end_offset);
            if step.is_none() {
                assert_eq!(stats.records_rewritten, changed);
            }
            assert!(
                log.cleaning_due(START_MS + 60_000).is_some(),
                "a rewrite compacts nothing, and leaves the segments to the cleaner"
            );
            // Records already rewritten are left as they are: nothing is written.
            let mut again = ReverseValues { rewritten: 0 };
            let stats = log.rewrite_records(&mut again, START_MS).await.unwrap();
            assert_eq!((stats.records_rewritten, stats.bytes_written), (0, 0));
            // Appends go on after it, and it all survives a close.
            write_plan(&log, &plan[..2], START_MS + 1_000).await;
            let appended = read_records(&log).await;
            log.close().await.unwrap();
            let log = open_dir(dir.path(), config).await;
            assert_eq!(read_records(&log).await, appended);
            log.close().await.unwrap();
        });
    }
}
