//! The inter-broker transport on loopback, with real glommio executors: messages with payloads
//! both ways between two brokers, reconnection to a peer that starts late and restarts, bad
//! input refused per connection, and several shards on one address; and the handshake: an
//! impostor without the cluster secret (none, a wrong one, a replayed proof) refused before its
//! message is handled, a broker of a wrong secret or another cluster never connecting while a
//! fresh one with the secret does, a claimed node id from another address refused. Every wait
//! is for a condition, with a deadline.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use engine::shard::listen::ListenReservation;
use futures::future::{select, Either};
use futures::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::LocalExecutorBuilder;

use ferrite_replication::transport::frame::{self, FrameKind};
use ferrite_replication::transport::handshake::{self, Challenge, Hello, Proof, PROTOCOL_VERSION};
use ferrite_replication::transport::peer_auth::{
    ClusterIdentity, ClusterSecret, Role, Transcript, NONCE_BYTES,
};
use ferrite_replication::transport::{Received, Transport, TransportConfig};

const CLUSTER: &str = "test-cluster";
const DEADLINE: Duration = Duration::from_secs(20);

/// The structured part of a test message.
#[derive(Debug, Clone, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Note {
    sequence: u64,
    text: String,
    tags: Vec<u32>,
}

fn note(sequence: u64) -> Note {
    Note {
        sequence,
        text: format!("note {sequence}"),
        tags: (0..sequence % 5).map(|tag| tag as u32).collect(),
    }
}

/// A payload of a length and content that depend on the sequence number (empty for some).
fn payload(sequence: u64) -> Bytes {
    let length = (sequence * 7919 % 5000) as usize;
    Bytes::from(
        (0..length)
            .map(|position| (sequence as usize + position) as u8)
            .collect::<Vec<u8>>(),
    )
}

/// A listen address held until the transports bind it (port 0 resolved), as the broker does.
fn reserve() -> ListenReservation {
    ListenReservation::new("127.0.0.1:0".parse().unwrap()).unwrap()
}

fn config(node_id: u64, shard: u32, peers: &BTreeMap<u64, SocketAddr>) -> TransportConfig {
    let mut config = TransportConfig::new(CLUSTER, node_id, shard, peers[&node_id], peers.clone());
    config.frame_bytes_max = 1 << 20;
    config.queue_bytes_max = 16 << 20;
    config.backoff_max = Duration::from_millis(200);
    config
}

/// Collects what a transport receives.
type Inbox = Rc<RefCell<Vec<Received<Note>>>>;

fn start(config: TransportConfig) -> (Transport<Note>, Inbox) {
    let inbox: Inbox = Rc::default();
    let sink = inbox.clone();
    let transport = Transport::start(config, move |received| sink.borrow_mut().push(received))
        .expect("the transport starts");
    (transport, inbox)
}

fn run<T: Send + 'static, F: Future<Output = T> + 'static>(
    name: &str,
    task: impl FnOnce() -> F + Send + 'static,
) -> glommio::ExecutorJoinHandle<T> {
    LocalExecutorBuilder::default()
        .name(name)
        .io_memory(1 << 20)
        .spawn(task)
        .expect("a glommio executor starts")
}

/// Waits until `condition` holds, checking every millisecond; panics naming `what` after
/// [`DEADLINE`].
async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < DEADLINE, "timed out waiting for {what}");
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
}

/// Sends a new note from `from` to `to` every 5 ms until `condition` holds (a peer that just
/// came back may lose the first notes sent on a connection it has closed); returns the next
/// sequence number.
async fn send_until(
    from: &Transport<Note>,
    to: u64,
    mut sequence: u64,
    what: &str,
    mut condition: impl FnMut() -> bool,
) -> u64 {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < DEADLINE, "timed out waiting for {what}");
        from.send(to, &note(sequence), payload(sequence)).unwrap();
        sequence += 1;
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    sequence
}

