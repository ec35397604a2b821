//! The replicas a shard runs ([`Registry`]) and their clock and timer wheel ([`ShardTimers`]):
//! the bookkeeping by shard, not by partition, that keeps thousands of idle replicas cheap;
//! and each replica's [`ReplicaSlot`], through which it asks to run and tells the shard who may
//! serve its partition's clients.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use engine::shard::{ClientAccess, PartitionId, ShardContext};

use crate::replica::{PartitionReplica, Schedule};
use crate::wheel::TimerWheel;

/// The replicas a shard runs: by topic and partition (the wire names them with a `&str`, so no
/// `PartitionId` is built per message), and by slot (what the timer wheel names).
#[derive(Default)]
pub(super) struct Registry {
    pub(super) slots_by_topic: HashMap<String, HashMap<u32, u32>>,
    slots: Vec<Option<(PartitionId, PartitionReplica)>>,
    free_slots: Vec<u32>,
}

impl Registry {
    pub(super) fn slot_of(&self, topic: &str, partition: u32) -> Option<u32> {
        self.slots_by_topic.get(topic)?.get(&partition).copied()
    }

    pub(super) fn get(&self, topic: &str, partition: u32) -> Option<&PartitionReplica> {
        let slot = self.slot_of(topic, partition)?;
        self.at(slot).map(|(_, replica)| replica)
    }

    pub(super) fn at(&self, slot: u32) -> Option<&(PartitionId, PartitionReplica)> {
        self.slots.get(slot as usize)?.as_ref()
    }

    /// A slot for a replica about to open.
    pub(super) fn reserve(&mut self) -> u32 {
        self.free_slots.pop().unwrap_or_else(|| {
            self.slots.push(None);
            u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 replicas per shard")
        })
    }

    pub(super) fn fill(&mut self, slot: u32, partition: PartitionId, replica: PartitionReplica) {
        self.slots_by_topic
            .entry(partition.topic.clone())
            .or_default()
            .insert(partition.partition, slot);
        self.slots[slot as usize] = Some((partition, replica));
    }

    pub(super) fn release(&mut self, slot: u32) {
        self.slots[slot as usize] = None;
        self.free_slots.push(slot);
    }

    pub(super) fn remove(&mut self, partition: &PartitionId) -> Option<(u32, PartitionReplica)> {
        let partitions = self.slots_by_topic.get_mut(&partition.topic)?;
        let slot = partitions.remove(&partition.partition)?;
        if partitions.is_empty() {
            self.slots_by_topic.remove(&partition.topic);
        }
        let (_, replica) = self.slots[slot as usize].take()?;
        self.free_slots.push(slot);
        Some((slot, replica))
    }

    pub(super) fn drain(&mut self) -> Vec<(PartitionId, PartitionReplica)> {
        self.slots_by_topic.clear();
        self.free_slots.clear();
        self.slots.drain(..).flatten().collect()
    }
}

/// The clock of a shard's replicas, the timer wheel of their due ticks, and the replicas whose
/// leadership changed since the shard last looked (shared with each replica's [`ReplicaSlot`]).
pub(super) struct ShardTimers {
    pub(super) clock: Rc<Cell<u64>>,
    pub(super) wheel: RefCell<TimerWheel>,
    pub(super) changed: RefCell<Vec<u32>>,
    /// The buffer of the replicas due at a tick.
    pub(super) due: RefCell<Vec<u32>>,
}

/// A replica's [`Schedule`]: its slot in the shard's timers, and its partition, whose client
/// access it tells the shard.
pub(super) struct ReplicaSlot {
    pub(super) timers: Rc<ShardTimers>,
    pub(super) slot: u32,
    pub(super) context: ShardContext,
    pub(super) partition: PartitionId,
}

impl Schedule for ReplicaSlot {
    fn wake_at(&self, tick: u64) {
        self.timers.wheel.borrow_mut().schedule(tick, self.slot);
    }

    fn leadership_changed(&self) {
        self.timers.changed.borrow_mut().push(self.slot);
    }

    fn client_access_changed(&self, access: ClientAccess) {
        self.context.set_client_access(&self.partition, access);
    }
}
