//! The Raft term and vote of every replica of a shard, in one append-only file per shard
//! (`<data-dir>/raft-votes/shard-N`): when a broker dies, the groups it led elect new leaders
//! at once, and a term or vote must be durable before the message that depends on it leaves.
//! Written to each partition's `raft-state.json` (a temporary file synced, renamed, the
//! directory synced), a thousand elections cost two thousand syncs per surviving broker, and
//! 3 000 partitions at RF=3 took 15.8 s or more to fail over (issue 16). Here one write and one
//! `fdatasync` at a time carries every vote queued meanwhile (group commit: an idle shard
//! records one vote at once, a busy one everything that arrived during the last sync).
//!
//! A replica hands its new term and vote to [`VoteLog::record`] and holds its messages and log
//! writes until the answer says they are durable, as it did for its state file (see
//! `replica`). `raft-state.json` keeps the voter sets and the vote floor, and a term and vote
//! that are only a lower bound: a replica opens at the newer of the two ([`Vote::newer`]).
//!
//! Records: `[u32 len][u32 CRC-32C][u64 term][u64 voted_for + 1][partition directory name]`,
//! little-endian. Invariants: a vote is acknowledged to the replica only once its record is
//! synced, and nothing is ever appended after a torn record (each run starts empty files). A
//! replica writes its `raft-state.json` before any vote, which is what lets recovery drop the
//! votes of partitions that have none.
//!
//! Recovery ([`RecoveredVotes::recover`], once per process before any shard starts, whatever
//! the shard count was before): every file of the directory is read (a record counts only
//! whole with a good CRC-32C, so a crash's torn tail, never acknowledged, is ignored), the
//! newest vote per partition kept (keyed by the name of the partition's directory, which is in
//! the data directory), those of partitions whose `raft-state.json` is gone dropped (a deleted
//! topic), the rest written durably to `base`, and every other file removed; each shard then
//! starts an empty file of its own. A shard's file is compacted in place of its next append
//! once it holds [`COMPACT_RECORDS_MIN`] records and four times as many as partitions: it is
//! replaced durably by one holding each partition's latest vote, so it stays bounded by the
//! shard's partition count. A failed write or sync fails the records it carried (their
//! replicas fault, and come back writing `raft-state.json`) and every later one: the shard's
//! replicas then record their votes in their state files, as without a vote log.

use std::borrow::Borrow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::Hash;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use futures::channel::oneshot;

use crate::message::{HardState, NodeId, Term};
use crate::replica::STATE_FILE;

/// The directory of the vote logs, in the data directory.
const VOTES_DIR: &str = "raft-votes";
/// The merged votes of earlier runs.
const BASE_FILE: &str = "base";
/// Bytes before a record's payload: its length and CRC-32C.
const RECORD_HEADER_BYTES: usize = 8;
/// A payload's term and vote, before the partition's directory name.
const PAYLOAD_FIXED_BYTES: usize = 16;
/// Longer payloads are not ours (a topic name is at most 249 bytes).
const PAYLOAD_BYTES_MAX: usize = 4096;
/// A shard's file is compacted once it holds this many records (and four times as many as
/// partitions): about 200 KiB of a few thousand partitions' votes.
pub const COMPACT_RECORDS_MIN: u64 = 4096;

/// A replica's term and vote, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vote {
    pub term: Term,
    pub voted_for: Option<NodeId>,
}

impl Vote {
    /// Whether `self` comes later than `other` in one replica's history: terms only grow, and
    /// within a term a vote is cast once and never changes.
    pub fn newer(&self, other: &Vote) -> bool {
        (self.term, self.voted_for.is_some()) > (other.term, other.voted_for.is_some())
    }
}

impl From<HardState> for Vote {
    fn from(hard_state: HardState) -> Vote {
        Vote {
            term: hard_state.term,
            voted_for: hard_state.voted_for,
        }
    }
}

/// Why a vote was not recorded; the replica faults (it may have counted on it).
#[derive(Debug, Clone, thiserror::Error)]
#[error("the shard's vote log ({path}): {reason}")]
pub struct VoteLogError {
    path: String,
    reason: String,
}

/// Keeps the newer of `vote` and the one `votes` holds for `key` (recovery's merge of files,
/// a shard's queue of votes to write).
fn merge<K: Eq + Hash + Borrow<str>>(
    votes: &mut HashMap<K, Vote>,
    key: &str,
    vote: Vote,
    owned: impl FnOnce() -> K,
) {
    match votes.get_mut(key) {
        Some(known) if !vote.newer(known) => {}
        Some(known) => *known = vote,
        None => {
            votes.insert(owned(), vote);
        }
    }
}

