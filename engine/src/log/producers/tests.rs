//! The producer table's checks, snapshot codec and recovery, against the rules of Kafka's
//! idempotent producer (unit and property tests).

use super::*;
use crate::batch::build::{self, ProducerFields, TestRecord};
use proptest::prelude::*;

const LIMITS: ProducerLimits = ProducerLimits {
    producers_max: 1000,
    idle_ms_max: None,
};

/// The header of a batch of `records` records from `producer`, placed at `base_offset`.
fn header(producer: ProducerFields, records: usize, base_offset: u64) -> BatchHeader {
    let record = TestRecord {
        key: None,
        value: b"v".to_vec(),
        timestamp_ms: 0,
    };
    let mut bytes = build::batch_from(&vec![record; records], producer);
    crate::batch::assign_offset_and_epoch(&mut bytes, base_offset as i64, 0);
    BatchHeader::parse(&bytes).expect("a whole header")
}

fn idempotent(producer_id: i64, epoch: i16, sequence: i32) -> ProducerFields {
    ProducerFields::idempotent(producer_id, epoch, sequence)
}

/// Checks and, if accepted, records the batch at `*log_end`, as the log does.
fn append(
    table: &mut ProducerTable,
    log_end: &mut u64,
    producer: ProducerFields,
    records: usize,
) -> Result<Verdict, LogError> {
    let probe = header(producer, records, 0);
    let verdict = table.check(&probe)?;
    if verdict == Verdict::Append {
        table.record(&header(producer, records, *log_end), 0);
        *log_end += records as u64;
    }
    Ok(verdict)
}

#[test]
fn a_retry_gets_the_original_offsets_and_a_gap_or_old_epoch_is_refused() {
    let mut table = ProducerTable::new(LIMITS);
    let mut end = 0;
    assert_eq!(
        append(&mut table, &mut end, idempotent(7, 0, 0), 3),
        Ok(Verdict::Append)
    );
    assert_eq!(
        append(&mut table, &mut end, idempotent(7, 0, 3), 2),
        Ok(Verdict::Append)
    );
    assert_eq!(
        append(&mut table, &mut end, idempotent(7, 0, 0), 3),
        Ok(Verdict::Duplicate {
            base_offset: 0,
            last_offset: 2
        })
    );
    assert_eq!(end, 5, "nothing recorded for the duplicate");
    assert_eq!(
        append(&mut table, &mut end, idempotent(7, 0, 6), 1),
        Err(LogError::OutOfOrderSequence {
            producer_id: 7,
            expected: 5,
            received: 6
        })
    );
    // Same base sequence, different length: not the same batch.
    assert!(matches!(
        append(&mut table, &mut end, idempotent(7, 0, 3), 1),
        Err(LogError::OutOfOrderSequence { expected: 5, .. })
    ));
    assert_eq!(
        append(&mut table, &mut end, idempotent(7, 1, 4), 1),
        Err(LogError::OutOfOrderSequence {
            producer_id: 7,
            expected: 0,
            received: 4
        }),
        "a new epoch starts at 0"
    );
    assert_eq!(
        append(&mut table, &mut end, idempotent(7, 1, 0), 1),
        Ok(Verdict::Append)
    );
    assert_eq!(
        append(&mut table, &mut end, idempotent(7, 0, 5), 1),
        Err(LogError::InvalidProducerEpoch {
            producer_id: 7,
            current: 1,
            received: 0
        })
    );
    assert_eq!(
        append(&mut table, &mut end, idempotent(7, 0, 0), 3),
        Err(LogError::InvalidProducerEpoch {
            producer_id: 7,
            current: 1,
            received: 0
        }),
        "the old epoch's batches are no longer duplicates"
    );
}

