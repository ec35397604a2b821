//! The controller over real metadata logs and the real transport: three brokers, each a glommio
//! executor on its own thread with its own data directory, talking over loopback TCP. They
//! register and are unfenced; a topic created through a follower appears, spread evenly, in
//! every broker's image; bad creations get Kafka's errors; a silent broker is fenced and
//! unfenced when it returns; the controller leader's crash costs nothing but a new election,
//! and the crashed broker rebuilds the same image from its log. Brokers beyond the voters
//! (observers) apply the same image, follow a new leader, and catch up when started late.
//! Producer ids come from blocks that no two brokers, and no two runs of one broker, share:
//! through restarts, the leader's crash and a broker whose data directory was wiped.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use ferrite_replication::controller::{
    ConfigChange, ConfigOperation, Controller, ControllerConfig, ControllerError,
    ControllerRequest, ControllerWire, ProducerIdPool, WireOutbox, VOTERS_DEFAULT_COUNT,
};
use ferrite_replication::metadata::{
    BrokerRegistration, ListenerEndpoint, MetadataImage, PlanError,
};
use ferrite_replication::transport::{Received, Transport, TransportConfig};
use ferrite_replication::{Index, NodeId};
use support::{loopback_peers, wait_until, DEADLINE};

const POLL: Duration = Duration::from_millis(10);
const SHARDS: u32 = 2;

/// Every start of a broker is a new incarnation.
static STARTS: AtomicU64 = AtomicU64::new(1);

/// What a broker thread reports every poll.
#[derive(Debug, Clone)]
struct Status {
    leader: bool,
    image: MetadataImage,
    /// Why the controller stopped, if it did (the test fails on it).
    stopped: Option<String>,
}

enum Command {
    /// Ask the controller; once answered, wait until this broker's image has applied it.
    Request {
        request: ControllerRequest,
        reply: mpsc::Sender<Result<Index, ControllerError>>,
    },
    /// Stop as a crash does: nothing closed, nothing flushed.
    Crash,
}

struct Broker {
    thread: Option<JoinHandle<()>>,
    commands: mpsc::Sender<Command>,
    status: Arc<Mutex<Option<Status>>>,
    /// This run's producer ids, as its Kafka handlers take them.
    producer_ids: Arc<ProducerIdPool>,
}

impl Broker {
    fn start(node_id: NodeId, dir: PathBuf, peers: BTreeMap<NodeId, SocketAddr>) -> Broker {
        let (commands, received) = mpsc::channel();
        let status = Arc::new(Mutex::new(None));
        let reported = status.clone();
        let producer_ids = Arc::new(ProducerIdPool::default());
        let pool = producer_ids.clone();
        let thread = std::thread::spawn(move || {
            glommio::LocalExecutorBuilder::default()
                .spawn(move || run_broker(node_id, dir, peers, received, reported, pool))
                .unwrap()
                .join()
                .unwrap();
        });
        Broker {
            thread: Some(thread),
            commands,
            status,
            producer_ids,
        }
    }

    /// `count` producer ids, each as soon as the broker has one.
    fn claim_producer_ids(&self, count: usize) -> Vec<i64> {
        (0..count)
            .map(|_| wait_until("a producer id", || self.producer_ids.claim()))
            .collect()
    }

    fn status(&self) -> Option<Status> {
        let status = self.status.lock().unwrap().clone();
        if let Some(reason) = status.as_ref().and_then(|status| status.stopped.as_ref()) {
            panic!("a controller stopped: {reason}");
        }
        status
    }

    fn image(&self) -> Option<MetadataImage> {
        self.status().map(|status| status.image)
    }

    fn request(&self, request: ControllerRequest) -> Result<Index, ControllerError> {
        let (reply, answer) = mpsc::channel();
        self.commands
            .send(Command::Request { request, reply })
            .unwrap();
        answer.recv_timeout(DEADLINE).expect("an answer")
    }

    fn crash(mut self) {
        self.commands.send(Command::Crash).unwrap();
        self.thread.take().unwrap().join().unwrap();
    }
}

