//! A full disk: appends fail with `DiskFull`, acknowledged data stays readable, nothing
//! half-written appears, and appends work again once space is freed (an idempotent producer's
//! retry of a failed batch is then written, not mistaken for a duplicate). The group
//! coordinator on top of a log does not remember a commit its log refused.
//!
//! Runs the log on a 512 KiB tmpfs mounted for the test, so it needs root (CAP_SYS_ADMIN),
//! as the CI runner and the README's test command have.

mod common;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use common::*;
use engine::{LogConfig, LogError, PartitionLog};

/// A small tmpfs, unmounted (lazily) when dropped.
struct SmallFilesystem {
    mount_point: tempfile::TempDir,
}

impl SmallFilesystem {
    fn mount(size_bytes: u64) -> SmallFilesystem {
        let mount_point = tempfile::tempdir().unwrap();
        let target = CString::new(mount_point.path().as_os_str().as_bytes()).unwrap();
        let options = CString::new(format!("size={size_bytes}")).unwrap();
        // SAFETY: every pointer is a NUL-terminated string that outlives the call.
        let result = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                options.as_ptr().cast(),
            )
        };
        assert_eq!(
            result,
            0,
            "mounting a test tmpfs failed ({}); this test needs root",
            std::io::Error::last_os_error()
        );
        SmallFilesystem { mount_point }
    }

    fn path(&self) -> &Path {
        self.mount_point.path()
    }
}

