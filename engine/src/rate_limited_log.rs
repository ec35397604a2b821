//! Log lines that a client, a peer or the machine can cause over and over (a failing accept,
//! a bad frame, a flapping inter-broker connection): each place that writes one prints it at
//! most once per [`LOG_INTERVAL`], and the next line it prints says how many it left out.
//!
//! Without this, any client could fill the disk through the log (one line per bad
//! connection), and a broker out of descriptors wrote gigabytes of the same accept error. The
//! limit is per call site (a `static` inside [`log_rate_limited!`]) and shared by every shard,
//! so the log grows by a bounded number of lines per interval whatever the traffic. Lines
//! left out are only counted, never stored; a burst that ends is reported by the next line
//! from the same place.
//!
//! It lives in `engine` because every crate logs such lines (accept failures, connections closed
//! for bad input, inter-broker connections breaking, messages naming a term past the last leader
//! epoch, group state that cannot be written, metadata entries that changed nothing), and `engine`
//! is the one crate they all depend on.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often one call site may log.
pub const LOG_INTERVAL: Duration = Duration::from_secs(5);

/// The state of one call site.
#[derive(Debug)]
pub struct RateLimitedLog {
    interval: Duration,
    state: Mutex<WindowState>,
}

#[derive(Debug)]
struct WindowState {
    /// When the last line was printed; `None` before the first.
    logged_at: Option<Instant>,
    /// Lines left out since then.
    suppressed: u64,
}

impl RateLimitedLog {
    pub const fn new(interval: Duration) -> RateLimitedLog {
        RateLimitedLog {
            interval,
            state: Mutex::new(WindowState {
                logged_at: None,
                suppressed: 0,
            }),
        }
    }

    /// Whether a line at `now` is printed: `Some(n)` with the lines left out since the last
    /// one printed, `None` if this one is left out (and counted).
    pub fn admit(&self, now: Instant) -> Option<u64> {
        // A panic elsewhere while holding this lock left nothing half-updated worth refusing.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match state.logged_at {
            Some(logged_at) if now.saturating_duration_since(logged_at) < self.interval => {
                state.suppressed += 1;
                None
            }
            _ => {
                state.logged_at = Some(now);
                Some(std::mem::take(&mut state.suppressed))
            }
        }
    }

    /// Prints `line` to stderr unless this call site printed one within the interval.
    pub fn log(&self, line: std::fmt::Arguments<'_>) {
        if let Some(suppressed) = self.admit(Instant::now()) {
            eprintln!("{}", with_suppressed(line, suppressed, self.interval));
        }
    }
}

/// `line`, followed by how many lines like it were left out, if any.
fn with_suppressed(line: std::fmt::Arguments<'_>, suppressed: u64, interval: Duration) -> String {
    match suppressed {
        0 => line.to_string(),
        _ => format!(
            "{line} ({suppressed} more like this not logged; at most one every {} s)",
            interval.as_secs()
        ),
    }
}

/// `eprintln!` for lines that may repeat: at most one every [`LOG_INTERVAL`] from this call
/// site, the next one printed counting those left out. The arguments are formatted only when
/// the line is printed.
#[macro_export]
macro_rules! log_rate_limited {
    ($($argument:tt)+) => {{
        static LIMIT: $crate::rate_limited_log::RateLimitedLog =
            $crate::rate_limited_log::RateLimitedLog::new($crate::rate_limited_log::LOG_INTERVAL);
        LIMIT.log(format_args!($($argument)+));
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_and_the_next_counts_those_left_out() {
        let limit = RateLimitedLog::new(Duration::from_secs(5));
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        assert_eq!(limit.admit(at(0)), Some(0), "the first line is printed");
        for ms in [1, 100, 4_999] {
            assert_eq!(limit.admit(at(ms)), None, "within the interval");
        }
        assert_eq!(limit.admit(at(5_000)), Some(3), "with the count left out");
        assert_eq!(limit.admit(at(6_000)), None);
        assert_eq!(limit.admit(at(60_000)), Some(1));
        assert_eq!(
            limit.admit(at(70_000)),
            Some(0),
            "a quiet interval: nothing left out"
        );
    }

    #[test]
    fn a_printed_line_names_what_was_left_out() {
        let interval = Duration::from_secs(5);
        assert_eq!(
            with_suppressed(format_args!("bad frame"), 0, interval),
            "bad frame"
        );
        assert_eq!(
            with_suppressed(format_args!("bad frame"), 7, interval),
            "bad frame (7 more like this not logged; at most one every 5 s)"
        );
    }
}
