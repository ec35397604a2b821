//! The consumer-group coordinator of Kafka's classic group protocol, as a pure, deterministic state
//! machine: no I/O, no clock, no randomness of its own. The driver ([`shard`], on behalf of the
//! Kafka request handlers) calls one method per request with the current time, and
//! gets back the request's answer plus [`Effects`]: answers to earlier requests that had to wait (a
//! JoinGroup until the join phase completes, a SyncGroup until the leader's assignment arrives),
//! and [`GroupRecord`]s to append to `__consumer_offsets`. The driver sleeps until
//! [`GroupCoordinator::next_deadline_ms`] and then calls [`GroupCoordinator::tick`], which fires
//! session, rebalance and sync timeouts and offset retention. A restart rebuilds the state with
//! [`GroupCoordinator::replay`] from the records. Being deterministic is what lets the property
//! tests drive thousands of random request sequences and check the invariants after each step.
//!
//! Order for the driver: append an [`Effects`]' records before sending its answers, so that no
//! client sees a rebalance or a commit that a crash could take back.
//!
//! Modules: `group` (one group's bookkeeping), `rebalance` (JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup and the timeouts; `rebalance/transitions.rs` moves a group through a rebalance),
//! `offsets` (OffsetCommit, OffsetFetch, OffsetDelete, retention of empty groups' offsets),
//! `transactional` (TxnOffsetCommit: offsets pending in a transaction until its marker),
//! `record` (the records, `replay`, and `LogReplay`, the fold of a log's batches and markers a
//! load feeds it), `error` (`GroupError`, carrying its Kafka code). Member ids
//! come from a seeded SplitMix64, time is an argument. Beside the state machine, and the only
//! modules here that do I/O: `offsets_topic` (which `__consumer_offsets` partition holds a group,
//! and the topic's creation on a broker alone) and [`shard`] (the driver on each shard: routing,
//! loading from the log, appending, timers, leadership).
//!
//! # Invariants
//! Asserted after every step of the property test (`tests/property.rs`): a group has a leader if
//! and only if it has members, and the leader is one of them; only PreparingRebalance has a join
//! deadline and pending joins, only CompletingRebalance pending syncs; Stable means every member
//! has an assignment; generations only grow; every ticket is answered exactly once, and a tick
//! leaves no deadline at or before now. Replaying the records of a run gives back its committed
//! offsets and its stable group.
//!
//! # Differences from Kafka
//! Deliberate: a returning static member keeps its slot without a rebalance only if its
//! subscription for the chosen protocol is unchanged too (Kafka checks only the protocol choice); a
//! JoinGroup or SyncGroup superseded by a newer one from the same member is answered
//! REBALANCE_IN_PROGRESS instead of being dropped; dead groups are not kept (DescribeGroups reports
//! Dead for unknown ids). Not implemented: KIP-496 (expiring offsets of unsubscribed topics in
//! non-empty groups), the new-member join timeout.
//!
//! The consumer protocol of Kafka 4 (KIP-848) runs in the same coordinator, beside the classic
//! one: [`consumer`] (its groups, assignors, reconciliation and records).
//!
//! # Cost
//! [`GroupCoordinator::next_deadline_ms`] scans every group, O(members): fine for thousands of
//! members; a timer heap is the step if it shows in profiles.

pub mod consumer;
mod error;
mod group;
mod offsets;
mod offsets_topic;
mod rebalance;
mod record;
pub mod shard;
#[cfg(test)]
mod tests;
mod transactional;
pub mod transactions;

use std::collections::BTreeMap;

use bytes::Bytes;

use engine::batch::TransactionMarker;
use engine::random::SplitMix64;

pub use error::GroupError;
pub use group::{CommittedOffset, GroupProtocol, GroupState, TopicPartition};
pub use offsets::{
    OffsetCommit, OffsetCommitPartition, PartitionResults, OFFSET_COMMIT_MEMBER_EPOCH_VERSION,
};
pub use offsets_topic::{offsets_partition_for, prepare_offsets_topic};
pub use rebalance::{
    JoinGroup, JoinOutcome, JoinResponse, JoinedMember, LeaveResults, LeavingMember, SyncGroup,
    SyncOutcome, SyncResponse,
};
pub use record::{GroupRecord, LegacyRecordConversion, LogReplay, RecordError};
pub use transactional::{TransactionProducer, TxnOffsetCommit};

use consumer::{ConsumerGroup, ConsumerGroupConfig};
use group::ClassicGroup;
use transactional::OpenTransactions;

