//! One member of one Raft group: its state and roles, and the leader lease; elections
//! (pre-vote, check-quorum, `BeginEpoch`) are in `elections`, pull replication and the commit
//! rule in `replication`, leadership transfer and voter changes in `voter_changes`. Every
//! input is a method call (`tick`, `step`, `propose`, `persisted`, ...), and every output is
//! the [`Effects`] it returns; nothing here reads a clock or does I/O.
//!
//! A node outside its own voter set is an *observer* (KRaft's term; a learner is an observer
//! the leader tracks): it fetches and applies the log like a follower but never campaigns and
//! is never counted. Nobody announces a leader to it, so it finds one itself (KIP-595): it
//! fetches from the leader it knows, or else from the voters in turn; a voter that does not
//! lead answers with a `BeginEpoch` naming the leader it knows, and an observer whose leader
//! has been silent for an election timeout forgets it and looks again. A voter removed from
//! the group thereby keeps following as an observer. An observer still answers vote requests:
//! a candidate asks only the voters in its own voter set, so one that asks this node counts it
//! a voter, and it may be right (a voter being added that has not fetched that entry yet; the
//! Raft dissertation's §4.1, KIP-853).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::log::{LogSummary, RaftLog};
use crate::message::{
    Effects, Envelope, HardState, Index, Message, NodeId, Term, TermLimit, TERM_MAX,
};
use crate::SplitMix64;

/// The most doublings of the election timeout after failed campaigns (see
/// `reset_election_timeout`): at most 8 times the window, 4-8 s at the broker's defaults.
const ELECTION_BACKOFF_SHIFT_MAX: u32 = 3;

mod damage;
mod elections;
mod replication;
mod voter_changes;

pub use replication::FETCH_ANSWERS_AHEAD_MAX;
mod timers;

/// A group member's settings. Times are in ticks of the driver's logical clock.
#[derive(Debug, Clone)]
pub struct RaftConfig {
    pub id: NodeId,
    /// A voter that hears nothing from a leader for a random time in
    /// `[election_timeout_ticks_min, 2 * election_timeout_ticks_min)` starts a pre-vote; a
    /// leader that no majority fetched from for `election_timeout_ticks_min` steps down; a
    /// leadership transfer not done in `election_timeout_ticks_min` is abandoned.
    pub election_timeout_ticks_min: u64,
    /// How soon a leader repeats `BeginEpoch` to members that have not fetched yet (the wait
    /// doubles while they stay silent, see `RaftNode::announce_again`).
    pub begin_epoch_interval_ticks: u64,
    /// A follower whose fetch went unanswered this long sends it again (it was lost).
    pub fetch_timeout_ticks: u64,
    /// Seed of the election-timeout generator; give each node (and each restart) its own.
    pub seed: u64,
}

/// What storage gave back after a restart: everything on disk counts as persisted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistedState {
    pub hard_state: HardState,
    pub log: LogSummary,
}

impl PersistedState {
    /// A node that has never run, in a group whose initial voters are `voters`.
    pub fn empty(voters: Vec<NodeId>) -> PersistedState {
        PersistedState {
            hard_state: HardState::default(),
            log: LogSummary::empty(voters),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleKind {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// Why a leader-only request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NotLeader {
        leader_hint: Option<NodeId>,
    },
    /// Leadership is moving to another node; retry there.
    TransferInProgress,
    /// A voter-set change is not committed yet, or this leader has not yet committed an entry
    /// of its own term (before that, an earlier leader's change may still be in flight).
    ChangeInProgress,
    /// The node is not in the role the request needs (e.g. promoting a non-learner).
    InvalidMember {
        node: NodeId,
    },
    /// A learner must hold everything committed before it may vote.
    LearnerBehind {
        node: NodeId,
    },
    EmptyBatch,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NotLeader { leader_hint } => {
                write!(formatter, "not the leader ({leader_hint:?} is)")
            }
            Refusal::TransferInProgress => write!(formatter, "leadership transfer in progress"),
            Refusal::ChangeInProgress => write!(formatter, "a membership change is in progress"),
            Refusal::InvalidMember { node } => {
                write!(formatter, "node {node} cannot take that role")
            }
            Refusal::LearnerBehind { node } => {
                write!(formatter, "learner {node} has not caught up")
            }
            Refusal::EmptyBatch => write!(formatter, "a batch holds at least one record"),
        }
    }
}

