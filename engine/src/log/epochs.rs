//! The leader epochs of a log: which epoch (Raft term) wrote which offsets, as Kafka's
//! leader-epoch cache keeps it. Replication asks two questions of it that the batches could only
//! answer by reading them: "which epoch wrote offset N?" (a follower's fetch names the epoch of
//! its last offset; a mismatch means the logs diverged) and "where does epoch E end?" (where a
//! diverged follower must cut its log).
//!
//! The runs are few (one per leadership change) and kept whole in memory. They are written to
//! [`LEADER_EPOCHS_FILE`] *before* the first batch of a new epoch is appended, so the file never
//! lacks an epoch the log holds; it may name epochs whose batches a crash lost, which opening
//! trims to the recovered log end. A log from before this file existed was written with epoch 0
//! throughout (the single-node broker's only epoch), which is what an absent file means; so a
//! log whose only run is epoch 0 from its start writes no file until a second epoch comes.
//!
//! Why an absent file may stand for epoch 0 rather than being written: a new partition of a broker
//! alone then waits for no file write (and no two syncs) before its first append, which matters
//! when thousands of partitions are created at once. Once a file exists it is always rewritten
//! (`EpochRuns::absent_file_says_the_same` decides only while it is surely absent). The file is
//! replaced through io_uring like the log's other small state files, never by blocking calls on the
//! shard: a failover gives every surviving replica a new epoch at once.

use std::path::Path;

use crate::error::LogError;

/// The file the runs are kept in: a version line, then one `epoch start-offset` line per run.
pub(crate) const LEADER_EPOCHS_FILE: &str = "leader-epochs";
/// The leader epoch of every batch a partition without replication takes: its broker leads it
/// for ever, so its epoch never changes (and its log needs no `leader-epochs` file).
pub const SINGLE_BROKER_EPOCH: i32 = 0;
const FILE_VERSION: &str = "ferrite-leader-epochs 1";

/// One epoch's first offset; the run lasts until the next run's start (or the log end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochRun {
    pub epoch: i32,
    pub start_offset: u64,
}

/// The runs of a log, in increasing epoch and start offset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochRuns {
    runs: Vec<EpochRun>,
}

impl EpochRuns {
    pub fn runs(&self) -> &[EpochRun] {
        &self.runs
    }

    /// The epoch of the newest run, if any.
    pub fn last_epoch(&self) -> Option<i32> {
        self.runs.last().map(|run| run.epoch)
    }

    /// The epoch that wrote `offset`, if a run covers it (offsets past the log end are the
    /// caller's to rule out).
    pub fn epoch_at(&self, offset: u64) -> Option<i32> {
        self.runs
            .iter()
            .rev()
            .find(|run| run.start_offset <= offset)
            .map(|run| run.epoch)
    }

    /// Kafka's OffsetsForLeaderEpoch: the largest epoch at most `epoch` this log holds, and the
    /// offset where it ends (the next run's start, or `log_end_offset` for the last run).
    /// `None` if every run is newer than `epoch`.
    pub fn end_of_epoch(&self, epoch: i32, log_end_offset: u64) -> Option<(i32, u64)> {
        let position = self.runs.iter().rposition(|run| run.epoch <= epoch)?;
        let end = self
            .runs
            .get(position + 1)
            .map_or(log_end_offset, |next| next.start_offset);
        Some((self.runs[position].epoch, end))
    }

    /// Whether a batch of `epoch` starting at `base_offset` begins a new run (it must then be
    /// recorded, and persisted, before the batch is appended). A batch of an older epoch than
    /// the last run is a bug in the caller: epochs only grow along a log.
    pub fn starts_run(&self, epoch: i32, base_offset: u64) -> bool {
        match self.runs.last() {
            None => true,
            Some(last) => {
                assert!(
                    epoch >= last.epoch && base_offset >= last.start_offset,
                    "epoch {epoch} at offset {base_offset} after epoch {} from offset {}",
                    last.epoch,
                    last.start_offset
                );
                epoch > last.epoch
            }
        }
    }

    pub fn push(&mut self, epoch: i32, start_offset: u64) {
        assert!(self.starts_run(epoch, start_offset), "a new run");
        self.runs.push(EpochRun {
            epoch,
            start_offset,
        });
    }

    /// The log now ends at `end_offset`: runs that start there or later are gone.
    pub fn truncate_from(&mut self, end_offset: u64) {
        self.runs.retain(|run| run.start_offset < end_offset);
    }

