//! `cleaner-bench`: what compaction costs, measured in-process on one pinned glommio executor
//! as a broker shard runs it: how fast `PartitionLog::clean` compacts a log, and what it does
//! to the acks=all latency of appends to another log on the same shard while it runs.
//!
//! One run (see `bench/README.md`):
//! 1. fills a "compacted" log with keyed updates drawn uniformly from a set of keys, in small
//!    segments so that nearly all of it is sealed and cleanable;
//! 2. appends to a second log at a fixed rate for a while, nothing else running (the
//!    baseline);
//! 3. appends the same way while `clean` runs on the first log in a low-priority task queue,
//!    until the cleaning ends;
//! 4. optionally, fills a fresh compacted log and repeats 3 with the cleaner in the default
//!    queue, to show what the low priority buys.
//!
//! The appender is open loop: append `i` is due at `i / rate` and its latency runs from that
//! due time to its durable acknowledgement, so a stall charges every append that fell due
//! during it (no coordinated omission).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use clap::Parser;
use engine::batch::build::{self, TestRecord};
use engine::config::CleanupPolicy;
use engine::{CleanStats, Clock, LogConfig, LogError, PartitionLog, SystemClock};
use ferrite_bench::keys::KeyDistribution;
use ferrite_bench::latency::{self, PercentilesMs};
use ferrite_bench::machine::{self, Machine};
use ferrite_bench::schedule::{Step, Timetable};
use glommio::sync::Semaphore;
use glommio::{Latency, Placement, Shares};
use serde::Serialize;

#[derive(Parser, Debug, Serialize)]
#[command(
    about = "Compaction throughput of one Ferrite partition log, and the produce \
                   latency of another log on the same shard with and without the cleaner"
)]
struct Arguments {
    /// Directory for the logs (a fresh subdirectory is created and removed).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Keyed updates written to the compacted log before it is cleaned.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    updates: u64,
    /// Distinct keys the updates are drawn from, uniformly (8-byte keys).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    keys: u64,
    /// Value bytes of each update.
    #[arg(long, default_value_t = 1024)]
    value_bytes: usize,
    /// Updates per record batch in the compacted log.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    records_per_batch: u64,
    /// Segment size of the compacted log (`segment.bytes`).
    #[arg(long, default_value_t = 64 << 20)]
    segment_bytes: u64,
    /// Appends per second to the other log (each acknowledged once durable: acks=all).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    rate: u64,
    /// Bytes of each append (one batch of one record).
    #[arg(long, default_value_t = 1024)]
    append_bytes: usize,
    /// Length of the baseline (no cleaner); the phases with the cleaner last as long as the
    /// cleaning does.
    #[arg(long, default_value_t = 10.0, value_parser = parse_seconds)]
    seconds: f64,
    /// Appends before the baseline that are not measured (the log's first segment and its
    /// preallocation, the first syncs).
    #[arg(long, default_value_t = 1.0, value_parser = parse_seconds)]
    warmup_seconds: f64,
    /// CPU shares of the cleaner's task queue (the default queue, where appends and the
    /// flusher run, has 1000).
    #[arg(long, default_value_t = 100)]
    cleaner_shares: usize,
    /// Bytes per second the cleaning may read plus write (`ferrite serve
    /// --log-cleaner-io-max-bytes-per-second`); unlimited when not given.
    #[arg(long, value_name = "BYTES")]
    cleaner_io_max_bytes_per_second: Option<u64>,
    /// Also clean a second, freshly filled log with the cleaner in the default queue.
    #[arg(long)]
    also_default_queue: bool,
    /// Appends in flight at most; beyond it the appender waits (and its latency grows).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    in_flight_max: u64,
    /// CPU the executor is pinned to, as the broker pins its shards.
    #[arg(long, default_value_t = 0)]
    cpu: usize,
    /// Also write the JSON result to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// A length of time in seconds, as `Duration::from_secs_f64` accepts it.
fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if Duration::try_from_secs_f64(seconds).is_ok() => Ok(seconds),
        _ => Err(format!(
            "expected a number of seconds, at least 0, got {text:?}"
        )),
    }
}

