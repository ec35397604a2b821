//! SplitMix64, the one pseudo-random generator of the deterministic state machines: the Raft
//! core's election timeouts and backoff jitter, the controller's topic ids, the group
//! coordinator's member ids, the simulators' fault schedules, and (its finaliser, [`mix64`])
//! the bench drivers' keys. A seed the driver passes in fixes every value, so a simulated run
//! is a function of its seed. Here, in the lowest crate, so every crate shares one copy; ten
//! lines of our own rather than a dependency (`rand_xoshiro` has one), since the simulator's
//! recorded seeds depend on its exact sequence and the Raft core's API stays free of `rand`'s
//! traits.

/// SplitMix64: a bijection of a counter, fast and good enough for timeouts and fault schedules.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.state)
    }

    /// A value in `low..high` (`high > low`); the modulo bias is irrelevant at these ranges.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        assert!(high > low, "empty range {low}..{high}");
        low + self.next_u64() % (high - low)
    }

    /// True with probability `numerator / denominator`.
    pub fn chance(&mut self, numerator: u64, denominator: u64) -> bool {
        self.range(0, denominator) < numerator
    }
}

/// SplitMix64's finaliser: a bijection of u64 that spreads every input bit over the output.
pub fn mix64(mut value: u64) -> u64 {
    value = (value ^ (value >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    value ^ (value >> 31)
}
