//! A node's view of its Raft log as metadata only: where it starts, the term of every index
//! (as epoch runs, Kafka's leader-epoch cache), where it ends, how far storage has confirmed
//! it, and the voter set it carries. The record batches themselves stay on the driver's disk:
//! a partition log of gigabytes is summarised here in a few words per leader epoch.
//!
//! The log may have gaps (the cleaner removes records below the commit index and keeps
//! offsets); a gap belongs to the epoch run around it, as in Kafka, and nothing here needs to
//! know where the gaps are.
//!
//! Truncation on divergence only ever cuts at a point the core knows is a batch end (see
//! `RaftLog::divergence_point`), never inside a batch the driver stores whole, and never below
//! the commit index (asserted where a `Diverging` answer is taken).

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

    /// Where to truncate when the leader says its last epoch not after ours is `term` and
    /// ends at `end_index` (KIP-595's divergingEpoch). Every entry after the point is absent
    /// from the leader's log, and the point is a batch boundary of ours (the core does not know
    /// where our batches are, so it must not cut anywhere else):
    /// - if we hold `term` too, the lower of the two ends: entries of one term are the same
    ///   batches in every log (one leader wrote them), so the leader's end of `term` is a batch
    ///   end of ours as well;
    /// - if our last epoch not after `term` is an earlier one, the end of that epoch's run:
    ///   every later entry of ours is of a term the leader lacks. (Cutting lower, at the
    ///   leader's end, could split our batch there, and what lies before that batch may be
    ///   committed.) The next fetch, from that run's end, finds the rest of the divergence.
    ///
    /// `None` if every epoch we still hold is later than `term` (no honest leader says that).
    pub(crate) fn divergence_point(&self, end_index: Index, term: Term) -> Option<Index> {
        let (own_term, own_end) = self.end_of_epoch_at_most(term)?;
        Some(if own_term == term {
            own_end.min(end_index)
        } else {
            own_end
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn log(
        log_start: Index,
        prev_term: Term,
        runs: &[(Term, Index)],
        last_index: Index,
    ) -> RaftLog {
        RaftLog::restored(LogSummary {
            log_start,
            prev_term,
            epochs: runs
                .iter()
                .map(|(term, start_index)| EpochRun {
                    term: *term,
                    start_index: *start_index,
                })
                .collect(),
            last_index,
            voters_base: vec![1, 2, 3],
            voter_changes: Vec::new(),
        })
    }

    #[test]
    fn term_at_covers_gaps_the_log_start_boundary_and_nothing_else() {
        let log = log(5, 2, &[(3, 5), (6, 9)], 12);
        assert_eq!(log.term_at(0), Some(0));
        assert_eq!(log.term_at(3), None, "before the log start boundary");
        assert_eq!(log.term_at(4), Some(2));
        assert_eq!(log.term_at(8), Some(3));
        assert_eq!(log.term_at(9), Some(6));
        assert_eq!(log.term_at(13), None);
        assert_eq!(log.end_of_epoch_at_most(5), Some((3, 8)));
        assert_eq!(log.end_of_epoch_at_most(2), Some((2, 4)));
        assert_eq!(log.end_of_epoch_at_most(1), None);
    }

    #[test]
    fn divergence_inside_a_run_of_the_leaders_epoch_truncates_at_the_lower_end() {
        let log = log(1, 0, &[(1, 1), (2, 4)], 9);
        assert_eq!(log.divergence_point(6, 2), Some(6));
        assert_eq!(log.divergence_point(12, 2), Some(9), "our own end is lower");
    }

    #[test]
    fn divergence_at_an_epoch_we_lack_truncates_to_our_run_before_it_not_into_it() {
        // Our batch of term 1 may straddle index 5: cutting there could split it, and its
        // start may be committed. Cut where term 1 ends; the next fetch finds the rest.
        let log = log(1, 0, &[(1, 1), (3, 10)], 12);
        assert_eq!(log.divergence_point(5, 2), Some(9));
        assert_eq!(log.divergence_point(5, 0), Some(0), "nothing in common");
    }

    #[test]
    fn truncation_and_a_reset_move_the_persisted_index_back() {
        let mut log = log(1, 0, &[(1, 1), (2, 4)], 9);
        log.truncate_after(5);
        assert_eq!((log.last_index(), log.persisted_index()), (5, 5));
        assert!(
            !log.persisted(9, 2),
            "a completion for truncated entries confirms nothing"
        );
        log.reset_to(20, 4, vec![1, 2]);
        assert_eq!(
            (log.last_index(), log.last_term(), log.persisted_index()),
            (19, 4, 19)
        );
        assert_eq!(log.voters(), &[1, 2]);
    }

    #[test]
    fn advancing_the_log_start_keeps_terms_and_folds_old_voter_sets_into_the_base() {
        let mut log = log(1, 0, &[(1, 1), (2, 4), (3, 8)], 10);
        let write = log.append(vec![EntryMeta {
            first_index: 11,
            last_index: 11,
            term: 3,
            kind: EntryKind::Voters(vec![1, 2]),
        }]);
        assert!(matches!(write, LogWrite::Append { .. }));
        log.advance_start(6, 10);
        let summary = log.summary();
        assert_eq!((summary.log_start, summary.prev_term), (6, 2));
        assert_eq!(
            summary.epochs,
            vec![
                EpochRun {
                    term: 2,
                    start_index: 6
                },
                EpochRun {
                    term: 3,
                    start_index: 8
                }
            ]
        );
        assert_eq!(log.voters(), &[1, 2]);
        log.advance_start(12, 11);
        assert_eq!(log.summary().voters_base, vec![1, 2]);
        assert!(log.summary().epochs.is_empty());
        assert_eq!(log.last_term(), 3);
    }
}
