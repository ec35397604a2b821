//! Offsets committed inside transactions: pending until the marker, then committed or dropped;
//! OffsetFetch's view of them; fencing; and a load from the log in the middle of it all.

use engine::batch::TransactionMarker;

use super::*;

const PRODUCER: TransactionProducer = TransactionProducer {
    producer_id: 4_000,
    producer_epoch: 3,
};

fn txn_commit(producer: TransactionProducer, offsets: &[(TopicPartition, i64)]) -> TxnOffsetCommit {
    TxnOffsetCommit {
        group_id: GROUP.to_owned(),
        producer,
        generation_id: -1,
        member_id: String::new(),
        group_instance_id: None,
        partitions: offsets
            .iter()
            .map(|(partition, offset)| OffsetCommitPartition {
                partition: partition.clone(),
                offset: *offset,
                leader_epoch: 5,
                metadata: Some("txn".to_owned()),
            })
            .collect(),
    }
}

fn marker(producer: TransactionProducer, committed: bool) -> TransactionMarker {
    TransactionMarker {
        producer_id: producer.producer_id,
        producer_epoch: producer.producer_epoch,
        coordinator_epoch: 0,
        committed,
    }
}

impl Harness {
    fn txn_commit(&mut self, request: &TxnOffsetCommit) -> PartitionResults {
        let (results, effects) = self
            .coordinator
            .commit_transactional_offsets(request, self.now_ms);
        self.absorb(effects);
        results
    }

    fn end_transaction(&mut self, marker: TransactionMarker) -> Result<(), GroupError> {
        let effects = self.coordinator.complete_transaction(marker)?;
        assert_eq!(effects.marker, Some(marker), "the marker is appended");
        assert!(effects.records.is_empty(), "a marker is appended alone");
        self.absorb(effects);
        Ok(())
    }

    /// The coordinator a load of the log written so far gives back.
    fn reloaded(&self) -> GroupCoordinator {
        replay_log(&self.log, self.now_ms)
    }
}

fn committed_in(coordinator: &GroupCoordinator, partition: &TopicPartition) -> Option<i64> {
    let fetched = coordinator.fetch_offsets(GROUP, Some(std::slice::from_ref(partition)));
    fetched[0].1.as_ref().map(|committed| committed.offset)
}

#[test]
fn a_transactions_offsets_wait_for_its_commit_marker() {
    let mut harness = Harness::new(config());
    let p0 = tp("t1", 0);
    let p1 = tp("t1", 1);
    harness.commit("", -1, p0.clone(), 10).unwrap();
    let results = harness.txn_commit(&txn_commit(PRODUCER, &[(p0.clone(), 20), (p1.clone(), 7)]));
    assert_eq!(
        results,
        Ok(vec![(p0.clone(), Ok(())), (p1.clone(), Ok(()))])
    );
    let batch = harness.log.last().unwrap();
    assert_eq!(batch.transaction, Some(PRODUCER), "a transactional batch");
    assert_eq!(batch.records.len(), 2);

    assert_eq!(
        harness.committed(p0.clone()),
        Some(10),
        "pending: not visible"
    );
    assert_eq!(harness.committed(p1.clone()), None);
    assert!(harness.coordinator.is_offset_pending(GROUP, &p0));
    assert!(harness.coordinator.is_offset_pending(GROUP, &p1));
    assert!(!harness.coordinator.is_offset_pending(GROUP, &tp("t1", 2)));

    harness.end_transaction(marker(PRODUCER, true)).unwrap();
    assert_eq!(harness.committed(p0.clone()), Some(20));
    assert_eq!(harness.committed(p1.clone()), Some(7));
    assert!(!harness.coordinator.is_offset_pending(GROUP, &p0));
    let fetched = harness
        .coordinator
        .fetch_offsets(GROUP, Some(std::slice::from_ref(&p1)));
    let committed = fetched[0].1.clone().unwrap();
    assert_eq!(
        (committed.leader_epoch, committed.metadata.as_str()),
        (5, "txn")
    );

    let reloaded = harness.reloaded();
    assert_eq!(committed_in(&reloaded, &p0), Some(20));
    assert_eq!(committed_in(&reloaded, &p1), Some(7));
    assert!(!reloaded.is_offset_pending(GROUP, &p0));
}

