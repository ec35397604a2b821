//! Transaction markers in a cluster (Kafka's WriteTxnMarkers between brokers): a transaction
//! coordinator's COMMIT or ABORT marker appended to each partition of the transaction by the
//! partition's leader, and the answer, per partition, once the marker is committed there.
//!
//! [`ShardCluster::write_markers`] splits the partitions by the leader this broker knows (the
//! broker's `LeaderTable`): the partitions it leads itself go to their replicas here
//! ([`ShardCluster::write_markers_here`]: routed to the owning shards over the mesh, checked as
//! broker-written batches, numbered by each replica's writer with its term, answered once the
//! high-water mark passed them); the others go, grouped per leader, as one request per broker
//! ([`ShardCluster::write_markers_at`]), which that broker serves the same way and answers per
//! partition. A partition the metadata does not have is answered [`MarkerRefusal::UnknownPartition`]
//! without asking anyone (as Kafka's `TransactionMarkerChannelManager` treats a partition its
//! metadata cache has lost: its topic is gone), one without a known leader
//! [`MarkerRefusal::NotLeader`] (the coordinator retries).
//!
//! The requests travel as calls between brokers (`peer_calls`: request ids, answers routed to
//! the asking shard, a timeout, requests in flight per peer and served at once bounded), with
//! bounds of their own: partitions per request (more are split over several requests). A
//! leader waits for the commit for less than the sender waits for the answer
//! ([`MarkerConfig::commit_timeout`]), so that the answer says which partitions made it.
//!
//! A partition of `__consumer_offsets` is more than a log: its marker also ends the
//! transaction's offset commits in the partition's groups, which the group coordinator above
//! this crate does (Kafka's leader appends the marker, then has its group coordinator complete
//! the transaction). So where `net` gave the shard an [`OffsetsMarkerWriter`], the leader of
//! such a partition hands its marker to it instead of to the replica; a layer above supplying
//! what this one cannot know, as `net` supplies the engine's record rewrite. Without one (a
//! cluster without the Kafka layer, as in this crate's tests) it is appended like any other.
//!
//! Refusals are typed ([`MarkerRefusal`], the same on the wire); `net` turns them into Kafka
//! error codes in its one table.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use engine::batch::{encode_transaction_marker, TransactionMarker};
use engine::catalog::OFFSETS_TOPIC;
use engine::shard::{AppendKind, Durability, PartitionId};
use engine::LogError;
use futures::future::{join_all, LocalBoxFuture};

use super::peer_calls::{PeerAnswer, PeerCall, PeerCalls};
use super::ShardCluster;
use crate::controller::within;
use crate::message::NodeId;
use crate::shard::ShardReplication;

/// Why one partition's marker was not written (or not known to be).
#[derive(
    Debug, Clone, PartialEq, Eq, thiserror::Error, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub enum MarkerRefusal {
    /// The broker asked does not lead the partition (or no leader is known): retried at the
    /// leader. Kafka's NOT_LEADER_OR_FOLLOWER.
    #[error("not the partition's leader (leader: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    /// No such partition in the metadata (its topic was deleted): the coordinator forgets it.
    /// Kafka's UNKNOWN_TOPIC_OR_PARTITION.
    #[error("no such partition")]
    UnknownPartition,
    /// Fewer replicas in sync than `min.insync.replicas`. Kafka's NOT_ENOUGH_REPLICAS.
    #[error("fewer replicas in sync than min.insync.replicas")]
    NotEnoughReplicas,
    /// The partition has seen a newer epoch of the producer. Kafka's INVALID_PRODUCER_EPOCH.
    #[error("the partition has seen a newer epoch of the producer")]
    ProducerFenced,
    /// The partition has seen a marker of the producer from a newer coordinator (a later
    /// leader of the transactional id's partition). Kafka's TRANSACTION_COORDINATOR_FENCED.
    #[error("the partition has seen a marker from a newer transaction coordinator")]
    CoordinatorFenced,
    /// Not committed (or not answered) in time: it may yet be. Kafka's REQUEST_TIMED_OUT.
    #[error("the marker was not committed in time")]
    TimedOut,
    /// The leader's log could not store it (a disk fault). Kafka's KAFKA_STORAGE_ERROR.
    #[error("{0}")]
    Storage(String),
    /// Anything else, as the leader's log said it.
    #[error("{0}")]
    Failed(String),
    /// Refused by the groups' coordinator of a `__consumer_offsets` partition (its
    /// [`OffsetsMarkerWriter`]), with the Kafka error code it gave (NOT_COORDINATOR while its
    /// groups load, say), passed on as is.
    #[error("{message}")]
    GroupCoordinator { code: i16, message: String },
}