fn config(node_id: NodeId, dir: PathBuf, peers: &BTreeMap<NodeId, SocketAddr>) -> ControllerConfig {
    let start = STARTS.fetch_add(1, Ordering::Relaxed);
    let registration = BrokerRegistration {
        node_id,
        incarnation: start,
        endpoints: vec![ListenerEndpoint {
            listener: Some("PLAINTEXT".to_owned()),
            host: "127.0.0.1".to_owned(),
            port: 9000 + node_id as u16,
        }],
        rpc_address: peers[&node_id].to_string(),
        shard_count: SHARDS,
    };
    let seed = node_id * 7919 + start * 104_729 + u64::from(std::process::id());
    let mut config = ControllerConfig::new(
        registration,
        peers.keys().copied(),
        VOTERS_DEFAULT_COUNT,
        dir,
        seed,
    );
    config.replica.election_timeout_ticks_min = 30;
    config.replica.begin_epoch_interval_ticks = 5;
    config.replica.fetch_timeout_ticks = 20;
    config.replica.fetch_wait_ticks = 10;
    config.heartbeat_interval = Duration::from_millis(100);
    config.session_timeout = Duration::from_millis(1500);
    config.liveness_check_interval = Duration::from_millis(100);
    config.attempt_timeout = Duration::from_millis(500);
    config.request_timeout = Duration::from_secs(10);
    config
}

async fn run_broker(
    node_id: NodeId,
    dir: PathBuf,
    peers: BTreeMap<NodeId, SocketAddr>,
    commands: mpsc::Receiver<Command>,
    status: Arc<Mutex<Option<Status>>>,
    producer_ids: Arc<ProducerIdPool>,
) {
    let slot: Rc<std::cell::RefCell<Option<Controller>>> = Default::default();
    let mut transport_config =
        TransportConfig::new("test", node_id, 0, peers[&node_id], peers.clone());
    transport_config.backoff_max = Duration::from_millis(100);
    let transport = Rc::new(
        Transport::<ControllerWire>::start(transport_config, {
            let slot = slot.clone();
            move |received: Received<ControllerWire>| {
                if let Some(controller) = &*slot.borrow() {
                    controller.receive(received.from_node, received.message, received.payload);
                }
            }
        })
        .unwrap(),
    );
    let outbox: Rc<dyn WireOutbox> = transport.clone();
    let controller = Controller::open(config(node_id, dir, &peers), outbox, producer_ids)
        .await
        .unwrap();
    *slot.borrow_mut() = Some(controller.clone());
    loop {
        glommio::timer::sleep(POLL).await;
        *status.lock().unwrap() = Some(Status {
            leader: controller.is_leader(),
            image: controller.image().borrow().clone(),
            stopped: controller.stopped(),
        });
        while let Ok(command) = commands.try_recv() {
            match command {
                Command::Request { request, reply } => {
                    let controller = controller.clone();
                    glommio::spawn_local(async move {
                        let mut answer = controller.request(request).await;
                        if let Ok(index) = answer {
                            answer = controller.wait_applied(index).await.map(|()| index);
                        }
                        let _ = reply.send(answer);
                    })
                    .detach();
                }
                Command::Crash => {
                    controller.stop("crash");
                    *slot.borrow_mut() = None;
                    transport.close().await;
                    return;
                }
            }
        }
    }
}

/// The one broker that leads the controller group.
fn leader_of(brokers: &BTreeMap<NodeId, Broker>) -> Option<NodeId> {
    let leaders: Vec<NodeId> = brokers
        .iter()
        .filter(|(_, broker)| broker.status().is_some_and(|status| status.leader))
        .map(|(id, _)| *id)
        .collect();
    match leaders.as_slice() {
        [leader] => Some(*leader),
        _ => None,
    }
}

/// The brokers the image lists as registered and unfenced.
fn live_brokers(image: &MetadataImage) -> Vec<NodeId> {
    image.live_brokers().map(|broker| broker.node_id).collect()
}

/// Every broker's image, if they are all the same.
fn common_image(brokers: &BTreeMap<NodeId, Broker>) -> Option<MetadataImage> {
    let images: Vec<MetadataImage> = brokers.values().map(Broker::image).collect::<Option<_>>()?;
    images
        .windows(2)
        .all(|pair| pair[0] == pair[1])
        .then(|| images[0].clone())
}

fn create_topic(name: &str, partitions: i32, replication_factor: i16) -> ControllerRequest {
    ControllerRequest::CreateTopic {
        name: name.to_owned(),
        partitions,
        replication_factor,
        configs: vec![("retention.ms".to_owned(), "60000".to_owned())],
    }
}

