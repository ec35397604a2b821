//! The Raft core: one group member as a pure, deterministic state machine, in the style of
//! raft-rs and of `net::groups`. The driver hands it logical time ([`RaftNode::tick`]),
//! messages from peers ([`RaftNode::step`]), proposals ([`RaftNode::propose`]) and storage
//! completions ([`RaftNode::persisted`]); each call returns [`Effects`]: the term and vote to
//! persist, log writes to submit, messages to send and the new commit index. No clocks, sockets,
//! threads, files or randomness inside (election timeouts come from a [`SplitMix64`] seeded by
//! the driver), which is what lets `tests/simulator.rs` run thousands of seeded fault schedules
//! and reproduce any failure from its seed.
//!
//! Built so that a Kafka partition log can be the Raft log: index `i` is Kafka offset `i - 1`,
//! an entry is one record batch (n records cover n indexes) whose term is its
//! partitionLeaderEpoch, and the core holds only a summary of the log ([`LogSummary`]: log
//! start, epoch runs as in Kafka's leader-epoch cache, last index, voter-set entries); the
//! driver moves the bytes. What it implements:
//! - Elections with pre-vote (a node that could not win never bumps a term), check-quorum (a
//!   leader no majority fetched from during an election timeout steps down) and a leader lease
//!   (a follower that heard from its leader within the minimum election timeout refuses
//!   pre-votes and ignores vote requests); a new leader announces itself with `BeginEpoch`.
//! - Pull replication as in KRaft (KIP-595): followers keep one `Fetch` in flight; the leader
//!   answers `Entries` (its driver attaches whole batches), `Diverging` (the follower truncates
//!   to the end of that epoch, only ever at a batch boundary) or `SnapshotNeeded` (the fetch is
//!   below the leader's log start: the follower restarts its log there). Gaps left by the
//!   cleaner and log starts moved by retention are part of the model.
//! - Durability-aware commit: followers report their fsynced index in each fetch; the leader
//!   counts itself only up to its own persisted index; commit (the Kafka high-water mark) is
//!   the highest index of the current term persisted on a majority of voters, and a new leader
//!   appends a leader-change entry so earlier terms can commit.
//! - Leadership transfer (`TimeoutNow` once the target has the whole log; the vote request it
//!   starts passes the voters' lease) and single-server membership changes (learners,
//!   `promote`, `remove_voter`; a voter-set entry counts as soon as it is in a log).
//! - Observers (KIP-595): a node outside the voter set follows the log without ever being
//!   counted or campaigning, finding the leader by asking the voters.
//!
//! Around the core: [`replica`] drives it over a partition log, [`votes`] is the shard's
//! group-committed vote log, `wheel` the shard's timer wheel, [`shard`] runs a shard's replicas
//! and [`transport`] carries their messages between brokers, [`controller`] and [`metadata`]
//! keep the cluster's metadata log, and [`cluster`] is a broker's part in the cluster (the
//! control plane), which `net`'s Kafka handlers call.
//!
//! Invariant: the crate depends on `engine` only, never on `net`, and answers in typed errors,
//! never Kafka error codes; `replica` is where Kafka record batches meet the core.
//!
//! Not yet: a snapshot of state-machine data for the metadata log (a partition's "snapshot" is
//! its log start), learners that survive a leader change (an observer still follows,
//! untracked), changing the controller voters of a running cluster, and bounds on fetch size
//! beyond the driver's byte budget.

pub mod cluster;
pub mod cluster_id;
pub mod controller;
mod log;
mod message;
pub mod metadata;
mod node;
pub mod replica;
pub mod shard;
pub mod stats;
pub mod transport;
pub mod votes;
mod wheel;

pub use engine::random::SplitMix64;
pub use log::{EpochRun, LogSummary};
pub use message::{
    Effects, EntryKind, EntryMeta, Envelope, FetchResult, HardState, Index, LogWrite, Message,
    NodeId, Term, TermLimit, TERM_MAX,
};
pub use node::{PersistedState, RaftConfig, RaftNode, Refusal, RoleKind, FETCH_ANSWERS_AHEAD_MAX};
