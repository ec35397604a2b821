//! The producer table's checks, snapshot codec and recovery, against the rules of Kafka's
//! idempotent producer (unit and property tests).

use super::*;
use crate::batch::build::{self, ProducerFields, TestRecord};
use crate::batch::TransactionMarker;
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
    let verdict = table.check(&probe, None)?;
    if verdict == Verdict::Append {
        table.record(&header(producer, records, *log_end), None, 0);
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
        table.record(&placed, None, now_ms);
    }
    assert_eq!(table.len(), 3);
    let known = |table: &ProducerTable, producer_id| table.producers.contains_key(&producer_id);
    assert!(!known(&table, 2), "producer 2 appended least recently");
    assert!(known(&table, 1) && known(&table, 3) && known(&table, 4));
    // At 1035, producers last seen at 20 and 30 have been idle for over 1000 ms.
    table.record(&header(idempotent(4, 0, 1), 1, 5), None, 1035);
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
        recovery.observe(&header(idempotent(1, 0, offset as i32), 1, offset), None);
    }
    recovery.observe(&tail, None);
    let recovered = recovery.finish(5);
    assert!(recovered.snapshot_still_fits);
    assert_eq!(recovered.table, table);

    // The snapshot ends before the active segment (base 5): rebuilt from the segment only.
    let mut recovery = ProducerRecovery::new(Some(snapshot.clone()), LIMITS, 0);
    assert!(!recovery.enter_active_segment(5));
    recovery.observe(&header(idempotent(2, 0, 1), 1, 5), None);
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

fn transactional(producer_id: i64, epoch: i16, sequence: i32) -> ProducerFields {
    idempotent(producer_id, epoch, sequence).with_transaction_bits(false)
}

/// A marker of `producer_id` (committing or aborting) placed at `*log_end`, recorded as the log
/// does once its checks passed; returns the transaction it aborted.
fn end_transaction(
    table: &mut ProducerTable,
    log_end: &mut u64,
    marker: TransactionMarker,
) -> Result<Option<AbortedTransaction>, LogError> {
    table.check_marker(&marker)?;
    let mut bytes = crate::batch::encode_transaction_marker(&marker, 0);
    crate::batch::assign_offset_and_epoch(&mut bytes, *log_end as i64, 0);
    let placed = BatchHeader::parse(&bytes).expect("a whole header");
    let read = crate::log::transactions::marker_of(&placed, &bytes);
    assert_eq!(read, Some(marker), "the log reads the marker back");
    *log_end += 1;
    Ok(table.record(&placed, Some(&marker), 0))
}

fn marker(
    producer_id: i64,
    epoch: i16,
    coordinator_epoch: i32,
    committed: bool,
) -> TransactionMarker {
    TransactionMarker {
        producer_id,
        producer_epoch: epoch,
        coordinator_epoch,
        committed,
    }
}

#[test]
fn a_transaction_opens_at_its_first_batch_and_its_marker_closes_it() {
    let mut table = ProducerTable::new(LIMITS);
    let mut end = 0;
    append(&mut table, &mut end, idempotent(1, 0, 0), 2).unwrap();
    assert_eq!(
        table.first_open_transaction_offset(),
        None,
        "not transactional"
    );
    append(&mut table, &mut end, transactional(7, 0, 0), 3).unwrap(); // 2..=4
    append(&mut table, &mut end, transactional(8, 0, 0), 1).unwrap(); // 5
    append(&mut table, &mut end, transactional(7, 0, 3), 2).unwrap(); // 6..=7
    assert_eq!(table.first_open_transaction_offset(), Some(2));
    assert_eq!(
        table.open_transactions().collect::<Vec<_>>(),
        vec![(7, 2), (8, 5)]
    );
    // Producer 7 aborts at 8: its transaction ran from 2; 8's is still open from 5.
    assert_eq!(
        end_transaction(&mut table, &mut end, marker(7, 0, 0, false)),
        Ok(Some(AbortedTransaction {
            producer_id: 7,
            first_offset: 2,
            last_offset: 8,
            last_stable_offset: 5,
        }))
    );
    assert_eq!(table.first_open_transaction_offset(), Some(5));
    // A commit reports nothing; a marker with no transaction open changes nothing.
    assert_eq!(
        end_transaction(&mut table, &mut end, marker(8, 0, 0, true)),
        Ok(None)
    );
    assert_eq!(table.first_open_transaction_offset(), None);
    assert_eq!(
        end_transaction(&mut table, &mut end, marker(8, 0, 0, false)),
        Ok(None)
    );
    // The next transaction of 7 opens at its own first batch, its sequence continuing.
    append(&mut table, &mut end, transactional(7, 0, 5), 1).unwrap();
    assert_eq!(table.first_open_transaction_offset(), Some(end - 1));
    assert_eq!(
        end_transaction(&mut table, &mut end, marker(7, 0, 0, false)),
        Ok(Some(AbortedTransaction {
            producer_id: 7,
            first_offset: 11,
            last_offset: 12,
            last_stable_offset: 13,
        })),
        "nothing else open: stable up to the marker's end"
    );
}

