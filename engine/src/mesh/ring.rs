//! A bounded, lock-free, single-producer/single-consumer ring: the wire between two shards.
//!
//! Every message that crosses shards crosses one of these, so the ring is built for the two
//! costs that dominate such a wire: cache-line transfers between the cores and system calls.
//!
//! * **Bound.** The capacity is a power of two between 1 and [`CAPACITY_MAX`], fixed when the
//!   ring is made; the slots are allocated once, then. A full ring is back-pressure: the value is
//!   handed back to the producer, never dropped, and the producer never blocks inside the ring.
//! * **No ping-pong.** `tail` (written only by the producer) and `head` (written only by the
//!   consumer) each sit alone on a 128-byte line (two 64-byte lines, because adjacent-line
//!   prefetchers pull pairs). Each side keeps a private copy of the other side's index and reads
//!   the shared one only when its copy says the ring is full (producer) or empty (consumer).
//! * **Batching.** The producer may stage many values ([`Producer::try_stage`]) and make them
//!   visible with one release store ([`Producer::publish`]); the consumer takes up to
//!   `count_max` with one acquire load and one release store ([`Consumer::pop_batch`]).
//! * **Sleep and wake.** Either side may declare itself asleep ([`Consumer::sleep_if_empty`],
//!   [`Producer::sleep_if_full`]), and the other side notifies it after its next publish or
//!   release of slots, through a [`Notify`] supplied when the ring is made. The protocol is a
//!   Dekker handshake: the sleeper stores its sleep word, issues a `SeqCst` fence and re-reads
//!   the other side's index; the waker stores its index, issues a `SeqCst` fence and reads the
//!   sleep word. The two fences are ordered one way or the other, so either the sleeper sees the
//!   new index and does not sleep, or the waker sees the declaration and notifies: no wake-up is
//!   lost. Both fences are plain `SeqCst` fences, the same code loom checks. (An earlier version
//!   made them asymmetric: the sleeper called `membarrier(2)`, forcing a barrier on every running
//!   thread, so the waker needed only a compiler fence. But a shard declares sleep every time a
//!   ring runs dry, thousands of times a second under load, and each `membarrier` interrupts
//!   every CPU running one of our threads (a VM exit under virtualisation): 6 % of the broker's
//!   samples at 16 partitions, against tens of cycles for a fence per publish.) A side that is
//!   awake costs the other one fence and one load of a line that stays shared, not a call.
//! * **One writer per word.** The sleep word is an epoch, odd while asleep, written only by the
//!   sleeper; the waker remembers the last epoch it notified instead of clearing the word, so one
//!   declaration costs at most one notify and the waker never writes the sleeper's line. (A
//!   waker-side `swap` would also be correct, but loom cannot order an RMW's store against a
//!   later store it did not read, and reports a lost wake-up that cannot happen.) Fences rather
//!   than `SeqCst` accesses for the same reason: loom models `SeqCst` fences exactly but treats
//!   `SeqCst` accesses as acquire/release, and the same code must pass under loom.
//!
//! Cost per publish (or per batch popped): one release store, one `SeqCst` fence and one load;
//! going to sleep costs the same.
//!
//! Indices grow without wrapping at the capacity (they wrap at `usize::MAX`, with wrapping
//! arithmetic); a slot is `index & mask`, and `tail - head` is the number of published values.

use super::sync::{fence, Arc, AtomicUsize, Ordering, UnsafeCell};
use std::mem::MaybeUninit;

/// Largest capacity a ring may have, in values: one million slots bounds the memory a single
/// ring can pin at start-up.
pub const CAPACITY_MAX: usize = 1 << 20;

/// How a side that declared itself asleep is woken by the other side.
///
/// `notify` is called from the other side's thread, after the state the sleeper waits for is
/// published, at most once per declaration. It may be called when the sleeper has already woken
/// for another reason, so the sleeper must treat a wake-up as "look again", never as "there is
/// something", and a notify that comes before the sleeper waits must not be lost (a token, as
/// with `park`/`unpark`). It must not block.
pub trait Notify: Send + Sync {
    /// Wakes the sleeping side.
    fn notify(&self);
}

