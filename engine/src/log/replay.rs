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
//! Why a partition's batches may be only in the journal: their lazy segment write had not happened,
//! or was not synced, or was torn; the segment's own recovery cuts such a tail off as it would any
//! torn write, since the recovery point moves only with segment syncs. The journals are read in
//! full before any shard starts: the live files in sequence order, every record that checks out
//! (the scan goes on at the next page at anything else, `journal::format`). A partition's records
//! are keyed by its directory name; a removed topic's partitions have a Forget record, and a
//! partition whose directory is gone is skipped. A journal batch that cannot be appended (or whose
//! segment write fails) stops the start: it holds an acknowledged batch.
//!
//! # Why replay never undoes a cut
//! A cut (a follower's truncation to its leader, `reset_to`, `clear_fault`; retention and
//! `DeleteRecords` move the log start instead, and replay skips anything below the log end) first
//! writes the log's journaled batches to its segments and syncs them, then makes a Forget record of
//! the log durable in the journal, and only then cuts. Replay ignores every record before the
//! Forget, so removed batches cannot come back; records after it were appended after the cut. A
//! crash between the Forget and the cut leaves the uncut log, whose extra entries were never
//! committed: the Raft core truncates them again, as after any crash. A close writes a Forget the
//! same way, so a closed log's records (a partition moved away, then re-created) are not replayed
//! into a later log of that directory; except at the shard's shutdown (`close_at_shutdown`), which
//! releases the whole journal once every log closed: a crash before that finds each closed log's
//! records already in its synced segments, and nothing can cut a log in between.
//!
//! # Start-up without syncing each log
//! Nothing of this is synced log by log: every replayed log is opened and closed with its
//! syncs deferred (`PartitionLog::open_for_replay`), then one `syncfs` of the data directory's
//! file system makes all of it durable at once, then the journal is released, so replay runs
//! once. At 10 000 partitions written once each, syncing each log (its segment, its directory,
//! its epochs and recovery point: seven `fsync`s) took 18 s of a restart; one `syncfs` takes a
//! fraction of a second.
//!
//! Such a log skips every `fdatasync` and directory sync, never moves its recovery point, and does
//! not rewrite a leader-epochs file that already says what it would write; it is closed written but
//! not trimmed (the last page's padding is left, see `recovery`; no indexes for a small segment).
//! The descriptor the `syncfs` goes through is opened before
//! replay writes anything, so write-back errors since are reported to it. The start-up line that
//! reports a replay gives its time per phase (reading the journals; opening, appending to and
//! closing the logs; the `syncfs`; the release), so a slow restart says where its time went.
//!
//! No clean-shutdown marker is written for a replayed log: creating one file per partition
//! after the `syncfs` took as long as the replay of the logs itself at 10 000 partitions. What
//! a marker would tell the shard's open (the files are as a close left them, durable, ending
//! at this log end) is handed over in memory instead ([`ReplayedLogs`]): the shards start in
//! the same process right after, and the first open of each replayed log reads it as after a
//! clean close (no scan past the last index entry, no sync, no write) and owes the marker to
//! its own close, which writes it if the files have not changed by then. The hand-off dies
//! with the process; nothing on disk vouches for anything, so every crash leaves what a crash
//! always leaves, which recovery handles without it:
//! - before the `syncfs`, or after it and before the journal's release (or during it): the
//!   next start replays again from the journal, which still holds every batch: appending is
//!   idempotent here, since what reached the segments is skipped, and whatever part of the
//!   unsynced work the disk kept is harmless: a segment's torn tail is cut (the recovery point
//!   never moves during replay, so it is never taken for damage), a marker removal that was
//!   lost leaves a marker whose log end is still a prefix of what is durable, and the small
//!   state files are replaced by a synced temporary and a rename;
//! - after the release, before or after the shards' opens: the replayed logs have no marker,
//!   so the next open recovers each as after a crash (its last segment scanned in full, a
//!   torn tail cut, syncs), which finds what the `syncfs` made durable.
//!
//! The first open takes the hand-off's entry (`PartitionLog::open_in_after_replay`), so no later
//! open uses it, and only if the directory's last segment is still the one replay closed (a
//! directory emptied and made again since holds none). The log then owes its marker
//! (`CleanMarker::Owed`): its close writes the marker and nothing else while the files are
//! unchanged, and its first change has no file to remove. Its recovery point on disk stays where
//! the crash left it until it next moves, so a later crash only scans more of its last segment. The
//! price is that the next clean shutdown writes one marker per replayed log still unchanged: a cost
//! moved to the shutdown, not removed (writing them in the background after the start would compete
//! with the reads that follow a restart).