#[test]
fn three_controllers_register_create_fence_and_survive_the_leaders_crash() {
    let dirs: BTreeMap<NodeId, tempfile::TempDir> = (1..=3)
        .map(|id| (id, tempfile::tempdir().unwrap()))
        .collect();
    let (reservations, peers) = loopback_peers(3);
    let start = |id: NodeId| Broker::start(id, dirs[&id].path().to_path_buf(), peers.clone());
    let mut brokers: BTreeMap<NodeId, Broker> = (1..=3).map(|id| (id, start(id))).collect();

    // All three register, and every image lists them unfenced.
    wait_until("every broker registered and unfenced everywhere", || {
        common_image(&brokers).filter(|image| live_brokers(image) == vec![1, 2, 3])
    });

    // A topic created through a follower (forwarded to the leader) appears everywhere, spread
    // evenly over brokers and their shards.
    let leader = wait_until("a controller leader", || leader_of(&brokers));
    let follower = *brokers.keys().find(|id| **id != leader).unwrap();
    let index = brokers[&follower]
        .request(create_topic("orders", 6, 3))
        .expect("created");
    let image = wait_until("the topic in every image", || {
        common_image(&brokers).filter(|image| image.last_applied_index() >= index)
    });
    let topic = image.topic("orders").expect("the topic exists");
    assert_eq!(topic.partitions.len(), 6);
    assert_eq!(topic.configs["retention.ms"], "60000");
    for node_id in 1..=3 {
        let leaderships = (0..6)
            .filter(|&p| topic.preferred_leader(p).map(|r| r.node_id) == Some(node_id))
            .count();
        assert_eq!(leaderships, 2, "broker {node_id} leads two partitions");
        for shard in 0..SHARDS {
            assert_eq!(
                image.hosted_partitions(node_id, shard).count(),
                3,
                "broker {node_id} shard {shard} hosts three replicas"
            );
        }
    }
    assert_eq!(
        brokers[&follower].request(create_topic("orders", 1, 1)),
        Err(ControllerError::Refused(PlanError::TopicAlreadyExists(
            "orders".to_owned()
        )))
    );
    assert!(matches!(
        brokers[&follower].request(create_topic("wide", 1, 4)),
        Err(ControllerError::Refused(
            PlanError::InvalidReplicationFactor {
                requested: 4,
                live_brokers: 3
            }
        ))
    ));

    // A follower goes silent: the others fence it. It comes back (a new incarnation) and is
    // unfenced everywhere.
    let silent = follower;
    brokers.remove(&silent).unwrap().crash();
    wait_until("the silent broker fenced", || {
        let fenced = brokers.values().all(|broker| {
            broker.image().is_some_and(|image| {
                live_brokers(&image)
                    == [1, 2, 3]
                        .into_iter()
                        .filter(|id| *id != silent)
                        .collect::<Vec<_>>()
            })
        });
        fenced.then_some(())
    });
    brokers.insert(silent, start(silent));
    wait_until("the returning broker unfenced everywhere", || {
        common_image(&brokers).filter(|image| live_brokers(image) == vec![1, 2, 3])
    });

    // The controller leader crashes: the others elect a new one, and a deletion goes through.
    let leader = wait_until("a controller leader", || leader_of(&brokers));
    brokers.remove(&leader).unwrap().crash();
    let new_leader = wait_until("a new controller leader", || leader_of(&brokers));
    assert_ne!(new_leader, leader);
    let asked = *brokers.keys().find(|id| **id != new_leader).unwrap();
    brokers[&asked]
        .request(ControllerRequest::DeleteTopic {
            name: "orders".to_owned(),
        })
        .expect("deleted");
    wait_until("the topic gone from both images", || {
        let gone = brokers.values().all(|broker| {
            broker
                .image()
                .is_some_and(|image| image.topic("orders").is_none())
        });
        gone.then_some(())
    });

    // The crashed leader restarts and rebuilds the same image from its log.
    brokers.insert(leader, start(leader));
    let image = wait_until("the restarted broker has the same image", || {
        common_image(&brokers).filter(|image| live_brokers(image) == vec![1, 2, 3])
    });
    assert!(image.topic("orders").is_none());
    assert_eq!(image.topics().count(), 0);
    for broker in brokers.into_values() {
        broker.crash();
    }
    drop(reservations);
}

