//! The consumer protocol's state machine driven as librdkafka drives it: flows one test each,
//! the assignors, the records' replay, and a property test of random runs that checks after
//! every step that no partition is ever held by two members, and at the end that the replay of
//! the run's records gives back the same groups.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use crate::groups::offsets::OFFSET_COMMIT_MEMBER_EPOCH_VERSION;
use crate::groups::{
    GroupConfig, GroupProtocol, JoinGroup, JoinOutcome, OffsetCommit, OffsetCommitPartition,
    TopicPartition,
};

const GROUP: &str = "orders";
const SESSION_MS: i32 = 10_000;
const TOPIC_A: TopicId = [1; 16];
const TOPIC_B: TopicId = [2; 16];

fn config() -> GroupConfig {
    GroupConfig {
        consumer: ConsumerGroupConfig {
            session_timeout_ms: SESSION_MS,
            heartbeat_interval_ms: 1_000,
            ..ConsumerGroupConfig::default()
        },
        ..GroupConfig::default()
    }
}

/// Topics `a` (4 partitions) and `b` (3).
struct Topics;

impl TopicSource for Topics {
    fn topic(&self, name: &str) -> Option<SubscribedTopic> {
        lookup(name)
    }

    fn names(&self) -> Vec<&str> {
        vec!["a", "b"]
    }
}

fn lookup(name: &str) -> Option<SubscribedTopic> {
    match name {
        "a" => Some(SubscribedTopic {
            id: TOPIC_A,
            name: "a".into(),
            partitions: 4,
        }),
        "b" => Some(SubscribedTopic {
            id: TOPIC_B,
            name: "b".into(),
            partitions: 3,
        }),
        _ => None,
    }
}

/// A member as librdkafka runs one: it remembers its epoch and owns what it was last given
/// (revoking and taking partitions at once), and reports what it owns on every heartbeat.
#[derive(Debug, Clone)]
struct Client {
    member_id: String,
    instance_id: Option<String>,
    epoch: i32,
    owned: Assignment,
    subscription: Vec<String>,
    assignor: Option<String>,
}

impl Client {
    fn new(member_id: &str, subscription: &[&str]) -> Client {
        Client {
            member_id: member_id.to_owned(),
            instance_id: None,
            epoch: 0,
            owned: Assignment::new(),
            subscription: subscription.iter().map(|s| (*s).to_owned()).collect(),
            assignor: None,
        }
    }

    fn request(&self) -> ConsumerHeartbeat {
        ConsumerHeartbeat {
            group_id: GROUP.to_owned(),
            member_id: self.member_id.clone(),
            member_epoch: self.epoch,
            instance_id: self.instance_id.clone(),
            rebalance_timeout_ms: 30_000,
            subscribed_topic_names: Some(self.subscription.clone()),
            server_assignor: self.assignor.clone(),
            owned: Some(self.owned.clone()),
            client_id: "client".to_owned(),
            client_host: "/127.0.0.1".to_owned(),
            ..ConsumerHeartbeat::default()
        }
    }

    fn heartbeat(
        &mut self,
        coordinator: &mut GroupCoordinator,
        now_ms: i64,
        records: &mut Vec<GroupRecord>,
    ) -> Result<ConsumerHeartbeatResponse, GroupError> {
        let (result, effects) = coordinator.consumer_heartbeat(&self.request(), &Topics, now_ms);
        records.extend(effects.records);
        coordinator.check_invariants();
        match &result {
            Ok(response) => {
                self.epoch = response.member_epoch;
                if let Some(assignment) = &response.assignment {
                    self.owned = assignment.clone();
                }
            }
            Err(GroupError::FencedMemberEpoch | GroupError::UnknownMemberId) => {
                self.epoch = 0;
                self.owned.clear();
            }
            Err(_) => {}
        }
        result
    }

    fn leave(
        &mut self,
        coordinator: &mut GroupCoordinator,
        now_ms: i64,
        records: &mut Vec<GroupRecord>,
    ) {
        let mut request = self.request();
        request.member_epoch = if self.instance_id.is_some() {
            STATIC_LEAVE_EPOCH
        } else {
            LEAVE_EPOCH
        };
        let (_, effects) = coordinator.consumer_heartbeat(&request, &Topics, now_ms);
        records.extend(effects.records);
        coordinator.check_invariants();
        self.epoch = 0;
        self.owned.clear();
    }

