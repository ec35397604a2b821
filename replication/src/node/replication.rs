//! Pull replication (Kafka's KRaft, KIP-595): a follower keeps one `Fetch` in flight from its
//! log's tail; the leader answers with entries (its driver attaches the batches), the end of
//! the epoch where the follower diverges, or "start over at my log start"; the leader commits
//! what a majority of voters has durably, counting each follower from its matched fetches.
//!
//! Fetches are pipelined: the next one leaves as soon as an answer's entries are handed to
//! storage, not once they are durable, so the follower's write and sync overlap the trip to the
//! leader and back; never more than `FETCH_ANSWERS_AHEAD_MAX` answers' entries beyond what is
//! durable (the fetch floor bounds what a slow disk lets pile up). More than one: a follower's
//! storage commits one group at a time (the shard's journal), so with only one answer allowed
//! ahead, the fetch for a batch the leader takes while the follower's sync runs left only once
//! that sync was done, and the batch missed the next group too (one more write and sync of
//! the follower before it counted). With the fetch already waiting at the leader, the batch
//! goes out at once and joins the follower's next group. Durability then travels on its own: when
//! storage catches up while a fetch is out, a `Durable` report tells the leader at once (the
//! fetch out may be held there for a while), and the leader counts it as it would the fetch.
//! Anyone may fetch: the leader answers an observer (a node it does not track) the same way
//! but counts it for nothing, and a node that does not lead tells the fetcher who does.

use super::{FetchInFlight, RaftNode, Refusal, Role};

/// Answers with entries a follower may have handed to storage and not yet made durable when
/// it fetches again (see the module documentation); each carries at most the leader's fetch
/// byte budget, so a slow disk lets at most this many budgets (plus the one in flight) pile up
/// per partition.
pub const FETCH_ANSWERS_AHEAD_MAX: usize = 3;
use crate::message::{Effects, EntryKind, EntryMeta, FetchResult, Index, Message, NodeId, Term};

impl RaftNode {
    /// Append a batch of `record_count` records, if this node leads and is not handing over.
    /// Returns the entry's indexes and term: the driver writes the batch with base offset
    /// `first_index - 1` and partitionLeaderEpoch `term`. It is committed once `commit_index`
    /// reaches `last_index` (and may be lost if leadership changes first).
    pub fn propose(&mut self, record_count: u64) -> Result<(EntryMeta, Effects), Refusal> {
        self.leader_state_ready()?;
        if record_count == 0 {
            return Err(Refusal::EmptyBatch);
        }
        let entry = self.append_own(record_count, EntryKind::Records);
        Ok((entry, self.take_effects()))
    }

    /// Storage completed every write up to the one ending with entry (`index`, `term`).
    pub fn persisted(&mut self, index: Index, term: Term) -> Effects {
        if self.log.persisted(index, term) {
            match &self.role {
                Role::Leader(_) => self.advance_commit(),
                Role::Follower { .. } => self.follower_persisted(),
                Role::PreCandidate { .. } | Role::Candidate { .. } => {}
            }
        }
        self.take_effects()
    }

    /// Storage caught up on a follower: the next fetch, if it waited for the disk (the fetch
    /// floor), or else a `Durable` report to the leader of the one out, if it told less.
    fn follower_persisted(&mut self) {
        let persisted = self.log.persisted_index();
        let is_voter = self.is_voter();
        let term = self.hard_state.term;
        let Role::Follower { leader, fetch, .. } = &mut self.role else {
            return;
        };
        match (fetch, *leader) {
            (None, leader)
                if (leader.is_some() || !is_voter) && persisted >= self.fetch_floor_index =>
            {
                self.send_fetch()
            }
            (Some(in_flight), Some(leader)) if persisted > in_flight.durable_index => {
                in_flight.durable_index = persisted;
                let message = Message::Durable {
                    term,
                    fetch_index: in_flight.fetch_index,
                    last_fetched_term: in_flight.last_fetched_term,
                    durable_index: persisted,
                };
                self.send(leader, message);
            }
            _ => {}
        }
    }

