//! Elections: pre-vote (a node that could not win never bumps a term), the vote itself, a new
//! leader's announcement (`BeginEpoch`) and check-quorum (a leader no majority fetched from
//! during an election timeout steps down). Apart from the rest of the node so that the rules
//! for who may lead read in one place; the lease that makes voters refuse pre-votes is
//! `RaftNode::in_leader_lease`. Election timeouts are staggered by the voter's place in the
//! voter set and doubled after each campaign that ended without a leader (the timeout's item
//! doc in `node.rs` says why); a new group's first voter campaigns first
//! (`RaftNode::time_first_election`); a node at [`TERM_MAX`] does not campaign.

use std::collections::BTreeSet;

use super::{LeaderState, Progress, RaftNode, Role};
use crate::message::{EntryKind, Index, Message, NodeId, Term, TermLimit, TERM_MAX};

/// The longest wait between announcements to a member that does not fetch, in election
/// timeouts (see `RaftNode::announce_again`).
const ANNOUNCE_INTERVAL_MAX_TIMEOUTS: u64 = 2;

impl RaftNode {
    /// Whether an election's term (ours plus one) is within [`TERM_MAX`]; if not, the node
    /// waits another election timeout and says so (the group cannot elect anyone any more,
    /// which an operator must hear of; no leader is better than one that cannot write).
    pub(super) fn may_campaign(&mut self) -> bool {
        if self.hard_state.term < TERM_MAX {
            return true;
        }
        self.effects.term_limit = Some(TermLimit::NoElection);
        self.reset_election_timeout();
        false
    }

    pub(super) fn start_pre_vote(&mut self) {
        assert!(self.is_voter(), "only voters campaign");
        if !self.may_campaign() {
            return;
        }
        self.role = Role::PreCandidate {
            granted: BTreeSet::from([self.config.id]),
        };
        self.reset_election_timeout();
        if self.is_quorum(1) {
            return self.start_election(false);
        }
        let message = Message::PreVote {
            term: self.hard_state.term + 1,
            last_index: self.log.last_index(),
            last_term: self.log.last_term(),
        };
        for peer in self.voter_peers() {
            self.send(peer, message.clone());
        }
    }

    pub(super) fn start_election(&mut self, transfer: bool) {
        assert!(self.is_voter(), "only voters campaign");
        if !self.may_campaign() {
            return;
        }
        self.set_term(self.hard_state.term + 1);
        self.hard_state.voted_for = Some(self.config.id);
        self.effects.hard_state = Some(self.hard_state);
        self.role = Role::Candidate {
            granted: BTreeSet::from([self.config.id]),
        };
        self.reset_election_timeout();
        if self.is_quorum(1) {
            return self.become_leader();
        }
        let message = Message::RequestVote {
            term: self.hard_state.term,
            last_index: self.log.last_index(),
            last_term: self.log.last_term(),
            transfer,
        };
        for peer in self.voter_peers() {
            self.send(peer, message.clone());
        }
    }

    pub(super) fn handle_request_vote(&mut self, from: NodeId, last_index: Index, last_term: Term) {
        let granted = self.hard_state.voted_for.is_none_or(|voted| voted == from)
            && self.leader().is_none_or(|leader| leader == from)
            && self.candidate_up_to_date(last_index, last_term);
        if granted {
            self.hard_state.voted_for = Some(from);
            self.effects.hard_state = Some(self.hard_state);
            self.elapsed_ticks = 0;
        }
        self.send(
            from,
            Message::RequestVoteResponse {
                term: self.hard_state.term,
                granted,
            },
        );
    }

    pub(super) fn become_leader(&mut self) {
        let progress = self
            .voter_peers()
            .into_iter()
            .map(|peer| (peer, Progress::default()))
            .collect();
        self.role = Role::Leader(LeaderState {
            progress,
            learners: BTreeSet::new(),
            term_start_index: self.log.last_index() + 1,
            begin_epoch_elapsed_ticks: 0,
            begin_epoch_wait_ticks: self.config.begin_epoch_interval_ticks,
            transfer: None,
        });
        self.elapsed_ticks = 0;
        self.campaigns_failed = 0;
        // Entries of earlier terms commit only under an entry of ours (Raft §5.4.2).
        self.append_own(1, EntryKind::LeaderChange);
        self.announce();
    }

    /// `BeginEpoch` again to the members that have not fetched from us yet, and a longer wait
    /// before the next time. Why the wait grows: a dead broker never fetches, and every group
    /// its peers took over from it announced to it every interval (100 ms), waking thousands
    /// of leaders ten times a second for as long as it stayed down; a live member that lost
    /// an announcement finds the leader anyway (its pre-vote is refused with the leader's
    /// name).
    pub(super) fn announce_again(&mut self) {
        let wait_max = ANNOUNCE_INTERVAL_MAX_TIMEOUTS * self.config.election_timeout_ticks_min;
        if let Role::Leader(state) = &mut self.role {
            if state.progress.values().any(|peer| !peer.has_fetched) {
                state.begin_epoch_wait_ticks = (2 * state.begin_epoch_wait_ticks).min(wait_max);
            }
        }
        self.announce();
    }

    /// `BeginEpoch` to every member that has not fetched from us yet.
    pub(super) fn announce(&mut self) {
        let Role::Leader(state) = &self.role else {
            return;
        };
        let silent: Vec<NodeId> = state
            .progress
            .iter()
            .filter(|(_, progress)| !progress.has_fetched)
            .map(|(id, _)| *id)
            .collect();
        let message = Message::BeginEpoch {
            term: self.hard_state.term,
            leader: self.config.id,
        };
        for peer in silent {
            self.send(peer, message.clone());
        }
    }

    /// Step down if no majority fetched during the last election timeout: a partitioned
    /// leader stops accepting writes it could never commit, and lets clients find the new one.
    pub(super) fn check_quorum(&mut self) {
        let is_voter = self.is_voter();
        let voters = self.voter_peers();
        let Role::Leader(state) = &mut self.role else {
            return;
        };
        let active = usize::from(is_voter)
            + voters
                .iter()
                .filter(|voter| {
                    state
                        .progress
                        .get(voter)
                        .is_some_and(|peer| peer.recently_active)
                })
                .count();
        let mut fell_silent = false;
        for peer in state.progress.values_mut() {
            // Silent for a whole period (restarted, or lost our BeginEpoch): announce again,
            // soon.
            fell_silent |= peer.has_fetched && !peer.recently_active;
            peer.has_fetched &= peer.recently_active;
            peer.recently_active = false;
        }
        if fell_silent {
            state.begin_epoch_wait_ticks = self.config.begin_epoch_interval_ticks;
            state.begin_epoch_elapsed_ticks = 0;
        }
        if !self.is_quorum(active) {
            self.become_follower(self.hard_state.term, None);
        }
    }
}
