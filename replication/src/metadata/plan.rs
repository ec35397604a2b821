//! The controller's decisions: pure functions of a [`MetadataImage`] that check an admin
//! request the way Kafka does and say which records to propose for it. The controller leader
//! runs them on its image and proposes the records; they take effect on every broker when
//! committed and applied. An empty list means there is nothing to change.
//!
//! Topic names, partition counts and topic configs are checked by the same functions as on a
//! single broker (`engine::catalog`, `engine::topic_config`), so both refuse the same requests.
//! Between planning and commit another proposal may have changed the image; applying is total
//! (a record that no longer fits is stale and changes nothing), so a plan never needs a lock.

use std::collections::BTreeMap;

use engine::catalog::{is_internal_topic, validate_partition_count, validate_topic_name};
use engine::{topic_config, LogConfig};
use thiserror::Error;

use super::assignment::Placement;
use super::image::{MetadataImage, Reassignment};
use super::records::{MetadataRecord, ProducerIdBlock, Replica};
use crate::NodeId;

/// Why a request is refused; each names the Kafka error code the broker answers with.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PlanError {
    /// TOPIC_ALREADY_EXISTS
    #[error("topic '{0}' already exists")]
    TopicAlreadyExists(String),
    /// UNKNOWN_TOPIC_OR_PARTITION
    #[error("topic '{topic}' has no partition {partition}")]
    UnknownPartition { topic: String, partition: u32 },
    /// UNKNOWN_TOPIC_OR_PARTITION
    #[error("topic '{0}' does not exist")]
    UnknownTopic(String),
    /// INVALID_TOPIC_EXCEPTION: a bad name, or an internal topic clients may not change.
    #[error("{0}")]
    InvalidTopic(String),
    /// INVALID_PARTITIONS
    #[error("{0}")]
    InvalidPartitions(String),
    /// INVALID_REPLICATION_FACTOR
    #[error("replication factor {requested} is not between 1 and the {live_brokers} live brokers")]
    InvalidReplicationFactor { requested: i64, live_brokers: usize },
    /// INVALID_REPLICA_ASSIGNMENT
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    /// INVALID_CONFIG
    #[error("{0}")]
    InvalidConfig(String),
    /// NO_REASSIGNMENT_IN_PROGRESS: a cancellation of a partition that is not being moved.
    #[error("partition {partition} of topic '{topic}' is not being moved")]
    NoReassignmentInProgress { topic: String, partition: u32 },
    /// UNKNOWN_SERVER_ERROR: the caller's fresh topic id is taken (it should draw another).
    #[error("topic id {0:02x?} is in use")]
    TopicIdInUse([u8; 16]),
    /// STALE_BROKER_EPOCH: the broker run asking is not the one registered (its registration
    /// is not committed yet, or the broker restarted since).
    #[error("broker {node_id} run {incarnation} is not the registered one")]
    StaleBrokerEpoch { node_id: NodeId, incarnation: u64 },
    /// UNKNOWN_SERVER_ERROR: no block of producer ids fits below `i64::MAX` any more.
    #[error("every producer id has been handed out")]
    ProducerIdsExhausted,
    /// UNACCEPTABLE_CREDENTIAL
    #[error("{0}")]
    UnacceptableCredential(String),
    /// INVALID_REQUEST: records that are not what the request carries (a broker's bug).
    #[error("{0}")]
    InvalidRequest(String),
}

/// A CreateTopics request for one topic, its defaults (-1) already resolved by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    /// A fresh random id: plans draw no randomness of their own.
    pub topic_id: [u8; 16],
    pub partitions: i32,
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
}

/// Creates a topic, its partitions spread over the live brokers (see `assignment`).
/// `broker_log_config` holds the broker-wide defaults the topic's overrides are checked with.
pub fn plan_create_topic(
    image: &MetadataImage,
    broker_log_config: &LogConfig,
    topic: &NewTopic,
) -> Result<Vec<MetadataRecord>, PlanError> {
    validate_topic_name(&topic.name).map_err(|error| PlanError::InvalidTopic(error.to_string()))?;
    if image.topic(&topic.name).is_some() {
        return Err(PlanError::TopicAlreadyExists(topic.name.clone()));
    }
    let partitions = validate_partition_count(i64::from(topic.partitions))
        .map_err(|error| PlanError::InvalidPartitions(error.to_string()))?;
    let mut placement = Placement::of(image);
    let replication_factor =
        checked_replication_factor(i64::from(topic.replication_factor), &placement)?;
    topic_config::validate(broker_log_config, &topic.configs).map_err(PlanError::InvalidConfig)?;
    if image.topic_by_id(&topic.topic_id).is_some() {
        return Err(PlanError::TopicIdInUse(topic.topic_id));
    }
    Ok(vec![MetadataRecord::CreateTopic {
        name: topic.name.clone(),
        topic_id: topic.topic_id,
        configs: topic.configs.clone().into_iter().collect(),
        partitions: placement.assign(0..partitions, replication_factor),
    }])
}

