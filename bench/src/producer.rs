//! The producer: sends on the timetable (see `schedule`) and accounts for every delivery
//! report. Keyless messages go round-robin over the partitions, explicitly, so every broker gets
//! the same spread whatever librdkafka's partitioner does with them; keyed ones (see `keys`) are
//! placed by the partitioner.
//!
//! librdkafka calls `delivery` on the polling thread of the `ThreadedProducer`, when the broker's
//! answer arrives (acks=1/all) or when the request is sent (acks=0). The ack latency runs from
//! the message's scheduled time to that call, and is recorded only for messages scheduled in
//! the measurement window; the throughput counts acknowledgements that arrive in the window.
//!
//! With `--transactional-id` each producer is a transactional one: it begins a transaction
//! before its first message, commits once it has sent `--transaction-messages` of them (and
//! its last, shorter one at the end), and the commit latency runs from the call of librdkafka's
//! `rd_kafka_commit_transaction` to its return (librdkafka waits for the delivery reports of the
//! transaction's messages, which the polling thread serves, then the coordinator answers EndTxn;
//! see `commit` for why not rust-rdkafka's `commit_transaction`), for commits called inside the
//! window. The sender waits for its commits, as a consume-transform-produce loop does, so a
//! slow commit delays the messages after it (which their ack latency shows). A commit that
//! fails with an abortable error is counted and its transaction aborted (its messages are then
//! missing for `read_committed` consumers); a fatal one (the producer fenced) ends the run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;

use crate::client::{self, Diagnostics};
use crate::client_stats::ProducerLatencySplit;
use crate::commit::{self, CommitError};
use crate::error::BenchError;
use crate::flags::RunFlags;
use crate::latency;
use crate::payload::PayloadWriter;
use crate::progress::RunCounters;
use crate::schedule::{Step, Timetable};
use crate::window::{ns_since, PerSecond, Window};

/// How long the sender waits before retrying when librdkafka's queue is full. Short against
/// the time the queue (100 000 messages by default) takes to drain, so the wait costs no
/// throughput.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(1);

/// Distinct delivery errors kept as examples for the result.
const ERROR_SAMPLES_MAX: usize = 5;

/// Everything known about the deliveries of a run.
#[derive(Debug, Clone)]
pub struct AckTally {
    window: Window,
    pub acked: u64,
    /// Acknowledgements that arrived inside the window: the throughput's numerator.
    pub acked_in_window: u64,
    /// The same, per whole second of the window.
    pub acked_per_second: PerSecond,
    pub failed: u64,
    pub error_samples: Vec<String>,
    /// From the scheduled time to the ack, for messages scheduled inside the window.
    pub latency_us: Histogram<u64>,
    /// librdkafka's own split of that time, over its statistics intervals inside the window.
    pub latency_split: ProducerLatencySplit,
    /// The transactions' commits (`--transactional-id`).
    pub commits: CommitTally,
}

/// A transactional producer's commits.
#[derive(Debug, Clone)]
pub struct CommitTally {
    pub committed: u64,
    pub failed: u64,
    /// From the call of `commit_transaction` to its return, for commits called inside the
    /// window.
    pub latency_us: Histogram<u64>,
}

impl AckTally {
    pub fn new(window: Window) -> AckTally {
        AckTally {
            window,
            acked: 0,
            acked_in_window: 0,
            acked_per_second: PerSecond::new(window),
            failed: 0,
            error_samples: Vec::new(),
            latency_us: latency::histogram_us(),
            latency_split: ProducerLatencySplit::default(),
            commits: CommitTally {
                committed: 0,
                failed: 0,
                latency_us: latency::histogram_us(),
            },
        }
    }

    /// Accounts for one transaction's commit, called at `called_ns` and returned at
    /// `returned_ns`.
    pub fn note_commit(&mut self, outcome: Result<(), String>, called_ns: u64, returned_ns: u64) {
        match outcome {
            Ok(()) => {
                self.commits.committed += 1;
                if self.window.contains(called_ns) {
                    latency::record_ns(
                        &mut self.commits.latency_us,
                        returned_ns.saturating_sub(called_ns),
                    );
                }
            }
            Err(reason) => {
                self.commits.failed += 1;
                note_sample(&mut self.error_samples, format!("commit: {reason}"));
            }
        }
    }

    /// Accounts for one statistics report of librdkafka's, received at `reported_ns`, covering
    /// the `interval_ns` before it: kept only if that interval lies inside the window.
    pub fn note_statistics(&mut self, statistics_json: &[u8], reported_ns: u64, interval_ns: u64) {
        let interval_start_ns = reported_ns.saturating_sub(interval_ns);
        if self.window.contains(reported_ns) && interval_start_ns >= self.window.start_ns {
            self.latency_split.note(statistics_json);
        }
    }

