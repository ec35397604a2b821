//! Shared helpers for the engine's integration tests: an executor to run on, small
//! configurations that make segments roll quickly, and readers that check every batch.

#![allow(dead_code)] // each test binary uses its own subset

use std::future::Future;
use std::rc::Rc;

use bytes::BytesMut;
use engine::batch::{self, build};
use engine::{Clock, JournalConfig, LogConfig, ManualClock, PartitionLog, ReadData, SystemClock};

/// Runs `future` to completion on a fresh glommio executor (one per test, so tests may run in
/// parallel threads).
pub fn run<T: 'static>(future: impl Future<Output = T> + 'static) -> T {
    glommio::LocalExecutorBuilder::default()
        .io_memory(1 << 20)
        .make()
        .expect("a glommio executor starts")
        .run(future)
}

/// Tiny segments and indexes so that a few kilobytes exercise rolls and index lookups.
pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 16 * 1024,
        segment_age_ms_max: None,
        retention_age_ms_max: None,
        retention_bytes_max: None,
        index_interval_bytes: 512,
        batch_bytes_max: 64 * 1024,
        unflushed_bytes_max: 256 * 1024,
        tail_cache_bytes_max: 0,
        write_chunk_bytes: 8192,
        preallocate_bytes: 8192,
        producers_max: 1000,
        producer_idle_ms_max: None,
        cleaner_map_bytes_max: 1 << 20,
        ..LogConfig::default()
    }
}

/// A journal of small files, so that a few hundred kilobytes go round its ring.
pub fn small_journal() -> JournalConfig {
    JournalConfig::small()
}

pub fn system_clock() -> Rc<dyn Clock> {
    Rc::new(SystemClock)
}

pub fn manual_clock(now_ms: i64) -> (Rc<ManualClock>, Rc<dyn Clock>) {
    let clock = Rc::new(ManualClock::new(now_ms));
    (clock.clone(), clock)
}

/// A batch of `records` records whose values encode `tag`, timestamps from `timestamp_ms`.
pub fn tagged_batch(tag: u64, records: usize, value_bytes: usize, timestamp_ms: i64) -> BytesMut {
    let records: Vec<build::TestRecord> = (0..records)
        .map(|index| build::TestRecord {
            key: Some(format!("k{tag}-{index}").into_bytes()),
            value: format!("{tag}:{index}:{}", "x".repeat(value_bytes)).into_bytes(),
            timestamp_ms: timestamp_ms + index as i64,
        })
        .collect();
    BytesMut::from(&build::batch(&records)[..])
}

/// A batch of `records` records from idempotent producer `producer_id` at `epoch`, its first
/// record numbered `base_sequence`. The values name the producer and sequence.
pub fn producer_batch(
    producer_id: i64,
    epoch: i16,
    base_sequence: i32,
    records: usize,
) -> BytesMut {
    let records: Vec<build::TestRecord> = (0..records)
        .map(|index| build::TestRecord {
            key: None,
            value: format!("p{producer_id}-e{epoch}-s{base_sequence}-{index}").into_bytes(),
            timestamp_ms: 1_000,
        })
        .collect();
    let fields = build::ProducerFields::idempotent(producer_id, epoch, base_sequence);
    BytesMut::from(&build::batch_from(&records, fields)[..])
}

/// Splits concatenated batches, checking each one in full (CRC included; compacted batches
/// may hold fewer records than their offset range).
pub fn split_batches(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let header = batch::BatchHeader::parse(bytes).expect("a whole header");
        let size = header.size_bytes as usize;
        batch::validate_stored(&bytes[..size], usize::MAX).expect("every returned batch is valid");
        out.push(bytes[..size].to_vec());
        bytes = &bytes[size..];
    }
    out
}

/// Every batch from `from` to the log end, by repeated reads of at most `bytes_max`, checking
/// that offsets increase and that each read continues where the last one stopped.
pub async fn read_all(log: &PartitionLog, from: u64, bytes_max: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut offset = from;
    let end = log.log_end_offset();
    while offset < end {
        let slice = log.read(offset, bytes_max, u64::MAX).await.expect("read");
        if matches!(slice.data, ReadData::Empty) {
            panic!("empty read at {offset} below the log end {end}");
        }
        let bytes = slice.data.to_vec().expect("bytes");
        for batch_bytes in split_batches(&bytes) {
            let header = batch::BatchHeader::parse(&batch_bytes).expect("header");
            assert!(
                header.last_offset() as u64 >= offset,
                "read returned a batch before {offset}"
            );
            offset = header.last_offset() as u64 + 1;
            out.push(batch_bytes);
        }
        // Past the last batch returned; further only across a gap compaction left.
        assert!(
            slice.offset_next >= offset,
            "offset_next names the next batch"
        );
        offset = slice.offset_next;
    }
    out
}

/// A log in `dir` holding `count` batches appended as a leader appends them (batch `tag` of
/// `1 + tag % 3` records, in epoch `epoch_of(tag)`), synced, and those batches as stored: what a
/// follower copies.
pub async fn leader_log(
    dir: &std::path::Path,
    config: LogConfig,
    count: u64,
    epoch_of: impl Fn(u64) -> i32,
) -> (PartitionLog, Vec<Vec<u8>>) {
    let leader = PartitionLog::open(dir, config, system_clock())
        .await
        .expect("the leader's log opens");
    for tag in 0..count {
        leader
            .append(
                tagged_batch(tag, 1 + tag as usize % 3, 200, 0),
                epoch_of(tag),
            )
            .await
            .expect("the leader appends");
    }
    leader.sync().await.expect("the leader syncs");
    let stored = read_all(&leader, 0, 1 << 20).await;
    (leader, stored)
}

/// The bytes of a batch as appended, with the offsets and epoch the log gave it.
pub fn as_stored(mut appended: BytesMut, base_offset: u64, leader_epoch: i32) -> Vec<u8> {
    batch::assign_offset_and_epoch(&mut appended, base_offset as i64, leader_epoch);
    appended.to_vec()
}

/// A batch as another replica's log holds it, for `append_replicated`.
pub fn stored(bytes: &[u8]) -> batch::CheckedBatch {
    batch::CheckedBatch::stored(BytesMut::from(bytes), usize::MAX).expect("a stored batch")
}

/// Cases per property test: `default`, or `PROPTEST_CASES` from the environment for a longer run.
pub fn proptest_cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}
pub mod shards;
pub mod small_filesystem;