    /// The log now starts at `start_offset`: runs wholly below the one holding
    /// `start_offset - 1` are dropped. That one is kept, so the epoch of the offset just before
    /// the log start (what a follower starting there names in its first fetch) is still known.
    pub fn trim_before(&mut self, start_offset: u64) {
        let keep_from = start_offset.saturating_sub(1);
        if let Some(position) = self
            .runs
            .iter()
            .rposition(|run| run.start_offset <= keep_from)
        {
            self.runs.drain(..position);
        }
    }

    /// Whether an absent file says what these runs say of a log starting at
    /// `log_start_offset`: a single run of epoch 0 from the log start (what [`read_epochs`]
    /// reads an absent file as). A new partition's first batches are of epoch 0 on a
    /// single broker, so its log needs no file written, and no syncs, before its first append:
    /// with 4 096 new partitions those were 8 192 syncs (the file's and its directory's) in the
    /// first second of a run, each holding its partition's appends (issue 16).
    pub(crate) fn absent_file_says_the_same(&self, log_start_offset: u64) -> bool {
        matches!(
            self.runs.as_slice(),
            [EpochRun { epoch: 0, start_offset }] if *start_offset == log_start_offset
        )
    }

    pub(crate) fn encode(&self) -> String {
        let mut text = format!("{FILE_VERSION}\n");
        for run in &self.runs {
            text.push_str(&format!("{} {}\n", run.epoch, run.start_offset));
        }
        text
    }

    pub(crate) fn decode(text: &str) -> Result<EpochRuns, String> {
        let mut lines = text.lines();
        if lines.next() != Some(FILE_VERSION) {
            return Err(format!("the first line is not {FILE_VERSION:?}"));
        }
        let mut runs = EpochRuns::default();
        for line in lines {
            let parsed = line
                .split_once(' ')
                .and_then(|(epoch, start)| Some((epoch.parse().ok()?, start.parse().ok()?)));
            let Some((epoch, start_offset)) = parsed else {
                return Err(format!("{line:?} is not `epoch start-offset`"));
            };
            let in_order = runs
                .runs
                .last()
                .is_none_or(|last| epoch > last.epoch && start_offset >= last.start_offset);
            if !in_order || epoch < 0 {
                return Err(format!("run {line:?} is out of order"));
            }
            runs.runs.push(EpochRun {
                epoch,
                start_offset,
            });
        }
        Ok(runs)
    }
}

/// The runs of the log in `dir` from its file's `text` (`None`: no file, a log written before
/// epochs were kept, all epoch 0 from `log_start_offset`, or an empty log), trimmed to the
/// recovered log. The open reads the file once (if its directory listing has it) and hands
/// the text here and to [`check_text`].
pub(crate) fn read_epochs(
    dir: &Path,
    text: Option<&str>,
    log_start_offset: u64,
    log_end_offset: u64,
) -> Result<EpochRuns, LogError> {
    let mut runs = match text {
        Some(text) => EpochRuns::decode(text).map_err(|problem| {
            LogError::Corrupt(format!(
                "{}: {problem}",
                dir.join(LEADER_EPOCHS_FILE).display()
            ))
        })?,
        None => {
            let mut runs = EpochRuns::default();
            if log_end_offset > log_start_offset {
                runs.push(0, log_start_offset);
            }
            runs
        }
    };
    runs.truncate_from(log_end_offset);
    runs.trim_before(log_start_offset);
    Ok(runs)
}

/// What the file is (its `text`, `None` if absent), against the runs the log was recovered
/// with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileCheck {
    pub exists: bool,
    /// It exists and says something other than the runs (after a crash it may name an epoch
    /// whose batches were lost; an absent file says what it should).
    pub stale: bool,
}

pub(crate) fn check_text(text: Option<&str>, runs: &EpochRuns) -> FileCheck {
    FileCheck {
        exists: text.is_some(),
        stale: text.is_some_and(|text| text != runs.encode()),
    }
}

/// Whether the file in `dir` is absent or says something other than `text` (the encoding of
/// the runs about to be written).
pub(crate) fn file_differs_from_text(dir: &Path, text: &str) -> Result<bool, LogError> {
    Ok(read_file(dir)?.is_none_or(|on_disk| on_disk != text))
}

