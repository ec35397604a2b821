//! Metadata: the brokers (this one, at the advertised address of the listener the request came
//! in on), and each topic's partitions with
//! this broker as leader and only replica, for a broker alone. In a cluster the answer comes from
//! `Cluster`: the image's live brokers, each partition's replicas from the image, its leader and
//! epoch from the broker's `LeaderTable`, ISR the leader's in-sync voters; the answering broker
//! is named as the controller. Until this run of the broker is live in its own image (see
//! `ShardCluster::brokers`: an older image would leave out live brokers, which clients then
//! forget) the answer has no brokers and no topics, which every client ignores and asks again
//! (librdkafka, the Java client and kafka-python alike), as they would a broker whose listener
//! is not open yet. Names of topics that do not exist are created when auto-creation is on and
//! the request allows it (always, before version 4, as Kafka) and the client may CREATE them.

use engine::acls::Operation;
use engine::catalog::{is_internal_topic, Topic};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::ResponseError;

use super::fields::{str_bytes, uuid};
use crate::broker::{Broker, Client};
use crate::cluster::PartitionPlacement;
use crate::errors::{code, NONE};

/// Kafka's "not sent" value for authorized-operations fields.
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

/// The client is told the addresses of the listener it came in on, and only the topics it may
/// DESCRIBE (the others it names are answered TOPIC_AUTHORIZATION_FAILED, as Kafka answers).
pub fn handle(
    broker: &Broker,
    api_version: i16,
    client: &Client,
    request: MetadataRequest,
) -> MetadataResponse {
    let listener = &client.security.listener;
    let config = &broker.config;
    let brokers = match &broker.cluster {
        Some(cluster) => match cluster.brokers(listener) {
            Some(live) => live
                .into_iter()
                .map(|member| {
                    MetadataResponseBroker::default()
                        .with_node_id(BrokerId(member.node_id))
                        .with_host(str_bytes(member.host))
                        .with_port(member.port)
                })
                .collect(),
            None => return answer(broker, api_version, Vec::new(), Vec::new()),
        },
        None => config
            .advertised_on(listener)
            .map(|endpoint| {
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(config.node_id))
                    .with_host(str_bytes(endpoint.host.clone()))
                    .with_port(i32::from(endpoint.port))
            })
            .into_iter()
            .collect(),
    };
    // Version 0 says "all topics" with an empty list; later versions with a null one.
    let all_topics = match &request.topics {
        None => true,
        Some(topics) => topics.is_empty() && api_version == 0,
    };
    let allow_auto_create = request.allow_auto_topic_creation || api_version < 4;
    let topics = if all_topics {
        broker
            .catalog
            .topics()
            .iter()
            .filter(|topic| broker.authorized_on_topic(client, Operation::Describe, &topic.name))
            .map(|topic| described(broker, api_version, topic))
            .collect()
    } else {
        let refused = |name: Option<TopicName>, topic_id| {
            MetadataResponseTopic::default()
                .with_name(name)
                .with_topic_id(topic_id)
                .with_error_code(code(ResponseError::TopicAuthorizationFailed))
                .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
        };
        request
            .topics
            .unwrap_or_default()
            .into_iter()
            .map(|wanted| match wanted.name {
                Some(name) if !broker.authorized_on_topic(client, Operation::Describe, &name) => {
                    refused(Some(name), Default::default())
                }
                // Kafka creates a topic only for a client that may CREATE it.
                Some(name)
                    if allow_auto_create
                        && broker.catalog.topics().get(&name).is_none()
                        && !(broker.authorized_on_cluster(client, Operation::Create)
                            || broker.authorized_on_topic(client, Operation::Create, &name)) =>
                {
                    refused(Some(name), Default::default())
                }
                Some(name) => match broker.topic_or_create(&name, allow_auto_create) {
                    Ok(topic) => described(broker, api_version, &topic),
                    Err(error) => MetadataResponseTopic::default()
                        .with_name(Some(name))
                        .with_error_code(error.code())
                        .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED),
                },
                None => match broker.catalog.topics().by_id(wanted.topic_id.as_bytes()) {
                    Some(topic)
                        if !broker.authorized_on_topic(
                            client,
                            Operation::Describe,
                            &topic.name,
                        ) =>
                    {
                        refused(None, wanted.topic_id)
                    }
                    Some(topic) => described(broker, api_version, topic),
                    None => MetadataResponseTopic::default()
                        .with_topic_id(wanted.topic_id)
                        .with_error_code(code(ResponseError::UnknownTopicId))
                        .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED),
                },
            })
            .collect()
    };
    answer(broker, api_version, brokers, topics)
}

/// The response of `brokers` and `topics`, with the fields `api_version` has.
fn answer(
    broker: &Broker,
    api_version: i16,
    brokers: Vec<MetadataResponseBroker>,
    topics: Vec<MetadataResponseTopic>,
) -> MetadataResponse {
    let config = &broker.config;
    // Clients send controller requests (CreateTopics, ...) to the broker named here. Every
    // broker forwards them to the controller that leads, so each names itself, as KRaft's
    // brokers name a live broker: naming the leader would send clients to a dead one for the
    // election timeout or two it takes the others to notice, and librdkafka waits for it.
    let controller_id = config.node_id;
    let response = MetadataResponse::default()
        .with_brokers(brokers)
        .with_topics(topics)
        .with_cluster_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED);
    // Fields a version lacks must stay at their defaults, or encoding fails.
    let response = if api_version >= 1 {
        response.with_controller_id(BrokerId(controller_id))
    } else {
        response
    };
    if api_version >= 2 {
        let cluster_id = config.cluster_id.get();
        response
            .with_cluster_id((!cluster_id.is_empty()).then(|| str_bytes(cluster_id.to_string())))
    } else {
        response
    }
}

fn described(broker: &Broker, api_version: i16, topic: &Topic) -> MetadataResponseTopic {
    let node = BrokerId(broker.config.node_id);
    let described = MetadataResponseTopic::default()
        .with_error_code(NONE)
        .with_name(Some(TopicName(str_bytes(topic.name.clone()))))
        .with_is_internal(is_internal_topic(&topic.name))
        .with_partitions(
            (0..topic.partitions)
                .map(|partition| {
                    let placement = match &broker.cluster {
                        Some(cluster) => cluster.placement(&topic.name, partition),
                        None => Some(PartitionPlacement {
                            leader: Some(node.0),
                            leader_epoch: 0,
                            replicas: vec![node.0],
                            in_sync: vec![node.0],
                        }),
                    };
                    let described =
                        MetadataResponsePartition::default().with_partition_index(partition as i32);
                    let Some(placement) = placement else {
                        // No leader: not the default 0, which kafka-python takes for a broker id.
                        return described
                            .with_error_code(code(ResponseError::UnknownTopicOrPartition))
                            .with_leader_id(BrokerId(-1));
                    };
                    let ids = |nodes: Vec<i32>| nodes.into_iter().map(BrokerId).collect();
                    let described = described
                        .with_error_code(match placement.leader {
                            Some(_) => NONE,
                            None => code(ResponseError::LeaderNotAvailable),
                        })
                        .with_leader_id(BrokerId(placement.leader.unwrap_or(-1)))
                        .with_replica_nodes(ids(placement.replicas))
                        .with_isr_nodes(ids(placement.in_sync));
                    if api_version >= 7 {
                        described.with_leader_epoch(placement.leader_epoch)
                    } else {
                        described
                    }
                })
                .collect(),
        )
        .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED);
    if api_version >= 10 {
        described.with_topic_id(uuid(topic.id))
    } else {
        described
    }
}
