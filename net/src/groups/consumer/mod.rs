//! The consumer group protocol of Kafka 4 (KIP-848, `group.protocol=consumer`), beside the
//! classic protocol in the same coordinator: members heartbeat (ConsumerGroupHeartbeat) with
//! their subscription and the partitions they own, and the coordinator assigns partitions
//! itself with a server-side assignor (`assignor`), with no group-wide stop: each member moves
//! towards its share of the target assignment on its own heartbeats (`reconcile`), giving up a
//! partition before anyone else gets it.
//!
//! Epochs, as Kafka keeps them: the group epoch grows when the group's membership, the members'
//! subscriptions or the subscribed topics' partition counts change; the target assignment is
//! recomputed at once and carries the group epoch as its assignment epoch; a member's epoch
//! reaches the assignment epoch once it has revoked what it must, and is what OffsetCommit
//! checks (STALE_MEMBER_EPOCH for an older one).
//!
//! A group id is either classic or consumer: an empty classic group (offsets only) becomes a
//! consumer group on a member's first heartbeat, an empty consumer group becomes classic on a
//! JoinGroup; otherwise the other protocol is refused (GROUP_ID_NOT_FOUND for a heartbeat to a
//! classic group with members, INCONSISTENT_GROUP_PROTOCOL for a JoinGroup to a consumer group
//! with members). Offsets are one store for both (OffsetCommitKey/Value records); a consumer
//! group keeps its own, as a classic group does, and they move with the group on a conversion.
//!
//! Records (`records`) are Kafka's own (key versions 3 to 8), so a restart or a new
//! coordinator in a cluster resumes every group with its members, epochs and assignments.
//!
//! # Cost
//! A heartbeat looks up the group's subscribed topics again (O(members' subscriptions)) and
//! reconciles one member (O(partitions held in the group)); Kafka caches the topics' metadata
//! and an ownership index, the step if it shows in profiles.
//!
//! A member subscribes to topic names, a regular expression (matched against whole topic names,
//! internal topics aside), or both; the group's subscribed topics are looked up again on every
//! heartbeat ([`TopicSource`]), so topics created, grown or deleted move the group on.
//!
//! # Differences from Kafka
//! Regular expressions are the `regex` crate's (RE2's syntax, as Kafka's RE2/J), resolved on
//! every heartbeat rather than every few seconds, and not written to records of their own
//! (ConsumerGroupRegularExpression): the member's record keeps the pattern and the group's
//! partition metadata record its resolved topics.
//! Not implemented: rack-aware assignment,
//! classic members in a consumer group (online migration), client-side assignors, the
//! UNSUPPORTED_VERSION answer to an OffsetCommit below version 9 from a consumer-protocol member
//! (it is checked as a version 9 one). A consumer group's size is bounded by the classic
//! `group.max.size`. Classic Heartbeat, SyncGroup and LeaveGroup to a consumer-protocol group
//! are answered UNKNOWN_MEMBER_ID.

mod assignor;
mod reconcile;
pub(crate) mod records;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use super::group::{ClassicGroup, CommittedOffset, GroupState, TopicPartition};
use super::{
    DescribedMember, Effects, GroupCoordinator, GroupDescription, GroupError, GroupRecord,
    ListedGroup,
};

pub use assignor::AssignorKind;
use reconcile::{contains, is_subset, next_assignment, MemberAssignment};

/// A topic's id (Kafka's UUID), as the consumer protocol names topics.
pub type TopicId = [u8; 16];

/// Partitions by topic id.
pub type Assignment = BTreeMap<TopicId, BTreeSet<i32>>;

/// Member epoch of a ConsumerGroupHeartbeat that joins.
pub const JOIN_EPOCH: i32 = 0;
/// Member epoch of a ConsumerGroupHeartbeat that leaves the group.
pub const LEAVE_EPOCH: i32 = -1;
/// Member epoch of a static member's ConsumerGroupHeartbeat that leaves for now: its
/// partitions wait for its instance to come back, until its session times out.
pub const STATIC_LEAVE_EPOCH: i32 = -2;

/// The consumer protocol's settings (Kafka's `group.consumer.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupConfig {
    /// group.consumer.session.timeout.ms.
    pub session_timeout_ms: i32,
    /// group.consumer.heartbeat.interval.ms.
    pub heartbeat_interval_ms: i32,
    /// group.consumer.assignors: the first is the default.
    pub assignors: Vec<AssignorKind>,
}

impl Default for ConsumerGroupConfig {
    fn default() -> ConsumerGroupConfig {
        ConsumerGroupConfig {
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 5_000,
            assignors: vec![AssignorKind::Uniform, AssignorKind::Range],
        }
    }
}

/// What the coordinator sees of the broker's topics when a heartbeat arrives.
pub trait TopicSource {
    /// The topic named `name`, if it exists.
    fn topic(&self, name: &str) -> Option<SubscribedTopic>;
    /// Every topic's name but the internal ones: what regular expressions are matched against.
    fn names(&self) -> Vec<&str>;
}

/// The most memory one subscription's compiled regular expression may take.
const TOPIC_REGEX_BYTES_MAX: usize = 1 << 20;

/// A member's regular-expression subscription, compiled once; it matches whole topic names,
/// as Kafka's does.
#[derive(Debug, Clone)]
pub(crate) struct TopicRegex {
    pattern: String,
    compiled: regex::Regex,
}