    fn count(&self) -> usize {
        self.owned.values().map(BTreeSet::len).sum()
    }
}

fn coordinator() -> GroupCoordinator {
    GroupCoordinator::new(config(), 7, 0)
}

/// Heartbeats every client in turn until nothing changes; returns the rounds it took.
fn settle(
    clients: &mut [Client],
    coordinator: &mut GroupCoordinator,
    now_ms: i64,
    records: &mut Vec<GroupRecord>,
) -> usize {
    for round in 0..10 {
        let before: Vec<(i32, Assignment)> =
            clients.iter().map(|c| (c.epoch, c.owned.clone())).collect();
        for client in clients.iter_mut() {
            match client.heartbeat(coordinator, now_ms, records) {
                // A member removed meanwhile rejoins on its next heartbeat.
                Ok(_)
                | Err(
                    GroupError::UnknownMemberId
                    | GroupError::FencedMemberEpoch
                    | GroupError::UnreleasedInstanceId,
                ) => {}
                Err(error) => panic!("a well-behaved member is refused: {error}: {client:?}"),
            }
        }
        let after: Vec<(i32, Assignment)> =
            clients.iter().map(|c| (c.epoch, c.owned.clone())).collect();
        if before == after {
            return round;
        }
    }
    panic!("the group does not settle");
}

#[test]
fn two_members_share_a_topic_and_the_first_revokes_before_the_second_gets_them() {
    let mut coordinator = coordinator();
    let mut records = Vec::new();
    let mut first = Client::new("m1", &["a"]);
    let answer = first.heartbeat(&mut coordinator, 0, &mut records).unwrap();
    assert_eq!(answer.member_epoch, 1);
    assert_eq!(first.count(), 4);
    let mut second = Client::new("m2", &["a"]);
    let answer = second
        .heartbeat(&mut coordinator, 10, &mut records)
        .unwrap();
    // Its target's partitions are still the first member's: it waits, at the new epoch.
    assert_eq!(answer.member_epoch, 2);
    assert_eq!(second.count(), 0);
    let answer = first.heartbeat(&mut coordinator, 20, &mut records).unwrap();
    assert_eq!(answer.member_epoch, 1, "revoking keeps the old epoch");
    assert_eq!(first.count(), 2);
    let answer = first.heartbeat(&mut coordinator, 30, &mut records).unwrap();
    assert_eq!(answer.member_epoch, 2);
    second
        .heartbeat(&mut coordinator, 40, &mut records)
        .unwrap();
    assert_eq!(second.count(), 2);
    let description = coordinator.describe_consumer_group(GROUP).unwrap();
    assert_eq!(description.state, GroupState::Stable);
    assert_eq!(description.assignor_name, "uniform");
}

#[test]
fn a_member_that_leaves_or_dies_leaves_its_partitions_to_the_others() {
    let mut coordinator = coordinator();
    let mut records = Vec::new();
    let mut clients = vec![
        Client::new("m1", &["a"]),
        Client::new("m2", &["a"]),
        Client::new("m3", &["a"]),
    ];
    settle(&mut clients, &mut coordinator, 0, &mut records);
    assert_eq!(clients.iter().map(Client::count).sum::<usize>(), 4);
    let mut leaving = clients.pop().unwrap();
    leaving.leave(&mut coordinator, 100, &mut records);
    settle(&mut clients, &mut coordinator, 200, &mut records);
    assert_eq!(
        clients.iter().map(Client::count).collect::<Vec<_>>(),
        [2, 2]
    );
    // The second stops heartbeating: after its session it is removed.
    let effects = coordinator.tick(200 + i64::from(SESSION_MS) - 1);
    assert!(effects.records.is_empty());
    clients[0]
        .heartbeat(&mut coordinator, 5_000, &mut records)
        .unwrap();
    let effects = coordinator.tick(200 + i64::from(SESSION_MS));
    records.extend(effects.records);
    coordinator.check_invariants();
    clients.truncate(1);
    settle(&mut clients, &mut coordinator, 11_000, &mut records);
    assert_eq!(clients[0].count(), 4);
}

