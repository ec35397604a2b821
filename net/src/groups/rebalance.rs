//! A group's rebalance, as clients drive it: JoinGroup, SyncGroup, Heartbeat and LeaveGroup, and
//! the timeouts that drive a rebalance when a client does not (session, rebalance, missing SyncGroup,
//! unused member ids). Kafka's classic protocol, including KIP-345 static members (a member
//! restarting with its group.instance.id takes its slot back without a rebalance) and KIP-394
//! (a new dynamic member first gets its member id with MEMBER_ID_REQUIRED).

mod transitions;

use bytes::Bytes;

use super::group::{ClassicGroup, GroupProtocol, GroupState, PendingMember};
use super::{consumer, Effects, GroupConfig, GroupCoordinator, GroupError, Ticket};
use transitions::Flow;

/// A JoinGroup request.
#[derive(Debug, Clone)]
pub struct JoinGroup {
    pub group_id: String,
    /// Empty for a member joining for the first time.
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    /// Not positive (JoinGroup v0): the session timeout is used.
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<GroupProtocol>,
    /// JoinGroup v4 and later: a new dynamic member first gets MEMBER_ID_REQUIRED.
    pub require_known_member_id: bool,
}

/// A JoinGroup answer, shaped as Kafka's response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResponse {
    pub error: Option<GroupError>,
    pub member_id: String,
    /// -1 with an error.
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader_id: String,
    /// KIP-814: a static leader rejoining a stable group gets the members but must not
    /// compute a new assignment.
    pub skip_assignment: bool,
    /// Every member with its metadata for the chosen protocol, for the leader only.
    pub members: Vec<JoinedMember>,
}

