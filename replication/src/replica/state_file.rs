//! What a replica keeps on disk besides its partition log: the Raft term and vote (which must
//! survive a crash before any message that depends on them leaves) and the voter sets the log
//! carries (so a restart need not scan the log for voter-set entries).
//!
//! One small file in the partition directory, replaced whole (temporary file, fsync, rename,
//! directory fsync). It is written before a voter-set entry is appended, so it may name a
//! change whose entry a crash lost: opening drops changes past the recovered log end and
//! rewrites the file before anything is appended there.
//!
//! A running replica writes it without blocking its shard ([`StateFile::write_async`]: the
//! syncs go through io_uring). A replica its shard runs records new terms and votes in the
//! shard's vote log instead (`crate::votes`: one sync for all the shard's votes of a moment,
//! where a thousand elections after a broker's death cost two thousand syncs here), so this
//! file's term and vote are then a lower bound, and it is written for voter sets and vote
//! floors (and by replicas run alone, such as the controller's).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::message::{HardState, Index, NodeId, Term};

pub(crate) const STATE_FILE: &str = "raft-state.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ReplicaState {
    pub term: Term,
    pub voted_for: Option<NodeId>,
    /// The voter set in force before the log start.
    pub voters_base: Vec<NodeId>,
    /// Voter-set entries from the log start on, by index, in log order.
    pub voter_changes: Vec<(Index, Vec<NodeId>)>,
    /// Where the log ended before it gave up entries whose bytes were damaged: the core's vote
    /// floor (`node::damage`), kept until the log is back there. Absent in older files.
    #[serde(default)]
    pub vote_floor: Option<(Term, Index)>,
}

impl ReplicaState {
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            voted_for: self.voted_for,
        }
    }

    /// The log now ends at `last_index`: later changes are gone.
    pub fn truncate_after(&mut self, last_index: Index) {
        self.voter_changes.retain(|(index, _)| *index <= last_index);
    }

    /// The log now starts at `log_start`: changes before it become the base.
    pub fn advance_start(&mut self, log_start: Index) {
        while let Some((index, _)) = self.voter_changes.first() {
            if *index >= log_start {
                break;
            }
            let (_, voters) = self.voter_changes.remove(0);
            self.voters_base = voters;
        }
    }
}

pub(crate) struct StateFile {
    dir: PathBuf,
}

impl StateFile {
    pub fn new(dir: &Path) -> StateFile {
        StateFile {
            dir: dir.to_path_buf(),
        }
    }

    /// The saved state, or `None` for a replica that never ran here.
    pub fn read(&self) -> Result<Option<ReplicaState>, std::io::Error> {
        match std::fs::read(self.dir.join(STATE_FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidData, error)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Replaces the file durably, blocking the thread: for the replica's open, before anything
    /// else of it runs (never while a [`StateFile::write_async`] is under way: both use the
    /// same temporary file).
    pub fn write(&self, state: &ReplicaState) -> Result<(), std::io::Error> {
        let bytes = serde_json::to_vec(state).map_err(std::io::Error::other)?;
        engine::durable_file::replace_file_durably(&self.dir, STATE_FILE, &bytes)
    }

    /// Replaces the file durably as [`StateFile::write`] does (temporary file synced, renamed
    /// over it, directory synced), without blocking the shard. One at a time per file.
    pub async fn write_async(&self, state: &ReplicaState) -> Result<(), std::io::Error> {
        let bytes = serde_json::to_vec(state).map_err(std::io::Error::other)?;
        engine::durable_file::replace_file_durably_async(&self.dir, STATE_FILE, &bytes)
            .await
            .map_err(std::io::Error::other)
    }
}
