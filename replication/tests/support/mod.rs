//! What the multi-broker tests (several brokers on threads of one process, over loopback)
//! share: waiting on a condition with a deadline, the brokers' inter-broker addresses, a broker
//! of engine shards hosting given partitions (`shard_broker`) and one run by the cluster
//! control plane (`cluster_broker`).

#[allow(
    dead_code,
    reason = "only the tests of brokers run by the control plane start them"
)]
pub mod cluster_broker;
#[allow(dead_code, reason = "only the tests of brokers with shards start them")]
pub mod shard_broker;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use engine::shard::listen::ListenReservation;
use ferrite_replication::NodeId;

/// How long any one step may take before the test counts it as hung.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `check` until it finds something, failing the test after [`DEADLINE`].
pub fn wait_until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Free loopback addresses for brokers 1..=`count`, held (reserved) until the returned
/// reservations are dropped, so no parallel test takes them first.
pub fn loopback_peers(count: u64) -> (Vec<ListenReservation>, BTreeMap<NodeId, SocketAddr>) {
    let reservations: Vec<ListenReservation> = (0..count)
        .map(|_| ListenReservation::new("127.0.0.1:0".parse().unwrap()).unwrap())
        .collect();
    let peers = (1..=count)
        .zip(&reservations)
        .map(|(id, reservation)| (id, reservation.address()))
        .collect();
    (reservations, peers)
}
