//! CreatePartitions: grows topics (in a cluster, through the controller, after the same checks
//! here); new partitions are placed by the broker, never by the client.

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::ResponseError;

use super::fields::str_bytes;
use crate::broker::Broker;
use crate::errors::{catalog_error_code, code, NONE};

pub async fn handle(broker: &Broker, request: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let catalog = broker.catalog.catalog();
    let mut results = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
        if topic.assignments.is_some() {
            results.push(
                result
                    .with_error_code(code(ResponseError::InvalidReplicaAssignment))
                    .with_error_message(Some(str_bytes(
                        "manual replica assignments are not supported; new partitions are \
                         placed by the broker",
                    ))),
            );
            continue;
        }
        // Checked here in either case: in a cluster the catalog mirrors the metadata log.
        let validate_only = request.validate_only || broker.cluster.is_some();
        let mut outcome = catalog
            .add_partitions(&topic.name, i64::from(topic.count), validate_only)
            .map(drop)
            .map_err(|error| (catalog_error_code(&error), error.to_string()));
        if let (Some(cluster), Ok(()), false) = (&broker.cluster, &outcome, request.validate_only) {
            outcome = cluster
                .create_partitions(topic.name.to_string(), topic.count.max(0) as u32)
                .await
                .map_err(|error| (error.code, error.message));
        }
        results.push(match outcome {
            Ok(()) => result.with_error_code(NONE),
            Err((error_code, message)) => result
                .with_error_code(error_code)
                .with_error_message(Some(str_bytes(message))),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}
