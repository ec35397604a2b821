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

/// Events per whole second of a window: `counts[i]` happened in its second `i`. The window's
/// trailing fraction of a second, if any, has no entry (a partial second is not a rate).
#[derive(Debug, Clone, PartialEq)]
pub struct PerSecond {
    window: Window,
    pub counts: Vec<u64>,
}

impl PerSecond {
    pub fn new(window: Window) -> PerSecond {
        let whole_seconds = (window.end_ns - window.start_ns) / NS_PER_S;
        PerSecond {
            window,
            counts: vec![0; usize::try_from(whole_seconds).expect("checked with the flags")],
        }
    }

    /// Counts one event at `time_ns`, if it falls in one of the window's whole seconds.
    pub fn note(&mut self, time_ns: u64) {
        let Some(since_start) = time_ns.checked_sub(self.window.start_ns) else {
            return;
        };
        if let Some(count) = usize::try_from(since_start / NS_PER_S)
            .ok()
            .and_then(|second| self.counts.get_mut(second))
        {
            *count += 1;
        }
    }
}

const NS_PER_S: u64 = 1_000_000_000;

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

    #[test]
    fn per_second_counts_cover_the_whole_seconds_of_the_window() {
        let mut series = PerSecond::new(Window::after_warmup(1.0, 2.5));
        assert_eq!(series.counts, vec![0, 0]);
        for time_ns in [
            999_999_999,   // warm-up
            1_000_000_000, // second 0
            1_999_999_999,
            2_000_000_000, // second 1
            3_000_000_000, // the trailing half second
            9_000_000_000, // after the window
        ] {
            series.note(time_ns);
        }
        assert_eq!(series.counts, vec![2, 1]);
    }
}
