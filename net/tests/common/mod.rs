//! An in-process broker on a free loopback port (the same shards, listener and handlers as
//! `ferrite serve`), and a minimal blocking Kafka client that frames requests with
//! kafka-protocol and reads responses back.

#![allow(dead_code)] // Each test binary uses its own subset.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use engine::catalog::Catalog;
use engine::credentials::Credentials;
use engine::quotas::ClientQuotas;
use engine::shard::listen::ListenReservation;
use engine::shard::{Runtime, RuntimeConfig, TopicLogConfig};
use engine::LogConfig;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreateTopicsRequest, CreateTopicsResponse, FetchRequest, FetchResponse,
    ListOffsetsRequest, ListOffsetsResponse, ProduceRequest, ProduceResponse, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use net::broker::BrokerConfig;
use net::connection::ConnectionConfig;
use net::connection_limits::ConnectionLimits;
use net::groups::shard::{GroupsConfig, LocalOffsetsLog, ShardGroups};
use net::listener::{Endpoint, ListenerAddress, ListenerName};
use net::metrics::MetricsRegistry;
use net::quotas::QuotaUsage;
use net::server::ShardSetup;

pub const DEADLINE: Duration = Duration::from_secs(30);

pub struct TestBroker {
    pub address: SocketAddr,
    pub metrics: MetricsRegistry,
    runtime: Option<Runtime>,
    pub data: tempfile::TempDir,
}

impl TestBroker {
    pub fn start(shards: usize, log_config: LogConfig) -> TestBroker {
        TestBroker::start_in(tempfile::tempdir().unwrap(), shards, log_config)
    }

    /// Starts on the data of a broker that was stopped (a restart).
    pub fn start_in(data: tempfile::TempDir, shards: usize, log_config: LogConfig) -> TestBroker {
        let (address, metrics, runtime) = start_runtime(data.path(), shards, log_config);
        TestBroker {
            address,
            metrics,
            runtime: Some(runtime),
            data,
        }
    }

    /// A client connected to the broker whose connection shard `shard` accepted (the kernel
    /// picks the shard: connections are opened, and the others closed, until one lands there).
    pub fn connect_on_shard(&self, shard: usize) -> Client {
        for _ in 0..200 {
            let before = self.accepted_by_shard();
            let client = self.connect();
            let mut after = self.accepted_by_shard();
            let deadline = std::time::Instant::now() + DEADLINE;
            while after.iter().sum::<u64>() == before.iter().sum::<u64>() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the connection was not accepted"
                );
                std::thread::sleep(Duration::from_millis(5));
                after = self.accepted_by_shard();
            }
            if after[shard] > before[shard] {
                return client;
            }
        }
        panic!("200 connections, none accepted by shard {shard}")
    }

    /// `ferrite_connections_accepted_total` of each shard.
    fn accepted_by_shard(&self) -> Vec<u64> {
        let text = self.metrics.render();
        (0..self.shard_count())
            .map(|shard| {
                metric_value(
                    &text,
                    &format!("ferrite_connections_accepted_total{{shard=\"{shard}\"}}"),
                )
            })
            .collect()
    }

    fn shard_count(&self) -> usize {
        self.metrics
            .render()
            .lines()
            .filter(|line| line.starts_with("ferrite_connections_open{"))
            .count()
    }

    /// The value of the series `series` (name and labels, as rendered) now; 0 if absent.
    pub fn metric(&self, series: &str) -> u64 {
        metric_value(&self.metrics.render(), series)
    }

    pub fn connect(&self) -> Client {
        let stream = TcpStream::connect(self.address).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            correlation_id: 0,
        }
    }

    /// Stops the shards cleanly (as SIGTERM would) and checks that they did.
    pub fn stop(mut self) -> tempfile::TempDir {
        let runtime = self.runtime.take().unwrap();
        runtime.shutdown_handle().trigger();
        runtime.join().expect("a clean shutdown");
        std::mem::replace(&mut self.data, tempfile::tempdir().unwrap())
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_handle().trigger();
            let _ = runtime.join();
        }
    }
}

/// The value of `series` (name and labels exactly as rendered) in `text`; 0 if absent.
fn metric_value(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0, |value| value.parse().unwrap())
}

/// The sum over shards of a per-shard counter.
pub fn shard_counter(broker: &TestBroker, name: &str) -> u64 {
    broker
        .metrics
        .render()
        .lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// Waits until `condition` holds, polling; panics at the deadline.
pub fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !condition() {
        assert!(started.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_owned()))
}

