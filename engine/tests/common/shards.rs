//! What the shard runtime's tests share: a runtime of three shards with small rings and queues
//! (so back-pressure is exercised), partitions made as creating their topic would, and batches
//! tagged with who wrote them.

use engine::shard::{PartitionId, RuntimeConfig};

use super::{small_config, small_journal};

pub const SHARDS: usize = 3;
pub const PARTITIONS: u32 = 6;
pub const BATCHES_PER_SHARD_AND_PARTITION: u64 = 40;

pub fn config(dir: &std::path::Path) -> RuntimeConfig {
    RuntimeConfig {
        shard_count: SHARDS,
        cpus: None,
        data_dir: dir.to_path_buf(),
        log_config: small_config(),
        resources: Default::default(),
        topic_log_config: None,
        // Small rings and queues so that back-pressure is exercised.
        mesh_ring_capacity: 4,
        outbound_queue_capacity: 2,
        retention_check_interval: std::time::Duration::from_secs(300),
        cleaner_check_interval: std::time::Duration::from_secs(300),
        replicated_partitions: None,
        journal: Some(small_journal()),
        record_rewrite: None,
    }
}

/// Makes partitions 0..`count` of `topic` exist, as creating the topic would.
pub fn create_partitions(dir: &std::path::Path, topic: &str, count: u32) {
    for partition in 0..count {
        PartitionId::new(topic, partition)
            .create_directory(dir)
            .unwrap();
    }
}

/// The tag of a batch written by `shard` to `partition`, `sequence`-th.
pub fn tag(shard: usize, partition: u32, sequence: u64) -> u64 {
    (shard as u64) << 40 | u64::from(partition) << 20 | sequence
}

pub fn tag_of(batch: &[u8]) -> u64 {
    // The first record's key is "k{tag}-0" (see `tagged_batch`); records follow the header.
    let records = &batch[engine::batch::BATCH_HEADER_BYTES..];
    for start in 0..records.len() {
        if records[start] != b'k' {
            continue;
        }
        let digits: Vec<u8> = records[start + 1..]
            .iter()
            .copied()
            .take_while(u8::is_ascii_digit)
            .collect();
        if !digits.is_empty() && records.get(start + 1 + digits.len()) == Some(&b'-') {
            return String::from_utf8(digits).unwrap().parse().unwrap();
        }
    }
    panic!("no tagged key in the batch")
}
