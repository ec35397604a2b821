//! Partition messages for each peer broker, gathered during one turn of the shard's executor
//! and sent as one frame ([`Coalescer`]), and each replica's [`Outbox`] into it.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use bytes::{Bytes, BytesMut};

use super::wire::{BrokerWire, PartitionMessage};
use crate::message::{Message, NodeId};
use crate::replica::{Outbox, ReplicaEvent};
use crate::stats::{MessageKind, ReplicationStats};
use crate::transport::Transport;

/// Partition messages for each peer broker, gathered during one turn of the shard's executor
/// and sent as one frame when the turn ends, each topic named once in it: the fetches, answers
/// and announcements that a tick (or a fetch round) of many partitions produces travel to each
/// broker together, as Kafka's replica fetcher sends one Fetch per broker pair and Redpanda
/// coalesces heartbeats per node. A frame is sent early once its batches reach
/// [`COALESCED_PAYLOAD_BYTES_MAX`].
pub struct Coalescer {
    transport: Rc<Transport<BrokerWire>>,
    /// The shard's replication counts ([`super::ShardReplication::replication_stats`]).
    pub(super) counts: Rc<RefCell<ReplicationStats>>,
    pending: RefCell<BTreeMap<NodeId, PendingFrame>>,
    /// Messages in the last frame sent (the capacity the next one starts with).
    messages_last: Cell<usize>,
    flush_scheduled: Cell<bool>,
    pub(super) stats: Cell<CoalescerStats>,
}

/// One peer's frame being gathered.
#[derive(Default)]
struct PendingFrame {
    topics: Vec<String>,
    topic_positions: HashMap<Rc<str>, u32>,
    /// The topic of the last message and its position (a round's messages for one topic
    /// mostly come one after another).
    last_topic: Option<(Rc<str>, u32)>,
    messages: Vec<PartitionMessage>,
    batches: BytesMut,
    /// Per (topic position, partition), where in `messages` its last message sits, if that is
    /// a `Durable` report: a newer report replaces it rather than follow it.
    last_durable: HashMap<(u32, u32), usize>,
}

impl PendingFrame {
    /// The position of `topic` in the frame's topic list, added if new.
    fn topic_position(&mut self, topic: &Rc<str>) -> u32 {
        if let Some((last, position)) = &self.last_topic {
            if Rc::ptr_eq(last, topic) {
                return *position;
            }
        }
        let position = match self.topic_positions.get(&**topic) {
            Some(position) => *position,
            None => {
                let position = u32::try_from(self.topics.len()).unwrap_or(u32::MAX);
                self.topics.push(topic.to_string());
                self.topic_positions.insert(topic.clone(), position);
                position
            }
        };
        self.last_topic = Some((topic.clone(), position));
        position
    }
}

/// Bytes of batches one coalesced frame carries before it is sent without waiting for the
/// turn's end (well below the transport's frame limit).
const COALESCED_PAYLOAD_BYTES_MAX: usize = 8 << 20;

/// What coalescing saved: partition messages queued, frames sent for them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoalescerStats {
    pub messages: u64,
    pub frames: u64,
}

impl Coalescer {
    pub(super) fn new(
        transport: Rc<Transport<BrokerWire>>,
        counts: Rc<RefCell<ReplicationStats>>,
    ) -> Rc<Coalescer> {
        Rc::new(Coalescer {
            transport,
            counts,
            pending: RefCell::new(BTreeMap::new()),
            messages_last: Cell::new(0),
            flush_scheduled: Cell::new(false),
            stats: Cell::new(CoalescerStats::default()),
        })
    }

    fn queue(
        self: &Rc<Self>,
        to: NodeId,
        topic: &Rc<str>,
        partition: u32,
        message: Message,
        payload: Bytes,
    ) {
        let mut stats = self.stats.get();
        stats.messages += 1;
        self.stats.set(stats);
        {
            let mut counts = self.counts.borrow_mut();
            counts.sent[message_kind(&message, &payload) as usize] += 1;
            counts.batches_sent += batch_count(&payload);
        }
        let full = {
            let mut pending = self.pending.borrow_mut();
            let frame = pending.entry(to).or_insert_with(|| PendingFrame {
                // As many as the last frame to this peer held: no regrowth per round.
                messages: Vec::with_capacity(self.messages_last.get().min(1 << 14)),
                ..PendingFrame::default()
            });
            let topic = frame.topic_position(topic);
            let key = (topic, partition);
            let is_durable = matches!(message, Message::Durable { .. });
            // A follower's storage completes a whole journal write's batches at once and
            // reports each: a later report in the same frame says all the earlier one did
            // (reports are answered by nothing), so the leader steps one, not dozens.
            let replaces = is_durable
                .then(|| frame.last_durable.get(&key).copied())
                .flatten();
            if let Some(position) = replaces {
                frame.messages[position].message = message;
            } else {
                if is_durable {
                    frame.last_durable.insert(key, frame.messages.len());
                } else {
                    frame.last_durable.remove(&key);
                }
                frame.messages.push(PartitionMessage {
                    topic,
                    partition,
                    message,
                    payload_bytes: u32::try_from(payload.len()).unwrap_or(u32::MAX),
                });
                frame.batches.extend_from_slice(&payload);
            }
            frame.batches.len() >= COALESCED_PAYLOAD_BYTES_MAX
        };
        if full {
            self.send(to);
        } else if !self.flush_scheduled.replace(true) {
            let coalescer = self.clone();
            glommio::spawn_local(async move {
                // glommio runs a spawned task at once up to its first await: step aside so the
                // rest of this turn's messages join the frame.
                YieldOnce::default().await;
                coalescer.flush_scheduled.set(false);
                let peers: Vec<NodeId> = coalescer.pending.borrow().keys().copied().collect();
                for peer in peers {
                    coalescer.send(peer);
                }
            })
            .detach();
        }
    }

