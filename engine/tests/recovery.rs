//! Crash recovery: whatever a crash leaves in the files (a cut anywhere in the last batch, a
//! flipped byte in it, missing or damaged indexes), reopening yields a log of valid, contiguous
//! batches that keeps every batch acknowledged as durable. Damage elsewhere (in the middle of
//! the log, a lost segment file) is `damage.rs`'s subject.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use engine::batch::BatchHeader;
use engine::{LogConfig, PartitionLog};

/// Appends `count` batches durably and drops the log without closing it (a crash after the
/// last acknowledgement). Returns the stored bytes of each batch.
async fn write_and_crash(dir: &Path, config: LogConfig, count: u64) -> Vec<Vec<u8>> {
    let log = PartitionLog::open(dir, config, system_clock())
        .await
        .unwrap();
    let mut stored = Vec::new();
    for tag in 0..count {
        let batch = tagged_batch(tag, 1 + (tag as usize % 3), 50, 1_000 + tag as i64);
        let receipt = log.append_durable(batch.clone(), 5).await.unwrap();
        stored.push(as_stored(batch, receipt.base_offset, 5));
    }
    drop(log);
    stored
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn segment_files(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == extension))
        .collect();
    files.sort();
    files
}

/// Reopens `dir` and checks that the log holds exactly `expected` (each batch valid, offsets
/// contiguous) and still takes appends at the right offset.
async fn reopen_and_check(dir: &Path, config: LogConfig, expected: &[Vec<u8>], context: &str) {
    let log = PartitionLog::open(dir, config, system_clock())
        .await
        .unwrap();
    let recovered = read_all(&log, 0, 1 << 20).await;
    assert_eq!(recovered.len(), expected.len(), "{context}: batch count");
    assert!(recovered == expected, "{context}: recovered batches differ");
    let end = expected.last().map_or(0, |b| {
        BatchHeader::parse(b).unwrap().last_offset() as u64 + 1
    });
    assert_eq!(log.log_end_offset(), end, "{context}: log end");
    let receipt = log
        .append_durable(tagged_batch(99, 1, 5, 0), 5)
        .await
        .unwrap();
    assert_eq!(
        receipt.base_offset, end,
        "{context}: next append follows on"
    );
    log.close().await.unwrap();
}

/// A one-segment log after a crash that followed `count` durable appends, kept pristine in
/// `scratch/original`, from which damaged copies are made.
struct CrashedSegment {
    scratch: tempfile::TempDir,
    config: LogConfig,
    stored: Vec<Vec<u8>>,
    log_name: std::ffi::OsString,
    /// Where the last batch starts and where the data ends (padding may follow).
    last_start: u64,
    data_end: u64,
}

impl CrashedSegment {
    async fn new(count: u64) -> CrashedSegment {
        let scratch = tempfile::tempdir().unwrap();
        let original = scratch.path().join("original");
        let config = LogConfig {
            segment_bytes_max: 1 << 20,
            ..small_config()
        };
        let stored = write_and_crash(&original, config.clone(), count).await;
        let log_name = segment_files(&original, "log")
            .pop()
            .unwrap()
            .file_name()
            .unwrap()
            .to_owned();
        let data_end: u64 = stored.iter().map(|b| b.len() as u64).sum();
        let last_start = data_end - stored.last().unwrap().len() as u64;
        CrashedSegment {
            scratch,
            config,
            stored,
            log_name,
            last_start,
            data_end,
        }
    }

    fn file_bytes(&self) -> u64 {
        let path = self.scratch.path().join("original").join(&self.log_name);
        std::fs::metadata(path).unwrap().len()
    }

    /// Copies the crashed log, lets `damage` change the copy's segment file, reopens the copy
    /// and checks that it holds exactly `expected_batches` of the stored batches.
    async fn check_damaged_copy(
        &self,
        damage: impl FnOnce(&Path),
        expected_batches: usize,
        context: &str,
    ) {
        let copy = self.scratch.path().join("copy");
        copy_dir(&self.scratch.path().join("original"), &copy);
        damage(&copy.join(&self.log_name));
        let expected = &self.stored[..expected_batches];
        reopen_and_check(&copy, self.config.clone(), expected, context).await;
        std::fs::remove_dir_all(&copy).unwrap();
    }
}

