//! The coordinator's flows, one test each, through the harness of `tests/mod.rs`.

use super::*;

#[test]
fn first_join_requires_a_member_id_then_joins() {
    let mut harness = Harness::new(config());
    let (member_id, ticket) = harness.join_new("client");
    let answer = harness.join_answer(ticket);
    assert_eq!(answer.error, None);
    assert_eq!(answer.member_id, member_id);
    assert_eq!(answer.generation_id, 1);
    assert_eq!(answer.leader_id, member_id);
    assert_eq!(answer.protocol_name.as_deref(), Some("range"));
    assert_eq!(answer.members.len(), 1);
    assert_eq!(harness.state(), GroupState::CompletingRebalance);
    harness.assign(&[member_id], 1);
    // An unknown member id on a first join is refused, not adopted.
    let JoinOutcome::Done(refused) = harness.join(&join_request("x", "made-up", None)) else {
        panic!("refused at once");
    };
    assert_eq!(refused.error, Some(GroupError::UnknownMemberId));
}

#[test]
fn three_members_within_the_initial_delay_share_one_generation() {
    let mut harness = Harness::new(GroupConfig {
        initial_rebalance_delay_ms: 3_000,
        ..config()
    });
    let (a, ticket_a) = harness.join_new("a");
    harness.tick_to(1_000);
    let (b, ticket_b) = harness.join_new("b");
    let (c, ticket_c) = harness.join_new("c");
    harness.tick_to(3_000);
    assert!(harness.answers.is_empty(), "new members extend the delay");
    assert_eq!(harness.coordinator.next_deadline_ms(), 6_000);
    harness.tick_to(6_000);
    let leader = harness.join_answer(ticket_a);
    assert_eq!(leader.generation_id, 1);
    assert_eq!(leader.leader_id, a);
    let joined: Vec<&str> = leader
        .members
        .iter()
        .map(|m| m.member_id.as_str())
        .collect();
    assert_eq!(joined, [a.as_str(), b.as_str(), c.as_str()]);
    assert!(leader
        .members
        .iter()
        .all(|m| m.metadata == subscription(&["t1"])));
    for ticket in [ticket_b, ticket_c] {
        assert_eq!(harness.join_answer(ticket).generation_id, 1);
    }
    harness.assign(&[a.clone(), b.clone(), c], 1);
    assert_eq!(harness.heartbeat(&b, 1), Ok(()));
    let description = harness.coordinator.describe_group(GROUP);
    assert_eq!(description.protocol_name, "range");
    assert_eq!(
        description.members[1].assignment,
        Bytes::from(format!("assigned to {b}"))
    );
}

#[test]
fn a_member_leaving_rebalances_the_rest() {
    let mut harness = Harness::new(config());
    let (members, generation) = harness.stable_group_of_three();
    assert_eq!(harness.leave(&members[2]), Ok(()));
    assert_eq!(harness.state(), GroupState::PreparingRebalance);
    assert_eq!(
        harness.heartbeat(&members[0], generation),
        Err(GroupError::RebalanceInProgress)
    );
    let JoinOutcome::Pending(ticket_b) = harness.join(&join_request("b", &members[1], None)) else {
        panic!("b rejoins");
    };
    let JoinOutcome::Pending(ticket_a) = harness.join(&join_request("a", &members[0], None)) else {
        panic!("a rejoins");
    };
    let leader = harness.join_answer(ticket_a);
    assert_eq!(leader.generation_id, generation + 1);
    assert_eq!(leader.members.len(), 2);
    assert_eq!(harness.join_answer(ticket_b).leader_id, members[0]);
    assert_eq!(harness.leave(&members[2]), Err(GroupError::UnknownMemberId));
}

#[test]
fn the_leader_leaving_hands_leadership_to_the_next_member() {
    let mut harness = Harness::new(config());
    let (members, generation) = harness.stable_group_of_three();
    assert_eq!(harness.leave(&members[0]), Ok(()));
    let mut tickets = Vec::new();
    for (client, member) in ["b", "c"].iter().zip(&members[1..]) {
        match harness.join(&join_request(client, member, None)) {
            JoinOutcome::Pending(ticket) => tickets.push(ticket),
            other => panic!("rejoin waits: {other:?}"),
        }
    }
    let answer = harness.join_answer(tickets[0]);
    assert_eq!(answer.generation_id, generation + 1);
    assert_eq!(answer.leader_id, members[1]);
    assert_eq!(answer.members.len(), 2);
}