#[test]
fn markers_of_an_old_producer_or_coordinator_epoch_are_refused() {
    let mut table = ProducerTable::new(LIMITS);
    let mut end = 0;
    append(&mut table, &mut end, transactional(7, 2, 0), 1).unwrap();
    assert_eq!(
        end_transaction(&mut table, &mut end, marker(7, 1, 0, true)),
        Err(LogError::InvalidProducerEpoch {
            producer_id: 7,
            current: 2,
            received: 1
        })
    );
    end_transaction(&mut table, &mut end, marker(7, 2, 5, false)).unwrap();
    assert_eq!(
        end_transaction(&mut table, &mut end, marker(7, 2, 4, false)),
        Err(LogError::TransactionCoordinatorFenced {
            producer_id: 7,
            current: 5,
            received: 4
        })
    );
    // A marker of a newer epoch (the coordinator fenced the producer) makes it the epoch:
    // the old epoch's batches are refused, the new one's start at sequence 0.
    end_transaction(&mut table, &mut end, marker(7, 3, 5, false)).unwrap();
    assert!(matches!(
        append(&mut table, &mut end, transactional(7, 2, 1), 1),
        Err(LogError::InvalidProducerEpoch { current: 3, .. })
    ));
    assert!(matches!(
        append(&mut table, &mut end, transactional(7, 3, 4), 1),
        Err(LogError::OutOfOrderSequence { expected: 0, .. })
    ));
    assert_eq!(
        append(&mut table, &mut end, transactional(7, 3, 0), 1),
        Ok(Verdict::Append)
    );
    // A marker for a producer the table does not know is taken.
    assert_eq!(
        end_transaction(&mut table, &mut end, marker(99, 0, 0, true)),
        Ok(None)
    );
}

#[test]
fn a_coordinators_batches_without_sequence_open_a_transaction_and_are_not_sequenced() {
    let mut table = ProducerTable::new(LIMITS);
    let mut end = 0;
    let offsets = transactional(7, 1, -1);
    assert_eq!(
        append(&mut table, &mut end, offsets, 1),
        Ok(Verdict::Append)
    );
    assert_eq!(
        append(&mut table, &mut end, offsets, 1),
        Ok(Verdict::Append),
        "no sequence"
    );
    assert_eq!(table.open_transactions().collect::<Vec<_>>(), vec![(7, 0)]);
    assert!(matches!(
        append(&mut table, &mut end, transactional(7, 0, -1), 1),
        Err(LogError::InvalidProducerEpoch { current: 1, .. })
    ));
    end_transaction(&mut table, &mut end, marker(7, 1, 0, true)).unwrap();
    assert_eq!(table.first_open_transaction_offset(), None);
}

#[test]
fn a_plain_batch_during_an_open_transaction_is_refused() {
    let mut table = ProducerTable::new(LIMITS);
    let mut end = 0;
    append(&mut table, &mut end, transactional(7, 0, 0), 1).unwrap();
    assert_eq!(
        append(&mut table, &mut end, idempotent(7, 0, 1), 1),
        Err(LogError::InvalidTransactionState {
            producer_id: 7,
            reason: "a non-transactional batch while its transaction is open",
        })
    );
    end_transaction(&mut table, &mut end, marker(7, 0, 0, true)).unwrap();
    assert_eq!(
        append(&mut table, &mut end, idempotent(7, 0, 1), 1),
        Ok(Verdict::Append)
    );
}

