//! KIP-890 (part 1): a transactional batch opens its producer's transaction on a partition only
//! once the transaction coordinator confirmed the partition is in that transaction, so that a
//! late batch of a hung producer (its transaction aborted meanwhile) cannot open a transaction
//! nobody will ever end, which would hold the last stable offset back for good.
//!
//! Kafka's `VerificationStateEntry` and `VerificationGuard`, per producer of the partition:
//! before a produce request asks the coordinator, the log hands out a guard for the producer
//! (`ProducerTable::start_verification`; none is needed while its transaction is open here:
//! [`VerificationGuard::SENTINEL`]); the request's append then shows it, and a transactional
//! batch that would open a transaction is refused (`InvalidTransactionState`) unless the
//! producer's entry still holds that guard. Any transactional batch or marker of the producer
//! placed in the log removes the entry: after a marker (the transaction ended while the
//! coordinator was asked) the guard no longer matches, and a new verification hands out a new
//! one (Kafka's "ABA" case). An entry also keeps the lowest sequence its requests carried, so
//! a later batch that was verified first cannot land before an earlier one that is being
//! retried (`OutOfOrderSequence` until the earlier is in).
//!
//! Pure memory, as in Kafka (a restart forgets every entry; a producer then verifies again).
//! Bounds: at most `producers_max` entries (the oldest goes first), each forgotten once older
//! than `producer_idle_ms_max`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::batch::BatchHeader;
use crate::error::LogError;

/// What a produce request shows the log to prove its producer's transaction was verified with
/// the coordinator after the log's last word on it (see the module documentation). Unique in
/// the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VerificationGuard(u64);

/// The next guard handed out (0 is the sentinel).
static GUARD_NEXT: AtomicU64 = AtomicU64::new(1);

impl VerificationGuard {
    /// The guard of a request whose producer's transaction was open here when it started
    /// (none was needed): it matches no entry, so the batch is refused if the transaction
    /// ended meanwhile.
    pub const SENTINEL: VerificationGuard = VerificationGuard(0);

