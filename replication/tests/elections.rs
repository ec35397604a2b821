//! One behaviour per test on a network without faults: what pre-vote and check-quorum are
//! for, and each replication path (divergence, a follower below the leader's log start,
//! leadership transfer, membership changes, voters recovered on restart, observers, the
//! highest term). The simulator checks safety under faults; these check the intended
//! behaviour.

mod common;

use common::faultless::*;
use common::{Batch, Cluster};
use ferrite_replication::{Message, NodeId, Refusal, RoleKind, FETCH_ANSWERS_AHEAD_MAX};

#[test]
fn a_cluster_elects_one_leader_and_commits_its_proposals_everywhere() {
    let mut cluster = cluster(3);
    let leader = tick_until_leader(&mut cluster);
    let follower = cluster
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("3 nodes");
    let refused = cluster.node_mut(follower).expect("live").propose(1);
    assert_eq!(
        refused.err(),
        Some(Refusal::NotLeader {
            leader_hint: Some(leader)
        })
    );
    let batch = commit_one(&mut cluster);
    for id in cluster.ids() {
        let stored = cluster.disks[&id]
            .durable
            .batch_containing(batch.meta.last_index);
        assert_eq!(stored, Some(&batch), "node {id}");
    }
}

#[test]
fn a_new_groups_first_leader_is_its_first_voter_even_when_it_starts_late() {
    // Node 1, first in the voter set (the preferred leader), starts two election timeouts
    // after the others: they wait for it, and it is elected at its first tick.
    let mut late = cluster(3);
    late.crash(1);
    let timeout = late.election_timeout_ticks_min;
    ticks(&mut late, 2 * timeout);
    assert_eq!(late.leader(), None, "the others wait for the first voter");
    late.restart(1);
    assert_eq!(tick_until_leader(&mut late), 1);
    // Without it, they elect one of themselves a few election timeouts later.
    let mut without = cluster(3);
    without.crash(1);
    let leader = tick_until_leader(&mut without);
    assert_ne!(leader, 1);
    assert!(
        without.now <= 6 * without.election_timeout_ticks_min,
        "elected at tick {}",
        without.now
    );
}

/// One trip of every message under way (each arrives one tick after it left), with the
/// leader's disk syncing everything and the others' syncing nothing.
fn trip_with_only_the_leader_syncing(cluster: &mut Cluster, leader: NodeId) {
    cluster.now += 1;
    cluster.deliver_due(|_| {});
    cluster.sync_all(leader);
}

#[test]
fn a_follower_fetches_on_while_its_disk_writes_several_answers_and_no_more() {
    let mut cluster = cluster(3);
    let leader = tick_until_leader(&mut cluster);
    commit_one(&mut cluster);
    let follower = *cluster
        .ids()
        .iter()
        .find(|id| **id != leader)
        .expect("three nodes");
    let written = |cluster: &Cluster| cluster.disks[&follower].written.last_index;
    // From here the followers' disks sync nothing: each batch the leader takes is answered to
    // the fetch the follower sent after the last answer, as long as it fetches on. A
    // follower storage commits one group at a time; a fetch that waited for the group in
    // flight made the next batch miss the following group too.
    for count in 1..=FETCH_ANSWERS_AHEAD_MAX + 2 {
        let (_, batch) = cluster.propose().expect("the leader takes proposals");
        // A batch the follower can take arrives within one trip: the fetch waits at the
        // leader (a trip for the answer, and for the next fetch while its own answer ran).
        trip_with_only_the_leader_syncing(&mut cluster, leader);
        trip_with_only_the_leader_syncing(&mut cluster, leader);
        if count <= FETCH_ANSWERS_AHEAD_MAX + 1 {
            assert_eq!(
                written(&cluster),
                batch.meta.last_index,
                "batch {count} reached the follower, nothing of it durable there"
            );
        } else {
            // No more than that many answers beyond what is durable: the next fetch waits.
            assert!(
                written(&cluster) < batch.meta.last_index,
                "batch {count} reached a follower already {FETCH_ANSWERS_AHEAD_MAX} answers \
                 ahead of its disk"
            );
        }
    }
    // The oldest answer becomes durable: the follower fetches again and takes the last batch.
    let last = cluster.disks[&leader].written.last_index;
    cluster.sync_disk(follower);
    trip_with_only_the_leader_syncing(&mut cluster, leader);
    trip_with_only_the_leader_syncing(&mut cluster, leader);
    assert_eq!(written(&cluster), last);
}

