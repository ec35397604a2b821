//! Criterion micro-benchmarks of the engine's hot paths: CRC-32C, batch validation, index
//! lookup, appends (with and without waiting for `fdatasync`, alone and group-committed) and
//! reads (file and tail cache).
//!
//! Appends and reads run on a glommio executor against a temporary directory on the same
//! filesystem as the system temp dir (set TMPDIR to measure another disk).

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use engine::batch::{self, build};
use engine::index::{OffsetIndex, OffsetIndexEntry};
use engine::{LogConfig, PartitionLog, SystemClock};
use glommio::{LocalExecutor, LocalExecutorBuilder};

/// A batch of `batch_bytes` bytes (one record: the value fills the batch).
fn batch_of_size(batch_bytes: usize) -> Vec<u8> {
    let overhead = build::batch_of(1, 0, 0).len();
    build::batch_of(1, batch_bytes.saturating_sub(overhead + 4), 0)
}

fn executor() -> LocalExecutor {
    LocalExecutorBuilder::default()
        .make()
        .expect("a glommio executor starts")
}

fn bench_crc_and_validation(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("batch");
    for batch_bytes in [1024usize, 64 * 1024] {
        let bytes = batch_of_size(batch_bytes);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("crc32c", batch_bytes),
            &bytes,
            |b, bytes| b.iter(|| crc32c::crc32c(std::hint::black_box(bytes))),
        );
        group.bench_with_input(
            BenchmarkId::new("validate", batch_bytes),
            &bytes,
            |b, bytes| b.iter(|| batch::validate(std::hint::black_box(bytes), usize::MAX).is_ok()),
        );
    }
    group.finish();
}

fn bench_index_lookup(criterion: &mut Criterion) {
    // A 1 GiB segment at the default 4 KiB interval: 262 144 entries.
    let mut index = OffsetIndex::default();
    for entry in 0..262_144u32 {
        index.push(OffsetIndexEntry {
            relative_offset: entry * 4,
            position: entry * 4096,
        });
    }
    let mut probe = 0u32;
    criterion.bench_function("index/floor_by_offset_262144_entries", |b| {
        b.iter(|| {
            probe = probe.wrapping_mul(1_103_515_245).wrapping_add(12_345) % (262_144 * 4);
            index.floor_by_offset(std::hint::black_box(probe))
        })
    });
}

/// Appends `count` copies of `batch` from `appenders` concurrent tasks, each waiting for
/// durability or only for the write, and returns the time from the first append to the last
/// acknowledgement.
async fn timed_appends(batch: Rc<Vec<u8>>, count: u64, appenders: u64, durable: bool) -> Duration {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = LogConfig {
        unflushed_bytes_max: 64 << 20,
        ..LogConfig::default()
    };
    let log = Rc::new(
        PartitionLog::open(dir.path(), config, Rc::new(SystemClock))
            .await
            .expect("open"),
    );
    let start = Instant::now();
    let tasks: Vec<_> = (0..appenders)
        .map(|appender| {
            let (log, batch) = (log.clone(), batch.clone());
            let share = count / appenders + u64::from(appender < count % appenders);
            glommio::spawn_local(async move {
                for _ in 0..share {
                    let receipt = log
                        .append(BytesMut::from(&batch[..]), 0)
                        .await
                        .expect("append");
                    if durable {
                        log.wait_durable(&receipt).await.expect("durable");
                    } else {
                        log.wait_written(&receipt).await.expect("written");
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await;
    }
    start.elapsed()
}

fn bench_appends(criterion: &mut Criterion) {
    let executor = executor();
    let mut group = criterion.benchmark_group("append");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    for (batch_bytes, appenders, durable) in [
        (1024usize, 1u64, false),
        (1024, 1, true),
        (1024, 64, true),
        (64 * 1024, 1, false),
        (64 * 1024, 1, true),
        (64 * 1024, 8, true),
    ] {
        let batch = Rc::new(batch_of_size(batch_bytes));
        group.throughput(Throughput::Bytes(batch.len() as u64));
        let name = format!(
            "{}B_{}appenders_{}",
            batch_bytes,
            appenders,
            if durable { "durable" } else { "written" }
        );
        group.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                let batch = batch.clone();
                executor.run(timed_appends(batch, iterations, appenders, durable))
            })
        });
    }
    group.finish();
}

fn bench_reads(criterion: &mut Criterion) {
    let executor = executor();
    let dir = tempfile::tempdir().expect("temp dir");
    let batch = batch_of_size(16 * 1024);
    let batches = 4096u64;
    let (cold, hot) = executor.run({
        let path = dir.path().to_path_buf();
        let batch = batch.clone();
        async move {
            let config = LogConfig {
                tail_cache_bytes_max: 0,
                ..LogConfig::default()
            };
            let cold = PartitionLog::open(path.join("cold"), config, Rc::new(SystemClock))
                .await
                .expect("open");
            let config = LogConfig {
                tail_cache_bytes_max: 128 << 20,
                ..LogConfig::default()
            };
            let hot = PartitionLog::open(path.join("hot"), config, Rc::new(SystemClock))
                .await
                .expect("open");
            for _ in 0..batches {
                cold.append(BytesMut::from(&batch[..]), 0)
                    .await
                    .expect("append");
                hot.append(BytesMut::from(&batch[..]), 0)
                    .await
                    .expect("append");
            }
            cold.sync().await.expect("sync");
            hot.sync().await.expect("sync");
            (Rc::new(cold), Rc::new(hot))
        }
    });
    let mut group = criterion.benchmark_group("read_1MiB");
    group.throughput(Throughput::Bytes(1 << 20));
    for (name, log) in [("file_range_copied", &cold), ("tail_cache", &hot)] {
        let mut offset = 0u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                let start = offset;
                offset = (offset + 64) % (batches - 64);
                executor.run({
                    let log = log.clone();
                    async move {
                        let slice = log.read(start, 1 << 20, u64::MAX).await.expect("read");
                        let bytes = slice.data.to_vec().expect("bytes");
                        (slice.offset_next, bytes.len())
                    }
                })
            });
        });
    }
    group.finish();
    // A log belongs to its executor: close it there.
    executor.run(async move {
        for log in [cold, hot] {
            if let Ok(log) = Rc::try_unwrap(log) {
                log.close().await.expect("close");
            }
        }
    });
}

criterion_group!(
    benches,
    bench_crc_and_validation,
    bench_index_lookup,
    bench_appends,
    bench_reads
);
criterion_main!(benches);
