//! What a replica keeps on disk besides its partition log: the Raft term and vote (which must
//! survive a crash before any message that depends on them leaves) and the voter sets the log
//! carries (so a restart need not scan the log for voter-set entries).
//!
//! One small file in the partition directory, replaced whole (temporary file, fsync, rename,
//! directory fsync). It is written before a voter-set entry is appended, so it may name a
//! change whose entry a crash lost: opening drops changes past the recovered log end and
//! rewrites the file before anything is appended there.
//!
//! A running replica writes it without blocking its shard, and together with every other
//! replica of the shard that has a state to write ([`StateFile::write_async`]): when a broker
//! dies, the groups it led elect new leaders at once, each vote and term a file to replace.
//! Replaced one by one (temporary file synced, renamed, directory synced: two syncs and three
//! metadata changes each) a thousand of them took seconds on a loaded disk (about 900 a second
//! here), longer than an election timeout, so candidates timed out waiting for their own votes
//! to be written and the elections of a dead broker's groups churned through terms instead of
//! ending. So the writes of a shard go in rounds: every temporary file of the round written,
//! one `syncfs` for all, every rename, one `syncfs` again; a round costs two syncs whatever
//! the number of replicas in it, and the writes asked for meanwhile form the next round.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use futures::channel::oneshot;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::message::{HardState, Index, NodeId, Term};

const STATE_FILE: &str = "raft-state.json";
/// Where a new state is written before it is renamed over [`STATE_FILE`].
const TEMPORARY_FILE: &str = "raft-state.json.tmp";

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
        engine::log::replace_file_durably(&self.dir, STATE_FILE, &bytes)
    }

    /// Replaces the file durably as [`StateFile::write`] does, without blocking the shard, in
    /// the shard's next round of state writes (see the module documentation). One at a time
    /// per file.
    pub async fn write_async(&self, state: &ReplicaState) -> Result<(), std::io::Error> {
        let bytes = serde_json::to_vec(state).map_err(std::io::Error::other)?;
        let (done, written) = oneshot::channel();
        let start_rounds = ROUNDS.with(|rounds| {
            let mut rounds = rounds.borrow_mut();
            rounds.queued.push(QueuedWrite {
                dir: self.dir.clone(),
                bytes,
                done,
            });
            !std::mem::replace(&mut rounds.running, true)
        });
        if start_rounds {
            glommio::spawn_local(run_rounds()).detach();
        }
        written.await.unwrap_or_else(|_| {
            Err(std::io::Error::other(
                "the round writing the Raft state ended before it was written",
            ))
        })
    }
}

/// Files written at once within a round (each an open descriptor while it is written).
const ROUND_WRITES_CONCURRENT_MAX: usize = 64;

/// A state file to replace in the shard's next round, and who waits for it.
struct QueuedWrite {
    dir: PathBuf,
    bytes: Vec<u8>,
    done: oneshot::Sender<Result<(), std::io::Error>>,
}

/// The state writes of this thread's shard (glommio runs one executor per thread): those
/// waiting for the next round, and whether a task runs rounds. Bounded by the replicas of the
/// shard (each has at most one write under way).
#[derive(Default)]
struct Rounds {
    queued: Vec<QueuedWrite>,
    running: bool,
}

thread_local! {
    static ROUNDS: RefCell<Rounds> = RefCell::new(Rounds::default());
}

/// Clears `Rounds::running` when the task running rounds ends, also when it is dropped with
/// its executor (the waiters of a dropped round see their sender dropped: an error).
struct RoundsRunning;

impl Drop for RoundsRunning {
    fn drop(&mut self) {
        ROUNDS.with(|rounds| rounds.borrow_mut().running = false);
    }
}

/// Runs rounds until no write is queued.
async fn run_rounds() {
    let _running = RoundsRunning;
    loop {
        let round = ROUNDS.with(|rounds| std::mem::take(&mut rounds.borrow_mut().queued));
        if round.is_empty() {
            return;
        }
        write_round(round).await;
    }
}

