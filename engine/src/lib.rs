//! Ferrite's storage engine and the thread-per-core runtime it runs in.
//!
//! The engine knows nothing of the Kafka protocol beyond the on-disk batch format: the network
//! layer hands it record batches and gets back offsets, and memory or file ranges to send. Of
//! sockets it knows only what the shard runtime gives every listener of the layers above, as
//! Seastar's `listen` does: one listening socket per shard at a shared address
//! ([`shard::listen`]); what arrives on them is theirs. Everything here runs on a glommio executor; a [`log::PartitionLog`] belongs to one
//! shard and is never shared across threads. What runs on top of the logs (the consumer-group
//! coordinator in `net`, Raft in `replication`) keeps its per-shard state itself and reaches
//! other shards through [`shard::ShardContext::post`] and [`shard::ShardContext::call_on`].

pub mod acls;
pub mod batch;
pub mod catalog;
pub mod clock;
pub mod codec;
pub mod config;
pub mod credentials;
pub mod data_dir_lock;
mod dma;
pub mod durable_file;
pub mod error;
pub mod index;
pub mod journal;
pub mod log;
pub mod mesh;
pub mod published_table;
pub mod quotas;
pub mod random;
pub mod rate_limited_log;
pub mod resources;
mod segment;
// Built on the mesh's glommio channels, which the `--cfg loom` build leaves out.
#[cfg(not(loom))]
pub mod shard;
mod tail_cache;
pub mod topic_config;
pub mod waiters;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::LogConfig;
pub use error::LogError;
pub use journal::JournalConfig;
pub use log::{
    AbortedTransaction, ActiveProducer, AppendReceipt, CleanStats, CleanStep, CommitStats,
    Committer, DamagedRange, EpochRun, EpochRuns, FileRange, LogStats, OffsetAtTime, PartitionLog,
    PartitionRecordRewrite, ReadData, ReadSlice, RecordRewrite, ReplayPhases, ReplayReport,
    Replayed, ReplayedLogs, RewrittenRecord,
};