impl Drop for SmallFilesystem {
    fn drop(&mut self) {
        let target = CString::new(self.mount_point.path().as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path that outlives the call.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

/// On the small filesystem at `root`: a 128 KiB filler file (delete it to free space), and a
/// partition directory with a log configuration that rolls every 64 KiB.
fn fill_and_prepare(root: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, LogConfig) {
    let filler = root.join("filler");
    std::fs::write(&filler, vec![7u8; 128 * 1024]).unwrap();
    let config = LogConfig {
        segment_bytes_max: 64 * 1024,
        ..small_config()
    };
    (filler, root.join("partition"), config)
}

#[test]
fn a_full_disk_fails_appends_cleanly_and_recovers_when_space_returns() {
    let filesystem = SmallFilesystem::mount(512 * 1024);
    let root = filesystem.path().to_path_buf();
    run(async move {
        let (filler, dir, config) = fill_and_prepare(&root);
        let log = PartitionLog::open(&dir, config.clone(), system_clock())
            .await
            .unwrap();
        let mut acknowledged = Vec::new();
        let full_error = loop {
            let tag = acknowledged.len() as u64;
            let batch = tagged_batch(tag, 4, 2000, 0);
            match log.append_durable(batch.clone(), 0).await {
                Ok(receipt) => acknowledged.push(as_stored(batch, receipt.base_offset, 0)),
                Err(error) => break error,
            }
            assert!(acknowledged.len() < 1000, "a 512 KiB disk must fill up");
        };
        assert!(
            matches!(full_error, LogError::DiskFull { .. }),
            "expected DiskFull, got {full_error:?}"
        );
        assert!(!acknowledged.is_empty());
        let end_after_failure = log.log_end_offset();
        assert_eq!(
            read_all(&log, 0, 1 << 20).await,
            acknowledged,
            "acknowledged data stays readable, nothing else appears"
        );
        // Still full: still refused, still unchanged.
        assert!(log
            .append_durable(tagged_batch(500, 4, 2000, 0), 0)
            .await
            .is_err());
        assert_eq!(log.log_end_offset(), end_after_failure);
        std::fs::remove_file(&filler).unwrap();
        let batch = tagged_batch(501, 4, 2000, 0);
        let receipt = log.append_durable(batch.clone(), 0).await.unwrap();
        assert_eq!(receipt.base_offset, end_after_failure);
        acknowledged.push(as_stored(batch, receipt.base_offset, 0));
        log.close().await.unwrap();
        let log = PartitionLog::open(&dir, config, system_clock())
            .await
            .unwrap();
        assert_eq!(read_all(&log, 0, 1 << 20).await, acknowledged);
    });
}

#[test]
fn a_retry_of_a_batch_lost_to_a_full_disk_is_written_once_space_returns() {
    let filesystem = SmallFilesystem::mount(512 * 1024);
    let root = filesystem.path().to_path_buf();
    run(async move {
        let (filler, dir, config) = fill_and_prepare(&root);
        let log = PartitionLog::open(&dir, config, system_clock())
            .await
            .unwrap();
        let mut sequence = 0;
        let failed_sequence = loop {
            match log
                .append_durable(producer_batch(1, 0, sequence, 40), 0)
                .await
            {
                Ok(_) => sequence += 40,
                Err(LogError::DiskFull { .. }) => break sequence,
                Err(other) => panic!("expected DiskFull, got {other:?}"),
            }
            assert!(sequence < 40_000, "a 512 KiB disk must fill up");
        };
        let end_after_failure = log.log_end_offset();
        std::fs::remove_file(&filler).unwrap();
        let retry = log
            .append_durable(producer_batch(1, 0, failed_sequence, 40), 0)
            .await
            .unwrap();
        assert!(!retry.duplicate, "the failed batch was never written");
        assert_eq!(retry.base_offset, end_after_failure);
        let again = log
            .append(producer_batch(1, 0, failed_sequence, 40), 0)
            .await
            .unwrap();
        assert!(again.duplicate);
        assert_eq!(again.base_offset, retry.base_offset);
    });
}

/// A group's commit against a full disk: the committer hears COORDINATOR_NOT_AVAILABLE, the
/// coordinator forgets the change (it reloads what its log holds), and commits work again once
/// space is freed, and survive a restart.
#[test]
fn a_group_commit_refused_for_a_full_disk_is_not_remembered() {
    use engine::catalog::Catalog;
    use engine::groups::{GroupError, OffsetCommit, OffsetCommitPartition, TopicPartition};
    use engine::shard::{prepare_offsets_topic, GroupCall, GroupReply, Runtime, RuntimeConfig};
    use engine::shard::{GroupsConfig, TopicLogConfig};
    use std::sync::{mpsc, Arc};

    let filesystem = SmallFilesystem::mount(1024 * 1024);
    let root = filesystem.path().to_path_buf();
    let catalog = Arc::new(Catalog::open(&root).unwrap());
    let mut groups = GroupsConfig {
        offsets_partitions: 1,
        ..GroupsConfig::default()
    };
    prepare_offsets_topic(&catalog, &mut groups).unwrap();
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
        groups,
        replicated_partitions: None,
        // The disk fills at a segment write: the journal (pre-written) would take the commit.
        journal: None,
    };
    let partition = TopicPartition {
        topic: "orders".into(),
        partition: 0,
    };
    // Metadata of 3000 bytes makes every commit need a new 4 KiB block.
    let commit = {
        let partition = partition.clone();
        move |offset: i64| {
            GroupCall::CommitOffsets(OffsetCommit {
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
            })
        }
    };
    let fetch = move || GroupCall::FetchOffsets {
        group_id: "billing".into(),
        partitions: Some(vec![partition.clone()]),
    };
    fn committed(reply: GroupReply) -> Option<i64> {
        match reply {
            GroupReply::FetchOffsets(Ok(offsets)) => offsets[0].1.as_ref().map(|c| c.offset),
            other => panic!("unexpected {other:?}"),
        }
    }
    fn accepted(reply: &GroupReply) -> Result<(), GroupError> {
        match reply {
            GroupReply::CommitOffsets(Ok(results)) => results[0].1,
            GroupReply::CommitOffsets(Err(error)) => Err(*error),
            other => panic!("unexpected {other:?}"),
        }
    }

    let (report, reports) = mpsc::channel::<Vec<Option<i64>>>();
    let filler = root.join("filler");
    let runtime = {
        let (commit, fetch, filler) = (commit.clone(), fetch.clone(), filler.clone());
        Runtime::start(config.clone(), move |context| {
            let (report, commit, fetch, filler) = (
                report.clone(),
                commit.clone(),
                fetch.clone(),
                filler.clone(),
            );
            async move {
                let mut seen = Vec::new();
                assert_eq!(accepted(&context.group_call(0, commit(5)).await), Ok(()));
                // Fill what is left of the disk.
                let mut file = std::fs::File::create(&filler).unwrap();
                while std::io::Write::write_all(&mut file, &[7u8; 16 * 1024]).is_ok() {}
                let mut acknowledged = 5;
                let mut refused = None;
                for offset in 6..40 {
                    match accepted(&context.group_call(0, commit(offset)).await) {
                        Ok(()) => acknowledged = offset,
                        Err(error) => {
                            refused = Some(error);
                            break;
                        }
                    }
                }
                assert_eq!(refused, Some(GroupError::CoordinatorNotAvailable));
                seen.push(Some(acknowledged));
                seen.push(committed(context.group_call(0, fetch()).await));
                drop(file);
                std::fs::remove_file(&filler).unwrap();
                assert_eq!(accepted(&context.group_call(0, commit(100)).await), Ok(()));
                seen.push(committed(context.group_call(0, fetch()).await));
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
        async move {
            report
                .send(committed(context.group_call(0, fetch()).await))
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
