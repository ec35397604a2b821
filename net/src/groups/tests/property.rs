//! Random request sequences from well-behaved and misbehaving clients, and transactions
//! committing offsets beside them: the invariants after every step, and the load of the run's
//! log at the end.

use super::*;

const CLIENTS: usize = 4;

/// One step of a random run: a client's request, or time passing.
#[derive(Debug, Clone)]
enum Step {
    Join {
        client: usize,
        protocol: usize,
    },
    Sync {
        client: usize,
    },
    Heartbeat {
        client: usize,
    },
    Leave {
        client: usize,
    },
    Commit {
        client: usize,
        partition: i32,
        offset: i64,
    },
    SimpleCommit {
        partition: i32,
        offset: i64,
    },
    /// The client's process restarts: it forgets its member id (a static member comes back
    /// by its instance id); its requests still waiting are answered to nobody.
    Restart {
        client: usize,
    },
    Tick {
        advance_ms: i64,
    },
    DeleteGroup,
    /// A producer's transaction commits an offset (without membership, as TxnOffsetCommit
    /// before version 3), of the partitions the members commit too.
    TxnCommit {
        producer: i64,
        partition: i32,
        offset: i64,
    },
    /// A producer's transaction ends.
    EndTxn {
        producer: i64,
        committed: bool,
    },
    /// The client does what a well-behaved consumer does next: join, sync or heartbeat.
    Act {
        client: usize,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let client = 0..CLIENTS;
    prop_oneof![
        4 => (client.clone(), 0..3usize).prop_map(|(client, protocol)| Step::Join { client, protocol }),
        4 => client.clone().prop_map(|client| Step::Sync { client }),
        3 => client.clone().prop_map(|client| Step::Heartbeat { client }),
        1 => client.clone().prop_map(|client| Step::Leave { client }),
        2 => (client.clone(), 0..3i32, 0..1_000i64)
            .prop_map(|(client, partition, offset)| Step::Commit { client, partition, offset }),
        1 => (0..3i32, 0..1_000i64).prop_map(|(partition, offset)| Step::SimpleCommit { partition, offset }),
        1 => client.prop_map(|client| Step::Restart { client }),
        4 => (0..6_000i64).prop_map(|advance_ms| Step::Tick { advance_ms }),
        1 => (0..40_000i64).prop_map(|advance_ms| Step::Tick { advance_ms }),
        1 => Just(Step::DeleteGroup),
        2 => (0..2i64, 0..3i32, 0..1_000i64)
            .prop_map(|(producer, partition, offset)| Step::TxnCommit { producer, partition, offset }),
        1 => (0..2i64, any::<bool>()).prop_map(|(producer, committed)| Step::EndTxn { producer, committed }),
        12 => (0..CLIENTS).prop_map(|client| Step::Act { client }),
    ]
}

/// The protocols a client may offer: the same, a superset, and an incompatible one.
fn offered(variant: usize) -> Vec<GroupProtocol> {
    match variant {
        0 => protocols(&["range"]),
        1 => vec![
            GroupProtocol {
                name: "range".to_owned(),
                metadata: subscription(&["t1", "t2"]),
            },
            GroupProtocol {
                name: "roundrobin".to_owned(),
                metadata: subscription(&["t1", "t2"]),
            },
        ],
        _ => protocols(&["roundrobin"]),
    }
}

/// What a client knows, as a Kafka consumer would.
#[derive(Debug, Default, Clone)]
struct Client {
    member_id: String,
    generation_id: i32,
    group_instance_id: Option<String>,
    /// The members of the generation, if this client leads it.
    leads: Option<Vec<String>>,
    next: Next,
}

/// A well-behaved client's next request.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Next {
    #[default]
    Join,
    Sync,
    Heartbeat,
}

/// Who a member is across restarts: a static member's instance id (the prefix of each of its
/// member ids), a dynamic member's member id.
fn identity(member_id: &str) -> String {
    match member_id.strip_prefix("instance-") {
        Some(rest) => format!("instance-{}", rest.split('-').next().unwrap_or_default()),
        None => member_id.to_owned(),
    }
}

