//! Where new replicas go: spread evenly over the live brokers and, on each broker, over its
//! shards, counting what they host already.
//!
//! Kafka's rack-unaware assignment walks the brokers round-robin from a random start, with the
//! followers shifted; that spreads one topic evenly over an empty cluster, but not the next
//! topic over a cluster whose load is uneven, and knows nothing of shards. Here each new
//! partition is placed greedily on the current counts instead, keeping one more invariant
//! besides the even counts: no live broker has fewer replicas *and* more leaderships than
//! another. Without it the two counts can pull apart (a broker short of replicas but not of
//! leaderships, another the other way round: the next partition with one replica cannot keep
//! both even). So:
//! - the leader (first replica) is a live broker with the fewest leaderships; among those, the
//!   one with the fewest replicas, unless the partition has more replicas than there are
//!   brokers with the fewest replicas, in which case the one with the most (it gets a replica
//!   either way, and this way no broker with fewer replicas ends up with more leaderships);
//! - the followers are the other live brokers with the fewest replicas, those with the most
//!   leaderships first among equals (so brokers short of leaderships stay short of replicas);
//! - on each chosen broker the replica goes to the shard with the fewest replicas (fewest
//!   leaderships next, lowest shard last); ties between brokers go to the lowest node id.
//!
//! From a cluster that holds these invariants (an empty one, or one only this placement has
//! filled), every new partition keeps them, whatever its number of replicas: replica and
//! leadership counts per live broker within one of each other, and replica counts per shard
//! of a broker within one (`tests/metadata.rs` checks it over random clusters and topic
//! sequences). Fenced brokers get nothing new. A cluster whose load is uneven (brokers added
//! or fenced, partitions reassigned) is filled least-loaded first, which moves it towards even.

use std::cmp::Reverse;
use std::ops::Range;

use super::image::MetadataImage;
use super::records::{PartitionAssignment, Replica};
use crate::NodeId;

#[derive(Debug, Clone, Copy, Default)]
struct Load {
    replicas: u64,
    leaders: u64,
}

impl Load {
    fn add(&mut self, leader: bool) {
        self.replicas += 1;
        self.leaders += u64::from(leader);
    }
}

#[derive(Debug)]
struct BrokerLoad {
    node_id: NodeId,
    fenced: bool,
    total: Load,
    /// One per shard of the broker's registration.
    shards: Vec<Load>,
}

impl BrokerLoad {
    /// Puts one replica on the broker's least-loaded shard.
    fn place(&mut self, leader: bool) -> Replica {
        let (shard, load) = (0u32..)
            .zip(self.shards.iter_mut())
            .min_by_key(|(shard, load)| (load.replicas, load.leaders, *shard))
            .expect("a registered broker has at least one shard");
        load.add(leader);
        self.total.add(leader);
        Replica {
            node_id: self.node_id,
            shard,
        }
    }
}

/// The load of every registered broker, and the placement of new replicas on them.
#[derive(Debug)]
pub(super) struct Placement {
    /// By node id.
    brokers: Vec<BrokerLoad>,
}

impl Placement {
    /// The load of `image`'s brokers: the replicas and preferred leaderships they host.
    pub(super) fn of(image: &MetadataImage) -> Placement {
        let mut brokers: Vec<BrokerLoad> = image
            .brokers()
            .map(|broker| BrokerLoad {
                node_id: broker.registration.node_id,
                fenced: broker.fenced,
                total: Load::default(),
                shards: (0..broker.registration.shard_count)
                    .map(|_| Load::default())
                    .collect(),
            })
            .collect();
        for (_, topic) in image.topics() {
            for replicas in &topic.partitions {
                for (position, replica) in replicas.iter().enumerate() {
                    let Ok(found) =
                        brokers.binary_search_by_key(&replica.node_id, |broker| broker.node_id)
                    else {
                        continue;
                    };
                    let broker = &mut brokers[found];
                    let leader = position == 0;
                    broker.total.add(leader);
                    // A broker restarted with fewer shards no longer has this one.
                    if let Some(shard) = usize::try_from(replica.shard)
                        .ok()
                        .and_then(|shard| broker.shards.get_mut(shard))
                    {
                        shard.add(leader);
                    }
                }
            }
        }
        Placement { brokers }
    }

    /// How many brokers new replicas may go to.
    pub(super) fn live_broker_count(&self) -> usize {
        self.brokers.iter().filter(|broker| !broker.fenced).count()
    }