/// A thread that sleeps with `std::thread::park` is woken with `unpark`.
impl Notify for std::thread::Thread {
    fn notify(&self) {
        self.unpark();
    }
}

/// Makes a ring of `capacity` slots and splits it into its two halves.
///
/// `notify_consumer` wakes the consumer after it declared itself asleep on an empty ring;
/// `notify_producer` wakes the producer after it declared itself asleep on a full ring.
///
/// # Panics
///
/// If `capacity` is not a power of two or exceeds [`CAPACITY_MAX`].
pub fn ring<T>(
    capacity: usize,
    notify_consumer: std::sync::Arc<dyn Notify>,
    notify_producer: std::sync::Arc<dyn Notify>,
) -> (Producer<T>, Consumer<T>) {
    assert!(
        capacity.is_power_of_two() && capacity <= CAPACITY_MAX,
        "ring capacity {capacity} must be a power of two no larger than {CAPACITY_MAX}"
    );
    let ring = Arc::new(Ring {
        tail: CachePadded(AtomicUsize::new(0)),
        head: CachePadded(AtomicUsize::new(0)),
        consumer_sleep: SleepWord::new(notify_consumer),
        producer_sleep: SleepWord::new(notify_producer),
        slots: (0..capacity)
            .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
            .collect(),
        mask: capacity - 1,
    });
    let producer = Producer {
        ring: Arc::clone(&ring),
        tail_staged: 0,
        tail_published: 0,
        head_cached: 0,
        sleep_epoch: 0,
        consumer_epoch_notified: 0,
    };
    let consumer = Consumer {
        ring,
        head: 0,
        tail_cached: 0,
        sleep_epoch: 0,
        producer_epoch_notified: 0,
    };
    (producer, consumer)
}

/// Aligns its contents to 128 bytes so that nothing else shares their cache-line pair.
#[repr(align(128))]
struct CachePadded<T>(T);

/// One side's declaration that it is asleep, and how to wake it.
///
/// The word holds the sleeper's sleep epoch: odd while asleep, even while awake, bumped by every
/// declaration and withdrawal. Only the sleeper writes it; each side keeps its own copy of what
/// it needs (the sleeper its epoch, the waker the last epoch it notified) in its half.
struct SleepWord {
    /// Written by the sleeper (rarely), read by the waker on every publish: on a line of its own
    /// so the waker's read hits its own cache while the sleeper is awake.
    epoch: CachePadded<AtomicUsize>,
    notify: std::sync::Arc<dyn Notify>,
}

impl SleepWord {
    fn new(notify: std::sync::Arc<dyn Notify>) -> Self {
        Self {
            epoch: CachePadded(AtomicUsize::new(0)),
            notify,
        }
    }

