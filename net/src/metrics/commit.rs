//! The shards' commit cycles (journal writes and syncs, segment writes, files opened), per
//! shard, from their snapshots.

use std::fmt::Write;

use engine::CommitStats;

use super::exposition::write_family;
use super::shard::ShardSnapshot;

/// The commit cycles' counters, per shard.
pub(super) fn render_commit(out: &mut String, snapshots: &[ShardSnapshot]) {
    type CommitValue = fn(&CommitStats) -> u64;
    const SERIES: [(&str, &str, CommitValue); 11] = [
        ("ferrite_journal_writes_total", "Journal writes.", |s| {
            s.journal_writes
        }),
        ("ferrite_journal_syncs_total", "Journal fdatasyncs.", |s| {
            s.journal_syncs
        }),
        (
            "ferrite_journal_durable_writes_total",
            "Journal writes that were their own sync (RWF_DSYNC), no fdatasync after them.",
            |s| s.journal_durable_writes,
        ),
        (
            "ferrite_journal_bytes_total",
            "Bytes of journal records written.",
            |s| s.journal_bytes,
        ),
        (
            "ferrite_journal_batches_total",
            "Batches written to the journal.",
            |s| s.journal_batches,
        ),
        (
            "ferrite_journal_write_seconds_total",
            "Time the journal's writes took, summed.",
            |s| s.journal_write_micros,
        ),
        (
            "ferrite_journal_sync_seconds_total",
            "Time the journal's fdatasyncs took, summed.",
            |s| s.journal_sync_micros,
        ),
        (
            "ferrite_segment_direct_writes_total",
            "Segment writes carrying new appends (the direct path: large runs, a full journal).",
            |s| s.direct_writes,
        ),
        (
            "ferrite_segment_lazy_writes_total",
            "Segment writes of journaled batches.",
            |s| s.segment_writes,
        ),
        (
            "ferrite_journal_files_released_total",
            "Journal files released for reuse.",
            |s| s.files_released,
        ),
        (
            "ferrite_files_opened_total",
            "Segment files and partition directories opened on demand by the shard's file cache \
             (closed earlier to stay within --open-files-max, or not opened yet).",
            |s| s.files_opened,
        ),
    ];
    for (name, help, value) in SERIES {
        write_family(out, name, "counter", help);
        for (shard, snapshot) in snapshots.iter().enumerate() {
            let value = value(&snapshot.commit);
            if name.ends_with("_seconds_total") {
                let seconds = value as f64 / 1e6;
                let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {seconds}");
            } else {
                let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {value}");
            }
        }
    }
}
