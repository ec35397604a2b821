//! The group requests a coordinator takes, one type per kind, each with the type of its answer
//! ([`GroupRequest::Answer`]): a handler gets back exactly what its request produces, so no
//! answer of another kind needs an arm. Each says what it does to the state machine (without
//! awaiting: nothing else sees a half-made change) and how it is refused as a whole.

use std::sync::Arc;

use engine::batch::TransactionMarker;
use engine::catalog::{is_internal_topic, TopicTable};
use futures::channel::oneshot;

use super::loaded::LoadedCoordinator;
use crate::groups::consumer::{
    ConsumerGroupDescription, ConsumerHeartbeat, ConsumerHeartbeatResponse, SubscribedTopic,
    TopicSource,
};
use crate::groups::{
    CommittedOffset, Effects, GroupCoordinator, GroupDescription, GroupError, GroupState,
    JoinGroup, JoinOutcome, JoinResponse, LeaveResults, LeavingMember, ListedGroup, OffsetCommit,
    PartitionResults, SyncGroup, SyncOutcome, SyncResponse, TopicPartition, TxnOffsetCommit,
};

/// One kind of request for the coordinator of a `__consumer_offsets` partition.
pub trait GroupRequest: Send + 'static {
    type Answer: Send + 'static;

    /// The answer that refuses the whole request with `error` (the coordinator is elsewhere,
    /// loading, or unloaded).
    fn refused(&self, error: GroupError) -> Self::Answer;

    /// Runs the request against `state`, the state of `coordinator`, at `now_ms`.
    fn apply(
        self,
        coordinator: &LoadedCoordinator,
        state: &mut GroupCoordinator,
        now_ms: i64,
    ) -> (Outcome<Self::Answer>, Effects);
}

/// How a request's own answer arrives: now, or once the request it waits for completes (a
/// JoinGroup until the join phase ends, a SyncGroup until the leader's assignment).
pub enum Outcome<Answer> {
    Now(Answer),
    Later(oneshot::Receiver<Answer>),
}

/// The answer of a request that changes nothing and cannot wait.
fn now<Answer>(answer: Answer) -> (Outcome<Answer>, Effects) {
    (Outcome::Now(answer), Effects::default())
}

impl GroupRequest for JoinGroup {
    type Answer = JoinResponse;

    fn refused(&self, error: GroupError) -> JoinResponse {
        JoinResponse::error(error, self.member_id.clone())
    }

    fn apply(
        self,
        coordinator: &LoadedCoordinator,
        state: &mut GroupCoordinator,
        now_ms: i64,
    ) -> (Outcome<JoinResponse>, Effects) {
        let (outcome, effects) = state.join_group(&self, now_ms);
        let outcome = match outcome {
            JoinOutcome::Done(response) => Outcome::Now(response),
            JoinOutcome::Pending(ticket) => Outcome::Later(coordinator.wait_for_join(ticket)),
        };
        (outcome, effects)
    }
}

impl GroupRequest for SyncGroup {
    type Answer = SyncResponse;

    fn refused(&self, error: GroupError) -> SyncResponse {
        SyncResponse::error(error)
    }

    fn apply(
        self,
        coordinator: &LoadedCoordinator,
        state: &mut GroupCoordinator,
        now_ms: i64,
    ) -> (Outcome<SyncResponse>, Effects) {
        let (outcome, effects) = state.sync_group(&self, now_ms);
        let outcome = match outcome {
            SyncOutcome::Done(response) => Outcome::Now(response),
            SyncOutcome::Pending(ticket) => Outcome::Later(coordinator.wait_for_sync(ticket)),
        };
        (outcome, effects)
    }
}

/// A member says it is alive.
#[derive(Debug)]
pub struct Heartbeat {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

impl GroupRequest for Heartbeat {
    type Answer = Result<(), GroupError>;

    fn refused(&self, error: GroupError) -> Self::Answer {
        Err(error)
    }

    fn apply(
        self,
        _: &LoadedCoordinator,
        state: &mut GroupCoordinator,
        now_ms: i64,
    ) -> (Outcome<Self::Answer>, Effects) {
        now(state.heartbeat(
            &self.group_id,
            self.generation_id,
            &self.member_id,
            self.group_instance_id.as_deref(),
            now_ms,
        ))
    }
}

/// Members leave their group.
#[derive(Debug)]
pub struct LeaveGroup {
    pub group_id: String,
    pub members: Vec<LeavingMember>,
}

impl GroupRequest for LeaveGroup {
    type Answer = LeaveResults;

