//! [`MetadataImage`]: the cluster's metadata as applying the metadata log up to some index
//! yields it. Every broker keeps one and answers Metadata, places its partitions and reads
//! topic configs from it; the controller leader plans its proposals against its own.
//!
//! Applying is deterministic and total: a committed record is applied the same way on every
//! broker, so one that no longer fits (a topic deleted twice, a proposal made against an image
//! that changed before it committed, a malformed assignment) changes nothing and is reported
//! as [`Applied::Stale`] for the driver to log.
//!
//! A partition being moved (KIP-455's reassignment, carried out as Raft membership changes)
//! lists as its replicas the target and every broker still involved, first the target's; its
//! [`Reassignment`] keeps the target and the replicas from before the move (what a
//! cancellation goes back to).
//!
//! Producer ids (KIP-730): the image knows the first id no block has handed out yet and the
//! latest block each broker got. Blocks are applied only in increasing order, so no two
//! committed blocks share an id, whichever leader proposed them.

use std::collections::BTreeMap;

use super::records::{
    BrokerRegistration, MetadataRecord, PartitionAssignment, ProducerIdBlock, Replica,
};
use crate::{Index, NodeId};

/// A registered broker and whether it is fenced (considered down).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerState {
    pub registration: BrokerRegistration,
    pub fenced: bool,
}

/// One topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicImage {
    pub id: [u8; 16],
    /// Configuration overrides; keys absent take the broker's defaults.
    pub configs: BTreeMap<String, String>,
    /// Each partition's replicas, by partition number; never empty, no broker twice.
    pub partitions: Vec<Vec<Replica>>,
    /// The partitions being moved, by partition number.
    pub reassignments: BTreeMap<u32, Reassignment>,
}

/// A partition's move under way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reassignment {
    /// Where it goes: its replicas once the move completes (the first preferred).
    pub target: Vec<Replica>,
    /// Its replicas before the move began.
    pub original: Vec<Replica>,
}

impl Reassignment {
    /// The target's brokers that were not replicas before (Kafka's adding replicas).
    pub fn adding(&self) -> impl Iterator<Item = &Replica> {
        self.target
            .iter()
            .filter(|replica| !holds(&self.original, replica.node_id))
    }

    /// The brokers of `replicas` (the partition's, now) that the target leaves out (Kafka's
    /// removing replicas).
    pub fn removing<'a>(&'a self, replicas: &'a [Replica]) -> impl Iterator<Item = &'a Replica> {
        replicas
            .iter()
            .filter(|replica| !holds(&self.target, replica.node_id))
    }
}

fn holds(replicas: &[Replica], node_id: NodeId) -> bool {
    replicas.iter().any(|replica| replica.node_id == node_id)
}

impl TopicImage {
    /// The replicas of `partition`, if the topic has it.
    pub fn replicas(&self, partition: u32) -> Option<&[Replica]> {
        self.partitions
            .get(usize::try_from(partition).ok()?)
            .map(Vec::as_slice)
    }

    /// The replica that should lead `partition` when it can: the first of its replicas.
    pub fn preferred_leader(&self, partition: u32) -> Option<Replica> {
        self.replicas(partition)?.first().copied()
    }
}

/// What applying a record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Changed,
    /// The record did not fit the image and changed nothing; says why.
    Stale(&'static str),
}

/// The metadata as of an index of the metadata log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataImage {
    last_applied_index: Index,
    brokers: BTreeMap<NodeId, BrokerState>,
    topics: BTreeMap<String, TopicImage>,
    /// The first producer id no block has handed out.
    producer_id_next: i64,
    /// The latest block of producer ids handed to each broker.
    producer_id_blocks: BTreeMap<NodeId, ProducerIdBlock>,
}

impl MetadataImage {
    /// The index of the last entry applied (0: none). Records of one entry share its index.
    pub fn last_applied_index(&self) -> Index {
        self.last_applied_index
    }