#[test]
fn an_isolated_node_does_not_bump_its_term_and_does_not_depose_the_leader_on_return() {
    let mut cluster = cluster(3);
    let leader = tick_until_leader(&mut cluster);
    let term = node(&cluster, leader).term();
    let loner = cluster
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("3 nodes");
    cluster.sides.insert(loner, 1);
    ticks(&mut cluster, 100);
    assert_eq!(
        node(&cluster, loner).term(),
        term,
        "pre-vote keeps the term"
    );
    cluster.sides.insert(loner, 0);
    ticks(&mut cluster, 100);
    assert_eq!(cluster.leader(), Some(leader));
    assert_eq!(node(&cluster, leader).term(), term);
}

#[test]
fn in_sync_voters_are_those_that_fetch_and_hold_everything_committed() {
    let mut cluster = cluster(3);
    let leader = tick_until_leader(&mut cluster);
    commit_one(&mut cluster);
    ticks(&mut cluster, 5);
    assert_eq!(node(&cluster, leader).in_sync_voters(), cluster.ids());
    let follower = cluster
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("3 nodes");
    assert!(
        node(&cluster, follower).in_sync_voters().is_empty(),
        "only a leader knows"
    );
    // Cut off for two election timeouts, the follower falls out; back, it catches up and in.
    cluster.sides.insert(follower, 1);
    let (_, batch) = cluster.propose().expect("a leader takes proposals");
    tick_until(&mut cluster, "a commit by the other two", |cluster| {
        node(cluster, leader).commit_index() >= batch.meta.last_index
    });
    ticks(&mut cluster, 45);
    let without: Vec<NodeId> = cluster
        .ids()
        .into_iter()
        .filter(|id| *id != follower)
        .collect();
    assert_eq!(node(&cluster, leader).in_sync_voters(), without);
    cluster.sides.insert(follower, 0);
    tick_until(&mut cluster, "the follower back in sync", |cluster| {
        node(cluster, leader).in_sync_voters().len() == 3
    });
}

#[test]
fn a_leader_cut_off_from_the_majority_steps_down_and_the_majority_elects_another() {
    let mut cluster = cluster(3);
    let old_leader = tick_until_leader(&mut cluster);
    cluster.sides.insert(old_leader, 1);
    // Past one election timeout (its check-quorum), short of two (its own campaign).
    ticks(&mut cluster, 15);
    assert_eq!(
        node(&cluster, old_leader).role(),
        RoleKind::Follower,
        "check-quorum"
    );
    let new_leader = tick_until_leader(&mut cluster);
    assert_ne!(new_leader, old_leader);
}

/// When a broker dies, the groups it led elect at once, and each vote counts only once the
/// voter has written it: behind a thousand other groups' writes that can take longer than an
/// election timeout. Candidates that gave up at every timeout would campaign forever (each
/// time with a new term to write); backing off lets one wait long enough.
#[test]
fn a_group_whose_votes_take_longer_than_an_election_timeout_still_elects() {
    let mut cluster = cluster(3);
    let old_leader = tick_until_leader(&mut cluster);
    cluster.crash(old_leader);
    // Every message from now on takes up to four minimum election timeouts (a vote's round
    // trip up to eight; without the backoff no candidate ever waits that long here).
    cluster.faults.delay_ticks_max = 40;
    let new_leader = tick_until_leader(&mut cluster);
    assert_ne!(new_leader, old_leader);
}