#[test]
fn a_lost_answer_is_retried_with_the_previous_epoch_and_a_newer_epoch_is_fenced() {
    let mut coordinator = coordinator();
    let mut records = Vec::new();
    let mut member = Client::new("m1", &["a"]);
    member.heartbeat(&mut coordinator, 0, &mut records).unwrap();
    let mut other = Client::new("m2", &["b"]);
    other.heartbeat(&mut coordinator, 0, &mut records).unwrap();
    // m1 moves to epoch 2 (nothing to revoke: m2 subscribes to another topic) ...
    let before = member.clone();
    member.heartbeat(&mut coordinator, 1, &mut records).unwrap();
    assert_eq!(member.epoch, 2);
    // ... but the answer is lost: the retry with epoch 1 is accepted.
    let mut retry = before;
    assert_eq!(
        retry
            .heartbeat(&mut coordinator, 2, &mut records)
            .unwrap()
            .member_epoch,
        2
    );
    let mut ahead = member.clone();
    ahead.epoch = 9;
    assert_eq!(
        ahead.heartbeat(&mut coordinator, 3, &mut records),
        Err(GroupError::FencedMemberEpoch)
    );
}

#[test]
fn offset_commits_are_checked_against_the_member_epoch() {
    let mut coordinator = coordinator();
    let mut records = Vec::new();
    let mut member = Client::new("m1", &["a"]);
    member.heartbeat(&mut coordinator, 0, &mut records).unwrap();
    let commit = |epoch: i32, member_id: &str| OffsetCommit {
        api_version: OFFSET_COMMIT_MEMBER_EPOCH_VERSION,
        group_id: GROUP.to_owned(),
        generation_id: epoch,
        member_id: member_id.to_owned(),
        group_instance_id: None,
        partitions: vec![OffsetCommitPartition {
            partition: TopicPartition {
                topic: "a".into(),
                partition: 0,
            },
            offset: 42,
            leader_epoch: -1,
            metadata: None,
        }],
    };
    let (results, _) = coordinator.commit_offsets(&commit(1, "m1"), 1);
    assert!(results.unwrap()[0].1.is_ok());
    let before_member_epochs = OffsetCommit {
        api_version: OFFSET_COMMIT_MEMBER_EPOCH_VERSION - 1,
        ..commit(1, "m1")
    };
    let (results, _) = coordinator.commit_offsets(&before_member_epochs, 1);
    assert_eq!(results.unwrap_err(), GroupError::UnsupportedVersion);
    let unknown_group = |api_version| OffsetCommit {
        api_version,
        group_id: "no-such-group".to_owned(),
        ..commit(1, "m1")
    };
    let (results, _) =
        coordinator.commit_offsets(&unknown_group(OFFSET_COMMIT_MEMBER_EPOCH_VERSION), 1);
    assert_eq!(results.unwrap_err(), GroupError::GroupIdNotFound);
    let (results, _) =
        coordinator.commit_offsets(&unknown_group(OFFSET_COMMIT_MEMBER_EPOCH_VERSION - 1), 1);
    assert_eq!(results.unwrap_err(), GroupError::IllegalGeneration);
    let (results, _) = coordinator.commit_offsets(&commit(0, "m1"), 1);
    assert_eq!(results.unwrap_err(), GroupError::StaleMemberEpoch);
    let (results, _) = coordinator.commit_offsets(&commit(1, "nobody"), 1);
    assert_eq!(results.unwrap_err(), GroupError::UnknownMemberId);
    let (results, _) = coordinator.commit_offsets(&commit(-1, ""), 1);
    assert_eq!(
        results.unwrap_err(),
        GroupError::UnknownMemberId,
        "the group has members"
    );
    assert_eq!(
        coordinator.check_fetching_member(GROUP, "m1", 0),
        Err(GroupError::StaleMemberEpoch)
    );
    assert_eq!(coordinator.check_fetching_member(GROUP, "m1", 1), Ok(()));
    let fetched = coordinator.fetch_offsets(GROUP, None);
    assert_eq!(fetched[0].1.as_ref().unwrap().offset, 42);
}