#[test]
fn an_aborted_transactions_offsets_are_dropped() {
    let mut harness = Harness::new(config());
    let p0 = tp("t1", 0);
    harness.commit("", -1, p0.clone(), 10).unwrap();
    harness
        .txn_commit(&txn_commit(PRODUCER, &[(p0.clone(), 20)]))
        .unwrap();
    harness.end_transaction(marker(PRODUCER, false)).unwrap();
    assert_eq!(harness.committed(p0.clone()), Some(10));
    assert!(!harness.coordinator.is_offset_pending(GROUP, &p0));
    assert_eq!(committed_in(&harness.reloaded(), &p0), Some(10));

    // The producer's next transaction (same id and epoch) starts afresh.
    harness
        .txn_commit(&txn_commit(PRODUCER, &[(p0.clone(), 30)]))
        .unwrap();
    harness.end_transaction(marker(PRODUCER, true)).unwrap();
    assert_eq!(harness.committed(p0.clone()), Some(30));
    assert_eq!(committed_in(&harness.reloaded(), &p0), Some(30));
}

#[test]
fn a_load_keeps_an_open_transaction_pending_until_its_marker() {
    let mut harness = Harness::new(config());
    let p0 = tp("t1", 0);
    let other = TransactionProducer {
        producer_id: 4_001,
        producer_epoch: 0,
    };
    harness
        .txn_commit(&txn_commit(PRODUCER, &[(p0.clone(), 20)]))
        .unwrap();
    harness
        .txn_commit(&txn_commit(other, &[(tp("t1", 1), 5)]))
        .unwrap();
    harness.end_transaction(marker(other, false)).unwrap();

    let mut reloaded = harness.reloaded();
    assert_eq!(committed_in(&reloaded, &p0), None, "still pending");
    assert!(reloaded.is_offset_pending(GROUP, &p0));
    assert!(!reloaded.is_offset_pending(GROUP, &tp("t1", 1)), "aborted");
    assert_eq!(reloaded.list_groups(&[]).len(), 1, "the group is known");

    // The marker reaches the reloaded coordinator.
    let effects = reloaded
        .complete_transaction(marker(PRODUCER, true))
        .unwrap();
    assert!(effects.marker.is_some());
    assert_eq!(committed_in(&reloaded, &p0), Some(20));
    assert_eq!(committed_in(&reloaded, &tp("t1", 1)), None);
}

#[test]
fn a_later_plain_commit_wins_over_a_transactions_offset() {
    let mut harness = Harness::new(config());
    let p0 = tp("t1", 0);
    harness
        .txn_commit(&txn_commit(PRODUCER, &[(p0.clone(), 20)]))
        .unwrap();
    harness.commit("", -1, p0.clone(), 40).unwrap();
    // Still an open transaction on the partition, as Kafka reports it.
    assert!(harness.coordinator.is_offset_pending(GROUP, &p0));
    // Reloaded before the marker, the plain commit is the one that stays too.
    let mut reloaded = harness.reloaded();
    let effects = reloaded
        .complete_transaction(marker(PRODUCER, true))
        .unwrap();
    assert!(effects.records.is_empty(), "only the marker is written");
    assert_eq!(committed_in(&reloaded, &p0), Some(40));

    harness.end_transaction(marker(PRODUCER, true)).unwrap();
    assert_eq!(harness.committed(p0.clone()), Some(40));
    assert_eq!(committed_in(&harness.reloaded(), &p0), Some(40));
}

#[test]
fn the_most_recent_transactions_offset_wins_whichever_commits_first() {
    let mut harness = Harness::new(config());
    let p0 = tp("t1", 0);
    let later = TransactionProducer {
        producer_id: 4_001,
        producer_epoch: 0,
    };
    harness
        .txn_commit(&txn_commit(PRODUCER, &[(p0.clone(), 20)]))
        .unwrap();
    harness
        .txn_commit(&txn_commit(later, &[(p0.clone(), 30)]))
        .unwrap();
    harness.end_transaction(marker(later, true)).unwrap();
    assert_eq!(harness.committed(p0.clone()), Some(30));
    // The earlier offset's transaction commits last: the later offset stays, as in Kafka.
    harness.end_transaction(marker(PRODUCER, true)).unwrap();
    assert_eq!(harness.committed(p0.clone()), Some(30));
    assert_eq!(committed_in(&harness.reloaded(), &p0), Some(30));
}

