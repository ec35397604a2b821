//! Produce: append each partition's record batch (stored as sent, compressed or not; the broker
//! fills in offsets and leader epoch), and answer as acks asks: acks=0 gets no response at all,
//! acks=1 once the batch is written with direct I/O to the shard's journal or to its segment (no
//! sync), acks=all once the `fdatasync` covering it returned (committed by a majority, in a
//! cluster). In a cluster acks=all is refused up front with NOT_ENOUGH_REPLICAS while fewer
//! replicas than `min.insync.replicas` are in sync. The batch is checked once, by the shard owning
//! the partition, against the partition's own `max.message.bytes` (`CheckedBatch::produced`).
//!
//! Appends are submitted while the request is started, in request order, and awaited
//! afterwards (see [`crate::broker`]): a connection's pipelined produce requests land in each
//! partition in the order they were sent, which the idempotent producer's sequence numbers rely
//! on; the log (a replica's writer, in a cluster) checks those sequences in the same step that
//! assigns offsets. On a broker alone the batches go to the shards' logs
//! (`ShardContext::submit_appends`); in a cluster to the partitions' Raft replicas, through the
//! cluster ([`crate::cluster::Cluster::submit_appends`]), which routes them to the owning shards
//! over the same mesh, one message per owning shard.
//!
//! A transactional producer's batches (with `transactional_id`) are first verified with the
//! transaction coordinator where they would open the producer's transaction on their partition
//! (KIP-890 part 1, `transactions::verification`, unless
//! `--transaction-partition-verification-enable false`); a batch the coordinator does not
//! confirm is answered its error and not appended. Transactional batches in a request without a
//! `transactional_id` are refused with TRANSACTIONAL_ID_AUTHORIZATION_FAILED, as Kafka refuses
//! them: nobody could verify them, and no coordinator would ever end their transaction.

use std::collections::BTreeMap;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use engine::acls::{Operation, ResourceType};
use engine::batch::BatchHeader;
use engine::catalog::is_internal_topic;
use engine::log::VerificationGuard;
use engine::shard::{AppendKind, AppendPending, Durability, PartitionId, UnreplicatedLogs};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::ResponseError;

use super::fields::str_bytes;
use crate::broker::{Broker, Client, Header, PendingReply, Reply};
use crate::errors::{code, log_error_code, NONE};
use crate::metrics::ShardMetrics;
use crate::transactions::verification::{verify_with_coordinator, VerificationRefused};

/// Where one partition's answer comes from.
enum Outcome {
    Failed {
        error_code: i16,
        message: String,
    },
    /// The batch's size and its append.
    Appending(usize, AppendPending),
}

