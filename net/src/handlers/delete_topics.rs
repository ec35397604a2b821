//! DeleteTopics: removes topics from the catalog (in a cluster, through the controller). A
//! broker alone also closes the topic's partition logs on their owning shards and deletes their
//! directories before answering, so a topic re-created under the same name starts empty.

use engine::acls::Operation;
use engine::shard::PartitionId;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};
use kafka_protocol::ResponseError;

use crate::broker::{Broker, Client};
use crate::errors::{code, Failure};

pub async fn handle(
    broker: &Broker,
    api_version: i16,
    client: &Client,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    // Versions up to 5 name the topics in `topic_names`; 6 in `topics` (we serve up to 5).
    let mut responses = Vec::with_capacity(request.topic_names.len());
    for name in request.topic_names {
        let result = DeletableTopicResult::default().with_name(Some(name.clone()));
        let outcome = match &broker.cluster {
            _ if !broker.authorized_on_topic(client, Operation::Delete, &name) => {
                Err(Failure::new(
                    code(ResponseError::TopicAuthorizationFailed),
                    format!("not authorized to delete topic '{}'", name.as_str()),
                ))
            }
            // The controller deletes it everywhere; this broker's part is done when it answers.
            Some(cluster) => match engine::catalog::refuse_internal(&name) {
                Err(error) => Err(Failure::from(error)),
                Ok(()) => cluster
                    .delete_topic(name.to_string())
                    .await
                    .map_err(Failure::from),
            },
            None => delete_here(broker, &name).await,
        };
        let (error_code, error_message) = Failure::fields(outcome);
        let result = result.with_error_code(error_code);
        // The message exists from version 5.
        responses.push(if api_version >= 5 {
            result.with_error_message(error_message)
        } else {
            result
        });
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

/// Deletes a topic from this broker's catalog, then its partitions' logs.
async fn delete_here(broker: &Broker, name: &str) -> Result<(), Failure> {
    let topic = broker.catalog.delete_topic(name)?;
    let mut outcome = Ok(());
    for partition in 0..topic.partitions {
        let id = PartitionId::new(topic.name.as_str(), partition);
        if let Err(error) = broker.context.remove_partition(id).await {
            outcome = Err(Failure::from(error));
        }
    }
    outcome
}
