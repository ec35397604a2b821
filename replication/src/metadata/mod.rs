//! The controller's metadata log, as a pure state machine: its records, the image every broker
//! builds by applying them, and the decisions the controller leader takes before proposing.
//!
//! Why: the cluster needs one agreed view of which brokers exist and are alive, which topics
//! exist with which configs, and where each partition's replicas live. Kafka keeps that in a
//! Raft-replicated metadata log (KRaft); so does Ferrite. A Raft group on the first brokers
//! (the controller) orders the changes; this module is everything about them that is not
//! Raft or I/O, so it is deterministic and tested on its own: no clocks (time comes in as
//! milliseconds), no randomness (topic ids come in), no files or sockets.
//!
//! How it will be used:
//! - The controller leader checks an admin request (CreateTopics, DeleteTopics,
//!   CreatePartitions, config changes, reassignment) against its image with a `plan_*`
//!   function, which answers with Kafka's error or the records to propose; it runs
//!   [`plan_liveness`] on a timer with the brokers' heartbeats, and proposes a
//!   [`MetadataRecord::RegisterBroker`] when a broker starts, and a
//!   [`MetadataRecord::AllocateProducerIds`] when a broker needs producer ids
//!   ([`plan_allocate_producer_ids`]).
//! - A batch of records is one Raft entry ([`encode`]/[`decode`]).
//! - Every broker applies committed entries in order to its [`MetadataImage`]
//!   ([`MetadataImage::apply`]), answers Metadata from it (live brokers, partitions, preferred
//!   leaders), opens the partitions its shards host ([`MetadataImage::hosted_partitions`]) and
//!   reads topic configs from it.
//! - The log is compacted into [`MetadataImage::to_records`], which is also what a new broker
//!   starts from.

mod assignment;
mod image;
mod plan;
mod records;

pub use image::{Applied, BrokerState, MetadataImage, Reassignment, TopicImage};
pub use plan::{
    plan_allocate_producer_ids, plan_alter_acls, plan_alter_client_quotas, plan_alter_configs,
    plan_alter_credentials, plan_cancel_reassignment, plan_complete_reassignment,
    plan_create_partitions, plan_create_topic, plan_delete_topic, plan_liveness, plan_reassign,
    NewTopic, PlanError,
};
pub use records::{
    decode, encode, BrokerRegistration, ListenerEndpoint, MetadataError, MetadataRecord,
    OneAddressRegistration, PartitionAssignment, ProducerIdBlock, Replica, ScramCredentialRecord,
};
