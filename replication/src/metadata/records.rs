//! The metadata log's records and their encoding. A batch of records is one Raft entry of the
//! controller's group: the controller leader proposes a batch, and every broker decodes it
//! once committed and applies it to its [`MetadataImage`](super::MetadataImage).
//!
//! The encoding is rkyv with bytecheck validation behind a one-byte format version: the bytes
//! come from the log on disk and from peers, so they are checked (lengths, UTF-8, enum tags)
//! before any field is read, and garbage is an error, never a panic; the version lets a later
//! release read the batches an older one wrote.

use engine::acls::{AclBinding, AclChange, Operation, PatternType, Permission, ResourceType};
use engine::credentials::{CredentialChange, ScramCredential, ScramMechanism};
use rkyv::rancor;
use rkyv::util::AlignedVec;
use thiserror::Error;

use crate::NodeId;

/// The first byte of every encoded batch.
const FORMAT_VERSION: u8 = 1;

/// One replica of a partition: the broker holding it and the shard (core) of that broker
/// that owns it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct Replica {
    pub node_id: NodeId,
    pub shard: u32,
}

/// The replicas of one partition; the first is its preferred leader.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PartitionAssignment {
    pub partition: u32,
    pub replicas: Vec<Replica>,
}

/// What a broker tells the controller about itself when it starts.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct BrokerRegistration {
    pub node_id: NodeId,
    /// Different at every start of the broker process, so the controller tells a restarted
    /// broker (which must be fenced until it has caught up) from a repeated registration.
    pub incarnation: u64,
    /// Where Kafka clients reach it (what Metadata advertises).
    pub kafka_host: String,
    pub kafka_port: u16,
    /// Where other brokers reach it (`host:port` of the inter-broker listener).
    pub rpc_address: String,
    /// How many shards it runs: replicas are placed on shards `0..shard_count`.
    pub shard_count: u32,
}

/// A block of producer ids the controller handed to one run of a broker (Kafka's
/// ProducerIdsRecord, KIP-730): ids `first_id..first_id + size`, never handed out again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ProducerIdBlock {
    pub node_id: NodeId,
    /// The broker run (its registration's incarnation) the block is for: a restarted broker
    /// never takes up its previous run's block, whose ids may have been handed out.
    pub incarnation: u64,
    pub first_id: i64,
    pub size: u32,
}

impl ProducerIdBlock {
    /// One past the block's last id; `None` if that does not fit an `i64`.
    pub fn end_id(&self) -> Option<i64> {
        self.first_id.checked_add(i64::from(self.size))
    }
}