    /// Sleeper's half of the handshake: a fresh odd epoch, so the waker notifies it even if it
    /// notified an earlier one. The caller re-reads the other side's index after this.
    ///
    /// Why no wake-up is lost: this fence (F_s: after the epoch store E, before the index load
    /// I) pairs with the one in [`SleepWord::wake`] (F_w: after the waker's index store X,
    /// before its epoch load L). All `SeqCst` fences are totally ordered. If F_s comes first, L
    /// reads E or a later epoch (C++ [atomics.fences]: a store before a fence that precedes,
    /// in that order, a fence before a load is visible to the load), so the waker sees the
    /// declaration (or a withdrawal, which only an awake sleeper makes) and notifies. If F_w
    /// comes first, I reads X or later, so the sleeper sees the new index and does not sleep.
    /// Either way one side sees the other; without either fence both loads may read the old
    /// values (store buffering) and both sides sleep. The loom models (`loom-tests`) fail with
    /// a deadlock if either fence is removed.
    fn declare(&self, epoch: &mut usize) {
        *epoch = (*epoch | 1).wrapping_add(2);
        assert_eq!(*epoch % 2, 1, "a declared epoch is odd");
        self.epoch.0.store(*epoch, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// The sleeper is awake and needs no notify; costs nothing if it was not asleep. A notify
    /// already decided on is harmless.
    fn withdraw(&self, epoch: &mut usize) {
        if *epoch % 2 == 1 {
            *epoch = epoch.wrapping_add(1);
            self.epoch.0.store(*epoch, Ordering::Relaxed);
        }
    }

    /// Waker's half of the handshake; the caller has just stored its index. The fence pairs
    /// with the sleeper's in [`SleepWord::declare`] (which says why that loses no wake-up).
    fn wake(&self, epoch_notified: &mut usize) {
        fence(Ordering::SeqCst);
        let epoch = self.epoch.0.load(Ordering::Relaxed);
        if epoch % 2 == 1 && epoch != *epoch_notified {
            *epoch_notified = epoch;
            self.notify.notify();
        }
    }
}

/// The state both halves share.
struct Ring<T> {
    /// Index one past the last published value. Written only by the producer.
    tail: CachePadded<AtomicUsize>,
    /// Index of the oldest value not yet taken. Written only by the consumer.
    head: CachePadded<AtomicUsize>,
    consumer_sleep: SleepWord,
    producer_sleep: SleepWord,
    /// Slots `[head, tail)` (modulo the capacity) hold values; the rest are uninitialised, except
    /// slots the producer has staged but not published, which belong to it alone.
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    /// `capacity - 1`; the capacity is a power of two.
    mask: usize,
}

impl<T> Ring<T> {
    fn capacity(&self) -> usize {
        self.mask + 1
    }

    fn slot(&self, index: usize) -> &UnsafeCell<MaybeUninit<T>> {
        &self.slots[index & self.mask]
    }
}

// SAFETY: the only shared mutable state besides atomics is `slots`, and each slot is accessed by
// one side at a time: the producer writes slots outside `[head, tail)` and the consumer reads
// slots inside it, with the release/acquire pairs on `tail` and `head` ordering each hand-over.
// Values of `T` move between threads, hence `T: Send`.
unsafe impl<T: Send> Sync for Ring<T> {}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // Both halves are gone (the `Arc` synchronised their last accesses with this drop) and
        // the producer published everything it staged, so `[head, tail)` is exactly what remains.
        let head = self.head.0.load(Ordering::Relaxed);
        let tail = self.tail.0.load(Ordering::Relaxed);
        assert!(tail.wrapping_sub(head) <= self.capacity());
        let mut index = head;
        while index != tail {
            // SAFETY: slots in `[head, tail)` hold initialised values that nobody took; each is
            // visited once, and `&mut self` rules out any other access.
            self.slot(index)
                .with_mut(|slot| unsafe { (*slot).assume_init_drop() });
            index = index.wrapping_add(1);
        }
    }
}

/// The writing half of a ring. Owned by one thread at a time; not `Clone`.
pub struct Producer<T> {
    ring: Arc<Ring<T>>,
    /// Index of the next slot to write; `[tail_published, tail_staged)` is staged.
    tail_staged: usize,
    /// Last value stored to `ring.tail`.
    tail_published: usize,
    /// Copy of `ring.head`, possibly stale (so the ring looks fuller than it is, never emptier).
    head_cached: usize,
    /// This side's sleep epoch (see [`SleepWord`]); odd while declared asleep.
    sleep_epoch: usize,
    /// The consumer's last sleep epoch this side notified.
    consumer_epoch_notified: usize,
}

impl<T> Producer<T> {
    /// Number of slots, fixed at construction.
    pub fn capacity(&self) -> usize {
        self.ring.capacity()
    }

