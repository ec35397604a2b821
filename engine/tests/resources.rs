//! The shard's resource bounds seen from outside: with many more partitions than the file
//! cache may keep open, the process's descriptors for the data stay within the bound, and every
//! partition still reads back (its files reopened on demand), through the shard's commit cycle
//! and journal as a broker's shard runs them.

mod common;

use std::path::Path;
use std::rc::Rc;

use common::*;
use engine::journal::shard_journal_dir;
use engine::log::Committer;
use engine::resources::{self, ResourceLimits};
use engine::{JournalConfig, PartitionLog};

/// Partitions of the test: several times the descriptors the cache may keep open.
const PARTITIONS: usize = 120;
/// The shard's bound on open data files (the smallest a shard accepts).
const OPEN_FILES_MAX: usize = resources::OPEN_FILES_MIN;

/// Descriptors this process holds on files under `dir` (segments, directories, journal).
fn descriptors_under(dir: &Path) -> usize {
    open_under(dir).len()
}

/// The files under `dir` this process holds descriptors of.
fn open_under(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd lists this process's descriptors")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir))
        .collect()
}

/// Descriptors under `dir` that are not the journal's (which is outside the cache's bound).
fn data_descriptors_under(dir: &Path, journal: &JournalConfig) -> usize {
    descriptors_under(dir) - descriptors_under(&shard_journal_dir(dir, 0)).min(journal.files)
}

#[test]
fn descriptors_stay_within_the_bound_with_more_partitions_than_it_allows() {
    run(async {
        let data = tempfile::tempdir().unwrap();
        let data = data.path().canonicalize().unwrap();
        resources::install(ResourceLimits {
            open_files_max: OPEN_FILES_MAX,
            // No tail caches: every read below comes from the files.
            tail_cache_bytes_max: 0,
            ..ResourceLimits::default()
        });
        let journal = small_journal();
        let committer = Committer::with_journal(&shard_journal_dir(&data, 0), 0, journal.clone())
            .await
            .unwrap();
        let mut logs = Vec::new();
        let mut appended = Vec::new();
        for partition in 0..PARTITIONS {
            let log = PartitionLog::open_in(
                &committer,
                data.join(format!("t-{partition}")),
                small_config(),
                system_clock(),
            )
            .await
            .unwrap();
            let batch = tagged_batch(partition as u64, 2, 100, 0);
            let receipt = log.append_durable(batch.clone(), 0).await.unwrap();
            appended.push(as_stored(batch, receipt.base_offset, 0));
            logs.push(Rc::new(log));
            assert!(
                data_descriptors_under(&data, &journal) <= OPEN_FILES_MAX,
                "{} data descriptors open after {} partitions, bound {OPEN_FILES_MAX}",
                data_descriptors_under(&data, &journal),
                partition + 1
            );
        }
        // Every partition reads back, those whose files the cache closed long ago first.
        for (partition, log) in logs.iter().enumerate() {
            assert_eq!(
                read_all(log, 0, 1 << 20).await,
                vec![appended[partition].clone()],
                "partition {partition} reads back what it was given"
            );
            assert!(data_descriptors_under(&data, &journal) <= OPEN_FILES_MAX);
        }
        assert!(resources::current().open_files() <= OPEN_FILES_MAX);
        // A second round of appends (segment files written again after being closed), then a
        // clean close of every log and of the journal, and a reopen of each.
        for (partition, log) in logs.iter().enumerate() {
            let batch = tagged_batch(1000 + partition as u64, 1, 50, 0);
            let receipt = log.append_durable(batch.clone(), 0).await.unwrap();
            assert_eq!(receipt.base_offset, 2);
            appended[partition].extend(as_stored(batch, receipt.base_offset, 0));
        }
        assert!(
            data_descriptors_under(&data, &journal) <= OPEN_FILES_MAX,
            "{} data descriptors open after the second appends: {:?}",
            data_descriptors_under(&data, &journal),
            open_under(&data)
        );
        for log in logs {
            Rc::try_unwrap(log).ok().unwrap().close().await.unwrap();
        }
        committer.close().await.unwrap();
        drop(committer);
        for (partition, expected) in appended.iter().enumerate() {
            let log = PartitionLog::open(
                data.join(format!("t-{partition}")),
                small_config(),
                system_clock(),
            )
            .await
            .unwrap();
            assert_eq!(read_all(&log, 0, 1 << 20).await.concat(), *expected);
            log.close().await.unwrap();
        }
        // glommio closes a dropped DMA file through the ring, a moment after the drop.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !open_under(&data).is_empty() && std::time::Instant::now() < deadline {
            glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(
            open_under(&data),
            Vec::<std::path::PathBuf>::new(),
            "closed logs hold no descriptor"
        );
    });
}