/// One round: every temporary file written, synced together, renamed over its file, the
/// renames synced together; each waiter then told how its write went.
async fn write_round(round: Vec<QueuedWrite>) {
    let written: Vec<(QueuedWrite, Result<(), std::io::Error>)> =
        futures::stream::iter(round.into_iter().map(|write| async move {
            let result = write_temporary(&write.dir, &write.bytes).await;
            (write, result)
        }))
        .buffer_unordered(ROUND_WRITES_CONCURRENT_MAX)
        .collect()
        .await;
    let dirs: Vec<PathBuf> = written.iter().map(|(write, _)| write.dir.clone()).collect();
    let synced = sync_filesystems(dirs.clone()).await;
    let renamed: Vec<(QueuedWrite, Result<(), std::io::Error>)> =
        futures::stream::iter(written.into_iter().map(|(write, result)| {
            let synced = synced.as_ref().map_err(clone_error).err();
            async move {
                let result = match (result, synced) {
                    (Err(error), _) | (Ok(()), Some(error)) => Err(error),
                    (Ok(()), None) => {
                        glommio::io::rename(
                            write.dir.join(TEMPORARY_FILE),
                            write.dir.join(STATE_FILE),
                        )
                        .await
                        .map_err(std::io::Error::from)
                    }
                };
                (write, result)
            }
        }))
        .buffer_unordered(ROUND_WRITES_CONCURRENT_MAX)
        .collect()
        .await;
    let synced = sync_filesystems(dirs).await;
    for (write, result) in renamed {
        let result = result.and_then(|()| synced.as_ref().map(|_| ()).map_err(clone_error));
        // The replica may be gone (stopped): nobody to tell.
        let _ = write.done.send(result);
    }
}

/// Writes `bytes` to the temporary file in `dir` (replaced if there), without a sync.
async fn write_temporary(dir: &Path, bytes: &[u8]) -> Result<(), std::io::Error> {
    let file = glommio::io::BufferedFile::create(dir.join(TEMPORARY_FILE)).await?;
    let written = async {
        if file.write_at(bytes.to_vec(), 0).await? != bytes.len() {
            return Err(std::io::Error::other("a short write"));
        }
        Ok(())
    }
    .await;
    file.close().await?;
    written
}

/// `syncfs` of each filesystem holding one of `dirs` (one call per filesystem), on a thread
/// of glommio's blocking pool (io_uring has no `syncfs`).
async fn sync_filesystems(dirs: Vec<PathBuf>) -> Result<(), std::io::Error> {
    glommio::executor()
        .spawn_blocking(move || {
            use std::os::unix::fs::MetadataExt;
            use std::os::unix::io::AsRawFd;
            let mut devices = Vec::new();
            for dir in dirs {
                let device = std::fs::metadata(&dir)?.dev();
                if devices.contains(&device) {
                    continue;
                }
                devices.push(device);
                let handle = std::fs::File::open(&dir)?;
                // SAFETY: `handle` is an open descriptor for the duration of the call.
                if unsafe { libc::syncfs(handle.as_raw_fd()) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        })
        .await
}

/// The same error for each waiter of a round (`std::io::Error` is not `Clone`).
fn clone_error(error: &std::io::Error) -> std::io::Error {
    std::io::Error::new(error.kind(), error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(term: Term) -> ReplicaState {
        ReplicaState {
            term,
            voted_for: Some(2),
            voters_base: vec![1, 2, 3],
            voter_changes: Vec::new(),
            vote_floor: None,
        }
    }

    #[test]
    fn writes_asked_together_share_rounds_and_each_file_ends_with_its_latest_state() {
        let root = tempfile::tempdir().expect("a temporary directory");
        let files: Vec<StateFile> = (0..100)
            .map(|index| {
                let dir = root.path().join(format!("partition-{index}"));
                std::fs::create_dir(&dir).expect("a partition directory");
                StateFile::new(&dir)
            })
            .collect();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                // Every file twice (the second write of a file waits for its first, as a
                // replica's writer does), all files at once.
                let writes = files.iter().enumerate().map(|(index, file)| async move {
                    let term = index as Term;
                    file.write_async(&state(term)).await?;
                    file.write_async(&state(term + 1000)).await
                });
                for result in futures::future::join_all(writes).await {
                    result.expect("the state is written");
                }
                for (index, file) in files.iter().enumerate() {
                    let read = file.read().expect("the state file reads");
                    assert_eq!(read, Some(state(index as Term + 1000)));
                    assert!(!file.dir.join(TEMPORARY_FILE).exists());
                }
                assert!(!ROUNDS.with(|rounds| rounds.borrow().running));
            })
            .expect("an executor")
            .join()
            .expect("the executor ends");
    }
}
