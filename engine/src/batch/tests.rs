//! RecordBatch v2 codec tests: header parsing and validation, CRC, the record walks and the
//! control batches, against batches the builder makes (unit and property tests).

use super::build::{batch, batch_of, TestRecord};
use super::*;
use proptest::prelude::*;

#[test]
fn control_batches_carry_their_type_and_value_and_data_batches_are_not_control() {
    for control_type in [
        ControlType::LeaderChange,
        ControlType::Voters,
        ControlType::Other(3),
    ] {
        let bytes = encode_control(control_type, b"1,2,3", 7);
        let header = validate(&bytes, usize::MAX).unwrap();
        assert!(header.is_control() && !header.is_transactional());
        assert_eq!(header.records_count, 1);
        assert_eq!(
            read_control(&bytes).unwrap(),
            Some((control_type, b"1,2,3".to_vec()))
        );
    }
    let data = build::batch(&[build::TestRecord {
        key: Some(vec![0, 0, 0, 2]),
        value: b"v".to_vec(),
        timestamp_ms: 0,
    }]);
    assert_eq!(read_control(&data).unwrap(), None);
    assert!(read_control(&[1, 2, 3]).is_err());
}

#[test]
fn a_transaction_marker_reads_back_as_written_and_is_a_transactional_control_batch() {
    for committed in [true, false] {
        let marker = TransactionMarker {
            producer_id: 4_000_000_123,
            producer_epoch: 7,
            coordinator_epoch: 12,
            committed,
        };
        let bytes = encode_transaction_marker(&marker, 1_000);
        let header = validate(&bytes, usize::MAX).unwrap();
        assert!(header.is_control() && header.is_transactional());
        assert_eq!(header.base_sequence, -1);
        assert_eq!(read_transaction_marker(&bytes).unwrap(), Some(marker));
        let expected_type = if committed {
            ControlType::Commit
        } else {
            ControlType::Abort
        };
        assert_eq!(
            read_control(&bytes).unwrap().map(|(t, _)| t),
            Some(expected_type)
        );
    }
    let raft_entry = encode_control(ControlType::LeaderChange, b"1", 0);
    assert_eq!(read_transaction_marker(&raft_entry).unwrap(), None);
    let short_value = encode_control(ControlType::Commit, &[0, 0, 0], 0);
    assert!(read_transaction_marker(&short_value).is_err());
}

#[test]
fn a_delete_horizon_is_kafkas_attribute_bit_and_base_timestamp_and_keeps_the_crc_valid() {
    let marker = TransactionMarker {
        producer_id: 9,
        producer_epoch: 2,
        coordinator_epoch: 3,
        committed: false,
    };
    let bytes = encode_transaction_marker(&marker, 1_000);
    assert_eq!(
        validate_stored(&bytes, usize::MAX)
            .unwrap()
            .delete_horizon_ms(),
        None
    );
    let stamped = with_delete_horizon(&bytes, 5_000);
    let header = validate_stored(&stamped, usize::MAX).unwrap();
    assert_eq!(header.delete_horizon_ms(), Some(5_000));
    assert_eq!(header.attributes & 0x40, 0x40, "KIP-534's bit 6");
    assert_eq!(header.max_timestamp, 1_000);
    assert_eq!(read_transaction_marker(&stamped).unwrap(), Some(marker));
    assert_eq!(stamped[BATCH_HEADER_BYTES..], bytes[BATCH_HEADER_BYTES..]);
}

#[test]
fn a_built_batch_validates_and_reports_its_header() {
    let bytes = batch_of(3, 10, 1_000);
    let header = validate(&bytes, 1 << 20).expect("valid");
    assert_eq!(header.records_count, 3);
    assert_eq!(header.last_offset_delta, 2);
    assert_eq!(header.base_timestamp, 1_000);
    assert_eq!(header.max_timestamp, 1_002);
    assert_eq!(header.size_bytes as usize, bytes.len());
    assert_eq!(header.magic, MAGIC_V2);
}

