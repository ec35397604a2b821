//! The cluster control plane (`ferrite_replication::cluster`) driven in-process, as the Kafka
//! handlers drive it: brokers of engine shards joined with `cluster::start_shard`, asked
//! through a shard's `ShardCluster`. What a client would see: a topic it creates gets a
//! replica on each broker the controller chose and a leader every broker agrees on, the
//! first FindCoordinator has `__consumer_offsets` made (and then names its leader), refused
//! changes come back as the controller's typed refusal, deleted topics go from every broker,
//! and a transaction's marker reaches a partition led by another broker (answered per
//! partition: unknown partitions and brokers that do not lead refused as such, a stopped broker
//! timed out; a partition of `__consumer_offsets` handed to the writer the layer above gave its
//! leader).

mod support;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

use engine::batch::{read_transaction_marker, BatchHeader, TransactionMarker};
use engine::catalog::OFFSETS_TOPIC;
use engine::shard::listen::ListenReservation;
use engine::shard::PartitionId;
use ferrite_replication::cluster::{
    ClusterBroker as Broker, ClusterChangeError, MarkerOutcome, MarkerRefusal, PartitionPlacement,
};
use ferrite_replication::controller::ControllerError;
use ferrite_replication::metadata::PlanError;
use support::cluster_broker::ClusterBroker;
use support::{loopback_peers, wait_until};

const OFFSETS_PARTITIONS: u32 = 2;

/// Brokers 1..=`count`, with their inter-broker addresses held until the test ends.
fn start_cluster(dir: &Path, count: u64) -> (Vec<ListenReservation>, Vec<ClusterBroker>) {
    let (reservations, peers) = loopback_peers(count);
    let brokers = (1..=count)
        .map(|node_id| {
            let data = dir.join(format!("broker-{node_id}"));
            std::fs::create_dir_all(&data).unwrap();
            ClusterBroker::start(node_id, data, peers.clone(), OFFSETS_PARTITIONS)
        })
        .collect();
    (reservations, brokers)
}

fn placement(broker: &ClusterBroker, topic: &str, partition: u32) -> Option<PartitionPlacement> {
    let topic = topic.to_owned();
    broker.look(move |cluster| cluster.placement(&topic, partition))
}

/// Waits until `broker` places every partition of `topic` (`count` of them) on `replicas`
/// brokers with a leader, and returns the leaders.
fn leaders_of(broker: &ClusterBroker, topic: &str, count: u32, replicas: usize) -> Vec<i32> {
    (0..count)
        .map(|partition| {
            wait_until(&format!("a leader of {topic}/{partition}"), || {
                let placement = placement(broker, topic, partition)?;
                assert_eq!(placement.replicas.len(), replicas, "{placement:?}");
                assert!(placement.replicas.contains(&placement.leader?));
                placement.leader
            })
        })
        .collect()
}

fn create_topic(
    broker: &ClusterBroker,
    name: &str,
    partitions: u32,
) -> Result<(), ClusterChangeError> {
    let name = name.to_owned();
    broker.ask(move |cluster| cluster.create_topic(name, partitions, None, BTreeMap::new()))
}

fn coordinator(broker: &ClusterBroker, offsets_partition: u32) -> Option<Broker> {
    broker.look(move |cluster| cluster.group_coordinator(offsets_partition, "PLAINTEXT"))
}

#[test]
fn a_single_broker_creates_topics_leads_them_and_refuses_what_the_controller_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let (_reservations, mut brokers) = start_cluster(dir.path(), 1);
    let broker = &brokers[0];
    // Until its registration is applied the broker lists only itself, but the controller
    // places nothing on it yet (as a client that creates a topic right away would hear).
    wait_until("the broker's registration", || {
        let live = broker.look(|cluster| cluster.state().image().live_brokers().count());
        (live == 1).then_some(())
    });

    create_topic(broker, "orders", 3).unwrap();
    let topic = broker.catalog.topics().get("orders").cloned().unwrap();
    assert_eq!(topic.partitions, 3);
    assert_eq!(leaders_of(broker, "orders", 3, 1), vec![1, 1, 1]);
    // The shard times its replication clock's ticks (`/metrics` shows how late they ran).
    wait_until("the clock's ticks timed", || {
        let timed = broker.look(|cluster| cluster.replication_stats().tick_lateness.count);
        (timed > 0).then_some(())
    });
    assert_eq!(
        broker.look(|cluster| cluster.brokers("PLAINTEXT")),
        Some(vec![Broker {
            node_id: 1,
            host: "127.0.0.1".into(),
            port: 9001
        }])
    );

    // The controller's refusals, as they are (net turns them into Kafka codes).
    assert!(matches!(
        create_topic(broker, "orders", 1),
        Err(ClusterChangeError::Controller(ControllerError::Refused(
            PlanError::TopicAlreadyExists(name)
        ))) if name == "orders"
    ));
    assert!(matches!(
        broker.ask(|cluster| cluster.delete_topic("missing".into())),
        Err(ClusterChangeError::Controller(ControllerError::Refused(
            PlanError::UnknownTopic(_)
        )))
    ));
    assert!(matches!(
        broker.ask(|cluster| cluster.reassign("orders".into(), 0, Some(vec![-1]))),
        Err(ClusterChangeError::NegativeBrokerId)
    ));

    // The first FindCoordinator finds no `__consumer_offsets`, has it made, and is told to
    // retry; the broker then coordinates every group (it leads every partition).
    assert_eq!(coordinator(broker, 0), None);
    let found = wait_until("a group coordinator", || coordinator(broker, 1));
    assert_eq!(found.node_id, 1);
    let offsets = broker.catalog.topics().get(OFFSETS_TOPIC).cloned().unwrap();
    assert_eq!(offsets.partitions, OFFSETS_PARTITIONS);
    leaders_of(broker, OFFSETS_TOPIC, OFFSETS_PARTITIONS, 1);

    broker
        .ask(|cluster| cluster.delete_topic("orders".into()))
        .unwrap();
    assert!(broker.catalog.topics().get("orders").is_none());
    assert_eq!(placement(broker, "orders", 0), None);

    brokers.pop().unwrap().stop();
}

