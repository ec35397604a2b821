//! Which shard runs each replicated partition of a cluster's broker, as the metadata log
//! places it.
//!
//! Why: on a single broker a partition's shard is a pure function of its name
//! ([`owner_shard`](super::owner_shard)); every shard agrees without asking. In a cluster the
//! controller spreads replicas evenly over each broker's shards as well as over the brokers,
//! counting what every shard hosts already, which a hash cannot do. The broker's metadata
//! follower writes the placement here before it starts a replica, and every shard routes by
//! it from then on; a partition the placement does not name (not yet placed, no longer here,
//! or an internal topic) keeps the hash.
//!
//! The table is read on every request, by every shard, and written only when the metadata
//! changes. So it is an immutable map behind a version number: a shard reads the version
//! (one shared atomic load, no write, so no cache line bounces between cores) and takes a new
//! copy of the map only after it changed.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::PartitionId;

/// The shard of each placed partition; shared by the broker's shards (and the task that
/// follows the metadata log).
#[derive(Debug, Default)]
pub struct ReplicaPlacement {
    /// Bumped after every change of `shards`.
    version: AtomicU64,
    shards: RwLock<Arc<HashMap<PartitionId, usize>>>,
}

impl ReplicaPlacement {
    /// Replaces the whole placement.
    pub fn set(&self, shards: HashMap<PartitionId, usize>) {
        let mut current = self
            .shards
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *current = Arc::new(shards);
        self.version.fetch_add(1, Ordering::Release);
    }

    /// The placement as it is now.
    pub fn snapshot(&self) -> Arc<HashMap<PartitionId, usize>> {
        self.shards
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// One shard's copy of the placement, refreshed when the shared version moves.
#[derive(Debug)]
pub(super) struct PlacementView {
    shared: Arc<ReplicaPlacement>,
    /// The version `shards` was copied at (`u64::MAX`: never copied).
    cached: RefCell<(u64, Arc<HashMap<PartitionId, usize>>)>,
}

impl PlacementView {
    pub(super) fn new(shared: Arc<ReplicaPlacement>) -> PlacementView {
        PlacementView {
            shared,
            cached: RefCell::new((u64::MAX, Arc::default())),
        }
    }

    /// The shard `partition` is placed on, if placed.
    pub(super) fn shard_of(&self, partition: &PartitionId) -> Option<usize> {
        let version = self.shared.version.load(Ordering::Acquire);
        let mut cached = self.cached.borrow_mut();
        if cached.0 != version {
            // Read the map after the version: a change in between is seen now and its
            // version bump again next time, which only costs one more copy.
            *cached = (version, self.shared.snapshot());
        }
        cached.1.get(partition).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_follows_every_change_of_the_shared_placement() {
        let shared = Arc::new(ReplicaPlacement::default());
        let view = PlacementView::new(shared.clone());
        let partition = PartitionId::new("t", 3);
        assert_eq!(view.shard_of(&partition), None);
        shared.set([(partition.clone(), 1)].into_iter().collect());
        assert_eq!(view.shard_of(&partition), Some(1));
        shared.set([(partition.clone(), 0)].into_iter().collect());
        assert_eq!(view.shard_of(&partition), Some(0));
        shared.set(HashMap::new());
        assert_eq!(view.shard_of(&partition), None);
    }
}
