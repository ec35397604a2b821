//! The Raft core: one group member as a pure, deterministic state machine, in the style of
//! raft-rs and of `engine::groups`. The driver hands it logical time ([`RaftNode::tick`]),
//! messages from peers ([`RaftNode::step`]), proposals ([`RaftNode::propose`]) and storage
//! completions ([`RaftNode::persisted`]); each call returns [`Effects`]: the term and vote to
//! persist, log writes to submit, messages to send and the new commit index. No clocks, sockets,
//! threads or randomness inside (election timeouts come from a [`SplitMix64`] seeded by the
//! driver), which is what lets `tests/simulator.rs` run thousands of seeded fault schedules and
//! reproduce any failure from its seed.
//!
//! What it implements:
//! - Elections with pre-vote (a node that could not win never bumps a term, so a node healing
//!   from a partition does not depose a working leader) and check-quorum (a leader that heard
//!   from no majority during an election timeout steps down; a follower that heard from its
//!   leader within the minimum election timeout refuses pre-votes and ignores vote requests).
//! - Log replication with conflict detection: a follower rejects an AppendEntries whose
//!   `prev_index`/`prev_term` it lacks, with a hint where the leader should retry; it truncates
//!   conflicting entries (never committed ones: asserted) and replaces them.
//! - Durability-aware commit: a follower acknowledges only what it has persisted and verified
//!   against the current leader; the leader counts its own log only up to what it has persisted;
//!   commit is the highest index of the current term persisted on a majority (the Kafka
//!   high-water mark once wired in). Heartbeats resend from each follower's `next_index`, which
//!   is how lost appends are retried.
//!
//! Not yet: snapshots (the log starts at index 1 and is kept whole in memory), leadership
//! transfer, membership changes, flow control beyond `entries_per_message_max` per message,
//! using the partition log itself as the Raft log (terms as leader epochs), the transport, and
//! wiring into the broker.

mod log;
mod message;
pub mod metadata;
mod node;
mod random;
pub mod transport;

pub use message::{
    AppendResult, Effects, Envelope, HardState, Index, LogEntry, LogWrite, Message, NodeId, Term,
};
pub use node::{NotLeader, PersistedState, RaftConfig, RaftNode, RoleKind};
pub use random::SplitMix64;