    /// Writes `value` into the next slot without making it visible to the consumer; see
    /// [`Producer::publish`]. Hands `value` back if every slot is taken or staged.
    pub fn try_stage(&mut self, value: T) -> Result<(), T> {
        let capacity = self.capacity();
        if self.tail_staged.wrapping_sub(self.head_cached) == capacity {
            self.head_cached = self.ring.head.0.load(Ordering::Acquire);
            assert!(self.tail_staged.wrapping_sub(self.head_cached) <= capacity);
            if self.tail_staged.wrapping_sub(self.head_cached) == capacity {
                return Err(value);
            }
        }
        // SAFETY: the slot is outside `[head, tail_staged)`, so the consumer has finished with it
        // (the acquire load of `head` ordered its read before this write) and holds no value.
        self.ring
            .slot(self.tail_staged)
            .with_mut(|slot| unsafe { (*slot).write(value) });
        self.tail_staged = self.tail_staged.wrapping_add(1);
        Ok(())
    }

    /// Makes every staged value visible to the consumer with one release store, and wakes the
    /// consumer if it declared itself asleep. Does nothing if nothing is staged.
    pub fn publish(&mut self) {
        if self.tail_published == self.tail_staged {
            return;
        }
        self.ring.tail.0.store(self.tail_staged, Ordering::Release);
        self.tail_published = self.tail_staged;
        self.ring
            .consumer_sleep
            .wake(&mut self.consumer_epoch_notified);
    }

    /// Stages and publishes one value; hands it back if the ring is full.
    pub fn try_push(&mut self, value: T) -> Result<(), T> {
        self.try_stage(value)?;
        self.publish();
        Ok(())
    }

    /// Publishes anything staged, then declares the producer asleep if the ring is still full.
    ///
    /// Returns `true` if the caller must now wait for `notify_producer`, which the consumer will
    /// call after it next frees slots; `false` if there is room (the declaration is withdrawn).
    #[must_use = "true means: wait for the notify before trying again"]
    pub fn sleep_if_full(&mut self) -> bool {
        self.publish();
        self.ring.producer_sleep.declare(&mut self.sleep_epoch);
        self.head_cached = self.ring.head.0.load(Ordering::Acquire);
        let capacity = self.capacity();
        assert!(self.tail_staged.wrapping_sub(self.head_cached) <= capacity);
        if self.tail_staged.wrapping_sub(self.head_cached) < capacity {
            self.cancel_sleep();
            return false;
        }
        true
    }

    /// Withdraws a sleep declaration, for a producer that woke (or found room) on its own, so
    /// the consumer does not notify it needlessly. Costs nothing if none is outstanding.
    pub fn cancel_sleep(&mut self) {
        self.ring.producer_sleep.withdraw(&mut self.sleep_epoch);
    }
}

impl<T> Drop for Producer<T> {
    /// Staged values are published, not lost: the consumer may still take them, and otherwise
    /// the ring drops them.
    fn drop(&mut self) {
        self.publish();
    }
}

/// The reading half of a ring. Owned by one thread at a time; not `Clone`.
pub struct Consumer<T> {
    ring: Arc<Ring<T>>,
    /// Index of the next value to take; the shared `ring.head` equals it between calls.
    head: usize,
    /// Copy of `ring.tail`, possibly stale (so the ring looks emptier than it is, never fuller).
    tail_cached: usize,
    /// This side's sleep epoch (see [`SleepWord`]); odd while declared asleep.
    sleep_epoch: usize,
    /// The producer's last sleep epoch this side notified.
    producer_epoch_notified: usize,
}

impl<T> Consumer<T> {
    /// Number of slots, fixed at construction.
    pub fn capacity(&self) -> usize {
        self.ring.capacity()
    }

    /// Takes the oldest published value, if any.
    pub fn try_pop(&mut self) -> Option<T> {
        let mut popped = None;
        self.pop_batch(1, |value| popped = Some(value));
        popped
    }