#[test]
fn producer_fields_round_trip_and_sequences_wrap() {
    let record = TestRecord {
        key: None,
        value: b"v".to_vec(),
        timestamp_ms: 0,
    };
    let records = vec![record; 3];
    let fields = build::ProducerFields::idempotent(77, 4, i32::MAX - 1);
    let bytes = build::batch_from(&records, fields.with_transaction_bits(false));
    let header = validate(&bytes, 1 << 20).expect("valid");
    assert_eq!(
        (
            header.producer_id,
            header.producer_epoch,
            header.base_sequence
        ),
        (77, 4, i32::MAX - 1)
    );
    assert!(header.has_producer_id() && header.is_transactional() && !header.is_control());
    assert_eq!(header.last_sequence(), 0, "MAX-1, MAX, then 0");
    assert!(!BatchHeader::parse(&batch_of(1, 1, 0))
        .unwrap()
        .has_producer_id());
    assert_eq!(sequence_after(5, 3), 8);
    assert_eq!(sequence_after(i32::MAX, 1), 0);
    assert_eq!(sequence_after(i32::MAX, i32::MAX), i32::MAX - 1);
}

#[test]
fn assigning_offset_and_epoch_keeps_the_crc_valid() {
    let mut bytes = batch_of(2, 5, 0);
    assign_offset_and_epoch(&mut bytes, 4242, 7);
    let header = validate(&bytes, 1 << 20).expect("still valid");
    assert_eq!(header.base_offset, 4242);
    assert_eq!(header.leader_epoch, 7);
    assert_eq!(header.last_offset(), 4243);
}

#[test]
fn a_flipped_bit_in_the_covered_range_fails_the_crc() {
    let mut bytes = batch_of(2, 5, 0);
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    assert!(matches!(
        validate(&bytes, 1 << 20),
        Err(BatchError::CrcMismatch { .. })
    ));
}

#[test]
fn wrong_length_magic_size_and_count_are_rejected() {
    let bytes = batch_of(2, 5, 0);
    assert_eq!(
        validate(&bytes[..40], 1 << 20),
        Err(BatchError::TooShort { length_bytes: 40 })
    );
    assert!(matches!(
        validate(&bytes[..bytes.len() - 1], 1 << 20),
        Err(BatchError::LengthMismatch { .. })
    ));
    assert!(matches!(
        validate(&bytes, 50),
        Err(BatchError::TooLarge { .. })
    ));
    let mut wrong_magic = bytes.clone();
    wrong_magic[OFFSET_MAGIC] = 1;
    assert_eq!(
        validate(&wrong_magic, 1 << 20),
        Err(BatchError::UnsupportedMagic { magic: 1 })
    );
    let mut wrong_count = bytes.clone();
    wrong_count[OFFSET_RECORDS_COUNT..OFFSET_RECORDS_COUNT + 4]
        .copy_from_slice(&5i32.to_be_bytes());
    let crc = crc32c::crc32c(&wrong_count[OFFSET_ATTRIBUTES..]);
    wrong_count[OFFSET_CRC..OFFSET_CRC + 4].copy_from_slice(&crc.to_be_bytes());
    assert!(matches!(
        validate(&wrong_count, 1 << 20),
        Err(BatchError::RecordCountMismatch { .. })
    ));
}

#[test]
fn a_produced_batch_is_one_dense_data_batch_within_the_limit() {
    let checked = |bytes: &[u8], limit| CheckedBatch::produced(BytesMut::from(bytes), limit);
    let bytes = batch_of(2, 5, 0);
    let batch = checked(&bytes, bytes.len()).expect("a producer's batch");
    assert_eq!(batch.bytes(), &bytes[..]);
    assert_eq!(batch.header().records_count, 2);
    assert_eq!(
        checked(&bytes, bytes.len() - 1),
        Err(BatchError::TooLarge {
            length_bytes: bytes.len(),
            limit_bytes: bytes.len() - 1
        })
    );
    let two = [bytes.clone(), batch_of(1, 5, 0)].concat();
    assert_eq!(
        checked(&two, 1 << 20),
        Err(BatchError::SeveralBatches {
            first_batch_bytes: bytes.len(),
            actual_bytes: two.len()
        })
    );
    let mut flipped = bytes.clone();
    flipped[OFFSET_RECORDS_COUNT + 5] ^= 1;
    assert!(matches!(
        checked(&flipped, 1 << 20),
        Err(BatchError::CrcMismatch { .. })
    ));
    let control = encode_control(ControlType::Other(0), b"", 0);
    assert_eq!(checked(&control, 1 << 20), Err(BatchError::ControlBatch));
    let record = TestRecord {
        key: None,
        value: b"v".to_vec(),
        timestamp_ms: 0,
    };
    let negative = build::batch_from(
        std::slice::from_ref(&record),
        build::ProducerFields::idempotent(3, 0, -5),
    );
    assert_eq!(
        checked(&negative, 1 << 20),
        Err(BatchError::InvalidSequence {
            producer_id: 3,
            base_sequence: -5
        })
    );
    // A batch without a producer id carries sequence -1: nothing to check.
    assert!(checked(&build::batch(&[record]), 1 << 20).is_ok());
    assert!(checked(&[], 1 << 20).is_err());

    let mut stamped = checked(&bytes, 1 << 20).unwrap();
    stamped.assign_offset_and_epoch(40, 3);
    assert_eq!(
        (stamped.header().base_offset, stamped.header().leader_epoch),
        (40, 3)
    );
    let stored = CheckedBatch::stored(stamped.clone().into_bytes(), 1 << 20).unwrap();
    assert_eq!(stored, stamped, "the header follows the bytes");
    assert!(CheckedBatch::stored(BytesMut::from(&control[..]), 1 << 20).is_ok());
}

