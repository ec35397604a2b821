//! Brokers of a cluster with a shared secret, in-process over loopback, as `ferrite serve
//! --peers --cluster-secret-file` runs them: they agree on a cluster id drawn at the first start
//! and keep it in their data directories across restarts, and a broker with a wrong secret, or
//! with another cluster's id, is refused by the others and learns nothing from them.

mod support;

use std::path::Path;

use ferrite_replication::cluster_id;
use ferrite_replication::transport::peer_auth::ClusterSecret;
use support::cluster_broker::ClusterBroker;
use support::{loopback_peers, wait_until};

const OFFSETS_PARTITIONS: u32 = 1;

fn secret() -> ClusterSecret {
    ClusterSecret::new(b"a secret the three brokers share, 48 bytes long.")
}

/// The cluster id `broker` knows (empty: none yet).
fn known_id(broker: &ClusterBroker) -> String {
    broker.look(|view| view.state().cluster_id.get().to_string())
}

/// Brokers of the image `broker` applied that are registered and not fenced.
fn live_brokers(broker: &ClusterBroker) -> usize {
    broker.look(|view| {
        view.state()
            .image()
            .brokers()
            .filter(|broker| !broker.fenced)
            .count()
    })
}

fn data_dir(dir: &Path, node_id: u64) -> std::path::PathBuf {
    let data = dir.join(format!("broker-{node_id}"));
    std::fs::create_dir_all(&data).unwrap();
    data
}

#[test]
fn brokers_with_the_secret_agree_on_a_cluster_id_and_keep_it_and_others_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_reservations, peers) = loopback_peers(3);
    let start = |node_id: u64, secret: ClusterSecret| {
        ClusterBroker::start_with_secret(
            node_id,
            data_dir(dir.path(), node_id),
            peers.clone(),
            OFFSETS_PARTITIONS,
            Some(secret),
        )
    };
    let mut brokers: Vec<ClusterBroker> = (1..=3).map(|node_id| start(node_id, secret())).collect();

    // A new cluster: its first controller leader draws the id, every broker adopts and stores it.
    let id = wait_until("every broker to know one cluster id", || {
        let ids: Vec<String> = brokers.iter().map(known_id).collect();
        (!ids[0].is_empty() && ids.iter().all(|id| *id == ids[0])).then(|| ids[0].clone())
    });
    assert!(
        cluster_id::is_valid(&id),
        "{id:?} is a Kafka-like cluster id"
    );
    for node_id in 1..=3 {
        let stored = wait_until("the id stored", || {
            cluster_id::read_stored(&data_dir(dir.path(), node_id)).unwrap()
        });
        assert_eq!(stored, id);
    }
    wait_until("three live brokers registered", || {
        (live_brokers(&brokers[0]) == 3).then_some(())
    });

    // Broker 3 restarted with a wrong secret (on a fresh data directory, so all it could know
    // comes from its peers): refused, it never learns the cluster id.
    brokers.pop().unwrap().stop();
    let fresh = dir.path().join("broker-3-fresh");
    std::fs::create_dir_all(&fresh).unwrap();
    let wrong = ClusterBroker::start_with_secret(
        3,
        fresh,
        peers.clone(),
        OFFSETS_PARTITIONS,
        Some(ClusterSecret::new(
            b"not the secret the others share, 48 bytes long.",
        )),
    );
    let refusals = |broker: &ClusterBroker| {
        broker.look(|view| view.replication_stats().transport_authentication_failures)
    };
    wait_until("its connections refused as unauthenticated", || {
        (brokers.iter().map(refusals).sum::<u64>() + refusals(&wrong) >= 4).then_some(())
    });
    assert_eq!(known_id(&wrong), "", "the impostor learned nothing");
    wait_until("the impostor left out of the live brokers", || {
        (live_brokers(&brokers[0]) == 2).then_some(())
    });
    wrong.stop();

    // Broker 3 on its own data directory, with the secret but another cluster's id stored:
    // refused too, and it keeps its id.
    let other = cluster_id::generate().unwrap();
    cluster_id::store(&data_dir(dir.path(), 3), &other).unwrap();
    let stranger = start(3, secret());
    let refused = |broker: &ClusterBroker| {
        broker.look(|view| view.replication_stats().transport_connections_refused)
    };
    let refused_before: u64 = brokers.iter().map(refused).sum();
    wait_until("the other cluster's broker refused", || {
        (brokers.iter().map(refused).sum::<u64>() >= refused_before + 2).then_some(())
    });
    assert_eq!(known_id(&stranger), other);
    assert_eq!(live_brokers(&brokers[0]), 2);
    stranger.stop();

    // Its own id back: it joins again, and a restart keeps the id.
    cluster_id::store(&data_dir(dir.path(), 3), &id).unwrap();
    brokers.push(start(3, secret()));
    assert_eq!(
        known_id(&brokers[2]),
        id,
        "read back from the data directory"
    );
    wait_until("three live brokers again", || {
        (live_brokers(&brokers[0]) == 3).then_some(())
    });
    let restarted = brokers.remove(0);
    restarted.stop();
    brokers.insert(0, start(1, secret()));
    assert_eq!(known_id(&brokers[0]), id);
    for broker in brokers {
        broker.stop();
    }
}
