//! Disk faults injected into one replica's log (`fault-injection` builds only:
//! `cargo test -p ferrite-replication --features fault-injection --test replica disk_faults`):
//! a failed write or sync on the leader makes it give up leadership to a healthy replica; on a
//! follower it is left out of the in-sync replicas. Neither aborts, neither counts a hole as
//! durable, and both come back by themselves and hold every acknowledged batch in the end.

use super::*;
use engine::log::injected_faults::{arm, armed, IoOperation};

/// Produces `count` values through whoever leads, retrying each until it is acknowledged;
/// returns them.
fn produce_through_the_leader(cluster: &Cluster, label: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|number| {
            let value = format!("{label}-{number}");
            wait_until("an acknowledged produce", || {
                let leader = leader_of(&cluster.brokers)?;
                cluster.brokers[&leader].produce(&value).ok()
            });
            value
        })
        .collect()
}

/// Every log the same, holding every acknowledged value once and in order (a value whose
/// produce was refused may be there too, once: a refusal does not say it was not written).
fn check_agreed(cluster: &Cluster, acknowledged: &[String]) {
    let log = wait_until("every log the same", || cluster.agreed_log());
    let stored = values(&log);
    let mut unique = stored.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), stored.len(), "nothing twice: {stored:?}");
    let kept: Vec<&String> = stored
        .iter()
        .filter(|value| acknowledged.contains(value))
        .collect();
    assert_eq!(
        kept,
        acknowledged.iter().collect::<Vec<_>>(),
        "every acknowledged value, in order"
    );
}

/// A fault on the leader: it faults, another replica leads within a few election
/// timeouts, nothing acknowledged is lost, and the faulted one catches up.
fn leader_fault(operation: IoOperation, errno: i32) {
    let cluster = Cluster::start();
    let first_leader = wait_until("a leader", || leader_of(&cluster.brokers));
    let mut acknowledged = produce_through_the_leader(&cluster, "before", 20);
    wait_until("every log the same", || cluster.agreed_log());

    arm(
        cluster.dirs[&first_leader].path(),
        operation,
        errno,
        Some(1),
    )
    .unwrap();
    // The batch whose write or sync fails may still be committed by the followers; the
    // leader stops leading either way.
    let _ = cluster.brokers[&first_leader].produce("during");
    wait_until("the fault to fire", || {
        (!armed(cluster.dirs[&first_leader].path())).then_some(())
    });
    let new_leader = wait_until("another replica leading", || {
        leader_of(&cluster.brokers).filter(|leader| *leader != first_leader)
    });
    assert!(
        cluster.brokers[&first_leader]
            .status()
            .unwrap()
            .ever_faulted
    );
    acknowledged.extend(produce_through_the_leader(&cluster, "after", 20));
    assert_ne!(new_leader, first_leader);
    wait_until("the faulted replica back", || {
        (!cluster.brokers[&first_leader].status()?.faulted).then_some(())
    });
    check_agreed(&cluster, &acknowledged);
    cluster.stop();
}

/// A fault on a follower: it faults (twice in a row: its first come-back fails again) and
/// is left out of the leader's in-sync replicas meanwhile, and catches up once the fault
/// clears, its log byte for byte the leader's (a hole it had counted as durable would
/// differ).
fn follower_fault(operation: IoOperation, errno: i32) {
    let cluster = Cluster::start();
    let leader = wait_until("a leader", || leader_of(&cluster.brokers));
    let follower = *cluster.brokers.keys().find(|id| **id != leader).unwrap();
    let mut acknowledged = produce_through_the_leader(&cluster, "before", 20);
    wait_until("every log the same", || cluster.agreed_log());

    let follower_dir = cluster.dirs[&follower].path();
    arm(follower_dir, operation, errno, Some(2)).unwrap();
    acknowledged.extend(produce_through_the_leader(&cluster, "during", 10));
    wait_until("the follower to fault", || {
        cluster.brokers[&follower].status()?.faulted.then_some(())
    });
    wait_until("the follower out of the in-sync replicas", || {
        let leader = leader_of(&cluster.brokers)?;
        let in_sync = cluster.brokers[&leader].status()?.in_sync;
        (in_sync & 1 << follower == 0).then_some(())
    });
    acknowledged.extend(produce_through_the_leader(&cluster, "while out", 10));
    wait_until("the fault used up", || (!armed(follower_dir)).then_some(()));
    acknowledged.extend(produce_through_the_leader(&cluster, "after", 10));
    check_agreed(&cluster, &acknowledged);
    cluster.stop();
}

#[test]
fn a_leader_whose_write_fails_hands_over_and_comes_back() {
    leader_fault(IoOperation::Write, libc::EIO);
}

#[test]
fn a_leader_whose_sync_fails_hands_over_and_comes_back() {
    leader_fault(IoOperation::Sync, libc::EIO);
}

#[test]
fn a_follower_whose_write_fails_neither_aborts_nor_skips_and_catches_up() {
    follower_fault(IoOperation::Write, libc::ENOSPC);
}

#[test]
fn a_follower_whose_sync_fails_neither_aborts_nor_skips_and_catches_up() {
    follower_fault(IoOperation::Sync, libc::EIO);
}