/// Fails unless no id of `ids` was handed out before (`handed_out`), then remembers them.
fn never_seen_before(
    handed_out: &mut std::collections::BTreeSet<i64>,
    broker: NodeId,
    ids: &[i64],
) {
    for &id in ids {
        assert!(
            handed_out.insert(id),
            "broker {broker} handed out producer id {id} again"
        );
    }
}

#[test]
fn producer_ids_are_never_handed_out_twice_across_restarts_failover_and_a_wiped_broker() {
    let mut dirs: BTreeMap<NodeId, tempfile::TempDir> = (1..=3)
        .map(|id| (id, tempfile::tempdir().unwrap()))
        .collect();
    let (reservations, peers) = loopback_peers(3);
    let start = |id: NodeId, dirs: &BTreeMap<NodeId, tempfile::TempDir>| {
        Broker::start(id, dirs[&id].path().to_path_buf(), peers.clone())
    };
    let mut brokers: BTreeMap<NodeId, Broker> = (1..=3).map(|id| (id, start(id, &dirs))).collect();
    let mut handed_out = std::collections::BTreeSet::new();

    // Each broker has its own ids; past most of a block, the next one is fetched ahead and
    // taken up without a gap in service.
    for (&id, broker) in &brokers {
        never_seen_before(&mut handed_out, id, &broker.claim_producer_ids(950));
    }
    for (&id, broker) in &brokers {
        never_seen_before(&mut handed_out, id, &broker.claim_producer_ids(100));
    }

    // A follower restarts: its new run gets a new block, whatever was left of the old one.
    let leader = wait_until("a controller leader", || leader_of(&brokers));
    let follower = *brokers.keys().find(|id| **id != leader).unwrap();
    brokers.remove(&follower).unwrap().crash();
    brokers.insert(follower, start(follower, &dirs));
    never_seen_before(
        &mut handed_out,
        follower,
        &brokers[&follower].claim_producer_ids(10),
    );

    // The controller leader crashes: the new leader hands out blocks after all committed ones,
    // and so it does once the old leader is back.
    brokers.remove(&leader).unwrap().crash();
    wait_until("a new controller leader", || leader_of(&brokers));
    for (&id, broker) in &brokers {
        never_seen_before(&mut handed_out, id, &broker.claim_producer_ids(1_000));
    }
    brokers.insert(leader, start(leader, &dirs));
    never_seen_before(
        &mut handed_out,
        leader,
        &brokers[&leader].claim_producer_ids(10),
    );

    // A broker whose data directory was wiped starts from nothing and still gets new ids.
    let wiped = follower;
    brokers.remove(&wiped).unwrap().crash();
    dirs.insert(wiped, tempfile::tempdir().unwrap());
    brokers.insert(wiped, start(wiped, &dirs));
    never_seen_before(
        &mut handed_out,
        wiped,
        &brokers[&wiped].claim_producer_ids(10),
    );
    for broker in brokers.into_values() {
        broker.crash();
    }
    drop(reservations);
}

