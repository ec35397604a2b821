//! What a group refuses, one behaviour per test on a network without faults: messages naming a
//! term past the last leader epoch (a batch's 32-bit field) are dropped unread, a group at that
//! term elects no one past it, and a voter that lost committed entries to damage on disk votes
//! only for a candidate that holds them.

mod common;

use common::faultless::*;
use common::Cluster;
use ferrite_replication::{
    Effects, EntryKind, EntryMeta, FetchResult, Message, NodeId, Term, TermLimit, TERM_MAX,
};

/// Every kind of message, from a peer in `term`, each naming `far` in one of its term fields
/// (its own term, or a log position's).
fn messages_naming(term: Term, far: Term) -> Vec<Message> {
    let fetch_response = |last_fetched_term, result| Message::FetchResponse {
        term,
        leader: 3,
        commit_index: 0,
        fetch_index: 1,
        last_fetched_term,
        result,
    };
    vec![
        Message::PreVote {
            term: far,
            last_index: 1_000,
            last_term: 1,
        },
        Message::PreVote {
            term: term + 1,
            last_index: 1_000,
            last_term: far,
        },
        Message::PreVoteResponse {
            term: far,
            granted: true,
        },
        // A vote request for a leadership transfer passes the leader lease.
        Message::RequestVote {
            term: far,
            last_index: 1_000,
            last_term: 1,
            transfer: true,
        },
        Message::RequestVote {
            term: term + 1,
            last_index: 1_000,
            last_term: far,
            transfer: true,
        },
        Message::RequestVoteResponse {
            term: far,
            granted: false,
        },
        Message::BeginEpoch {
            term: far,
            leader: 3,
        },
        Message::Fetch {
            term: far,
            fetch_index: 1,
            last_fetched_term: 0,
            durable_index: 0,
        },
        Message::Fetch {
            term,
            fetch_index: 2,
            last_fetched_term: far,
            durable_index: 0,
        },
        Message::Durable {
            term: far,
            fetch_index: 1,
            last_fetched_term: 0,
            durable_index: 0,
        },
        Message::Durable {
            term,
            fetch_index: 2,
            last_fetched_term: far,
            durable_index: 1,
        },
        fetch_response(far, FetchResult::Entries { entries: vec![] }),
        fetch_response(
            0,
            FetchResult::Entries {
                entries: vec![EntryMeta {
                    first_index: 1,
                    last_index: 1,
                    term: far,
                    kind: EntryKind::Records,
                }],
            },
        ),
        fetch_response(
            0,
            FetchResult::Diverging {
                end_index: 1,
                term: far,
            },
        ),
        fetch_response(
            0,
            FetchResult::SnapshotNeeded {
                log_start: 10,
                prev_term: far,
                voters: vec![1, 2, 3],
            },
        ),
        Message::TimeoutNow { term: far },
    ]
}

#[test]
fn a_message_naming_a_term_past_the_last_leader_epoch_is_refused_unread() {
    let mut cluster = cluster(3);
    let leader = tick_until_leader(&mut cluster);
    commit_one(&mut cluster);
    for far in [TERM_MAX + 1, u64::MAX] {
        for receiver in cluster.ids() {
            let sender = cluster
                .ids()
                .into_iter()
                .find(|id| *id != receiver)
                .unwrap();
            let term = node(&cluster, receiver).term();
            for message in messages_naming(term, far) {
                let node = node_mut(&mut cluster, receiver);
                let (role, commit, log) = (node.role(), node.commit_index(), node.log().clone());
                let effects = node.step(sender, message.clone());
                assert_eq!(
                    effects,
                    Effects {
                        term_limit: Some(TermLimit::PeerTerm {
                            from: sender,
                            term: far
                        }),
                        ..Effects::default()
                    },
                    "node {receiver} given {message:?}"
                );
                assert_eq!(
                    (node.term(), node.role(), node.commit_index(), node.log()),
                    (term, role, commit, &log),
                    "node {receiver} changed nothing for {message:?}"
                );
            }
        }
    }
    assert_eq!(cluster.leader(), Some(leader));
    commit_one(&mut cluster);
}

