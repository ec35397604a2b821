//! A replica whose partition log has damaged entries (the engine found bytes that no longer
//! check out: when the log was opened, or when a leader read them for a follower) gets them
//! back from the leader instead of keeping a hole, or of serving what it cannot read. A leader
//! reads what it sends with `read_verified` (each batch's CRC checked), so damage on disk is
//! found rather than sent.
//!
//! The design, in Raft's terms:
//! - The damaged entries must not count as held: the replica gives them up with everything
//!   after them (`RaftNode::discard_from`, a `Truncate` its writer applies in order with the
//!   other log writes), reports only what it still holds as durable, and fetches the rest
//!   again; the leader's answers rebuild the log byte for byte.
//! - Those entries may be committed, with this replica's copy counted in their majority. Until
//!   its log is back where it ended, the replica votes only for candidates at least that up to
//!   date and never campaigns (the core's vote floor), so a candidate lacking committed entries
//!   cannot win with its vote. The floor is written to `raft-state.json` before the entries go
//!   (the truncation waits until it is durable), so a restart midway keeps it.
//! - A leader never removes its own entries: a leader that finds damage (reading for a
//!   follower) hands leadership to an in-sync voter (one holding everything committed) and gives
//!   the entries up once it follows. If no voter is in sync it keeps leading; the followers that
//!   need the damaged entries wait, and every other offset is served.
//! - A group of one has no copy to fetch from: its log keeps refusing the damaged offsets, as a
//!   single broker's does, until an operator decides (`ferrite repair-log`).

use super::state_file::{ReplicaState, StateFile};
use super::{PartitionReplica, ReplicaError};
use crate::node::{RaftNode, RoleKind};

/// A vote floor kept across a restart goes back to the core; one the recovered log has passed
/// is forgotten (and the file rewritten).
pub(super) fn restore_vote_floor(
    node: &mut RaftNode,
    state: &mut ReplicaState,
    state_file: &StateFile,
) -> Result<(), ReplicaError> {
    node.set_vote_floor(state.vote_floor);
    if state.vote_floor.is_some() && node.vote_floor().is_none() {
        state.vote_floor = None;
        state_file.write(state)?;
    }
    Ok(())
}

impl PartitionReplica {
    /// At the open and every housekeeping interval: if the log has damaged entries, gives them up as this
    /// module describes (or, leading, hands leadership over first).
    pub(super) fn give_up_damaged_entries(&self) {
        let damaged = self.inner.log.first_damaged_offset();
        let given_up = self.inner.damage_given_up.get();
        if damaged.is_none() || damaged != given_up {
            self.inner.damage_given_up.set(None);
        }
        // Given up already: the writer truncates it away before the entries fetched since.
        let Some(first_offset) = damaged.filter(|offset| Some(*offset) != given_up) else {
            return;
        };
        let first_index = first_offset + 1;
        let id = self.inner.config.node_id;
        let mut node = self.inner.node.borrow_mut();
        if node.voters().iter().all(|voter| *voter == id) || first_index > node.log().last_index {
            // Alone: nothing to fetch from.
            return;
        }
        if node.role() == RoleKind::Leader {
            let target = node.in_sync_voters().into_iter().find(|voter| *voter != id);
            // Refused while a transfer or change is under way: the next tick tries again.
            let effects = target.and_then(|target| node.transfer_leadership(target).ok());
            drop(node);
            if let Some(effects) = effects {
                self.carry_out(effects, None);
            }
            return;
        }
        let last_index = node.log().last_index;
        let floor = (node.term_at(last_index).unwrap_or(0), last_index);
        {
            let mut state = self.inner.state.borrow_mut();
            state.vote_floor = Some(state.vote_floor.map_or(floor, |known| known.max(floor)));
        }
        // The entries go once the floor is durable: the discard's effects wait for it.
        self.write_state();
        let effects = node.discard_from(first_index);
        drop(node);
        self.inner.damage_given_up.set(Some(first_offset));
        let partition = self.inner.log.directory().file_name().map_or_else(
            || self.inner.log.directory().display().to_string(),
            |name| name.to_string_lossy().into_owned(),
        );
        eprintln!(
            "ferrite: partition {partition}: this replica (node {id}) gives up its entries from \
             offset {first_offset} on, whose bytes are damaged, and fetches them again from the \
             leader; until it holds them again it votes only for replicas that have them"
        );
        if let Some(effects) = effects {
            self.carry_out(effects, None);
        }
    }
}