    /// The driver removed every entry before `log_start` (retention or DeleteRecords); only
    /// committed entries may go, so `log_start <= commit_index + 1`.
    pub fn log_start_advanced(&mut self, log_start: Index) {
        self.log.advance_start(log_start, self.commit_index);
    }

    pub(super) fn append_own(&mut self, index_count: u64, kind: EntryKind) -> EntryMeta {
        let first_index = self.log.last_index() + 1;
        let entry = EntryMeta {
            first_index,
            last_index: first_index + index_count - 1,
            term: self.hard_state.term,
            kind,
        };
        let changes_voters = matches!(entry.kind, EntryKind::Voters(_));
        let write = self.log.append(vec![entry.clone()]);
        self.effects.log_writes.push(write);
        if changes_voters {
            self.track_members();
        }
        entry
    }

    /// One fetch from our log's tail: to our leader, or, an observer knowing none, to the next
    /// voter in turn (it answers with entries if it leads, with the leader's name if it knows).
    pub(super) fn send_fetch(&mut self) {
        let fetch_index = self.log.last_index() + 1;
        let last_fetched_term = self.log.last_term();
        let target = match self.role {
            Role::Follower {
                leader: Some(leader),
                ..
            } => leader,
            Role::Follower { leader: None, .. } if !self.is_voter() => {
                let voters = self.log.voters();
                let turn = self.leaderless_fetches % voters.len() as u64;
                self.leaderless_fetches += 1;
                voters[turn as usize]
            }
            Role::Follower { .. }
            | Role::PreCandidate { .. }
            | Role::Candidate { .. }
            | Role::Leader(_) => return,
        };
        let Role::Follower { fetch, .. } = &mut self.role else {
            unreachable!("matched above");
        };
        let durable_index = self.log.persisted_index();
        *fetch = Some(FetchInFlight {
            fetch_index,
            last_fetched_term,
            elapsed_ticks: 0,
            durable_index,
        });
        let message = Message::Fetch {
            term: self.hard_state.term,
            fetch_index,
            last_fetched_term,
            durable_index,
        };
        self.send(target, message);
    }

    /// A fetch at our term. The leader answers it, tracking the fetcher's progress if it is a
    /// voter or learner; anyone else names the leader it knows (KIP-595's answer to a fetch
    /// sent to a voter that does not lead), which is how an observer finds the leader.
    pub(super) fn handle_fetch(
        &mut self,
        from: NodeId,
        fetch_index: Index,
        last_fetched_term: Term,
        durable_index: Index,
    ) {
        let term = self.hard_state.term;
        let Role::Leader(state) = &mut self.role else {
            // Not to the leader itself: a removed leader that stepped down asks the voters
            // that still name it until they elect another.
            if let Some(leader) = self.leader().filter(|leader| *leader != from) {
                self.send(from, Message::BeginEpoch { term, leader });
            }
            return;
        };
        if fetch_index == 0 {
            return;
        }
        let log_start = self.log.log_start();
        let matched = self.log.term_at(fetch_index - 1) == Some(last_fetched_term);
        let result = match self.log.end_of_epoch_at_most(last_fetched_term) {
            Some(_) if matched => FetchResult::Entries {
                entries: Vec::new(),
            },
            Some((term, end_index)) if fetch_index > log_start => {
                FetchResult::Diverging { end_index, term }
            }
            // Below our log start, or disagreeing at its boundary, or nothing to compare with.
            Some(_) | None => FetchResult::SnapshotNeeded {
                log_start,
                prev_term: self
                    .log
                    .term_at(log_start - 1)
                    .expect("the log start boundary"),
                voters: self.log.voters_at(log_start - 1).to_vec(),
            },
        };
        let entries = matches!(result, FetchResult::Entries { .. });
        // Observers are answered without being tracked: they count for nothing.
        if let Some(progress) = state.progress.get_mut(&from) {
            progress.has_fetched = true;
            progress.recently_active = true;
        }
        if entries && !self.note_matched(from, fetch_index, durable_index) {
            return; // stepped down: the change removing us committed
        }
        let message = Message::FetchResponse {
            term,
            leader: self.config.id,
            commit_index: self.commit_index,
            fetch_index,
            last_fetched_term,
            result,
        };
        self.send(from, message);
    }