#[test]
fn a_cut_forgets_what_it_removes_and_reopens_a_transaction_whose_marker_it_removes() {
    let mut table = ProducerTable::new(LIMITS);
    let mut end = 0;
    append(&mut table, &mut end, transactional(7, 0, 0), 2).unwrap(); // 0..=1
    end_transaction(&mut table, &mut end, marker(7, 0, 0, false)).unwrap(); // 2
    append(&mut table, &mut end, transactional(8, 0, 0), 1).unwrap(); // 3
    let mut cut = table.clone();
    cut.forget_from(3);
    assert_eq!(
        cut.first_open_transaction_offset(),
        None,
        "8's transaction is gone"
    );
    assert!(!cut.producers.contains_key(&8));
    cut.forget_from(2);
    assert_eq!(cut.open_transactions().collect::<Vec<_>>(), vec![(7, 0)]);
    // The reopened transaction closes again at the marker written in the cut one's place.
    let mut end = 2;
    assert!(end_transaction(&mut cut, &mut end, marker(7, 0, 0, true))
        .unwrap()
        .is_none());
    assert_eq!(cut.first_open_transaction_offset(), None);
    table.forget_from(0);
    assert!(table.is_empty());
}

#[test]
fn producers_with_an_open_transaction_neither_expire_nor_make_room_first() {
    let limits = ProducerLimits {
        producers_max: 2,
        idle_ms_max: Some(1000),
    };
    let mut table = ProducerTable::new(limits);
    table.record(&header(transactional(1, 0, 0), 1, 0), None, 0);
    table.record(&header(idempotent(2, 0, 0), 1, 1), None, 10);
    table.record(&header(idempotent(3, 0, 0), 1, 2), None, 20);
    assert!(
        table.producers.contains_key(&1),
        "2 made room, though 1 is older"
    );
    assert!(!table.producers.contains_key(&2));
    table.record(&header(idempotent(3, 0, 1), 1, 3), None, 5_000);
    assert_eq!(
        table.first_open_transaction_offset(),
        Some(0),
        "1 did not expire"
    );
    assert_eq!(table.len(), 2);
}

#[test]
fn the_snapshot_keeps_transactions_and_reads_version_1() {
    let mut table = ProducerTable::new(LIMITS);
    let mut end = 0;
    append(&mut table, &mut end, transactional(7, 0, 0), 2).unwrap();
    end_transaction(&mut table, &mut end, marker(7, 0, 3, false)).unwrap();
    append(&mut table, &mut end, transactional(7, 0, 2), 1).unwrap();
    end_transaction(&mut table, &mut end, marker(9, 4, 1, true)).unwrap();
    append(&mut table, &mut end, idempotent(5, 0, 0), 1).unwrap();
    let bytes = table.encode(end);
    let (decoded, decoded_end) = ProducerTable::decode(&bytes, LIMITS).unwrap();
    assert_eq!((&decoded, decoded_end), (&table, end));
    assert_eq!(
        decoded.open_transactions().collect::<Vec<_>>(),
        vec![(7, 3)]
    );
    // Version 1 (no transaction fields, written before transactions): read as it was.
    let mut plain = ProducerTable::new(LIMITS);
    let mut end = 0;
    append(&mut plain, &mut end, idempotent(5, 1, 0), 2).unwrap();
    let mut version_1 = Vec::new();
    version_1.extend_from_slice(&1u16.to_be_bytes());
    version_1.extend_from_slice(&0u32.to_be_bytes());
    version_1.extend_from_slice(&end.to_be_bytes());
    version_1.extend_from_slice(&1u32.to_be_bytes());
    version_1.extend_from_slice(&5i64.to_be_bytes());
    version_1.extend_from_slice(&1i16.to_be_bytes());
    version_1.extend_from_slice(&0i64.to_be_bytes());
    version_1.push(1);
    for field in [0i32, 1] {
        version_1.extend_from_slice(&field.to_be_bytes());
    }
    for field in [0u64, 1] {
        version_1.extend_from_slice(&field.to_be_bytes());
    }
    let crc = crc32c::crc32c(&version_1[6..]);
    version_1[2..6].copy_from_slice(&crc.to_be_bytes());
    assert_eq!(ProducerTable::decode(&version_1, LIMITS), Ok((plain, end)));
}