#[test]
fn unknown_producers_take_any_sequence_and_untracked_batches_are_ignored() {
    let mut table = ProducerTable::new(LIMITS);
    let mut end = 0;
    assert_eq!(
        append(&mut table, &mut end, idempotent(1, 3, 1234), 1),
        Ok(Verdict::Append)
    );
    assert_eq!(
        append(&mut table, &mut end, idempotent(1, 3, 1235), 1),
        Ok(Verdict::Append)
    );
    for _ in 0..2 {
        assert_eq!(
            append(&mut table, &mut end, ProducerFields::NONE, 1),
            Ok(Verdict::Append)
        );
    }
    let control = idempotent(1, 3, -1).with_transaction_bits(true);
    assert_eq!(
        append(&mut table, &mut end, control, 1),
        Ok(Verdict::Append)
    );
    let transactional = idempotent(1, 3, 1236).with_transaction_bits(false);
    assert_eq!(
        append(&mut table, &mut end, transactional, 1),
        Ok(Verdict::Append)
    );
    assert_eq!(table.len(), 1);
}

#[test]
fn sequences_wrap_from_max_to_zero() {
    let mut table = ProducerTable::new(LIMITS);
    let mut end = 0;
    append(&mut table, &mut end, idempotent(1, 0, i32::MAX - 1), 2).unwrap();
    assert_eq!(
        append(&mut table, &mut end, idempotent(1, 0, 0), 1),
        Ok(Verdict::Append)
    );
    // A batch that itself wraps: MAX, 0, 1.
    let mut table = ProducerTable::new(LIMITS);
    append(&mut table, &mut end, idempotent(1, 0, i32::MAX), 3).unwrap();
    assert_eq!(
        append(&mut table, &mut end, idempotent(1, 0, i32::MAX), 3),
        Ok(Verdict::Duplicate {
            base_offset: end - 3,
            last_offset: end - 1
        })
    );
    assert_eq!(
        append(&mut table, &mut end, idempotent(1, 0, 2), 1),
        Ok(Verdict::Append)
    );
}

#[test]
fn only_the_last_five_batches_are_remembered() {
    let mut table = ProducerTable::new(LIMITS);
    let mut end = 0;
    for sequence in 0..7 {
        append(&mut table, &mut end, idempotent(1, 0, sequence), 1).unwrap();
    }
    for sequence in 2..7 {
        assert_eq!(
            append(&mut table, &mut end, idempotent(1, 0, sequence), 1),
            Ok(Verdict::Duplicate {
                base_offset: sequence as u64,
                last_offset: sequence as u64
            })
        );
    }
    assert!(matches!(
        append(&mut table, &mut end, idempotent(1, 0, 1), 1),
        Err(LogError::OutOfOrderSequence { expected: 7, .. })
    ));
}

#[test]
fn the_least_recent_producer_is_evicted_and_idle_ones_expire() {
    let limits = ProducerLimits {
        producers_max: 3,
        idle_ms_max: Some(1000),
    };
    let mut table = ProducerTable::new(limits);
    for (offset, (producer_id, now_ms)) in [(1, 0), (2, 10), (3, 20), (1, 30), (4, 40)]
        .into_iter()
        .enumerate()
    {
        let sequence = if producer_id == 1 && offset > 0 { 1 } else { 0 };
        let placed = header(idempotent(producer_id, 0, sequence), 1, offset as u64);
        table.record(&placed, now_ms);
    }
    assert_eq!(table.len(), 3);
    let known = |table: &ProducerTable, producer_id| table.producers.contains_key(&producer_id);
    assert!(!known(&table, 2), "producer 2 appended least recently");
    assert!(known(&table, 1) && known(&table, 3) && known(&table, 4));
    // At 1035, producers last seen at 20 and 30 have been idle for over 1000 ms.
    table.record(&header(idempotent(4, 0, 1), 1, 5), 1035);
    assert_eq!(table.producers.keys().copied().collect::<Vec<_>>(), vec![4]);
}

#[test]
fn forgetting_from_an_offset_keeps_earlier_batches_and_drops_emptied_producers() {
    let mut table = ProducerTable::new(LIMITS);
    let mut end = 0;
    for sequence in 0..3 {
        append(&mut table, &mut end, idempotent(1, 0, sequence), 1).unwrap();
    }
    append(&mut table, &mut end, idempotent(2, 0, 0), 1).unwrap();
    table.forget_from(2);
    assert_eq!(table.len(), 1, "producer 2's only batch was at offset 3");
    let mut end = 2;
    assert_eq!(
        append(&mut table, &mut end, idempotent(1, 0, 2), 1),
        Ok(Verdict::Append),
        "the forgotten batch is expected again"
    );
    assert_eq!(
        append(&mut table, &mut end, idempotent(2, 0, 9), 1),
        Ok(Verdict::Append)
    );
}