/// A voter that still hears from the leader refuses another's pre-vote and names the leader it
/// follows. That is no sign of the leader's life to the refused node: it keeps campaigning, so
/// when the leader then dies it is elected a window later, not sent back to wait for the dead
/// leader (which, between a dead leader's two followers refusing each other in turn, stretched
/// a 3 000-partition failover by seconds).
#[test]
fn a_pre_vote_refused_with_the_leaders_name_does_not_send_the_node_back_to_wait() {
    let mut cluster = cluster(3);
    let leader = tick_until_leader(&mut cluster);
    commit_one(&mut cluster);
    let followers: Vec<NodeId> = cluster
        .ids()
        .into_iter()
        .filter(|id| *id != leader)
        .collect();
    let (cut, other) = (followers[0], followers[1]);
    // The leader's messages to `cut` are lost; `other` keeps hearing from the leader.
    let mut campaigned_at = None;
    for tick in 0..TICKS_MAX {
        cluster
            .network
            .retain(|message| !(message.from == leader && message.to == cut));
        cluster.tick_synced();
        if node(&cluster, cut).role() == RoleKind::PreCandidate {
            campaigned_at = Some(tick);
            break;
        }
    }
    assert!(campaigned_at.is_some(), "the cut-off node campaigns");
    // Its pre-vote's round trip: `other`, in the leader's lease, refuses and names the leader.
    for _ in 0..3 {
        cluster
            .network
            .retain(|message| !(message.from == leader && message.to == cut));
        cluster.tick_synced();
    }
    assert_eq!(node(&cluster, other).leader(), Some(leader));
    assert_eq!(
        node(&cluster, cut).role(),
        RoleKind::PreCandidate,
        "still campaigning, not following a leader it does not hear from"
    );
    // The leader dies: the campaigning node is elected within one election window (twice the
    // minimum timeout) and the messages' trips.
    cluster.crash(leader);
    let window = 2 * cluster.election_timeout_ticks_min + 6;
    let mut elected = None;
    for _ in 0..window {
        cluster.tick_synced();
        elected = cluster.leader().filter(|id| *id != leader);
        if elected.is_some() {
            break;
        }
    }
    assert!(
        elected.is_some(),
        "a new leader within {window} ticks of the leader's death"
    );
}

#[test]
fn a_leader_announces_itself_to_a_dead_member_less_and_less_often_and_finds_it_again() {
    let mut cluster = cluster(3);
    let leader = tick_until_leader(&mut cluster);
    commit_one(&mut cluster);
    let dead = *cluster
        .ids()
        .iter()
        .find(|id| **id != leader)
        .expect("three nodes");
    cluster.crash(dead);
    // Every message leaves at one tick and is delivered (here: dropped) at the next, so each
    // is counted once.
    let timeouts = 20;
    let window = timeouts * cluster.election_timeout_ticks_min;
    let mut announcements = 0;
    for _ in 0..window {
        cluster.tick_synced();
        announcements += cluster
            .network
            .iter()
            .filter(|sent| {
                sent.from == leader
                    && sent.to == dead
                    && matches!(sent.message, Message::BeginEpoch { .. })
            })
            .count();
    }
    // At first every 3 ticks, doubling up to two election timeouts: a few at the start, then
    // one per two timeouts (every 3 ticks throughout was 66).
    let most = timeouts / 2 + 4;
    assert!(
        (timeouts as usize / 2..=most as usize).contains(&announcements),
        "{announcements} announcements to the dead member in {timeouts} election timeouts \
         (expected {} to {most})",
        timeouts / 2
    );
    // Back, it follows the leader within the election timeouts its campaign and the answers
    // take.
    cluster.restart(dead);
    tick_until(
        &mut cluster,
        "the restarted member follows the leader",
        |cluster| cluster.node(dead).and_then(|node| node.leader()) == Some(leader),
    );
    assert_eq!(cluster.leader(), Some(leader), "the leader kept its lease");
}

#[test]
fn a_follower_truncates_its_divergent_tail_to_the_leaders_epoch_end_and_catches_up() {
    let mut cluster = cluster(3);
    let shared = [(1, 3, 1)];
    install(&mut cluster, 1, 3, &[shared[0], (4, 5, 3)]);
    install(&mut cluster, 2, 3, &[shared[0], (4, 5, 3)]);
    // Node 3 holds term-2 entries nobody else has: it cannot win, and must lose them.
    install(&mut cluster, 3, 2, &[shared[0], (4, 6, 2), (7, 8, 2)]);
    let leader = tick_until_leader(&mut cluster);
    assert_ne!(leader, 3, "a less up-to-date log cannot win");
    commit_one(&mut cluster);
    let disk = &cluster.disks[&3].durable;
    assert!(
        disk.batches.values().all(|batch| batch.meta.term != 2),
        "term 2 entries are gone"
    );
    assert_eq!(disk.term_at(5), Some(3));
    assert_same_logs(&cluster, leader);
}