/// Creates `topic` with `partitions` partitions; returns the error code.
pub fn create_topic(client: &mut Client, topic: &str, partitions: i32) -> i16 {
    create_topic_with(client, topic, partitions, &[])
}

pub fn produce_request(topic: &str, partition: i32, batch: Vec<u8>, acks: i16) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(5_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(Bytes::from(batch)))])])
}

pub fn fetch_request(topic: &str, partition: i32, offset: i64, max_wait_ms: i32) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(50 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(50 << 20)])])
}

/// Partitions of `topic` (of `count`) owned by each of the test broker's two shards: the
/// first list shard 0's, the second shard 1's.
pub fn partitions_by_shard(topic: &str, count: i32) -> [Vec<i32>; 2] {
    let mut owned: [Vec<i32>; 2] = [Vec::new(), Vec::new()];
    for partition in 0..count {
        let id = engine::shard::PartitionId::new(topic, partition as u32);
        owned[engine::shard::owner_shard(&id, 2)].push(partition);
    }
    assert!(
        owned.iter().all(|partitions| partitions.len() >= 2),
        "{count} partitions of {topic} give each shard two: {owned:?}"
    );
    owned
}

fn start_runtime(
    data_dir: &Path,
    shards: usize,
    log_config: LogConfig,
) -> (SocketAddr, MetricsRegistry, Runtime) {
    // Held until every shard has bound, so no parallel test can take the port in between.
    let reservation = ListenReservation::new("127.0.0.1:0".parse().unwrap()).unwrap();
    let address = reservation.address();
    let catalog = Arc::new(Catalog::open(data_dir).unwrap());
    let metrics = MetricsRegistry::new(shards);
    let broker_config = BrokerConfig {
        node_id: 0,
        advertised: vec![Endpoint {
            name: ListenerName::plaintext(),
            host: "127.0.0.1".into(),
            port: address.port(),
        }],
        cluster_id: "test".into(),
        auto_create_topics: true,
        default_partitions: 2,
        fetch_wait_ms_max: 30_000,
        log: log_config.clone(),
        sasl: Default::default(),
        authorizer: Default::default(),
    };
    let mut groups = GroupsConfig::default();
    // Tests need not wait for more members before a group's first rebalance, and may use
    // session timeouts short enough to see them expire.
    groups.coordinator.initial_rebalance_delay_ms = 0;
    groups.coordinator.session_timeout_ms_min = 100;
    groups.offsets_partitions =
        net::groups::prepare_offsets_topic(&catalog, groups.offsets_partitions).unwrap();
    let mut transactions = net::transactions::TransactionsConfig::default();
    transactions.state_partitions =
        net::transactions::prepare_transaction_state_topic(&catalog, 4).unwrap();
    let config = RuntimeConfig {
        shard_count: shards,
        cpus: None,
        data_dir: data_dir.to_path_buf(),
        log_config: log_config.clone(),
        resources: Default::default(),
        topic_log_config: Some(TopicLogConfig::from_catalog(
            catalog.clone(),
            log_config.clone(),
        )),
        mesh_ring_capacity: 256,
        outbound_queue_capacity: 256,
        // Short, so that tests see retention act.
        retention_check_interval: std::time::Duration::from_millis(50),
        cleaner_check_interval: std::time::Duration::from_millis(50),
        replicated_partitions: None,
        // Small journal files, so that tests go round the ring.
        journal: Some(engine::JournalConfig::small()),
        // As `ferrite serve`: the previous format of `__consumer_offsets` is converted.
        record_rewrite: Some(Arc::new(net::groups::LegacyRecordConversion)),
    };
    let (bound, bound_shards) = std::sync::mpsc::channel();
    let setup = ShardSetup {
        catalog,
        credentials: Arc::new(Credentials::open(data_dir).unwrap()),
        quotas: Arc::new(QuotaUsage::new(Arc::new(
            ClientQuotas::open(data_dir).unwrap(),
        ))),
        acls: Arc::new(engine::acls::Acls::open(data_dir).unwrap()),
        broker: broker_config,
        metrics: metrics.clone(),
        // Short, so that tests see the partition metrics soon.
        metrics_snapshot_interval: std::time::Duration::from_millis(50),
        listeners: vec![ListenerAddress {
            name: ListenerName::plaintext(),
            address,
        }],
        tls: None,
        connection: ConnectionConfig::default(),
        limits: Arc::new(ConnectionLimits::unlimited()),
        transactions,
    };
    let runtime = Runtime::start(config, move |context| {
        let bound = bound.clone();
        let groups = ShardGroups::start(&context, groups.clone(), Rc::new(LocalOffsetsLog));
        net::server::serve_shard(context, setup.clone(), None, groups, move |result| {
            result.unwrap();
            bound.send(()).unwrap();
        })
    })
    .unwrap();
    for _ in 0..shards {
        bound_shards.recv_timeout(DEADLINE).unwrap();
    }
    (address, metrics, runtime)
}