    /// Takes up to `count_max` published values, oldest first, handing each to `consume`, and
    /// returns how many were taken. Reads the shared tail at most once and frees the slots (and
    /// wakes a producer asleep on a full ring) with one release store at the end.
    ///
    /// If `consume` panics, the values already taken stay taken and the rest stay in the ring.
    pub fn pop_batch(&mut self, count_max: usize, mut consume: impl FnMut(T)) -> usize {
        let capacity = self.capacity();
        if self.tail_cached.wrapping_sub(self.head) < count_max {
            self.tail_cached = self.ring.tail.0.load(Ordering::Acquire);
            assert!(self.tail_cached.wrapping_sub(self.head) <= capacity);
        }
        let count = self.tail_cached.wrapping_sub(self.head).min(count_max);
        if count == 0 {
            return 0;
        }
        let batch = PopBatch { consumer: self };
        for _ in 0..count {
            let head = batch.consumer.head;
            // SAFETY: `head` is inside `[head, tail)`, published by the producer (the acquire load
            // of `tail` ordered its write before this read), and read exactly once because `head`
            // advances before the value is handed on.
            let value = batch
                .consumer
                .ring
                .slot(head)
                .with_mut(|slot| unsafe { (*slot).assume_init_read() });
            batch.consumer.head = head.wrapping_add(1);
            consume(value);
        }
        count
    }

    /// Declares the consumer asleep if the ring is still empty.
    ///
    /// Returns `true` if the caller must now wait for `notify_consumer`, which the producer will
    /// call after it next publishes; `false` if values are available (the declaration is
    /// withdrawn).
    #[must_use = "true means: wait for the notify before trying again"]
    pub fn sleep_if_empty(&mut self) -> bool {
        self.ring.consumer_sleep.declare(&mut self.sleep_epoch);
        self.tail_cached = self.ring.tail.0.load(Ordering::Acquire);
        assert!(self.tail_cached.wrapping_sub(self.head) <= self.capacity());
        if self.tail_cached != self.head {
            self.cancel_sleep();
            return false;
        }
        true
    }

    /// Withdraws a sleep declaration, for a consumer that woke (or found values) on its own, so
    /// the producer does not notify it needlessly. Costs nothing if none is outstanding.
    pub fn cancel_sleep(&mut self) {
        self.ring.consumer_sleep.withdraw(&mut self.sleep_epoch);
    }
}

/// Frees the slots a [`Consumer::pop_batch`] took, on every exit path including a panic in the
/// caller's closure.
struct PopBatch<'a, T> {
    consumer: &'a mut Consumer<T>,
}