fn check_intact_and_in_order(inbox: &[Received<Note>], from_node: u64, count: u64) {
    assert_eq!(inbox.len() as u64, count);
    for (sequence, received) in inbox.iter().enumerate() {
        let sequence = sequence as u64;
        assert_eq!(received.from_node, from_node);
        assert_eq!(received.from_shard, 0);
        assert_eq!(received.message, note(sequence), "message {sequence}");
        assert_eq!(received.payload, payload(sequence), "payload {sequence}");
    }
}

#[test]
fn two_brokers_exchange_thousands_of_messages_intact_and_in_order() {
    const MESSAGES: u64 = 5000;
    const SENT_PER_WAIT: u64 = 250;
    let reservations = [reserve(), reserve()];
    let peers: BTreeMap<u64, SocketAddr> = BTreeMap::from([
        (1, reservations[0].address()),
        (2, reservations[1].address()),
    ]);
    let started = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let brokers: Vec<_> = [(1u64, 2u64), (2, 1)]
        .into_iter()
        .map(|(node, peer)| {
            let (peers, started, finished) = (peers.clone(), started.clone(), finished.clone());
            run(&format!("broker-{node}"), move || async move {
                let (transport, inbox) = start(config(node, 0, &peers));
                started.fetch_add(1, Ordering::SeqCst);
                wait_for("both brokers to listen", || {
                    started.load(Ordering::SeqCst) == 2
                })
                .await;
                for sequence in 0..MESSAGES {
                    transport
                        .send(peer, &note(sequence), payload(sequence))
                        .unwrap();
                    // The queue holds thousands; pace the sender so none is dropped.
                    if (sequence + 1) % SENT_PER_WAIT == 0 {
                        wait_for("the queued messages to be written", || {
                            transport.stats().messages_sent == sequence + 1
                        })
                        .await;
                    }
                }
                wait_for("every message from the peer", || {
                    inbox.borrow().len() as u64 >= MESSAGES
                })
                .await;
                check_intact_and_in_order(&inbox.borrow(), peer, MESSAGES);
                let stats = transport.stats();
                assert_eq!(stats.messages_dropped, 0);
                assert_eq!(stats.connections_opened, 1);
                assert_eq!(stats.messages_received, MESSAGES);
                finished.fetch_add(1, Ordering::SeqCst);
                // Closing before the peer has everything would cut its last messages off.
                wait_for("the peer to finish", || {
                    finished.load(Ordering::SeqCst) == 2
                })
                .await;
                transport.close().await;
            })
        })
        .collect();
    for broker in brokers {
        broker.join().expect("the broker's checks pass");
    }
}

#[test]
fn a_peer_that_starts_late_and_restarts_gets_messages_after_each_start() {
    let reservations = [reserve(), reserve()];
    let peers: BTreeMap<u64, SocketAddr> = BTreeMap::from([
        (1, reservations[0].address()),
        (2, reservations[1].address()),
    ]);
    run("late-peer", move || async move {
        let (sender, _) = start(config(1, 0, &peers));
        // Node 2 is down: its address is reserved, nothing listens.
        let mut sequence = send_until(&sender, 2, 0, "failed connection attempts", || {
            sender.stats().connect_failures >= 3
        })
        .await;
        for incarnation in 0..2 {
            let (receiver, inbox) = start(config(2, 0, &peers));
            let first_after_start = sequence;
            sequence = send_until(&sender, 2, sequence, "a message after the start", || {
                inbox
                    .borrow()
                    .iter()
                    .any(|received| received.message.sequence >= first_after_start)
            })
            .await;
            receiver.close().await;
            let inbox = inbox.borrow();
            let sequences: Vec<u64> = inbox.iter().map(|r| r.message.sequence).collect();
            assert!(
                sequences.windows(2).all(|pair| pair[0] < pair[1]),
                "incarnation {incarnation}: out of order: {sequences:?}"
            );
            for received in inbox.iter() {
                assert_eq!(received.payload, payload(received.message.sequence));
            }
        }
        let stats = sender.stats();
        assert!(stats.connections_opened >= 2, "{stats:?}");
        sender.close().await;
    })
    .join()
    .unwrap();
}

