use super::*;
use kafka_protocol::ResponseError;

const TIMEOUT_MS: i32 = 60_000;

fn coordinator() -> TransactionCoordinator {
    TransactionCoordinator::new(TransactionConfig::default(), 0)
}

fn init(
    coordinator: &mut TransactionCoordinator,
    expected: Option<ProducerIdAndEpoch>,
    fresh_producer_id: i64,
    now_ms: i64,
) -> (Result<ProducerIdAndEpoch, TransactionError>, Effects) {
    let request = InitProducerId {
        transactional_id: "tx".into(),
        timeout_ms: TIMEOUT_MS,
        expected,
        fresh_producer_id,
    };
    let answer = coordinator.init_producer_id(&request, now_ms);
    coordinator.check_invariants();
    answer
}

fn partitions(names: &[(&str, i32)]) -> Vec<TransactionPartition> {
    names
        .iter()
        .map(|(topic, partition)| ((*topic).to_owned(), *partition))
        .collect()
}

/// Replays every record `coordinator` wrote so far into a new one.
fn replayed(records: &[TransactionRecord]) -> (TransactionCoordinator, Vec<MarkerJob>) {
    let (coordinator, markers) =
        TransactionCoordinator::replay(TransactionConfig::default(), records, 0).unwrap();
    coordinator.check_invariants();
    (coordinator, markers)
}

#[test]
fn a_new_id_gets_the_fresh_producer_id_at_epoch_0_and_each_init_bumps_the_epoch() {
    let mut coordinator = coordinator();
    let (answer, effects) = init(&mut coordinator, None, 100, 1);
    assert_eq!(answer, Ok((100, 0)));
    assert_eq!(effects.records.len(), 1);
    // A second producer with the same id: same producer id, next epoch, the first fenced.
    assert_eq!(init(&mut coordinator, None, 101, 2).0, Ok((100, 1)));
    let (result, _) = coordinator.add_partitions("tx", 100, 0, &partitions(&[("t", 0)]), 3);
    assert_eq!(result, Err(TransactionError::ProducerFenced));
    let (result, _) = coordinator.end_transaction("tx", 100, 0, true, 3);
    assert_eq!(result, Err(TransactionError::ProducerFenced));
    let (result, _) = coordinator.add_partitions("tx", 7, 1, &partitions(&[("t", 0)]), 3);
    assert_eq!(result, Err(TransactionError::InvalidProducerIdMapping));
}

#[test]
fn timeouts_and_ids_are_checked() {
    let mut coordinator = TransactionCoordinator::new(
        TransactionConfig {
            timeout_max_ms: 1000,
            ..TransactionConfig::default()
        },
        0,
    );
    for timeout_ms in [0, 1001] {
        let request = InitProducerId {
            transactional_id: "tx".into(),
            timeout_ms,
            expected: None,
            fresh_producer_id: 1,
        };
        assert_eq!(
            coordinator.init_producer_id(&request, 0).0,
            Err(TransactionError::InvalidTransactionTimeout)
        );
    }
    for transactional_id in [String::new(), "x".repeat(TRANSACTIONAL_ID_BYTES_MAX + 1)] {
        let request = InitProducerId {
            transactional_id,
            timeout_ms: 10,
            expected: None,
            fresh_producer_id: 1,
        };
        assert_eq!(
            coordinator.init_producer_id(&request, 0).0,
            Err(TransactionError::InvalidRequest)
        );
    }
}