#[test]
fn a_snapshot_round_trips_and_damage_is_detected() {
    let mut table = ProducerTable::new(LIMITS);
    let mut end = 0;
    for producer_id in 0..20 {
        for batch in 0..(producer_id as i32 % 7 + 1) {
            let epoch = (producer_id % 3) as i16;
            append(
                &mut table,
                &mut end,
                idempotent(producer_id, epoch, batch * 2),
                2,
            )
            .unwrap();
        }
    }
    let bytes = table.encode(end);
    assert_eq!(
        ProducerTable::decode(&bytes, LIMITS),
        Ok((table.clone(), end))
    );
    for position in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[position] ^= 0x10;
        assert!(
            ProducerTable::decode(&damaged, LIMITS).is_err(),
            "a flip at byte {position} went unnoticed"
        );
    }
    for length in 0..bytes.len() {
        assert!(ProducerTable::decode(&bytes[..length], LIMITS).is_err());
    }
    let small = ProducerLimits {
        producers_max: 5,
        ..LIMITS
    };
    let (decoded, _) = ProducerTable::decode(&bytes, small).unwrap();
    assert_eq!(decoded.len(), 5);
}

#[test]
fn recovery_continues_a_fitting_snapshot_and_falls_back_to_the_active_segment() {
    let mut table = ProducerTable::new(LIMITS);
    let mut end = 0;
    for sequence in 0..4 {
        append(&mut table, &mut end, idempotent(1, 0, sequence), 1).unwrap();
    }
    let snapshot = (table.clone(), end);
    append(&mut table, &mut end, idempotent(2, 0, 0), 1).unwrap();
    let tail = header(idempotent(2, 0, 0), 1, 4);

    // The snapshot reaches the active segment (base 2): continued by the scan.
    let mut recovery = ProducerRecovery::new(Some(snapshot.clone()), LIMITS, 0);
    assert!(recovery.enter_active_segment(2));
    for offset in 2..4 {
        recovery.observe(&header(idempotent(1, 0, offset as i32), 1, offset));
    }
    recovery.observe(&tail);
    let recovered = recovery.finish(5);
    assert!(recovered.snapshot_still_fits);
    assert_eq!(recovered.table, table);

    // The snapshot ends before the active segment (base 5): rebuilt from the segment only.
    let mut recovery = ProducerRecovery::new(Some(snapshot.clone()), LIMITS, 0);
    assert!(!recovery.enter_active_segment(5));
    recovery.observe(&header(idempotent(2, 0, 1), 1, 5));
    let recovered = recovery.finish(6);
    assert!(!recovered.snapshot_still_fits);
    assert_eq!(recovered.table.len(), 1);

    // The log ends before the snapshot's end: as if truncated there.
    let mut recovery = ProducerRecovery::new(Some(snapshot), LIMITS, 0);
    assert!(recovery.enter_active_segment(0));
    let recovered = recovery.finish(3);
    assert!(!recovered.snapshot_still_fits);
    let mut truncated = table.clone();
    truncated.forget_from(3);
    assert_eq!(recovered.table, truncated);
}

/// One producer's history in the model: every batch of its current epoch, in order.
#[derive(Debug, Clone, Default)]
struct ModelProducer {
    epoch: i16,
    batches: Vec<ProducerBatch>,
}

/// The rules, restated as plainly as possible: unbounded history, linear searches.
fn model_verdict(
    model: &HashMap<i64, ModelProducer>,
    producer: ProducerFields,
    records: usize,
) -> Result<Verdict, &'static str> {
    let Some(known) = model.get(&producer.producer_id) else {
        return Ok(Verdict::Append);
    };
    let last_sequence = sequence_after(producer.base_sequence, records as i32 - 1);
    let recent = &known.batches[known.batches.len().saturating_sub(5)..];
    if producer.producer_epoch == known.epoch {
        if let Some(b) = recent
            .iter()
            .find(|b| b.base_sequence == producer.base_sequence && b.last_sequence == last_sequence)
        {
            return Ok(Verdict::Duplicate {
                base_offset: b.base_offset,
                last_offset: b.last_offset,
            });
        }
    }
    if producer.producer_epoch < known.epoch {
        return Err("epoch");
    }
    let next = if producer.producer_epoch > known.epoch {
        0
    } else {
        let last = known.batches.last().expect("known producers have a batch");
        if last.last_sequence == i32::MAX {
            0
        } else {
            last.last_sequence + 1
        }
    };
    if producer.base_sequence == next {
        Ok(Verdict::Append)
    } else {
        Err("sequence")
    }
}