#[test]
fn a_group_at_the_last_term_elects_no_one_past_it() {
    let mut cluster = cluster(3);
    // One term short of the last one (as far as a broken peer could have pushed it).
    for id in cluster.ids() {
        install(&mut cluster, id, TERM_MAX - 1, &[]);
    }
    let leader = tick_until_leader(&mut cluster);
    assert_eq!(node(&cluster, leader).term(), TERM_MAX);
    commit_one(&mut cluster);
    // Its leader gone, the group cannot elect another: the next term would be past the last.
    cluster.crash(leader);
    let mut reported = Vec::new();
    for _ in 0..TICKS_MAX {
        cluster.now += 1;
        for id in cluster.ids() {
            if let Some(node) = cluster.node_mut(id) {
                let effects = node.tick();
                if effects.term_limit == Some(TermLimit::NoElection) {
                    reported.push(id);
                }
                let campaigning = effects.messages.iter().any(|envelope| {
                    matches!(
                        envelope.message,
                        Message::PreVote { .. } | Message::RequestVote { .. }
                    )
                });
                assert!(!campaigning, "node {id} campaigns at the last term");
                cluster.apply(id, effects, &[]);
            }
        }
        cluster.deliver_due(|_| {});
        for id in cluster.ids() {
            cluster.sync_all(id);
        }
    }
    assert!(cluster.live().all(|node| node.term() == TERM_MAX));
    assert_eq!(cluster.leader(), None);
    reported.sort_unstable();
    reported.dedup();
    assert_eq!(
        reported.len(),
        2,
        "each node that may not campaign says so: {reported:?}"
    );
}

/// Node `id`'s log loses every entry from `first_index` on to damage on disk; it gives them up.
fn discard_damaged(cluster: &mut Cluster, id: NodeId, first_index: u64) {
    let effects = cluster
        .node_mut(id)
        .expect("live")
        .discard_from(first_index)
        .expect("not the leader");
    cluster.apply(id, effects, &[]);
    cluster.sync_all(id);
}

#[test]
fn a_voter_that_lost_committed_entries_to_damage_votes_only_for_a_candidate_that_has_them() {
    let mut cluster = cluster(3);
    let leader = tick_until_leader(&mut cluster);
    commit_one(&mut cluster);
    let others: Vec<NodeId> = cluster
        .ids()
        .into_iter()
        .filter(|id| *id != leader)
        .collect();
    let (holder, lacking) = (others[0], others[1]);
    // The leader and `holder` commit a batch `lacking` never sees.
    cluster.sides.insert(lacking, 1);
    let (_, batch) = cluster.propose().expect("a leader takes proposals");
    tick_until(&mut cluster, "the batch committed by two", |cluster| {
        node(cluster, holder).commit_index() >= batch.meta.last_index
    });
    let before = (
        node(&cluster, holder).term_at(batch.meta.last_index),
        batch.meta.last_index,
    );
    assert!(
        cluster
            .node_mut(leader)
            .expect("live")
            .discard_from(batch.meta.first_index)
            .is_none(),
        "a leader never removes its own entries"
    );
    discard_damaged(&mut cluster, holder, batch.meta.first_index);
    assert_eq!(
        node(&cluster, holder).log().last_index,
        batch.meta.first_index - 1,
        "the damaged entries are no longer counted as held"
    );
    assert_eq!(
        node(&cluster, holder).vote_floor(),
        Some((before.0.expect("held"), before.1))
    );
    // The leader dies and the node without the batch comes back: it campaigns, and the
    // holder, which counted for the batch's commit, must not vote it in.
    cluster.crash(leader);
    cluster.sides.insert(lacking, 0);
    ticks(&mut cluster, 20 * 10);
    assert_eq!(
        cluster.leader(),
        None,
        "no leader without the committed batch"
    );
    // The old leader returns with the batch: it wins, and the holder fetches the batch again.
    cluster.restart(leader);
    assert_eq!(tick_until_leader(&mut cluster), leader);
    commit_one(&mut cluster);
    assert_same_logs(&cluster, leader);
    assert_eq!(
        cluster.disks[&holder]
            .durable
            .batch_containing(batch.meta.last_index),
        Some(&batch)
    );
    assert_eq!(
        node(&cluster, holder).vote_floor(),
        None,
        "back where it was"
    );
}
