//! Loom models of the SPSC ring (`engine::mesh::ring`): every interleaving and every reordering
//! the memory model allows, within the preemption bound, of a producer and a consumer.
//!
//! Besides each model's assertions, loom fails a model on a data race on a ring slot (the slots
//! are loom cells), on a deadlock (which is how a lost wake-up shows: a side waits forever), and
//! on a leaked ring.
#![cfg(loom)]

use engine::mesh::ring::{ring, Consumer, Producer};
use ferrite_loom_tests::{check, Semaphore};
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;
use std::sync::Arc as StdArc;

/// A ring of `capacity` whose sides are woken through the two returned semaphores
/// (consumer's, producer's).
fn ring_with_semaphores<T>(
    capacity: usize,
) -> (
    Producer<T>,
    Consumer<T>,
    StdArc<Semaphore>,
    StdArc<Semaphore>,
) {
    let wake_consumer = StdArc::new(Semaphore::new());
    let wake_producer = StdArc::new(Semaphore::new());
    let (producer, consumer) = ring(capacity, wake_consumer.clone(), wake_producer.clone());
    (producer, consumer, wake_consumer, wake_producer)
}

fn push_spinning<T>(producer: &mut Producer<T>, mut value: T) {
    while let Err(refused) = producer.try_push(value) {
        value = refused;
        thread::yield_now();
    }
}

fn pop_spinning<T>(consumer: &mut Consumer<T>) -> T {
    loop {
        if let Some(value) = consumer.try_pop() {
            return value;
        }
        thread::yield_now();
    }
}

/// Pushes `value`, sleeping on `wake` while the ring is full.
fn push_sleeping<T>(producer: &mut Producer<T>, mut value: T, wake: &Semaphore) {
    loop {
        match producer.try_push(value) {
            Ok(()) => return producer.cancel_sleep(),
            Err(refused) => value = refused,
        }
        if producer.sleep_if_full() {
            wake.wait();
        }
    }
}

/// Pops a value, sleeping on `wake` while the ring is empty.
fn pop_sleeping<T>(consumer: &mut Consumer<T>, wake: &Semaphore) -> T {
    loop {
        if let Some(value) = consumer.try_pop() {
            consumer.cancel_sleep();
            return value;
        }
        if consumer.sleep_if_empty() {
            wake.wait();
        }
    }
}

#[test]
fn values_arrive_in_push_order() {
    check(|| {
        let (mut producer, mut consumer, _, _) = ring_with_semaphores::<u32>(4);
        let producing = thread::spawn(move || {
            for value in 0..3 {
                assert_eq!(producer.try_push(value), Ok(()));
            }
        });
        for expected in 0..3 {
            assert_eq!(pop_spinning(&mut consumer), expected);
        }
        assert_eq!(consumer.try_pop(), None);
        producing.join().unwrap();
    });
}

#[test]
fn wraps_around_a_ring_of_two() {
    check(|| {
        let (mut producer, mut consumer, _, _) = ring_with_semaphores::<u32>(2);
        let producing = thread::spawn(move || {
            for value in 0..4 {
                push_spinning(&mut producer, value);
            }
        });
        for expected in 0..4 {
            assert_eq!(pop_spinning(&mut consumer), expected);
        }
        producing.join().unwrap();
    });
}

#[test]
fn full_and_empty_boundaries() {
    check(|| {
        let (mut producer, mut consumer, _, _) = ring_with_semaphores::<u32>(2);
        let producing = thread::spawn(move || {
            // Two values always fit; the third fits only once the consumer took one, and if it
            // does not, it comes back intact.
            assert_eq!(producer.try_push(0), Ok(()));
            assert_eq!(producer.try_push(1), Ok(()));
            match producer.try_push(2) {
                Ok(()) => {}
                Err(refused) => {
                    assert_eq!(refused, 2);
                    push_spinning(&mut producer, refused);
                }
            }
        });
        // Empty or not, a pop never yields anything but the oldest value.
        match consumer.try_pop() {
            None => assert_eq!(pop_spinning(&mut consumer), 0),
            Some(value) => assert_eq!(value, 0),
        }
        assert_eq!(pop_spinning(&mut consumer), 1);
        assert_eq!(pop_spinning(&mut consumer), 2);
        producing.join().unwrap();
        assert_eq!(consumer.try_pop(), None);
    });
}

#[test]
fn a_batch_becomes_visible_all_at_once() {
    check(|| {
        let (mut producer, mut consumer, _, _) = ring_with_semaphores::<u32>(4);
        let producing = thread::spawn(move || {
            for batch in [[0, 1, 2], [3, 4, 5]] {
                for mut value in batch {
                    // The second batch needs the consumer to have taken the first (wrap-around).
                    while let Err(refused) = producer.try_stage(value) {
                        value = refused;
                        thread::yield_now();
                    }
                }
                producer.publish();
            }
        });
        for expected in [[0, 1, 2], [3, 4, 5]] {
            let mut taken = Vec::new();
            while consumer.pop_batch(8, |value| taken.push(value)) == 0 {
                thread::yield_now();
            }
            assert_eq!(taken, expected);
        }
        producing.join().unwrap();
    });
}