impl<T> Drop for PopBatch<'_, T> {
    fn drop(&mut self) {
        let consumer = &mut *self.consumer;
        consumer.ring.head.0.store(consumer.head, Ordering::Release);
        consumer
            .ring
            .producer_sleep
            .wake(&mut consumer.producer_epoch_notified);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize as StdAtomicUsize;
    use std::sync::mpsc;
    use std::thread;
    use std::time::{Duration, Instant};

    /// For rings whose sides never sleep.
    struct NeverNotified;

    impl Notify for NeverNotified {
        fn notify(&self) {
            panic!("notified although nobody declared sleep");
        }
    }

    fn ring_unnotified<T>(capacity: usize) -> (Producer<T>, Consumer<T>) {
        ring(
            capacity,
            std::sync::Arc::new(NeverNotified),
            std::sync::Arc::new(NeverNotified),
        )
    }

    /// Counts its drops, to check that the ring drops each value exactly once.
    struct Counted(std::sync::Arc<StdAtomicUsize>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn full_ring_hands_the_value_back() {
        let (mut producer, mut consumer) = ring_unnotified::<u32>(2);
        assert_eq!(producer.try_push(1), Ok(()));
        assert_eq!(producer.try_push(2), Ok(()));
        assert_eq!(producer.try_push(3), Err(3));
        assert_eq!(consumer.try_pop(), Some(1));
        assert_eq!(producer.try_push(3), Ok(()));
        assert_eq!(consumer.try_pop(), Some(2));
        assert_eq!(consumer.try_pop(), Some(3));
        assert_eq!(consumer.try_pop(), None);
    }

    #[test]
    fn capacity_one_alternates() {
        let (mut producer, mut consumer) = ring_unnotified::<u32>(1);
        for value in 0..10 {
            assert_eq!(producer.try_push(value), Ok(()));
            assert_eq!(producer.try_push(value + 100), Err(value + 100));
            assert_eq!(consumer.try_pop(), Some(value));
            assert_eq!(consumer.try_pop(), None);
        }
    }

    #[test]
    fn staged_values_are_invisible_until_published() {
        let (mut producer, mut consumer) = ring_unnotified::<u32>(4);
        assert_eq!(producer.try_stage(1), Ok(()));
        assert_eq!(producer.try_stage(2), Ok(()));
        assert_eq!(consumer.try_pop(), None);
        producer.publish();
        let mut taken = Vec::new();
        assert_eq!(consumer.pop_batch(8, |value| taken.push(value)), 2);
        assert_eq!(taken, [1, 2]);
        // Staged values count against the capacity.
        for value in 0..4 {
            assert_eq!(producer.try_stage(value), Ok(()));
        }
        assert_eq!(producer.try_stage(4), Err(4));
    }

    #[test]
    #[should_panic(expected = "power of two")]
    fn capacity_must_be_a_power_of_two() {
        let _ = ring_unnotified::<u32>(3);
    }

    #[test]
    fn dropping_drops_every_value_once() {
        let drops = std::sync::Arc::new(StdAtomicUsize::new(0));
        let (mut producer, mut consumer) = ring_unnotified(4);
        for _ in 0..3 {
            assert!(producer.try_push(Counted(drops.clone())).is_ok());
        }
        drop(consumer.try_pop());
        assert_eq!(drops.load(Ordering::Relaxed), 1);
        // Wrap around, and leave one value staged but unpublished.
        for _ in 0..2 {
            assert!(producer.try_push(Counted(drops.clone())).is_ok());
        }
        assert!(producer.try_stage(Counted(drops.clone())).is_err());
        drop(consumer.try_pop());
        assert!(producer.try_stage(Counted(drops.clone())).is_ok());
        drop(producer);
        assert_eq!(drops.load(Ordering::Relaxed), 3);
        drop(consumer);
        assert_eq!(drops.load(Ordering::Relaxed), 7);
    }

    #[test]
    fn panicking_consumer_closure_keeps_the_rest() {
        let (mut producer, mut consumer) = ring_unnotified::<u32>(4);
        for value in 0..4 {
            assert_eq!(producer.try_push(value), Ok(()));
        }
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            consumer.pop_batch(4, |value| assert_ne!(value, 1))
        }));
        assert!(unwound.is_err());
        assert_eq!(producer.try_push(4), Ok(()));
        assert_eq!(producer.try_push(5), Ok(()));
        let mut taken = Vec::new();
        consumer.pop_batch(8, |value| taken.push(value));
        assert_eq!(taken, [2, 3, 4, 5]);
    }

    /// Messages per stress test: enough to wrap a small ring hundreds of thousands of times while
    /// staying within a few seconds in a debug build.
    const STRESS_MESSAGE_COUNT: u64 = 2_000_000;

    /// Runs `produce` and `consume` on two threads over a ring of `capacity` whose sides sleep
    /// with `park` (each side's `Notify` is the other side's thread).
    fn run_pair(
        capacity: usize,
        produce: impl FnOnce(Producer<u64>) + Send + 'static,
        consume: impl FnOnce(Consumer<u64>) + Send + 'static,
    ) {
        let (producer_slot, producer_slot_rx) = mpsc::channel();
        let (consumer_slot, consumer_slot_rx) = mpsc::channel();
        let producer_thread = thread::spawn(move || produce(producer_slot_rx.recv().unwrap()));
        let consumer_thread = thread::spawn(move || consume(consumer_slot_rx.recv().unwrap()));
        let (producer, consumer) = ring(
            capacity,
            std::sync::Arc::new(consumer_thread.thread().clone()),
            std::sync::Arc::new(producer_thread.thread().clone()),
        );
        producer_slot.send(producer).unwrap();
        consumer_slot.send(consumer).unwrap();
        producer_thread.join().unwrap();
        consumer_thread.join().unwrap();
    }

    /// Parks until notified; a park that outlives `timeout` means a wake-up was lost.
    fn park_expecting_notify() {
        let timeout = Duration::from_secs(10);
        let parked_at = Instant::now();
        thread::park_timeout(timeout);
        assert!(parked_at.elapsed() < timeout, "lost wake-up");
    }

    fn push_or_sleep(producer: &mut Producer<u64>, mut value: u64) {
        while let Err(refused) = producer.try_push(value) {
            value = refused;
            if producer.sleep_if_full() {
                park_expecting_notify();
            }
        }
    }

    fn pop_or_sleep(consumer: &mut Consumer<u64>) -> u64 {
        loop {
            if let Some(value) = consumer.try_pop() {
                consumer.cancel_sleep();
                return value;
            }
            if consumer.sleep_if_empty() {
                park_expecting_notify();
            }
        }
    }

    #[test]
    fn stress_single_values_in_order() {
        run_pair(
            64,
            |mut producer| {
                for value in 0..STRESS_MESSAGE_COUNT {
                    push_or_sleep(&mut producer, value);
                }
            },
            |mut consumer| {
                for expected in 0..STRESS_MESSAGE_COUNT {
                    assert_eq!(pop_or_sleep(&mut consumer), expected);
                }
                assert_eq!(consumer.try_pop(), None);
            },
        );
    }

    #[test]
    fn stress_batched_publication_in_order() {
        run_pair(
            128,
            |mut producer| {
                let mut value = 0;
                let mut batch_len = 1;
                while value < STRESS_MESSAGE_COUNT {
                    // Batches of 1 to 67 values, some larger than the free space.
                    let batch_end = (value + batch_len).min(STRESS_MESSAGE_COUNT);
                    while value < batch_end {
                        match producer.try_stage(value) {
                            Ok(()) => value += 1,
                            Err(_) => {
                                if producer.sleep_if_full() {
                                    park_expecting_notify();
                                }
                            }
                        }
                    }
                    producer.publish();
                    batch_len = batch_len % 67 + 1;
                }
            },
            |mut consumer| {
                let mut expected = 0;
                let mut count_max = 1;
                while expected < STRESS_MESSAGE_COUNT {
                    let taken = consumer.pop_batch(count_max, |value| {
                        assert_eq!(value, expected);
                        expected += 1;
                    });
                    if taken == 0 {
                        if consumer.sleep_if_empty() {
                            park_expecting_notify();
                        }
                    } else {
                        consumer.cancel_sleep();
                    }
                    count_max = count_max % 97 + 1;
                }
                assert_eq!(consumer.try_pop(), None);
            },
        );
    }

    #[test]
    fn stress_spinning_sides_with_tiny_ring() {
        run_pair(
            2,
            |mut producer| {
                for mut value in 0..STRESS_MESSAGE_COUNT / 4 {
                    while let Err(refused) = producer.try_push(value) {
                        value = refused;
                        thread::yield_now();
                    }
                }
            },
            |mut consumer| {
                let mut expected = 0;
                while expected < STRESS_MESSAGE_COUNT / 4 {
                    match consumer.try_pop() {
                        Some(value) => {
                            assert_eq!(value, expected);
                            expected += 1;
                        }
                        None => thread::yield_now(),
                    }
                }
            },
        );
    }
}
