//! Handing leadership back to a partition's preferred replica (the first in its replica list,
//! where the controller spread leaderships evenly), as Kafka's auto leader rebalance does.
//!
//! Why: after a broker fails its partitions are led by the others, and nothing moves them back
//! once it returns, so one broker ends up leading (taking every produce of) many more
//! partitions than the rest, which shows in throughput and tail latency. Every
//! `preferred_leader_check_ticks` a leader that is not the preferred replica transfers
//! leadership to it if it is in sync (it fetched lately and holds everything committed); the
//! transfer itself waits until it has the whole log, and is abandoned after an election
//! timeout. Not while a reassignment runs: its leader has a move to finish.
//!
//! A new group checks early. Kafka makes a new partition's preferred replica its leader; here
//! the preferred replica campaigns first and the others wait longer for it
//! (`RaftNode::time_first_election`), but the brokers may host a new topic's partitions
//! seconds apart (3 000 partitions take a while to create), and before either rule the broker
//! that hosted first won most of them: one broker of three led 2 500 of a new 3 000, took every
//! produce of them, and a failover of it moved them all. A replica that wins the
//! first term of a group (its own leader-change entry is the log's first) without being the
//! preferred replica checks again an election timeout later, then twice as late each time, until
//! the wait reaches the regular interval: the preferred replica gets the leadership as soon as
//! it has hosted the partition and fetched, and a dead one costs a few wake-ups.

use super::PartitionReplica;
use crate::message::NodeId;
use crate::node::{RaftNode, RoleKind};

/// The next early check of a new group's leader (see the module documentation).
#[derive(Debug, Clone, Copy)]
pub(super) struct EarlyCheck {
    at_tick: u64,
    /// The wait after `at_tick` before the check after it.
    then_ticks: u64,
}

impl PartitionReplica {
    /// The replica that should lead the group when it can (`None`: no preference).
    pub fn set_preferred_leader(&self, preferred: Option<NodeId>) {
        self.inner.preferred_leader.set(preferred);
        self.plan_early_preferred_checks();
        self.reschedule();
    }

    /// On a change of leadership or preference: early checks if this replica now leads its
    /// group's first term without being the preferred replica, none otherwise.
    pub(super) fn plan_early_preferred_checks(&self) {
        let first_term_of_a_new_group = {
            let node = self.inner.node.borrow();
            node.role() == RoleKind::Leader && node.term_start_index() == Some(1)
        };
        let every = self.inner.config.preferred_leader_check_ticks;
        let wait = self.inner.config.election_timeout_ticks_min;
        let planned = self.inner.early_preferred_check.get().is_some();
        if first_term_of_a_new_group && self.prefers_another_leader() && wait < every {
            if !planned {
                self.inner.early_preferred_check.set(Some(EarlyCheck {
                    at_tick: self.inner.clock.get() + wait,
                    then_ticks: 2 * wait,
                }));
            }
        } else {
            self.inner.early_preferred_check.set(None);
        }
    }

    /// Whether the group has a preferred replica other than this one, and checks are on.
    fn prefers_another_leader(&self) -> bool {
        self.inner.config.preferred_leader_check_ticks > 0
            && self
                .inner
                .preferred_leader
                .get()
                .is_some_and(|preferred| preferred != self.inner.config.node_id)
    }

    /// The tick of the next preferred-leader check (`NEVER` while none is due: not leading,
    /// no other replica preferred).
    pub(super) fn next_preferred_check(&self, now: u64, node: &RaftNode) -> u64 {
        if node.role() != RoleKind::Leader || !self.prefers_another_leader() {
            return super::NEVER;
        }
        let every = self.inner.config.preferred_leader_check_ticks;
        let regular = (now / every + 1) * every;
        match self.inner.early_preferred_check.get() {
            Some(early) => regular.min(early.at_tick),
            None => regular,
        }
    }

    /// At every check tick: leadership to the preferred replica, if this one leads instead and
    /// the preferred one is in sync.
    pub(super) fn return_to_preferred_leader(&self, tick: u64) {
        let every = self.inner.config.preferred_leader_check_ticks;
        let early = self
            .inner
            .early_preferred_check
            .get()
            .filter(|early| early.at_tick <= tick);
        if let Some(early) = early {
            let next = (early.then_ticks < every).then(|| EarlyCheck {
                at_tick: tick + early.then_ticks,
                then_ticks: 2 * early.then_ticks,
            });
            self.inner.early_preferred_check.set(next);
        }
        let due = early.is_some() || (every > 0 && tick.is_multiple_of(every));
        if !due || self.inner.target_voters.borrow().is_some() {
            return;
        }
        let Some(preferred) = self.inner.preferred_leader.get() else {
            return;
        };
        let effects = {
            let mut node = self.inner.node.borrow_mut();
            if node.role() != RoleKind::Leader
                || node.id() == preferred
                || !node.in_sync_voters().contains(&preferred)
            {
                return;
            }
            match node.transfer_leadership(preferred) {
                Ok(effects) => effects,
                // Not ready (a change in flight, an entry of this term not yet committed):
                // the next check tries again.
                Err(_) => return,
            }
        };
        self.carry_out(effects, None);
    }
}