#[test]
fn a_cut_at_any_byte_of_the_last_batch_keeps_every_earlier_batch() {
    run(async {
        let crashed = CrashedSegment::new(20).await;
        let (data_end, file_bytes) = (crashed.data_end, crashed.file_bytes());
        assert!(file_bytes >= data_end, "padding after the data is allowed");
        let all = crashed.stored.len();
        // Every byte of the last batch, and a few points in the direct-I/O padding after it.
        for cut in (crashed.last_start..=data_end).chain([data_end + 1, file_bytes]) {
            let cut_file = |path: &Path| {
                let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
                file.set_len(cut).unwrap();
            };
            let expected = if cut >= data_end { all } else { all - 1 };
            crashed
                .check_damaged_copy(cut_file, expected, &format!("cut at {cut}"))
                .await;
        }
    });
}

#[test]
fn a_flipped_byte_in_the_last_batch_drops_only_that_batch() {
    run(async {
        let crashed = CrashedSegment::new(10).await;
        for position in crashed.last_start..crashed.data_end {
            let within = position - crashed.last_start;
            // Bytes 12..16 are the partition leader epoch: outside the CRC in Kafka's format
            // and free to take any value, so no reader can tell a flipped epoch.
            if (12..16).contains(&within) {
                continue;
            }
            let flip_byte = |path: &Path| {
                let mut bytes = std::fs::read(path).unwrap();
                bytes[position as usize] ^= 0x5a;
                std::fs::write(path, &bytes).unwrap();
            };
            crashed
                .check_damaged_copy(
                    flip_byte,
                    crashed.stored.len() - 1,
                    &format!("flip at byte {within} of the last batch"),
                )
                .await;
        }
    });
}

#[test]
fn a_crash_with_many_segments_keeps_every_durable_batch() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let stored = write_and_crash(dir.path(), small_config(), 300).await;
        assert!(segment_files(dir.path(), "log").len() > 3);
        reopen_and_check(dir.path(), small_config(), &stored, "crash").await;
    });
}

#[test]
fn missing_or_damaged_indexes_are_rebuilt_from_the_log() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let stored = write_and_crash(dir.path(), small_config(), 400).await;
        let log = PartitionLog::open(dir.path(), small_config(), system_clock())
            .await
            .unwrap();
        log.close().await.unwrap();
        let indexes = segment_files(dir.path(), "index");
        let time_indexes = segment_files(dir.path(), "timeindex");
        assert!(indexes.len() > 3 && time_indexes.len() == indexes.len());
        assert_eq!(
            indexes.len(),
            segment_files(dir.path(), "log").len() - 1,
            "every sealed segment has its indexes; the small active one, read whole at the \
             next open, none"
        );
        // One index gone, one torn, one pointing past its log, one time index garbled.
        std::fs::remove_file(&indexes[0]).unwrap();
        let torn = std::fs::read(&indexes[1]).unwrap();
        std::fs::write(&indexes[1], &torn[..torn.len() - 3]).unwrap();
        let mut wild = std::fs::read(&indexes[2]).unwrap();
        let last = wild.len() - 4;
        wild[last..].copy_from_slice(&u32::MAX.to_be_bytes());
        std::fs::write(&indexes[2], &wild).unwrap();
        std::fs::write(&time_indexes[3], b"not a time index").unwrap();
        reopen_and_check(dir.path(), small_config(), &stored, "damaged indexes").await;
        // The rebuilt indexes were written back: the next open trusts them.
        assert!(indexes[0].exists());
        let log = PartitionLog::open(dir.path(), small_config(), system_clock())
            .await
            .unwrap();
        assert_eq!(read_all(&log, 0, 1 << 20).await.len(), stored.len() + 1);
        assert!(log.offset_for_timestamp(1_150).await.unwrap().is_some());
    });
}

#[test]
fn unwritten_appends_are_lost_in_a_crash_but_never_half_kept() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), small_config(), system_clock())
            .await
            .unwrap();
        let mut durable = Vec::new();
        for tag in 0..50 {
            let batch = tagged_batch(tag, 2, 40, 0);
            let receipt = log.append_durable(batch.clone(), 0).await.unwrap();
            durable.push(as_stored(batch, receipt.base_offset, 0));
        }
        // Appended, never waited for: the crash may or may not keep them, wholly.
        for tag in 50..80 {
            log.append(tagged_batch(tag, 2, 40, 0), 0).await.unwrap();
        }
        drop(log);
        let log = PartitionLog::open(dir.path(), small_config(), system_clock())
            .await
            .unwrap();
        let recovered = read_all(&log, 0, 1 << 20).await;
        assert!(recovered.len() >= durable.len());
        assert_eq!(&recovered[..durable.len()], &durable[..]);
    });
}

