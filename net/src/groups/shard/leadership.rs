//! In a cluster a `__consumer_offsets` partition's coordinator runs only on the broker that
//! leads the partition, in the term it leads in: how the shard tells whether it may run one
//! ([`ShardGroups::coordinator_term`]), and the task that loads and unloads its coordinators as
//! leadership moves.

use std::rc::Rc;
use std::time::Duration;

use engine::catalog::OFFSETS_TOPIC;
use engine::shard::PartitionId;
use futures::future::select;

use super::loaded::LoadedCoordinator;
use super::ShardGroups;
use crate::coordinator_log::{coordinator_term, NotServing};
use crate::groups::GroupError;

/// How often a cluster's shard compares the coordinators it runs with the leadership of their
/// partitions (a fifth of the shortest Raft election timeout: a takeover is noticed well
/// within the time clients take to find the new coordinator).
const LEADERSHIP_CHECK_INTERVAL: Duration = Duration::from_millis(100);

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

    /// In a cluster, until shutdown: loads the coordinator of each `__consumer_offsets`
    /// partition this shard runs as soon as its broker leads it (and is ready to), as a Kafka
    /// broker loads a partition's groups when it takes it over, and unloads those whose
    /// broker stopped leading in their term, so their waiting calls hear NOT_COORDINATOR.
    pub(super) async fn follow_offsets_leadership(self: Rc<Self>) {
        let context = &self.context;
        while !context.is_shutting_down() {
            for index in 0..self.config.offsets_partitions {
                let partition = PartitionId::new(OFFSETS_TOPIC, index);
                if context.owner_of(&partition) != context.shard_id() {
                    continue;
                }
                let term = self.coordinator_term(&partition);
                match (self.loaded_coordinator(&partition), term) {
                    (Some(loaded), Ok(term)) if loaded.term == term => {}
                    (Some(loaded), _) => {
                        self.unload_coordinator(&loaded, GroupError::NotCoordinator)
                    }
                    // A failed load is reported by `coordinator`, and retried next time.
                    (None, Ok(Some(_))) => drop(self.coordinator(&partition).await),
                    (None, _) => {}
                }
            }
            let pause = std::pin::pin!(glommio::timer::sleep(LEADERSHIP_CHECK_INTERVAL));
            let shutdown = std::pin::pin!(context.shutdown_requested());
            select(pause, shutdown).await;
        }
    }

    /// The coordinator of `partition` if one is loaded and not being loaded right now.
    fn loaded_coordinator(&self, partition: &PartitionId) -> Option<Rc<LoadedCoordinator>> {
        let slot = self.slots.borrow().get(&partition.partition).cloned()?;
        let loaded = slot.try_lock()?;
        loaded.clone()
    }
}
