//! What the controllers of the brokers say to each other: the metadata group's Raft messages,
//! requests forwarded to the controller leader, and the leader's answers. All of it is rkyv,
//! carried by the inter-broker transport and validated on receive like any of its messages.
//!
//! [`PlanError`] is the metadata module's own (pure, no serialization); [`WirePlanError`] is its
//! image on the wire, converted both ways here and nowhere else.

use crate::message::{Index, Message, NodeId};
use crate::metadata::{BrokerRegistration, MetadataRecord, PlanError};

/// One message of the controller protocol.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum ControllerWire {
    /// A message of the metadata log's Raft group (fetched batches ride in the payload).
    Raft(Message),
    /// A request for the controller leader; answered with a [`ControllerWire::Response`] of
    /// the same id, sent back to the requesting broker.
    Request {
        request_id: u64,
        request: ControllerRequest,
    },
    Response {
        request_id: u64,
        outcome: Outcome,
    },
}

/// A change to the cluster's metadata, or a broker's sign of life, asked of the controller.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum ControllerRequest {
    /// A broker starts (or repeats its registration: the same incarnation changes nothing).
    RegisterBroker(BrokerRegistration),
    /// A broker is alive; the leader notes the time and proposes nothing.
    Heartbeat {
        node_id: NodeId,
    },
    CreateTopic {
        name: String,
        partitions: i32,
        replication_factor: i16,
        configs: Vec<(String, String)>,
    },
    DeleteTopic {
        name: String,
    },
    /// Grows the topic to `count` partitions.
    CreatePartitions {
        name: String,
        count: i32,
    },
    /// IncrementalAlterConfigs on one topic: the changes apply in order, then the result is
    /// checked as a whole.
    AlterConfigs {
        name: String,
        changes: Vec<ConfigChange>,
    },
    /// Moves a partition to these brokers (the first is its new preferred leader); `None`
    /// cancels its move (Kafka's null replicas).
    Reassign {
        topic: String,
        partition: u32,
        replicas: Option<Vec<NodeId>>,
    },
    /// The partition's leader reports that its group's committed voters are `voters`: a move
    /// to them is complete.
    CompleteReassignment {
        topic: String,
        partition: u32,
        voters: Vec<NodeId>,
    },
    /// A broker run asks for its next block of producer ids (Kafka's AllocateProducerIds,
    /// KIP-730); it reads the block from its image once the answered index is applied.
    AllocateProducerIds {
        node_id: NodeId,
        incarnation: u64,
    },
    /// AlterUserScramCredentials: credential records (`UserScramCredential`,
    /// `RemoveUserScramCredential`) the broker that took the request checked.
    AlterCredentials {
        records: Vec<MetadataRecord>,
    },
    /// AlterClientQuotas: client quota records (`ClientQuota`) the broker that took the
    /// request checked.
    AlterClientQuotas {
        records: Vec<MetadataRecord>,
    },
    /// CreateAcls, DeleteAcls: ACL records (`AccessControlEntry`, `RemoveAccessControlEntry`)
    /// the broker that took the request checked.
    AlterAcls {
        records: Vec<MetadataRecord>,
    },
}

/// One IncrementalAlterConfigs operation on one key.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ConfigChange {
    pub key: String,
    pub operation: ConfigOperation,
    /// None for a deletion.
    pub value: Option<String>,
}

/// `engine::topic_config::Operation` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum ConfigOperation {
    Set,
    Delete,
    Append,
    Subtract,
}

impl From<ConfigOperation> for engine::topic_config::Operation {
    fn from(operation: ConfigOperation) -> Self {
        use engine::topic_config::Operation;
        match operation {
            ConfigOperation::Set => Operation::Set,
            ConfigOperation::Delete => Operation::Delete,
            ConfigOperation::Append => Operation::Append,
            ConfigOperation::Subtract => Operation::Subtract,
        }
    }
}

/// How the controller leader (or a broker that is not it) answered a request.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Outcome {
    /// Done: the change is committed as the metadata entry at this index (for a request that
    /// changed nothing, the leader's applied index then).
    Applied(Index),
    /// Refused, as Kafka would.
    Refused(WirePlanError),
    /// Not the leader; ask this one, if known.
    NotLeader { leader_hint: Option<NodeId> },
    /// The leader could not write the change (its log failed, or the change is more than
    /// one entry of the metadata log holds).
    Failed(String),
}

/// [`PlanError`] on the wire.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum WirePlanError {
    TopicAlreadyExists(String),
    UnknownPartition { topic: String, partition: u32 },
    UnknownTopic(String),
    InvalidTopic(String),
    InvalidPartitions(String),
    InvalidReplicationFactor { requested: i64, live_brokers: u64 },
    InvalidReplicaAssignment(String),
    InvalidConfig(String),
    NoReassignmentInProgress { topic: String, partition: u32 },
    TopicIdInUse([u8; 16]),
    StaleBrokerEpoch { node_id: NodeId, incarnation: u64 },
    ProducerIdsExhausted,
    UnacceptableCredential(String),
    InvalidRequest(String),
}

