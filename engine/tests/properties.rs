//! Property tests of the log against a model (a vector of the batches it should hold).

mod common;

use common::*;
use engine::batch::BatchHeader;
use engine::{Clock, LogConfig, PartitionLog, ReadData};
use proptest::prelude::*;

fn config_strategy() -> impl Strategy<Value = LogConfig> {
    (
        prop_oneof![Just(4096u64), Just(10_000), Just(65_536)],
        prop_oneof![Just(128u32), Just(1000), Just(4096)],
        prop_oneof![Just(0usize), Just(5000), Just(1 << 20)],
        prop_oneof![Just(4096usize), Just(16384)],
    )
        .prop_map(|(segment, interval, cache, chunk)| LogConfig {
            segment_bytes_max: segment,
            index_interval_bytes: interval,
            tail_cache_bytes_max: cache,
            write_chunk_bytes: chunk,
            ..small_config()
        })
}

#[derive(Debug, Clone)]
enum Step {
    /// Append a batch of `records` records with values of `value_bytes`.
    Append { records: usize, value_bytes: usize },
    /// Close cleanly and reopen.
    Reopen,
    /// Make everything durable, then crash and reopen.
    SyncAndCrash,
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        20 => (1usize..6, 0usize..3000).prop_map(|(records, value_bytes)| Step::Append { records, value_bytes }),
        1 => Just(Step::Reopen),
        1 => Just(Step::SyncAndCrash),
    ]
}

fn end_of(batches: &[Vec<u8>]) -> u64 {
    batches.last().map_or(0, |b| {
        BatchHeader::parse(b).unwrap().last_offset() as u64 + 1
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(proptest_cases(24)))]

    /// Whatever the batch and segment sizes, and with clean reopens and crashes after syncs
    /// in between, reading from the start returns exactly what was appended, in order, and a
    /// read from any batch's first offset starts with that batch.
    #[test]
    fn append_then_read_returns_exactly_what_was_appended(
        config in config_strategy(),
        steps in proptest::collection::vec(step_strategy(), 1..120),
        bytes_max in prop_oneof![Just(1usize), Just(3000), Just(1 << 20)],
    ) {
        run(async move {
            let dir = tempfile::tempdir().unwrap();
            let mut log = PartitionLog::open(dir.path(), config.clone(), system_clock()).await.unwrap();
            let mut model: Vec<Vec<u8>> = Vec::new();
            for (tag, step) in steps.into_iter().enumerate() {
                match step {
                    Step::Append { records, value_bytes } => {
                        let batch = tagged_batch(tag as u64, records, value_bytes, tag as i64);
                        let receipt = log.append(batch.clone(), 1).await.unwrap();
                        assert_eq!(receipt.base_offset, end_of(&model));
                        model.push(as_stored(batch, receipt.base_offset, 1));
                    }
                    Step::Reopen => {
                        log.close().await.unwrap();
                        log = PartitionLog::open(dir.path(), config.clone(), system_clock()).await.unwrap();
                    }
                    Step::SyncAndCrash => {
                        log.sync().await.unwrap();
                        drop(log);
                        log = PartitionLog::open(dir.path(), config.clone(), system_clock()).await.unwrap();
                    }
                }
            }
            log.sync().await.unwrap();
            assert_eq!(read_all(&log, 0, bytes_max).await, model);
            for stored in &model {
                let base = BatchHeader::parse(stored).unwrap().base_offset as u64;
                let slice = log.read(base, 1, u64::MAX).await.unwrap();
                let bytes = slice.data.to_vec().unwrap();
                assert_eq!(&split_batches(&bytes)[0], stored);
            }
        });
    }

    /// A crash that cuts the active segment anywhere after its durable part never returns a
    /// corrupt batch and keeps every durable one: the recovered log is the durable batches
    /// plus a prefix of the rest.
    #[test]
    fn recovery_after_a_random_cut_keeps_durable_batches_and_only_valid_ones(
        durable_count in 1usize..60,
        extra_count in 1usize..20,
        cut_fraction in 0.0f64..1.0,
        flip in proptest::option::of(0.0f64..1.0),
    ) {
        run(async move {
            let dir = tempfile::tempdir().unwrap();
            let config = LogConfig { segment_bytes_max: 1 << 20, ..small_config() };
            let log = PartitionLog::open(dir.path(), config.clone(), system_clock()).await.unwrap();
            let mut model = Vec::new();
            for tag in 0..durable_count + extra_count {
                let batch = tagged_batch(tag as u64, 1 + tag % 4, 30 + tag * 7, 0);
                let receipt = log.append(batch.clone(), 0).await.unwrap();
                model.push(as_stored(batch, receipt.base_offset, 0));
                if tag + 1 == durable_count {
                    log.wait_durable(&receipt).await.unwrap();
                }
            }
            log.sync().await.unwrap();
            drop(log);
            let durable_bytes: u64 = model[..durable_count].iter().map(|b| b.len() as u64).sum();
            let path = dir.path().join(format!("{:020}.log", 0));
            let file_bytes = std::fs::metadata(&path).unwrap().len();
            let cut = durable_bytes + ((file_bytes - durable_bytes) as f64 * cut_fraction) as u64;
            let mut bytes = std::fs::read(&path).unwrap();
            bytes.truncate(cut as usize);
            if let Some(flip) = flip {
                if cut > durable_bytes {
                    let at = durable_bytes + ((cut - durable_bytes) as f64 * flip) as u64;
                    bytes[at as usize] ^= 0xa5;
                }
            }
            std::fs::write(&path, &bytes).unwrap();
            let log = PartitionLog::open(dir.path(), config, system_clock()).await.unwrap();
            let recovered = read_all(&log, 0, 1 << 20).await;
            assert!(recovered.len() >= durable_count, "a durable batch was lost");
            assert!(recovered.len() <= model.len());
            for (index, batch) in recovered.iter().enumerate() {
                let header = BatchHeader::parse(batch).unwrap();
                let expected = BatchHeader::parse(&model[index]).unwrap();
                // The epoch is outside the CRC (see the recovery tests); all else must match.
                assert_eq!(header.base_offset, expected.base_offset);
                assert_eq!(&batch[16..], &model[index][16..], "batch {index} differs");
            }
        });
    }
}

