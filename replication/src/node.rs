//! One member of one Raft group: roles, elections (pre-vote, check-quorum), log replication and
//! the commit rule. Every input is a method call (`tick`, `step`, `propose`, `persisted`), and
//! every output is the [`Effects`] it returns; nothing here reads a clock or does I/O.

use std::collections::{BTreeMap, BTreeSet};

use crate::log::RaftLog;
use crate::message::{
    AppendResult, Effects, Envelope, HardState, Index, LogEntry, Message, NodeId, Term,
};
use crate::random::SplitMix64;

/// A group member's settings. Times are in ticks of the driver's logical clock.
#[derive(Debug, Clone)]
pub struct RaftConfig {
    pub id: NodeId,
    /// Every voter of the group, this node included.
    pub voters: Vec<NodeId>,
    /// A follower that hears nothing from a leader for a random time in
    /// `[election_timeout_ticks_min, 2 * election_timeout_ticks_min)` starts a pre-vote; a
    /// leader that hears from no majority for `election_timeout_ticks_min` steps down.
    pub election_timeout_ticks_min: u64,
    pub heartbeat_interval_ticks: u64,
    /// Bound on the entries one AppendEntries carries.
    pub entries_per_message_max: usize,
    /// Seed of the election-timeout generator; give each node its own.
    pub seed: u64,
}

/// What storage gave back after a restart.
#[derive(Debug, Clone, Default)]
pub struct PersistedState {
    pub hard_state: HardState,
    pub entries: Vec<LogEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleKind {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// The leader's knowledge of one follower.
#[derive(Debug, Clone)]
struct Progress {
    /// The highest index known to be in the follower's log, matching ours, and persisted.
    match_index: Index,
    /// Where the next AppendEntries starts.
    next_index: Index,
    /// Heard from in the current check-quorum period.
    recently_active: bool,
}

#[derive(Debug, Clone)]
enum Role {
    Follower {
        leader: Option<NodeId>,
        /// Our log matches `leader`'s up to here (what we may acknowledge once persisted).
        verified_index: Index,
    },
    PreCandidate {
        granted: BTreeSet<NodeId>,
    },
    Candidate {
        granted: BTreeSet<NodeId>,
    },
    Leader {
        progress: BTreeMap<NodeId, Progress>,
        heartbeat_elapsed_ticks: u64,
    },
}

/// Proposals are accepted only by the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotLeader {
    pub leader_hint: Option<NodeId>,
}

#[derive(Debug)]
pub struct RaftNode {
    config: RaftConfig,
    random: SplitMix64,
    hard_state: HardState,
    log: RaftLog,
    commit_index: Index,
    role: Role,
    /// Ticks since the last sign of a leader (follower), since the election began (candidates),
    /// or since the last check-quorum (leader).
    elapsed_ticks: u64,
    election_timeout_ticks: u64,
    effects: Effects,
}

impl RaftNode {
    /// A node (re)starting from what storage holds; it starts as a follower without a leader.
    pub fn new(config: RaftConfig, persisted: PersistedState) -> RaftNode {
        assert!(
            config.voters.contains(&config.id),
            "a node is one of its voters"
        );
        assert!(config.election_timeout_ticks_min > config.heartbeat_interval_ticks);
        assert!(config.heartbeat_interval_ticks > 0 && config.entries_per_message_max > 0);
        let random = SplitMix64::new(config.seed);
        let mut node = RaftNode {
            config,
            random,
            hard_state: persisted.hard_state,
            log: RaftLog::restored(persisted.entries),
            commit_index: 0,
            role: Role::Follower {
                leader: None,
                verified_index: 0,
            },
            elapsed_ticks: 0,
            election_timeout_ticks: 0,
            effects: Effects::default(),
        };
        assert!(node.log.last_term() <= node.hard_state.term);
        node.reset_election_timeout();
        node
    }

    pub fn id(&self) -> NodeId {
        self.config.id
    }

    pub fn term(&self) -> Term {
        self.hard_state.term
    }

    pub fn role(&self) -> RoleKind {
        match self.role {
            Role::Follower { .. } => RoleKind::Follower,
            Role::PreCandidate { .. } => RoleKind::PreCandidate,
            Role::Candidate { .. } => RoleKind::Candidate,
            Role::Leader { .. } => RoleKind::Leader,
        }
    }

    pub fn leader(&self) -> Option<NodeId> {
        match self.role {
            Role::Follower { leader, .. } => leader,
            Role::Leader { .. } => Some(self.config.id),
            Role::PreCandidate { .. } | Role::Candidate { .. } => None,
        }
    }