impl TopicRegex {
    pub fn new(pattern: &str) -> Result<TopicRegex, GroupError> {
        let compiled = regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
            .size_limit(TOPIC_REGEX_BYTES_MAX)
            .build()
            .map_err(|_| GroupError::InvalidRegularExpression)?;
        Ok(TopicRegex {
            pattern: pattern.to_owned(),
            compiled,
        })
    }

    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    fn matches(&self, topic: &str) -> bool {
        self.compiled.is_match(topic)
    }
}

impl PartialEq for TopicRegex {
    fn eq(&self, other: &TopicRegex) -> bool {
        self.pattern == other.pattern
    }
}

impl Eq for TopicRegex {}

/// A topic as the group last saw it: what the assignors work from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribedTopic {
    pub id: TopicId,
    pub name: String,
    pub partitions: i32,
}

/// Where a member stands in its reconciliation; the values are Kafka's (records).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// The member has its whole target.
    Stable,
    /// The member must give up partitions before it moves on.
    UnrevokedPartitions,
    /// The member waits for partitions that others have not given up yet.
    UnreleasedPartitions,
}

impl MemberState {
    pub fn code(self) -> i8 {
        match self {
            MemberState::Stable => 0,
            MemberState::UnrevokedPartitions => 1,
            MemberState::UnreleasedPartitions => 2,
        }
    }

    pub fn from_code(code: i8) -> Option<MemberState> {
        match code {
            0 => Some(MemberState::Stable),
            1 => Some(MemberState::UnrevokedPartitions),
            2 => Some(MemberState::UnreleasedPartitions),
            _ => None,
        }
    }
}

/// A ConsumerGroupHeartbeat. `None` fields are "unchanged since the last heartbeat".
#[derive(Debug, Clone, Default)]
pub struct ConsumerHeartbeat {
    pub group_id: String,
    /// Generated by the client (version 1); empty from a version 0 client that joins.
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    /// -1: unchanged.
    pub rebalance_timeout_ms: i32,
    pub subscribed_topic_names: Option<Vec<String>>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    /// The partitions the member owns.
    pub owned: Option<Assignment>,
    pub client_id: String,
    pub client_host: String,
}

/// A heartbeat's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerHeartbeatResponse {
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// The member's partitions, when they changed or the member asked.
    pub assignment: Option<Assignment>,
}

/// One member of a consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConsumerMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topic_names: BTreeSet<String>,
    pub subscribed_topic_regex: Option<TopicRegex>,
    pub server_assignor: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub assignment: MemberAssignment,
    /// Not persisted: a restart gives every member a fresh session.
    pub session_deadline_ms: i64,
    /// Set while the member must revoke partitions: it is fenced if it has not by then.
    pub revocation_deadline_ms: Option<i64>,
}

impl ConsumerMember {
    fn new(member_id: String, now_ms: i64, session_timeout_ms: i32) -> ConsumerMember {
        ConsumerMember {
            member_id,
            instance_id: None,
            rack_id: None,
            client_id: String::new(),
            client_host: String::new(),
            subscribed_topic_names: BTreeSet::new(),
            subscribed_topic_regex: None,
            server_assignor: None,
            rebalance_timeout_ms: -1,
            assignment: MemberAssignment {
                state: MemberState::Stable,
                member_epoch: 0,
                previous_member_epoch: -1,
                assigned: Assignment::new(),
                pending_revocation: Assignment::new(),
            },
            session_deadline_ms: now_ms + i64::from(session_timeout_ms),
            revocation_deadline_ms: None,
        }
    }

    /// Whether the member subscribes to `topic`, by name or by its regular expression.
    fn subscribes_to(&self, topic: &str) -> bool {
        self.subscribed_topic_names.contains(topic)
            || self
                .subscribed_topic_regex
                .as_ref()
                .is_some_and(|regex| regex.matches(topic))
    }

    /// The topics the member subscribes to: its names, and those of `topics` (the group's) its
    /// regular expression matches.
    fn subscribed_names<'a>(
        &'a self,
        topics: &'a BTreeMap<String, SubscribedTopic>,
    ) -> BTreeSet<&'a str> {
        let matched = topics.keys().filter(|name| self.subscribes_to(name));
        self.subscribed_topic_names
            .iter()
            .chain(matched)
            .map(String::as_str)
            .collect()
    }

    /// Whether the member left for now as a static member (its slot waits for its instance).
    fn left_static(&self) -> bool {
        self.assignment.member_epoch == STATIC_LEAVE_EPOCH
    }

    /// Every partition the member still holds: assigned or not yet revoked.
    fn holds(&self, topic: TopicId, partition: i32) -> bool {
        contains(&self.assignment.assigned, topic, partition)
            || contains(&self.assignment.pending_revocation, topic, partition)
    }
}

/// A consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConsumerGroup {
    pub group_id: String,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub members: BTreeMap<String, ConsumerMember>,
    /// Each member's target assignment at `assignment_epoch`.
    pub target: BTreeMap<String, Assignment>,
    /// The subscribed topics that exist, by name, as of the last heartbeat that looked.
    pub subscribed_topics: BTreeMap<String, SubscribedTopic>,
    pub offsets: BTreeMap<TopicPartition, CommittedOffset>,
    /// When the group last became empty (offsets' retention); `None` while it has members.
    pub empty_since_ms: Option<i64>,
}

