//! Committed offsets: OffsetCommit (checked against the member and generation, or a "simple"
//! commit with generation -1 from a consumer outside group management, allowed while the group
//! is empty), OffsetFetch, OffsetDelete, and the retention that drops the offsets of groups
//! that stayed empty for `offsets_retention_ms`.

use std::collections::BTreeMap;

use super::group::{ClassicGroup, CommittedOffset, GroupState, TopicPartition};
use super::rebalance::validate_member;
use super::{
    consumer, remove_group, Effects, GroupConfig, GroupCoordinator, GroupError, GroupRecord,
};

/// The first OffsetCommit version of the consumer protocol (KIP-848): its generation is a
/// consumer group member's epoch, and a group it names must exist.
pub const OFFSET_COMMIT_MEMBER_EPOCH_VERSION: i16 = 9;

/// An OffsetCommit request.
#[derive(Debug, Clone)]
pub struct OffsetCommit {
    /// The request's version: Kafka's rules differ from [`OFFSET_COMMIT_MEMBER_EPOCH_VERSION`]
    /// on.
    pub api_version: i16,
    pub group_id: String,
    /// -1 for a simple commit (no group membership).
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub partitions: Vec<OffsetCommitPartition>,
}

#[derive(Debug, Clone)]
pub struct OffsetCommitPartition {
    pub partition: TopicPartition,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// Per-partition results in request order, or one error for the whole request.
pub type PartitionResults = Result<Vec<(TopicPartition, Result<(), GroupError>)>, GroupError>;

impl GroupCoordinator {
    /// OffsetCommit. A commit for a group that does not exist creates it (empty) if it is a
    /// simple commit; otherwise it is refused with ILLEGAL_GENERATION, or GROUP_ID_NOT_FOUND
    /// from version 9 on, as Kafka does. A consumer-protocol member must commit with version 9
    /// or later (UNSUPPORTED_VERSION otherwise).
    pub fn commit_offsets(
        &mut self,
        request: &OffsetCommit,
        now_ms: i64,
    ) -> (PartitionResults, Effects) {
        let mut effects = Effects::default();
        let results = self.commit(request, now_ms, &mut effects);
        (results, effects)
    }

    fn commit(
        &mut self,
        request: &OffsetCommit,
        now_ms: i64,
        effects: &mut Effects,
    ) -> PartitionResults {
        if request.group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        self.check_committing_member(
            &request.group_id,
            request.generation_id,
            &request.member_id,
            request.group_instance_id.as_deref(),
            Some(request.api_version),
            now_ms,
        )?;
        let offsets = match self.consumer_groups.get_mut(&request.group_id) {
            Some(group) => &mut group.offsets,
            None => {
                &mut self
                    .groups
                    .get_mut(&request.group_id)
                    .expect("the check passes only for a group that exists, or that it created")
                    .offsets
            }
        };
        let results = store_commits(
            &self.config,
            &request.group_id,
            offsets,
            &request.partitions,
            now_ms,
            effects,
        );
        // The most recent commit of a partition is kept, whatever open transactions do.
        for (partition, result) in &results {
            if result.is_ok() {
                self.open_transactions
                    .supersede(&request.group_id, partition);
            }
        }
        Ok(results)
    }

