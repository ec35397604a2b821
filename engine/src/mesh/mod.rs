//! The shard mesh: a lock-free single-producer/single-consumer ring for every ordered pair of
//! shards, the only way shards share anything.
//!
//! Ferrite runs one glommio executor per core and shares nothing between them; work that belongs
//! to another shard travels to it as a message. With one ring per ordered pair `(i, j)` every
//! ring has exactly one writer (a task of shard `i`) and one reader (a task of shard `j`), which
//! is what lets [`ring`] be a plain SPSC ring: no locks, no compare-and-swap, and a cache line
//! transfer per batch rather than per message.
//!
//! Life cycle:
//! 1. At start-up, before the executors start, [`Mesh::new`] allocates every ring (memory is
//!    fixed from then on) and one doorbell per shard, and [`Mesh::split`] hands out one
//!    [`MeshShard`] per shard: the producers of `(i, *)` and the consumers of `(*, i)`.
//! 2. Each executor calls [`MeshShard::attach`] on its own thread, which starts the shard's
//!    doorbell listener and yields [`ShardChannels`]: async [`Sender`]s and [`Receiver`]s.
//!
//! Back-pressure: a ring holds at most the capacity given to [`Mesh::new`]; a full ring makes
//! [`Sender::try_send`] hand the message back and [`Sender::send`] wait for room.
//!
//! Waking: a task that finds its ring empty (or full) sleeps by the ring's protocol
//! ([`ring`] module docs), and the other side rings the shard's doorbell only if it finds it
//! asleep (the private `doorbell` module's docs say why the doorbell is a socket pair).
//!
//! Under `--cfg loom` only the ring and its synchronisation shim are built: loom checks
//! them, and the glommio side cannot run on loom's atomics.

#[cfg(not(loom))]
mod channel;
#[cfg(not(loom))]
mod doorbell;
pub mod ring;
mod sync;

#[cfg(not(loom))]
pub use channel::{Receiver, Sender};
pub use ring::{Consumer, Notify, Producer, CAPACITY_MAX};

#[cfg(not(loom))]
use doorbell::{DoorbellSocket, ShardDoorbell};
#[cfg(not(loom))]
use std::{io, sync::Arc};

/// Every ring of a mesh of `shard_count` shards, built before the executors start.
#[cfg(not(loom))]
pub struct Mesh<T> {
    shards: Vec<MeshShard<T>>,
}

#[cfg(not(loom))]
impl<T: Send> Mesh<T> {
    /// Allocates `shard_count * (shard_count - 1)` rings of `capacity` messages each and one
    /// doorbell (a socket pair: two descriptors) per shard.
    ///
    /// # Panics
    ///
    /// If `shard_count` is zero, or `capacity` is not a power of two no larger than
    /// [`CAPACITY_MAX`].
    pub fn new(shard_count: usize, capacity: usize) -> io::Result<Self> {
        assert!(shard_count > 0, "a mesh needs at least one shard");
        let mut ringers = Vec::with_capacity(shard_count);
        let mut shards = Vec::with_capacity(shard_count);
        for shard_id in 0..shard_count {
            let (ringer, socket) = doorbell::doorbell()?;
            ringers.push(Arc::new(ringer));
            shards.push(MeshShard {
                shard_id,
                producers: (0..shard_count).map(|_| None).collect(),
                consumers: (0..shard_count).map(|_| None).collect(),
                doorbell_socket: socket,
            });
        }
        for from in 0..shard_count {
            for to in (0..shard_count).filter(|&to| to != from) {
                let (producer, consumer) = ring::ring(
                    capacity,
                    Arc::clone(&ringers[to]) as Arc<dyn Notify>,
                    Arc::clone(&ringers[from]) as Arc<dyn Notify>,
                );
                shards[from].producers[to] = Some(producer);
                shards[to].consumers[from] = Some(consumer);
            }
        }
        Ok(Self { shards })
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// One [`MeshShard`] per shard, indexed by shard id, to be moved to the shards' threads.
    pub fn split(self) -> Vec<MeshShard<T>> {
        self.shards
    }
}

/// Shard `shard_id`'s ends of the mesh before its executor starts: the producers of the rings
/// to every peer and the consumers of the rings from every peer. `Send`, so it can be moved into
/// the executor's thread.
#[cfg(not(loom))]
pub struct MeshShard<T> {
    shard_id: usize,
    /// Indexed by peer shard id; `None` at `shard_id`.
    producers: Vec<Option<Producer<T>>>,
    /// Indexed by peer shard id; `None` at `shard_id`.
    consumers: Vec<Option<Consumer<T>>>,
    doorbell_socket: DoorbellSocket,
}

#[cfg(not(loom))]
impl<T> MeshShard<T> {
    /// This shard's id, its index in [`Mesh::split`].
    pub fn shard_id(&self) -> usize {
        self.shard_id
    }