    fn send(&self, to: NodeId) {
        let Some(frame) = self.pending.borrow_mut().remove(&to) else {
            return;
        };
        let mut stats = self.stats.get();
        stats.frames += 1;
        self.stats.set(stats);
        self.counts.borrow_mut().frames_sent += 1;
        self.messages_last.set(frame.messages.len());
        let wire = BrokerWire::Partitions {
            topics: frame.topics,
            messages: frame.messages,
        };
        // A full queue or a closed transport loses the messages, as the network may.
        let _ = self.transport.send(to, &wire, frame.batches.freeze());
    }
}

/// What kind of message `message` is, for the metrics.
pub(super) fn message_kind(message: &Message, payload: &Bytes) -> MessageKind {
    match message {
        Message::Fetch { .. } => MessageKind::Fetch,
        Message::FetchResponse { .. } if !payload.is_empty() => MessageKind::FetchEntries,
        Message::FetchResponse { .. } => MessageKind::FetchAnswer,
        Message::Durable { .. } => MessageKind::Durable,
        Message::PreVote { .. } => MessageKind::PreVote,
        Message::PreVoteResponse { granted: true, .. } => MessageKind::PreVoteGranted,
        Message::PreVoteResponse { granted: false, .. } => MessageKind::PreVoteRefused,
        Message::RequestVote { .. } => MessageKind::Vote,
        Message::RequestVoteResponse { granted: true, .. } => MessageKind::VoteGranted,
        Message::RequestVoteResponse { granted: false, .. } => MessageKind::VoteRefused,
        Message::BeginEpoch { .. } => MessageKind::BeginEpoch,
        Message::TimeoutNow { .. } => MessageKind::TimeoutNow,
    }
}

/// How many whole record batches `payload` holds (each: base offset, then its length).
pub(super) fn batch_count(payload: &[u8]) -> u64 {
    const LENGTH_END: usize = 12; // base offset (8 bytes), batch length (4)
    let mut count = 0;
    let mut rest = payload;
    while let Some(length) = rest.get(8..LENGTH_END) {
        let length = i32::from_be_bytes([length[0], length[1], length[2], length[3]]);
        let Some(next) = usize::try_from(length)
            .ok()
            .and_then(|length| rest.get(LENGTH_END + length..))
        else {
            break;
        };
        count += 1;
        rest = next;
    }
    count
}

/// Pending once (waking itself), then ready: lets the tasks already scheduled run first.
#[derive(Default)]
struct YieldOnce {
    yielded: bool,
}

impl std::future::Future for YieldOnce {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.yielded {
            return std::task::Poll::Ready(());
        }
        self.yielded = true;
        context.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

pub(super) struct PartitionOutbox {
    pub(super) coalescer: Rc<Coalescer>,
    pub(super) topic: Rc<str>,
    pub(super) partition: u32,
}

impl Outbox for PartitionOutbox {
    fn send(&self, to: NodeId, message: Message, payload: Bytes) {
        self.coalescer
            .queue(to, &self.topic, self.partition, message, payload);
    }

