//! The writer: the one task that changes the log (see the `replica` module documentation).
//! It applies the core's log writes in order, numbers and places producers' batches between
//! them, reports what became durable, and brings a faulted replica back.

use std::time::Instant;

use engine::batch::CheckedBatch;
use engine::{AppendReceipt, LogError};

use super::{
    entries, EntryError, PartitionReplica, ProduceError, Proposal, ReplicaError, ReplicaEvent,
};
use crate::message::{EntryKind, EntryMeta, LogWrite};
use crate::node::{Refusal, RoleKind};
use crate::stats::Stage;

impl PartitionReplica {
    /// The writer: the only task that changes the log. Applies the core's log writes in order,
    /// and between them numbers and places producers' batches; brings a faulted replica back
    /// when its back-off is over (so nothing else changes the log meanwhile).
    pub(super) async fn run_writer(self) {
        loop {
            self.inner
                .changes
                .until(|| {
                    if self.inner.stopped.borrow().is_some() {
                        return true;
                    }
                    match &*self.inner.fault.borrow() {
                        Some(fault) => self.inner.clock.get() >= fault.retry_at_tick,
                        None => {
                            !self.inner.log_writes.borrow().is_empty()
                                || (!self.inner.proposals.borrow().is_empty()
                                    && self.inner.held.borrow().is_empty())
                        }
                    }
                })
                .await;
            if self.inner.stopped.borrow().is_some() {
                return;
            }
            if self.faulted() {
                self.resume().await;
                continue;
            }
            let next_write = self.inner.log_writes.borrow_mut().pop_front();
            let result = match next_write {
                Some(write) => self.apply_write(write).await,
                None => self.place_next_proposal().await,
            };
            match result {
                Ok(()) => {}
                // The log closes when the broker shuts down or the partition goes.
                Err(ReplicaError::Log(LogError::Closed)) => {
                    self.stop("the partition log closed");
                    return;
                }
                Err(error) => self.fail(&error.to_string()),
            }
        }
    }

    pub(super) async fn apply_write(&self, write: LogWrite) -> Result<(), ReplicaError> {
        let log = &self.inner.log;
        match write {
            LogWrite::Append { entries } => {
                for meta in entries {
                    if self.faulted() {
                        // The core that asked for these is gone; its successor asks anew.
                        return Ok(());
                    }
                    if let EntryKind::Voters(voters) = &meta.kind {
                        // On disk before the entry is: the file may name a lost change, never
                        // miss one the log holds.
                        self.inner
                            .state
                            .borrow_mut()
                            .voter_changes
                            .push((meta.first_index, voters.clone()));
                        self.persist_state().await?;
                    }
                    // A follower writes the batch as fetched; a leader writes its own entries.
                    let fetched = self.inner.fetched.borrow_mut().remove(&meta.first_index);
                    let batch = match (fetched, &meta.kind) {
                        (Some(batch), _) => batch,
                        (None, EntryKind::LeaderChange | EntryKind::Voters(_)) => {
                            self.core_batch(&meta)
                        }
                        (None, EntryKind::Records) => {
                            return Err(EntryError::Malformed(format!(
                                "no fetched batch for entry {}",
                                meta.first_index
                            ))
                            .into())
                        }
                    };
                    let handed_at = Instant::now();
                    let receipt = log.append_replicated(batch).await?;
                    self.report_durable(receipt, &meta, handed_at);
                }
                // A follower learns the commit index with the entries it covers, before they
                // are placed: the high-water mark (held to the log end) catches up now.
                log.set_replicated_high_watermark(self.commit_index());
            }
            LogWrite::Truncate { after_index } => {
                log.truncate(after_index).await?;
                let changed = {
                    let mut state = self.inner.state.borrow_mut();
                    let before = state.voter_changes.len();
                    state.truncate_after(after_index);
                    state.voter_changes.len() != before
                };
                if changed {
                    self.persist_state().await?;
                }
            }
            LogWrite::ResetTo {
                log_start,
                prev_term,
                voters,
            } => {
                let epoch = i32::try_from(prev_term).unwrap_or(i32::MAX);
                log.reset_to(entries::offset_of(log_start), epoch).await?;
                {
                    let mut state = self.inner.state.borrow_mut();
                    state.voters_base = voters;
                    state.voter_changes.clear();
                }
                self.persist_state().await?;
                self.inner.fetched.borrow_mut().clear();
            }
        }
        self.unpark();
        Ok(())
    }