use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::PartitionLog;
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
    /// Releasing the journal.
    pub release: std::time::Duration,
}

/// Partitions replayed at once. Replay runs before anything else, so it may use more of the
/// descriptors than a shard's opening does (three each while open: 768 of the default 1 792 a
/// shard may keep): at 3 000 partitions, one crashed after one write each, 64 at a time took
/// 24 s and 256 at a time 9 s to start (with the logs also closed at the end: 15 s).
const PARTITIONS_REPLAYING_MAX: usize = 256;

/// What replay hands the shards: its report, and the logs it left closed without a marker.
pub struct Replayed {
    pub report: ReplayReport,
    pub logs: ReplayedLogs,
}

/// What a replayed log's clean-shutdown marker would have said (see the module documentation):
/// its files are as replay's close left them, durable since the `syncfs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReplayedLog {
    /// The base offset of the active segment replay closed: the open takes the hand-off only if
    /// the directory's last segment is still that one.
    pub(crate) active_base_offset: u64,
    pub(crate) log_end_offset: u64,
}

/// The logs replay closed, by partition directory name, until each one's first open takes its
/// entry ([`PartitionLog::open_in_after_replay`]). Shared by the shards (any of them may own a
/// replayed partition), locked only by those opens; one entry per replayed partition at most,
/// which bounds it.
#[derive(Debug, Default)]
pub struct ReplayedLogs {
    logs: Mutex<HashMap<String, ReplayedLog>>,
}

impl ReplayedLogs {
    /// Takes the entry of the partition directory `key`: only a log's first open after the
    /// replay may use it (a later one finds the marker its close wrote, or a changed log).
    pub(crate) fn take(&self, key: &str) -> Option<ReplayedLog> {
        self.lock().remove(key)
    }

    /// Replayed logs not opened since.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ReplayedLog>> {
        // A panic while holding it left the map whole (each use is one insert or remove).
        self.logs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Replays every journal under `data_dir` (see the module documentation) and releases them.
/// `log_config` gives a topic's log configuration. Runs before the shards start: a partition's
/// records may be in another shard's journal than the one that owns it now (a changed shard
/// count, a moved replica).
pub async fn replay_journals(
    data_dir: &Path,
    log_config: &dyn Fn(&str) -> LogConfig,
    clock: Rc<dyn Clock>,
) -> Result<Replayed, LogError> {
    let root = data_dir.join(JOURNAL_DIRECTORY);
    let mut report = ReplayReport::default();
    let mut replayed_logs: HashMap<String, ReplayedLog> = HashMap::new();
    let entries = match std::fs::read_dir(&root) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Replayed {
                report,
                logs: ReplayedLogs::default(),
            })
        }
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
    // The partition directories, listed once (a `stat` of each journaled partition's directory
    // was 10 000 system calls at 10 000 partitions): replay never creates or removes one.
    let partition_dirs = crate::catalog::directory_names(data_dir)
        .map_err(|error| LogError::io("listing the data directory", error))?;
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
            // Removed since (its removal forgot it, unless a crash came first).
            partition_dirs.contains(&key).then(|| {
                let clock = clock.clone();
                let dir = &dir;
                async move {
                    let partition_dir = data_dir.join(&key);
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
                    let closed = log.close_for_replay().await?;
                    Ok::<_, LogError>((key, replayed, closed))
                }
            })
        });
        let mut replayed =
            futures::stream::iter(replays).buffer_unordered(PARTITIONS_REPLAYING_MAX);
        while let Some(outcome) = replayed.next().await {
            let (key, (appended, present, gap), closed) = outcome?;
            report.partitions += 1;
            report.batches_appended += appended;
            report.batches_present += present;
            report.partitions_with_gap += usize::from(gap);
            // `None`: its marker is still there, the files as a clean close left them. A
            // partition in an earlier journal too was closed again just now: the later entry.
            if let Some(closed) = closed {
                replayed_logs.insert(key, closed);
            }
        }
        drop(replayed);
        let phase_started = report.phases.logs.add_elapsed(phase_started);
        sync_file_system(&data_dir_file)?;
        let phase_started = report.phases.sync.add_elapsed(phase_started);
        journal::release_journal(&dir)?;
        report.phases.release.add_elapsed(phase_started);
    }
    Ok(Replayed {
        report,
        logs: ReplayedLogs {
            logs: Mutex::new(replayed_logs),
        },
    })
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
