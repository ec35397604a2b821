//! How much space a segment reserves (`fallocate`, keeping the file size) ahead of its writes.
//!
//! A reservation is not free: every byte reserved and not yet written is disk the partition
//! holds for nothing (32 MiB per written partition once made 1 000 one-record partitions take
//! 32 GB), and on ext4 a direct write into reserved space converts an unwritten extent, which
//! made the `fdatasync` after it the most expensive kind measured here: the conversion is a
//! metadata journal commit, several times the cost of a sync after appending to a plain file.
//! So a partition reserves only while it is written steadily, and as much as its rate asks
//! for, and only where no `fdatasync` waits on the write:
//! - only a write of journaled batches alone (the commit cycle's lazy segment writes, which
//!   no acknowledgement waits on: the journal made them durable) reserves ahead; a direct
//!   write, synced in the same cycle for an acks=all append, appends to the plain file, whose
//!   sync is the cheaper kind (so without a journal nothing reserves);
//! - such a write past the reserved end of a partition that last ran past it more than
//!   [`GROW_WINDOW_MS`] ago (or never) reserves nothing: it appends to the plain file, and
//!   the step it would reserve halves;
//! - one that ran past it again within the window reserves twice the last step (at least
//!   [`STEP_MIN_BYTES`], at most the log's `preallocate_bytes`, 0 meaning never);
//! - every reservation comes out of the shard's `preallocated_bytes_max` (reserved and not yet
//!   written, over the shard's segments): what does not fit is not reserved. A segment gives
//!   its share back as its writes fill it, and in full when sealed (sealing trims the file,
//!   which frees what was left) or dropped.

use super::{LogState, Shared};
use crate::resources::Preallocation;
use crate::segment::align_up;

/// Run past the reserved end again within this long, a partition counts as written steadily.
pub(super) const GROW_WINDOW_MS: i64 = 1000;
/// The first reservation of a partition written steadily.
pub(super) const STEP_MIN_BYTES: u64 = 1 << 20;

/// A log's reservation pace: the step of its next reservation, and when its writes last ran
/// past the reserved end.
#[derive(Debug, Clone, Copy)]
pub(super) struct PreallocationPace {
    step_bytes: u64,
    exhausted_ms: Option<i64>,
}

impl PreallocationPace {
    pub fn new() -> PreallocationPace {
        PreallocationPace {
            step_bytes: 0,
            exhausted_ms: None,
        }
    }

    /// The step to reserve now that a write runs past the reserved end at `now_ms`; 0 for none.
    fn next_step(&mut self, now_ms: i64, step_bytes_max: u64) -> u64 {
        let steady = self
            .exhausted_ms
            .is_some_and(|exhausted_ms| now_ms - exhausted_ms <= GROW_WINDOW_MS);
        self.exhausted_ms = Some(now_ms);
        self.step_bytes = if steady {
            (self.step_bytes * 2)
                .max(STEP_MIN_BYTES)
                .min(step_bytes_max)
        } else if self.step_bytes / 2 >= STEP_MIN_BYTES {
            self.step_bytes / 2
        } else {
            0
        };
        if step_bytes_max == 0 {
            self.step_bytes = 0;
        }
        self.step_bytes
    }
}

/// A reservation to make: the file's blocks up to `end_bytes`, paid for by `grant`.
pub(super) struct PlannedReservation {
    pub end_bytes: u64,
    grant: Preallocation,
}

impl Shared {
    /// Before a write that ends at `needed_bytes` of the segment at `base_offset`: the
    /// reservation to make first, if any (see the module documentation). Gives back the part
    /// of the segment's share that this write fills.
    pub(super) fn plan_reservation(
        &self,
        base_offset: u64,
        needed_bytes: u64,
        reserve_ahead: bool,
    ) -> Option<PlannedReservation> {
        let config = self.config();
        let now_ms = self.clock.now_ms();
        let mut state = self.state.borrow_mut();
        let LogState {
            segments,
            preallocation_pace,
            ..
        } = &mut *state;
        let segment = segments.get_mut(&base_offset)?;
        if needed_bytes <= segment.reserved_bytes {
            if let Some(share) = &mut segment.preallocation {
                share.shrink_to(segment.reserved_bytes - needed_bytes);
            }
            return None;
        }
        segment.preallocation = None;
        if !reserve_ahead {
            return None;
        }
        let step_bytes = preallocation_pace.next_step(now_ms, config.preallocate_bytes);
        let end_max = config.segment_bytes_max.max(needed_bytes);
        let wanted_end = align_up(needed_bytes + step_bytes).min(end_max);
        if step_bytes == 0 || wanted_end <= needed_bytes {
            return None;
        }
        let grant = self
            .resources
            .reserve_preallocation(wanted_end - needed_bytes);
        if grant.bytes() < STEP_MIN_BYTES.min(wanted_end - needed_bytes) {
            // The shard's budget is spent: append to the plain file.
            return None;
        }
        Some(PlannedReservation {
            end_bytes: needed_bytes + grant.bytes(),
            grant,
        })
    }

    /// The reservation `planned` was made: the segment holds its share until written.
    pub(super) fn note_reservation(&self, base_offset: u64, planned: PlannedReservation) {
        if let Some(segment) = self.state.borrow_mut().segments.get_mut(&base_offset) {
            segment.reserved_bytes = planned.end_bytes;
            segment.preallocation = Some(planned.grant);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_written_once_reserves_nothing_and_a_steady_one_doubles_up_to_the_bound() {
        let max = 8 << 20;
        let mut pace = PreallocationPace::new();
        assert_eq!(pace.next_step(0, max), 0, "a first write reserves nothing");
        assert_eq!(pace.next_step(5000, max), 0, "nor one long after");
        let steps: Vec<u64> = (1..=6)
            .map(|i| pace.next_step(5000 + i * 100, max))
            .collect();
        assert_eq!(
            steps,
            [1 << 20, 2 << 20, 4 << 20, 8 << 20, 8 << 20, 8 << 20]
        );
        // A reservation that lasted longer than the window: the next is half as large.
        assert_eq!(pace.next_step(60_000, max), 4 << 20);
        assert_eq!(pace.next_step(120_000, max), 2 << 20);
        assert_eq!(pace.next_step(180_000, max), 1 << 20);
        assert_eq!(pace.next_step(240_000, max), 0);
        let mut never = PreallocationPace::new();
        never.next_step(0, 0);
        assert_eq!(never.next_step(1, 0), 0, "preallocate_bytes 0: never");
    }
}
