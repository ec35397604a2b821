//! OffsetFetch: a group's committed offsets, of the partitions asked or of every one. Version
//! 8 asks for several groups at once in its own types; version 1 has no top-level error code,
//! so a group's error goes on every partition. From version 7 `require_stable` asks that a
//! partition an open transaction commits an offset of be answered UNSTABLE_OFFSET_COMMIT (the
//! consumer retries until the transaction ends) rather than with its last stable offset.

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};

use kafka_protocol::ResponseError;

use engine::acls::Operation;

use super::coordinator::call;
use crate::broker::{Broker, Client};
use crate::errors::NONE;
use crate::groups::shard::FetchOffsets;
use crate::groups::TopicPartition;
use crate::handlers::fields::str_bytes;

/// One group's committed offsets as OffsetFetch reports them: for each asked partition (or
/// every committed one), offset, leader epoch, metadata, error code; -1 where nothing was
/// committed.
struct FetchedOffsets {
    error_code: i16,
    /// By topic, in the order asked (or by name when every committed partition is reported).
    topics: Vec<(String, Vec<FetchedOffset>)>,
}

struct FetchedOffset {
    partition: i32,
    offset: i64,
    leader_epoch: i32,
    metadata: String,
    error_code: i16,
}

impl FetchedOffsets {
    /// The topics in a response's own types (they differ between versions 1–7 and 8).
    fn into_topics<Topic, Partition>(
        self,
        topic: impl Fn(TopicName, Vec<Partition>) -> Topic,
        partition: impl Fn(FetchedOffset) -> Partition,
    ) -> Vec<Topic> {
        self.topics
            .into_iter()
            .map(|(name, fetched)| {
                let partitions = fetched.into_iter().map(&partition).collect();
                topic(TopicName(str_bytes(name)), partitions)
            })
            .collect()
    }
}

/// A group the client may not DESCRIBE is answered GROUP_AUTHORIZATION_FAILED; of the topics
/// asked, those it may not DESCRIBE are answered TOPIC_AUTHORIZATION_FAILED, and they are left
/// out when every committed partition is reported (as Kafka does).
async fn fetch_group_offsets(
    broker: &Broker,
    client: &Client,
    group_id: &str,
    asked: Option<Vec<(String, Vec<i32>)>>,
    member: Option<(String, i32)>,
    require_stable: bool,
) -> FetchedOffsets {
    if !broker.authorized_on_group(client, Operation::Describe, group_id) {
        return FetchedOffsets {
            error_code: ResponseError::GroupAuthorizationFailed.code(),
            topics: Vec::new(),
        };
    }
    let topic_authorized =
        |topic: &str| broker.authorized_on_topic(client, Operation::Describe, topic);
    let every_partition = asked.is_none();
    let partitions = asked.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|(topic, partitions)| {
                partitions.iter().map(|&partition| TopicPartition {
                    topic: topic.clone(),
                    partition,
                })
            })
            .collect::<Vec<_>>()
    });
    let fetch = FetchOffsets {
        group_id: group_id.to_owned(),
        partitions,
        member,
        require_stable,
    };
    let offsets = match call(broker, group_id, fetch).await {
        Ok(offsets) => offsets,
        Err(error) => {
            return FetchedOffsets {
                error_code: error.code(),
                topics: Vec::new(),
            }
        }
    };
    let mut topics: Vec<(String, Vec<FetchedOffset>)> = Vec::new();
    for (partition, committed) in offsets {
        let authorized = topic_authorized(&partition.topic);
        if !authorized && every_partition {
            continue;
        }
        let (committed, error_code) = match committed {
            _ if !authorized => (None, ResponseError::TopicAuthorizationFailed.code()),
            Ok(committed) => (committed, NONE),
            Err(error) => (None, error.code()),
        };
        let fetched = FetchedOffset {
            partition: partition.partition,
            offset: committed.as_ref().map_or(-1, |committed| committed.offset),
            leader_epoch: committed
                .as_ref()
                .map_or(-1, |committed| committed.leader_epoch),
            metadata: committed
                .map(|committed| committed.metadata)
                .unwrap_or_default(),
            error_code,
        };
        match topics.last_mut() {
            Some((topic, fetched_offsets)) if *topic == partition.topic => {
                fetched_offsets.push(fetched)
            }
            _ => topics.push((partition.topic, vec![fetched])),
        }
    }
    FetchedOffsets {
        error_code: NONE,
        topics,
    }
}

pub async fn handle(
    broker: &Broker,
    api_version: i16,
    client: &Client,
    request: OffsetFetchRequest,
) -> OffsetFetchResponse {
    if api_version >= 8 {
        let mut groups = Vec::with_capacity(request.groups.len());
        for group in request.groups {
            let asked = group.topics.map(|topics| {
                topics
                    .into_iter()
                    .map(|topic| (topic.name.0.to_string(), topic.partition_indexes))
                    .collect()
            });
            // Version 9: a consumer-protocol member names itself and its epoch.
            let member = group
                .member_id
                .map(|member_id| (member_id.to_string(), group.member_epoch));
            let fetched = fetch_group_offsets(
                broker,
                client,
                &group.group_id.0,
                asked,
                member,
                request.require_stable,
            )
            .await;
            let error_code = fetched.error_code;
            let topics = fetched.into_topics(
                |name, partitions| {
                    OffsetFetchResponseTopics::default()
                        .with_name(name)
                        .with_partitions(partitions)
                },
                |fetched| {
                    OffsetFetchResponsePartitions::default()
                        .with_partition_index(fetched.partition)
                        .with_committed_offset(fetched.offset)
                        .with_committed_leader_epoch(fetched.leader_epoch)
                        .with_metadata(Some(str_bytes(fetched.metadata)))
                        .with_error_code(fetched.error_code)
                },
            );
            groups.push(
                OffsetFetchResponseGroup::default()
                    .with_group_id(group.group_id)
                    .with_error_code(error_code)
                    .with_topics(topics),
            );
        }
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let asked = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|topic| (topic.name.0.to_string(), topic.partition_indexes))
            .collect()
    });
    let fetched = fetch_group_offsets(
        broker,
        client,
        &request.group_id.0,
        asked,
        None,
        request.require_stable,
    )
    .await;
    // Version 1 has no top-level error code: a group-level error goes on every partition.
    let partition_error = if api_version < 2 {
        fetched.error_code
    } else {
        NONE
    };
    let error_code = fetched.error_code;
    let topics = fetched.into_topics(
        |name, partitions| {
            OffsetFetchResponseTopic::default()
                .with_name(name)
                .with_partitions(partitions)
        },
        |fetched| {
            OffsetFetchResponsePartition::default()
                .with_partition_index(fetched.partition)
                .with_committed_offset(fetched.offset)
                .with_committed_leader_epoch(fetched.leader_epoch)
                .with_metadata(Some(str_bytes(fetched.metadata)))
                .with_error_code(match fetched.error_code {
                    NONE => partition_error,
                    code => code,
                })
        },
    );
    OffsetFetchResponse::default()
        .with_error_code(error_code)
        .with_topics(topics)
}