#[test]
fn three_brokers_agree_on_replicas_and_leaders_of_topics_any_of_them_creates() {
    let dir = tempfile::tempdir().unwrap();
    let (_reservations, brokers) = start_cluster(dir.path(), 3);
    wait_until("three live brokers", || {
        (brokers[1]
            .look(|cluster| cluster.brokers("PLAINTEXT"))
            .is_some_and(|live| live.len() == 3))
        .then_some(())
    });

    // Asked of broker 2, whichever broker leads the controller; three replicas each (the
    // cluster's default replication factor here).
    // Every broker names each partition's preferred replica (its first) as its leader, as
    // Kafka leads a new partition: it campaigns first, and takes the leadership over if a
    // broker that hosted the partition sooner won it meanwhile (a loaded machine).
    create_topic(&brokers[1], "orders", 2).unwrap();
    for broker in &brokers {
        wait_until(
            "every broker to name the preferred replicas as leaders",
            || {
                let led_by_preferred = (0..2).all(|partition| {
                    placement(broker, "orders", partition).is_some_and(|placement| {
                        assert_eq!(placement.replicas.len(), 3, "{placement:?}");
                        placement.leader == placement.replicas.first().copied()
                    })
                });
                led_by_preferred.then_some(())
            },
        );
        let topic = broker.catalog.topics().get("orders").cloned();
        assert_eq!(topic.map(|topic| topic.partitions), Some(2));
    }

    brokers[2]
        .ask(|cluster| cluster.create_partitions("orders".into(), 4))
        .unwrap();
    for broker in &brokers {
        wait_until("the new partitions everywhere", || {
            let topic = broker.catalog.topics().get("orders").cloned()?;
            (topic.partitions == 4).then_some(())
        });
        leaders_of(broker, "orders", 4, 3);
    }

    // `__consumer_offsets` with Kafka's three replicas; every broker names the same
    // coordinator for a group's partition.
    let found = wait_until("a group coordinator", || coordinator(&brokers[0], 0));
    for broker in &brokers {
        let named = wait_until("the same coordinator", || coordinator(broker, 0));
        assert_eq!(named, found);
        leaders_of(broker, OFFSETS_TOPIC, OFFSETS_PARTITIONS, 3);
    }

    for broker in brokers {
        broker.stop();
    }
}

/// The batches of `partition` on `broker` (its leader, or it refuses), with the marker each
/// holds.
fn batches_of(
    broker: &ClusterBroker,
    partition: PartitionId,
) -> Vec<(BatchHeader, Option<TransactionMarker>)> {
    let bytes = broker.ask_shard(move |_, context| {
        Box::pin(async move {
            let read = context.read(partition, 0, 1 << 20).await.unwrap();
            read.data.to_vec().unwrap()
        })
    });
    let mut batches = Vec::new();
    let mut rest = &bytes[..];
    while let Some(header) = BatchHeader::parse(rest) {
        let size = header.size_bytes as usize;
        batches.push((header, read_transaction_marker(&rest[..size]).unwrap()));
        rest = &rest[size..];
    }
    batches
}

