//! What Raft nodes say to each other and what a node asks its driver to do. Plain data: the
//! transport encodes it; the simulator passes it around as is.
//!
//! Replication is pull-based (Kafka's KRaft, KIP-595): followers `Fetch` from the leader, and
//! the core deals only in log metadata ([`EntryMeta`]); the record batches themselves travel
//! beside the messages, read and written by the driver.

/// A Raft node's identity within its group (a broker's node id).
pub type NodeId = u64;
/// A Raft term (Kafka's partition leader epoch).
pub type Term = u64;
/// The highest term a group may reach: the driver stamps each entry's term into its batch as
/// the partitionLeaderEpoch, a signed 32-bit field. A peer's message naming a later term is
/// refused unread, and a node at this term does not campaign (its election's term would be
/// past it): two billion elections are never reached honestly, only by a broken or hostile
/// peer, which must not make the next leader unable to write.
pub const TERM_MAX: Term = i32::MAX as Term;
/// A position in the Raft log: index `i` holds Kafka offset `i - 1`, and 0 means "before
/// everything", so that "nothing yet" needs no special case.
pub type Index = u64;

/// What an entry is, as its batch header says: records from producers, or one of the control
/// batches the core itself appends.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum EntryKind {
    Records,
    /// The one-index entry a new leader appends so that entries of earlier terms can commit
    /// (Raft §5.4.2; KRaft's LeaderChangeMessage control batch).
    LeaderChange,
    /// The group's voter set from this entry on (it takes effect as soon as it is in a log,
    /// committed or not: single-server membership changes).
    Voters(Vec<NodeId>),
}

/// One entry of the Raft log: one record batch, covering `first_index..=last_index` (a batch
/// of n records covers n indexes), all in the batch's `term` (its partitionLeaderEpoch).
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct EntryMeta {
    pub first_index: Index,
    pub last_index: Index,
    pub term: Term,
    pub kind: EntryKind,
}

/// How a leader answers a `Fetch`.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum FetchResult {
    /// The follower's log matches ours up to `fetch_index - 1`. The leader's core leaves
    /// `entries` empty; its driver reads whole batches from `fetch_index` on (up to a byte
    /// budget) and attaches them; the follower's driver fills `entries` from their headers
    /// before stepping its core. No entries: the follower is caught up.
    Entries { entries: Vec<EntryMeta> },
    /// The follower's entry at `fetch_index - 1` is not ours: our last epoch not after its
    /// `last_fetched_term` is `term`, and it ends at `end_index` (KIP-595's divergingEpoch).
    Diverging { end_index: Index, term: Term },
    /// `fetch_index` is below our log start: drop the whole log and restart it at
    /// `log_start`, whose previous entry has `prev_term`, under `voters` (the voter set in
    /// force there: what a snapshot holds besides data).
    SnapshotNeeded {
        log_start: Index,
        prev_term: Term,
        voters: Vec<NodeId>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Message {
    /// "Would you vote for me in `term`?" — sent without changing the sender's term, so a
    /// node that cannot win (partitioned, or behind) never disturbs the others' terms.
    PreVote {
        term: Term,
        last_index: Index,
        last_term: Term,
    },
    /// `term` is the pre-vote's term when granted, the voter's own term when not.
    PreVoteResponse {
        term: Term,
        granted: bool,
    },
    /// `transfer`: the current leader asked for this election (`TimeoutNow`), so a voter's
    /// leader lease must not hold it up.
    RequestVote {
        term: Term,
        last_index: Index,
        last_term: Term,
        transfer: bool,
    },
    RequestVoteResponse {
        term: Term,
        granted: bool,
    },
    /// A new leader announces itself at once (KRaft's BeginQuorumEpoch), repeated until the
    /// node fetches.
    BeginEpoch {
        term: Term,
        leader: NodeId,
    },
    /// Follower → leader: "send me entries from `fetch_index`; my entry at `fetch_index - 1`
    /// has `last_fetched_term`; storage holds my log up to `durable_index`".
    Fetch {
        term: Term,
        fetch_index: Index,
        last_fetched_term: Term,
        durable_index: Index,
    },
    /// Follower → leader, with a fetch in flight: "storage now holds my log up to
    /// `durable_index`; my log ends before `fetch_index`, whose previous entry has
    /// `last_fetched_term`". Fetches are pipelined (the next leaves before the entries of the
    /// last answer are durable), so durability is reported on its own as soon as storage
    /// catches up, instead of with the next fetch, which may be held at the leader. It counts
    /// as the fetch it echoes for the commit rule and check-quorum; nothing answers it.
    Durable {
        term: Term,
        fetch_index: Index,
        last_fetched_term: Term,
        durable_index: Index,
    },
    /// The answer to the fetch with this `fetch_index` and `last_fetched_term` (echoed, so a
    /// late or duplicated answer to an earlier fetch is recognised and dropped).
    FetchResponse {
        term: Term,
        leader: NodeId,
        commit_index: Index,
        fetch_index: Index,
        last_fetched_term: Term,
        result: FetchResult,
    },
    /// Leader → transfer target: "start an election now", skipping pre-vote.
    TimeoutNow {
        term: Term,
    },
}

impl Message {
    /// The highest term the message names: its own, and those of the log positions it
    /// describes (the sender's last entry, the entry before a fetch, a divergence, a log
    /// start, the entries of a fetch response).
    pub fn highest_term(&self) -> Term {
        let described = match self {
            Message::PreVote { last_term, .. } | Message::RequestVote { last_term, .. } => {
                *last_term
            }
            Message::Fetch {
                last_fetched_term, ..
            }
            | Message::Durable {
                last_fetched_term, ..
            } => *last_fetched_term,
            Message::FetchResponse {
                last_fetched_term,
                result,
                ..
            } => {
                let result_term = match result {
                    FetchResult::Entries { entries } => {
                        entries.iter().map(|entry| entry.term).max().unwrap_or(0)
                    }
                    FetchResult::Diverging { term, .. } => *term,
                    FetchResult::SnapshotNeeded { prev_term, .. } => *prev_term,
                };
                result_term.max(*last_fetched_term)
            }
            Message::PreVoteResponse { .. }
            | Message::RequestVoteResponse { .. }
            | Message::BeginEpoch { .. }
            | Message::TimeoutNow { .. } => 0,
        };
        self.term().max(described)
    }

    pub fn term(&self) -> Term {
        match self {
            Message::PreVote { term, .. }
            | Message::PreVoteResponse { term, .. }
            | Message::RequestVote { term, .. }
            | Message::RequestVoteResponse { term, .. }
            | Message::BeginEpoch { term, .. }
            | Message::Fetch { term, .. }
            | Message::Durable { term, .. }
            | Message::FetchResponse { term, .. }
            | Message::TimeoutNow { term } => *term,
        }
    }
}

/// A message and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub to: NodeId,
    pub message: Message,
}

