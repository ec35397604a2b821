//! DescribeTransactions: each transactional id's producer, state, timeout, start and
//! partitions, from its coordinator (NOT_COORDINATOR where another broker has it, so admin
//! clients look it up first, as with Kafka).

use engine::acls::{Operation, ResourceType};
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{
    DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::fields::str_bytes;
use crate::broker::{Broker, Client};
use crate::errors::NONE;
use crate::transactions::requests::DescribeTransaction;

pub async fn handle(
    broker: &Broker,
    client: &Client,
    request: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let mut states = Vec::with_capacity(request.transactional_ids.len());
    for transactional_id in request.transactional_ids {
        let id = transactional_id.to_string();
        let state = TransactionState::default().with_transactional_id(transactional_id);
        let describe = DescribeTransaction {
            transactional_id: id.clone(),
        };
        if !broker.authorized(
            client,
            Operation::Describe,
            ResourceType::TransactionalId,
            &id,
        ) {
            states.push(state.with_error_code(
                kafka_protocol::ResponseError::TransactionalIdAuthorizationFailed.code(),
            ));
            continue;
        }
        let state_partition = broker.transactions.state_partition(&id);
        let state = match broker.transactions.call(state_partition, describe).await {
            Ok(metadata) => {
                let topics = metadata
                    .topics()
                    .into_iter()
                    .map(|(topic, partitions)| {
                        TopicData::default()
                            .with_topic(TopicName(str_bytes(topic)))
                            .with_partitions(partitions)
                    })
                    .collect();
                state
                    .with_error_code(NONE)
                    .with_transaction_state(StrBytes::from_static_str(metadata.state.name()))
                    .with_transaction_timeout_ms(metadata.timeout_ms)
                    .with_transaction_start_time_ms(metadata.start_ms)
                    .with_producer_id(ProducerId(metadata.producer_id))
                    .with_producer_epoch(metadata.producer_epoch)
                    .with_topics(topics)
            }
            Err(error) => state
                .with_error_code(error.code())
                .with_transaction_state(StrBytes::from_static_str(""))
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        };
        states.push(state);
    }
    DescribeTransactionsResponse::default().with_transaction_states(states)
}
