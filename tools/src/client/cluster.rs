//! The cluster as the admin commands see it: the brokers and topics the Metadata response
//! names, a connection per broker opened when first needed, and the per-partition requests that
//! must go to each partition's leader (ListOffsets here; Produce and Fetch in their commands).
//!
//! A single-node Ferrite leads every partition, but sending each partition's requests to the
//! leader the metadata names is what keeps these commands right against a cluster.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{ListOffsetsRequest, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::admin::AdminError;
use crate::client::{ClientError, Connection};

/// ListOffsets' special timestamp for the next offset to be written (the high-water mark).
pub const LATEST_TIMESTAMP: i64 = -1;
/// ListOffsets' special timestamp for the first offset still in the log.
pub const EARLIEST_TIMESTAMP: i64 = -2;

/// How long to keep asking for metadata while a partition has no leader yet (right after a
/// topic was created, or during an election).
const LEADER_WAIT: Duration = Duration::from_secs(10);
const LEADER_RETRY_INTERVAL: Duration = Duration::from_millis(100);

/// A topic and its partitions, in partition order.
pub struct TopicMetadata {
    pub name: String,
    pub partitions: Vec<PartitionMetadata>,
}

pub struct PartitionMetadata {
    pub index: i32,
    /// The broker id of the leader; negative when there is none.
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub in_sync_replicas: Vec<i32>,
}

impl TopicMetadata {
    /// The leader of `partition`, or an error saying it has none or does not exist.
    pub fn leader_of(&self, partition: i32) -> Result<i32, AdminError> {
        let metadata = self
            .partitions
            .iter()
            .find(|metadata| metadata.index == partition)
            .ok_or_else(|| {
                AdminError::Cluster(format!(
                    "topic {} has no partition {partition} (it has {}); `ferrite topic \
                     describe {}` lists them",
                    self.name,
                    self.partitions.len(),
                    self.name
                ))
            })?;
        if metadata.leader < 0 {
            return Err(AdminError::Cluster(format!(
                "partition {}-{partition} has no leader; run the command again once the \
                 cluster has elected one",
                self.name
            )));
        }
        Ok(metadata.leader)
    }

    /// `partitions` grouped by leader, each group in partition order.
    pub fn by_leader(
        &self,
        partitions: impl IntoIterator<Item = i32>,
    ) -> Result<BTreeMap<i32, Vec<i32>>, AdminError> {
        let mut groups: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for partition in partitions {
            groups
                .entry(self.leader_of(partition)?)
                .or_default()
                .push(partition);
        }
        Ok(groups)
    }
}

/// Connections to the brokers of one cluster, found from one bootstrap address.
pub struct Cluster {
    bootstrap_address: String,
    /// Open connections by address (HOST:PORT); the bootstrap connection is one of them.
    connections: HashMap<String, Connection>,
    /// Broker id → address, from the latest Metadata response.
    brokers: HashMap<i32, String>,
}

impl Cluster {
    /// Connects to the bootstrap broker.
    pub fn connect(bootstrap_address: &str) -> Result<Cluster, ClientError> {
        let connection = Connection::open(bootstrap_address)?;
        Ok(Cluster {
            bootstrap_address: bootstrap_address.to_string(),
            connections: HashMap::from([(bootstrap_address.to_string(), connection)]),
            brokers: HashMap::new(),
        })
    }

    /// The connection to the bootstrap broker, for cluster-wide requests (Metadata,
    /// CreateTopics, DeleteTopics, DescribeConfigs).
    pub fn bootstrap(&mut self) -> Result<&mut Connection, ClientError> {
        self.connection_to_address(self.bootstrap_address.clone())
    }

    /// The connection to broker `broker_id` as named by the latest metadata.
    pub fn broker(&mut self, broker_id: i32) -> Result<&mut Connection, AdminError> {
        let address = self.brokers.get(&broker_id).cloned().ok_or_else(|| {
            AdminError::Cluster(format!(
                "broker {broker_id} leads a partition but is missing from the metadata's \
                 broker list; run the command again"
            ))
        })?;
        Ok(self.connection_to_address(address)?)
    }

    /// The connection to the broker at `address` (HOST:PORT), e.g. a group's coordinator.
    pub fn connection_to_address(
        &mut self,
        address: String,
    ) -> Result<&mut Connection, ClientError> {
        match self.connections.entry(address) {
            Entry::Occupied(open) => Ok(open.into_mut()),
            Entry::Vacant(missing) => {
                let connection = Connection::open(missing.key())?;
                Ok(missing.insert(connection))
            }
        }
    }