    /// The image a snapshot describes: `records` (from [`to_records`](Self::to_records))
    /// applied as the entry at `index`.
    pub fn from_snapshot(index: Index, records: &[MetadataRecord]) -> MetadataImage {
        let mut image = MetadataImage {
            last_applied_index: index,
            ..MetadataImage::default()
        };
        for record in records {
            image.apply(index, record);
        }
        image
    }

    /// Applies one record of the entry at `index`. Entries are applied in log order.
    pub fn apply(&mut self, index: Index, record: &MetadataRecord) -> Applied {
        assert!(
            index >= self.last_applied_index,
            "metadata entry {index} applied after entry {}",
            self.last_applied_index
        );
        self.last_applied_index = index;
        match record {
            MetadataRecord::RegisterBroker(registration) => self.register(registration),
            MetadataRecord::FenceBroker { node_id } => self.set_fenced(*node_id, true),
            MetadataRecord::UnfenceBroker { node_id } => self.set_fenced(*node_id, false),
            MetadataRecord::CreateTopic {
                name,
                topic_id,
                configs,
                partitions,
            } => {
                if self.topics.contains_key(name) {
                    return Applied::Stale("the topic exists");
                }
                if self.topic_by_id(topic_id).is_some() {
                    return Applied::Stale("the topic id is in use");
                }
                let Some(partitions) = numbered_from(0, partitions) else {
                    return Applied::Stale("malformed partition assignment");
                };
                let topic = TopicImage {
                    id: *topic_id,
                    configs: configs.iter().cloned().collect(),
                    partitions,
                    reassignments: BTreeMap::new(),
                };
                self.topics.insert(name.clone(), topic);
                Applied::Changed
            }
            MetadataRecord::DeleteTopic { name } => match self.topics.remove(name) {
                Some(_) => Applied::Changed,
                None => Applied::Stale("no such topic"),
            },
            MetadataRecord::AlterTopicConfigs { name, set, delete } => {
                let Some(topic) = self.topics.get_mut(name) else {
                    return Applied::Stale("no such topic");
                };
                topic.configs.extend(set.iter().cloned());
                for key in delete {
                    topic.configs.remove(key);
                }
                Applied::Changed
            }
            MetadataRecord::ReassignPartition {
                topic,
                partition,
                replicas,
            } => self.reassign(topic, *partition, replicas),
            MetadataRecord::CompleteReassignment {
                topic,
                partition,
                replicas,
            } => {
                let Some(topic) = self.topics.get_mut(topic) else {
                    return Applied::Stale("no such topic");
                };
                let running = topic
                    .reassignments
                    .get(partition)
                    .is_some_and(|reassignment| &reassignment.target == replicas);
                let current = usize::try_from(*partition)
                    .ok()
                    .and_then(|index| topic.partitions.get_mut(index));
                match current {
                    Some(current) if running => {
                        current.clone_from(replicas);
                        topic.reassignments.remove(partition);
                        Applied::Changed
                    }
                    _ => Applied::Stale("no move to these replicas under way"),
                }
            }
            MetadataRecord::CreatePartitions { topic, new } => {
                let Some(topic) = self.topics.get_mut(topic) else {
                    return Applied::Stale("no such topic");
                };
                let Some(new) = u32::try_from(topic.partitions.len())
                    .ok()
                    .and_then(|count| numbered_from(count, new))
                else {
                    return Applied::Stale("malformed partition assignment");
                };
                topic.partitions.extend(new);
                Applied::Changed
            }
            MetadataRecord::AllocateProducerIds(block) => self.allocate_producer_ids(block),
        }
    }

    /// Hands out `block` if it starts at or past every id handed out before.
    fn allocate_producer_ids(&mut self, block: &ProducerIdBlock) -> Applied {
        let Some(end_id) = block.end_id().filter(|_| block.size > 0) else {
            return Applied::Stale("an empty or overflowing producer id block");
        };
        if block.first_id < self.producer_id_next {
            return Applied::Stale("the block overlaps producer ids handed out before");
        }
        self.producer_id_next = end_id;
        self.producer_id_blocks.insert(block.node_id, *block);
        Applied::Changed
    }

