//! A full disk: appends fail with `DiskFull`, acknowledged data stays readable, nothing
//! half-written appears, and appends work again once space is freed (an idempotent producer's
//! retry of a failed batch is then written, not mistaken for a duplicate). (The group
//! coordinator on top of a log is `net`'s `tests/groups_disk_full.rs`.)
//!
//! Runs the log on a 512 KiB tmpfs mounted for the test, so it needs root (CAP_SYS_ADMIN),
//! as the CI runner and the README's test command have.

mod common;

use common::small_filesystem::SmallFilesystem;
use common::*;
use engine::{LogConfig, LogError, PartitionLog};

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