    /// Metadata for `topics` (all topics when `None`), never asking the broker to create them.
    /// Remembers the brokers it names. An answer that names no broker (a cluster broker that
    /// just started and is not yet live in its own image) is asked again, up to
    /// [`LEADER_WAIT`], as Kafka's clients do.
    pub fn metadata(&mut self, topics: Option<&[String]>) -> Result<MetadataResponse, AdminError> {
        let deadline = Instant::now() + LEADER_WAIT;
        let connection = self.bootstrap()?;
        let version = connection.version::<MetadataRequest>()?;
        let request = MetadataRequest::default()
            .with_topics(topics.map(|names| {
                names
                    .iter()
                    .map(|name| MetadataRequestTopic::default().with_name(Some(topic_name(name))))
                    .collect()
            }))
            // Versions before 4 cannot say no (the broker's auto-creation setting decides).
            .with_allow_auto_topic_creation(version < 4);
        let response = loop {
            let response = connection.send(&request, version, Duration::ZERO)?;
            if !response.brokers.is_empty() || Instant::now() >= deadline {
                break response;
            }
            std::thread::sleep(LEADER_RETRY_INTERVAL);
        };
        if let Some(error) = AdminError::from_code("metadata", response.error_code, None) {
            return Err(error);
        }
        self.brokers = response
            .brokers
            .iter()
            .map(|broker| {
                (
                    broker.node_id.0,
                    format!("{}:{}", broker.host.as_str(), broker.port),
                )
            })
            .collect();
        Ok(response)
    }

    /// The metadata of one topic, waiting (up to [`LEADER_WAIT`]) until each partition has a
    /// leader. An unknown topic is an error that says how to create it.
    pub fn topic(&mut self, name: &str) -> Result<TopicMetadata, AdminError> {
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            let response = self.metadata(Some(&[name.to_string()]))?;
            let topic = response
                .topics
                .into_iter()
                .find(|topic| {
                    topic
                        .name
                        .as_ref()
                        .is_some_and(|topic_name| topic_name.as_str() == name)
                })
                .ok_or_else(|| {
                    AdminError::Cluster(format!(
                        "the broker's metadata does not mention topic {name}"
                    ))
                })?;
            let leaderless = topic.partitions.iter().any(|partition| {
                partition.leader_id.0 < 0
                    || partition.error_code == ResponseError::LeaderNotAvailable.code()
            });
            let transient =
                topic.error_code == ResponseError::LeaderNotAvailable.code() || leaderless;
            if transient && Instant::now() < deadline {
                std::thread::sleep(LEADER_RETRY_INTERVAL);
                continue;
            }
            if let Some(error) =
                AdminError::from_code(format!("topic {name}"), topic.error_code, None)
            {
                return Err(error);
            }
            let mut partitions: Vec<PartitionMetadata> = topic
                .partitions
                .into_iter()
                .map(|partition| PartitionMetadata {
                    index: partition.partition_index,
                    leader: partition.leader_id.0,
                    replicas: partition.replica_nodes.iter().map(|id| id.0).collect(),
                    in_sync_replicas: partition.isr_nodes.iter().map(|id| id.0).collect(),
                })
                .collect();
            partitions.sort_by_key(|partition| partition.index);
            return Ok(TopicMetadata {
                name: name.to_string(),
                partitions,
            });
        }
    }

    /// For each of `partitions`, the offset ListOffsets answers for `timestamp`
    /// ([`LATEST_TIMESTAMP`], [`EARLIEST_TIMESTAMP`], or milliseconds since the epoch: the first
    /// offset whose timestamp is at or after it, `None` if there is none).
    pub fn offsets_at(
        &mut self,
        topic: &TopicMetadata,
        partitions: &[i32],
        timestamp: i64,
    ) -> Result<BTreeMap<i32, Option<i64>>, AdminError> {
        let mut offsets = BTreeMap::new();
        for (leader, group) in topic.by_leader(partitions.iter().copied())? {
            let connection = self.broker(leader)?;
            let version = connection.version::<ListOffsetsRequest>()?;
            let request = ListOffsetsRequest::default()
                .with_replica_id((-1).into())
                .with_topics(vec![ListOffsetsTopic::default()
                    .with_name(topic_name(&topic.name))
                    .with_partitions(
                        group
                            .iter()
                            .map(|&partition| {
                                ListOffsetsPartition::default()
                                    .with_partition_index(partition)
                                    .with_timestamp(timestamp)
                            })
                            .collect(),
                    )]);
            let response = connection.send(&request, version, Duration::ZERO)?;
            for answer in response.topics.iter().flat_map(|answer| &answer.partitions) {
                let subject = format!("partition {}-{}", topic.name, answer.partition_index);
                if let Some(error) = AdminError::from_code(subject, answer.error_code, None) {
                    return Err(error);
                }
                let offset = (answer.offset >= 0).then_some(answer.offset);
                offsets.insert(answer.partition_index, offset);
            }
        }
        for partition in partitions {
            if !offsets.contains_key(partition) {
                return Err(AdminError::Cluster(format!(
                    "the ListOffsets response says nothing of partition {}-{partition}",
                    topic.name
                )));
            }
        }
        Ok(offsets)
    }
}

/// A topic name as the protocol types want it.
pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// Earliest and latest offsets always exist (an empty partition's are equal); a broker that
/// answers "none" for them is treated as having an empty log at 0.
pub fn known_offsets(offsets: BTreeMap<i32, Option<i64>>) -> BTreeMap<i32, i64> {
    offsets
        .into_iter()
        .map(|(partition, offset)| (partition, offset.unwrap_or(0)))
        .collect()
}
