//! The one place where engine, catalog and cluster errors become Kafka error codes, so that
//! every API answers the same failure with the same code.

use engine::batch::BatchError;
use engine::catalog::CatalogError;
use engine::LogError;
use ferrite_replication::cluster::{ClusterChangeError, MarkerRefusal};
use ferrite_replication::controller::ControllerError;
use ferrite_replication::metadata::PlanError;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::cluster::ClusterError;

/// Kafka's "no error".
pub const NONE: i16 = 0;

/// The code a client gets for a failed log operation.
pub fn log_error_code(error: &LogError) -> i16 {
    let code = match error {
        LogError::InvalidBatch(batch) => return batch_error_code(batch),
        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        LogError::UnknownPartition(_) => ResponseError::UnknownTopicOrPartition,
        LogError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
        LogError::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
        LogError::InvalidTransactionState { .. } => ResponseError::InvalidTxnState,
        LogError::TransactionCoordinatorFenced { .. } => {
            ResponseError::TransactionCoordinatorFenced
        }
        // Retriable for the client: space may be freed, or the log reopened.
        LogError::DiskFull { .. } | LogError::Io { .. } | LogError::Corrupt(_) => {
            ResponseError::KafkaStorageError
        }
        LogError::Discarded { .. } => ResponseError::KafkaStorageError,
        // What Kafka answers a read of a batch that does not check out. Not retriable: the
        // client's application hears of it and may seek past the range (librdkafka passes it
        // on as a consumer error; KAFKA_STORAGE_ERROR would have it refresh metadata and
        // retry in silence).
        LogError::Damaged { .. } => ResponseError::CorruptMessage,
        // The broker is shutting down: the client retries elsewhere or after a restart.
        LogError::Closed => ResponseError::NotLeaderOrFollower,
        LogError::InvalidConfig(_) => ResponseError::UnknownServerError,
        // A follower, or a deposed leader's write: the client looks for the leader.
        LogError::NotLeader { .. } | LogError::StaleLeaderEpoch { .. } => {
            ResponseError::NotLeaderOrFollower
        }
        LogError::NotEnoughReplicas { .. } => ResponseError::NotEnoughReplicas,
        // Only replication appends at given offsets; never a client's request. And a
        // replicated partition's batches never reach the shard's own append (a routing bug).
        LogError::BelowLogEnd { .. } | LogError::Replicated => ResponseError::UnknownServerError,
    };
    code.code()
}

/// The code for a transaction marker a partition leader did not write (or did not confirm in
/// time), as Kafka's WriteTxnMarkers answers it per partition.
pub fn marker_refusal_code(refusal: &MarkerRefusal) -> i16 {
    let code = match refusal {
        MarkerRefusal::NotLeader { .. } => ResponseError::NotLeaderOrFollower,
        MarkerRefusal::UnknownPartition => ResponseError::UnknownTopicOrPartition,
        MarkerRefusal::NotEnoughReplicas => ResponseError::NotEnoughReplicas,
        MarkerRefusal::ProducerFenced => ResponseError::InvalidProducerEpoch,
        MarkerRefusal::CoordinatorFenced => ResponseError::TransactionCoordinatorFenced,
        MarkerRefusal::TimedOut => ResponseError::RequestTimedOut,
        MarkerRefusal::Storage(_) => ResponseError::KafkaStorageError,
        MarkerRefusal::Failed(_) => ResponseError::UnknownServerError,
        // The groups' coordinator's own code, which it took from this table.
        MarkerRefusal::GroupCoordinator { code, .. } => return *code,
    };
    code.code()
}

