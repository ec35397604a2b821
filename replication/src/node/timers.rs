//! Logical time in bulk: how many ticks may pass before a tick would do anything
//! ([`RaftNode::ticks_until_due`]), and [`RaftNode::advance`], which is exactly that many calls
//! of [`RaftNode::tick`] but costs nothing for the ticks in which nothing happens.
//!
//! Why: a broker runs thousands of groups per shard, and almost every tick of almost every
//! one only counts (a follower that hears from its leader every round never reaches its
//! election timeout; a leader checks its quorum once per election timeout). The driver keeps
//! each group's next due tick in a timer wheel, runs only the groups whose tick is due, and
//! brings a group's clock up to date (`advance`) before it hands it anything else, so the
//! group sees exactly the ticks it would have seen one by one (the simulator checks that).

use super::{RaftNode, Role};
use crate::message::Effects;

/// No deadline: nothing happens until an input changes the node.
const NEVER: u64 = u64::MAX;

impl RaftNode {
    /// How many ticks from now the first tick that may do more than count is (at least 1):
    /// every tick before it only advances counters. Inputs (`step`, `propose`, `persisted`,
    /// ...) may make it sooner, so the driver asks again after each.
    pub fn ticks_until_due(&self) -> u64 {
        let until = |elapsed: u64, limit: u64| limit.saturating_sub(elapsed).max(1);
        let is_voter = self.is_voter();
        let election = || {
            if !is_voter {
                NEVER
            } else if self.elapsed_ticks + 1 >= self.election_timeout_ticks
                && self.vote_floor().is_some()
            {
                // Past its timeout but abstaining: each tick looks again and finds the same
                // until an input moves the log.
                NEVER
            } else {
                until(self.elapsed_ticks, self.election_timeout_ticks)
            }
        };
        let due = match &self.role {
            Role::Leader(state) => {
                let announce = if state.progress.values().any(|peer| !peer.has_fetched) {
                    until(
                        state.begin_epoch_elapsed_ticks,
                        state.begin_epoch_wait_ticks,
                    )
                } else {
                    NEVER
                };
                let transfer = state.transfer.as_ref().map_or(NEVER, |transfer| {
                    until(
                        transfer.elapsed_ticks,
                        self.config.election_timeout_ticks_min,
                    )
                });
                let check_quorum =
                    until(self.elapsed_ticks, self.config.election_timeout_ticks_min);
                announce.min(transfer).min(check_quorum)
            }
            Role::Follower { leader, fetch, .. } => {
                let fetches = leader.is_some() || !is_voter;
                let fetch_due = match fetch {
                    Some(in_flight) if fetches => {
                        until(in_flight.elapsed_ticks, self.config.fetch_timeout_ticks)
                    }
                    Some(_) => NEVER,
                    None if fetches && self.log.persisted_index() >= self.fetch_floor_index => 1,
                    None => NEVER,
                };
                let lost = if is_voter {
                    NEVER
                } else {
                    until(self.elapsed_ticks, self.election_timeout_ticks)
                };
                fetch_due.min(lost).min(election())
            }
            Role::PreCandidate { .. } | Role::Candidate { .. } => election(),
        };
        debug_assert!(due >= 1);
        due
    }

    /// Exactly `ticks` calls of [`RaftNode::tick`], their effects as one; the ticks that would
    /// only count are counted in one step.
    pub fn advance(&mut self, ticks: u64) -> Effects {
        let mut effects = Effects::default();
        let mut remaining = ticks;
        while remaining > 0 {
            let due = self.ticks_until_due();
            if remaining < due {
                self.count_idle_ticks(remaining);
                break;
            }
            self.count_idle_ticks(due - 1);
            effects.merge(self.tick());
            remaining -= due;
        }
        effects
    }

    /// `ticks` ticks in which nothing but counting happens (fewer than `ticks_until_due`).
    fn count_idle_ticks(&mut self, ticks: u64) {
        if ticks == 0 {
            return;
        }
        debug_assert!(ticks < self.ticks_until_due());
        self.elapsed_ticks += ticks;
        match &mut self.role {
            Role::Leader(state) => {
                // The announcement counter wraps whether or not anyone needs announcing to.
                state.begin_epoch_elapsed_ticks =
                    (state.begin_epoch_elapsed_ticks + ticks) % state.begin_epoch_wait_ticks;
                if let Some(transfer) = &mut state.transfer {
                    transfer.elapsed_ticks += ticks;
                }
            }
            Role::Follower {
                fetch: Some(in_flight),
                ..
            } => in_flight.elapsed_ticks += ticks,
            Role::Follower { fetch: None, .. }
            | Role::PreCandidate { .. }
            | Role::Candidate { .. } => {}
        }
    }
}
