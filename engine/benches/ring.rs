//! The mesh ring against crossbeam-channel's bounded channel, between two threads pinned to
//! different cores: throughput (one value at a time, and the ring's batched publication) and
//! ping-pong round-trip latency.
//!
//! Criterion measures each case; then fixed-size runs fill hdrhistogram histograms of single
//! round trips, and a summary table prints throughput and latency percentiles side by side.
//!
//! On a shared VM the hypervisor moves the two vCPUs between physical cores, and core-to-core
//! latency depends on where they land (on this project's AMD EPYC VM the same ring round trip
//! measured about 120 ns in one run and 610 ns in another). So the summary runs the transports
//! in interleaved rounds, letting each see the same placements, and prints the range over
//! rounds; figures from different runs, criterion's included, compare poorly.
//! Both transports are driven the same way: non-blocking calls in a spin loop, `u64` payloads,
//! the same capacity. Round trips are timed with `Instant`, whose own cost (tens of
//! nanoseconds) is in every figure. The ring's sides never declare sleep here, so its notifiers
//! are never called; what the ring's sleep protocol costs an awake peer (a fence and a load per
//! publish) is included.

use criterion::{BenchmarkId, Criterion, Throughput};
use crossbeam::channel::{self, Receiver, Sender};
use engine::mesh::ring::{self, Consumer, Producer};
use hdrhistogram::Histogram;
use std::hint::spin_loop;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// Slots per ring or channel.
const CAPACITY: usize = 1024;
/// Values the batched producer stages before publishing, and the consumer takes per call.
const BATCH_MAX: usize = 64;
/// Rounds of the summary; each round runs every transport once, in turn.
const SUMMARY_ROUND_COUNT: usize = 5;
/// Messages per transport per summary round, for throughput.
const SUMMARY_MESSAGE_COUNT: u64 = 20_000_000;
/// Round trips per transport per summary round recorded in its histogram, after
/// [`LATENCY_WARM_UP_COUNT`] unrecorded.
const LATENCY_SAMPLE_COUNT: u64 = 200_000;
const LATENCY_WARM_UP_COUNT: u64 = 20_000;
/// Ends a ping-pong echo loop.
const STOP: u64 = u64::MAX;

fn main() {
    let cores = Cores::pick();
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .configure_from_args();

    let mut throughput = criterion.benchmark_group("throughput");
    throughput.throughput(Throughput::Elements(1));
    for transport in Transport::ALL {
        throughput.bench_function(BenchmarkId::from_parameter(transport.name()), |bencher| {
            bencher.iter_custom(|message_count| transport.stream(cores, message_count));
        });
    }
    throughput.finish();

    let mut round_trip = criterion.benchmark_group("round_trip");
    for transport in Transport::PING_PONG {
        round_trip.bench_function(BenchmarkId::from_parameter(transport.name()), |bencher| {
            bencher.iter_custom(|round_trip_count| {
                transport.ping_pong(cores, round_trip_count, None).0
            });
        });
    }
    round_trip.finish();
    criterion.final_summary();

    print_summary(cores);
}

#[derive(Clone, Copy)]
enum Transport {
    /// `try_push` / `try_pop`, one value per publish.
    Ring,
    /// `try_stage` up to [`BATCH_MAX`] then `publish`; `pop_batch` of up to [`BATCH_MAX`].
    RingBatched,
    /// `try_send` / `try_recv` on `crossbeam::channel::bounded`.
    Crossbeam,
}

impl Transport {
    const ALL: [Transport; 3] = [
        Transport::Ring,
        Transport::RingBatched,
        Transport::Crossbeam,
    ];
    /// Batching does not apply to one message in flight.
    const PING_PONG: [Transport; 2] = [Transport::Ring, Transport::Crossbeam];

