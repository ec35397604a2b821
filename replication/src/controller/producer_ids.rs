//! Producer ids on a broker of a cluster (Kafka's RPCProducerIdManager, KIP-730): every shard
//! takes ids from the block the controller handed this run of the broker
//! ([`ProducerIdPool`]), and the controller's shard asks for the next block before the current
//! one runs out, so an InitProducerId rarely finds none (it is then answered
//! COORDINATOR_LOAD_IN_PROGRESS, which clients retry, as Kafka does).
//!
//! Why blocks from the metadata log: an idempotent producer's id must be unique in the cluster
//! for its whole life, or a partition leader takes one producer's first batch for a retry of
//! another's and drops it. A block is used only once it is committed and applied here, and
//! the image applies blocks only in increasing order, so no two brokers, and no two runs of
//! one broker, hand out the same id: not after a restart, a controller failover or a wiped
//! data directory (the log lives on the other brokers too). What was left of a run's block
//! when it stopped is never used (as in Kafka).

use std::ops::Range;
use std::sync::{Mutex, MutexGuard};

use super::wire::ControllerRequest;
use super::{Controller, ControllerError};

/// The next block is asked for once at most this share of the current one is left (Kafka
/// prefetches at 90 % used).
const REFILL_LEFT_PERCENT: i64 = 10;

/// The producer ids this run of the broker may hand out, shared by its shards (an id is taken
/// under a mutex: InitProducerId is rare). Ids come only from blocks committed for this run.
#[derive(Debug, Default)]
pub struct ProducerIdPool {
    state: Mutex<PoolState>,
}

#[derive(Debug, Default)]
struct PoolState {
    /// What is left of the block in use.
    current: Range<i64>,
    /// The block fetched ahead, used once `current` is empty.
    next: Option<Range<i64>>,
    /// One past the last id of every block taken in: the next block must start there or later.
    end_id_taken: i64,
    /// At most this many ids left in `current` (and no `next`) means the next block is due.
    refill_left_max: i64,
}

impl ProducerIdPool {
    /// A producer id no broker of the cluster has handed out or will; `None` while this run
    /// has none (the controller's shard is fetching a block).
    pub fn claim(&self) -> Option<i64> {
        let mut state = self.lock();
        if state.current.is_empty() {
            if let Some(next) = state.next.take() {
                state.current = next;
            }
        }
        state.current.next()
    }

    /// Whether the next block should be asked for: none is waiting and the one in use is
    /// (nearly) used up.
    pub fn wants_block(&self) -> bool {
        let state = self.lock();
        let left = state.current.end - state.current.start;
        state.next.is_none() && left <= state.refill_left_max
    }

    /// Takes in the block of ids `ids`, committed for this run. A block that does not start at
    /// or after the end of every block taken before (the same block read twice) is not taken:
    /// `false`.
    pub fn add_block(&self, ids: Range<i64>) -> bool {
        let mut state = self.lock();
        if ids.is_empty() || ids.start < state.end_id_taken {
            return false;
        }
        state.end_id_taken = ids.end;
        state.refill_left_max = (ids.end - ids.start) * REFILL_LEFT_PERCENT / 100;
        if state.current.is_empty() {
            state.current = ids;
        } else {
            debug_assert!(
                state.next.is_none(),
                "a block is asked for only when none waits"
            );
            state.next = Some(ids);
        }
        true
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // Every change leaves the state whole before anything can panic.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Controller {
    /// Keeps this run supplied with producer ids until the controller stops: whenever the pool
    /// wants a block and the run's registration is applied here (the plan refuses any other
    /// run's request with STALE_BROKER_EPOCH), asks the leader for one, waits until the image
    /// has applied it, and adds it to the pool.
    pub(super) async fn run_producer_ids(self) {
        let node_id = self.node_id();
        let incarnation = self.inner.config.registration.incarnation;
        let registered = || {
            self.inner
                .image
                .borrow()
                .broker(node_id)
                .is_some_and(|broker| broker.registration.incarnation == incarnation)
        };
        let pool = self.inner.producer_ids.clone();
        loop {
            self.inner
                .changes
                .until(|| self.stopped().is_some() || (pool.wants_block() && registered()))
                .await;
            if self.stopped().is_some() {
                return;
            }
            let request = ControllerRequest::AllocateProducerIds {
                node_id,
                incarnation,
            };
            let failure = match self.request(request).await {
                Ok(index) => match self.wait_applied(index).await {
                    Ok(()) => {
                        let block = self
                            .inner
                            .image
                            .borrow()
                            .producer_id_block(node_id)
                            .filter(|block| block.incarnation == incarnation)
                            .and_then(|block| Some(block.first_id..block.end_id()?));
                        match block {
                            Some(ids) if pool.add_block(ids.clone()) => continue,
                            Some(ids) => format!("block {ids:?} follows no new ids"),
                            None => "no block of this run in the metadata".to_owned(),
                        }
                    }
                    Err(_) => return,
                },
                Err(ControllerError::Stopped(_)) => return,
                Err(error) => error.to_string(),
            };
            eprintln!("controller: a block of producer ids for broker {node_id}: {failure}");
            glommio::timer::sleep(self.inner.config.heartbeat_interval).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_from_the_blocks_in_order_and_the_next_is_wanted_ahead() {
        let pool = ProducerIdPool::default();
        assert!(pool.wants_block(), "a new run has no ids");
        assert_eq!(pool.claim(), None);

        assert!(pool.add_block(1_000..1_100));
        assert!(!pool.wants_block());
        let taken: Vec<i64> = (0..90).map_while(|_| pool.claim()).collect();
        assert_eq!(taken, (1_000..1_090).collect::<Vec<_>>());
        // 10 of 100 left: the next block is due before the first runs out.
        assert!(pool.wants_block());

        // The same block again (read twice from the image) or an older one adds nothing.
        assert!(!pool.add_block(1_000..1_100));
        assert!(!pool.add_block(500..600));
        assert!(!pool.add_block(2_000..2_000));
        assert!(pool.add_block(3_000..3_100));
        assert!(!pool.wants_block(), "a block is waiting");
        let taken: Vec<i64> = (0..12).map_while(|_| pool.claim()).collect();
        let mut expected: Vec<i64> = (1_090..1_100).collect();
        expected.extend([3_000, 3_001]);
        assert_eq!(taken, expected);
        assert!(!pool.wants_block());
    }

    #[test]
    fn a_pool_without_ids_left_answers_none_until_a_block_comes() {
        let pool = ProducerIdPool::default();
        assert!(pool.add_block(0..2));
        assert_eq!(
            (pool.claim(), pool.claim(), pool.claim()),
            (Some(0), Some(1), None)
        );
        assert!(pool.wants_block());
        assert!(pool.add_block(2..4));
        assert_eq!(pool.claim(), Some(2));
    }
}