impl std::error::Error for Refusal {}

/// The leader's knowledge of one follower (voter or learner).
#[derive(Debug, Clone, Default)]
struct Progress {
    /// The highest index known to be in the follower's log, matching ours, and persisted.
    match_index: Index,
    /// The follower's log matches ours up to here (persisted or not).
    fetched_index: Index,
    /// Has fetched in this term: no more `BeginEpoch` needed.
    has_fetched: bool,
    /// Fetched in the current check-quorum period.
    recently_active: bool,
}

/// The follower's one fetch in flight: its `fetch_index` and `last_fetched_term`, how long
/// ago it left, and the durable index the leader was last told while it is out (by it, or by
/// a `Durable` report since).
#[derive(Debug, Clone, Copy)]
struct FetchInFlight {
    fetch_index: Index,
    last_fetched_term: Term,
    elapsed_ticks: u64,
    durable_index: Index,
}

#[derive(Debug, Clone)]
struct Transfer {
    target: NodeId,
    elapsed_ticks: u64,
}

#[derive(Debug, Clone)]
struct LeaderState {
    /// Every other voter and learner.
    progress: BTreeMap<NodeId, Progress>,
    /// Fetch and are not counted, until promoted.
    learners: BTreeSet<NodeId>,
    /// Our leader-change entry: committing it means every earlier entry is committed.
    term_start_index: Index,
    begin_epoch_elapsed_ticks: u64,
    /// The wait between announcements to members that have not fetched: the configured
    /// interval, doubled after each announcement up to `ANNOUNCE_INTERVAL_MAX_TIMEOUTS`
    /// election timeouts, and back to the interval when a member that fetched falls silent
    /// (see `RaftNode::announce`).
    begin_epoch_wait_ticks: u64,
    transfer: Option<Transfer>,
}

#[derive(Debug, Clone)]
enum Role {
    Follower {
        leader: Option<NodeId>,
        /// Our log matches the leader's up to here: the most of its commit index we may take.
        verified_index: Index,
        fetch: Option<FetchInFlight>,
    },
    PreCandidate {
        granted: BTreeSet<NodeId>,
    },
    Candidate {
        granted: BTreeSet<NodeId>,
    },
    Leader(LeaderState),
}

#[derive(Debug, Clone)]
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
    /// Elections in a row that ended without a leader (the timeout ran out again after the
    /// pre-vote was won): each doubles the next election timeout, up to
    /// [`ELECTION_BACKOFF_SHIFT_MAX`] doublings.
    campaigns_failed: u32,
    /// Fetches an observer sent while it knew no leader: which voter it asks next.
    leaderless_fetches: u64,
    /// Where the log ended before it lost entries to damage (see `damage`): votes go only to
    /// candidates at least this up to date, and no campaign starts, until the log is back.
    vote_floor: Option<(Term, Index)>,
    /// A follower fetches on only while storage holds its log up to here: the log's end
    /// before the entries of the `FETCH_ANSWERS_AHEAD_MAX`-th latest answer. Fetches are
    /// pipelined (the next leaves while those entries are being written), but never more than
    /// that many answers ahead of the disk.
    fetch_floor_index: Index,
    /// The log's end before each of the latest answers with entries, oldest first (at most
    /// `FETCH_ANSWERS_AHEAD_MAX`): where the floor moves to.
    answer_starts: VecDeque<Index>,
    effects: Effects,
}

/// How much longer than usual the voters other than the first wait before a new group's first
/// election, in election timeouts (see `RaftNode::time_first_election`).
const FIRST_ELECTION_GRACE_TIMEOUTS: u64 = 3;