#[test]
fn a_commit_prepares_writes_markers_and_completes() {
    let mut coordinator = coordinator();
    let mut log = Vec::new();
    let (answer, effects) = init(&mut coordinator, None, 5, 1);
    assert_eq!(answer, Ok((5, 0)));
    log.extend(effects.records);
    let (result, effects) =
        coordinator.add_partitions("tx", 5, 0, &partitions(&[("a", 1), ("b", 0)]), 10);
    assert_eq!(result, Ok(()));
    log.extend(effects.records);
    // Adding what is already there writes nothing.
    let (result, effects) = coordinator.add_partitions("tx", 5, 0, &partitions(&[("a", 1)]), 11);
    assert_eq!((result, effects), (Ok(()), Effects::default()));
    let described = coordinator.describe("tx").unwrap();
    assert_eq!(described.state, TransactionState::Ongoing);
    assert_eq!(described.start_ms, 10);

    let (result, effects) = coordinator.end_transaction("tx", 5, 0, true, 20);
    assert_eq!(result, Ok(()));
    assert_eq!(
        effects.markers,
        vec![MarkerJob {
            transactional_id: "tx".into(),
            producer_id: 5,
            producer_epoch: 0,
            committed: true,
            partitions: partitions(&[("a", 1), ("b", 0)]),
        }]
    );
    log.extend(effects.records);
    coordinator.check_invariants();
    // While its markers are written, the id is busy.
    assert_eq!(
        init(&mut coordinator, None, 6, 21).0,
        Err(TransactionError::ConcurrentTransactions)
    );
    assert_eq!(
        coordinator.end_transaction("tx", 5, 0, true, 21).0,
        Err(TransactionError::ConcurrentTransactions)
    );
    assert_eq!(
        coordinator.end_transaction("tx", 5, 0, false, 21).0,
        Err(TransactionError::InvalidTxnState)
    );
    // A reload now resumes the markers.
    let (_, resumed) = replayed(&log);
    assert_eq!(resumed.len(), 1);
    assert!(resumed[0].committed);

    let job = resumed[0].clone();
    let effects = coordinator.complete_markers(&job, 30);
    assert_eq!(effects.records.len(), 1);
    log.extend(effects.records);
    coordinator.check_invariants();
    assert_eq!(
        coordinator.describe("tx").unwrap().state,
        TransactionState::CompleteCommit
    );
    // A retried EndTxn of the same result succeeds; the other result is refused.
    assert_eq!(coordinator.end_transaction("tx", 5, 0, true, 31).0, Ok(()));
    assert_eq!(
        coordinator.end_transaction("tx", 5, 0, false, 31).0,
        Err(TransactionError::InvalidTxnState)
    );
    // The next transaction starts afresh.
    let (result, _) = coordinator.add_partitions("tx", 5, 0, &partitions(&[("c", 0)]), 40);
    assert_eq!(result, Ok(()));
    let described = coordinator.describe("tx").unwrap();
    assert_eq!(described.partitions.len(), 1);
    assert_eq!(described.start_ms, 40);

    let (reloaded, resumed) = replayed(&log);
    assert!(resumed.is_empty());
    assert_eq!(
        reloaded.describe("tx").unwrap().state,
        TransactionState::CompleteCommit
    );
}

#[test]
fn an_init_during_a_transaction_fences_and_aborts_it_then_bumps_again() {
    let mut coordinator = coordinator();
    assert_eq!(init(&mut coordinator, None, 5, 0).0, Ok((5, 0)));
    assert!(coordinator
        .add_partitions("tx", 5, 0, &partitions(&[("a", 0)]), 1)
        .0
        .is_ok());
    let (answer, effects) = init(&mut coordinator, None, 6, 2);
    assert_eq!(answer, Err(TransactionError::ConcurrentTransactions));
    assert_eq!(effects.markers.len(), 1);
    let job = &effects.markers[0];
    assert!(!job.committed);
    assert_eq!(job.producer_epoch, 1, "the abort carries the fencing epoch");
    // The zombie cannot end it.
    assert_eq!(
        coordinator.end_transaction("tx", 5, 0, true, 3).0,
        Err(TransactionError::ProducerFenced)
    );
    coordinator.complete_markers(job, 4);
    assert_eq!(
        coordinator.describe("tx").unwrap().state,
        TransactionState::CompleteAbort
    );
    assert_eq!(init(&mut coordinator, None, 6, 5).0, Ok((5, 2)));
}