impl MarkerRefusal {
    /// A partition log's refusal of a marker, as it travels.
    pub fn of(error: &LogError) -> MarkerRefusal {
        match error {
            LogError::NotLeader { leader } => MarkerRefusal::NotLeader {
                leader_hint: *leader,
            },
            // The replica stopped (shutdown, or the partition moved away): ask the leader.
            LogError::Closed | LogError::StaleLeaderEpoch { .. } => {
                MarkerRefusal::NotLeader { leader_hint: None }
            }
            LogError::UnknownPartition(_) => MarkerRefusal::UnknownPartition,
            LogError::NotEnoughReplicas { .. } => MarkerRefusal::NotEnoughReplicas,
            LogError::InvalidProducerEpoch { .. } => MarkerRefusal::ProducerFenced,
            LogError::TransactionCoordinatorFenced { .. } => MarkerRefusal::CoordinatorFenced,
            LogError::DiskFull { .. }
            | LogError::Io { .. }
            | LogError::Corrupt(_)
            | LogError::Discarded { .. } => MarkerRefusal::Storage(error.to_string()),
            other => MarkerRefusal::Failed(other.to_string()),
        }
    }
}

/// One partition's marker: written (committed by the partition's replicas), or why not.
pub type MarkerOutcome = Result<(), MarkerRefusal>;

/// Writes a marker to partition `.0` of `__consumer_offsets`, which this broker leads, and ends
/// the transaction's offset commits in its groups (see the module documentation); called on
/// the shard it was given to, resolves once the marker is durable.
pub type OffsetsMarkerWriter =
    Rc<dyn Fn(u32, TransactionMarker) -> LocalBoxFuture<'static, MarkerOutcome>>;

/// A marker as it travels (engine's [`TransactionMarker`], field by field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct WireMarker {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub coordinator_epoch: i32,
    pub committed: bool,
}

impl From<TransactionMarker> for WireMarker {
    fn from(marker: TransactionMarker) -> WireMarker {
        WireMarker {
            producer_id: marker.producer_id,
            producer_epoch: marker.producer_epoch,
            coordinator_epoch: marker.coordinator_epoch,
            committed: marker.committed,
        }
    }
}

impl From<WireMarker> for TransactionMarker {
    fn from(marker: WireMarker) -> TransactionMarker {
        TransactionMarker {
            producer_id: marker.producer_id,
            producer_epoch: marker.producer_epoch,
            coordinator_epoch: marker.coordinator_epoch,
            committed: marker.committed,
        }
    }
}

/// [`MarkerOutcome`] on the wire.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum WireOutcome {
    Written,
    Refused(MarkerRefusal),
}

impl From<MarkerOutcome> for WireOutcome {
    fn from(outcome: MarkerOutcome) -> WireOutcome {
        match outcome {
            Ok(()) => WireOutcome::Written,
            Err(refusal) => WireOutcome::Refused(refusal),
        }
    }
}

impl From<WireOutcome> for MarkerOutcome {
    fn from(outcome: WireOutcome) -> MarkerOutcome {
        match outcome {
            WireOutcome::Written => Ok(()),
            WireOutcome::Refused(refusal) => Err(refusal),
        }
    }
}

/// The bounds and waits of the marker traffic (see the module documentation).
#[derive(Debug, Clone)]
pub struct MarkerConfig {
    /// How long a requester waits for a leader's answer, its wait for a place among the
    /// requests in flight to that leader included (Kafka's `request.timeout.ms`, 30 s).
    pub request_timeout: Duration,
    /// How long a leader waits for its markers to commit before it answers `TimedOut` for
    /// those that have not; below `request_timeout`, so the answer arrives in time.
    pub commit_timeout: Duration,
    /// Requests to one peer awaiting their answers at once.
    pub requests_in_flight_per_peer_max: usize,
    /// Partitions in one request; a leader's share of a larger transaction goes in several.
    pub partitions_per_request_max: usize,
    /// Peers' requests this shard serves at once (markers and transaction verifications
    /// together, `peer_calls`).
    pub served_requests_max: usize,
}

