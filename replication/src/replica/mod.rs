//! One broker's member of one partition's Raft group: the driver that runs the pure core
//! ([`RaftNode`]) over the engine's [`PartitionLog`], so the partition log is the Raft log.
//!
//! Everything happens on the shard that owns the partition. Inputs are logical ticks
//! ([`PartitionReplica::tick`]), peers' messages ([`PartitionReplica::receive`]) and producers'
//! batches ([`PartitionReplica::produce`]); the core's [`Effects`] are carried out in the order
//! it asks: the term and vote are made durable (in the shard's vote log, `votes`) before any
//! message leaves; log writes go to one writer task that applies them in order; messages go
//! to the [`Outbox`]; the commit index becomes the log's high-water mark, which is what
//! consumers read up to and what acks=all waits for.
//!
//! The writer is the only thing that appends to the log, so the core's view of the log and
//! the engine's never disagree: before it lets the core number a producer's batch (`propose`)
//! it has placed every entry the core created earlier (a new leader's LEADER_CHANGE, say), and
//! it checks the batch against the idempotent producers' table right before numbering it, so a
//! retry is answered with the original's offsets instead of being replicated twice. Producers'
//! batches arrive checked (`CheckedBatch`, by the shard owning the partition) and fetched ones
//! are checked on receipt, so once the core has numbered a batch nothing about the batch itself
//! can make the log refuse it (which would leave the two disagreeing). Durability
//! is the engine's group commit: each placed entry's fsync is awaited off the writer, and
//! reported to the core as `persisted`.
//!
//! A leader answers a fetch with whole batches read from its log; a fetch with nothing new to
//! send is held (long poll) until the log or the commit index moves, or `fetch_wait_ticks`
//! pass. A follower hands fetched batches to its writer exactly as the leader has them
//! (`append_replicated`: offsets, epochs and gaps kept). A replica runs by a clock (its
//! shard's, or its own alone: the controller's, tests') only at the ticks it asks its
//! [`Schedule`] for: the core's next deadline, held fetches' round, a reassignment step, the
//! preferred-leader check, housekeeping (`HOUSEKEEPING_INTERVAL_TICKS`).
//!
//! Here: the replica's state, its clock and the core's effects carried out. Apart: producers'
//! batches (`produce`), a leader's answers to fetches, held or read from the log
//! (`fetch_answers`), the writer (`writer`), the term and vote made durable
//! (`durable_state`), disk faults (`fault`), damaged entries (`damage`), moves
//! (`reassignment`) and the preferred leader (`preferred`).

mod damage;
mod durable_state;
mod entries;
mod fault;
mod fetch_answers;
mod preferred;
mod produce;
mod reassignment;
mod state_file;
mod writer;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use engine::batch::CheckedBatch;
use engine::shard::ClientAccess;
use engine::waiters::Waiters;
use engine::{AppendReceipt, LogError, PartitionLog};
use futures::channel::oneshot;

use crate::message::{Effects, FetchResult, Index, LogWrite, Message, NodeId, TermLimit, TERM_MAX};
use crate::node::{RaftNode, RoleKind};
use crate::stats::Stage;
use crate::votes::{Vote, VoteLog};
pub use entries::EntryError;
use preferred::EarlyCheck;
pub(crate) use state_file::STATE_FILE;
use state_file::{ReplicaState, StateFile};

use durable_state::core_from_disk;
pub use produce::{Acks, ProduceError};

/// Where a replica's messages go: the inter-broker transport, or a test's network. Sending
/// never waits; a message may be lost (Raft retries).
pub trait Outbox {
    fn send(&self, to: NodeId, message: Message, payload: Bytes);
    /// Something the replica did, for the shard's metrics; ignored by default.
    fn note(&self, _event: ReplicaEvent) {}
}

/// What a replica tells its [`Outbox`] for the metrics (see `ReplicationStats`).
#[derive(Debug, Clone, Copy)]
pub enum ReplicaEvent {
    /// A follower's fetch held (nothing new to send it).
    FetchHeld,
    /// Fetched entries after which the follower waits for its disk before fetching again.
    FetchFloorWait,
    /// A stage of a replicated write took this long.
    Stage(Stage, Duration),
}

