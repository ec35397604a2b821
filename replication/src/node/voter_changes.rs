//! Changing who leads and who votes: leadership transfer (the leader stops taking proposals,
//! waits until the target has its whole log, and sends `TimeoutNow`, which starts an election
//! at once) and single-server membership changes (Raft dissertation §4.1): learners fetch
//! without being counted until promoted; a voter-set entry takes effect on every node as soon
//! as it is in its log; one change at a time, and only once the leader has committed an entry
//! of its own term, which is what makes one-at-a-time changes safe.

use std::collections::BTreeSet;

use super::{RaftNode, Refusal, Role, Transfer};
use crate::message::{Effects, EntryKind, Message, NodeId};

impl RaftNode {
    /// Hand leadership to `target` (a voter): stop taking proposals, wait until it has our
    /// whole log, then tell it to start an election at once. Abandoned after an election
    /// timeout.
    pub fn transfer_leadership(&mut self, target: NodeId) -> Result<Effects, Refusal> {
        self.leader_state_ready()?;
        if target == self.config.id || !self.log.voters().contains(&target) {
            return Err(Refusal::InvalidMember { node: target });
        }
        let Role::Leader(state) = &mut self.role else {
            unreachable!("checked above");
        };
        state.transfer = Some(Transfer {
            target,
            elapsed_ticks: 0,
        });
        self.send_timeout_now_if_caught_up(target);
        Ok(self.take_effects())
    }

    /// Let `node` fetch as a learner (not counted in any majority) so it can catch up before
    /// [`RaftNode::promote`]. Learners are the leader's own state: a new leader forgets them.
    pub fn add_learner(&mut self, node: NodeId) -> Result<Effects, Refusal> {
        self.leader_state_ready()?;
        if node == self.config.id || self.log.voters().contains(&node) {
            return Err(Refusal::InvalidMember { node });
        }
        let term = self.hard_state.term;
        let id = self.config.id;
        let Role::Leader(state) = &mut self.role else {
            unreachable!("checked above");
        };
        state.learners.insert(node);
        state.progress.entry(node).or_default();
        self.send(node, Message::BeginEpoch { term, leader: id });
        Ok(self.take_effects())
    }

    /// Make a caught-up learner a voter: one voter-set entry (single-server change).
    pub fn promote(&mut self, learner: NodeId) -> Result<Effects, Refusal> {
        self.membership_change_ready()?;
        let Role::Leader(state) = &self.role else {
            unreachable!("checked above");
        };
        let Some(progress) = state
            .progress
            .get(&learner)
            .filter(|_| state.learners.contains(&learner))
        else {
            return Err(Refusal::InvalidMember { node: learner });
        };
        if progress.match_index < self.commit_index {
            return Err(Refusal::LearnerBehind { node: learner });
        }
        let mut voters = self.log.voters().to_vec();
        voters.push(learner);
        voters.sort_unstable();
        self.append_own(1, EntryKind::Voters(voters));
        Ok(self.take_effects())
    }

    /// Take `voter` out of the voter set: one voter-set entry. A leader removing itself leads
    /// (without counting itself) until the change commits, then steps down.
    pub fn remove_voter(&mut self, voter: NodeId) -> Result<Effects, Refusal> {
        self.membership_change_ready()?;
        let voters = self.log.voters();
        if !voters.contains(&voter) || voters.len() == 1 {
            return Err(Refusal::InvalidMember { node: voter });
        }
        let voters = voters.iter().copied().filter(|id| *id != voter).collect();
        self.append_own(1, EntryKind::Voters(voters));
        Ok(self.take_effects())
    }

    /// The nodes this leader lets fetch as learners (none if it does not lead).
    pub fn learners(&self) -> Vec<NodeId> {
        match &self.role {
            Role::Leader(state) => state.learners.iter().copied().collect(),
            _ => Vec::new(),
        }
    }

    /// Whether the voter set in effect is committed (no change in flight).
    pub fn voters_committed(&self) -> bool {
        self.log.last_voters_index() <= self.commit_index
    }

    /// One change at a time, and only once we have committed an entry of our term.
    fn membership_change_ready(&self) -> Result<(), Refusal> {
        self.leader_state_ready()?;
        let Role::Leader(state) = &self.role else {
            unreachable!("checked above");
        };
        if self.commit_index < state.term_start_index
            || self.log.last_voters_index() > self.commit_index
        {
            return Err(Refusal::ChangeInProgress);
        }
        Ok(())
    }

    /// After the voter set changed: progress for exactly the other voters and the learners.
    pub(super) fn track_members(&mut self) {
        let voters = self.voter_peers();
        let Role::Leader(state) = &mut self.role else {
            return;
        };
        state.learners.retain(|learner| !voters.contains(learner));
        let members: BTreeSet<NodeId> = voters.iter().chain(&state.learners).copied().collect();
        state.progress.retain(|id, _| members.contains(id));
        for member in members {
            state.progress.entry(member).or_default();
        }
    }

    pub(super) fn tick_transfer(&mut self) {
        let Role::Leader(state) = &mut self.role else {
            return;
        };
        if let Some(transfer) = &mut state.transfer {
            transfer.elapsed_ticks += 1;
            if transfer.elapsed_ticks >= self.config.election_timeout_ticks_min {
                state.transfer = None;
            }
        }
    }

    pub(super) fn send_timeout_now_if_caught_up(&mut self, peer: NodeId) {
        let last_index = self.log.last_index();
        let Role::Leader(state) = &self.role else {
            return;
        };
        let caught_up = state
            .transfer
            .as_ref()
            .is_some_and(|transfer| transfer.target == peer)
            && state
                .progress
                .get(&peer)
                .is_some_and(|progress| progress.fetched_index >= last_index);
        if caught_up {
            let term = self.hard_state.term;
            self.send(peer, Message::TimeoutNow { term });
        }
    }
}