#[test]
fn an_expired_session_removes_the_member_and_rebalances() {
    let mut harness = Harness::new(config());
    let (members, generation) = harness.stable_group_of_three();
    let start = harness.now_ms;
    assert_eq!(
        harness.coordinator.next_deadline_ms(),
        start + i64::from(SESSION_MS)
    );
    harness.tick_to(start + 6_000);
    assert_eq!(harness.heartbeat(&members[0], generation), Ok(()));
    assert_eq!(harness.heartbeat(&members[1], generation), Ok(()));
    // c's session ends at start + 10 s; a's and b's at start + 16 s.
    assert_eq!(harness.coordinator.next_deadline_ms(), start + 10_000);
    harness.tick_to(start + 10_000);
    assert_eq!(harness.state(), GroupState::PreparingRebalance);
    assert_eq!(
        harness.heartbeat(&members[2], generation),
        Err(GroupError::UnknownMemberId)
    );
    assert_eq!(
        harness.heartbeat(&members[0], generation),
        Err(GroupError::RebalanceInProgress)
    );
    let JoinOutcome::Pending(ticket_a) = harness.join(&join_request("a", &members[0], None)) else {
        panic!("a rejoins");
    };
    let JoinOutcome::Pending(_) = harness.join(&join_request("b", &members[1], None)) else {
        panic!("b rejoins");
    };
    let answer = harness.join_answer(ticket_a);
    assert_eq!(answer.generation_id, generation + 1);
    assert_eq!(answer.members.len(), 2);
}

#[test]
fn members_that_do_not_rejoin_are_dropped_at_the_rebalance_timeout() {
    let mut harness = Harness::new(config());
    let (members, generation) = harness.stable_group_of_three();
    let start = harness.now_ms;
    let JoinOutcome::Pending(ticket_a) = harness.join(&join_request("a", &members[0], None)) else {
        panic!("the leader's rejoin starts a rebalance");
    };
    // b and c keep heartbeating (so their sessions live) but never rejoin.
    for step in 1..6 {
        harness.tick_to(start + step * 5_000);
        for member in &members[1..] {
            assert_eq!(
                harness.heartbeat(member, generation),
                Err(GroupError::RebalanceInProgress)
            );
        }
    }
    assert!(!harness.answers.contains_key(&ticket_a));
    harness.tick_to(start + i64::from(REBALANCE_MS));
    let answer = harness.join_answer(ticket_a);
    assert_eq!(answer.generation_id, generation + 1);
    assert_eq!(answer.members.len(), 1);
    assert_eq!(
        harness.heartbeat(&members[1], generation),
        Err(GroupError::UnknownMemberId)
    );
}