impl Default for MarkerConfig {
    fn default() -> MarkerConfig {
        MarkerConfig {
            request_timeout: Duration::from_secs(30),
            commit_timeout: Duration::from_secs(25),
            requests_in_flight_per_peer_max: 8,
            partitions_per_request_max: 1024,
            served_requests_max: 256,
        }
    }
}

/// Serves a peer's request to write `marker` to `partitions` (which this broker is believed
/// to lead): [`write_led_here`], one outcome per partition, as they travel.
pub(super) async fn serve_markers(
    calls: &PeerCalls,
    replication: &ShardReplication,
    marker: WireMarker,
    partitions: Vec<(String, u32)>,
) -> Vec<WireOutcome> {
    let partitions = partitions
        .into_iter()
        .map(|(topic, partition)| PartitionId::new(topic, partition))
        .collect();
    write_led_here(calls, replication, marker.into(), partitions)
        .await
        .into_iter()
        .map(WireOutcome::from)
        .collect()
}

/// Asks `leader` to write `marker` to `partitions` (at most
/// [`MarkerConfig::partitions_per_request_max`]); every partition `TimedOut` if no answer came
/// within the request timeout (or the leader was too busy to take it).
async fn request_markers(
    calls: &PeerCalls,
    leader: NodeId,
    marker: TransactionMarker,
    partitions: Vec<PartitionId>,
) -> Vec<MarkerOutcome> {
    debug_assert!(partitions.len() <= calls.markers.partitions_per_request_max);
    let count = partitions.len();
    let call = PeerCall::Markers {
        marker: marker.into(),
        partitions: partitions
            .into_iter()
            .map(|partition| (partition.topic, partition.partition))
            .collect(),
    };
    match calls.request(leader, call).await {
        // A leader answers for every partition it was asked about.
        Some(PeerAnswer::Markers(outcomes)) if outcomes.len() == count => {
            outcomes.into_iter().map(MarkerOutcome::from).collect()
        }
        _ => vec![Err(MarkerRefusal::TimedOut); count],
    }
}

/// Writes `marker` to `partitions` through their replicas on this broker: unknown partitions
/// refused at once, those of `__consumer_offsets` handed to the channel's
/// [`OffsetsMarkerWriter`] if it has one, the others appended as broker-written batches by
/// their leaders' writers and answered once committed (within the commit timeout), or refused
/// as the replica refuses them (NotLeader, naming the leader this broker knows, where it does
/// not lead).
async fn write_led_here(
    calls: &PeerCalls,
    replication: &ShardReplication,
    marker: TransactionMarker,
    partitions: Vec<PartitionId>,
) -> Vec<MarkerOutcome> {
    let (state, config) = (&calls.state, &calls.markers);
    let image = state.image();
    let mut outcomes: Vec<Option<MarkerOutcome>> = partitions
        .iter()
        .map(|partition| {
            let known = image
                .topic(&partition.topic)
                .and_then(|topic| topic.replicas(partition.partition))
                .is_some();
            (!known).then_some(Err(MarkerRefusal::UnknownPartition))
        })
        .collect();
    let offsets_writer = calls.offsets_writer.borrow().clone();
    let mut offsets_positions = Vec::new();
    let mut offsets_writes = Vec::new();
    if let Some(writer) = offsets_writer {
        for (position, partition) in partitions.iter().enumerate() {
            if outcomes[position].is_none() && partition.topic == OFFSETS_TOPIC {
                offsets_positions.push(position);
                offsets_writes.push(within(
                    config.commit_timeout,
                    writer(partition.partition, marker),
                ));
                // Its outcome comes from the writer: not appended below.
                outcomes[position] = Some(Err(MarkerRefusal::TimedOut));
            }
        }
    }
    let offsets_written = join_all(offsets_writes);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as i64);
    let batch = encode_transaction_marker(&marker, now_ms);
    let (positions, appends): (Vec<usize>, Vec<(PartitionId, BytesMut)>) = partitions
        .iter()
        .enumerate()
        .filter(|(position, _)| outcomes[*position].is_none())
        .map(|(position, partition)| (position, (partition.clone(), BytesMut::from(&batch[..]))))
        .unzip();
    let pending = replication
        .submit_appends(appends, AppendKind::BrokerWritten, Durability::Durable)
        .await;
    let committed = join_all(
        pending
            .into_iter()
            .map(|append| within(config.commit_timeout, append)),
    );
    let (offsets_written, committed) = futures::future::join(offsets_written, committed).await;
    for (position, written) in offsets_positions.into_iter().zip(offsets_written) {
        outcomes[position] = Some(written.unwrap_or(Err(MarkerRefusal::TimedOut)));
    }
    for (position, result) in positions.into_iter().zip(committed) {
        let partition = &partitions[position];
        outcomes[position] = Some(match result {
            Some(Ok(_)) => Ok(()),
            Some(Err(LogError::NotLeader { leader: None })) => Err(MarkerRefusal::NotLeader {
                leader_hint: state
                    .leaders
                    .leader(partition)
                    .map(|(leader, _)| leader)
                    .filter(|leader| *leader != replication.node_id()),
            }),
            Some(Err(error)) => Err(MarkerRefusal::of(&error)),
            None => Err(MarkerRefusal::TimedOut),
        });
    }
    outcomes
        .into_iter()
        .map(|outcome| outcome.expect("every partition has its outcome"))
        .collect()
}