    pub fn commit_index(&self) -> Index {
        self.commit_index
    }

    pub fn persisted_index(&self) -> Index {
        self.log.persisted_index()
    }

    /// The whole log, persisted or not.
    pub fn entries(&self) -> &[LogEntry] {
        self.log.entries()
    }

    /// Advance logical time by one tick.
    pub fn tick(&mut self) -> Effects {
        self.elapsed_ticks += 1;
        match &mut self.role {
            Role::Leader {
                heartbeat_elapsed_ticks,
                ..
            } => {
                *heartbeat_elapsed_ticks += 1;
                if *heartbeat_elapsed_ticks >= self.config.heartbeat_interval_ticks {
                    *heartbeat_elapsed_ticks = 0;
                    self.broadcast_append();
                }
                if self.elapsed_ticks >= self.config.election_timeout_ticks_min {
                    self.elapsed_ticks = 0;
                    self.check_quorum();
                }
            }
            Role::Follower { .. } | Role::PreCandidate { .. } | Role::Candidate { .. } => {
                if self.elapsed_ticks >= self.election_timeout_ticks {
                    self.start_pre_vote();
                }
            }
        }
        self.take_effects()
    }

    /// Append `payload` to the log, if this node leads; returns the entry's index. The entry is
    /// committed once `commit_index` reaches it (and may be lost if leadership changes first).
    pub fn propose(&mut self, payload: Vec<u8>) -> Result<(Index, Effects), NotLeader> {
        if !matches!(self.role, Role::Leader { .. }) {
            return Err(NotLeader {
                leader_hint: self.leader(),
            });
        }
        let index = self.append_own(payload);
        self.broadcast_append();
        Ok((index, self.take_effects()))
    }

    /// Storage completed every write up to the one ending with entry (`index`, `term`).
    pub fn persisted(&mut self, index: Index, term: Term) -> Effects {
        if self.log.persisted(index, term) {
            match self.role {
                Role::Leader { .. } => self.advance_commit(),
                Role::Follower {
                    leader: Some(leader),
                    verified_index,
                } => self.acknowledge(leader, verified_index),
                Role::Follower { leader: None, .. }
                | Role::PreCandidate { .. }
                | Role::Candidate { .. } => {}
            }
        }
        self.take_effects()
    }

