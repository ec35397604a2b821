//! Why a group request was refused. Unlike [`engine::LogError`], these are the group protocol's
//! own answers, one to one with Kafka error codes that clients act on (rejoin, reset the member
//! id, find the coordinator again), so each variant carries its code here and the handlers need
//! not keep a second table.

use thiserror::Error;

/// A refusal of the group coordinator, as Kafka's clients expect it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error)]
pub enum GroupError {
    /// The group is being unloaded or was just deleted; the client looks for the coordinator
    /// again. COORDINATOR_NOT_AVAILABLE.
    #[error("the group coordinator is not available for this group")]
    CoordinatorNotAvailable,
    /// This broker leads the group's `__consumer_offsets` partition but has not loaded its
    /// coordinator yet (a new leader waits until it has committed an entry of its term); the
    /// client retries here. COORDINATOR_LOAD_IN_PROGRESS.
    #[error("the group coordinator is loading")]
    CoordinatorLoadInProgress,
    /// Another broker (or none yet) leads the group's `__consumer_offsets` partition; the
    /// client looks for the coordinator again. NOT_COORDINATOR.
    #[error("this broker is not the group's coordinator")]
    NotCoordinator,
    /// A committed offset's metadata is longer than `offset_metadata_bytes_max`.
    /// OFFSET_METADATA_TOO_LARGE.
    #[error("the offset's metadata is too large")]
    OffsetMetadataTooLarge,
    /// The request names a generation that is not the group's current one. ILLEGAL_GENERATION.
    #[error("the generation id is not the group's current generation")]
    IllegalGeneration,
    /// The member's protocol type or protocols do not match the group's. INCONSISTENT_GROUP_PROTOCOL.
    #[error("the member's protocols are incompatible with the group's")]
    InconsistentGroupProtocol,
    /// The group id is empty. INVALID_GROUP_ID.
    #[error("the group id is invalid")]
    InvalidGroupId,
    /// The member id is not (or no longer) a member of the group. UNKNOWN_MEMBER_ID.
    #[error("the member id is not known to the group")]
    UnknownMemberId,
    /// The session timeout is outside the coordinator's bounds. INVALID_SESSION_TIMEOUT.
    #[error("the session timeout is outside the allowed range")]
    InvalidSessionTimeout,
    /// The group is rebalancing; the member must rejoin. REBALANCE_IN_PROGRESS.
    #[error("the group is rebalancing")]
    RebalanceInProgress,
    /// The group still has members. NON_EMPTY_GROUP.
    #[error("the group is not empty")]
    NonEmptyGroup,
    /// The group does not exist. GROUP_ID_NOT_FOUND.
    #[error("the group does not exist")]
    GroupIdNotFound,
    /// A new member must join again with the member id it was given (KIP-394). MEMBER_ID_REQUIRED.
    #[error("the member must rejoin with the member id it was given")]
    MemberIdRequired,
    /// The group has `group_members_max` members already. GROUP_MAX_SIZE_REACHED.
    #[error("the group has reached its maximum size")]
    GroupMaxSizeReached,
    /// Another instance with the same group.instance.id has taken over the member slot
    /// (KIP-345). FENCED_INSTANCE_ID.
    #[error("another member with the same group.instance.id took over")]
    FencedInstanceId,
    /// OffsetDelete on a topic the group's members are subscribed to. GROUP_SUBSCRIBED_TO_TOPIC.
    #[error("the group is subscribed to the topic")]
    GroupSubscribedToTopic,
    /// The request is malformed for its protocol (a consumer-protocol heartbeat without what
    /// its epoch requires). INVALID_REQUEST.
    #[error("the request is invalid")]
    InvalidRequest,
    /// The member's epoch is ahead of, or unknown to, the coordinator: it must rejoin with
    /// epoch 0. FENCED_MEMBER_EPOCH.
    #[error("the member epoch is fenced")]
    FencedMemberEpoch,
    /// Another member with the same group.instance.id is still in the group.
    /// UNRELEASED_INSTANCE_ID.
    #[error("the group.instance.id is still in use by another member")]
    UnreleasedInstanceId,
    /// The server-side assignor named is not one the coordinator runs. UNSUPPORTED_ASSIGNOR.
    #[error("the assignor is not supported")]
    UnsupportedAssignor,
    /// An OffsetCommit or OffsetFetch with a member epoch older than the member's.
    /// STALE_MEMBER_EPOCH.
    #[error("the member epoch is stale")]
    StaleMemberEpoch,
    /// An OffsetCommit older than version 9 from a consumer-protocol member, whose epoch only
    /// version 9 on carries. UNSUPPORTED_VERSION.
    #[error("OffsetCommit version 9 or above must be used by members of the consumer protocol")]
    UnsupportedVersion,
    /// A subscription's regular expression does not compile (or is too large).
    /// INVALID_REGULAR_EXPRESSION.
    #[error("the regular expression is not valid")]
    InvalidRegularExpression,
    /// A transaction's offset commit or marker from a producer epoch older than the one
    /// its open transaction has here: a fenced producer. INVALID_PRODUCER_EPOCH.
    #[error("the producer epoch is older than its transaction's")]
    InvalidProducerEpoch,
    /// A transaction's marker from a coordinator older than the one that wrote the
    /// producer's last marker, which the partition's producer state refuses.
    /// TRANSACTION_COORDINATOR_FENCED.
    #[error("the transaction coordinator is fenced")]
    TransactionCoordinatorFenced,
    /// OffsetFetch with `require_stable`: an open transaction commits an offset of the
    /// partition. UNSTABLE_OFFSET_COMMIT.
    #[error("a transaction commits an offset of the partition")]
    UnstableOffsetCommit,
}

impl GroupError {
    /// Kafka's error code for this refusal.
    pub fn code(self) -> i16 {
        match self {
            GroupError::OffsetMetadataTooLarge => 12,
            GroupError::CoordinatorLoadInProgress => 14,
            GroupError::CoordinatorNotAvailable => 15,
            GroupError::NotCoordinator => 16,
            GroupError::IllegalGeneration => 22,
            GroupError::InconsistentGroupProtocol => 23,
            GroupError::InvalidGroupId => 24,
            GroupError::UnknownMemberId => 25,
            GroupError::InvalidSessionTimeout => 26,
            GroupError::RebalanceInProgress => 27,
            GroupError::NonEmptyGroup => 68,
            GroupError::GroupIdNotFound => 69,
            GroupError::MemberIdRequired => 79,
            GroupError::GroupMaxSizeReached => 81,
            GroupError::FencedInstanceId => 82,
            GroupError::GroupSubscribedToTopic => 86,
            GroupError::InvalidRequest => 42,
            GroupError::FencedMemberEpoch => 110,
            GroupError::UnreleasedInstanceId => 111,
            GroupError::UnsupportedAssignor => 112,
            GroupError::StaleMemberEpoch => 113,
            GroupError::InvalidRegularExpression => 128,
            GroupError::InvalidProducerEpoch => 47,
            GroupError::UnstableOffsetCommit => 88,
            GroupError::TransactionCoordinatorFenced => 52,
            GroupError::UnsupportedVersion => 35,
        }
    }
}
