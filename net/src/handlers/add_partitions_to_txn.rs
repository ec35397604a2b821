//! AddPartitionsToTxn: partitions join a producer's transaction, at its transactional id's
//! coordinator. Versions 0-3 carry one transaction (from a producer); 4 and later a batch of
//! them (from brokers, KIP-890), each of which may only ask whether its partitions are in
//! the transaction (`verify_only`). Every partition of a transaction gets the same answer,
//! except in a verification, as Kafka answers; and as Kafka, a transaction naming a partition
//! that does not exist adds none: that partition is answered UNKNOWN_TOPIC_OR_PARTITION, the
//! others OPERATION_NOT_ATTEMPTED.

use engine::acls::{Operation, ResourceType};
use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, TopicName, TransactionalId,
};

use kafka_protocol::ResponseError;

use super::fields::str_bytes;
use crate::broker::{Broker, Client};
use crate::errors::NONE;
use crate::transactions::requests::{AddPartitions, VerifyPartitions};
use crate::transactions::state::{TransactionError, TransactionPartition};

pub async fn handle(
    broker: &Broker,
    api_version: i16,
    client: &Client,
    request: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    if api_version <= 3 {
        let transaction = AddPartitionsToTxnTransaction::default()
            .with_transactional_id(request.v3_and_below_transactional_id)
            .with_producer_id(request.v3_and_below_producer_id)
            .with_producer_epoch(request.v3_and_below_producer_epoch)
            .with_topics(request.v3_and_below_topics);
        let result = add(broker, api_version, client, transaction).await;
        return AddPartitionsToTxnResponse::default()
            .with_results_by_topic_v3_and_below(result.topic_results);
    }
    let mut results = Vec::with_capacity(request.transactions.len());
    for transaction in request.transactions {
        results.push(add(broker, api_version, client, transaction).await);
    }
    AddPartitionsToTxnResponse::default()
        .with_error_code(NONE)
        .with_results_by_transaction(results)
}

/// Kafka's checks first: WRITE on the transactional id, then on each topic; a partition refused
/// leaves the others OPERATION_NOT_ATTEMPTED.
async fn add(
    broker: &Broker,
    api_version: i16,
    client: &Client,
    transaction: AddPartitionsToTxnTransaction,
) -> AddPartitionsToTxnResult {
    let transactional_id = transaction.transactional_id.to_string();
    let partitions = partitions(&transaction.topics);
    let request = AddPartitions {
        transactional_id: transactional_id.clone(),
        producer_id: transaction.producer_id.0,
        producer_epoch: transaction.producer_epoch,
        partitions: partitions.clone(),
    };
    let state_partition = broker.transactions.state_partition(&transactional_id);
    let topics = broker.catalog.topics();
    let exists = |(topic, partition): &TransactionPartition| {
        topics.get(topic).is_some_and(|topic| {
            u32::try_from(*partition).is_ok_and(|partition| partition < topic.partitions)
        })
    };
    let id_authorized = broker.authorized(
        client,
        Operation::Write,
        ResourceType::TransactionalId,
        &transactional_id,
    );
    let refused = |(topic, partition): &TransactionPartition| match id_authorized {
        false => Some(ResponseError::TransactionalIdAuthorizationFailed),
        true if !broker.authorized_on_topic(client, Operation::Write, topic) => {
            Some(ResponseError::TopicAuthorizationFailed)
        }
        true if !transaction.verify_only && !exists(&(topic.clone(), *partition)) => {
            Some(ResponseError::UnknownTopicOrPartition)
        }
        true => None,
    };
    if partitions
        .iter()
        .any(|partition| refused(partition).is_some())
    {
        let results = partitions
            .into_iter()
            .map(|partition| {
                let error = refused(&partition).unwrap_or(ResponseError::OperationNotAttempted);
                (partition, error.code())
            })
            .collect();
        return AddPartitionsToTxnResult::default()
            .with_transactional_id(TransactionalId(str_bytes(transactional_id)))
            .with_topic_results(topic_results(results));
    }
    let results: Vec<(TransactionPartition, i16)> = match transaction.verify_only {
        true => broker
            .transactions
            .call(state_partition, VerifyPartitions(request))
            .await
            .into_iter()
            .map(|(partition, result)| (partition, error_code(result, api_version)))
            .collect(),
        false => {
            let result = broker.transactions.call(state_partition, request).await;
            let code = error_code(result, api_version);
            partitions
                .into_iter()
                .map(|partition| (partition, code))
                .collect()
        }
    };
    AddPartitionsToTxnResult::default()
        .with_transactional_id(TransactionalId(str_bytes(transactional_id)))
        .with_topic_results(topic_results(results))
}

fn partitions(topics: &[AddPartitionsToTxnTopic]) -> Vec<TransactionPartition> {
    topics
        .iter()
        .flat_map(|topic| {
            topic
                .partitions
                .iter()
                .map(|partition| (topic.name.to_string(), *partition))
        })
        .collect()
}

/// The first version whose answer may carry PRODUCER_FENCED.
const PRODUCER_FENCED_SINCE: i16 = 2;

fn error_code(result: Result<(), TransactionError>, api_version: i16) -> i16 {
    result.err().map_or(NONE, |error| {
        error.code_at(api_version, PRODUCER_FENCED_SINCE)
    })
}

/// Results grouped by topic, in the order the topics came.
fn topic_results(results: Vec<(TransactionPartition, i16)>) -> Vec<AddPartitionsToTxnTopicResult> {
    let mut topics: Vec<AddPartitionsToTxnTopicResult> = Vec::new();
    for ((topic, partition), code) in results {
        let partition_result = AddPartitionsToTxnPartitionResult::default()
            .with_partition_index(partition)
            .with_partition_error_code(code);
        match topics.iter_mut().find(|entry| *entry.name == *topic) {
            Some(entry) => entry.results_by_partition.push(partition_result),
            None => topics.push(
                AddPartitionsToTxnTopicResult::default()
                    .with_name(TopicName(str_bytes(topic)))
                    .with_results_by_partition(vec![partition_result]),
            ),
        }
    }
    topics
}