#[test]
fn sleeping_consumer_is_woken() {
    check(|| {
        let (mut producer, mut consumer, wake_consumer, _) = ring_with_semaphores::<u32>(2);
        let producing = thread::spawn(move || {
            for value in 0..2 {
                assert_eq!(producer.try_push(value), Ok(()));
            }
        });
        for expected in 0..2 {
            assert_eq!(pop_sleeping(&mut consumer, &wake_consumer), expected);
        }
        producing.join().unwrap();
    });
}

#[test]
fn a_published_batch_wakes_a_sleeping_consumer() {
    check(|| {
        let (mut producer, mut consumer, wake_consumer, _) = ring_with_semaphores::<u32>(4);
        let producing = thread::spawn(move || {
            for value in 0..3 {
                assert_eq!(producer.try_stage(value), Ok(()));
            }
            producer.publish();
        });
        let mut taken = Vec::new();
        while taken.is_empty() {
            if consumer.pop_batch(8, |value| taken.push(value)) > 0 {
                consumer.cancel_sleep();
            } else if consumer.sleep_if_empty() {
                wake_consumer.wait();
            }
        }
        assert_eq!(taken, [0, 1, 2]);
        producing.join().unwrap();
    });
}

#[test]
fn sleeping_producer_is_woken_by_room() {
    check(|| {
        let (mut producer, mut consumer, wake_consumer, wake_producer) =
            ring_with_semaphores::<u32>(1);
        let consuming = thread::spawn(move || {
            for expected in 0..3 {
                assert_eq!(pop_sleeping(&mut consumer, &wake_consumer), expected);
            }
        });
        for value in 0..3 {
            push_sleeping(&mut producer, value, &wake_producer);
        }
        consuming.join().unwrap();
    });
}

#[test]
fn staged_values_are_published_before_the_producer_sleeps() {
    check(|| {
        let (mut producer, mut consumer, wake_consumer, wake_producer) =
            ring_with_semaphores::<u32>(2);
        let consuming = thread::spawn(move || {
            for expected in 0..3 {
                assert_eq!(pop_sleeping(&mut consumer, &wake_consumer), expected);
            }
        });
        // Stage without publishing until the ring is full of staged values; sleeping must
        // publish them, or the consumer never frees a slot.
        for mut value in 0..3 {
            while let Err(refused) = producer.try_stage(value) {
                value = refused;
                if producer.sleep_if_full() {
                    wake_producer.wait();
                }
            }
        }
        producer.publish();
        consuming.join().unwrap();
    });
}

/// The mesh writer's pattern (`engine::mesh::Sender::stage`, then `publish` once per run): runs
/// of values staged and made visible with one publish, the producer going to sleep in the
/// middle of a run when the ring is full (which must publish the part of the run already
/// staged, or the consumer never frees a slot), the consumer taking batches and sleeping on an
/// empty ring. Neither side may sleep through the other's progress.
#[test]
fn staged_runs_with_both_sides_sleeping() {
    check(|| {
        let (mut producer, mut consumer, wake_consumer, wake_producer) =
            ring_with_semaphores::<u32>(1);
        let consuming = thread::spawn(move || {
            let mut taken = Vec::new();
            while taken.len() < 3 {
                if consumer.pop_batch(2, |value| taken.push(value)) > 0 {
                    consumer.cancel_sleep();
                } else if consumer.sleep_if_empty() {
                    wake_consumer.wait();
                }
            }
            assert_eq!(taken, [0, 1, 2]);
        });
        for run in [&[0, 1][..], &[2]] {
            for &value in run {
                let mut value = value;
                while let Err(refused) = producer.try_stage(value) {
                    value = refused;
                    if producer.sleep_if_full() {
                        wake_producer.wait();
                    }
                }
                producer.cancel_sleep();
            }
            producer.publish();
        }
        consuming.join().unwrap();
    });
}

/// Counts its drops.
struct Counted(loom::sync::Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn dropping_the_halves_drops_each_value_once() {
    check(|| {
        let drops = loom::sync::Arc::new(AtomicUsize::new(0));
        let (mut producer, mut consumer, _, _) = ring_with_semaphores::<Counted>(4);
        let producing = {
            let drops = drops.clone();
            thread::spawn(move || {
                for _ in 0..2 {
                    assert!(producer.try_push(Counted(drops.clone())).is_ok());
                }
                // Staged, never published by hand: dropping the producer publishes it.
                assert!(producer.try_stage(Counted(drops.clone())).is_ok());
            })
        };
        let consuming = thread::spawn(move || drop(consumer.try_pop()));
        producing.join().unwrap();
        consuming.join().unwrap();
        assert_eq!(drops.load(Ordering::Relaxed), 3);
    });
}