    fn name(self) -> &'static str {
        match self {
            Transport::Ring => "ring",
            Transport::RingBatched => "ring_batched",
            Transport::Crossbeam => "crossbeam_bounded",
        }
    }

    /// Streams `message_count` values from one core to the other; returns the time from both
    /// sides being ready to the last value received.
    fn stream(self, cores: Cores, message_count: u64) -> Duration {
        let (elapsed, ()) = match self {
            Transport::Ring => {
                let (mut producer, mut consumer) = ring_pair();
                run_pair(
                    cores,
                    move || {
                        for value in 0..message_count {
                            push_spinning(&mut producer, value);
                        }
                    },
                    move || {
                        for expected in 0..message_count {
                            assert_eq!(pop_spinning(&mut consumer), expected);
                        }
                    },
                )
            }
            Transport::RingBatched => {
                let (mut producer, mut consumer) = ring_pair();
                run_pair(
                    cores,
                    move || {
                        let mut value = 0;
                        while value < message_count {
                            match producer.try_stage(value) {
                                Ok(()) => {
                                    value += 1;
                                    if value % BATCH_MAX as u64 == 0 {
                                        producer.publish();
                                    }
                                }
                                Err(_) => {
                                    producer.publish();
                                    spin_loop();
                                }
                            }
                        }
                        producer.publish();
                    },
                    move || {
                        let mut expected = 0;
                        while expected < message_count {
                            let taken = consumer.pop_batch(BATCH_MAX, |value| {
                                assert_eq!(value, expected);
                                expected += 1;
                            });
                            if taken == 0 {
                                spin_loop();
                            }
                        }
                    },
                )
            }
            Transport::Crossbeam => {
                let (sender, receiver) = channel::bounded(CAPACITY);
                run_pair(
                    cores,
                    move || {
                        for value in 0..message_count {
                            send_spinning(&sender, value);
                        }
                    },
                    move || {
                        for expected in 0..message_count {
                            assert_eq!(recv_spinning(&receiver), expected);
                        }
                    },
                )
            }
        };
        elapsed
    }

    /// Bounces `round_trip_count` values off an echo thread on the other core, recording each
    /// round trip's time in `histogram` if given; returns the total time and the histogram.
    fn ping_pong(
        self,
        cores: Cores,
        round_trip_count: u64,
        mut histogram: Option<Histogram<u64>>,
    ) -> (Duration, Option<Histogram<u64>>) {
        match self {
            Transport::Ring | Transport::RingBatched => {
                let (mut ping, mut ping_echo) = ring_pair();
                let (mut pong_echo, mut pong) = ring_pair();
                run_pair(
                    cores,
                    move || loop {
                        let value = pop_spinning(&mut ping_echo);
                        if value == STOP {
                            return;
                        }
                        push_spinning(&mut pong_echo, value);
                    },
                    move || {
                        for value in 0..round_trip_count {
                            let sent_at = Instant::now();
                            push_spinning(&mut ping, value);
                            assert_eq!(pop_spinning(&mut pong), value);
                            record(&mut histogram, sent_at.elapsed());
                        }
                        push_spinning(&mut ping, STOP);
                        histogram
                    },
                )
            }
            Transport::Crossbeam => {
                let (ping, ping_echo) = channel::bounded(CAPACITY);
                let (pong_echo, pong) = channel::bounded(CAPACITY);
                run_pair(
                    cores,
                    move || loop {
                        let value = recv_spinning(&ping_echo);
                        if value == STOP {
                            return;
                        }
                        send_spinning(&pong_echo, value);
                    },
                    move || {
                        for value in 0..round_trip_count {
                            let sent_at = Instant::now();
                            send_spinning(&ping, value);
                            assert_eq!(recv_spinning(&pong), value);
                            record(&mut histogram, sent_at.elapsed());
                        }
                        send_spinning(&ping, STOP);
                        histogram
                    },
                )
            }
        }
    }
}

fn record(histogram: &mut Option<Histogram<u64>>, round_trip: Duration) {
    if let Some(histogram) = histogram {
        let round_trip_ns = u64::try_from(round_trip.as_nanos()).unwrap_or(u64::MAX);
        histogram.saturating_record(round_trip_ns);
    }
}

fn ring_pair() -> (Producer<u64>, Consumer<u64>) {
    // Neither side ever declares sleep in this benchmark; unparking the creating thread would
    // be harmless if one did.
    let never_notified = Arc::new(thread::current());
    ring::ring(CAPACITY, never_notified.clone(), never_notified)
}

fn push_spinning(producer: &mut Producer<u64>, mut value: u64) {
    while let Err(refused) = producer.try_push(value) {
        value = refused;
        spin_loop();
    }
}

fn pop_spinning(consumer: &mut Consumer<u64>) -> u64 {
    loop {
        if let Some(value) = consumer.try_pop() {
            return value;
        }
        spin_loop();
    }
}

fn send_spinning(sender: &Sender<u64>, mut value: u64) {
    while let Err(refused) = sender.try_send(value) {
        value = refused.into_inner();
        spin_loop();
    }
}

fn recv_spinning(receiver: &Receiver<u64>) -> u64 {
    loop {
        if let Ok(value) = receiver.try_recv() {
            return value;
        }
        spin_loop();
    }
}