/// One change to the cluster's metadata. Applying a record is total: one that no longer fits
/// the image (a stale or repeated proposal) changes nothing, the same way on every broker.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum MetadataRecord {
    /// A broker (re-)registered; a new incarnation starts fenced.
    RegisterBroker(BrokerRegistration),
    /// The broker is considered down: Metadata no longer lists it, nothing new is placed on it.
    FenceBroker {
        node_id: NodeId,
    },
    /// The broker was heard from again.
    UnfenceBroker {
        node_id: NodeId,
    },
    CreateTopic {
        name: String,
        /// Kafka's topic id (a UUID).
        topic_id: [u8; 16],
        /// Configuration overrides (`retention.ms`, ...).
        configs: Vec<(String, String)>,
        /// Partitions `0..n`, in order.
        partitions: Vec<PartitionAssignment>,
    },
    DeleteTopic {
        name: String,
    },
    /// Sets the overrides in `set`, then removes those named in `delete` (the broker default
    /// applies again).
    AlterTopicConfigs {
        name: String,
        set: Vec<(String, String)>,
        delete: Vec<String>,
    },
    /// Starts moving a partition to `replicas` (its target; the first becomes its preferred
    /// leader), or changes the target of a move under way (a cancellation's target is the
    /// replicas from before the move). While it moves, the partition's replicas are the
    /// target and every other broker still involved (Kafka's adding and removing replicas), so
    /// all of them host the Raft group its leader changes one voter at a time.
    ReassignPartition {
        topic: String,
        partition: u32,
        replicas: Vec<Replica>,
    },
    /// Ends the move of a partition whose Raft group's committed voters are its target
    /// `replicas` (proposed on behalf of the group's leader): the replicas become the target.
    CompleteReassignment {
        topic: String,
        partition: u32,
        replicas: Vec<Replica>,
    },
    /// Adds partitions to a topic, numbered on from its current count, in order.
    CreatePartitions {
        topic: String,
        new: Vec<PartitionAssignment>,
    },
    /// Hands a block of producer ids to a broker run; it starts at or after the end of every
    /// block handed out before.
    AllocateProducerIds(ProducerIdBlock),
    /// Adds or replaces a user's SCRAM credential for one mechanism (Kafka's
    /// UserScramCredentialRecord).
    UserScramCredential(ScramCredentialRecord),
    /// Removes a user's SCRAM credential for one mechanism (Kafka's
    /// RemoveUserScramCredentialRecord).
    RemoveUserScramCredential {
        user: String,
        mechanism: i8,
    },
    /// Adds an ACL (Kafka's AccessControlEntryRecord).
    AccessControlEntry(AclRecord),
    /// Removes an ACL (Kafka's RemoveAccessControlEntryRecord, which names it by its fields
    /// here rather than by an id).
    RemoveAccessControlEntry(AclRecord),
}

/// One ACL, in Kafka's codes (`engine::acls`).
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct AclRecord {
    pub resource_type: i8,
    pub resource_name: String,
    pub pattern_type: i8,
    pub principal: String,
    pub host: String,
    pub operation: i8,
    pub permission: i8,
}

impl AclRecord {
    fn of(binding: &AclBinding) -> AclRecord {
        AclRecord {
            resource_type: binding.resource_type.code(),
            resource_name: binding.resource_name.clone(),
            pattern_type: binding.pattern_type.code(),
            principal: binding.principal.clone(),
            host: binding.host.clone(),
            operation: binding.operation.code(),
            permission: binding.permission.code(),
        }
    }

    /// The ACL, if every code is one this broker knows.
    fn binding(&self) -> Option<AclBinding> {
        Some(AclBinding {
            resource_type: ResourceType::from_code(self.resource_type)?,
            resource_name: self.resource_name.clone(),
            pattern_type: PatternType::from_code(self.pattern_type)?,
            principal: self.principal.clone(),
            host: self.host.clone(),
            operation: Operation::from_code(self.operation)?,
            permission: Permission::from_code(self.permission)?,
        })
    }
}

