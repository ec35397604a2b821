//! The partitions and groups the shards published in their [`ShardSnapshot`]s: one series per
//! partition (listed by its owner only), and per group its members, committed offsets and lag.
//! Anything that combines several shards' state (a group's lag against a partition's
//! high-water mark) is worked out here, from the snapshots: engine state is never read from the
//! metrics thread.

use std::collections::HashMap;
use std::fmt::Write;

use crate::groups::shard::GroupStats;
use crate::groups::TopicPartition;
use engine::shard::PartitionStats;

use super::exposition::{label_value, write_family};
use super::shard::ShardSnapshot;

/// The per-partition series: name, kind, help text, and the value from the owning shard's
/// number and its statistics of the partition.
type PartitionValue = fn(usize, &PartitionStats) -> u64;
const PARTITION_SERIES: [(&str, &str, &str, PartitionValue); 11] = [
    (
        "ferrite_partition_log_start_offset",
        "gauge",
        "First offset still in the partition's log.",
        |_, p| p.log_start_offset,
    ),
    (
        "ferrite_partition_high_watermark",
        "gauge",
        "Offset after the last record consumers can read (the log end offset).",
        |_, p| p.high_watermark,
    ),
    (
        "ferrite_partition_size_bytes",
        "gauge",
        "Bytes of record batches in the partition's segments.",
        |_, p| p.size_bytes,
    ),
    (
        "ferrite_partition_segments",
        "gauge",
        "Segment files of the partition's log.",
        |_, p| p.segment_count as u64,
    ),
    (
        "ferrite_partition_shard",
        "gauge",
        "The shard (thread, core) that owns the partition's log.",
        |shard, _| shard as u64,
    ),
    (
        "ferrite_partition_healthy",
        "gauge",
        "1 while the partition's log here can be written; 0 after a failed write or sync, \
         until it recovers (a replica by itself, a single broker's log after a failed sync \
         only by a restart).",
        |_, p| u64::from(p.healthy),
    ),
    (
        "ferrite_partition_damaged_offsets",
        "gauge",
        "Offsets of the partition refused to readers (CORRUPT_MESSAGE) because their bytes on \
         disk are damaged; 0 unless the disk lost data (see `ferrite repair-log`).",
        |_, p| p.damaged_offsets,
    ),
    (
        "ferrite_partition_damage_found_total",
        "counter",
        "Damaged ranges found in the partition's log since it was opened (when opened, or by a \
         read), including those since fetched again from a leader.",
        |_, p| p.damage_found,
    ),
    (
        "ferrite_partition_last_stable_offset",
        "gauge",
        "Offset up to which read_committed consumers read: the first offset of the oldest open \
         transaction, or the high-water mark when none is open.",
        |_, p| p.last_stable_offset,
    ),
    (
        "ferrite_partition_last_stable_offset_lag",
        "gauge",
        "High-water mark minus last stable offset: records written that read_committed \
         consumers cannot read yet, because a transaction before them is still open.",
        |_, p| p.high_watermark.saturating_sub(p.last_stable_offset),
    ),
    (
        "ferrite_partition_open_transactions",
        "gauge",
        "Transactions open in the partition (written, their marker not yet).",
        |_, p| p.open_transactions as u64,
    ),
];

/// Renders what the shards published: one series per partition (listed by its owner only),
/// and per group its members, committed offsets and lag. The lag of a group on a partition is
/// the partition's high-water mark (from the owner's snapshot) minus the committed offset; it
/// is left out while the owner has not opened the partition since start-up.
pub(super) fn render_snapshots(out: &mut String, snapshots: &[ShardSnapshot]) {
    let mut partitions: Vec<(usize, &PartitionStats)> = snapshots
        .iter()
        .enumerate()
        .flat_map(|(shard, snapshot)| snapshot.partitions.iter().map(move |stats| (shard, stats)))
        .collect();
    partitions.sort_by(|(_, a), (_, b)| a.partition.cmp(&b.partition));
    for (name, kind, help, value) in PARTITION_SERIES {
        write_family(out, name, kind, help);
        for (shard, stats) in &partitions {
            let topic = label_value(&stats.partition.topic);
            let partition = stats.partition.partition;
            let _ = writeln!(
                out,
                "{name}{{topic=\"{topic}\",partition=\"{partition}\"}} {}",
                value(*shard, stats)
            );
        }
    }
    let mut groups: Vec<&GroupStats> = snapshots
        .iter()
        .flat_map(|snapshot| &snapshot.groups)
        .collect();
    groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
    write_family(
        out,
        "ferrite_group_members",
        "gauge",
        "Members of the consumer group.",
    );
    for group in &groups {
        let _ = writeln!(
            out,
            "ferrite_group_members{{group=\"{}\",state=\"{}\"}} {}",
            label_value(&group.group_id),
            group.state.name(),
            group.members
        );
    }
    let high_watermarks: HashMap<(&str, i32), u64> = partitions
        .iter()
        .map(|(_, stats)| {
            let key = (
                stats.partition.topic.as_str(),
                stats.partition.partition as i32,
            );
            (key, stats.high_watermark)
        })
        .collect();
    let committed = || {
        groups.iter().flat_map(|group| {
            group
                .offsets
                .iter()
                .map(move |(partition, offset)| (group, partition, *offset))
        })
    };
    let series = |group: &GroupStats, partition: &TopicPartition| {
        format!(
            "{{group=\"{}\",topic=\"{}\",partition=\"{}\"}}",
            label_value(&group.group_id),
            label_value(&partition.topic),
            partition.partition
        )
    };
    write_family(
        out,
        "ferrite_group_committed_offset",
        "gauge",
        "The group's committed offset on the partition.",
    );
    for (group, partition, offset) in committed() {
        let labels = series(group, partition);
        let _ = writeln!(out, "ferrite_group_committed_offset{labels} {offset}");
    }
    write_family(
        out,
        "ferrite_group_lag",
        "gauge",
        "Records of the partition after the group's committed offset (high-water mark minus \
         committed offset, at least 0).",
    );
    for (group, partition, offset) in committed() {
        let key = (partition.topic.as_str(), partition.partition);
        if let Some(&high_watermark) = high_watermarks.get(&key) {
            let lag = (high_watermark as i64).saturating_sub(offset).max(0);
            let labels = series(group, partition);
            let _ = writeln!(out, "ferrite_group_lag{labels} {lag}");
        }
    }
}