#[test]
fn a_follower_behind_the_leaders_log_start_restarts_its_log_there() {
    let mut cluster = cluster(3);
    let leader = tick_until_leader(&mut cluster);
    let lagging = cluster
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("3 nodes");
    commit_one(&mut cluster);
    cluster.crash(lagging);
    for _ in 0..5 {
        commit_one(&mut cluster);
    }
    // Retention on every live node: the lagging node's next fetch is below every log start.
    let log_start = cluster.disks[&leader].durable.last_index - 1;
    let log_start = cluster.disks[&leader]
        .durable
        .batch_containing(log_start)
        .expect("held")
        .meta
        .first_index;
    for id in cluster.ids().into_iter().filter(|id| *id != lagging) {
        let disk = cluster.disks.get_mut(&id).expect("known");
        disk.durable.remove_before(log_start);
        disk.written = disk.durable.clone();
        cluster
            .node_mut(id)
            .expect("live")
            .log_start_advanced(log_start);
    }
    cluster.restart(lagging);
    let batch = commit_one(&mut cluster);
    let disk = &cluster.disks[&lagging].durable;
    assert_eq!(disk.log_start, log_start);
    assert_eq!(disk.batch_containing(batch.meta.last_index), Some(&batch));
    assert_same_logs(&cluster, leader);
}

#[test]
fn leadership_moves_to_the_transfer_target_without_waiting_for_a_timeout() {
    let mut cluster = cluster(3);
    let leader = tick_until_leader(&mut cluster);
    let term = node(&cluster, leader).term();
    let target = cluster
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("3 nodes");
    commit_one(&mut cluster);
    let node_mut = cluster.node_mut(leader).expect("live");
    let effects = node_mut.transfer_leadership(target).expect("leader");
    assert_eq!(node_mut.propose(1).err(), Some(Refusal::TransferInProgress));
    cluster.apply(leader, effects, &[]);
    // Well within one election timeout (10 ticks): the lease of the others does not hold it up.
    ticks(&mut cluster, 6);
    assert_eq!(cluster.leader(), Some(target));
    assert_eq!(node(&cluster, target).term(), term + 1);
    commit_one(&mut cluster);
}

#[test]
fn a_learner_catches_up_becomes_a_voter_and_a_leader_can_remove_itself() {
    let mut cluster = cluster(3);
    let leader = tick_until_leader(&mut cluster);
    commit_one(&mut cluster);
    cluster.add_node(4, vec![1, 2, 3]);
    let leader_node = cluster.node_mut(leader).expect("live");
    assert_eq!(
        leader_node.promote(4).err(),
        Some(Refusal::InvalidMember { node: 4 }),
        "only a learner can be promoted"
    );
    let effects = leader_node.add_learner(4).expect("leader");
    cluster.apply(leader, effects, &[]);
    tick_until(&mut cluster, "the learner catches up", |cluster| {
        cluster
            .node(4)
            .is_some_and(|node| node.commit_index() >= node_commit(cluster, leader))
    });
    assert_eq!(
        node(&cluster, 4).voters(),
        &[1, 2, 3],
        "a learner does not vote"
    );
    ticks(&mut cluster, 3); // its next fetch tells the leader it has that durably
    let leader_node = cluster.node_mut(leader).expect("live");
    let effects = leader_node.promote(4).expect("caught up");
    assert_eq!(
        leader_node.remove_voter(4).err(),
        Some(Refusal::ChangeInProgress),
        "one change at a time"
    );
    cluster.apply(leader, effects, &[]);
    commit_one(&mut cluster);
    for node in cluster.live() {
        assert_eq!(node.voters(), &[1, 2, 3, 4], "node {}", node.id());
    }

    let effects = cluster
        .node_mut(leader)
        .expect("live")
        .remove_voter(leader)
        .expect("the previous change committed");
    cluster.apply(leader, effects, &[]);
    tick_until(
        &mut cluster,
        "a new leader without the old one",
        |cluster| cluster.leader().is_some_and(|new| new != leader),
    );
    assert_eq!(node(&cluster, leader).role(), RoleKind::Follower);
    let batch = commit_one(&mut cluster);
    let voters: Vec<NodeId> = [1, 2, 3, 4]
        .into_iter()
        .filter(|id| *id != leader)
        .collect();
    for id in &voters {
        assert_eq!(node(&cluster, *id).voters(), voters.as_slice());
        let stored = cluster.disks[id]
            .durable
            .batch_containing(batch.meta.last_index);
        assert_eq!(stored, Some(&batch));
    }
    // The removed leader keeps following, as an observer.
    tick_until(&mut cluster, "the removed node commits", |cluster| {
        node_commit(cluster, leader) >= batch.meta.last_index
    });
    assert_eq!(node(&cluster, leader).voters(), voters.as_slice());
}

