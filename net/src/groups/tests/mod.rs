//! The coordinator's tests: the harness they share here, its flows one test each (`flows.rs`),
//! and a property test that drives random request sequences and checks the invariants after
//! every step and the replay at the end (`property.rs`).

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;

use super::offsets::OFFSET_COMMIT_MEMBER_EPOCH_VERSION;
use super::*;

mod flows;
mod property;
mod transactions;

const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 30_000;
const GROUP: &str = "group";

fn config() -> GroupConfig {
    GroupConfig {
        initial_rebalance_delay_ms: 0,
        offsets_retention_ms: 60_000,
        offsets_retention_check_interval_ms: 10_000,
        ..GroupConfig::default()
    }
}

/// A ConsumerProtocolSubscription v0 for `topics`.
fn subscription(topics: &[&str]) -> Bytes {
    let mut buffer = BytesMut::new();
    buffer.put_i16(0);
    buffer.put_i32(topics.len() as i32);
    for topic in topics {
        buffer.put_i16(topic.len() as i16);
        buffer.put_slice(topic.as_bytes());
    }
    buffer.put_i32(-1);
    buffer.freeze()
}

fn protocols(names: &[&str]) -> Vec<GroupProtocol> {
    names
        .iter()
        .map(|name| GroupProtocol {
            name: (*name).to_owned(),
            metadata: subscription(&["t1"]),
        })
        .collect()
}

fn join_request(client: &str, member_id: &str, instance: Option<&str>) -> JoinGroup {
    JoinGroup {
        group_id: GROUP.to_owned(),
        member_id: member_id.to_owned(),
        group_instance_id: instance.map(str::to_owned),
        client_id: client.to_owned(),
        client_host: "/127.0.0.1".to_owned(),
        session_timeout_ms: SESSION_MS,
        rebalance_timeout_ms: REBALANCE_MS,
        protocol_type: "consumer".to_owned(),
        protocols: protocols(&["range"]),
        require_known_member_id: true,
    }
}

fn tp(topic: &str, partition: i32) -> TopicPartition {
    TopicPartition {
        topic: topic.to_owned(),
        partition,
    }
}

/// The coordinator a load of `log` (every effect's batch, in order) gives back, checked.
fn replay_log(log: &[Effects], now_ms: i64) -> GroupCoordinator {
    let mut replay = LogReplay::default();
    for batch in log {
        if let Some(marker) = &batch.marker {
            replay.marker(marker);
        }
        for record in &batch.records {
            match batch.transaction {
                Some(producer) => replay.transactional(producer, record.clone()),
                None => replay.plain(record.clone()),
            }
        }
    }
    let coordinator = replay
        .replay(config(), 9, now_ms)
        .expect("the log reads back");
    coordinator.check_invariants();
    coordinator
}

/// A coordinator with a hand-moved clock that collects every effect, checking after each call
/// that the state is consistent and every ticket is answered once.
struct Harness {
    coordinator: GroupCoordinator,
    now_ms: i64,
    answers: BTreeMap<Ticket, Completion>,
    records: Vec<GroupRecord>,
    /// Every effect's batch as the log holds it, in order (what a load reads back).
    log: Vec<Effects>,
}

impl Harness {
    fn new(config: GroupConfig) -> Harness {
        Harness {
            coordinator: GroupCoordinator::new(config, 7, 0),
            now_ms: 0,
            answers: BTreeMap::new(),
            records: Vec::new(),
            log: Vec::new(),
        }
    }

    fn absorb(&mut self, effects: Effects) {
        self.log.push(Effects {
            completions: Vec::new(),
            ..effects.clone()
        });
        self.records.extend(effects.records);
        for completion in effects.completions {
            let previous = self.answers.insert(completion.ticket(), completion);
            assert!(previous.is_none(), "a ticket is answered once");
        }
        self.coordinator.check_invariants();
    }

    fn join(&mut self, request: &JoinGroup) -> JoinOutcome {
        let (outcome, effects) = self.coordinator.join_group(request, self.now_ms);
        self.absorb(effects);
        outcome
    }

    /// Joins as a new dynamic member (MEMBER_ID_REQUIRED, then again with the id).
    fn join_new(&mut self, client: &str) -> (String, Ticket) {
        let JoinOutcome::Done(response) = self.join(&join_request(client, "", None)) else {
            panic!("a new member first gets its id");
        };
        assert_eq!(response.error, Some(GroupError::MemberIdRequired));
        assert!(response.member_id.starts_with(&format!("{client}-")));
        let member_id = response.member_id;
        match self.join(&join_request(client, &member_id, None)) {
            JoinOutcome::Pending(ticket) => (member_id, ticket),
            other => panic!("expected a pending join, got {other:?}"),
        }
    }

    fn join_answer(&self, ticket: Ticket) -> JoinResponse {
        match self.answers.get(&ticket) {
            Some(Completion::Join(_, response)) => response.clone(),
            other => panic!("join {ticket:?} not answered: {other:?}"),
        }
    }

