//! InitProducerId: a producer id and epoch for an idempotent or transactional producer.
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
//!
//! With a transactional id the request goes to the id's transaction coordinator
//! ([`crate::transactions`]), which keeps the id's producer id and bumps its epoch. A fresh
//! producer id is allocated here for every such request (the coordinator uses it only for a
//! new id or one whose epochs are used up): ids are 64-bit and allocated in blocks, and the
//! pure coordinator cannot wait for one.

use engine::acls::{Operation, ResourceType};
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use crate::broker::{Broker, Client};
use crate::errors::{catalog_error_code, code, NONE};
use crate::transactions::coordinator::InitProducerId;

/// Kafka's "no producer id" and "no epoch" (RecordBatch.NO_PRODUCER_ID / NO_PRODUCER_EPOCH).
const NO_PRODUCER_ID: i64 = -1;
const NO_PRODUCER_EPOCH: i16 = -1;

/// The first version whose answer may carry PRODUCER_FENCED.
const PRODUCER_FENCED_SINCE: i16 = 4;

pub async fn handle(
    broker: &Broker,
    api_version: i16,
    client: &Client,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(NO_PRODUCER_ID))
        .with_producer_epoch(NO_PRODUCER_EPOCH);
    // Kafka's checks: WRITE on the transactional id; without one, IDEMPOTENT_WRITE on the
    // cluster or WRITE on some topic.
    let refused = match &request.transactional_id {
        Some(id)
            if !broker.authorized(client, Operation::Write, ResourceType::TransactionalId, id) =>
        {
            Some(ResponseError::TransactionalIdAuthorizationFailed)
        }
        Some(_) => None,
        None if !(broker.authorized_on_cluster(client, Operation::IdempotentWrite)
            || broker.authorized_by_resource_type(
                client,
                Operation::Write,
                ResourceType::Topic,
            )) =>
        {
            Some(ResponseError::ClusterAuthorizationFailed)
        }
        None => None,
    };
    if let Some(refused) = refused {
        return response.with_error_code(code(refused));
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
    let fresh_producer_id = match allocated {
        Ok(id) => id,
        Err(error_code) => return response.with_error_code(error_code),
    };
    let Some(transactional_id) = request.transactional_id else {
        return response
            .with_error_code(NONE)
            .with_producer_id(ProducerId(fresh_producer_id))
            .with_producer_epoch(0);
    };
    let init = InitProducerId {
        transactional_id: transactional_id.to_string(),
        timeout_ms: request.transaction_timeout_ms,
        expected: named_id.then_some((request.producer_id.0, request.producer_epoch)),
        fresh_producer_id,
    };
    let partition = broker.transactions.state_partition(&init.transactional_id);
    match broker.transactions.call(partition, init).await {
        Ok((producer_id, producer_epoch)) => response
            .with_error_code(NONE)
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(producer_epoch),
        Err(error) => response.with_error_code(error.code_at(api_version, PRODUCER_FENCED_SINCE)),
    }
}