/// Opens a raw connection, writes `bytes` (then ends its side if `end_writes`), and waits
/// until the transport closes the connection.
async fn refused(to: SocketAddr, bytes: &[u8], end_writes: bool) {
    let mut stream = TcpStream::connect(to).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    if end_writes {
        stream.shutdown(std::net::Shutdown::Write).await.unwrap();
    }
    wait_closed(&mut stream).await;
}

/// Reads `stream` until the transport closes it (EOF, or a reset if it closed with our bytes
/// unread); what it wrote before (a challenge) is dropped. Returns the bytes read.
async fn wait_closed(stream: &mut TcpStream) -> usize {
    let mut total = 0;
    let mut buffer = [0u8; 4096];
    let started = Instant::now();
    loop {
        let read = std::pin::pin!(stream.read(&mut buffer));
        let deadline = std::pin::pin!(glommio::timer::sleep(DEADLINE));
        match select(read, deadline).await {
            Either::Left((Ok(0) | Err(_), _)) => return total,
            Either::Left((Ok(read), _)) => total += read,
            Either::Right(_) => panic!("the connection was not closed"),
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the connection was not closed"
        );
    }
}

/// Reads one frame (a challenge) off `stream`.
async fn read_frame(stream: &mut TcpStream) -> frame::Frame {
    let mut received = BytesMut::new();
    let mut buffer = [0u8; 4096];
    loop {
        if let Some(frame) = frame::take_frame(&mut received, 1 << 20).unwrap() {
            return frame;
        }
        let read = stream.read(&mut buffer).await.unwrap();
        assert!(read > 0, "closed before a whole frame");
        received.extend_from_slice(&buffer[..read]);
    }
}

fn wire(frame: frame::OutboundFrame) -> Vec<u8> {
    let mut wire = frame.head.to_vec();
    wire.extend_from_slice(&frame.payload);
    wire
}

/// A hello from node `node_id` of `cluster_id` speaking `version`.
fn hello_from(node_id: u64, cluster_id: &str, version: u32) -> Vec<u8> {
    let hello = Hello {
        cluster_id: cluster_id.to_string(),
        node_id,
        shard: 0,
        nonce: [9; NONCE_BYTES],
    };
    wire(handshake::encode_with_version(&hello, version, 1 << 20).unwrap())
}

/// A hello from node 1 of `cluster_id` speaking `version`.
fn hello(cluster_id: &str, version: u32) -> Vec<u8> {
    hello_from(1, cluster_id, version)
}

/// A proof frame carrying `proof` (empty: what a broker without a secret sends).
fn proof(proof: &[u8]) -> Vec<u8> {
    let proof = Proof {
        proof: proof.to_vec(),
    };
    wire(handshake::encode_frame(FrameKind::Proof, &proof, 1 << 20).unwrap())
}

/// A hello from node 1 and its proof, as a broker without a secret sends them.
fn handshake_without_secret() -> Vec<u8> {
    then(hello(CLUSTER, PROTOCOL_VERSION), &proof(&[]))
}

fn then(mut first: Vec<u8>, second: &[u8]) -> Vec<u8> {
    first.extend_from_slice(second);
    first
}

