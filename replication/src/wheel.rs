//! A timer wheel of ticks: what a shard's replicas ask to be run at, so that a tick costs as
//! much as the replicas due at it, not as the replicas the shard holds.
//!
//! One bucket per tick of a fixed window, entries `(tick, id)` in the bucket of `tick` modulo
//! the window; a tick further out than the window sits in its bucket until its lap comes (each
//! passing looks at it once). Entries are never removed early: a replica that wants to run
//! later than it asked is run at the earlier tick, finds nothing due and asks again, which
//! costs less than finding and moving the entry. Buckets keep their capacity, so steady
//! scheduling allocates nothing.

/// Ticks covered by one turn of the wheel (5 s at the broker's 10 ms): elections, fetch
/// timeouts, held fetches and housekeeping all fall within it.
pub const WHEEL_TICKS: usize = 512;

pub struct TimerWheel {
    buckets: Vec<Vec<(u64, u32)>>,
    /// The last tick expired.
    now: u64,
}

impl TimerWheel {
    /// A wheel whose next expiry is tick `now + 1`.
    pub fn new(now: u64) -> TimerWheel {
        TimerWheel {
            buckets: (0..WHEEL_TICKS).map(|_| Vec::new()).collect(),
            now,
        }
    }

    /// Asks for `id` at `tick` (one already expired is taken as the next one).
    pub fn schedule(&mut self, tick: u64, id: u32) {
        let tick = tick.max(self.now + 1);
        self.buckets[(tick % WHEEL_TICKS as u64) as usize].push((tick, id));
    }

    /// Expires every tick up to `now`, appending the ids due by then to `due` (in no
    /// particular order; an id asked for several times comes as often).
    pub fn expire(&mut self, now: u64, due: &mut Vec<u32>) {
        let passed = now.saturating_sub(self.now).min(WHEEL_TICKS as u64);
        for offset in 0..passed {
            let tick = now - offset;
            let bucket = &mut self.buckets[(tick % WHEEL_TICKS as u64) as usize];
            bucket.retain(|(at, id)| {
                if *at <= now {
                    due.push(*id);
                    false
                } else {
                    true
                }
            });
        }
        self.now = self.now.max(now);
    }

    /// Entries waiting (stale ones included).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.buckets.iter().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expire(wheel: &mut TimerWheel, now: u64) -> Vec<u32> {
        let mut due = Vec::new();
        wheel.expire(now, &mut due);
        due.sort_unstable();
        due
    }

    #[test]
    fn entries_come_at_their_tick_past_laps_and_jumps() {
        let mut wheel = TimerWheel::new(0);
        wheel.schedule(1, 1);
        wheel.schedule(3, 3);
        wheel.schedule(3, 30);
        wheel.schedule(WHEEL_TICKS as u64 + 2, 2);
        wheel.schedule(0, 9); // already past: the next tick
        assert_eq!(expire(&mut wheel, 1), [1, 9]);
        assert_eq!(expire(&mut wheel, 2), Vec::<u32>::new());
        assert_eq!(expire(&mut wheel, 3), [3, 30]);
        for tick in 4..WHEEL_TICKS as u64 + 2 {
            assert_eq!(expire(&mut wheel, tick), Vec::<u32>::new(), "tick {tick}");
        }
        assert_eq!(expire(&mut wheel, WHEEL_TICKS as u64 + 2), [2]);
        // A jump of several ticks expires everything passed.
        wheel.schedule(WHEEL_TICKS as u64 + 5, 5);
        wheel.schedule(WHEEL_TICKS as u64 + 7, 7);
        wheel.schedule(WHEEL_TICKS as u64 + 50, 50);
        assert_eq!(expire(&mut wheel, WHEEL_TICKS as u64 + 10), [5, 7]);
        assert_eq!(wheel.len(), 1);
    }
}
