//! Kafka's sampled rate (`org.apache.kafka.common.metrics.stats.Rate` over `SampledStat`) and
//! the throttle time it gives (`ClientQuotaManager.throttleTime`), as pure arithmetic on times
//! passed in: `quota.window.num` (11) samples of `quota.window.size.seconds` (1 s).
//!
//! The rate is the sum of the samples not older than the whole window, divided by the time
//! since the oldest sample started, padded to at least `samples - 1` sample lengths: a client
//! that just started is measured over about ten seconds, as Kafka measures it, so it may
//! burst up to ten seconds' worth of its quota before it is throttled. The throttle is the time
//! that brings the rate back to the quota: `(rate - quota) / quota × window`.

use std::time::{Duration, Instant};

/// Kafka's `quota.window.num`.
pub const SAMPLES: usize = 11;
/// Kafka's `quota.window.size.seconds`.
pub const SAMPLE_LENGTH: Duration = Duration::from_secs(1);
/// The longest throttle given at once: the whole window (a client far over its quota is
/// measured again after it, rather than muted for minutes).
pub const THROTTLE_MAX: Duration = Duration::from_secs(SAMPLES as u64);

#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Sample lengths since the window's origin at which this sample started; `None`: empty.
    index: Option<u64>,
    value: f64,
}

const EMPTY: Sample = Sample {
    index: None,
    value: 0.0,
};

/// One quota user's usage: a ring of [`SAMPLES`] samples.
#[derive(Debug, Clone)]
pub struct RateWindow {
    origin: Instant,
    samples: [Sample; SAMPLES],
    last_used: Instant,
}

impl RateWindow {
    pub fn new(now: Instant) -> RateWindow {
        RateWindow {
            origin: now,
            samples: [EMPTY; SAMPLES],
            last_used: now,
        }
    }

    fn index_at(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.origin).as_nanos() / SAMPLE_LENGTH.as_nanos()) as u64
    }

    /// Adds `value` to the sample of `now`.
    pub fn record(&mut self, value: f64, now: Instant) {
        let index = self.index_at(now);
        let slot = &mut self.samples[(index % SAMPLES as u64) as usize];
        if slot.index != Some(index) {
            *slot = Sample {
                index: Some(index),
                value: 0.0,
            };
        }
        slot.value += value;
        self.last_used = now;
    }

    /// When this window was last recorded in (idle windows are dropped).
    pub fn last_used(&self) -> Instant {
        self.last_used
    }

    /// The sum of the samples in the window at `now`, and the time it is measured over
    /// (Kafka's `Rate.windowSize`).
    fn measure(&self, now: Instant) -> (f64, Duration) {
        let index = self.index_at(now);
        let oldest_kept = (index + 1).saturating_sub(SAMPLES as u64);
        let (sum, oldest) = self
            .samples
            .iter()
            .filter_map(|sample| Some((sample.index?, sample.value)))
            .filter(|&(at, _)| (oldest_kept..=index).contains(&at))
            .fold((0.0, index), |(sum, oldest), (at, value)| {
                (sum + value, oldest.min(at))
            });
        let oldest_start = self.origin + SAMPLE_LENGTH * oldest as u32;
        let mut window = now.saturating_duration_since(oldest_start);
        let full_samples = (window.as_nanos() / SAMPLE_LENGTH.as_nanos()) as u32;
        let padded_samples = SAMPLES as u32 - 1;
        if full_samples < padded_samples {
            window += SAMPLE_LENGTH * (padded_samples - full_samples);
        }
        (sum, window)
    }

    /// The rate per second at `now`.
    pub fn rate(&self, now: Instant) -> f64 {
        let (sum, window) = self.measure(now);
        sum / window.as_secs_f64()
    }

    /// The time the client must wait for its rate to come back to `quota` (per second); zero
    /// when it is within it.
    pub fn throttle(&self, quota: f64, now: Instant) -> Duration {
        let (sum, window) = self.measure(now);
        throttle_time(sum / window.as_secs_f64(), quota, window)
    }
}

/// Kafka's throttle time: how long at no usage brings `rate` back to `quota` over a window of
/// `window`, at most [`THROTTLE_MAX`].
pub fn throttle_time(rate: f64, quota: f64, window: Duration) -> Duration {
    if rate <= quota || quota <= 0.0 {
        return Duration::ZERO;
    }
    let seconds = (rate - quota) / quota * window.as_secs_f64();
    Duration::from_secs_f64(seconds.min(THROTTLE_MAX.as_secs_f64()))
}