fn encode_record(out: &mut Vec<u8>, key: &str, vote: &Vote) {
    let mut payload = Vec::with_capacity(PAYLOAD_FIXED_BYTES + key.len());
    payload.extend_from_slice(&vote.term.to_le_bytes());
    // 0: no vote; a node id is stored plus one.
    let voted_for = vote.voted_for.map_or(0, |node| node.saturating_add(1));
    payload.extend_from_slice(&voted_for.to_le_bytes());
    payload.extend_from_slice(key.as_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
}

/// The whole records at the start of `bytes`, each handed to `each`; stops at the first that
/// is torn or damaged (what a crash left after the last acknowledged one).
fn decode_records(bytes: &[u8], mut each: impl FnMut(&str, Vote)) {
    let mut rest = bytes;
    while rest.len() >= RECORD_HEADER_BYTES {
        let length = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        if !(PAYLOAD_FIXED_BYTES..=PAYLOAD_BYTES_MAX).contains(&length)
            || rest.len() < RECORD_HEADER_BYTES + length
        {
            return;
        }
        let payload = &rest[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + length];
        if crc32c::crc32c(payload) != crc {
            return;
        }
        let term = u64::from_le_bytes(payload[0..8].try_into().expect("8 bytes"));
        let voted_for = u64::from_le_bytes(payload[8..16].try_into().expect("8 bytes"));
        let Ok(key) = std::str::from_utf8(&payload[PAYLOAD_FIXED_BYTES..]) else {
            return;
        };
        let voted_for = voted_for.checked_sub(1);
        each(key, Vote { term, voted_for });
        rest = &rest[RECORD_HEADER_BYTES + length..];
    }
}

fn encode_all<'a>(votes: impl Iterator<Item = (&'a str, &'a Vote)>) -> Vec<u8> {
    let mut bytes = Vec::new();
    for (key, vote) in votes {
        encode_record(&mut bytes, key, vote);
    }
    bytes
}

/// The votes earlier runs recorded, merged at start-up (see the module documentation); every
/// shard's [`VoteLog`] starts from them.
#[derive(Debug)]
pub struct RecoveredVotes {
    data_dir: PathBuf,
    dir: PathBuf,
    votes: HashMap<String, Vote>,
}

impl RecoveredVotes {
    /// Reads and merges every vote log of `data_dir`, writes the result to one file durably
    /// and removes the others. Blocks: for start-up, before any shard runs.
    pub fn recover(data_dir: &Path) -> std::io::Result<Arc<RecoveredVotes>> {
        let dir = data_dir.join(VOTES_DIR);
        std::fs::create_dir_all(&dir)?;
        let mut votes = HashMap::new();
        let mut merged_files = Vec::new();
        // The base first: every shard file holds later records than it.
        let mut names: Vec<String> = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            names.push(name);
        }
        names.sort_by_key(|name| name != BASE_FILE);
        for name in names {
            let path = dir.join(&name);
            if name.ends_with(".tmp") {
                // A compaction or a merge a crash interrupted: the file it was to replace
                // still holds everything. Gone before the merge writes its own.
                match std::fs::remove_file(&path) {
                    Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                        return Err(error)
                    }
                    _ => continue,
                }
            }
            let bytes = std::fs::read(&path)?;
            decode_records(&bytes, |key, vote| {
                merge(&mut votes, key, vote, || key.to_owned())
            });
            if name != BASE_FILE {
                merged_files.push(path);
            }
        }
        // A partition without a state file is gone (or new): its votes were of a deleted one.
        votes.retain(|key, _| data_dir.join(key).join(STATE_FILE).exists());
        let mut keys: Vec<&String> = votes.keys().collect();
        keys.sort();
        let bytes = encode_all(keys.into_iter().map(|key| (key.as_str(), &votes[key])));
        engine::durable_file::replace_file_durably(&dir, BASE_FILE, &bytes)?;
        for path in merged_files {
            std::fs::remove_file(path)?;
        }
        std::fs::File::open(&dir)?.sync_all()?;
        Ok(Arc::new(RecoveredVotes {
            data_dir: data_dir.to_path_buf(),
            dir,
            votes,
        }))
    }

    /// The newest vote recorded for the partition whose directory is named `key`.
    pub fn vote(&self, key: &str) -> Option<Vote> {
        self.votes.get(key).copied()
    }

    /// The data directory whose partitions the votes are of.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

