//! A transaction's markers on a broker alone: `transactions::markers::write_markers`, run on
//! one shard, appends the COMMIT marker to partitions of any shard, each readable afterwards
//! as the control batch Kafka's clients expect (after the data already there), and answers a
//! partition that does not exist with UNKNOWN_TOPIC_OR_PARTITION.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use bytes::BytesMut;
use engine::batch::build::{batch, TestRecord};
use engine::batch::{read_transaction_marker, BatchHeader, TransactionMarker};
use engine::catalog::Catalog;
use engine::credentials::Credentials;
use engine::quotas::ClientQuotas;
use engine::shard::{owner_shard, Durability, PartitionId, Runtime, RuntimeConfig, TopicLogConfig};
use engine::LogConfig;
use kafka_protocol::ResponseError;
use net::broker::{Broker, BrokerConfig};
use net::groups::shard::{GroupsConfig, LocalOffsetsLog, ShardGroups};
use net::metrics::MetricsRegistry;
use net::quotas::QuotaUsage;
use net::transactions::markers::{write_markers, MarkerWrite};
use net::transactions::{ShardTransactions, TransactionsConfig};

const SHARDS: usize = 2;
const TOPIC: &str = "orders";
const PARTITIONS: u32 = 6;

/// What shard 0 saw: each partition's result code, then each written partition's batches
/// (offset, header, marker if any).
type Seen = (Vec<i16>, Vec<Vec<(BatchHeader, Option<TransactionMarker>)>>);

#[test]
fn a_commit_marker_reaches_partitions_on_every_shard_of_a_broker_alone() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Arc::new(Catalog::open(dir.path()).unwrap());
    catalog
        .create_topic(TOPIC, i64::from(PARTITIONS), BTreeMap::new(), false)
        .unwrap();
    let mut groups = GroupsConfig::default();
    groups.offsets_partitions =
        net::groups::prepare_offsets_topic(&catalog, groups.offsets_partitions).unwrap();
    // A partition of each shard; the one on shard 1 has a producer's batch before the marker.
    let on_shard = |shard: usize| {
        (0..PARTITIONS)
            .find(|partition| owner_shard(&PartitionId::new(TOPIC, *partition), SHARDS) == shard)
            .expect("a partition on each shard")
    };
    let (here, elsewhere) = (on_shard(0), on_shard(1));
    let marker = TransactionMarker {
        producer_id: 7,
        producer_epoch: 3,
        coordinator_epoch: 2,
        committed: true,
    };
    let log_config = LogConfig::default();
    let config = RuntimeConfig {
        shard_count: SHARDS,
        cpus: None,
        data_dir: dir.path().to_path_buf(),
        log_config: log_config.clone(),
        resources: Default::default(),
        topic_log_config: Some(TopicLogConfig::from_catalog(
            catalog.clone(),
            log_config.clone(),
        )),
        mesh_ring_capacity: 64,
        outbound_queue_capacity: 64,
        retention_check_interval: Duration::from_secs(300),
        cleaner_check_interval: Duration::from_secs(300),
        replicated_partitions: None,
        journal: Some(engine::JournalConfig::small()),
        record_rewrite: None,
    };
    let metrics = MetricsRegistry::new(SHARDS);
    let broker_config = BrokerConfig {
        node_id: 0,
        advertised: vec![net::listener::Endpoint {
            name: net::listener::ListenerName::plaintext(),
            host: "127.0.0.1".into(),
            port: 9092,
        }],
        cluster_id: "test".into(),
        auto_create_topics: false,
        default_partitions: 1,
        fetch_wait_ms_max: 1_000,
        log: log_config,
        sasl: Default::default(),
        authorizer: Default::default(),
    };
    let (report, reports) = mpsc::channel::<Seen>();
    let runtime = Runtime::start(config, move |context| {
        let report = report.clone();
        let catalog = catalog.clone();
        let metrics = metrics.shard(context.shard_id());
        let broker_config = broker_config.clone();
        let groups = groups.clone();
        async move {
            if context.shard_id() != 0 {
                return;
            }
            let groups = ShardGroups::start(&context, groups, Rc::new(LocalOffsetsLog));
            let transactions = ShardTransactions::start(
                &context,
                TransactionsConfig::default(),
                Rc::new(LocalOffsetsLog),
            );
            let broker = Broker::new(
                context.clone(),
                catalog,
                Arc::new(Credentials::in_memory(Default::default())),
                Arc::new(QuotaUsage::new(Arc::new(ClientQuotas::in_memory(
                    Default::default(),
                )))),
                Arc::new(engine::acls::Acls::in_memory(Default::default())),
                broker_config,
                metrics,
                None,
                groups,
                transactions,
            );
            let data = batch(&[TestRecord {
                key: None,
                value: b"before the marker".to_vec(),
                timestamp_ms: 1,
            }]);
            context
                .append(
                    PartitionId::new(TOPIC, elsewhere),
                    BytesMut::from(&data[..]),
                    Durability::Durable,
                )
                .await
                .unwrap();
            let partitions = vec![
                (TOPIC.to_owned(), elsewhere as i32),
                ("missing".to_owned(), 0),
                (TOPIC.to_owned(), here as i32),
                (TOPIC.to_owned(), -1),
            ];
            let write = MarkerWrite {
                marker,
                partitions: partitions.clone(),
            };
            let results = write_markers(&broker, write).await;
            let answered: Vec<(String, i32)> = results
                .iter()
                .map(|(partition, _)| partition.clone())
                .collect();
            assert_eq!(answered, partitions, "one result per partition, in order");
            let codes = results
                .iter()
                .map(|(_, result)| result.as_ref().map_or_else(|error| error.code, |()| 0))
                .collect();
            let mut logs = Vec::new();
            for partition in [elsewhere, here] {
                let read = context
                    .read(PartitionId::new(TOPIC, partition), 0, 1 << 20)
                    .await
                    .unwrap();
                let bytes = read.data.to_vec().unwrap();
                let mut batches = Vec::new();
                let mut rest = &bytes[..];
                while let Some(header) = BatchHeader::parse(rest) {
                    let size = header.size_bytes as usize;
                    let marker = read_transaction_marker(&rest[..size]).unwrap();
                    batches.push((header, marker));
                    rest = &rest[size..];
                }
                logs.push(batches);
            }
            report.send((codes, logs)).unwrap();
        }
    })
    .unwrap();
    let (codes, logs) = reports.recv_timeout(Duration::from_secs(60)).unwrap();
    runtime.shutdown_handle().trigger();
    runtime.join().unwrap();

    let unknown = ResponseError::UnknownTopicOrPartition.code();
    assert_eq!(codes, vec![0, unknown, 0, unknown]);
    let [elsewhere_log, here_log] = &logs[..] else {
        panic!("two partitions read: {logs:?}");
    };
    // The producer's batch, then the marker after it.
    assert_eq!(elsewhere_log.len(), 2, "{elsewhere_log:?}");
    assert_eq!(elsewhere_log[0].1, None);
    assert_eq!(here_log.len(), 1, "{here_log:?}");
    for (header, read) in [&elsewhere_log[1], &here_log[0]] {
        assert_eq!(*read, Some(marker));
        assert!(
            header.is_control() && header.is_transactional(),
            "{header:?}"
        );
        assert_eq!(
            (header.producer_id, header.producer_epoch),
            (marker.producer_id, marker.producer_epoch)
        );
    }
    assert_eq!(elsewhere_log[1].0.base_offset, 1);
    assert_eq!(here_log[0].0.base_offset, 0);
}