/// The code for a batch the broker refused to store, as Kafka answers a produced batch:
/// RecordTooLargeException for its size, CorruptRecordException for bytes that do not hold a
/// batch or fail the CRC, InvalidRecordException for a batch that is well-formed but not one
/// a producer may send (`ProduceRequest.validateRecords` and `LogValidator.validateBatch`:
/// magic other than 2, offsets and record count that disagree, a control batch, a negative
/// sequence, more than one batch).
fn batch_error_code(error: &BatchError) -> i16 {
    let code = match error {
        BatchError::TooLarge { .. } => ResponseError::MessageTooLarge,
        BatchError::TooShort { .. }
        | BatchError::LengthMismatch { .. }
        | BatchError::CrcMismatch { .. } => ResponseError::CorruptMessage,
        BatchError::UnsupportedMagic { .. }
        | BatchError::RecordCountMismatch { .. }
        | BatchError::InvalidSequence { .. }
        | BatchError::SeveralBatches { .. }
        | BatchError::ControlBatch => ResponseError::InvalidRecord,
    };
    code.code()
}

/// The code for a refused catalog change.
pub fn catalog_error_code(error: &CatalogError) -> i16 {
    let code = match error {
        CatalogError::TopicExists(_) => ResponseError::TopicAlreadyExists,
        CatalogError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
        CatalogError::InvalidTopicName { .. } | CatalogError::InternalTopic(_) => {
            ResponseError::InvalidTopicException
        }
        CatalogError::InvalidPartitions { .. } => ResponseError::InvalidPartitions,
        CatalogError::InvalidConfig(_) => ResponseError::InvalidConfig,
        CatalogError::Io { .. } | CatalogError::Corrupt { .. } => ResponseError::KafkaStorageError,
    };
    code.code()
}

/// A request item the broker refused, as the APIs whose answers carry a message report it:
/// the Kafka error code and the message saying why. Every engine, catalog and controller error
/// becomes one through the mappings above, so an API never pairs a code and a message itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: i16,
    pub message: String,
}

