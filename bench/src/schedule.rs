//! The producer's open-loop timetable.
//!
//! At a fixed rate, message `i` is due at `i / rate` seconds after the start, whatever happened
//! to earlier messages, and its latency is measured from that due time, not from when the
//! sender got round to it. A closed-loop or self-pacing load generator waits out a broker
//! stall and then sends late, so the stall delays only the few messages in flight and vanishes
//! from the percentiles ("coordinated omission"); here every message scheduled during a stall
//! is charged the stall. When the sender falls behind (librdkafka's queue full, the thread
//! descheduled) it sends the overdue messages back to back with their original due times.
//!
//! Rate 0 means as fast as possible: a message is due when the sender reaches it, so its
//! latency includes its wait in librdkafka's queue (what Kafka's own producer benchmark
//! reports). Peak-throughput latencies therefore describe a saturated client, not the broker.

/// What the sender does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Send the message now; its latency counts from `scheduled_ns`.
    Send { scheduled_ns: u64 },
    /// Nothing is due before `until_ns`.
    Wait { until_ns: u64 },
    /// The run is over: no message is due before its end.
    Finished,
}

/// When each message of a run is due. Times are nanoseconds since the run's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timetable {
    /// Messages per second; 0 means as fast as possible.
    rate_per_s: u64,
    end_ns: u64,
}

impl Timetable {
    pub fn new(rate_per_s: u64, end_ns: u64) -> Timetable {
        Timetable { rate_per_s, end_ns }
    }

    /// When the run ends: no message is sent from then on.
    pub fn end_ns(&self) -> u64 {
        self.end_ns
    }

    /// How many messages a paced run sends; `None` when unpaced (bounded by time only).
    pub fn message_count(&self) -> Option<u64> {
        let rate = u128::from(self.rate_per_s);
        // Message i is due before the end exactly when i < end × rate / 10^9.
        (rate > 0).then(|| {
            u64::try_from((u128::from(self.end_ns) * rate).div_ceil(1_000_000_000))
                .unwrap_or(u64::MAX)
        })
    }

    /// The next step for message `index` (0-based) at time `now_ns`.
    pub fn step(&self, index: u64, now_ns: u64) -> Step {
        if self.rate_per_s == 0 {
            return if now_ns < self.end_ns {
                Step::Send {
                    scheduled_ns: now_ns,
                }
            } else {
                Step::Finished
            };
        }
        // Computed from the index, not by adding intervals, so rounding never accumulates.
        let due_ns = u64::try_from(u128::from(index) * 1_000_000_000 / u128::from(self.rate_per_s))
            .unwrap_or(u64::MAX);
        if due_ns >= self.end_ns {
            Step::Finished
        } else if now_ns >= due_ns {
            Step::Send {
                scheduled_ns: due_ns,
            }
        } else {
            Step::Wait { until_ns: due_ns }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives a timetable with a sender that takes `send_ns` per message and sleeps exactly as
    /// long as told; returns every message's scheduled time.
    fn simulate(timetable: Timetable, send_ns: u64) -> Vec<u64> {
        let (mut now_ns, mut scheduled) = (0, Vec::new());
        loop {
            match timetable.step(scheduled.len() as u64, now_ns) {
                Step::Send { scheduled_ns } => {
                    scheduled.push(scheduled_ns);
                    now_ns += send_ns;
                }
                Step::Wait { until_ns } => {
                    assert!(until_ns > now_ns, "a wait always moves time on");
                    now_ns = until_ns;
                }
                Step::Finished => return scheduled,
            }
        }
    }

    #[test]
    fn a_paced_run_sends_rate_times_duration_messages_on_a_fixed_grid() {
        let timetable = Timetable::new(1000, 1_000_000_000);
        let scheduled = simulate(timetable, 10);
        assert_eq!(scheduled.len(), 1000);
        assert_eq!(timetable.message_count(), Some(1000));
        for (index, scheduled_ns) in scheduled.iter().enumerate() {
            assert_eq!(*scheduled_ns, index as u64 * 1_000_000);
        }
    }

    #[test]
    fn rates_that_do_not_divide_a_second_do_not_drift() {
        let timetable = Timetable::new(3, 10_000_000_000);
        let scheduled = simulate(timetable, 1);
        assert_eq!(scheduled.len(), 30);
        assert_eq!(timetable.message_count(), Some(30));
        assert_eq!(Timetable::new(3, 10_000_000_001).message_count(), Some(31));
        assert_eq!(scheduled[29], 9_666_666_666);
        assert_eq!(scheduled[3], 1_000_000_000);
    }

    /// A sender that stalls for 100 ms still sends every message, and the messages that fell
    /// due during the stall keep their due times: their latency includes the stall.
    #[test]
    fn a_late_sender_catches_up_without_forgiving_the_delay() {
        let timetable = Timetable::new(1000, 1_000_000_000);
        assert_eq!(
            timetable.step(0, 100_000_000),
            Step::Send { scheduled_ns: 0 }
        );
        assert_eq!(
            timetable.step(57, 100_000_000),
            Step::Send {
                scheduled_ns: 57_000_000
            }
        );
        assert_eq!(
            timetable.step(101, 100_000_000),
            Step::Wait {
                until_ns: 101_000_000
            }
        );
        // A sender slower than the rate (2 ms per message at 1000/s) still sends them all.
        let scheduled = simulate(timetable, 2_000_000);
        assert_eq!(scheduled.len(), 1000);
    }

    #[test]
    fn an_unpaced_run_sends_until_its_end_with_latency_from_the_send() {
        let timetable = Timetable::new(0, 1_000);
        assert_eq!(timetable.step(5, 10), Step::Send { scheduled_ns: 10 });
        assert_eq!(timetable.step(5, 1_000), Step::Finished);
        assert_eq!(simulate(timetable, 10).len(), 100);
        assert_eq!(timetable.message_count(), None);
    }
}