/// A blocking client speaking whatever version each call asks for.
pub struct Client {
    pub stream: TcpStream,
    correlation_id: i32,
}

impl Client {
    /// Sends one request without waiting; returns its correlation id.
    pub fn send<R: Encodable>(&mut self, api_key: ApiKey, version: i16, body: &R) -> i32 {
        self.correlation_id += 1;
        let correlation_id = self.correlation_id;
        let header = RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("net-tests")));
        let mut bytes = BytesMut::new();
        header
            .encode(&mut bytes, api_key.request_header_version(version))
            .unwrap();
        body.encode(&mut bytes, version).unwrap();
        self.send_raw_frame(&bytes);
        correlation_id
    }

    /// Sends `body` with a correct length prefix.
    pub fn send_raw_frame(&mut self, body: &[u8]) {
        let mut framed = (body.len() as i32).to_be_bytes().to_vec();
        framed.extend_from_slice(body);
        self.stream.write_all(&framed).unwrap();
    }

    /// Reads one response frame and decodes it as `R`; returns its correlation id too.
    pub fn receive<R: Decodable>(&mut self, api_key: ApiKey, version: i16) -> (i32, R) {
        let mut frame = self.read_frame().expect("a response");
        let header =
            ResponseHeader::decode(&mut frame, api_key.response_header_version(version)).unwrap();
        let body = R::decode(&mut frame, version).unwrap();
        assert!(
            !frame.has_remaining(),
            "{api_key:?} v{version}: trailing bytes"
        );
        (header.correlation_id, body)
    }

    /// One request and its response.
    pub fn call<Q: Encodable, R: Decodable>(
        &mut self,
        api_key: ApiKey,
        version: i16,
        body: &Q,
    ) -> R {
        let sent = self.send(api_key, version, body);
        let (received, response) = self.receive(api_key, version);
        assert_eq!(received, sent, "responses come back in request order");
        response
    }

    /// The next frame, or `None` once the broker closed the connection.
    pub fn read_frame(&mut self) -> Option<Bytes> {
        let mut length = [0u8; 4];
        if self.stream.read_exact(&mut length).is_err() {
            return None;
        }
        let mut frame = vec![0u8; i32::from_be_bytes(length) as usize];
        self.stream.read_exact(&mut frame).ok()?;
        Some(Bytes::from(frame))
    }

    /// True once the broker has closed the connection (reads hit end of stream).
    pub fn closed_by_broker(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.stream.read(&mut byte), Ok(0) | Err(_))
    }
}

/// Produces one batch (acks=all); returns (error code, base offset).
pub fn produce(client: &mut Client, topic: &str, partition: i32, batch: Vec<u8>) -> (i16, i64) {
    let response: ProduceResponse = client.call(
        ApiKey::Produce,
        9,
        &produce_request(topic, partition, batch, -1),
    );
    let answer = &response.responses[0].partition_responses[0];
    (answer.error_code, answer.base_offset)
}

/// (error code, high-water mark, records) of one partition's fetch.
pub fn fetch(
    client: &mut Client,
    topic: &str,
    partition: i32,
    offset: i64,
    max_wait_ms: i32,
) -> (i16, i64, Bytes) {
    let response: FetchResponse = client.call(
        ApiKey::Fetch,
        12,
        &fetch_request(topic, partition, offset, max_wait_ms),
    );
    let data = &response.responses[0].partitions[0];
    (
        data.error_code,
        data.high_watermark,
        data.records.clone().unwrap_or_default(),
    )
}

/// The batch as the broker stores it: base offset and leader epoch (0) filled in.
pub fn stamped(mut batch: Vec<u8>, base_offset: i64) -> Vec<u8> {
    engine::batch::assign_offset_and_epoch(&mut batch, base_offset, 0);
    batch
}