#[test]
fn a_group_id_has_one_protocol() {
    let mut coordinator = coordinator();
    let mut records = Vec::new();
    // An empty classic group with offsets becomes a consumer group and keeps them.
    let simple = OffsetCommit {
        api_version: OFFSET_COMMIT_MEMBER_EPOCH_VERSION,
        group_id: GROUP.to_owned(),
        generation_id: -1,
        member_id: String::new(),
        group_instance_id: None,
        partitions: vec![OffsetCommitPartition {
            partition: TopicPartition {
                topic: "a".into(),
                partition: 1,
            },
            offset: 7,
            leader_epoch: -1,
            metadata: None,
        }],
    };
    let (results, _) = coordinator.commit_offsets(&simple, 0);
    results.unwrap();
    let mut member = Client::new("m1", &["a"]);
    member.heartbeat(&mut coordinator, 1, &mut records).unwrap();
    assert_eq!(
        coordinator.fetch_offsets(GROUP, None)[0]
            .1
            .as_ref()
            .unwrap()
            .offset,
        7
    );
    let listed = coordinator.list_groups(&[]);
    assert!(listed[0].consumer_protocol);
    // A classic member cannot join it while it has members.
    let join = JoinGroup {
        group_id: GROUP.to_owned(),
        member_id: String::new(),
        group_instance_id: None,
        client_id: "classic".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 10_000,
        protocol_type: "consumer".into(),
        protocols: vec![GroupProtocol {
            name: "range".into(),
            metadata: Default::default(),
        }],
        require_known_member_id: false,
    };
    let (outcome, _) = coordinator.join_group(&join, 2);
    let JoinOutcome::Done(response) = outcome else {
        panic!("refused at once")
    };
    assert_eq!(response.error, Some(GroupError::InconsistentGroupProtocol));
    // Once empty, a classic JoinGroup turns it back into a classic group, offsets and all.
    member.leave(&mut coordinator, 3, &mut records);
    let (outcome, _) = coordinator.join_group(&join, 4);
    assert!(matches!(
        outcome,
        JoinOutcome::Done(_) | JoinOutcome::Pending(_)
    ));
    assert!(!coordinator.list_groups(&[])[0].consumer_protocol);
    assert_eq!(
        coordinator.fetch_offsets(GROUP, None)[0]
            .1
            .as_ref()
            .unwrap()
            .offset,
        7
    );
    coordinator.check_invariants();
}

#[test]
fn a_static_member_that_comes_back_under_a_new_id_keeps_its_partitions() {
    let mut coordinator = coordinator();
    let mut records = Vec::new();
    let mut member = Client::new("m1", &["a"]);
    member.instance_id = Some("host-1".into());
    member.heartbeat(&mut coordinator, 0, &mut records).unwrap();
    let owned = member.owned.clone();
    member.leave(&mut coordinator, 1, &mut records);
    let mut back = Client::new("m1-again", &["a"]);
    back.instance_id = Some("host-1".into());
    let answer = back.heartbeat(&mut coordinator, 2, &mut records).unwrap();
    assert_eq!(answer.member_epoch, 1);
    assert_eq!(back.owned, owned);
    let mut intruder = Client::new("m3", &["a"]);
    intruder.instance_id = Some("host-1".into());
    assert_eq!(
        intruder.heartbeat(&mut coordinator, 3, &mut records),
        Err(GroupError::UnreleasedInstanceId)
    );
}

#[test]
fn range_gives_contiguous_ranges_and_uniform_balances() {
    let subscriptions: BTreeMap<String, BTreeSet<TopicId>> = ["m1", "m2", "m3"]
        .iter()
        .map(|id| ((*id).to_owned(), [TOPIC_A, TOPIC_B].into_iter().collect()))
        .collect();
    let counts = [(TOPIC_A, 4), (TOPIC_B, 3)].into_iter().collect();
    let range = AssignorKind::Range.assign(&subscriptions, &counts, &BTreeMap::new());
    assert_eq!(range["m1"][&TOPIC_A], [0, 1].into_iter().collect());
    assert_eq!(range["m2"][&TOPIC_A], [2].into_iter().collect());
    assert_eq!(range["m3"][&TOPIC_B], [2].into_iter().collect());
    let uniform = AssignorKind::Uniform.assign(&subscriptions, &counts, &BTreeMap::new());
    let sizes: Vec<usize> = uniform
        .values()
        .map(|a| a.values().map(BTreeSet::len).sum())
        .collect();
    assert_eq!(sizes.iter().sum::<usize>(), 7);
    assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
    // Sticky: with a member gone, the others keep what they had.
    let mut fewer = subscriptions.clone();
    fewer.remove("m3");
    let next = AssignorKind::Uniform.assign(&fewer, &counts, &uniform);
    for member in ["m1", "m2"] {
        assert!(reconcile::is_subset(&uniform[member], &next[member]));
    }
}

