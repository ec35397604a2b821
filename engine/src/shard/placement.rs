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
//! changes. So it is an immutable map published through an [`ArcSwap`]: a read takes no lock
//! and writes no shared cache line, a change replaces the whole map.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::PartitionId;

/// The shard of each placed partition; shared by the broker's shards (and the task that
/// follows the metadata log).
#[derive(Debug, Default)]
pub struct ReplicaPlacement {
    shards: ArcSwap<HashMap<PartitionId, usize>>,
}

impl ReplicaPlacement {
    /// Replaces the whole placement.
    pub fn set(&self, shards: HashMap<PartitionId, usize>) {
        self.shards.store(Arc::new(shards));
    }

    /// The placement as it is now.
    pub fn snapshot(&self) -> Arc<HashMap<PartitionId, usize>> {
        self.shards.load_full()
    }
}

/// A shard's handle on the placement.
#[derive(Debug)]
pub(super) struct PlacementView {
    shared: Arc<ReplicaPlacement>,
}

impl PlacementView {
    pub(super) fn new(shared: Arc<ReplicaPlacement>) -> PlacementView {
        PlacementView { shared }
    }

    /// The shard `partition` is placed on, if placed.
    pub(super) fn shard_of(&self, partition: &PartitionId) -> Option<usize> {
        self.shared.shards.load().get(partition).copied()
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