struct Run {
    coordinator: GroupCoordinator,
    now_ms: i64,
    clients: Vec<Client>,
    /// Tickets handed out and not yet answered, with the client they belong to.
    waiting: BTreeMap<Ticket, usize>,
    /// Every effect's batch, in order: the log a load reads.
    log: Vec<Effects>,
    generation_last: Option<i32>,
    /// The leader every member was told of, per generation of the current incarnation.
    leaders: BTreeMap<i32, String>,
}

impl Run {
    fn new() -> Run {
        let clients = (0..CLIENTS)
            .map(|index| Client {
                // The first two clients are static members.
                group_instance_id: (index < 2).then(|| format!("instance-{index}")),
                ..Client::default()
            })
            .collect();
        let config = GroupConfig {
            initial_rebalance_delay_ms: 3_000,
            ..config()
        };
        Run {
            coordinator: GroupCoordinator::new(config, 11, 0),
            now_ms: 0,
            clients,
            waiting: BTreeMap::new(),
            log: Vec::new(),
            generation_last: None,
            leaders: BTreeMap::new(),
        }
    }

    fn wait(&mut self, ticket: Ticket, client: usize) {
        assert!(
            self.waiting.insert(ticket, client).is_none(),
            "tickets are unique"
        );
    }

    fn absorb(&mut self, effects: Effects) {
        self.log.push(Effects {
            completions: Vec::new(),
            ..effects.clone()
        });
        for completion in effects.completions {
            let client = self
                .waiting
                .remove(&completion.ticket())
                .expect("only waiting tickets are answered, once");
            match completion {
                Completion::Join(_, response) => self.joined(client, response),
                Completion::Sync(_, response) => self.synced(client, &response),
            }
        }
        self.check();
    }

    fn joined(&mut self, client: usize, response: JoinResponse) {
        let state = &mut self.clients[client];
        match response.error {
            None => {
                let leader = self
                    .leaders
                    .entry(response.generation_id)
                    .or_insert_with(|| identity(&response.leader_id));
                assert_eq!(
                    *leader,
                    identity(&response.leader_id),
                    "one leader per generation"
                );
                state.member_id = response.member_id.clone();
                state.generation_id = response.generation_id;
                state.leads = (response.leader_id == response.member_id).then(|| {
                    response
                        .members
                        .iter()
                        .map(|m| m.member_id.clone())
                        .collect()
                });
                state.next = Next::Sync;
            }
            Some(GroupError::MemberIdRequired) => state.member_id = response.member_id,
            Some(GroupError::UnknownMemberId) => {
                state.member_id.clear();
                state.next = Next::Join;
            }
            Some(_) => state.next = Next::Join,
        }
    }

    fn synced(&mut self, client: usize, response: &SyncResponse) {
        self.clients[client].next = match response.error {
            None => Next::Heartbeat,
            Some(_) => Next::Join,
        };
    }

    fn check(&mut self) {
        self.coordinator.check_invariants();
        let generation = self.coordinator.generation_id(GROUP);
        match (self.generation_last, generation) {
            (Some(last), Some(now)) => assert!(now >= last, "generations only grow"),
            (_, None) => self.leaders.clear(),
            _ => {}
        }
        self.generation_last = generation;
    }

