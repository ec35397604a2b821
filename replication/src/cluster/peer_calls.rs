//! Calls one broker's shard makes of another broker, and their answers, over the inter-broker
//! transport: a transaction's markers for the partitions a broker leads (`markers`, Kafka's
//! WriteTxnMarkers) and the verification of a transactional produce with the transaction
//! coordinator (`verification`, Kafka's AddPartitionsToTxn with `verify_only`). What serves
//! and what asks each kind is theirs; this room carries them, with the same rules for both.
//!
//! The pattern is the controller's forwarding (`controller/forward.rs`): a fresh request id per
//! request, a pending answer slot per id, a timeout after which the slot is dropped and a late
//! answer finds nothing. Each shard has its own transport, so an answer may arrive on another
//! shard of the requesting broker than the one waiting: the request names its shard and the
//! answer is posted there. Bounds: requests in flight per peer and kind of call (waited for
//! within the request timeout), requests served at once (beyond it a request is answered
//! [`PeerAnswer::Busy`] at once, so its sender retries without waiting out its timeout).
//!
//! Refusals are typed, the same on the wire (`MarkerRefusal`, `VerificationRefusal`); `net`
//! turns them into Kafka error codes in its one table.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use futures::channel::oneshot;
use futures::future::{select, Either};
use glommio::sync::Semaphore;

use super::markers::{serve_markers, MarkerConfig, OffsetsMarkerWriter, WireMarker, WireOutcome};
use super::verification::{
    serve_verifications, TransactionVerification, TransactionVerifier, VerificationConfig,
    VerificationQueues, WireVerified,
};
use super::ClusterState;
use crate::controller::within;
use crate::message::NodeId;
use crate::shard::ShardReplication;

/// What one broker asks another.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum PeerCall {
    /// Write `marker` to these partitions, which the sender believes the receiver leads.
    Markers {
        marker: WireMarker,
        partitions: Vec<(String, u32)>,
    },
    /// Whether these transactions hold these partitions, at the coordinators the sender
    /// believes the receiver runs.
    Verify(Vec<TransactionVerification>),
}

/// The answer to a [`PeerCall`], of the same kind, one outcome per partition (per transaction
/// and partition, for `Verify`) in the call's order.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum PeerAnswer {
    Markers(Vec<WireOutcome>),
    Verify(Vec<Vec<WireVerified>>),
    /// The receiver serves as many calls as it may: not attempted, ask again.
    Busy,
}

/// What brokers' shards say to each other about calls.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum PeerWire {
    /// Answered with a [`PeerWire::Response`] of the same id for the sender's shard
    /// `reply_shard`.
    Request {
        request_id: u64,
        reply_shard: u32,
        call: PeerCall,
    },
    Response {
        request_id: u64,
        reply_shard: u32,
        answer: PeerAnswer,
    },
}

/// A kind of call, for its own bound of requests in flight per peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum CallKind {
    Markers,
    Verify,
}

impl PeerCall {
    fn kind(&self) -> CallKind {
        match self {
            PeerCall::Markers { .. } => CallKind::Markers,
            PeerCall::Verify(_) => CallKind::Verify,
        }
    }
}

/// One shard's calls to and from peers: its pending requests, what it serves, and what the
/// kinds of call need to serve and to ask (see the module documentation). The shard's
/// [`ShardReplication`] hands it what peers send.
pub(crate) struct PeerCalls {
    pub(super) markers: MarkerConfig,
    pub(super) verification: VerificationConfig,
    pub(super) state: Arc<ClusterState>,
    pub(super) replication: Weak<ShardReplication>,
    /// This shard, as answers name it.
    shard: u32,
    request_id_next: Cell<u64>,
    /// Requests sent and not yet answered, by id.
    pending: RefCell<HashMap<u64, oneshot::Sender<PeerAnswer>>>,
    /// Places for requests in flight, per peer and kind.
    places: RefCell<BTreeMap<(NodeId, CallKind), Rc<Semaphore>>>,
    served_in_flight: Cell<usize>,
    /// Where markers for `__consumer_offsets` partitions go, once `net` said.
    pub(super) offsets_writer: RefCell<Option<OffsetsMarkerWriter>>,
    /// What answers verifications for the coordinators this broker runs, once `net` said.
    pub(super) verifier: RefCell<Option<TransactionVerifier>>,
    /// Verifications waiting to be sent, per coordinator's broker.
    pub(super) verifications: VerificationQueues,
}

impl PeerCalls {
    pub(super) fn new(
        markers: MarkerConfig,
        verification: VerificationConfig,
        state: Arc<ClusterState>,
        replication: &Rc<ShardReplication>,
        shard: u32,
    ) -> Rc<PeerCalls> {
        assert!(
            markers.commit_timeout < markers.request_timeout,
            "a leader answers before its requester stops waiting"
        );
        assert!(
            markers.requests_in_flight_per_peer_max > 0
                && markers.partitions_per_request_max > 0
                && markers.served_requests_max > 0,
            "call bounds allow some traffic"
        );
        assert!(
            verification.waiting_per_peer_max > 0 && verification.transactions_per_request_max > 0,
            "verification bounds allow some traffic"
        );
        Rc::new(PeerCalls {
            markers,
            verification,
            state,
            replication: Rc::downgrade(replication),
            shard,
            request_id_next: Cell::new(0),
            pending: RefCell::new(HashMap::new()),
            places: RefCell::new(BTreeMap::new()),
            served_in_flight: Cell::new(0),
            offsets_writer: RefCell::new(None),
            verifier: RefCell::new(None),
            verifications: VerificationQueues::default(),
        })
    }

