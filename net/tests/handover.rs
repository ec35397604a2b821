//! Connection handover on a two-shard broker: a connection whose produce or fetch requests go to
//! a partition of the other shard than the one that accepted it moves to that shard, without
//! losing, repeating or reordering a request, and from then on its requests cross no mesh; a
//! connection whose partitions spread over both shards stays.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{
    create_topic, eventually, fetch_request, partitions_by_shard, produce_request, stamped, Client,
    TestBroker,
};
use engine::batch::build::{batch_from, batch_of, ProducerFields, TestRecord};
use engine::batch::BatchHeader;
use engine::LogConfig;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Decodable;

/// Connections per shard in the many-producers test.
const CONNECTIONS_PER_SHARD: usize = 4;
/// Produce requests each connection sends before reading any answer.
const PIPELINED: usize = 100;

fn record(value: String) -> TestRecord {
    TestRecord {
        key: None,
        value: value.into_bytes(),
        timestamp_ms: 1,
    }
}

/// Sends `batches` to `partition` of `topic` (acks=all) one after the other without waiting,
/// then reads the answers: each must come in request order, without error. Returns each
/// batch's base offset, in order.
fn produce_pipelined(
    client: &mut Client,
    topic: &str,
    partition: i32,
    batches: &[Vec<u8>],
) -> Vec<i64> {
    let sent: Vec<i32> = batches
        .iter()
        .map(|batch| {
            client.send(
                ApiKey::Produce,
                9,
                &produce_request(topic, partition, batch.clone(), -1),
            )
        })
        .collect();
    sent.into_iter()
        .map(|correlation_id| {
            let (received, response): (i32, ProduceResponse) = client.receive(ApiKey::Produce, 9);
            assert_eq!(received, correlation_id, "answers in request order");
            let answer = &response.responses[0].partition_responses[0];
            assert_eq!(answer.error_code, 0, "request {correlation_id}");
            answer.base_offset
        })
        .collect()
}

/// Every batch of `partition` from offset 0 to `end`, as the broker returns them.
fn read_partition(client: &mut Client, topic: &str, partition: i32, end: i64) -> Vec<u8> {
    let mut read = Vec::new();
    let mut offset = 0;
    while offset < end {
        let response: FetchResponse = client.call(
            ApiKey::Fetch,
            12,
            &fetch_request(topic, partition, offset, 0),
        );
        let data = &response.responses[0].partitions[0];
        assert_eq!(data.error_code, 0);
        let records = data.records.clone().unwrap_or_default();
        let mut cursor = &records[..];
        while !cursor.is_empty() {
            let header = BatchHeader::parse(cursor).unwrap();
            offset = header.last_offset() + 1;
            cursor = &cursor[header.size_bytes as usize..];
        }
        read.extend_from_slice(&records);
    }
    read
}

fn shard_series(name: &str, shard: usize) -> String {
    format!("{name}{{shard=\"{shard}\"}}")
}

/// Produces one batch to `partition` of `topic`, a partition shard `shard` owns, over a
/// connection that shard accepted (one Produce answered there, nothing forwarded), and waits
/// until the shard's published snapshot shows it: everything the shard counted before, its
/// mesh requests included, is in the metrics from then on.
fn fence(broker: &TestBroker, shard: usize, topic: &str, partition: i32) {
    let mut client = broker.connect_on_shard(shard);
    let offsets = produce_pipelined(&mut client, topic, partition, &[batch_of(1, 10, 1)]);
    let series =
        format!("ferrite_partition_high_watermark{{topic=\"{topic}\",partition=\"{partition}\"}}");
    eventually("the owner's snapshot to show the fence", || {
        broker.metric(&series) as i64 > offsets[0]
    });
}