fn node_commit(cluster: &Cluster, id: NodeId) -> u64 {
    cluster.node(id).map_or(0, |node| node.commit_index())
}

#[test]
fn a_restarted_node_recovers_its_voter_set_from_its_log_and_past_retention() {
    let mut cluster = cluster(3);
    let leader = tick_until_leader(&mut cluster);
    commit_one(&mut cluster);
    let follower = cluster
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("3 nodes");
    let effects = cluster
        .node_mut(leader)
        .expect("live")
        .remove_voter(follower)
        .expect("leader");
    cluster.apply(leader, effects, &[]);
    commit_one(&mut cluster);
    let remaining: Vec<NodeId> = cluster
        .ids()
        .into_iter()
        .filter(|id| *id != follower)
        .collect();
    let witness = remaining
        .iter()
        .copied()
        .find(|id| *id != leader)
        .expect("2 left");
    cluster.crash(witness);
    cluster.restart(witness);
    assert_eq!(node(&cluster, witness).voters(), remaining.as_slice());

    // Once retention has removed the voter-set entry, the set lives on as the log's base.
    let log_start = cluster.disks[&witness].durable.last_index + 1;
    let disk = cluster.disks.get_mut(&witness).expect("known");
    disk.durable.remove_before(log_start);
    disk.written = disk.durable.clone();
    cluster.crash(witness);
    cluster.restart(witness);
    assert_eq!(node(&cluster, witness).voters(), remaining.as_slice());
    assert_eq!(node(&cluster, witness).log().log_start, log_start);
    commit_one(&mut cluster);
}

#[test]
fn observers_follow_the_log_find_each_new_leader_and_count_for_nothing() {
    // Voters 1, 2 and 3; 4 and 5 are in no voter set.
    let mut cluster = Cluster::new(7, 3, 5, PERFECT, 10);
    let observers = [4, 5];
    let observers_commit = |cluster: &mut Cluster, batch: &Batch| {
        let last = batch.meta.last_index;
        tick_until(cluster, "the observers commit the batch", |cluster| {
            observers.iter().all(|id| node_commit(cluster, *id) >= last)
        });
        for id in observers {
            let stored = cluster.disks[&id].durable.batch_containing(last);
            assert_eq!(stored, Some(batch), "observer {id}");
            assert_eq!(node(cluster, id).voters(), &[1, 2, 3]);
        }
    };
    let leader = tick_until_leader(&mut cluster);
    assert!(leader <= 3);
    let batch = commit_one(&mut cluster);
    observers_commit(&mut cluster, &batch);

    // Nobody announces the next leader to them: they find it by asking the voters.
    cluster.crash(leader);
    let new_leader = tick_until_leader(&mut cluster);
    assert!(new_leader <= 3 && new_leader != leader);
    let batch = commit_one(&mut cluster);
    observers_commit(&mut cluster, &batch);
    for id in 1..=5 {
        let voted_for = cluster.disks[&id].hard_state.voted_for;
        assert!(
            voted_for.is_none_or(|voted| voted <= 3) && (id <= 3 || voted_for.is_none()),
            "node {id} voted for {voted_for:?}"
        );
    }

    // One voter and two observers are no majority: the voter neither leads nor commits.
    let voter = (1..=3)
        .find(|id| *id != leader && *id != new_leader)
        .expect("3 voters");
    cluster.crash(new_leader);
    ticks(&mut cluster, 100);
    assert_eq!(
        cluster.leader(),
        None,
        "voter {voter} leads with observers only"
    );
    for id in observers {
        assert_eq!(node(&cluster, id).role(), RoleKind::Follower);
    }
}