#[test]
fn a_broker_beyond_the_voters_registers_and_makes_requests() {
    let dirs: BTreeMap<NodeId, tempfile::TempDir> = (1..=4)
        .map(|id| (id, tempfile::tempdir().unwrap()))
        .collect();
    let (reservations, peers) = loopback_peers(4);
    let brokers: BTreeMap<NodeId, Broker> = (1..=4)
        .map(|id| {
            let broker = Broker::start(id, dirs[&id].path().to_path_buf(), peers.clone());
            (id, broker)
        })
        .collect();
    wait_until("all four registered and unfenced", || {
        common_image(&brokers).filter(|image| live_brokers(image) == vec![1, 2, 3, 4])
    });
    let index = brokers[&4]
        .request(create_topic("events", 8, 2))
        .expect("created through broker 4");
    let image = wait_until("the topic in every image", || {
        common_image(&brokers).filter(|image| image.last_applied_index() >= index)
    });
    let topic = image.topic("events").expect("the topic exists");
    assert_eq!(topic.configs["retention.ms"], "60000");
    for node_id in 1..=4 {
        let leaderships = (0..8)
            .filter(|&p| topic.preferred_leader(p).map(|r| r.node_id) == Some(node_id))
            .count();
        assert_eq!(leaderships, 2, "broker {node_id} leads two partitions");
    }
    // Its other requests go through too: configs, more partitions, a reassignment.
    let changes = vec![
        ConfigChange {
            key: "segment.ms".to_owned(),
            operation: ConfigOperation::Set,
            value: Some("1000".to_owned()),
        },
        ConfigChange {
            key: "retention.ms".to_owned(),
            operation: ConfigOperation::Delete,
            value: None,
        },
    ];
    let requests = [
        ControllerRequest::AlterConfigs {
            name: "events".to_owned(),
            changes,
        },
        ControllerRequest::CreatePartitions {
            name: "events".to_owned(),
            count: 12,
        },
        ControllerRequest::Reassign {
            topic: "events".to_owned(),
            partition: 0,
            replicas: Some(vec![4, 1]),
        },
        // What the partition's leader asks once its group's voters are the target.
        ControllerRequest::CompleteReassignment {
            topic: "events".to_owned(),
            partition: 0,
            voters: vec![1, 4],
        },
    ];
    let mut index = 0;
    for request in requests {
        index = brokers[&4].request(request).expect("done");
    }
    let image = wait_until("the changes in every image", || {
        common_image(&brokers).filter(|image| image.last_applied_index() >= index)
    });
    let topic = image.topic("events").expect("the topic exists");
    assert_eq!(
        topic.configs,
        [("segment.ms".to_owned(), "1000".to_owned())].into()
    );
    assert_eq!(topic.partitions.len(), 12);
    let nodes_of_0: Vec<NodeId> = topic.partitions[0].iter().map(|r| r.node_id).collect();
    assert_eq!(nodes_of_0, vec![4, 1]);
    assert!(matches!(
        brokers[&4].request(ControllerRequest::Reassign {
            topic: "events".to_owned(),
            partition: 12,
            replicas: Some(vec![1]),
        }),
        Err(ControllerError::Refused(PlanError::UnknownPartition { .. }))
    ));

    // It holds its own copy of the metadata log, as an observer of the voters' group.
    assert!(dirs[&4].path().join("__cluster_metadata-0").exists());
    for broker in brokers.into_values() {
        broker.crash();
    }
    drop(reservations);
}

#[test]
fn observers_apply_every_change_follow_a_new_leader_and_catch_up_when_started_late() {
    let dirs: BTreeMap<NodeId, tempfile::TempDir> = (1..=5)
        .map(|id| (id, tempfile::tempdir().unwrap()))
        .collect();
    let (reservations, peers) = loopback_peers(5);
    let start = |id: NodeId| Broker::start(id, dirs[&id].path().to_path_buf(), peers.clone());
    // Broker 5 starts late; 1, 2 and 3 are the voters, 4 and 5 observers.
    let mut brokers: BTreeMap<NodeId, Broker> = (1..=4).map(|id| (id, start(id))).collect();
    wait_until("four registered and unfenced in all four images", || {
        common_image(&brokers).filter(|image| live_brokers(image) == vec![1, 2, 3, 4])
    });

    // A topic created through an observer reaches every image, the observer's included.
    let index = brokers[&4]
        .request(create_topic("orders", 10, 3))
        .expect("created through observer 4");
    let image = wait_until("the topic in all four images", || {
        common_image(&brokers).filter(|image| image.last_applied_index() >= index)
    });
    assert_eq!(image.topic("orders").expect("created").partitions.len(), 10);

    // The late observer rebuilds everything from the log and registers.
    brokers.insert(5, start(5));
    let image = wait_until("five registered and unfenced in all five images", || {
        common_image(&brokers).filter(|image| live_brokers(image) == vec![1, 2, 3, 4, 5])
    });
    assert!(image.topic("orders").is_some(), "observer 5 caught up");

    // The controller leader dies: the observers find the new one and keep applying, and a
    // topic created through one reaches every image left.
    let leader = wait_until("a controller leader", || leader_of(&brokers));
    assert!(leader <= 3, "only voters lead (broker {leader} does)");
    brokers.remove(&leader).unwrap().crash();
    let new_leader = wait_until("a new controller leader", || leader_of(&brokers));
    assert!(new_leader <= 3 && new_leader != leader);
    let index = brokers[&5]
        .request(create_topic("after", 5, 3))
        .expect("created through observer 5");
    let image = wait_until("the new topic in every image left", || {
        common_image(&brokers).filter(|image| image.last_applied_index() >= index)
    });
    assert!(image.topic("orders").is_some() && image.topic("after").is_some());
    for broker in brokers.into_values() {
        broker.crash();
    }
    drop(reservations);
}