    /// Starts a partition's move to `target`, or retargets the one under way: the replicas
    /// become the target followed by every other broker involved so far, in their order. (A
    /// move to the replicas it has completes at once; plans do not propose one, snapshots do.)
    fn reassign(&mut self, topic: &str, partition: u32, target: &[Replica]) -> Applied {
        if !well_formed(target) {
            return Applied::Stale("malformed replica set");
        }
        let Some(topic) = self.topics.get_mut(topic) else {
            return Applied::Stale("no such partition");
        };
        let Some(current) = usize::try_from(partition)
            .ok()
            .and_then(|index| topic.partitions.get_mut(index))
        else {
            return Applied::Stale("no such partition");
        };
        let original = match topic.reassignments.get(&partition) {
            Some(running) if running.target == target => {
                return Applied::Stale("the move has that target already")
            }
            Some(running) => running.original.clone(),
            None => current.clone(),
        };
        let involved: Vec<Replica> = target
            .iter()
            .chain(
                current
                    .iter()
                    .filter(|replica| !holds(target, replica.node_id)),
            )
            .copied()
            .collect();
        *current = involved;
        topic.reassignments.insert(
            partition,
            Reassignment {
                target: target.to_vec(),
                original,
            },
        );
        Applied::Changed
    }

    fn register(&mut self, registration: &BrokerRegistration) -> Applied {
        if registration.shard_count == 0 {
            return Applied::Stale("a broker without shards");
        }
        // A repeated registration of the same run keeps its liveness; a new run starts fenced
        // until it is heard from (it has a metadata log and partitions to catch up on).
        let fenced = match self.brokers.get(&registration.node_id) {
            Some(known) if known.registration.incarnation == registration.incarnation => {
                known.fenced
            }
            _ => true,
        };
        let state = BrokerState {
            registration: registration.clone(),
            fenced,
        };
        self.brokers.insert(registration.node_id, state);
        Applied::Changed
    }

    fn set_fenced(&mut self, node_id: NodeId, fenced: bool) -> Applied {
        match self.brokers.get_mut(&node_id) {
            Some(broker) if broker.fenced != fenced => {
                broker.fenced = fenced;
                Applied::Changed
            }
            Some(_) => Applied::Stale("the broker is in that state already"),
            None => Applied::Stale("no such broker"),
        }
    }

    pub fn broker(&self, node_id: NodeId) -> Option<&BrokerState> {
        self.brokers.get(&node_id)
    }

    /// Every registered broker, fenced or not, by node id.
    pub fn brokers(&self) -> impl Iterator<Item = &BrokerState> {
        self.brokers.values()
    }