#[test]
fn a_restarted_static_member_takes_its_slot_back_without_a_rebalance() {
    let mut harness = Harness::new(config());
    let JoinOutcome::Pending(ticket_a) = harness.join(&join_request("a", "", Some("instance-a")))
    else {
        panic!("a static member joins without MEMBER_ID_REQUIRED");
    };
    let a = harness.join_answer(ticket_a).member_id;
    assert!(a.starts_with("instance-a-"));
    let JoinOutcome::Pending(ticket_b) = harness.join(&join_request("b", "", Some("instance-b")))
    else {
        panic!("b joins");
    };
    let JoinOutcome::Pending(ticket_a) = harness.join(&join_request("a", &a, Some("instance-a")))
    else {
        panic!("a rejoins");
    };
    let generation = harness.join_answer(ticket_a).generation_id;
    let b = harness.join_answer(ticket_b).member_id;
    harness.assign(&[a.clone(), b.clone()], generation);

    // b restarts: a new process, no member id, same instance id and subscription.
    let JoinOutcome::Done(rejoined) = harness.join(&join_request("b", "", Some("instance-b")))
    else {
        panic!("no rebalance for a returning static member");
    };
    assert_eq!(rejoined.error, None);
    assert_eq!(rejoined.generation_id, generation);
    assert_ne!(rejoined.member_id, b);
    assert_eq!(rejoined.leader_id, a);
    assert_eq!(harness.state(), GroupState::Stable);
    let SyncOutcome::Done(assignment) = harness.sync(&rejoined.member_id, generation, Vec::new())
    else {
        panic!("a stable group answers a sync at once");
    };
    assert_eq!(
        assignment.assignment,
        Bytes::from(format!("assigned to {b}"))
    );
    // The old instance is fenced.
    let fenced =
        harness
            .coordinator
            .heartbeat(GROUP, generation, &b, Some("instance-b"), harness.now_ms);
    assert_eq!(fenced, Err(GroupError::FencedInstanceId));

    // Restarting with a different subscription does rebalance.
    let mut changed = join_request("b", "", Some("instance-b"));
    changed.protocols[0].metadata = subscription(&["t1", "t2"]);
    assert!(matches!(harness.join(&changed), JoinOutcome::Pending(_)));
    assert_eq!(harness.state(), GroupState::PreparingRebalance);
}

#[test]
fn static_members_leave_by_instance_id_and_stale_instances_are_fenced() {
    let mut harness = Harness::new(config());
    let JoinOutcome::Pending(ticket) = harness.join(&join_request("a", "", Some("instance-a")))
    else {
        panic!("a static member joins at once");
    };
    let a = harness.join_answer(ticket).member_id;
    harness.assign(std::slice::from_ref(&a), 1);
    let leave = |member_id: &str| LeavingMember {
        member_id: member_id.to_owned(),
        group_instance_id: Some("instance-a".to_owned()),
    };
    let unknown = LeavingMember {
        member_id: String::new(),
        group_instance_id: Some("instance-z".to_owned()),
    };
    let (results, effects) =
        harness
            .coordinator
            .leave_group(GROUP, &[leave("stale-id"), unknown], harness.now_ms);
    harness.absorb(effects);
    assert_eq!(
        results,
        Ok(vec![
            Err(GroupError::FencedInstanceId),
            Err(GroupError::UnknownMemberId)
        ])
    );
    assert_eq!(harness.state(), GroupState::Stable);
    // Kafka's consumer leaves by instance id alone.
    let (results, effects) = harness
        .coordinator
        .leave_group(GROUP, &[leave("")], harness.now_ms);
    harness.absorb(effects);
    assert_eq!(results, Ok(vec![Ok(())]));
    assert_eq!(harness.state(), GroupState::Empty);
    assert_eq!(harness.coordinator.generation_id(GROUP), Some(2));
    let (missing, _) = harness.coordinator.leave_group("missing", &[leave("")], 0);
    assert_eq!(missing, Err(GroupError::UnknownMemberId));
}

#[test]
fn member_ids_handed_out_count_toward_the_group_size_until_used_or_expired() {
    let mut harness = Harness::new(GroupConfig {
        group_members_max: 2,
        ..config()
    });
    let (a, _) = harness.join_new("a");
    let JoinOutcome::Done(b) = harness.join(&join_request("b", "", None)) else {
        panic!("b gets a member id");
    };
    assert_eq!(b.error, Some(GroupError::MemberIdRequired));
    let JoinOutcome::Done(full) = harness.join(&join_request("c", "", None)) else {
        panic!("refused at once");
    };
    assert_eq!(full.error, Some(GroupError::GroupMaxSizeReached));
    // b never comes back: its id lapses after its session timeout, and c fits.
    harness.tick_to(i64::from(SESSION_MS));
    assert_eq!(
        harness.heartbeat(&a, 1),
        Err(GroupError::UnknownMemberId),
        "a never synced"
    );
    let JoinOutcome::Done(c) = harness.join(&join_request("c", "", None)) else {
        panic!("c gets a member id");
    };
    assert_eq!(c.error, Some(GroupError::MemberIdRequired));
    // A member id handed out can be given back with LeaveGroup.
    let leaving = [LeavingMember {
        member_id: c.member_id,
        group_instance_id: None,
    }];
    let (results, effects) = harness
        .coordinator
        .leave_group(GROUP, &leaving, harness.now_ms);
    harness.absorb(effects);
    assert_eq!(results, Ok(vec![Ok(())]));
}