pub async fn start(
    broker: Rc<Broker>,
    header: Header,
    client: &Client,
    request: ProduceRequest,
) -> PendingReply {
    let ProduceRequest {
        acks,
        transactional_id,
        topic_data,
        ..
    } = request;
    let durability = match acks {
        0 => Some(Durability::Assigned),
        1 => Some(Durability::Written),
        -1 => Some(Durability::Durable),
        _ => None,
    };
    // The partition's log follows a transaction from its batches' headers
    // (`engine::log::transactions`); whether a batch may open one is verified first.
    let names_transactional_id = transactional_id.is_some();
    // Kafka refuses the whole request when the producer may not WRITE its transactional id.
    let transactional_id_refused = transactional_id.as_ref().is_some_and(|id| {
        !broker.authorized(client, Operation::Write, ResourceType::TransactionalId, id)
    });
    let verified_for = transactional_id
        .filter(|_| broker.transactions.config().partition_verification)
        .map(|id| id.to_string());
    // Per topic, per partition: the answer known now, or `None` for a batch to append.
    let mut topics = Vec::with_capacity(topic_data.len());
    // The batches to append, in request order, each with its (topic, partition) position.
    let mut appends = Vec::new();
    let mut positions = Vec::new();
    for topic_data in topic_data {
        // An owned copy: the request's strings are slices of its frame, which a batch handed
        // on without a copy must hold alone (see `owned_batches`).
        let name = str_bytes(topic_data.name.0.to_string());
        // An unauthorized topic is neither created nor looked at (Kafka answers it the same
        // whether it exists or not).
        let topic = broker
            .authorized_on_topic(client, Operation::Write, &name)
            .then(|| broker.topic_or_create(&name, true));
        let mut partitions = Vec::with_capacity(topic_data.partition_data.len());
        for partition_data in topic_data.partition_data {
            let index = partition_data.index;
            let failed = |error_code: i16, message: String| {
                Some(Outcome::Failed {
                    error_code,
                    message,
                })
            };
            let outcome = match (&topic, durability) {
                (_, None) => failed(
                    code(ResponseError::InvalidRequiredAcks),
                    format!("acks={acks} is not one of 0, 1, -1 (all)"),
                ),
                (_, Some(_)) if transactional_id_refused => failed(
                    code(ResponseError::TransactionalIdAuthorizationFailed),
                    "the producer may not write its transactional id".to_owned(),
                ),
                (None, Some(_)) => failed(
                    code(ResponseError::TopicAuthorizationFailed),
                    format!("not authorized to write topic '{name}'"),
                ),
                (Some(Err(error)), _) => failed(error.code(), error.to_string()),
                (Some(Ok(_)), Some(_)) if is_internal_topic(&name) => failed(
                    code(ResponseError::InvalidTopicException),
                    format!("topic '{name}' is internal to the broker: clients cannot write it"),
                ),
                (Some(Ok(topic)), Some(_)) if !topic.has_partition(index) => failed(
                    code(ResponseError::UnknownTopicOrPartition),
                    format!("topic '{name}' has no partition {index}"),
                ),
                (Some(Ok(_)), Some(_)) => {
                    let partition = PartitionId::new(name.as_str(), index as u32);
                    let batch = partition_data.records.unwrap_or_default();
                    positions.push((topics.len(), partitions.len(), batch.len()));
                    appends.push((partition, batch));
                    None
                }
            };
            partitions.push((index, outcome));
        }
        topics.push((name, partitions));
    }
    let appends = owned_batches(&broker.metrics, appends);
    if let Some(durability) = durability {
        let submissions = match &verified_for {
            Some(transactional_id) => verify(&broker, transactional_id, appends).await,
            None if !names_transactional_id
                && appends
                    .iter()
                    .any(|(_, batch)| transactional_header(batch).is_some()) =>
            {
                let refused = VerificationRefused {
                    code: ResponseError::TransactionalIdAuthorizationFailed.code(),
                    message: "transactional records need the producer's transactional id".into(),
                };
                vec![Submission::all(Err(refused), appends)]
            }
            None => vec![Submission::all(Ok(AppendKind::Produced), appends)],
        };
        // Each kind of append (one per guard) in its own submission, in turn: a partition has
        // one batch in a request, so the order between them does not matter.
        for submission in submissions {
            let Submission {
                kind,
                positions: indexes,
                appends,
            } = submission;
            let submitted = match (kind, &broker.cluster) {
                (Err(refused), _) => {
                    for index in indexes {
                        let (topic, partition, _) = positions[index];
                        topics[topic].1[partition].1 = Some(Outcome::Failed {
                            error_code: refused.code,
                            message: refused.message.clone(),
                        });
                    }
                    continue;
                }
                // In a cluster the partitions' Raft replicas take the batches; on a broker
                // alone the shards' own logs.
                (Ok(kind), Some(cluster)) => {
                    cluster.submit_appends(appends, kind, durability).await
                }
                (Ok(kind), None) => {
                    broker
                        .context
                        .submit_appends_through::<UnreplicatedLogs>(appends, kind, durability)
                        .await
                }
            };
            for (index, append) in indexes.into_iter().zip(submitted) {
                let (topic, partition, size) = positions[index];
                topics[topic].1[partition].1 = Some(Outcome::Appending(size, append));
            }
        }
    }
    Box::pin(async move {
        let mut responses = Vec::with_capacity(topics.len());
        for (name, partitions) in topics {
            let mut partition_responses = Vec::with_capacity(partitions.len());
            for (index, outcome) in partitions {
                let outcome = outcome.expect("every batch was submitted");
                partition_responses
                    .push(answer(&broker, header.api_version, &name, index, outcome).await);
            }
            responses.push(
                TopicProduceResponse::default()
                    .with_name(kafka_protocol::messages::TopicName(name))
                    .with_partition_responses(partition_responses),
            );
        }
        if acks == 0 {
            return Ok(Reply::new());
        }
        header.reply(&ProduceResponse::default().with_responses(responses))
    })
}