/// Every client of `clients` sends [`PIPELINED`] batches to `partition` of "moving" at once,
/// each client on a thread of its own, then reads the answers; `batches_by_offset` gets each
/// batch at the offset it was acknowledged at (once: a second time fails the test).
fn produce_round(
    clients: &mut [Client],
    partition: i32,
    round: usize,
    batches_by_offset: &mut BTreeMap<i64, Vec<u8>>,
) {
    let outcomes: Vec<Vec<(Vec<u8>, i64)>> = std::thread::scope(|scope| {
        let running: Vec<_> = clients
            .iter_mut()
            .enumerate()
            .map(|(connection, client)| {
                scope.spawn(move || {
                    let batches: Vec<Vec<u8>> = (0..PIPELINED)
                        .map(|sequence| {
                            let value = format!("{round}-{connection}-{sequence}");
                            batch_from(&[record(value)], ProducerFields::NONE)
                        })
                        .collect();
                    let offsets = produce_pipelined(client, "moving", partition, &batches);
                    batches.into_iter().zip(offsets).collect()
                })
            })
            .collect();
        running
            .into_iter()
            .map(|thread| thread.join().unwrap())
            .collect()
    });
    for outcome in outcomes {
        let offsets: Vec<i64> = outcome.iter().map(|(_, offset)| *offset).collect();
        assert!(
            offsets.windows(2).all(|pair| pair[0] < pair[1]),
            "a connection's batches land in the order it sent them: {offsets:?}"
        );
        for (batch, offset) in outcome {
            assert!(
                batches_by_offset.insert(offset, batch).is_none(),
                "offset {offset} acknowledged twice"
            );
        }
    }
}

#[test]
fn pipelining_producers_move_to_their_partitions_shard_and_each_batch_lands_once_in_order() {
    let broker = TestBroker::start(2, LogConfig::default());
    let (owner, other) = (1, 0);
    let mut admin = broker.connect_on_shard(other);
    assert_eq!(create_topic(&mut admin, "moving", 6), 0);
    let owned = partitions_by_shard("moving", 6);
    let partition = owned[owner][0];
    let moved = shard_series("ferrite_connections_moved_total", other);
    let mesh = format!("ferrite_mesh_requests_total{{shard=\"{other}\",to=\"{owner}\"}}");
    // Half the connections on each shard, whichever the kernel would have picked.
    let mut clients: Vec<Client> = (0..CONNECTIONS_PER_SHARD)
        .flat_map(|_| {
            [
                broker.connect_on_shard(other),
                broker.connect_on_shard(owner),
            ]
        })
        .collect();
    let mut batches_by_offset = BTreeMap::new();
    let mut round = 0;
    // Each of the other shard's connections moves once its requests show where they go.
    while broker.metric(&moved) < CONNECTIONS_PER_SHARD as u64 {
        assert!(
            round < 20,
            "{round} rounds and only {} moves",
            broker.metric(&moved)
        );
        produce_round(&mut clients, partition, round, &mut batches_by_offset);
        round += 1;
    }
    eventually(
        "every producing connection on the partition's shard",
        || {
            broker.metric(&shard_series("ferrite_connections_open", owner))
                == 2 * CONNECTIONS_PER_SHARD as u64
        },
    );
    assert_eq!(
        broker.metric(&shard_series("ferrite_connections_moved_total", owner)),
        0,
        "connections on the owner stay"
    );

    // From then on nothing crosses the mesh: the other shard answers no produce request and
    // forwards nothing.
    let produce_answered = format!("ferrite_requests_total{{shard=\"{other}\",api=\"Produce\"}}");
    fence(&broker, other, "moving", owned[other][0]);
    let (answered_before, mesh_before) = (broker.metric(&produce_answered), broker.metric(&mesh));
    assert!(
        mesh_before > 0,
        "the connections' first requests were forwarded"
    );
    for round in round..round + 2 {
        produce_round(&mut clients, partition, round, &mut batches_by_offset);
    }
    fence(&broker, other, "moving", owned[other][0]);
    assert_eq!(
        broker.metric(&produce_answered),
        answered_before + 1,
        "the fence only"
    );
    assert_eq!(broker.metric(&mesh), mesh_before, "no request forwarded");

    // Every batch acknowledged once, at offsets without gaps, read back as it was sent.
    let end = batches_by_offset.len() as i64;
    assert_eq!(
        batches_by_offset.keys().copied().collect::<Vec<_>>(),
        (0..end).collect::<Vec<_>>()
    );
    let expected: Vec<u8> = batches_by_offset
        .into_iter()
        .flat_map(|(offset, batch)| stamped(batch, offset))
        .collect();
    assert_eq!(
        read_partition(&mut admin, "moving", partition, end),
        expected
    );
    drop((admin, clients));
    broker.stop();
}