impl From<PlanError> for WirePlanError {
    fn from(error: PlanError) -> Self {
        match error {
            PlanError::TopicAlreadyExists(name) => WirePlanError::TopicAlreadyExists(name),
            PlanError::UnknownPartition { topic, partition } => {
                WirePlanError::UnknownPartition { topic, partition }
            }
            PlanError::UnknownTopic(name) => WirePlanError::UnknownTopic(name),
            PlanError::InvalidTopic(reason) => WirePlanError::InvalidTopic(reason),
            PlanError::InvalidPartitions(reason) => WirePlanError::InvalidPartitions(reason),
            PlanError::InvalidReplicationFactor {
                requested,
                live_brokers,
            } => WirePlanError::InvalidReplicationFactor {
                requested,
                live_brokers: live_brokers as u64,
            },
            PlanError::InvalidReplicaAssignment(reason) => {
                WirePlanError::InvalidReplicaAssignment(reason)
            }
            PlanError::InvalidConfig(reason) => WirePlanError::InvalidConfig(reason),
            PlanError::NoReassignmentInProgress { topic, partition } => {
                WirePlanError::NoReassignmentInProgress { topic, partition }
            }
            PlanError::TopicIdInUse(id) => WirePlanError::TopicIdInUse(id),
            PlanError::StaleBrokerEpoch {
                node_id,
                incarnation,
            } => WirePlanError::StaleBrokerEpoch {
                node_id,
                incarnation,
            },
            PlanError::ProducerIdsExhausted => WirePlanError::ProducerIdsExhausted,
            PlanError::UnacceptableCredential(reason) => {
                WirePlanError::UnacceptableCredential(reason)
            }
            PlanError::InvalidRequest(reason) => WirePlanError::InvalidRequest(reason),
        }
    }
}

impl From<WirePlanError> for PlanError {
    fn from(error: WirePlanError) -> Self {
        match error {
            WirePlanError::TopicAlreadyExists(name) => PlanError::TopicAlreadyExists(name),
            WirePlanError::UnknownPartition { topic, partition } => {
                PlanError::UnknownPartition { topic, partition }
            }
            WirePlanError::UnknownTopic(name) => PlanError::UnknownTopic(name),
            WirePlanError::InvalidTopic(reason) => PlanError::InvalidTopic(reason),
            WirePlanError::InvalidPartitions(reason) => PlanError::InvalidPartitions(reason),
            WirePlanError::InvalidReplicationFactor {
                requested,
                live_brokers,
            } => PlanError::InvalidReplicationFactor {
                requested,
                live_brokers: usize::try_from(live_brokers).unwrap_or(usize::MAX),
            },
            WirePlanError::InvalidReplicaAssignment(reason) => {
                PlanError::InvalidReplicaAssignment(reason)
            }
            WirePlanError::InvalidConfig(reason) => PlanError::InvalidConfig(reason),
            WirePlanError::NoReassignmentInProgress { topic, partition } => {
                PlanError::NoReassignmentInProgress { topic, partition }
            }
            WirePlanError::TopicIdInUse(id) => PlanError::TopicIdInUse(id),
            WirePlanError::StaleBrokerEpoch {
                node_id,
                incarnation,
            } => PlanError::StaleBrokerEpoch {
                node_id,
                incarnation,
            },
            WirePlanError::ProducerIdsExhausted => PlanError::ProducerIdsExhausted,
            WirePlanError::UnacceptableCredential(reason) => {
                PlanError::UnacceptableCredential(reason)
            }
            WirePlanError::InvalidRequest(reason) => PlanError::InvalidRequest(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::frame::decode_header;
    use rkyv::util::AlignedVec;

    #[test]
    fn plan_errors_survive_the_wire() {
        let errors = [
            PlanError::TopicAlreadyExists("t".into()),
            PlanError::UnknownPartition {
                topic: "t".into(),
                partition: 3,
            },
            PlanError::UnknownTopic("t".into()),
            PlanError::InvalidTopic("bad".into()),
            PlanError::InvalidPartitions("0".into()),
            PlanError::InvalidReplicationFactor {
                requested: 4,
                live_brokers: 3,
            },
            PlanError::InvalidReplicaAssignment("twice".into()),
            PlanError::InvalidConfig("no".into()),
            PlanError::NoReassignmentInProgress {
                topic: "t".into(),
                partition: 1,
            },
            PlanError::TopicIdInUse([9; 16]),
            PlanError::StaleBrokerEpoch {
                node_id: 2,
                incarnation: 5,
            },
            PlanError::ProducerIdsExhausted,
            PlanError::InvalidRequest("not an ACL".into()),
        ];
        for error in errors {
            let wire = ControllerWire::Response {
                request_id: 7,
                outcome: Outcome::Refused(error.clone().into()),
            };
            let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&wire).unwrap();
            let ControllerWire::Response {
                outcome: Outcome::Refused(back),
                ..
            } = decode_header::<ControllerWire>(&bytes, &mut AlignedVec::new()).unwrap()
            else {
                panic!("a response");
            };
            assert_eq!(PlanError::from(back), error);
        }
    }
}