    /// Binds these ring ends to the calling executor: starts the shard's doorbell listener (a
    /// glommio task that lives as long as any of the returned ends) and wraps the ends for
    /// async use.
    ///
    /// # Panics
    ///
    /// If not called on a glommio executor thread.
    pub fn attach(self) -> ShardChannels<T> {
        let shard_count = self.producers.len();
        // Slots `0..shard_count` are receivers (by peer), `shard_count..` senders (by peer).
        let doorbell = ShardDoorbell::start(self.doorbell_socket, 2 * shard_count);
        let senders = self
            .producers
            .into_iter()
            .enumerate()
            .filter_map(|(peer, producer)| Some((peer, producer?)))
            .map(|(peer, producer)| {
                Sender::new(producer, doorbell.clone(), shard_count + peer, peer)
            })
            .collect();
        let receivers = self
            .consumers
            .into_iter()
            .enumerate()
            .filter_map(|(peer, consumer)| Some((peer, consumer?)))
            .map(|(peer, consumer)| Receiver::new(consumer, doorbell.clone(), peer, peer))
            .collect();
        ShardChannels {
            shard_id: self.shard_id,
            shard_count,
            senders,
            receivers,
        }
    }
}

/// Shard `shard_id`'s ends of the mesh, bound to its executor.
#[cfg(not(loom))]
pub struct ShardChannels<T> {
    shard_id: usize,
    shard_count: usize,
    /// Ordered by peer shard id, skipping `shard_id`.
    senders: Vec<Sender<T>>,
    /// Ordered by peer shard id, skipping `shard_id`.
    receivers: Vec<Receiver<T>>,
}

#[cfg(not(loom))]
impl<T> ShardChannels<T> {
    /// This shard's id.
    pub fn shard_id(&self) -> usize {
        self.shard_id
    }

    /// Number of shards in the mesh.
    pub fn shard_count(&self) -> usize {
        self.shard_count
    }

    /// The sender to `peer_shard_id`.
    ///
    /// # Panics
    ///
    /// If `peer_shard_id` is this shard or not in the mesh.
    pub fn sender(&mut self, peer_shard_id: usize) -> &mut Sender<T> {
        let index = self.peer_index(peer_shard_id);
        &mut self.senders[index]
    }

    /// The receiver from `peer_shard_id`.
    ///
    /// # Panics
    ///
    /// If `peer_shard_id` is this shard or not in the mesh.
    pub fn receiver(&mut self, peer_shard_id: usize) -> &mut Receiver<T> {
        let index = self.peer_index(peer_shard_id);
        &mut self.receivers[index]
    }

    /// All senders and all receivers, each ordered by peer shard id, to be moved into separate
    /// tasks.
    pub fn into_parts(self) -> (Vec<Sender<T>>, Vec<Receiver<T>>) {
        (self.senders, self.receivers)
    }