    /// The brokers Metadata lists and new replicas go to: registered and not fenced, by node id.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers
            .values()
            .filter(|broker| !broker.fenced)
            .map(|broker| &broker.registration)
    }

    pub fn topic(&self, name: &str) -> Option<&TopicImage> {
        self.topics.get(name)
    }

    /// The topic with this id, and its name. Walks every topic.
    pub fn topic_by_id(&self, id: &[u8; 16]) -> Option<(&str, &TopicImage)> {
        self.topics().find(|(_, topic)| &topic.id == id)
    }

    /// Every topic, by name.
    pub fn topics(&self) -> impl Iterator<Item = (&str, &TopicImage)> {
        self.topics
            .iter()
            .map(|(name, topic)| (name.as_str(), topic))
    }

    /// The first producer id no block has handed out (0 before any).
    pub fn producer_id_next(&self) -> i64 {
        self.producer_id_next
    }

    /// The latest block of producer ids handed to broker `node_id` (to whichever of its runs).
    pub fn producer_id_block(&self, node_id: NodeId) -> Option<&ProducerIdBlock> {
        self.producer_id_blocks.get(&node_id)
    }

    /// The partitions (topic, partition number) with a replica on `shard` of broker `node_id`:
    /// what that shard opens and serves. Walks every partition: for start-up and metadata
    /// changes, not for each request.
    pub fn hosted_partitions(
        &self,
        node_id: NodeId,
        shard: u32,
    ) -> impl Iterator<Item = (&str, u32)> {
        let here = Replica { node_id, shard };
        self.topics().flat_map(move |(name, topic)| {
            (0u32..)
                .zip(&topic.partitions)
                .filter(move |(_, replicas)| replicas.contains(&here))
                .map(move |(partition, _)| (name, partition))
        })
    }

    /// Records that rebuild this image ([`from_snapshot`](Self::from_snapshot) at
    /// [`last_applied_index`](Self::last_applied_index)): what the metadata log is compacted
    /// into, and what a new broker starts from. A partition being moved is created with its
    /// original replicas, then moved to all it involves now (stale if that is the same), then
    /// to its target, which lists the involved ones in the same order again. Each broker's
    /// latest producer-id block comes last, in id order: the last block's end is the next free
    /// id again.
    pub fn to_records(&self) -> Vec<MetadataRecord> {
        let mut records = Vec::new();
        for broker in self.brokers.values() {
            records.push(MetadataRecord::RegisterBroker(broker.registration.clone()));
            if !broker.fenced {
                records.push(MetadataRecord::UnfenceBroker {
                    node_id: broker.registration.node_id,
                });
            }
        }
        for (name, topic) in &self.topics {
            records.push(MetadataRecord::CreateTopic {
                name: name.clone(),
                topic_id: topic.id,
                configs: topic.configs.clone().into_iter().collect(),
                partitions: (0u32..)
                    .zip(&topic.partitions)
                    .map(|(partition, replicas)| PartitionAssignment {
                        partition,
                        replicas: topic
                            .reassignments
                            .get(&partition)
                            .map_or(replicas, |moving| &moving.original)
                            .clone(),
                    })
                    .collect(),
            });
            for (&partition, moving) in &topic.reassignments {
                let involved = topic.replicas(partition).unwrap_or_default();
                for replicas in [involved, &moving.target] {
                    records.push(MetadataRecord::ReassignPartition {
                        topic: name.clone(),
                        partition,
                        replicas: replicas.to_vec(),
                    });
                }
            }
        }
        let mut blocks: Vec<ProducerIdBlock> = self.producer_id_blocks.values().copied().collect();
        blocks.sort_by_key(|block| block.first_id);
        records.extend(blocks.into_iter().map(MetadataRecord::AllocateProducerIds));
        records
    }
}

/// A replica set the image accepts: at least one replica, no broker twice.
pub(super) fn well_formed(replicas: &[Replica]) -> bool {
    !replicas.is_empty()
        && replicas.iter().enumerate().all(|(position, replica)| {
            replicas[..position]
                .iter()
                .all(|earlier| earlier.node_id != replica.node_id)
        })
}