#[test]
fn a_producer_to_partitions_of_both_shards_stays_where_it_was_accepted() {
    let broker = TestBroker::start(2, LogConfig::default());
    let mut admin = broker.connect();
    assert_eq!(create_topic(&mut admin, "spread", 6), 0);
    let owned = partitions_by_shard("spread", 6);
    let mut client = broker.connect_on_shard(0);
    // Three of every four batches to the other shard's partition: most, not nearly all.
    let partitions: Vec<i32> = (0..256)
        .map(|request| {
            if request % 4 == 0 {
                owned[0][0]
            } else {
                owned[1][0]
            }
        })
        .collect();
    let sent: Vec<i32> = partitions
        .iter()
        .map(|&partition| {
            client.send(
                ApiKey::Produce,
                9,
                &produce_request("spread", partition, batch_of(1, 10, 1), -1),
            )
        })
        .collect();
    for correlation_id in sent {
        let (received, response): (i32, ProduceResponse) = client.receive(ApiKey::Produce, 9);
        assert_eq!(received, correlation_id);
        assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
    }
    assert_eq!(
        common::shard_counter(&broker, "ferrite_connections_moved_total"),
        0
    );
    assert_eq!(
        broker.metric("ferrite_requests_total{shard=\"0\",api=\"Produce\"}"),
        256,
        "every request answered on the shard that accepted the connection"
    );
    drop((admin, client));
    broker.stop();
}

#[test]
fn an_idempotent_producer_keeps_its_sequence_across_a_move() {
    let broker = TestBroker::start(2, LogConfig::default());
    let mut admin = broker.connect();
    assert_eq!(create_topic(&mut admin, "sequenced", 6), 0);
    let owned = partitions_by_shard("sequenced", 6);
    let (owner, other) = (0, 1);
    let partition = owned[owner][0];
    let mut client = broker.connect_on_shard(other);
    let response: InitProducerIdResponse = client.call(
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default()
            .with_transaction_timeout_ms(60_000)
            .with_transactional_id(None)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    );
    assert_eq!(response.error_code, 0);
    let producer_id = response.producer_id.0;
    let batch = |sequence: i32| {
        batch_from(
            &[record(format!("v{sequence}"))],
            ProducerFields::idempotent(producer_id, 0, sequence),
        )
    };
    // All in flight at once: the move comes between two of them, and the sequence carries on
    // on the partition's shard without OUT_OF_ORDER_SEQUENCE_NUMBER or a duplicate.
    let batches: Vec<Vec<u8>> = (0..200).map(&batch).collect();
    let offsets = produce_pipelined(&mut client, "sequenced", partition, &batches);
    assert_eq!(offsets, (0..200).collect::<Vec<i64>>());
    eventually("the connection to move", || {
        broker.metric(&shard_series("ferrite_connections_moved_total", other)) == 1
    });
    // A retry of the last batch is known on the new shard; the next one follows on.
    let offsets = produce_pipelined(
        &mut client,
        "sequenced",
        partition,
        &[batch(199), batch(200)],
    );
    assert_eq!(offsets, vec![199, 200]);
    let expected: Vec<u8> = (0..=200)
        .flat_map(|sequence| stamped(batch(sequence), i64::from(sequence)))
        .collect();
    assert_eq!(
        read_partition(&mut admin, "sequenced", partition, 201),
        expected
    );
    drop((admin, client));
    broker.stop();
}