    /// Handle a message from `from`.
    pub fn step(&mut self, from: NodeId, message: Message) -> Effects {
        if from == self.config.id || !self.config.voters.contains(&from) {
            return self.take_effects();
        }
        let term = message.term();
        if term > self.hard_state.term {
            match message {
                // Pre-votes never move terms: that is their point.
                Message::PreVote { .. } => {}
                Message::PreVoteResponse { granted: true, .. } => {}
                // A leader we heard from recently is alive: a candidate is disruptive, not
                // needed (it passed a pre-vote only with nodes that lost their leader).
                Message::RequestVote { .. } if self.in_leader_lease() => {
                    return self.take_effects();
                }
                Message::AppendEntries { leader, .. } => self.become_follower(term, Some(leader)),
                _ => self.become_follower(term, None),
            }
        } else if term < self.hard_state.term {
            match message {
                // A stale leader (e.g. healed from a partition) must learn our term so it steps
                // down; with pre-vote nobody else would tell it.
                Message::AppendEntries { .. } => {
                    let hint = self.log.last_index() + 1;
                    self.send(
                        from,
                        Message::AppendEntriesResponse {
                            term: self.hard_state.term,
                            result: AppendResult::Rejected {
                                next_index_hint: hint,
                            },
                        },
                    );
                }
                Message::PreVote { .. } => self.send(
                    from,
                    Message::PreVoteResponse {
                        term: self.hard_state.term,
                        granted: false,
                    },
                ),
                _ => {}
            }
            return self.take_effects();
        }
        match message {
            Message::PreVote {
                term,
                last_index,
                last_term,
            } => {
                let granted =
                    !self.in_leader_lease() && self.log.is_up_to_date(last_index, last_term);
                let term = if granted { term } else { self.hard_state.term };
                self.send(from, Message::PreVoteResponse { term, granted });
            }
            Message::RequestVote {
                last_index,
                last_term,
                ..
            } => {
                let granted = self.hard_state.voted_for.is_none_or(|voted| voted == from)
                    && self.leader().is_none_or(|leader| leader == from)
                    && self.log.is_up_to_date(last_index, last_term);
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
            Message::PreVoteResponse { term, granted } => {
                let votes = match &mut self.role {
                    Role::PreCandidate { granted: votes }
                        if granted && term == self.hard_state.term + 1 =>
                    {
                        votes.insert(from);
                        votes.len()
                    }
                    _ => return self.take_effects(),
                };
                if self.is_quorum(votes) {
                    self.start_election();
                }
            }
            Message::RequestVoteResponse { granted, term: _ } => {
                let votes = match &mut self.role {
                    Role::Candidate { granted: votes } if granted => {
                        votes.insert(from);
                        votes.len()
                    }
                    _ => return self.take_effects(),
                };
                if self.is_quorum(votes) {
                    self.become_leader();
                }
            }
            Message::AppendEntries {
                leader,
                prev_index,
                prev_term,
                entries,
                leader_commit,
                ..
            } => self.handle_append(leader, prev_index, prev_term, &entries, leader_commit),
            Message::AppendEntriesResponse { result, .. } => {
                self.handle_append_response(from, result)
            }
        }
        self.take_effects()
    }

    fn take_effects(&mut self) -> Effects {
        std::mem::take(&mut self.effects)
    }

    fn send(&mut self, to: NodeId, message: Message) {
        self.effects.messages.push(Envelope { to, message });
    }

    fn peers(&self) -> Vec<NodeId> {
        let id = self.config.id;
        self.config
            .voters
            .iter()
            .copied()
            .filter(|voter| *voter != id)
            .collect()
    }

    fn is_quorum(&self, count: usize) -> bool {
        count > self.config.voters.len() / 2
    }

    /// Whether a leader is known to be alive: we lead (check-quorum removes us otherwise), or we
    /// heard from our leader within the minimum election timeout.
    fn in_leader_lease(&self) -> bool {
        match self.role {
            Role::Leader { .. } => true,
            Role::Follower {
                leader: Some(_), ..
            } => self.elapsed_ticks < self.config.election_timeout_ticks_min,
            Role::Follower { leader: None, .. }
            | Role::PreCandidate { .. }
            | Role::Candidate { .. } => false,
        }
    }

    fn reset_election_timeout(&mut self) {
        let min = self.config.election_timeout_ticks_min;
        self.elapsed_ticks = 0;
        self.election_timeout_ticks = self.random.range(min, 2 * min);
    }

    fn set_term(&mut self, term: Term) {
        assert!(term >= self.hard_state.term, "terms never go back");
        if term > self.hard_state.term {
            self.hard_state = HardState {
                term,
                voted_for: None,
            };
            self.effects.hard_state = Some(self.hard_state);
        }
    }

    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        self.set_term(term);
        self.role = Role::Follower {
            leader,
            verified_index: 0,
        };
        self.reset_election_timeout();
    }

    fn start_pre_vote(&mut self) {
        self.role = Role::PreCandidate {
            granted: BTreeSet::from([self.config.id]),
        };
        self.reset_election_timeout();
        if self.is_quorum(1) {
            return self.start_election();
        }
        let message = Message::PreVote {
            term: self.hard_state.term + 1,
            last_index: self.log.last_index(),
            last_term: self.log.last_term(),
        };
        for peer in self.peers() {
            self.send(peer, message.clone());
        }
    }

    fn start_election(&mut self) {
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
        };
        for peer in self.peers() {
            self.send(peer, message.clone());
        }
    }

    fn become_leader(&mut self) {
        let next_index = self.log.last_index() + 1;
        let progress = self
            .peers()
            .into_iter()
            .map(|peer| {
                let progress = Progress {
                    match_index: 0,
                    next_index,
                    recently_active: false,
                };
                (peer, progress)
            })
            .collect();
        self.role = Role::Leader {
            progress,
            heartbeat_elapsed_ticks: 0,
        };
        self.elapsed_ticks = 0;
        // Entries of earlier terms commit only under an entry of ours (Raft §5.4.2).
        self.append_own(Vec::new());
        self.broadcast_append();
    }

    fn append_own(&mut self, payload: Vec<u8>) -> Index {
        let entry = LogEntry {
            term: self.hard_state.term,
            index: self.log.last_index() + 1,
            payload,
        };
        let index = entry.index;
        let write = self.log.append(entry);
        self.effects.log_writes.push(write);
        index
    }

    /// Step down if no majority answered during the last election timeout: a partitioned
    /// leader stops accepting writes it could never commit, and lets clients find the new one.
    fn check_quorum(&mut self) {
        let Role::Leader { progress, .. } = &mut self.role else {
            return;
        };
        let active = 1 + progress
            .values()
            .filter(|peer| peer.recently_active)
            .count();
        for peer in progress.values_mut() {
            peer.recently_active = false;
        }
        if !self.is_quorum(active) {
            self.become_follower(self.hard_state.term, None);
        }
    }

