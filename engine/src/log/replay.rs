//! Replay at start-up: the batches a crash left in the shards' journals are appended to their
//! logs where the segments lack them, before any partition serves.
//!
//! The rule, per partition, over its journal records in the order they were written (records
//! before its last Forget record left out: a cut or close made them moot): a batch below the
//! log end (after the log's own recovery) is already there and skipped; one at the log end is
//! appended (offsets, epoch and producer fields kept, as a follower appends its leader's
//! batch); one after it ends the replay of that partition, unless the gap is a compaction gap
//! the log already accepts (a follower copying a compacted leader). Why a gap means nothing
//! later was acknowledged: a log's batches reach the journal in order, each written only after
//! everything before it was in the journal or synced in the segment, so a batch missing in
//! between was written to the segment directly and lost with the crash before its sync, and
//! acknowledgements cover contiguous prefixes only.
//!
//! Nothing of this is synced log by log: every replayed log is opened and closed with its
//! syncs deferred (`PartitionLog::open_for_replay`), then one `syncfs` of the data directory's
//! file system makes all of it durable at once, then the logs' clean-shutdown markers are
//! written (so the shards' opens read them as cleanly closed, with no scan, write or sync),
//! then the journal is released, so replay runs once. At 10 000 partitions written once each,
//! syncing each log (its segment, its directory, its epochs and recovery point: seven
//! `fsync`s) took 18 s of a restart; one `syncfs` takes a fraction of a second.
//!
//! A crash (or power loss) before the journal's release replays again from the journal, which
//! still holds every batch: appending is idempotent here, since what reached the segments is
//! skipped, and whatever part of the unsynced work the disk kept is harmless: a segment's torn
//! tail is cut (the recovery point never moves during replay, so it is never taken for
//! damage), a marker removal that was lost leaves a marker whose log end is still a prefix of
//! what is durable, and the small state files are replaced by a synced temporary and a rename.
//! No marker is written before the `syncfs`, so none vouches for what a power loss can take.

use std::path::Path;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::{CleanMarkerDue, PartitionLog};
use crate::batch::{BatchHeader, CheckedBatch};
use crate::clock::Clock;
use crate::config::LogConfig;
use crate::error::LogError;
use crate::journal::{self, JOURNAL_DIRECTORY};

/// What replay did, for the start-up report and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Journals read (one per shard that ever ran on the data directory).
    pub journals: usize,
    /// Partitions whose journal records were looked at.
    pub partitions: usize,
    /// Batches appended to their logs.
    pub batches_appended: u64,
    /// Batches the logs already held.
    pub batches_present: u64,
    /// Partitions whose replay stopped at a gap (batches after it were never acknowledged).
    pub partitions_with_gap: usize,
    /// Where the time went, per phase, summed over the journals: what a slow restart after a
    /// crash spends it on (the start-up line prints them).
    pub phases: ReplayPhases,
}

/// Wall-clock time of each phase of a replay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayPhases {
    /// Reading and scanning the journal files.
    pub read: std::time::Duration,
    /// Opening, appending to and closing the logs (their own recovery included).
    pub logs: std::time::Duration,
    /// The `syncfs` that makes the replayed logs durable.
    pub sync: std::time::Duration,
    /// Writing the clean-shutdown markers and releasing the journal.
    pub release: std::time::Duration,
}

/// Partitions replayed at once. Replay runs before anything else, so it may use more of the
/// descriptors than a shard's opening does (three each while open: 768 of the default 1 792 a
/// shard may keep): at 3 000 partitions, one crashed after one write each, 64 at a time took
/// 24 s and 256 at a time 9 s to start (with the logs also closed at the end: 15 s).
const PARTITIONS_REPLAYING_MAX: usize = 256;