fn kind(result: &Result<Verdict, LogError>) -> Result<Verdict, &'static str> {
    match result {
        Ok(verdict) => Ok(*verdict),
        Err(LogError::InvalidProducerEpoch { .. }) => Err("epoch"),
        Err(LogError::OutOfOrderSequence { .. }) => Err("sequence"),
        Err(other) => panic!("unexpected error {other}"),
    }
}

proptest! {
    /// Any stream of batches from a few producers (fresh, retried, skipping ahead, old and
    /// new epochs, sequences near the wrap) gets the model's verdicts, including after a
    /// snapshot round trip at any point.
    #[test]
    fn the_table_agrees_with_a_plain_model(
        steps in proptest::collection::vec(
            (0i64..4, 0i16..3, prop_oneof![0i32..12, (i32::MAX - 6)..=i32::MAX], 1usize..4, any::<bool>()),
            1..200,
        ),
    ) {
        let mut table = ProducerTable::new(LIMITS);
        let mut model: HashMap<i64, ModelProducer> = HashMap::new();
        let mut end = 0u64;
        for (producer_id, epoch, sequence, records, snapshot) in steps {
            if snapshot {
                let (decoded, decoded_end) = ProducerTable::decode(&table.encode(end), LIMITS).unwrap();
                prop_assert_eq!(decoded_end, end);
                table = decoded;
            }
            let producer = idempotent(producer_id, epoch, sequence);
            let expected = model_verdict(&model, producer, records);
            let before = end;
            let actual = append(&mut table, &mut end, producer, records);
            prop_assert_eq!(kind(&actual), expected);
            if expected == Ok(Verdict::Append) {
                let known = model.entry(producer_id).or_default();
                if known.epoch != epoch {
                    known.epoch = epoch;
                    known.batches.clear();
                }
                known.batches.push(ProducerBatch {
                    base_sequence: sequence,
                    last_sequence: sequence_after(sequence, records as i32 - 1),
                    base_offset: before,
                    last_offset: end - 1,
                });
            }
        }
    }

    /// Forgetting from an offset leaves each producer either unknown or with a suffix of
    /// the batches a table rebuilt from the surviving log would have, ending at the same
    /// batch: never a batch that is gone, never a wrong last sequence.
    #[test]
    fn forgetting_agrees_with_a_rebuild_of_the_surviving_log(
        steps in proptest::collection::vec((0i64..3, 0i16..2, 1usize..3), 1..60),
        cut_fraction in 0.0f64..1.0,
    ) {
        let mut table = ProducerTable::new(LIMITS);
        let mut placed = Vec::new();
        let mut sequences: HashMap<(i64, i16), i32> = HashMap::new();
        let mut end = 0u64;
        for (producer_id, epoch, records) in steps {
            let sequence = sequences.entry((producer_id, epoch)).or_insert(0);
            let batch = header(idempotent(producer_id, epoch, *sequence), records, end);
            *sequence += records as i32;
            table.record(&batch, 0);
            placed.push(batch);
            end += records as u64;
        }
        let cut = (end as f64 * cut_fraction) as u64;
        let cut = placed.iter().map(|b| b.base_offset as u64).find(|&b| b >= cut).unwrap_or(end);
        table.forget_from(cut);
        let mut rebuilt = ProducerTable::new(LIMITS);
        for batch in placed.iter().filter(|b| (b.base_offset as u64) < cut) {
            rebuilt.record(batch, 0);
        }
        for (producer_id, entry) in &table.producers {
            let full = &rebuilt.producers[producer_id];
            prop_assert_eq!(entry.epoch, full.epoch);
            prop_assert!(full.batches.iter().rev().zip(entry.batches.iter().rev()).all(|(a, b)| a == b));
            prop_assert_eq!(entry.last_batch(), full.last_batch());
        }
    }
}
