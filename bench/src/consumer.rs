//! The consumers: each a separate thread, reading from each partition's end as it was before
//! the producers started, with its partitions assigned explicitly (no consumer group: the
//! comparison should not depend on group coordination) or, with `--consumer-group`, as a member
//! of a group (see `group`). It reads every message's header and accounts for it exactly: each
//! sequence number of this run once per group (a bitmap each; the explicitly assigned consumers
//! count as one group), duplicates and other runs' messages apart, and the end-to-end latency
//! from the message's scheduled send time to its arrival in this process (one clock: producers
//! and consumers share the run's start `Instant`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;

use crate::client::PlainContext;
use crate::latency;
use crate::payload::Header;
use crate::producer::note_sample;
use crate::progress::RunCounters;
use crate::window::{ns_since, PerSecond, Window};

/// How long one poll waits for a message before the loop re-checks whether to stop.
const POLL_WAIT: Duration = Duration::from_millis(50);

/// `expected` before the producer knows how many messages the consumer should get.
pub const EXPECTED_UNKNOWN: u64 = u64::MAX;

/// Which sequence numbers arrived: one bit each, grown as they arrive. Its size is bounded by
/// the number of messages sent (the caller refuses sequence numbers not yet handed out).
#[derive(Debug, Default)]
pub struct SequenceSet {
    words: Vec<u64>,
}

impl SequenceSet {
    /// Adds `sequence`; false if it was already there.
    pub fn insert(&mut self, sequence: u64) -> bool {
        let word = usize::try_from(sequence / 64).expect("bounded by the messages sent");
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let bit = 1u64 << (sequence % 64);
        let fresh = self.words[word] & bit == 0;
        self.words[word] |= bit;
        fresh
    }
}

/// Everything known about the messages received in a run, by every consumer group: each group
/// reads every message, so a message counts once per group. Groups are numbered from 0; the
/// explicitly assigned consumers are group 0, the only one.
#[derive(Debug)]
pub struct ConsumeTally {
    run_id: u64,
    window: Window,
    seen: Vec<SequenceSet>,
    /// Distinct messages of this run, per group.
    pub consumed: Vec<u64>,
    /// Of those, received inside the window (every group's): the consume throughput's
    /// numerator.
    pub consumed_in_window: u64,
    /// The same, per whole second of the window.
    pub consumed_per_second: PerSecond,
    /// Messages of this run a group received again.
    pub duplicates: u64,
    /// Messages not from this run (other producers on the topic, or unreadable).
    pub foreign: u64,
    pub errors: u64,
    pub error_samples: Vec<String>,
    /// From the scheduled send time to the arrival, for messages scheduled in the window (one
    /// sample per group that received it).
    pub latency_us: Histogram<u64>,
}

impl ConsumeTally {
    pub fn new(run_id: u64, window: Window, groups: usize) -> ConsumeTally {
        assert!(groups > 0, "checked with the flags");
        ConsumeTally {
            run_id,
            window,
            seen: (0..groups).map(|_| SequenceSet::default()).collect(),
            consumed: vec![0; groups],
            consumed_in_window: 0,
            consumed_per_second: PerSecond::new(window),
            duplicates: 0,
            foreign: 0,
            errors: 0,
            error_samples: Vec::new(),
            latency_us: latency::histogram_us(),
        }
    }

    /// Accounts for one message received by a member of `group`; `published` is how many
    /// sequence numbers the producer had handed out when it arrived. Returns whether it was new
    /// to the group.
    pub fn note(
        &mut self,
        group: usize,
        payload: Option<&[u8]>,
        received_ns: u64,
        published: u64,
    ) -> bool {
        let header = match payload.and_then(Header::read) {
            Some(header) if header.run_id == self.run_id && header.sequence < published => header,
            _ => {
                self.foreign += 1;
                return false;
            }
        };
        if !self.seen[group].insert(header.sequence) {
            self.duplicates += 1;
            return false;
        }
        self.consumed[group] += 1;
        if self.window.contains(received_ns) {
            self.consumed_in_window += 1;
            self.consumed_per_second.note(received_ns);
        }
        if self.window.contains(header.scheduled_ns) {
            latency::record_ns(
                &mut self.latency_us,
                received_ns.saturating_sub(header.scheduled_ns),
            );
        }
        true
    }

    /// Accounts for a message received before the producers started: not this run's.
    pub fn note_foreign(&mut self) {
        self.foreign += 1;
    }

    pub fn note_error(&mut self, reason: String) {
        self.errors += 1;
        note_sample(&mut self.error_samples, reason);
    }
}

/// What the run's consumer threads share.
pub struct ConsumeShared<'a> {
    /// The run's start: arrival times are measured from it.
    pub start: Instant,
    pub tally: &'a Mutex<ConsumeTally>,
    pub counters: &'a RunCounters,
    /// How many sequence numbers the producers have handed out.
    pub published: &'a AtomicU64,
    /// How many messages each group should get: `EXPECTED_UNKNOWN` until the producers are
    /// done, then the number acknowledged.
    pub expected: &'a AtomicU64,
    /// Once `expected` is known, how long a consumer may go without a new message.
    pub drain_timeout: Duration,
}

