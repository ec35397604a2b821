//! The async ends of one mesh ring, as glommio tasks on the two shards use them.
//!
//! A [`Sender`] lives on the producing shard and a [`Receiver`] on the consuming shard; both are
//! pinned to their shard's thread (they share the shard's doorbell through an `Rc`). Waiting is
//! the ring's sleep protocol with the shard's doorbell as the notifier: register the task's
//! waker, declare sleep, re-check, and return `Pending` only if the ring still says so. While
//! the other side keeps the ring moving, no system call is made and no doorbell rings.

use super::doorbell::ShardDoorbell;
use super::ring::{Consumer, Producer};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;

/// The sending end of the ring from this shard to one peer. Not `Send`: stays on this shard.
pub struct Sender<T> {
    producer: Producer<T>,
    doorbell: Rc<ShardDoorbell>,
    /// This end's waker slot in the shard's doorbell.
    slot: usize,
    peer_shard_id: usize,
}

impl<T> Sender<T> {
    pub(crate) fn new(
        producer: Producer<T>,
        doorbell: Rc<ShardDoorbell>,
        slot: usize,
        peer_shard_id: usize,
    ) -> Self {
        Self {
            producer,
            doorbell,
            slot,
            peer_shard_id,
        }
    }

    /// The shard this sender sends to.
    pub fn peer_shard_id(&self) -> usize {
        self.peer_shard_id
    }

    /// Number of messages the ring holds, fixed when the mesh was built.
    pub fn capacity(&self) -> usize {
        self.producer.capacity()
    }

    /// Sends `value` if the ring has room, else hands it back at once.
    pub fn try_send(&mut self, value: T) -> Result<(), T> {
        self.producer.try_push(value)
    }

    /// Writes `value` into the ring without making it visible to the peer yet (see
    /// [`Sender::publish`]), waiting as [`Sender::send`] does if the ring is full (which
    /// publishes what was staged before). Staging a run of values and publishing them once
    /// costs one release store, and at most one doorbell, for the run.
    pub async fn stage(&mut self, mut value: T) {
        loop {
            match self.producer.try_stage(value) {
                Ok(()) => {
                    self.producer.cancel_sleep();
                    return;
                }
                Err(refused) => value = refused,
            }
            let producer = &mut self.producer;
            sleep_until_rung(&self.doorbell, self.slot, || producer.sleep_if_full()).await;
        }
    }

    /// Makes every staged value visible to the peer, waking it if it sleeps.
    pub fn publish(&mut self) {
        self.producer.publish();
    }

    /// Sends `value`, waiting without blocking the shard for the peer to make room if the ring
    /// is full: this is the mesh's back-pressure.
    ///
    /// Cancel-safe in the sense that dropping the future drops `value` unsent; nothing else is
    /// lost.
    pub async fn send(&mut self, value: T) {
        self.stage(value).await;
        self.publish();
    }
}

/// The receiving end of the ring from one peer to this shard. Not `Send`: stays on this shard.
pub struct Receiver<T> {
    consumer: Consumer<T>,
    doorbell: Rc<ShardDoorbell>,
    /// This end's waker slot in the shard's doorbell.
    slot: usize,
    peer_shard_id: usize,
}

impl<T> Receiver<T> {
    pub(crate) fn new(
        consumer: Consumer<T>,
        doorbell: Rc<ShardDoorbell>,
        slot: usize,
        peer_shard_id: usize,
    ) -> Self {
        Self {
            consumer,
            doorbell,
            slot,
            peer_shard_id,
        }
    }

    /// The shard this receiver receives from.
    pub fn peer_shard_id(&self) -> usize {
        self.peer_shard_id
    }

    /// Takes the oldest message, if any, without waiting.
    pub fn try_recv(&mut self) -> Option<T> {
        let value = self.consumer.try_pop();
        if value.is_some() {
            self.consumer.cancel_sleep();
        }
        value
    }

    /// Takes the oldest message, waiting (the task parked, the reactor free to sleep) until the
    /// peer sends one. Cancel-safe: dropping the future loses no message.
    pub async fn recv(&mut self) -> T {
        self.recv_with(Consumer::try_pop).await
    }

    /// Takes up to `count_max` messages, oldest first, handing each to `consume`, after waiting
    /// as [`Receiver::recv`] does for there to be at least one; returns how many were taken.
    /// One acquire load and one release store for the whole batch.
    ///
    /// # Panics
    ///
    /// If `count_max` is zero: the call could never return.
    pub async fn recv_batch(&mut self, count_max: usize, mut consume: impl FnMut(T)) -> usize {
        assert!(
            count_max > 0,
            "recv_batch needs room for at least one message"
        );
        self.recv_with(|consumer| {
            let count = consumer.pop_batch(count_max, &mut consume);
            (count > 0).then_some(count)
        })
        .await
    }

    /// Repeats `take` until it yields, sleeping on the doorbell between attempts.
    async fn recv_with<R>(&mut self, mut take: impl FnMut(&mut Consumer<T>) -> Option<R>) -> R {
        loop {
            if let Some(taken) = take(&mut self.consumer) {
                self.consumer.cancel_sleep();
                return taken;
            }
            let consumer = &mut self.consumer;
            sleep_until_rung(&self.doorbell, self.slot, || consumer.sleep_if_empty()).await;
        }
    }
}

/// Waits for the doorbell if `sleep` (a ring's `sleep_if_*`) declares the caller asleep;
/// resolves at once if it finds no need. The waker is registered before the declaration, so a
/// ring that follows the declaration always finds it. Resolving says "look again", nothing more.
async fn sleep_until_rung(doorbell: &ShardDoorbell, slot: usize, mut sleep: impl FnMut() -> bool) {
    let mut asleep = false;
    poll_fn(|context| {
        if asleep {
            return Poll::Ready(());
        }
        doorbell.register(slot, context.waker());
        if sleep() {
            asleep = true;
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
}