struct LogState {
    /// The shard's file, opened at its first write (and again after a compaction).
    file: Option<Rc<glommio::io::BufferedFile>>,
    end_offset: u64,
    records_in_file: u64,
    /// The latest durable vote of each partition the shard recorded (what compaction keeps).
    durable: HashMap<Rc<str>, Vote>,
    /// Votes to write next, the latest per partition: at most one per replica of the shard.
    queued: HashMap<Rc<str>, Vote>,
    /// Who waits for the queued votes (one per `record` since the last write began).
    waiters: Vec<oneshot::Sender<Result<(), VoteLogError>>>,
    writing: bool,
    failed: Option<VoteLogError>,
}

/// One shard's vote log (see the module documentation). Runs on its shard.
pub struct VoteLog {
    recovered: Arc<RecoveredVotes>,
    name: String,
    state: RefCell<LogState>,
}

impl VoteLog {
    /// Starts shard `shard_id`'s file, empty (what an earlier run left was merged by
    /// [`RecoveredVotes::recover`]). Blocks on creating it: for the shard's start.
    pub fn create(recovered: Arc<RecoveredVotes>, shard_id: usize) -> std::io::Result<Rc<VoteLog>> {
        let name = format!("shard-{shard_id}");
        engine::durable_file::replace_file_durably(&recovered.dir, &name, &[])?;
        Ok(Rc::new(VoteLog {
            recovered,
            name,
            state: RefCell::new(LogState {
                file: None,
                end_offset: 0,
                records_in_file: 0,
                durable: HashMap::new(),
                queued: HashMap::new(),
                waiters: Vec::new(),
                writing: false,
                failed: None,
            }),
        }))
    }

    /// Whether replicas in `dir` can keep their votes here: their directory is in the data
    /// directory the recovery read (the key is its name).
    pub fn serves(&self, dir: &Path) -> bool {
        dir.parent() == Some(self.recovered.data_dir.as_path()) && dir.file_name().is_some()
    }

    /// Whether a write failed: replicas keep their votes in their state files from then on.
    pub fn failed(&self) -> bool {
        self.state.borrow().failed.is_some()
    }

    /// The latest durable vote of the partition named `key`, from this run or an earlier one.
    pub fn durable_vote(&self, key: &str) -> Option<Vote> {
        let recovered = self.recovered.votes.get(key).copied();
        let own = self.state.borrow().durable.get(key).copied();
        match (recovered, own) {
            (Some(a), Some(b)) => Some(if b.newer(&a) { b } else { a }),
            (a, b) => a.or(b),
        }
    }

    /// Queues `vote` of the partition named `key`; the answer comes once it is durable (or
    /// could not be made so).
    pub fn record(
        self: &Rc<Self>,
        key: &Rc<str>,
        vote: Vote,
    ) -> oneshot::Receiver<Result<(), VoteLogError>> {
        let (sender, receiver) = oneshot::channel();
        let mut state = self.state.borrow_mut();
        if let Some(error) = &state.failed {
            let _ = sender.send(Err(error.clone()));
            return receiver;
        }
        merge(&mut state.queued, key, vote, || key.clone());
        state.waiters.push(sender);
        let start_writer = !std::mem::replace(&mut state.writing, true);
        drop(state);
        if start_writer {
            // Not while the state is borrowed: the writer may run at once.
            glommio::spawn_local(self.clone().run_writes()).detach();
        }
        receiver
    }

    fn error(&self, reason: impl std::fmt::Display) -> VoteLogError {
        VoteLogError {
            path: self.recovered.dir.join(&self.name).display().to_string(),
            reason: reason.to_string(),
        }
    }

    /// Writes what is queued, one write and one sync at a time, until nothing is.
    async fn run_writes(self: Rc<Self>) {
        loop {
            let (batch, waiters) = {
                let mut state = self.state.borrow_mut();
                if state.queued.is_empty() {
                    state.writing = false;
                    return;
                }
                let batch: Vec<(Rc<str>, Vote)> = state.queued.drain().collect();
                (batch, std::mem::take(&mut state.waiters))
            };
            let result = match self.compact_if_due().await {
                Ok(()) => self.append(&batch).await,
                Err(error) => Err(error),
            };
            {
                let mut state = self.state.borrow_mut();
                match &result {
                    Ok(()) => {
                        for (key, vote) in batch {
                            state.durable.insert(key, vote);
                        }
                    }
                    Err(error) => {
                        eprintln!(
                            "ferrite: {error}; this shard's replicas record their votes in \
                             their raft-state.json from now on"
                        );
                        state.failed = Some(error.clone());
                        // Nothing more is written: what was queued meanwhile fails too.
                        state.queued.clear();
                        let mut later = std::mem::take(&mut state.waiters);
                        for waiter in later.drain(..) {
                            let _ = waiter.send(Err(error.clone()));
                        }
                    }
                }
            }
            for waiter in waiters {
                let _ = waiter.send(result.clone());
            }
            if result.is_err() {
                self.state.borrow_mut().writing = false;
                return;
            }
        }
    }