impl RaftNode {
    /// A node (re)starting from what storage holds; it starts as a follower without a leader.
    pub fn new(config: RaftConfig, persisted: PersistedState) -> RaftNode {
        assert!(config.election_timeout_ticks_min > config.begin_epoch_interval_ticks);
        assert!(config.election_timeout_ticks_min > config.fetch_timeout_ticks);
        assert!(config.begin_epoch_interval_ticks > 0 && config.fetch_timeout_ticks > 0);
        let random = SplitMix64::new(config.seed);
        let log = RaftLog::restored(persisted.log);
        assert!(log.last_term() <= persisted.hard_state.term);
        assert!(
            persisted.hard_state.term <= TERM_MAX,
            "the driver refuses to start from a term past TERM_MAX"
        );
        let mut node = RaftNode {
            config,
            random,
            hard_state: persisted.hard_state,
            // What was removed from the log was committed.
            commit_index: log.log_start() - 1,
            log,
            role: Role::Follower {
                leader: None,
                verified_index: 0,
                fetch: None,
            },
            elapsed_ticks: 0,
            election_timeout_ticks: 0,
            campaigns_failed: 0,
            leaderless_fetches: 0,
            vote_floor: None,
            fetch_floor_index: 0,
            answer_starts: VecDeque::new(),
            effects: Effects::default(),
        };
        node.reset_election_timeout();
        node.time_first_election();
        node
    }

