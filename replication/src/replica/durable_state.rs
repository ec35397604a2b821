//! Making the Raft state durable before anyone sees it: a new term or vote is recorded in the
//! shard's vote log (or the replica's state file) without blocking the shard, and the core's
//! effects wait in `held` until it is; and the core rebuilt from what is on disk, as after a
//! restart (also when a faulted replica comes back, see `fault`).
//!
//! The log writes and messages of the call that changed the term or vote, and of every later
//! call, wait in order until it is durable (the writer numbers no producer's batch meanwhile),
//! so a thousand elections at once cost a few syncs of the shard's vote log rather than two
//! syncs and a rename per partition. A recorded vote is checked against the replica's
//! generation (bumped at every fault and rebuild), so one meant for a core that is gone is never
//! given to its successor; the writer's storage completions likewise (`report_durable`).

use engine::PartitionLog;
use futures::channel::oneshot;

use super::state_file::{ReplicaState, StateFile};
use super::{damage, entries, Held, PartitionReplica, ReplicaConfig, ReplicaError};
use crate::node::{PersistedState, RaftConfig, RaftNode};
use crate::votes::{Vote, VoteLogError};

impl PartitionReplica {
    /// The Raft state (`state`) changed: writes it to the state file, unless a write is under
    /// way (which writes it again once done).
    pub(super) fn write_state(&self) {
        let wanted = self.inner.state_version_wanted.get() + 1;
        self.inner.state_version_wanted.set(wanted);
        if !self.inner.state_writing.replace(true) {
            glommio::spawn_local(self.clone().run_state_writes()).detach();
        }
    }

    /// Whether a change of the Raft state is not durable yet.
    pub(super) fn state_pending(&self) -> bool {
        self.inner.state_version_durable.get() < self.inner.state_version_wanted.get()
            || self.inner.vote_version_durable.get() < self.inner.vote_version_wanted.get()
    }

    /// The term or vote changed: recorded in the shard's vote log (one sync for every vote of
    /// the shard meanwhile), or in the state file if the replica has none or it failed.
    pub(super) fn record_vote(&self, vote: Vote) {
        let Some((votes, key)) = self
            .inner
            .votes
            .as_ref()
            .filter(|(votes, _)| !votes.failed())
        else {
            return self.write_state();
        };
        let version = self.inner.vote_version_wanted.get() + 1;
        self.inner.vote_version_wanted.set(version);
        let answer = votes.record(key, vote);
        let generation = self.inner.generation.get();
        let replica = self.clone();
        glommio::spawn_local(async move {
            let recorded = answer.await;
            replica.vote_recorded(generation, version, recorded);
        })
        .detach();
    }

    /// The vote log's answer for vote `version`: the held effects go once nothing else is
    /// pending; a vote that could not be recorded faults the replica.
    pub(super) fn vote_recorded(
        &self,
        generation: u64,
        version: u64,
        recorded: Result<Result<(), VoteLogError>, oneshot::Canceled>,
    ) {
        if self.inner.generation.get() != generation || self.inner.stopped.borrow().is_some() {
            return;
        }
        match recorded {
            Ok(Ok(())) => {
                let durable = &self.inner.vote_version_durable;
                durable.set(durable.get().max(version));
                self.release_held();
            }
            Ok(Err(error)) => self.fail(&format!("cannot record the Raft vote: {error}")),
            Err(oneshot::Canceled) => self.fail("the shard's vote log stopped"),
        }
    }

    /// Lets the held effects go once the Raft state is durable.
    pub(super) fn release_held(&self) {
        if !self.state_pending() {
            let held: Vec<Held> = self.inner.held.borrow_mut().drain(..).collect();
            for Held {
                log_writes,
                messages,
                parkable,
            } in held
            {
                self.dispatch(log_writes, messages, parkable);
            }
        }
        self.inner.changes.wake_all();
        self.reschedule();
    }

    /// Writes the state file until the latest state is durable, then lets the held effects
    /// go. A failed write faults the replica (the effects go with the core).
    pub(super) async fn run_state_writes(self) {
        let generation = self.inner.generation.get();
        while self.state_pending()
            && self.inner.stopped.borrow().is_none()
            && self.inner.generation.get() == generation
        {
            let version = self.inner.state_version_wanted.get();
            let state = self.inner.state.borrow().clone();
            match self.inner.state_file.write_async(&state).await {
                Ok(()) => self.inner.state_version_durable.set(version),
                Err(error) => {
                    self.inner.state_writing.set(false);
                    self.fail(&format!("cannot record the Raft state: {error}"));
                    self.inner.changes.wake_all();
                    return;
                }
            }
        }
        self.inner.state_writing.set(false);
        if self.inner.generation.get() == generation {
            return self.release_held();
        }
        self.inner.changes.wake_all();
        self.reschedule();
    }

    /// Writes the Raft state and waits until it is durable (for the writer, which must not
    /// place an entry the state file does not describe yet).
    pub(super) async fn persist_state(&self) -> Result<(), ReplicaError> {
        self.write_state();
        let generation = self.inner.generation.get();
        self.inner
            .changes
            .until(|| {
                !self.state_pending()
                    || self.inner.generation.get() != generation
                    || self.inner.stopped.borrow().is_some()
            })
            .await;
        if self.state_pending() || self.inner.generation.get() != generation {
            return Err(ReplicaError::StateFile(std::io::Error::other(
                "the Raft state was not recorded",
            )));
        }
        Ok(())
    }
}

/// A core for `log` as it is on disk and `state` (brought in line with the log, and written
/// unless `saved`, what the file is known to hold, already says the same), as after a restart:
/// everything in the log counts as persisted, and a vote floor kept for damaged entries holds.
/// `seed_salt` varies the election timeouts.
pub(super) fn core_from_disk(
    config: &ReplicaConfig,
    log: &PartitionLog,
    state_file: &StateFile,
    state: &mut ReplicaState,
    saved: Option<&ReplicaState>,
    seed_salt: u64,
) -> Result<RaftNode, ReplicaError> {
    state.truncate_after(log.log_end_offset());
    state.advance_start(log.log_start_offset() + 1);
    if saved != Some(state) {
        state_file.write(state)?;
    }
    let raft_config = RaftConfig {
        id: config.node_id,
        election_timeout_ticks_min: config.election_timeout_ticks_min,
        begin_epoch_interval_ticks: config.begin_epoch_interval_ticks,
        fetch_timeout_ticks: config.fetch_timeout_ticks,
        seed: config.seed ^ seed_salt,
    };
    let persisted = PersistedState {
        hard_state: state.hard_state(),
        log: entries::summary_of(log, state),
    };
    let mut node = RaftNode::new(raft_config, persisted);
    damage::restore_vote_floor(&mut node, state, state_file)?;
    Ok(node)
}