/// Some of a request's batches, to append as one kind (or refused, all with one error), each
/// with its index among the request's appends.
struct Submission {
    kind: Result<AppendKind, VerificationRefused>,
    positions: Vec<usize>,
    appends: Vec<(PartitionId, BytesMut)>,
}

impl Submission {
    fn all(
        kind: Result<AppendKind, VerificationRefused>,
        appends: Vec<(PartitionId, BytesMut)>,
    ) -> Submission {
        Submission {
            kind,
            positions: (0..appends.len()).collect(),
            appends,
        }
    }
}

/// A request's batches being sorted into [`Submission`]s, each once.
struct Sorting {
    appends: Vec<Option<(PartitionId, BytesMut)>>,
    /// By guard (`None`: appended as `Produced`).
    by_guard: BTreeMap<Option<VerificationGuard>, Submission>,
    refused: Vec<Submission>,
}

impl Sorting {
    fn partition(&self, index: usize) -> &PartitionId {
        &self.appends[index].as_ref().expect("not sorted yet").0
    }

    fn take(&mut self, index: usize) -> (PartitionId, BytesMut) {
        self.appends[index]
            .take()
            .expect("each batch is sorted once")
    }

    fn append(&mut self, guard: Option<VerificationGuard>, index: usize) {
        let append = self.take(index);
        let submission = self.by_guard.entry(guard).or_insert_with(|| Submission {
            kind: Ok(guard.map_or(AppendKind::Produced, AppendKind::Verified)),
            positions: Vec::new(),
            appends: Vec::new(),
        });
        submission.positions.push(index);
        submission.appends.push(append);
    }

    fn refuse(&mut self, index: usize, error: VerificationRefused) {
        let append = self.take(index);
        self.refused.push(Submission {
            kind: Err(error),
            positions: vec![index],
            appends: vec![append],
        });
    }

    fn finish(self) -> Vec<Submission> {
        debug_assert!(self.appends.iter().all(Option::is_none));
        self.by_guard.into_values().chain(self.refused).collect()
    }
}

/// The header of `batch` if it is a transactional producer's data (not a control batch).
fn transactional_header(batch: &[u8]) -> Option<BatchHeader> {
    BatchHeader::parse(batch).filter(|header| {
        header.has_producer_id() && header.is_transactional() && !header.is_control()
    })
}

/// The request's batches sorted by how they may be appended (see
/// `transactions::verification`): those that are not a transactional producer's as
/// `Produced`; a transactional producer's whose partition the coordinator confirmed (or whose
/// transaction is open there already) as `Verified` with their partition's guard; the others
/// refused, each with its error. All the transactional batches of a request must be one
/// producer's (else INVALID_PRODUCER_ID_MAPPING, as Kafka).
async fn verify(
    broker: &Broker,
    transactional_id: &str,
    appends: Vec<(PartitionId, BytesMut)>,
) -> Vec<Submission> {
    let headers: Vec<Option<BatchHeader>> = appends
        .iter()
        .map(|(_, batch)| transactional_header(batch))
        .collect();
    let mut sorting = Sorting {
        appends: appends.into_iter().map(Some).collect(),
        by_guard: BTreeMap::new(),
        refused: Vec::new(),
    };
    let mut transactional = Vec::new();
    for (index, header) in headers.iter().enumerate() {
        match header {
            Some(header) => transactional.push((index, *header)),
            None => sorting.append(None, index),
        }
    }
    let mut producers: Vec<(i64, i16)> = transactional
        .iter()
        .map(|(_, header)| (header.producer_id, header.producer_epoch))
        .collect();
    producers.sort_unstable();
    producers.dedup();
    let (producer_id, producer_epoch) = match producers[..] {
        [] => return sorting.finish(),
        [producer] => producer,
        _ => {
            for (index, _) in transactional {
                let error = VerificationRefused {
                    code: ResponseError::InvalidProducerIdMapping.code(),
                    message: "Transactional records contained more than one producer ID".into(),
                };
                sorting.refuse(index, error);
            }
            return sorting.finish();
        }
    };
    let partitions = transactional
        .iter()
        .map(|(index, header)| (sorting.partition(*index).clone(), header.base_sequence))
        .collect();
    let started = broker
        .context
        .start_transaction_verifications(partitions, producer_id, producer_epoch)
        .await;
    // The partitions that need the coordinator's word, with their guard.
    let mut to_verify: Vec<(usize, VerificationGuard)> = Vec::new();
    for ((index, _), started) in transactional.into_iter().zip(started) {
        match started {
            Ok(VerificationGuard::SENTINEL) => {
                sorting.append(Some(VerificationGuard::SENTINEL), index)
            }
            Ok(guard) => to_verify.push((index, guard)),
            Err(error) => {
                let error = VerificationRefused {
                    code: log_error_code(&error),
                    message: error.to_string(),
                };
                sorting.refuse(index, error);
            }
        }
    }
    if to_verify.is_empty() {
        return sorting.finish();
    }
    let partitions = to_verify
        .iter()
        .map(|(index, _)| {
            let partition = sorting.partition(*index);
            (partition.topic.clone(), partition.partition as i32)
        })
        .collect();
    let answers = verify_with_coordinator(
        broker,
        transactional_id,
        producer_id,
        producer_epoch,
        partitions,
    )
    .await;
    for ((index, guard), answer) in to_verify.into_iter().zip(answers) {
        match answer {
            Ok(()) => sorting.append(Some(guard), index),
            Err(error) => sorting.refuse(index, error),
        }
    }
    sorting.finish()
}