    /// Position of `peer_shard_id`'s ends in `senders` and `receivers`.
    fn peer_index(&self, peer_shard_id: usize) -> usize {
        assert!(
            peer_shard_id < self.shard_count && peer_shard_id != self.shard_id,
            "shard {} has no ring with shard {peer_shard_id} (mesh of {})",
            self.shard_id,
            self.shard_count
        );
        peer_shard_id - usize::from(peer_shard_id > self.shard_id)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use glommio::{timer, LocalExecutorBuilder, Placement};
    use std::time::Duration;

    /// Longest any test waits for a message before declaring a wake-up lost.
    const WAIT_MAX: Duration = Duration::from_secs(10);

    /// Runs `shard_main` for each shard of a fresh mesh on its own executor and thread, and
    /// returns their results in shard order.
    fn run_mesh<R, F, Fut>(shard_count: usize, capacity: usize, shard_main: F) -> Vec<R>
    where
        R: Send + 'static,
        F: Fn(ShardChannels<(usize, u64)>) -> Fut + Send + Clone + 'static,
        Fut: std::future::Future<Output = R> + 'static,
    {
        let executors: Vec<_> = Mesh::new(shard_count, capacity)
            .unwrap()
            .split()
            .into_iter()
            .map(|shard| {
                let shard_main = shard_main.clone();
                LocalExecutorBuilder::new(Placement::Unbound)
                    .name(&format!("shard-{}", shard.shard_id()))
                    .spawn(move || async move { shard_main(shard.attach()).await })
                    .unwrap()
            })
            .collect();
        executors
            .into_iter()
            .map(|executor| executor.join().unwrap())
            .collect()
    }

    async fn recv_within_limit<T>(receiver: &mut Receiver<T>) -> T {
        timer::timeout(WAIT_MAX, async { Ok(receiver.recv().await) })
            .await
            .expect("a receiver was never woken")
    }

    #[test]
    fn every_shard_sends_to_every_other_in_order() {
        const MESSAGE_COUNT: u64 = 20_000;
        let received = run_mesh(3, 64, |channels| async move {
            let shard_id = channels.shard_id();
            let (senders, receivers) = channels.into_parts();
            let sending: Vec<_> = senders
                .into_iter()
                .map(|mut sender| {
                    glommio::spawn_local(async move {
                        for sequence in 0..MESSAGE_COUNT {
                            sender.send((shard_id, sequence)).await;
                        }
                    })
                })
                .collect();
            let receiving: Vec<_> = receivers
                .into_iter()
                .map(|mut receiver| {
                    glommio::spawn_local(async move {
                        let peer = receiver.peer_shard_id();
                        let mut expected = 0;
                        while expected < MESSAGE_COUNT {
                            let taken = receiver
                                .recv_batch(32, |(from, sequence)| {
                                    assert_eq!((from, sequence), (peer, expected));
                                    expected += 1;
                                })
                                .await;
                            assert!((1..=32).contains(&taken));
                        }
                        assert_eq!(receiver.try_recv(), None);
                        expected
                    })
                })
                .collect();
            for task in sending {
                task.await;
            }
            let mut received = 0;
            for task in receiving {
                received += task.await;
            }
            received
        });
        assert_eq!(received, [2 * MESSAGE_COUNT; 3]);
    }

    #[test]
    fn sleeping_shard_is_woken() {
        run_mesh(2, 4, |mut channels| async move {
            if channels.shard_id() == 0 {
                // Long enough for shard 1's reactor to run out of work and sleep in the kernel.
                timer::sleep(Duration::from_millis(200)).await;
                channels.sender(1).try_send((0, 7)).unwrap();
                assert_eq!(recv_within_limit(channels.receiver(1)).await, (1, 8));
            } else {
                let (from, value) = recv_within_limit(channels.receiver(0)).await;
                assert_eq!(from, 0);
                channels.sender(0).try_send((1, value + 1)).unwrap();
            }
        });
    }

    #[test]
    fn full_ring_makes_sender_wait_for_room() {
        const MESSAGE_COUNT: u64 = 2_000;
        let results = run_mesh(2, 4, |mut channels| async move {
            if channels.shard_id() == 0 {
                let sender = channels.sender(1);
                let mut refused_count = 0;
                for sequence in 0..MESSAGE_COUNT {
                    if let Err(refused) = sender.try_send((0, sequence)) {
                        refused_count += 1;
                        sender.send(refused).await;
                    }
                }
                refused_count
            } else {
                let receiver = channels.receiver(0);
                for expected in 0..MESSAGE_COUNT {
                    if expected % 256 == 0 {
                        // A slow consumer: the sender must fill the ring and wait.
                        timer::sleep(Duration::from_millis(5)).await;
                    }
                    assert_eq!(recv_within_limit(receiver).await, (0, expected));
                }
                0
            }
        });
        assert!(results[0] > 0, "the ring never filled");
    }
}