#[test]
fn a_consumer_moves_while_its_long_poll_waits_and_gets_every_answer() {
    let broker = TestBroker::start(2, LogConfig::default());
    let mut producer = broker.connect();
    assert_eq!(create_topic(&mut producer, "polled", 6), 0);
    let owned = partitions_by_shard("polled", 6);
    let (owner, other) = (1, 0);
    let partition = owned[owner][0];
    let batches: Vec<Vec<u8>> = (0..10).map(|index| batch_of(1, 20, index)).collect();
    produce_pipelined(&mut producer, "polled", partition, &batches);
    let mut consumer = broker.connect_on_shard(other);
    // Fetches of the other shard's partition: 31 that data answers at once, then a long poll
    // at the end of the log, during which the connection decides to move.
    let long_poll_ms = 20_000;
    let started = Instant::now();
    let sent: Vec<i32> = (0..32)
        .map(|fetch| {
            let offset = if fetch < 31 { 0 } else { 10 };
            consumer.send(
                ApiKey::Fetch,
                12,
                &fetch_request("polled", partition, offset, long_poll_ms),
            )
        })
        .collect();
    let mut answers = Vec::new();
    for correlation_id in sent {
        let (received, response): (i32, FetchResponse) = consumer.receive(ApiKey::Fetch, 12);
        assert_eq!(received, correlation_id);
        let data = &response.responses[0].partitions[0];
        assert_eq!((data.error_code, data.high_watermark), (0, 10));
        answers.push(data.records.clone().unwrap_or_default());
    }
    assert!(answers[..31].iter().all(|records| records.len() > 100));
    assert!(answers[31].is_empty(), "nothing past the end of the log");
    assert!(
        started.elapsed() < Duration::from_millis(long_poll_ms as u64 / 2),
        "the long poll was answered when the connection moved, not after its wait ({:?})",
        started.elapsed()
    );
    eventually("the consumer's connection to move", || {
        broker.metric(&shard_series("ferrite_connections_moved_total", other)) == 1
    });
    // Served by the partition's shard now: a long poll there is woken by a produce.
    let waiting = consumer.send(
        ApiKey::Fetch,
        12,
        &fetch_request("polled", partition, 10, long_poll_ms),
    );
    let offsets = produce_pipelined(&mut producer, "polled", partition, &[batch_of(1, 10, 11)]);
    assert_eq!(offsets, vec![10]);
    let (received, response): (i32, FetchResponse) = consumer.receive(ApiKey::Fetch, 12);
    assert_eq!(received, waiting);
    let data = &response.responses[0].partitions[0];
    assert_eq!(data.high_watermark, 11);
    assert!(!data.records.clone().unwrap_or_default().is_empty());
    assert_eq!(
        broker.metric(&format!(
            "ferrite_requests_total{{shard=\"{other}\",api=\"Fetch\"}}"
        )),
        32,
        "the fetches after the move were answered on the partition's shard"
    );
    let distinct: BTreeSet<Bytes> = answers[..31].iter().cloned().collect();
    assert_eq!(
        distinct.len(),
        1,
        "every fetch from offset 0 read the same batches"
    );
    drop((producer, consumer));
    broker.stop();
}

/// Shutdown while connections are moving (or draining to move): the broker stops cleanly, and
/// every connection is closed, after the answers to the requests it started, in order: none is
/// left open on a shard that never served it.
#[test]
fn a_shutdown_among_moving_connections_closes_each_after_its_started_requests() {
    let broker = TestBroker::start(2, LogConfig::default());
    let (owner, other) = (1, 0);
    let mut admin = broker.connect();
    assert_eq!(create_topic(&mut admin, "stopping", 6), 0);
    drop(admin);
    let partition = partitions_by_shard("stopping", 6)[owner][0];
    let mut clients: Vec<Client> = (0..6).map(|_| broker.connect_on_shard(other)).collect();
    let sent: Vec<Vec<i32>> = clients
        .iter_mut()
        .map(|client| {
            (0..200)
                .map(|_| {
                    client.send(
                        ApiKey::Produce,
                        9,
                        &produce_request("stopping", partition, batch_of(1, 10, 1), -1),
                    )
                })
                .collect()
        })
        .collect();
    let stopping = std::thread::spawn(move || {
        broker.stop();
    });
    for (client, sent) in clients.iter_mut().zip(sent) {
        let started = Instant::now();
        let mut answered = Vec::new();
        while let Some(mut frame) = client.read_frame() {
            let header_version = ApiKey::Produce.response_header_version(9);
            let header = ResponseHeader::decode(&mut frame, header_version).unwrap();
            let response = ProduceResponse::decode(&mut frame, 9).unwrap();
            assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
            answered.push(header.correlation_id);
        }
        assert!(
            started.elapsed() < common::DEADLINE / 2,
            "the broker closed the connection, not the client's read timeout"
        );
        assert_eq!(
            answered[..],
            sent[..answered.len()],
            "answers in request order"
        );
    }
    stopping.join().expect("a clean shutdown");
}
