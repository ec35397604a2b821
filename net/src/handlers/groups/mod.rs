//! The consumer-group APIs, one module each: Kafka's classic protocol (JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup), the consumer protocol of KIP-848 (ConsumerGroupHeartbeat,
//! ConsumerGroupDescribe), and both's OffsetCommit, OffsetFetch, ListGroups, DescribeGroups,
//! DeleteGroups and OffsetDelete, and a transaction's offsets (TxnOffsetCommit).
//!
//! Each turns a Kafka request into [`GroupRequest`](crate::groups::shard::GroupRequest)s for
//! the coordinator of the group's `__consumer_offsets` partition ([`coordinator`]) and their
//! answers (each request's type names its answer's) back into the response of the request's
//! version. What the versions differ in is handled here; the group protocol itself is
//! [`crate::groups`]. A broker alone is every group's coordinator; in a cluster the leader of a
//! group's `__consumer_offsets` partition is, and the other brokers refuse its group calls
//! with NOT_COORDINATOR.

pub mod consumer_group_describe;
pub mod consumer_group_heartbeat;
pub(crate) mod coordinator;
pub mod delete_groups;
pub mod describe_groups;
pub mod heartbeat;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
mod partition_results;
pub mod sync_group;
pub mod txn_offset_commit;