    async fn append(&self, batch: &[(Rc<str>, Vote)]) -> Result<(), VoteLogError> {
        let bytes = encode_all(batch.iter().map(|(key, vote)| (&**key, vote)));
        let length = bytes.len();
        let (file, offset) = {
            let state = self.state.borrow();
            (state.file.clone(), state.end_offset)
        };
        let file = match file {
            Some(file) => file,
            None => {
                let path = self.recovered.dir.join(&self.name);
                let opened = glommio::io::OpenOptions::new()
                    .write(true)
                    .buffered_open(&path)
                    .await
                    .map_err(|error| self.error(error))?;
                let opened = Rc::new(opened);
                self.state.borrow_mut().file = Some(opened.clone());
                opened
            }
        };
        let written = file
            .write_at(bytes, offset)
            .await
            .map_err(|error| self.error(error))?;
        if written != length {
            return Err(self.error("a short write"));
        }
        file.fdatasync().await.map_err(|error| self.error(error))?;
        let mut state = self.state.borrow_mut();
        state.end_offset = offset + length as u64;
        state.records_in_file += batch.len() as u64;
        Ok(())
    }

    /// Replaces the file by one holding each partition's latest vote once it has grown past
    /// its bound (see the module documentation).
    async fn compact_if_due(&self) -> Result<(), VoteLogError> {
        let (bytes, records) = {
            let state = self.state.borrow();
            let partitions = state.durable.len() as u64;
            if state.records_in_file < COMPACT_RECORDS_MIN.max(4 * partitions) {
                return Ok(());
            }
            let bytes = encode_all(state.durable.iter().map(|(key, vote)| (&**key, vote)));
            (bytes, partitions)
        };
        let old = self.state.borrow_mut().file.take();
        // This task is the file's only writer, so no write holds a clone of it now.
        if let Some(file) = old.and_then(|old| Rc::try_unwrap(old).ok()) {
            file.close().await.map_err(|error| self.error(error))?;
        }
        let length = bytes.len() as u64;
        engine::durable_file::replace_file_durably_async(&self.recovered.dir, &self.name, &bytes)
            .await
            .map_err(|error| self.error(error))?;
        let mut state = self.state.borrow_mut();
        state.end_offset = length;
        state.records_in_file = records;
        Ok(())
    }
}