pub fn plan_delete_topic(
    image: &MetadataImage,
    name: &str,
) -> Result<Vec<MetadataRecord>, PlanError> {
    changeable_topic(image, name)?;
    Ok(vec![MetadataRecord::DeleteTopic {
        name: name.to_owned(),
    }])
}

/// Grows a topic to `count` partitions (Kafka never shrinks one); the new ones get as many
/// replicas as its partition 0 has, spread as a new topic's are.
pub fn plan_create_partitions(
    image: &MetadataImage,
    name: &str,
    count: i32,
) -> Result<Vec<MetadataRecord>, PlanError> {
    let topic = changeable_topic(image, name)?;
    let count = validate_partition_count(i64::from(count))
        .map_err(|error| PlanError::InvalidPartitions(error.to_string()))?;
    let current = topic.partitions.len();
    let current = u32::try_from(current)
        .ok()
        .filter(|&current| current < count)
        .ok_or_else(|| {
            PlanError::InvalidPartitions(format!(
                "topic '{name}' already has {current} partitions; the count can only grow"
            ))
        })?;
    let mut placement = Placement::of(image);
    let replicas = topic.replicas(0).map_or(1, <[Replica]>::len);
    let replication_factor = checked_replication_factor(replicas as i64, &placement)?;
    Ok(vec![MetadataRecord::CreatePartitions {
        topic: name.to_owned(),
        new: placement.assign(current..count, replication_factor),
    }])
}

/// Moves a partition to the brokers `node_ids` (the first becomes its preferred leader), or
/// changes the target of its move under way. A broker that hosts the partition already keeps
/// its shard; one that does not must be live (it has to catch up before it can vote) and gets
/// its least-loaded shard.
pub fn plan_reassign(
    image: &MetadataImage,
    topic: &str,
    partition: u32,
    node_ids: &[NodeId],
) -> Result<Vec<MetadataRecord>, PlanError> {
    let (current, running) = partition_state(image, topic, partition)?;
    if node_ids.is_empty() {
        return Err(PlanError::InvalidReplicaAssignment(
            "a partition needs at least one replica".to_owned(),
        ));
    }
    let mut placement = Placement::of(image);
    let mut replicas: Vec<Replica> = Vec::with_capacity(node_ids.len());
    for (position, &node_id) in node_ids.iter().enumerate() {
        if replicas.iter().any(|replica| replica.node_id == node_id) {
            return Err(PlanError::InvalidReplicaAssignment(format!(
                "broker {node_id} is named twice"
            )));
        }
        let kept = current.iter().find(|replica| replica.node_id == node_id);
        let replica = match (kept, image.broker(node_id)) {
            (Some(kept), _) => *kept,
            (None, Some(broker)) if broker.fenced => {
                return Err(PlanError::InvalidReplicaAssignment(format!(
                    "broker {node_id} is fenced"
                )))
            }
            (None, _) => placement.place_on(node_id, position == 0).ok_or_else(|| {
                PlanError::InvalidReplicaAssignment(format!("broker {node_id} is not registered"))
            })?,
        };
        replicas.push(replica);
    }
    let target = running.map_or(current, |running| running.target.as_slice());
    if replicas == target {
        return Ok(vec![]);
    }
    Ok(vec![MetadataRecord::ReassignPartition {
        topic: topic.to_owned(),
        partition,
        replicas,
    }])
}

