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

    /// The shard `partition` is placed on, if placed.
    pub fn shard_of(&self, partition: &PartitionId) -> Option<usize> {
        self.shards.load().get(partition).copied()
    }

    /// The placement as it is now.
    pub fn snapshot(&self) -> Arc<HashMap<PartitionId, usize>> {
        self.shards.load_full()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_change_of_the_placement_is_seen_by_the_next_look_up() {
        let placement = ReplicaPlacement::default();
        let partition = PartitionId::new("t", 3);
        assert_eq!(placement.shard_of(&partition), None);
        placement.set([(partition.clone(), 1)].into_iter().collect());
        assert_eq!(placement.shard_of(&partition), Some(1));
        placement.set([(partition.clone(), 0)].into_iter().collect());
        assert_eq!(placement.shard_of(&partition), Some(0));
        placement.set(HashMap::new());
        assert_eq!(placement.shard_of(&partition), None);
    }
}
