//! A node's view of its Raft log: every entry it has accepted, persisted or not, and how far
//! storage has confirmed it. The log starts at index 1 (no snapshots yet), so entry `i` sits at
//! position `i - 1`.

use crate::message::{Index, LogEntry, LogWrite, Term};

#[derive(Debug, Clone, Default)]
pub(crate) struct RaftLog {
    entries: Vec<LogEntry>,
    /// Storage has confirmed entries up to here; never beyond `last_index`.
    persisted_index: Index,
}

impl RaftLog {
    /// A log rebuilt from storage after a restart: everything in it is persisted.
    pub(crate) fn restored(entries: Vec<LogEntry>) -> RaftLog {
        for (position, entry) in entries.iter().enumerate() {
            assert_eq!(entry.index, position as Index + 1, "restored log has a gap");
        }
        let persisted_index = entries.len() as Index;
        RaftLog {
            entries,
            persisted_index,
        }
    }

    pub(crate) fn entries(&self) -> &[LogEntry] {
        &self.entries
    }

    pub(crate) fn last_index(&self) -> Index {
        self.entries.len() as Index
    }

    pub(crate) fn last_term(&self) -> Term {
        self.entries.last().map_or(0, |entry| entry.term)
    }

    pub(crate) fn persisted_index(&self) -> Index {
        self.persisted_index
    }

    /// The term of entry `index`; 0 for index 0; `None` past the end.
    pub(crate) fn term_at(&self, index: Index) -> Option<Term> {
        if index == 0 {
            return Some(0);
        }
        self.entries.get(index as usize - 1).map(|entry| entry.term)
    }

    /// Entries `from..=to` (clamped to the log), at most `count_max` of them.
    pub(crate) fn slice(&self, from: Index, count_max: usize) -> Vec<LogEntry> {
        let start = (from.max(1) - 1) as usize;
        self.entries
            .iter()
            .skip(start)
            .take(count_max)
            .cloned()
            .collect()
    }

    /// Whether a log ending at (`last_index`, `last_term`) is at least as up to date as ours:
    /// the voting rule that gives leader completeness.
    pub(crate) fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        (last_term, last_index) >= (self.last_term(), self.last_index())
    }

    /// The leader's append: one new entry at the end.
    pub(crate) fn append(&mut self, entry: LogEntry) -> LogWrite {
        assert_eq!(entry.index, self.last_index() + 1);
        assert!(entry.term >= self.last_term());
        self.entries.push(entry.clone());
        LogWrite {
            from_index: entry.index,
            entries: vec![entry],
        }
    }

    /// A follower takes `entries` (contiguous, following an entry both logs share): entries it
    /// already has are skipped, the first conflicting one and everything after it is replaced.
    /// `commit_index` guards the one thing this must never do: truncate a committed entry.
    pub(crate) fn merge(&mut self, entries: &[LogEntry], commit_index: Index) -> Option<LogWrite> {
        let first_new = entries
            .iter()
            .position(|entry| self.term_at(entry.index) != Some(entry.term))?;
        let from_index = entries[first_new].index;
        assert!(
            from_index > commit_index,
            "a leader asked to overwrite committed entry {from_index} (commit {commit_index})"
        );
        assert!(
            from_index <= self.last_index() + 1,
            "gap in appended entries"
        );
        self.entries.truncate(from_index as usize - 1);
        self.persisted_index = self.persisted_index.min(from_index - 1);
        self.entries.extend_from_slice(&entries[first_new..]);
        Some(LogWrite {
            from_index,
            entries: entries[first_new..].to_vec(),
        })
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

    /// The first index of the term of entry `index` (at most `index`, at least `floor`): where
    /// a rejecting follower suggests the leader retry, skipping a whole divergent term at once.
    pub(crate) fn first_index_of_term_at(&self, index: Index, floor: Index) -> Index {
        let Some(term) = self.term_at(index) else {
            return self.last_index() + 1;
        };
        let mut first = index;
        while first > floor.max(1) && self.term_at(first - 1) == Some(term) {
            first -= 1;
        }
        first
    }
}
