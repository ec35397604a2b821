//! What Raft nodes say to each other and what a node asks its driver to do. Plain data: the
//! transport (not yet written) encodes it; the simulator passes it around as is.

/// A Raft node's identity within its group (a broker's node id).
pub type NodeId = u64;
/// A Raft term (Kafka's partition leader epoch).
pub type Term = u64;
/// A position in the Raft log, from 1; 0 means "before the first entry".
pub type Index = u64;

/// One entry of the Raft log. An empty payload is the no-op a new leader appends so that it
/// can commit the entries of earlier terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub term: Term,
    pub index: Index,
    pub payload: Vec<u8>,
}

/// How a follower answers an AppendEntries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendResult {
    /// The follower's log matches the leader's up to `match_index`, and it has persisted that
    /// far: what the leader counts towards commit.
    Accepted { match_index: Index },
    /// `prev_index`/`prev_term` did not match; the leader should retry from `next_index_hint`
    /// (the follower's last index + 1, or the first index of the conflicting term).
    Rejected { next_index_hint: Index },
}

#[derive(Debug, Clone, PartialEq, Eq)]
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
    RequestVote {
        term: Term,
        last_index: Index,
        last_term: Term,
    },
    RequestVoteResponse {
        term: Term,
        granted: bool,
    },
    /// Entries after `prev_index` (empty: a heartbeat). `leader` is the sender.
    AppendEntries {
        term: Term,
        leader: NodeId,
        prev_index: Index,
        prev_term: Term,
        entries: Vec<LogEntry>,
        leader_commit: Index,
    },
    AppendEntriesResponse {
        term: Term,
        result: AppendResult,
    },
}

impl Message {
    pub fn term(&self) -> Term {
        match self {
            Message::PreVote { term, .. }
            | Message::PreVoteResponse { term, .. }
            | Message::RequestVote { term, .. }
            | Message::RequestVoteResponse { term, .. }
            | Message::AppendEntries { term, .. }
            | Message::AppendEntriesResponse { term, .. } => *term,
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

/// Replace the log from `from_index` on by `entries` (truncating whatever was there: a
/// conflict with the leader's log). The driver reports completion with
/// [`crate::RaftNode::persisted`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogWrite {
    pub from_index: Index,
    pub entries: Vec<LogEntry>,
}

/// What one call asks of the driver, to be done in this order: persist `hard_state` durably
/// (before any message leaves: a vote must not be forgotten), submit `log_writes` to storage in
/// order (asynchronously; completions come back through `persisted`), send `messages`, and
/// apply entries up to `commit_index`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[must_use = "hard state and log writes must be persisted and messages sent"]
pub struct Effects {
    pub hard_state: Option<HardState>,
    pub log_writes: Vec<LogWrite>,
    pub messages: Vec<Envelope>,
    pub commit_index: Option<Index>,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        self.hard_state.is_none()
            && self.log_writes.is_empty()
            && self.messages.is_empty()
            && self.commit_index.is_none()
    }
}