impl ConsumerGroup {
    pub fn new(group_id: String, now_ms: i64) -> ConsumerGroup {
        ConsumerGroup {
            group_id,
            group_epoch: 0,
            assignment_epoch: 0,
            members: BTreeMap::new(),
            target: BTreeMap::new(),
            subscribed_topics: BTreeMap::new(),
            offsets: BTreeMap::new(),
            empty_since_ms: Some(now_ms),
        }
    }

    /// The group's state, as Kafka names it.
    pub fn state(&self) -> GroupState {
        if self.members.is_empty() {
            GroupState::Empty
        } else if self.group_epoch > self.assignment_epoch {
            GroupState::Assigning
        } else if self.members.values().any(|member| {
            !member.left_static()
                && (member.assignment.member_epoch != self.assignment_epoch
                    || member.assignment.state != MemberState::Stable)
        }) {
            GroupState::Reconciling
        } else {
            GroupState::Stable
        }
    }

    /// Whether a member other than `member_id` still holds the partition.
    fn held_by_other(&self, member_id: &str, topic: TopicId, partition: i32) -> bool {
        self.members
            .values()
            .any(|member| member.member_id != member_id && member.holds(topic, partition))
    }

    fn topic_name(&self, id: &TopicId) -> Option<&str> {
        self.subscribed_topics
            .values()
            .find(|topic| topic.id == *id)
            .map(|topic| topic.name.as_str())
    }

    /// The assignor the members ask for most (`group.remote.assignor`), else the default.
    fn assignor(&self, config: &ConsumerGroupConfig) -> AssignorKind {
        let mut votes: BTreeMap<AssignorKind, usize> = BTreeMap::new();
        for name in self
            .members
            .values()
            .filter_map(|m| m.server_assignor.as_deref())
        {
            if let Some(kind) = AssignorKind::from_name(name) {
                *votes.entry(kind).or_default() += 1;
            }
        }
        let default = config
            .assignors
            .first()
            .copied()
            .unwrap_or(AssignorKind::Uniform);
        config
            .assignors
            .iter()
            .copied()
            .max_by_key(|kind| {
                (
                    votes.get(kind).copied().unwrap_or(0),
                    std::cmp::Reverse(*kind == default),
                )
            })
            .filter(|kind| votes.contains_key(kind))
            .unwrap_or(default)
    }

    /// Bumps the group epoch (membership, subscriptions or topics changed) and computes the
    /// target assignment of the new epoch.
    fn bump_epoch(&mut self, config: &ConsumerGroupConfig, effects: &mut Effects) {
        self.group_epoch += 1;
        effects.records.push(records::group_metadata(self));
        let subscriptions: BTreeMap<String, BTreeSet<TopicId>> = self
            .members
            .values()
            .map(|member| {
                let topics = self
                    .subscribed_topics
                    .values()
                    .filter(|topic| member.subscribes_to(&topic.name))
                    .map(|topic| topic.id)
                    .collect();
                (member.member_id.clone(), topics)
            })
            .collect();
        let partition_counts = self
            .subscribed_topics
            .values()
            .map(|topic| (topic.id, topic.partitions))
            .collect();
        let target = self
            .assignor(config)
            .assign(&subscriptions, &partition_counts, &self.target);
        for (member_id, assignment) in &target {
            if self.target.get(member_id) != Some(assignment) {
                effects.records.push(records::target_member(
                    &self.group_id,
                    member_id,
                    assignment,
                ));
            }
        }
        self.target = target;
        self.assignment_epoch = self.group_epoch;
        effects.records.push(records::target_metadata(self));
    }

    /// Looks the subscribed topics up again (names, and what the regular expressions match
    /// now); records a change and says so (the caller bumps the epoch).
    fn refresh_topics(&mut self, topics: &dyn TopicSource, effects: &mut Effects) -> bool {
        let mut names: BTreeSet<&str> = self
            .members
            .values()
            .flat_map(|member| member.subscribed_topic_names.iter().map(String::as_str))
            .collect();
        let regexes: Vec<&TopicRegex> = self
            .members
            .values()
            .filter_map(|member| member.subscribed_topic_regex.as_ref())
            .collect();
        if !regexes.is_empty() {
            names.extend(
                topics
                    .names()
                    .into_iter()
                    .filter(|name| regexes.iter().any(|regex| regex.matches(name))),
            );
        }
        let current: BTreeMap<String, SubscribedTopic> = names
            .into_iter()
            .filter_map(|name| topics.topic(name).map(|topic| (name.to_owned(), topic)))
            .collect();
        if current == self.subscribed_topics {
            return false;
        }
        self.subscribed_topics = current;
        effects.records.push(records::partition_metadata(self));
        true
    }

