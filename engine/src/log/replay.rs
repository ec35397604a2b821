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
//! Then every replayed log is synced, left without a close (as after a crash: its shard's open
//! scans its last segment, which replay just wrote), and the journals released, so replay runs
//! once. A crash during replay replays again: appending is idempotent here, since
//! what reached the segments is skipped.

use std::path::Path;
use std::rc::Rc;

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
    let mut dirs: Vec<std::path::PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.is_dir())
        .collect();
    dirs.sort();
    for dir in dirs {
        report.journals += 1;
        let mut partitions: Vec<(String, journal::JournaledPartition)> =
            journal::read_journal(&dir)?.into_iter().collect();
        partitions.sort_by(|a, b| a.0.cmp(&b.0));
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
                    let log = PartitionLog::open(&partition_dir, log_config(topic), clock).await?;
                    // Not closed: the replayed batches are synced, and closing would only
                    // add a seal, index files and a marker (three more syncs) that spare the
                    // shard's open a scan of one small last segment.
                    let replayed = log.replay_journaled(&partition.batches).await;
                    let replayed = replayed.map_err(|error| {
                        LogError::Corrupt(format!(
                            "cannot replay the journal {} into {key}: {error}; the broker does \
                             not start, as the journal holds acknowledged batches of it",
                            dir.display()
                        ))
                    })?;
                    Ok::<_, LogError>(replayed)
                }
            })
        });
        let mut replayed =
            futures::stream::iter(replays).buffer_unordered(PARTITIONS_REPLAYING_MAX);
        while let Some(outcome) = replayed.next().await {
            let (appended, present, gap) = outcome?;
            report.partitions += 1;
            report.batches_appended += appended;
            report.batches_present += present;
            report.partitions_with_gap += usize::from(gap);
        }
        journal::release_journal(&dir)?;
    }
    Ok(report)
}

impl PartitionLog {
    /// Appends the journaled `batches` the log lacks (the rule of the module documentation)
    /// and syncs them. Returns how many were appended and present, and whether a gap ended it.
    async fn replay_journaled(&self, batches: &[Bytes]) -> Result<(u64, u64, bool), LogError> {
        let (mut appended, mut present) = (0, 0);
        let mut gap = false;
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
            self.append_replicated(batch).await?;
            appended += 1;
        }
        self.sync().await?;
        Ok((appended, present, gap))
    }
}