    /// A follower's report that storage holds its log up to `durable_index`, with a fetch
    /// from `fetch_index` out: counted as that fetch would be (and answered by nothing). A
    /// report from a log that no longer matches ours, or to a node that does not lead, is
    /// dropped: the follower's next fetch sorts it out.
    pub(super) fn handle_durable(
        &mut self,
        from: NodeId,
        fetch_index: Index,
        last_fetched_term: Term,
        durable_index: Index,
    ) {
        let Role::Leader(state) = &mut self.role else {
            return;
        };
        if fetch_index == 0 || self.log.term_at(fetch_index - 1) != Some(last_fetched_term) {
            return;
        }
        if let Some(progress) = state.progress.get_mut(&from) {
            progress.has_fetched = true;
            progress.recently_active = true;
        }
        self.note_matched(from, fetch_index, durable_index);
    }

    /// A tracked member's log matches ours before `fetch_index` and is durable up to
    /// `durable_index`: its progress moves, and with it perhaps the commit index and a
    /// transfer to it. False if that made us step down (the change removing us committed).
    fn note_matched(&mut self, from: NodeId, fetch_index: Index, durable_index: Index) -> bool {
        let Role::Leader(state) = &mut self.role else {
            return false;
        };
        let Some(progress) = state.progress.get_mut(&from) else {
            return true; // an observer: counted for nothing
        };
        progress.fetched_index = progress.fetched_index.max(fetch_index - 1);
        progress.match_index = progress.match_index.max(durable_index.min(fetch_index - 1));
        self.advance_commit();
        if !matches!(self.role, Role::Leader(_)) {
            return false;
        }
        self.send_timeout_now_if_caught_up(from);
        true
    }

    pub(super) fn handle_fetch_response(
        &mut self,
        leader_commit: Index,
        fetch_index: Index,
        last_fetched_term: Term,
        result: FetchResult,
    ) {
        let tail = (self.log.last_index() + 1, self.log.last_term());
        let Role::Follower { fetch, .. } = &mut self.role else {
            unreachable!("follow() made us a follower");
        };
        // Only the answer to the fetch in flight, sent from our current tail: a late answer to
        // an earlier fetch describes a log we no longer have.
        let answers_ours = fetch.is_some_and(|in_flight| {
            (in_flight.fetch_index, in_flight.last_fetched_term) == (fetch_index, last_fetched_term)
        }) && (fetch_index, last_fetched_term) == tail;
        if !answers_ours {
            return;
        }
        *fetch = None;
        match result {
            FetchResult::Entries { entries } => {
                if !self.well_formed(&entries) {
                    return;
                }
                if !entries.is_empty() {
                    self.answer_starts.push_back(self.log.last_index());
                    if self.answer_starts.len() > FETCH_ANSWERS_AHEAD_MAX {
                        self.answer_starts.pop_front();
                    }
                    if self.answer_starts.len() == FETCH_ANSWERS_AHEAD_MAX {
                        // The oldest of the latest answers must be durable before the next
                        // fetch: that many are then being written at most.
                        self.fetch_floor_index = self.answer_starts[0];
                    }
                    let write = self.log.append(entries);
                    self.effects.log_writes.push(write);
                }
                self.verified(self.log.last_index(), leader_commit);
                // Pipelined: fetch on while these entries are written, once the earlier ones
                // are durable (else when they are: `persisted`).
                if self.log.persisted_index() >= self.fetch_floor_index {
                    self.send_fetch();
                }
            }
            FetchResult::Diverging { end_index, term } => {
                let Some(point) = self.log.divergence_point(end_index, term) else {
                    return;
                };
                assert!(
                    point >= self.commit_index,
                    "leader's divergence at ({end_index}, {term}) would truncate committed {}",
                    self.commit_index
                );
                if point < self.log.last_index() {
                    let write = self.log.truncate_after(point);
                    self.effects.log_writes.push(write);
                }
                self.lower_fetch_floor(point);
                if let Role::Follower { verified_index, .. } = &mut self.role {
                    *verified_index = (*verified_index).min(point);
                }
                self.send_fetch();
            }
            FetchResult::SnapshotNeeded {
                log_start,
                prev_term,
                voters,
            } => {
                if log_start == 0 || log_start - 1 < self.commit_index || voters.is_empty() {
                    return;
                }
                let write = self.log.reset_to(log_start, prev_term, voters);
                self.effects.log_writes.push(write);
                self.lower_fetch_floor(log_start - 1);
                self.verified(log_start - 1, log_start - 1);
                self.send_fetch();
            }
        }
    }