#[derive(Serialize)]
struct Report {
    machine: Machine,
    started_at: String,
    flags: Arguments,
    /// The baseline: appends with nothing else running.
    baseline: AppenderReport,
    /// The cleaner in its own low-priority task queue (as the broker runs it).
    low_priority: CleanerRun,
    /// The cleaner in the default queue, with `--also-default-queue`.
    default_queue: Option<CleanerRun>,
}

#[derive(Serialize)]
struct FillReport {
    updates: u64,
    bytes: u64,
    seconds: f64,
    mib_per_s: f64,
}

#[derive(Serialize)]
struct AppenderReport {
    seconds: f64,
    /// Appends due in the phase (each one acknowledged, or the run fails).
    appends: u64,
    appends_per_s: f64,
    /// From each append's due time to its durable acknowledgement.
    ack_latency_ms: PercentilesMs,
}

#[derive(Serialize)]
struct CleanerRun {
    /// The task queue `clean` ran in.
    queue: String,
    fill: FillReport,
    clean: CleanReport,
    appender: AppenderReport,
}

#[derive(Serialize)]
struct CleanReport {
    seconds: f64,
    /// Time spent inside the cleaning's polls: its CPU time on the shard (the rest of
    /// `seconds` it waited for I/O or for other tasks).
    cpu_seconds: f64,
    /// The longest single poll: the longest the cleaning held the shard without yielding,
    /// a floor for the stall it can cause to every other task whatever its priority.
    poll_max_ms: f64,
    /// Bytes of the segments compacted (each is read twice: map, then copy).
    bytes_read: u64,
    bytes_written: u64,
    /// `bytes_read` per second: MiB of log compacted per second.
    mib_per_s: f64,
    records_removed: u64,
    segments_before: usize,
    segments_after: usize,
    log_bytes_before: u64,
    log_bytes_after: u64,
    /// The log's cleanable dirty ratio (`PartitionLog::cleaning_due`; 0 when a cleaning is not
    /// due).
    dirty_ratio_before: f64,
    dirty_ratio_after: f64,
}

/// When an appender phase stops scheduling appends.
enum PhaseEnd {
    After(Duration),
    When(Rc<Cell<bool>>),
}

/// Where `clean` runs.
#[derive(Clone, Copy)]
enum CleanerQueue {
    LowPriority { shares: usize },
    Default,
}