#[test]
fn kip_360_a_known_producer_bumps_its_epoch_and_a_stranger_is_fenced() {
    let mut coordinator = coordinator();
    assert_eq!(init(&mut coordinator, None, 5, 0).0, Ok((5, 0)));
    assert_eq!(init(&mut coordinator, Some((5, 0)), 6, 1).0, Ok((5, 1)));
    // A retry of that call (the answer was lost) gets the same epoch.
    assert_eq!(init(&mut coordinator, Some((5, 0)), 6, 2).0, Ok((5, 1)));
    assert_eq!(
        init(&mut coordinator, Some((9, 0)), 6, 3).0,
        Err(TransactionError::ProducerFenced)
    );
    assert_eq!(
        init(&mut coordinator, Some((5, 7)), 6, 3).0,
        Err(TransactionError::ProducerFenced)
    );
}

#[test]
fn an_exhausted_epoch_rotates_the_producer_id() {
    let mut coordinator = coordinator();
    assert_eq!(init(&mut coordinator, None, 5, 0).0, Ok((5, 0)));
    coordinator
        .transactions
        .get_mut("tx")
        .unwrap()
        .producer_epoch = i16::MAX - 1;
    // The producer names its exhausted epoch (KIP-360): a new producer id from epoch 0.
    assert_eq!(
        init(&mut coordinator, Some((5, i16::MAX - 1)), 6, 1).0,
        Ok((6, 0))
    );
    // A retry of that call (its answer lost) is recognised by the previous producer id and
    // gets the same answer.
    assert_eq!(
        init(&mut coordinator, Some((5, i16::MAX - 1)), 7, 2).0,
        Ok((6, 0))
    );
    // Without an expected epoch, exhaustion rotates as well.
    coordinator
        .transactions
        .get_mut("tx")
        .unwrap()
        .producer_epoch = i16::MAX - 1;
    assert_eq!(init(&mut coordinator, None, 8, 3).0, Ok((8, 0)));
}

#[test]
fn a_timed_out_transaction_is_aborted_with_a_bumped_epoch_and_idle_ids_expire() {
    let config = TransactionConfig {
        id_expiration_ms: 1_000_000,
        check_interval_ms: 100,
        ..TransactionConfig::default()
    };
    let mut coordinator = TransactionCoordinator::new(config, 0);
    let request = |id: &str| InitProducerId {
        transactional_id: id.into(),
        timeout_ms: 1000,
        expected: None,
        fresh_producer_id: if id == "open" { 1 } else { 2 },
    };
    assert!(coordinator.init_producer_id(&request("open"), 0).0.is_ok());
    assert!(coordinator.init_producer_id(&request("idle"), 0).0.is_ok());
    assert!(coordinator
        .add_partitions("open", 1, 0, &partitions(&[("a", 0)]), 0)
        .0
        .is_ok());
    assert_eq!(coordinator.next_deadline_ms(), 100);
    assert_eq!(
        coordinator.tick(500),
        Effects::default(),
        "nothing timed out yet"
    );
    let effects = coordinator.tick(1001);
    assert_eq!(effects.markers.len(), 1);
    assert_eq!(effects.markers[0].producer_epoch, 1);
    assert!(!effects.markers[0].committed);
    assert_eq!(
        coordinator.end_transaction("open", 1, 0, true, 1002).0,
        Err(TransactionError::ProducerFenced)
    );
    coordinator.check_invariants();
    let effects = coordinator.tick(1_000_000);
    assert_eq!(
        effects.records,
        vec![TransactionRecord {
            key: encode_key("idle"),
            value: None
        }]
    );
    assert_eq!(
        coordinator.describe("idle"),
        Err(TransactionError::TransactionalIdNotFound)
    );
}

