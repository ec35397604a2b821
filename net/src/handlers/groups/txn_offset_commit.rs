//! TxnOffsetCommit (versions 0 to 4): a transactional producer commits its consumer group's
//! offsets inside its transaction (`send_offsets_to_transaction`). Checked and answered as
//! OffsetCommit is ([`commit_partitions`]); the coordinator keeps the offsets pending in the
//! producer's transaction until its marker (see `groups::transactional`). Version 3 adds the
//! member, generation and group instance, checked as OffsetCommit checks them; versions 0 to 2
//! carry none (generation -1, no member), which the coordinator accepts in any group state, as
//! Kafka does.

use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};

use super::offset_commit::commit_partitions;
use super::partition_results::answer_partitions;
use crate::broker::{Broker, Client};
use crate::groups::{TransactionProducer, TxnOffsetCommit};
use crate::handlers::fields::optional_string;

pub async fn handle(
    broker: &Broker,
    client: &Client,
    request: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let group_id = request.group_id.0.to_string();
    let commits = request.topics.iter().map(|topic| {
        let partitions = topic.partitions.iter().map(|partition| {
            (
                partition.partition_index,
                partition.committed_offset,
                partition.committed_leader_epoch,
                optional_string(partition.committed_metadata.clone()),
            )
        });
        (topic.name.0.as_str(), partitions.collect())
    });
    let producer = TransactionProducer {
        producer_id: request.producer_id.0,
        producer_epoch: request.producer_epoch,
    };
    let codes = commit_partitions(broker, client, &group_id, commits, |partitions| {
        TxnOffsetCommit {
            group_id: group_id.clone(),
            producer,
            generation_id: request.generation_id,
            member_id: request.member_id.to_string(),
            group_instance_id: optional_string(request.group_instance_id.clone()),
            partitions,
        }
    })
    .await;
    let topics = request.topics.into_iter().map(|topic| {
        let partitions = topic.partitions.iter().map(|p| p.partition_index).collect();
        (topic.name, partitions)
    });
    TxnOffsetCommitResponse::default().with_topics(answer_partitions(
        topics,
        &codes,
        |index, code| {
            TxnOffsetCommitResponsePartition::default()
                .with_partition_index(index)
                .with_error_code(code)
        },
        |name, partitions| {
            TxnOffsetCommitResponseTopic::default()
                .with_name(name)
                .with_partitions(partitions)
        },
    ))
}