/// Cancels a partition's move (Kafka's reassignment to null): it goes back to the replicas it
/// had before, the same way it was going forward.
pub fn plan_cancel_reassignment(
    image: &MetadataImage,
    topic: &str,
    partition: u32,
) -> Result<Vec<MetadataRecord>, PlanError> {
    let running = partition_state(image, topic, partition)?.1.ok_or_else(|| {
        PlanError::NoReassignmentInProgress {
            topic: topic.to_owned(),
            partition,
        }
    })?;
    if running.target == running.original {
        return Ok(vec![]);
    }
    Ok(vec![MetadataRecord::ReassignPartition {
        topic: topic.to_owned(),
        partition,
        replicas: running.original.clone(),
    }])
}

/// Completes a partition's move once its Raft group's committed voters (as its leader reports
/// them) are the target's brokers. Nothing to do if they are not (any more): the leader's view
/// or the request is behind, and the leader asks again while the move runs.
pub fn plan_complete_reassignment(
    image: &MetadataImage,
    topic: &str,
    partition: u32,
    voters: &[NodeId],
) -> Result<Vec<MetadataRecord>, PlanError> {
    let Some(running) = partition_state(image, topic, partition)?.1 else {
        return Ok(vec![]);
    };
    let mut target: Vec<NodeId> = running.target.iter().map(|r| r.node_id).collect();
    let mut voters = voters.to_vec();
    target.sort_unstable();
    voters.sort_unstable();
    if target != voters {
        return Ok(vec![]);
    }
    Ok(vec![MetadataRecord::CompleteReassignment {
        topic: topic.to_owned(),
        partition,
        replicas: running.target.clone(),
    }])
}

/// A partition's replicas now and its move under way, if any.
fn partition_state<'image>(
    image: &'image MetadataImage,
    topic: &str,
    partition: u32,
) -> Result<(&'image [Replica], Option<&'image Reassignment>), PlanError> {
    let found = image
        .topic(topic)
        .ok_or_else(|| PlanError::UnknownTopic(topic.to_owned()))?;
    let replicas = found
        .replicas(partition)
        .ok_or_else(|| PlanError::UnknownPartition {
            topic: topic.to_owned(),
            partition,
        })?;
    Ok((replicas, found.reassignments.get(&partition)))
}

/// Replaces a topic's configuration overrides with what `change` makes of the current ones
/// (`Err` says why not: INVALID_CONFIG), as `engine::catalog::Catalog::alter_topic_configs`
/// does on a single broker, and proposes the difference.
pub fn plan_alter_configs(
    image: &MetadataImage,
    broker_log_config: &LogConfig,
    name: &str,
    change: impl FnOnce(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, String>,
) -> Result<Vec<MetadataRecord>, PlanError> {
    let current = &changeable_topic(image, name)?.configs;
    let altered = change(current).map_err(PlanError::InvalidConfig)?;
    topic_config::validate(broker_log_config, &altered).map_err(PlanError::InvalidConfig)?;
    let set: Vec<(String, String)> = altered
        .iter()
        .filter(|&(key, value)| current.get(key) != Some(value))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    let delete: Vec<String> = current
        .keys()
        .filter(|key| !altered.contains_key(*key))
        .cloned()
        .collect();
    if set.is_empty() && delete.is_empty() {
        return Ok(vec![]);
    }
    Ok(vec![MetadataRecord::AlterTopicConfigs {
        name: name.to_owned(),
        set,
        delete,
    }])
}

/// Hands run `incarnation` of broker `node_id` the next `size` producer ids (Kafka's
/// AllocateProducerIds, KIP-730): the block starts where the last one handed out ended, so
/// ids are unique in the cluster for its whole life, whichever broker or run asks. Only the
/// registered run gets one: a run that is not (yet) would take up a block that the image then
/// ties to a run the broker no longer is.
pub fn plan_allocate_producer_ids(
    image: &MetadataImage,
    node_id: NodeId,
    incarnation: u64,
    size: u32,
) -> Result<Vec<MetadataRecord>, PlanError> {
    assert!(size > 0, "a producer id block holds ids");
    let registered = image
        .broker(node_id)
        .is_some_and(|broker| broker.registration.incarnation == incarnation);
    if !registered {
        return Err(PlanError::StaleBrokerEpoch {
            node_id,
            incarnation,
        });
    }
    let block = ProducerIdBlock {
        node_id,
        incarnation,
        first_id: image.producer_id_next(),
        size,
    };
    if block.end_id().is_none() {
        return Err(PlanError::ProducerIdsExhausted);
    }
    Ok(vec![MetadataRecord::AllocateProducerIds(block)])
}

/// Fences the unfenced brokers not heard from for more than `session_timeout_ms` (or never:
/// a new controller leader should count every broker as heard from when it took over), and
/// unfences the fenced ones heard from since. `heartbeats` holds each broker's last heartbeat,
/// in the caller's milliseconds, as is `now_ms`.
pub fn plan_liveness(
    image: &MetadataImage,
    heartbeats: &BTreeMap<NodeId, u64>,
    now_ms: u64,
    session_timeout_ms: u64,
) -> Vec<MetadataRecord> {
    image
        .brokers()
        .filter_map(|broker| {
            let node_id = broker.registration.node_id;
            let alive = heartbeats
                .get(&node_id)
                .is_some_and(|&heard_ms| now_ms.saturating_sub(heard_ms) <= session_timeout_ms);
            match (broker.fenced, alive) {
                (false, false) => Some(MetadataRecord::FenceBroker { node_id }),
                (true, true) => Some(MetadataRecord::UnfenceBroker { node_id }),
                _ => None,
            }
        })
        .collect()
}

fn checked_replication_factor(requested: i64, placement: &Placement) -> Result<usize, PlanError> {
    let live_brokers = placement.live_broker_count();
    usize::try_from(requested)
        .ok()
        .filter(|factor| (1..=live_brokers).contains(factor))
        .ok_or(PlanError::InvalidReplicationFactor {
            requested,
            live_brokers,
        })
}

/// The topic `name`, if it exists and is not internal (clients may not delete, grow or
/// reconfigure the broker's own topics).
fn changeable_topic<'image>(
    image: &'image MetadataImage,
    name: &str,
) -> Result<&'image super::TopicImage, PlanError> {
    if is_internal_topic(name) {
        return Err(PlanError::InvalidTopic(format!(
            "topic '{name}' is internal to the broker"
        )));
    }
    image
        .topic(name)
        .ok_or_else(|| PlanError::UnknownTopic(name.to_owned()))
}