    /// Checks that the member of an OffsetCommit (`api_version`) or a TxnOffsetCommit
    /// (`None`) may commit the offsets of `group_id`, as Kafka's `validateOffsetCommit` does
    /// (refreshing a classic member's session on a plain commit). A commit without
    /// generation (-1) to a group that does not exist creates it (empty); otherwise an unknown
    /// group is refused with ILLEGAL_GENERATION, or GROUP_ID_NOT_FOUND from OffsetCommit
    /// version 9 on. A consumer-protocol member must commit plainly with version 9 or later
    /// (UNSUPPORTED_VERSION otherwise). A transaction's commit without generation and member
    /// (TxnOffsetCommit before version 3) is accepted in any state, and a transaction's commit
    /// is not refused while a rebalance completes.
    pub(super) fn check_committing_member(
        &mut self,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
        api_version: Option<i16>,
        now_ms: i64,
    ) -> Result<(), GroupError> {
        let transactional = api_version.is_none();
        if let Some(group) = self.consumer_groups.get(group_id) {
            // A consumer-protocol group: `generation_id` is the member epoch.
            return consumer::validate_commit(group, member_id, generation_id, api_version);
        }
        let simple = generation_id < 0;
        if !simple && !self.groups.contains_key(group_id) {
            let member_epoch_version =
                api_version.is_some_and(|version| version >= OFFSET_COMMIT_MEMBER_EPOCH_VERSION);
            return Err(if member_epoch_version {
                GroupError::GroupIdNotFound
            } else {
                GroupError::IllegalGeneration
            });
        }
        let group = self
            .groups
            .entry(group_id.to_owned())
            .or_insert_with(|| ClassicGroup::new(group_id.to_owned()));
        if simple && group.state == GroupState::Empty {
            return Ok(());
        }
        if transactional && simple && member_id.is_empty() && group_instance_id.is_none() {
            return Ok(());
        }
        let index = validate_member(group, member_id, group_instance_id)?;
        if generation_id != group.generation_id {
            return Err(GroupError::IllegalGeneration);
        }
        if transactional {
            return Ok(());
        }
        if group.state == GroupState::CompletingRebalance {
            return Err(GroupError::RebalanceInProgress);
        }
        let member = &mut group.members[index];
        member.session_deadline_ms = now_ms + i64::from(member.session_timeout_ms);
        Ok(())
    }

    /// OffsetFetch (version 9) from a member of a consumer-protocol group: the member must be
    /// in the group at `member_epoch`. Nothing to check for a classic group.
    pub fn check_fetching_member(
        &self,
        group_id: &str,
        member_id: &str,
        member_epoch: i32,
    ) -> Result<(), GroupError> {
        match self.consumer_groups.get(group_id) {
            Some(group) => consumer::validate_fetch(group, member_id, member_epoch),
            None => Ok(()),
        }
    }

    /// OffsetFetch: the committed offsets of the given partitions (`None` where there is none),
    /// or of every partition the group committed when `partitions` is `None`.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        partitions: Option<&[TopicPartition]>,
    ) -> Vec<(TopicPartition, Option<CommittedOffset>)> {
        let offsets = match self.consumer_groups.get(group_id) {
            Some(group) => Some(&group.offsets),
            None => self.groups.get(group_id).map(|group| &group.offsets),
        };
        match partitions {
            Some(partitions) => partitions
                .iter()
                .map(|partition| {
                    let committed = offsets.and_then(|offsets| offsets.get(partition)).cloned();
                    (partition.clone(), committed)
                })
                .collect(),
            None => offsets
                .into_iter()
                .flatten()
                .map(|(partition, committed)| (partition.clone(), Some(committed.clone())))
                .collect(),
        }
    }

    /// OffsetDelete. An empty group's offsets can all be deleted; a consumer group with
    /// members keeps those of topics its members subscribe to (GROUP_SUBSCRIBED_TO_TOPIC); any
    /// other group with members refuses (NON_EMPTY_GROUP).
    pub fn delete_offsets(
        &mut self,
        group_id: &str,
        partitions: &[TopicPartition],
    ) -> (PartitionResults, Effects) {
        let mut effects = Effects::default();
        let (subscribed, offsets) = match self.consumer_groups.get_mut(group_id) {
            Some(group) => (consumer::subscribed_topics(group), &mut group.offsets),
            None => {
                let Some(group) = self.groups.get_mut(group_id) else {
                    return (Err(GroupError::GroupIdNotFound), effects);
                };
                let subscribed = if group.state == GroupState::Empty {
                    Vec::new()
                } else {
                    match subscribed_topics(group) {
                        Some(topics) => topics,
                        None => return (Err(GroupError::NonEmptyGroup), effects),
                    }
                };
                (subscribed, &mut group.offsets)
            }
        };
        let results = partitions
            .iter()
            .map(|partition| {
                if subscribed.contains(&partition.topic) {
                    return (partition.clone(), Err(GroupError::GroupSubscribedToTopic));
                }
                // A tombstone where an offset is committed or pending, as Kafka writes one.
                let pending = self.open_transactions.is_pending(group_id, partition);
                if offsets.remove(partition).is_some() || pending {
                    effects
                        .records
                        .push(GroupRecord::offset_tombstone(group_id, partition));
                }
                self.open_transactions.supersede(group_id, partition);
                (partition.clone(), Ok(()))
            })
            .collect();
        (Ok(results), effects)
    }
}