impl ShardCluster {
    /// Writes a transaction's `marker` to each of `partitions` at its leader (see the module
    /// documentation); one outcome per partition, in order, each once its marker is committed
    /// or refused.
    pub async fn write_markers(
        &self,
        marker: TransactionMarker,
        partitions: Vec<PartitionId>,
    ) -> Vec<MarkerOutcome> {
        let image = self.state.image();
        let mut outcomes: Vec<Option<MarkerOutcome>> = Vec::with_capacity(partitions.len());
        let mut by_leader: BTreeMap<NodeId, Vec<usize>> = BTreeMap::new();
        for (position, partition) in partitions.iter().enumerate() {
            let known = image
                .topic(&partition.topic)
                .and_then(|topic| topic.replicas(partition.partition))
                .is_some();
            outcomes.push(if !known {
                Some(Err(MarkerRefusal::UnknownPartition))
            } else if let Some((leader, _)) = self.state.leaders.leader(partition) {
                by_leader.entry(leader).or_default().push(position);
                None
            } else {
                Some(Err(MarkerRefusal::NotLeader { leader_hint: None }))
            });
        }
        let answers = join_all(by_leader.into_iter().map(|(leader, positions)| {
            let asked: Vec<PartitionId> = positions
                .iter()
                .map(|position| partitions[*position].clone())
                .collect();
            async move {
                (
                    positions,
                    self.write_markers_at(leader, marker, asked).await,
                )
            }
        }))
        .await;
        for (positions, answered) in answers {
            for (position, outcome) in positions.into_iter().zip(answered) {
                outcomes[position] = Some(outcome);
            }
        }
        outcomes
            .into_iter()
            .map(|outcome| outcome.expect("every partition has its outcome"))
            .collect()
    }

    /// Writes `marker` to `partitions` through this broker's replicas of them (refused where
    /// it does not lead); one outcome per partition, in order.
    pub async fn write_markers_here(
        &self,
        marker: TransactionMarker,
        partitions: Vec<PartitionId>,
    ) -> Vec<MarkerOutcome> {
        write_led_here(&self.calls, &self.replication, marker, partitions).await
    }

    /// From now on, markers for the `__consumer_offsets` partitions this broker leads, asked
    /// of this shard (by a peer or by [`ShardCluster::write_markers`] here), go to `writer`.
    pub fn set_offsets_marker_writer(&self, writer: OffsetsMarkerWriter) {
        *self.calls.offsets_writer.borrow_mut() = Some(writer);
    }

    /// Asks broker `leader` to write `marker` to `partitions` (split into requests of at most
    /// [`MarkerConfig::partitions_per_request_max`]); one outcome per partition, in order, as
    /// that broker answers it (NotLeader where it does not lead).
    pub async fn write_markers_at(
        &self,
        leader: NodeId,
        marker: TransactionMarker,
        partitions: Vec<PartitionId>,
    ) -> Vec<MarkerOutcome> {
        if leader == self.state.settings.node_id {
            return self.write_markers_here(marker, partitions).await;
        }
        let chunk = self.calls.markers.partitions_per_request_max;
        let requests = partitions
            .chunks(chunk)
            .map(|partitions| request_markers(&self.calls, leader, marker, partitions.to_vec()));
        join_all(requests).await.into_iter().flatten().collect()
    }
}
