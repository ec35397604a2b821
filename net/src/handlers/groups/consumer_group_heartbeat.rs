//! ConsumerGroupHeartbeat (KIP-848): a member of a consumer-protocol group joins, says it is
//! alive, reports the partitions it owns and hears its assignment, or leaves. The coordinator
//! ([`crate::groups::consumer`]) gets the broker's current topics to assign from. Version 1
//! adds the regular-expression subscription and has the client generate its member id;
//! version 0 clients get one generated here.

use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};

use engine::acls::Operation;

use super::coordinator::call;
use crate::broker::{Broker, Client};
use crate::errors::NONE;
use crate::groups::consumer::{self, ConsumerHeartbeat};
use crate::groups::shard::ConsumerGroupHeartbeat;
use crate::handlers::fields::{optional_string, str_bytes, uuid};

pub async fn handle(
    broker: &Broker,
    client: &Client,
    request: ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    let group_id = request.group_id.0.to_string();
    if !broker.authorized_on_group(client, Operation::Read, &group_id) {
        return ConsumerGroupHeartbeatResponse::default()
            .with_error_code(kafka_protocol::ResponseError::GroupAuthorizationFailed.code());
    }
    let owned = request.topic_partitions.map(|topics| {
        let mut owned = consumer::Assignment::new();
        for topic in topics {
            owned
                .entry(*topic.topic_id.as_bytes())
                .or_default()
                .extend(topic.partitions);
        }
        owned
    });
    let heartbeat = ConsumerHeartbeat {
        group_id: group_id.clone(),
        member_id: request.member_id.to_string(),
        member_epoch: request.member_epoch,
        instance_id: optional_string(request.instance_id),
        rack_id: optional_string(request.rack_id),
        rebalance_timeout_ms: request.rebalance_timeout_ms,
        subscribed_topic_names: request
            .subscribed_topic_names
            .map(|names| names.into_iter().map(|name| name.0.to_string()).collect()),
        // Empty: no regular expression (librdkafka sends that with every full heartbeat).
        subscribed_topic_regex: optional_string(request.subscribed_topic_regex),
        server_assignor: optional_string(request.server_assignor),
        owned,
        client_id: client.id.clone(),
        client_host: client.host.clone(),
    };
    let request = ConsumerGroupHeartbeat {
        heartbeat,
        topics: broker.catalog.topics(),
    };
    match call(broker, &group_id, request).await {
        Ok(answer) => ConsumerGroupHeartbeatResponse::default()
            .with_error_code(NONE)
            .with_member_id(Some(str_bytes(answer.member_id)))
            .with_member_epoch(answer.member_epoch)
            .with_heartbeat_interval_ms(answer.heartbeat_interval_ms)
            .with_assignment(answer.assignment.map(|assignment| {
                Assignment::default().with_topic_partitions(
                    assignment
                        .into_iter()
                        .map(|(topic, partitions)| {
                            TopicPartitions::default()
                                .with_topic_id(uuid(topic))
                                .with_partitions(partitions.into_iter().collect())
                        })
                        .collect(),
                )
            })),
        Err(error) => ConsumerGroupHeartbeatResponse::default()
            .with_error_code(error.code())
            .with_error_message(Some(str_bytes(error.to_string())))
            .with_member_epoch(-1),
    }
}
