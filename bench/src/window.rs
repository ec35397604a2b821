//! The measurement window: the part of a run after the warm-up. Times are nanoseconds since
//! the run's start (one `Instant` shared by the producer and the consumer threads, so the
//! end-to-end latency needs no clock synchronisation).

use std::time::Instant;

/// `[start_ns, end_ns)` after the run's start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub start_ns: u64,
    pub end_ns: u64,
}

impl Window {
    pub fn after_warmup(warmup_s: f64, duration_s: f64) -> Window {
        assert!(
            warmup_s >= 0.0 && duration_s > 0.0,
            "checked with the flags"
        );
        let start_ns = seconds_to_ns(warmup_s);
        Window {
            start_ns,
            end_ns: start_ns + seconds_to_ns(duration_s),
        }
    }

    pub fn contains(&self, time_ns: u64) -> bool {
        (self.start_ns..self.end_ns).contains(&time_ns)
    }

    pub fn seconds(&self) -> f64 {
        (self.end_ns - self.start_ns) as f64 / 1e9
    }
}

pub fn seconds_to_ns(seconds: f64) -> u64 {
    (seconds * 1e9).round() as u64
}

/// Nanoseconds from `start` to now.
pub fn ns_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_follows_the_warmup() {
        let window = Window::after_warmup(2.0, 10.0);
        assert!(!window.contains(1_999_999_999));
        assert!(window.contains(2_000_000_000));
        assert!(window.contains(11_999_999_999));
        assert!(!window.contains(12_000_000_000));
        assert_eq!(window.seconds(), 10.0);
    }
}
