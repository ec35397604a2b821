//! One module per Kafka API, as Redpanda lays them out: each decodes nothing itself (the
//! connection did), asks the shard, the catalog or the cluster, and builds the response of the
//! request's version. The consumer-group APIs sit together in `groups`, beside what they share;
//! other helpers of several APIs have a module named for what they are (`fields`,
//! `config_entries`, `topic_overrides`).
//!
//! Internal topics (`engine::catalog::is_internal_topic`) are readable but refuse Produce,
//! DeleteRecords, DeleteTopics, CreatePartitions, AlterConfigs and IncrementalAlterConfigs with
//! INVALID_TOPIC_EXCEPTION, as Kafka's do: their contents and settings are the broker's.

pub mod acls;
pub mod add_offsets_to_txn;
pub mod add_partitions_to_txn;
pub mod alter_client_quotas;
pub mod alter_configs;
pub mod alter_partition_reassignments;
pub mod alter_user_scram_credentials;
pub(crate) mod config_entries;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_client_quotas;
pub mod describe_configs;
pub mod describe_producers;
pub mod describe_transactions;
pub mod describe_user_scram_credentials;
pub mod end_txn;
pub mod fetch;
pub(crate) mod fields;
pub mod find_coordinator;
pub mod groups;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod list_offsets;
pub mod list_partition_reassignments;
pub mod list_transactions;
pub mod metadata;
pub mod produce;
mod topic_overrides;
