//! A node's view of its Raft log as metadata only: where it starts, the term of every index
//! (as epoch runs, Kafka's leader-epoch cache), where it ends, how far storage has confirmed
//! it, and the voter set it carries. The record batches themselves stay on the driver's disk:
//! a partition log of gigabytes is summarised here in a few words per leader epoch.
//!
//! The log may have gaps (the cleaner removes records below the commit index and keeps
//! offsets); a gap belongs to the epoch run around it, as in Kafka, and nothing here needs to
//! know where the gaps are.

use crate::message::{EntryKind, EntryMeta, Index, LogWrite, NodeId, Term};

/// Entries of `term` start at `start_index` and run until the next run's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochRun {
    pub term: Term,
    pub start_index: Index,
}

/// What the driver's log holds, as the core needs it; handed back after a restart (everything
/// on disk counts as persisted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSummary {
    /// The first index still held; entries before it are gone (retention, DeleteRecords, or a
    /// reset to a leader's log start), and were committed.
    pub log_start: Index,
    /// The term of index `log_start - 1` (0 when the log starts at 1): what a follower's
    /// fetch from `log_start` is matched against.
    pub prev_term: Term,
    /// Runs covering `log_start..=last_index`, terms and starts strictly increasing, the first
    /// starting at `log_start`; empty when the log holds nothing.
    pub epochs: Vec<EpochRun>,
    pub last_index: Index,
    /// The voter set in force at `log_start - 1`: the group's initial set, or a snapshot's.
    pub voters_base: Vec<NodeId>,
    /// Every voter-set entry from `log_start` on, by its index, in log order.
    pub voter_changes: Vec<(Index, Vec<NodeId>)>,
}

impl LogSummary {
    /// An empty log, for a group whose voters are `voters`.
    pub fn empty(voters: Vec<NodeId>) -> LogSummary {
        LogSummary {
            log_start: 1,
            prev_term: 0,
            epochs: Vec::new(),
            last_index: 0,
            voters_base: voters,
            voter_changes: Vec::new(),
        }
    }

    fn assert_valid(&self) {
        assert!(self.log_start >= 1 && self.last_index + 1 >= self.log_start);
        assert_eq!(
            self.epochs.is_empty(),
            self.last_index < self.log_start,
            "epoch runs cover exactly the held log"
        );
        if let Some(first) = self.epochs.first() {
            assert_eq!(first.start_index, self.log_start);
            assert!(first.term >= self.prev_term);
        }
        for pair in self.epochs.windows(2) {
            assert!(pair[0].term < pair[1].term && pair[0].start_index < pair[1].start_index);
        }
        assert!(self
            .epochs
            .last()
            .is_none_or(|run| run.start_index <= self.last_index));
        assert!(self
            .voter_changes
            .iter()
            .all(|(index, _)| (self.log_start..=self.last_index).contains(index)));
    }
}

#[derive(Debug, Clone)]
pub(crate) struct RaftLog {
    summary: LogSummary,
    /// Storage has confirmed the log up to here; never beyond `last_index`, never below
    /// `log_start - 1`.
    persisted_index: Index,
}

impl RaftLog {
    /// A log rebuilt from storage after a restart: everything in it is persisted.
    pub(crate) fn restored(summary: LogSummary) -> RaftLog {
        summary.assert_valid();
        let persisted_index = summary.last_index;
        RaftLog {
            summary,
            persisted_index,
        }
    }

    pub(crate) fn summary(&self) -> &LogSummary {
        &self.summary
    }

    pub(crate) fn log_start(&self) -> Index {
        self.summary.log_start
    }

    pub(crate) fn last_index(&self) -> Index {
        self.summary.last_index
    }

    pub(crate) fn last_term(&self) -> Term {
        self.summary
            .epochs
            .last()
            .map_or(self.summary.prev_term, |run| run.term)
    }

    pub(crate) fn persisted_index(&self) -> Index {
        self.persisted_index
    }

