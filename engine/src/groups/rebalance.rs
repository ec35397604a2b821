//! Membership and rebalancing: JoinGroup, SyncGroup, Heartbeat and LeaveGroup, and the timeouts
//! that drive a rebalance when a client does not (session, rebalance, missing SyncGroup,
//! unused member ids). Kafka's classic protocol, including KIP-345 static members (a member
//! restarting with its group.instance.id takes its slot back without a rebalance) and KIP-394
//! (a new dynamic member first gets its member id with MEMBER_ID_REQUIRED).

use bytes::Bytes;

use super::group::{ClassicGroup, GroupProtocol, GroupState, InitialDelay, Member, PendingMember};
use super::{Completion, Effects, GroupConfig, GroupCoordinator, GroupError, GroupRecord, Ticket};

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
            GroupState::Empty | GroupState::Dead => Err(GroupError::UnknownMemberId),
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
            GroupState::Empty | GroupState::Dead => Err(GroupError::UnknownMemberId),
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

/// The context of one call: configuration, time, and where its effects go.
struct Flow<'a> {
    config: &'a GroupConfig,
    now_ms: i64,
    effects: &'a mut Effects,
}

impl Flow<'_> {
    fn join_known(
        &mut self,
        group: &mut ClassicGroup,
        ids: &mut super::IdSource,
        request: &JoinGroup,
    ) -> Result<JoinOutcome, GroupError> {
        if let Some(position) = group
            .pending_members
            .iter()
            .position(|pending| pending.member_id == request.member_id)
        {
            group.pending_members.remove(position);
            let ticket = ids.ticket();
            self.add_member_and_rebalance(group, request.member_id.clone(), ticket, request);
            return Ok(JoinOutcome::Pending(ticket));
        }
        let index = validate_member(
            group,
            &request.member_id,
            request.group_instance_id.as_deref(),
        )?;
        let unchanged = group.members[index].protocols == request.protocols;
        let rejoin_needed = match group.state {
            GroupState::Empty | GroupState::Dead => return Err(GroupError::UnknownMemberId),
            GroupState::PreparingRebalance => true,
            GroupState::CompletingRebalance => !unchanged,
            // The leader's rejoin means it wants a new assignment.
            GroupState::Stable => !unchanged || group.is_leader(&request.member_id),
        };
        if !rejoin_needed {
            return Ok(JoinOutcome::Done(
                self.generation_response(group, index, false),
            ));
        }
        let ticket = ids.ticket();
        self.update_member(group, index, ticket, request);
        self.rebalance(group);
        Ok(JoinOutcome::Pending(ticket))
    }

    /// A static member restarted (new member id, same group.instance.id): it takes over the old
    /// member's slot, fencing the old instance. In a stable group whose protocol and this
    /// member's subscription stay the same, it gets the current generation back, no rebalance.
    fn rejoin_static(
        &mut self,
        group: &mut ClassicGroup,
        ids: &mut super::IdSource,
        index: usize,
        request: &JoinGroup,
    ) -> JoinOutcome {
        let instance = request
            .group_instance_id
            .as_deref()
            .expect("only a static member rejoins by instance id");
        let new_id = ids.member_id(instance);
        let old_id = group.members[index].member_id.clone();
        let selected = group.protocol_name.clone();
        let metadata_before = selected
            .as_deref()
            .and_then(|name| group.members[index].metadata(name).cloned());
        let member = &mut group.members[index];
        if let Some(ticket) = member.pending_join.take() {
            self.answer_join(
                ticket,
                JoinResponse::error(GroupError::FencedInstanceId, old_id.clone()),
            );
        }
        if let Some(ticket) = member.pending_sync.take() {
            self.answer_sync(ticket, SyncResponse::error(GroupError::FencedInstanceId));
        }
        member.member_id = new_id.clone();
        member.client_id = request.client_id.clone();
        member.client_host = request.client_host.clone();
        member.protocols = request.protocols.clone();
        member.session_timeout_ms = request.session_timeout_ms;
        member.rebalance_timeout_ms = rebalance_timeout_ms(request);
        member.session_deadline_ms = self.now_ms + i64::from(request.session_timeout_ms);
        if group.is_leader(&old_id) {
            group.leader_id = Some(new_id.clone());
        }
        for id in &mut group.awaiting_sync {
            if *id == old_id {
                *id = new_id.clone();
            }
        }
        if group.state == GroupState::Stable {
            let metadata_after = selected
                .as_deref()
                .and_then(|name| group.members[index].metadata(name).cloned());
            if group.select_protocol() == selected && metadata_after == metadata_before {
                self.effects
                    .records
                    .push(GroupRecord::group_metadata(group));
                let is_leader = group.is_leader(&new_id);
                return JoinOutcome::Done(self.generation_response(group, index, is_leader));
            }
        }
        let ticket = ids.ticket();
        group.members[index].pending_join = Some(ticket);
        self.rebalance(group);
        JoinOutcome::Pending(ticket)
    }

    fn add_member_and_rebalance(
        &mut self,
        group: &mut ClassicGroup,
        member_id: String,
        ticket: Ticket,
        request: &JoinGroup,
    ) {
        if group.members.is_empty() {
            group.protocol_type = Some(request.protocol_type.clone());
        }
        if group.state == GroupState::PreparingRebalance && group.generation_id == 0 {
            if let Some(delay) = &mut group.initial_delay {
                delay.new_member_added = true;
            }
        }
        group.add_member(Member {
            member_id,
            group_instance_id: request.group_instance_id.clone(),
            client_id: request.client_id.clone(),
            client_host: request.client_host.clone(),
            rebalance_timeout_ms: rebalance_timeout_ms(request),
            session_timeout_ms: request.session_timeout_ms,
            protocols: request.protocols.clone(),
            assignment: None,
            session_deadline_ms: self.now_ms + i64::from(request.session_timeout_ms),
            pending_join: Some(ticket),
            pending_sync: None,
        });
        self.rebalance(group);
    }

    fn update_member(
        &mut self,
        group: &mut ClassicGroup,
        index: usize,
        ticket: Ticket,
        request: &JoinGroup,
    ) {
        let member = &mut group.members[index];
        member.protocols = request.protocols.clone();
        member.session_timeout_ms = request.session_timeout_ms;
        member.rebalance_timeout_ms = rebalance_timeout_ms(request);
        if let Some(previous) = member.pending_join.replace(ticket) {
            let member_id = member.member_id.clone();
            self.answer_join(
                previous,
                JoinResponse::error(GroupError::RebalanceInProgress, member_id),
            );
        }
    }

    /// Starts a join phase, or, if one is under way, completes it if everyone is in.
    fn rebalance(&mut self, group: &mut ClassicGroup) {
        if group.state == GroupState::PreparingRebalance {
            self.try_complete_join(group);
        } else {
            self.prepare_rebalance(group);
        }
    }

    fn prepare_rebalance(&mut self, group: &mut ClassicGroup) {
        assert_ne!(group.state, GroupState::PreparingRebalance);
        if group.state == GroupState::CompletingRebalance {
            for member in &mut group.members {
                member.assignment = None;
                if let Some(ticket) = member.pending_sync.take() {
                    // The session was on hold while the request waited; it restarts now.
                    member.session_deadline_ms = self.now_ms + i64::from(member.session_timeout_ms);
                    self.answer_sync(ticket, SyncResponse::error(GroupError::RebalanceInProgress));
                }
            }
        }
        group.awaiting_sync.clear();
        group.sync_deadline_ms = None;
        let rebalance_timeout_ms = group.rebalance_timeout_ms();
        let initial_delay_ms = self.config.initial_rebalance_delay_ms;
        if group.state == GroupState::Empty && initial_delay_ms > 0 {
            group.initial_delay = Some(InitialDelay {
                remaining_ms: (rebalance_timeout_ms - initial_delay_ms).max(0),
                new_member_added: false,
            });
            group.join_deadline_ms = Some(self.now_ms + initial_delay_ms);
        } else {
            group.join_deadline_ms = Some(self.now_ms + rebalance_timeout_ms);
        }
        group.transition(GroupState::PreparingRebalance, self.now_ms);
        self.try_complete_join(group);
    }

    fn try_complete_join(&mut self, group: &mut ClassicGroup) {
        if group.state == GroupState::PreparingRebalance
            && group.initial_delay.is_none()
            && group.all_members_joined()
        {
            self.complete_join(group);
        }
    }

    /// Ends the join phase: members that did not rejoin are dropped, the generation moves on,
    /// and every waiting JoinGroup is answered (the leader's with every member's metadata).
    fn complete_join(&mut self, group: &mut ClassicGroup) {
        assert_eq!(group.state, GroupState::PreparingRebalance);
        group.join_deadline_ms = None;
        group.initial_delay = None;
        let mut index = 0;
        while index < group.members.len() {
            if group.members[index].pending_join.is_some() {
                index += 1;
            } else {
                let member = group.remove_member(index);
                assert!(member.pending_sync.is_none());
            }
        }
        group.generation_id += 1;
        if group.members.is_empty() {
            group.protocol_name = None;
            group.transition(GroupState::Empty, self.now_ms);
            self.effects
                .records
                .push(GroupRecord::group_metadata(group));
            return;
        }
        group.protocol_name = Some(
            group
                .select_protocol()
                .expect("members share a protocol: every join checked it"),
        );
        group.transition(GroupState::CompletingRebalance, self.now_ms);
        group.awaiting_sync = group.members.iter().map(|m| m.member_id.clone()).collect();
        group.sync_deadline_ms = Some(self.now_ms + group.rebalance_timeout_ms());
        for index in 0..group.members.len() {
            let ticket = group.members[index]
                .pending_join
                .take()
                .expect("every remaining member rejoined");
            let response = self.generation_response(group, index, false);
            self.answer_join(ticket, response);
        }
    }

    /// The leader's assignment arrived: the group is stable and every waiting SyncGroup is
    /// answered.
    fn complete_sync(&mut self, group: &mut ClassicGroup, assignments: &[(String, Bytes)]) {
        assert_eq!(group.state, GroupState::CompletingRebalance);
        for member in &mut group.members {
            let assignment = assignments
                .iter()
                .find(|(member_id, _)| *member_id == member.member_id)
                .map(|(_, assignment)| assignment.clone())
                .unwrap_or_default();
            member.assignment = Some(assignment);
        }
        group.transition(GroupState::Stable, self.now_ms);
        self.effects
            .records
            .push(GroupRecord::group_metadata(group));
        for index in 0..group.members.len() {
            let member = &mut group.members[index];
            member.session_deadline_ms = self.now_ms + i64::from(member.session_timeout_ms);
            if let Some(ticket) = member.pending_sync.take() {
                let assignment = member.assignment.clone().unwrap_or_default();
                let response = SyncResponse::assigned(group, assignment);
                self.answer_sync(ticket, response);
            }
        }
    }

    fn leave(
        &mut self,
        group: &mut ClassicGroup,
        leaving: &LeavingMember,
    ) -> Result<(), GroupError> {
        let index = match &leaving.group_instance_id {
            Some(instance) => {
                let index = group
                    .member_index_by_instance(instance)
                    .ok_or(GroupError::UnknownMemberId)?;
                if !leaving.member_id.is_empty()
                    && group.members[index].member_id != leaving.member_id
                {
                    return Err(GroupError::FencedInstanceId);
                }
                index
            }
            None => {
                if let Some(position) = group
                    .pending_members
                    .iter()
                    .position(|pending| pending.member_id == leaving.member_id)
                {
                    group.pending_members.remove(position);
                    self.try_complete_join(group);
                    return Ok(());
                }
                group
                    .member_index(&leaving.member_id)
                    .ok_or(GroupError::UnknownMemberId)?
            }
        };
        self.remove_member_and_rebalance(group, index);
        Ok(())
    }

    fn remove_member_and_rebalance(&mut self, group: &mut ClassicGroup, index: usize) {
        let member = group.remove_member(index);
        if let Some(ticket) = member.pending_join {
            self.answer_join(
                ticket,
                JoinResponse::error(GroupError::UnknownMemberId, member.member_id),
            );
        }
        if let Some(ticket) = member.pending_sync {
            self.answer_sync(ticket, SyncResponse::error(GroupError::UnknownMemberId));
        }
        match group.state {
            GroupState::Stable
            | GroupState::CompletingRebalance
            | GroupState::PreparingRebalance => {
                self.rebalance(group);
            }
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// Fires one due timeout; false if none is due.
    fn expire_one(&mut self, group: &mut ClassicGroup) -> bool {
        let now_ms = self.now_ms;
        if group
            .join_deadline_ms
            .is_some_and(|deadline| deadline <= now_ms)
        {
            match &mut group.initial_delay {
                Some(delay) if delay.new_member_added && delay.remaining_ms > 0 => {
                    let delay_ms = self
                        .config
                        .initial_rebalance_delay_ms
                        .min(delay.remaining_ms);
                    delay.remaining_ms = (delay.remaining_ms - delay_ms).max(0);
                    delay.new_member_added = false;
                    group.join_deadline_ms = Some(now_ms + delay_ms);
                }
                _ => self.complete_join(group),
            }
            return true;
        }
        if group
            .sync_deadline_ms
            .is_some_and(|deadline| deadline <= now_ms)
        {
            // The members that never sent SyncGroup are gone (typically the leader).
            let missing = std::mem::take(&mut group.awaiting_sync);
            group.sync_deadline_ms = None;
            for member_id in missing {
                if let Some(index) = group.member_index(&member_id) {
                    self.remove_member_and_rebalance(group, index);
                }
            }
            return true;
        }
        if let Some(index) = group
            .members
            .iter()
            .position(|m| m.session_deadline_active_ms().is_some_and(|d| d <= now_ms))
        {
            self.remove_member_and_rebalance(group, index);
            return true;
        }
        if let Some(position) = group
            .pending_members
            .iter()
            .position(|pending| pending.deadline_ms <= now_ms)
        {
            group.pending_members.remove(position);
            self.try_complete_join(group);
            return true;
        }
        false
    }

    /// The current generation as a JoinGroup answer for one member.
    fn generation_response(
        &mut self,
        group: &mut ClassicGroup,
        index: usize,
        skip_assignment: bool,
    ) -> JoinResponse {
        let member = &mut group.members[index];
        member.session_deadline_ms = self.now_ms + i64::from(member.session_timeout_ms);
        let member_id = member.member_id.clone();
        let members = if group.is_leader(&member_id) {
            let protocol = group.protocol_name.as_deref().unwrap_or_default();
            group
                .members
                .iter()
                .map(|m| JoinedMember {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    metadata: m.metadata(protocol).cloned().unwrap_or_default(),
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResponse {
            error: None,
            member_id,
            generation_id: group.generation_id,
            protocol_type: group.protocol_type.clone(),
            protocol_name: group.protocol_name.clone(),
            leader_id: group.leader_id.clone().unwrap_or_default(),
            skip_assignment,
            members,
        }
    }

    fn answer_join(&mut self, ticket: Ticket, response: JoinResponse) {
        self.effects
            .completions
            .push(Completion::Join(ticket, response));
    }

    fn answer_sync(&mut self, ticket: Ticket, response: SyncResponse) {
        self.effects
            .completions
            .push(Completion::Sync(ticket, response));
    }
}

fn rebalance_timeout_ms(request: &JoinGroup) -> i32 {
    if request.rebalance_timeout_ms > 0 {
        request.rebalance_timeout_ms
    } else {
        request.session_timeout_ms
    }
}
