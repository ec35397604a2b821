//! EndTxn: a producer commits or aborts its transaction. Answered once the coordinator's
//! PrepareCommit or PrepareAbort is durable; the markers are written after that (see
//! [`crate::transactions::shard`]), as Kafka answers. Versions 0-4 (transaction version 1: the
//! epoch stays); version 5's epoch bump per transaction (KIP-890 part 2) is not served.

use engine::acls::{Operation, ResourceType};
use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse, ProducerId};

use crate::broker::{Broker, Client};
use crate::errors::NONE;
use crate::transactions::requests::EndTransaction;

/// The first version whose answer may carry PRODUCER_FENCED.
const PRODUCER_FENCED_SINCE: i16 = 2;

pub async fn handle(
    broker: &Broker,
    api_version: i16,
    client: &Client,
    request: EndTxnRequest,
) -> EndTxnResponse {
    let transactional_id = request.transactional_id.to_string();
    if !broker.authorized(
        client,
        Operation::Write,
        ResourceType::TransactionalId,
        &transactional_id,
    ) {
        return EndTxnResponse::default().with_error_code(
            kafka_protocol::ResponseError::TransactionalIdAuthorizationFailed.code(),
        );
    }
    let end = EndTransaction {
        transactional_id: transactional_id.clone(),
        producer_id: request.producer_id.0,
        producer_epoch: request.producer_epoch,
        commit: request.committed,
    };
    let state_partition = broker.transactions.state_partition(&transactional_id);
    let response = EndTxnResponse::default();
    match broker.transactions.call(state_partition, end).await {
        Ok(()) => response
            .with_error_code(NONE)
            .with_producer_id(request.producer_id)
            .with_producer_epoch(request.producer_epoch),
        Err(error) => response
            .with_error_code(error.code_at(api_version, PRODUCER_FENCED_SINCE))
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    }
}