#[test]
fn a_negative_length_parses_as_an_impossible_size() {
    let mut bytes = batch_of(1, 1, 0);
    bytes[OFFSET_BATCH_LENGTH..OFFSET_BATCH_LENGTH + 4].copy_from_slice(&(-100i32).to_be_bytes());
    assert_eq!(BatchHeader::parse(&bytes).map(|h| h.size_bytes), Some(0));
    assert!(matches!(
        validate(&bytes, 1 << 20),
        Err(BatchError::LengthMismatch { .. })
    ));
}

#[test]
fn timestamp_search_finds_the_first_record_at_or_after() {
    let records: Vec<TestRecord> = [100, 90, 200, 300]
        .iter()
        .map(|&timestamp_ms| TestRecord {
            key: None,
            value: b"v".to_vec(),
            timestamp_ms,
        })
        .collect();
    let mut bytes = batch(&records);
    assign_offset_and_epoch(&mut bytes, 10, 0);
    assert_eq!(
        first_record_at_or_after(&bytes, 50).map(|found| found.0),
        Some(10)
    );
    assert_eq!(
        first_record_at_or_after(&bytes, 150).map(|found| found.0),
        Some(12)
    );
    assert_eq!(first_record_at_or_after(&bytes, 300), Some((13, 300)));
    assert_eq!(first_record_at_or_after(&bytes, 301), None);
}

proptest! {
    #[test]
    fn any_batch_round_trips_through_validation(
        values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..20),
        base_offset in 0i64..i64::MAX / 2,
        epoch in 0i32..i32::MAX,
    ) {
        let records: Vec<TestRecord> = values.iter().enumerate().map(|(i, v)| TestRecord {
            key: if i % 2 == 0 { None } else { Some(v.clone()) },
            value: v.clone(),
            timestamp_ms: 1_000 + i as i64,
        }).collect();
        let mut bytes = batch(&records);
        assign_offset_and_epoch(&mut bytes, base_offset, epoch);
        let header = validate(&bytes, usize::MAX).expect("valid");
        prop_assert_eq!(header.base_offset, base_offset);
        prop_assert_eq!(header.records_count as usize, records.len());
        let newest = 1_000 + records.len() as i64 - 1;
        prop_assert_eq!(first_record_at_or_after(&bytes, newest),
            Some((base_offset + records.len() as i64 - 1, newest)));
    }

    #[test]
    fn plain_records_round_trip_keys_values_and_tombstones(
        entries in proptest::collection::vec(
            (proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
             proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200))),
            1..30),
        base_offset in 0i64..i64::MAX / 2,
    ) {
        let records: Vec<PlainRecord<'_>> = entries.iter().enumerate().map(|(i, (key, value))| PlainRecord {
            offset: 0,
            timestamp_ms: 5_000 + i as i64,
            key: key.as_deref(),
            value: value.as_deref(),
        }).collect();
        let mut bytes = encode_plain(&records, build::ProducerFields::NONE);
        assign_offset_and_epoch(&mut bytes, base_offset, 0);
        validate(&bytes, usize::MAX).expect("valid");
        let read: Vec<PlainRecord<'_>> = plain_records(&bytes)
            .expect("uncompressed")
            .collect::<Result<_, _>>()
            .expect("well-formed");
        prop_assert_eq!(read.len(), records.len());
        for (index, (read, written)) in read.iter().zip(&records).enumerate() {
            prop_assert_eq!(read.offset, base_offset + index as i64);
            prop_assert_eq!(read.timestamp_ms, written.timestamp_ms);
            prop_assert_eq!(read.key, written.key);
            prop_assert_eq!(read.value, written.value);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_validator(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = validate(&bytes, 1 << 20);
        let _ = first_record_at_or_after(&bytes, 0);
        if let Ok(records) = plain_records(&bytes) {
            let _ = records.count();
        }
    }
}