    /// A peer's call message, on the shard whose connection carried it: a request is served
    /// here, an answer completes its request on the shard that sent it.
    pub(crate) fn receive(self: &Rc<Self>, from: NodeId, wire: PeerWire) {
        match wire {
            PeerWire::Request {
                request_id,
                reply_shard,
                call,
            } => self.serve(from, request_id, reply_shard, call),
            PeerWire::Response {
                request_id,
                reply_shard,
                answer,
            } => {
                if reply_shard == self.shard {
                    self.complete(request_id, answer);
                    return;
                }
                let Some(replication) = self.replication.upgrade() else {
                    return;
                };
                let context = replication.context();
                if reply_shard as usize >= context.shard_count() {
                    return; // a peer's garbage, dropped like a loss
                }
                context.post(reply_shard as usize, move |_| {
                    if let Some(calls) = ShardReplication::on_this_shard()
                        .and_then(|replication| replication.peer_calls())
                    {
                        calls.complete(request_id, answer);
                    }
                });
            }
        }
    }

    /// An answer to one of this shard's requests; dropped if nobody waits any more.
    fn complete(&self, request_id: u64, answer: PeerAnswer) {
        if let Some(waiting) = self.pending.borrow_mut().remove(&request_id) {
            let _ = waiting.send(answer);
        }
    }

    /// Serves peer `from`'s `call` and answers it; beyond
    /// [`MarkerConfig::served_requests_max`] at once, answers [`PeerAnswer::Busy`] at once.
    fn serve(self: &Rc<Self>, from: NodeId, request_id: u64, reply_shard: u32, call: PeerCall) {
        let Some(replication) = self.replication.upgrade() else {
            return;
        };
        let answer_with = move |replication: &ShardReplication, answer| {
            let response = PeerWire::Response {
                request_id,
                reply_shard,
                answer,
            };
            replication.send_calls(from, response);
        };
        if self.served_in_flight.get() >= self.markers.served_requests_max {
            answer_with(&replication, PeerAnswer::Busy);
            return;
        }
        self.served_in_flight.set(self.served_in_flight.get() + 1);
        let calls = self.clone();
        glommio::spawn_local(async move {
            let answer = match call {
                PeerCall::Markers { marker, partitions } => PeerAnswer::Markers(
                    serve_markers(&calls, &replication, marker, partitions).await,
                ),
                PeerCall::Verify(transactions) => {
                    PeerAnswer::Verify(serve_verifications(&calls, transactions).await)
                }
            };
            calls.served_in_flight.set(calls.served_in_flight.get() - 1);
            answer_with(&replication, answer);
        })
        .detach();
    }

    /// Sends `call` to `peer` once a place among the requests of its kind in flight to it is
    /// free, and waits for the answer; `None` if none came within the request timeout, or the
    /// run of `peer` that was live when it was asked is gone (fenced by the controller, or
    /// registered again after a restart: its requests died with it, as Kafka's channels fail
    /// their requests when the connection drops; a transaction's markers sent to a partition
    /// leader killed just then once held its transactional id in PrepareCommit for the whole
    /// 30 s), or this shard's replication stopped.
    pub(super) async fn request(&self, peer: NodeId, call: PeerCall) -> Option<PeerAnswer> {
        let replication = self.replication.upgrade()?;
        let live_run = self
            .state
            .image()
            .broker(peer)
            .filter(|broker| !broker.fenced)
            .map(|broker| broker.registration.incarnation);
        let peer_gone = async {
            let Some(incarnation) = live_run else {
                return std::future::pending().await;
            };
            while self.state.image().is_live_run(peer, incarnation) {
                glommio::timer::sleep(PEER_LIVENESS_CHECK_INTERVAL).await;
            }
        };
        let kind = call.kind();
        let places_max = match kind {
            CallKind::Markers => self.markers.requests_in_flight_per_peer_max,
            // One at a time; the others wait together for the next (see `verification`).
            CallKind::Verify => 1,
        };
        let places = self
            .places
            .borrow_mut()
            .entry((peer, kind))
            .or_insert_with(|| Rc::new(Semaphore::new(places_max as u64)))
            .clone();
        let asked = async {
            // The semaphore is never closed.
            let _place = places.acquire_permit(1).await.ok()?;
            let request_id = self.request_id_next.get();
            self.request_id_next.set(request_id.wrapping_add(1));
            let (answer, answered) = oneshot::channel();
            self.pending.borrow_mut().insert(request_id, answer);
            let request = PeerWire::Request {
                request_id,
                reply_shard: self.shard,
                call,
            };
            replication.send_calls(peer, request);
            let pending = PendingRequest {
                calls: self,
                request_id,
            };
            let answer = answered.await.ok();
            drop(pending);
            answer
        };
        let answered_or_gone = async {
            match select(std::pin::pin!(asked), std::pin::pin!(peer_gone)).await {
                Either::Left((answer, _)) => answer,
                Either::Right(((), _)) => None,
            }
        };
        within(self.markers.request_timeout, answered_or_gone)
            .await
            .flatten()
    }
}

/// How often a request's wait looks whether its peer's run is still live.
const PEER_LIVENESS_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// A request's pending slot, removed however the wait for its answer ends (answered, or
/// dropped at the timeout): a late answer then finds nothing.
struct PendingRequest<'a> {
    calls: &'a PeerCalls,
    request_id: u64,
}

impl Drop for PendingRequest<'_> {
    fn drop(&mut self) {
        self.calls.pending.borrow_mut().remove(&self.request_id);
    }
}