/// What must survive a crash besides the log: the current term and the vote cast in it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: Term,
    pub voted_for: Option<NodeId>,
}

/// A change to the log for storage to make, in order, asynchronously; completions come back
/// through [`crate::RaftNode::persisted`] with the index and term of the log's last entry once
/// the write (and every earlier one) is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogWrite {
    /// Append these batches at the end (the driver holds their bytes: fetched, or proposed).
    Append { entries: Vec<EntryMeta> },
    /// Remove every entry after `after_index` (always a batch boundary or a gap).
    Truncate { after_index: Index },
    /// Drop the whole log; it now starts empty at `log_start` (Kafka's
    /// truncate-fully-and-start-at), the entry before it having `prev_term`, under `voters`.
    ResetTo {
        log_start: Index,
        prev_term: Term,
        voters: Vec<NodeId>,
    },
}

/// What [`TERM_MAX`] stopped, for the driver to report to an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TermLimit {
    /// A peer's message named `term`, past [`TERM_MAX`]: it was dropped unread.
    PeerTerm { from: NodeId, term: Term },
    /// This node's term is [`TERM_MAX`], so it did not start an election.
    NoElection,
}

/// What one call asks of the driver, to be done in this order: persist `hard_state` durably
/// (before any message leaves: a vote must not be forgotten), submit `log_writes` to storage in
/// order (asynchronously; completions come back through `persisted`), send `messages`
/// (attaching batches to `FetchResponse::Entries`), and apply entries up to `commit_index`;
/// `term_limit` is only reported (it changed nothing).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[must_use = "hard state and log writes must be persisted and messages sent"]
pub struct Effects {
    pub hard_state: Option<HardState>,
    pub log_writes: Vec<LogWrite>,
    pub messages: Vec<Envelope>,
    pub commit_index: Option<Index>,
    pub term_limit: Option<TermLimit>,
}

impl Effects {
    /// `later`'s effects after these, as one: the hard state, commit index and term-limit
    /// report are the later ones where it has them (each supersedes the earlier); the writes
    /// and messages follow these in order.
    pub fn merge(&mut self, later: Effects) {
        self.hard_state = later.hard_state.or(self.hard_state);
        self.log_writes.extend(later.log_writes);
        self.messages.extend(later.messages);
        self.commit_index = later.commit_index.or(self.commit_index);
        self.term_limit = later.term_limit.or(self.term_limit);
    }

    pub fn is_empty(&self) -> bool {
        self.hard_state.is_none()
            && self.log_writes.is_empty()
            && self.messages.is_empty()
            && self.commit_index.is_none()
            && self.term_limit.is_none()
    }
}