/// The coordinator's bounds and timeouts; Kafka's broker settings of the same names.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// group.initial.rebalance.delay.ms: how long the first join phase of an empty group waits
    /// for more members (extended per new member, up to the rebalance timeout).
    pub initial_rebalance_delay_ms: i64,
    /// group.min.session.timeout.ms and group.max.session.timeout.ms.
    pub session_timeout_ms_min: i32,
    pub session_timeout_ms_max: i32,
    /// group.max.size: members plus member ids handed out and not yet used.
    pub group_members_max: usize,
    /// offsets.retention.minutes, in ms: how long an empty group keeps its offsets.
    pub offsets_retention_ms: i64,
    /// offsets.retention.check.interval.ms.
    pub offsets_retention_check_interval_ms: i64,
    /// offset.metadata.max.bytes.
    pub offset_metadata_bytes_max: usize,
    /// The consumer protocol's settings (KIP-848).
    pub consumer: ConsumerGroupConfig,
}

impl Default for GroupConfig {
    fn default() -> GroupConfig {
        GroupConfig {
            initial_rebalance_delay_ms: 3_000,
            session_timeout_ms_min: 6_000,
            session_timeout_ms_max: 1_800_000,
            group_members_max: 1_000,
            offsets_retention_ms: 7 * 24 * 60 * 60 * 1_000,
            offsets_retention_check_interval_ms: 600_000,
            offset_metadata_bytes_max: 4_096,
            consumer: ConsumerGroupConfig::default(),
        }
    }
}

/// Names a JoinGroup or SyncGroup that must wait; its answer comes later in
/// [`Effects::completions`], exactly once (possibly in the same `Effects` that reports it
/// pending).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(pub u64);

/// The answer to a request that waited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    Join(Ticket, JoinResponse),
    Sync(Ticket, SyncResponse),
}

impl Completion {
    pub fn ticket(&self) -> Ticket {
        match self {
            Completion::Join(ticket, _) | Completion::Sync(ticket, _) => *ticket,
        }
    }
}

/// What a call changed beyond its own answer. Records (or the marker) first, then
/// completions.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[must_use = "records must be persisted and completions answered"]
pub struct Effects {
    pub completions: Vec<Completion>,
    pub records: Vec<GroupRecord>,
    /// Set when `records` are offsets committed inside this producer's transaction: they are
    /// appended as its transactional batch (TxnOffsetCommit).
    pub transaction: Option<TransactionProducer>,
    /// A transaction's marker to append (it ends the transaction's offsets in the log); never
    /// with records.
    pub marker: Option<TransactionMarker>,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        self.completions.is_empty() && self.records.is_empty() && self.marker.is_none()
    }
}

/// One group's result in DeleteGroups.
pub type GroupResult = (String, Result<(), GroupError>);

/// A group as ListGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedGroup {
    pub group_id: String,
    pub protocol_type: String,
    pub state: GroupState,
    /// A group of the consumer protocol (KIP-848), not the classic one.
    pub consumer_protocol: bool,
}

/// A group as DescribeGroups shows it. Members' metadata and assignments are given only when
/// the group is Stable, as Kafka does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol_name: String,
    pub members: Vec<DescribedMember>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// Every group of one coordinator (one `__consumer_offsets` partition's worth).
#[derive(Debug)]
pub struct GroupCoordinator {
    config: GroupConfig,
    groups: BTreeMap<String, ClassicGroup>,
    /// Groups of the consumer protocol; a group id is in `groups` or here, never both.
    consumer_groups: BTreeMap<String, ConsumerGroup>,
    /// Offsets committed inside transactions whose marker has not come yet.
    open_transactions: OpenTransactions,
    ids: IdSource,
    offsets_check_next_ms: i64,
}

impl GroupCoordinator {
    /// An empty coordinator. `seed` makes member ids unique across restarts; the driver passes
    /// something random, tests a constant.
    pub fn new(config: GroupConfig, seed: u64, now_ms: i64) -> GroupCoordinator {
        assert!(config.session_timeout_ms_min > 0);
        assert!(config.session_timeout_ms_min <= config.session_timeout_ms_max);
        assert!(config.initial_rebalance_delay_ms >= 0);
        assert!(config.offsets_retention_check_interval_ms > 0);
        assert!(config.group_members_max > 0);
        let offsets_check_next_ms = now_ms + config.offsets_retention_check_interval_ms;
        GroupCoordinator {
            config,
            groups: BTreeMap::new(),
            consumer_groups: BTreeMap::new(),
            open_transactions: OpenTransactions::default(),
            ids: IdSource {
                ticket_last: 0,
                member_ids_random: SplitMix64::new(seed),
            },
            offsets_check_next_ms,
        }
    }