/// A user's SCRAM credential for one mechanism (Kafka's number for it: 1 SCRAM-SHA-256, 2
/// SCRAM-SHA-512): what `engine::credentials` keeps, the keys derived from the password and
/// never the password.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ScramCredentialRecord {
    pub user: String,
    pub mechanism: i8,
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl MetadataRecord {
    /// The record of a change to the users' credentials.
    pub fn of_credential_change(change: &CredentialChange) -> MetadataRecord {
        match change {
            CredentialChange::Upsert {
                user,
                mechanism,
                credential,
            } => MetadataRecord::UserScramCredential(ScramCredentialRecord {
                user: user.clone(),
                mechanism: mechanism.kafka_type(),
                salt: credential.salt.clone(),
                iterations: credential.iterations,
                stored_key: credential.stored_key.clone(),
                server_key: credential.server_key.clone(),
            }),
            CredentialChange::Delete { user, mechanism } => {
                MetadataRecord::RemoveUserScramCredential {
                    user: user.clone(),
                    mechanism: mechanism.kafka_type(),
                }
            }
        }
    }

    /// The record of a change to the ACLs.
    pub fn of_acl_change(change: &AclChange) -> MetadataRecord {
        match change {
            AclChange::Create(binding) => {
                MetadataRecord::AccessControlEntry(AclRecord::of(binding))
            }
            AclChange::Delete(binding) => {
                MetadataRecord::RemoveAccessControlEntry(AclRecord::of(binding))
            }
        }
    }

    /// The change to the ACLs this record makes, if it is one of theirs with codes this broker
    /// knows.
    pub fn acl_change(&self) -> Option<AclChange> {
        match self {
            MetadataRecord::AccessControlEntry(record) => record.binding().map(AclChange::Create),
            MetadataRecord::RemoveAccessControlEntry(record) => {
                record.binding().map(AclChange::Delete)
            }
            _ => None,
        }
    }

    /// The change to the users' credentials this record makes, if it is one of theirs with a
    /// mechanism this broker knows.
    pub fn credential_change(&self) -> Option<CredentialChange> {
        match self {
            MetadataRecord::UserScramCredential(record) => Some(CredentialChange::Upsert {
                user: record.user.clone(),
                mechanism: ScramMechanism::from_kafka_type(record.mechanism)?,
                credential: ScramCredential {
                    salt: record.salt.clone(),
                    iterations: record.iterations,
                    stored_key: record.stored_key.clone(),
                    server_key: record.server_key.clone(),
                },
            }),
            MetadataRecord::RemoveUserScramCredential { user, mechanism } => {
                Some(CredentialChange::Delete {
                    user: user.clone(),
                    mechanism: ScramMechanism::from_kafka_type(*mechanism)?,
                })
            }
            _ => None,
        }
    }
}

/// Why bytes are not a batch of metadata records.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MetadataError {
    #[error("empty metadata batch")]
    Empty,
    #[error("metadata batch of unknown format version {0}")]
    UnknownFormatVersion(u8),
    #[error("invalid metadata batch: {0}")]
    Invalid(String),
}

/// Encodes a batch of records (one Raft entry).
pub fn encode(records: &[MetadataRecord]) -> Vec<u8> {
    let archive = rkyv::to_bytes::<rancor::Error>(&records.to_vec())
        .expect("serializing plain data into memory cannot fail");
    let mut bytes = Vec::with_capacity(1 + archive.len());
    bytes.push(FORMAT_VERSION);
    bytes.extend_from_slice(&archive);
    bytes
}