#[cfg(test)]
mod tests;

/// Changes the client quotas (AlterClientQuotas, checked as Kafka checks it by the broker that
/// took the request): only client quota records of a key this broker knows are kept.
pub fn plan_alter_client_quotas(records: Vec<MetadataRecord>) -> Vec<MetadataRecord> {
    records
        .into_iter()
        .filter(|record| record.quota_change().is_some())
        .collect()
}

/// Changes the ACLs (CreateAcls, DeleteAcls, checked as Kafka checks them by the broker that
/// took the request): `records` must all be ACL records of known codes; creating an ACL that is
/// there, or removing one that is not, changes nothing and is left out.
pub fn plan_alter_acls(
    image: &MetadataImage,
    records: Vec<MetadataRecord>,
) -> Result<Vec<MetadataRecord>, PlanError> {
    let mut planned = Vec::with_capacity(records.len());
    let mut acls = image.acls().clone();
    for record in records {
        let Some(change) = record.acl_change() else {
            return Err(PlanError::InvalidRequest(format!(
                "not an ACL of known codes: {record:?}"
            )));
        };
        let changes = match &change {
            engine::acls::AclChange::Create(binding) => !acls.contains(binding),
            engine::acls::AclChange::Delete(binding) => acls.contains(binding),
        };
        if changes {
            engine::acls::apply(&mut acls, std::slice::from_ref(&change));
            planned.push(record);
        }
    }
    Ok(planned)
}

/// Changes the users' SCRAM credentials (AlterUserScramCredentials, checked as Kafka checks it
/// by the broker that took the request): `records` must all be credential records of a known
/// mechanism; removing a credential that is not there changes nothing.
pub fn plan_alter_credentials(
    image: &MetadataImage,
    records: Vec<MetadataRecord>,
) -> Result<Vec<MetadataRecord>, PlanError> {
    let mut planned = Vec::with_capacity(records.len());
    for record in records {
        let Some(change) = record.credential_change() else {
            return Err(PlanError::UnacceptableCredential(format!(
                "not a credential of a known SCRAM mechanism: {record:?}"
            )));
        };
        if let engine::credentials::CredentialChange::Delete { user, mechanism } = &change {
            let present = image
                .credentials()
                .get(user)
                .is_some_and(|credentials| credentials.contains_key(mechanism));
            if !present {
                continue;
            }
        }
        planned.push(record);
    }
    Ok(planned)
}