    fn refused(&self, error: GroupError) -> LeaveResults {
        Err(error)
    }

    fn apply(
        self,
        _: &LoadedCoordinator,
        state: &mut GroupCoordinator,
        now_ms: i64,
    ) -> (Outcome<LeaveResults>, Effects) {
        let (results, effects) = state.leave_group(&self.group_id, &self.members, now_ms);
        (Outcome::Now(results), effects)
    }
}

impl GroupRequest for OffsetCommit {
    type Answer = PartitionResults;

    fn refused(&self, error: GroupError) -> PartitionResults {
        Err(error)
    }

    fn apply(
        self,
        _: &LoadedCoordinator,
        state: &mut GroupCoordinator,
        now_ms: i64,
    ) -> (Outcome<PartitionResults>, Effects) {
        let (results, effects) = state.commit_offsets(&self, now_ms);
        (Outcome::Now(results), effects)
    }
}

impl GroupRequest for TxnOffsetCommit {
    type Answer = PartitionResults;

    fn refused(&self, error: GroupError) -> PartitionResults {
        Err(error)
    }

    fn apply(
        self,
        _: &LoadedCoordinator,
        state: &mut GroupCoordinator,
        now_ms: i64,
    ) -> (Outcome<PartitionResults>, Effects) {
        let (results, effects) = state.commit_transactional_offsets(&self, now_ms);
        (Outcome::Now(results), effects)
    }
}

/// A transaction ends in the groups of the partition: its marker is appended, and the offsets
/// it committed there become committed or are dropped (see
/// [`GroupCoordinator::complete_transaction`]).
#[derive(Debug)]
pub struct CompleteTransaction {
    pub marker: TransactionMarker,
}

impl GroupRequest for CompleteTransaction {
    type Answer = Result<(), GroupError>;

    fn refused(&self, error: GroupError) -> Self::Answer {
        Err(error)
    }

    fn apply(
        self,
        _: &LoadedCoordinator,
        state: &mut GroupCoordinator,
        _: i64,
    ) -> (Outcome<Self::Answer>, Effects) {
        match state.complete_transaction(self.marker) {
            Ok(effects) => (Outcome::Now(Ok(())), effects),
            Err(error) => now(Err(error)),
        }
    }
}

/// A group's committed offsets of `partitions`; `None`: of every partition it committed.
#[derive(Debug)]
pub struct FetchOffsets {
    pub group_id: String,
    pub partitions: Option<Vec<TopicPartition>>,
    /// The member id and member epoch of a consumer-protocol member (OffsetFetch v9), checked
    /// before the offsets are given.
    pub member: Option<(String, i32)>,
    /// OffsetFetch's `require_stable` (version 7 on): a partition an open transaction commits
    /// an offset of is answered UNSTABLE_OFFSET_COMMIT instead of its offset.
    pub require_stable: bool,
}

/// Each partition's committed offset (`None`: none), or why it is not given.
pub type FetchedOffsets = Vec<(TopicPartition, Result<Option<CommittedOffset>, GroupError>)>;

impl GroupRequest for FetchOffsets {
    type Answer = Result<FetchedOffsets, GroupError>;

    fn refused(&self, error: GroupError) -> Self::Answer {
        Err(error)
    }

    fn apply(
        self,
        _: &LoadedCoordinator,
        state: &mut GroupCoordinator,
        _: i64,
    ) -> (Outcome<Self::Answer>, Effects) {
        if let Some((member_id, member_epoch)) = &self.member {
            if let Err(error) =
                state.check_fetching_member(&self.group_id, member_id, *member_epoch)
            {
                return now(Err(error));
            }
        }
        let offsets = state.fetch_offsets(&self.group_id, self.partitions.as_deref());
        let fetched = offsets
            .into_iter()
            .map(|(partition, committed)| {
                let unstable =
                    self.require_stable && state.is_offset_pending(&self.group_id, &partition);
                let committed = match unstable {
                    true => Err(GroupError::UnstableOffsetCommit),
                    false => Ok(committed),
                };
                (partition, committed)
            })
            .collect();
        now(Ok(fetched))
    }
}

/// Removes a group's committed offsets of `partitions`.
#[derive(Debug)]
pub struct DeleteOffsets {
    pub group_id: String,
    pub partitions: Vec<TopicPartition>,
}

impl GroupRequest for DeleteOffsets {
    type Answer = PartitionResults;

    fn refused(&self, error: GroupError) -> PartitionResults {
        Err(error)
    }