/// Stores the commits of one request in `offsets`, each with its record; a commit whose
/// metadata is too long is refused alone.
pub(super) fn store_commits(
    config: &GroupConfig,
    group_id: &str,
    offsets: &mut BTreeMap<TopicPartition, CommittedOffset>,
    commits: &[OffsetCommitPartition],
    now_ms: i64,
    effects: &mut Effects,
) -> Vec<(TopicPartition, Result<(), GroupError>)> {
    commits
        .iter()
        .map(|commit| {
            let metadata = commit.metadata.clone().unwrap_or_default();
            if metadata.len() > config.offset_metadata_bytes_max {
                return (
                    commit.partition.clone(),
                    Err(GroupError::OffsetMetadataTooLarge),
                );
            }
            let committed = CommittedOffset {
                offset: commit.offset,
                leader_epoch: commit.leader_epoch,
                metadata,
                commit_timestamp_ms: now_ms,
            };
            effects
                .records
                .push(GroupRecord::offset(group_id, &commit.partition, &committed));
            offsets.insert(commit.partition.clone(), committed);
            (commit.partition.clone(), Ok(()))
        })
        .collect()
}

/// Drops the offsets of groups empty for longer than the retention (a group used only for
/// simple commits ages each offset from its commit), and then the empty groups left with no
/// offsets and no reserved member ids.
pub(super) fn expire(
    config: &GroupConfig,
    groups: &mut BTreeMap<String, ClassicGroup>,
    in_transaction: impl Fn(&str) -> bool,
    now_ms: i64,
    effects: &mut Effects,
) {
    for group in groups.values_mut() {
        if group.state != GroupState::Empty || in_transaction(&group.group_id) {
            continue;
        }
        let empty_since_ms = group
            .state_since_ms
            .filter(|_| group.protocol_type.is_some());
        let group_id = &group.group_id;
        group.offsets.retain(|partition, committed| {
            let base_ms = empty_since_ms.unwrap_or(committed.commit_timestamp_ms);
            let keep = now_ms - base_ms < config.offsets_retention_ms;
            if !keep {
                effects
                    .records
                    .push(GroupRecord::offset_tombstone(group_id, partition));
            }
            keep
        });
    }
    let unused: Vec<String> = groups
        .values()
        .filter(|group| {
            group.state == GroupState::Empty
                && group.offsets.is_empty()
                && group.pending_members.is_empty()
                && !in_transaction(&group.group_id)
        })
        .map(|group| group.group_id.clone())
        .collect();
    for group_id in unused {
        remove_group(groups, &group_id, effects);
    }
}

/// The topics a consumer group's members subscribe to, read from their subscriptions for the
/// chosen protocol; `None` if the group is not a consumer group or a subscription is unreadable.
fn subscribed_topics(group: &ClassicGroup) -> Option<Vec<String>> {
    if group.protocol_type.as_deref() != Some("consumer") {
        return None;
    }
    let protocol = group.protocol_name.as_deref()?;
    let mut topics = Vec::new();
    for member in &group.members {
        topics.extend(consumer_subscription_topics(member.metadata(protocol)?)?);
    }
    Some(topics)
}

/// The topics of a ConsumerProtocolSubscription (every version starts with an int16 version
/// and the topic names as an int32-counted array of int16-length strings).
fn consumer_subscription_topics(metadata: &[u8]) -> Option<Vec<String>> {
    let mut rest = metadata.get(2..)?;
    let count = i32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    rest = &rest[4..];
    let mut topics = Vec::new();
    for _ in 0..count.max(0) {
        let length = usize::try_from(i16::from_be_bytes(rest.get(..2)?.try_into().ok()?)).ok()?;
        let name = rest.get(2..2 + length)?;
        topics.push(String::from_utf8(name.to_vec()).ok()?);
        rest = &rest[2 + length..];
    }
    Some(topics)
}