    /// Accounts for one delivery report.
    pub fn note(&mut self, outcome: Result<(), String>, scheduled_ns: u64, reported_ns: u64) {
        match outcome {
            Ok(()) => {
                self.acked += 1;
                if self.window.contains(reported_ns) {
                    self.acked_in_window += 1;
                    self.acked_per_second.note(reported_ns);
                }
                if self.window.contains(scheduled_ns) {
                    latency::record_ns(
                        &mut self.latency_us,
                        reported_ns.saturating_sub(scheduled_ns),
                    );
                }
            }
            Err(reason) => {
                self.failed += 1;
                note_sample(&mut self.error_samples, reason);
            }
        }
    }
}

/// Keeps the first few distinct error texts.
pub fn note_sample(samples: &mut Vec<String>, reason: String) {
    if samples.len() < ERROR_SAMPLES_MAX && !samples.contains(&reason) {
        samples.push(reason);
    }
}

struct AckContext {
    diagnostics: Diagnostics,
    start: Instant,
    /// `--client-stats-interval-ms`, in nanoseconds.
    stats_interval_ns: u64,
    /// Shared by all the run's producers.
    tally: Arc<Mutex<AckTally>>,
    counters: Arc<RunCounters>,
}

impl ClientContext for AckContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.diagnostics.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.diagnostics.error(error, reason);
    }

    fn stats_raw(&self, statistics: &[u8]) {
        let reported_ns = ns_since(self.start);
        self.tally
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .note_statistics(statistics, reported_ns, self.stats_interval_ns);
    }
}

impl ProducerContext for AckContext {
    /// The message's scheduled time, in nanoseconds after the run's start.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, scheduled_ns: usize) {
        let reported_ns = ns_since(self.start);
        let outcome = result
            .as_ref()
            .map(|_| ())
            .map_err(|(error, _)| error.to_string());
        let counter = match outcome {
            Ok(()) => &self.counters.acked,
            Err(_) => &self.counters.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.tally
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .note(outcome, scheduled_ns as u64, reported_ns);
    }
}

/// What the producer side of a run measured.
#[derive(Debug)]
pub struct ProducerOutcome {
    pub sent: u64,
    /// Messages of a paced run never handed to librdkafka: its queue stayed full until the
    /// run's end (the broker stopped answering).
    pub unsent: u64,
    /// Sent but neither acknowledged nor failed when the final flush gave up.
    pub unacknowledged: u64,
    /// Times the sender found librdkafka's queue full (the client, not the broker, was the
    /// limit at that moment).
    pub queue_full_waits: u64,
    pub tally: AckTally,
    pub client_errors: u64,
}

/// A producer connected to the broker, ready to run.
pub struct BenchProducer {
    producer: ThreadedProducer<AckContext>,
    start: Instant,
}

impl BenchProducer {
    /// Creates the run's producer number `number` for a run that starts at `start`, and waits
    /// (up to `timeout`) for its first metadata so the connection is up before the first send
    /// (and, transactional, for its producer id). Deliveries are accounted for in `tally` and
    /// `counters` (shared by the run's producers) as they are reported.
    pub fn connect(
        flags: &RunFlags,
        number: u32,
        start: Instant,
        tally: Arc<Mutex<AckTally>>,
        counters: Arc<RunCounters>,
        timeout: Duration,
    ) -> Result<BenchProducer, BenchError> {
        let mut config = client::config(flags, &[]);
        let transactional_id = flags.transactional_id_of(number);
        let idempotence = flags.idempotence || transactional_id.is_some();
        config
            .set("acks", flags.acks.config_value())
            .set("enable.idempotence", idempotence.to_string())
            .set("linger.ms", flags.linger_ms.to_string())
            .set("batch.size", flags.batch_bytes.to_string())
            .set("compression.type", "none");
        if flags.client_stats_interval_ms > 0 {
            config.set(
                "statistics.interval.ms",
                flags.client_stats_interval_ms.to_string(),
            );
        }
        if let Some(id) = &transactional_id {
            config.set("transactional.id", id);
        }
        for (key, value) in &flags.producer_config {
            config.set(key, value);
        }
        let context = AckContext {
            diagnostics: Diagnostics::new("producer"),
            start,
            stats_interval_ns: flags.client_stats_interval_ms * 1_000_000,
            tally,
            counters,
        };
        let producer: ThreadedProducer<AckContext> = config
            .create_with_context(context)
            .map_err(BenchError::kafka("cannot create the producer"))?;
        producer
            .client()
            .fetch_metadata(Some(&flags.topic), timeout)
            .map_err(BenchError::kafka("the producer's Metadata failed"))?;
        if transactional_id.is_some() {
            producer
                .init_transactions(timeout)
                .map_err(BenchError::kafka(
                    "cannot initialise the transactional producer",
                ))?;
        }
        Ok(BenchProducer { producer, start })
    }

