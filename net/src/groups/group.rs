//! One classic consumer group: its members, its state and generation, the protocol its members
//! agreed on, and its committed offsets. The bookkeeping every flow relies on lives here (who
//! is leader, which protocol wins the vote, whether everyone has rejoined); the flows
//! themselves are in `rebalance.rs` and `offsets.rs`.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::Ticket;

/// A classic group's state, as Kafka names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupState {
    /// No members; the group may still hold committed offsets.
    Empty,
    /// Waiting for every known member to (re)join, until the rebalance timeout.
    PreparingRebalance,
    /// Joined; waiting for the leader's assignment (SyncGroup).
    CompletingRebalance,
    /// Every member has its assignment.
    Stable,
    /// A consumer-protocol group whose target assignment is being computed.
    Assigning,
    /// A consumer-protocol group whose members are moving to their target assignment.
    Reconciling,
    /// The group does not exist (deleted, expired or never created).
    Dead,
}

impl GroupState {
    /// The name Kafka reports in ListGroups and DescribeGroups.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Assigning => "Assigning",
            GroupState::Reconciling => "Reconciling",
            GroupState::Dead => "Dead",
        }
    }
}

/// One protocol a member supports (e.g. "range", "cooperative-sticky") with its opaque
/// subscription metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupProtocol {
    pub name: String,
    pub metadata: Bytes,
}

/// A (topic, partition) whose offset a group commits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

/// A committed offset as OffsetFetch returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    /// -1 when the consumer did not send one.
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub protocols: Vec<GroupProtocol>,
    /// Set by the leader's SyncGroup; `None` from a rebalance's start until then.
    pub assignment: Option<Bytes>,
    /// When the member is removed unless it heartbeats; not checked while a JoinGroup or
    /// SyncGroup of the member is pending (the rebalance and sync deadlines bound those).
    pub session_deadline_ms: i64,
    pub pending_join: Option<Ticket>,
    pub pending_sync: Option<Ticket>,
}

impl Member {
    pub fn metadata(&self, protocol_name: &str) -> Option<&Bytes> {
        self.protocols
            .iter()
            .find(|protocol| protocol.name == protocol_name)
            .map(|protocol| &protocol.metadata)
    }

    /// The deadline of the member's session, unless a pending request keeps it alive.
    pub fn session_deadline_active_ms(&self) -> Option<i64> {
        (self.pending_join.is_none() && self.pending_sync.is_none())
            .then_some(self.session_deadline_ms)
    }
}

/// A member id handed out with MEMBER_ID_REQUIRED, reserved until the member joins with it or
/// its session timeout passes (KIP-394).
#[derive(Debug, Clone)]
pub(crate) struct PendingMember {
    pub member_id: String,
    pub deadline_ms: i64,
}

/// The stretching join phase of a group that was empty (group.initial.rebalance.delay.ms):
/// each new member buys another delay, up to the rebalance timeout.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InitialDelay {
    pub remaining_ms: i64,
    pub new_member_added: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct ClassicGroup {
    pub group_id: String,
    pub state: GroupState,
    /// When the group entered its state; the offsets of an empty group with a protocol type
    /// age from here. `None` for a group only ever used for simple commits.
    pub state_since_ms: Option<i64>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader_id: Option<String>,
    /// In join order: the first is elected leader when the leader goes.
    pub members: Vec<Member>,
    pub pending_members: Vec<PendingMember>,
    /// Set exactly while PreparingRebalance.
    pub join_deadline_ms: Option<i64>,
    pub initial_delay: Option<InitialDelay>,
    /// Members that have not sent SyncGroup since the join phase completed; removed at
    /// `sync_deadline_ms`.
    pub awaiting_sync: Vec<String>,
    pub sync_deadline_ms: Option<i64>,
    pub offsets: BTreeMap<TopicPartition, CommittedOffset>,
}

impl ClassicGroup {
    pub fn new(group_id: String) -> ClassicGroup {
        ClassicGroup {
            group_id,
            state: GroupState::Empty,
            state_since_ms: None,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader_id: None,
            members: Vec::new(),
            pending_members: Vec::new(),
            join_deadline_ms: None,
            initial_delay: None,
            awaiting_sync: Vec::new(),
            sync_deadline_ms: None,
            offsets: BTreeMap::new(),
        }
    }

    pub fn transition(&mut self, state: GroupState, now_ms: i64) {
        self.state = state;
        self.state_since_ms = Some(now_ms);
    }

    pub fn member_index(&self, member_id: &str) -> Option<usize> {
        self.members.iter().position(|m| m.member_id == member_id)
    }

    pub fn member_index_by_instance(&self, group_instance_id: &str) -> Option<usize> {
        self.members
            .iter()
            .position(|m| m.group_instance_id.as_deref() == Some(group_instance_id))
    }

    pub fn is_leader(&self, member_id: &str) -> bool {
        self.leader_id.as_deref() == Some(member_id)
    }

    pub fn size(&self) -> usize {
        self.members.len() + self.pending_members.len()
    }