/// The direct-I/O padding (zeros up to the end of the last 4 KiB page) after the last batch of
/// a log that crashed, or closed small, is left in place: cutting it is an `ftruncate` inside
/// a page, which makes the kernel read that page back from the disk (about half a millisecond
/// per partition, the largest cost of a restart after `kill -9` at 10 000 partitions). It is
/// never served, the next write overwrites it, and a crash after that still finds exactly what
/// was acknowledged. Anything in the last page that is not zeros, or a file longer than the
/// page, is a torn write and still cut off.
#[test]
fn a_crash_keeps_the_last_pages_padding_uncut_and_serves_exactly_the_acknowledged_batches() {
    run(async {
        let crashed = CrashedSegment::new(6).await;
        let (data_end, padded) = (crashed.data_end, crashed.file_bytes());
        assert!(
            data_end % 4096 != 0 && padded == data_end.next_multiple_of(4096),
            "the crash left the write's padding: {data_end} bytes of data, {padded} in the file"
        );
        let copy = crashed.scratch.path().join("copy");
        let config = crashed.config.clone();
        let read_back = |dir: PathBuf| {
            let config = config.clone();
            async move {
                let log = PartitionLog::open(&dir, config, system_clock())
                    .await
                    .unwrap();
                let batches = read_all(&log, 0, 1 << 20).await;
                (log, batches)
            }
        };
        let file_bytes = |dir: &Path| {
            std::fs::metadata(dir.join(&crashed.log_name))
                .unwrap()
                .len()
        };

        // Zeros only after the data, up to the page end: the padding stays, nothing else moves.
        copy_dir(&crashed.scratch.path().join("original"), &copy);
        let (log, batches) = read_back(copy.clone()).await;
        assert!(
            batches == crashed.stored,
            "exactly the acknowledged batches"
        );
        assert_eq!(
            file_bytes(&copy),
            padded,
            "the open did not cut the padding"
        );
        let end = log.log_end_offset();
        let next = tagged_batch(77, 2, 30, 0);
        let receipt = log.append_durable(next.clone(), 5).await.unwrap();
        assert_eq!(receipt.base_offset, end, "the next append follows on");
        let mut expected = crashed.stored.clone();
        expected.push(as_stored(next, end, 5));
        // A crash again: the new batch was written over the padding, right after the others.
        drop(log);
        let (log, batches) = read_back(copy.clone()).await;
        assert!(batches == expected, "after a second crash");
        // A clean close of the small segment keeps the padding too, and the clean open
        // reads exactly the batches.
        log.close().await.unwrap();
        assert!(copy.join("clean-shutdown").exists());
        let data_now: u64 = expected.iter().map(|b| b.len() as u64).sum();
        assert_eq!(file_bytes(&copy), data_now.next_multiple_of(4096));
        let (log, batches) = read_back(copy.clone()).await;
        assert!(batches == expected, "after a clean close");
        let receipt = log
            .append_durable(tagged_batch(78, 1, 5, 0), 5)
            .await
            .unwrap();
        assert_eq!(receipt.base_offset, end + 2);
        log.close().await.unwrap();
        std::fs::remove_dir_all(&copy).unwrap();

        // A torn write in the last page (the start of a batch that never got its bytes): cut
        // at the data's end, never served, and the next append lands right after the data.
        let torn_header = |path: &Path| {
            let mut bytes = std::fs::read(path).unwrap();
            let at = data_end as usize;
            bytes[at..at + 8].copy_from_slice(&(crashed.stored.len() as i64).to_be_bytes());
            bytes[at + 8..at + 12].copy_from_slice(&500i32.to_be_bytes());
            std::fs::write(path, &bytes).unwrap();
        };
        // The file grew a page the write never filled: zeros, but past the last page.
        let grown = |path: &Path| {
            let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
            file.set_len(padded + 4096).unwrap();
        };
        for (name, damage) in [
            ("a torn header", &torn_header as &dyn Fn(&Path)),
            ("a grown file", &grown),
        ] {
            copy_dir(&crashed.scratch.path().join("original"), &copy);
            damage(&copy.join(&crashed.log_name));
            let (log, batches) = read_back(copy.clone()).await;
            assert!(
                batches == crashed.stored,
                "{name}: the acknowledged batches"
            );
            assert_eq!(file_bytes(&copy), data_end, "{name}: cut at the data's end");
            let next = tagged_batch(79, 1, 20, 0);
            let receipt = log.append_durable(next.clone(), 5).await.unwrap();
            assert_eq!(
                receipt.base_offset, end,
                "{name}: the next append follows on"
            );
            drop(log);
            let mut expected = crashed.stored.clone();
            expected.push(as_stored(next, end, 5));
            let (log, batches) = read_back(copy.clone()).await;
            assert!(batches == expected, "{name}: after a second crash");
            drop(log);
            std::fs::remove_dir_all(&copy).unwrap();
        }
    });
}
