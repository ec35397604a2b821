//! Disk faults (part of [`PartitionReplica`], apart from its normal path).
//!
//! A write or sync the log could not make (a full disk, an I/O error), or a Raft state file it
//! could not replace, means the core may count on entries or a vote that are not on disk. The
//! replica then *faults*: it acts as a crashed member would, at once and for this partition
//! only. Its core stops: no ticks, no votes, no fetches, no answers, no leadership (its
//! producers are told NOT_LEADER_OR_FOLLOWER, and the others elect a leader within an
//! election timeout); the core's pending writes and the producers' batches waiting for it are
//! dropped; and it reports itself unhealthy ([`PartitionReplica::fault`]). After a back-off
//! (two election timeouts, doubling while faults repeat, up to 64) its writer tries to come
//! back as a restart would: the log clears its fault (after a failed sync it is cut back to its
//! last good sync: the kernel may have dropped the rest), everything in it is synced, the Raft
//! state is written, and a new core is built from what is on disk, which refetches what it
//! lacks. If that fails too (the disk is still full) it tries again after the next back-off.
//! So the log and the core never disagree: what the core counts as persisted is always on
//! disk, and no entry is ever numbered for a log end the disk does not have.
//!
//! Also faulted: the core numbering a proposal elsewhere than at the log end (which the log's
//! own fault reports should make impossible). While faulted, `leadership` and `in_sync_voters`
//! report nothing and `/metrics` has `ferrite_partition_healthy 0`; the leader's ISR leaves the
//! replica out once the commit point passes it. Coming back is done by the writer, the only
//! task that changes the log, so nothing races it; it also rewrites a term or vote a failed
//! write left only in memory. Raft's safety after a fault is thus its safety after a crash. The
//! metadata log's replica does the same, and the controller waits for it instead of stopping.

use super::durable_state::core_from_disk;
use super::{Fault, PartitionReplica, ProduceError, ReplicaError};

/// The first back-off of a faulted replica, in election timeouts: long enough that the others
/// have elected a leader without it by the time it comes back.
const RESUME_BACKOFF_ELECTION_TIMEOUTS_MIN: u64 = 2;
/// The longest back-off, in election timeouts (about half a minute at the broker's settings).
const RESUME_BACKOFF_ELECTION_TIMEOUTS_MAX: u64 = 64;

impl PartitionReplica {
    /// Why the replica cannot write its log and takes no part in its group just now, if so
    /// (see `fault`); it tries to come back by itself.
    pub fn fault(&self) -> Option<String> {
        self.inner
            .fault
            .borrow()
            .as_ref()
            .map(|fault| fault.reason.clone())
    }

    pub(super) fn faulted(&self) -> bool {
        self.inner.fault.borrow().is_some()
    }

    /// The replica can no longer trust its log to hold what its core counts on (a write or
    /// sync failed, or the Raft state could not be recorded): it stops as a crashed member
    /// would, until its writer rebuilds it from the disk (see the module documentation).
    pub(super) fn fail(&self, reason: &str) {
        if self.inner.stopped.borrow().is_some() || self.faulted() {
            return;
        }
        let now = self.inner.ticks.get();
        let timeout = self.inner.config.election_timeout_ticks_min;
        let (min, max) = (
            timeout * RESUME_BACKOFF_ELECTION_TIMEOUTS_MIN,
            timeout * RESUME_BACKOFF_ELECTION_TIMEOUTS_MAX,
        );
        // A fault soon after coming back from one: the cause is likely still there.
        let repeated = self
            .inner
            .resumed_at_tick
            .get()
            .is_some_and(|at| now - at < max);
        let backoff = if repeated {
            (self.inner.backoff_ticks.get() * 2).clamp(min, max)
        } else {
            min
        };
        self.inner.backoff_ticks.set(backoff);
        *self.inner.fault.borrow_mut() = Some(Fault {
            reason: reason.to_owned(),
            retry_at_tick: now + backoff,
        });
        self.inner.generation.set(self.inner.generation.get() + 1);
        eprintln!(
            "ferrite: replica in {}: {reason}; it takes no part in its group until it is \
             rebuilt from the disk, tried in {backoff} ticks",
            self.inner.log.directory().display()
        );
        self.inner.log_writes.borrow_mut().clear();
        self.inner.fetched.borrow_mut().clear();
        self.inner.parked.borrow_mut().clear();
        self.inner.commit_sent.borrow_mut().clear();
        self.inner.held.borrow_mut().clear();
        for proposal in self.inner.proposals.borrow_mut().drain(..) {
            let _ = proposal
                .reply
                .send(Err(ProduceError::NotLeader { leader_hint: None }));
        }
        self.inner.changes.wake_all();
        self.note_leadership();
        self.reschedule();
    }

    /// The writer's try at bringing a faulted replica back, as a restart would: the log's fault
    /// cleared (cut back to its last good sync after a failed one, everything left synced),
    /// the Raft state written (a term or vote its failed write left in memory included), and a
    /// new core built from them. On failure the fault stays, with a longer back-off.
    pub(super) async fn resume(&self) {
        // The state file has one writer at a time: the last write of the faulted core ends first.
        self.inner
            .changes
            .until(|| !self.inner.state_writing.get())
            .await;
        let rebuilt = async {
            self.inner.log.clear_fault().await?;
            let mut state = self.inner.state.borrow().clone();
            // Election timeouts of its own, as after a restart.
            let seed_salt = self.inner.generation.get().rotate_left(32);
            let node = core_from_disk(
                &self.inner.config,
                &self.inner.log,
                &self.inner.state_file,
                &mut state,
                None,
                seed_salt,
            )?;
            Ok::<_, ReplicaError>((node, state))
        }
        .await;
        let now = self.inner.clock.get();
        match rebuilt {
            Ok((node, state)) => {
                *self.inner.node.borrow_mut() = node;
                *self.inner.state.borrow_mut() = state;
                *self.inner.fault.borrow_mut() = None;
                // The new core starts now; what the old one asked to write is gone with it.
                self.inner.ticks.set(now);
                self.inner
                    .state_version_durable
                    .set(self.inner.state_version_wanted.get());
                self.inner
                    .vote_version_durable
                    .set(self.inner.vote_version_wanted.get());
                self.inner.resumed_at_tick.set(Some(now));
                eprintln!(
                    "ferrite: replica in {}: rebuilt from the disk, it rejoins its group",
                    self.inner.log.directory().display()
                );
            }
            Err(error) => {
                let timeout = self.inner.config.election_timeout_ticks_min;
                let backoff = (self.inner.backoff_ticks.get() * 2).clamp(
                    timeout * RESUME_BACKOFF_ELECTION_TIMEOUTS_MIN,
                    timeout * RESUME_BACKOFF_ELECTION_TIMEOUTS_MAX,
                );
                self.inner.backoff_ticks.set(backoff);
                if let Some(fault) = &mut *self.inner.fault.borrow_mut() {
                    fault.reason = format!("cannot come back from a fault: {error}");
                    fault.retry_at_tick = now + backoff;
                }
                eprintln!(
                    "ferrite: replica in {}: cannot come back from a fault ({error}); tried \
                     again in {backoff} ticks",
                    self.inner.log.directory().display()
                );
            }
        }
        self.inner.changes.wake_all();
        self.note_leadership();
        self.reschedule();
    }
}