    /// Moves `member_id` towards its target; records its new assignment if it changed.
    fn reconcile(
        &mut self,
        member_id: &str,
        owned: Option<&Assignment>,
        now_ms: i64,
        effects: &mut Effects,
    ) -> bool {
        let empty = Assignment::new();
        let target = self.target.get(member_id).unwrap_or(&empty);
        let member = &self.members[member_id];
        let next = next_assignment(
            &member.assignment,
            self.assignment_epoch,
            target,
            owned,
            |topic, partition| self.held_by_other(member_id, topic, partition),
        );
        let member = self
            .members
            .get_mut(member_id)
            .expect("reconciled a member");
        if next == member.assignment {
            return false;
        }
        member.revocation_deadline_ms = match next.state {
            MemberState::UnrevokedPartitions => member
                .revocation_deadline_ms
                .or(Some(now_ms + i64::from(member.rebalance_timeout_ms.max(0)))),
            _ => None,
        };
        member.assignment = next;
        effects
            .records
            .push(records::current_assignment(&self.group_id, member));
        true
    }

    /// Removes a member: its partitions are free, the others' targets are recomputed.
    fn remove_member(
        &mut self,
        member_id: &str,
        config: &ConsumerGroupConfig,
        now_ms: i64,
        effects: &mut Effects,
    ) {
        if self.members.remove(member_id).is_none() {
            return;
        }
        self.target.remove(member_id);
        effects
            .records
            .extend(records::member_tombstones(&self.group_id, member_id));
        if self.members.is_empty() {
            self.empty_since_ms = Some(now_ms);
        }
        self.bump_epoch(config, effects);
    }

    /// A heartbeat with epoch 0: a new member, a member that lost its state and starts over
    /// (what it held is free again), or a static member back under a new member id, which
    /// takes over its slot (assignment and epoch) if its predecessor left with epoch -2.
    /// Returns whether the membership changed (a new member).
    fn join(
        &mut self,
        member_id: &str,
        request: &ConsumerHeartbeat,
        config: &ConsumerGroupConfig,
        members_max: usize,
        now_ms: i64,
        effects: &mut Effects,
    ) -> Result<bool, GroupError> {
        let static_slot = request.instance_id.as_ref().and_then(|instance| {
            self.members
                .values()
                .find(|m| m.instance_id.as_ref() == Some(instance))
                .map(|m| (m.member_id.clone(), m.left_static()))
        });
        match static_slot {
            Some((old_id, _)) if old_id == member_id => {}
            Some((_, false)) => return Err(GroupError::UnreleasedInstanceId),
            Some((old_id, true)) => {
                self.take_over(&old_id, member_id, effects);
                return Ok(false);
            }
            None => {}
        }
        if let Some(member) = self.members.get_mut(member_id) {
            member.assignment = ConsumerMember::new(String::new(), now_ms, 0).assignment;
            member.revocation_deadline_ms = None;
            effects
                .records
                .push(records::current_assignment(&self.group_id, member));
            return Ok(false);
        }
        if self.members.len() >= members_max {
            return Err(GroupError::GroupMaxSizeReached);
        }
        let member = ConsumerMember::new(member_id.to_owned(), now_ms, config.session_timeout_ms);
        self.members.insert(member_id.to_owned(), member);
        self.empty_since_ms = None;
        Ok(true)
    }

    /// A static member's new incarnation `new_id` takes over `old_id`'s slot.
    fn take_over(&mut self, old_id: &str, new_id: &str, effects: &mut Effects) {
        let mut member = self.members.remove(old_id).expect("the slot's member");
        effects
            .records
            .extend(records::member_tombstones(&self.group_id, old_id));
        member.member_id = new_id.to_owned();
        member.assignment.member_epoch = member.assignment.previous_member_epoch;
        if member.assignment.member_epoch <= 0 {
            // It left before it had an epoch: it starts over like any new member.
            member.assignment = ConsumerMember::new(String::new(), 0, 0).assignment;
        }
        if let Some(target) = self.target.remove(old_id) {
            effects
                .records
                .push(records::target_member(&self.group_id, new_id, &target));
            self.target.insert(new_id.to_owned(), target);
        }
        effects
            .records
            .push(records::member_metadata(&self.group_id, &member));
        effects
            .records
            .push(records::current_assignment(&self.group_id, &member));
        self.members.insert(new_id.to_owned(), member);
    }

    /// Checks a heartbeat's member and epoch (a member that is not the one it says, or whose
    /// epoch is not its own, is fenced and must rejoin). Returns whether the member retries a
    /// heartbeat whose answer it lost, and so must hear its assignment again.
    fn check_member_epoch(
        &self,
        member_id: &str,
        request: &ConsumerHeartbeat,
    ) -> Result<bool, GroupError> {
        let member = self
            .members
            .get(member_id)
            .ok_or(GroupError::UnknownMemberId)?;
        if request.instance_id.is_some() && member.instance_id != request.instance_id {
            return Err(GroupError::FencedInstanceId);
        }
        let current = &member.assignment;
        if request.member_epoch > current.member_epoch {
            return Err(GroupError::FencedMemberEpoch);
        }
        if request.member_epoch == current.member_epoch {
            return Ok(false);
        }
        // The answer that moved the member on may have been lost: it retries with its previous
        // epoch and the partitions it was given before.
        let retry = request.member_epoch == current.previous_member_epoch
            && request
                .owned
                .as_ref()
                .is_some_and(|owned| is_subset(owned, &current.assigned));
        if retry {
            Ok(true)
        } else {
            Err(GroupError::FencedMemberEpoch)
        }
    }