/// The key of a replica whose directory is `dir` (see [`VoteLog::serves`]).
pub fn key_of(dir: &Path) -> Option<Rc<str>> {
    dir.file_name()
        .map(|name| Rc::from(name.to_string_lossy().as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vote(term: Term, voted_for: Option<NodeId>) -> Vote {
        Vote { term, voted_for }
    }

    #[test]
    fn records_decode_as_encoded_and_a_torn_or_damaged_tail_is_ignored() {
        let mut bytes = Vec::new();
        encode_record(&mut bytes, "topic-0", &vote(3, Some(2)));
        encode_record(&mut bytes, "topic-1", &vote(7, None));
        let whole = bytes.len();
        encode_record(&mut bytes, "topic-2", &vote(9, Some(0)));
        let mut decoded = Vec::new();
        decode_records(&bytes, |key, vote| decoded.push((key.to_owned(), vote)));
        assert_eq!(
            decoded,
            vec![
                ("topic-0".to_owned(), vote(3, Some(2))),
                ("topic-1".to_owned(), vote(7, None)),
                ("topic-2".to_owned(), vote(9, Some(0))),
            ]
        );
        for cut in whole..bytes.len() {
            let mut decoded = 0;
            decode_records(&bytes[..cut], |_, _| decoded += 1);
            assert_eq!(decoded, 2, "a record torn at byte {cut} is ignored");
        }
        let mut damaged = bytes.clone();
        *damaged.last_mut().expect("bytes") ^= 1;
        let mut decoded = 0;
        decode_records(&damaged, |_, _| decoded += 1);
        assert_eq!(decoded, 2);
    }

    #[test]
    fn a_later_term_or_a_vote_cast_in_the_same_term_is_newer() {
        assert!(vote(2, None).newer(&vote(1, Some(3))));
        assert!(vote(2, Some(1)).newer(&vote(2, None)));
        assert!(!vote(2, None).newer(&vote(2, Some(1))));
        assert!(!vote(1, Some(1)).newer(&vote(1, Some(1))));
    }

    /// What a kill -9 leaves: every vote whose record was acknowledged is recovered, whatever
    /// came after it (a torn record), from any shard's file, and only for partitions that
    /// still exist; the merge is written once and the shards' files are gone.
    #[test]
    fn recovery_keeps_every_acknowledged_vote_after_a_crash() {
        let data = tempfile::tempdir().expect("a temporary directory");
        for partition in ["t-0", "t-1", "t-2"] {
            std::fs::create_dir(data.path().join(partition)).expect("a partition directory");
            std::fs::write(data.path().join(partition).join(STATE_FILE), b"{}")
                .expect("a state file");
        }
        let recovered = RecoveredVotes::recover(data.path()).expect("recovered");
        assert!(recovered.votes.is_empty());
        let dir = recovered.dir.clone();
        let executor = glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let log = VoteLog::create(recovered, 1).expect("created");
                let key = |name: &str| -> Rc<str> { Rc::from(name) };
                let first = log.record(&key("t-0"), vote(4, Some(2)));
                let second = log.record(&key("t-1"), vote(5, None));
                let gone = log.record(&key("deleted-0"), vote(5, None));
                for answer in [first, second, gone] {
                    answer.await.expect("answered").expect("recorded");
                }
                log.record(&key("t-1"), vote(5, Some(3)))
                    .await
                    .expect("answered")
                    .expect("recorded");
                assert_eq!(log.durable_vote("t-1"), Some(vote(5, Some(3))));
            })
            .expect("an executor");
        executor.join().expect("the executor ran");
        // A crash in the middle of the next write: a torn record at the end (and a merge's
        // temporary file left by an earlier crash).
        std::fs::write(dir.join("base.tmp"), b"partial").expect("a leftover");
        let shard_file = dir.join("shard-1");
        let mut torn = Vec::new();
        encode_record(&mut torn, "t-2", &vote(9, Some(1)));
        let mut bytes = std::fs::read(&shard_file).expect("the shard's file");
        bytes.extend_from_slice(&torn[..torn.len() - 3]);
        std::fs::write(&shard_file, bytes).expect("torn");

        let recovered = RecoveredVotes::recover(data.path()).expect("recovered");
        let mut votes: Vec<_> = recovered
            .votes
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        votes.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            votes,
            vec![
                ("t-0".to_owned(), vote(4, Some(2))),
                ("t-1".to_owned(), vote(5, Some(3))),
            ]
        );
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .expect("the votes directory")
            .map(|entry| entry.expect("an entry").file_name())
            .collect();
        files.sort();
        assert_eq!(files, vec![std::ffi::OsString::from(BASE_FILE)]);
        // And again (a crash right after a merge loses nothing).
        let again = RecoveredVotes::recover(data.path()).expect("recovered");
        assert_eq!(again.votes, recovered.votes);
    }

    #[test]
    fn a_file_past_its_bound_is_compacted_to_the_latest_vote_per_partition() {
        let data = tempfile::tempdir().expect("a temporary directory");
        std::fs::create_dir(data.path().join("t-0")).expect("a partition directory");
        std::fs::write(data.path().join("t-0").join(STATE_FILE), b"{}").expect("a state file");
        let recovered = RecoveredVotes::recover(data.path()).expect("recovered");
        let dir = recovered.dir.clone();
        let executor = glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let log = VoteLog::create(recovered, 0).expect("created");
                let key: Rc<str> = Rc::from("t-0");
                for term in 1..=COMPACT_RECORDS_MIN + 2 {
                    log.record(&key, vote(term, None))
                        .await
                        .expect("answered")
                        .expect("recorded");
                }
            })
            .expect("an executor");
        executor.join().expect("the executor ran");
        let bytes = std::fs::read(dir.join("shard-0")).expect("the shard's file");
        let mut records = 0;
        decode_records(&bytes, |_, _| records += 1);
        // The compaction before the 4 097th record's write, then it and the next one.
        assert_eq!(records, 3, "records after a compaction");
        let recovered = RecoveredVotes::recover(data.path()).expect("recovered");
        assert_eq!(
            recovered.votes.get("t-0"),
            Some(&vote(COMPACT_RECORDS_MIN + 2, None))
        );
    }
}