/// Replays every journal under `data_dir` (see the module documentation) and releases them.
/// `log_config` gives a topic's log configuration. Runs before the shards start: a partition's
/// records may be in another shard's journal than the one that owns it now (a changed shard
/// count, a moved replica).
pub async fn replay_journals(
    data_dir: &Path,
    log_config: &dyn Fn(&str) -> LogConfig,
    clock: Rc<dyn Clock>,
) -> Result<ReplayReport, LogError> {
    let root = data_dir.join(JOURNAL_DIRECTORY);
    let mut report = ReplayReport::default();
    let entries = match std::fs::read_dir(&root) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(report),
        Err(error) => return Err(LogError::io("listing the journals", error)),
    };
    // Opened before anything is written: `syncfs` reports the write-back errors that occur
    // after the descriptor was opened (Linux 5.8 on).
    let data_dir_file = std::fs::File::open(data_dir)
        .map_err(|error| LogError::io("opening the data directory", error))?;
    let mut dirs: Vec<std::path::PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.is_dir())
        .collect();
    dirs.sort();
    for dir in dirs {
        report.journals += 1;
        let phase_started = std::time::Instant::now();
        let mut partitions: Vec<(String, journal::JournaledPartition)> =
            journal::read_journal(&dir)?.into_iter().collect();
        partitions.sort_by(|a, b| a.0.cmp(&b.0));
        let phase_started = report.phases.read.add_elapsed(phase_started);
        // A journal names each partition once, so its partitions replay independently, many at
        // a time: each is a few small writes and syncs (the first change's marker rename, the
        // appended batches), which io_uring and the disk overlap. Journals go one after
        // another: a partition may be in two of them (a changed shard count), the older first.
        let replays = partitions.into_iter().filter_map(|(key, partition)| {
            let partition_dir = data_dir.join(&key);
            // Removed since (its removal forgot it, unless a crash came first).
            partition_dir.is_dir().then(|| {
                let clock = clock.clone();
                let dir = &dir;
                async move {
                    let topic = key
                        .rsplit_once('-')
                        .map_or(key.as_str(), |(topic, _)| topic);
                    let log =
                        PartitionLog::open_for_replay(partition_dir, log_config(topic), clock)
                            .await?;
                    let replayed = log.replay_journaled(&partition.batches).await;
                    let replayed = replayed.map_err(|error| {
                        LogError::Corrupt(format!(
                            "cannot replay the journal {} into {key}: {error}; the broker does \
                             not start, as the journal holds acknowledged batches of it",
                            dir.display()
                        ))
                    })?;
                    let marker = log.close_for_replay().await?;
                    Ok::<_, LogError>((replayed, marker))
                }
            })
        });
        let mut replayed =
            futures::stream::iter(replays).buffer_unordered(PARTITIONS_REPLAYING_MAX);
        // One per partition of this journal, which bounds them.
        let mut markers: Vec<CleanMarkerDue> = Vec::new();
        while let Some(outcome) = replayed.next().await {
            let ((appended, present, gap), marker) = outcome?;
            report.partitions += 1;
            report.batches_appended += appended;
            report.batches_present += present;
            report.partitions_with_gap += usize::from(gap);
            markers.extend(marker);
        }
        drop(replayed);
        let phase_started = report.phases.logs.add_elapsed(phase_started);
        sync_file_system(&data_dir_file)?;
        let phase_started = report.phases.sync.add_elapsed(phase_started);
        for marker in &markers {
            marker.write()?;
        }
        journal::release_journal(&dir)?;
        report.phases.release.add_elapsed(phase_started);
    }
    Ok(report)
}

trait AddElapsed {
    /// Adds the time since `started` and returns now, when the next phase starts.
    fn add_elapsed(&mut self, started: std::time::Instant) -> std::time::Instant;
}

impl AddElapsed for std::time::Duration {
    fn add_elapsed(&mut self, started: std::time::Instant) -> std::time::Instant {
        let now = std::time::Instant::now();
        *self += now - started;
        now
    }
}

/// `syncfs` of the file system holding `file`: every file's data and metadata written so far,
/// and the disk's cache flushed. Blocking: replay runs on a thread of its own, before the
/// shards start.
fn sync_file_system(file: &std::fs::File) -> Result<(), LogError> {
    use std::os::fd::AsRawFd;
    // SAFETY: `syncfs` takes a descriptor, which `file` keeps open for the call.
    if unsafe { libc::syncfs(file.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(LogError::io(
            "syncing the replayed logs (syncfs of the data directory)",
            std::io::Error::last_os_error(),
        ))
    }
}

impl PartitionLog {
    /// Appends the journaled `batches` the log lacks (the rule of the module documentation),
    /// written to the segment when the log closes, unsynced (the caller syncs the file system).
    /// Returns how many were appended and present, and whether a gap ended it.
    async fn replay_journaled(&self, batches: &[Bytes]) -> Result<(u64, u64, bool), LogError> {
        let (mut appended, mut present) = (0, 0);
        let mut gap = false;
        let mut last_receipt = None;
        let batch_bytes_max = self.config().unflushed_bytes_max;
        for bytes in batches {
            let Some(header) = BatchHeader::parse(bytes) else {
                gap = true;
                break;
            };
            let base_offset = u64::try_from(header.base_offset).unwrap_or(u64::MAX);
            let (log_end_offset, gaps_allowed_below) = {
                let state = self.shared.state.borrow();
                (state.log_end_offset, state.gaps_allowed_below)
            };
            if base_offset < log_end_offset {
                present += 1;
                continue;
            }
            if base_offset > log_end_offset && base_offset > gaps_allowed_below {
                gap = true;
                break;
            }
            let batch = CheckedBatch::stored(BytesMut::from(&bytes[..]), batch_bytes_max)?;
            last_receipt = Some(self.append_replicated(batch).await?);
            appended += 1;
        }
        // A failed write fails every append queued behind it: the last one tells.
        if let Some(receipt) = &last_receipt {
            self.wait_written(receipt).await?;
        }
        Ok((appended, present, gap))
    }
}
