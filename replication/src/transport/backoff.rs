//! How long a peer's writer waits before connecting again: exponential back-off from
//! `delay_min` doubling to `delay_max`, each wait drawn from the upper half of the current step
//! ("equal jitter"), so the shards of a broker that lost a peer together do not all redial it
//! in the same instant. The jitter comes from a seeded [`SplitMix64`], so a wait sequence is a
//! function of the seed.

use std::time::Duration;

use crate::SplitMix64;

#[derive(Debug, Clone)]
pub struct Backoff {
    delay_min: Duration,
    delay_max: Duration,
    step: Duration,
    random: SplitMix64,
}

impl Backoff {
    pub fn new(delay_min: Duration, delay_max: Duration, seed: u64) -> Backoff {
        assert!(
            !delay_min.is_zero() && delay_min <= delay_max,
            "back-off from {delay_min:?} to {delay_max:?}"
        );
        Backoff {
            delay_min,
            delay_max,
            step: delay_min,
            random: SplitMix64::new(seed),
        }
    }

    /// The next wait, in `step/2 ..= step`; the step then doubles (up to `delay_max`).
    pub fn next_delay(&mut self) -> Duration {
        let step_us = self.step.as_micros() as u64;
        let delay_us = step_us / 2 + self.random.range(0, step_us / 2 + 1);
        self.step = (self.step * 2).min(self.delay_max);
        Duration::from_micros(delay_us)
    }

    /// Back to `delay_min`, after a connection that worked.
    pub fn reset(&mut self) {
        self.step = self.delay_min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_maximum_within_their_jitter_and_reset() {
        let min = Duration::from_millis(20);
        let max = Duration::from_secs(1);
        let mut backoff = Backoff::new(min, max, 7);
        let mut step = min;
        for _ in 0..12 {
            let delay = backoff.next_delay();
            assert!(
                delay >= step / 2 && delay <= step,
                "{delay:?} for step {step:?}"
            );
            step = (step * 2).min(max);
        }
        assert_eq!(step, max);
        backoff.reset();
        assert!(backoff.next_delay() <= min);
    }

    #[test]
    fn the_same_seed_gives_the_same_waits() {
        let waits = |seed| {
            let mut backoff = Backoff::new(Duration::from_millis(20), Duration::from_secs(1), seed);
            (0..8).map(|_| backoff.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(waits(3), waits(3));
        assert_ne!(waits(3), waits(4));
    }
}