/// The two cores the sides run on.
#[derive(Clone, Copy)]
struct Cores {
    first: usize,
    second: usize,
}

impl Cores {
    fn pick() -> Self {
        let core_count = thread::available_parallelism().map_or(1, usize::from);
        if core_count < 2 {
            eprintln!("only {core_count} core available: both sides share it; figures mean little");
        }
        Self {
            first: 0,
            second: 1 % core_count,
        }
    }
}

/// Runs `background` on `cores.second` and `measured` on `cores.first`, both released together;
/// returns how long `measured` took, and what it returned.
fn run_pair<R: Send + 'static>(
    cores: Cores,
    background: impl FnOnce() + Send + 'static,
    measured: impl FnOnce() -> R + Send + 'static,
) -> (Duration, R) {
    let start = Arc::new(Barrier::new(2));
    let background = {
        let start = Arc::clone(&start);
        thread::spawn(move || {
            pin_to_core(cores.second);
            start.wait();
            background();
        })
    };
    let measured = thread::spawn(move || {
        pin_to_core(cores.first);
        start.wait();
        let started_at = Instant::now();
        let returned = measured();
        (started_at.elapsed(), returned)
    });
    let measured = measured.join().expect("measured side panicked");
    background.join().expect("background side panicked");
    measured
}

fn pin_to_core(core: usize) {
    // SAFETY: an all-zero `cpu_set_t` is the empty set (what `CPU_ZERO` produces).
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `core` is below the number of available cores, far below `CPU_SETSIZE`.
    unsafe { libc::CPU_SET(core, &mut set) };
    // SAFETY: `set` is a valid `cpu_set_t` of the size passed; pid 0 is the calling thread.
    let result = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    if result != 0 {
        eprintln!(
            "could not pin to core {core}: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn print_summary(cores: Cores) {
    let mut stream_times: Vec<Vec<Duration>> = Transport::ALL.iter().map(|_| Vec::new()).collect();
    let mut histograms: Vec<Option<Histogram<u64>>> = Transport::ALL
        .iter()
        .map(|_| Some(Histogram::new(3).expect("3 significant figures is a valid precision")))
        .collect();
    for _ in 0..SUMMARY_ROUND_COUNT {
        for (index, transport) in Transport::ALL.into_iter().enumerate() {
            stream_times[index].push(transport.stream(cores, SUMMARY_MESSAGE_COUNT));
            if matches!(transport, Transport::RingBatched) {
                continue;
            }
            transport.ping_pong(cores, LATENCY_WARM_UP_COUNT, None);
            let histogram = histograms[index].take();
            histograms[index] = transport
                .ping_pong(cores, LATENCY_SAMPLE_COUNT, histogram)
                .1;
        }
    }

    println!();
    println!(
        "Summary: cores {} and {}, capacity {CAPACITY}, u64 payloads, spinning sides, \
         {SUMMARY_ROUND_COUNT} interleaved rounds",
        cores.first, cores.second
    );
    println!(
        "throughput: {SUMMARY_MESSAGE_COUNT} messages per round, median (min-max over rounds); \
         round trip: {} samples over all rounds",
        LATENCY_SAMPLE_COUNT * SUMMARY_ROUND_COUNT as u64
    );
    println!(
        "{:<18} {:>22} {:>10} {:>10} {:>10} {:>10}",
        "transport", "Mmsg/s", "rtt p50", "rtt p99", "rtt p99.9", "rtt max"
    );
    for (index, transport) in Transport::ALL.into_iter().enumerate() {
        let mut rates: Vec<f64> = stream_times[index]
            .iter()
            .map(|elapsed| SUMMARY_MESSAGE_COUNT as f64 / elapsed.as_secs_f64() / 1e6)
            .collect();
        rates.sort_by(f64::total_cmp);
        let throughput = format!(
            "{:.1} ({:.1}-{:.1})",
            rates[rates.len() / 2],
            rates[0],
            rates[rates.len() - 1]
        );
        let latency = match &histograms[index] {
            Some(histogram) if !histogram.is_empty() => format!(
                "{:>10} {:>10} {:>10} {:>10}",
                nanoseconds(histogram.value_at_quantile(0.5)),
                nanoseconds(histogram.value_at_quantile(0.99)),
                nanoseconds(histogram.value_at_quantile(0.999)),
                nanoseconds(histogram.max()),
            ),
            _ => format!("{:>10}", "n/a (batching needs many in flight)"),
        };
        println!("{:<18} {throughput:>22} {latency}", transport.name());
    }
}

fn nanoseconds(value: u64) -> String {
    format!("{value} ns")
}