    /// Renews the member's session and takes what its heartbeat changes of it (a record if
    /// anything did). Returns whether its subscription or assignor changed.
    fn update_member(
        &mut self,
        member_id: &str,
        request: &ConsumerHeartbeat,
        config: &ConsumerGroupConfig,
        now_ms: i64,
        effects: &mut Effects,
    ) -> bool {
        let member = self.members.get_mut(member_id).expect("a member by now");
        member.session_deadline_ms = now_ms + i64::from(config.session_timeout_ms);
        let mut updated = member.clone();
        let mut changed_subscription = false;
        updated.client_id.clone_from(&request.client_id);
        updated.client_host.clone_from(&request.client_host);
        if request.instance_id.is_some() {
            updated.instance_id.clone_from(&request.instance_id);
        }
        if request.rack_id.is_some() {
            updated.rack_id.clone_from(&request.rack_id);
        }
        if request.rebalance_timeout_ms >= 0 {
            updated.rebalance_timeout_ms = request.rebalance_timeout_ms;
        }
        if let Some(names) = &request.subscribed_topic_names {
            let names: BTreeSet<String> = names.iter().cloned().collect();
            changed_subscription |= names != updated.subscribed_topic_names;
            updated.subscribed_topic_names = names;
        }
        if let Some(pattern) = &request.subscribed_topic_regex {
            // An empty pattern clears the regular-expression subscription (librdkafka sends
            // one with every full heartbeat of a member that has none).
            let regex = match pattern.as_str() {
                "" => None,
                pattern => Some(TopicRegex::new(pattern).expect("validated with the request")),
            };
            changed_subscription |= regex != updated.subscribed_topic_regex;
            updated.subscribed_topic_regex = regex;
        }
        if request.server_assignor.is_some() && request.server_assignor != updated.server_assignor {
            updated.server_assignor.clone_from(&request.server_assignor);
            changed_subscription = true;
        }
        if updated != *member {
            effects
                .records
                .push(records::member_metadata(&self.group_id, &updated));
            *member = updated;
        }
        changed_subscription
    }

    fn next_deadline_ms(&self) -> Option<i64> {
        self.members
            .values()
            .flat_map(|m| std::iter::once(m.session_deadline_ms).chain(m.revocation_deadline_ms))
            .min()
    }

    /// Panics if the group's bookkeeping contradicts itself.
    pub fn check_invariants(&self) {
        if let Some(why) = self.inconsistency() {
            panic!("consumer group {}: {why}", self.group_id);
        }
    }

    /// What contradicts itself in the group's bookkeeping, if anything (a replayed group is
    /// checked with this too, so that a damaged log is an error and not a crash).
    pub fn inconsistency(&self) -> Option<&'static str> {
        if self.assignment_epoch > self.group_epoch {
            return Some("the assignment epoch is past the group epoch");
        }
        if self.members.is_empty() != self.empty_since_ms.is_some() {
            return Some("empty_since_ms is set exactly when the group is empty");
        }
        if !self.target.keys().all(|id| self.members.contains_key(id)) {
            return Some("a target assignment of a member that is not in the group");
        }
        let mut held: BTreeSet<(TopicId, i32)> = BTreeSet::new();
        let mut instances: BTreeSet<&str> = BTreeSet::new();
        for (member_id, member) in &self.members {
            let assignment = &member.assignment;
            if *member_id != member.member_id {
                return Some("a member under another member's id");
            }
            if assignment.member_epoch > self.assignment_epoch {
                return Some("a member epoch past the assignment epoch");
            }
            if (assignment.state == MemberState::UnrevokedPartitions)
                == assignment.pending_revocation.is_empty()
            {
                return Some("partitions pending revocation exactly when unrevoked");
            }
            for (topic, partitions) in assignment
                .assigned
                .iter()
                .chain(&assignment.pending_revocation)
            {
                for partition in partitions {
                    if !held.insert((*topic, *partition)) {
                        return Some("a partition held by two members");
                    }
                }
            }
            if let Some(instance) = &member.instance_id {
                if !instances.insert(instance) {
                    return Some("a group.instance.id used by two members");
                }
            }
        }
        None
    }
}

impl GroupCoordinator {
    /// ConsumerGroupHeartbeat: joins, heartbeats, reconciles and leaves. `topics` looks a topic
    /// up by name (`None`: it does not exist).
    pub fn consumer_heartbeat(
        &mut self,
        request: &ConsumerHeartbeat,
        topics: &dyn TopicSource,
        now_ms: i64,
    ) -> (Result<ConsumerHeartbeatResponse, GroupError>, Effects) {
        let mut effects = Effects::default();
        let result = self.heartbeat_consumer(request, topics, now_ms, &mut effects);
        if cfg!(debug_assertions) {
            // O(partitions held): the property test checks it after every step.
            if let Some(group) = self.consumer_groups.get(&request.group_id) {
                group.check_invariants();
            }
        }
        (result, effects)
    }