#[test]
fn a_server_assignor_named_by_the_members_is_used_and_an_unknown_one_refused() {
    let mut coordinator = coordinator();
    let mut records = Vec::new();
    let mut member = Client::new("m1", &["a"]);
    member.assignor = Some("range".into());
    member.heartbeat(&mut coordinator, 0, &mut records).unwrap();
    assert_eq!(
        coordinator
            .describe_consumer_group(GROUP)
            .unwrap()
            .assignor_name,
        "range"
    );
    let mut odd = Client::new("m2", &["a"]);
    odd.assignor = Some("sticky".into());
    assert_eq!(
        odd.heartbeat(&mut coordinator, 0, &mut records),
        Err(GroupError::UnsupportedAssignor)
    );
}

/// Replays `records` and checks the consumer groups come back as they are in `live`.
fn assert_replays(live: &GroupCoordinator, records: &[GroupRecord]) {
    let replayed = GroupCoordinator::replay(config(), 1, records, 0).expect("the records replay");
    let strip = |coordinator: &GroupCoordinator| -> BTreeMap<String, ConsumerGroup> {
        coordinator
            .consumer_groups
            .iter()
            .map(|(id, group)| {
                let mut group = group.clone();
                group.empty_since_ms = group.empty_since_ms.map(|_| 0);
                for member in group.members.values_mut() {
                    member.session_deadline_ms = 0;
                    member.revocation_deadline_ms = member.revocation_deadline_ms.map(|_| 0);
                }
                (id.clone(), group)
            })
            .collect()
    };
    assert_eq!(strip(&replayed), strip(live));
}

#[test]
fn the_records_replay_to_the_same_groups() {
    let mut coordinator = coordinator();
    let mut records = Vec::new();
    let mut clients = vec![Client::new("m1", &["a", "b"]), Client::new("m2", &["a"])];
    clients[1].instance_id = Some("host-2".into());
    clients[0]
        .heartbeat(&mut coordinator, 0, &mut records)
        .unwrap();
    clients[1]
        .heartbeat(&mut coordinator, 0, &mut records)
        .unwrap();
    assert_replays(&coordinator, &records);
    settle(&mut clients, &mut coordinator, 0, &mut records);
    assert_replays(&coordinator, &records);
    clients[1].leave(&mut coordinator, 0, &mut records);
    assert_replays(&coordinator, &records);
}

