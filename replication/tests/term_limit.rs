//! A partition replica over a real partition log facing terms past what a batch's leader epoch
//! (a signed 32-bit field) holds: a peer's vote request for such a term (one for a leadership
//! transfer, which passes the leader lease) is refused on receipt, and the leader goes on; a
//! state file left with such a term by an earlier version keeps the replica from starting
//! instead of making it lead into a term it cannot stamp; and a replica at the last term does
//! not campaign past it. Each used to end in a panic on the next leader's first entry, again
//! at every restart. One replica, driven tick by tick on one executor.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use engine::batch::{build, CheckedBatch};
use engine::{LogConfig, PartitionLog, SystemClock};
use ferrite_replication::replica::{Acks, Outbox, PartitionReplica, ReplicaConfig, ReplicaError};
use ferrite_replication::{Message, NodeId, RoleKind, TERM_MAX};

/// What the replica sent, kept for the test to look at.
#[derive(Default)]
struct Sent(RefCell<Vec<(NodeId, Message)>>);

impl Outbox for Sent {
    fn send(&self, to: NodeId, message: Message, _payload: Bytes) {
        self.0.borrow_mut().push((to, message));
    }
}

fn run<T: 'static>(future: impl std::future::Future<Output = T> + 'static) -> T {
    glommio::LocalExecutorBuilder::default()
        .make()
        .expect("a glommio executor starts")
        .run(future)
}

async fn open(
    dir: &Path,
    voters: Vec<NodeId>,
    sent: Rc<Sent>,
) -> Result<PartitionReplica, ReplicaError> {
    let config = LogConfig {
        segment_bytes_max: 64 << 10,
        preallocate_bytes: 64 << 10,
        ..LogConfig::default()
    };
    let log = PartitionLog::open(dir, config, Rc::new(SystemClock))
        .await
        .expect("the log opens");
    let config = ReplicaConfig {
        node_id: 1,
        initial_voters: voters,
        election_timeout_ticks_min: 10,
        begin_epoch_interval_ticks: 3,
        fetch_timeout_ticks: 5,
        fetch_wait_ticks: 2,
        fetch_bytes_max: 1 << 20,
        seed: 7,
        preferred_leader_check_ticks: 0,
    };
    PartitionReplica::open(config, dir.to_path_buf(), Rc::new(log), sent)
}

/// Ticks (letting the writer and the log's flushes run between ticks) until `done`.
async fn tick_until(replica: &PartitionReplica, what: &str, done: impl Fn() -> bool) {
    for _ in 0..1_000 {
        if done() {
            return;
        }
        replica.tick();
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    panic!("not within 1000 ticks: {what}");
}

async fn produce(replica: &PartitionReplica, value: &str) -> u64 {
    let bytes = BytesMut::from(
        &build::batch(&[build::TestRecord {
            key: None,
            value: value.as_bytes().to_vec(),
            timestamp_ms: 0,
        }])[..],
    );
    let batch = CheckedBatch::produced(bytes, usize::MAX).expect("a producer's batch");
    replica
        .produce(batch, Acks::Committed)
        .await
        .expect("the leader takes it")
        .base_offset
}

/// The state file as a replica of an earlier version left it: `term`, and `voters`.
fn write_state_file(dir: &Path, term: u64, voters: &[NodeId]) {
    let voters: Vec<String> = voters.iter().map(NodeId::to_string).collect();
    let state = format!(
        r#"{{"term":{term},"voted_for":1,"voters_base":[{}],"voter_changes":[]}}"#,
        voters.join(",")
    );
    std::fs::write(dir.join("raft-state.json"), state).unwrap();
}

#[test]
fn a_vote_request_past_the_last_term_is_refused_and_the_leader_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let sent = Rc::new(Sent::default());
        let replica = open(&path, vec![1], sent).await.unwrap();
        tick_until(&replica, "leading", || {
            replica.role() == RoleKind::Leader && replica.commit_index() > 0
        })
        .await;
        let term = replica.term();
        assert_eq!(produce(&replica, "before").await, 1);
        for far in [TERM_MAX + 1, u64::MAX] {
            // A leadership transfer's vote request passes the leader lease.
            let vote = Message::RequestVote {
                term: far,
                last_index: 1_000,
                last_term: 1,
                transfer: true,
            };
            replica.receive(2, vote, Bytes::new());
        }
        for _ in 0..30 {
            replica.tick();
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(replica.term(), term, "the term stayed");
        assert_eq!(replica.role(), RoleKind::Leader);
        assert_eq!(produce(&replica, "after").await, 2);
        assert_eq!(replica.stopped(), None);
        replica.stop("the test is over");
    });
    // Restarted, it goes on from the same term.
    let path = dir.path().to_path_buf();
    run(async move {
        let replica = open(&path, vec![1], Rc::new(Sent::default()))
            .await
            .unwrap();
        tick_until(&replica, "leading again", || {
            replica.role() == RoleKind::Leader && replica.commit_index() > 3
        })
        .await;
        assert!(replica.term() <= TERM_MAX);
        assert_eq!(produce(&replica, "restarted").await, 4);
        replica.stop("the test is over");
    });
}

#[test]
fn a_state_file_past_the_last_term_keeps_the_replica_from_starting() {
    let dir = tempfile::tempdir().unwrap();
    write_state_file(dir.path(), TERM_MAX + 1, &[1]);
    let path = dir.path().to_path_buf();
    run(async move {
        match open(&path, vec![1], Rc::new(Sent::default())).await {
            Err(ReplicaError::TermPastMax { term }) => assert_eq!(term, TERM_MAX + 1),
            Err(error) => panic!("refused for another reason: {error}"),
            Ok(_) => panic!("a replica started at a term no batch can carry"),
        }
    });
}

#[test]
fn a_replica_at_the_last_term_does_not_campaign_past_it() {
    // Alone, it would win at once; with others, it would ask them for votes.
    for voters in [vec![1], vec![1, 2, 3]] {
        let dir = tempfile::tempdir().unwrap();
        write_state_file(dir.path(), TERM_MAX, &voters);
        let path = dir.path().to_path_buf();
        run(async move {
            let sent = Rc::new(Sent::default());
            let replica = open(&path, voters.clone(), sent.clone()).await.unwrap();
            for _ in 0..100 {
                replica.tick();
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            assert_eq!(replica.term(), TERM_MAX, "voters {voters:?}");
            assert_eq!(replica.role(), RoleKind::Follower, "voters {voters:?}");
            assert_eq!(replica.stopped(), None);
            let campaigned = sent.0.borrow().iter().any(|(_, message)| {
                matches!(
                    message,
                    Message::PreVote { .. } | Message::RequestVote { .. }
                )
            });
            assert!(
                !campaigned,
                "voters {voters:?}: no election past the last term"
            );
            replica.stop("the test is over");
        });
    }
}
