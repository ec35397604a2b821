//! `engine-bench`: drives partition logs of one shard the way a broker would and reports
//! append throughput and acknowledgement latency as one JSON line.
//!
//! Three questions it answers (see `bench/README.md`):
//! - large sequential appends that wait for `fdatasync`: what fraction of the disk's direct
//!   write bandwidth (fio, same directory) does the log reach?
//! - many small concurrent appends that wait for durability: how many appends per second does
//!   group commit give, against one `fdatasync` per append?
//! - the same spread over many partitions of the shard (`--partitions`): does the cost of a
//!   durable append stay flat as the partition count grows?

use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use clap::Parser;
use engine::batch::build;
use engine::{CommitStats, Committer, JournalConfig, LogConfig, PartitionLog, SystemClock};
use ferrite_bench::latency;
use serde::Serialize;

#[derive(Parser, Debug)]
#[command(about = "Append throughput and latency of one Ferrite partition log")]
struct Arguments {
    /// Size of each appended record batch, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    batch_bytes: usize,
    /// Concurrent appenders (tasks on one shard), each with one append in flight.
    #[arg(long, default_value_t = 1)]
    appenders: u64,
    /// Partition logs on the shard; appender `i` appends to partition `i % partitions`.
    #[arg(long, default_value_t = 1)]
    partitions: u64,
    /// Size of each file of the shard's journal (4 files), as `ferrite serve
    /// --journal-file-bytes`; 0: no journal, every append goes to its segment.
    #[arg(long, default_value_t = 32 << 20)]
    journal_file_bytes: u64,
    /// Acknowledge after fdatasync (acks=all); without it, after the write (acks=1).
    #[arg(long)]
    durable: bool,
    /// Stop after this many seconds...
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// ...or after this many MiB, whichever comes first.
    #[arg(long, default_value_t = 4096)]
    total_mib: u64,
    /// Directory for the log (a fresh subdirectory is created and removed). Put it on the
    /// disk being measured, next to fio's test file.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Bytes of queued unwritten data before appends wait.
    #[arg(long, default_value_t = 64 << 20)]
    unflushed_bytes_max: usize,
    /// Bytes per concurrent direct write within a flush.
    #[arg(long, default_value_t = 1 << 20)]
    write_chunk_bytes: usize,
}

#[derive(Serialize)]
struct Report {
    batch_bytes: usize,
    appenders: u64,
    partitions: u64,
    durable: bool,
    appends: u64,
    bytes: u64,
    seconds: f64,
    appends_per_s: f64,
    mib_per_s: f64,
    flushes: u64,
    syncs: u64,
    journal_file_bytes: u64,
    commit: CommitReport,
    ack_latency_us: Quantiles,
}

/// The shard commit cycle's counters ([`CommitStats`]).
#[derive(Serialize)]
struct CommitReport {
    journal_writes: u64,
    journal_syncs: u64,
    journal_durable_writes: u64,
    journal_batches: u64,
    direct_writes: u64,
    segment_writes: u64,
    files_released: u64,
}

impl From<CommitStats> for CommitReport {
    fn from(stats: CommitStats) -> Self {
        CommitReport {
            journal_writes: stats.journal_writes,
            journal_syncs: stats.journal_syncs,
            journal_durable_writes: stats.journal_durable_writes,
            journal_batches: stats.journal_batches,
            direct_writes: stats.direct_writes,
            segment_writes: stats.segment_writes,
            files_released: stats.files_released,
        }
    }
}

#[derive(Serialize)]
struct Quantiles {
    p50: u64,
    p99: u64,
    #[serde(rename = "p99.9")]
    p99_9: u64,
    max: u64,
}

fn main() {
    let arguments = Arguments::parse();
    let report = glommio::LocalExecutorBuilder::default()
        .make()
        .unwrap_or_else(|error| {
            eprintln!("engine-bench: cannot start a glommio executor: {error}");
            std::process::exit(2)
        })
        .run(run(arguments));
    match report {
        Ok(report) => println!(
            "{}",
            serde_json::to_string(&report).expect("a report serialises")
        ),
        Err(message) => {
            eprintln!("engine-bench: {message}");
            std::process::exit(1);
        }
    }
}