    fn note(&self, event: ReplicaEvent) {
        let mut counts = self.coalescer.counts.borrow_mut();
        match event {
            ReplicaEvent::FetchHeld => counts.fetches_held += 1,
            ReplicaEvent::FetchFloorWait => counts.fetch_floor_waits += 1,
            ReplicaEvent::Stage(stage, elapsed) => counts.observe(stage, elapsed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::FetchResult;
    use crate::transport::{Received, TransportConfig};
    use engine::shard::listen::ListenReservation;
    use std::net::SocketAddr;

    fn fetch_response(commit_index: u64) -> Message {
        Message::FetchResponse {
            term: 1,
            leader: 1,
            commit_index,
            fetch_index: 1,
            last_fetched_term: 0,
            result: FetchResult::Entries {
                entries: Vec::new(),
            },
        }
    }

    /// A coalesced frame as the receiver got it: its topics, messages and their batches.
    type ReceivedFrame = (Vec<String>, Vec<PartitionMessage>, Bytes);

    /// Node 1's transport sending to node 2's, which keeps the partition frames it receives.
    #[allow(clippy::type_complexity)]
    fn node_1_to_node_2() -> (
        Rc<Transport<BrokerWire>>,
        Transport<BrokerWire>,
        Rc<RefCell<Vec<ReceivedFrame>>>,
        Vec<ListenReservation>,
    ) {
        let reservations: Vec<ListenReservation> = (0..2)
            .map(|_| ListenReservation::new("127.0.0.1:0".parse().unwrap()).unwrap())
            .collect();
        let peers: BTreeMap<NodeId, SocketAddr> = [
            (1, reservations[0].address()),
            (2, reservations[1].address()),
        ]
        .into_iter()
        .collect();
        let received: Rc<RefCell<Vec<ReceivedFrame>>> = Default::default();
        let receiver = Transport::<BrokerWire>::start(
            TransportConfig::new("test", 2, 0, peers[&2], peers.clone()),
            {
                let received = received.clone();
                move |frame: Received<BrokerWire>| {
                    if let BrokerWire::Partitions { topics, messages } = frame.message {
                        received
                            .borrow_mut()
                            .push((topics, messages, frame.payload));
                    }
                }
            },
        )
        .unwrap();
        let sender = Rc::new(
            Transport::<BrokerWire>::start(
                TransportConfig::new("test", 1, 0, peers[&1], peers.clone()),
                |_| {},
            )
            .unwrap(),
        );
        (sender, receiver, received, reservations)
    }

    /// Waits (20 s at most) until node 2 received a frame.
    async fn first_frame(received: &RefCell<Vec<ReceivedFrame>>) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while received.borrow().is_empty() {
            assert!(std::time::Instant::now() < deadline, "nothing arrived");
            glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    fn durable(durable_index: u64) -> Message {
        Message::Durable {
            term: 1,
            fetch_index: 10,
            last_fetched_term: 1,
            durable_index,
        }
    }

    #[test]
    fn a_turns_durable_reports_of_one_partition_travel_as_the_latest_one() {
        glommio::LocalExecutor::default().run(async {
            let (sender, receiver, received, _reservations) = node_1_to_node_2();
            let counts: Rc<RefCell<ReplicationStats>> = Rc::default();
            let coalescer = Coalescer::new(sender.clone(), counts.clone());
            let t: Rc<str> = Rc::from("t");
            // One journal sync made 40 batches of partition 0 durable, each reported; partition
            // 1 reported once, then fetched, then reported again (kept in that order).
            for index in 1..=40 {
                coalescer.queue(2, &t, 0, durable(index), Bytes::new());
            }
            coalescer.queue(2, &t, 1, durable(5), Bytes::new());
            let fetch = Message::Fetch {
                term: 1,
                fetch_index: 10,
                last_fetched_term: 1,
                durable_index: 5,
            };
            coalescer.queue(2, &t, 1, fetch.clone(), Bytes::new());
            coalescer.queue(2, &t, 1, durable(6), Bytes::new());
            coalescer.queue(2, &t, 1, durable(7), Bytes::new());
            first_frame(&received).await;
            let (_, messages, _) = received.borrow_mut().remove(0);
            let sent: Vec<(u32, Message)> = messages
                .into_iter()
                .map(|message| (message.partition, message.message))
                .collect();
            assert_eq!(
                sent,
                [
                    (0, durable(40)),
                    (1, durable(5)),
                    (1, fetch),
                    (1, durable(7)),
                ]
            );
            // Every report the replicas made is counted, one frame carried them.
            let (durable_sent, frames_sent) = {
                let counts = counts.borrow();
                (
                    counts.sent[MessageKind::Durable as usize],
                    counts.frames_sent,
                )
            };
            assert_eq!(durable_sent, 43);
            assert_eq!(frames_sent, 1);
            sender.close().await;
            receiver.close().await;
        });
    }

    #[test]
    fn one_turns_messages_to_a_peer_travel_in_one_frame_with_their_batches() {
        glommio::LocalExecutor::default().run(async {
            let (sender, receiver, received, _reservations) = node_1_to_node_2();
            let coalescer = Coalescer::new(sender.clone(), Rc::default());
            let (t, u): (Rc<str>, Rc<str>) = (Rc::from("t"), Rc::from("u"));
            for (topic, partition, batches) in [
                (&t, 0u32, &b"abc"[..]),
                (&u, 1, &b""[..]),
                (&t, 2, &b"defgh"[..]),
            ] {
                let message = fetch_response(u64::from(partition));
                coalescer.queue(2, topic, partition, message, Bytes::from_static(batches));
            }
            first_frame(&received).await;
            let (topics, messages, payload) = received.borrow_mut().remove(0);
            assert_eq!(topics, ["t", "u"], "each topic named once");
            let named: Vec<(u32, u32, u32)> = messages
                .iter()
                .map(|message| (message.topic, message.partition, message.payload_bytes))
                .collect();
            assert_eq!(named, [(0, 0, 3), (1, 1, 0), (0, 2, 5)]);
            assert_eq!(&payload[..], b"abcdefgh");
            assert_eq!(
                coalescer.stats.get(),
                CoalescerStats {
                    messages: 3,
                    frames: 1
                }
            );
            sender.close().await;
            receiver.close().await;
        });
    }
}