    /// When [`GroupCoordinator::tick`] has something to do, at the latest.
    pub fn next_deadline_ms(&self) -> i64 {
        self.groups
            .values()
            .filter_map(ClassicGroup::next_deadline_ms)
            .chain(consumer::next_deadline_ms(&self.consumer_groups))
            .fold(self.offsets_check_next_ms, i64::min)
    }

    /// Fires every timeout due at `now_ms`: expired sessions and member ids, completed join
    /// phases, missing SyncGroups, and (every retention check interval) expired offsets.
    pub fn tick(&mut self, now_ms: i64) -> Effects {
        let mut effects = Effects::default();
        let group_ids: Vec<String> = self
            .groups
            .iter()
            .filter(|(_, group)| group.next_deadline_ms().is_some_and(|d| d <= now_ms))
            .map(|(id, _)| id.clone())
            .collect();
        for group_id in group_ids {
            if let Some(group) = self.groups.get_mut(&group_id) {
                rebalance::expire(&self.config, group, now_ms, &mut effects);
            }
        }
        consumer::expire_members(
            &self.config.consumer,
            &mut self.consumer_groups,
            now_ms,
            &mut effects,
        );
        if now_ms >= self.offsets_check_next_ms {
            // A group an open transaction commits offsets in keeps them (Kafka's rule).
            let open = &self.open_transactions;
            offsets::expire(
                &self.config,
                &mut self.groups,
                |group_id| open.involves(group_id),
                now_ms,
                &mut effects,
            );
            consumer::expire_offsets(
                self.config.offsets_retention_ms,
                &mut self.consumer_groups,
                |group_id| open.involves(group_id),
                now_ms,
                &mut effects,
            );
            self.offsets_check_next_ms = now_ms + self.config.offsets_retention_check_interval_ms;
        }
        effects
    }

    /// ListGroups, optionally only the groups in one of `states`.
    pub fn list_groups(&self, states: &[GroupState]) -> Vec<ListedGroup> {
        self.groups
            .values()
            .map(|group| ListedGroup {
                group_id: group.group_id.clone(),
                protocol_type: group.protocol_type.clone().unwrap_or_default(),
                state: group.state,
                consumer_protocol: false,
            })
            .chain(self.consumer_groups.values().map(consumer::listed))
            .filter(|group| states.is_empty() || states.contains(&group.state))
            .collect()
    }

    /// DescribeGroups for one group; a group that does not exist is described as Dead.
    pub fn describe_group(&self, group_id: &str) -> GroupDescription {
        if let Some(group) = self.consumer_groups.get(group_id) {
            return consumer::described(group, &self.config.consumer);
        }
        let Some(group) = self.groups.get(group_id) else {
            return GroupDescription {
                group_id: group_id.to_owned(),
                state: GroupState::Dead,
                protocol_type: String::new(),
                protocol_name: String::new(),
                members: Vec::new(),
            };
        };
        let stable = group.state == GroupState::Stable;
        let protocol_name = group.protocol_name.clone().filter(|_| stable);
        let members = group
            .members
            .iter()
            .map(|member| DescribedMember {
                member_id: member.member_id.clone(),
                group_instance_id: member.group_instance_id.clone(),
                client_id: member.client_id.clone(),
                client_host: member.client_host.clone(),
                metadata: protocol_name
                    .as_deref()
                    .and_then(|name| member.metadata(name).cloned())
                    .unwrap_or_default(),
                assignment: member
                    .assignment
                    .clone()
                    .filter(|_| stable)
                    .unwrap_or_default(),
            })
            .collect();
        GroupDescription {
            group_id: group.group_id.clone(),
            state: group.state,
            protocol_type: group.protocol_type.clone().unwrap_or_default(),
            protocol_name: protocol_name.unwrap_or_default(),
            members,
        }
    }