pub fn list_offset(client: &mut Client, topic: &str, partition: i32, timestamp: i64) -> (i16, i64) {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(partition)
                .with_timestamp(timestamp)])]);
    let response: ListOffsetsResponse = client.call(ApiKey::ListOffsets, 6, &request);
    let answer = &response.topics[0].partitions[0];
    (answer.error_code, answer.offset)
}

/// Creates `topic` with `partitions` partitions and the topic settings `configs`; returns the
/// error code.
pub fn create_topic_with(
    client: &mut Client,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> i16 {
    use kafka_protocol::messages::create_topics_request::CreatableTopicConfig;
    let request = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(name(topic))
        .with_num_partitions(partitions)
        .with_replication_factor(1)
        .with_configs(
            configs
                .iter()
                .map(|(key, value)| {
                    CreatableTopicConfig::default()
                        .with_name(StrBytes::from_string(key.to_string()))
                        .with_value(Some(StrBytes::from_string(value.to_string())))
                })
                .collect(),
        )]);
    let response: CreateTopicsResponse = client.call(ApiKey::CreateTopics, 7, &request);
    response.topics[0].error_code
}

/// A transactional producer's identity, from InitProducerId.
#[derive(Debug, Clone, Copy)]
pub struct Producer {
    pub id: i64,
    pub epoch: i16,
}

/// InitProducerId (v4) for `transactional_id`, asked again (up to [`DEADLINE`]) while the
/// coordinator loads or ends the id's previous transaction, as clients do.
pub fn init_producer(client: &mut Client, transactional_id: &str) -> Producer {
    use kafka_protocol::messages::{
        InitProducerIdRequest, InitProducerIdResponse, ProducerId, TransactionalId,
    };
    let request = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(StrBytes::from_string(
            transactional_id.to_owned(),
        ))))
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let response: InitProducerIdResponse = client.call(ApiKey::InitProducerId, 4, &request);
        match response.error_code {
            0 => {
                return Producer {
                    id: response.producer_id.0,
                    epoch: response.producer_epoch,
                }
            }
            // COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, CONCURRENT_TRANSACTIONS.
            14 | 15 | 51 if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            code => panic!("InitProducerId: error {code}"),
        }
    }
}

/// Calls `call` until it answers something other than the errors clients retry (the
/// coordinator loading, or ending the previous transaction), within [`DEADLINE`].
pub fn retried_by_transactional_clients(mut call: impl FnMut() -> i16) -> i16 {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let code = call();
        let retriable = [
            kafka_protocol::ResponseError::CoordinatorLoadInProgress.code(),
            kafka_protocol::ResponseError::CoordinatorNotAvailable.code(),
            kafka_protocol::ResponseError::ConcurrentTransactions.code(),
        ];
        if !retriable.contains(&code) || std::time::Instant::now() >= deadline {
            return code;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// AddPartitionsToTxn (v3) of `topic`'s `partition` to `producer`'s transaction, retried as
/// clients do; panics unless it is added.
pub fn add_partition_to_transaction(
    client: &mut Client,
    transactional_id: &str,
    producer: Producer,
    topic: &str,
    partition: i32,
) {
    use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
    use kafka_protocol::messages::{
        AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ProducerId, TransactionalId,
    };
    let request = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(StrBytes::from_string(
            transactional_id.to_owned(),
        )))
        .with_v3_and_below_producer_id(ProducerId(producer.id))
        .with_v3_and_below_producer_epoch(producer.epoch)
        .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![partition])]);
    let code = retried_by_transactional_clients(|| {
        let response: AddPartitionsToTxnResponse =
            client.call(ApiKey::AddPartitionsToTxn, 3, &request);
        response.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code
    });
    assert_eq!(code, 0, "AddPartitionsToTxn");
}

/// EndTxn (v3) of `producer`'s transaction, committing or aborting it, retried as clients do;
/// panics unless it is accepted.
pub fn end_transaction(
    client: &mut Client,
    transactional_id: &str,
    producer: Producer,
    committed: bool,
) {
    use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse, ProducerId, TransactionalId};
    let request = EndTxnRequest::default()
        .with_transactional_id(TransactionalId(StrBytes::from_string(
            transactional_id.to_owned(),
        )))
        .with_producer_id(ProducerId(producer.id))
        .with_producer_epoch(producer.epoch)
        .with_committed(committed);
    let code = retried_by_transactional_clients(|| {
        let response: EndTxnResponse = client.call(ApiKey::EndTxn, 3, &request);
        response.error_code
    });
    assert_eq!(code, 0, "EndTxn");
}