#[test]
fn stale_generations_and_unknown_members_get_kafka_errors() {
    let mut harness = Harness::new(config());
    let (members, generation) = harness.stable_group_of_three();
    assert_eq!(
        harness.heartbeat(&members[1], generation - 1),
        Err(GroupError::IllegalGeneration)
    );
    assert_eq!(
        harness.heartbeat("nobody", generation),
        Err(GroupError::UnknownMemberId)
    );
    let SyncOutcome::Done(stale) = harness.sync(&members[1], generation - 1, Vec::new()) else {
        panic!("refused at once");
    };
    assert_eq!(stale.error, Some(GroupError::IllegalGeneration));
    assert_eq!(
        harness.commit(&members[1], generation - 1, tp("t1", 0), 5),
        Err(GroupError::IllegalGeneration)
    );
    let other_group = harness
        .coordinator
        .heartbeat("other", 1, &members[0], None, 0);
    assert_eq!(other_group, Err(GroupError::UnknownMemberId));
    // A SyncGroup before any JoinGroup.
    let (outcome, _) = harness.coordinator.sync_group(
        &SyncGroup {
            group_id: "other".to_owned(),
            generation_id: 0,
            member_id: String::new(),
            group_instance_id: None,
            protocol_type: None,
            protocol_name: None,
            assignments: Vec::new(),
        },
        0,
    );
    assert_eq!(
        outcome,
        SyncOutcome::Done(SyncResponse::error(GroupError::UnknownMemberId))
    );
    // A member that speaks another protocol cannot join.
    let mut other_protocol = join_request("d", "", None);
    other_protocol.protocols = protocols(&["roundrobin"]);
    other_protocol.require_known_member_id = false;
    let JoinOutcome::Done(refused) = harness.join(&other_protocol) else {
        panic!("refused at once");
    };
    assert_eq!(refused.error, Some(GroupError::InconsistentGroupProtocol));
    let mut bad_session = join_request("d", "", None);
    bad_session.session_timeout_ms = 1;
    let JoinOutcome::Done(refused) = harness.join(&bad_session) else {
        panic!("refused at once");
    };
    assert_eq!(refused.error, Some(GroupError::InvalidSessionTimeout));
}

#[test]
fn the_protocol_most_members_prefer_wins() {
    let mut harness = Harness::new(config());
    let prefs: [&[&str]; 3] = [
        &["range", "roundrobin"],
        &["roundrobin", "range"],
        &["roundrobin"],
    ];
    let mut ids = Vec::new();
    for (index, names) in prefs.iter().enumerate() {
        let mut request = join_request(&format!("c{index}"), "", None);
        request.protocols = protocols(names);
        request.require_known_member_id = false;
        let JoinOutcome::Pending(ticket) = harness.join(&request) else {
            panic!("joins");
        };
        ids.push((ticket, request));
    }
    // c0 completed generation 1 alone; the others wait for c0 to rejoin.
    let mut rejoin = ids[0].1.clone();
    rejoin.member_id = harness.join_answer(ids[0].0).member_id;
    let JoinOutcome::Pending(ticket) = harness.join(&rejoin) else {
        panic!("rejoins");
    };
    assert_eq!(
        harness.join_answer(ticket).protocol_name.as_deref(),
        Some("roundrobin")
    );
}