impl JoinResponse {
    /// A refusal of the join with `error`.
    pub fn error(error: GroupError, member_id: String) -> JoinResponse {
        JoinResponse {
            error: Some(error),
            member_id,
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader_id: String::new(),
            skip_assignment: false,
            members: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinOutcome {
    Done(JoinResponse),
    /// Answered in a later (or the same) [`Effects`] when the join phase completes.
    Pending(Ticket),
}

/// A SyncGroup request; only the leader's carries assignments.
#[derive(Debug, Clone)]
pub struct SyncGroup {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    /// SyncGroup v5 and later; checked against the group's when given.
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResponse {
    pub error: Option<GroupError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResponse {
    /// A refusal of the sync with `error`.
    pub fn error(error: GroupError) -> SyncResponse {
        SyncResponse {
            error: Some(error),
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }

    fn assigned(group: &ClassicGroup, assignment: Bytes) -> SyncResponse {
        SyncResponse {
            error: None,
            protocol_type: group.protocol_type.clone(),
            protocol_name: group.protocol_name.clone(),
            assignment,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncOutcome {
    Done(SyncResponse),
    /// Answered when the leader's SyncGroup arrives or the group rebalances.
    Pending(Ticket),
}

/// LeaveGroup's answer: one result per leaving member, or one error for the whole request.
pub type LeaveResults = Result<Vec<Result<(), GroupError>>, GroupError>;

/// One member of a LeaveGroup request (v3 and later leave several at once).
#[derive(Debug, Clone)]
pub struct LeavingMember {
    /// May be empty for a static member named by its instance id.
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

impl GroupCoordinator {
    /// JoinGroup.
    pub fn join_group(&mut self, request: &JoinGroup, now_ms: i64) -> (JoinOutcome, Effects) {
        let mut effects = Effects::default();
        let outcome = self
            .join(request, now_ms, &mut effects)
            .unwrap_or_else(|error| {
                JoinOutcome::Done(JoinResponse::error(error, request.member_id.clone()))
            });
        (outcome, effects)
    }

    fn join(
        &mut self,
        request: &JoinGroup,
        now_ms: i64,
        effects: &mut Effects,
    ) -> Result<JoinOutcome, GroupError> {
        if request.group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        consumer::downgrade_if_empty(
            &mut self.consumer_groups,
            &mut self.groups,
            &request.group_id,
            effects,
        )?;
        let config = &self.config;
        if !(config.session_timeout_ms_min..=config.session_timeout_ms_max)
            .contains(&request.session_timeout_ms)
        {
            return Err(GroupError::InvalidSessionTimeout);
        }
        if !self.groups.contains_key(&request.group_id) {
            if !request.member_id.is_empty() {
                return Err(GroupError::UnknownMemberId);
            }
            if request.protocol_type.is_empty() || request.protocols.is_empty() {
                return Err(GroupError::InconsistentGroupProtocol);
            }
        }
        let group = self
            .groups
            .entry(request.group_id.clone())
            .or_insert_with(|| ClassicGroup::new(request.group_id.clone()));
        if !group.supports(&request.protocol_type, &request.protocols) {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        let mut flow = Flow {
            config,
            now_ms,
            effects,
        };
        let ids = &mut self.ids;
        if !request.member_id.is_empty() {
            return flow.join_known(group, ids, request);
        }
        if let Some(instance) = &request.group_instance_id {
            if let Some(index) = group.member_index_by_instance(instance) {
                return Ok(flow.rejoin_static(group, ids, index, request));
            }
        }
        if group.size() >= config.group_members_max {
            return Err(GroupError::GroupMaxSizeReached);
        }
        let prefix = request
            .group_instance_id
            .as_deref()
            .unwrap_or(&request.client_id);
        let member_id = ids.member_id(prefix);
        if request.require_known_member_id && request.group_instance_id.is_none() {
            group.pending_members.push(PendingMember {
                member_id: member_id.clone(),
                deadline_ms: now_ms + i64::from(request.session_timeout_ms),
            });
            return Ok(JoinOutcome::Done(JoinResponse::error(
                GroupError::MemberIdRequired,
                member_id,
            )));
        }
        let ticket = ids.ticket();
        flow.add_member_and_rebalance(group, member_id, ticket, request);
        Ok(JoinOutcome::Pending(ticket))
    }

    /// SyncGroup.
    pub fn sync_group(&mut self, request: &SyncGroup, now_ms: i64) -> (SyncOutcome, Effects) {
        let mut effects = Effects::default();
        let outcome = self
            .sync(request, now_ms, &mut effects)
            .unwrap_or_else(|error| SyncOutcome::Done(SyncResponse::error(error)));
        (outcome, effects)
    }

    fn sync(
        &mut self,
        request: &SyncGroup,
        now_ms: i64,
        effects: &mut Effects,
    ) -> Result<SyncOutcome, GroupError> {
        let group = self
            .groups
            .get_mut(&request.group_id)
            .ok_or(GroupError::UnknownMemberId)?;
        let index = validate_member(
            group,
            &request.member_id,
            request.group_instance_id.as_deref(),
        )?;
        if request.generation_id != group.generation_id {
            return Err(GroupError::IllegalGeneration);
        }
        let mismatch = |given: &Option<String>, group_has: &Option<String>| {
            given.is_some() && given != group_has
        };
        if mismatch(&request.protocol_type, &group.protocol_type)
            || mismatch(&request.protocol_name, &group.protocol_name)
        {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        let session_deadline_ms = now_ms + i64::from(group.members[index].session_timeout_ms);
        match group.state {
            GroupState::Empty
            | GroupState::Dead
            | GroupState::Assigning
            | GroupState::Reconciling => Err(GroupError::UnknownMemberId),
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            GroupState::Stable => {
                group.mark_synced(&request.member_id);
                let member = &mut group.members[index];
                member.session_deadline_ms = session_deadline_ms;
                let assignment = member.assignment.clone().unwrap_or_default();
                Ok(SyncOutcome::Done(SyncResponse::assigned(group, assignment)))
            }
            GroupState::CompletingRebalance => {
                group.mark_synced(&request.member_id);
                let mut flow = Flow {
                    config: &self.config,
                    now_ms,
                    effects,
                };
                if group.is_leader(&request.member_id) {
                    flow.complete_sync(group, &request.assignments);
                    let assignment = group.members[index].assignment.clone().unwrap_or_default();
                    return Ok(SyncOutcome::Done(SyncResponse::assigned(group, assignment)));
                }
                let ticket = self.ids.ticket();
                let previous = group.members[index].pending_sync.replace(ticket);
                if let Some(previous) = previous {
                    flow.answer_sync(
                        previous,
                        SyncResponse::error(GroupError::RebalanceInProgress),
                    );
                }
                Ok(SyncOutcome::Pending(ticket))
            }
        }
    }

    /// Heartbeat: keeps the member's session alive and tells it whether to rejoin.
    pub fn heartbeat(
        &mut self,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
        now_ms: i64,
    ) -> Result<(), GroupError> {
        let group = self
            .groups
            .get_mut(group_id)
            .ok_or(GroupError::UnknownMemberId)?;
        let index = validate_member(group, member_id, group_instance_id)?;
        if generation_id != group.generation_id {
            return Err(GroupError::IllegalGeneration);
        }
        let member = &mut group.members[index];
        member.session_deadline_ms = now_ms + i64::from(member.session_timeout_ms);
        match group.state {
            GroupState::Empty
            | GroupState::Dead
            | GroupState::Assigning
            | GroupState::Reconciling => Err(GroupError::UnknownMemberId),
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            GroupState::CompletingRebalance | GroupState::Stable => Ok(()),
        }
    }

    /// LeaveGroup: the group-level result, and one result per leaving member.
    pub fn leave_group(
        &mut self,
        group_id: &str,
        leaving: &[LeavingMember],
        now_ms: i64,
    ) -> (LeaveResults, Effects) {
        let mut effects = Effects::default();
        let Some(group) = self.groups.get_mut(group_id) else {
            return (Err(GroupError::UnknownMemberId), effects);
        };
        let mut flow = Flow {
            config: &self.config,
            now_ms,
            effects: &mut effects,
        };
        let results = leaving
            .iter()
            .map(|member| flow.leave(group, member))
            .collect();
        (Ok(results), effects)
    }
}

/// Fires the group's timeouts due at `now_ms`.
pub(super) fn expire(
    config: &GroupConfig,
    group: &mut ClassicGroup,
    now_ms: i64,
    effects: &mut Effects,
) {
    let mut flow = Flow {
        config,
        now_ms,
        effects,
    };
    // Each step removes a member or a member id, or moves the group to a later phase; the
    // bound makes a bookkeeping bug loud instead of a hung shard.
    let steps_max = 4 * group.size() + 8;
    for _ in 0..steps_max {
        if !flow.expire_one(group) {
            return;
        }
    }
    panic!(
        "group {} still has expired deadlines after {steps_max} steps",
        group.group_id
    );
}

/// Finds the member a request names, checking a static member's instance id (a request from
/// an instance whose slot another member id has taken is fenced).
pub(super) fn validate_member(
    group: &ClassicGroup,
    member_id: &str,
    group_instance_id: Option<&str>,
) -> Result<usize, GroupError> {
    match group_instance_id {
        Some(instance) => match group.member_index_by_instance(instance) {
            Some(index) if group.members[index].member_id == member_id => Ok(index),
            Some(_) => Err(GroupError::FencedInstanceId),
            None => Err(GroupError::UnknownMemberId),
        },
        None => group
            .member_index(member_id)
            .ok_or(GroupError::UnknownMemberId),
    }
}
