//! In a cluster a `__consumer_offsets` partition's coordinator runs only on the broker that
//! leads the partition, in the term it leads in: how the shard tells whether it may run one
//! ([`ShardGroups::coordinator_term`]), and what `coordinator_log::load_owned_coordinators`
//! needs to load and unload its coordinators as leadership moves.

use std::rc::Rc;

use engine::shard::PartitionId;
use futures::future::LocalBoxFuture;

use super::loaded::LoadedCoordinator;
use super::ShardGroups;
use crate::coordinator_log::{coordinator_term, NotServing, PartitionCoordinators};
use crate::groups::GroupError;

impl ShardGroups {
    /// The term of the coordinator `partition` may run in here: `None` where it is not
    /// replicated (a broker alone); in a cluster, refused unless this broker leads it and has
    /// committed an entry of its term.
    pub(super) fn coordinator_term(
        &self,
        partition: &PartitionId,
    ) -> Result<Option<u64>, GroupError> {
        coordinator_term(&self.context, partition).map_err(|not_serving| match not_serving {
            NotServing::NotCoordinator => GroupError::NotCoordinator,
            NotServing::LoadInProgress => GroupError::CoordinatorLoadInProgress,
        })
    }

    /// The coordinator of `partition` if one is loaded and not being loaded right now.
    fn loaded_coordinator(&self, partition: &PartitionId) -> Option<Rc<LoadedCoordinator>> {
        let slot = self.slots.borrow().get(&partition.partition).cloned()?;
        let loaded = slot.try_lock()?;
        loaded.clone()
    }
}

impl PartitionCoordinators for ShardGroups {
    fn loaded_term(&self, partition: &PartitionId) -> Option<Option<u64>> {
        self.loaded_coordinator(partition).map(|loaded| loaded.term)
    }

    fn unload(&self, partition: &PartitionId) {
        if let Some(loaded) = self.loaded_coordinator(partition) {
            self.unload_coordinator(&loaded, GroupError::NotCoordinator);
        }
    }

    fn load(self: Rc<Self>, partition: PartitionId) -> LocalBoxFuture<'static, ()> {
        // A failed load is reported by `coordinator`.
        Box::pin(async move { drop(self.coordinator(&partition).await) })
    }
}