    fn heartbeat_consumer(
        &mut self,
        request: &ConsumerHeartbeat,
        topics: &dyn TopicSource,
        now_ms: i64,
        effects: &mut Effects,
    ) -> Result<ConsumerHeartbeatResponse, GroupError> {
        validate(request, &self.config.consumer)?;
        let joining = request.member_epoch == JOIN_EPOCH;
        let member_id = match request.member_id.as_str() {
            // A version 0 client that joins: the coordinator names it.
            "" => self.ids.member_id(&request.client_id),
            member_id => member_id.to_owned(),
        };
        self.convert_to_consumer_group(&request.group_id, joining, now_ms, effects)?;
        let members_max = self.config.group_members_max;
        let config = &self.config.consumer;
        let group = self
            .consumer_groups
            .get_mut(&request.group_id)
            .ok_or(GroupError::UnknownMemberId)?;
        if request.member_epoch == LEAVE_EPOCH || request.member_epoch == STATIC_LEAVE_EPOCH {
            return leave(group, request, config, now_ms, effects);
        }
        let mut changed_subscription = false;
        let mut send_assignment = joining || request.owned.is_some();
        if joining {
            changed_subscription =
                group.join(&member_id, request, config, members_max, now_ms, effects)?;
        } else {
            send_assignment |= group.check_member_epoch(&member_id, request)?;
        }
        changed_subscription |= group.update_member(&member_id, request, config, now_ms, effects);
        let topics_changed = group.refresh_topics(topics, effects);
        if changed_subscription || topics_changed {
            group.bump_epoch(config, effects);
        }
        send_assignment |= group.reconcile(&member_id, request.owned.as_ref(), now_ms, effects);
        let member = &group.members[&member_id];
        Ok(ConsumerHeartbeatResponse {
            member_id,
            member_epoch: member.assignment.member_epoch,
            heartbeat_interval_ms: config.heartbeat_interval_ms,
            assignment: send_assignment.then(|| member.assignment.assigned.clone()),
        })
    }

    /// Makes `group_id` a consumer group if it can be one: a new group for a member that joins,
    /// an empty classic group (offsets only) converted with its offsets. A classic group with
    /// members is refused GROUP_ID_NOT_FOUND, as Kafka does when it cannot upgrade it.
    fn convert_to_consumer_group(
        &mut self,
        group_id: &str,
        joining: bool,
        now_ms: i64,
        effects: &mut Effects,
    ) -> Result<(), GroupError> {
        if let Some(classic) = self.groups.get(group_id) {
            if !joining || !classic.members.is_empty() || !classic.pending_members.is_empty() {
                return Err(GroupError::GroupIdNotFound);
            }
            let classic = self.groups.remove(group_id).expect("present");
            effects.records.push(GroupRecord::group_tombstone(group_id));
            let mut group = ConsumerGroup::new(group_id.to_owned(), now_ms);
            group.offsets = classic.offsets;
            self.consumer_groups.insert(group_id.to_owned(), group);
        }
        if joining && !self.consumer_groups.contains_key(group_id) {
            let group = ConsumerGroup::new(group_id.to_owned(), now_ms);
            self.consumer_groups.insert(group_id.to_owned(), group);
        }
        Ok(())
    }

    /// ConsumerGroupDescribe of one group; `None` if it is not a consumer group.
    pub fn describe_consumer_group(&self, group_id: &str) -> Option<ConsumerGroupDescription> {
        let group = self.consumer_groups.get(group_id)?;
        let named = |assignment: &Assignment| -> Vec<(TopicId, String, Vec<i32>)> {
            assignment
                .iter()
                .map(|(id, partitions)| {
                    let name = group.topic_name(id).unwrap_or_default().to_owned();
                    (*id, name, partitions.iter().copied().collect())
                })
                .collect()
        };
        let empty = Assignment::new();
        Some(ConsumerGroupDescription {
            group_id: group_id.to_owned(),
            state: group.state(),
            group_epoch: group.group_epoch,
            assignment_epoch: group.assignment_epoch,
            assignor_name: group.assignor(&self.config.consumer).name().to_owned(),
            members: group
                .members
                .values()
                .map(|member| DescribedConsumerMember {
                    member_id: member.member_id.clone(),
                    instance_id: member.instance_id.clone(),
                    rack_id: member.rack_id.clone(),
                    member_epoch: member.assignment.member_epoch,
                    client_id: member.client_id.clone(),
                    client_host: member.client_host.clone(),
                    subscribed_topic_names: member.subscribed_topic_names.iter().cloned().collect(),
                    subscribed_topic_regex: member
                        .subscribed_topic_regex
                        .as_ref()
                        .map(|regex| regex.pattern().to_owned()),
                    assignment: named(&member.assignment.assigned),
                    target_assignment: named(group.target.get(&member.member_id).unwrap_or(&empty)),
                })
                .collect(),
        })
    }
}

/// A consumer group as ConsumerGroupDescribe shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupDescription {
    pub group_id: String,
    pub state: GroupState,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor_name: String,
    pub members: Vec<DescribedConsumerMember>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedConsumerMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub member_epoch: i32,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    /// (topic id, topic name, partitions).
    pub assignment: Vec<(TopicId, String, Vec<i32>)>,
    pub target_assignment: Vec<(TopicId, String, Vec<i32>)>,
}