    fn apply(&mut self, step: &Step) {
        let now_ms = self.now_ms;
        match *step {
            Step::Join { client, protocol } => {
                let state = &self.clients[client];
                let mut request = join_request(
                    &format!("client{client}"),
                    &state.member_id,
                    state.group_instance_id.as_deref(),
                );
                request.protocols = offered(protocol);
                let (outcome, effects) = self.coordinator.join_group(&request, now_ms);
                match outcome {
                    JoinOutcome::Pending(ticket) => self.wait(ticket, client),
                    JoinOutcome::Done(response) => self.joined(client, response),
                }
                self.absorb(effects);
            }
            Step::Sync { client } => {
                let state = &self.clients[client];
                let assignments = state
                    .leads
                    .iter()
                    .flatten()
                    .map(|member| (member.clone(), Bytes::from(member.clone())))
                    .collect();
                let request = SyncGroup {
                    group_id: GROUP.to_owned(),
                    generation_id: state.generation_id,
                    member_id: state.member_id.clone(),
                    group_instance_id: state.group_instance_id.clone(),
                    protocol_type: None,
                    protocol_name: None,
                    assignments,
                };
                let (outcome, effects) = self.coordinator.sync_group(&request, now_ms);
                match outcome {
                    SyncOutcome::Pending(ticket) => self.wait(ticket, client),
                    SyncOutcome::Done(response) => self.synced(client, &response),
                }
                self.absorb(effects);
            }
            Step::Heartbeat { client } => {
                let state = &self.clients[client];
                let result = self.coordinator.heartbeat(
                    GROUP,
                    state.generation_id,
                    &state.member_id,
                    state.group_instance_id.as_deref(),
                    now_ms,
                );
                let state = &mut self.clients[client];
                match result {
                    Ok(()) => {}
                    Err(GroupError::UnknownMemberId) => {
                        state.member_id.clear();
                        state.next = Next::Join;
                    }
                    Err(_) => state.next = Next::Join,
                }
                self.check();
            }
            Step::Leave { client } => {
                let state = &mut self.clients[client];
                let leaving = [LeavingMember {
                    member_id: std::mem::take(&mut state.member_id),
                    group_instance_id: state.group_instance_id.clone(),
                }];
                let (_, effects) = self.coordinator.leave_group(GROUP, &leaving, now_ms);
                self.absorb(effects);
            }
            Step::Commit {
                client,
                partition,
                offset,
            } => {
                let state = &self.clients[client];
                let request = OffsetCommit {
                    api_version: OFFSET_COMMIT_MEMBER_EPOCH_VERSION,
                    group_id: GROUP.to_owned(),
                    generation_id: state.generation_id,
                    member_id: state.member_id.clone(),
                    group_instance_id: state.group_instance_id.clone(),
                    partitions: vec![OffsetCommitPartition {
                        partition: tp("t1", partition),
                        offset,
                        leader_epoch: 0,
                        metadata: None,
                    }],
                };
                let (_, effects) = self.coordinator.commit_offsets(&request, now_ms);
                self.absorb(effects);
            }
            Step::SimpleCommit { partition, offset } => {
                let request = OffsetCommit {
                    api_version: OFFSET_COMMIT_MEMBER_EPOCH_VERSION,
                    group_id: GROUP.to_owned(),
                    generation_id: -1,
                    member_id: String::new(),
                    group_instance_id: None,
                    partitions: vec![OffsetCommitPartition {
                        partition: tp("t2", partition),
                        offset,
                        leader_epoch: -1,
                        metadata: Some("simple".to_owned()),
                    }],
                };
                let (_, effects) = self.coordinator.commit_offsets(&request, now_ms);
                self.absorb(effects);
            }
            Step::Restart { client } => {
                let state = &mut self.clients[client];
                state.member_id.clear();
                state.next = Next::Join;
            }
            Step::Act { client } => {
                let busy = self.waiting.values().any(|waiting| *waiting == client);
                let next = match self.clients[client].next {
                    Next::Join | Next::Sync if busy => Step::Heartbeat { client },
                    Next::Join => Step::Join {
                        client,
                        protocol: 0,
                    },
                    Next::Sync => Step::Sync { client },
                    Next::Heartbeat => Step::Heartbeat { client },
                };
                self.apply(&next);
            }
            Step::Tick { advance_ms } => self.tick_to(now_ms + advance_ms),
            Step::DeleteGroup => {
                let (_, effects) = self.coordinator.delete_groups(&[GROUP.to_owned()]);
                self.absorb(effects);
            }
            Step::TxnCommit {
                producer,
                partition,
                offset,
            } => {
                let request = TxnOffsetCommit {
                    group_id: GROUP.to_owned(),
                    producer: TransactionProducer {
                        producer_id: producer,
                        producer_epoch: 0,
                    },
                    generation_id: -1,
                    member_id: String::new(),
                    group_instance_id: None,
                    partitions: vec![OffsetCommitPartition {
                        partition: tp("t1", partition),
                        offset,
                        leader_epoch: -1,
                        metadata: None,
                    }],
                };
                let (_, effects) = self
                    .coordinator
                    .commit_transactional_offsets(&request, now_ms);
                self.absorb(effects);
            }
            Step::EndTxn {
                producer,
                committed,
            } => {
                let marker = engine::batch::TransactionMarker {
                    producer_id: producer,
                    producer_epoch: 0,
                    coordinator_epoch: 0,
                    committed,
                };
                let effects = self
                    .coordinator
                    .complete_transaction(marker)
                    .expect("one epoch: never fenced");
                self.absorb(effects);
            }
        }
    }

