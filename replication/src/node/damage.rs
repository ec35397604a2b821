//! A member whose log lost entries to damage on disk (bytes that no longer check out, found
//! when its log was opened or read): it gives them up and fetches them again from the leader,
//! and until it holds them again it votes as if it still had them.
//!
//! Why the last part: those entries may have been committed with this member's copy counted
//! in the majority. A member that dropped them and then judged candidates by its shorter log
//! could vote for one that lacks them, and with that vote a candidate lacking committed
//! entries could win (three voters: the leader and this member hold an entry, the third does
//! not; the leader dies; the third asks this member). So the member keeps a *vote floor*, the
//! (term, index) its log ended at before the loss: it grants a vote (or pre-vote) only to a
//! candidate at least that up to date, and it never campaigns itself, until its log is back
//! there. The floor is the driver's to keep across restarts (it is not in the log any more);
//! it lapses by itself once the log passes it.
//!
//! A leader never removes its own entries (Raft's leader append-only rule): the driver hands
//! leadership to another voter first, and the member gives up the damaged entries as a
//! follower.

use super::{RaftNode, Role};
use crate::message::{Effects, Index, Term};

impl RaftNode {
    /// The log lost every entry from `first_index` on: they are forgotten (a `Truncate` for the
    /// driver, whose log must not hold them as durable any more), the commit index this member
    /// knows is lowered to what it still holds (the leader tells it again as it refetches), and
    /// the vote floor is set to where the log ended. `None` while leading (hand leadership
    /// over first); an empty `Effects` when nothing is held from `first_index` on.
    pub fn discard_from(&mut self, first_index: Index) -> Option<Effects> {
        if matches!(self.role, Role::Leader(_)) {
            return None;
        }
        if first_index > self.log.last_index() {
            return Some(self.take_effects());
        }
        let floor = (self.log.last_term(), self.log.last_index());
        self.vote_floor = Some(self.vote_floor.map_or(floor, |known| known.max(floor)));
        if !matches!(self.role, Role::Follower { .. }) {
            // A campaign under way was made with the entries: it ends here.
            self.become_follower(self.hard_state.term, None);
        }
        let after_index = (first_index - 1).max(self.log.log_start() - 1);
        let write = self.log.truncate_after(after_index);
        self.effects.log_writes.push(write);
        self.lower_fetch_floor(after_index);
        self.commit_index = self.commit_index.min(after_index);
        let mut fetches = false;
        if let Role::Follower {
            leader,
            verified_index,
            fetch,
        } = &mut self.role
        {
            *verified_index = (*verified_index).min(after_index);
            // An answer to a fetch from the old tail describes a log this member no longer has.
            *fetch = None;
            fetches = leader.is_some() || !self.log.voters().contains(&self.config.id);
        }
        if fetches && self.log.persisted_index() >= self.fetch_floor_index {
            self.send_fetch();
        }
        Some(self.take_effects())
    }

    /// The (term, index) this member's log must reach before it votes by its own log again and
    /// may campaign (see the module documentation); `None` when there is none.
    pub fn vote_floor(&self) -> Option<(Term, Index)> {
        self.vote_floor
            .filter(|floor| (self.log.last_term(), self.log.last_index()) < *floor)
    }

    /// Restores a vote floor kept across a restart.
    pub fn set_vote_floor(&mut self, floor: Option<(Term, Index)>) {
        self.vote_floor = floor;
    }

    /// Whether the member must not campaign: its log has not yet reached its vote floor. A
    /// floor the log has reached lapses here.
    pub(super) fn abstains(&mut self) -> bool {
        match self.vote_floor {
            Some(floor) if (self.log.last_term(), self.log.last_index()) < floor => true,
            Some(_) => {
                self.vote_floor = None;
                false
            }
            None => false,
        }
    }

    /// Whether a candidate whose log ends at (`last_index`, `last_term`) is at least as up to
    /// date as this member's log, and as its vote floor while it has one.
    pub(super) fn candidate_up_to_date(&mut self, last_index: Index, last_term: Term) -> bool {
        let above_floor = if self.abstains() {
            self.vote_floor
                .is_some_and(|floor| (last_term, last_index) >= floor)
        } else {
            true
        };
        above_floor && self.log.is_up_to_date(last_index, last_term)
    }
}