#[test]
fn offsets_commit_and_fetch_checked_against_the_generation() {
    let mut harness = Harness::new(config());
    let (members, generation) = harness.stable_group_of_three();
    assert_eq!(
        harness.commit(&members[1], generation, tp("t1", 0), 42),
        Ok(())
    );
    assert_eq!(harness.committed(tp("t1", 0)), Some(42));
    assert_eq!(harness.committed(tp("t1", 1)), None);
    // A groupless consumer may not commit into a group with members.
    assert_eq!(
        harness.commit("", -1, tp("t1", 0), 7),
        Err(GroupError::UnknownMemberId)
    );
    assert_eq!(
        harness.commit("nobody", generation, tp("t1", 0), 7),
        Err(GroupError::UnknownMemberId)
    );
    // Not while the leader has not assigned yet.
    let JoinOutcome::Pending(_) = harness.join(&join_request("a", &members[0], None)) else {
        panic!("the leader rejoins");
    };
    assert_eq!(
        harness.commit(&members[1], generation, tp("t1", 0), 7),
        Ok(()),
        "allowed while preparing"
    );
    for (client, member) in ["b", "c"].iter().zip(&members[1..]) {
        let _ = harness.join(&join_request(client, member, None));
    }
    assert_eq!(harness.state(), GroupState::CompletingRebalance);
    assert_eq!(
        harness.commit(&members[1], generation + 1, tp("t1", 0), 8),
        Err(GroupError::RebalanceInProgress)
    );
    assert_eq!(harness.committed(tp("t1", 0)), Some(7));
    let too_large = OffsetCommit {
        api_version: OFFSET_COMMIT_MEMBER_EPOCH_VERSION,
        group_id: GROUP.to_owned(),
        generation_id: -1,
        member_id: String::new(),
        group_instance_id: None,
        partitions: vec![OffsetCommitPartition {
            partition: tp("t9", 0),
            offset: 1,
            leader_epoch: -1,
            metadata: Some("x".repeat(5_000)),
        }],
    };
    let (results, _) = harness.coordinator.commit_offsets(
        &OffsetCommit {
            api_version: OFFSET_COMMIT_MEMBER_EPOCH_VERSION,
            group_id: "simple".to_owned(),
            ..too_large
        },
        0,
    );
    assert_eq!(
        results,
        Ok(vec![(tp("t9", 0), Err(GroupError::OffsetMetadataTooLarge))])
    );
}

#[test]
fn offsets_of_a_group_left_empty_expire_after_the_retention() {
    let mut harness = Harness::new(config());
    let (member, ticket) = harness.join_new("a");
    let generation = harness.join_answer(ticket).generation_id;
    harness.assign(std::slice::from_ref(&member), generation);
    assert_eq!(harness.commit(&member, generation, tp("t1", 0), 10), Ok(()));
    harness.tick_to(5_000);
    assert_eq!(harness.leave(&member), Ok(()));
    assert_eq!(harness.state(), GroupState::Empty);
    // A simple commit into the empty group is allowed.
    assert_eq!(harness.commit("", -1, tp("t1", 1), 11), Ok(()));
    harness.tick_to(60_000);
    assert_eq!(
        harness.committed(tp("t1", 0)),
        Some(10),
        "empty for 55 s < 60 s"
    );
    harness.tick_to(70_000);
    assert_eq!(harness.committed(tp("t1", 0)), None);
    assert_eq!(harness.committed(tp("t1", 1)), None);
    assert_eq!(harness.state(), GroupState::Dead);
    let tombstones = harness.records.iter().filter(|r| r.value.is_none()).count();
    assert_eq!(tombstones, 3, "two offsets and the group");
}

#[test]
fn only_an_empty_group_can_be_deleted() {
    let mut harness = Harness::new(config());
    let (members, generation) = harness.stable_group_of_three();
    assert_eq!(
        harness.commit(&members[0], generation, tp("t1", 0), 1),
        Ok(())
    );
    let names = [GROUP.to_owned(), "missing".to_owned()];
    let (results, effects) = harness.coordinator.delete_groups(&names);
    assert!(effects.is_empty());
    assert_eq!(results[0].1, Err(GroupError::NonEmptyGroup));
    assert_eq!(results[1].1, Err(GroupError::GroupIdNotFound));
    for member in &members {
        assert_eq!(harness.leave(member), Ok(()));
    }
    assert_eq!(harness.state(), GroupState::Empty);
    let listed = harness.coordinator.list_groups(&[GroupState::Empty]);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].protocol_type, "consumer");
    assert_eq!(listed[0].state.name(), "Empty");
    let (results, effects) = harness.coordinator.delete_groups(&names[..1]);
    assert_eq!(results[0].1, Ok(()));
    assert_eq!(
        effects.records.len(),
        2,
        "the offset's and the group's tombstones"
    );
    assert_eq!(harness.state(), GroupState::Dead);
    assert_eq!(harness.committed(tp("t1", 0)), None);
    assert!(harness.coordinator.list_groups(&[]).is_empty());
}