/// Refuses what Kafka refuses before looking at the group (INVALID_REQUEST, UNSUPPORTED_ASSIGNOR).
fn validate(request: &ConsumerHeartbeat, config: &ConsumerGroupConfig) -> Result<(), GroupError> {
    if request.group_id.is_empty() {
        return Err(GroupError::InvalidRequest);
    }
    if let Some(pattern) = request.subscribed_topic_regex.as_deref() {
        TopicRegex::new(pattern)?;
    }
    match request.member_epoch {
        JOIN_EPOCH => {
            let subscribed = request.subscribed_topic_names.is_some()
                || request
                    .subscribed_topic_regex
                    .as_ref()
                    .is_some_and(|r| !r.is_empty());
            let owns_nothing = request
                .owned
                .as_ref()
                .is_some_and(|owned| owned.values().all(BTreeSet::is_empty));
            if request.rebalance_timeout_ms < 0 || !subscribed || !owns_nothing {
                return Err(GroupError::InvalidRequest);
            }
        }
        LEAVE_EPOCH => {}
        STATIC_LEAVE_EPOCH if request.instance_id.is_some() => {}
        epoch if epoch > 0 => {}
        _ => return Err(GroupError::InvalidRequest),
    }
    if request.member_epoch != JOIN_EPOCH && request.member_id.is_empty() {
        return Err(GroupError::InvalidRequest);
    }
    if let Some(name) = &request.server_assignor {
        let known = AssignorKind::from_name(name).is_some_and(|k| config.assignors.contains(&k));
        if !known {
            return Err(GroupError::UnsupportedAssignor);
        }
    }
    Ok(())
}

/// A heartbeat with epoch -1 (leave) or -2 (a static member leaves for now).
fn leave(
    group: &mut ConsumerGroup,
    request: &ConsumerHeartbeat,
    config: &ConsumerGroupConfig,
    now_ms: i64,
    effects: &mut Effects,
) -> Result<ConsumerHeartbeatResponse, GroupError> {
    let member_id = match &request.instance_id {
        Some(instance) => group
            .members
            .values()
            .find(|m| m.instance_id.as_ref() == Some(instance))
            .map(|m| m.member_id.clone())
            .ok_or(GroupError::UnknownMemberId)?,
        None => request.member_id.clone(),
    };
    if member_id != request.member_id {
        return Err(GroupError::FencedInstanceId);
    }
    if !group.members.contains_key(&member_id) {
        return Err(GroupError::UnknownMemberId);
    }
    if request.member_epoch == STATIC_LEAVE_EPOCH {
        let member = group.members.get_mut(&member_id).expect("checked above");
        if member.left_static() {
            // Said twice: the epoch to come back to is kept.
            return Ok(ConsumerHeartbeatResponse {
                member_id,
                member_epoch: STATIC_LEAVE_EPOCH,
                heartbeat_interval_ms: 0,
                assignment: None,
            });
        }
        // The epoch the member's next incarnation takes back (`take_over`).
        member.assignment.previous_member_epoch = member.assignment.member_epoch;
        member.assignment.member_epoch = STATIC_LEAVE_EPOCH;
        effects
            .records
            .push(records::current_assignment(&group.group_id, member));
    } else {
        group.remove_member(&member_id, config, now_ms, effects);
    }
    Ok(ConsumerHeartbeatResponse {
        member_id,
        member_epoch: request.member_epoch,
        heartbeat_interval_ms: 0,
        assignment: None,
    })
}

/// The consumer groups' part of [`GroupCoordinator::tick`]: members whose session ended or who
/// did not revoke in time are removed.
pub(super) fn expire_members(
    config: &ConsumerGroupConfig,
    groups: &mut BTreeMap<String, ConsumerGroup>,
    now_ms: i64,
    effects: &mut Effects,
) {
    for group in groups.values_mut() {
        let expired: Vec<String> = group
            .members
            .values()
            .filter(|m| {
                m.session_deadline_ms <= now_ms
                    || m.revocation_deadline_ms.is_some_and(|d| d <= now_ms)
            })
            .map(|m| m.member_id.clone())
            .collect();
        for member_id in expired {
            group.remove_member(&member_id, config, now_ms, effects);
        }
    }
}

/// The earliest deadline of any consumer group.
pub(super) fn next_deadline_ms(groups: &BTreeMap<String, ConsumerGroup>) -> Option<i64> {
    groups
        .values()
        .filter_map(ConsumerGroup::next_deadline_ms)
        .min()
}

/// Drops the offsets of consumer groups empty for longer than the retention, then those groups.
pub(super) fn expire_offsets(
    retention_ms: i64,
    groups: &mut BTreeMap<String, ConsumerGroup>,
    in_transaction: impl Fn(&str) -> bool,
    now_ms: i64,
    effects: &mut Effects,
) {
    let expired: Vec<String> = groups
        .values()
        .filter(|g| {
            g.empty_since_ms
                .is_some_and(|since| now_ms - since >= retention_ms)
                && !in_transaction(&g.group_id)
        })
        .map(|g| g.group_id.clone())
        .collect();
    for group_id in expired {
        remove_empty_group(groups, &group_id, effects);
    }
}

/// Removes an empty consumer group with its offsets, in records too.
pub(super) fn remove_empty_group(
    groups: &mut BTreeMap<String, ConsumerGroup>,
    group_id: &str,
    effects: &mut Effects,
) -> Option<ConsumerGroup> {
    let group = groups.remove(group_id)?;
    assert!(group.members.is_empty(), "only an empty group is removed");
    for partition in group.offsets.keys() {
        effects
            .records
            .push(GroupRecord::offset_tombstone(group_id, partition));
    }
    effects.records.extend(records::group_tombstones(group_id));
    Some(group)
}

