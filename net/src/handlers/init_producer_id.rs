//! InitProducerId: a new producer id (unique across restarts) for an idempotent producer, or,
//! when the producer names its current id and epoch (version 3 and later, KIP-360), the same id
//! with the next epoch. Transactions are not supported: a transactional id is refused.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use crate::broker::Broker;
use crate::errors::{catalog_error_code, code, NONE};

pub fn handle(broker: &Broker, request: InitProducerIdRequest) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if request.transactional_id.is_some() {
        return response.with_error_code(code(ResponseError::TransactionalIdAuthorizationFailed));
    }
    let current = request.producer_id.0;
    if current >= 0 && request.producer_epoch >= 0 && request.producer_epoch < i16::MAX {
        return response
            .with_error_code(NONE)
            .with_producer_id(ProducerId(current))
            .with_producer_epoch(request.producer_epoch + 1);
    }
    match broker.catalog.catalog().allocate_producer_id() {
        Ok(id) => response
            .with_error_code(NONE)
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(error) => response.with_error_code(catalog_error_code(&error)),
    }
}