/// Decodes and validates a batch written by [`encode`].
pub fn decode(bytes: &[u8]) -> Result<Vec<MetadataRecord>, MetadataError> {
    let (&version, archive) = bytes.split_first().ok_or(MetadataError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(MetadataError::UnknownFormatVersion(version));
    }
    // rkyv reads archives in place and checks their alignment; a slice of a Raft entry has
    // none to speak of, so the archive is copied to aligned memory first.
    let mut aligned = AlignedVec::<16>::with_capacity(archive.len());
    aligned.extend_from_slice(archive);
    rkyv::from_bytes::<Vec<MetadataRecord>, rancor::Error>(&aligned)
        .map_err(|error| MetadataError::Invalid(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_kind_of_record() -> Vec<MetadataRecord> {
        let replicas = vec![
            Replica {
                node_id: 2,
                shard: 1,
            },
            Replica {
                node_id: 3,
                shard: 0,
            },
        ];
        vec![
            MetadataRecord::RegisterBroker(BrokerRegistration {
                node_id: 2,
                incarnation: 77,
                kafka_host: "10.0.0.2".to_owned(),
                kafka_port: 9092,
                rpc_address: "10.0.0.2:9093".to_owned(),
                shard_count: 4,
            }),
            MetadataRecord::FenceBroker { node_id: 2 },
            MetadataRecord::UnfenceBroker { node_id: 2 },
            MetadataRecord::CreateTopic {
                name: "orders".to_owned(),
                topic_id: [7; 16],
                configs: vec![("retention.ms".to_owned(), "60000".to_owned())],
                partitions: vec![PartitionAssignment {
                    partition: 0,
                    replicas: replicas.clone(),
                }],
            },
            MetadataRecord::AlterTopicConfigs {
                name: "orders".to_owned(),
                set: vec![("segment.ms".to_owned(), "1000".to_owned())],
                delete: vec!["retention.ms".to_owned()],
            },
            MetadataRecord::ReassignPartition {
                topic: "orders".to_owned(),
                partition: 0,
                replicas: replicas.clone(),
            },
            MetadataRecord::CompleteReassignment {
                topic: "orders".to_owned(),
                partition: 0,
                replicas: replicas.clone(),
            },
            MetadataRecord::CreatePartitions {
                topic: "orders".to_owned(),
                new: vec![PartitionAssignment {
                    partition: 1,
                    replicas,
                }],
            },
            MetadataRecord::DeleteTopic {
                name: "orders".to_owned(),
            },
            MetadataRecord::AllocateProducerIds(ProducerIdBlock {
                node_id: 2,
                incarnation: 77,
                first_id: 3_000,
                size: 1_000,
            }),
            MetadataRecord::UserScramCredential(ScramCredentialRecord {
                user: "alice".to_owned(),
                mechanism: 2,
                salt: vec![1; 32],
                iterations: 4096,
                stored_key: vec![2; 64],
                server_key: vec![3; 64],
            }),
            MetadataRecord::RemoveUserScramCredential {
                user: "alice".to_owned(),
                mechanism: 1,
            },
            MetadataRecord::AccessControlEntry(AclRecord {
                resource_type: 2,
                resource_name: "orders-".to_owned(),
                pattern_type: 4,
                principal: "User:alice".to_owned(),
                host: "*".to_owned(),
                operation: 4,
                permission: 3,
            }),
            MetadataRecord::RemoveAccessControlEntry(AclRecord {
                resource_type: 3,
                resource_name: "group".to_owned(),
                pattern_type: 3,
                principal: "User:*".to_owned(),
                host: "10.0.0.1".to_owned(),
                operation: 3,
                permission: 2,
            }),
        ]
    }

    #[test]
    fn every_record_survives_encoding() {
        let records = every_kind_of_record();
        for record in &records {
            let one = std::slice::from_ref(record);
            assert_eq!(decode(&encode(one)).as_deref(), Ok(one));
        }
        assert_eq!(decode(&encode(&records)), Ok(records));
        assert_eq!(decode(&encode(&[])), Ok(vec![]));
    }

    /// A metadata log outlives the build that wrote it: the batch in `testdata/records-v1.bin`
    /// is `every_kind_of_record()` as 584c9d2 encoded it (rkyv lays an enum out by its
    /// variants' order and sizes, so a variant inserted before others, or a field added to a
    /// record, would make it undecodable). New records go at the end of the enum.
    /// The records at the end of `every_kind_of_record()` of kinds 584c9d2 did not have.
    const RECORD_KINDS_ADDED_SINCE_584C9D2: usize = 2;

    #[test]
    fn a_batch_an_earlier_build_wrote_still_decodes() {
        let written_by_584c9d2 = include_bytes!("testdata/records-v1.bin");
        // The kinds of record added since (ACLs) come after those it had.
        let mut its_kinds = every_kind_of_record();
        its_kinds.truncate(its_kinds.len() - RECORD_KINDS_ADDED_SINCE_584C9D2);
        assert_eq!(decode(written_by_584c9d2), Ok(its_kinds));
    }

    #[test]
    fn bad_bytes_are_refused() {
        assert_eq!(decode(&[]), Err(MetadataError::Empty));
        let mut bytes = encode(&every_kind_of_record());
        bytes[0] = 9;
        assert_eq!(decode(&bytes), Err(MetadataError::UnknownFormatVersion(9)));
        bytes[0] = FORMAT_VERSION;
        bytes.truncate(bytes.len() / 2);
        assert!(matches!(decode(&bytes), Err(MetadataError::Invalid(_))));
    }
}