#[derive(Debug, Clone)]
enum Step {
    Heartbeat {
        client: usize,
    },
    /// A heartbeat whose answer is lost.
    LostAnswer {
        client: usize,
    },
    Leave {
        client: usize,
    },
    /// The process restarts: it rejoins with epoch 0, owning nothing (the static member under
    /// a new member id, as librdkafka makes a new one per process).
    Restart {
        client: usize,
    },
    Subscribe {
        client: usize,
        topics: u8,
    },
    Tick {
        advance_ms: i64,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let client = 0..4usize;
    prop_oneof![
        8 => client.clone().prop_map(|client| Step::Heartbeat { client }),
        1 => client.clone().prop_map(|client| Step::LostAnswer { client }),
        1 => client.clone().prop_map(|client| Step::Leave { client }),
        1 => client.clone().prop_map(|client| Step::Restart { client }),
        1 => (client, 1..4u8).prop_map(|(client, topics)| Step::Subscribe { client, topics }),
        2 => (0..8_000i64).prop_map(|advance_ms| Step::Tick { advance_ms }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// No partition is ever held by two members (checked by `check_invariants` after every
    /// step), every member that keeps heartbeating ends with its share, and the records replay
    /// to the same groups.
    #[test]
    fn random_runs_never_hand_out_a_partition_twice(steps in prop::collection::vec(step(), 1..80)) {
        let mut coordinator = coordinator();
        let mut records = Vec::new();
        let mut clients: Vec<Client> = (0..4).map(|i| {
            let mut client = Client::new(&format!("m{i}"), &["a"]);
            if i == 3 {
                client.instance_id = Some("static".into());
            }
            client
        }).collect();
        let mut now_ms = 0;
        let mut restarts = 0;
        for step in steps {
            match step {
                Step::Heartbeat { client } => {
                    let _ = clients[client].heartbeat(&mut coordinator, now_ms, &mut records);
                }
                Step::LostAnswer { client } => {
                    let mut copy = clients[client].clone();
                    let _ = copy.heartbeat(&mut coordinator, now_ms, &mut records);
                }
                Step::Leave { client } => clients[client].leave(&mut coordinator, now_ms, &mut records),
                Step::Restart { client } => {
                    clients[client].epoch = 0;
                    clients[client].owned.clear();
                    if clients[client].instance_id.is_some() {
                        restarts += 1;
                        clients[client].member_id = format!("static-{restarts}");
                    }
                }
                Step::Subscribe { client, topics } => {
                    clients[client].subscription = match topics {
                        1 => vec!["a".into()],
                        2 => vec!["b".into()],
                        _ => vec!["a".into(), "b".into()],
                    };
                }
                Step::Tick { advance_ms } => {
                    now_ms += advance_ms;
                    records.extend(coordinator.tick(now_ms).records);
                    coordinator.check_invariants();
                }
            }
        }
        assert_replays(&coordinator, &records);
        // Everyone heartbeats on, once a static member's old slot has expired: the group
        // settles with every partition handed out.
        for client in &mut clients {
            client.subscription = vec!["a".into()];
        }
        now_ms += i64::from(SESSION_MS);
        records.extend(coordinator.tick(now_ms).records);
        let rounds = settle(&mut clients, &mut coordinator, now_ms, &mut records);
        prop_assert!(rounds < 10);
        prop_assert_eq!(clients.iter().map(Client::count).sum::<usize>(), 4);
        let description = coordinator.describe_consumer_group(GROUP).unwrap();
        prop_assert_eq!(description.state, GroupState::Stable);
        assert_replays(&coordinator, &records);
    }
}

#[test]
fn a_member_that_does_not_revoke_within_its_rebalance_timeout_is_removed() {
    let mut coordinator = coordinator();
    let mut records = Vec::new();
    let mut first = Client::new("m1", &["a"]);
    first.heartbeat(&mut coordinator, 0, &mut records).unwrap();
    let mut second = Client::new("m2", &["a"]);
    second.heartbeat(&mut coordinator, 0, &mut records).unwrap();
    // m1 hears it must revoke, then keeps heartbeating as if it still owned everything.
    let (answer, _) = coordinator.consumer_heartbeat(&first.request(), &Topics, 1);
    assert_eq!(
        answer.unwrap().assignment.map(|a| a[&TOPIC_A].len()),
        Some(2)
    );
    let stubborn = first.request();
    for now_ms in (4_000..30_000).step_by(4_000) {
        let (answer, _) = coordinator.consumer_heartbeat(&stubborn, &Topics, now_ms);
        assert_eq!(answer.unwrap().member_epoch, 1);
        second
            .heartbeat(&mut coordinator, now_ms, &mut records)
            .unwrap();
        assert_eq!(second.count(), 0, "m2 waits for m1 to revoke");
    }
    // Its rebalance timeout (30 s) passes while its session is kept alive.
    let effects = coordinator.tick(30_001);
    assert!(!effects.records.is_empty());
    coordinator.check_invariants();
    let (answer, _) = coordinator.consumer_heartbeat(&stubborn, &Topics, 30_002);
    assert_eq!(answer, Err(GroupError::UnknownMemberId));
    second
        .heartbeat(&mut coordinator, 30_003, &mut records)
        .unwrap();
    assert_eq!(second.count(), 4);
}

#[test]
fn an_empty_consumer_group_is_deleted_with_its_offsets_and_a_subscribed_topic_keeps_them() {
    let mut coordinator = coordinator();
    let mut records = Vec::new();
    let mut member = Client::new("m1", &["a"]);
    member.heartbeat(&mut coordinator, 0, &mut records).unwrap();
    let commit = OffsetCommit {
        api_version: OFFSET_COMMIT_MEMBER_EPOCH_VERSION,
        group_id: GROUP.to_owned(),
        generation_id: 1,
        member_id: "m1".to_owned(),
        group_instance_id: None,
        partitions: [("a", 0), ("b", 0)]
            .into_iter()
            .map(|(topic, partition)| OffsetCommitPartition {
                partition: TopicPartition {
                    topic: topic.into(),
                    partition,
                },
                offset: 5,
                leader_epoch: -1,
                metadata: None,
            })
            .collect(),
    };
    let (results, _) = coordinator.commit_offsets(&commit, 1);
    results.unwrap();
    let a0 = TopicPartition {
        topic: "a".into(),
        partition: 0,
    };
    let b0 = TopicPartition {
        topic: "b".into(),
        partition: 0,
    };
    let (results, _) = coordinator.delete_offsets(GROUP, &[a0.clone(), b0]);
    let results = results.unwrap();
    assert_eq!(results[0].1, Err(GroupError::GroupSubscribedToTopic));
    assert_eq!(results[1].1, Ok(()));
    let (results, _) = coordinator.delete_groups(&[GROUP.to_owned()]);
    assert_eq!(results[0].1, Err(GroupError::NonEmptyGroup));
    member.leave(&mut coordinator, 2, &mut records);
    let (results, effects) = coordinator.delete_groups(&[GROUP.to_owned()]);
    assert_eq!(results[0].1, Ok(()));
    assert!(coordinator.list_groups(&[]).is_empty());
    assert_eq!(coordinator.fetch_offsets(GROUP, Some(&[a0]))[0].1, None);
    records.extend(effects.records);
    let replayed = GroupCoordinator::replay(config(), 1, &records, 3).unwrap();
    assert!(
        replayed.list_groups(&[]).is_empty(),
        "the tombstones delete the group"
    );
}

#[test]
fn records_are_in_kafkas_byte_layout() {
    let mut group = ConsumerGroup::new("g".to_owned(), 0);
    group.group_epoch = 5;
    let record = records::group_metadata(&group);
    assert_eq!(&record.key[..], b"\x00\x03\x00\x01g");
    // Value version 0, the epoch, no tagged fields.
    assert_eq!(&record.value.unwrap()[..], b"\x00\x00\x00\x00\x00\x05\x00");
    let mut member = ConsumerMember::new("m".to_owned(), 0, SESSION_MS);
    member.assignment.member_epoch = 2;
    member.assignment.previous_member_epoch = 1;
    member.assignment.assigned = [(TOPIC_A, [0, 1].into_iter().collect())]
        .into_iter()
        .collect();
    let record = records::current_assignment("g", &member);
    assert_eq!(&record.key[..], b"\x00\x08\x00\x01g\x00\x01m");
    let mut value = b"\x00\x00\x00\x00\x00\x02\x00\x00\x00\x01\x00\x02".to_vec();
    value.extend_from_slice(&TOPIC_A);
    // Two partitions (compact length 3), the topic's tags, no pending revocations, the tags.
    value.extend_from_slice(b"\x03\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01\x00");
    assert_eq!(&record.value.unwrap()[..], &value[..]);
}

#[test]
fn a_regular_expression_subscription_follows_the_topics_it_matches() {
    let mut coordinator = coordinator();
    let mut records = Vec::new();
    let mut by_name = Client::new("m1", &["a"]);
    by_name
        .heartbeat(&mut coordinator, 0, &mut records)
        .unwrap();
    let mut by_regex = Client::new("m2", &[]);
    let mut request = by_regex.request();
    request.subscribed_topic_regex = Some("(^[ab])".to_owned());
    let (answer, effects) = coordinator.consumer_heartbeat(&request, &Topics, 1);
    records.extend(effects.records);
    by_regex.epoch = answer.unwrap().member_epoch;
    let description = coordinator.describe_consumer_group(GROUP).unwrap();
    let regex_member = &description.members[1];
    assert_eq!(
        regex_member.subscribed_topic_regex.as_deref(),
        Some("(^[ab])")
    );
    let targeted: BTreeSet<&str> = regex_member
        .target_assignment
        .iter()
        .map(|(_, name, _)| name.as_str())
        .collect();
    assert!(
        targeted.contains("b"),
        "b is matched only by m2's expression: {targeted:?}"
    );
    assert_replays(&coordinator, &records);
    let mut bad = Client::new("m3", &[]);
    let mut request = bad.request();
    request.subscribed_topic_regex = Some("(unclosed".to_owned());
    bad.epoch = 0;
    let (answer, _) = coordinator.consumer_heartbeat(&request, &Topics, 2);
    assert_eq!(answer, Err(GroupError::InvalidRegularExpression));
}