#[test]
fn deleting_offsets_supersedes_a_transactions_offsets() {
    let mut harness = Harness::new(config());
    let p0 = tp("t1", 0);
    harness
        .txn_commit(&txn_commit(PRODUCER, &[(p0.clone(), 20)]))
        .unwrap();
    let (results, effects) = harness
        .coordinator
        .delete_offsets(GROUP, std::slice::from_ref(&p0));
    assert_eq!(results, Ok(vec![(p0.clone(), Ok(()))]));
    assert_eq!(
        effects.records.len(),
        1,
        "a tombstone for the pending offset"
    );
    harness.absorb(effects);
    harness.end_transaction(marker(PRODUCER, true)).unwrap();
    assert_eq!(harness.committed(p0.clone()), None);
    assert_eq!(committed_in(&harness.reloaded(), &p0), None);
}

#[test]
fn a_fenced_producer_epoch_is_refused() {
    let mut harness = Harness::new(config());
    let p0 = tp("t1", 0);
    harness
        .txn_commit(&txn_commit(PRODUCER, &[(p0.clone(), 20)]))
        .unwrap();
    let zombie = TransactionProducer {
        producer_epoch: PRODUCER.producer_epoch - 1,
        ..PRODUCER
    };
    assert_eq!(
        harness.txn_commit(&txn_commit(zombie, &[(p0.clone(), 99)])),
        Err(GroupError::InvalidProducerEpoch)
    );
    assert_eq!(
        harness
            .coordinator
            .complete_transaction(marker(zombie, true)),
        Err(GroupError::InvalidProducerEpoch)
    );
    // The coordinator's abort with a bumped epoch ends the transaction.
    let bumped = TransactionProducer {
        producer_epoch: PRODUCER.producer_epoch + 1,
        ..PRODUCER
    };
    harness.end_transaction(marker(bumped, false)).unwrap();
    assert_eq!(harness.committed(p0), None);
}

#[test]
fn a_members_transactional_commit_is_checked_as_its_plain_commit() {
    let mut harness = Harness::new(config());
    let (members, generation) = harness.stable_group_of_three();
    let p0 = tp("t1", 0);
    let with_member = |member_id: &str, generation_id: i32| TxnOffsetCommit {
        member_id: member_id.to_owned(),
        generation_id,
        ..txn_commit(PRODUCER, &[(p0.clone(), 20)])
    };
    assert_eq!(
        harness.txn_commit(&with_member(&members[1], generation - 1)),
        Err(GroupError::IllegalGeneration)
    );
    assert_eq!(
        harness.txn_commit(&with_member("stranger", generation)),
        Err(GroupError::UnknownMemberId)
    );
    assert!(harness
        .txn_commit(&with_member(&members[1], generation))
        .is_ok());
    // Versions 0 to 2 carry no member: accepted in a group with members.
    assert!(harness.txn_commit(&with_member("", -1)).is_ok());
    // A generation names a group that must exist.
    let elsewhere = TxnOffsetCommit {
        group_id: "elsewhere".to_owned(),
        ..with_member("someone", 1)
    };
    assert_eq!(
        harness.txn_commit(&elsewhere),
        Err(GroupError::IllegalGeneration)
    );
}

#[test]
fn a_group_in_a_transaction_does_not_expire() {
    let mut harness = Harness::new(config());
    let p0 = tp("t1", 0);
    harness.commit("", -1, p0.clone(), 10).unwrap();
    harness
        .txn_commit(&txn_commit(PRODUCER, &[(tp("t1", 1), 20)]))
        .unwrap();
    harness.tick_to(10 * config().offsets_retention_ms);
    assert_eq!(
        harness.committed(p0.clone()),
        Some(10),
        "kept while in a transaction"
    );
    harness.end_transaction(marker(PRODUCER, false)).unwrap();
    harness.tick_to(20 * config().offsets_retention_ms);
    assert_eq!(harness.committed(p0), None, "expired once it ended");
    assert_eq!(harness.state(), GroupState::Dead);
}