#[test]
fn a_transaction_marker_reaches_a_partition_led_by_another_broker() {
    let dir = tempfile::tempdir().unwrap();
    let (_reservations, brokers) = start_cluster(dir.path(), 3);
    wait_until("three live brokers", || {
        (brokers[0]
            .look(|cluster| cluster.brokers("PLAINTEXT"))
            .is_some_and(|live| live.len() == 3))
        .then_some(())
    });
    create_topic(&brokers[0], "orders", 1).unwrap();
    // Once every broker names the same leader (a broker that knows none names a guess).
    let leader = wait_until("every broker to agree on the leader", || {
        let named: Vec<i32> = brokers
            .iter()
            .map(|broker| leaders_of(broker, "orders", 1, 3)[0])
            .collect();
        named
            .iter()
            .all(|leader| *leader == named[0])
            .then_some(named[0])
    });
    // Asked of a broker that does not lead the partition; the third broker holds a
    // follower's replica.
    let index = |node_id: i32| usize::try_from(node_id - 1).unwrap();
    let asker = &brokers[index(leader % 3 + 1)];
    let follower = (leader + 1) % 3 + 1;
    let marker = TransactionMarker {
        producer_id: 42,
        producer_epoch: 1,
        coordinator_epoch: 5,
        committed: false,
    };
    let orders = PartitionId::new("orders", 0);
    let asked = vec![
        orders.clone(),
        PartitionId::new("missing", 0),
        PartitionId::new("orders", 7),
    ];
    let outcomes: Vec<MarkerOutcome> = asker
        .ask(move |cluster| Box::pin(async move { cluster.write_markers(marker, asked).await }));
    assert_eq!(
        outcomes,
        vec![
            Ok(()),
            Err(MarkerRefusal::UnknownPartition),
            Err(MarkerRefusal::UnknownPartition),
        ]
    );

    // At the leader: committed, as the leader's writer numbered it, in its term (after the
    // leader's own first entry).
    let term = placement(&brokers[index(leader)], "orders", 0)
        .unwrap()
        .leader_epoch;
    let batches = batches_of(&brokers[index(leader)], orders.clone());
    let markers: Vec<&(BatchHeader, Option<TransactionMarker>)> = batches
        .iter()
        .filter(|(_, found)| found.is_some())
        .collect();
    assert_eq!(markers.len(), 1, "{batches:?}");
    let (header, found) = markers[0];
    assert_eq!(*found, Some(marker));
    assert!(
        header.is_control() && header.is_transactional(),
        "{header:?}"
    );
    assert_eq!(header.leader_epoch, term);

    // A broker that does not lead the partition refuses it, naming the leader; one that does
    // not know the partition says so.
    let (at_follower, at_leader) = asker.ask(move |cluster| {
        Box::pin(async move {
            let follower = u64::try_from(follower).unwrap();
            let leader = u64::try_from(leader).unwrap();
            let at_follower = cluster
                .write_markers_at(follower, marker, vec![orders])
                .await;
            let missing = vec![PartitionId::new("missing", 0)];
            let at_leader = cluster.write_markers_at(leader, marker, missing).await;
            (at_follower, at_leader)
        })
    });
    assert_eq!(
        at_follower,
        vec![Err(MarkerRefusal::NotLeader {
            leader_hint: Some(u64::try_from(leader).unwrap())
        })]
    );
    assert_eq!(at_leader, vec![Err(MarkerRefusal::UnknownPartition)]);

    // A `__consumer_offsets` partition's marker goes to the writer the layer above gave its
    // leader (the groups' coordinator there), which answers for it.
    let coordinator = wait_until("every broker to agree on a group coordinator", || {
        let named: Vec<Option<Broker>> = brokers
            .iter()
            .map(|broker| coordinator(broker, 0))
            .collect();
        named
            .iter()
            .all(|found| *found == named[0])
            .then_some(named[0].clone())?
    });
    let offsets_leader = &brokers[index(coordinator.node_id)];
    let (outcomes, handed) = offsets_leader.ask(move |cluster| {
        Box::pin(async move {
            let handed = Rc::new(RefCell::new(Vec::new()));
            let seen = handed.clone();
            cluster.set_offsets_marker_writer(Rc::new(move |partition, marker| {
                seen.borrow_mut().push((partition, marker));
                Box::pin(std::future::ready(Err(MarkerRefusal::GroupCoordinator {
                    code: 14,
                    message: "loading".into(),
                })))
            }));
            let asked = vec![PartitionId::new(OFFSETS_TOPIC, 0)];
            let outcomes = cluster.write_markers(marker, asked).await;
            let handed = handed.borrow().clone();
            (outcomes, handed)
        })
    });
    assert_eq!(handed, vec![(0, marker)]);
    assert_eq!(
        outcomes,
        vec![Err(MarkerRefusal::GroupCoordinator {
            code: 14,
            message: "loading".into()
        })]
    );

    // A broker that stopped answers nothing: its partitions time out, while the leader, with
    // a majority left, still writes.
    let mut brokers: Vec<Option<ClusterBroker>> = brokers.into_iter().map(Some).collect();
    brokers[index(follower)].take().unwrap().stop();
    let asker = brokers[index(leader % 3 + 1)].as_ref().unwrap();
    let (at_stopped, at_leader) = asker.ask(move |cluster| {
        Box::pin(async move {
            let stopped = u64::try_from(follower).unwrap();
            let orders = PartitionId::new("orders", 0);
            let at_stopped = cluster
                .write_markers_at(stopped, marker, vec![orders.clone()])
                .await;
            let at_leader = cluster.write_markers(marker, vec![orders]).await;
            (at_stopped, at_leader)
        })
    });
    assert_eq!(at_stopped, vec![Err(MarkerRefusal::TimedOut)]);
    assert_eq!(at_leader, vec![Ok(())]);

    for broker in brokers.into_iter().flatten() {
        broker.stop();
    }
}