    /// Commits the open transaction (see the module documentation); an abortable failure
    /// aborts it and is only counted.
    fn commit(&self, timeout: Duration) -> Result<(), BenchError> {
        let called_ns = ns_since(self.start);
        let committed = commit::commit_transaction(self.producer.client(), timeout);
        let returned_ns = ns_since(self.start);
        self.producer
            .context()
            .tally
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .note_commit(
                committed.as_ref().map(|_| ()).map_err(ToString::to_string),
                called_ns,
                returned_ns,
            );
        match committed {
            Ok(()) => Ok(()),
            Err(CommitError {
                requires_abort: true,
                ..
            }) => self
                .producer
                .abort_transaction(timeout)
                .map_err(BenchError::kafka("cannot abort a failed transaction")),
            Err(error) => Err(BenchError::Commit(error)),
        }
    }

    fn begin(&self) -> KafkaResult<()> {
        self.producer.begin_transaction()
    }

    /// Sends its slice of the timetable, then waits up to `flush_timeout` for the last
    /// acknowledgements. `published` holds one more than the highest sequence number handed out,
    /// raised before each send, so the consumer can tell this run's messages from garbage.
    fn run(
        self,
        flags: &RunFlags,
        run_id: u64,
        timetable: Timetable,
        slice: Slice,
        published: &AtomicU64,
        flush_timeout: Duration,
    ) -> Result<SenderOutcome, BenchError> {
        let mut payload = PayloadWriter::new(flags.message_bytes, run_id);
        let partitions = u64::from(flags.partitions);
        let (mut sequence, mut sent, mut queue_full_waits) = (slice.first, 0u64, 0u64);
        let transaction_messages = flags
            .transactional_id
            .as_ref()
            .map(|_| flags.transaction_messages);
        // Messages sent in the open transaction (0: none is open).
        let mut in_transaction = 0u64;
        'sending: loop {
            let now_ns = ns_since(self.start);
            let scheduled_ns = match timetable.step(sequence, now_ns) {
                Step::Finished => break,
                Step::Wait { until_ns } => {
                    std::thread::sleep(Duration::from_nanos(until_ns - now_ns));
                    continue;
                }
                Step::Send { scheduled_ns } => scheduled_ns,
            };
            if transaction_messages.is_some() && in_transaction == 0 {
                self.begin()
                    .map_err(BenchError::kafka("cannot begin a transaction"))?;
            }
            published.fetch_max(sequence + 1, Ordering::Release);
            let key = flags.key_distribution.key(run_id, sequence);
            let mut record = BaseRecord::<[u8], [u8], usize>::with_opaque_to(
                &flags.topic,
                scheduled_ns as usize,
            )
            .payload(payload.stamp(sequence, scheduled_ns));
            record = match &key {
                Some(key) => record.key(key),
                None => record.partition(
                    i32::try_from(sequence % partitions).expect("partitions fit in i32"),
                ),
            };
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        // A queue still full at the end means the broker stopped answering;
                        // waiting for librdkafka's message timeout (minutes) would hang the run.
                        if ns_since(self.start) >= timetable.end_ns() {
                            break 'sending;
                        }
                        record = back;
                        queue_full_waits += 1;
                        std::thread::sleep(QUEUE_FULL_WAIT);
                    }
                    Err((error, _)) => {
                        return Err(BenchError::Kafka {
                            what: format!("cannot enqueue message {sequence}"),
                            source: error,
                        })
                    }
                }
            }
            sequence += slice.stride;
            sent += 1;
            self.producer
                .context()
                .counters
                .sent
                .fetch_add(1, Ordering::Relaxed);
            if let Some(limit) = transaction_messages {
                in_transaction += 1;
                if in_transaction == limit {
                    self.commit(flush_timeout)?;
                    in_transaction = 0;
                }
            }
        }
        if in_transaction > 0 {
            self.commit(flush_timeout)?;
        }
        // A flush that times out leaves messages unaccounted for; they are reported as such.
        let _ = self.producer.flush(flush_timeout);
        Ok(SenderOutcome {
            sent,
            queue_full_waits,
            client_errors: self.producer.context().diagnostics.errors(),
        })
    }
}

