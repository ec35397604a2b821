//! InitProducerId: a new producer id for an idempotent producer, with epoch 0.
//!
//! The id is unique for the life of the broker alone (the catalog's allocator) or of the
//! cluster (the controller's blocks, through
//! [`crate::cluster::Cluster::producer_id`]); a broker of a cluster without a block at
//! hand answers COORDINATOR_LOAD_IN_PROGRESS, which clients retry, as Kafka does while it
//! waits for its next block (KIP-730).
//!
//! Kafka's rules for a request without a transactional id (`KafkaApis.
//! handleInitProducerIdRequest`, `TransactionCoordinator.handleInitProducerId`): a producer id
//! and epoch must be given both (KIP-360, version 3 and later) or neither, else
//! INVALID_REQUEST; either way the answer is a fresh id with epoch 0. A given id and epoch are
//! never bumped: only a transaction coordinator, which knows who owns a transactional id, may
//! bump an epoch, and a client could otherwise fence any producer whose id it guesses.
//! Transactions are not supported yet: a transactional id is refused.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use crate::broker::Broker;
use crate::errors::{catalog_error_code, code, NONE};

/// Kafka's "no producer id" and "no epoch" (RecordBatch.NO_PRODUCER_ID / NO_PRODUCER_EPOCH).
const NO_PRODUCER_ID: i64 = -1;
const NO_PRODUCER_EPOCH: i16 = -1;

pub fn handle(broker: &Broker, request: InitProducerIdRequest) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(NO_PRODUCER_ID))
        .with_producer_epoch(NO_PRODUCER_EPOCH);
    if request.transactional_id.is_some() {
        return response.with_error_code(code(ResponseError::TransactionalIdAuthorizationFailed));
    }
    let named_id = request.producer_id.0 != NO_PRODUCER_ID;
    let named_epoch = request.producer_epoch != NO_PRODUCER_EPOCH;
    if named_id != named_epoch {
        return response.with_error_code(code(ResponseError::InvalidRequest));
    }
    let allocated = match &broker.cluster {
        Some(cluster) => cluster
            .producer_id()
            .ok_or(code(ResponseError::CoordinatorLoadInProgress)),
        None => broker
            .catalog
            .allocate_producer_id()
            .map_err(|error| catalog_error_code(&error)),
    };
    match allocated {
        Ok(id) => response
            .with_error_code(NONE)
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(error_code) => response.with_error_code(error_code),
    }
}