    pub fn add_member(&mut self, member: Member) {
        assert!(self.member_index(&member.member_id).is_none());
        if self.leader_id.is_none() {
            self.leader_id = Some(member.member_id.clone());
        }
        self.members.push(member);
    }

    /// Removes the member and elects the first remaining one if it was the leader.
    pub fn remove_member(&mut self, index: usize) -> Member {
        let member = self.members.remove(index);
        self.mark_synced(&member.member_id);
        if self.is_leader(&member.member_id) {
            self.leader_id = self.members.first().map(|m| m.member_id.clone());
        }
        member
    }

    /// Whether a member with these protocols may be in the group: the same protocol type, and
    /// at least one protocol every current member supports.
    pub fn supports(&self, protocol_type: &str, protocols: &[GroupProtocol]) -> bool {
        if protocol_type.is_empty() || protocols.is_empty() {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols.iter().any(|protocol| {
                self.members
                    .iter()
                    .all(|m| m.metadata(&protocol.name).is_some())
            })
    }

    /// The protocol for the next generation, chosen as Kafka does: among the protocols every
    /// member supports, each member votes for the first in its own preference order, and the
    /// most votes win (ties go to the earlier in the leader's preference order).
    pub fn select_protocol(&self) -> Option<String> {
        let first = self.members.first()?;
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|p| p.name.as_str())
            .filter(|name| self.members.iter().all(|m| m.metadata(name).is_some()))
            .collect();
        let mut votes = vec![0usize; candidates.len()];
        for member in &self.members {
            let vote = member
                .protocols
                .iter()
                .find_map(|p| candidates.iter().position(|c| *c == p.name));
            if let Some(index) = vote {
                votes[index] += 1;
            }
        }
        let leader_order = self
            .leader_id
            .as_deref()
            .and_then(|id| self.member_index(id))
            .map_or(first, |index| &self.members[index]);
        let rank = |name: &str| {
            leader_order
                .protocols
                .iter()
                .position(|p| p.name == name)
                .unwrap_or(usize::MAX)
        };
        (0..candidates.len())
            .max_by(|&a, &b| {
                votes[a]
                    .cmp(&votes[b])
                    .then(rank(candidates[b]).cmp(&rank(candidates[a])))
            })
            .map(|index| candidates[index].to_owned())
    }

    /// The longest rebalance timeout among the members: how long a join phase waits.
    pub fn rebalance_timeout_ms(&self) -> i64 {
        self.members
            .iter()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0)
    }

    /// The member sent its SyncGroup for this generation.
    pub fn mark_synced(&mut self, member_id: &str) {
        self.awaiting_sync.retain(|id| id != member_id);
        if self.awaiting_sync.is_empty() {
            self.sync_deadline_ms = None;
        }
    }

    pub fn all_members_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.iter().all(|m| m.pending_join.is_some())
    }

    /// The earliest moment something of this group expires.
    pub fn next_deadline_ms(&self) -> Option<i64> {
        let members = self
            .members
            .iter()
            .filter_map(Member::session_deadline_active_ms);
        let pending = self.pending_members.iter().map(|p| p.deadline_ms);
        members
            .chain(pending)
            .chain(self.join_deadline_ms)
            .chain(self.sync_deadline_ms)
            .min()
    }

    /// Panics if the group's bookkeeping contradicts itself.
    pub fn check_invariants(&self) {
        let state = self.state;
        assert_ne!(state, GroupState::Dead, "dead groups are not kept");
        assert!(
            !matches!(state, GroupState::Assigning | GroupState::Reconciling),
            "the consumer protocol's states"
        );
        assert!(self.generation_id >= 0);
        assert_eq!(self.members.is_empty(), self.leader_id.is_none());
        if let Some(leader) = &self.leader_id {
            assert!(
                self.member_index(leader).is_some(),
                "the leader is a member"
            );
        }
        if state == GroupState::Empty {
            assert!(self.members.is_empty());
        }
        if matches!(state, GroupState::CompletingRebalance | GroupState::Stable) {
            assert!(!self.members.is_empty());
            assert!(self.protocol_name.is_some());
        }
        assert_eq!(
            self.join_deadline_ms.is_some(),
            state == GroupState::PreparingRebalance
        );
        assert!(self.initial_delay.is_none() || state == GroupState::PreparingRebalance);
        for (index, member) in self.members.iter().enumerate() {
            assert!(self.members[..index]
                .iter()
                .all(|m| m.member_id != member.member_id));
            if let Some(instance) = &member.group_instance_id {
                assert!(self.members[..index]
                    .iter()
                    .all(|m| m.group_instance_id.as_ref() != Some(instance)));
            }
            assert!(member.pending_join.is_none() || state == GroupState::PreparingRebalance);
            assert!(member.pending_sync.is_none() || state == GroupState::CompletingRebalance);
            if state == GroupState::Stable {
                assert!(
                    member.assignment.is_some(),
                    "a stable group's members are assigned"
                );
            }
        }
        for id in &self.awaiting_sync {
            assert!(self.member_index(id).is_some());
        }
        assert_eq!(
            self.awaiting_sync.is_empty(),
            self.sync_deadline_ms.is_none()
        );
    }
}