/// The sequence numbers one of the run's producers sends: `first`, `first + stride`, ... With
/// one producer per residue modulo the producer count, every sequence number belongs to exactly
/// one producer, so the consumer's loss and duplicate accounting works unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    pub first: u64,
    pub stride: u64,
}

impl Slice {
    /// The slices of `count` producers.
    pub fn all(count: u64) -> impl Iterator<Item = Slice> {
        assert!(count > 0, "checked with the flags");
        (0..count).map(move |first| Slice {
            first,
            stride: count,
        })
    }
}

/// What one producer's sender counted.
#[derive(Debug, Clone, Copy)]
struct SenderOutcome {
    sent: u64,
    queue_full_waits: u64,
    client_errors: u64,
}

/// Runs the timetable with `flags.producers` producers, each on its own thread with its own
/// librdkafka client and its slice of the messages (so they share the rate), and accounts for
/// them all.
pub fn produce(
    flags: &RunFlags,
    run_id: u64,
    start: Instant,
    window: Window,
    counters: &Arc<RunCounters>,
    published: &AtomicU64,
    setup_timeout: Duration,
) -> Result<ProducerOutcome, BenchError> {
    let timetable = Timetable::new(flags.rate, window.end_ns);
    let tally = Arc::new(Mutex::new(AckTally::new(window)));
    let mut producers = Vec::new();
    for number in 0..flags.producers {
        let counters = Arc::clone(counters);
        let tally = Arc::clone(&tally);
        producers.push(BenchProducer::connect(
            flags,
            number,
            start,
            tally,
            counters,
            setup_timeout,
        )?);
    }
    let senders: Vec<Result<SenderOutcome, BenchError>> = std::thread::scope(|scope| {
        let threads: Vec<_> = producers
            .into_iter()
            .zip(Slice::all(u64::from(flags.producers)))
            .map(|(producer, slice)| {
                scope.spawn(move || {
                    producer.run(flags, run_id, timetable, slice, published, setup_timeout)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|thread| {
                thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    let (mut sent, mut queue_full_waits, mut client_errors) = (0, 0, 0);
    for sender in senders {
        let sender = sender?;
        sent += sender.sent;
        queue_full_waits += sender.queue_full_waits;
        client_errors += sender.client_errors;
    }
    let tally = tally.lock().unwrap_or_else(PoisonError::into_inner).clone();
    Ok(ProducerOutcome {
        sent,
        unsent: timetable
            .message_count()
            .map_or(0, |count| count.saturating_sub(sent)),
        unacknowledged: sent.saturating_sub(tally.acked + tally.failed),
        queue_full_waits,
        client_errors,
        tally,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_counts_from_the_scheduled_time_inside_the_window_only() {
        let mut tally = AckTally::new(Window {
            start_ns: 1_000,
            end_ns: 2_000,
        });
        tally.note(Ok(()), 500, 1_200); // warm-up message acked in the window
        tally.note(Ok(()), 1_100, 1_600);
        tally.note(Ok(()), 1_900, 2_500); // acked after the window
        tally.note(Err("timed out".into()), 1_200, 1_300);
        tally.note(Err("timed out".into()), 1_300, 1_400);
        tally.note(Err("refused".into()), 1_400, 1_500);
        assert_eq!(tally.acked, 3);
        assert_eq!(tally.acked_in_window, 2);
        assert!(tally.acked_per_second.counts.is_empty(), "no whole second");
        assert_eq!(tally.failed, 3);
        assert_eq!(tally.error_samples, vec!["timed out", "refused"]);
        assert_eq!(
            tally.latency_us.len(),
            2,
            "only messages scheduled in the window"
        );
    }

    #[test]
    fn the_slices_of_the_producers_cover_every_sequence_number_once() {
        let slices: Vec<Slice> = Slice::all(3).collect();
        let mut owners = [0u32; 30];
        for slice in &slices {
            for sequence in (slice.first..30).step_by(slice.stride as usize) {
                owners[sequence as usize] += 1;
            }
        }
        assert_eq!(owners, [1; 30]);
        assert_eq!(
            Slice::all(1).collect::<Vec<_>>(),
            [Slice {
                first: 0,
                stride: 1
            }]
        );
    }

    #[test]
    fn error_samples_are_bounded() {
        let mut samples = Vec::new();
        for index in 0..100 {
            note_sample(&mut samples, format!("error {index}"));
        }
        assert_eq!(samples.len(), ERROR_SAMPLES_MAX);
    }
}