/// Polls until the consumers of `group` have `expected` distinct messages between them, or
/// until `drain_timeout` passes without a new one for this consumer after `expected` is known.
/// The tally is shared by the run's consumers (a group's partitions are split between its
/// members, but a message must count once per group whichever member gets it). Keeps
/// `counters.consumed` (every group's) up to date for the progress lines. Returns the client's
/// error count.
pub fn consume(
    consumer: BaseConsumer<PlainContext>,
    group: usize,
    shared: &ConsumeShared<'_>,
) -> u64 {
    let mut last_new_message = Instant::now();
    let mut draining_since: Option<Instant> = None;
    loop {
        let expected_now = shared.expected.load(Ordering::Acquire);
        if lock(shared.tally).consumed[group] >= expected_now {
            break;
        }
        if expected_now != EXPECTED_UNKNOWN {
            let since = *draining_since.get_or_insert_with(Instant::now);
            if since.max(last_new_message).elapsed() >= shared.drain_timeout {
                break;
            }
        }
        match consumer.poll(POLL_WAIT) {
            None => {}
            Some(Ok(message)) => {
                let received_ns = ns_since(shared.start);
                let new = lock(shared.tally).note(
                    group,
                    message.payload(),
                    received_ns,
                    shared.published.load(Ordering::Acquire),
                );
                if new {
                    shared.counters.consumed.fetch_add(1, Ordering::Relaxed);
                    last_new_message = Instant::now();
                }
            }
            Some(Err(error)) => lock(shared.tally).note_error(error.to_string()),
        }
    }
    consumer.context().0.errors()
}

fn lock(tally: &Mutex<ConsumeTally>) -> MutexGuard<'_, ConsumeTally> {
    tally.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::PayloadWriter;

    const WINDOW: Window = Window {
        start_ns: 1_000_000,
        end_ns: 2_000_000,
    };

    #[test]
    fn each_message_counts_once_and_others_count_apart() {
        let mut tally = ConsumeTally::new(7, WINDOW, 1);
        let mut ours = PayloadWriter::new(100, 7);
        let mut theirs = PayloadWriter::new(100, 8);
        assert!(tally.note(0, Some(ours.stamp(0, 500_000)), 1_100_000, 10)); // warm-up message
        assert!(tally.note(0, Some(ours.stamp(1, 1_200_000)), 1_700_000, 10));
        assert!(!tally.note(0, Some(ours.stamp(1, 1_200_000)), 1_800_000, 10)); // duplicate
        assert!(tally.note(0, Some(ours.stamp(2, 1_900_000)), 2_100_000, 10)); // after the window
        assert!(!tally.note(0, Some(ours.stamp(10, 1_900_000)), 2_100_000, 10)); // never handed out
        assert!(!tally.note(0, Some(theirs.stamp(3, 1_200_000)), 1_300_000, 10));
        assert!(!tally.note(0, Some(&[1, 2, 3]), 1_300_000, 10));
        assert!(!tally.note(0, None, 1_300_000, 10));
        tally.note_foreign();
        assert_eq!(tally.consumed, [3]);
        assert_eq!(tally.consumed_in_window, 2);
        assert_eq!(tally.duplicates, 1);
        assert_eq!(tally.foreign, 5);
        assert_eq!(tally.latency_us.len(), 2);
        assert_eq!(
            tally.latency_us.max(),
            500,
            "1.2 ms scheduled, 1.7 ms received"
        );
    }

    #[test]
    fn every_group_counts_every_message_once() {
        let mut tally = ConsumeTally::new(7, WINDOW, 2);
        let mut ours = PayloadWriter::new(100, 7);
        for group in [0, 1] {
            assert!(tally.note(group, Some(ours.stamp(1, 1_200_000)), 1_700_000, 10));
        }
        assert!(!tally.note(1, Some(ours.stamp(1, 1_200_000)), 1_800_000, 10));
        assert!(tally.note(1, Some(ours.stamp(2, 1_300_000)), 1_800_000, 10));
        assert_eq!(tally.consumed, [1, 2]);
        assert_eq!(tally.consumed_in_window, 3, "every group's arrivals");
        assert_eq!(tally.duplicates, 1);
        assert_eq!(tally.latency_us.len(), 3, "a sample per group per message");
    }

    #[test]
    fn the_sequence_set_grows_and_remembers() {
        let mut set = SequenceSet::default();
        assert!(set.insert(0));
        assert!(set.insert(1_000));
        assert!(!set.insert(1_000));
        assert!(set.insert(63));
        assert!(set.insert(64));
        assert!(!set.insert(0));
        assert_eq!(set.words.len(), 1_000 / 64 + 1);
    }
}
