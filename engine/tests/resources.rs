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

/// [`data_descriptors_under`] once it is at most `bound`, or after 5 s: glommio closes a file
/// the cache let go of through the ring, a moment after the cache closed it.
async fn data_descriptors_settled(dir: &Path, journal: &JournalConfig, bound: usize) -> usize {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let open = data_descriptors_under(dir, journal);
        if open <= bound || std::time::Instant::now() >= deadline {
            return open;
        }
        glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
    }
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
            let open = data_descriptors_settled(&data, &journal, OPEN_FILES_MAX).await;
            assert!(
                open <= OPEN_FILES_MAX,
                "{open} data descriptors open after {} partitions, bound {OPEN_FILES_MAX}",
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
            assert!(
                data_descriptors_settled(&data, &journal, OPEN_FILES_MAX).await <= OPEN_FILES_MAX
            );
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
        let open = data_descriptors_settled(&data, &journal, OPEN_FILES_MAX).await;
        assert!(
            open <= OPEN_FILES_MAX,
            "{open} data descriptors open after the second appends: {:?}",
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

/// Partitions written steadily with small batches: each journal file holds batches of every
/// one of them, so each release asks every one to write and sync its segment.
const STEADY_PARTITIONS: usize = 64;
/// Descriptors for three quarters of the partitions' segments.
const STEADY_OPEN_FILES_MAX: usize = 48;

#[test]
fn a_released_journal_file_reopens_only_the_segments_beyond_the_file_caches_room() {
    run(async {
        let data = tempfile::tempdir().unwrap();
        let data = data.path().canonicalize().unwrap();
        resources::install(ResourceLimits {
            open_files_max: STEADY_OPEN_FILES_MAX,
            ..ResourceLimits::default()
        });
        // Batches gather in no log for a segment write of their own before the journal wants
        // its file back: the releases make every segment write.
        let journal = JournalConfig {
            segment_write_bytes: 1 << 20,
            unwritten_bytes_max: 16 << 20,
            ..small_journal()
        };
        let config = engine::LogConfig {
            segment_bytes_max: 8 << 20,
            ..small_config()
        };
        let committer = Committer::with_journal(&shard_journal_dir(&data, 0), 0, journal)
            .await
            .unwrap();
        let mut logs = Vec::new();
        for partition in 0..STEADY_PARTITIONS {
            let log = PartitionLog::open_in(
                &committer,
                data.join(format!("t-{partition}")),
                config.clone(),
                system_clock(),
            )
            .await
            .unwrap();
            logs.push(log);
        }
        // One round: a durable append to every partition at once (one journal write).
        let round = |tag: u64| {
            futures::future::join_all(logs.iter().enumerate().map(|(partition, log)| {
                log.append_durable(tagged_batch(tag + partition as u64, 1, 200, 0), 0)
            }))
        };
        let mut tag = 0;
        while committer.stats().files_released < 4 {
            for receipt in round(tag).await {
                receipt.unwrap();
            }
            tag += STEADY_PARTITIONS as u64;
        }
        // In the steady state: every partition has batches in every file.
        let before = committer.stats();
        while committer.stats().files_released < before.files_released + 8 {
            for receipt in round(tag).await {
                receipt.unwrap();
            }
            tag += STEADY_PARTITIONS as u64;
        }
        let after = committer.stats();
        let released = after.files_released - before.files_released;
        let opened = after.files_opened - before.files_opened;
        // Appends mostly go through the journal; on a loaded machine a release may lag and a
        // full journal send a few straight to their segments (`direct_writes`), which open
        // files the same way, so the bound below holds either way.
        assert!(
            after.direct_writes < after.journal_writes,
            "appends went through the journal: {after:?}"
        );
        // A segment only written needs one descriptor: a release must reopen the 16 segments
        // beyond the cache's room, and no more (give or take a few), not all 64.
        let beyond_room = (STEADY_PARTITIONS - STEADY_OPEN_FILES_MAX) as u64;
        assert!(
            opened <= released * (beyond_room + 8),
            "{opened} files opened for {released} released journal files of {STEADY_PARTITIONS} \
             partitions each, {STEADY_OPEN_FILES_MAX} descriptors"
        );
        for log in logs {
            log.close().await.unwrap();
        }
        committer.close().await.unwrap();
    });
}
