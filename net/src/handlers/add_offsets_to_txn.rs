//! AddOffsetsToTxn: a producer's transaction will commit offsets of a consumer group, so the
//! group's `__consumer_offsets` partition joins the transaction (its marker ends the
//! transaction's offset commits there), as Kafka's `TransactionCoordinator` adds it.

use engine::acls::{Operation, ResourceType};
use engine::catalog::OFFSETS_TOPIC;
use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};

use super::groups::coordinator::offsets_partition;
use crate::broker::{Broker, Client};
use crate::errors::NONE;
use crate::transactions::requests::AddPartitions;

/// The first version whose answer may carry PRODUCER_FENCED.
const PRODUCER_FENCED_SINCE: i16 = 2;

pub async fn handle(
    broker: &Broker,
    api_version: i16,
    client: &Client,
    request: AddOffsetsToTxnRequest,
) -> AddOffsetsToTxnResponse {
    let transactional_id = request.transactional_id.to_string();
    // Kafka's checks: WRITE on the transactional id, READ on the group.
    let refused = if !broker.authorized(
        client,
        Operation::Write,
        ResourceType::TransactionalId,
        &transactional_id,
    ) {
        Some(kafka_protocol::ResponseError::TransactionalIdAuthorizationFailed)
    } else if !broker.authorized_on_group(client, Operation::Read, &request.group_id) {
        Some(kafka_protocol::ResponseError::GroupAuthorizationFailed)
    } else {
        None
    };
    if let Some(refused) = refused {
        return AddOffsetsToTxnResponse::default().with_error_code(refused.code());
    }
    let group_partition = offsets_partition(broker, &request.group_id);
    let add = AddPartitions {
        transactional_id: transactional_id.clone(),
        producer_id: request.producer_id.0,
        producer_epoch: request.producer_epoch,
        partitions: vec![(
            OFFSETS_TOPIC.to_owned(),
            i32::try_from(group_partition).expect("partition counts fit an int32"),
        )],
    };
    let state_partition = broker.transactions.state_partition(&transactional_id);
    let result = broker.transactions.call(state_partition, add).await;
    AddOffsetsToTxnResponse::default().with_error_code(result.err().map_or(NONE, |error| {
        error.code_at(api_version, PRODUCER_FENCED_SINCE)
    }))
}
