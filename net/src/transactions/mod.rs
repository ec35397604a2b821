//! Transactions (KIP-98): the transaction coordinator and the markers that end a transaction
//! on its partitions.
//!
//! Modules: `record` (a transactional id's record in `__transaction_state`, Kafka's schemas),
//! `state` (one id's metadata, the errors), `coordinator` (one `__transaction_state`
//! partition's coordinator as a pure state machine: InitProducerId, AddPartitionsToTxn,
//! EndTxn, timeouts, expiry, replay), `requests` (the requests the driver runs on it), `shard`
//! (the driver on each shard: routing, load, durable appends, markers, timers, leadership),
//! `topic` (which partition holds an id; the topic's creation on a broker alone), `markers`
//! (how a coordinator writes a transaction's COMMIT or ABORT marker to every partition it
//! touched, on this broker or on the partitions' leaders elsewhere), `verification` (KIP-890:
//! a transactional produce's partitions confirmed with the coordinator before a batch opens a
//! transaction on them).

pub mod coordinator;
pub mod markers;
pub mod record;
pub mod requests;
pub mod shard;
pub mod state;
pub mod topic;
pub mod verification;

pub use coordinator::{TransactionConfig, TransactionCoordinator};
pub use shard::{ShardTransactions, TransactionsConfig};
pub use state::{TransactionError, TransactionState};
pub use topic::{prepare_transaction_state_topic, transaction_state_partition_for};
