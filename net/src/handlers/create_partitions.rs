//! CreatePartitions: grows topics (in a cluster, through the controller, after the same checks
//! here); new partitions are placed by the broker, never by the client.

use engine::acls::Operation;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::ResponseError;

use crate::broker::{Broker, Client};
use crate::errors::{code, Failure};

pub async fn handle(
    broker: &Broker,
    client: &Client,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
        let outcome = if !broker.authorized_on_topic(client, Operation::Alter, &topic.name) {
            Err(Failure::new(
                code(ResponseError::TopicAuthorizationFailed),
                format!("not authorized to alter topic '{}'", topic.name.as_str()),
            ))
        } else if topic.assignments.is_some() {
            Err(Failure::new(
                code(ResponseError::InvalidReplicaAssignment),
                "manual replica assignments are not supported; new partitions are placed by the \
                 broker",
            ))
        } else {
            grow(broker, &topic.name, topic.count, request.validate_only).await
        };
        let (error_code, error_message) = Failure::fields(outcome);
        results.push(
            result
                .with_error_code(error_code)
                .with_error_message(error_message),
        );
    }
    CreatePartitionsResponse::default().with_results(results)
}

/// Grows topic `name` to `count` partitions (`validate_only`: checks only).
async fn grow(broker: &Broker, name: &str, count: i32, validate_only: bool) -> Result<(), Failure> {
    // Checked here in either case: in a cluster the catalog mirrors the metadata log.
    broker.catalog.add_partitions(
        name,
        i64::from(count),
        validate_only || broker.cluster.is_some(),
    )?;
    match &broker.cluster {
        Some(cluster) if !validate_only => Ok(cluster
            .create_partitions(name.to_owned(), count.max(0) as u32)
            .await?),
        _ => Ok(()),
    }
}