/// A batch at least this large that is its request's only one goes to the engine in the
/// frame's own buffer (the connection reads a frame longer than a read chunk into a buffer of
/// its own): the frame's few other bytes ride along, nothing more.
const BATCH_OWNING_FRAME_BYTES_MIN: usize = 64 << 10;

/// The request's batches as bytes of their own: the engine stamps offsets in place. A request's
/// only batch, when large and the last holder of its frame (librdkafka sends a request per
/// partition batch; peak runs send ~1 MiB batches), keeps the frame's buffer, which the
/// connection read it into: no copy. Any other is copied, so that a small batch never pins a
/// buffer shared with other requests, nor one batch of many a whole frame.
fn owned_batches(
    metrics: &ShardMetrics,
    appends: Vec<(PartitionId, Bytes)>,
) -> Vec<(PartitionId, BytesMut)> {
    let only = appends.len() == 1;
    appends
        .into_iter()
        .map(|(partition, batch)| {
            let read_into = batch.as_ptr();
            let owned = if only && batch.len() >= BATCH_OWNING_FRAME_BYTES_MIN {
                // Copies only if something else still holds the frame.
                BytesMut::from(batch)
            } else {
                BytesMut::from(&batch[..])
            };
            if owned.as_ptr() != read_into {
                metrics.produce_bytes_copied(owned.len() as u64);
            }
            (partition, owned)
        })
        .collect()
}

async fn answer(
    broker: &Broker,
    api_version: i16,
    topic: &str,
    index: i32,
    outcome: Outcome,
) -> PartitionProduceResponse {
    let response = PartitionProduceResponse::default()
        .with_index(index)
        .with_log_append_time_ms(-1);
    let failed = |error_code: i16, message: String| {
        let failed = response
            .clone()
            .with_error_code(error_code)
            .with_base_offset(-1);
        // The message field exists from version 8.
        if api_version >= 8 {
            failed.with_error_message(Some(str_bytes(message)))
        } else {
            failed
        }
    };
    match outcome {
        Outcome::Failed {
            error_code,
            message,
        } => failed(error_code, message),
        Outcome::Appending(size, append) => match append.await {
            Err(error) => failed(log_error_code(&error), error.to_string()),
            Ok(appended) => {
                let records = appended.last_offset - appended.base_offset + 1;
                broker.metrics.batch_produced(topic, size as u64, records);
                let response = response
                    .with_error_code(NONE)
                    .with_base_offset(appended.base_offset as i64);
                // The log start offset exists from version 5.
                if api_version >= 5 {
                    response.with_log_start_offset(appended.log_start_offset as i64)
                } else {
                    response
                }
            }
        },
    }
}
