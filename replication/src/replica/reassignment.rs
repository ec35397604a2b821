//! Moving a partition's Raft group to other brokers (a reassignment), one single-server change
//! at a time, driven by its leader: the metadata says where the group should go (its target
//! voters), and on every tick the leader takes the next step towards it: a missing target
//! broker becomes a learner, then a voter once caught up; once every target broker votes, the
//! voters the target leaves out are removed (itself last: a leader removing itself leads until
//! that change commits, then steps down and the others elect one of theirs).
//!
//! Learners are a leader's own state, so a new leader simply starts again from the voter set
//! in its log; nothing here needs to survive a restart. The metadata learns that the move is
//! complete from [`PartitionReplica::completed_target`], which the shard reports to the
//! controller (`CompleteReassignment`, one request in flight per partition, repeated until the
//! metadata clears the target). The target comes from the metadata through
//! `ShardReplication::host_anywhere`; a replica new to a broker starts with the group's
//! original voters, so it cannot campaign before it is promoted. `tests/replica.rs` moves a
//! group from {1, 2} to {2, 3} while it takes produces.

use super::PartitionReplica;
use crate::message::NodeId;
use crate::node::RoleKind;

impl PartitionReplica {
    /// Where the group should go (`None`: nowhere, it stays as it is).
    pub fn set_target_voters(&self, target: Option<Vec<NodeId>>) {
        *self.inner.target_voters.borrow_mut() = target.map(|mut voters| {
            voters.sort_unstable();
            voters.dedup();
            voters
        });
        self.reschedule();
    }

    /// The target, if this replica leads and the group's committed voters are it: the move is
    /// complete as far as Raft goes, and the metadata should say so.
    pub fn completed_target(&self) -> Option<Vec<NodeId>> {
        let target = self.inner.target_voters.borrow().clone()?;
        let node = self.inner.node.borrow();
        let mut voters = node.voters().to_vec();
        voters.sort_unstable();
        // `self.role()`: a faulted replica does not lead, whatever its stopped core says.
        (self.role() == RoleKind::Leader && node.voters_committed() && voters == target)
            .then_some(target)
    }

    /// The next membership change towards the target, if this replica leads and one may be
    /// made now (refusals, such as a change still in flight or a learner still behind, are
    /// retried on the next tick).
    pub(super) fn step_toward_target(&self) {
        let Some(target) = self.inner.target_voters.borrow().clone() else {
            return;
        };
        let mut node = self.inner.node.borrow_mut();
        if node.role() != RoleKind::Leader {
            return;
        }
        let own = node.id();
        let voters = node.voters().to_vec();
        let missing = target.iter().copied().find(|id| !voters.contains(id));
        let leaving = voters
            .iter()
            .copied()
            .filter(|id| !target.contains(id))
            .min_by_key(|id| *id == own);
        let stepped = match (missing, leaving) {
            (Some(missing), _) if node.learners().contains(&missing) => node.promote(missing),
            (Some(missing), _) => node.add_learner(missing),
            (None, Some(leaving)) => node.remove_voter(leaving),
            (None, None) => return,
        };
        drop(node);
        if let Ok(effects) = stepped {
            self.carry_out(effects, None);
        }
    }
}