#[test]
fn bad_input_closes_only_its_own_connection() {
    let reservations = [reserve(), reserve()];
    let peers: BTreeMap<u64, SocketAddr> = BTreeMap::from([
        (1, reservations[0].address()),
        (2, reservations[1].address()),
    ]);
    run("bad-input", move || async move {
        let (sender, _) = start(config(1, 0, &peers));
        let mut receiver_config = config(2, 0, &peers);
        receiver_config.handshake_timeout = Duration::from_millis(100);
        let (receiver, inbox) = start(receiver_config);
        let receiver_address = receiver.local_address();
        let frame_bytes_max = config(2, 0, &peers).frame_bytes_max;
        let good = handshake_without_secret();
        let message =
            wire(frame::encode(FrameKind::Message, &note(1), payload(1), 1 << 20).unwrap());

        let mut over_limit = BytesMut::new();
        over_limit.put_u32(frame_bytes_max as u32 + 1);
        let mut header_too_long = BytesMut::new();
        header_too_long.put_u32(20);
        header_too_long.put_u8(FrameKind::Message as u8);
        header_too_long.put_u32(100);
        header_too_long.put_slice(&[0u8; 15]);
        let invalid_header = frame::encode_head(FrameKind::Message, &[0xff; 7], 0);
        let cases: Vec<(&str, Vec<u8>, bool)> = vec![
            (
                "a truncated frame",
                then(good.clone(), &message[..message.len() - 3]),
                true,
            ),
            ("a truncated hello", good[..good.len() - 1].to_vec(), true),
            (
                "a frame over the limit",
                then(good.clone(), &over_limit),
                false,
            ),
            (
                "a header longer than its frame",
                then(good.clone(), &header_too_long),
                false,
            ),
            (
                "a header that fails validation",
                then(good.clone(), &invalid_header),
                false,
            ),
            (
                "another cluster's hello",
                hello("other-cluster", PROTOCOL_VERSION),
                false,
            ),
            (
                "another version's hello",
                hello(CLUSTER, PROTOCOL_VERSION + 1),
                false,
            ),
            ("a message before the hello", message.clone(), false),
            (
                "a message instead of the proof",
                then(hello(CLUSTER, PROTOCOL_VERSION), &message),
                false,
            ),
            (
                "a hello from a node not in --peers",
                then(hello_from(9, CLUSTER, PROTOCOL_VERSION), &proof(&[])),
                false,
            ),
            ("a second hello", then(good.clone(), &good), false),
            ("silence instead of a hello", Vec::new(), false),
        ];
        let mut sequence = 0;
        for (index, (case, bytes, end_writes)) in cases.iter().enumerate() {
            // The good connection carries messages while the bad one is refused.
            sender.send(2, &note(sequence), payload(sequence)).unwrap();
            sequence += 1;
            refused(receiver_address, bytes, *end_writes).await;
            wait_for(case, || {
                receiver.stats().connections_refused == index as u64 + 1
            })
            .await;
        }
        let last = sequence;
        sequence = send_until(&sender, 2, sequence, "messages after the bad input", || {
            inbox
                .borrow()
                .iter()
                .any(|received| received.message.sequence >= last)
        })
        .await;
        sender.close().await;
        receiver.close().await;
        let inbox = inbox.borrow();
        assert!(inbox.iter().all(|received| received.from_node == 1));
        let sequences: Vec<u64> = inbox.iter().map(|r| r.message.sequence).collect();
        assert_eq!(
            sequences,
            (0..sequences.len() as u64).collect::<Vec<_>>(),
            "none lost"
        );
        assert!(sequence > last);
        assert_eq!(
            sender.stats().connections_opened,
            1,
            "the good connection stayed up"
        );
    })
    .join()
    .unwrap();
}

