//! Live progress on stderr: one plain line per second of the run (not a progress bar, so CI
//! logs stay readable), with what happened in the last second. A run that stalls, or a
//! consumer that falls behind, shows while it happens instead of only in the final result.
//!
//! The producer and consumer threads only bump counters (`RunCounters`); a reporter thread reads
//! them on each whole second after the run's start and prints the difference.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Running totals, shared by the producer (sent, acked, failed), the consumer (consumed) and the
/// reporter.
#[derive(Debug, Default)]
pub struct RunCounters {
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub failed: AtomicU64,
    /// Distinct messages of this run received.
    pub consumed: AtomicU64,
}

impl RunCounters {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            sent: self.sent.load(Ordering::Relaxed),
            acked: self.acked.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            consumed: self.consumed.load(Ordering::Relaxed),
        }
    }
}

/// The counters at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Snapshot {
    sent: u64,
    acked: u64,
    failed: u64,
    consumed: u64,
}

/// Prints one line a second until `stop` is dropped (or sent to). Runs on its own thread.
pub fn report_every_second(
    counters: &RunCounters,
    start: Instant,
    warmup_s: f64,
    message_bytes: usize,
    stop: Receiver<()>,
) {
    let mut previous = Snapshot::default();
    for second in 1u64.. {
        let tick = start + Duration::from_secs(second);
        let wait = tick.saturating_duration_since(Instant::now());
        match stop.recv_timeout(wait) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = counters.snapshot();
        let warming_up = (second as f64) <= warmup_s;
        eprintln!(
            "{}",
            progress_line(second, warming_up, previous, now, message_bytes)
        );
        previous = now;
    }
}

/// One second's line: elapsed seconds, then the last second's produced (sent), acked and
/// consumed messages, the acked MiB, and the messages sent but not yet acknowledged.
fn progress_line(
    second: u64,
    warming_up: bool,
    previous: Snapshot,
    now: Snapshot,
    message_bytes: usize,
) -> String {
    let acked = now.acked.saturating_sub(previous.acked);
    let mib = acked as f64 * message_bytes as f64 / f64::from(1 << 20);
    let in_flight = now.sent.saturating_sub(now.acked + now.failed);
    format!(
        "ferrite-bench: {second:>4} s  produced {}/s  acked {acked}/s  consumed {}/s  \
         {mib:.2} MiB/s  in flight {in_flight}{}",
        now.sent.saturating_sub(previous.sent),
        now.consumed.saturating_sub(previous.consumed),
        if warming_up { "  (warm-up)" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_shows_the_last_second_and_what_is_in_flight() {
        let previous = Snapshot {
            sent: 1_000,
            acked: 900,
            failed: 0,
            consumed: 800,
        };
        let now = Snapshot {
            sent: 3_048,
            acked: 2_948,
            failed: 2,
            consumed: 2_000,
        };
        assert_eq!(
            progress_line(7, false, previous, now, 1024),
            "ferrite-bench:    7 s  produced 2048/s  acked 2048/s  consumed 1200/s  2.00 MiB/s  \
             in flight 98"
        );
        assert!(progress_line(1, true, previous, now, 1024).ends_with("(warm-up)"));
    }

    #[test]
    fn the_reporter_stops_when_the_run_ends() {
        let (stop, stopped) = std::sync::mpsc::channel();
        let counters = RunCounters::default();
        std::thread::scope(|scope| {
            let reporter =
                scope.spawn(|| report_every_second(&counters, Instant::now(), 0.0, 100, stopped));
            drop(stop);
            reporter.join().unwrap();
        });
    }
}
