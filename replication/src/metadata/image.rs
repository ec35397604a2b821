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

use engine::acls::{self, AclChange, AclTable};
use engine::credentials::{self, CredentialChange, CredentialTable};
use engine::quotas::{self, QuotaChange, QuotaTable};

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
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetadataImage {
    last_applied_index: Index,
    brokers: BTreeMap<NodeId, BrokerState>,
    topics: BTreeMap<String, TopicImage>,
    /// The first producer id no block has handed out.
    producer_id_next: i64,
    /// The latest block of producer ids handed to each broker.
    producer_id_blocks: BTreeMap<NodeId, ProducerIdBlock>,
    /// The users' SCRAM credentials, which every broker authenticates clients against.
    credentials: CredentialTable,
    /// The client quotas every broker enforces.
    quotas: QuotaTable,
    /// The cluster's id, once a controller leader proposed it (see `crate::cluster_id`).
    cluster_id: Option<String>,
    /// The ACLs, which every broker authorizes requests against.
    acls: AclTable,
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
            MetadataRecord::RegisterBrokerAtOneAddress(registration) => {
                self.register(&registration.with_listeners())
            }
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
            MetadataRecord::UserScramCredential(_)
            | MetadataRecord::RemoveUserScramCredential { .. } => {
                match record.credential_change() {
                    Some(change) => {
                        credentials::apply(&mut self.credentials, std::slice::from_ref(&change));
                        Applied::Changed
                    }
                    None => Applied::Stale("a SCRAM mechanism this broker does not know"),
                }
            }
            MetadataRecord::ClientQuota(_) => match record.quota_change() {
                Some(change) => {
                    quotas::apply(&mut self.quotas, std::slice::from_ref(&change));
                    Applied::Changed
                }
                None => Applied::Stale("a client quota this broker does not know"),
            },
            MetadataRecord::ClusterId { id } => {
                if self.cluster_id.is_some() {
                    Applied::Stale("the cluster has an id already")
                } else if !crate::cluster_id::is_valid(id) {
                    Applied::Stale("not a cluster id")
                } else {
                    self.cluster_id = Some(id.clone());
                    Applied::Changed
                }
            }
            MetadataRecord::AccessControlEntry(_) | MetadataRecord::RemoveAccessControlEntry(_) => {
                match record.acl_change() {
                    Some(change) => {
                        acls::apply(&mut self.acls, std::slice::from_ref(&change));
                        Applied::Changed
                    }
                    None => Applied::Stale("an ACL code this broker does not know"),
                }
            }
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

    /// Whether this image has the run `incarnation` of broker `node_id` registered (fenced or
    /// not): it then holds everything committed before that run began. A restarted broker
    /// applies its metadata log again from the start, through older images.
    pub fn has_run(&self, node_id: NodeId, incarnation: u64) -> bool {
        self.broker(node_id)
            .is_some_and(|broker| broker.registration.incarnation == incarnation)
    }

    /// Whether the run `incarnation` of broker `node_id` is registered and unfenced here: the
    /// image is current for that run, and lists it among the live brokers.
    pub fn is_live_run(&self, node_id: NodeId, incarnation: u64) -> bool {
        self.broker(node_id)
            .is_some_and(|broker| broker.registration.incarnation == incarnation && !broker.fenced)
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
    /// The users' SCRAM credentials.
    pub fn credentials(&self) -> &CredentialTable {
        &self.credentials
    }

    /// The client quotas.
    pub fn quotas(&self) -> &QuotaTable {
        &self.quotas
    }

    /// The cluster's id, once the log holds one.
    pub fn cluster_id(&self) -> Option<&str> {
        self.cluster_id.as_deref()
    }

    /// The ACLs.
    pub fn acls(&self) -> &AclTable {
        &self.acls
    }

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
        if let Some(id) = &self.cluster_id {
            records.push(MetadataRecord::ClusterId { id: id.clone() });
        }
        for broker in self.brokers.values() {
            records.push(MetadataRecord::RegisterBroker(Box::new(
                broker.registration.clone(),
            )));
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
        for (user, credentials) in &self.credentials {
            records.extend(credentials.iter().map(|(&mechanism, credential)| {
                MetadataRecord::of_credential_change(&CredentialChange::Upsert {
                    user: user.clone(),
                    mechanism,
                    credential: credential.clone(),
                })
            }));
        }
        for (entity, values) in &self.quotas {
            records.extend(values.iter().map(|(&key, &value)| {
                MetadataRecord::of_quota_change(&QuotaChange {
                    entity: entity.clone(),
                    key,
                    value: Some(value),
                })
            }));
        }
        records.extend(
            self.acls
                .iter()
                .map(|binding| MetadataRecord::of_acl_change(&AclChange::Create(binding.clone()))),
        );
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
mod tests;