fn read_file(dir: &Path) -> Result<Option<String>, LogError> {
    match std::fs::read_to_string(dir.join(LEADER_EPOCHS_FILE)) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(LogError::io("reading the leader epochs", error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(pairs: &[(i32, u64)]) -> EpochRuns {
        let mut runs = EpochRuns::default();
        for &(epoch, start) in pairs {
            runs.push(epoch, start);
        }
        runs
    }

    #[test]
    fn epochs_are_found_by_offset_and_epochs_end_where_the_next_begins() {
        let runs = runs(&[(1, 0), (3, 10), (4, 25)]);
        assert_eq!(runs.epoch_at(0), Some(1));
        assert_eq!(runs.epoch_at(9), Some(1));
        assert_eq!(runs.epoch_at(10), Some(3));
        assert_eq!(runs.epoch_at(100), Some(4));
        assert_eq!(runs.end_of_epoch(1, 40), Some((1, 10)));
        // Epoch 2 was never in this log: the answer is the largest one below it.
        assert_eq!(runs.end_of_epoch(2, 40), Some((1, 10)));
        assert_eq!(runs.end_of_epoch(4, 40), Some((4, 40)));
        assert_eq!(runs.end_of_epoch(9, 40), Some((4, 40)));
        assert_eq!(runs.end_of_epoch(0, 40), None);
    }

    #[test]
    fn a_new_epoch_starts_a_run_and_the_same_epoch_continues_it() {
        let mut runs = runs(&[(1, 0)]);
        assert!(!runs.starts_run(1, 5));
        assert!(runs.starts_run(2, 5));
        runs.push(2, 5);
        assert_eq!(runs.last_epoch(), Some(2));
    }

    #[test]
    #[should_panic(expected = "epoch 1 at offset 7 after epoch 2")]
    fn an_older_epoch_after_a_newer_one_is_a_bug() {
        let _ = runs(&[(1, 0), (2, 5)]).starts_run(1, 7);
    }

    #[test]
    fn truncation_drops_runs_from_the_new_end_and_trimming_keeps_the_epoch_before_the_start() {
        let mut truncated = runs(&[(1, 0), (3, 10), (4, 25)]);
        truncated.truncate_from(25);
        assert_eq!(truncated, runs(&[(1, 0), (3, 10)]));
        truncated.truncate_from(11);
        assert_eq!(truncated, runs(&[(1, 0), (3, 10)]));

        let mut trimmed = runs(&[(1, 0), (3, 10), (4, 25)]);
        trimmed.trim_before(11);
        assert_eq!(trimmed, runs(&[(3, 10), (4, 25)]));
        // A start at 10: offset 9 was epoch 1's, so that run stays.
        let mut at_boundary = runs(&[(1, 0), (3, 10)]);
        at_boundary.trim_before(10);
        assert_eq!(at_boundary.epoch_at(9), Some(1));
    }

    #[test]
    fn the_file_round_trips_and_damage_is_refused() {
        let original = runs(&[(0, 0), (3, 10), (7, 1 << 40)]);
        assert_eq!(EpochRuns::decode(&original.encode()), Ok(original));
        assert_eq!(
            EpochRuns::decode(&format!("{FILE_VERSION}\n")),
            Ok(EpochRuns::default())
        );
        for bad in [
            "",
            "something else\n0 0\n",
            "ferrite-leader-epochs 1\n0\n",
            "ferrite-leader-epochs 1\n3 10\n2 20\n",
            "ferrite-leader-epochs 1\n3 10\n4 5\n",
            "ferrite-leader-epochs 1\n-1 0\n",
        ] {
            assert!(EpochRuns::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_absent_file_means_epoch_0_and_a_file_is_trimmed_to_the_recovered_log() {
        let dir = tempfile::tempdir().unwrap();
        let read =
            |start, end| read_epochs(dir.path(), read_file(dir.path())?.as_deref(), start, end);
        assert_eq!(read(5, 20).unwrap(), runs(&[(0, 5)]));
        assert_eq!(read(5, 5).unwrap(), EpochRuns::default());
        std::fs::write(
            dir.path().join(LEADER_EPOCHS_FILE),
            runs(&[(1, 0), (2, 10), (3, 30)]).encode(),
        )
        .unwrap();
        // A crash lost the batches of epoch 3 (the file had been written first).
        assert_eq!(read(0, 30).unwrap(), runs(&[(1, 0), (2, 10)]));
        std::fs::write(dir.path().join(LEADER_EPOCHS_FILE), "garbage").unwrap();
        assert!(matches!(read(0, 30), Err(LogError::Corrupt(_))));
    }
}