    fn tick_to(&mut self, now_ms: i64) {
        self.now_ms = now_ms;
        let effects = self.coordinator.tick(now_ms);
        self.absorb(effects);
    }

    /// Loading the log gives back the committed offsets, the offsets open transactions
    /// commit, and the stable group.
    fn check_replay(&self) {
        let replayed = replay_log(&self.log, self.now_ms);
        assert_eq!(
            replayed.fetch_offsets(GROUP, None),
            self.coordinator.fetch_offsets(GROUP, None)
        );
        for partition in (0..3).map(|partition| tp("t1", partition)) {
            assert_eq!(
                replayed.is_offset_pending(GROUP, &partition),
                self.coordinator.is_offset_pending(GROUP, &partition),
                "{partition:?} pending"
            );
        }

        let description = self.coordinator.describe_group(GROUP);
        if description.state == GroupState::Stable {
            assert_eq!(replayed.describe_group(GROUP), description);
            assert_eq!(
                replayed.generation_id(GROUP),
                self.coordinator.generation_id(GROUP)
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// A damaged `__consumer_offsets` gives an error or some consistent state, never a panic.
    #[test]
    fn replaying_damaged_records_does_not_panic(
        cut in 0usize..200,
        flips in proptest::collection::vec((0usize..200, any::<u8>()), 0..4),
    ) {
        let mut harness = Harness::new(config());
        let (members, generation) = harness.stable_group_of_three();
        prop_assert_eq!(harness.commit(&members[0], generation, tp("t1", 0), 5), Ok(()));
        let mut records = harness.records.clone();
        for record in &mut records {
            let Some(value) = &record.value else { continue };
            let mut bytes = value.to_vec();
            for (position, byte) in &flips {
                if let Some(target) = bytes.get_mut(*position) {
                    *target ^= byte;
                }
            }
            bytes.truncate(bytes.len().saturating_sub(cut % 3));
            record.value = Some(Bytes::from(bytes));
        }
        if let Ok(replayed) = GroupCoordinator::replay(config(), 1, &records, 0) {
            replayed.check_invariants();
        }
    }

    #[test]
    fn random_runs_keep_the_invariants_and_replay(steps in proptest::collection::vec(step(), 1..150)) {
        let mut run = Run::new();
        for step in &steps {
            run.apply(step);
        }
        run.check_replay();
        // With no more requests, the timeouts answer every waiting request.
        for _ in 0..64 {
            if run.waiting.is_empty() {
                break;
            }
            // A request may leave a deadline of now (a join phase with no member left); the
            // driver ticks at once then.
            let deadline = run.coordinator.next_deadline_ms().max(run.now_ms);
            run.tick_to(deadline);
            prop_assert!(
                run.coordinator.next_deadline_ms() > run.now_ms,
                "tick leaves nothing due behind"
            );
        }
        prop_assert!(run.waiting.is_empty(), "requests still waiting: {:?}", run.waiting);
        run.check_replay();
        // The open transactions commit: what they leave is the same, live and loaded.
        for producer in 0..2 {
            run.apply(&Step::EndTxn { producer, committed: true });
        }
        run.check_replay();
    }
}