    /// Replica sets for new `partitions` with `replication_factor` replicas each, counted into
    /// the load as they are chosen.
    pub(super) fn assign(
        &mut self,
        partitions: Range<u32>,
        replication_factor: usize,
    ) -> Vec<PartitionAssignment> {
        assert!(
            (1..=self.live_broker_count()).contains(&replication_factor),
            "replication factor {replication_factor} checked against the live brokers"
        );
        partitions
            .map(|partition| PartitionAssignment {
                partition,
                replicas: self.assign_one(replication_factor),
            })
            .collect()
    }

    fn assign_one(&mut self, replication_factor: usize) -> Vec<Replica> {
        let mut live: Vec<usize> = (0..self.brokers.len())
            .filter(|&broker| !self.brokers[broker].fenced)
            .collect();
        let load = |broker: usize| self.brokers[broker].total;
        let leaders_min = live.iter().map(|&broker| load(broker).leaders).min();
        let replicas_min = live.iter().map(|&broker| load(broker).replicas).min();
        let least_replicated = live
            .iter()
            .filter(|&&broker| Some(load(broker).replicas) == replicas_min)
            .count();
        let leader_from_fuller = replication_factor > least_replicated;
        let (leader_position, _) = live
            .iter()
            .enumerate()
            .filter(|&(_, &broker)| Some(load(broker).leaders) == leaders_min)
            .min_by_key(|&(_, &broker)| {
                let replicas = load(broker).replicas;
                let preference = if leader_from_fuller {
                    u64::MAX - replicas
                } else {
                    replicas
                };
                (preference, self.brokers[broker].node_id)
            })
            .expect("the replication factor is at least 1, so a live broker exists");
        let leader = live.swap_remove(leader_position);
        live.sort_by_key(|&broker| {
            let load = load(broker);
            (
                load.replicas,
                Reverse(load.leaders),
                self.brokers[broker].node_id,
            )
        });
        let mut replicas = vec![self.brokers[leader].place(true)];
        for &follower in &live[..replication_factor - 1] {
            replicas.push(self.brokers[follower].place(false));
        }
        replicas
    }

    /// A replica on broker `node_id` (registered, fenced or not) for a partition it does not
    /// host yet: on its least-loaded shard. `None` if no such broker is registered.
    pub(super) fn place_on(&mut self, node_id: NodeId, leader: bool) -> Option<Replica> {
        let found = self
            .brokers
            .binary_search_by_key(&node_id, |broker| broker.node_id)
            .ok()?;
        Some(self.brokers[found].place(leader))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::records::{BrokerRegistration, ListenerEndpoint, MetadataRecord};

    /// Beyond the three controller voters: ten partitions of three replicas over five brokers
    /// of two shards put six replicas and two leaderships on each broker, three replicas on
    /// each shard.
    #[test]
    fn a_topic_spreads_evenly_over_five_brokers_and_their_shards() {
        let mut image = MetadataImage::default();
        for node_id in 1..=5 {
            let registration = BrokerRegistration {
                node_id,
                incarnation: 1,
                endpoints: vec![ListenerEndpoint {
                    listener: Some("PLAINTEXT".to_owned()),
                    host: "127.0.0.1".to_owned(),
                    port: 9092,
                }],
                rpc_address: "127.0.0.1:9192".to_owned(),
                shard_count: 2,
            };
            image.apply(
                node_id,
                &MetadataRecord::RegisterBroker(Box::new(registration)),
            );
            image.apply(node_id, &MetadataRecord::UnfenceBroker { node_id });
        }
        let assignments = Placement::of(&image).assign(0..10, 3);
        let mut replicas = [[0; 2]; 5];
        let mut leaderships = [0; 5];
        for assignment in &assignments {
            let nodes: std::collections::BTreeSet<NodeId> = assignment
                .replicas
                .iter()
                .map(|replica| replica.node_id)
                .collect();
            assert_eq!(nodes.len(), 3, "three brokers each: {assignment:?}");
            for (position, replica) in assignment.replicas.iter().enumerate() {
                let broker = replica.node_id as usize - 1;
                replicas[broker][replica.shard as usize] += 1;
                leaderships[broker] += usize::from(position == 0);
            }
        }
        assert_eq!(replicas, [[3, 3]; 5]);
        assert_eq!(leaderships, [2; 5]);
    }
}