    /// The log was cut back to `index`: entries past it need no longer be durable before the
    /// next fetch.
    pub(super) fn lower_fetch_floor(&mut self, index: Index) {
        self.fetch_floor_index = self.fetch_floor_index.min(index);
        for start in &mut self.answer_starts {
            *start = (*start).min(index);
        }
    }

    /// Fetched entries start after our end (gaps allowed; only an empty log may take a first
    /// batch straddling its start), follow one another, and carry terms between our last and
    /// the current one.
    fn well_formed(&self, entries: &[EntryMeta]) -> bool {
        let mut last_index = self.log.last_index();
        let mut last_term = self.log.last_term();
        let log_is_empty = last_index < self.log.log_start();
        for (position, entry) in entries.iter().enumerate() {
            let may_straddle = position == 0 && log_is_empty;
            if (entry.first_index <= last_index && !may_straddle)
                || entry.first_index > entry.last_index
                || entry.last_index <= last_index
                || entry.term < last_term
                || entry.term > self.hard_state.term
                || matches!(&entry.kind, EntryKind::Voters(voters) if voters.is_empty())
            {
                return false;
            }
            last_index = entry.last_index;
            last_term = entry.term;
        }
        true
    }

    /// Our log matches the leader's up to `index`: take its commit index that far.
    fn verified(&mut self, index: Index, leader_commit: Index) {
        if let Role::Follower { verified_index, .. } = &mut self.role {
            *verified_index = (*verified_index).max(index);
        }
        let commit = leader_commit.min(index);
        if commit > self.commit_index {
            self.commit_index = commit;
            self.effects.commit_index = Some(commit);
        }
    }

    /// Commit the highest index of the current term that a majority of the voters (the leader
    /// counting only what it has persisted itself) has persisted.
    fn advance_commit(&mut self) {
        let Role::Leader(state) = &self.role else {
            return;
        };
        let id = self.config.id;
        let voters = self.log.voters();
        let mut matched: Vec<Index> = voters
            .iter()
            .map(|voter| {
                if *voter == id {
                    self.log.persisted_index()
                } else {
                    state.progress.get(voter).map_or(0, |peer| peer.match_index)
                }
            })
            .collect();
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let quorum_index = matched[voters.len() / 2];
        if quorum_index > self.commit_index
            && self.log.term_at(quorum_index) == Some(self.hard_state.term)
        {
            self.commit_index = quorum_index;
            self.effects.commit_index = Some(quorum_index);
            // Followers learn the new commit index with their next fetch.
        }
        // A leader that removed itself hands over once the change is committed.
        if !self.is_voter() && self.commit_index >= self.log.last_voters_index() {
            self.become_follower(self.hard_state.term, None);
        }
    }
}