#[test]
fn recovery_rebuilds_open_and_aborted_transactions_from_the_scan() {
    let mut table = ProducerTable::new(LIMITS);
    let mut end = 0;
    append(&mut table, &mut end, transactional(7, 0, 0), 1).unwrap(); // 0
    let snapshot = (table.clone(), end);
    let mut placed = Vec::new();
    let mut log = table.clone();
    for (producer, records) in [(transactional(8, 0, 0), 1), (transactional(7, 0, 1), 1)] {
        placed.push((header(producer, records, end), None));
        append(&mut log, &mut end, producer, records).unwrap();
    }
    let abort = marker(7, 0, 0, false);
    let mut bytes = crate::batch::encode_transaction_marker(&abort, 0);
    crate::batch::assign_offset_and_epoch(&mut bytes, end as i64, 0);
    placed.push((BatchHeader::parse(&bytes).unwrap(), Some(abort)));
    end += 1;
    let mut recovery = ProducerRecovery::new(Some(snapshot), LIMITS, 0);
    assert!(recovery.enter_active_segment(0));
    for (header, marker) in &placed {
        recovery.observe(header, marker.as_ref());
    }
    let recovered = recovery.finish(end);
    assert_eq!(
        recovered.table.open_transactions().collect::<Vec<_>>(),
        vec![(8, 1)]
    );
    assert_eq!(
        recovered.aborted,
        vec![AbortedTransaction {
            producer_id: 7,
            first_offset: 0,
            last_offset: 3,
            last_stable_offset: 1,
        }],
        "the transaction's start came from the snapshot"
    );
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
            table.record(&batch, None, 0);
            placed.push(batch);
            end += records as u64;
        }
        let cut = (end as f64 * cut_fraction) as u64;
        let cut = placed.iter().map(|b| b.base_offset as u64).find(|&b| b >= cut).unwrap_or(end);
        table.forget_from(cut);
        let mut rebuilt = ProducerTable::new(LIMITS);
        for batch in placed.iter().filter(|b| (b.base_offset as u64) < cut) {
            rebuilt.record(batch, None, 0);
        }
        for (producer_id, entry) in &table.producers {
            let full = &rebuilt.producers[producer_id];
            prop_assert_eq!(entry.epoch, full.epoch);
            prop_assert!(full.batches.iter().rev().zip(entry.batches.iter().rev()).all(|(a, b)| a == b));
            prop_assert_eq!(entry.batches.back(), full.batches.back());
        }
    }

    /// Transactions under cuts that remove at most each producer's last marker (what a Raft
    /// truncation can remove: see the module doc): the open transactions after the cut are
    /// those a rebuild from the surviving batches finds.
    #[test]
    fn a_cut_leaves_the_open_transactions_of_the_surviving_log(
        steps in proptest::collection::vec((0i64..3, any::<bool>(), any::<bool>()), 1..40),
        cut_fraction in 0.0f64..1.0,
    ) {
        let mut table = ProducerTable::new(LIMITS);
        let mut placed: Vec<(BatchHeader, Option<TransactionMarker>)> = Vec::new();
        let mut sequences: HashMap<i64, i32> = HashMap::new();
        let mut end = 0u64;
        for (producer_id, is_marker, committed) in steps {
            if is_marker {
                let marker = marker(producer_id, 0, 0, committed);
                let mut bytes = crate::batch::encode_transaction_marker(&marker, 0);
                crate::batch::assign_offset_and_epoch(&mut bytes, end as i64, 0);
                let header = BatchHeader::parse(&bytes).unwrap();
                table.record(&header, Some(&marker), 0);
                placed.push((header, Some(marker)));
                end += 1;
            } else {
                let sequence = sequences.entry(producer_id).or_insert(0);
                let header = header(transactional(producer_id, 0, *sequence), 1, end);
                *sequence += 1;
                table.record(&header, None, 0);
                placed.push((header, None));
                end += 1;
            }
        }
        // The lowest cut that removes no producer's second-to-last marker.
        let mut markers: HashMap<i64, Vec<u64>> = HashMap::new();
        for (header, marker) in &placed {
            if let Some(marker) = marker {
                markers.entry(marker.producer_id).or_default().push(header.base_offset as u64);
            }
        }
        let floor = markers
            .values()
            .filter_map(|offsets| offsets.len().checked_sub(2).map(|at| offsets[at] + 1))
            .max()
            .unwrap_or(0);
        let cut = floor + ((end - floor) as f64 * cut_fraction) as u64;
        table.forget_from(cut);
        let mut rebuilt = ProducerTable::new(LIMITS);
        for (header, marker) in placed.iter().filter(|(b, _)| (b.base_offset as u64) < cut) {
            rebuilt.record(header, marker.as_ref(), 0);
        }
        prop_assert_eq!(
            table.open_transactions().collect::<Vec<_>>(),
            rebuilt.open_transactions().collect::<Vec<_>>()
        );
    }
}