#[test]
fn shards_of_one_broker_share_its_address() {
    const SENDER_SHARDS: u32 = 4;
    let reservations = [reserve(), reserve()];
    let peers: BTreeMap<u64, SocketAddr> = BTreeMap::from([
        (1, reservations[0].address()),
        (2, reservations[1].address()),
    ]);
    run("reuse-port", move || async move {
        // Node 2's two shards bind the same address.
        let (shard_0, inbox_0) = start(config(2, 0, &peers));
        let (shard_1, inbox_1) = start(config(2, 1, &peers));
        assert_eq!(shard_0.local_address(), shard_1.local_address());
        // Node 1's shards each connect to node 2; the kernel picks which listener accepts.
        let senders: Vec<Transport<Note>> = (0..SENDER_SHARDS)
            .map(|shard| {
                let mut config = config(1, shard, &peers);
                config.listen = "127.0.0.1:0".parse().unwrap();
                start(config).0
            })
            .collect();
        let from_shards = |inboxes: &[&Inbox], after: u64| {
            let mut shards: Vec<u32> = inboxes
                .iter()
                .flat_map(|inbox| inbox.borrow().clone())
                .filter(|received| received.message.sequence >= after)
                .map(|received| received.from_shard)
                .collect();
            shards.sort();
            shards.dedup();
            shards.len() as u32
        };
        let mut sequence = 0;
        let started = Instant::now();
        while from_shards(&[&inbox_0, &inbox_1], 0) < SENDER_SHARDS {
            assert!(
                started.elapsed() < DEADLINE,
                "every sender shard reaches node 2"
            );
            for sender in &senders {
                sender.send(2, &note(sequence), Bytes::new()).unwrap();
            }
            sequence += 1;
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        // With shard 0 gone, every connection ends up at shard 1's listener on the same
        // address.
        shard_0.close().await;
        let after = sequence;
        while from_shards(&[&inbox_1], after) < SENDER_SHARDS {
            assert!(
                started.elapsed() < DEADLINE,
                "every sender shard reaches shard 1"
            );
            for sender in &senders {
                sender.send(2, &note(sequence), Bytes::new()).unwrap();
            }
            sequence += 1;
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        for sender in &senders {
            sender.close().await;
        }
        shard_1.close().await;
    })
    .join()
    .unwrap();
}

#[test]
fn connections_over_the_limit_are_closed_at_once() {
    let reservation = reserve();
    let peers = BTreeMap::from([(2, reservation.address())]);
    run("connection-limit", move || async move {
        let mut config = config(2, 0, &peers);
        config.inbound_connections_max = 1;
        let (receiver, _) = start(config);
        // Open, saying nothing yet (a hello from a node not in --peers would close it).
        let first = TcpStream::connect(receiver.local_address()).await.unwrap();
        refused(
            receiver.local_address(),
            &hello(CLUSTER, PROTOCOL_VERSION),
            false,
        )
        .await;
        assert_eq!(receiver.stats().connections_refused, 1);
        drop(first);
        receiver.close().await;
    })
    .join()
    .unwrap();
}

#[test]
fn closing_does_not_wait_for_a_peer_that_stopped_reading() {
    let reservations = [reserve(), reserve()];
    let peers: BTreeMap<u64, SocketAddr> = BTreeMap::from([
        (1, reservations[0].address()),
        (2, reservations[1].address()),
    ]);
    run("stalled-peer", move || async move {
        // Node 2 accepts, answers the handshake, and then never reads (a stopped process).
        let listener = glommio::net::TcpListener::bind(peers[&2]).unwrap();
        let (sender, _) = start(config(1, 0, &peers));
        let large = Bytes::from(vec![7u8; 512 << 10]);
        // 32 MiB: more than the socket buffers hold, so the writer ends up blocked mid-write.
        for sequence in 0..64 {
            sender.send(2, &note(sequence), large.clone()).unwrap();
        }
        let mut accepted = listener.accept().await.unwrap();
        let hello = read_frame(&mut accepted).await;
        assert_eq!(hello.kind, FrameKind::Hello);
        let challenge = Challenge {
            cluster_id: CLUSTER.to_string(),
            node_id: 2,
            nonce: [2; NONCE_BYTES],
            proof: Vec::new(),
        };
        accepted
            .write_all(&wire(
                handshake::encode_frame(FrameKind::Challenge, &challenge, 1 << 20).unwrap(),
            ))
            .await
            .unwrap();
        wait_for("the writer to start writing", || {
            sender.stats().messages_sent > 0
        })
        .await;
        let close = std::pin::pin!(sender.close());
        let deadline = std::pin::pin!(glommio::timer::sleep(DEADLINE));
        assert!(
            matches!(select(close, deadline).await, Either::Left(_)),
            "close waited for the stalled peer"
        );
    })
    .join()
    .unwrap();
}

/// Node 1's proof for the challenge in `frame`, made with `secret`, after a hello of
/// [`hello`]'s nonce.
fn proof_for(secret: &ClusterSecret, frame: &frame::Frame) -> Vec<u8> {
    assert_eq!(frame.kind, FrameKind::Challenge);
    let challenge: Challenge =
        frame::decode_header(&frame.header, &mut rkyv::util::AlignedVec::new()).unwrap();
    let transcript = Transcript {
        connector_nonce: &[9; NONCE_BYTES],
        acceptor_nonce: &challenge.nonce,
        connector_cluster_id: CLUSTER,
        acceptor_cluster_id: &challenge.cluster_id,
    };
    secret.prove(Role::Connector, 1, &transcript).to_vec()
}

/// Says hello as node 1 on a raw connection, answers the challenge with the proof `prove`
/// makes of it, sends a message, and returns the connection.
async fn raw_peer(
    to: SocketAddr,
    prove: impl FnOnce(&frame::Frame) -> Vec<u8>,
    sequence: u64,
) -> TcpStream {
    let mut stream = TcpStream::connect(to).await.unwrap();
    stream
        .write_all(&hello(CLUSTER, PROTOCOL_VERSION))
        .await
        .unwrap();
    let challenge = read_frame(&mut stream).await;
    let message = wire(
        frame::encode(
            FrameKind::Message,
            &note(sequence),
            payload(sequence),
            1 << 20,
        )
        .unwrap(),
    );
    // Whatever the transport does with the proof, the message is already on its way.
    let _ = stream
        .write_all(&then(proof(&prove(&challenge)), &message))
        .await;
    stream
}

#[test]
fn an_impostor_without_the_secret_is_refused_before_its_message_is_handled() {
    let reservations = [reserve(), reserve()];
    let peers: BTreeMap<u64, SocketAddr> = BTreeMap::from([
        (1, reservations[0].address()),
        (2, reservations[1].address()),
    ]);
    run("impostor", move || async move {
        let secret = ClusterSecret::new(&[42; 32]);
        let mut receiver_config = config(2, 0, &peers);
        receiver_config.secret = Some(secret.clone());
        let (receiver, inbox) = start(receiver_config);
        let address = receiver.local_address();

        // No secret: an empty proof, and a message right behind it.
        let mut impostor = raw_peer(address, |_| Vec::new(), 0).await;
        wait_closed(&mut impostor).await;
        // A wrong secret.
        let wrong = ClusterSecret::new(&[43; 32]);
        let mut impostor = raw_peer(address, |frame| proof_for(&wrong, frame), 1).await;
        wait_closed(&mut impostor).await;
        // A proof made with the secret, but replayed from another connection's challenge (its
        // nonce differs from this one's).
        let replayed = secret.prove(
            Role::Connector,
            1,
            &Transcript {
                connector_nonce: &[9; NONCE_BYTES],
                acceptor_nonce: &[0; NONCE_BYTES],
                connector_cluster_id: CLUSTER,
                acceptor_cluster_id: CLUSTER,
            },
        );
        let mut impostor = raw_peer(address, |_| replayed.to_vec(), 2).await;
        wait_closed(&mut impostor).await;
        assert_eq!(receiver.stats().authentication_failures, 3);
        assert_eq!(receiver.stats().messages_received, 0);
        assert!(
            inbox.borrow().is_empty(),
            "no impostor's message was handled"
        );

        // The same steps with the secret: the message is handled, from node 1.
        let _peer = raw_peer(address, |frame| proof_for(&secret, frame), 3).await;
        wait_for("the authenticated peer's message", || {
            inbox.borrow().len() == 1
        })
        .await;
        assert_eq!(inbox.borrow()[0].from_node, 1);
        assert_eq!(inbox.borrow()[0].message, note(3));
        receiver.close().await;
    })
    .join()
    .unwrap();
}

#[test]
fn only_a_broker_of_our_secret_and_cluster_connects() {
    let reservations = [reserve(), reserve()];
    let peers: BTreeMap<u64, SocketAddr> = BTreeMap::from([
        (1, reservations[0].address()),
        (2, reservations[1].address()),
    ]);
    run("secret-and-cluster", move || async move {
        let secret = ClusterSecret::new(&[42; 32]);
        let mut receiver_config = config(2, 0, &peers);
        receiver_config.secret = Some(secret.clone());
        let (receiver, inbox) = start(receiver_config);

        // A wrong secret, none, another cluster: each sender keeps trying and never gets a
        // message through.
        let senders: [(&str, Option<ClusterSecret>, &str); 3] = [
            (
                "a wrong secret",
                Some(ClusterSecret::new(&[43; 32])),
                CLUSTER,
            ),
            ("no secret", None, CLUSTER),
            ("another cluster", Some(secret.clone()), "other-cluster"),
        ];
        for (case, sender_secret, cluster_id) in senders {
            let mut sender_config = config(1, 0, &peers);
            sender_config.secret = sender_secret;
            sender_config.cluster_id = ClusterIdentity::new(cluster_id);
            let (sender, _) = start(sender_config);
            let refused_before = receiver.stats().connections_refused;
            let mut sequence = 0;
            // Until the receiver refused it twice (a reconnection was refused too).
            while receiver.stats().connections_refused < refused_before + 2 {
                sender.send(2, &note(sequence), payload(sequence)).unwrap();
                sequence += 1;
                glommio::timer::sleep(Duration::from_millis(5)).await;
                assert!(sequence < 4000, "{case}: not refused");
            }
            sender.close().await;
            assert!(inbox.borrow().is_empty(), "{case}: a message got through");
            if case != "another cluster" {
                assert!(
                    sender.stats().authentication_failures > 0
                        || receiver.stats().authentication_failures > 0,
                    "{case}: counted as an authentication failure"
                );
            }
        }

        // The secret, and no cluster id yet (a fresh broker): it joins.
        let mut sender_config = config(1, 0, &peers);
        sender_config.secret = Some(secret.clone());
        sender_config.cluster_id = ClusterIdentity::new("");
        let (sender, _) = start(sender_config);
        send_until(&sender, 2, 0, "the fresh broker's messages", || {
            !inbox.borrow().is_empty()
        })
        .await;
        assert!(inbox
            .borrow()
            .iter()
            .all(|received| received.from_node == 1));
        sender.close().await;
        receiver.close().await;
    })
    .join()
    .unwrap();
}

#[test]
fn a_hello_from_another_address_than_the_claimed_nodes_is_refused() {
    let reservation = reserve();
    // Node 1 is configured on another machine; the hello claiming it comes from loopback.
    let peers: BTreeMap<u64, SocketAddr> = BTreeMap::from([
        (1, "192.0.2.1:9192".parse().unwrap()),
        (2, reservation.address()),
    ]);
    run("claimed-address", move || async move {
        let (receiver, inbox) = start(config(2, 0, &peers));
        let message =
            wire(frame::encode(FrameKind::Message, &note(0), payload(0), 1 << 20).unwrap());
        refused(
            receiver.local_address(),
            &then(handshake_without_secret(), &message),
            false,
        )
        .await;
        wait_for("the refusal counted", || {
            receiver.stats().connections_refused == 1
        })
        .await;
        assert!(inbox.borrow().is_empty());
        receiver.close().await;
    })
    .join()
    .unwrap();
}