#[derive(Debug, Clone)]
enum Operation {
    Append {
        records: usize,
        value_bytes: usize,
    },
    /// Truncate at the offset this fraction of the way from the start to the end.
    Truncate(f64),
    /// Delete up to the offset this fraction of the way from the start to the end.
    DeleteUpTo(f64),
    /// Advance the clock by this many milliseconds and apply retention.
    Retention(i64),
    Reopen,
}

fn operation_strategy() -> impl Strategy<Value = Operation> {
    prop_oneof![
        12 => (1usize..5, 0usize..1500).prop_map(|(records, value_bytes)| Operation::Append { records, value_bytes }),
        2 => (0.0f64..1.0).prop_map(Operation::Truncate),
        1 => (0.0f64..1.0).prop_map(Operation::DeleteUpTo),
        1 => (0i64..200_000).prop_map(Operation::Retention),
        1 => Just(Operation::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(proptest_cases(24)))]

    /// Truncation, deletion and retention keep the log contiguous from its start to its end,
    /// equal to the model, with indexes that find every batch, across reopens.
    #[test]
    fn truncation_and_retention_keep_offsets_contiguous_and_indexes_consistent(
        operations in proptest::collection::vec(operation_strategy(), 1..80),
    ) {
        run(async move {
            let dir = tempfile::tempdir().unwrap();
            let (clock, dyn_clock) = manual_clock(1_000_000);
            let config = LogConfig {
                segment_bytes_max: 8192,
                index_interval_bytes: 700,
                retention_age_ms_max: Some(100_000),
                retention_bytes_max: Some(40_000),
                ..small_config()
            };
            let mut log = PartitionLog::open(dir.path(), config.clone(), dyn_clock.clone()).await.unwrap();
            // The model: every batch from the log start on.
            let mut model: Vec<Vec<u8>> = Vec::new();
            let mut log_start = 0u64;
            for (tag, operation) in operations.into_iter().enumerate() {
                match operation {
                    Operation::Append { records, value_bytes } => {
                        let timestamp_ms = clock.now_ms();
                        let batch = tagged_batch(tag as u64, records, value_bytes, timestamp_ms);
                        let receipt = log.append(batch.clone(), tag as i32).await.unwrap();
                        model.push(as_stored(batch, receipt.base_offset, tag as i32));
                    }
                    Operation::Truncate(fraction) => {
                        let end = log.log_end_offset();
                        let target = log_start + ((end - log_start) as f64 * fraction) as u64;
                        let new_end = log.truncate(target).await.unwrap();
                        assert!(new_end <= target);
                        // The batch holding the target goes, and everything after it.
                        model.retain(|b| (BatchHeader::parse(b).unwrap().last_offset() as u64) < target);
                        if log.log_start_offset() == log_start {
                            assert_eq!(new_end, end_of(&model).max(log_start));
                        } else {
                            // That batch straddled the start: the log restarts empty there.
                            assert!(model.is_empty());
                            assert_eq!((new_end, log.log_start_offset()), (target, target));
                            log_start = target;
                        }
                    }
                    Operation::DeleteUpTo(fraction) => {
                        let end = log.log_end_offset();
                        let target = log_start + ((end - log_start) as f64 * fraction) as u64;
                        log.delete_up_to(target).await.unwrap();
                        log_start = log_start.max(target);
                    }
                    Operation::Retention(advance_ms) => {
                        clock.advance_ms(advance_ms);
                        log.enforce_retention().await.unwrap();
                        assert!(log.log_start_offset() >= log_start);
                        log_start = log.log_start_offset();
                    }
                    Operation::Reopen => {
                        log.close().await.unwrap();
                        log = PartitionLog::open(dir.path(), config.clone(), dyn_clock.clone()).await.unwrap();
                    }
                }
                assert_eq!(log.log_start_offset(), log_start);
                model.retain(|b| (BatchHeader::parse(b).unwrap().last_offset() as u64) >= log_start);
                assert_eq!(log.log_end_offset(), end_of(&model).max(log_start));
            }
            log.sync().await.unwrap();
            let recovered = read_all(&log, log_start, 5000).await;
            assert_eq!(recovered, model);
            for stored in &model {
                let base = (BatchHeader::parse(stored).unwrap().base_offset as u64).max(log_start);
                let slice = log.read(base, 1, u64::MAX).await.unwrap();
                assert!(!matches!(slice.data, ReadData::Empty));
                assert_eq!(&split_batches(&slice.data.to_vec().unwrap())[0], stored);
            }
        });
    }
}
