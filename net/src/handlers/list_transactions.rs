//! ListTransactions: the transactions this broker coordinates (every `__transaction_state`
//! partition on a broker alone, those it leads in a cluster: admin clients ask every broker),
//! filtered by state, producer id and (version 1) how long they have run. State names no
//! transaction can have are returned as unknown, as Kafka does. Version 2's id pattern is not
//! served.

use engine::acls::{Operation, ResourceType};
use std::collections::BTreeSet;

use kafka_protocol::messages::list_transactions_response::TransactionState as ListedState;
use kafka_protocol::messages::{
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

use super::fields::str_bytes;
use crate::broker::{Broker, Client};
use crate::errors::NONE;
use crate::transactions::requests::ListTransactions;
use crate::transactions::{TransactionError, TransactionState};

/// Lists the transactional ids the client may DESCRIBE, as Kafka does.
pub async fn handle(
    broker: &Broker,
    client: &Client,
    request: ListTransactionsRequest,
) -> ListTransactionsResponse {
    let mut states = BTreeSet::new();
    let mut unknown = Vec::new();
    for name in request.state_filters {
        match TransactionState::from_name(&name) {
            Some(state) => {
                states.insert(state);
            }
            None => unknown.push(name),
        }
    }
    let response = ListTransactionsResponse::default().with_unknown_state_filters(unknown.clone());
    if !unknown.is_empty() && states.is_empty() {
        // Only states no transaction can be in were asked for.
        return response.with_error_code(NONE);
    }
    let list = ListTransactions {
        states,
        producer_ids: request.producer_id_filters.iter().map(|id| id.0).collect(),
        duration_min_ms: request.duration_filter,
    };
    let mut listed = Vec::new();
    let mut error = NONE;
    for partition in 0..broker.transactions.config().state_partitions {
        match broker.transactions.call(partition, list.clone()).await {
            Ok(transactions) => listed.extend(transactions),
            // In a cluster: another broker coordinates this partition.
            Err(TransactionError::NotCoordinator) => {}
            Err(refused) => error = refused.code(),
        }
    }
    response.with_error_code(error).with_transaction_states(
        listed
            .into_iter()
            .filter(|transaction| {
                broker.authorized(
                    client,
                    Operation::Describe,
                    ResourceType::TransactionalId,
                    &transaction.transactional_id,
                )
            })
            .map(|transaction| {
                ListedState::default()
                    .with_transactional_id(TransactionalId(str_bytes(transaction.transactional_id)))
                    .with_producer_id(ProducerId(transaction.producer_id))
                    .with_transaction_state(StrBytes::from_static_str(transaction.state.name()))
            })
            .collect(),
    )
}