    /// The voter set in force after the last entry of the log.
    pub(crate) fn voters(&self) -> &[NodeId] {
        self.summary
            .voter_changes
            .last()
            .map_or(&self.summary.voters_base, |(_, voters)| voters)
    }

    /// The index of the last voter-set entry (0 if the log holds none).
    pub(crate) fn last_voters_index(&self) -> Index {
        self.summary
            .voter_changes
            .last()
            .map_or(0, |(index, _)| *index)
    }

    /// The position in `epochs` of the run holding `index` (which must be held).
    fn run_position(&self, index: Index) -> usize {
        self.summary
            .epochs
            .partition_point(|run| run.start_index <= index)
            - 1
    }

    /// The last index of the run at `position`.
    fn run_end(&self, position: usize) -> Index {
        self.summary
            .epochs
            .get(position + 1)
            .map_or(self.summary.last_index, |next| next.start_index - 1)
    }

    /// The term of `index`; 0 for index 0; `None` before `log_start - 1` or past the end.
    pub(crate) fn term_at(&self, index: Index) -> Option<Term> {
        if index == 0 {
            return Some(0);
        }
        if index + 1 == self.summary.log_start {
            return Some(self.summary.prev_term);
        }
        if index < self.summary.log_start || index > self.summary.last_index {
            return None;
        }
        Some(self.summary.epochs[self.run_position(index)].term)
    }

    /// The last epoch not after `term`, and where it ends in our log (KIP-595's end offset for
    /// an epoch); `None` if every epoch we still know is later.
    pub(crate) fn end_of_epoch_at_most(&self, term: Term) -> Option<(Term, Index)> {
        let position = self.summary.epochs.partition_point(|run| run.term <= term);
        if position > 0 {
            let run = self.summary.epochs[position - 1];
            return Some((run.term, self.run_end(position - 1)));
        }
        (self.summary.prev_term <= term)
            .then_some((self.summary.prev_term, self.summary.log_start - 1))
    }

    /// Where to truncate when the leader says its last epoch not after ours ends at
    /// (`end_index`, `term`): KIP-595's rule (the lower of its end and ours for that epoch),
    /// moved down to a point the core knows is a batch boundary. The result is never below
    /// `commit_index`, which is a batch boundary too (committed entries are the leader's).
    pub(crate) fn divergence_point(
        &self,
        end_index: Index,
        term: Term,
        commit_index: Index,
    ) -> Option<Index> {
        let (_, own_end) = self.end_of_epoch_at_most(term)?;
        let point = own_end.min(end_index);
        if point == own_end || point < self.summary.log_start {
            return Some(point);
        }
        let position = self.run_position(point);
        let run = self.summary.epochs[position];
        // Inside a run of `term`, both logs hold the same batches (one leader wrote them), so
        // the leader's epoch end is a batch end here too. Inside a run of an earlier term our
        // batch may straddle `point`: drop the whole run, but never a committed entry.
        if run.term == term || point == self.run_end(position) {
            Some(point)
        } else {
            Some((run.start_index - 1).max(commit_index))
        }
    }

