//! How a group moves through a rebalance, one call at a time: members joining (new, known, a
//! static member's restart), the join phase completing with a generation and a leader, the
//! leader's assignment completing the sync phase, members leaving, and the timeouts that remove
//! members or move the group on when clients do not. The entry points of `rebalance.rs` check a
//! request and hand the state change to a [`Flow`], which records what the change means for the
//! log (records) and for waiting requests (answers) in the call's `Effects`.

use bytes::Bytes;

use super::{
    validate_member, JoinGroup, JoinOutcome, JoinResponse, JoinedMember, LeavingMember,
    SyncResponse,
};
use crate::groups::group::{ClassicGroup, GroupState, InitialDelay, Member};
use crate::groups::{Completion, Effects, GroupConfig, GroupError, GroupRecord, IdSource, Ticket};

/// The context of one call: configuration, time, and where its effects go.
pub(super) struct Flow<'a> {
    pub(super) config: &'a GroupConfig,
    pub(super) now_ms: i64,
    pub(super) effects: &'a mut Effects,
}

impl Flow<'_> {
    pub(super) fn join_known(
        &mut self,
        group: &mut ClassicGroup,
        ids: &mut IdSource,
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
            GroupState::Empty
            | GroupState::Dead
            | GroupState::Assigning
            | GroupState::Reconciling => return Err(GroupError::UnknownMemberId),
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
    pub(super) fn rejoin_static(
        &mut self,
        group: &mut ClassicGroup,
        ids: &mut IdSource,
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

    pub(super) fn add_member_and_rebalance(
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

    pub(super) fn update_member(
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
    pub(super) fn rebalance(&mut self, group: &mut ClassicGroup) {
        if group.state == GroupState::PreparingRebalance {
            self.try_complete_join(group);
        } else {
            self.prepare_rebalance(group);
        }
    }

    pub(super) fn prepare_rebalance(&mut self, group: &mut ClassicGroup) {
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

    pub(super) fn try_complete_join(&mut self, group: &mut ClassicGroup) {
        if group.state == GroupState::PreparingRebalance
            && group.initial_delay.is_none()
            && group.all_members_joined()
        {
            self.complete_join(group);
        }
    }

    /// Ends the join phase: members that did not rejoin are dropped, the generation moves on,
    /// and every waiting JoinGroup is answered (the leader's with every member's metadata).
    pub(super) fn complete_join(&mut self, group: &mut ClassicGroup) {
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
    pub(super) fn complete_sync(
        &mut self,
        group: &mut ClassicGroup,
        assignments: &[(String, Bytes)],
    ) {
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

    pub(super) fn leave(
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

    pub(super) fn remove_member_and_rebalance(&mut self, group: &mut ClassicGroup, index: usize) {
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
            GroupState::Empty
            | GroupState::Dead
            | GroupState::Assigning
            | GroupState::Reconciling => {}
        }
    }

    /// Fires one due timeout; false if none is due.
    pub(super) fn expire_one(&mut self, group: &mut ClassicGroup) -> bool {
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
    pub(super) fn generation_response(
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

    pub(super) fn answer_join(&mut self, ticket: Ticket, response: JoinResponse) {
        self.effects
            .completions
            .push(Completion::Join(ticket, response));
    }

    pub(super) fn answer_sync(&mut self, ticket: Ticket, response: SyncResponse) {
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