    fn fresh() -> VerificationGuard {
        VerificationGuard(GUARD_NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct VerificationEntry {
    guard: VerificationGuard,
    created_ms: i64,
    epoch: i16,
    /// The lowest base sequence of the producer's requests since the entry was made (of
    /// `epoch`).
    lowest_sequence: i32,
}

/// The verification entries of one partition's producers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Verifications {
    entries: HashMap<i64, VerificationEntry>,
}

impl Verifications {
    /// The producer's guard, made now if it has none, and its lowest sequence brought down to
    /// `sequence` (or reset by a newer `epoch`), as Kafka's `maybeCreateVerificationStateEntry`.
    /// Forgets entries older than `idle_ms_max`, and the oldest one when `entries_max` are held.
    pub fn start(
        &mut self,
        producer_id: i64,
        epoch: i16,
        sequence: i32,
        now_ms: i64,
        entries_max: usize,
        idle_ms_max: Option<u64>,
    ) -> VerificationGuard {
        assert!(entries_max > 0, "room for one verification at least");
        if let Some(idle_ms_max) = idle_ms_max {
            let idle_ms_max = i64::try_from(idle_ms_max).unwrap_or(i64::MAX);
            self.entries
                .retain(|_, entry| now_ms.saturating_sub(entry.created_ms) <= idle_ms_max);
        }
        if !self.entries.contains_key(&producer_id) && self.entries.len() >= entries_max {
            // Only when full: a scan of at most `entries_max` entries.
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(producer_id, entry)| (entry.created_ms, **producer_id))
                .map(|(producer_id, _)| *producer_id);
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        let entry = self
            .entries
            .entry(producer_id)
            .or_insert_with(|| VerificationEntry {
                guard: VerificationGuard::fresh(),
                created_ms: now_ms,
                epoch,
                lowest_sequence: sequence,
            });
        if epoch > entry.epoch {
            entry.epoch = epoch;
            entry.lowest_sequence = sequence;
        } else if epoch == entry.epoch && sequence < entry.lowest_sequence {
            entry.lowest_sequence = sequence;
        }
        let guard = entry.guard;
        assert!(self.entries.len() <= entries_max);
        guard
    }

    /// Kafka's checks of a producer's batch appended with `guard`: a transactional batch that
    /// would open a transaction (`transaction_open` is false) needs the producer's entry to
    /// hold `guard`; while an entry exists, a batch with a sequence above its lowest waits
    /// for the lower one.
    pub fn check(
        &self,
        header: &BatchHeader,
        transaction_open: bool,
        guard: VerificationGuard,
    ) -> Result<(), LogError> {
        let producer_id = header.producer_id;
        let entry = self.entries.get(&producer_id);
        if header.is_transactional()
            && !transaction_open
            && entry.is_none_or(|entry| entry.guard != guard)
        {
            return Err(LogError::InvalidTransactionState {
                producer_id,
                reason: "the partition is not verified to be in the producer's transaction",
            });
        }
        if let Some(entry) = entry {
            if header.base_sequence >= 0 && header.base_sequence > entry.lowest_sequence {
                return Err(LogError::OutOfOrderSequence {
                    producer_id,
                    expected: entry.lowest_sequence,
                    received: header.base_sequence,
                });
            }
        }
        Ok(())
    }

    /// A transactional batch or marker of the producer is in the log: its verification is
    /// over (see the module documentation).
    pub fn remove(&mut self, producer_id: i64) {
        self.entries.remove(&producer_id);
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::build::{self, ProducerFields, TestRecord};

    fn header(producer_id: i64, epoch: i16, sequence: i32, transactional: bool) -> BatchHeader {
        let mut producer = ProducerFields::idempotent(producer_id, epoch, sequence);
        if transactional {
            producer = producer.with_transaction_bits(false);
        }
        let record = TestRecord {
            key: None,
            value: b"v".to_vec(),
            timestamp_ms: 0,
        };
        BatchHeader::parse(&build::batch_from(&[record], producer)).expect("a whole header")
    }

    #[test]
    fn a_transactional_batch_opens_a_transaction_only_with_the_guard_held() {
        let mut verifications = Verifications::default();
        let batch = header(7, 0, 0, true);
        let refused = verifications.check(&batch, false, VerificationGuard::SENTINEL);
        assert!(matches!(
            refused,
            Err(LogError::InvalidTransactionState { .. })
        ));
        let guard = verifications.start(7, 0, 0, 0, 10, None);
        assert_ne!(guard, VerificationGuard::SENTINEL);
        assert!(verifications.check(&batch, false, guard).is_ok());
        // An open transaction needs no guard; a plain batch neither.
        assert!(verifications
            .check(&batch, true, VerificationGuard::SENTINEL)
            .is_ok());
        assert!(verifications
            .check(&header(8, 0, 0, false), false, VerificationGuard::SENTINEL)
            .is_ok());
        // A marker (or the first batch) ends the verification: the old guard is worthless,
        // and the next one is new.
        verifications.remove(7);
        assert!(verifications.check(&batch, false, guard).is_err());
        let next = verifications.start(7, 0, 0, 0, 10, None);
        assert_ne!(next, guard);
    }

    #[test]
    fn a_concurrent_request_shares_the_guard_and_keeps_the_lowest_sequence() {
        let mut verifications = Verifications::default();
        let first = verifications.start(7, 0, 5, 0, 10, None);
        let second = verifications.start(7, 0, 3, 1, 10, None);
        assert_eq!(first, second);
        let later = verifications.check(&header(7, 0, 5, true), false, first);
        assert!(matches!(
            later,
            Err(LogError::OutOfOrderSequence { expected: 3, .. })
        ));
        assert!(verifications
            .check(&header(7, 0, 3, true), false, first)
            .is_ok());
        // A newer epoch starts over.
        verifications.start(7, 1, 9, 2, 10, None);
        assert!(verifications
            .check(&header(7, 1, 9, true), false, first)
            .is_ok());
    }

    #[test]
    fn entries_are_bounded_and_expire() {
        let mut verifications = Verifications::default();
        for producer_id in 0..5 {
            verifications.start(producer_id, 0, 0, producer_id, 3, None);
            assert!(verifications.entries.len() <= 3);
        }
        assert!(!verifications.entries.contains_key(&0));
        assert!(verifications.entries.contains_key(&4));
        verifications.start(9, 0, 0, 1_000, 3, Some(100));
        assert_eq!(verifications.entries.len(), 1);
    }
}