#[test]
fn offsets_of_subscribed_topics_cannot_be_deleted_while_the_group_has_members() {
    let mut harness = Harness::new(config());
    let (members, generation) = harness.stable_group_of_three();
    for topic in ["t1", "t2"] {
        assert_eq!(
            harness.commit(&members[0], generation, tp(topic, 0), 3),
            Ok(())
        );
    }
    let (results, effects) = harness
        .coordinator
        .delete_offsets(GROUP, &[tp("t1", 0), tp("t2", 0)]);
    assert_eq!(
        results,
        Ok(vec![
            (tp("t1", 0), Err(GroupError::GroupSubscribedToTopic)),
            (tp("t2", 0), Ok(()))
        ])
    );
    assert_eq!(effects.records.len(), 1);
    assert_eq!(harness.committed(tp("t1", 0)), Some(3));
    assert_eq!(harness.committed(tp("t2", 0)), None);
    let (missing, _) = harness
        .coordinator
        .delete_offsets("missing", &[tp("t1", 0)]);
    assert_eq!(missing, Err(GroupError::GroupIdNotFound));
}

#[test]
fn a_leader_that_never_syncs_is_removed_and_the_followers_told_to_rejoin() {
    let mut harness = Harness::new(config());
    let (a, ticket_a) = harness.join_new("a");
    let generation = harness.join_answer(ticket_a).generation_id;
    harness.assign(std::slice::from_ref(&a), generation);
    let (b, ticket_b) = harness.join_new("b");
    let JoinOutcome::Pending(_) = harness.join(&join_request("a", &a, None)) else {
        panic!("a rejoins");
    };
    let generation = harness.join_answer(ticket_b).generation_id;
    let SyncOutcome::Pending(sync_b) = harness.sync(&b, generation, Vec::new()) else {
        panic!("b waits for the leader");
    };
    // a keeps its session alive but never sends SyncGroup.
    let start = harness.now_ms;
    harness.tick_to(start + 5_000);
    assert_eq!(harness.heartbeat(&a, generation), Ok(()));
    harness.tick_to(start + i64::from(REBALANCE_MS));
    assert_eq!(
        harness.sync_answer(sync_b).error,
        Some(GroupError::RebalanceInProgress)
    );
    assert_eq!(
        harness.heartbeat(&a, generation),
        Err(GroupError::UnknownMemberId)
    );
    let JoinOutcome::Pending(ticket) = harness.join(&join_request("b", &b, None)) else {
        panic!("b rejoins");
    };
    assert_eq!(harness.join_answer(ticket).leader_id, b);
}

#[test]
fn replay_rebuilds_stable_groups_and_offsets() {
    let mut harness = Harness::new(config());
    let (members, generation) = harness.stable_group_of_three();
    assert_eq!(
        harness.commit(&members[0], generation, tp("t1", 0), 5),
        Ok(())
    );
    assert_eq!(
        harness.commit(&members[0], generation, tp("t1", 0), 6),
        Ok(())
    );
    let replayed = GroupCoordinator::replay(config(), 8, &harness.records, harness.now_ms)
        .expect("records read back");
    assert_eq!(
        replayed.describe_group(GROUP),
        harness.coordinator.describe_group(GROUP)
    );
    assert_eq!(
        replayed.fetch_offsets(GROUP, None),
        harness.coordinator.fetch_offsets(GROUP, None)
    );
    assert_eq!(replayed.generation_id(GROUP), Some(generation));
    let mut damaged = harness.records[0].clone();
    damaged.value = damaged.value.map(|value| value.slice(..value.len() - 1));
    assert_eq!(
        GroupCoordinator::replay(config(), 8, [&damaged], 0).err(),
        Some(RecordError::Truncated)
    );
}
