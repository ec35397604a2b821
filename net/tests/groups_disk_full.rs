//! The group coordinator on a full disk: a commit its log refused is not remembered.
//!
//! Runs the log on a tmpfs mounted for the test (engine's `SmallFilesystem`, with engine's test
//! helpers), so it needs root (CAP_SYS_ADMIN), as the CI runner and the README's test command
//! have.

#[path = "../../engine/tests/common/mod.rs"]
mod engine_common;

use std::rc::Rc;
use std::sync::{mpsc, Arc};

use engine::catalog::Catalog;
use engine::shard::{Runtime, RuntimeConfig, TopicLogConfig};
use engine::LogConfig;
use engine_common::small_config;
use engine_common::small_filesystem::SmallFilesystem;
use net::groups::shard::{FetchOffsets, GroupRequest, GroupsConfig, LocalOffsetsLog, ShardGroups};
use net::groups::{
    prepare_offsets_topic, GroupError, OffsetCommit, OffsetCommitPartition, PartitionResults,
    TopicPartition,
};

/// A group's commit against a full disk: the committer hears COORDINATOR_NOT_AVAILABLE, the
/// coordinator forgets the change (it reloads what its log holds), and commits work again once
/// space is freed, and survive a restart.
#[test]
fn a_group_commit_refused_for_a_full_disk_is_not_remembered() {
    let filesystem = SmallFilesystem::mount(1024 * 1024);
    let root = filesystem.path().to_path_buf();
    let catalog = Arc::new(Catalog::open(&root).unwrap());
    let groups = GroupsConfig {
        offsets_partitions: prepare_offsets_topic(&catalog, 1).unwrap(),
        ..GroupsConfig::default()
    };
    let log_config = LogConfig {
        // Reserve one block at a time, so the disk fills at a commit, not at the first flush.
        preallocate_bytes: 4096,
        ..small_config()
    };
    let config = RuntimeConfig {
        shard_count: 1,
        cpus: None,
        data_dir: root.clone(),
        log_config: log_config.clone(),
        resources: Default::default(),
        topic_log_config: Some(TopicLogConfig::from_catalog(catalog, log_config)),
        mesh_ring_capacity: 4,
        outbound_queue_capacity: 4,
        retention_check_interval: std::time::Duration::from_secs(300),
        cleaner_check_interval: std::time::Duration::from_secs(300),
        replicated_partitions: None,
        // The disk fills at a segment write: the journal (pre-written) would take the commit.
        journal: None,
        record_rewrite: None,
    };
    let partition = TopicPartition {
        topic: "orders".into(),
        partition: 0,
    };
    // Metadata of 3000 bytes makes every commit need a new 4 KiB block.
    let commit = {
        let partition = partition.clone();
        move |offset: i64| OffsetCommit {
            api_version: net::groups::OFFSET_COMMIT_MEMBER_EPOCH_VERSION,
            group_id: "billing".into(),
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
            partitions: vec![OffsetCommitPartition {
                partition: partition.clone(),
                offset,
                leader_epoch: -1,
                metadata: Some("m".repeat(3000)),
            }],
        }
    };
    let fetch = move || FetchOffsets {
        group_id: "billing".into(),
        partitions: Some(vec![partition.clone()]),
        member: None,
        require_stable: false,
    };
    fn committed(answer: <FetchOffsets as GroupRequest>::Answer) -> Option<i64> {
        answer.unwrap()[0].1.clone().unwrap().map(|c| c.offset)
    }
    fn accepted(answer: &PartitionResults) -> Result<(), GroupError> {
        match answer {
            Ok(results) => results[0].1,
            Err(error) => Err(*error),
        }
    }

    let (report, reports) = mpsc::channel::<Vec<Option<i64>>>();
    let filler = root.join("filler");
    let runtime = {
        let (commit, fetch, filler) = (commit.clone(), fetch.clone(), filler.clone());
        let groups = groups.clone();
        Runtime::start(config.clone(), move |context| {
            let (report, commit, fetch, filler) = (
                report.clone(),
                commit.clone(),
                fetch.clone(),
                filler.clone(),
            );
            let groups = ShardGroups::start(&context, groups.clone(), Rc::new(LocalOffsetsLog));
            async move {
                let mut seen = Vec::new();
                assert_eq!(accepted(&groups.call(0, commit(5)).await), Ok(()));
                // Fill what is left of the disk.
                let mut file = std::fs::File::create(&filler).unwrap();
                while std::io::Write::write_all(&mut file, &[7u8; 16 * 1024]).is_ok() {}
                let mut acknowledged = 5;
                let mut refused = None;
                for offset in 6..40 {
                    match accepted(&groups.call(0, commit(offset)).await) {
                        Ok(()) => acknowledged = offset,
                        Err(error) => {
                            refused = Some(error);
                            break;
                        }
                    }
                }
                assert_eq!(refused, Some(GroupError::CoordinatorNotAvailable));
                seen.push(Some(acknowledged));
                seen.push(committed(groups.call(0, fetch()).await));
                drop(file);
                std::fs::remove_file(&filler).unwrap();
                assert_eq!(accepted(&groups.call(0, commit(100)).await), Ok(()));
                seen.push(committed(groups.call(0, fetch()).await));
                report.send(seen).unwrap();
            }
        })
        .unwrap()
    };
    let seen = reports
        .recv_timeout(std::time::Duration::from_secs(30))
        .unwrap();
    assert_eq!(seen[1], seen[0], "the refused commit is not remembered");
    assert_eq!(seen[2], Some(100), "commits work again once space is freed");
    runtime.shutdown_handle().trigger();
    runtime.join().unwrap();

    let (report, reports) = mpsc::channel::<Option<i64>>();
    let runtime = Runtime::start(config, move |context| {
        let (report, fetch) = (report.clone(), fetch.clone());
        let groups = ShardGroups::start(&context, groups.clone(), Rc::new(LocalOffsetsLog));
        async move {
            report
                .send(committed(groups.call(0, fetch()).await))
                .unwrap();
        }
    })
    .unwrap();
    assert_eq!(
        reports
            .recv_timeout(std::time::Duration::from_secs(30))
            .unwrap(),
        Some(100)
    );
    runtime.shutdown_handle().trigger();
    runtime.join().unwrap();
}