    fn apply(
        self,
        _: &LoadedCoordinator,
        state: &mut GroupCoordinator,
        _: i64,
    ) -> (Outcome<PartitionResults>, Effects) {
        let (results, effects) = state.delete_offsets(&self.group_id, &self.partitions);
        (Outcome::Now(results), effects)
    }
}

/// One group's state and members.
#[derive(Debug)]
pub struct DescribeGroup {
    pub group_id: String,
}

impl GroupRequest for DescribeGroup {
    type Answer = Result<GroupDescription, GroupError>;

    fn refused(&self, error: GroupError) -> Self::Answer {
        Err(error)
    }

    fn apply(
        self,
        _: &LoadedCoordinator,
        state: &mut GroupCoordinator,
        _: i64,
    ) -> (Outcome<Self::Answer>, Effects) {
        now(Ok(state.describe_group(&self.group_id)))
    }
}

/// Every group of the partition, or only those in one of `states` (none: all).
#[derive(Debug)]
pub struct ListGroups {
    pub states: Vec<GroupState>,
}

impl GroupRequest for ListGroups {
    type Answer = Result<Vec<ListedGroup>, GroupError>;

    fn refused(&self, error: GroupError) -> Self::Answer {
        Err(error)
    }

    fn apply(
        self,
        _: &LoadedCoordinator,
        state: &mut GroupCoordinator,
        _: i64,
    ) -> (Outcome<Self::Answer>, Effects) {
        now(Ok(state.list_groups(&self.states)))
    }
}

/// Removes an empty group and its offsets.
#[derive(Debug)]
pub struct DeleteGroup {
    pub group_id: String,
}

impl GroupRequest for DeleteGroup {
    type Answer = Result<(), GroupError>;

    fn refused(&self, error: GroupError) -> Self::Answer {
        Err(error)
    }

    fn apply(
        self,
        _: &LoadedCoordinator,
        state: &mut GroupCoordinator,
        _: i64,
    ) -> (Outcome<Self::Answer>, Effects) {
        let (mut results, effects) = state.delete_groups(&[self.group_id]);
        let result = results.pop().map_or(Ok(()), |(_, result)| result);
        (Outcome::Now(result), effects)
    }
}

/// A ConsumerGroupHeartbeat, with the topics as the broker's catalog has them when it was sent
/// (the coordinator looks up the group's subscribed topics in it).
#[derive(Debug)]
pub struct ConsumerGroupHeartbeat {
    pub heartbeat: ConsumerHeartbeat,
    pub topics: Arc<TopicTable>,
}

impl GroupRequest for ConsumerGroupHeartbeat {
    type Answer = Result<ConsumerHeartbeatResponse, GroupError>;

    fn refused(&self, error: GroupError) -> Self::Answer {
        Err(error)
    }

    fn apply(
        self,
        _: &LoadedCoordinator,
        state: &mut GroupCoordinator,
        now_ms: i64,
    ) -> (Outcome<Self::Answer>, Effects) {
        let topics = CatalogTopics(&self.topics);
        let (result, effects) = state.consumer_heartbeat(&self.heartbeat, &topics, now_ms);
        (Outcome::Now(result), effects)
    }
}

/// The broker's topics as the consumer protocol's coordinator sees them.
struct CatalogTopics<'a>(&'a TopicTable);

impl TopicSource for CatalogTopics<'_> {
    fn topic(&self, name: &str) -> Option<SubscribedTopic> {
        self.0.get(name).map(|topic| SubscribedTopic {
            id: topic.id,
            name: topic.name.clone(),
            partitions: i32::try_from(topic.partitions).unwrap_or(i32::MAX),
        })
    }

    fn names(&self) -> Vec<&str> {
        self.0
            .iter()
            .map(|topic| topic.name.as_str())
            .filter(|name| !is_internal_topic(name))
            .collect()
    }
}

/// One consumer-protocol group's description (ConsumerGroupDescribe); `None` if the group is
/// not a consumer-protocol group.
#[derive(Debug)]
pub struct DescribeConsumerGroup {
    pub group_id: String,
}

impl GroupRequest for DescribeConsumerGroup {
    type Answer = Result<Option<ConsumerGroupDescription>, GroupError>;

    fn refused(&self, error: GroupError) -> Self::Answer {
        Err(error)
    }

    fn apply(
        self,
        _: &LoadedCoordinator,
        state: &mut GroupCoordinator,
        _: i64,
    ) -> (Outcome<Self::Answer>, Effects) {
        now(Ok(state.describe_consumer_group(&self.group_id)))
    }
}