/// What a replica run by a shard tells it (see `ShardReplication`): when it next needs to run
/// (the shard's timer wheel), that who leads changed (the broker's leader table), and who may
/// serve the partition's clients (the engine's shard, at once). Between those ticks the replica
/// costs nothing: its core is brought up to date in one step ([`RaftNode::advance`]) when it
/// runs or when anything is handed to it.
pub trait Schedule {
    /// Call [`PartitionReplica::run_due`] once the clock reaches `tick` (earlier is harmless).
    fn wake_at(&self, tick: u64);
    /// The replica's role, term or leader changed.
    fn leadership_changed(&self);
    /// Who may serve the partition's clients changed ([`PartitionReplica::client_access`]);
    /// told before the replica yields, so the shard never serves on an outdated one.
    fn client_access_changed(&self, access: ClientAccess);
}

/// The schedule of a replica that runs alone (the controller's, a test's):
/// [`PartitionReplica::tick`] runs it at every tick.
struct Alone;

impl Schedule for Alone {
    fn wake_at(&self, _tick: u64) {}
    fn leadership_changed(&self) {}
    fn client_access_changed(&self, _access: ClientAccess) {}
}

/// How often a replica looks at its log for damage a reader found and for a log start that
/// retention moved, in ticks (a second at the broker's settings): both are found by others
/// (a consumer's read, the retention task), and a look every tick at thousands of replicas
/// would cost more than everything else they do while idle.
const HOUSEKEEPING_INTERVAL_TICKS: u64 = 100;

/// No deadline.
const NEVER: u64 = u64::MAX;

/// Entries sent to one follower whose round a leader times at once (older ones are forgotten).
const ROUNDS_TIMED_MAX: usize = 64;

/// A replica's settings. Times are in ticks of [`PartitionReplica::tick`].
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    pub node_id: NodeId,
    /// The group's voters when it is created (ignored once the replica has state on disk).
    pub initial_voters: Vec<NodeId>,
    pub election_timeout_ticks_min: u64,
    pub begin_epoch_interval_ticks: u64,
    pub fetch_timeout_ticks: u64,
    /// How long a leader holds a fetch that has nothing new for the follower (less than
    /// `fetch_timeout_ticks`).
    pub fetch_wait_ticks: u64,
    /// Bytes of batches one fetch response carries (at least one whole batch).
    pub fetch_bytes_max: usize,
    /// Seeds the election timeouts; give every replica and every start its own.
    pub seed: u64,
    /// How often a leader checks whether to hand leadership back to the group's preferred
    /// replica (see `preferred`); 0: never.
    pub preferred_leader_check_ticks: u64,
}