    fn sync_answer(&self, ticket: Ticket) -> SyncResponse {
        match self.answers.get(&ticket) {
            Some(Completion::Sync(_, response)) => response.clone(),
            other => panic!("sync {ticket:?} not answered: {other:?}"),
        }
    }

    fn sync(
        &mut self,
        member_id: &str,
        generation_id: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> SyncOutcome {
        let request = SyncGroup {
            group_id: GROUP.to_owned(),
            generation_id,
            member_id: member_id.to_owned(),
            group_instance_id: None,
            protocol_type: Some("consumer".to_owned()),
            protocol_name: Some("range".to_owned()),
            assignments,
        };
        let (outcome, effects) = self.coordinator.sync_group(&request, self.now_ms);
        self.absorb(effects);
        outcome
    }

    fn heartbeat(&mut self, member_id: &str, generation_id: i32) -> Result<(), GroupError> {
        let result = self
            .coordinator
            .heartbeat(GROUP, generation_id, member_id, None, self.now_ms);
        self.coordinator.check_invariants();
        result
    }

    fn leave(&mut self, member_id: &str) -> Result<(), GroupError> {
        let leaving = [LeavingMember {
            member_id: member_id.to_owned(),
            group_instance_id: None,
        }];
        let (results, effects) = self.coordinator.leave_group(GROUP, &leaving, self.now_ms);
        self.absorb(effects);
        results
            .map(|mut results| results.remove(0))
            .and_then(|result| result)
    }

    fn commit(
        &mut self,
        member_id: &str,
        generation_id: i32,
        partition: TopicPartition,
        offset: i64,
    ) -> Result<(), GroupError> {
        let request = OffsetCommit {
            api_version: OFFSET_COMMIT_MEMBER_EPOCH_VERSION,
            group_id: GROUP.to_owned(),
            generation_id,
            member_id: member_id.to_owned(),
            group_instance_id: None,
            partitions: vec![OffsetCommitPartition {
                partition,
                offset,
                leader_epoch: -1,
                metadata: Some("meta".to_owned()),
            }],
        };
        let (results, effects) = self.coordinator.commit_offsets(&request, self.now_ms);
        self.absorb(effects);
        results
            .map(|mut results| results.remove(0).1)
            .and_then(|result| result)
    }

    fn committed(&self, partition: TopicPartition) -> Option<i64> {
        let fetched = self.coordinator.fetch_offsets(GROUP, Some(&[partition]));
        fetched[0].1.as_ref().map(|committed| committed.offset)
    }

    fn tick_to(&mut self, now_ms: i64) {
        assert!(now_ms >= self.now_ms);
        self.now_ms = now_ms;
        let effects = self.coordinator.tick(now_ms);
        self.absorb(effects);
    }

    fn state(&self) -> GroupState {
        self.coordinator.describe_group(GROUP).state
    }

    /// Three members join one after the other, the leader assigns, the group is stable.
    fn stable_group_of_three(&mut self) -> (Vec<String>, i32) {
        let (a, ticket_a) = self.join_new("a");
        // Alone and with no initial delay, `a` completes a generation of its own at once.
        assert_eq!(self.join_answer(ticket_a).generation_id, 1);
        let (b, ticket_b) = self.join_new("b");
        let (c, ticket_c) = self.join_new("c");
        assert!(
            !self.answers.contains_key(&ticket_b),
            "b waits for a to rejoin"
        );
        let JoinOutcome::Pending(ticket_a) = self.join(&join_request("a", &a, None)) else {
            panic!("a rejoins into the rebalance");
        };
        let leader = self.join_answer(ticket_a);
        let generation = leader.generation_id;
        for ticket in [ticket_b, ticket_c] {
            let follower = self.join_answer(ticket);
            assert_eq!(follower.generation_id, generation);
            assert_eq!(follower.leader_id, a);
            assert!(follower.members.is_empty());
        }
        let members = vec![a, b, c];
        self.assign(&members, generation);
        (members, generation)
    }

    /// Every member syncs, the first (the leader) last with one assignment per member.
    fn assign(&mut self, members: &[String], generation: i32) {
        let mut tickets = Vec::new();
        for member in &members[1..] {
            match self.sync(member, generation, Vec::new()) {
                SyncOutcome::Pending(ticket) => tickets.push(ticket),
                other => panic!("a follower waits for the leader: {other:?}"),
            }
        }
        let assignments = members
            .iter()
            .map(|member| (member.clone(), Bytes::from(format!("assigned to {member}"))))
            .collect();
        let SyncOutcome::Done(leader) = self.sync(&members[0], generation, assignments) else {
            panic!("the leader's sync completes at once");
        };
        assert_eq!(
            leader.assignment,
            Bytes::from(format!("assigned to {}", members[0]))
        );
        for (member, ticket) in members[1..].iter().zip(tickets) {
            let answer = self.sync_answer(ticket);
            assert_eq!(answer.error, None);
            assert_eq!(
                answer.assignment,
                Bytes::from(format!("assigned to {member}"))
            );
        }
        assert_eq!(self.state(), GroupState::Stable);
    }
}