impl CleanerQueue {
    fn describe(self) -> String {
        match self {
            CleanerQueue::LowPriority { shares } => format!(
                "low-priority queue ({shares} shares against the default queue's 1000, \
                 Latency::NotImportant)"
            ),
            CleanerQueue::Default => "default queue (with the appends and the flusher)".into(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            CleanerQueue::LowPriority { .. } => "low-priority",
            CleanerQueue::Default => "default-queue",
        }
    }
}

fn main() {
    let arguments = Arguments::parse();
    // Before the executor pins this thread: afterwards it sees one CPU.
    let machine = Machine::current();
    let executor = glommio::LocalExecutorBuilder::new(Placement::Fixed(arguments.cpu))
        .name("cleaner-bench")
        .make()
        .unwrap_or_else(|error| {
            eprintln!(
                "cleaner-bench: cannot start a glommio executor on CPU {}: {error}",
                arguments.cpu
            );
            std::process::exit(2)
        });
    let json_path = arguments.json.clone();
    let report = match executor.run(run(arguments, machine)) {
        Ok(report) => report,
        Err(message) => {
            eprintln!("cleaner-bench: {message}");
            std::process::exit(1);
        }
    };
    eprint!("{}", summary(&report));
    let line = serde_json::to_string(&report).expect("a report serialises");
    if let Some(path) = json_path {
        if let Err(error) = std::fs::write(&path, format!("{line}\n")) {
            eprintln!("cleaner-bench: cannot write {}: {error}", path.display());
            std::process::exit(1);
        }
    }
    println!("{line}");
}

async fn run(arguments: Arguments, machine: Machine) -> Result<Report, String> {
    let started_at = machine::utc_timestamp(machine::unix_time_s());
    let dir = tempfile::Builder::new()
        .prefix("cleaner-bench-")
        .tempdir_in(&arguments.dir)
        .map_err(|error| format!("cannot create a directory in {:?}: {error}", arguments.dir))?;
    let produce_config = LogConfig {
        batch_bytes_max: arguments
            .append_bytes
            .max(LogConfig::default().batch_bytes_max),
        ..LogConfig::default()
    };
    let produce_log = Rc::new(open(&dir.path().join("produce"), produce_config).await?);
    let append_batch = Rc::new(build::batch_of(
        1,
        arguments
            .append_bytes
            .saturating_sub(build::batch_of(1, 0, 0).len()),
        0,
    ));
    let appender = Appender {
        log: produce_log.clone(),
        batch: append_batch,
        rate: arguments.rate,
        in_flight_max: arguments.in_flight_max,
    };

    let low_priority_queue = CleanerQueue::LowPriority {
        shares: arguments.cleaner_shares,
    };
    let (compacted_log, fill) =
        fill_compacted_log(&dir.path().join(low_priority_queue.name()), &arguments).await?;
    eprintln!(
        "cleaner-bench: warm-up {} s, then baseline {} s at {} appends/s",
        arguments.warmup_seconds, arguments.seconds, arguments.rate
    );
    appender
        .run(PhaseEnd::After(Duration::from_secs_f64(
            arguments.warmup_seconds,
        )))
        .await?;
    let baseline = appender
        .run(PhaseEnd::After(Duration::from_secs_f64(arguments.seconds)))
        .await?;
    let low_priority =
        clean_while_appending(compacted_log, fill, low_priority_queue, &appender).await?;
    let default_queue = if arguments.also_default_queue {
        let queue = CleanerQueue::Default;
        let (compacted_log, fill) =
            fill_compacted_log(&dir.path().join(queue.name()), &arguments).await?;
        Some(clean_while_appending(compacted_log, fill, queue, &appender).await?)
    } else {
        None
    };
    drop(appender);
    Rc::into_inner(produce_log)
        .expect("every append task has finished")
        .close()
        .await
        .map_err(|error| error.to_string())?;
    Ok(Report {
        machine,
        started_at,
        flags: arguments,
        baseline,
        low_priority,
        default_queue,
    })
}

async fn open(dir: &Path, config: LogConfig) -> Result<PartitionLog, String> {
    PartitionLog::open(dir, config, Rc::new(SystemClock))
        .await
        .map_err(|error| format!("cannot open a log in {}: {error}", dir.display()))
}

/// A compacted log in `dir` holding `--updates` keyed updates, synced.
async fn fill_compacted_log(
    dir: &Path,
    arguments: &Arguments,
) -> Result<(PartitionLog, FillReport), String> {
    let config = LogConfig {
        cleanup_policy: CleanupPolicy::Compact,
        segment_bytes_max: arguments.segment_bytes,
        retention_age_ms_max: None,
        cleaner_io_bytes_per_second_max: arguments.cleaner_io_max_bytes_per_second,
        ..LogConfig::default()
    };
    config.validate()?;
    let log = open(dir, config).await?;
    eprintln!(
        "cleaner-bench: filling {} with {} updates over {} keys",
        dir.display(),
        arguments.updates,
        arguments.keys
    );
    let keys = KeyDistribution::Uniform(arguments.keys);
    let value = vec![0x5a; arguments.value_bytes];
    let start = Instant::now();
    let mut bytes = 0u64;
    let mut update = 0u64;
    while update < arguments.updates {
        let count = arguments.records_per_batch.min(arguments.updates - update);
        let timestamp_ms = SystemClock.now_ms();
        let records: Vec<TestRecord> = (update..update + count)
            .map(|sequence| TestRecord {
                key: keys.key(0, sequence).map(|key| key.to_vec()),
                value: value.clone(),
                timestamp_ms,
            })
            .collect();
        let batch = build::batch(&records);
        bytes += batch.len() as u64;
        log.append(BytesMut::from(&batch[..]), 0)
            .await
            .map_err(|error| format!("filling the compacted log: {error}"))?;
        update += count;
    }
    log.sync()
        .await
        .map_err(|error| format!("syncing the compacted log: {error}"))?;
    let seconds = start.elapsed().as_secs_f64();
    let report = FillReport {
        updates: arguments.updates,
        bytes,
        seconds,
        mib_per_s: bytes as f64 / seconds / f64::from(1 << 20),
    };
    Ok((log, report))
}

/// Runs `clean` on `log` in `queue` while `appender` appends, until the cleaning ends.
async fn clean_while_appending(
    log: PartitionLog,
    fill: FillReport,
    queue: CleanerQueue,
    appender: &Appender,
) -> Result<CleanerRun, String> {
    let log = Rc::new(log);
    let dirty_ratio = |log: &PartitionLog| log.cleaning_due(SystemClock.now_ms()).unwrap_or(0.0);
    let (log_bytes_before, dirty_ratio_before) = (log.size_bytes(), dirty_ratio(&log));
    eprintln!(
        "cleaner-bench: cleaning {} MiB ({} segments) in the {} queue while appending",
        log_bytes_before >> 20,
        log.segment_count(),
        queue.name()
    );
    let done = Rc::new(Cell::new(false));
    let polls = Rc::new(Cell::new(PollTimes::default()));
    let cleaning = {
        let (log, done, polls) = (log.clone(), done.clone(), polls.clone());
        async move {
            let start = Instant::now();
            let result = TimedPolls {
                inner: Box::pin(log.clean(SystemClock.now_ms())),
                times: polls,
            }
            .await;
            done.set(true);
            (result, start.elapsed())
        }
    };
    let task = match queue {
        CleanerQueue::LowPriority { shares } => {
            let handle = glommio::executor().create_task_queue(
                Shares::Static(shares),
                Latency::NotImportant,
                "cleaner",
            );
            glommio::spawn_local_into(cleaning, handle)
                .map_err(|error| format!("cannot spawn the cleaner: {error}"))?
        }
        CleanerQueue::Default => glommio::spawn_local(cleaning),
    };
    let appended = appender.run(PhaseEnd::When(done)).await;
    let (cleaned, elapsed) = task.await;
    let stats: CleanStats = cleaned.map_err(|error| format!("cleaning: {error}"))?;
    let appender_report = appended?;
    let seconds = elapsed.as_secs_f64();
    let polls = polls.get();
    let clean = CleanReport {
        seconds,
        cpu_seconds: polls.total.as_secs_f64(),
        poll_max_ms: polls.max.as_secs_f64() * 1000.0,
        bytes_read: stats.bytes_read,
        bytes_written: stats.bytes_written,
        mib_per_s: stats.bytes_read as f64 / seconds / f64::from(1 << 20),
        records_removed: stats.records_removed,
        segments_before: stats.segments_before,
        segments_after: stats.segments_after,
        log_bytes_before,
        log_bytes_after: log.size_bytes(),
        dirty_ratio_before,
        dirty_ratio_after: dirty_ratio(&log),
    };
    Rc::into_inner(log)
        .expect("the cleaner task has finished")
        .close()
        .await
        .map_err(|error| error.to_string())?;
    Ok(CleanerRun {
        queue: queue.describe(),
        fill,
        clean,
        appender: appender_report,
    })
}

/// The time spent polling a future, in total and at most in one poll.
#[derive(Clone, Copy, Default)]
struct PollTimes {
    total: Duration,
    max: Duration,
}

/// `inner`, with the time each poll takes added to `times`.
struct TimedPolls<F> {
    inner: Pin<Box<F>>,
    times: Rc<Cell<PollTimes>>,
}

impl<F: Future> Future for TimedPolls<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<F::Output> {
        let start = Instant::now();
        let result = self.inner.as_mut().poll(context);
        let elapsed = start.elapsed();
        let times = self.times.get();
        self.times.set(PollTimes {
            total: times.total + elapsed,
            max: times.max.max(elapsed),
        });
        result
    }
}