    /// In a group that never had a term (a new partition), the first voter listed (the
    /// preferred leader, where the controller spread leaderships evenly) campaigns at its
    /// first tick and the others wait `FIRST_ELECTION_GRACE_TIMEOUTS` election timeouts more
    /// than usual, so that the preferred replica becomes the first leader, as Kafka makes it,
    /// even when the brokers host the group a moment apart. Without it whichever broker
    /// hosted a new topic's partitions first led most of them. A preferred replica that
    /// hosts the group later than that is handed the leadership once it has caught up (the
    /// driver's preferred-leader check).
    fn time_first_election(&mut self) {
        if self.hard_state.term != 0 || self.log.last_index() != 0 {
            return;
        }
        match self
            .log
            .voters()
            .iter()
            .position(|id| *id == self.config.id)
        {
            Some(0) => self.election_timeout_ticks = 1,
            Some(_) => {
                self.election_timeout_ticks +=
                    FIRST_ELECTION_GRACE_TIMEOUTS * self.config.election_timeout_ticks_min
            }
            None => {}
        }
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

    /// While leading: the index of the leader-change entry that began this term. A leader
    /// commits only entries of its own term, so once the commit index reaches it, everything
    /// earlier leaders committed is committed here too.
    pub fn term_start_index(&self) -> Option<Index> {
        match &self.role {
            Role::Leader(state) => Some(state.term_start_index),
            Role::Follower { .. } | Role::PreCandidate { .. } | Role::Candidate { .. } => None,
        }
    }

    pub fn persisted_index(&self) -> Index {
        self.log.persisted_index()
    }

    /// The log as this node sees it (persisted or not).
    pub fn log(&self) -> &LogSummary {
        self.log.summary()
    }

    /// The term of `index` if this node's log still knows it.
    pub fn term_at(&self, index: Index) -> Option<Term> {
        self.log.term_at(index)
    }

    /// The voter set in force: the last voter-set entry in the log, committed or not.
    pub fn voters(&self) -> &[NodeId] {
        self.log.voters()
    }

    /// Advance logical time by one tick. A clock jump is many calls in a row.
    pub fn tick(&mut self) -> Effects {
        self.elapsed_ticks += 1;
        let is_voter = self.is_voter();
        match &mut self.role {
            Role::Leader(state) => {
                state.begin_epoch_elapsed_ticks += 1;
                if state.begin_epoch_elapsed_ticks >= state.begin_epoch_wait_ticks {
                    state.begin_epoch_elapsed_ticks = 0;
                    self.announce_again();
                }
                self.tick_transfer();
                if self.elapsed_ticks >= self.config.election_timeout_ticks_min {
                    self.elapsed_ticks = 0;
                    self.check_quorum();
                }
            }
            Role::Follower { leader, fetch, .. } => {
                // An observer whose leader was silent for an election timeout (or that found
                // none) looks again, asking the voters in turn.
                let lost = !is_voter && self.elapsed_ticks >= self.election_timeout_ticks;
                if lost {
                    *leader = None;
                    *fetch = None;
                }
                let resend = match fetch {
                    Some(in_flight) => {
                        in_flight.elapsed_ticks += 1;
                        in_flight.elapsed_ticks >= self.config.fetch_timeout_ticks
                    }
                    None => self.log.persisted_index() >= self.fetch_floor_index,
                };
                let fetches = leader.is_some() || !is_voter;
                if lost {
                    self.reset_election_timeout();
                }
                if fetches && resend {
                    self.send_fetch();
                }
                if is_voter && self.elapsed_ticks >= self.election_timeout_ticks && !self.abstains()
                {
                    self.start_pre_vote();
                }
            }
            Role::PreCandidate { .. } | Role::Candidate { .. } => {
                if is_voter && self.elapsed_ticks >= self.election_timeout_ticks && !self.abstains()
                {
                    // Only an election backs off (see `reset_election_timeout`): a pre-vote
                    // writes nothing and moves no term, and the usual reason it is refused is a
                    // voter that heard from the dead leader a little later than this node; doubling
                    // the wait for that stretched a 3 000-partition failover by seconds.
                    if matches!(self.role, Role::Candidate { .. }) {
                        self.campaigns_failed = self.campaigns_failed.saturating_add(1);
                    }
                    self.start_pre_vote();
                }
            }
        }
        self.take_effects()
    }

    /// Handle a message from `from`.
    pub fn step(&mut self, from: NodeId, message: Message) -> Effects {
        // Vote requests are answered whatever our voter set says (Raft dissertation §4.1): it
        // may be stale, and a node outside it may need our vote. The leader lease, not a
        // membership check, keeps a removed node from disrupting.
        if from == self.config.id {
            return self.take_effects();
        }
        // Refused before anything reads it: a term past TERM_MAX would leave the group
        // with a leader that cannot stamp its entries.
        let highest = message.highest_term();
        if highest > TERM_MAX {
            self.effects.term_limit = Some(TermLimit::PeerTerm {
                from,
                term: highest,
            });
            return self.take_effects();
        }
        let term = message.term();
        if term > self.hard_state.term {
            match message {
                // Pre-votes never move terms: that is their point.
                Message::PreVote { .. } | Message::PreVoteResponse { granted: true, .. } => {}
                // A leader we heard from recently is alive: a candidate is disruptive, not
                // needed, unless that leader asked for the election.
                Message::RequestVote {
                    transfer: false, ..
                } if self.in_leader_lease() => {
                    return self.take_effects();
                }
                Message::BeginEpoch { leader, .. } | Message::FetchResponse { leader, .. } => {
                    self.become_follower(term, Some(leader))
                }
                _ => self.become_follower(term, None),
            }
        } else if term < self.hard_state.term {
            let our_term = self.hard_state.term;
            match (message, self.leader()) {
                // A member left behind (e.g. healed from a partition) learns who leads now.
                (
                    Message::Fetch { .. } | Message::Durable { .. } | Message::BeginEpoch { .. },
                    Some(leader),
                ) => self.send(
                    from,
                    Message::BeginEpoch {
                        term: our_term,
                        leader,
                    },
                ),
                // A leader behind our term (announced by itself or named by a voter), and no
                // leader in ours: we won a pre-vote, but our vote requests came once the others
                // had this leader again, and its lease made them ignore us. Tell the leader our
                // term (a refused vote carries nothing else), so it steps down and an election
                // at a later term takes us in; otherwise neither would ever hear from the other
                // (etcd answers a stale leader's append so).
                (Message::BeginEpoch { leader, .. }, None) if leader != self.config.id => self
                    .send(
                        leader,
                        Message::RequestVoteResponse {
                            term: our_term,
                            granted: false,
                        },
                    ),
                (Message::PreVote { .. }, _) => self.send(
                    from,
                    Message::PreVoteResponse {
                        term: our_term,
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
                    !self.in_leader_lease() && self.candidate_up_to_date(last_index, last_term);
                let term = if granted { term } else { self.hard_state.term };
                self.send(from, Message::PreVoteResponse { term, granted });
                // It lost its leader (a restart, a lost BeginEpoch): say who leads.
                if let (false, Some(leader)) = (granted, self.leader()) {
                    let term = self.hard_state.term;
                    self.send(from, Message::BeginEpoch { term, leader });
                }
            }
            Message::RequestVote {
                last_index,
                last_term,
                ..
            } => self.handle_request_vote(from, last_index, last_term),
            Message::PreVoteResponse { term, granted } => {
                let voters = self.log.voters();
                let votes = match &mut self.role {
                    Role::PreCandidate { granted: votes }
                        if granted && term == self.hard_state.term + 1 =>
                    {
                        votes.insert(from);
                        votes.iter().filter(|id| voters.contains(id)).count()
                    }
                    _ => return self.take_effects(),
                };
                if self.is_quorum(votes) {
                    self.start_election(false);
                }
            }
            Message::RequestVoteResponse { granted, term: _ } => {
                let voters = self.log.voters();
                let votes = match &mut self.role {
                    Role::Candidate { granted: votes } if granted => {
                        votes.insert(from);
                        votes.iter().filter(|id| voters.contains(id)).count()
                    }
                    _ => return self.take_effects(),
                };
                if self.is_quorum(votes) {
                    self.become_leader();
                }
            }
            // A hint naming this node is stale: it does not lead this term.
            Message::BeginEpoch { leader, .. } if leader != self.config.id && leader == from => {
                self.follow(leader);
            }
            // Another voter naming the leader it follows (with its refusal of our pre-vote) is
            // no sign of that leader's life: a node that did not know the leader fetches from
            // it, but nobody's election clock starts over. Taken as a sign, each of a dead
            // leader's followers refused the other's pre-vote and sent it back to wait for the
            // dead leader again, and a 3 000-partition failover took seconds more.
            Message::BeginEpoch { leader, .. } if leader != self.config.id => {
                self.learn_leader(leader);
            }
            Message::BeginEpoch { .. } => {}
            Message::Fetch {
                fetch_index,
                last_fetched_term,
                durable_index,
                ..
            } => self.handle_fetch(from, fetch_index, last_fetched_term, durable_index),
            Message::Durable {
                fetch_index,
                last_fetched_term,
                durable_index,
                ..
            } => self.handle_durable(from, fetch_index, last_fetched_term, durable_index),
            Message::FetchResponse {
                leader,
                commit_index,
                fetch_index,
                last_fetched_term,
                result,
                ..
            } => {
                if leader == from && self.follow(leader) {
                    self.handle_fetch_response(commit_index, fetch_index, last_fetched_term, result)
                }
            }
            Message::TimeoutNow { .. } => {
                if self.leader() == Some(from) && self.is_voter() && !self.abstains() {
                    self.start_election(true);
                }
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

    fn is_voter(&self) -> bool {
        self.log.voters().contains(&self.config.id)
    }

    /// Kafka's in-sync replicas as Raft sees them, while leading: this leader and every voter
    /// that fetched within the last election timeout or two and has everything committed
    /// durably. Empty unless leading. (What `min.insync.replicas` is checked against.)
    pub fn in_sync_voters(&self) -> Vec<NodeId> {
        let Role::Leader(state) = &self.role else {
            return Vec::new();
        };
        let mut in_sync: Vec<NodeId> = self
            .voter_peers()
            .into_iter()
            .filter(|voter| {
                state.progress.get(voter).is_some_and(|peer| {
                    (peer.recently_active || peer.has_fetched)
                        && peer.match_index >= self.commit_index
                })
            })
            .collect();
        if self.is_voter() {
            in_sync.push(self.config.id);
        }
        in_sync.sort_unstable();
        in_sync
    }

    fn voter_peers(&self) -> Vec<NodeId> {
        let id = self.config.id;
        self.log
            .voters()
            .iter()
            .copied()
            .filter(|voter| *voter != id)
            .collect()
    }

    fn is_quorum(&self, count: usize) -> bool {
        count > self.log.voters().len() / 2
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

    /// A new election timeout in `[min, 2 * min)`, staggered by the node's rank in the voter
    /// set: the window is cut into one slot per voter and the voter at position `r` draws from
    /// slot `r`. When a leader dies, every group it led elects at once; without the stagger
    /// its followers would often campaign together and split the vote (each voting for
    /// itself), costing another timeout per split. With it the first surviving voter of each
    /// group asks first and the next one only a slot later, and since the metadata rotates the
    /// first replica over partitions, the new leaderships spread over the survivors.
    /// Observers (no rank) draw from the whole window.
    ///
    /// After elections that ended without a leader the timeout doubles per failed election
    /// (as KRaft's election backoff; a pre-vote that was not won does not count, since it
    /// writes nothing): a vote is only counted once the voter's vote log holds
    /// it, and when a dead broker's thousand groups elect at once those writes can take longer
    /// than a timeout; without the backoff every candidate gave up before its votes arrived,
    /// campaigned again with a new term to write, and the groups churned through terms
    /// without ever electing. A leader found, or won, starts over from the window.
    fn reset_election_timeout(&mut self) {
        let min = self.config.election_timeout_ticks_min;
        self.elapsed_ticks = 0;
        let voters = self.log.voters();
        self.election_timeout_ticks = match voters.iter().position(|id| *id == self.config.id) {
            Some(rank) => {
                let slot_ticks = (min / voters.len() as u64).max(1);
                let start = (min + rank as u64 * slot_ticks).min(2 * min - 1);
                self.random.range(start, (start + slot_ticks).min(2 * min))
            }
            None => self.random.range(min, 2 * min),
        };
        self.election_timeout_ticks <<= self.campaigns_failed.min(ELECTION_BACKOFF_SHIFT_MAX);
    }

    fn set_term(&mut self, term: Term) {
        assert!(term >= self.hard_state.term, "terms never go back");
        assert!(term <= TERM_MAX, "terms past TERM_MAX are refused");
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
            fetch: None,
        };
        self.reset_election_timeout();
        if leader.is_some() {
            self.send_fetch();
        }
    }

    /// Take `leader` (the sender of a current-term leader message) as our leader; false if we
    /// lead this term ourselves (two leaders in one term: a peer is broken; never follow it).
    fn follow(&mut self, leader: NodeId) -> bool {
        match self.role {
            Role::Leader(_) => return false,
            Role::Follower {
                leader: Some(known),
                ..
            } if known == leader => {}
            Role::Follower { .. } | Role::PreCandidate { .. } | Role::Candidate { .. } => {
                self.become_follower(self.hard_state.term, Some(leader))
            }
        }
        self.elapsed_ticks = 0;
        self.campaigns_failed = 0;
        true
    }

    /// A current-term leader named by another member: a follower that knew none fetches from
    /// it, without restarting its election clock (the leader's own answers will, if it lives);
    /// a campaign goes on.
    fn learn_leader(&mut self, leader: NodeId) {
        if let Role::Follower {
            leader: known @ None,
            fetch,
            ..
        } = &mut self.role
        {
            *known = Some(leader);
            *fetch = None;
            self.send_fetch();
        }
    }

    /// Ok if we lead and take requests (no transfer under way).
    fn leader_state_ready(&self) -> Result<(), Refusal> {
        match &self.role {
            Role::Leader(state) if state.transfer.is_some() => Err(Refusal::TransferInProgress),
            Role::Leader(_) => Ok(()),
            Role::Follower { .. } | Role::PreCandidate { .. } | Role::Candidate { .. } => {
                Err(Refusal::NotLeader {
                    leader_hint: self.leader(),
                })
            }
        }
    }
}