async fn run(arguments: Arguments) -> Result<Report, String> {
    let dir = tempfile::Builder::new()
        .prefix("engine-bench-")
        .tempdir_in(&arguments.dir)
        .map_err(|error| format!("cannot create a directory in {:?}: {error}", arguments.dir))?;
    let config = LogConfig {
        unflushed_bytes_max: arguments.unflushed_bytes_max,
        batch_bytes_max: arguments
            .batch_bytes
            .max(LogConfig::default().batch_bytes_max),
        write_chunk_bytes: arguments.write_chunk_bytes,
        ..LogConfig::default()
    };
    if arguments.partitions == 0 {
        return Err("--partitions must be at least 1".into());
    }
    let committer = match arguments.journal_file_bytes {
        0 => Committer::new(),
        file_bytes => {
            let journal = JournalConfig {
                file_bytes,
                ..JournalConfig::default()
            };
            Committer::with_journal(&dir.path().join("journal"), 0, journal)
                .await
                .map_err(|error| error.to_string())?
        }
    };
    let mut logs = Vec::new();
    for partition in 0..arguments.partitions {
        let log = PartitionLog::open_in(
            &committer,
            dir.path().join(format!("bench-{partition}")),
            config.clone(),
            Rc::new(SystemClock),
        )
        .await
        .map_err(|error| error.to_string())?;
        logs.push(Rc::new(log));
    }
    let overhead = build::batch_of(1, 0, 0).len() + 4;
    let batch = Rc::new(build::batch_of(
        1,
        arguments.batch_bytes.saturating_sub(overhead),
        0,
    ));
    let deadline = Duration::from_secs_f64(arguments.seconds);
    let bytes_max = arguments.total_mib << 20;
    let start = Instant::now();
    let tasks: Vec<_> = (0..arguments.appenders)
        .map(|appender| {
            let log = logs[(appender % arguments.partitions) as usize].clone();
            let batch = batch.clone();
            let durable = arguments.durable;
            let appenders = arguments.appenders;
            glommio::spawn_local(async move {
                let mut latency_us = latency::histogram_us();
                let mut bytes = 0u64;
                while start.elapsed() < deadline && bytes * appenders < bytes_max {
                    let sent = Instant::now();
                    let receipt = log.append(BytesMut::from(&batch[..]), 0).await?;
                    if durable {
                        log.wait_durable(&receipt).await?;
                    } else {
                        log.wait_written(&receipt).await?;
                    }
                    latency::record(&mut latency_us, sent.elapsed());
                    bytes += batch.len() as u64;
                }
                Ok::<_, engine::LogError>(latency_us)
            })
        })
        .collect();
    let mut latency_us = latency::histogram_us();
    for task in tasks {
        let histogram = task.await.map_err(|error| error.to_string())?;
        latency_us
            .add(&histogram)
            .map_err(|error| error.to_string())?;
    }
    let seconds = start.elapsed().as_secs_f64();
    let appends = latency_us.len();
    let bytes = appends * batch.len() as u64;
    let (flushes, syncs) = logs.iter().fold((0, 0), |(flushes, syncs), log| {
        let stats = log.stats();
        (flushes + stats.flushes, syncs + stats.syncs)
    });
    Ok(Report {
        batch_bytes: batch.len(),
        appenders: arguments.appenders,
        partitions: arguments.partitions,
        durable: arguments.durable,
        appends,
        bytes,
        seconds,
        appends_per_s: appends as f64 / seconds,
        mib_per_s: bytes as f64 / seconds / f64::from(1 << 20),
        flushes,
        syncs,
        journal_file_bytes: arguments.journal_file_bytes,
        commit: committer.stats().into(),
        ack_latency_us: Quantiles {
            p50: latency_us.value_at_quantile(0.5),
            p99: latency_us.value_at_quantile(0.99),
            p99_9: latency_us.value_at_quantile(0.999),
            max: latency_us.max(),
        },
    })
}