/// Fixed-rate acks=all appends of one batch to a log, each its own task.
struct Appender {
    log: Rc<PartitionLog>,
    batch: Rc<Vec<u8>>,
    rate: u64,
    in_flight_max: u64,
}

impl Appender {
    /// Appends on the timetable until `end`, waits for every acknowledgement, and reports
    /// their latencies.
    async fn run(&self, end: PhaseEnd) -> Result<AppenderReport, String> {
        let (end_ns, stop) = match end {
            PhaseEnd::After(duration) => {
                (u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX), None)
            }
            PhaseEnd::When(flag) => (u64::MAX, Some(flag)),
        };
        let timetable = Timetable::new(self.rate, end_ns);
        let histogram = Rc::new(RefCell::new(latency::histogram_us()));
        let failure: Rc<RefCell<Option<LogError>>> = Rc::new(RefCell::new(None));
        let in_flight = Rc::new(Semaphore::new(self.in_flight_max));
        let start = Instant::now();
        let mut index = 0u64;
        while !stop.as_ref().is_some_and(|flag| flag.get()) {
            let now_ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
            match timetable.step(index, now_ns) {
                Step::Finished => break,
                Step::Wait { until_ns } => {
                    glommio::timer::sleep(Duration::from_nanos(until_ns - now_ns)).await
                }
                Step::Send { scheduled_ns } => {
                    let permit = in_flight
                        .acquire_static_permit(1)
                        .await
                        .map_err(|error| error.to_string())?;
                    let (log, batch) = (self.log.clone(), self.batch.clone());
                    let (histogram, failure) = (histogram.clone(), failure.clone());
                    glommio::spawn_local(async move {
                        match log.append_durable(BytesMut::from(&batch[..]), 0).await {
                            Ok(_) => latency::record(
                                &mut histogram.borrow_mut(),
                                start.elapsed() - Duration::from_nanos(scheduled_ns),
                            ),
                            Err(error) => {
                                failure.borrow_mut().get_or_insert(error);
                            }
                        }
                        // The log first: once every permit is back, the caller may close it.
                        drop(log);
                        drop(permit);
                    })
                    .detach();
                    index += 1;
                }
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        in_flight
            .acquire(self.in_flight_max)
            .await
            .map_err(|error| error.to_string())?;
        if let Some(error) = failure.take() {
            return Err(format!("an append failed: {error}"));
        }
        let histogram = histogram.borrow();
        assert_eq!(histogram.len(), index, "every append was acknowledged");
        Ok(AppenderReport {
            seconds,
            appends: index,
            appends_per_s: index as f64 / seconds,
            ack_latency_ms: PercentilesMs::of(&histogram),
        })
    }
}

/// The human summary (stderr): the figures of the JSON line that answer the question.
fn summary(report: &Report) -> String {
    let latency_line = |name: &str, appender: &AppenderReport| {
        let latency = &appender.ack_latency_ms;
        format!(
            "  {name:<28} {:>8} appends in {:>6.1} s   p50 {:>7.3}  p99 {:>7.3}  p99.9 {:>7.3}  \
             p99.99 {:>7.3}  max {:>7.3} ms\n",
            appender.appends,
            appender.seconds,
            latency.p50,
            latency.p99,
            latency.p99_9,
            latency.p99_99,
            latency.max
        )
    };
    let mut text = format!(
        "cleaner-bench: {} CPUs ({}), pinned to CPU {}\n",
        report.machine.cores, report.machine.cpu_model, report.flags.cpu
    );
    for run in std::iter::once(&report.low_priority).chain(&report.default_queue) {
        let clean = &run.clean;
        text += &format!(
            "  clean in the {}:\n    {:.1} MiB compacted in {:.2} s = {:.1} MiB/s \
             (CPU {:.2} s, longest poll {:.1} ms); {:.1} MiB written; {} records removed; \
             segments {} -> {}; log {} -> {} MiB\n",
            run.queue,
            clean.bytes_read as f64 / f64::from(1 << 20),
            clean.seconds,
            clean.mib_per_s,
            clean.cpu_seconds,
            clean.poll_max_ms,
            clean.bytes_written as f64 / f64::from(1 << 20),
            clean.records_removed,
            clean.segments_before,
            clean.segments_after,
            clean.log_bytes_before >> 20,
            clean.log_bytes_after >> 20,
        );
    }
    text += &format!(
        "  acks=all appends at {}/s of {} bytes, latency from the due time:\n",
        report.flags.rate, report.flags.append_bytes
    );
    text += &latency_line("without the cleaner", &report.baseline);
    text += &latency_line("cleaner low-priority", &report.low_priority.appender);
    if let Some(run) = &report.default_queue {
        text += &latency_line("cleaner in default queue", &run.appender);
    }
    text
}
