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

use super::PartitionReplica;
use crate::message::NodeId;
use crate::node::RoleKind;

impl PartitionReplica {
    /// The replica that should lead the group when it can (`None`: no preference).
    pub fn set_preferred_leader(&self, preferred: Option<NodeId>) {
        self.inner.preferred_leader.set(preferred);
        self.reschedule();
    }

    /// At every check tick: leadership to the preferred replica, if this one leads instead and
    /// the preferred one is in sync.
    pub(super) fn return_to_preferred_leader(&self, tick: u64) {
        let every = self.inner.config.preferred_leader_check_ticks;
        if every == 0 || !tick.is_multiple_of(every) || self.inner.target_voters.borrow().is_some()
        {
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