#[test]
fn verify_and_list() {
    let mut coordinator = coordinator();
    assert!(init(&mut coordinator, None, 5, 0).0.is_ok());
    assert!(coordinator
        .add_partitions("tx", 5, 0, &partitions(&[("a", 0)]), 10)
        .0
        .is_ok());
    let verified = coordinator.verify_partitions("tx", 5, 0, &partitions(&[("a", 0), ("a", 1)]));
    assert_eq!(verified[0].1, Ok(()));
    assert_eq!(verified[1].1, Err(TransactionError::TransactionAbortable));
    let verified = coordinator.verify_partitions("tx", 5, 3, &partitions(&[("a", 0)]));
    assert_eq!(verified[0].1, Err(TransactionError::ProducerFenced));

    let any_state = BTreeSet::new();
    let any_id = BTreeSet::new();
    let listed = coordinator.list(&any_state, &any_id, -1, 20);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, TransactionState::Ongoing);
    let states = [TransactionState::Empty].into();
    assert!(coordinator.list(&states, &any_id, -1, 20).is_empty());
    assert!(coordinator.list(&any_state, &[6].into(), -1, 20).is_empty());
    assert_eq!(coordinator.list(&any_state, &any_id, 9, 20).len(), 1);
    assert!(
        coordinator.list(&any_state, &any_id, 10, 20).is_empty(),
        "running for longer than the filter, as Kafka"
    );
}

mod property {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Step {
        Init {
            id: usize,
            named: Option<bool>,
        },
        Add {
            id: usize,
            current: bool,
            partitions: Vec<i32>,
        },
        End {
            id: usize,
            current: bool,
            commit: bool,
        },
        Markers {
            job: prop::sample::Index,
        },
        Tick {
            elapsed_ms: i64,
        },
    }

    fn step() -> impl Strategy<Value = Step> {
        let id = 0..3usize;
        prop_oneof![
            (id.clone(), prop::option::of(any::<bool>()))
                .prop_map(|(id, named)| Step::Init { id, named }),
            (
                id.clone(),
                any::<bool>(),
                prop::collection::vec(0..4i32, 0..3)
            )
                .prop_map(|(id, current, partitions)| Step::Add {
                    id,
                    current,
                    partitions
                }),
            (id, any::<bool>(), any::<bool>()).prop_map(|(id, current, commit)| Step::End {
                id,
                current,
                commit
            }),
            any::<prop::sample::Index>().prop_map(|job| Step::Markers { job }),
            (0..3000i64).prop_map(|elapsed_ms| Step::Tick { elapsed_ms }),
        ]
    }