    /// DeleteGroups: each empty group is removed with its offsets, and the offsets open
    /// transactions commit in it are superseded (with tombstones, as Kafka writes them); a
    /// group with members is refused with NON_EMPTY_GROUP, an unknown one with
    /// GROUP_ID_NOT_FOUND.
    pub fn delete_groups(&mut self, group_ids: &[String]) -> (Vec<GroupResult>, Effects) {
        let mut effects = Effects::default();
        let results = group_ids
            .iter()
            .map(|group_id| {
                let result =
                    match consumer::delete(&mut self.consumer_groups, group_id, &mut effects) {
                        Some(result) => result,
                        None => match self.groups.get(group_id) {
                            None => Err(GroupError::GroupIdNotFound),
                            Some(group) if group.state != GroupState::Empty => {
                                Err(GroupError::NonEmptyGroup)
                            }
                            Some(_) => {
                                remove_group(&mut self.groups, group_id, &mut effects);
                                Ok(())
                            }
                        },
                    };
                if result.is_ok() {
                    self.supersede_pending_offsets(group_id, &mut effects);
                }
                (group_id.clone(), result)
            })
            .collect();
        (results, effects)
    }

    /// A removed group's offsets that open transactions commit are superseded, with a
    /// tombstone for each the removal did not write one for.
    fn supersede_pending_offsets(&mut self, group_id: &str, effects: &mut Effects) {
        for partition in self.open_transactions.partitions_of(group_id) {
            let tombstone = GroupRecord::offset_tombstone(group_id, &partition);
            if !effects.records.contains(&tombstone) {
                effects.records.push(tombstone);
            }
            self.open_transactions.supersede(group_id, &partition);
        }
    }

    /// Panics if any group's bookkeeping contradicts itself (tests call this after each step).
    pub fn check_invariants(&self) {
        for (group_id, group) in &self.groups {
            assert_eq!(*group_id, group.group_id);
            group.check_invariants();
        }
        for (group_id, group) in &self.consumer_groups {
            assert_eq!(*group_id, group.group_id);
            assert!(
                !self.groups.contains_key(group_id),
                "a group has one protocol"
            );
            group.check_invariants();
        }
        for group_id in self.open_transactions.committing_groups() {
            assert!(
                self.groups.contains_key(group_id) || self.consumer_groups.contains_key(group_id),
                "a group an open transaction commits offsets in exists"
            );
        }
    }

    /// The generation of a group, if it exists.
    pub fn generation_id(&self, group_id: &str) -> Option<i32> {
        self.groups.get(group_id).map(|group| group.generation_id)
    }
}

/// Removes an empty group, with tombstones for it and its offsets.
fn remove_group(
    groups: &mut BTreeMap<String, ClassicGroup>,
    group_id: &str,
    effects: &mut Effects,
) {
    let Some(group) = groups.remove(group_id) else {
        return;
    };
    assert!(group.members.is_empty(), "only an empty group is removed");
    for partition in group.offsets.keys() {
        effects
            .records
            .push(GroupRecord::offset_tombstone(group_id, partition));
    }
    effects.records.push(GroupRecord::group_tombstone(group_id));
}

/// The longest prefix (client id or group.instance.id) a member id is made with.
const MEMBER_ID_PREFIX_BYTES_MAX: usize = 1024;

/// Where tickets and member ids come from.
#[derive(Debug)]
struct IdSource {
    ticket_last: u64,
    /// The generator of member ids' random part (seeded by the driver).
    member_ids_random: SplitMix64,
}

impl IdSource {
    fn ticket(&mut self) -> Ticket {
        self.ticket_last += 1;
        Ticket(self.ticket_last)
    }

    /// `{prefix}-{uuid-like}`, as Kafka's member ids (prefix: client id, or group.instance.id
    /// for a static member). The random part is SplitMix64 over the seed: a bijection of a
    /// counter, so ids never repeat within a coordinator's life. A prefix is cut to
    /// [`MEMBER_ID_PREFIX_BYTES_MAX`], so that every member id fits the int16-length strings of
    /// responses and of `__consumer_offsets` records (a client id may be 32767 bytes).
    fn member_id(&mut self, prefix: &str) -> String {
        let mut prefix_end = prefix.len().min(MEMBER_ID_PREFIX_BYTES_MAX);
        while !prefix.is_char_boundary(prefix_end) {
            prefix_end -= 1;
        }
        let prefix = &prefix[..prefix_end];
        let high = self.next_random();
        let low = self.next_random();
        format!(
            "{prefix}-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            high >> 32,
            (high >> 16) & 0xffff,
            high & 0xffff,
            low >> 48,
            low & 0xffff_ffff_ffff
        )
    }

    fn next_random(&mut self) -> u64 {
        self.member_ids_random.next_u64()
    }
}
