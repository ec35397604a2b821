//! An in-process broker on a free loopback port (the same shards, listener and handlers as
//! `ferrite serve`), and a minimal blocking Kafka client that frames requests with
//! kafka-protocol and reads responses back.

#![allow(dead_code)] // Each test binary uses its own subset.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use engine::catalog::Catalog;
use engine::shard::listen::ListenReservation;
use engine::shard::{Runtime, RuntimeConfig, TopicLogConfig};
use engine::LogConfig;
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use net::broker::BrokerConfig;
use net::connection::ConnectionConfig;
use net::connection_limits::ConnectionLimits;
use net::metrics::MetricsRegistry;
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
        advertised_host: "127.0.0.1".into(),
        advertised_port: i32::from(address.port()),
        cluster_id: "test".into(),
        auto_create_topics: true,
        default_partitions: 2,
        fetch_wait_ms_max: 30_000,
        log: log_config.clone(),
    };
    let mut groups = engine::shard::GroupsConfig::default();
    // Tests need not wait for more members before a group's first rebalance, and may use
    // session timeouts short enough to see them expire.
    groups.coordinator.initial_rebalance_delay_ms = 0;
    groups.coordinator.session_timeout_ms_min = 100;
    engine::shard::prepare_offsets_topic(&catalog, &mut groups).unwrap();
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
        groups,
        replicated_partitions: None,
        // Small journal files, so that tests go round the ring.
        journal: Some(engine::JournalConfig::small()),
    };
    let (bound, bound_shards) = std::sync::mpsc::channel();
    let setup = ShardSetup {
        catalog,
        broker: broker_config,
        metrics: metrics.clone(),
        // Short, so that tests see the partition metrics soon.
        metrics_snapshot_interval: std::time::Duration::from_millis(50),
        listen: address,
        connection: ConnectionConfig::default(),
        limits: Arc::new(ConnectionLimits::unlimited()),
    };
    let runtime = Runtime::start(config, move |context| {
        let bound = bound.clone();
        net::server::serve_shard(context, setup.clone(), None, move |result| {
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