/// A failure that faults a replica (see `fault`): its log can no longer follow the
/// core until it is rebuilt from the disk.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("partition log: {0}")]
    Log(#[from] LogError),
    #[error("raft state file: {0}")]
    StateFile(#[from] std::io::Error),
    #[error(transparent)]
    Entry(#[from] EntryError),
    /// The core numbered a producer's batch elsewhere than at the log end.
    #[error("the Raft core numbered entry {index} but the log ends at offset {log_end_offset}")]
    Disagreement { index: Index, log_end_offset: u64 },
    /// The state file holds a term no batch can carry as its leader epoch: a peer running an
    /// earlier version raised it. The replica does not start (leading from there, it could
    /// not write); its data stays as it is for an operator.
    #[error("raft-state.json holds term {term}, past the highest leader epoch {TERM_MAX}")]
    TermPastMax { term: u64 },
}

/// Effects of the core that wait until the Raft state is durable (see `carry_out`).
struct Held {
    log_writes: Vec<LogWrite>,
    messages: Vec<crate::message::Envelope>,
    parkable: Option<(NodeId, Message)>,
}

/// Why a replica cannot take part, and when its writer tries to come back.
struct Fault {
    reason: String,
    retry_at_tick: u64,
}

/// One member of a partition's Raft group. Cheap to clone; all clones drive the same member.
#[derive(Clone)]
pub struct PartitionReplica {
    inner: Rc<Inner>,
}

struct Inner {
    config: ReplicaConfig,
    log: Rc<PartitionLog>,
    node: RefCell<RaftNode>,
    state: RefCell<ReplicaState>,
    state_file: StateFile,
    /// The shard's vote log and this replica's name in it, if its term and vote go there
    /// rather than to the state file (see `votes`).
    votes: Option<(Rc<VoteLog>, Rc<str>)>,
    outbox: Rc<dyn Outbox>,
    /// The core's log writes, in order, for the writer.
    log_writes: RefCell<VecDeque<LogWrite>>,
    /// Producers' batches waiting for the writer to number and place them.
    proposals: RefCell<VecDeque<Proposal>>,
    /// Batches fetched from the leader, by first index, until the writer places them.
    fetched: RefCell<BTreeMap<Index, CheckedBatch>>,
    /// Fetches a leader holds until it has something new, with the tick they expire at.
    parked: RefCell<Vec<(NodeId, Message, u64)>>,
    /// The commit index last sent to each follower (a fetch that would repeat it is held).
    commit_sent: RefCell<HashMap<NodeId, Index>>,
    /// Per follower, the log's last index when entries were sent to it and when, oldest first
    /// (at most `ROUNDS_TIMED_MAX`): its next report of durability times the round.
    rounds: RefCell<HashMap<NodeId, VecDeque<(Index, Instant)>>>,
    /// The clock the replica runs by: its shard's (shared by the shard's replicas) or its own.
    clock: Rc<Cell<u64>>,
    /// The tick the core has been brought to (it lags `clock` while nothing is due).
    ticks: Cell<u64>,
    schedule: Rc<dyn Schedule>,
    /// The earliest tick the schedule was asked to run the replica at and has not yet.
    wake_at: Cell<u64>,
    /// When the replica next looks for damage and a moved log start.
    housekeeping_at: Cell<u64>,
    /// Role, term and leader as last told to the schedule and to waiters.
    leadership: Cell<(RoleKind, u64, Option<NodeId>)>,
    /// Who may serve the partition's clients, as last told to the schedule.
    client_access: Cell<ClientAccess>,
    /// Versions of `state` asked to be written, and the latest one durable: the core's
    /// effects after a change wait in `held` until it is durable.
    state_version_wanted: Cell<u64>,
    state_version_durable: Cell<u64>,
    /// The same for terms and votes handed to the shard's vote log.
    vote_version_wanted: Cell<u64>,
    vote_version_durable: Cell<u64>,
    /// A task is writing the state file.
    state_writing: Cell<bool>,
    held: RefCell<VecDeque<Held>>,
    /// Woken on every change the writer or a waiting producer may care about.
    changes: Waiters,
    stopped: RefCell<Option<String>>,
    /// Set while the replica cannot write (see `fault`).
    fault: RefCell<Option<Fault>>,
    /// The back-off before the next try to come back; doubles while faults repeat.
    backoff_ticks: Cell<u64>,
    /// When the replica last came back from a fault.
    resumed_at_tick: Cell<Option<u64>>,
    /// Counts the cores this replica has run (one more at each fault): reports of writes an
    /// earlier core asked for are not given to a later one.
    generation: Cell<u64>,
    /// The voters a reassignment moves the group to, sorted (see `reassignment`).
    target_voters: RefCell<Option<Vec<NodeId>>>,
    /// The replica that should lead when it can (see `preferred`).
    preferred_leader: Cell<Option<NodeId>>,
    /// While this replica leads a new group in the group's first term without being its
    /// preferred replica: the tick of the next early preferred-leader check and the wait
    /// after it (see `preferred`).
    early_preferred_check: Cell<Option<EarlyCheck>>,
    /// The first damaged offset this replica gave up, until the writer has truncated it away
    /// (see `damage`).
    damage_given_up: Cell<Option<u64>>,
}

struct Proposal {
    batch: CheckedBatch,
    reply: oneshot::Sender<Result<AppendReceipt, ProduceError>>,
}

impl PartitionReplica {
    /// Starts this broker's member of the group whose log is `log` (in `dir`), from what the
    /// log and the state file hold, running alone: [`PartitionReplica::tick`] is its clock.
    /// Must run on the shard that owns the log: it spawns the writer there.
    pub fn open(
        config: ReplicaConfig,
        dir: PathBuf,
        log: Rc<PartitionLog>,
        outbox: Rc<dyn Outbox>,
    ) -> Result<PartitionReplica, ReplicaError> {
        let clock = Rc::new(Cell::new(0));
        PartitionReplica::open_scheduled(config, dir, log, outbox, clock, Rc::new(Alone), None)
    }

    /// [`PartitionReplica::open`] for a replica run by its shard: `clock` is the shard's (it
    /// moves it), and the replica asks `schedule` to run it ([`PartitionReplica::run_due`])
    /// when something is due. With `votes`, the shard's vote log, its terms and votes are
    /// recorded there (if it serves `dir`).
    pub fn open_scheduled(
        config: ReplicaConfig,
        dir: PathBuf,
        log: Rc<PartitionLog>,
        outbox: Rc<dyn Outbox>,
        clock: Rc<Cell<u64>>,
        schedule: Rc<dyn Schedule>,
        votes: Option<Rc<VoteLog>>,
    ) -> Result<PartitionReplica, ReplicaError> {
        assert!(
            config.fetch_wait_ticks < config.fetch_timeout_ticks,
            "a held fetch is answered before its follower gives up on it"
        );
        let state_file = StateFile::new(&dir);
        let mut saved = state_file.read()?;
        let votes = votes
            .filter(|votes| votes.serves(&dir))
            .and_then(|votes| crate::votes::key_of(&dir).map(|key| (votes, key)));
        // The vote log holds a newer term or vote than the state file (which is only written
        // for voter sets and vote floors). A replica without a state file is new here: any
        // vote of its name is of a deleted partition of the same name.
        if let (Some((votes, key)), Some(saved)) = (&votes, saved.as_mut()) {
            if let Some(vote) = votes
                .durable_vote(key)
                .filter(|vote| vote.newer(&Vote::from(saved.hard_state())))
            {
                saved.term = vote.term;
                saved.voted_for = vote.voted_for;
            }
        }
        if let Some(term) = saved
            .as_ref()
            .map(|saved| saved.term)
            .filter(|term| *term > TERM_MAX)
        {
            return Err(ReplicaError::TermPastMax { term });
        }
        let mut state = saved.clone().unwrap_or_else(|| ReplicaState {
            term: 0,
            voted_for: None,
            voters_base: config.initial_voters.clone(),
            voter_changes: Vec::new(),
            vote_floor: None,
        });
        let node = core_from_disk(&config, &log, &state_file, &mut state, saved.as_ref(), 0)?;
        // The log holds what is on disk; what the core counts as persisted must be too.
        log.set_replicated_high_watermark(0);
        let now = clock.get();
        let leadership = (node.role(), node.term(), node.leader());
        let client_access = produce::client_access_of(&node);
        let replica = PartitionReplica {
            inner: Rc::new(Inner {
                config,
                log,
                node: RefCell::new(node),
                state: RefCell::new(state),
                state_file,
                votes,
                outbox,
                log_writes: Default::default(),
                proposals: Default::default(),
                fetched: Default::default(),
                parked: Default::default(),
                commit_sent: Default::default(),
                rounds: Default::default(),
                clock,
                ticks: Cell::new(now),
                schedule,
                wake_at: Cell::new(NEVER),
                housekeeping_at: Cell::new(now + HOUSEKEEPING_INTERVAL_TICKS),
                leadership: Cell::new(leadership),
                client_access: Cell::new(client_access),
                state_version_wanted: Cell::new(0),
                state_version_durable: Cell::new(0),
                vote_version_wanted: Cell::new(0),
                vote_version_durable: Cell::new(0),
                state_writing: Cell::new(false),
                held: Default::default(),
                changes: Waiters::default(),
                stopped: RefCell::new(None),
                fault: RefCell::new(None),
                backoff_ticks: Cell::new(0),
                resumed_at_tick: Cell::new(None),
                generation: Cell::new(0),
                target_voters: RefCell::new(None),
                preferred_leader: Cell::new(None),
                early_preferred_check: Cell::new(None),
                damage_given_up: Cell::new(None),
            }),
        };
        glommio::spawn_local(replica.clone().run_writer()).detach();
        replica.give_up_damaged_entries();
        replica.reschedule();
        Ok(replica)
    }

    /// The core's role; a follower (of no one) while faulted.
    pub fn role(&self) -> RoleKind {
        if self.faulted() {
            return RoleKind::Follower;
        }
        self.inner.node.borrow().role()
    }

    /// The leader the core knows; none while faulted.
    pub fn leader(&self) -> Option<NodeId> {
        if self.faulted() {
            return None;
        }
        self.inner.node.borrow().leader()
    }

    pub fn term(&self) -> u64 {
        self.inner.node.borrow().term()
    }

    /// Kafka's in-sync replicas as this leader sees them (empty unless it leads).
    pub fn in_sync_voters(&self) -> Vec<NodeId> {
        if self.faulted() {
            return Vec::new();
        }
        self.inner.node.borrow().in_sync_voters()
    }

    pub fn commit_index(&self) -> Index {
        self.inner.node.borrow().commit_index()
    }

    pub fn log(&self) -> &Rc<PartitionLog> {
        &self.inner.log
    }

    /// Why the replica stopped, if it did.
    pub fn stopped(&self) -> Option<String> {
        self.inner.stopped.borrow().clone()
    }

    /// Stops the writer; later produces fail with [`ProduceError::Stopped`].
    pub fn stop(&self, reason: &str) {
        let mut stopped = self.inner.stopped.borrow_mut();
        if stopped.is_none() {
            *stopped = Some(reason.to_owned());
        }
        drop(stopped);
        for proposal in self.inner.proposals.borrow_mut().drain(..) {
            let _ = proposal.reply.send(Err(ProduceError::Stopped));
        }
        self.inner.changes.wake_all();
    }

    /// Advances the clock of a replica opened alone ([`PartitionReplica::open`]) by one tick
    /// and runs what is due.
    pub fn tick(&self) {
        self.inner.clock.set(self.inner.clock.get() + 1);
        self.run_due();
    }

    /// Runs what is due at the clock's tick: the core's timers (elections, fetch timeouts,
    /// check-quorum), held fetches whose wait is over, the next step of a reassignment, the
    /// preferred-leader check, the look for damage and a moved log start. A faulted replica's
    /// core does not move; its writer is woken when the time to come back has come. Asks the
    /// schedule for the next tick that needs it.
    pub fn run_due(&self) {
        let now = self.inner.clock.get();
        if self.inner.wake_at.get() <= now {
            self.inner.wake_at.set(NEVER);
        }
        if self.inner.stopped.borrow().is_some() {
            return;
        }
        if let Some(fault) = &*self.inner.fault.borrow() {
            self.inner.ticks.set(now);
            if now >= fault.retry_at_tick {
                self.inner.changes.wake_all();
            }
        }
        if self.faulted() {
            return self.reschedule();
        }
        self.catch_up();
        if now >= self.inner.housekeeping_at.get() {
            self.inner
                .housekeeping_at
                .set(now + HOUSEKEEPING_INTERVAL_TICKS);
            self.give_up_damaged_entries();
            self.follow_log_start();
        }
        self.step_toward_target();
        self.return_to_preferred_leader(now);
        loop {
            let expired = {
                let mut parked = self.inner.parked.borrow_mut();
                let position = parked.iter().position(|(_, _, until)| *until <= now);
                position.map(|position| parked.swap_remove(position))
            };
            let Some((from, fetch, _)) = expired else {
                break;
            };
            let effects = self.inner.node.borrow_mut().step(from, fetch);
            self.carry_out(effects, None);
        }
        self.reschedule();
    }

    /// Brings the core to the clock's tick (the ticks it missed while nothing was due, in one
    /// step), so that what is handed to it next finds it where ticking every tick would have.
    fn catch_up(&self) {
        let now = self.inner.clock.get();
        let behind = now.saturating_sub(self.inner.ticks.get());
        self.inner.ticks.set(now);
        if behind == 0 || self.faulted() {
            return;
        }
        let effects = self.inner.node.borrow_mut().advance(behind);
        if effects.is_empty() {
            // A leader that no majority fetched from steps down without a word.
            self.note_client_access();
        } else {
            self.carry_out(effects, None);
        }
    }

    /// Asks the schedule to run the replica at its next due tick, if that is sooner than it
    /// asked already.
    fn reschedule(&self) {
        if self.inner.stopped.borrow().is_some() {
            return;
        }
        let now = self.inner.ticks.get();
        let due = match &*self.inner.fault.borrow() {
            Some(fault) => fault.retry_at_tick,
            None => {
                let node = self.inner.node.borrow();
                let leading = node.role() == RoleKind::Leader;
                let core = now.saturating_add(node.ticks_until_due());
                let parked = self
                    .inner
                    .parked
                    .borrow()
                    .iter()
                    .map(|(_, _, until)| *until)
                    .min()
                    .unwrap_or(NEVER);
                let target = if leading && self.inner.target_voters.borrow().is_some() {
                    now + 1
                } else {
                    NEVER
                };
                let preferred = self.next_preferred_check(now, &node);
                core.min(parked)
                    .min(target)
                    .min(preferred)
                    .min(self.inner.housekeeping_at.get())
            }
        };
        let due = due.max(self.inner.clock.get() + 1);
        if due < self.inner.wake_at.get() {
            self.inner.wake_at.set(due);
            self.inner.schedule.wake_at(due);
        }
    }

    /// Tells waiters and the schedule when role, term or leader changed, and the schedule when
    /// who may serve clients did.
    fn note_leadership(&self) {
        let leadership = (self.role(), self.term(), self.leader());
        if leadership != self.inner.leadership.get() {
            self.inner.leadership.set(leadership);
            self.plan_early_preferred_checks();
            self.inner.changes.wake_all();
            self.inner.schedule.leadership_changed();
        }
        self.note_client_access();
    }

    /// Tells the schedule when who may serve the partition's clients changed. Every change of
    /// the core or of the fault state ends here before the replica yields. A stopped replica
    /// tells nothing: its shard forgot it.
    fn note_client_access(&self) {
        if self.inner.stopped.borrow().is_some() {
            return;
        }
        let access = self.client_access();
        if access != self.inner.client_access.get() {
            self.inner.client_access.set(access);
            self.inner.schedule.client_access_changed(access);
        }
    }

    /// A message from a peer (with the batches a fetch response carries); lost while faulted.
    pub fn receive(&self, from: NodeId, mut message: Message, payload: Bytes) {
        if self.faulted() {
            return;
        }
        let mut batches = Vec::new();
        if let Message::FetchResponse {
            result: FetchResult::Entries { entries },
            ..
        } = &mut message
        {
            // The entries are what the batches say they are, whatever the peer listed.
            entries.clear();
            let batch_bytes_max = if payload.is_empty() {
                0 // nothing to split (most answers: a round's heartbeat)
            } else {
                self.inner.log.config().unflushed_bytes_max
            };
            match entries::split_entries(&payload, batch_bytes_max) {
                Ok(split) => {
                    for (meta, batch) in split {
                        entries.push(meta.clone());
                        batches.push((meta.first_index, batch));
                    }
                }
                // A peer's garbage: dropped like a lost message (the fetch is retried).
                Err(_) => return,
            }
        }
        let parkable = matches!(message, Message::Fetch { .. }).then(|| (from, message.clone()));
        if let Message::Fetch { durable_index, .. } | Message::Durable { durable_index, .. } =
            message
        {
            self.time_rounds(from, durable_index);
        }
        self.catch_up();
        let effects = self.inner.node.borrow_mut().step(from, message);
        let fetches_on = effects
            .messages
            .iter()
            .any(|envelope| matches!(envelope.message, Message::Fetch { .. }));
        if !batches.is_empty() && !fetches_on && !effects.log_writes.is_empty() {
            self.inner.outbox.note(ReplicaEvent::FetchFloorWait);
        }
        // Only the batches of entries the core took are kept, for the writer: an answer it
        // dropped (late, duplicated, from a deposed leader) must not stand in for them.
        if !batches.is_empty() {
            let mut fetched = self.inner.fetched.borrow_mut();
            for write in &effects.log_writes {
                let LogWrite::Append { entries } = write else {
                    continue;
                };
                for meta in entries {
                    if let Some(position) = batches
                        .iter()
                        .position(|(first_index, _)| *first_index == meta.first_index)
                    {
                        let (first_index, batch) = batches.swap_remove(position);
                        fetched.insert(first_index, batch);
                    }
                }
            }
        }
        self.carry_out(effects, parkable);
    }

    /// A follower reports its log durable up to `durable_index`: the rounds of the entries
    /// sent to it that this covers are over.
    fn time_rounds(&self, from: NodeId, durable_index: Index) {
        let mut rounds = self.inner.rounds.borrow_mut();
        let Some(sent) = rounds.get_mut(&from) else {
            return;
        };
        while let Some(&(index, at)) = sent.front() {
            if index > durable_index {
                break;
            }
            sent.pop_front();
            self.inner
                .outbox
                .note(ReplicaEvent::Stage(Stage::FollowerRound, at.elapsed()));
        }
    }

    /// Carries out what the core asked, in its order. `parkable` is the fetch these effects
    /// answer, if any: held instead of answered when the answer would carry nothing new.
    ///
    /// A new term or vote is recorded without blocking the shard (in the shard's vote log, see
    /// `votes`, or the state file, see `state_file`); until it is durable, the log writes and messages of these effects and of
    /// every later one wait in `held`, in order (a vote must not be seen before it would
    /// survive a crash, nor an entry of a term the file does not have yet), and the writer
    /// numbers no producer's batch.
    fn carry_out(&self, effects: Effects, parkable: Option<(NodeId, Message)>) {
        let Effects {
            hard_state,
            log_writes,
            messages,
            commit_index,
            term_limit,
        } = effects;
        if let Some(limit) = term_limit {
            report_term_limit(&self.inner.log.directory().display(), limit);
        }
        if let Some(hard_state) = hard_state {
            let mut state = self.inner.state.borrow_mut();
            state.term = hard_state.term;
            state.voted_for = hard_state.voted_for;
            drop(state);
            self.record_vote(hard_state.into());
        }
        if !log_writes.is_empty() || !messages.is_empty() {
            if self.state_pending() {
                self.inner.held.borrow_mut().push_back(Held {
                    log_writes,
                    messages,
                    parkable,
                });
            } else {
                self.dispatch(log_writes, messages, parkable);
            }
        }
        if let Some(commit_index) = commit_index {
            self.inner.log.set_replicated_high_watermark(commit_index);
            self.inner.changes.wake_all();
            self.unpark();
        }
        self.note_leadership();
        self.reschedule();
    }
}

/// Says what the term limit stopped (`place`: the partition log or the message concerned), at
/// most every few seconds per shard and kind: a peer may send such messages for every
/// partition, every tick.
pub(crate) fn report_term_limit(place: &dyn std::fmt::Display, limit: TermLimit) {
    match limit {
        TermLimit::PeerTerm { from, term } => engine::log_rate_limited!(
            "ferrite: {place}: refused a message from node {from} naming term {term}, past the \
             highest leader epoch {TERM_MAX}"
        ),
        TermLimit::NoElection => engine::log_rate_limited!(
            "ferrite: {place}: at term {TERM_MAX}, the highest leader epoch, this replica \
             cannot start an election"
        ),
    }
}