/// Checks an OffsetCommit against a consumer group (the member and its epoch), as Kafka does:
/// a commit from outside the group (epoch < 0) only while the group is empty, and a member's
/// only in a version that carries its epoch.
pub(super) fn validate_commit(
    group: &ConsumerGroup,
    member_id: &str,
    member_epoch: i32,
    api_version: Option<i16>,
) -> Result<(), GroupError> {
    if member_epoch < 0 && group.members.is_empty() {
        return Ok(());
    }
    let member = group
        .members
        .get(member_id)
        .ok_or(GroupError::UnknownMemberId)?;
    // `None`: a transaction's commit (TxnOffsetCommit), which any version may make.
    if api_version
        .is_some_and(|version| version < super::offsets::OFFSET_COMMIT_MEMBER_EPOCH_VERSION)
    {
        return Err(GroupError::UnsupportedVersion);
    }
    let expected = member.assignment.member_epoch;
    match member_epoch.cmp(&expected) {
        std::cmp::Ordering::Greater => Err(GroupError::FencedMemberEpoch),
        std::cmp::Ordering::Less => Err(GroupError::StaleMemberEpoch),
        std::cmp::Ordering::Equal => Ok(()),
    }
}

/// Checks an OffsetFetch (version 9) from a member of a consumer group.
pub(super) fn validate_fetch(
    group: &ConsumerGroup,
    member_id: &str,
    member_epoch: i32,
) -> Result<(), GroupError> {
    let member = group
        .members
        .get(member_id)
        .ok_or(GroupError::UnknownMemberId)?;
    if member.assignment.member_epoch != member_epoch {
        return Err(GroupError::StaleMemberEpoch);
    }
    Ok(())
}

/// Topics the members subscribe to (OffsetDelete keeps their offsets).
pub(super) fn subscribed_topics(group: &ConsumerGroup) -> Vec<String> {
    let topics = &group.subscribed_topics;
    let names: BTreeSet<&str> = group
        .members
        .values()
        .flat_map(|member| member.subscribed_names(topics))
        .collect();
    names.into_iter().map(str::to_owned).collect()
}

/// ListGroups' entry for a consumer group.
pub(super) fn listed(group: &ConsumerGroup) -> ListedGroup {
    ListedGroup {
        group_id: group.group_id.clone(),
        protocol_type: "consumer".to_owned(),
        state: group.state(),
        consumer_protocol: true,
    }
}

/// A consumer group as the classic DescribeGroups shows it (as Kafka does): protocol type
/// "consumer", the assignor as the protocol, each member's subscription and assignment in the
/// classic consumer protocol's encodings.
pub(super) fn described(group: &ConsumerGroup, config: &ConsumerGroupConfig) -> GroupDescription {
    let members = group
        .members
        .values()
        .map(|member| {
            let topics: Vec<&str> = member
                .subscribed_names(&group.subscribed_topics)
                .into_iter()
                .collect();
            let assigned: Vec<(&str, Vec<i32>)> = member
                .assignment
                .assigned
                .iter()
                .filter_map(|(id, partitions)| {
                    Some((group.topic_name(id)?, partitions.iter().copied().collect()))
                })
                .collect();
            DescribedMember {
                member_id: member.member_id.clone(),
                group_instance_id: member.instance_id.clone(),
                client_id: member.client_id.clone(),
                client_host: member.client_host.clone(),
                metadata: records::classic_subscription(&topics),
                assignment: records::classic_assignment(&assigned),
            }
        })
        .collect();
    GroupDescription {
        group_id: group.group_id.clone(),
        state: group.state(),
        protocol_type: "consumer".to_owned(),
        protocol_name: group.assignor(config).name().to_owned(),
        members,
    }
}

/// JoinGroup to an empty consumer group turns it back into a classic group with its offsets;
/// `Err` if the group has members.
pub(super) fn downgrade_if_empty(
    consumer_groups: &mut BTreeMap<String, ConsumerGroup>,
    classic_groups: &mut BTreeMap<String, ClassicGroup>,
    group_id: &str,
    effects: &mut Effects,
) -> Result<(), GroupError> {
    let Some(group) = consumer_groups.get(group_id) else {
        return Ok(());
    };
    if !group.members.is_empty() {
        return Err(GroupError::InconsistentGroupProtocol);
    }
    let mut group = consumer_groups.remove(group_id).expect("present");
    effects.records.extend(records::group_tombstones(group_id));
    let mut classic = ClassicGroup::new(group_id.to_owned());
    classic.offsets = std::mem::take(&mut group.offsets);
    classic_groups.insert(group_id.to_owned(), classic);
    Ok(())
}

/// Deletes a consumer group (DeleteGroups); `None` if `group_id` is not one.
pub(super) fn delete(
    consumer_groups: &mut BTreeMap<String, ConsumerGroup>,
    group_id: &str,
    effects: &mut Effects,
) -> Option<Result<(), GroupError>> {
    let group = consumer_groups.get(group_id)?;
    if !group.members.is_empty() {
        return Some(Err(GroupError::NonEmptyGroup));
    }
    remove_empty_group(consumer_groups, group_id, effects);
    Some(Ok(()))
}