    /// Whether a log ending at (`last_index`, `last_term`) is at least as up to date as ours:
    /// the voting rule that gives leader completeness.
    pub(crate) fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        (last_term, last_index) >= (self.last_term(), self.last_index())
    }

    /// Append `entries` at the end: contiguous batches, possibly after a gap, terms not going
    /// back. A first batch may straddle our end (a batch holding the leader's log start, which
    /// began before it); only an empty log can have that, and its first run starts at the log
    /// start anyway.
    pub(crate) fn append(&mut self, entries: Vec<EntryMeta>) -> LogWrite {
        assert!(!entries.is_empty(), "nothing to append");
        for entry in &entries {
            assert!(
                entry.first_index <= entry.last_index,
                "empty batch {entry:?}"
            );
            assert!(
                entry.last_index > self.summary.last_index,
                "overlap {entry:?}"
            );
            let last_term = self.last_term();
            assert!(entry.term >= last_term, "term goes back at {entry:?}");
            if self.summary.epochs.is_empty() {
                // A gap at the log start (the leader's cleaner removed what began there) gets
                // the first batch's term: runs cover the whole held log.
                self.summary.epochs.push(EpochRun {
                    term: entry.term,
                    start_index: self.summary.log_start,
                });
            } else if entry.term > last_term {
                self.summary.epochs.push(EpochRun {
                    term: entry.term,
                    start_index: entry.first_index,
                });
            }
            if let EntryKind::Voters(voters) = &entry.kind {
                self.summary
                    .voter_changes
                    .push((entry.last_index, voters.clone()));
            }
            self.summary.last_index = entry.last_index;
        }
        debug_assert!({
            self.summary.assert_valid();
            true
        });
        LogWrite::Append { entries }
    }

    /// Remove every entry after `after_index` (at least `log_start - 1`, below `last_index`).
    pub(crate) fn truncate_after(&mut self, after_index: Index) -> LogWrite {
        assert!(after_index + 1 >= self.summary.log_start && after_index < self.last_index());
        self.summary
            .epochs
            .retain(|run| run.start_index <= after_index);
        self.summary
            .voter_changes
            .retain(|(index, _)| *index <= after_index);
        self.summary.last_index = after_index;
        self.persisted_index = self.persisted_index.min(after_index);
        self.summary.assert_valid();
        LogWrite::Truncate { after_index }
    }

    /// Drop the whole log and start empty at `log_start`. Counts as persisted at once: until
    /// storage has done it, the old log is there, and everything before `log_start` was
    /// committed (on a majority) anyway.
    pub(crate) fn reset_to(
        &mut self,
        log_start: Index,
        prev_term: Term,
        voters: Vec<NodeId>,
    ) -> LogWrite {
        assert!(log_start >= 1);
        self.summary = LogSummary {
            log_start,
            prev_term,
            epochs: Vec::new(),
            last_index: log_start - 1,
            voters_base: voters.clone(),
            voter_changes: Vec::new(),
        };
        self.persisted_index = log_start - 1;
        LogWrite::ResetTo {
            log_start,
            prev_term,
            voters,
        }
    }

    /// The driver removed every entry before `log_start` (retention, DeleteRecords): only
    /// committed entries, so only up to `commit_index + 1`.
    pub(crate) fn advance_start(&mut self, log_start: Index, commit_index: Index) {
        assert!(log_start <= commit_index + 1 && log_start <= self.last_index() + 1);
        if log_start <= self.summary.log_start {
            return;
        }
        let prev_term = self.term_at(log_start - 1).expect("held: below last_index");
        let voters_base = self.voters_at(log_start - 1).to_vec();
        let summary = &mut self.summary;
        summary.prev_term = prev_term;
        summary.voters_base = voters_base;
        summary
            .voter_changes
            .retain(|(index, _)| *index >= log_start);
        let keep_from = summary
            .epochs
            .partition_point(|run| run.start_index <= log_start)
            .saturating_sub(1);
        summary.epochs.drain(..keep_from);
        summary.log_start = log_start;
        if log_start > summary.last_index {
            summary.epochs.clear();
        } else if let Some(first) = summary.epochs.first_mut() {
            first.start_index = log_start;
        }
        self.persisted_index = self.persisted_index.max(log_start - 1);
        self.summary.assert_valid();
    }

    /// The voter set in force at `index` (at least `log_start - 1`).
    pub(crate) fn voters_at(&self, index: Index) -> &[NodeId] {
        self.summary
            .voter_changes
            .iter()
            .rev()
            .find(|(change, _)| *change <= index)
            .map_or(&self.summary.voters_base, |(_, voters)| voters)
    }

    /// Storage confirmed every write up to the one ending at (`index`, `term`). A completion for
    /// entries since replaced (the term no longer matches) confirms nothing; by log matching, a
    /// matching (index, term) means storage holds exactly our prefix up to `index`.
    pub(crate) fn persisted(&mut self, index: Index, term: Term) -> bool {
        if index > self.persisted_index && self.term_at(index) == Some(term) {
            self.persisted_index = index;
            true
        } else {
            false
        }
    }
}