    /// What a record keeps of an id (the rest is memory only, as in Kafka).
    fn durable(metadata: &TransactionMetadata) -> TransactionMetadata {
        TransactionMetadata {
            previous_producer_id: -1,
            last_producer_epoch: NO_PRODUCER_EPOCH,
            ..metadata.clone()
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// After every step: the invariants hold, epochs of a producer id never go down, and
        /// replaying every record written so far gives back every id's durable state and, as
        /// markers to resume, exactly the transactions still waiting for theirs.
        #[test]
        fn random_calls_keep_the_invariants_and_replay_to_the_same_state(
            steps in prop::collection::vec(step(), 1..60),
        ) {
            let config = TransactionConfig {
                id_expiration_ms: 20_000,
                check_interval_ms: 500,
                ..TransactionConfig::default()
            };
            let mut coordinator = TransactionCoordinator::new(config.clone(), 0);
            let mut log: Vec<TransactionRecord> = Vec::new();
            let mut jobs: Vec<MarkerJob> = Vec::new();
            let mut epochs: HashMap<i64, i16> = HashMap::new();
            let mut now_ms = 0;
            let mut next_producer_id = 1000;
            for step in steps {
                now_ms += 10;
                let ids = ["a", "b", "c"];
                let current = |coordinator: &TransactionCoordinator, id: &str| {
                    coordinator
                        .describe(id)
                        .map_or((-1, -1), |m| (m.producer_id, m.producer_epoch))
                };
                let effects = match step {
                    Step::Init { id, named } => {
                        let (producer_id, epoch) = current(&coordinator, ids[id]);
                        let expected = named.map(|fresh| match fresh {
                            true => (producer_id, epoch),
                            false => (producer_id, epoch.wrapping_sub(1)),
                        }).filter(|(producer_id, _)| *producer_id >= 0);
                        next_producer_id += 1;
                        let request = InitProducerId {
                            transactional_id: ids[id].into(),
                            timeout_ms: 1000,
                            expected,
                            fresh_producer_id: next_producer_id,
                        };
                        coordinator.init_producer_id(&request, now_ms).1
                    }
                    Step::Add { id, current: is_current, partitions } => {
                        let (producer_id, epoch) = current(&coordinator, ids[id]);
                        let epoch = if is_current { epoch } else { epoch.wrapping_sub(1) };
                        let partitions: Vec<TransactionPartition> =
                            partitions.into_iter().map(|p| ("t".to_owned(), p)).collect();
                        coordinator
                            .add_partitions(ids[id], producer_id, epoch, &partitions, now_ms)
                            .1
                    }
                    Step::End { id, current: is_current, commit } => {
                        let (producer_id, epoch) = current(&coordinator, ids[id]);
                        let epoch = if is_current { epoch } else { epoch.wrapping_sub(1) };
                        coordinator
                            .end_transaction(ids[id], producer_id, epoch, commit, now_ms)
                            .1
                    }
                    Step::Markers { job } => {
                        if jobs.is_empty() {
                            Effects::default()
                        } else {
                            let job = jobs.remove(job.index(jobs.len()));
                            coordinator.complete_markers(&job, now_ms)
                        }
                    }
                    Step::Tick { elapsed_ms } => {
                        now_ms += elapsed_ms;
                        coordinator.tick(now_ms)
                    }
                };
                coordinator.check_invariants();
                log.extend(effects.records);
                jobs.extend(effects.markers);
                for metadata in coordinator.transactions.values() {
                    let seen = epochs.entry(metadata.producer_id).or_insert(metadata.producer_epoch);
                    prop_assert!(metadata.producer_epoch >= *seen, "epochs only grow");
                    *seen = metadata.producer_epoch;
                }
                let (replayed, resumed) =
                    TransactionCoordinator::replay(config.clone(), &log, now_ms).unwrap();
                let mut expected: Vec<_> = coordinator.transactions.values().map(durable).collect();
                let mut got: Vec<_> = replayed.transactions.values().map(durable).collect();
                expected.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
                got.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
                prop_assert_eq!(got, expected);
                let waiting = |job: &MarkerJob| {
                    coordinator.describe(&job.transactional_id).is_ok_and(|m| {
                        m.producer_epoch == job.producer_epoch
                            && m.state == match job.committed {
                                true => TransactionState::PrepareCommit,
                                false => TransactionState::PrepareAbort,
                            }
                    })
                };
                let mut live: Vec<_> = jobs.iter().filter(|job| waiting(job)).cloned().collect();
                let mut resumed = resumed;
                live.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
                resumed.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
                prop_assert_eq!(resumed, live);
            }
        }
    }
}

#[test]
fn versions_before_producer_fenced_existed_are_answered_invalid_producer_epoch() {
    let (fenced, invalid_epoch) = (
        ResponseError::ProducerFenced.code(),
        ResponseError::InvalidProducerEpoch.code(),
    );
    // EndTxn, AddPartitionsToTxn and AddOffsetsToTxn know PRODUCER_FENCED from version 2.
    assert_eq!(
        TransactionError::ProducerFenced.code_at(1, 2),
        invalid_epoch
    );
    assert_eq!(TransactionError::ProducerFenced.code_at(2, 2), fenced);
    // Other errors are the same at every version.
    assert_eq!(
        TransactionError::ConcurrentTransactions.code_at(0, 2),
        ResponseError::ConcurrentTransactions.code()
    );
}