    /// The control batch for an entry the core created (it leads, or copies one it missed).
    pub(super) fn core_batch(&self, meta: &EntryMeta) -> CheckedBatch {
        let leader = self.leader().unwrap_or(self.inner.config.node_id);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as i64);
        entries::control_batch(meta, leader, now_ms)
    }

    /// Numbers the next producer batch (if this replica still leads) and places it. Every log
    /// write the core asked for earlier has been applied, so the core's next index is the log
    /// end; the duplicate check and the numbering happen with no await in between.
    pub(super) async fn place_next_proposal(&self) -> Result<(), ReplicaError> {
        let Some(Proposal { mut batch, reply }) = self.inner.proposals.borrow_mut().pop_front()
        else {
            return Ok(());
        };
        if let Some(error) = self.inner.log.fault() {
            // A write failed since the last one placed: the log end the core would number
            // this batch after may be gone.
            let _ = reply.send(Err(ProduceError::NotLeader { leader_hint: None }));
            return Err(error.into());
        }
        // The batch was checked where it entered the broker; what is left of the log's
        // refusals is asked before the core numbers it, never after.
        let header = *batch.header();
        if let Err(error) = self.inner.log.check_holds(batch.size_bytes()) {
            let _ = reply.send(Err(error.into()));
            return Ok(());
        }
        match self
            .inner
            .log
            .check_duplicate(&header, batch.verification())
        {
            Ok(Some(original)) => {
                let _ = reply.send(Ok(original));
                return Ok(());
            }
            Err(error) => {
                let _ = reply.send(Err(error.into()));
                return Ok(());
            }
            Ok(None) => {}
        }
        // A transaction marker's epochs, against the producer's state (a broker alone checks
        // them in its own append).
        if let Err(error) = self
            .inner
            .log
            .check_transaction_marker(&header, batch.bytes())
        {
            let _ = reply.send(Err(error.into()));
            return Ok(());
        }
        self.catch_up();
        let proposed = self
            .inner
            .node
            .borrow_mut()
            .propose(u64::try_from(header.records_count).unwrap_or(0));
        let (meta, effects) = match proposed {
            Ok(proposed) => proposed,
            Err(refusal) => {
                let leader_hint = match refusal {
                    Refusal::NotLeader { leader_hint } => leader_hint,
                    _ => self.leader(),
                };
                let _ = reply.send(Err(ProduceError::NotLeader { leader_hint }));
                return Ok(());
            }
        };
        let log_end_offset = self.inner.log.log_end_offset();
        if entries::offset_of(meta.first_index) != log_end_offset {
            // Cannot happen while the log reports its faults; if it does, the replica is
            // rebuilt from the disk rather than the log and the core going separate ways.
            let _ = reply.send(Err(ProduceError::NotLeader { leader_hint: None }));
            return Err(ReplicaError::Disagreement {
                index: meta.first_index,
                log_end_offset,
            });
        }
        // The proposal's own write is this one; anything else the core asked for follows.
        let mut effects = effects;
        effects.log_writes.retain(|write| {
            !matches!(write, LogWrite::Append { entries } if entries.first() == Some(&meta))
        });
        self.carry_out(effects, None);
        entries::stamp(&mut batch, &meta);
        let handed_at = Instant::now();
        match self.inner.log.append_replicated(batch).await {
            Ok(receipt) => {
                self.report_durable(receipt.clone(), &meta, handed_at);
                let _ = reply.send(Ok(receipt));
                self.unpark();
                Ok(())
            }
            Err(error) => {
                let _ = reply.send(Err(error.clone().into()));
                Err(error.into())
            }
        }
    }

    /// Once the entry's flush is durable, the core hears of it (the engine group-commits, so
    /// many entries share one fsync); if it cannot be made durable, the replica faults.
    pub(super) fn report_durable(
        &self,
        receipt: AppendReceipt,
        meta: &EntryMeta,
        handed_at: Instant,
    ) {
        if self.faulted() {
            return; // placed for a core that is gone; its successor counts what is on disk
        }
        let (index, term) = (meta.last_index, meta.term);
        let generation = self.inner.generation.get();
        let replica = self.clone();
        glommio::spawn_local(async move {
            let durable = replica.inner.log.wait_durable(&receipt).await;
            if replica.inner.generation.get() != generation {
                return; // for a core that is gone
            }
            match durable {
                Ok(()) => {
                    let stage = if replica.inner.node.borrow().role() == RoleKind::Leader {
                        Stage::LeaderDurable
                    } else {
                        Stage::FollowerDurable
                    };
                    replica
                        .inner
                        .outbox
                        .note(ReplicaEvent::Stage(stage, handed_at.elapsed()));
                    replica.catch_up();
                    let effects = replica.inner.node.borrow_mut().persisted(index, term);
                    replica.carry_out(effects, None);
                }
                // Shutdown, or the partition went: the replica is being stopped.
                Err(LogError::Closed) => {}
                Err(error) => replica.fail(&format!("entry {index} not made durable: {error}")),
            }
        })
        .detach();
    }

    /// Tells the core when the log's start moved (retention or DeleteRecords, which stay below
    /// the commit point), so it sends followers that need what is gone to the new start.
    pub(super) fn follow_log_start(&self) {
        let log_start = self.inner.log.log_start_offset() + 1;
        let mut node = self.inner.node.borrow_mut();
        if log_start > node.log().log_start && log_start <= node.commit_index() + 1 {
            node.log_start_advanced(log_start);
            drop(node);
            let mut state = self.inner.state.borrow_mut();
            let before = state.clone();
            state.advance_start(log_start);
            let changed = *state != before;
            drop(state);
            if changed {
                self.write_state();
            }
        }
    }
}