impl Failure {
    pub fn new(code: i16, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// An answer's error code and message fields: no error and no message on success.
    pub fn fields(outcome: Result<(), Failure>) -> (i16, Option<StrBytes>) {
        match outcome {
            Ok(()) => (NONE, None),
            Err(failure) => (failure.code, Some(StrBytes::from_string(failure.message))),
        }
    }
}

impl From<CatalogError> for Failure {
    fn from(error: CatalogError) -> Failure {
        Failure::new(catalog_error_code(&error), error.to_string())
    }
}

impl From<LogError> for Failure {
    fn from(error: LogError) -> Failure {
        Failure::new(log_error_code(&error), error.to_string())
    }
}

impl From<ClusterError> for Failure {
    fn from(error: ClusterError) -> Failure {
        Failure::new(error.code, error.message)
    }
}

/// The code for a refused or failed cluster change (one asked of the controller).
pub fn cluster_error_code(error: &ClusterChangeError) -> i16 {
    let code = match error {
        ClusterChangeError::Controller(ControllerError::Refused(plan)) => match plan {
            PlanError::TopicAlreadyExists(_) => ResponseError::TopicAlreadyExists,
            PlanError::UnknownTopic(_) | PlanError::UnknownPartition { .. } => {
                ResponseError::UnknownTopicOrPartition
            }
            PlanError::InvalidTopic(_) | PlanError::TopicIdInUse(_) => {
                ResponseError::InvalidTopicException
            }
            PlanError::StaleBrokerEpoch { .. } => ResponseError::StaleBrokerEpoch,
            PlanError::ProducerIdsExhausted => ResponseError::UnknownServerError,
            PlanError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
            PlanError::InvalidReplicationFactor { .. } => ResponseError::InvalidReplicationFactor,
            PlanError::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
            PlanError::InvalidConfig(_) => ResponseError::InvalidConfig,
            PlanError::UnacceptableCredential(_) => ResponseError::UnacceptableCredential,
            PlanError::InvalidRequest(_) => ResponseError::InvalidRequest,
            PlanError::NoReassignmentInProgress { .. } => ResponseError::NoReassignmentInProgress,
        },
        ClusterChangeError::Controller(ControllerError::Timeout(_))
        | ClusterChangeError::NotShownHere => ResponseError::RequestTimedOut,
        // Retriable: the client looks for the controller again.
        ClusterChangeError::Controller(
            ControllerError::Failed(_) | ControllerError::Stopped(_),
        ) => ResponseError::NotController,
        ClusterChangeError::NegativeBrokerId => ResponseError::InvalidReplicaAssignment,
    };
    code.code()
}

/// Shorthand for codes named by kafka-protocol.
pub const fn code(error: ResponseError) -> i16 {
    error.code()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_map_to_the_codes_clients_act_on() {
        assert_eq!(
            log_error_code(&LogError::OffsetOutOfRange {
                offset: 9,
                log_start_offset: 0,
                log_end_offset: 3
            }),
            1
        );
        assert_eq!(
            log_error_code(&LogError::InvalidBatch(BatchError::CrcMismatch {
                stored: 1,
                computed: 2
            })),
            2
        );
        assert_eq!(
            log_error_code(&LogError::InvalidBatch(BatchError::TooLarge {
                length_bytes: 2,
                limit_bytes: 1
            })),
            10
        );
        let invalid_record = 87;
        for refused in [
            BatchError::UnsupportedMagic { magic: 1 },
            BatchError::RecordCountMismatch {
                records_count: 2,
                last_offset_delta: 0,
            },
            BatchError::ControlBatch,
            BatchError::SeveralBatches {
                first_batch_bytes: 70,
                actual_bytes: 140,
            },
        ] {
            assert_eq!(batch_error_code(&refused), invalid_record, "{refused}");
        }
        assert_eq!(log_error_code(&LogError::DiskFull { operation: "x" }), 56);
        assert_eq!(
            log_error_code(&LogError::Damaged {
                start_offset: 4,
                end_offset: 9,
                reason: "CRC".into()
            }),
            2
        );
        assert_eq!(
            log_error_code(&LogError::OutOfOrderSequence {
                producer_id: 1,
                expected: 5,
                received: 7
            }),
            45
        );
        assert_eq!(
            catalog_error_code(&CatalogError::TopicExists("t".into())),
            36
        );
        assert_eq!(
            catalog_error_code(&CatalogError::UnknownTopic("t".into())),
            3
        );
        assert_eq!(
            catalog_error_code(&CatalogError::InvalidConfig("bad".into())),
            40
        );
    }

    #[test]
    fn cluster_refusals_map_to_the_codes_clients_act_on() {
        let refused = |plan: PlanError| {
            cluster_error_code(&ClusterChangeError::Controller(ControllerError::Refused(
                plan,
            )))
        };
        assert_eq!(refused(PlanError::TopicAlreadyExists("t".into())), 36);
        assert_eq!(refused(PlanError::UnknownTopic("t".into())), 3);
        assert_eq!(
            refused(PlanError::UnknownPartition {
                topic: "t".into(),
                partition: 9
            }),
            3
        );
        assert_eq!(
            refused(PlanError::InvalidReplicationFactor {
                requested: 4,
                live_brokers: 3
            }),
            38
        );
        assert_eq!(refused(PlanError::InvalidPartitions("fewer".into())), 37);
        assert_eq!(refused(PlanError::InvalidConfig("bad".into())), 40);
        assert_eq!(
            refused(PlanError::NoReassignmentInProgress {
                topic: "t".into(),
                partition: 0
            }),
            85
        );
        // Retriable: the client asks again (REQUEST_TIMED_OUT) or looks for the controller
        // (NOT_CONTROLLER).
        let timed_out = ControllerError::Timeout(std::time::Duration::from_secs(1));
        assert_eq!(cluster_error_code(&timed_out.into()), 7);
        assert_eq!(cluster_error_code(&ClusterChangeError::NotShownHere), 7);
        let stopped = ControllerError::Stopped("shutting down".into());
        assert_eq!(cluster_error_code(&stopped.into()), 41);
        assert_eq!(
            cluster_error_code(&ClusterChangeError::NegativeBrokerId),
            39
        );
    }
}