    fn broadcast_append(&mut self) {
        for peer in self.peers() {
            self.send_append(peer);
        }
    }

    fn send_append(&mut self, peer: NodeId) {
        let Role::Leader { progress, .. } = &mut self.role else {
            return;
        };
        let Some(progress) = progress.get_mut(&peer) else {
            return;
        };
        let prev_index = progress.next_index - 1;
        let prev_term = self
            .log
            .term_at(prev_index)
            .expect("next_index stays within the leader's log + 1");
        let entries = self
            .log
            .slice(progress.next_index, self.config.entries_per_message_max);
        progress.next_index += entries.len() as Index;
        let message = Message::AppendEntries {
            term: self.hard_state.term,
            leader: self.config.id,
            prev_index,
            prev_term,
            entries,
            leader_commit: self.commit_index,
        };
        self.send(peer, message);
    }

    fn handle_append(
        &mut self,
        leader: NodeId,
        prev_index: Index,
        prev_term: Term,
        entries: &[LogEntry],
        leader_commit: Index,
    ) {
        if !matches!(self.role, Role::Follower { leader: Some(known), .. } if known == leader) {
            if matches!(self.role, Role::Leader { .. }) {
                // Two leaders in one term: a peer is broken; never follow it.
                return;
            }
            self.become_follower(self.hard_state.term, Some(leader));
        }
        self.elapsed_ticks = 0;
        if self.log.term_at(prev_index) != Some(prev_term) {
            let next_index_hint = if prev_index > self.log.last_index() {
                self.log.last_index() + 1
            } else {
                self.log
                    .first_index_of_term_at(prev_index, self.commit_index + 1)
            };
            self.send(
                leader,
                Message::AppendEntriesResponse {
                    term: self.hard_state.term,
                    result: AppendResult::Rejected { next_index_hint },
                },
            );
            return;
        }
        let well_formed = entries
            .iter()
            .zip(prev_index + 1..)
            .all(|(entry, index)| entry.index == index && entry.term <= self.hard_state.term);
        if !well_formed {
            return;
        }
        if let Some(write) = self.log.merge(entries, self.commit_index) {
            self.effects.log_writes.push(write);
        }
        let verified = prev_index + entries.len() as Index;
        if let Role::Follower { verified_index, .. } = &mut self.role {
            *verified_index = (*verified_index).max(verified);
        }
        let commit = leader_commit.min(verified);
        if commit > self.commit_index {
            self.commit_index = commit;
            self.effects.commit_index = Some(commit);
        }
        let Role::Follower { verified_index, .. } = self.role else {
            unreachable!("became a follower above");
        };
        self.acknowledge(leader, verified_index);
    }

    /// Tell the leader how far our log matches its own and is persisted.
    fn acknowledge(&mut self, leader: NodeId, verified_index: Index) {
        let match_index = verified_index.min(self.log.persisted_index());
        self.send(
            leader,
            Message::AppendEntriesResponse {
                term: self.hard_state.term,
                result: AppendResult::Accepted { match_index },
            },
        );
    }

    fn handle_append_response(&mut self, from: NodeId, result: AppendResult) {
        let last_index = self.log.last_index();
        let Role::Leader { progress, .. } = &mut self.role else {
            return;
        };
        let Some(peer) = progress.get_mut(&from) else {
            return;
        };
        peer.recently_active = true;
        match result {
            AppendResult::Accepted { match_index } => {
                if match_index > last_index {
                    return;
                }
                if match_index > peer.match_index {
                    peer.match_index = match_index;
                    peer.next_index = peer.next_index.max(match_index + 1);
                    self.advance_commit();
                }
            }
            AppendResult::Rejected { next_index_hint } => {
                let next = next_index_hint
                    .min(peer.next_index.saturating_sub(1))
                    .clamp(peer.match_index + 1, last_index + 1);
                if next < peer.next_index {
                    peer.next_index = next;
                    self.send_append(from);
                }
            }
        }
    }

    /// Commit the highest index of the current term that a majority (the leader counting only
    /// what it has persisted itself) has persisted.
    fn advance_commit(&mut self) {
        let Role::Leader { progress, .. } = &self.role else {
            return;
        };
        let mut matched: Vec<Index> = progress.values().map(|peer| peer.match_index).collect();
        matched.push(self.log.persisted_index());
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let quorum_index = matched[self.config.voters.len() / 2];
        if quorum_index > self.commit_index
            && self.log.term_at(quorum_index) == Some(self.hard_state.term)
        {
            self.commit_index = quorum_index;
            self.effects.commit_index = Some(quorum_index);
            // Followers learn the new commit index with the next append or heartbeat.
        }
    }
}