/// The replica sets of `assignments` if they are numbered `first, first + 1, ...` in order,
/// at least one, each well formed.
fn numbered_from(first: u32, assignments: &[PartitionAssignment]) -> Option<Vec<Vec<Replica>>> {
    let in_order = (first..)
        .zip(assignments)
        .all(|(expected, assignment)| assignment.partition == expected);
    let fits = !assignments.is_empty()
        && in_order
        && u32::try_from(assignments.len())
            .ok()
            .and_then(|count| first.checked_add(count))
            .is_some()
        && assignments
            .iter()
            .all(|assignment| well_formed(&assignment.replicas));
    fits.then(|| {
        assignments
            .iter()
            .map(|assignment| assignment.replicas.clone())
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration(node_id: NodeId, incarnation: u64) -> BrokerRegistration {
        BrokerRegistration {
            node_id,
            incarnation,
            kafka_host: format!("broker-{node_id}"),
            kafka_port: 9092,
            rpc_address: format!("broker-{node_id}:9093"),
            shard_count: 2,
        }
    }

    fn replica(node_id: NodeId, shard: u32) -> Replica {
        Replica { node_id, shard }
    }

    fn create(name: &str, id: u8, partitions: Vec<Vec<Replica>>) -> MetadataRecord {
        MetadataRecord::CreateTopic {
            name: name.to_owned(),
            topic_id: [id; 16],
            configs: vec![("retention.ms".to_owned(), "1000".to_owned())],
            partitions: (0u32..)
                .zip(partitions)
                .map(|(partition, replicas)| PartitionAssignment {
                    partition,
                    replicas,
                })
                .collect(),
        }
    }

    #[test]
    fn brokers_register_fenced_and_fencing_follows_their_runs() {
        let mut image = MetadataImage::default();
        let first_run = registration(1, 10);
        let register = MetadataRecord::RegisterBroker(first_run.clone());
        assert_eq!(image.apply(1, &register), Applied::Changed);
        assert!(image.broker(1).is_some_and(|broker| broker.fenced));
        assert_eq!(image.live_brokers().count(), 0);

        let unfence = MetadataRecord::UnfenceBroker { node_id: 1 };
        assert_eq!(image.apply(2, &unfence), Applied::Changed);
        assert_eq!(image.live_brokers().collect::<Vec<_>>(), vec![&first_run]);
        assert!(matches!(image.apply(2, &unfence), Applied::Stale(_)));
        // The same run registering again stays live; a new run starts fenced.
        assert_eq!(image.apply(3, &register), Applied::Changed);
        assert_eq!(image.live_brokers().count(), 1);
        let restarted = MetadataRecord::RegisterBroker(registration(1, 11));
        assert_eq!(image.apply(4, &restarted), Applied::Changed);
        assert_eq!(image.live_brokers().count(), 0);

        assert_eq!(image.apply(5, &unfence), Applied::Changed);
        let fence = MetadataRecord::FenceBroker { node_id: 1 };
        assert_eq!(image.apply(6, &fence), Applied::Changed);
        assert_eq!(image.live_brokers().count(), 0);
        assert!(matches!(
            image.apply(7, &MetadataRecord::FenceBroker { node_id: 9 }),
            Applied::Stale(_)
        ));
        let shardless = BrokerRegistration {
            shard_count: 0,
            ..registration(2, 1)
        };
        assert!(matches!(
            image.apply(8, &MetadataRecord::RegisterBroker(shardless)),
            Applied::Stale(_)
        ));
        assert!(image.broker(2).is_none());
        assert_eq!(image.last_applied_index(), 8);
    }

    #[test]
    fn topics_are_created_once_and_deleted() {
        let mut image = MetadataImage::default();
        let orders = create("orders", 1, vec![vec![replica(1, 0), replica(2, 1)]]);
        assert_eq!(image.apply(1, &orders), Applied::Changed);
        let topic = image.topic("orders").expect("created");
        assert_eq!(topic.preferred_leader(0), Some(replica(1, 0)));
        assert_eq!(topic.preferred_leader(1), None);
        assert_eq!(
            topic.configs.get("retention.ms").map(String::as_str),
            Some("1000")
        );
        assert_eq!(
            image.topic_by_id(&[1; 16]).map(|(name, _)| name),
            Some("orders")
        );

        // A stale creation (same name, or another name with the same id) changes nothing.
        let again = create("orders", 2, vec![vec![replica(3, 0)]]);
        assert!(matches!(image.apply(2, &again), Applied::Stale(_)));
        let same_id = create("other", 1, vec![vec![replica(3, 0)]]);
        assert!(matches!(image.apply(2, &same_id), Applied::Stale(_)));
        assert_eq!(image.topics().count(), 1);

        let delete = MetadataRecord::DeleteTopic {
            name: "orders".to_owned(),
        };
        assert_eq!(image.apply(3, &delete), Applied::Changed);
        assert!(image.topic("orders").is_none());
        assert!(matches!(image.apply(4, &delete), Applied::Stale(_)));
    }

    #[test]
    fn malformed_assignments_are_stale() {
        let mut image = MetadataImage::default();
        let twice = create("a", 1, vec![vec![replica(1, 0), replica(1, 1)]]);
        let empty = create("a", 1, vec![vec![]]);
        let none = create("a", 1, vec![]);
        let gap = MetadataRecord::CreateTopic {
            name: "a".to_owned(),
            topic_id: [1; 16],
            configs: vec![],
            partitions: vec![PartitionAssignment {
                partition: 1,
                replicas: vec![replica(1, 0)],
            }],
        };
        for record in [twice, empty, none, gap] {
            assert!(
                matches!(image.apply(1, &record), Applied::Stale(_)),
                "{record:?}"
            );
        }
        assert_eq!(
            image,
            MetadataImage {
                last_applied_index: 1,
                ..MetadataImage::default()
            }
        );
    }

    #[test]
    fn configs_are_set_then_deleted() {
        let mut image = MetadataImage::default();
        image.apply(1, &create("orders", 1, vec![vec![replica(1, 0)]]));
        let alter = MetadataRecord::AlterTopicConfigs {
            name: "orders".to_owned(),
            set: vec![("segment.ms".to_owned(), "5".to_owned())],
            delete: vec!["retention.ms".to_owned()],
        };
        assert_eq!(image.apply(2, &alter), Applied::Changed);
        let configs = &image.topic("orders").expect("created").configs;
        assert_eq!(
            configs.iter().collect::<Vec<_>>(),
            vec![(&"segment.ms".to_owned(), &"5".to_owned())]
        );
        let missing = MetadataRecord::AlterTopicConfigs {
            name: "missing".to_owned(),
            set: vec![],
            delete: vec![],
        };
        assert!(matches!(image.apply(3, &missing), Applied::Stale(_)));
    }

    #[test]
    fn partitions_are_reassigned_and_added_in_order() {
        let mut image = MetadataImage::default();
        image.apply(1, &create("orders", 1, vec![vec![replica(1, 0)]]));
        let reassign = |partition, replicas| MetadataRecord::ReassignPartition {
            topic: "orders".to_owned(),
            partition,
            replicas,
        };
        let moved = vec![replica(2, 1), replica(3, 0)];
        assert_eq!(
            image.apply(2, &reassign(0, moved.clone())),
            Applied::Changed
        );
        let complete = MetadataRecord::CompleteReassignment {
            topic: "orders".to_owned(),
            partition: 0,
            replicas: moved.clone(),
        };
        assert_eq!(image.apply(2, &complete), Applied::Changed);
        assert_eq!(
            image.topic("orders").and_then(|t| t.replicas(0)),
            Some(&moved[..])
        );
        assert!(matches!(
            image.apply(3, &reassign(1, moved.clone())),
            Applied::Stale(_)
        ));
        assert!(matches!(
            image.apply(3, &reassign(0, vec![])),
            Applied::Stale(_)
        ));

        let grow = |partition| MetadataRecord::CreatePartitions {
            topic: "orders".to_owned(),
            new: vec![PartitionAssignment {
                partition,
                replicas: vec![replica(1, 1)],
            }],
        };
        // Partition 2 before 1 does not fit; 1 does, once.
        assert!(matches!(image.apply(4, &grow(2)), Applied::Stale(_)));
        assert_eq!(image.apply(4, &grow(1)), Applied::Changed);
        assert!(matches!(image.apply(5, &grow(1)), Applied::Stale(_)));
        assert_eq!(image.topic("orders").map(|t| t.partitions.len()), Some(2));

        let hosted: Vec<(&str, u32)> = image.hosted_partitions(1, 1).collect();
        assert_eq!(hosted, vec![("orders", 1)]);
        assert_eq!(
            image.hosted_partitions(2, 1).collect::<Vec<_>>(),
            vec![("orders", 0)]
        );
        assert_eq!(image.hosted_partitions(2, 0).count(), 0);
    }

    #[test]
    fn a_move_involves_old_and_new_replicas_until_it_completes() {
        let mut image = MetadataImage::default();
        let original = vec![replica(1, 0), replica(2, 0)];
        image.apply(1, &create("orders", 1, vec![original.clone()]));
        let reassign = |replicas: &[Replica]| MetadataRecord::ReassignPartition {
            topic: "orders".to_owned(),
            partition: 0,
            replicas: replicas.to_vec(),
        };
        let complete = |replicas: &[Replica]| MetadataRecord::CompleteReassignment {
            topic: "orders".to_owned(),
            partition: 0,
            replicas: replicas.to_vec(),
        };
        let state = |image: &MetadataImage| {
            let topic = image.topic("orders").expect("exists");
            (
                topic.partitions[0].clone(),
                topic.reassignments.get(&0).cloned(),
            )
        };
        let target = vec![replica(2, 0), replica(3, 1)];
        assert_eq!(image.apply(2, &reassign(&target)), Applied::Changed);
        let (replicas, moving) = state(&image);
        // The target first, then the broker leaving: all three host the group meanwhile.
        assert_eq!(replicas, vec![replica(2, 0), replica(3, 1), replica(1, 0)]);
        let moving = moving.expect("under way");
        assert_eq!(moving.original, original);
        assert_eq!(moving.adding().collect::<Vec<_>>(), vec![&replica(3, 1)]);
        assert_eq!(
            moving.removing(&replicas).collect::<Vec<_>>(),
            vec![&replica(1, 0)]
        );
        // The same target again, or a completion to anything else, changes nothing.
        assert!(matches!(
            image.apply(3, &reassign(&target)),
            Applied::Stale(_)
        ));
        assert!(matches!(
            image.apply(3, &complete(&original)),
            Applied::Stale(_)
        ));

        // A snapshot taken mid-move rebuilds it exactly.
        let rebuilt = MetadataImage::from_snapshot(3, &image.to_records());
        assert_eq!(rebuilt, image);

        // Retargeted to broker 4: 3 stays involved (it may be a voter by now).
        let retarget = vec![replica(4, 0), replica(2, 0)];
        assert_eq!(image.apply(4, &reassign(&retarget)), Applied::Changed);
        let (replicas, moving) = state(&image);
        assert_eq!(
            replicas,
            vec![replica(4, 0), replica(2, 0), replica(3, 1), replica(1, 0)]
        );
        assert_eq!(moving.map(|moving| moving.original), Some(original.clone()));
        assert_eq!(MetadataImage::from_snapshot(4, &image.to_records()), image);

        // Cancelled (moved back to the original), then completed there.
        assert_eq!(image.apply(5, &reassign(&original)), Applied::Changed);
        assert_eq!(MetadataImage::from_snapshot(5, &image.to_records()), image);
        assert!(matches!(
            image.apply(6, &complete(&retarget)),
            Applied::Stale(_)
        ));
        assert_eq!(image.apply(6, &complete(&original)), Applied::Changed);
        assert_eq!(state(&image), (original, None));
        assert!(matches!(
            image.apply(7, &complete(&target)),
            Applied::Stale(_)
        ));
    }

    #[test]
    fn a_snapshot_rebuilds_the_image() {
        let mut image = MetadataImage::default();
        image.apply(1, &MetadataRecord::RegisterBroker(registration(1, 1)));
        image.apply(1, &MetadataRecord::RegisterBroker(registration(2, 1)));
        image.apply(2, &MetadataRecord::UnfenceBroker { node_id: 2 });
        image.apply(
            3,
            &create("orders", 1, vec![vec![replica(2, 0)], vec![replica(1, 1)]]),
        );
        let rebuilt = MetadataImage::from_snapshot(3, &image.to_records());
        assert_eq!(rebuilt, image);
    }

    fn block(node_id: NodeId, incarnation: u64, first_id: i64, size: u32) -> MetadataRecord {
        MetadataRecord::AllocateProducerIds(ProducerIdBlock {
            node_id,
            incarnation,
            first_id,
            size,
        })
    }

    #[test]
    fn producer_id_blocks_are_handed_out_once_in_increasing_order() {
        let mut image = MetadataImage::default();
        assert_eq!(image.producer_id_next(), 0);
        assert_eq!(image.producer_id_block(1), None);
        assert_eq!(image.apply(1, &block(1, 10, 0, 1_000)), Applied::Changed);
        assert_eq!(image.producer_id_next(), 1_000);
        // The same block again, or one overlapping it, is stale: no id goes out twice.
        for again in [block(1, 10, 0, 1_000), block(2, 5, 999, 1_000)] {
            assert!(
                matches!(image.apply(2, &again), Applied::Stale(_)),
                "{again:?}"
            );
        }
        for malformed in [block(2, 5, 1_000, 0), block(2, 5, i64::MAX - 10, 1_000)] {
            assert!(
                matches!(image.apply(2, &malformed), Applied::Stale(_)),
                "{malformed:?}"
            );
        }
        assert_eq!(image.producer_id_next(), 1_000);
        assert_eq!(image.producer_id_block(2), None);

        assert_eq!(image.apply(3, &block(2, 5, 1_000, 1_000)), Applied::Changed);
        // A broker's new run gets a later block; its latest block is the one it may use.
        assert_eq!(
            image.apply(4, &block(1, 11, 2_000, 1_000)),
            Applied::Changed
        );
        assert_eq!(
            image.producer_id_block(1),
            Some(&ProducerIdBlock {
                node_id: 1,
                incarnation: 11,
                first_id: 2_000,
                size: 1_000
            })
        );
        assert_eq!(
            image.producer_id_block(2).map(|block| block.first_id),
            Some(1_000)
        );
        assert_eq!(image.producer_id_next(), 3_000);
    }

    #[test]
    fn a_snapshot_keeps_the_next_producer_id_and_each_brokers_block() {
        let mut image = MetadataImage::default();
        image.apply(1, &MetadataRecord::RegisterBroker(registration(1, 1)));
        image.apply(1, &MetadataRecord::RegisterBroker(registration(2, 1)));
        // Interleaved: broker 1's latest block is past broker 2's, and broker 3 got one but is
        // not registered (yet, as the image says).
        image.apply(2, &block(1, 1, 0, 1_000));
        image.apply(3, &block(2, 1, 1_000, 1_000));
        image.apply(4, &block(3, 9, 2_000, 500));
        image.apply(5, &block(1, 1, 2_500, 1_000));
        let rebuilt = MetadataImage::from_snapshot(5, &image.to_records());
        assert_eq!(rebuilt, image);
        assert_eq!(rebuilt.producer_id_next(), 3_500);

        // A broker starting from the snapshot refuses every id handed out before it.
        let mut rebuilt = rebuilt;
        assert!(matches!(
            rebuilt.apply(6, &block(2, 2, 3_000, 1_000)),
            Applied::Stale(_)
        ));
        assert_eq!(
            rebuilt.apply(6, &block(2, 2, 3_500, 1_000)),
            Applied::Changed
        );
    }

    #[test]
    #[should_panic(expected = "applied after entry")]
    fn entries_are_applied_in_log_order() {
        let mut image = MetadataImage::default();
        image.apply(5, &MetadataRecord::FenceBroker { node_id: 1 });
        image.apply(4, &MetadataRecord::FenceBroker { node_id: 1 });
    }
}
