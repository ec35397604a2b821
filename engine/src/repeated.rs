//! Log lines that something outside the broker can make repeat (a peer's or a client's bad
//! messages, one per message): printed at most once per interval, the next one saying how
//! many were held back meanwhile, so that no sender can fill the disk through stderr or keep
//! a core busy writing it.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// How often a repeated report is printed at most, unless its owner says otherwise.
pub const REPEATED_REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// One kind of repeated report. Not `Sync`: each thread (shard) keeps its own, e.g. in a
/// `thread_local!`, so reporting costs no synchronisation.
#[derive(Debug)]
pub struct RepeatedReport {
    interval: Duration,
    last_printed: Cell<Option<Instant>>,
    held_back: Cell<u64>,
}

impl RepeatedReport {
    pub const fn new(interval: Duration) -> RepeatedReport {
        RepeatedReport {
            interval,
            last_printed: Cell::new(None),
            held_back: Cell::new(0),
        }
    }

    /// Prints `line()` on stderr, unless a line was printed less than the interval ago.
    pub fn report(&self, line: impl FnOnce() -> String) {
        if let Some(printed) = self.admit(Instant::now(), line) {
            eprintln!("{printed}");
        }
    }

    /// The line to print at `now`, if any: `line()`, followed by how many reports were held
    /// back since the last printed one. `line` is called only then.
    pub fn admit(&self, now: Instant, line: impl FnOnce() -> String) -> Option<String> {
        let due = self
            .last_printed
            .get()
            .is_none_or(|printed| now.saturating_duration_since(printed) >= self.interval);
        if !due {
            self.held_back.set(self.held_back.get() + 1);
            return None;
        }
        self.last_printed.set(Some(now));
        let held_back = self.held_back.replace(0);
        let line = line();
        Some(match held_back {
            0 => line,
            held_back => format!("{line} ({held_back} more like it not shown)"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_is_printed_once_per_interval_with_the_count_held_back() {
        let report = RepeatedReport::new(Duration::from_secs(5));
        let start = Instant::now();
        let at = |seconds| start + Duration::from_secs(seconds);
        assert_eq!(report.admit(at(0), || "bad".into()).as_deref(), Some("bad"));
        for seconds in 1..5 {
            assert_eq!(
                report.admit(at(seconds), || unreachable!("not built")),
                None
            );
        }
        assert_eq!(
            report.admit(at(5), || "bad again".into()).as_deref(),
            Some("bad again (4 more like it not shown)")
        );
        assert_eq!(
            report.admit(at(11), || "late".into()).as_deref(),
            Some("late")
        );
    }
}
